//! Cost of the peer protocol's request signatures and replay cache.
//!
//! `cargo bench --bench signing` (about a minute):
//! - sign one request (~1 KB body: digest, canonical string, ed25519, header),
//! - verify one request (digest + strict ed25519),
//! - parse the header, verify and check the time window,
//! - the replay cache at 100,000 live entries: recording a fresh nonce (with
//!   nothing expiring, and in the steady state where each request also
//!   expires the oldest entry), and refusing a replayed nonce.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use mosaic::federation::replay::{Recorded, ReplayCache};
use mosaic::federation::signing::{self, SignatureParams};

const NOW: i64 = 1_767_225_600;
const LIVE: usize = 100_000;

/// A QUERY body of about 1 KB, shaped like a real one.
fn body() -> Vec<u8> {
    let mut body = String::from(
        r#"{"query":"query($scope: InstanceScope, $workspaceId: ID, $filter: TaskFilter, $orderBy: TaskOrder, $first: Int, $after: String, $withTotal: Boolean!) { tasks(scope: $scope, workspaceId: $workspaceId, filter: $filter, orderBy: $orderBy, first: $first, after: $after) { edges { cursor node { ...TaskFields } } pageInfo { hasNextPage } totalCount @include(if: $withTotal) } } fragment TaskFields on Task { id title description status priority dueDate createdAt updatedAt instance { id name } workspace { id name createdAt updatedAt } project { id name description createdAt updatedAt } assignee { id email name isAdmin } }","variables":{"scope":{"all":true},"workspaceId":null,"filter":{"status":["TODO","IN_PROGRESS"]},"orderBy":{"field":"CREATED_AT","direction":"ASC"},"first":50,"after":null,"withTotal":false},"envelope":{"visited":["0196f2a4-6b1e-7c3d-9a58-2f4e6d8b0c11"],"exclude":["0196f2a4-9d07-7e21-8b3c-5a6f7e8d9c22","0196f2a5-1c44-7a90-b1d2-3e4f5a6b7c33"],"hop_limit":3,"deadline_ms":4500,"actor":{"user":"User:0196f2a4-6b1e-7c3d-9a58-2f4e6d8b0c11:0196f2a4-7000-7000-8000-000000000001","email":"ada@example.org"}}}"#,
    );
    while body.len() < 1024 {
        body.push(' ');
    }
    body.into_bytes()
}

fn params(key: &SigningKey, body: &[u8]) -> SignatureParams {
    SignatureParams {
        method: "POST".into(),
        path: "/federation/query".into(),
        origin: ORIGIN.into(),
        destination: "0196f2a4-9d07-7e21-8b3c-5a6f7e8d9c22".into(),
        digest: signing::body_digest(body),
        created: NOW,
        expires: NOW + 60,
        nonce: "q4bCIa3dTzqVbYfM1sLk0w".into(),
        key_id: signing::key_id(&key.verifying_key()),
    }
}

fn signatures(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let vk = key.verifying_key();
    let body = body();
    let p = params(&key, &body);
    let sig = signing::sign(&key, &p);
    let header = signing::header_value(&p, &sig);

    let mut g = c.benchmark_group("signing");
    g.bench_function("sign_request_1KiB", |b| {
        b.iter(|| {
            let mut q = p.clone();
            q.digest = signing::body_digest(black_box(&body));
            let sig = signing::sign(&key, &q);
            black_box(signing::header_value(&q, &sig))
        })
    });
    g.bench_function("verify_request_1KiB", |b| {
        b.iter(|| signing::verify(&vk, black_box(&p), black_box(&sig), black_box(&body)).expect("verifies"))
    });
    g.bench_function("parse_verify_time_1KiB", |b| {
        b.iter(|| {
            let (q, s) = signing::parse_header(black_box(&header), "POST", "/federation/query").expect("parses");
            signing::verify(&vk, &q, &s, black_box(&body)).expect("verifies");
            signing::check_time(&q, NOW + 10, 30, 60).expect("in time")
        })
    });
    g.finish();
}

