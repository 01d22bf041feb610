//! A task in a peer's answer.

use std::sync::Arc;

use async_graphql::InputType;
use serde::Deserialize;
use time::{Date, OffsetDateTime};

use super::{Task, TaskPriority, TaskStatus};
use crate::error::{AppError, AppResult};
use crate::graphql::InstanceInfo;
use crate::graphql::ids::Kind;
use crate::graphql::wire::{Nullable, Wire, enum_value, id_on};
use crate::projects::wire::ProjectWire;
use crate::users::wire::UserWire;
use crate::workspaces::wire::WorkspaceWire;

pub const FRAGMENT: &str =
    "fragment TaskFields on Task { id title description status priority dueDate createdAt updatedAt
    instance { id name }
    workspace { id name createdAt updatedAt }
    project { id name description createdAt updatedAt workspace { id name createdAt updatedAt } }
    assignee { id email name isAdmin } }";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskWire {
    id: String,
    title: String,
    description: Nullable<String>,
    status: String,
    priority: String,
    due_date: Nullable<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    workspace: WorkspaceWire,
    project: Nullable<ProjectWire>,
    assignee: Nullable<UserWire>,
}

impl Wire for TaskWire {
    type Object = Task;
    fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<Task> {
        let (global_id, id) = id_on(&self.id, Kind::Task, instance)?;
        let bad = |field: &str| AppError::BadInput(format!("peer answer: {field}"));
        let status = TaskStatus::parse(Some(enum_value(&self.status))).map_err(|_| bad("status"))?;
        let priority = TaskPriority::parse(Some(enum_value(&self.priority))).map_err(|_| bad("priority"))?;
        let due_date = self
            .due_date
            .0
            .map(|d| Date::parse(&d, &time::macros::format_description!("[year]-[month]-[day]")))
            .transpose()
            .map_err(|_| bad("dueDate"))?;
        Ok(Task {
            id,
            title: self.title,
            description: self.description.0,
            status,
            priority,
            due_date,
            created_at: self.created_at,
            updated_at: self.updated_at,
            workspace: self.workspace.into_object(instance)?,
            project: self.project.0.map(|p| p.into_object(instance)).transpose()?,
            assignee: self.assignee.0.map(|u| u.into_object(instance)).transpose()?,
            instance: instance.clone(),
            global_id,
        })
    }
}
