//! A project in a peer's answer.

use std::sync::Arc;

use serde::Deserialize;
use time::OffsetDateTime;

use super::Project;
use crate::error::AppResult;
use crate::graphql::InstanceInfo;
use crate::graphql::ids::Kind;
use crate::graphql::wire::{Ids, Nullable, Wire, id_on};
use crate::workspaces::wire::WorkspaceWire;

pub const FRAGMENT: &str = "fragment ProjectFields on Project { id name description createdAt updatedAt
    workspace { id name createdAt updatedAt } instance { id name } }";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectWire {
    id: String,
    name: String,
    description: Nullable<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    workspace: WorkspaceWire,
}

impl Ids for ProjectWire {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        out.push(&self.id);
        self.workspace.ids(out);
    }
}

impl Wire for ProjectWire {
    type Object = Project;
    fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<Project> {
        let (global_id, id) = id_on(&self.id, Kind::Project, instance)?;
        let workspace = self.workspace.into_object(instance)?;
        Ok(Project {
            id,
            workspace_id: workspace.id,
            name: self.name,
            description: self.description.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
            instance: instance.clone(),
            global_id,
        })
    }
}
