//! Events: calendar entries of a workspace, listed by time window with
//! keyset pagination (`Workspace.events`), and their mutations. Like tasks,
//! events of a workspace of another instance are read from and written by
//! that instance (QUERY/COMMAND); nothing of them is stored here.

pub mod wire;

use std::sync::Arc;

use async_graphql::{Context, ID, InputObject, InputType, MaybeUndefined, Object, SimpleObject};
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::federated;
use crate::graphql::ids::{Kind, Owner};
use crate::graphql::pagination::{Cursor, MAX_CURSOR_BYTES, PageInfo};
use crate::graphql::wire::{decode, owned};
use crate::graphql::{InstanceInfo, RequestContext, optional_text, required_text};
use crate::users::User;
use crate::workspaces::{self, Workspace, WorkspaceRow};

/// The title's limit is the table's CHECK. Description and location have no
/// CHECK; they are bounded like a task's description and a title, so one
/// event cannot take a whole request body.
const TITLE_MAX: usize = 500;
const DESCRIPTION_MAX: usize = 100_000;
const LOCATION_MAX: usize = 500;

/// The only order events are listed in; every cursor names it, so a cursor of
/// another list is refused.
const ORDERING: &str = "STARTS_AT:ASC";

#[derive(Clone, Debug)]
pub struct Event {
    pub id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub location: Option<String>,
    pub created_by: Option<User>,
    pub created_at: OffsetDateTime,
    pub workspace: Workspace,
    pub instance: Arc<InstanceInfo>,
    pub global_id: ID,
}

/// Events with their workspace and creator, in one query. The creator is
/// null when the policies hide them (they left every shared workspace).
const SELECT: &str = "SELECT e.id, e.title, e.description, e.starts_at, e.ends_at, e.location,
        e.created_at, e.workspace_id,
        w.name AS w_name, w.created_at AS w_created_at, w.updated_at AS w_updated_at,
        u.id AS u_id, u.email AS u_email, u.name AS u_name, u.is_admin AS u_is_admin";
const JOINS: &str = " JOIN workspaces w ON w.id = e.workspace_id
        LEFT JOIN users u ON u.id = e.created_by";

impl Event {
    fn from_row(rc: &RequestContext, r: &PgRow) -> AppResult<Self> {
        let id: Uuid = r.try_get("id")?;
        let workspace = Workspace::from_row(
            rc,
            WorkspaceRow {
                id: r.try_get("workspace_id")?,
                name: r.try_get("w_name")?,
                created_at: r.try_get("w_created_at")?,
                updated_at: r.try_get("w_updated_at")?,
            },
        );
        let created_by = match r.try_get::<Option<Uuid>, _>("u_id")? {
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
            global_id: rc.global_id(Kind::Event, id),
            id,
            title: r.try_get("title")?,
            description: r.try_get("description")?,
            starts_at: r.try_get("starts_at")?,
            ends_at: r.try_get("ends_at")?,
            location: r.try_get("location")?,
            created_by,
            created_at: r.try_get("created_at")?,
            workspace,
            instance: rc.instance.clone(),
        })
    }
}

pub async fn load(rc: &RequestContext, id: Uuid) -> AppResult<Option<Event>> {
    let row = sqlx::query(AssertSqlSafe(format!("{SELECT} FROM events e{JOINS} WHERE e.id = $1")))
        .bind(id)
        .fetch_optional(&mut *rc.db.conn().await?)
        .await?;
    row.map(|r| Event::from_row(rc, &r)).transpose()
}

async fn require(rc: &RequestContext, id: Uuid) -> AppResult<Event> {
    load(rc, id).await?.ok_or_else(|| AppError::NotFound("event".into()))
}

#[Object]
impl Event {
    pub async fn id(&self) -> ID {
        self.global_id.clone()
    }
    async fn title(&self) -> &str {
        &self.title
    }
    async fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    async fn starts_at(&self) -> OffsetDateTime {
        self.starts_at
    }
    /// Never before `startsAt`; equal for an event without duration.
    async fn ends_at(&self) -> OffsetDateTime {
        self.ends_at
    }
    async fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }
    /// Null when a peer instance created it, or the creator is gone or not visible to you.
    async fn created_by(&self) -> Option<&User> {
        self.created_by.as_ref()
    }
    async fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }
    async fn workspace(&self) -> &Workspace {
        &self.workspace
    }
    async fn instance(&self) -> &InstanceInfo {
        &self.instance
    }
}

