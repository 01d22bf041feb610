//! Tags of a workspace's knowledge base, named per workspace (case is kept,
//! but `Ops` and `ops` are one tag).

use async_graphql::{Context, ID, Object, SimpleObject};
use uuid::Uuid;

use super::{input, store, workspace_here};
use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeTag {
    pub name: String,
    /// Entries with this tag that you can see (archived ones left out).
    pub entry_count: i64,
}

async fn existing(rc: &RequestContext, ws: Uuid, field: &str, name: &str) -> AppResult<Uuid> {
    store::tag_id(&mut *rc.db.conn().await?, ws, name)
        .await?
        .ok_or_else(|| AppError::invalid("UNKNOWN_TAG", format!("{field}: no tag named '{name}'")))
}

async fn tag(rc: &RequestContext, id: Uuid) -> AppResult<KnowledgeTag> {
    let (name, entry_count): (String, i64) = sqlx::query_as(
        "SELECT t.name, (SELECT count(*) FROM knowledge_entry_tags et JOIN knowledge_entries e ON e.id = et.entry_id
                         WHERE et.tag_id = t.id AND e.status <> 'ARCHIVED')
         FROM knowledge_tags t WHERE t.id = $1",
    )
    .bind(id)
    .fetch_one(&mut *rc.db.conn().await?)
    .await?;
    Ok(KnowledgeTag { name, entry_count })
}

/// A write refused by the policies is a guest's.
fn guest(e: sqlx::Error) -> AppError {
    AppError::from(e).forbidden_as("guests cannot change tags")
}

#[derive(Default)]
pub struct KnowledgeTagQuery;

#[Object]
impl KnowledgeTagQuery {
    /// A workspace's tags by name, each with its number of entries.
    async fn knowledge_tags(&self, ctx: &Context<'_>, workspace_id: ID) -> AppResult<Vec<KnowledgeTag>> {
        let rc = RequestContext::of(ctx);
        let ws = workspace_here(rc, "workspaceId", &workspace_id).await?;
        list(rc, ws).await
    }
}

/// A workspace's tags by name with their visible, unarchived entries' count.
pub async fn list(rc: &RequestContext, ws: Uuid) -> AppResult<Vec<KnowledgeTag>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT t.name, count(e.id) FROM knowledge_tags t
             LEFT JOIN knowledge_entry_tags et ON et.tag_id = t.id
             LEFT JOIN knowledge_entries e ON e.id = et.entry_id AND e.status <> 'ARCHIVED'
             WHERE t.workspace_id = $1 GROUP BY t.id, t.name ORDER BY lower(t.name)",
    )
    .bind(ws)
    .fetch_all(&mut *rc.db.conn().await?)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, entry_count)| KnowledgeTag { name, entry_count })
        .collect())
}

#[derive(Default)]
pub struct KnowledgeTagMutation;

#[Object]
impl KnowledgeTagMutation {
    async fn create_knowledge_tag(&self, ctx: &Context<'_>, workspace_id: ID, name: String) -> AppResult<KnowledgeTag> {
        let rc = RequestContext::of(ctx);
        let name = input::tag_name("name", &name)?;
        let ws = workspace_here(rc, "workspaceId", &workspace_id).await?;
        let mut conn = rc.db.conn().await?;
        if store::tag_id(&mut conn, ws, &name).await?.is_some() {
            return Err(AppError::invalid(
                "TAG_EXISTS",
                format!("name: a tag named '{name}' exists"),
            ));
        }
        let id = store::tag_ids(&mut conn, ws, std::slice::from_ref(&name), false)
            .await?
            .first()
            .copied()
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("a tag just made has no id")))?;
        drop(conn);
        tag(rc, id).await
    }

    /// Renames a tag on every entry that has it.
    async fn rename_knowledge_tag(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        name: String,
        new_name: String,
    ) -> AppResult<KnowledgeTag> {
        let rc = RequestContext::of(ctx);
        let name = input::tag_name("name", &name)?;
        let new_name = input::tag_name("newName", &new_name)?;
        let ws = workspace_here(rc, "workspaceId", &workspace_id).await?;
        let id = existing(rc, ws, "name", &name).await?;
        let renamed: Option<Uuid> =
            sqlx::query_scalar("UPDATE knowledge_tags SET name = $2 WHERE id = $1 RETURNING id")
                .bind(id)
                .bind(&new_name)
                .fetch_optional(&mut *rc.db.conn().await?)
                .await
                .map_err(|e| match guest(e) {
                    AppError::Conflict(_) => {
                        AppError::invalid("TAG_EXISTS", format!("newName: a tag named '{new_name}' exists"))
                    }
                    other => other,
                })?;
        renamed.ok_or_else(|| AppError::Forbidden("guests cannot change tags".into()))?;
        tag(rc, id).await
    }

    /// Deletes a tag (the entries stay, without it). Returns its name.
    async fn delete_knowledge_tag(&self, ctx: &Context<'_>, workspace_id: ID, name: String) -> AppResult<String> {
        let rc = RequestContext::of(ctx);
        let name = input::tag_name("name", &name)?;
        let ws = workspace_here(rc, "workspaceId", &workspace_id).await?;
        let id = existing(rc, ws, "name", &name).await?;
        let deleted: Option<String> = sqlx::query_scalar("DELETE FROM knowledge_tags WHERE id = $1 RETURNING name")
            .bind(id)
            .fetch_optional(&mut *rc.db.conn().await?)
            .await
            .map_err(guest)?;
        deleted.ok_or_else(|| AppError::Forbidden("guests cannot change tags".into()))
    }
}
