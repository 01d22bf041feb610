//! Wire types of the peer protocol (pure data; see `peers/PROTOCOL.md`).

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::document::SignedDocument;

pub const CONNECT_PATH: &str = "/federation/connect";
pub const QUERY_PATH: &str = "/federation/query";
pub const COMMAND_PATH: &str = "/federation/command";
pub const EVENT_PATH: &str = "/federation/event";
pub const DISCONNECT_PATH: &str = "/federation/disconnect";
pub const SUBSCRIBE_PATH: &str = "/federation/subscribe";
pub const WELL_KNOWN_PATH: &str = "/.well-known/mosaic";

/// Routing facts every QUERY and COMMAND carries (covered by the signature,
/// since it is part of the body).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Instances the request has passed through, the origin of this hop last.
    pub visited: Vec<String>,
    /// Instances someone upstream already asks; never forward to these.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The most instances `visited` may hold on arrival.
    pub hop_limit: u32,
    /// Milliseconds the sender will wait for the answer.
    pub deadline_ms: u64,
    /// Who the request acts for, when a person started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// W3C `traceparent` of the sender's call (`traceparent.rs`): the
    /// receiver's span continues that trace; a malformed one is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The routing state of the request being served: one shape with the
/// envelope, which it holds as the request arrived (its actor checked), or,
/// for a request that starts here, as this instance begins it.
#[derive(Clone, Debug)]
pub struct Hop {
    pub arrived: Envelope,
    /// `arrived.deadline_ms` on this instance's clock.
    pub deadline: Instant,
    /// Whether this request may go on to our peers: always for our own
    /// users; for a peer's request only reads its grant lets through.
    pub may_forward: bool,
}

impl Hop {
    /// A request that starts here.
    pub fn origin(hop_limit: u32, deadline: Duration, actor: Option<Actor>) -> Self {
        Self::arrived(
            Envelope {
                hop_limit,
                deadline_ms: deadline.as_millis() as u64,
                actor,
                ..Envelope::default()
            },
            true,
        )
    }

    /// A request that arrived with `envelope` (its hop limit and deadline
    /// already bounded by ours, its actor already checked).
    pub fn arrived(envelope: Envelope, may_forward: bool) -> Self {
        Self {
            deadline: Instant::now() + Duration::from_millis(envelope.deadline_ms),
            arrived: envelope,
            may_forward,
        }
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The envelope for the next hop: this instance appended to `visited`,
    /// the siblings asked beside it to `exclude`, and what is left of the
    /// deadline minus a margin for our own work.
    pub fn next(&self, this_instance: &str, siblings: impl Iterator<Item = String>) -> Envelope {
        let mut visited = self.arrived.visited.clone();
        visited.push(this_instance.to_string());
        let mut exclude = self.arrived.exclude.clone();
        exclude.extend(siblings);
        Envelope {
            visited,
            exclude,
            hop_limit: self.arrived.hop_limit,
            deadline_ms: self.forwardable().as_millis() as u64,
            actor: self.arrived.actor.clone(),
            // Set by the client for each call, from that call's span.
            traceparent: None,
        }
    }

    /// What is left for the next hop: the remainder minus a fifth of it, at
    /// most 250 ms, as room to merge and answer even on a busy machine.
    pub fn forwardable(&self) -> Duration {
        let left = self.remaining();
        left.saturating_sub((left / 5).min(Duration::from_millis(250)))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// Instance-qualified user id (a global User ID).
    pub user: String,
    /// Present only when the sending instance holds it as verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// QUERY and COMMAND body: a GraphQL request plus its envelope.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SubRequest {
    pub query: String,
    #[serde(default)]
    pub variables: Value,
    pub envelope: Envelope,
}

/// CONNECT body: the requester's signed identity document.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ConnectRequest {
    pub identity: SignedDocument,
}

/// EVENT body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The sender approved our CONNECT: we may now query it.
    Granted { read_write: bool, workspaces: Vec<String> },
    /// The sender rejected our CONNECT.
    Rejected,
    /// The sender suspended our access.
    Suspended,
    /// The sender rotated its key (this event is signed with the new one, so
    /// verifying it makes the receiver re-read the sender's identity document).
    KeysRotated,
    /// Domain events of the sender's outbox that the receiver subscribed to,
    /// in id order; the batch covers every id up to `through` (those not in
    /// it are outside the receiver's scope). The answer is [`EventAck`].
    Domain { events: Vec<DomainEvent>, through: i64 },
}

/// One change on the sending instance (`task.created`, ...): ids only, the
/// receiver reads the object itself if it wants more.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DomainEvent {
    /// The id in the sender's outbox: positive, increasing within a batch.
    pub id: i64,
    /// The instance the change happened on: the sender (others are dropped).
    pub instance: uuid::Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub workspace: uuid::Uuid,
    pub object: uuid::Uuid,
    /// Columns an update changed (empty for creation and deletion).
    #[serde(default)]
    pub changed: Vec<String>,
    /// When it was written, RFC 3339.
    pub at: String,
}

