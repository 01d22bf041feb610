//! Usage budgets of agent tasks (migration 0065): per workspace, project or
//! user, in tokens, cost units or agent minutes, over a window that resets.
//! Agents' usage reports charge them (`queue.rs`); a claim passes over a
//! task whose budget has no headroom. Here: reading, setting and resetting
//! them, shared by GraphQL (`budgets`, `setBudget`, `resetBudget`) and the
//! CLI (`mosaic budget`), which differ only in who asks.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use sqlx::{PgConnection, Row};
use time::{Duration, OffsetDateTime, Time};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;
use crate::graphql::ids::Kind;
use crate::workspaces;

/// The largest budget, in its unit.
pub const MAX_ALLOCATED: i64 = 1_000_000_000_000_000;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum BudgetUnit {
    /// Model tokens, as agents report them.
    Tokens,
    /// Cost units, as agents report them.
    Cost,
    /// Minutes of agent time (agents report milliseconds).
    AgentMinutes,
}

impl BudgetUnit {
    const ALL: [Self; 3] = [Self::Tokens, Self::Cost, Self::AgentMinutes];

    pub fn as_db(self) -> &'static str {
        match self {
            Self::Tokens => "TOKENS",
            Self::Cost => "COST",
            Self::AgentMinutes => "AGENT_MINUTES",
        }
    }

    /// What agents report per unit.
    fn scale(self) -> f64 {
        match self {
            Self::AgentMinutes => 60_000.0,
            _ => 1.0,
        }
    }

    /// A unit by name (the CLI's, any case): BUDGET_UNIT_UNKNOWN otherwise.
    pub fn parse(s: &str) -> AppResult<Self> {
        let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
        Self::ALL.into_iter().find(|u| u.as_db() == wanted).ok_or_else(|| {
            AppError::invalid(
                "BUDGET_UNIT_UNKNOWN",
                format!("unit: '{s}' is not TOKENS, COST or AGENT_MINUTES"),
            )
        })
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum BudgetWindow {
    /// Resets every day at `resetsAt`'s time (midnight UTC by default).
    Daily,
    /// Resets every month on `resetsAt`'s day and time (the 1st, midnight UTC, by default).
    Monthly,
    /// Resets once, at `resetsAt`; after that the budget counts on without resets.
    At,
}

impl BudgetWindow {
    const ALL: [Self; 3] = [Self::Daily, Self::Monthly, Self::At];

    pub fn as_db(self) -> &'static str {
        match self {
            Self::Daily => "DAILY",
            Self::Monthly => "MONTHLY",
            Self::At => "AT",
        }
    }

    /// A window by name (the CLI's, any case): BUDGET_WINDOW_UNKNOWN otherwise.
    pub fn parse(s: &str) -> AppResult<Self> {
        let wanted = s.trim().to_ascii_uppercase();
        Self::ALL.into_iter().find(|w| w.as_db() == wanted).ok_or_else(|| {
            AppError::invalid(
                "BUDGET_WINDOW_UNKNOWN",
                format!("window: '{s}' is not DAILY, MONTHLY or AT"),
            )
        })
    }

    /// The longest a first window may be.
    fn longest(self) -> Duration {
        match self {
            Self::Daily => Duration::DAY,
            Self::Monthly => Duration::days(31),
            Self::At => Duration::days(366),
        }
    }

    /// The first reset after `now`: `given` (checked), or the default.
    fn first_reset(self, given: Option<OffsetDateTime>, now: OffsetDateTime) -> AppResult<OffsetDateTime> {
        let bad = |m: String| AppError::invalid("BUDGET_RESETS_AT_INVALID", m);
        let Some(at) = given else {
            let midnight = now.date().with_time(Time::MIDNIGHT).assume_utc();
            return match self {
                Self::Daily => Ok(midnight + Duration::DAY),
                Self::Monthly => {
                    let first = midnight.replace_day(1).map_err(AppError::internal)?;
                    let (y, m) = (first.year(), first.month());
                    let (y, m) = if m == time::Month::December {
                        (y + 1, m.next())
                    } else {
                        (y, m.next())
                    };
                    first
                        .replace_year(y)
                        .and_then(|f| f.replace_month(m))
                        .map_err(AppError::internal)
                }
                Self::At => Err(bad("resetsAt: required for the AT window".into())),
            };
        };
        if at <= now {
            return Err(bad(format!("resetsAt: {at} is not in the future")));
        }
        if at - now > self.longest() {
            return Err(bad(format!(
                "resetsAt: at most {} days ahead for a {} window",
                self.longest().whole_days(),
                self.as_db()
            )));
        }
        Ok(at)
    }
}