const ORIGIN: &str = "0196f2a4-6b1e-7c3d-9a58-2f4e6d8b0c11";
/// Fresh nonces are formatted (untimed) this many at a time.
const CHUNK: u64 = 1_000;

fn nonce(seq: i64) -> String {
    format!("n{seq:016x}")
}

/// A replay cache holding exactly `LIVE` unexpired entries. Entry number
/// `seq` expires at `NOW + seq`; the live ones are `lo..next`, and `now` is
/// `NOW + lo`, so every entry is live and a new entry (the highest `seq`)
/// expires last, as real requests do.
struct Live {
    cache: ReplayCache,
    lo: i64,
    next: i64,
}

impl Live {
    fn new() -> Self {
        // One origin holds them all: its share must fit them.
        let cache = ReplayCache::starting_at(0, 2 * LIVE);
        for seq in 0..LIVE as i64 {
            assert_eq!(
                cache.check_and_record(ORIGIN, &nonce(seq), NOW + seq, NOW, 2 * LIVE),
                Recorded::New
            );
        }
        Self {
            cache,
            lo: 0,
            next: LIVE as i64,
        }
    }

    fn nonces(&self, n: u64) -> Vec<String> {
        (self.next..self.next + n as i64).map(nonce).collect()
    }
}

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay_cache");

    // Fresh nonces into a cache of 100,000 live entries, nothing expiring
    // (timed: 100,000..101,000 entries); after each chunk an untimed call
    // with a later `now` expires as many entries as were added.
    let mut live = Live::new();
    g.bench_function("insert_fresh_at_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                let nonces = live.nonces(n);
                let (now, first) = (NOW + live.lo, live.next);
                let started = Instant::now();
                for (i, nonce) in nonces.iter().enumerate() {
                    let fresh = live
                        .cache
                        .check_and_record(ORIGIN, nonce, NOW + first + i as i64, now, 2 * LIVE);
                    black_box(fresh);
                }
                total += started.elapsed();
                live.next += n as i64;
                // Back to exactly LIVE entries: this call adds one and expires n + 1.
                let expire_until = NOW + live.lo + n as i64 + 1;
                assert_eq!(
                    live.cache
                        .check_and_record(ORIGIN, &nonce(live.next), NOW + live.next, expire_until, 2 * LIVE),
                    Recorded::New
                );
                live.next += 1;
                live.lo += n as i64 + 1;
                left -= n;
            }
            total
        })
    });
    assert_eq!(live.cache.len(), LIVE);

    // Steady state: `now` advances by one per request, so each fresh nonce
    // also expires the oldest entry; the cache stays at 100,000.
    g.bench_function("insert_fresh_evicting_one_at_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                let nonces = live.nonces(n);
                let (lo, first) = (live.lo, live.next);
                let started = Instant::now();
                for (i, nonce) in nonces.iter().enumerate() {
                    let i = i as i64;
                    let fresh = live
                        .cache
                        .check_and_record(ORIGIN, nonce, NOW + first + i, NOW + lo + i + 1, 2 * LIVE);
                    black_box(fresh);
                }
                total += started.elapsed();
                live.next += n as i64;
                live.lo += n as i64;
                left -= n;
            }
            total
        })
    });
    assert_eq!(live.cache.len(), LIVE);

    // A replayed nonce: found among 100,000 live entries and refused.
    let replayed = nonce(live.next - 1);
    let (now, keep_until) = (NOW + live.lo, NOW + live.next - 1);
    g.bench_function("refuse_replayed_at_100k", |b| {
        b.iter(|| {
            let seen = live
                .cache
                .check_and_record(ORIGIN, black_box(&replayed), keep_until, now, 2 * LIVE);
            assert_eq!(seen, Recorded::Replayed);
        })
    });
    assert_eq!(live.cache.len(), LIVE);
    g.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = quick();
    targets = signatures, replay
}
criterion_main!(benches);
