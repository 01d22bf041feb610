//! Fan-out: choosing instances for a scoped list, asking peers (signed
//! QUERY/COMMAND), reporting per-instance outcomes, and forwarding objects
//! and writes to the instance that owns them. Nothing a peer returns is
//! stored; it only builds this response.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::{InputObject, ServerError};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::RequestContext;
use crate::error::{AppError, AppResult};
use crate::federation::PeerError;
use crate::federation::protocol::{self, SubRequest};
use crate::federation::registry::{PeerRecord, PeerState};
use crate::federation::{AnswerBody, not_json};

/// Which instances a list field covers. No scope: this instance only.
#[derive(InputObject, Clone, Debug, Default)]
pub struct InstanceScope {
    /// This instance and every instance reachable through its peers.
    pub all: Option<bool>,
    /// Named instances (names or ids) among this one and its direct peers.
    pub instances: Option<Vec<String>>,
}

/// The signed requests one client request causes: at most
/// `federation.max_subrequests` in all and `max_parallel_subrequests` in
/// flight, and one per distinct read of an owner, so nested fields of many
/// rows that share a remote object ask its owner once.
pub struct Subrequests {
    total: usize,
    left: AtomicUsize,
    in_flight: tokio::sync::Semaphore,
    reads: Mutex<HashMap<(Uuid, String), SharedRead>>,
}

/// An owner's answer to one read, filled by the first field that asks.
type SharedRead = Arc<tokio::sync::OnceCell<AppResult<Value>>>;

impl Subrequests {
    pub fn new(total: usize, parallel: usize) -> Self {
        Self {
            total,
            left: AtomicUsize::new(total),
            in_flight: tokio::sync::Semaphore::new(parallel.max(1)),
            reads: Mutex::default(),
        }
    }

    /// Counts one subrequest and waits for a slot; past the total, refused
    /// at once.
    async fn start(&self) -> Result<tokio::sync::SemaphorePermit<'_>, PeerError> {
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(PeerError::new(
                "SUBREQUEST_LIMIT",
                format!(
                    "this request already sent the {} subrequests one request may send (federation.max_subrequests)",
                    self.total
                ),
            ));
        }
        Ok(self.in_flight.acquire().await.expect("the semaphore is never closed"))
    }

    /// The one answer of `owner` to a read, shared by every field that asks it.
    fn read(&self, owner: Uuid, query: &str, variables: &Value) -> SharedRead {
        let key = (owner, format!("{query}\n{variables}"));
        self.reads.lock().expect("reads lock").entry(key).or_default().clone()
    }
}

#[derive(Clone, Debug)]
struct Outcome {
    name: String,
    status: &'static str,
    latency_ms: Option<u64>,
    /// The code of its first failure.
    error_code: Option<String>,
    /// When a peer that limits our rate may be asked again.
    retry_after_ms: Option<u64>,
    /// Its circuit breaker's state, when the breaker refused it.
    breaker: Option<&'static str>,
}

/// Per-instance outcomes of everything this request fanned out.
#[derive(Default, Debug)]
pub struct Report {
    fanned_out: bool,
    instances: BTreeMap<String, Outcome>,
    errors: Vec<ReportedError>,
}

/// One failed or skipped instance, as `errors[]` shows it.
#[derive(Debug)]
struct ReportedError {
    code: String,
    message: String,
    instance: String,
    /// The peer's own refusal code (e.g. GRANT_DENIED), when it refused.
    peer_code: Option<String>,
    retry_after_ms: Option<u64>,
}

/// The statuses of an instance in the report, worst last. `partial`: it
/// answered, but some of what it sent could not be used.
const STATUSES: [&str; 4] = ["succeeded", "partial", "skipped", "failed"];

fn rank(status: &str) -> usize {
    STATUSES.iter().position(|s| *s == status).unwrap_or(0)
}