/// Whose tasks a budget covers, within its workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Workspace,
    Project(Uuid),
    User(Uuid),
}

impl Scope {
    fn ids(self) -> (Option<Uuid>, Option<Uuid>) {
        match self {
            Self::Workspace => (None, None),
            Self::Project(p) => (Some(p), None),
            Self::User(u) => (None, Some(u)),
        }
    }

    /// Checks that the project or user belongs to the workspace:
    /// BUDGET_SCOPE_NOT_FOUND otherwise.
    pub async fn check(self, conn: &mut PgConnection, workspace: Uuid) -> AppResult<()> {
        let found: bool = match self {
            Self::Workspace => return Ok(()),
            Self::Project(p) => {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1 AND workspace_id = $2)")
                    .bind(p)
                    .bind(workspace)
                    .fetch_one(&mut *conn)
                    .await?
            }
            Self::User(u) => {
                sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM workspace_members WHERE user_id = $1 AND workspace_id = $2)",
                )
                .bind(u)
                .bind(workspace)
                .fetch_one(&mut *conn)
                .await?
            }
        };
        if found {
            Ok(())
        } else {
            Err(AppError::invalid(
                "BUDGET_SCOPE_NOT_FOUND",
                match self {
                    Self::Project(_) => "projectId: no such project in this workspace",
                    _ => "userId: no such member of this workspace",
                },
            ))
        }
    }
}

/// A budget as it stands now (a passed window counts as empty).
#[derive(Clone, Debug)]
pub struct Budget {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub scope: Scope,
    pub unit: BudgetUnit,
    pub window: BudgetWindow,
    pub allocated: i64,
    /// In what agents report (milliseconds for AGENT_MINUTES).
    pub consumed_raw: i64,
    pub window_started_at: OffsetDateTime,
    pub resets_at: Option<OffsetDateTime>,
}

impl Budget {
    pub fn consumed(&self) -> f64 {
        self.consumed_raw as f64 / self.unit.scale()
    }

    pub fn remaining(&self) -> f64 {
        (self.allocated as f64 - self.consumed()).max(0.0)
    }

    /// Consumed per hour since the window began.
    pub fn burn_rate_per_hour(&self, now: OffsetDateTime) -> f64 {
        let hours = (now - self.window_started_at).as_seconds_f64().max(1.0) / 3600.0;
        self.consumed() / hours
    }
}

const SELECT: &str = "SELECT b.id, b.workspace_id, b.project_id, b.user_id, b.unit, b.window_kind, b.allocated,
    n.consumed, n.window_started_at, n.resets_at
    FROM agent_budgets b CROSS JOIN LATERAL agent_budget_now(b) n";

fn from_row(r: &sqlx::postgres::PgRow) -> AppResult<Budget> {
    let unit: &str = r.try_get("unit")?;
    let window: &str = r.try_get("window_kind")?;
    let scope = match (r.try_get("project_id")?, r.try_get("user_id")?) {
        (Some(p), _) => Scope::Project(p),
        (None, Some(u)) => Scope::User(u),
        (None, None) => Scope::Workspace,
    };
    Ok(Budget {
        id: r.try_get("id")?,
        workspace_id: r.try_get("workspace_id")?,
        scope,
        unit: BudgetUnit::parse(unit)?,
        window: BudgetWindow::parse(window)?,
        allocated: r.try_get("allocated")?,
        consumed_raw: r.try_get("consumed")?,
        window_started_at: r.try_get("window_started_at")?,
        resets_at: r.try_get("resets_at")?,
    })
}

