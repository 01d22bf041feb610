//! What peers send us: the identity document, CONNECT, QUERY, COMMAND,
//! EVENT and DISCONNECT. Every signed request goes through [`verify`] first
//! (the checks themselves are `federation::verify`).
//! Refusals before the signature verifies all look alike (the reason is only
//! logged); after it, each refusal has its own code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::{OperationType, Selection};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use uuid::Uuid;

use super::{AppState, error_response, execution_failed, too_many_requests};
use crate::db::{Admission, PeerScope, Scope};
use crate::federation::audit::{self, Entry, Outcome};
use crate::federation::protocol::{self, ConnectRequest, Disconnect, Envelope, Event, Hop, Refusal, SubRequest};
use crate::federation::registry::{self, KeyLookup, PeerRecord, PeerState};
use crate::federation::replay::Recorded;
use crate::federation::verify::{self, Refused, Verified, refuse};
use crate::federation::{Federation, document, grant, now_unix, signing};
use crate::graphql::{Caller, PeerCaller};
use crate::telemetry;
use tracing::Instrument;

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        tracing::info!(code = self.0.code(), reason = %self.1, "refused peer request");
        if self.0.before_verification() {
            return error_response(
                StatusCode::UNAUTHORIZED,
                protocol::UNAUTHENTICATED_PEER,
                protocol::NOT_ACCEPTED,
            );
        }
        if let Refusal::RateLimited(ms) = self.0 {
            return too_many_requests(self.0.code(), self.1, Duration::from_millis(ms));
        }
        let status = StatusCode::from_u16(self.0.status()).expect("valid status");
        error_response(status, self.0.code(), self.1)
    }
}

/// Which peers a request may come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The peer holds an active grant here (QUERY, COMMAND).
    ActiveGrant,
    /// The peering is live in either direction (EVENT, DISCONNECT): a peer
    /// that was never approved nor asked, or was rejected or revoked, may
    /// only send CONNECT.
    Live,
}

/// Checks signature, key, time window and nonce of a request from a registered peer.
pub async fn verify(
    fed: &Federation,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    need: Need,
    entry: &mut Entry,
) -> Result<PeerRecord, Refused> {
    let (peer, admission, now) = verify_here(fed, path, headers, body, need, entry).await?;
    admit(fed, &admission, now).await?;
    Ok(peer)
}

/// [`verify`] but for the nonce's shared record (and the rate limit's
/// token), which the caller sends: a QUERY or COMMAND with BEGIN. The nonce
/// is checked against this replica's memory, and recorded there.
async fn verify_here(
    fed: &Federation,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    need: Need,
    entry: &mut Entry,
) -> Result<(PeerRecord, Admission, i64), Refused> {
    let expect = verify::Expect {
        destination: fed.instance_id,
        path,
        clock_skew_s: fed.settings.clock_skew_s,
        request_lifetime_s: fed.settings.request_lifetime_s,
    };
    let header = headers.get(signing::HEADER).and_then(|v| v.to_str().ok());
    let Verified { peer, params, now } = verify::verify(fed, &expect, header, body, now_unix).await?;
    (entry.peer_id, entry.verified) = (Some(peer.id), true);
    // Only a verified sender learns the state of its peering; a message its
    // state does not allow never reaches the replay cache.
    let allowed = match need {
        Need::ActiveGrant => peer.inbound_state == PeerState::Active,
        Need::Live => peer.is_live(),
    };
    if !allowed {
        return Err(refuse(
            Refusal::PeerNotActive,
            format!(
                "peering is inbound {}, outbound {}",
                peer.inbound_state, peer.outbound_state
            ),
        ));
    }
    // Only the verbs that cost (QUERY, COMMAND) spend from the peer's bucket.
    let limit = (need == Need::ActiveGrant).then(|| fed.rate_limit(&peer)).flatten();
    let admission = remember_nonce(fed, &params, now, limit)?;
    Ok((peer, admission, now))
}

/// A CONNECT is verified with the key of the identity it presents, and
/// only that one.
struct Presented<'a>(&'a document::IdentityDocument);