impl Report {
    fn note(&mut self, id: &str, name: &str, status: &'static str, latency_ms: Option<u64>) {
        self.fanned_out = true;
        let entry = self.instances.entry(id.to_string()).or_insert(Outcome {
            name: name.to_string(),
            status,
            latency_ms,
            error_code: None,
            retry_after_ms: None,
            breaker: None,
        });
        if rank(status) > rank(entry.status) {
            entry.status = status;
        }
        if latency_ms.is_some() {
            entry.latency_ms = latency_ms;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fail(
        &mut self,
        id: &str,
        name: &str,
        status: &'static str,
        code: &str,
        message: &str,
        latency_ms: Option<u64>,
        peer_code: Option<&str>,
    ) {
        self.note(id, name, status, latency_ms);
        if let Some(entry) = self.instances.get_mut(id) {
            entry.error_code.get_or_insert_with(|| code.to_string());
        }
        self.push_error(code, format!("{name}: {message}"), id, peer_code);
    }

    /// A peer's own failure, with what the client knows of it.
    fn fail_peer(&mut self, peer: &PeerRecord, e: &PeerError, latency_ms: Option<u64>) {
        let id = peer.id.to_string();
        self.fail(
            &id,
            &peer.name,
            "failed",
            e.code,
            &e.message,
            latency_ms,
            e.refusal.as_deref(),
        );
        let retry_after_ms = e.retry_after.map(|d| d.as_millis() as u64);
        if let Some(entry) = self.instances.get_mut(&id) {
            entry.retry_after_ms = entry.retry_after_ms.or(retry_after_ms);
            entry.breaker = entry.breaker.or(e.breaker.map(|b| b.as_str()));
        }
        if let Some(error) = self.errors.iter_mut().find(|r| r.instance == id && r.code == e.code) {
            error.retry_after_ms = error.retry_after_ms.or(retry_after_ms);
        }
    }

    fn push_error(&mut self, code: &str, message: String, instance: &str, peer_code: Option<&str>) {
        if !self.errors.iter().any(|e| e.code == code && e.instance == instance) {
            self.errors.push(ReportedError {
                code: code.to_string(),
                message,
                instance: instance.to_string(),
                peer_code: peer_code.map(String::from),
                retry_after_ms: None,
            });
        }
    }

    /// Takes in what a peer reported about the instances behind it, which
    /// never include those `foreign` refuses (us, and instances we or
    /// upstream ask ourselves).
    fn absorb(&mut self, peer: &PeerRecord, errors: &Value, extensions: &Value, foreign: &dyn Fn(&str) -> bool) {
        if let Some(list) = extensions["federation"]["instances"].as_array() {
            for i in list {
                let (Some(id), Some(name)) = (i["id"].as_str(), i["name"].as_str()) else {
                    continue;
                };
                // The peer reports itself through us.
                if id == peer.id.to_string() || foreign(id) {
                    continue;
                }
                let status = STATUSES
                    .into_iter()
                    .find(|s| i["status"].as_str() == Some(*s))
                    .unwrap_or("succeeded");
                self.note(id, name, status, i["latencyMs"].as_u64());
            }
        }
        for e in errors.as_array().into_iter().flatten() {
            if let (Some(code), Some(instance)) =
                (e["extensions"]["code"].as_str(), e["extensions"]["instance"].as_str())
            {
                if foreign(instance) || instance == peer.id.to_string() {
                    continue;
                }
                let message = e["message"].as_str().unwrap_or("").to_string();
                self.push_error(code, message, instance, e["extensions"]["peerCode"].as_str());
            }
        }
    }

    /// After peers were asked to reach `names`: a name some instance
    /// answered for is known; one nobody reached is unknown, said once.
    fn settle(&mut self, names: &[String]) {
        for name in names {
            let reached = self
                .instances
                .values()
                .any(|o| o.name == *name && o.status != "skipped");
            self.errors
                .retain(|e| !(e.code == "UNKNOWN_INSTANCE" && e.instance == *name && reached));
            if !reached {
                self.fail(
                    name,
                    name,
                    "skipped",
                    "UNKNOWN_INSTANCE",
                    "no such instance among this instance's peers or behind them",
                    None,
                    None,
                );
            }
        }
    }

    /// `extensions.federation`, when the request fanned out.
    pub fn extension(&self) -> Option<Value> {
        if !self.fanned_out {
            return None;
        }
        let count = |s: &str| self.instances.values().filter(|o| o.status == s).count();
        let instances: Vec<Value> = self
            .instances
            .iter()
            .map(|(id, o)| {
                let mut entry = json!({ "id": id, "name": o.name, "status": o.status, "latencyMs": o.latency_ms });
                let optional = [
                    ("errorCode", o.error_code.as_deref().map(Value::from)),
                    ("retryAfterMs", o.retry_after_ms.map(Value::from)),
                    ("breaker", o.breaker.map(Value::from)),
                ];
                for (key, value) in optional {
                    if let Some(value) = value {
                        entry[key] = value;
                    }
                }
                entry
            })
            .collect();
        // Like Elasticsearch's `_clusters`: the counts add up to the total.
        Some(json!({
            "total": self.instances.len(),
            "succeeded": count("succeeded"),
            "partial": count("partial"),
            "skipped": count("skipped"),
            "failed": count("failed"),
            "instances": instances,
        }))
    }

    /// The error that fails the whole request when an instance listed in
    /// `federation.required_peers` (by name or id) failed or was skipped.
    pub fn required_failure(&self, required: &[String]) -> Option<ServerError> {
        let (id, o) = self.instances.iter().find(|(id, o)| {
            matches!(o.status, "failed" | "skipped") && required.iter().any(|r| r == *id || *r == o.name)
        })?;
        let code = o.error_code.as_deref().unwrap_or("UNKNOWN");
        let mut e = ServerError::new(
            format!(
                "{}: a required peer (federation.required_peers) {} ({code}); no data is returned without it",
                o.name, o.status
            ),
            None,
        );
        let ext = e.extensions.get_or_insert_with(Default::default);
        ext.set("code", "REQUIRED_PEER_FAILED");
        ext.set("instance", id.as_str());
        ext.set("peerCode", code);
        Some(e)
    }

    /// One error per failed or skipped instance, with `extensions { code,
    /// instance }` and, when the peer refused, its own code as `peerCode`.
    pub fn errors(&self) -> Vec<ServerError> {
        self.errors
            .iter()
            .map(|r| {
                let mut e = ServerError::new(r.message.clone(), None);
                let ext = e.extensions.get_or_insert_with(Default::default);
                ext.set("code", r.code.as_str());
                ext.set("instance", r.instance.as_str());
                if let Some(peer_code) = &r.peer_code {
                    ext.set("peerCode", peer_code.as_str());
                }
                if let Some(ms) = r.retry_after_ms {
                    ext.set("retryAfterMs", ms);
                }
                e
            })
            .collect()
    }
}

/// The instances a scoped list asks.
#[derive(Clone, Default)]
pub struct Plan {
    pub include_self: bool,
    pub peers: Vec<PeerRecord>,
    /// Peers are asked with `scope: {all: true}` and forward further.
    pub forward_all: bool,
    /// Named instances we do not peer with: every peer is asked to reach them.
    pub relay: Vec<String>,
    /// Peers asked only to reach `relay`, not for their own rows.
    pub via_only: Vec<Uuid>,
}

impl Plan {
    pub fn local() -> Self {
        Self {
            include_self: true,
            ..Self::default()
        }
    }

    /// The `scope` argument a peer is asked with.
    pub fn scope_for(&self, peer: &PeerRecord) -> Value {
        if self.forward_all {
            return json!({ "all": true });
        }
        if self.relay.is_empty() {
            return Value::Null;
        }
        let mut names = self.relay.clone();
        if !self.via_only.contains(&peer.id) {
            names.push(peer.id.to_string());
        }
        json!({ "instances": names })
    }

    pub fn fans_out(&self) -> bool {
        !self.peers.is_empty()
    }
}

pub async fn plan(rc: &RequestContext, scope: Option<&InstanceScope>) -> AppResult<Plan> {
    let Some(scope) = scope else { return Ok(Plan::local()) };
    let all = scope.all.unwrap_or(false);
    match (&scope.instances, all) {
        (Some(_), true) => Err(AppError::BadInput(
            "scope: give either all or instances, not both".into(),
        )),
        (None, false) => Ok(Plan::local()),
        // A peer whose grant keeps it here learns nothing of our peers.
        (None, true) if !rc.hop.may_forward => Ok(Plan::local()),
        (None, true) => {
            let me = rc.instance.id.as_str();
            let peers = askable_peers(rc).await?;
            let mut report = rc.report.lock().expect("report lock");
            report.note(me, &rc.instance.name, "succeeded", None);
            // A peer would refuse a request that arrives past the hop limit: do not send it.
            let arriving_with = rc.hop.arrived.visited.len() as u32 + 1;
            let peers: Vec<PeerRecord> = if arriving_with > rc.hop.arrived.hop_limit {
                for p in peers.iter() {
                    let why = format!(
                        "would arrive through {arriving_with} instances; the hop limit is {}",
                        rc.hop.arrived.hop_limit
                    );
                    report.fail(
                        &p.id.to_string(),
                        &p.name,
                        "skipped",
                        "HOP_LIMIT_EXCEEDED",
                        &why,
                        None,
                        None,
                    );
                }
                Vec::new()
            } else {
                peers
            };
            Ok(Plan {
                include_self: true,
                peers,
                forward_all: true,
                ..Plan::default()
            })
        }
        (Some(names), false) => {
            // A peer whose grant keeps it here may name only this instance.
            let known = if rc.hop.may_forward {
                rc.federation.all_peers().await?.to_vec()
            } else {
                Vec::new()
            };
            let mut plan = Plan::default();
            let mut report = rc.report.lock().expect("report lock");
            for name in names {
                if *name == rc.instance.name || *name == rc.instance.id {
                    plan.include_self = true;
                    report.note(&rc.instance.id, &rc.instance.name, "succeeded", None);
                    continue;
                }
                // An id names one peer whatever its state; a name only a peer
                // we may query, so nobody can squat a name by asking to connect.
                let by_id = known.iter().find(|p| p.id.to_string() == *name);
                let by_name: Vec<&PeerRecord> = known
                    .iter()
                    .filter(|p| p.outbound_state == PeerState::Active && p.name == *name)
                    .collect();
                let found = match (by_id, by_name.as_slice()) {
                    (Some(p), _) => Ok(p),
                    (None, [p]) => Ok(*p),
                    (None, []) => Err(("UNKNOWN_INSTANCE", "no such instance among this instance's peers")),
                    (None, _) => Err((
                        "AMBIGUOUS_INSTANCE",
                        "several peers have this name; use the instance id",
                    )),
                };
                match found {
                    Ok(p) if p.outbound_state == PeerState::Active => {
                        if !plan.peers.iter().any(|q| q.id == p.id) {
                            plan.peers.push(p.clone());
                        }
                    }
                    Ok(p) => report.fail(
                        &p.id.to_string(),
                        &p.name,
                        "skipped",
                        "PEER_FORBIDDEN",
                        &format!("peering is {}, not active", p.outbound_state),
                        None,
                        None,
                    ),
                    // Perhaps behind a peer: every peer is asked to reach it.
                    Err(("UNKNOWN_INSTANCE", _)) if !plan.relay.contains(name) => plan.relay.push(name.clone()),
                    Err((code, why)) => report.fail(name, name, "skipped", code, why, None, None),
                }
            }
            if !plan.relay.is_empty() {
                for p in known
                    .iter()
                    .filter(|p| p.outbound_state == PeerState::Active && !asked_elsewhere(rc, p))
                {
                    if !plan.peers.iter().any(|q| q.id == p.id) {
                        plan.peers.push(p.clone());
                        plan.via_only.push(p.id);
                    }
                }
                if plan.peers.is_empty() {
                    report.settle(&std::mem::take(&mut plan.relay));
                }
            }
            Ok(plan)
        }
    }
}

/// Whether `peer` is this instance, on the request's path, or asked by
/// someone upstream: never a peer to ask.
fn asked_elsewhere(rc: &RequestContext, peer: &PeerRecord) -> bool {
    let id = peer.id.to_string();
    id == rc.instance.id || rc.hop.arrived.visited.contains(&id) || rc.hop.arrived.exclude.contains(&id)
}

/// The peers we may query now that this request may ask.
async fn askable_peers(rc: &RequestContext) -> AppResult<Vec<PeerRecord>> {
    let peers = rc.federation.queryable_peers().await?;
    Ok(peers.into_iter().filter(|p| !asked_elsewhere(rc, p)).collect())
}

fn peer_code(code: &str) -> &'static str {
    match code {
        "FORBIDDEN" | "UNAUTHENTICATED" => "PEER_FORBIDDEN",
        "PEER_TIMEOUT" => "PEER_TIMEOUT",
        _ => "PEER_BAD_RESPONSE",
    }
}

/// A peer's usable answer.
struct PeerAnswer<D> {
    data: D,
    /// Instances behind the peer that it reached on this request.
    reached: std::collections::HashSet<String>,
}

/// What a peer's `data` is read into: all of it as JSON, or a list's page
/// of typed rows (`merged_list::PageData`), read straight from the bytes.
pub trait PeerData: DeserializeOwned {
    /// Removes every object that names an instance `may_speak_for`
    /// refuses (`federation::provenance`); returns how many went.
    fn prune(&mut self, may_speak_for: &dyn Fn(&str) -> bool) -> usize;
    /// Whether it holds data at all.
    fn usable(&self) -> bool {
        true
    }
}

impl PeerData for Value {
    fn prune(&mut self, may_speak_for: &dyn Fn(&str) -> bool) -> usize {
        crate::federation::provenance::prune(self, may_speak_for)
    }

