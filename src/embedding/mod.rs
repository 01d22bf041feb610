//! Sentence embeddings computed inside the process, for semantic search.
//!
//! The model comes from a registry package that the project's scripts
//! install (never from a model hub at run time); an instance without one
//! simply has no `Embedder`, and semantic search says so.

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