impl<'a> verify::PeerKeys for Presented<'a> {
    type Peer = &'a document::IdentityDocument;

    async fn find(&self, origin: Uuid, key_id: &str) -> Result<Option<Self::Peer>, Refused> {
        if origin.to_string() != self.0.instance_id || key_id != self.0.current_key.key_id {
            return Err(refuse(
                Refusal::UnknownKey,
                "CONNECT must be signed by the identity it presents",
            ));
        }
        Ok(Some(self.0))
    }

    fn key<'p>(doc: &'p Self::Peer, _key_id: &str, _now: i64) -> KeyLookup<'p> {
        KeyLookup::Valid(&doc.current_key)
    }
}

/// Records the nonce (with the same clock reading as the time window) in
/// this replica's memory, so only verified requests of allowed peers fill
/// the bounded replay cache; returns what is still to record where every
/// replica sees it.
fn remember_nonce(
    fed: &Federation,
    params: &signing::SignatureParams,
    now: i64,
    limit: Option<grant::RateLimit>,
) -> Result<Admission, Refused> {
    let keep_until = params.expires + fed.settings.clock_skew_s;
    admitted(
        fed.replay
            .check_and_record(&params.origin, &params.nonce, keep_until, now, fed.nonce_room(limit)),
    )?;
    let origin =
        Uuid::parse_str(&params.origin).map_err(|_| refuse(Refusal::BadRequest, "origin is not an instance id"))?;
    Ok(Admission {
        origin,
        nonce: params.nonce.clone(),
        keep_until,
        limit: limit.map(|l| (l.per_second, f64::from(l.burst))),
    })
}

/// Records the nonce where every replica sees it, in a round trip of its own.
async fn admit(fed: &Federation, admission: &Admission, now: i64) -> Result<(), Refused> {
    let recorded = fed
        .replay
        .record_shared(&fed.pool, admission, now)
        .await
        .map_err(recording_failed("nonce"))?;
    admitted(recorded)
}

/// A refused admission as it came back from BEGIN's round trip; any other
/// failure to begin is the database's.
fn admission_refused(e: sqlx::Error) -> Refused {
    match Recorded::refused(&e) {
        Some(recorded) => match admitted(recorded) {
            Err(refused) => refused,
            Ok(()) => refuse(Refusal::Unavailable, "the admission was refused"),
        },
        None => recording_failed("nonce")(e),
    }
}

/// What a nonce's record means for its request.
fn admitted(recorded: Recorded) -> Result<(), Refused> {
    match recorded {
        Recorded::New => Ok(()),
        Recorded::Replayed => Err(refuse(Refusal::ReplayedNonce, "this request was already received")),
        Recorded::Expired => Err(refuse(Refusal::OutsideTimeWindow, "expired")),
        Recorded::Limited(wait) => Err(refuse(
            Refusal::RateLimited(wait.as_millis() as u64),
            "over the rate limit of your grant; retry after the time given",
        )),
        Recorded::Full => Err(refuse(
            Refusal::Unavailable,
            "too many requests from this instance within one request lifetime; retry later",
        )),
    }
}

/// Maps a failure to record a peer's message to a refusal (logged, not shown).
fn recording_failed(message: &'static str) -> impl Fn(sqlx::Error) -> Refused + Copy {
    move |e| {
        tracing::error!(error = %e, message, "recording a peer message failed");
        refuse(Refusal::Unavailable, format!("cannot record the {message} right now"))
    }
}

pub async fn well_known(State(state): State<AppState>) -> Response {
    match state.federation.identity().await {
        Ok(doc) => Json(doc).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the identity document");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "identity unavailable",
            )
        }
    }
}

/// CONNECT: self-certifying (the key is in the signed document), confirmed by
/// fetching the requester's document from the base URL it claims. Limited
/// per source address, and in how many peers may wait for approval.
pub async fn connect(
    State(state): State<AppState>,
    source: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut entry = Entry::begin("CONNECT");
    let answer = connect_request(&state, source, &headers, body, &mut entry).await;
    finish(&state, entry, protocol::CONNECT_PATH, &headers, answer)
}

