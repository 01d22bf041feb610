//! Creating, changing and deleting tasks; a task of another instance is
//! written by its owner (COMMAND).

use super::*;

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

impl UpdateTaskInput {
    /// The input as GraphQL variables, leaving out fields that were not given
    /// (so the owner does not clear them).
    fn to_json(&self) -> AppResult<Value> {
        fn enc<T: InputType>(v: &T) -> AppResult<Value> {
            v.to_value().into_json().map_err(AppError::internal)
        }
        fn maybe<T: InputType>(
            m: &MaybeUndefined<T>,
            out: &mut serde_json::Map<String, Value>,
            key: &str,
        ) -> AppResult<()> {
            match m {
                MaybeUndefined::Undefined => {}
                MaybeUndefined::Null => {
                    out.insert(key.into(), Value::Null);
                }
                MaybeUndefined::Value(v) => {
                    out.insert(key.into(), enc(v)?);
                }
            }
            Ok(())
        }
        let mut out = serde_json::Map::new();
        out.insert("id".into(), json!(self.id.as_str()));
        if let Some(t) = &self.title {
            out.insert("title".into(), json!(t));
        }
        if let Some(s) = &self.status {
            out.insert("status".into(), enc(s)?);
        }
        if let Some(p) = &self.priority {
            out.insert("priority".into(), enc(p)?);
        }
        maybe(&self.description, &mut out, "description")?;
        maybe(&self.assignee_id, &mut out, "assigneeId")?;
        maybe(&self.project_id, &mut out, "projectId")?;
        maybe(&self.due_date, &mut out, "dueDate")?;
        Ok(Value::Object(out))
    }
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
    match AppError::from(e).forbidden_as("guests cannot change tasks") {
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
    /// Creates a task; in a workspace of another instance, the owner creates it (COMMAND).
    async fn create_task(&self, ctx: &Context<'_>, input: CreateTaskInput) -> AppResult<Task> {
        let rc = RequestContext::of(ctx);
        let ws = match rc.owner_of("workspaceId", &input.workspace_id, Kind::Workspace)? {
            Owner::Here(ws) => ws,
            Owner::Instance(owner) => {
                let query = format!(
                    "mutation($input: CreateTaskInput!) {{ createTask(input: $input) {{ ...TaskFields }} }} {}",
                    wire::Selection::ALL.fragment()
                );
                let vars = json!({ "input": input.to_value().into_json().map_err(AppError::internal)? });
                let data = federated::forward(rc, owner, true, &query, vars).await?;
                return wire::Selection::ALL.parse(&data["createTask"]);
            }
        };
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

    /// Changes a task; a task of another instance is changed by its owner (COMMAND).
    async fn update_task(&self, ctx: &Context<'_>, input: UpdateTaskInput) -> AppResult<Task> {
        let rc = RequestContext::of(ctx);
        let id = match rc.owner_of("id", &input.id, Kind::Task)? {
            Owner::Here(id) => id,
            Owner::Instance(owner) => {
                let query = format!(
                    "mutation($input: UpdateTaskInput!) {{ updateTask(input: $input) {{ ...TaskFields }} }} {}",
                    wire::Selection::ALL.fragment()
                );
                let data = federated::forward(rc, owner, true, &query, json!({ "input": input.to_json()? })).await?;
                return wire::Selection::ALL.parse(&data["updateTask"]);
            }
        };
        let task = require(rc, id).await?;
        let mut q = QueryBuilder::<Postgres>::new("UPDATE tasks SET updated_at = clock_timestamp()");
        let mut changes = 0;
        if let Some(title) = &input.title {
            q.push(", title = ").push_bind(required_text("title", title, 500)?);
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
                check_assignee(rc, asked(task.workspace.as_ref(), "workspace")?.id, a).await?;
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
            q.push(", due_date = ").push_bind(input.due_date.value().copied());
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
        let local = match rc.owner_of("id", &id, Kind::Task)? {
            Owner::Here(local) => local,
            Owner::Instance(owner) => {
                let query = "mutation($id: ID!) { deleteTask(id: $id) }";
                let data = federated::forward(rc, owner, true, query, json!({ "id": id.as_str() })).await?;
                return Ok(ID(decode(&data["deleteTask"])?));
            }
        };
        require(rc, local).await?;
        let deleted: Option<Uuid> = sqlx::query_scalar("DELETE FROM tasks WHERE id = $1 RETURNING id")
            .bind(local)
            .fetch_optional(&mut *rc.db.conn().await?)
            .await?;
        deleted.ok_or_else(|| AppError::Forbidden("guests cannot delete tasks".into()))?;
        Ok(id)
    }
}
