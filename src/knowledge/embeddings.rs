//! Entry embeddings, computed off the request path.
//!
//! A trigger (migration 0061) notifies `mosaic_knowledge_saves` with an
//! entry's id whenever its title, content or status is saved; PostgreSQL
//! delivers it only once the save has committed, whatever wrote it (a
//! mutation, an import, a peer's command). The instance's listener
//! (`live/listener.rs`) hands the id to [`Embeddings`] (its `Forget`: the
//! entry's embedding is stale), which puts it on a bounded queue; when the
//! queue is full the id is dropped and a sweep is owed instead, so a burst
//! of saves never blocks or fails one of them. The worker embeds what the
//! queue names, and sweeps (every entry whose stored embedding is missing or
//! was made from other text, in batches) when a sweep is owed: whenever the
//! listener starts or stops hearing, so at start and after a reconnect.
//!
//! The worker acts for no user: it reads and writes through the narrow
//! definer functions of migration 0061 on unscoped connections. Requests
//! read the vectors from the in-memory [`VectorIndex`] the worker keeps,
//! only for entries PostgreSQL has already shown them (see `search.rs`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc, watch};
use uuid::Uuid;

use crate::db::cache::Forget;
use crate::embedding::{Embedder, vectors};

/// The channel the trigger of migration 0061 notifies.
pub const CHANNEL: &str = "mosaic_knowledge_saves";
/// Entries embedded per round trip (a few forward passes of the model).
const WORK_BATCH: i32 = 32;
/// Vectors read per round trip when loading the index.
const LOAD_BATCH: i32 = 2000;

/// The name embeddings are stored under: the model and its package version.
pub fn model_name() -> String {
    format!("all-minilm-l6-v2-{}", crate::embedding::MODEL_PACKAGE_VERSION)
}

/// Every stored vector of the model, each workspace's in one block of
/// memory, so that a search scans only the workspaces its caller reads.
/// Which entries of those the caller may see is not its business: callers
/// have PostgreSQL check the best it finds.
#[derive(Default)]
pub struct VectorIndex {
    inner: RwLock<Slots>,
}

#[derive(Default)]
struct Slots {
    dims: usize,
    /// entry -> (its workspace, its place in that workspace's block)
    place: HashMap<Uuid, (Uuid, usize)>,
    blocks: HashMap<Uuid, Block>,
}

#[derive(Default)]
struct Block {
    ids: Vec<Uuid>,
    data: Vec<f32>,
}

impl Slots {
    /// Removes place `i` of workspace `ws`'s block; its last vector takes
    /// the freed place.
    fn take_out(&mut self, ws: Uuid, i: usize) {
        let d = self.dims;
        let block = self.blocks.get_mut(&ws).expect("a placed entry's block");
        let gone = block.ids.swap_remove(i);
        let last = block.ids.len();
        if i != last {
            block.data.copy_within(last * d..(last + 1) * d, i * d);
            self.place.insert(block.ids[i], (ws, i));
        }
        block.data.truncate(last * d);
        self.place.remove(&gone);
    }
}