async fn connect_request(
    state: &AppState,
    source: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
    body: Bytes,
    entry: &mut Entry,
) -> Result<Response, Refused> {
    let fed = &state.federation;
    if let Some(Extension(ConnectInfo(source))) = source
        && !fed
            .connect_allowed(source.ip())
            .await
            .map_err(recording_failed("CONNECT"))?
    {
        return Err(refuse(
            Refusal::TooManyRequests,
            "too many CONNECT requests from this address; try again in a minute",
        ));
    }
    let request: ConnectRequest = serde_json::from_slice(&body)
        .map_err(|e| refuse(Refusal::MalformedSignature, format!("malformed CONNECT: {e}")))?;
    let doc = &request.identity.document;
    document::verify_document(&request.identity).map_err(|e| refuse(Refusal::BadSignature, e))?;
    let expect = verify::Expect {
        destination: fed.instance_id,
        path: protocol::CONNECT_PATH,
        clock_skew_s: fed.settings.clock_skew_s,
        request_lifetime_s: fed.settings.request_lifetime_s,
    };
    let header = headers.get(signing::HEADER).and_then(|v| v.to_str().ok());
    let Verified { params, now, .. } = verify::verify(&Presented(doc), &expect, header, &body, now_unix).await?;
    entry.verified = true;
    let admission = remember_nonce(fed, &params, now, None)?;
    admit(fed, &admission, now).await?;
    document::check_bounds(doc).map_err(|e| refuse(Refusal::BadRequest, e))?;
    let origin: Uuid = doc
        .instance_id
        .parse()
        .map_err(|_| refuse(Refusal::BadRequest, "instance_id is not a UUID"))?;
    if origin == fed.instance_id {
        return Err(refuse(Refusal::BadRequest, "an instance cannot peer with itself"));
    }
    let unavailable = |e: sqlx::Error| {
        tracing::error!(error = %e, "peer lookup failed");
        refuse(Refusal::Unavailable, "cannot check the peer right now")
    };
    let known = registry::get(&fed.pool, origin).await.map_err(unavailable)?;
    // An instance id we already know keeps its identity: the CONNECT must be
    // signed by the key we hold as its current one, or its registered base
    // URL must serve the presented identity (a legitimate rotation). A
    // retired key, even within its grace, cannot take the peering over.
    if let Some(known) = &known {
        let current = known
            .current_key()
            .is_some_and(|k| k.key_id == doc.current_key.key_id && k.public_key == doc.current_key.public_key);
        let confirmed_at_registered_url = !current
            && fed
                .fetch_identity(&known.base_url)
                .await
                .is_ok_and(|d| d.instance_id == doc.instance_id && d.current_key == doc.current_key);
        if !current && !confirmed_at_registered_url {
            return Err(refuse(
                Refusal::UnknownKey,
                "this instance is registered with another current key",
            ));
        }
    }
    let waiting = known.as_ref().is_some_and(|k| k.inbound_state.live());
    if !waiting && registry::pending_count(&fed.pool).await.map_err(unavailable)? >= fed.settings.max_pending_peers {
        return Err(refuse(
            Refusal::Unavailable,
            "too many peering requests are waiting for approval; try again later",
        ));
    }
    let url = fed
        .check_url(&doc.base_url)
        .map_err(|e| refuse(Refusal::BadRequest, e.to_string()))?;
    // One answer for every way the fetch can fail, so CONNECT cannot be used
    // to tell closed ports from open ones; the detail goes to the log.
    let confirmed = fed.fetch_identity(&url).await.map_err(|e| {
        tracing::info!(url = %url, code = e.code, error = %e.message, "CONNECT: identity not confirmed");
        refuse(
            Refusal::BadRequest,
            "cannot confirm your identity at the base URL your document names",
        )
    })?;
    if confirmed.instance_id != doc.instance_id || confirmed.current_key != doc.current_key {
        return Err(refuse(
            Refusal::BadRequest,
            "cannot confirm your identity at the base URL your document names",
        ));
    }
    let db_error = recording_failed("CONNECT");
    let mut tx = fed.change_registry().await.map_err(db_error)?;
    registry::record_identity(&mut tx, doc, registry::Vouched::ByPeer)
        .await
        .map_err(db_error)?;
    let state_now = registry::inbound_state(&mut tx, origin).await.map_err(db_error)?;
    let state_after = if state_now.approved() {
        state_now
    } else {
        PeerState::Pending
    };
    registry::set_inbound(&mut tx, origin, state_after)
        .await
        .map_err(db_error)?;
    registry::audit(
        &mut tx,
        origin,
        &format!("peer:{}", doc.name),
        "connect_received",
        json!({ "url": url, "was": state_now.as_str() }),
    )
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(Json(json!({ "state": state_after.as_str() })).into_response())
}

