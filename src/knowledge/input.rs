//! Checks of what a client sends, each refusal with its own code and the
//! field named in its message, before anything is written.

use crate::config::KnowledgeSettings;
use crate::error::{AppError, AppResult};

use super::links::{self, WikiLink};

pub const MAX_TITLE_CHARS: usize = 500;
pub const MAX_SUMMARY_CHARS: usize = 2000;
pub const MAX_MESSAGE_CHARS: usize = 500;
pub const MAX_TAG_CHARS: usize = 50;
pub const MAX_QUERY_CHARS: usize = 500;

fn no_nul(field: &str, value: &str) -> AppResult<()> {
    if value.contains('\0') {
        return Err(AppError::invalid(
            "NUL_CHARACTER",
            format!("{field}: must not contain the NUL character"),
        ));
    }
    Ok(())
}

pub fn title(value: &str) -> AppResult<String> {
    no_nul("title", value)?;
    let v = value.trim();
    if v.is_empty() {
        return Err(AppError::invalid("TITLE_EMPTY", "title: must not be empty"));
    }
    if v.chars().count() > MAX_TITLE_CHARS {
        return Err(AppError::invalid(
            "TITLE_TOO_LONG",
            format!("title: longer than {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(super::markdown::clean_text(v))
}

/// The content as stored, and its links (bounded in number).
pub fn content(settings: &KnowledgeSettings, value: &str) -> AppResult<(String, Vec<WikiLink>)> {
    no_nul("content", value)?;
    if value.len() > settings.max_content_bytes {
        return Err(AppError::invalid(
            "CONTENT_TOO_LARGE",
            format!("content: larger than {} bytes", settings.max_content_bytes),
        ));
    }
    let content = super::markdown::clean_text(value);
    let found = links::parse(&content);
    if found.len() > settings.max_links_per_entry {
        return Err(AppError::invalid(
            "TOO_MANY_LINKS",
            format!("content: more than {} links", settings.max_links_per_entry),
        ));
    }
    Ok((content, found))
}

pub fn slug(value: &str) -> AppResult<&str> {
    no_nul("slug", value)?;
    if !links::is_slug(value) {
        return Err(AppError::invalid(
            "INVALID_SLUG",
            "slug: must be lower-case letters and digits joined by single hyphens, at most 120 characters",
        ));
    }
    Ok(value)
}

pub fn summary(value: Option<&str>) -> AppResult<Option<String>> {
    let Some(v) = value else { return Ok(None) };
    no_nul("summary", v)?;
    if v.chars().count() > MAX_SUMMARY_CHARS {
        return Err(AppError::invalid(
            "SUMMARY_TOO_LONG",
            format!("summary: longer than {MAX_SUMMARY_CHARS} characters"),
        ));
    }
    Ok(Some(super::markdown::clean_text(v)))
}

pub fn message(value: Option<&str>) -> AppResult<Option<&str>> {
    let Some(v) = value else { return Ok(None) };
    no_nul("message", v)?;
    if v.chars().count() > MAX_MESSAGE_CHARS {
        return Err(AppError::invalid(
            "MESSAGE_TOO_LONG",
            format!("message: longer than {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    Ok(Some(v))
}

pub fn tag_name(field: &str, value: &str) -> AppResult<String> {
    no_nul(field, value)?;
    let v = value.trim();
    if v.is_empty() || v.chars().count() > MAX_TAG_CHARS {
        return Err(AppError::invalid(
            "INVALID_TAG",
            format!("{field}: a tag name has 1 to {MAX_TAG_CHARS} characters"),
        ));
    }
    Ok(v.to_string())
}

/// An entry's tags: trimmed, each once (ignoring case), bounded in number.
pub fn tags(settings: &KnowledgeSettings, values: &[String]) -> AppResult<Vec<String>> {
    if values.len() > settings.max_tags_per_entry {
        return Err(AppError::invalid(
            "TOO_MANY_TAGS",
            format!("tags: more than {} tags", settings.max_tags_per_entry),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        let name = tag_name("tags", v)?;
        if !out.iter().any(|n| n.to_lowercase() == name.to_lowercase()) {
            out.push(name);
        }
    }
    Ok(out)
}

pub fn query(value: &str) -> AppResult<&str> {
    no_nul("query", value)?;
    let v = value.trim();
    if v.is_empty() {
        return Err(AppError::invalid("QUERY_EMPTY", "query: must not be empty"));
    }
    if v.chars().count() > MAX_QUERY_CHARS {
        return Err(AppError::invalid(
            "QUERY_TOO_LONG",
            format!("query: longer than {MAX_QUERY_CHARS} characters"),
        ));
    }
    Ok(v)
}
