//! Tasks: filtered, ordered, cursor-paginated lists, and their mutations.

mod merged;
mod mutations;
pub mod wire;

use merged::{FederatedTasks, federated_page};
pub use mutations::{CreateTaskInput, TaskMutation, UpdateTaskInput};

use std::borrow::Cow;
use std::sync::Arc;

use std::cmp::Ordering;

use async_graphql::{Context, Enum, ID, InputObject, InputType, MaybeUndefined, Object, SimpleObject};
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::edges::Edges;
use crate::graphql::federated::{self, InstanceScope, Plan};
use crate::graphql::ids::{Kind, Owner};
use crate::graphql::pagination::{Cursor, PageInfo, push_after};
use crate::graphql::wire::decode;
use crate::graphql::{InstanceInfo, RequestContext, limits, optional_text, required_text};
use crate::projects::{Project, ProjectRow};
use crate::users::User;
use crate::workspaces::{self, Workspace, WorkspaceRow};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    Todo,
    InProgress,
    Blocked,
    Done,
    Cancelled,
}

impl TaskStatus {
    fn as_db(self) -> &'static str {
        match self {
            Self::Todo => "TODO",
            Self::InProgress => "IN_PROGRESS",
            Self::Blocked => "BLOCKED",
            Self::Done => "DONE",
            Self::Cancelled => "CANCELLED",
        }
    }

    fn from_db(s: &str) -> AppResult<Self> {
        Ok(match s {
            "TODO" => Self::Todo,
            "IN_PROGRESS" => Self::InProgress,
            "BLOCKED" => Self::Blocked,
            "DONE" => Self::Done,
            "CANCELLED" => Self::Cancelled,
            other => {
                return Err(AppError::internal(anyhow::anyhow!("unknown task status {other}")));
            }
        })
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TaskPriority {
    Low,
    Medium,
    High,
    Urgent,
}

impl TaskPriority {
    fn as_db(self) -> i16 {
        self as i16
    }

    fn from_db(n: i16) -> AppResult<Self> {
        Ok(match n {
            0 => Self::Low,
            1 => Self::Medium,
            2 => Self::High,
            3 => Self::Urgent,
            other => {
                return Err(AppError::internal(anyhow::anyhow!("unknown task priority {other}")));
            }
        })
    }
}

#[derive(Clone, Debug)]
pub struct Task {
    pub id: Uuid,
    pub title: String,
    /// A peer's task carries its optional parts (status to assignee) only
    /// when the client selected them or the page is ordered by them
    /// (`wire::Selection`), so the ones it lacks are never resolved. A task
    /// of this instance has every part but the project and the assignee,
    /// which a page joins only when selected (`None` is then never read).
    pub description: Option<String>,
    pub status: Option<TaskStatus>,
    pub priority: Option<TaskPriority>,
    pub due_date: Option<Date>,
    pub created_at: OffsetDateTime,
    pub updated_at: Option<OffsetDateTime>,
    pub workspace: Option<Workspace>,
    pub project: Option<Project>,
    pub assignee: Option<User>,
    pub instance: Arc<InstanceInfo>,
    pub global_id: ID,
}

/// A task's columns with its workspace's, which it always carries.
const SELECT: &str = "SELECT t.id, t.title, t.description, t.status, t.priority, t.due_date,
        t.created_at, t.updated_at, t.workspace_id, t.project_id,
        w.name AS w_name, w.created_at AS w_created_at, w.updated_at AS w_updated_at";
const WORKSPACE: &str = " JOIN workspaces w ON w.id = t.workspace_id";
/// The project's and the assignee's columns and joins, each only when
/// asked for: every join reads its table under RLS.
const PROJECT: (&str, &str) = (
    ", p.id AS p_id, p.name AS p_name, p.description AS p_description, p.created_at AS p_created_at, p.updated_at AS p_updated_at",
    " LEFT JOIN projects p ON p.id = t.project_id",
);
const ASSIGNEE: (&str, &str) = (
    ", u.id AS u_id, u.email AS u_email, u.name AS u_name, u.is_admin AS u_is_admin",
    " LEFT JOIN users u ON u.id = t.assignee_id",
);

/// The select list and the joins of tasks with the parts `selection` asks for.
fn select_and_joins(selection: wire::Selection) -> (String, String) {
    let (mut select, mut joins) = (SELECT.to_string(), WORKSPACE.to_string());
    for (part, (columns, join)) in [("project", PROJECT), ("assignee", ASSIGNEE)] {
        if selection.asks(part) {
            select.push_str(columns);
            joins.push_str(join);
        }
    }
    (select, joins)
}

impl Task {
    /// A task of this instance, with the project and assignee when
    /// `selection` asks for them (else they are never resolved).
    fn from_row(rc: &RequestContext, r: &PgRow, selection: wire::Selection) -> AppResult<Self> {
        let id: Uuid = r.try_get("id")?;
        let workspace_id: Uuid = r.try_get("workspace_id")?;
        let workspace = Some(Workspace::from_row(
            rc,
            WorkspaceRow {
                id: workspace_id,
                name: r.try_get("w_name")?,
                created_at: r.try_get("w_created_at")?,
                updated_at: r.try_get("w_updated_at")?,
            },
        ));
        // The project's row, not the task's project_id: a grant without
        // projects leaves the task, but not its project, visible.
        let joined = |part: &str, id: &str| -> AppResult<Option<Uuid>> {
            Ok(if selection.asks(part) { r.try_get(id)? } else { None })
        };
        let project = match joined("project", "p_id")? {
            None => None,
            Some(pid) => Some(Project::from_row(
                rc,
                ProjectRow {
                    id: pid,
                    workspace_id,
                    name: r.try_get("p_name")?,
                    description: r.try_get("p_description")?,
                    created_at: r.try_get("p_created_at")?,
                    updated_at: r.try_get("p_updated_at")?,
                },
            )),
        };
        let assignee = match joined("assignee", "u_id")? {
            None => None,
            Some(uid) => Some(User::new(
                rc,
                uid,
                r.try_get("u_email")?,
                r.try_get("u_name")?,
                r.try_get("u_is_admin")?,
            )),
        };
        Ok(Self {
            global_id: rc.global_id(Kind::Task, id),
            id,
            title: r.try_get("title")?,
            description: r.try_get("description")?,
            status: Some(TaskStatus::from_db(r.try_get("status")?)?),
            priority: Some(TaskPriority::from_db(r.try_get("priority")?)?),
            due_date: r.try_get("due_date")?,
            created_at: r.try_get("created_at")?,
            updated_at: Some(r.try_get("updated_at")?),
            workspace,
            project,
            assignee,
            instance: rc.instance.clone(),
        })
    }
}

pub async fn load(rc: &RequestContext, id: Uuid) -> AppResult<Option<Task>> {
    let (select, joins) = select_and_joins(wire::Selection::ALL);
    let row = sqlx::query(AssertSqlSafe(format!("{select} FROM tasks t{joins} WHERE t.id = $1")))
        .bind(id)
        .fetch_optional(&mut *rc.db.conn().await?)
        .await?;
    row.map(|r| Task::from_row(rc, &r, wire::Selection::ALL)).transpose()
}

async fn require(rc: &RequestContext, id: Uuid) -> AppResult<Task> {
    load(rc, id).await?.ok_or_else(|| AppError::NotFound("task".into()))
}

#[Object]
impl Task {
    pub async fn id(&self) -> ID {
        self.global_id.clone()
    }
    async fn title(&self) -> &str {
        &self.title
    }
    async fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    async fn status(&self) -> AppResult<TaskStatus> {
        asked(self.status, "status")
    }
    async fn priority(&self) -> AppResult<TaskPriority> {
        asked(self.priority, "priority")
    }
    async fn due_date(&self) -> Option<Date> {
        self.due_date
    }
    async fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }
    async fn updated_at(&self) -> AppResult<OffsetDateTime> {
        asked(self.updated_at, "updatedAt")
    }
    async fn workspace(&self) -> AppResult<&Workspace> {
        asked(self.workspace.as_ref(), "workspace")
    }
    async fn project(&self) -> Option<&Project> {
        self.project.as_ref()
    }
    async fn assignee(&self) -> Option<&User> {
        self.assignee.as_ref()
    }
    async fn instance(&self) -> &InstanceInfo {
        &self.instance
    }
}