pub async fn query(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let mut entry = Entry::begin("QUERY");
    let answer = sub_request(&state, &headers, body, false, &mut entry).await;
    finish(&state, entry, protocol::QUERY_PATH, &headers, answer)
}

pub async fn command(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let mut entry = Entry::begin("COMMAND");
    let answer = sub_request(&state, &headers, body, true, &mut entry).await;
    finish(&state, entry, protocol::COMMAND_PATH, &headers, answer)
}

/// Records a peer's request in the request audit (federation/audit.rs) and
/// answers it. A refusal is recorded with its precise code, even one that
/// answers alike from outside; an unverified request with the origin it
/// claims. An answer without data (nothing ran) or a 5xx is a failure.
fn finish(
    state: &AppState,
    mut entry: Entry,
    path: &str,
    headers: &HeaderMap,
    answer: Result<Response, Refused>,
) -> Response {
    if entry.peer_id.is_none() {
        entry.peer_id = headers
            .get(signing::HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| signing::parse_header(h, "POST", path).ok())
            .and_then(|(params, _)| params.origin.parse().ok());
    }
    let response = match answer {
        Ok(response) => {
            if response.status().is_server_error() {
                entry.set(Outcome::Failed, "INTERNAL_SERVER_ERROR");
            }
            response
        }
        Err(refused) => {
            entry.set(Outcome::Refused, refused.0.code());
            refused.into_response()
        }
    };
    state.audit.record(entry.finish());
    response
}

