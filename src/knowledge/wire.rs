//! Knowledge in a peer's answer: entries (with the parts of them the
//! fragment carries), their versions and links, and search hits.

use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;

use super::search::KnowledgeSearchHit;
use super::store::EntryRow;
use super::{
    KnowledgeEntry, KnowledgeLink, KnowledgeVersion, KnowledgeVersionConnection, KnowledgeVersionEdge, RemoteParts,
    markdown,
};
use crate::error::{AppError, AppResult};
use crate::graphql::InstanceInfo;
use crate::graphql::ids::Kind;
use crate::graphql::pagination::PageInfo;
use crate::graphql::wire::{Ids, Nullable, Row, Wire, decode, id_on, owned};
use crate::workspaces::wire::WorkspaceWire;

pub const FRAGMENT: &str = "fragment KnowledgeEntryFields on KnowledgeEntry { id slug title content summary status tags
    createdAt updatedAt workspace { id name createdAt updatedAt } instance { id name } }";

pub const VERSION_FRAGMENT: &str =
    "fragment KnowledgeVersionFields on KnowledgeVersion { number title content message createdAt }";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeEntryWire {
    id: String,
    instance: InstanceInfo,
    slug: String,
    title: String,
    content: String,
    summary: Nullable<String>,
    status: String,
    tags: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    workspace: WorkspaceWire,
}

impl Ids for KnowledgeEntryWire {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        out.push(&self.id);
        self.workspace.ids(out);
    }
}

impl Row for KnowledgeEntryWire {
    fn instance(&self) -> &InstanceInfo {
        &self.instance
    }

    fn take_instance(&mut self) -> InstanceInfo {
        std::mem::take(&mut self.instance)
    }
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
            remote: Some(Arc::new(RemoteParts {
                workspace,
                tags: self.tags,
            })),
        })
    }
}

/// A field of an answer that must be there (a missing one reads as null).
pub fn decode_field<T: DeserializeOwned>(data: &Value, field: &str) -> AppResult<T> {
    decode(&data[field])
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionWire {
    number: i32,
    title: String,
    content: String,
    message: Nullable<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<VersionWire> for KnowledgeVersion {
    fn from(v: VersionWire) -> Self {
        Self {
            number: v.number,
            title: v.title,
            content: v.content,
            message: v.message.0,
            created_at: v.created_at,
            // Users of another instance are not named in its answers.
            author_id: None,
        }
    }
}

/// A version (or null) in the owner's answer.
pub fn version(v: &Value) -> AppResult<Option<KnowledgeVersion>> {
    Ok(decode::<Nullable<VersionWire>>(v)?.0.map(Into::into))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInfoWire {
    has_next_page: bool,
    has_previous_page: bool,
    start_cursor: Nullable<String>,
    end_cursor: Nullable<String>,
}

#[derive(Deserialize)]
struct VersionEdgeWire {
    cursor: String,
    node: VersionWire,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionConnectionWire {
    total_count: i64,
    edges: Vec<VersionEdgeWire>,
    page_info: PageInfoWire,
}

/// An entry's versions in the owner's answer; its cursors are the owner's.
pub fn versions(v: &Value) -> AppResult<KnowledgeVersionConnection> {
    let c: VersionConnectionWire = decode(v)?;
    Ok(KnowledgeVersionConnection {
        total_count: c.total_count,
        edges: c
            .edges
            .into_iter()
            .map(|e| KnowledgeVersionEdge {
                cursor: e.cursor,
                node: e.node.into(),
            })
            .collect(),
        page_info: PageInfo {
            has_next_page: c.page_info.has_next_page,
            has_previous_page: c.page_info.has_previous_page,
            start_cursor: c.page_info.start_cursor.0,
            end_cursor: c.page_info.end_cursor.0,
        },
    })
}

#[derive(Deserialize)]
struct LinkWire {
    target: String,
    label: Nullable<String>,
    entry: Nullable<Value>,
}

/// An entry's links in the owner's answer; targets live where the entry does.
pub fn links(v: &Value, instance: &Arc<InstanceInfo>) -> AppResult<Vec<KnowledgeLink>> {
    let links: Vec<LinkWire> = decode(v)?;
    links
        .into_iter()
        .map(|l| {
            let entry = l.entry.0.map(|e| owned::<KnowledgeEntryWire>(&e)).transpose()?;
            if entry.as_ref().is_some_and(|e| e.instance.id != instance.id) {
                return Err(AppError::BadInput(
                    "peer answer: a link's entry on another instance than its source".into(),
                ));
            }
            Ok(KnowledgeLink {
                target: l.target,
                label: l.label.0,
                entry,
            })
        })
        .collect()
}

pub const HIT_SELECTION: &str = "entry { ...KnowledgeEntryFields } score rank snippet";

#[derive(Deserialize)]
struct HitWire {
    entry: Value,
    score: f64,
    rank: i32,
    snippet: Nullable<String>,
}

/// A search hit in a peer's answer. Its snippet is HTML from another
/// instance: only its `<mark>`s are kept.
pub fn hit(v: &Value) -> AppResult<KnowledgeSearchHit> {
    let h: HitWire = decode(v)?;
    Ok(KnowledgeSearchHit {
        entry: owned::<KnowledgeEntryWire>(&h.entry)?,
        score: h.score,
        rank: h.rank,
        snippet: h.snippet.0.map(|s| markdown::sanitize_snippet(&s)),
    })
}