/// The answer to a domain EVENT: the last id the receiver has processed
/// (the sender moves its cursor to it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EventAck {
    pub processed: i64,
}

/// SUBSCRIBE body: the domain event types the sender wants (all the grant
/// allows of them are delivered). Answered with the types subscribed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscribe {
    pub types: Vec<String>,
}

/// The kinds of object that have events, with the grant resource each
/// belongs to.
pub const EVENT_KINDS: [(&str, &str); 5] = [
    ("task", "tasks"),
    ("project", "projects"),
    ("event", "events"),
    ("knowledge_entry", "knowledge"),
    ("agent_task", "agent_tasks"),
];
pub const EVENT_ACTIONS: [&str; 3] = ["created", "updated", "deleted"];

/// The most events one EVENT batch may carry.
pub const MAX_EVENT_BATCH: usize = 200;
/// The most names in an event's `changed`, and their longest.
const MAX_CHANGED: usize = 64;
const MAX_NAME_CHARS: usize = 64;

/// Every event type, `task.created` first.
pub fn event_types() -> impl Iterator<Item = String> {
    EVENT_KINDS
        .iter()
        .flat_map(|(kind, _)| EVENT_ACTIONS.iter().map(move |a| format!("{kind}.{a}")))
}

/// The grant resource of an event type; None for an unknown type.
pub fn event_resource(event_type: &str) -> Option<&'static str> {
    let (kind, action) = event_type.split_once('.')?;
    EVENT_ACTIONS.contains(&action).then_some(())?;
    EVENT_KINDS.iter().find(|(k, _)| *k == kind).map(|(_, r)| *r)
}

/// Checks a domain batch from `sender` (pure): bounded, ids positive and
/// increasing up to `through`, known types, bounded names. Events claiming
/// another instance are not the sender's to tell: they are left out, and
/// counted in the second value.
pub fn check_batch(
    events: Vec<DomainEvent>,
    through: i64,
    sender: uuid::Uuid,
) -> Result<(Vec<DomainEvent>, usize), String> {
    if events.len() > MAX_EVENT_BATCH {
        return Err(format!(
            "a batch holds at most {MAX_EVENT_BATCH} events, not {}",
            events.len()
        ));
    }
    let mut previous = 0;
    for e in &events {
        if e.id <= previous || e.id > through {
            return Err(format!(
                "event ids must be positive, increasing and at most through ({through}); {} is not",
                e.id
            ));
        }
        previous = e.id;
        if event_resource(&e.kind).is_none() {
            return Err(format!(
                "unknown event type {:?}",
                e.kind.chars().take(64).collect::<String>()
            ));
        }
        if e.changed.len() > MAX_CHANGED
            || e.changed.iter().any(|n| {
                n.is_empty()
                    || n.chars().count() > MAX_NAME_CHARS
                    || !n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
        {
            return Err(format!(
                "changed holds at most {MAX_CHANGED} column names of lower-case letters and _"
            ));
        }
        if time::OffsetDateTime::parse(&e.at, &time::format_description::well_known::Rfc3339).is_err() {
            return Err(format!("event {}: at is not an RFC 3339 time", e.id));
        }
    }
    let before = events.len();
    let kept: Vec<DomainEvent> = events.into_iter().filter(|e| e.instance == sender).collect();
    let dropped = before - kept.len();
    Ok((kept, dropped))
}

/// Longest DISCONNECT reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// DISCONNECT body.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Disconnect {
    #[serde(default)]
    pub reason: Option<String>,
}

/// Why a receiver refused a signed request; each has its own code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    MalformedSignature,
    WrongDestination,
    UnknownPeer,
    PeerNotActive,
    UnknownKey,
    KeyExpired,
    BadSignature,
    DigestMismatch,
    OutsideTimeWindow,
    ReplayedNonce,
    HopLimitExceeded,
    CycleDetected,
    GrantDenied,
    BadRequest,
    /// The receiver cannot check or record the request right now.
    Unavailable,
    /// The sender asks too often (CONNECT per source address).
    TooManyRequests,
    /// The peer is over its grant's rate limit; a token is free in this many
    /// milliseconds (sent as `Retry-After`, in seconds rounded up).
    RateLimited(u64),
}

