//! Verifying a signed peer request: the checks in their order, pure, with
//! the sender and its keys found through [`PeerKeys`] (the registry in the
//! server, as ruma-signatures takes its key lookup). What the checks cannot
//! decide alone (the replay cache, the peering's state) the caller does
//! after, on a request whose signature holds.

use std::future::Future;

use uuid::Uuid;

use super::protocol::Refusal;
use super::registry::KeyLookup;
use super::signing::{self, SignatureError, SignatureParams};

/// A refusal and its explanation.
#[derive(Debug)]
pub struct Refused(pub Refusal, pub String);

pub fn refuse(r: Refusal, message: impl Into<String>) -> Refused {
    Refused(r, message.into())
}

impl From<SignatureError> for Refused {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::Malformed(m) => refuse(Refusal::MalformedSignature, m),
            SignatureError::DigestMismatch => {
                refuse(Refusal::DigestMismatch, "body digest does not match the signed digest")
            }
            SignatureError::BadSignature => refuse(Refusal::BadSignature, "signature does not verify"),
            SignatureError::OutsideTimeWindow(m) => refuse(Refusal::OutsideTimeWindow, m),
        }
    }
}

/// Where verification finds the sender of a request and its keys.
pub trait PeerKeys {
    type Peer;

    /// The registered peer `origin`, with keys fresh enough to judge
    /// `key_id` (an implementation may re-read the peer's identity document
    /// first); None when there is no peering with it.
    fn find(&self, origin: Uuid, key_id: &str) -> impl Future<Output = Result<Option<Self::Peer>, Refused>> + Send;

    /// The peer's key `key_id` as of `now`.
    fn key<'p>(peer: &'p Self::Peer, key_id: &str, now: i64) -> KeyLookup<'p>;
}

/// What a request is checked against.
pub struct Expect<'a> {
    /// This instance: the only destination accepted.
    pub destination: Uuid,
    /// The route it was sent to, which the signature covers.
    pub path: &'a str,
    pub clock_skew_s: i64,
    pub request_lifetime_s: i64,
}

/// A request whose signature, key and time window hold.
pub struct Verified<P> {
    pub peer: P,
    pub params: SignatureParams,
    /// The clock reading it was judged by, for the checks that follow.
    pub now: i64,
}