/// QUERY and COMMAND: run the GraphQL request under the peer's grant.
async fn sub_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Bytes,
    command: bool,
    entry: &mut Entry,
) -> Result<Response, Refused> {
    let fed = state.federation.clone();
    let path = if command {
        protocol::COMMAND_PATH
    } else {
        protocol::QUERY_PATH
    };
    let (peer, admission, now) = verify_here(&fed, path, headers, &body, Need::ActiveGrant, entry).await?;
    let mut request: SubRequest =
        serde_json::from_slice(&body).map_err(|e| refuse(Refusal::BadRequest, format!("malformed request: {e}")))?;
    protocol::check_envelope(&request.envelope, &fed.instance_id.to_string(), fed.settings.hop_limit).map_err(|r| {
        let why = match r {
            Refusal::CycleDetected => "this instance is already on the request's path".to_string(),
            _ => format!(
                "the request has passed {} instances; the limit is {}",
                request.envelope.visited.len(),
                request.envelope.hop_limit.min(fed.settings.hop_limit)
            ),
        };
        refuse(r, why)
    })?;
    if request.envelope.visited.last() != Some(&peer.id.to_string()) {
        return Err(refuse(
            Refusal::BadRequest,
            "envelope.visited must end with the sending instance",
        ));
    }
    entry.query_hash = Some(audit::query_hash(&request.query));
    let mut gql =
        async_graphql::Request::new(request.query).variables(async_graphql::Variables::from_json(request.variables));
    // Parsed once, through the executor's cache of documents.
    state.executor.documents.prepare(&mut gql);
    let mut mutation = false;
    if let Ok(doc) = gql.parsed_query() {
        for (_, op) in doc.operations.iter() {
            mutation |= op.node.ty == OperationType::Mutation;
            for item in &op.node.selection_set.node.items {
                if let Selection::Field(field) = &item.node
                    && !entry.resources.iter().any(|r| *r == field.node.name.node.as_str())
                {
                    entry.resources.push(field.node.name.node.to_string());
                }
            }
        }
    }
    if mutation && !command {
        return Err(refuse(Refusal::BadRequest, "mutations travel as COMMAND"));
    }
    let terms = peer.terms();
    let writable = if command { terms.writable() } else { Vec::new() };
    if command && writable.is_empty() {
        return Err(refuse(Refusal::GrantDenied, "the grant is read-only"));
    }
    let actor = protocol::check_actor(&request.envelope).map_err(|m| refuse(Refusal::BadRequest, m))?;
    let vouched = actor.as_ref().and_then(|a| a.vouched());
    if !grant::covers(terms.users.as_deref(), vouched) {
        return Err(refuse(Refusal::GrantDenied, "the grant does not cover this user"));
    }
    // A mapped person acts as a local user, within the grant (the policies
    // intersect); anyone else is the grant's guest, unless it refuses them.
    let mapped = terms.mapped_user(vouched);
    if mapped.is_none() && terms.unmapped == grant::Unmapped::Refuse {
        return Err(refuse(
            Refusal::GrantDenied,
            "the grant maps no local user to this person and refuses unmapped people",
        ));
    }
    let names = |rs: Vec<grant::Resource>| rs.into_iter().map(grant::Resource::as_str).collect();
    let scope = Scope {
        user_id: mapped,
        read_workspaces: peer.grant_workspaces.clone(),
        write_workspaces: if command {
            peer.grant_workspaces.clone()
        } else {
            Vec::new()
        },
        peer: Some(PeerScope {
            peer_id: peer.id,
            resources: names(terms.readable()),
            write_resources: names(writable),
            remote_actor: actor.as_ref().and_then(|a| a.user_ids()),
        }),
    };
    let actor = actor.map(|a| match a {
        protocol::ActorClaim::Vouched(a) | protocol::ActorClaim::Relayed(a) => a,
    });
    entry.remote_user = actor.as_ref().map(|a| a.user.clone());
    // The server span of the sender's trace (its call's span is the parent).
    let span = tracing::info_span!(
        telemetry::PEER_REQUEST,
        otel.kind = "server",
        otel.name = if command { "COMMAND" } else { "QUERY" },
        peer = %peer.name,
        trace_id = tracing::field::Empty,
    );
    telemetry::continue_trace(&span, request.envelope.traceparent.take().as_deref());
    let envelope = Envelope {
        hop_limit: request.envelope.hop_limit.min(fed.settings.hop_limit),
        deadline_ms: request
            .envelope
            .deadline_ms
            .min(fed.settings.deadline.as_millis() as u64),
        actor: actor.clone(),
        ..request.envelope
    };
    // The nonce's shared record (and the rate limit's token), BEGIN and the
    // scope in one round trip: a refused admission ends it before BEGIN.
    // The document is checked meanwhile; nothing runs, nor is forwarded,
    // before both are done. (A handler cancelled while it waits leaves
    // nothing begun: sqlx rolls back a BEGIN it did not see answered.)
    let db = Arc::new(state.executor.request_db(scope, !mutation).admitting(admission));
    let (begun, checked) = tokio::join!(db.begin(), state.executor.schemas.check(gql));
    begun.map_err(admission_refused)?;
    fed.replay
        .prune_now_and_then(&fed.pool, now)
        .await
        .map_err(recording_failed("nonce"))?;
    // Only reads, and only when the grant says so, go on to our peers.
    let hop = Hop::arrived(envelope, peer.grant_forward && !command);
    let caller = Caller::Peer(PeerCaller {
        instance_id: peer.id,
        name: peer.name.clone(),
        actor,
        max_rows: terms.max_rows_per_query.map(|n| n as usize),
    });
    Ok(
        match state
            .executor
            .execute_in(db, caller, hop, checked)
            .instrument(span)
            .await
        {
            Ok(response) => {
                entry.rows = audit::rows_in(&response.data);
                // Answered, but nothing of it ran (an invalid document, every field failed).
                if let (async_graphql::Value::Null, Some(first)) = (&response.data, response.errors.first()) {
                    let code = first.extensions.as_ref().and_then(|e| e.get("code"));
                    match code {
                        Some(async_graphql::Value::String(code)) => entry.set(Outcome::Failed, code),
                        _ => entry.set(Outcome::Failed, "GRAPHQL_ERROR"),
                    }
                }
                let body = serde_json::to_vec(&response).expect("a GraphQL response serialises");
                entry.bytes = body.len() as i64;
                ([(CONTENT_TYPE, "application/json")], body).into_response()
            }
            Err(e) => execution_failed(e),
        },
    )
}