    fn usable(&self) -> bool {
        self.is_object()
    }
}

/// A peer's GraphQL answer: `data` read as `D` (or why it could not be),
/// and what it reports of itself and the instances behind it.
struct Answer<D> {
    data: Result<Option<D>, String>,
    errors: Value,
    extensions: Value,
}

#[derive(Deserialize)]
struct AnswerWire<D> {
    data: Option<D>,
    #[serde(default)]
    errors: Value,
    #[serde(default)]
    extensions: Value,
}

impl<D: PeerData> AnswerBody for Answer<D> {
    /// Data that cannot be read as `D` costs the peer its data, not what it
    /// reports of the instances behind it.
    fn read(bytes: &[u8]) -> Result<Self, PeerError> {
        match serde_json::from_slice::<AnswerWire<D>>(bytes) {
            Ok(a) => Ok(Self {
                data: Ok(a.data),
                errors: a.errors,
                extensions: a.extensions,
            }),
            Err(e) => {
                let a = serde_json::from_slice::<AnswerWire<serde::de::IgnoredAny>>(bytes).map_err(|_| not_json())?;
                Ok(Self {
                    data: Err(format!("unusable answer: peer answer: {e}")),
                    errors: a.errors,
                    extensions: a.extensions,
                })
            }
        }
    }
}

/// Sends a GraphQL request to a peer and returns its `data`. Failures of
/// instances behind the peer go into the report; the peer's own failure is
/// the error.
async fn ask<D: PeerData>(
    rc: &RequestContext,
    peer: &PeerRecord,
    path: &str,
    query: &str,
    variables: Value,
    siblings: &[PeerRecord],
) -> Result<PeerAnswer<D>, PeerError> {
    let _slot = rc.subrequests.start().await?;
    let timeout = rc.hop.forwardable();
    if timeout.is_zero() {
        return Err(PeerError::new(
            "PEER_TIMEOUT",
            "the deadline passed before the peer was asked",
        ));
    }
    let body = SubRequest {
        query: query.to_string(),
        variables,
        envelope: rc.hop.next(&rc.instance.id, siblings.iter().map(|p| p.id.to_string())),
    };
    let answer: Answer<D> = rc
        .federation
        .send(peer.id, &peer.base_url, path, &body, timeout)
        .await?;
    // The peer speaks for itself and the instances it reached on this
    // request: never for us, our path upstream, or instances others ask.
    let me = rc.instance.id.as_str();
    let foreign = |id: &str| {
        id == me
            || body.envelope.visited.iter().any(|v| v == id)
            || body.envelope.exclude.iter().any(|v| v == id) && id != peer.id.to_string()
    };
    let mut data = answer.data;
    let mut report = rc.report.lock().expect("report lock");
    report.absorb(peer, &answer.errors, &answer.extensions, &foreign);
    let reached: std::collections::HashSet<&str> = answer.extensions["federation"]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["id"].as_str())
        .filter(|id| !foreign(id))
        .collect();
    let peer_id = peer.id.to_string();
    let may_speak_for = |id: &str| id == peer_id || reached.contains(id);
    let removed = match &mut data {
        Ok(Some(d)) => d.prune(&may_speak_for),
        _ => 0,
    };
    if removed > 0 {
        report.note(&peer_id, &peer.name, "partial", None);
        report.push_error(
            "PEER_BAD_RESPONSE",
            format!(
                "{}: {removed} objects claimed instances this peer does not speak for; dropped",
                peer.name
            ),
            &peer_id,
            None,
        );
    }
    drop(report);
    let own_error = answer
        .errors
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["extensions"]["instance"].is_null());
    if let Some(e) = own_error {
        return Err(PeerError {
            code: peer_code(e["extensions"]["code"].as_str().unwrap_or("")),
            message: e["message"]
                .as_str()
                .unwrap_or("the peer reported an error")
                .to_string(),
            refusal: e["extensions"]["code"].as_str().map(String::from),
            ..PeerError::default()
        });
    }
    match data {
        Ok(Some(d)) if d.usable() => Ok(PeerAnswer {
            data: d,
            reached: reached.into_iter().map(String::from).collect(),
        }),
        Ok(_) => Err(PeerError::new("PEER_BAD_RESPONSE", "the answer has no data")),
        Err(why) => Err(PeerError::new("PEER_BAD_RESPONSE", why)),
    }
}

