//! Writing entries: every save is checked first (nothing is written for bad
//! input), stored with its links and tags, and recorded as a version. An
//! entry of another instance is written by its owner (COMMAND), where the
//! grant allows writes.

use async_graphql::{Context, ID, InputObject, InputType, MaybeUndefined, Object};
use serde_json::{Value, json};
use uuid::Uuid;

use super::links::WikiLink;
use super::store::{self, Changes, EntryRow, NewEntry};
use super::{KnowledgeEntry, KnowledgeStatus, federated, input, workspace_here};
use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;
use crate::graphql::ids::{Kind, Owner};

#[derive(InputObject)]
pub struct CreateKnowledgeEntryInput {
    pub workspace_id: ID,
    pub title: String,
    /// Markdown.
    #[graphql(default)]
    pub content: String,
    /// Made from the title when not given (a taken one gets `-2`, `-3`…);
    /// a given slug that is taken is refused (SLUG_TAKEN).
    pub slug: Option<String>,
    pub summary: Option<String>,
    /// Tag names; names the workspace lacks are created.
    #[graphql(default)]
    pub tags: Vec<String>,
    /// PUBLISHED when not given.
    pub status: Option<KnowledgeStatus>,
    /// Says what this version is.
    pub message: Option<String>,
}

#[derive(InputObject)]
pub struct UpdateKnowledgeEntryInput {
    pub id: ID,
    pub title: Option<String>,
    pub content: Option<String>,
    pub slug: Option<String>,
    pub summary: MaybeUndefined<String>,
    /// Replaces the entry's tags.
    pub tags: Option<Vec<String>>,
    pub status: Option<KnowledgeStatus>,
    pub message: Option<String>,
}

impl UpdateKnowledgeEntryInput {
    /// The input as GraphQL variables for the owner, leaving out the fields
    /// that were not given (so the owner does not clear them).
    fn to_json(&self) -> AppResult<Value> {
        fn enc<T: InputType>(v: &T) -> AppResult<Value> {
            v.to_value().into_json().map_err(AppError::internal)
        }
        let mut out = serde_json::Map::new();
        out.insert("id".into(), json!(self.id.as_str()));
        for (key, value) in [
            ("title", &self.title),
            ("content", &self.content),
            ("slug", &self.slug),
            ("message", &self.message),
        ] {
            if let Some(v) = value {
                out.insert(key.into(), json!(v));
            }
        }
        match &self.summary {
            MaybeUndefined::Undefined => {}
            MaybeUndefined::Null => {
                out.insert("summary".into(), Value::Null);
            }
            MaybeUndefined::Value(v) => {
                out.insert("summary".into(), json!(v));
            }
        }
        if let Some(tags) = &self.tags {
            out.insert("tags".into(), json!(tags));
        }
        if let Some(status) = &self.status {
            out.insert("status".into(), enc(status)?);
        }
        Ok(Value::Object(out))
    }
}

#[derive(InputObject)]
pub struct RestoreKnowledgeVersionInput {
    /// The entry.
    pub id: ID,
    /// The version whose title and content become the entry's again.
    pub number: i32,
    pub message: Option<String>,
}

async fn after_save(
    rc: &RequestContext,
    row: &EntryRow,
    links: Option<&[WikiLink]>,
    tags: Option<&[String]>,
    message: Option<&str>,
) -> AppResult<()> {
    store::after_save(&mut *rc.db.conn().await?, row, links, tags, writer(rc), message).await
}

/// Who a write is recorded as: the local user, or nobody for a peer's
/// COMMAND (users of another instance are not users here).
fn writer(rc: &RequestContext) -> Option<Uuid> {
    rc.user().ok().map(|u| u.user_id)
}

/// The entry `id` names, visible to the caller.
async fn visible(rc: &RequestContext, id: &ID) -> AppResult<Uuid> {
    let local = rc.local_id_of("id", id, Kind::KnowledgeEntry)?;
    store::load(&mut *rc.db.conn().await?, local)
        .await?
        .ok_or_else(|| AppError::NotFound("knowledge entry".into()))?;
    Ok(local)
}

#[derive(Default)]
pub struct KnowledgeMutation;

#[Object]
impl KnowledgeMutation {
    async fn create_knowledge_entry(
        &self,
        ctx: &Context<'_>,
        input: CreateKnowledgeEntryInput,
    ) -> AppResult<KnowledgeEntry> {
        let rc = RequestContext::of(ctx);
        if let Owner::Instance(owner) = rc.owner_of("workspaceId", &input.workspace_id, Kind::Workspace)? {
            let vars = json!({ "input": input.to_value().into_json().map_err(AppError::internal)? });
            return federated::command(
                rc,
                owner,
                "createKnowledgeEntry(input: $input)",
                "CreateKnowledgeEntryInput!",
                vars,
            )
            .await;
        }
        let user = writer(rc);
        let settings = &rc.knowledge.settings;
        // Every check before the first write.
        let title = input::title(&input.title)?;
        let (content, links) = input::content(settings, &input.content)?;
        let slug = input.slug.as_deref().map(input::slug).transpose()?;
        let summary = input::summary(input.summary.as_deref())?;
        let tags = input::tags(settings, &input.tags)?;
        let message = input::message(input.message.as_deref())?;
        let ws = workspace_here(rc, "workspaceId", &input.workspace_id).await?;
        let status = input.status.unwrap_or(KnowledgeStatus::Published);
        let row = store::insert(
            &mut *rc.db.conn().await?,
            &NewEntry {
                workspace_id: ws,
                slug,
                title: &title,
                content: &content,
                summary: summary.as_deref(),
                status: status.as_str(),
                author: user,
            },
        )
        .await?;
        after_save(rc, &row, Some(&links), Some(&tags), message).await?;
        KnowledgeEntry::from_row(rc, row)
    }