/// The budgets of a workspace that the connection may read, oldest first.
pub async fn list(conn: &mut PgConnection, workspace: Uuid) -> AppResult<Vec<Budget>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE b.workspace_id = $1 ORDER BY b.created_at, b.id"
    )))
    .bind(workspace)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

async fn one(conn: &mut PgConnection, id: Uuid) -> AppResult<Budget> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE b.id = $1")))
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    from_row(&row)
}

/// A checked `setBudget`: what to write.
pub struct Setting {
    pub workspace: Uuid,
    pub scope: Scope,
    pub unit: BudgetUnit,
    pub window: BudgetWindow,
    pub allocated: i64,
    pub resets_at: OffsetDateTime,
}

impl Setting {
    /// Checks what an outsider controls before anything is written.
    pub async fn new(
        conn: &mut PgConnection,
        workspace: Uuid,
        scope: Scope,
        unit: BudgetUnit,
        window: BudgetWindow,
        limit: i64,
        resets_at: Option<OffsetDateTime>,
    ) -> AppResult<Self> {
        if !(0..=MAX_ALLOCATED).contains(&limit) {
            return Err(AppError::invalid(
                "BUDGET_LIMIT_INVALID",
                format!("limit: a whole number from 0 to {MAX_ALLOCATED}, not {limit}"),
            ));
        }
        let resets_at = window.first_reset(resets_at, OffsetDateTime::now_utc())?;
        scope.check(conn, workspace).await?;
        Ok(Self {
            workspace,
            scope,
            unit,
            window,
            allocated: limit,
            resets_at,
        })
    }

    /// Creates the budget, or changes the limit and window of the one for
    /// this scope and unit (what its window consumed so far stays).
    pub async fn write(&self, conn: &mut PgConnection, by: Option<Uuid>) -> AppResult<Budget> {
        let (project, user) = self.scope.ids();
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO agent_budgets (id, workspace_id, project_id, user_id, unit, window_kind, allocated,
                 resets_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (workspace_id, project_id, user_id, unit) DO UPDATE
             SET window_kind = excluded.window_kind, allocated = excluded.allocated, resets_at = excluded.resets_at
             RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(self.workspace)
        .bind(project)
        .bind(user)
        .bind(self.unit.as_db())
        .bind(self.window.as_db())
        .bind(self.allocated)
        .bind(self.resets_at)
        .bind(by)
        .fetch_one(&mut *conn)
        .await?;
        one(conn, id).await
    }
}

/// Empties the current window of the budget for this scope and unit.
pub async fn reset(conn: &mut PgConnection, workspace: Uuid, scope: Scope, unit: BudgetUnit) -> AppResult<Budget> {
    let (project, user) = scope.ids();
    let id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE agent_budgets b SET consumed = 0, window_started_at = clock_timestamp(),
             resets_at = (agent_budget_now(b)).resets_at
         WHERE workspace_id = $1 AND project_id IS NOT DISTINCT FROM $2 AND user_id IS NOT DISTINCT FROM $3
           AND unit = $4
         RETURNING id",
    )
    .bind(workspace)
    .bind(project)
    .bind(user)
    .bind(unit.as_db())
    .fetch_optional(&mut *conn)
    .await?;
    let id = id.ok_or_else(|| AppError::invalid("BUDGET_NOT_FOUND", "no budget in this unit for this scope"))?;
    one(conn, id).await
}

