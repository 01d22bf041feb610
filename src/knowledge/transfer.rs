//! `mosaic knowledge import` and `export`: a directory of Markdown files,
//! one entry each, named `<slug>.md`, with optional front matter:
//!
//! ```text
//! ---
//! title: "Design notes"
//! tags: ["ops", "infra"]
//! status: DRAFT
//! ---
//! The content, with [[links]] to other files by slug or title.
//! ```
//!
//! Both run as a named user under the same policies as a request (one
//! transaction; a bad file stops the import and nothing is written). An
//! imported file whose slug exists updates that entry (a new version), so
//! export then import gives the same entries. Links need no ordering: they
//! resolve when read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::links::{is_slug, slugify};
use super::store::{self, Changes, EntryRow, NewEntry};
use super::{KnowledgeStatus, input};
use crate::config::KnowledgeSettings;
use crate::db::{RequestDb, Scope};
use crate::error::AppError;

/// Files one import reads at most.
pub const MAX_FILES: usize = 10_000;

/// One file's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub slug: String,
    pub title: String,
    pub tags: Vec<String>,
    pub status: KnowledgeStatus,
    pub content: String,
}

fn app_error(e: AppError) -> anyhow::Error {
    anyhow::anyhow!("{} ({})", e.message(), e.code())
}

/// Reads a file's front matter and content; `stem` is the file name
/// without `.md`, the slug when it is one.
pub fn parse(stem: &str, text: &str) -> Result<Document> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (front, content) = match text.strip_prefix("---\n") {
        Some(rest) => match rest
            .find("\n---\n")
            .map(|i| (i, i + 5))
            .or_else(|| rest.strip_suffix("\n---").map(|r| (r.len(), rest.len())))
        {
            Some((end, body)) => (&rest[..end], &rest[body..]),
            None => bail!("front matter is not closed by a line '---'"),
        },
        None => ("", text),
    };
    let mut title = None;
    let mut tags = Vec::new();
    let mut status = KnowledgeStatus::Published;
    for line in front.lines().filter(|l| !l.trim().is_empty()) {
        let Some((key, value)) = line.split_once(':') else {
            bail!("front matter line '{line}' is not 'key: value'");
        };
        let value = value.trim();
        match key.trim() {
            "title" => title = Some(scalar(value)?),
            "tags" => tags = list(value)?,
            "status" => {
                status = match scalar(value)?.as_str() {
                    "DRAFT" => KnowledgeStatus::Draft,
                    "PUBLISHED" => KnowledgeStatus::Published,
                    "ARCHIVED" => KnowledgeStatus::Archived,
                    other => bail!("status '{other}' is not DRAFT, PUBLISHED or ARCHIVED"),
                }
            }
            other => bail!("front matter key '{other}' is not one of title, tags, status"),
        }
    }
    let title = title.unwrap_or_else(|| stem.to_string());
    let slug = if is_slug(stem) {
        stem.to_string()
    } else {
        slugify(&title)
    };
    Ok(Document {
        slug,
        title,
        tags,
        status,
        content: content.to_string(),
    })
}

/// A front-matter string: JSON-quoted (as export writes it) or bare.
fn scalar(value: &str) -> Result<String> {
    if value.starts_with('"') {
        return serde_json::from_str(value).with_context(|| format!("'{value}' is not a quoted string"));
    }
    Ok(value.trim_matches('\'').to_string())
}

/// A front-matter list: `["a", "b"]`, `[a, b]` or `a, b`.
fn list(value: &str) -> Result<Vec<String>> {
    if let Ok(v) = serde_json::from_str::<Vec<String>>(value) {
        return Ok(v);
    }
    let inner = value.trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(scalar)
        .collect()
}

/// The file text export writes for a document.
pub fn render(doc: &Document) -> String {
    let mut out = format!(
        "---\ntitle: {}\ntags: {}\n",
        serde_json::to_string(&doc.title).expect("a string serialises"),
        serde_json::to_string(&doc.tags).expect("strings serialise")
    );
    if doc.status != KnowledgeStatus::Published {
        out.push_str(&format!("status: {}\n", doc.status.as_str()));
    }
    out.push_str("---\n");
    out.push_str(&doc.content);
    out
}

