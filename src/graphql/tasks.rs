//! Tasks: filtered, ordered, cursor-paginated lists, and their mutations.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, MaybeUndefined, Object, SimpleObject};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::ids::Kind;
use super::pagination::{Cursor, PageInfo, page_size};
use super::projects::{Project, ProjectRow};
use super::users::User;
use super::workspaces::{self, Workspace, WorkspaceRow};
use super::{InstanceInfo, RequestContext, optional_text, required_text};
use crate::error::{AppError, AppResult};

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
                return Err(AppError::internal(anyhow::anyhow!(
                    "unknown task status {other}"
                )));
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
                return Err(AppError::internal(anyhow::anyhow!(
                    "unknown task priority {other}"
                )));
            }
        })
    }
}

#[derive(Clone, Debug)]
pub struct Task {
    pub id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub status: TaskStatus,
    pub priority: TaskPriority,
    pub due_date: Option<Date>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub workspace: Workspace,
    pub project: Option<Project>,
    pub assignee: Option<User>,
    pub instance: Arc<InstanceInfo>,
    pub global_id: ID,
}

/// Tasks with their workspace, project and assignee, in one query.
const SELECT: &str = "SELECT t.id, t.title, t.description, t.status, t.priority, t.due_date,
        t.created_at, t.updated_at, t.workspace_id, t.project_id,
        w.name AS w_name, w.created_at AS w_created_at, w.updated_at AS w_updated_at,
        p.name AS p_name, p.description AS p_description, p.created_at AS p_created_at, p.updated_at AS p_updated_at,
        u.id AS u_id, u.email AS u_email, u.name AS u_name, u.is_admin AS u_is_admin";
const FROM: &str = " FROM tasks t JOIN workspaces w ON w.id = t.workspace_id
        LEFT JOIN projects p ON p.id = t.project_id
        LEFT JOIN users u ON u.id = t.assignee_id";

impl Task {
    fn from_row(rc: &RequestContext, r: &PgRow) -> AppResult<Self> {
        let id: Uuid = r.try_get("id")?;
        let workspace_id: Uuid = r.try_get("workspace_id")?;
        let workspace = Workspace::from_row(
            rc,
            WorkspaceRow {
                id: workspace_id,
                name: r.try_get("w_name")?,
                created_at: r.try_get("w_created_at")?,
                updated_at: r.try_get("w_updated_at")?,
            },
        );
        let project = match r.try_get::<Option<Uuid>, _>("project_id")? {
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
        let assignee = match r.try_get::<Option<Uuid>, _>("u_id")? {
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
            status: TaskStatus::from_db(r.try_get("status")?)?,
            priority: TaskPriority::from_db(r.try_get("priority")?)?,
            due_date: r.try_get("due_date")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            workspace,
            project,
            assignee,
            instance: rc.instance.clone(),
        })
    }
}

pub async fn load(rc: &RequestContext, id: Uuid) -> AppResult<Option<Task>> {
    let row = sqlx::query(AssertSqlSafe(format!("{SELECT}{FROM} WHERE t.id = $1")))
        .bind(id)
        .fetch_optional(&mut *rc.db.conn().await?)
        .await?;
    row.map(|r| Task::from_row(rc, &r)).transpose()
}