/// The one answer to every request refused before its signature verified.
pub const UNAUTHENTICATED_PEER: &str = "UNAUTHENTICATED_PEER";
pub const NOT_ACCEPTED: &str = "signature not accepted";

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::MalformedSignature => "MALFORMED_SIGNATURE",
            Self::WrongDestination => "WRONG_DESTINATION",
            Self::UnknownPeer => "UNKNOWN_PEER",
            Self::PeerNotActive => "PEER_NOT_ACTIVE",
            Self::UnknownKey => "UNKNOWN_KEY",
            Self::KeyExpired => "KEY_EXPIRED",
            Self::BadSignature => "BAD_SIGNATURE",
            Self::DigestMismatch => "DIGEST_MISMATCH",
            Self::OutsideTimeWindow => "REQUEST_EXPIRED",
            Self::ReplayedNonce => "REPLAYED_NONCE",
            Self::HopLimitExceeded => "HOP_LIMIT_EXCEEDED",
            Self::CycleDetected => "CYCLE_DETECTED",
            Self::GrantDenied => "GRANT_DENIED",
            Self::BadRequest => "BAD_REQUEST",
            Self::Unavailable => "SERVICE_UNAVAILABLE",
            Self::TooManyRequests => "TOO_MANY_REQUESTS",
            Self::RateLimited(_) => "RATE_LIMITED",
        }
    }

    /// Refusals made before the signature verified. They are all answered
    /// alike (401 `UNAUTHENTICATED_PEER`, byte for byte) and the precise
    /// reason only logged, so an unverified sender cannot tell registered
    /// instance ids, keys or expiries from unknown ones.
    pub fn before_verification(self) -> bool {
        matches!(
            self,
            Self::MalformedSignature
                | Self::WrongDestination
                | Self::UnknownPeer
                | Self::UnknownKey
                | Self::KeyExpired
                | Self::BadSignature
                | Self::DigestMismatch
        )
    }

    /// HTTP status: 400 for requests that cannot be read, 401 for failed
    /// authentication, 403 for authenticated requests that are not allowed.
    pub fn status(self) -> u16 {
        match self {
            Self::Unavailable => 503,
            Self::TooManyRequests | Self::RateLimited(_) => 429,
            Self::MalformedSignature | Self::BadRequest | Self::WrongDestination => 400,
            Self::UnknownKey
            | Self::KeyExpired
            | Self::BadSignature
            | Self::DigestMismatch
            | Self::OutsideTimeWindow
            | Self::ReplayedNonce => 401,
            Self::UnknownPeer
            | Self::PeerNotActive
            | Self::HopLimitExceeded
            | Self::CycleDetected
            | Self::GrantDenied => 403,
        }
    }
}

/// Checks an arriving envelope against this instance (pure).
pub fn check_envelope(envelope: &Envelope, me: &str, my_hop_limit: u32) -> Result<(), Refusal> {
    if envelope.visited.iter().any(|v| v == me) {
        return Err(Refusal::CycleDetected);
    }
    let limit = envelope.hop_limit.min(my_hop_limit);
    if envelope.visited.len() as u32 > limit {
        return Err(Refusal::HopLimitExceeded);
    }
    Ok(())
}

/// An envelope's actor as the receiver may trust it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActorClaim {
    /// Named by the instance that signed this hop, which authenticated them.
    Vouched(Actor),
    /// Named by the instance the request began at and relayed by others: it
    /// says who asked, but no grant may rely on it.
    Relayed(Actor),
}

impl ActorClaim {
    /// The (instance, user) of the actor's global User ID (checked by `check_actor`).
    pub fn user_ids(&self) -> Option<(uuid::Uuid, uuid::Uuid)> {
        let (Self::Vouched(a) | Self::Relayed(a)) = self;
        let mut parts = a.user.splitn(3, ':').skip(1).map(uuid::Uuid::parse_str);
        match (parts.next(), parts.next()) {
            (Some(Ok(instance)), Some(Ok(user))) => Some((instance, user)),
            _ => None,
        }
    }

    /// The actor a grant may rely on.
    pub fn vouched(&self) -> Option<&Actor> {
        match self {
            Self::Vouched(a) => Some(a),
            Self::Relayed(_) => None,
        }
    }
}