impl VectorIndex {
    /// Sets (or replaces) an entry's vector. A vector of another length
    /// than the first one stored is ignored (it cannot be compared).
    pub fn put(&self, id: Uuid, workspace: Uuid, vector: &[f32]) {
        let mut s = self.inner.write().expect("index lock");
        if s.dims == 0 {
            s.dims = vector.len();
        }
        let d = s.dims;
        if vector.len() != d {
            return;
        }
        match s.place.get(&id).copied() {
            Some((ws, i)) if ws == workspace => {
                let block = s.blocks.get_mut(&ws).expect("a placed entry's block");
                block.data[i * d..(i + 1) * d].copy_from_slice(vector);
                return;
            }
            // Entries do not move between workspaces; were one to, it
            // leaves its old block.
            Some((ws, i)) => s.take_out(ws, i),
            None => {}
        }
        let block = s.blocks.entry(workspace).or_default();
        let i = block.ids.len();
        block.ids.push(id);
        block.data.extend_from_slice(vector);
        s.place.insert(id, (workspace, i));
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("index lock").place.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` entries of `workspaces` most similar to `query`, best first.
    /// CPU work: call it off the async runtime.
    pub fn top_k(&self, query: &[f32], workspaces: &[Uuid], k: usize) -> Vec<(Uuid, f32)> {
        let s = self.inner.read().expect("index lock");
        let d = s.dims.max(1);
        let candidates = workspaces
            .iter()
            .filter_map(|ws| s.blocks.get(ws))
            .flat_map(|b| b.ids.iter().copied().zip(b.data.chunks_exact(d)));
        vectors::top_k(query, candidates, k)
    }
}

/// The embedder, the index and the worker's inputs.
pub struct Embeddings {
    embedder: Arc<dyn Embedder>,
    model: String,
    pub index: VectorIndex,
    queue: mpsc::Sender<Uuid>,
    /// Set when saves were missed (a full queue, a lost listener connection).
    sweep_owed: std::sync::atomic::AtomicBool,
    wake: Arc<Notify>,
    /// Bumped after each round of work, for [`Embeddings::settled`].
    progress: watch::Sender<u64>,
}

impl Embeddings {
    /// Loads the stored vectors and starts the worker, which sweeps first.
    /// Saves are heard once the instance's listener takes this as the
    /// audience of [`CHANNEL`]; it owes a sweep when it starts hearing, so
    /// no save made before is missed.
    pub async fn start(embedder: Arc<dyn Embedder>, pool: PgPool, queue_capacity: usize) -> Result<Arc<Self>> {
        let (queue, rx) = mpsc::channel(queue_capacity);
        let this = Arc::new(Self {
            embedder,
            model: model_name(),
            index: VectorIndex::default(),
            queue,
            sweep_owed: true.into(),
            wake: Arc::new(Notify::new()),
            progress: watch::channel(0).0,
        });
        this.load_index(&pool).await?;
        tokio::spawn(work(Arc::downgrade(&this), this.wake.clone(), pool, rx));
        Ok(this)
    }

    /// Embeds texts on a blocking thread (it is CPU work).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let embedder = self.embedder.clone();
        let vectors = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            embedder.embed(&refs)
        })
        .await??;
        Ok(vectors)
    }

    /// Reads every stored vector into the index: at start, and after vectors
    /// were written by other means than the worker (a bulk load).
    pub async fn load_index(&self, pool: &PgPool) -> Result<()> {
        let mut after: Option<Uuid> = None;
        loop {
            let rows: Vec<(Uuid, Uuid, Vec<u8>)> =
                sqlx::query_as("SELECT * FROM knowledge_embedding_vectors($1, $2, $3)")
                    .bind(&self.model)
                    .bind(after)
                    .bind(LOAD_BATCH)
                    .fetch_all(pool)
                    .await
                    .context("loading the stored embeddings")?;
            let Some(last) = rows.last() else { return Ok(()) };
            after = Some(last.0);
            for (id, workspace, bytes) in &rows {
                if let Some(v) = vectors::decode(bytes) {
                    self.index.put(*id, *workspace, &v);
                }
            }
        }
    }

    /// A save to embed; never waits. A full queue drops it and owes a sweep.
    fn saved(&self, id: Uuid) {
        if self.queue.try_send(id).is_err() {
            self.owe_sweep();
        }
    }

    fn owe_sweep(&self) {
        self.sweep_owed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Embeds the entries among `ids` (all of them when None, after `after`
    /// in id order) whose embedding is missing or stale, at most WORK_BATCH;
    /// returns the last id looked at, None when there was nothing to do.
    async fn round(&self, pool: &PgPool, ids: Option<&[Uuid]>, after: Option<Uuid>) -> Result<Option<Uuid>> {
        let rows: Vec<(Uuid, Uuid, String, Vec<u8>)> =
            sqlx::query_as("SELECT * FROM knowledge_embedding_work($1, $2, $3, $4)")
                .bind(&self.model)
                .bind(ids)
                .bind(after)
                .bind(WORK_BATCH)
                .fetch_all(pool)
                .await?;
        let Some(last) = rows.last().map(|r| r.0) else {
            return Ok(None);
        };
        let texts = rows.iter().map(|r| r.2.clone()).collect();
        let vectors = self.embed(texts).await?;
        for ((id, workspace, _, digest), vector) in rows.iter().zip(&vectors) {
            sqlx::query("SELECT knowledge_embedding_put($1, $2, $3, $4)")
                .bind(id)
                .bind(&self.model)
                .bind(vectors::encode(vector))
                .bind(digest)
                .execute(pool)
                .await?;
            self.index.put(*id, *workspace, vector);
        }
        Ok(Some(last))
    }

    /// Every stale embedding brought up to date, batch by batch.
    async fn sweep(&self, pool: &PgPool) -> Result<()> {
        let mut after = None;
        while let Some(last) = self.round(pool, None, after).await? {
            after = Some(last);
            self.progress.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// Whether some entry (not archived) has no embedding from its current text.
    pub async fn stale(&self, pool: &PgPool) -> Result<bool> {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT entry_id FROM knowledge_embedding_work($1, NULL, NULL, 1)")
                .bind(&self.model)
                .fetch_optional(pool)
                .await?;
        Ok(found.is_some())
    }

    /// Resolves once every committed save has its embedding: the barrier
    /// tests and benches wait on. `pool` must be unscoped (the app pool).
    pub async fn settled(&self, pool: &PgPool) -> Result<()> {
        let mut progress = self.progress.subscribe();
        loop {
            progress.borrow_and_update();
            if !self.stale(pool).await? {
                return Ok(());
            }
            progress.changed().await.context("the embedding worker stopped")?;
        }
    }
}

/// What the instance's listener does with a save's notification.
impl Forget for Embeddings {
    /// The payload is the saved entry's id: its embedding is stale.
    fn forget(&self, payload: &str) {
        match payload.parse() {
            Ok(id) => self.saved(id),
            Err(_) => tracing::warn!(payload, "a knowledge save note without an entry id"),
        }
    }

    /// Saves may have passed unheard before the listener heard, or while it
    /// reconnects: a sweep finds them.
    fn set_listening(&self, _listening: bool) {
        self.owe_sweep();
    }
}

/// The worker: queued saves in batches, sweeps when owed. Ends when the
/// service is dropped (the queue closes) or its pool closes; it holds the
/// service only while working.
async fn work(svc: std::sync::Weak<Embeddings>, wake: Arc<Notify>, pool: PgPool, mut rx: mpsc::Receiver<Uuid>) {
    let mut batch: Vec<Uuid> = Vec::with_capacity(WORK_BATCH as usize);
    loop {
        if pool.is_closed() {
            return;
        }
        let Some(this) = svc.upgrade() else { return };
        let result = if this.sweep_owed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            this.sweep(&pool).await
        } else if !batch.is_empty() {
            let ids = std::mem::take(&mut batch);
            this.round(&pool, Some(&ids), None).await.map(|_| ())
        } else {
            drop(this);
            tokio::select! {
                id = rx.recv() => match id {
                    Some(id) => batch.push(id),
                    None => return,
                },
                _ = wake.notified() => {}
            }
            while batch.len() < WORK_BATCH as usize
                && let Ok(id) = rx.try_recv()
            {
                batch.push(id);
            }
            continue;
        };
        if let Err(e) = result {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "embedding knowledge entries failed; the next sweep retries");
        }
        this.progress.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn a_search_ranks_only_the_workspaces_it_names() {
        let index = VectorIndex::default();
        let (a, b) = (id(100), id(200));
        index.put(id(1), a, &[1.0, 0.0]);
        index.put(id(2), b, &[0.9, 0.1]);
        index.put(id(3), a, &[0.5, 0.5]);
        assert_eq!(index.top_k(&[1.0, 0.0], &[a], 5), vec![(id(1), 1.0), (id(3), 0.5)]);
        assert_eq!(index.top_k(&[1.0, 0.0], &[b], 5), vec![(id(2), 0.9)]);
        assert_eq!(index.top_k(&[1.0, 0.0], &[a, b], 2).len(), 2);
        assert!(index.top_k(&[1.0, 0.0], &[id(300)], 5).is_empty());
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn a_vector_is_replaced_in_place_and_follows_its_entry_to_another_workspace() {
        let index = VectorIndex::default();
        let (a, b) = (id(100), id(200));
        for n in 1..=3 {
            index.put(id(n), a, &[n as f32, 0.0]);
        }
        index.put(id(2), a, &[0.0, 7.0]);
        assert_eq!(index.top_k(&[0.0, 1.0], &[a], 1), vec![(id(2), 7.0)]);
        // The first leaves a: the last of a's block takes its place.
        index.put(id(1), b, &[0.0, 9.0]);
        assert_eq!(index.top_k(&[1.0, 0.0], &[a], 5), vec![(id(3), 3.0), (id(2), 0.0)]);
        assert_eq!(index.top_k(&[0.0, 1.0], &[b], 5), vec![(id(1), 9.0)]);
        assert_eq!(index.len(), 3);
        // A vector of another length is ignored.
        index.put(id(4), a, &[1.0]);
        assert_eq!(index.len(), 3);
    }
}