async fn require(rc: &RequestContext, id: Uuid) -> AppResult<Task> {
    load(rc, id)
        .await?
        .ok_or_else(|| AppError::NotFound("task".into()))
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
    async fn status(&self) -> TaskStatus {
        self.status
    }
    async fn priority(&self) -> TaskPriority {
        self.priority
    }
    async fn due_date(&self) -> Option<Date> {
        self.due_date
    }
    async fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }
    async fn updated_at(&self) -> OffsetDateTime {
        self.updated_at
    }
    async fn workspace(&self) -> &Workspace {
        &self.workspace
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

    fn name(self) -> String {
        format!("{:?}:{:?}", self.field, self.direction).to_uppercase()
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
struct Conditions {
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
    fn parse(rc: &RequestContext, workspace: Option<&ID>, f: TaskFilter) -> AppResult<Self> {
        let search = optional_text("filter.search", f.search, 200)?;
        Ok(Self {
            workspace: workspace
                .map(|id| rc.local_id(id, Kind::Workspace))
                .transpose()?,
            status: f
                .status
                .map(|s| s.into_iter().map(|s| s.as_db().to_string()).collect()),
            priority: f
                .priority
                .map(|p| p.into_iter().map(TaskPriority::as_db).collect()),
            assignee: f
                .assignee_id
                .as_ref()
                .map(|id| rc.local_id(id, Kind::User))
                .transpose()?,
            project: f
                .project_id
                .as_ref()
                .map(|id| rc.local_id(id, Kind::Project))
                .transpose()?,
            due_before: f.due_before,
            due_after: f.due_after,
            search,
        })
    }

    fn push(&self, q: &mut QueryBuilder<Postgres>) {
        q.push(" WHERE true");
        if let Some(ws) = self.workspace {
            q.push(" AND t.workspace_id = ").push_bind(ws);
        }
        if let Some(s) = &self.status {
            q.push(" AND t.status = ANY(")
                .push_bind(s.clone())
                .push(")");
        }
        if let Some(p) = &self.priority {
            q.push(" AND t.priority = ANY(")
                .push_bind(p.clone())
                .push(")");
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
            let pattern = format!(
                "%{}%",
                s.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            q.push(" AND t.title ILIKE ").push_bind(pattern);
        }
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct TaskEdge {
    pub cursor: String,
    pub node: Task,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct TaskConnection {
    pub edges: Vec<TaskEdge>,
    pub page_info: PageInfo,
    /// All tasks matching the filter (not only this page); computed only when asked for.
    pub total_count: Option<i64>,
}

/// One page of tasks visible to the request.
async fn page(
    rc: &RequestContext,
    conditions: &Conditions,
    order: TaskOrder,
    first: usize,
    after: Option<&str>,
    with_total: bool,
) -> AppResult<TaskConnection> {
    let (expr, cast) = order.sql();
    let ordering = order.name();
    let after = after.map(|c| Cursor::decode(c, &ordering)).transpose()?;
    let (cmp, dir) = match order.direction {
        OrderDirection::Asc => (">", "ASC"),
        OrderDirection::Desc => ("<", "DESC"),
    };
    let mut q =
        QueryBuilder::<Postgres>::new(format!("{SELECT}, ({expr})::text AS sort_key{FROM}"));
    conditions.push(&mut q);
    if let Some(c) = &after {
        let key =
            c.k.clone()
                .ok_or_else(|| AppError::BadInput("after: cursor has no sort key".into()))?;
        q.push(format!(" AND ({expr}, t.id) {cmp} ("))
            .push_bind(key)
            .push(format!("::{cast}, "))
            .push_bind(c.i)
            .push(")");
    }
    q.push(format!(" ORDER BY {expr} {dir}, t.id {dir} LIMIT "))
        .push_bind(first as i64 + 1);
    let mut conn = rc.db.conn().await?;
    let rows = q
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| match AppError::from(e) {
            AppError::BadInput(_) => {
                AppError::BadInput("after: cursor does not fit this ordering".into())
            }
            other => other,
        })?;
    let total_count = if with_total {
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM tasks t");
        conditions.push(&mut count);
        Some(
            count
                .build_query_scalar::<i64>()
                .fetch_one(&mut *conn)
                .await?,
        )
    } else {
        None
    };
    drop(conn);
    let has_next_page = rows.len() > first;
    let edges = rows
        .iter()
        .take(first)
        .map(|r| {
            let node = Task::from_row(rc, r)?;
            let cursor = Cursor {
                o: ordering.clone(),
                k: Some(r.try_get("sort_key")?),
                i: node.id,
            };
            Ok(TaskEdge {
                cursor: cursor.encode(),
                node,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(TaskConnection {
        page_info: PageInfo {
            has_next_page,
            has_previous_page: after.is_some(),
            start_cursor: edges.first().map(|e| e.cursor.clone()),
            end_cursor: edges.last().map(|e| e.cursor.clone()),
        },
        edges,
        total_count,
    })
}

#[derive(Default)]
pub struct TaskQuery;

#[Object]
impl TaskQuery {
    /// Tasks you can see, optionally in one workspace, filtered, ordered
    /// (ties broken by id) and paginated with `first`/`after`.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity")]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        workspace_id: Option<ID>,
        filter: Option<TaskFilter>,
        order_by: Option<TaskOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> AppResult<TaskConnection> {
        let rc = RequestContext::of(ctx);
        let first = page_size(first, rc.max_page_size)?;
        let conditions = Conditions::parse(rc, workspace_id.as_ref(), filter.unwrap_or_default())?;
        let with_total = ctx.look_ahead().field("totalCount").exists();
        page(
            rc,
            &conditions,
            order_by.unwrap_or_default(),
            first,
            after.as_deref(),
            with_total,
        )
        .await
    }
}

#[derive(InputObject)]
pub struct CreateTaskInput {
    pub workspace_id: ID,
    pub project_id: Option<ID>,
    pub title: String,
    pub description: Option<String>,
    pub status: Option<TaskStatus>,
    pub priority: Option<TaskPriority>,
    pub assignee_id: Option<ID>,
    pub due_date: Option<Date>,
}

#[derive(InputObject)]
pub struct UpdateTaskInput {
    pub id: ID,
    pub title: Option<String>,
    pub description: MaybeUndefined<String>,
    pub status: Option<TaskStatus>,
    pub priority: Option<TaskPriority>,
    pub assignee_id: MaybeUndefined<ID>,
    pub project_id: MaybeUndefined<ID>,
    pub due_date: MaybeUndefined<Date>,
}

/// An assignee must be a member of the task's workspace.
async fn check_assignee(rc: &RequestContext, ws: Uuid, user: Uuid) -> AppResult<()> {
    let member: bool = sqlx::query_scalar("SELECT is_workspace_member($1, $2)")
        .bind(ws)
        .bind(user)
        .fetch_one(&mut *rc.db.conn().await?)
        .await?;
    if member {
        Ok(())
    } else {
        Err(AppError::BadInput(
            "assigneeId: not a member of the task's workspace".into(),
        ))
    }
}

fn refuse_guest(e: sqlx::Error) -> AppError {
    match AppError::from(e) {
        AppError::Forbidden(_) => AppError::Forbidden("guests cannot change tasks".into()),
        AppError::BadInput(m) if m.contains("does not exist") => {
            AppError::BadInput("projectId: no such project in this workspace".into())
        }
        other => other,
    }
}

#[derive(Default)]
pub struct TaskMutation;

#[Object]
impl TaskMutation {
    async fn create_task(&self, ctx: &Context<'_>, input: CreateTaskInput) -> AppResult<Task> {
        let rc = RequestContext::of(ctx);
        let ws = rc.local_id(&input.workspace_id, Kind::Workspace)?;
        let project = input
            .project_id
            .as_ref()
            .map(|p| rc.local_id(p, Kind::Project))
            .transpose()?;
        let assignee = input
            .assignee_id
            .as_ref()
            .map(|a| rc.local_id(a, Kind::User))
            .transpose()?;
        let title = required_text("title", &input.title, 500)?;
        let description = optional_text("description", input.description, 100_000)?;
        workspaces::require_visible(rc, ws).await?;
        if let Some(a) = assignee {
            check_assignee(rc, ws, a).await?;
        }
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO tasks (id, workspace_id, project_id, title, description, status, priority, assignee_id, due_date, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, current_user_id())",
        )
        .bind(id)
        .bind(ws)
        .bind(project)
        .bind(title)
        .bind(description)
        .bind(input.status.unwrap_or(TaskStatus::Todo).as_db())
        .bind(input.priority.unwrap_or(TaskPriority::Medium).as_db())
        .bind(assignee)
        .bind(input.due_date)
        .execute(&mut *rc.db.conn().await?)
        .await
        .map_err(refuse_guest)?;
        require(rc, id).await
    }

    async fn update_task(&self, ctx: &Context<'_>, input: UpdateTaskInput) -> AppResult<Task> {
        let rc = RequestContext::of(ctx);
        let id = rc.local_id(&input.id, Kind::Task)?;
        let task = require(rc, id).await?;
        let mut q =
            QueryBuilder::<Postgres>::new("UPDATE tasks SET updated_at = clock_timestamp()");
        let mut changes = 0;
        if let Some(title) = &input.title {
            q.push(", title = ")
                .push_bind(required_text("title", title, 500)?);
            changes += 1;
        }
        if let Some(d) = input
            .description
            .value()
            .map(|d| optional_text("description", Some(d.clone()), 100_000))
            .transpose()?
        {
            q.push(", description = ").push_bind(d);
            changes += 1;
        } else if input.description.is_null() {
            q.push(", description = NULL");
            changes += 1;
        }
        if let Some(s) = input.status {
            q.push(", status = ").push_bind(s.as_db());
            changes += 1;
        }
        if let Some(p) = input.priority {
            q.push(", priority = ").push_bind(p.as_db());
            changes += 1;
        }
        if !input.assignee_id.is_undefined() {
            let a = input
                .assignee_id
                .value()
                .map(|a| rc.local_id(a, Kind::User))
                .transpose()?;
            if let Some(a) = a {
                check_assignee(rc, task.workspace.id, a).await?;
            }
            q.push(", assignee_id = ").push_bind(a);
            changes += 1;
        }
        if !input.project_id.is_undefined() {
            let p = input
                .project_id
                .value()
                .map(|p| rc.local_id(p, Kind::Project))
                .transpose()?;
            q.push(", project_id = ").push_bind(p);
            changes += 1;
        }
        if !input.due_date.is_undefined() {
            q.push(", due_date = ")
                .push_bind(input.due_date.value().copied());
            changes += 1;
        }
        if changes == 0 {
            return Err(AppError::BadInput(
                "nothing to update: give at least one field besides id".into(),
            ));
        }
        q.push(" WHERE id = ").push_bind(id).push(" RETURNING id");
        let updated: Option<Uuid> = q
            .build_query_scalar()
            .fetch_optional(&mut *rc.db.conn().await?)
            .await
            .map_err(refuse_guest)?;
        updated.ok_or_else(|| AppError::Forbidden("guests cannot change tasks".into()))?;
        require(rc, id).await
    }

    /// Deletes a task. Returns its ID.
    async fn delete_task(&self, ctx: &Context<'_>, id: ID) -> AppResult<ID> {
        let rc = RequestContext::of(ctx);
        let local = rc.local_id(&id, Kind::Task)?;
        require(rc, local).await?;
        let deleted: Option<Uuid> =
            sqlx::query_scalar("DELETE FROM tasks WHERE id = $1 RETURNING id")
                .bind(local)
                .fetch_optional(&mut *rc.db.conn().await?)
                .await?;
        deleted.ok_or_else(|| AppError::Forbidden("guests cannot delete tasks".into()))?;
        Ok(id)
    }
}