/// A usage budget of agent tasks: a limit per window in one unit, over the
/// workspace's tasks, one project's, or those one member created.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "Budget")]
pub struct BudgetView {
    pub id: ID,
    pub workspace_id: ID,
    /// Set when the budget covers one project's tasks.
    pub project_id: Option<ID>,
    /// Set when the budget covers the tasks one user created.
    pub user_id: Option<ID>,
    pub unit: BudgetUnit,
    pub window: BudgetWindow,
    /// The limit per window, in the unit.
    pub allocated: f64,
    /// Used in the current window, in the unit.
    pub consumed: f64,
    /// allocated − consumed, at least 0. At 0 no task it covers is claimed.
    pub remaining: f64,
    pub window_started_at: OffsetDateTime,
    /// When the window resets next; none once an AT budget's reset has passed.
    pub resets_at: Option<OffsetDateTime>,
    /// Consumed per hour since the current window began.
    pub burn_rate_per_hour: f64,
}

impl BudgetView {
    fn of(rc: &RequestContext, b: &Budget) -> Self {
        let now = OffsetDateTime::now_utc();
        let (project, user) = b.scope.ids();
        Self {
            id: ID(b.id.to_string()),
            workspace_id: rc.global_id(Kind::Workspace, b.workspace_id),
            project_id: project.map(|p| rc.global_id(Kind::Project, p)),
            user_id: user.map(|u| rc.global_id(Kind::User, u)),
            unit: b.unit,
            window: b.window,
            allocated: b.allocated as f64,
            consumed: b.consumed(),
            remaining: b.remaining(),
            window_started_at: b.window_started_at,
            resets_at: b.resets_at,
            burn_rate_per_hour: b.burn_rate_per_hour(now),
        }
    }
}

/// Whose tasks, as GraphQL names them: the workspace's when neither is given.
fn scope_of(rc: &RequestContext, project_id: Option<&ID>, user_id: Option<&ID>) -> AppResult<Scope> {
    match (project_id, user_id) {
        (None, None) => Ok(Scope::Workspace),
        (Some(p), None) => Ok(Scope::Project(rc.local_id_of("projectId", p, Kind::Project)?)),
        (None, Some(u)) => Ok(Scope::User(rc.local_id_of("userId", u, Kind::User)?)),
        (Some(_), Some(_)) => Err(AppError::invalid(
            "BUDGET_SCOPE_AMBIGUOUS",
            "give projectId or userId, not both",
        )),
    }
}

/// The workspace, which the caller must own or administer (or be an instance admin).
async fn administered(rc: &RequestContext, id: &ID) -> AppResult<Uuid> {
    let ws = rc.local_id_of("workspaceId", id, Kind::Workspace)?;
    if !rc.user()?.is_admin {
        workspaces::require_visible(rc, ws).await?;
        let owns: bool = sqlx::query_scalar("SELECT $1 = ANY (admin_workspace_ids())")
            .bind(ws)
            .fetch_one(&mut *rc.db.conn().await?)
            .await?;
        if !owns {
            return Err(AppError::Forbidden(
                "only owners and admins of the workspace, and instance admins, set its budgets".into(),
            ));
        }
    }
    Ok(ws)
}

#[derive(Default)]
pub struct BudgetQuery;

#[Object]
impl BudgetQuery {
    /// The workspace's usage budgets: each with its limit, what its current
    /// window consumed, what remains, when it resets and the burn rate.
    async fn budgets(&self, ctx: &Context<'_>, workspace_id: ID) -> AppResult<Vec<BudgetView>> {
        let rc = RequestContext::of(ctx);
        let admin = rc.user()?.is_admin;
        let ws = rc.local_id_of("workspaceId", &workspace_id, Kind::Workspace)?;
        if !admin {
            workspaces::require_visible(rc, ws).await?;
        }
        let budgets = list(&mut *rc.db.conn().await?, ws).await?;
        Ok(budgets.iter().map(|b| BudgetView::of(rc, b)).collect())
    }
}

