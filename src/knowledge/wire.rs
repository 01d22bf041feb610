//! A knowledge entry in a peer's answer.

use std::sync::Arc;

use serde::Deserialize;
use time::OffsetDateTime;

use super::KnowledgeEntry;
use super::store::EntryRow;
use crate::error::AppResult;
use crate::graphql::InstanceInfo;
use crate::graphql::ids::Kind;
use crate::graphql::wire::{Nullable, Wire, id_on};
use crate::workspaces::wire::WorkspaceWire;

pub const FRAGMENT: &str = "fragment KnowledgeEntryFields on KnowledgeEntry { id slug title content summary status
    createdAt updatedAt workspace { id name createdAt updatedAt } instance { id name } }";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeEntryWire {
    id: String,
    slug: String,
    title: String,
    content: String,
    summary: Nullable<String>,
    status: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    workspace: WorkspaceWire,
}

impl Wire for KnowledgeEntryWire {
    type Object = KnowledgeEntry;
    fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<KnowledgeEntry> {
        let (global_id, id) = id_on(&self.id, Kind::KnowledgeEntry, instance)?;
        let workspace = self.workspace.into_object(instance)?;
        Ok(KnowledgeEntry {
            status: super::status_from_wire(&self.status)?,
            row: Arc::new(EntryRow {
                id,
                workspace_id: workspace.id,
                slug: self.slug,
                title: self.title,
                content: self.content,
                summary: self.summary.0,
                status: self.status,
                // Users of another instance are not named in its answers.
                author_id: None,
                created_by: None,
                updated_by: None,
                created_at: self.created_at,
                updated_at: self.updated_at,
            }),
            global_id,
            instance: instance.clone(),
        })
    }
}