/// EVENT: the peer tells us what it decided about our CONNECT.
pub async fn event(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let mut entry = Entry::begin("EVENT");
    let answer = event_request(&state, &headers, body, &mut entry).await;
    finish(&state, entry, protocol::EVENT_PATH, &headers, answer)
}

async fn event_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Bytes,
    entry: &mut Entry,
) -> Result<Response, Refused> {
    let fed: Arc<Federation> = state.federation.clone();
    let peer = verify(&fed, protocol::EVENT_PATH, headers, &body, Need::Live, entry).await?;
    let event: Event =
        serde_json::from_slice(&body).map_err(|e| refuse(Refusal::BadRequest, format!("malformed EVENT: {e}")))?;
    // A peer decides only about a request we made: events change our outbound
    // state only while we asked (requested) or were granted (active, suspended);
    // never from none, rejected or revoked, so nobody can make us query them.
    if matches!(event, Event::KeysRotated) {
        // Verifying the request already re-read the peer's keys.
        return Ok(Json(json!({ "ok": true })).into_response());
    }
    if let Event::Domain { events, through } = event {
        return domain_events(&fed, &peer, events, through, entry).await;
    }
    if !peer.outbound_state.live() {
        return Err(refuse(
            Refusal::BadRequest,
            format!(
                "we have no request with you to decide on (state {})",
                peer.outbound_state
            ),
        ));
    }
    let (outbound, action) = match &event {
        Event::Granted { .. } => (PeerState::Active, "granted_by_peer"),
        Event::Rejected => (PeerState::Rejected, "rejected_by_peer"),
        Event::Suspended => (PeerState::Suspended, "suspended_by_peer"),
        Event::KeysRotated | Event::Domain { .. } => unreachable!("answered above"),
    };
    let db_error = recording_failed("EVENT");
    let mut tx = fed.change_registry().await.map_err(db_error)?;
    registry::set_outbound(&mut tx, peer.id, outbound)
        .await
        .map_err(db_error)?;
    registry::audit(
        &mut tx,
        peer.id,
        &format!("peer:{}", peer.name),
        action,
        serde_json::to_value(&event).unwrap_or_default(),
    )
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    if outbound == PeerState::Active {
        // Granted: subscribe to its events now, off this request.
        fed.subscribe_now.notify_one();
    }
    Ok(Json(json!({ "ok": true })).into_response())
}

/// Domain events from a peer we subscribed to: checked (bounded, ordered,
/// known types; events claiming another instance left out), recorded with
/// the peer's cursor in one transaction, acknowledged with the last id
/// processed. A batch received again changes nothing.
async fn domain_events(
    fed: &Federation,
    peer: &PeerRecord,
    events: Vec<protocol::DomainEvent>,
    through: i64,
    entry: &mut Entry,
) -> Result<Response, Refused> {
    if peer.outbound_state != PeerState::Active {
        return Err(refuse(
            Refusal::PeerNotActive,
            format!("we do not take events from you (outbound {})", peer.outbound_state),
        ));
    }
    let (events, dropped) =
        protocol::check_batch(events, through, peer.id).map_err(|e| refuse(Refusal::BadRequest, e))?;
    if dropped > 0 {
        tracing::warn!(peer = %peer.name, dropped, "events claiming another instance were dropped");
    }
    entry.rows = events.len() as i64;
    let processed = fed
        .record_received(peer, &events, through)
        .await
        .map_err(recording_failed("EVENT"))?;
    Ok(Json(json!({ "processed": processed, "dropped": dropped })).into_response())
}

