//! An agent task in a peer's answer, with its events.

use std::sync::Arc;

use async_graphql::{ID, InputType};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::{
    AgentTask, AgentTaskActor, AgentTaskBlock, AgentTaskEvent, AgentTaskKind, AgentTaskStatus, AgentTaskUsage,
};
use crate::error::{AppError, AppResult};
use crate::graphql::InstanceInfo;
use crate::graphql::ids::Kind;
use crate::graphql::wire::{Ids, Nullable, Row, Wire, enum_value, id_on};

pub const FRAGMENT: &str = "fragment AgentTaskFields on AgentTask { id workspaceId projectId title kind priority status
    statusReason blockedBy attempts maxAttempts instructions checkpoint checkpointStep result error
    usage { tokens cost agentMs } createdAt updatedAt finishedAt instance { id name }
    events { fromStatus toStatus actor actorId reason at } }";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageWire {
    tokens: i64,
    cost: i64,
    agent_ms: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventWire {
    from_status: Nullable<String>,
    to_status: String,
    actor: String,
    actor_id: Nullable<String>,
    reason: Nullable<String>,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentTaskWire {
    id: String,
    instance: InstanceInfo,
    workspace_id: String,
    project_id: Nullable<String>,
    title: String,
    kind: String,
    priority: i32,
    status: String,
    status_reason: Nullable<String>,
    blocked_by: Nullable<String>,
    attempts: i32,
    max_attempts: i32,
    instructions: Value,
    checkpoint: Nullable<Value>,
    checkpoint_step: Nullable<i32>,
    result: Nullable<Value>,
    error: Nullable<String>,
    usage: UsageWire,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    finished_at: Nullable<String>,
    events: Vec<EventWire>,
}

fn bad(field: &str) -> AppError {
    AppError::BadInput(format!("peer answer: {field}"))
}

fn status(s: &str) -> AppResult<AgentTaskStatus> {
    AgentTaskStatus::parse(Some(enum_value(s))).map_err(|_| bad("status"))
}

impl Ids for AgentTaskWire {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        out.push(&self.id);
        out.push(&self.workspace_id);
        out.extend(self.project_id.0.as_deref());
    }
}

impl Row for AgentTaskWire {
    fn instance(&self) -> &InstanceInfo {
        &self.instance
    }

    fn take_instance(&mut self) -> InstanceInfo {
        std::mem::take(&mut self.instance)
    }
}

impl Wire for AgentTaskWire {
    type Object = AgentTask;
    fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<AgentTask> {
        let (global_id, id) = id_on(&self.id, Kind::AgentTask, instance)?;
        id_on(&self.workspace_id, Kind::Workspace, instance)?;
        let project_id = match self.project_id.0 {
            Some(p) => Some(id_on(&p, Kind::Project, instance)?.0),
            None => None,
        };
        let blocked_by = match self.blocked_by.0 {
            Some(b) => Some(AgentTaskBlock::parse(Some(enum_value(&b))).map_err(|_| bad("blockedBy"))?),
            None => None,
        };
        let events = self
            .events
            .into_iter()
            .map(|e| {
                Ok(AgentTaskEvent {
                    from_status: e.from_status.0.as_deref().map(status).transpose()?,
                    to_status: status(&e.to_status)?,
                    actor: AgentTaskActor::parse(Some(enum_value(&e.actor))).map_err(|_| bad("actor"))?,
                    actor_id: e.actor_id.0,
                    reason: e.reason.0,
                    at: e.at,
                })
            })
            .collect::<AppResult<Vec<_>>>()?;
        let finished_at = self
            .finished_at
            .0
            .map(|t| OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339))
            .transpose()
            .map_err(|_| bad("finishedAt"))?;
        Ok(AgentTask {
            id,
            global_id,
            workspace_id: ID(self.workspace_id),
            project_id,
            title: self.title,
            kind: AgentTaskKind::parse(Some(enum_value(&self.kind))).map_err(|_| bad("kind"))?,
            priority: self.priority,
            status: status(&self.status)?,
            status_reason: self.status_reason.0,
            blocked_by,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            instructions: self.instructions,
            checkpoint: self.checkpoint.0,
            checkpoint_step: self.checkpoint_step.0,
            result: self.result.0,
            error: self.error.0,
            usage: AgentTaskUsage {
                tokens: self.usage.tokens,
                cost: self.usage.cost,
                agent_ms: self.usage.agent_ms,
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at,
            instance: instance.clone(),
            remote_events: Some(events),
        })
    }
}