/// Asks every planned peer at once; each result is paired with its peer.
/// Successes and failures are reported; failed peers yield `None`.
pub async fn ask_all<D: PeerData>(
    rc: &RequestContext,
    plan: &Plan,
    query: &str,
    variables: impl Fn(&PeerRecord) -> Value,
) -> Vec<(PeerRecord, Option<D>)> {
    ask_some(rc, plan, plan.peers.iter().map(|p| (p, variables(p))).collect(), query).await
}

/// Asks some of the planned peers at once, each with its variables; the
/// results come in the order asked. Every planned peer stays a sibling in
/// the envelope, so none of them is asked twice through another.
pub async fn ask_some<D: PeerData>(
    rc: &RequestContext,
    plan: &Plan,
    asks: Vec<(&PeerRecord, Value)>,
    query: &str,
) -> Vec<(PeerRecord, Option<D>)> {
    let asks = asks.into_iter().map(|(peer, vars)| async move {
        let started = Instant::now();
        let result = ask::<D>(rc, peer, protocol::QUERY_PATH, query, vars, &plan.peers)
            .await
            .map(|a| a.data);
        (peer, result, started.elapsed().as_millis() as u64)
    });
    let results = futures::future::join_all(asks).await;
    let mut report = rc.report.lock().expect("report lock");
    report.settle(&plan.relay);
    results
        .into_iter()
        .map(|(peer, result, ms)| {
            let id = peer.id.to_string();
            match result {
                Ok(data) => {
                    if !plan.via_only.contains(&peer.id) {
                        report.note(&id, &peer.name, "succeeded", Some(ms));
                    }
                    (peer.clone(), Some(data))
                }
                Err(e) => {
                    report.fail_peer(peer, &e, Some(ms));
                    (peer.clone(), None)
                }
            }
        })
        .collect()
}

