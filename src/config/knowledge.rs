//! The knowledge base: bounds on what one entry, search or graph may hold.
//!
//! An entry's content also travels in a request body, which
//! `limits.max_body_bytes` (256 KiB by default) bounds first; raise both to
//! store entries up to `max_content_bytes`.

use std::path::PathBuf;

use super::setting::settings;

settings! {
    /// Sizes and counts an outsider controls in the knowledge base.
    pub struct KnowledgeSettings {
        /// The largest entry content, in bytes of UTF-8.
        max_content_bytes: usize = 1024 * 1024;
            "knowledge.max_content_bytes", "MOSAIC_KNOWLEDGE_MAX_CONTENT_BYTES", range(1024, 16 * 1024 * 1024);
        /// Tags on one entry.
        max_tags_per_entry: usize = 20;
            "knowledge.max_tags_per_entry", "MOSAIC_KNOWLEDGE_MAX_TAGS_PER_ENTRY", range(1, 1000);
        /// `[[links]]` in one entry.
        max_links_per_entry: usize = 500;
            "knowledge.max_links_per_entry", "MOSAIC_KNOWLEDGE_MAX_LINKS_PER_ENTRY", range(1, 100_000);
        /// Entries one full-text search ranks at most, those with every word
        /// first: bounds the cost of a word that most entries contain.
        max_search_candidates: usize = 1000;
            "knowledge.max_search_candidates", "MOSAIC_KNOWLEDGE_MAX_SEARCH_CANDIDATES", range(10, 1_000_000);
        /// Where the sentence-embedding model is (`scripts/install-model`
        /// puts it at the default). None of its files there: semantic
        /// search is off; a file that does not load: the instance refuses
        /// to start, naming the file.
        model_dir: PathBuf = crate::embedding::default_model_dir();
            "knowledge.model_dir", "MOSAIC_KNOWLEDGE_MODEL_DIR", parsed();
        /// Saves waiting to be embedded; when full, a save is not queued and
        /// a sweep of stale embeddings picks it up instead.
        embedding_queue: usize = 1024;
            "knowledge.embedding_queue", "MOSAIC_KNOWLEDGE_EMBEDDING_QUEUE", range(1, 1_000_000);
        /// Nodes one graph answer may hold (`limit` is capped here).
        max_graph_nodes: usize = 2000;
            "knowledge.max_graph_nodes", "MOSAIC_KNOWLEDGE_MAX_GRAPH_NODES", range(1, 1_000_000);
    }
}