/// A part of a task: never missing where it is used, since a task of this
/// instance has every part and a peer was asked for every part the client
/// selected (and its answer checked).
fn asked<T>(part: Option<T>, name: &str) -> AppResult<T> {
    part.ok_or_else(|| {
        AppError::internal(anyhow::anyhow!(
            "a task came without its {name}: a peer's task carries only what was asked for"
        ))
    })
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TaskOrderField {
    CreatedAt,
    UpdatedAt,
    DueDate,
    Priority,
    Title,
    Status,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum OrderDirection {
    #[default]
    Asc,
    Desc,
}

impl OrderDirection {
    /// How a later row compares to an earlier one.
    fn forward(self) -> Ordering {
        match self {
            Self::Asc => Ordering::Greater,
            Self::Desc => Ordering::Less,
        }
    }
}

#[derive(InputObject, Clone, Copy, Debug)]
pub struct TaskOrder {
    pub field: TaskOrderField,
    #[graphql(default)]
    pub direction: OrderDirection,
}

impl Default for TaskOrder {
    fn default() -> Self {
        Self {
            field: TaskOrderField::CreatedAt,
            direction: OrderDirection::Asc,
        }
    }
}

impl TaskOrder {
    /// (sort expression, the type its text form casts back to).
    /// Tasks without a due date sort as if due at infinity; text sorts bytewise.
    fn sql(self) -> (&'static str, &'static str) {
        match self.field {
            TaskOrderField::CreatedAt => ("t.created_at", "timestamptz"),
            TaskOrderField::UpdatedAt => ("t.updated_at", "timestamptz"),
            TaskOrderField::DueDate => ("coalesce(t.due_date, 'infinity'::date)", "date"),
            TaskOrderField::Priority => ("t.priority", "smallint"),
            TaskOrderField::Title => ("(t.title COLLATE \"C\")", "text"),
            TaskOrderField::Status => ("(t.status COLLATE \"C\")", "text"),
        }
    }

    /// The value a task sorts by, as SQL sorts it: `None` only for a peer's
    /// task without its key, which `wire::Selection` always asks for.
    fn sort_key(self, t: &Task) -> Option<SortKey<'_>> {
        Some(match self.field {
            TaskOrderField::CreatedAt => SortKey::Time(t.created_at),
            TaskOrderField::UpdatedAt => SortKey::Time(t.updated_at?),
            TaskOrderField::DueDate => SortKey::Due(t.due_date.is_none(), t.due_date),
            TaskOrderField::Priority => SortKey::Int(t.priority?.as_db()),
            TaskOrderField::Title => SortKey::Text(Cow::Borrowed(&t.title)),
            TaskOrderField::Status => SortKey::Text(Cow::Borrowed(t.status?.as_db())),
        })
    }

    /// [`Self::sort_key`], where a task without it is an error.
    fn key_of(self, t: &Task) -> AppResult<SortKey<'_>> {
        self.sort_key(t)
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("a peer's task came without the key of {}", self.name())))
    }

    /// A cursor's key, read back; a key this ordering never issues is refused.
    fn parse_key(self, text: &str) -> AppResult<SortKey<'_>> {
        let bad = || AppError::BadInput("after: cursor does not fit this ordering".into());
        Ok(match self.field {
            TaskOrderField::CreatedAt | TaskOrderField::UpdatedAt => {
                SortKey::Time(OffsetDateTime::parse(text, &Rfc3339).map_err(|_| bad())?)
            }
            TaskOrderField::DueDate if text == "infinity" => SortKey::Due(true, None),
            TaskOrderField::DueDate => SortKey::Due(
                false,
                Some(Date::parse(text, time::macros::format_description!("[year]-[month]-[day]")).map_err(|_| bad())?),
            ),
            TaskOrderField::Priority => SortKey::Int(text.parse().map_err(|_| bad())?),
            TaskOrderField::Title | TaskOrderField::Status => SortKey::Text(Cow::Borrowed(text)),
        })
    }

    /// The cursor after `t`: its place in the global order.
    fn cursor_of(self, t: &Task) -> AppResult<Cursor> {
        Ok(Cursor {
            o: self.name(),
            k: Some(self.key_of(t)?.as_sql_text()?),
            n: Some(Uuid::parse_str(&t.instance.id).map_err(AppError::internal)?),
            i: t.id,
        })
    }

    /// Whether `t` comes after the position `c` names, in the global order.
    fn follows(self, t: &Task, c: &Cursor) -> AppResult<bool> {
        let key = self.parse_key(c.k.as_deref().unwrap_or_default())?;
        let at = c.n.map(|n| n.to_string()).unwrap_or_default();
        let total = self
            .key_of(t)?
            .cmp(&key)
            .then_with(|| t.instance.id.cmp(&at))
            .then_with(|| t.id.cmp(&c.i));
        Ok(total == self.direction.forward())
    }

    /// The ordering as the schema names it, e.g. `DUE_DATE:DESC`.
    fn name(self) -> String {
        format!("{}:{}", self.field.to_value(), self.direction.to_value())
    }

    /// The global order across instances: the field as SQL sorts it, then
    /// instance id, then id; all reversed for DESC.
    pub fn compare(self, a: &Task, b: &Task) -> Ordering {
        let total = self
            .sort_key(a)
            .cmp(&self.sort_key(b))
            .then_with(|| a.instance.id.cmp(&b.instance.id))
            .then_with(|| a.id.cmp(&b.id));
        match self.direction {
            OrderDirection::Asc => total,
            OrderDirection::Desc => total.reverse(),
        }
    }
}