/// SUBSCRIBE: a peer we granted asks for our domain events (`federation::outbox`
/// delivers them). Only a grant for the whole peer instance carries events;
/// the types kept are those of resources the grant lets it read. Idempotent:
/// a subscription that exists keeps its cursor, and is tried again at once
/// (the master that subscribes is up).
pub async fn subscribe(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let mut entry = Entry::begin("SUBSCRIBE");
    let answer = subscribe_request(&state, &headers, body, &mut entry).await;
    finish(&state, entry, protocol::SUBSCRIBE_PATH, &headers, answer)
}

async fn subscribe_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Bytes,
    entry: &mut Entry,
) -> Result<Response, Refused> {
    let fed = state.federation.clone();
    let peer = verify(&fed, protocol::SUBSCRIBE_PATH, headers, &body, Need::ActiveGrant, entry).await?;
    let request: protocol::Subscribe =
        serde_json::from_slice(&body).map_err(|e| refuse(Refusal::BadRequest, format!("malformed SUBSCRIBE: {e}")))?;
    let known: Vec<String> = protocol::event_types().collect();
    if request.types.len() > known.len() || request.types.iter().any(|t| !known.contains(t)) {
        return Err(refuse(
            Refusal::BadRequest,
            format!("types must be among {}", known.join(", ")),
        ));
    }
    if !crate::federation::outbox::grant_allows_events(&peer) {
        return Err(refuse(
            Refusal::GrantDenied,
            "events go to a whole instance: a grant limited to some people carries none",
        ));
    }
    let readable: Vec<&str> = peer
        .terms()
        .readable()
        .into_iter()
        .map(grant::Resource::as_str)
        .collect();
    let mut types: Vec<String> = request
        .types
        .into_iter()
        .filter(|t| protocol::event_resource(t).is_some_and(|r| readable.contains(&r)))
        .collect();
    types.sort();
    types.dedup();
    entry.resources = types.clone();
    sqlx::query(
        "INSERT INTO event_subscriptions (peer_id, types, acked_id) \
         SELECT $1, $2, last_id FROM event_outbox_sequencer \
         ON CONFLICT (peer_id) DO UPDATE SET types = EXCLUDED.types, failures = 0",
    )
    .bind(peer.id)
    .bind(&types)
    .execute(&fed.pool)
    .await
    .map_err(recording_failed("SUBSCRIBE"))?;
    fed.outbox_written.notify_one();
    Ok(Json(json!({ "types": types })).into_response())
}

/// DISCONNECT: the peer ends the peering; both directions are revoked at once.
pub async fn disconnect(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let mut entry = Entry::begin("DISCONNECT");
    let answer = disconnect_request(&state, &headers, body, &mut entry).await;
    finish(&state, entry, protocol::DISCONNECT_PATH, &headers, answer)
}

async fn disconnect_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Bytes,
    entry: &mut Entry,
) -> Result<Response, Refused> {
    let fed = state.federation.clone();
    let peer = verify(&fed, protocol::DISCONNECT_PATH, headers, &body, Need::Live, entry).await?;
    let notice: Disconnect = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(reason) = &notice.reason
        && (reason.chars().count() > protocol::MAX_REASON_CHARS || reason.chars().any(char::is_control))
    {
        return Err(refuse(
            Refusal::BadRequest,
            format!(
                "reason must be at most {} characters without control characters",
                protocol::MAX_REASON_CHARS
            ),
        ));
    }
    let db_error = recording_failed("DISCONNECT");
    let mut tx = fed.change_registry().await.map_err(db_error)?;
    registry::revoke_both(&mut tx, peer.id).await.map_err(db_error)?;
    registry::audit(
        &mut tx,
        peer.id,
        &format!("peer:{}", peer.name),
        "disconnected_by_peer",
        json!({ "reason": notice.reason }),
    )
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(Json(json!({ "ok": true })).into_response())
}
