//! What the sentence-embedding model costs in the process, with the model
//! `scripts/install-model` installs (`scripts/bench embedding` runs both):
//!
//! * load:       `MiniLm::load` (read 90 MB of weights, build the model),
//!   and the resident memory (VmRSS) before and after, with the peak (VmHWM);
//! * short:      texts of about ten words, one per call (what embedding a
//!   search query costs) and 32 per call (indexing many small entries);
//! * long:       texts of about 1 KB (about 230 tokens), 32 per call;
//! * top_k:      the 10 best of 100,000 stored 384-dimension vectors for one
//!   query, exact (a scan with a bounded heap), p50 and p99.
//!
//! One run, printed as plain lines. `EMBED_BENCH_TEXTS` (default 256) sets
//! the texts per throughput case, `EMBED_BENCH_QUERIES` (default 200) the
//! top_k queries.

use std::time::{Duration, Instant};

use mosaic::embedding::vectors::top_k;
use mosaic::embedding::{Embedder, MiniLm, default_model_dir};

#[path = "support/sample.rs"]
mod sample;
#[path = "support/stats.rs"]
#[allow(dead_code)] // summary's median only
mod stats;
use sample::{XorShift, memory};
use stats::env_usize;

const CANDIDATES: usize = 100_000;
const DIMENSIONS: usize = 384;
const K: usize = 10;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let texts = env_usize("EMBED_BENCH_TEXTS", 256);
    let queries = env_usize("EMBED_BENCH_QUERIES", 200);

    let rss_before = memory("VmRSS");
    let started = Instant::now();
    let model = MiniLm::load(&default_model_dir())
        .unwrap_or_else(|e| panic!("{e}\nrun scripts/install-model first (scripts/bench embedding does)"));
    let load = started.elapsed();
    let rss_after = memory("VmRSS");
    println!(
        "load             {:>8.1} ms   RSS {:.0} -> {:.0} MiB (+{:.0}), peak {:.0} MiB",
        ms(load),
        rss_before,
        rss_after,
        rss_after - rss_before,
        memory("VmHWM")
    );

    let short: Vec<String> = (0..texts).map(short_text).collect();
    let long: Vec<String> = (0..texts).map(long_text).collect();
    // Warm up the allocator and the thread pool, untimed.
    model.embed(&refs(&short[..8])).expect("embeds");

    throughput(&model, "short batch=1", &short, 1);
    throughput(&model, "short batch=32", &short, 32);
    throughput(&model, "~1KB batch=32", &long, 32);
    println!(
        "RSS after embedding {:.0} MiB, peak {:.0} MiB",
        memory("VmRSS"),
        memory("VmHWM")
    );
    drop(model);

    search(queries);
}

/// Embeds `texts` in calls of `batch` and prints texts per second.
fn throughput(model: &MiniLm, label: &str, texts: &[String], batch: usize) {
    let texts = refs(texts);
    let started = Instant::now();
    for chunk in texts.chunks(batch) {
        std::hint::black_box(model.embed(chunk).expect("embeds"));
    }
    let took = started.elapsed();
    println!(
        "{label:<16} {:>8.1} texts/s  ({} texts in {:.2} s, {:.2} ms per call)",
        texts.len() as f64 / took.as_secs_f64(),
        texts.len(),
        took.as_secs_f64(),
        ms(took) / texts.len().div_ceil(batch) as f64
    );
}

/// top_k over CANDIDATES random unit vectors held as one flat array (as a
/// loaded index would be), for `queries` random queries.
fn search(queries: usize) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let stored: Vec<f32> = (0..CANDIDATES).flat_map(|_| rng.unit_vector(DIMENSIONS)).collect();
    let mut samples: Vec<Duration> = Vec::with_capacity(queries);
    for _ in 0..queries {
        let q = rng.unit_vector(DIMENSIONS);
        let started = Instant::now();
        let best = top_k(&q, stored.chunks_exact(DIMENSIONS).enumerate(), K);
        samples.push(started.elapsed());
        assert_eq!(best.len(), K);
    }
    samples.sort();
    let at = |p: usize| ms(samples[(samples.len() * p / 100).min(samples.len() - 1)]);
    println!(
        "top_k {K} of {CANDIDATES}x{DIMENSIONS}  p50={:.2} ms  p99={:.2} ms  ({} queries)",
        at(50),
        at(99),
        samples.len()
    );
}

/// About ten words, different each time.
fn short_text(i: usize) -> String {
    const SUBJECTS: [&str; 4] = ["the deploy", "our login page", "this invoice", "the nightly backup"];
    const VERBS: [&str; 4] = ["failed again", "needs a review", "is slow since", "was moved after"];
    format!("Why {} {} release {i}?", SUBJECTS[i % 4], VERBS[i / 4 % 4])
}

/// About 1 KB of prose.
fn long_text(i: usize) -> String {
    let mut text = String::new();
    let mut n = i;
    while text.len() < 1000 {
        text.push_str(&short_text(n));
        text.push_str(" We checked the logs, compared the settings and wrote down what changed. ");
        n += 7;
    }
    text
}

fn refs(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