/// What a task sorts by, compared as SQL compares it (`TaskOrder::sql`);
/// text is borrowed from the task or the cursor, so comparing allocates nothing.
#[derive(PartialEq, Eq, PartialOrd, Ord, Debug)]
enum SortKey<'a> {
    Time(OffsetDateTime),
    /// Missing first in the tuple: no due date sorts as if due at infinity.
    Due(bool, Option<Date>),
    Int(i16),
    /// Compared bytewise, as `COLLATE "C"` does.
    Text(Cow<'a, str>),
}

impl SortKey<'_> {
    /// Text that PostgreSQL casts back (to `TaskOrder::sql`'s type) to the same value.
    fn as_sql_text(&self) -> AppResult<String> {
        Ok(match self {
            Self::Time(t) => t.format(&Rfc3339).map_err(AppError::internal)?,
            Self::Due(_, Some(d)) => d.to_string(),
            Self::Due(_, None) => "infinity".into(),
            Self::Int(n) => n.to_string(),
            Self::Text(s) => s.to_string(),
        })
    }
}

#[derive(InputObject, Default, Debug)]
pub struct TaskFilter {
    pub status: Option<Vec<TaskStatus>>,
    pub priority: Option<Vec<TaskPriority>>,
    pub assignee_id: Option<ID>,
    pub project_id: Option<ID>,
    /// Due strictly before this date.
    pub due_before: Option<Date>,
    /// Due on or after this date.
    pub due_after: Option<Date>,
    /// Case-insensitive substring of the title.
    pub search: Option<String>,
}