/// Checks an envelope's actor (pure; `visited` already ends with the signer).
/// An instance may name only its own users: the actor must belong to the
/// instance the request began at (`visited[0]`), and it is vouched for only
/// when that instance signed this hop itself. A relayed actor keeps no
/// address, which only its own instance could vouch for.
pub fn check_actor(envelope: &Envelope) -> Result<Option<ActorClaim>, String> {
    let Some(actor) = &envelope.actor else { return Ok(None) };
    let mut parts = actor.user.splitn(3, ':');
    let instance = match (parts.next(), parts.next(), parts.next()) {
        (Some("User"), Some(instance), Some(user))
            if uuid::Uuid::parse_str(instance).is_ok() && uuid::Uuid::parse_str(user).is_ok() =>
        {
            instance
        }
        _ => return Err("envelope.actor.user is not a global User ID".into()),
    };
    let began_at = envelope.visited.first().map(String::as_str);
    if began_at != Some(instance) {
        return Err("envelope.actor must be a user of the instance the request began at".into());
    }
    Ok(Some(if envelope.visited.len() == 1 {
        ActorClaim::Vouched(actor.clone())
    } else {
        ActorClaim::Relayed(Actor {
            user: actor.user.clone(),
            email: None,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_batches_are_checked_and_foreign_claims_dropped() {
        let me = uuid::Uuid::new_v4();
        let e = |id: i64, kind: &str, instance| DomainEvent {
            id,
            instance,
            kind: kind.into(),
            workspace: uuid::Uuid::nil(),
            object: uuid::Uuid::nil(),
            changed: vec!["title".into()],
            at: "2026-01-01T00:00:00Z".into(),
        };
        let (kept, dropped) =
            check_batch(vec![e(1, "task.created", me), e(3, "agent_task.updated", me)], 5, me).unwrap();
        assert_eq!((kept.len(), dropped), (2, 0));
        let (kept, dropped) = check_batch(
            vec![e(1, "task.created", uuid::Uuid::new_v4()), e(2, "task.updated", me)],
            2,
            me,
        )
        .unwrap();
        assert_eq!((kept.iter().map(|e| e.id).collect::<Vec<_>>(), dropped), (vec![2], 1));
        assert!(
            check_batch(vec![e(2, "task.created", me), e(2, "task.updated", me)], 5, me).is_err(),
            "not increasing"
        );
        assert!(
            check_batch(vec![e(6, "task.created", me)], 5, me).is_err(),
            "beyond through"
        );
        assert!(
            check_batch(vec![e(0, "task.created", me)], 5, me).is_err(),
            "not positive"
        );
        assert!(
            check_batch(vec![e(1, "task.exploded", me)], 5, me).is_err(),
            "unknown type"
        );
        let mut bad = e(1, "task.created", me);
        bad.changed = vec!["Robert'); DROP".into()];
        assert!(check_batch(vec![bad], 5, me).is_err(), "column names only");
        let many = (1..=MAX_EVENT_BATCH as i64 + 1)
            .map(|i| e(i, "task.created", me))
            .collect();
        assert!(check_batch(many, 1_000, me).is_err(), "bounded");
        assert_eq!(event_types().count(), 15);
        assert_eq!(event_resource("knowledge_entry.deleted"), Some("knowledge"));
        assert_eq!(event_resource("task"), None);
    }

    #[test]
    fn actors_are_vouched_only_by_their_own_instance() {
        let a = "0196f2a4-6b1e-7c3d-9a58-2f4e6d8b0c11";
        let b = "0196f2a4-6b1e-7c3d-9a58-2f4e6d8b0c22";
        let user = |inst: &str| Actor {
            user: format!("User:{inst}:0196f2a4-7000-7000-8000-000000000001"),
            email: Some("ada@example.org".into()),
        };
        let e = |visited: &[&str], actor: Option<Actor>| Envelope {
            visited: visited.iter().map(|s| s.to_string()).collect(),
            actor,
            ..Envelope::default()
        };
        assert_eq!(check_actor(&e(&[a], None)), Ok(None));
        assert_eq!(
            check_actor(&e(&[a], Some(user(a)))),
            Ok(Some(ActorClaim::Vouched(user(a))))
        );
        // b's user, named by a: a claim a cannot make.
        assert!(check_actor(&e(&[a], Some(user(b)))).is_err());
        // Relayed by b: kept as who asked, without the address, vouched by nobody.
        let relayed = check_actor(&e(&[a, b], Some(user(a)))).unwrap().unwrap();
        assert_eq!(relayed.vouched(), None);
        assert_eq!(
            relayed,
            ActorClaim::Relayed(Actor {
                user: user(a).user,
                email: None
            })
        );
        // The relaying instance cannot slip in one of its own users.
        assert!(check_actor(&e(&[a, b], Some(user(b)))).is_err());
        let mut garbage = user(a);
        garbage.user = "alice".into();
        assert!(check_actor(&e(&[a], Some(garbage))).is_err());
    }

    #[test]
    fn envelope_refuses_cycles_and_long_chains() {
        let e = |visited: &[&str], hop_limit| Envelope {
            visited: visited.iter().map(|s| s.to_string()).collect(),
            hop_limit,
            ..Envelope::default()
        };
        assert_eq!(check_envelope(&e(&["a"], 2), "b", 3), Ok(()));
        assert_eq!(check_envelope(&e(&["a", "b"], 3), "b", 3), Err(Refusal::CycleDetected));
        assert_eq!(
            check_envelope(&e(&["a", "c"], 1), "b", 3),
            Err(Refusal::HopLimitExceeded)
        );
        assert_eq!(
            check_envelope(&e(&["a", "c"], 5), "b", 1),
            Err(Refusal::HopLimitExceeded),
            "receiver's own limit applies"
        );
    }
}