/// Records a peer answer that could not be used.
pub fn bad_answer(rc: &RequestContext, peer: &PeerRecord, e: &AppError) {
    rc.report.lock().expect("report lock").fail(
        &peer.id.to_string(),
        &peer.name,
        "failed",
        "PEER_BAD_RESPONSE",
        &format!("unusable answer: {}", e.message()),
        None,
        None,
    );
}

/// The direct peer that owns `instance`, if we may query it; None when we
/// do not peer with it.
async fn owner(rc: &RequestContext, instance: Uuid) -> AppResult<Option<PeerRecord>> {
    if !rc.hop.may_forward {
        return Err(AppError::Forbidden(
            "this request came from a peer whose grant does not reach further instances".into(),
        ));
    }
    match rc.federation.peer(instance).await? {
        Some(p) if p.outbound_state == PeerState::Active => Ok(Some(p)),
        Some(p) if p.outbound_state != PeerState::None => Err(AppError::Peer {
            code: "PEER_FORBIDDEN",
            message: format!("peering with {} is {}, not active", p.name, p.outbound_state),
            instance: p.id.to_string(),
            peer_code: None,
            retry_after_ms: None,
        }),
        _ => Ok(None),
    }
}

fn peer_failure(peer: &PeerRecord, e: PeerError) -> AppError {
    AppError::Peer {
        code: if e.refusal.as_deref() == Some("GRANT_DENIED") {
            "PEER_FORBIDDEN"
        } else {
            e.code
        },
        message: format!("{}: {}", peer.name, e.message),
        instance: peer.id.to_string(),
        peer_code: e.refusal,
        retry_after_ms: e.retry_after.map(|d| d.as_millis() as u64),
    }
}