/// A parsed filter with local ids, ready to become SQL.
pub struct Conditions {
    /// An id of another instance was given: nothing here can match.
    impossible: bool,
    workspace: Option<Uuid>,
    status: Option<Vec<String>>,
    priority: Option<Vec<i16>>,
    assignee: Option<Uuid>,
    project: Option<Uuid>,
    due_before: Option<Date>,
    due_after: Option<Date>,
    search: Option<String>,
}

impl Conditions {
    /// Filter ids of other instances match nothing here (a federated filter
    /// reaches every instance); ids of the wrong type are refused.
    fn parse(rc: &RequestContext, workspace: Option<&ID>, f: &TaskFilter) -> AppResult<Self> {
        let search = optional_text("filter.search", f.search.clone(), 200)?;
        let mut impossible = false;
        let mut filter_id = |field: &str, id: &Option<ID>, kind: Kind| -> AppResult<Option<Uuid>> {
            let Some(id) = id else { return Ok(None) };
            match rc.owner_of(field, id, kind)? {
                Owner::Here(local) => Ok(Some(local)),
                Owner::Instance(_) => {
                    impossible = true;
                    Ok(None)
                }
            }
        };
        let assignee = filter_id("filter.assigneeId", &f.assignee_id, Kind::User)?;
        let project = filter_id("filter.projectId", &f.project_id, Kind::Project)?;
        Ok(Self {
            impossible,
            workspace: workspace.map(|id| rc.local_id(id, Kind::Workspace)).transpose()?,
            status: f
                .status
                .as_ref()
                .map(|s| s.iter().map(|s| s.as_db().to_string()).collect()),
            priority: f.priority.as_ref().map(|p| p.iter().map(|p| p.as_db()).collect()),
            assignee,
            project,
            due_before: f.due_before,
            due_after: f.due_after,
            search,
        })
    }