// --- listing --------------------------------------------------------------

#[derive(SimpleObject, Clone, Debug)]
pub struct EventEdge {
    pub cursor: String,
    pub node: Event,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct EventConnection {
    pub edges: Vec<EventEdge>,
    pub page_info: PageInfo,
    /// All events in the window (not only this page); computed only when asked for.
    pub total_count: Option<i64>,
}

impl EventConnection {
    fn new(edges: Vec<EventEdge>, has_next_page: bool, has_previous_page: bool, total_count: Option<i64>) -> Self {
        Self {
            page_info: PageInfo::of(edges.iter().map(|e| &e.cursor), has_next_page, has_previous_page),
            edges,
            total_count,
        }
    }
}

/// The arguments of `Workspace.events`, checked.
pub struct EventsRequest {
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    first: usize,
    /// The cursor as given (an owner of the workspace gets it unchanged) ...
    after: Option<String>,
    with_total: bool,
}

impl EventsRequest {
    /// Checked before anything is asked, here or of an owner, so every
    /// instance refuses the same input the same way.
    pub fn parse(
        rc: &RequestContext,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
        first: Option<i32>,
        after: Option<String>,
        with_total: bool,
    ) -> AppResult<Self> {
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(AppError::BadInput("from must be before to".into()));
        }
        let first = rc.page_size(first)?;
        // Only the instance that issued a cursor can check it; the size
        // is checked wherever it arrives.
        if after.as_ref().is_some_and(|a| a.len() > MAX_CURSOR_BYTES) {
            return Err(AppError::BadInput(format!(
                "after: a cursor is at most {MAX_CURSOR_BYTES} bytes"
            )));
        }
        Ok(Self {
            from,
            to,
            first,
            after,
            with_total,
        })
    }

    /// Events overlapping [from, to): starting before `to` and ending after
    /// `from`. An event without duration counts when its instant lies in
    /// [from, to): `starts_at >= from` adds exactly those (for any longer
    /// event it implies `ends_at > from`).
    fn push_window(&self, q: &mut QueryBuilder<Postgres>) {
        if let Some(to) = self.to {
            q.push(" AND e.starts_at < ").push_bind(to);
        }
        if let Some(from) = self.from {
            q.push(" AND (e.ends_at > ")
                .push_bind(from)
                .push(" OR e.starts_at >= ")
                .push_bind(from)
                .push(")");
        }
    }
}

/// The cursor's key is the RFC 3339 `startsAt`, parsed here rather than by
/// PostgreSQL, so a forged cursor is refused before the database sees it.
fn position_of(rc: &RequestContext, cursor: &str) -> AppResult<(OffsetDateTime, Uuid)> {
    position(rc.open_cursor(cursor, ORDERING)?)
}

fn position(c: Cursor) -> AppResult<(OffsetDateTime, Uuid)> {
    let starts_at =
        c.k.as_deref()
            .and_then(|k| OffsetDateTime::parse(k, &Rfc3339).ok())
            .ok_or_else(|| AppError::BadInput("after: cursor does not fit this field".into()))?;
    Ok((starts_at, c.i))
}

fn cursor_of(rc: &RequestContext, event: &Event) -> AppResult<String> {
    let key = event.starts_at.format(&Rfc3339).map_err(AppError::internal)?;
    Ok(rc.seal_cursor(&Cursor {
        o: ORDERING.into(),
        k: Some(key),
        n: None,
        i: event.id,
    }))
}