/// The `.md` files of a directory (not its subdirectories), by name.
fn markdown_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("DIR: cannot read {}", dir.display()))? {
        let path = item?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "md") {
            files.push(path);
            if files.len() > MAX_FILES {
                bail!("DIR: more than {MAX_FILES} Markdown files");
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A transaction acting as `user`, checked to read `workspace`.
async fn scoped(pool: &PgPool, user: Uuid, workspace: Uuid, timeout: Duration) -> Result<RequestDb> {
    let db = RequestDb::new(pool.clone(), Scope::user(user), timeout, false);
    let visible: Option<Uuid> = sqlx::query_scalar("SELECT id FROM workspaces WHERE id = $1")
        .bind(workspace)
        .fetch_optional(&mut *db.conn().await?)
        .await?;
    if visible.is_none() {
        bail!("--workspace: no workspace {workspace} that this user can read");
    }
    Ok(db)
}

async fn save(
    conn: &mut PgConnection,
    settings: &KnowledgeSettings,
    user: Uuid,
    ws: Uuid,
    doc: &Document,
) -> Result<bool> {
    let title = input::title(&doc.title).map_err(app_error)?;
    let (content, links) = input::content(settings, &doc.content).map_err(app_error)?;
    let slug = input::slug(&doc.slug).map_err(app_error)?;
    let tags = input::tags(settings, &doc.tags).map_err(app_error)?;
    let existing = store::by_slug(conn, ws, slug).await.map_err(app_error)?;
    let (row, created): (EntryRow, bool) = match existing {
        Some(e) => {
            let changes = Changes {
                title: Some(&title),
                content: Some(&content),
                status: Some(doc.status.as_str()),
                ..Changes::default()
            };
            let row = store::update(conn, e.id, Some(user), &changes)
                .await
                .map_err(app_error)?
                .ok_or_else(|| anyhow::anyhow!("{slug}: not allowed to change this entry"))?;
            (row, false)
        }
        None => {
            let new = NewEntry {
                workspace_id: ws,
                slug: Some(slug),
                title: &title,
                content: &content,
                summary: None,
                status: doc.status.as_str(),
                author: Some(user),
            };
            (store::insert(conn, &new).await.map_err(app_error)?, true)
        }
    };
    store::after_save(conn, &row, Some(&links), Some(&tags), Some(user), Some("imported"))
        .await
        .map_err(app_error)?;
    Ok(created)
}

/// Imports every `.md` file of `dir`; returns (created, updated).
pub async fn import(
    pool: &PgPool,
    settings: &KnowledgeSettings,
    timeout: Duration,
    user: Uuid,
    workspace: Uuid,
    dir: &Path,
) -> Result<(usize, usize)> {
    // One file in memory at a time, each read only up to what an entry may
    // hold; all saved in one transaction, so a bad file writes nothing.
    let files = markdown_files(dir)?;
    let db = scoped(pool, user, workspace, timeout).await?;
    let (mut created, mut updated) = (0, 0);
    for path in &files {
        let outcome = match read_document(settings, path) {
            Ok(doc) => save(&mut *db.conn().await?, settings, user, workspace, &doc)
                .await
                .with_context(|| path.display().to_string()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(true) => created += 1,
            Ok(false) => updated += 1,
            Err(e) => {
                db.rollback().await?;
                return Err(e);
            }
        }
    }
    db.commit().await?;
    Ok((created, updated))
}

/// Front matter a file may carry beside an entry's largest content.
const FRONT_MATTER_BYTES: u64 = 64 * 1024;

/// A file's document, refused without reading it whole when it is larger
/// than an entry could be.
fn read_document(settings: &KnowledgeSettings, path: &Path) -> Result<Document> {
    use std::io::Read;
    let most = settings.max_content_bytes as u64 + FRONT_MATTER_BYTES;
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut bytes = Vec::new();
    file.take(most + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    if bytes.len() as u64 > most {
        bail!(
            "{}: larger than an entry may be (knowledge.max_content_bytes is {} bytes)",
            path.display(),
            settings.max_content_bytes
        );
    }
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    parse(stem, &text).with_context(|| path.display().to_string())
}

/// Writes every entry the user can see in the workspace (archived ones
/// included, marked) as `<slug>.md`; returns how many.
pub async fn export(pool: &PgPool, timeout: Duration, user: Uuid, workspace: Uuid, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("DIR: cannot create {}", dir.display()))?;
    let db = scoped(pool, user, workspace, timeout).await?;
    let mut conn = db.conn().await?;
    let rows: Vec<EntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM knowledge_entries e WHERE e.workspace_id = $1 ORDER BY e.slug",
        store::COLUMNS
    )))
    .bind(workspace)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let doc = Document {
            tags: store::tags_of(&mut conn, row.id).await.map_err(app_error)?,
            status: match row.status.as_str() {
                "DRAFT" => KnowledgeStatus::Draft,
                "ARCHIVED" => KnowledgeStatus::Archived,
                _ => KnowledgeStatus::Published,
            },
            slug: row.slug.clone(),
            title: row.title.clone(),
            content: row.content.clone(),
        };
        let path = dir.join(format!("{}.md", row.slug));
        std::fs::write(&path, render(&doc)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    drop(conn);
    db.rollback().await?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_round_trips() {
        let doc = Document {
            slug: "design-notes".into(),
            title: "Design: \"notes\"".into(),
            tags: vec!["ops".into(), "a, b".into()],
            status: KnowledgeStatus::Draft,
            content: "Body with [[links]].\n---\nnot front matter\n".into(),
        };
        assert_eq!(parse("design-notes", &render(&doc)).unwrap(), doc);
        let bare = parse("Some File", "---\ntitle: Plain title\ntags: [x, 'y']\n---\nhi").unwrap();
        assert_eq!(bare.slug, "plain-title");
        assert_eq!(bare.tags, ["x", "y"]);
        assert_eq!(bare.content, "hi");
        let none = parse("readme", "# Just text").unwrap();
        assert_eq!((none.title.as_str(), none.content.as_str()), ("readme", "# Just text"));
        assert!(parse("x", "---\ntitle: a\n").is_err());
        assert!(parse("x", "---\nauthor: me\n---\n").is_err());
        assert!(parse("x", "---\nstatus: GONE\n---\n").is_err());
    }
}