    fn push(&self, q: &mut QueryBuilder<Postgres>) {
        q.push(if self.impossible { " WHERE false" } else { " WHERE true" });
        if let Some(ws) = self.workspace {
            q.push(" AND t.workspace_id = ").push_bind(ws);
        }
        if let Some(s) = &self.status {
            q.push(" AND t.status = ANY(").push_bind(s.clone()).push(")");
        }
        if let Some(p) = &self.priority {
            q.push(" AND t.priority = ANY(").push_bind(p.clone()).push(")");
        }
        if let Some(a) = self.assignee {
            q.push(" AND t.assignee_id = ").push_bind(a);
        }
        if let Some(p) = self.project {
            q.push(" AND t.project_id = ").push_bind(p);
        }
        if let Some(d) = self.due_before {
            q.push(" AND t.due_date < ").push_bind(d);
        }
        if let Some(d) = self.due_after {
            q.push(" AND t.due_date >= ").push_bind(d);
        }
        if let Some(s) = &self.search {
            let pattern = format!("%{}%", s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            q.push(" AND t.title ILIKE ").push_bind(pattern);
        }
    }
}

/// A task in a page. Its cursor is sealed (a MAC) only when selected: a
/// peer's subquery never selects it, nor does a merged list's own page.
#[derive(Clone, Debug)]
pub struct TaskEdge {
    pub node: Task,
    order: TaskOrder,
}

#[Object]
impl TaskEdge {
    async fn cursor(&self, ctx: &Context<'_>) -> AppResult<String> {
        self.sealed(RequestContext::of(ctx))
    }
    async fn node(&self) -> &Task {
        &self.node
    }
}

impl TaskEdge {
    fn sealed(&self, rc: &RequestContext) -> AppResult<String> {
        Ok(rc.seal_cursor(&self.order.cursor_of(&self.node)?))
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct TaskConnection {
    pub edges: Edges<TaskEdge>,
    pub page_info: PageInfo,
    /// All tasks matching the filter (not only this page); computed only when asked for.
    pub total_count: Option<i64>,
}

impl TaskConnection {
    fn new(
        rc: &RequestContext,
        edges: Vec<TaskEdge>,
        has_next_page: bool,
        has_previous_page: bool,
        total_count: Option<i64>,
    ) -> AppResult<Self> {
        Ok(Self {
            page_info: PageInfo::of_edges(&edges, |e| e.sealed(rc), has_next_page, has_previous_page)?,
            edges: Edges(edges),
            total_count,
        })
    }
}

/// One page of tasks visible to the request, after a position, with the
/// parts `selection` asks for.
async fn page(
    rc: &RequestContext,
    conditions: &Conditions,
    order: TaskOrder,
    selection: wire::Selection,
    first: usize,
    after: Option<&Cursor>,
    with_total: bool,
) -> AppResult<TaskConnection> {
    let (expr, cast) = order.sql();
    let asc = order.direction == OrderDirection::Asc;
    let (cmp, dir) = if asc { (">", "ASC") } else { ("<", "DESC") };
    let (select, joins) = select_and_joins(selection);
    let mut q = QueryBuilder::<Postgres>::new(format!("{select} FROM (SELECT * FROM tasks t"));
    conditions.push(&mut q);
    if let Some(c) = &after {
        let key = order.parse_key(c.k.as_deref().unwrap_or_default())?.as_sql_text()?;
        push_after(&mut q, c, rc.instance_id, expr, cast, "t.id", cmp, asc, key);
    }
    q.push(format!(
        " ORDER BY {expr} {dir}, t.id {dir}{}",
        crate::db::limit(first + 1)
    ));
    // Choose the page from tasks alone, then join its details: joining first (under
    // RLS) makes PostgreSQL read every visible task and sort them all.
    q.push(format!(") t{joins} ORDER BY {expr} {dir}, t.id {dir}"));
    let mut conn = rc.db.conn().await?;
    let rows = q
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| match AppError::from(e) {
            AppError::BadInput(_) => AppError::BadInput("after: cursor does not fit this ordering".into()),
            other => other,
        })?;
    let total_count = if with_total {
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM tasks t");
        conditions.push(&mut count);
        Some(rc.cap_total(count.build_query_scalar::<i64>().fetch_one(&mut *conn).await?))
    } else {
        None
    };
    drop(conn);
    let has_next_page = rows.len() > first;
    let edges = rows
        .iter()
        .take(first)
        .map(|r| {
            Ok(TaskEdge {
                node: Task::from_row(rc, r, selection)?,
                order,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    TaskConnection::new(rc, edges, has_next_page, after.is_some(), total_count)
}

#[derive(Default)]
pub struct TaskQuery;

#[Object]
impl TaskQuery {
    /// Tasks you can see, optionally in one workspace, filtered, ordered
    /// (ties broken by instance, then id) and paginated with `first`/`after`.
    /// `scope` adds other instances; without it, only this instance answers.
    #[graphql(
        complexity = "scope.as_ref().map_or(0, |_| limits::FORWARD_COST) + first.unwrap_or(20).max(1) as usize * child_complexity"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        workspace_id: Option<ID>,
        filter: Option<TaskFilter>,
        order_by: Option<TaskOrder>,
        first: Option<i32>,
        after: Option<String>,
        scope: Option<InstanceScope>,
    ) -> AppResult<TaskConnection> {
        let rc = RequestContext::of(ctx);
        let first = rc.page_size(first)?;
        let filter = filter.unwrap_or_default();
        let order = order_by.unwrap_or_default();
        let with_total = ctx.look_ahead().field("totalCount").exists();
        // A workspace of another instance: only its owner can answer.
        let owner = match &workspace_id {
            Some(id) => Some(rc.owner_of("workspaceId", id, Kind::Workspace)?),
            None => None,
        };
        let plan = match owner {
            Some(Owner::Instance(owner)) => federated::owner_plan(rc, owner).await?,
            Some(Owner::Here(_)) => Plan::local(),
            None => federated::plan(rc, scope.as_ref()).await?,
        };
        let conditions = if plan.include_self {
            Conditions::parse(rc, workspace_id.as_ref(), &filter)?
        } else {
            Conditions::parse(rc, None, &filter)?
        };
        let selection = wire::Selection::of(&ctx.look_ahead().field("edges").field("node"), order.field);
        if !plan.fans_out() && plan.include_self && scope.is_none() {
            let after = after.map(|a| rc.open_cursor(&a, &order.name())).transpose()?;
            return page(rc, &conditions, order, selection, first, after.as_ref(), with_total).await;
        }
        let request = FederatedTasks {
            workspace_id: workspace_id.map(|w| w.0),
            filter: filter.to_value().into_json().map_err(AppError::internal)?,
            order,
            first,
            with_total,
            selection,
        };
        federated_page(rc, &plan, &request, &conditions, after.as_deref()).await
    }
}