#[derive(InputObject)]
pub struct SetBudgetInput {
    pub workspace_id: ID,
    /// Only this project's tasks (else the whole workspace's).
    pub project_id: Option<ID>,
    /// Only the tasks this member created (else the whole workspace's).
    pub user_id: Option<ID>,
    pub unit: BudgetUnit,
    /// Per window, in the unit: 0 to 10^15. 0 holds every task it covers.
    pub limit: i64,
    pub window: BudgetWindow,
    /// The first reset (in the future): required for AT; for DAILY and
    /// MONTHLY it sets the time (and day) of every reset.
    pub resets_at: Option<OffsetDateTime>,
}

#[derive(Default)]
pub struct BudgetMutation;

#[Object]
impl BudgetMutation {
    /// Sets the budget of a scope in a unit: creates it, or changes its
    /// limit and window (what the current window consumed stays). Owners
    /// and admins of the workspace, and instance admins.
    async fn set_budget(&self, ctx: &Context<'_>, input: SetBudgetInput) -> AppResult<BudgetView> {
        let rc = RequestContext::of(ctx);
        let user = rc.user()?.user_id;
        let ws = administered(rc, &input.workspace_id).await?;
        let scope = scope_of(rc, input.project_id.as_ref(), input.user_id.as_ref())?;
        let mut conn = rc.db.conn().await?;
        let setting = Setting::new(
            &mut conn,
            ws,
            scope,
            input.unit,
            input.window,
            input.limit,
            input.resets_at,
        )
        .await?;
        let budget = setting.write(&mut conn, Some(user)).await?;
        Ok(BudgetView::of(rc, &budget))
    }

    /// Empties the current window of a budget (its next reset stays).
    async fn reset_budget(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        project_id: Option<ID>,
        user_id: Option<ID>,
        unit: BudgetUnit,
    ) -> AppResult<BudgetView> {
        let rc = RequestContext::of(ctx);
        let ws = administered(rc, &workspace_id).await?;
        let scope = scope_of(rc, project_id.as_ref(), user_id.as_ref())?;
        let budget = reset(&mut *rc.db.conn().await?, ws, scope, unit).await?;
        Ok(BudgetView::of(rc, &budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn windows_reset_by_default_at_the_next_midnight_or_first_of_the_month() {
        let now = datetime!(2026-12-03 13:41 UTC);
        assert_eq!(
            BudgetWindow::Daily.first_reset(None, now).unwrap(),
            datetime!(2026-12-04 0:00 UTC)
        );
        assert_eq!(
            BudgetWindow::Monthly.first_reset(None, now).unwrap(),
            datetime!(2027-01-01 0:00 UTC)
        );
        let code = |r: AppResult<OffsetDateTime>| r.unwrap_err().code();
        assert_eq!(
            code(BudgetWindow::At.first_reset(None, now)),
            "BUDGET_RESETS_AT_INVALID"
        );
        assert_eq!(
            code(BudgetWindow::Daily.first_reset(Some(now - Duration::HOUR), now)),
            "BUDGET_RESETS_AT_INVALID"
        );
        assert_eq!(
            code(BudgetWindow::Daily.first_reset(Some(now + Duration::days(2)), now)),
            "BUDGET_RESETS_AT_INVALID"
        );
        let at = now + Duration::days(40);
        assert_eq!(BudgetWindow::At.first_reset(Some(at), now).unwrap(), at);
    }

    #[test]
    fn units_and_windows_parse_by_name_and_refuse_others_with_their_codes() {
        assert_eq!(BudgetUnit::parse("agent-minutes").unwrap(), BudgetUnit::AgentMinutes);
        assert_eq!(BudgetUnit::parse("tokens").unwrap(), BudgetUnit::Tokens);
        assert_eq!(BudgetUnit::parse("euros").unwrap_err().code(), "BUDGET_UNIT_UNKNOWN");
        assert_eq!(BudgetWindow::parse("monthly").unwrap(), BudgetWindow::Monthly);
        assert_eq!(
            BudgetWindow::parse("weekly").unwrap_err().code(),
            "BUDGET_WINDOW_UNKNOWN"
        );
    }
}
