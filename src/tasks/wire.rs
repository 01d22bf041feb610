//! A task in a peer's answer.

use std::sync::Arc;

use async_graphql::{InputType, Lookahead};
use serde::Deserialize;
use serde_json::Value;
use time::{Date, OffsetDateTime};

use super::{Task, TaskOrderField, TaskPriority, TaskStatus};
use crate::error::{AppError, AppResult};
use crate::graphql::InstanceInfo;
use crate::graphql::ids::Kind;
use crate::graphql::wire::{Ids, Nullable, Row, Wire, decode, enum_value, id_on, present, row};
use crate::projects::wire::ProjectWire;
use crate::users::wire::UserWire;
use crate::workspaces::wire::WorkspaceWire;

/// What a task always carries across: its id, title, creation time (the
/// default order) and instance.
const FIELDS: &str = "id title createdAt instance { id name }";

/// The optional parts, asked for only when the client selects them or the
/// page is ordered by them: a page of 50 tasks costs the peer 50 of each to
/// resolve and send, and every hop back 50 to parse and resolve again.
const OPTIONAL: [(&str, &str); 8] = [
    ("status", "status"),
    ("priority", "priority"),
    ("dueDate", "dueDate"),
    ("updatedAt", "updatedAt"),
    ("workspace", "workspace { id name createdAt updatedAt }"),
    ("description", "description"),
    (
        "project",
        "project { id name description createdAt updatedAt workspace { id name createdAt updatedAt } }",
    ),
    ("assignee", "assignee { id email name isAdmin }"),
];

/// Which optional parts of a task a request selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection([bool; 8]);

impl Selection {
    pub const ALL: Self = Self([true; 8]);

    /// The parts `node` (a task's selection) asks for, and the key a page
    /// in `order` sorts by: the merge compares it.
    pub fn of(node: &Lookahead<'_>, order: TaskOrderField) -> Self {
        let key = match order {
            TaskOrderField::Status => Some("status"),
            TaskOrderField::Priority => Some("priority"),
            TaskOrderField::DueDate => Some("dueDate"),
            TaskOrderField::UpdatedAt => Some("updatedAt"),
            TaskOrderField::CreatedAt | TaskOrderField::Title => None,
        };
        Self(OPTIONAL.map(|(field, _)| key == Some(field) || node.field(field).exists()))
    }

    /// Whether `part`, one of the optional parts, is asked for.
    pub fn asks(self, part: &str) -> bool {
        OPTIONAL
            .iter()
            .zip(self.0)
            .any(|((field, _), asked)| asked && *field == part)
    }

    /// `fragment TaskFields` with the selected parts.
    pub fn fragment(self) -> String {
        let mut fragment = format!("fragment TaskFields on Task {{ {FIELDS}");
        for ((_, fields), _) in OPTIONAL.iter().zip(self.0).filter(|(_, asked)| *asked) {
            fragment.push(' ');
            fragment.push_str(fields);
        }
        fragment.push_str(" }");
        fragment
    }

    /// A task at the top of a peer's answer to a query with this
    /// selection's fragment.
    pub fn parse(self, task: &Value) -> AppResult<Task> {
        let task: TaskWire = decode(task)?;
        self.check(&task)?;
        row(task)
    }

    /// Every part asked for must be there (as a value, or null where the
    /// schema allows it); a part not asked for is left out.
    pub fn check(self, task: &TaskWire) -> AppResult<()> {
        let carried = [
            task.status.is_some(),
            task.priority.is_some(),
            task.due_date.is_some(),
            task.updated_at.is_some(),
            task.workspace.is_some(),
            task.description.is_some(),
            task.project.is_some(),
            task.assignee.is_some(),
        ];
        match OPTIONAL
            .iter()
            .zip(self.0)
            .zip(carried)
            .find(|((_, asked), carried)| *asked && !carried)
        {
            Some((((field, _), _), _)) => Err(AppError::BadInput(format!("peer answer: missing field `{field}`"))),
            None => Ok(()),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskWire {
    id: String,
    instance: InstanceInfo,
    title: String,
    // Present when `Selection` asked for them (it checks that), else absent.
    #[serde(default, deserialize_with = "present")]
    description: Option<Nullable<String>>,
    // Never null: absent when not asked for (a null is refused as missing).
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default, deserialize_with = "present")]
    due_date: Option<Nullable<String>>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    updated_at: Option<OffsetDateTime>,
    #[serde(default)]
    workspace: Option<WorkspaceWire>,
    #[serde(default, deserialize_with = "present")]
    project: Option<Nullable<ProjectWire>>,
    #[serde(default, deserialize_with = "present")]
    assignee: Option<Nullable<UserWire>>,
}

impl Ids for TaskWire {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        out.push(&self.id);
        self.workspace.ids(out);
        self.project.ids(out);
        self.assignee.ids(out);
    }
}

impl Row for TaskWire {
    fn instance(&self) -> &InstanceInfo {
        &self.instance
    }

    fn take_instance(&mut self) -> InstanceInfo {
        std::mem::take(&mut self.instance)
    }
}

impl Wire for TaskWire {
    type Object = Task;
    fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<Task> {
        let (global_id, id) = id_on(&self.id, Kind::Task, instance)?;
        let bad = |field: &str| AppError::BadInput(format!("peer answer: {field}"));
        let status = self
            .status
            .map(|s| TaskStatus::parse(Some(enum_value(&s))))
            .transpose()
            .map_err(|_| bad("status"))?;
        let priority = self
            .priority
            .map(|p| TaskPriority::parse(Some(enum_value(&p))))
            .transpose()
            .map_err(|_| bad("priority"))?;
        let due_date = self
            .due_date
            .and_then(|d| d.0)
            .map(|d| Date::parse(&d, &time::macros::format_description!("[year]-[month]-[day]")))
            .transpose()
            .map_err(|_| bad("dueDate"))?;
        Ok(Task {
            id,
            title: self.title,
            description: self.description.and_then(|d| d.0),
            status,
            priority,
            due_date,
            created_at: self.created_at,
            updated_at: self.updated_at,
            workspace: self.workspace.map(|w| w.into_object(instance)).transpose()?,
            project: self
                .project
                .and_then(|p| p.0)
                .map(|p| p.into_object(instance))
                .transpose()?,
            assignee: self
                .assignee
                .and_then(|u| u.0)
                .map(|u| u.into_object(instance))
                .transpose()?,
            instance: instance.clone(),
            global_id,
        })
    }
}