/// Sends one request to the instance that owns an object; QUERY or COMMAND.
/// An owner we do not peer with is reached through the peers that reach it
/// (reads only, within each hop's grant and hop limit): every active peer is
/// asked at once, and the answer of one that reached the owner is taken.
/// The same read is sent once per request.
pub async fn forward(
    rc: &RequestContext,
    instance: Uuid,
    command: bool,
    query: &str,
    variables: Value,
) -> AppResult<Value> {
    if command {
        return send_to_owner(rc, instance, true, query, variables).await;
    }
    rc.subrequests
        .read(instance, query, &variables)
        .get_or_init(|| send_to_owner(rc, instance, false, query, variables))
        .await
        .clone()
}

async fn send_to_owner(
    rc: &RequestContext,
    instance: Uuid,
    command: bool,
    query: &str,
    variables: Value,
) -> AppResult<Value> {
    if command && matches!(rc.caller, super::Caller::Peer(_)) {
        return Err(AppError::Forbidden(
            "writes are not forwarded on a peer's behalf".into(),
        ));
    }
    if let Some(peer) = owner(rc, instance).await? {
        let path = if command {
            protocol::COMMAND_PATH
        } else {
            protocol::QUERY_PATH
        };
        let answer = ask::<Value>(rc, &peer, path, query, variables, &[])
            .await
            .map_err(|e| peer_failure(&peer, e))?;
        // Relaying for a peer: tell it which instance answered, so it can
        // accept the owner's objects from us.
        if matches!(rc.caller, super::Caller::Peer(_)) {
            let mut report = rc.report.lock().expect("report lock");
            report.note(&peer.id.to_string(), &peer.name, "succeeded", None);
        }
        return Ok(answer.data);
    }
    let unreachable = || AppError::BadInput(format!("instance {instance} is not reachable from this instance"));
    if command {
        return Err(AppError::BadInput(format!(
            "instance {instance} is not a peer of this instance; writes go only to direct peers, never through one"
        )));
    }
    let target = instance.to_string();
    let via = askable_peers(rc).await?;
    if via.is_empty() || rc.hop.arrived.visited.len() as u32 + 2 > rc.hop.arrived.hop_limit {
        return Err(unreachable());
    }
    let asks = via
        .iter()
        .map(|peer| ask::<Value>(rc, peer, protocol::QUERY_PATH, query, variables.clone(), &via));
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .find(|a| a.reached.contains(&target))
        .map(|a| a.data)
        .ok_or_else(unreachable)
}

/// The plan for an object that lives on one other instance.
pub async fn owner_plan(rc: &RequestContext, instance: Uuid) -> AppResult<Plan> {
    let peer = owner(rc, instance)
        .await?
        .ok_or_else(|| AppError::BadInput(format!("instance {instance} is not a peer of this instance")))?;
    Ok(Plan {
        peers: vec![peer],
        ..Plan::default()
    })
}