/// Checks a request's signature header against its body: well formed, for
/// this instance and route, from a registered peer, with a key valid now,
/// a signature that holds, and a time window that fits. The clock is read
/// once, after the key lookup (which may wait on the peer's document), so a
/// request that waited is judged by the time it is judged.
pub async fn verify<K: PeerKeys>(
    keys: &K,
    expect: &Expect<'_>,
    header: Option<&str>,
    body: &[u8],
    clock: impl Fn() -> i64,
) -> Result<Verified<K::Peer>, Refused> {
    let header = header.ok_or_else(|| refuse(Refusal::MalformedSignature, "missing Mosaic-Signature header"))?;
    let (params, signature) = signing::parse_header(header, "POST", expect.path)?;
    if params.destination != expect.destination.to_string() {
        return Err(refuse(
            Refusal::WrongDestination,
            "request is addressed to another instance",
        ));
    }
    let origin: Uuid = params
        .origin
        .parse()
        .map_err(|_| refuse(Refusal::MalformedSignature, "origin is not an instance id"))?;
    let peer = keys
        .find(origin, &params.key_id)
        .await?
        .ok_or_else(|| refuse(Refusal::UnknownPeer, "no peering with this instance"))?;
    let now = clock();
    let key = match K::key(&peer, &params.key_id, now) {
        KeyLookup::Valid(k) => k
            .verifying_key()
            .ok_or_else(|| refuse(Refusal::UnknownKey, "stored key is not usable"))?,
        KeyLookup::Expired => {
            return Err(refuse(
                Refusal::KeyExpired,
                format!("key {} has expired", params.key_id),
            ));
        }
        KeyLookup::Unknown => {
            return Err(refuse(
                Refusal::UnknownKey,
                format!("key {} is not a key of this peer", params.key_id),
            ));
        }
    };
    signing::verify(&key, &params, &signature, body)?;
    signing::check_time(&params, now, expect.clock_skew_s, expect.request_lifetime_s)?;
    Ok(Verified { peer, params, now })
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::federation::document::PublicKey;

    /// A key lookup of one peer with one key, in memory.
    struct OnePeer {
        id: Uuid,
        key: PublicKey,
    }

    impl PeerKeys for OnePeer {
        type Peer = PublicKey;
        async fn find(&self, origin: Uuid, _key_id: &str) -> Result<Option<PublicKey>, Refused> {
            Ok((origin == self.id).then(|| self.key.clone()))
        }
        fn key<'p>(key: &'p PublicKey, key_id: &str, now: i64) -> KeyLookup<'p> {
            match key {
                k if k.key_id != key_id => KeyLookup::Unknown,
                k if k.valid_until.is_some_and(|until| until <= now) => KeyLookup::Expired,
                k => KeyLookup::Valid(k),
            }
        }
    }

    const NOW: i64 = 1_800_000_000;

    fn signed(signer: &SigningKey, origin: Uuid, destination: Uuid, body: &[u8]) -> String {
        let params = SignatureParams {
            method: "POST".into(),
            path: "/federation/query".into(),
            origin: origin.to_string(),
            destination: destination.to_string(),
            digest: signing::body_digest(body),
            created: NOW,
            expires: NOW + 60,
            nonce: "nonce-of-sixteen-chars".into(),
            key_id: "k1".into(),
        };
        signing::header_value(&params, &signing::sign(signer, &params))
    }

    #[tokio::test]
    async fn each_check_refuses_with_its_own_code() {
        let signer = SigningKey::from_bytes(&[7; 32]);
        let peer = Uuid::now_v7();
        let here = Uuid::now_v7();
        let public = |valid_until| PublicKey {
            key_id: "k1".into(),
            public_key: URL_SAFE_NO_PAD.encode(signer.verifying_key().to_bytes()),
            valid_until,
        };
        let keys = OnePeer {
            id: peer,
            key: public(None),
        };
        let expect = Expect {
            destination: here,
            path: "/federation/query",
            clock_skew_s: 30,
            request_lifetime_s: 60,
        };
        let body = b"{}";
        let header = signed(&signer, peer, here, body);
        let refusal = |r: Result<Verified<PublicKey>, Refused>| r.err().map(|e| e.0);
        let ok = verify(&keys, &expect, Some(&header), body, || NOW).await.unwrap();
        assert_eq!((ok.params.origin, ok.now), (peer.to_string(), NOW));

        let cases = [
            (
                verify(&keys, &expect, None, body, || NOW).await,
                Refusal::MalformedSignature,
            ),
            (
                verify(&keys, &expect, Some(&header), b"{ }", || NOW).await,
                Refusal::DigestMismatch,
            ),
            (
                verify(&keys, &expect, Some(&signed(&signer, peer, peer, body)), body, || NOW).await,
                Refusal::WrongDestination,
            ),
            (
                verify(
                    &keys,
                    &expect,
                    Some(&signed(&signer, Uuid::now_v7(), here, body)),
                    body,
                    || NOW,
                )
                .await,
                Refusal::UnknownPeer,
            ),
            (
                verify(&keys, &expect, Some(&header), body, || NOW + 600).await,
                Refusal::OutsideTimeWindow,
            ),
            (
                verify(
                    &keys,
                    &expect,
                    Some(&signed(&SigningKey::from_bytes(&[8; 32]), peer, here, body)),
                    body,
                    || NOW,
                )
                .await,
                Refusal::BadSignature,
            ),
            (
                verify(
                    &OnePeer {
                        id: peer,
                        key: public(Some(NOW - 1)),
                    },
                    &expect,
                    Some(&header),
                    body,
                    || NOW,
                )
                .await,
                Refusal::KeyExpired,
            ),
            (
                verify(
                    &keys,
                    &Expect {
                        path: "/federation/command",
                        ..expect
                    },
                    Some(&header),
                    body,
                    || NOW,
                )
                .await,
                Refusal::BadSignature,
            ),
        ];
        for (i, (result, code)) in cases.into_iter().enumerate() {
            assert_eq!(refusal(result), Some(code), "case {i}");
        }
    }
}