    async fn update_knowledge_entry(
        &self,
        ctx: &Context<'_>,
        input: UpdateKnowledgeEntryInput,
    ) -> AppResult<KnowledgeEntry> {
        let rc = RequestContext::of(ctx);
        if let Owner::Instance(owner) = rc.owner_of("id", &input.id, Kind::KnowledgeEntry)? {
            let vars = json!({ "input": input.to_json()? });
            return federated::command(
                rc,
                owner,
                "updateKnowledgeEntry(input: $input)",
                "UpdateKnowledgeEntryInput!",
                vars,
            )
            .await;
        }
        let user = writer(rc);
        let settings = &rc.knowledge.settings;
        let title = input.title.as_deref().map(input::title).transpose()?;
        let content = input
            .content
            .as_deref()
            .map(|c| input::content(settings, c))
            .transpose()?;
        let slug = input.slug.as_deref().map(input::slug).transpose()?;
        let summary = match &input.summary {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(s) => Some(input::summary(Some(s))?),
        };
        let tags = input.tags.as_deref().map(|t| input::tags(settings, t)).transpose()?;
        let message = input::message(input.message.as_deref())?;
        let id = visible(rc, &input.id).await?;
        let changes = Changes {
            slug,
            title: title.as_deref(),
            content: content.as_ref().map(|(c, _)| c.as_str()),
            summary: summary.as_ref().map(Option::as_deref),
            status: input.status.map(KnowledgeStatus::as_str),
        };
        let row = store::update(&mut *rc.db.conn().await?, id, user, &changes)
            .await?
            .ok_or_else(|| AppError::Forbidden("guests cannot write to the knowledge base".into()))?;
        after_save(
            rc,
            &row,
            content.as_ref().map(|(_, l)| l.as_slice()),
            tags.as_deref(),
            message,
        )
        .await?;
        KnowledgeEntry::from_row(rc, row)
    }

    /// Hides an entry from lists, search and the graph, keeping it and its
    /// versions (deleting an entry is archiving it). Undo with
    /// `updateKnowledgeEntry(status: PUBLISHED)`.
    async fn archive_knowledge_entry(&self, ctx: &Context<'_>, id: ID) -> AppResult<KnowledgeEntry> {
        let rc = RequestContext::of(ctx);
        if let Owner::Instance(owner) = rc.owner_of("id", &id, Kind::KnowledgeEntry)? {
            let vars = json!({ "input": id.as_str() });
            return federated::command(rc, owner, "archiveKnowledgeEntry(id: $input)", "ID!", vars).await;
        }
        let user = writer(rc);
        let local = visible(rc, &id).await?;
        let changes = Changes {
            status: Some(KnowledgeStatus::Archived.as_str()),
            ..Changes::default()
        };
        let row = store::update(&mut *rc.db.conn().await?, local, user, &changes)
            .await?
            .ok_or_else(|| AppError::Forbidden("guests cannot write to the knowledge base".into()))?;
        KnowledgeEntry::from_row(rc, row)
    }

    /// Makes an old version's title and content the entry's again, as a new version.
    async fn restore_knowledge_version(
        &self,
        ctx: &Context<'_>,
        input: RestoreKnowledgeVersionInput,
    ) -> AppResult<KnowledgeEntry> {
        let rc = RequestContext::of(ctx);
        if let Owner::Instance(owner) = rc.owner_of("id", &input.id, Kind::KnowledgeEntry)? {
            let vars = json!({ "input": input.to_value().into_json().map_err(AppError::internal)? });
            return federated::command(
                rc,
                owner,
                "restoreKnowledgeVersion(input: $input)",
                "RestoreKnowledgeVersionInput!",
                vars,
            )
            .await;
        }
        let user = writer(rc);
        let message = input::message(input.message.as_deref())?;
        let id = visible(rc, &input.id).await?;
        let old = store::version(&mut *rc.db.conn().await?, id, input.number)
            .await?
            .ok_or_else(|| {
                AppError::invalid(
                    "UNKNOWN_VERSION",
                    format!("number: this entry has no version {}", input.number),
                )
            })?;
        // The old content was valid when saved; its links are parsed again.
        let (content, links) = input::content(&rc.knowledge.settings, &old.content)?;
        let changes = Changes {
            title: Some(&old.title),
            content: Some(&content),
            ..Changes::default()
        };
        let row = store::update(&mut *rc.db.conn().await?, id, user, &changes)
            .await?
            .ok_or_else(|| AppError::Forbidden("guests cannot write to the knowledge base".into()))?;
        let message = message.map_or_else(|| format!("restored version {}", input.number), str::to_string);
        after_save(rc, &row, Some(&links), None, Some(&message)).await?;
        KnowledgeEntry::from_row(rc, row)
    }
}
