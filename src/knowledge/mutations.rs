//! Writing entries: every save is checked first (nothing is written for bad
//! input), stored with its links and tags, and recorded as a version.

use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object};
use uuid::Uuid;

use super::links::WikiLink;
use super::store::{self, Changes, EntryRow, NewEntry};
use super::{KnowledgeEntry, KnowledgeStatus, input, workspace_here};
use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;
use crate::graphql::ids::Kind;

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
    let user = rc.user()?.user_id;
    store::after_save(&mut *rc.db.conn().await?, row, links, tags, user, message).await
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
        let user = rc.user()?.user_id;
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
        let user = rc.user()?.user_id;
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
        let user = rc.user()?.user_id;
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
        let user = rc.user()?.user_id;
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