/// One page of the events of a workspace of this instance.
pub async fn page(rc: &RequestContext, workspace: Uuid, r: &EventsRequest) -> AppResult<EventConnection> {
    let mut q = QueryBuilder::<Postgres>::new(format!("{SELECT} FROM (SELECT * FROM events e WHERE e.workspace_id = "));
    q.push_bind(workspace);
    r.push_window(&mut q);
    if let Some((starts_at, id)) = r.after.as_deref().map(|a| position_of(rc, a)).transpose()? {
        q.push(" AND (e.starts_at, e.id) > (")
            .push_bind(starts_at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    // Choose the page from events alone, then join its details, so the joins
    // (under RLS) touch only the page's rows.
    q.push(format!(" ORDER BY e.starts_at, e.id{}", crate::db::limit(r.first + 1)))
        .push(format!(") e{JOINS} ORDER BY e.starts_at, e.id"));
    let mut conn = rc.db.conn().await?;
    let rows = q.build().fetch_all(&mut *conn).await?;
    let total_count = if r.with_total {
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM events e WHERE e.workspace_id = ");
        count.push_bind(workspace);
        r.push_window(&mut count);
        Some(rc.cap_total(count.build_query_scalar::<i64>().fetch_one(&mut *conn).await?))
    } else {
        None
    };
    drop(conn);
    let has_next_page = rows.len() > r.first;
    let edges = rows
        .iter()
        .take(r.first)
        .map(|row| {
            let node = Event::from_row(rc, row)?;
            Ok(EventEdge {
                cursor: cursor_of(rc, &node)?,
                node,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(EventConnection::new(
        edges,
        has_next_page,
        r.after.is_some(),
        total_count,
    ))
}

/// One page of the events of a workspace of another instance, from its owner.
/// Its cursors are the owner's and go back to it unchanged.
pub async fn remote_page(
    rc: &RequestContext,
    owner: Uuid,
    workspace: &ID,
    r: &EventsRequest,
) -> AppResult<EventConnection> {
    let query = format!(
        "query($id: ID!, $from: DateTime, $to: DateTime, $first: Int, $after: String, $withTotal: Boolean!) {{
  workspace(id: $id) {{ events(from: $from, to: $to, first: $first, after: $after) {{
    edges {{ cursor node {{ ...EventFields }} }} pageInfo {{ hasNextPage }} totalCount @include(if: $withTotal) }} }} }} {}",
        wire::FRAGMENT
    );
    let vars = json!({
        "id": workspace.as_str(),
        "from": as_json(&r.from)?,
        "to": as_json(&r.to)?,
        "first": r.first,
        "after": r.after,
        "withTotal": r.with_total,
    });
    let data = federated::forward(rc, owner, false, &query, vars).await?;
    let events = &data["workspace"]["events"];
    if events.is_null() {
        return Err(AppError::NotFound("workspace".into()));
    }
    let edges = events["edges"]
        .as_array()
        .ok_or_else(|| AppError::BadInput("peer answer: edges".into()))?
        .iter()
        .map(|e| {
            Ok(EventEdge {
                cursor: decode(&e["cursor"])?,
                node: owned::<wire::EventWire>(&e["node"])?,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    let has_next_page = events["pageInfo"]["hasNextPage"]
        .as_bool()
        .ok_or_else(|| AppError::BadInput("peer answer: pageInfo".into()))?;
    Ok(EventConnection::new(
        edges,
        has_next_page,
        r.after.is_some(),
        events["totalCount"].as_i64(),
    ))
}

fn as_json<T: InputType>(v: &T) -> AppResult<Value> {
    v.to_value().into_json().map_err(AppError::internal)
}

// --- mutations ------------------------------------------------------------

#[derive(InputObject)]
pub struct CreateEventInput {
    pub workspace_id: ID,
    pub title: String,
    pub description: Option<String>,
    pub starts_at: OffsetDateTime,
    /// Not before `startsAt`.
    pub ends_at: OffsetDateTime,
    pub location: Option<String>,
}

/// Only the fields given change; `description` and `location` can be cleared with null.
#[derive(InputObject)]
pub struct UpdateEventInput {
    pub id: ID,
    pub title: Option<String>,
    pub description: MaybeUndefined<String>,
    pub starts_at: Option<OffsetDateTime>,
    pub ends_at: Option<OffsetDateTime>,
    pub location: MaybeUndefined<String>,
}

impl UpdateEventInput {
    fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.description.is_undefined()
            && self.starts_at.is_none()
            && self.ends_at.is_none()
            && self.location.is_undefined()
    }

    /// The input as GraphQL variables without the fields that were not given
    /// (the derived encoding turns them into null, which would clear them).
    fn to_json(&self) -> AppResult<Value> {
        let mut out = serde_json::Map::new();
        out.insert("id".into(), json!(self.id.as_str()));
        if let Some(t) = &self.title {
            out.insert("title".into(), json!(t));
        }
        if let Some(s) = &self.starts_at {
            out.insert("startsAt".into(), as_json(s)?);
        }
        if let Some(e) = &self.ends_at {
            out.insert("endsAt".into(), as_json(e)?);
        }
        for (key, value) in [("description", &self.description), ("location", &self.location)] {
            if !value.is_undefined() {
                out.insert(key.into(), as_json(value)?);
            }
        }
        Ok(Value::Object(out))
    }
}

fn check_times(starts_at: OffsetDateTime, ends_at: OffsetDateTime) -> AppResult<()> {
    if ends_at < starts_at {
        return Err(AppError::BadInput("endsAt must not be before startsAt".into()));
    }
    Ok(())
}

/// Checks an optional text that null clears.
fn check_maybe_text(field: &str, value: &MaybeUndefined<String>, max: usize) -> AppResult<()> {
    optional_text(field, value.value().cloned(), max).map(drop)
}

/// A write the policy `events_write` refused: the caller is a guest.
fn refused_as(message: &'static str) -> impl Fn(sqlx::Error) -> AppError {
    move |e| AppError::from(e).forbidden_as(message)
}

#[derive(Default)]
pub struct EventMutation;

#[Object]
impl EventMutation {
    /// Creates an event; in a workspace of another instance, the owner creates it (COMMAND).
    async fn create_event(&self, ctx: &Context<'_>, input: CreateEventInput) -> AppResult<Event> {
        let rc = RequestContext::of(ctx);
        // Checked here even for another instance's workspace: refused at once,
        // as BAD_USER_INPUT, rather than as the owner's refusal.
        let title = required_text("title", &input.title, TITLE_MAX)?;
        let description = optional_text("description", input.description.clone(), DESCRIPTION_MAX)?;
        let location = optional_text("location", input.location.clone(), LOCATION_MAX)?;
        check_times(input.starts_at, input.ends_at)?;
        let ws = match rc.owner_of("workspaceId", &input.workspace_id, Kind::Workspace)? {
            Owner::Here(ws) => ws,
            Owner::Instance(owner) => {
                let query = format!(
                    "mutation($input: CreateEventInput!) {{ createEvent(input: $input) {{ ...EventFields }} }} {}",
                    wire::FRAGMENT
                );
                let vars = json!({ "input": as_json(&input)? });
                let data = federated::forward(rc, owner, true, &query, vars).await?;
                return owned::<wire::EventWire>(&data["createEvent"]);
            }
        };
        workspaces::require_visible(rc, ws).await?;
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO events (id, workspace_id, title, description, starts_at, ends_at, location, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, current_user_id())",
        )
        .bind(id)
        .bind(ws)
        .bind(title)
        .bind(description)
        .bind(input.starts_at)
        .bind(input.ends_at)
        .bind(location)
        .execute(&mut *rc.db.conn().await?)
        .await
        .map_err(refused_as("guests cannot create events"))?;
        require(rc, id).await
    }

    /// Changes the given fields of an event; one of another instance is
    /// changed by its owner (COMMAND).
    async fn update_event(&self, ctx: &Context<'_>, input: UpdateEventInput) -> AppResult<Event> {
        let rc = RequestContext::of(ctx);
        if input.is_empty() {
            return Err(AppError::BadInput(
                "nothing to update: give at least one field besides id".into(),
            ));
        }
        let title = input
            .title
            .as_deref()
            .map(|t| required_text("title", t, TITLE_MAX))
            .transpose()?;
        check_maybe_text("description", &input.description, DESCRIPTION_MAX)?;
        check_maybe_text("location", &input.location, LOCATION_MAX)?;
        if let (Some(s), Some(e)) = (input.starts_at, input.ends_at) {
            check_times(s, e)?;
        }
        let id = match rc.owner_of("id", &input.id, Kind::Event)? {
            Owner::Here(id) => id,
            Owner::Instance(owner) => {
                let query = format!(
                    "mutation($input: UpdateEventInput!) {{ updateEvent(input: $input) {{ ...EventFields }} }} {}",
                    wire::FRAGMENT
                );
                let data = federated::forward(rc, owner, true, &query, json!({ "input": input.to_json()? })).await?;
                return owned::<wire::EventWire>(&data["updateEvent"]);
            }
        };
        let event = require(rc, id).await?;
        // One bound given: it must still fit the other, stored one. (The
        // table's CHECK would refuse it too, but without naming the field.)
        check_times(
            input.starts_at.unwrap_or(event.starts_at),
            input.ends_at.unwrap_or(event.ends_at),
        )?;
        let mut q = QueryBuilder::<Postgres>::new("UPDATE events SET ");
        let mut set = q.separated(", ");
        if let Some(t) = title {
            set.push("title = ").push_bind_unseparated(t);
        }
        if let Some(s) = input.starts_at {
            set.push("starts_at = ").push_bind_unseparated(s);
        }
        if let Some(e) = input.ends_at {
            set.push("ends_at = ").push_bind_unseparated(e);
        }
        for (column, value) in [("description", &input.description), ("location", &input.location)] {
            match value {
                MaybeUndefined::Undefined => {}
                MaybeUndefined::Null => {
                    set.push(format!("{column} = NULL"));
                }
                MaybeUndefined::Value(v) => {
                    set.push(format!("{column} = ")).push_bind_unseparated(v.clone());
                }
            }
        }
        q.push(" WHERE id = ").push_bind(id).push(" RETURNING id");
        let updated: Option<Uuid> = q
            .build_query_scalar()
            .fetch_optional(&mut *rc.db.conn().await?)
            .await
            .map_err(refused_as("guests cannot change events"))?;
        // Visible but not updated: the policy's USING left the row out.
        updated.ok_or_else(|| AppError::Forbidden("guests cannot change events".into()))?;
        require(rc, id).await
    }

    /// Deletes an event; one of another instance is deleted by its owner
    /// (COMMAND). Returns its ID.
    async fn delete_event(&self, ctx: &Context<'_>, id: ID) -> AppResult<ID> {
        let rc = RequestContext::of(ctx);
        let local = match rc.owner_of("id", &id, Kind::Event)? {
            Owner::Here(local) => local,
            Owner::Instance(owner) => {
                let query = "mutation($id: ID!) { deleteEvent(id: $id) }";
                let data = federated::forward(rc, owner, true, query, json!({ "id": id.as_str() })).await?;
                return Ok(ID(decode(&data["deleteEvent"])?));
            }
        };
        require(rc, local).await?;
        let deleted: Option<Uuid> = sqlx::query_scalar("DELETE FROM events WHERE id = $1 RETURNING id")
            .bind(local)
            .fetch_optional(&mut *rc.db.conn().await?)
            .await?;
        deleted.ok_or_else(|| AppError::Forbidden("guests cannot delete events".into()))?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_carry_the_exact_start_and_refuse_forgeries() {
        let starts_at = OffsetDateTime::parse("2030-05-01T09:30:00.123456Z", &Rfc3339).unwrap();
        let id = Uuid::now_v7();
        let c = Cursor {
            o: ORDERING.into(),
            k: Some(starts_at.format(&Rfc3339).unwrap()),
            n: None,
            i: id,
        };
        assert_eq!(position(c.clone()).unwrap(), (starts_at, id));
        let forged = Cursor {
            k: Some("yesterday".into()),
            ..c
        };
        assert!(position(forged).is_err());
    }

    #[test]
    fn an_event_may_end_when_it_starts_but_not_before() {
        let t = OffsetDateTime::UNIX_EPOCH;
        assert!(check_times(t, t).is_ok());
        assert!(check_times(t, t + time::Duration::MINUTE).is_ok());
        let e = check_times(t, t - time::Duration::MICROSECOND).unwrap_err();
        assert_eq!(e.code(), "BAD_USER_INPUT");
        assert!(e.message().starts_with("endsAt"));
    }
}
