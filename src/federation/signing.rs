//! Request signatures between instances (pure: no I/O, no clock).
//!
//! The signing input is a canonical string of named lines (see
//! `peers/PROTOCOL.md`), signed with ed25519. The parameters travel in one
//! `Mosaic-Signature` header; the receiver rebuilds the string from the
//! header, the request line, and the body it actually received.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

pub const HEADER: &str = "mosaic-signature";
const VERSION_LINE: &str = "mosaic-request-v1";

/// Everything the signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureParams {
    pub method: String,
    pub path: String,
    /// Sending instance id.
    pub origin: String,
    /// Receiving instance id.
    pub destination: String,
    /// `sha-256=<base64 of SHA-256(body)>`
    pub digest: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds.
    pub expires: i64,
    pub nonce: String,
    pub key_id: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// The header is missing a parameter or cannot be parsed.
    Malformed(String),
    /// The body's digest differs from the signed one.
    DigestMismatch,
    /// The signature does not verify under the key.
    BadSignature,
    /// `created`/`expires` do not bracket now (with skew), or span too long.
    OutsideTimeWindow(String),
}

pub fn body_digest(body: &[u8]) -> String {
    format!("sha-256={}", STANDARD.encode(Sha256::digest(body)))
}

/// The exact bytes that are signed.
pub fn canonical_string(p: &SignatureParams) -> String {
    format!(
        "{VERSION_LINE}\nmethod: {}\npath: {}\norigin: {}\ndestination: {}\ndigest: {}\ncreated: {}\nexpires: {}\nnonce: {}\nkey-id: {}",
        p.method.to_ascii_uppercase(),
        p.path,
        p.origin,
        p.destination,
        p.digest,
        p.created,
        p.expires,
        p.nonce,
        p.key_id
    )
}

/// Signs; returns the signature in unpadded base64url.
pub fn sign(key: &SigningKey, p: &SignatureParams) -> String {
    URL_SAFE_NO_PAD.encode(key.sign(canonical_string(p).as_bytes()).to_bytes())
}

/// Checks the body digest, then the signature (strict ed25519 verification).
pub fn verify(key: &VerifyingKey, p: &SignatureParams, signature: &str, body: &[u8]) -> Result<(), SignatureError> {
    if body_digest(body) != p.digest {
        return Err(SignatureError::DigestMismatch);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| SignatureError::Malformed("sig is not base64url".into()))?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| SignatureError::Malformed("sig is not 64 bytes".into()))?;
    key.verify_strict(canonical_string(p).as_bytes(), &Signature::from_bytes(&bytes))
        .map_err(|_| SignatureError::BadSignature)
}

/// Accepts a request whose window contains `now` (allowing `skew` seconds of
/// clock difference) and that lives no longer than `max_lifetime` seconds.
pub fn check_time(p: &SignatureParams, now: i64, skew: i64, max_lifetime: i64) -> Result<(), SignatureError> {
    if p.expires <= p.created {
        return Err(SignatureError::OutsideTimeWindow("expires is not after created".into()));
    }
    if p.expires - p.created > max_lifetime {
        return Err(SignatureError::OutsideTimeWindow(format!(
            "lifetime {}s exceeds {max_lifetime}s",
            p.expires - p.created
        )));
    }
    if p.created > now + skew {
        return Err(SignatureError::OutsideTimeWindow("created in the future".into()));
    }
    if p.expires + skew < now {
        return Err(SignatureError::OutsideTimeWindow("expired".into()));
    }
    Ok(())
}

/// `Mosaic-Signature: origin="…", destination="…", key-id="…", created=…, expires=…, nonce="…", digest="…", sig="…"`
pub fn header_value(p: &SignatureParams, signature: &str) -> String {
    format!(
        "origin=\"{}\", destination=\"{}\", key-id=\"{}\", created={}, expires={}, nonce=\"{}\", digest=\"{}\", sig=\"{}\"",
        p.origin, p.destination, p.key_id, p.created, p.expires, p.nonce, p.digest, signature
    )
}

/// Parses the header; method and path come from the request line.
/// Returns the parameters and the signature.
pub fn parse_header(value: &str, method: &str, path: &str) -> Result<(SignatureParams, String), SignatureError> {
    let mut fields = std::collections::BTreeMap::new();
    for part in value.split(',') {
        let (name, raw) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| SignatureError::Malformed(format!("'{}' is not name=value", part.trim())))?;
        let v = raw.trim();
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
        if v.contains('"') || v.contains('\n') {
            return Err(SignatureError::Malformed(format!("bad value for {name}")));
        }
        if fields.insert(name.trim().to_string(), v.to_string()).is_some() {
            return Err(SignatureError::Malformed(format!("{} given twice", name.trim())));
        }
    }
    let mut take = |name: &str| {
        fields
            .remove(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SignatureError::Malformed(format!("missing {name}")))
    };
    let number = |name: &str, v: String| {
        parse_integer(&v).ok_or_else(|| {
            SignatureError::Malformed(format!(
                "{name} is not an integer (decimal digits, no sign or leading zeros)"
            ))
        })
    };
    let params = SignatureParams {
        method: method.to_string(),
        path: path.to_string(),
        origin: take("origin")?,
        destination: take("destination")?,
        key_id: take("key-id")?,
        created: number("created", take("created")?)?,
        expires: number("expires", take("expires")?)?,
        nonce: take("nonce")?,
        digest: take("digest")?,
    };
    if !nonce_is_valid(&params.nonce) {
        return Err(SignatureError::Malformed(format!(
            "nonce must be {}..={} base64url characters",
            NONCE_CHARS.start(),
            NONCE_CHARS.end()
        )));
    }
    let sig = take("sig")?;
    if let Some(extra) = fields.keys().next() {
        return Err(SignatureError::Malformed(format!("unknown parameter {extra}")));
    }
    Ok((params, sig))
}

/// Lengths a nonce may have: senders write 22 (16 random bytes).
pub const NONCE_CHARS: std::ops::RangeInclusive<usize> = 16..=64;

/// A nonce is 16 to 64 base64url characters, so the replay cache holds
/// small entries whatever a peer sends.
fn nonce_is_valid(nonce: &str) -> bool {
    NONCE_CHARS.contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The header's integer grammar: `0`, or ASCII digits not starting with `0`
/// (no sign, no whitespace), at most `i64::MAX`: the spelling `header_value`
/// writes, so a request has one header. (Times before 1970 cannot be sent.)
fn parse_integer(v: &str) -> Option<i64> {
    let canonical = v.bytes().all(|b| b.is_ascii_digit()) && (v == "0" || !v.starts_with('0'));
    // `parse` refuses the empty string and anything above `i64::MAX`.
    canonical.then(|| v.parse().ok()).flatten()
}

/// A key id names the key by its fingerprint: `ed25519:` + the first 12
/// bytes of SHA-256 of the public key, unpadded base64url.
pub fn key_id(key: &VerifyingKey) -> String {
    format!(
        "ed25519:{}",
        URL_SAFE_NO_PAD.encode(&Sha256::digest(key.as_bytes())[..12])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(body: &[u8]) -> SignatureParams {
        SignatureParams {
            method: "POST".into(),
            path: "/federation/query".into(),
            origin: "a".into(),
            destination: "b".into(),
            digest: body_digest(body),
            created: 1000,
            expires: 1060,
            nonce: "bm9uY2UtZm9yLXRlc3Q".into(),
            key_id: "k".into(),
        }
    }

    #[test]
    fn sign_verify_and_every_tamper_fails() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let body = b"{\"query\":\"{ tasks }\"}";
        let p = params(body);
        let sig = sign(&key, &p);
        let vk = key.verifying_key();
        assert_eq!(verify(&vk, &p, &sig, body), Ok(()));
        assert_eq!(verify(&vk, &p, &sig, b"{}"), Err(SignatureError::DigestMismatch));
        let mut other = p.clone();
        other.destination = "c".into();
        assert_eq!(verify(&vk, &other, &sig, body), Err(SignatureError::BadSignature));
        let wrong = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        assert_eq!(verify(&wrong, &p, &sig, body), Err(SignatureError::BadSignature));
    }

    #[test]
    fn header_round_trips_and_refuses_junk() {
        let p = params(b"x");
        let h = header_value(&p, "c2ln");
        assert_eq!(
            parse_header(&h, "POST", "/federation/query").unwrap(),
            (p, "c2ln".to_string())
        );
        assert!(matches!(
            parse_header("origin=\"a\"", "POST", "/"),
            Err(SignatureError::Malformed(_))
        ));
        let dup = format!("{h}, nonce=\"x\"");
        for bad in ["short", "has space in it here", "plus+and/slash+more", &"n".repeat(65)] {
            let h = header_value(&params(b"x"), "c2ln").replace("bm9uY2UtZm9yLXRlc3Q", bad);
            assert!(
                matches!(parse_header(&h, "POST", "/"), Err(SignatureError::Malformed(_))),
                "nonce {bad}"
            );
        }
        assert!(matches!(
            parse_header(&dup, "POST", "/"),
            Err(SignatureError::Malformed(_))
        ));
    }

    /// Parses the header of `params` with `created` (or `expires`) spelled `v`.
    fn parse_with(name: &str, v: &str) -> Result<SignatureParams, SignatureError> {
        let p = params(b"x");
        let given = if name == "created" { p.created } else { p.expires };
        let h = header_value(&p, "c2ln").replacen(&format!("{name}={given},"), &format!("{name}={v},"), 1);
        assert!(h.contains(&format!("{name}={v},")), "{h}");
        parse_header(&h, "POST", "/federation/query").map(|(p, _)| p)
    }

    #[test]
    fn integers_have_one_spelling() {
        for (v, n) in [
            ("0", 0),
            ("7", 7),
            ("1700000000", 1_700_000_000),
            ("\"1700000000\"", 1_700_000_000),
            // Whitespace around a value belongs to the header syntax (§4.3).
            (" 1700000000\t", 1_700_000_000),
            ("9223372036854775807", i64::MAX),
        ] {
            assert_eq!(parse_with("created", v).map(|p| p.created), Ok(n), "created={v}");
            assert_eq!(parse_with("expires", v).map(|p| p.expires), Ok(n), "expires={v}");
        }
        for v in [
            "+1",
            "-1",
            "-0",
            "+0",
            "01",
            "00",
            "0001700000000",
            "\"01\"",
            "\"1 \"",
            "\" 1\"",
            "1 0",
            "\"1\t\"",
            "1e3",
            "1.0",
            "0x10",
            "1_000",
            "\u{661}",
            "12345678901234567890",
            "9223372036854775808",
            "99999999999999999999",
            "",
            "\"\"",
        ] {
            for name in ["created", "expires"] {
                assert!(
                    matches!(parse_with(name, v), Err(SignatureError::Malformed(_))),
                    "{name}={v} must be refused"
                );
            }
        }
    }

    #[test]
    fn time_window() {
        let p = params(b"");
        assert!(check_time(&p, 1030, 5, 300).is_ok());
        assert!(check_time(&p, 1070, 5, 300).is_err(), "expired");
        assert!(check_time(&p, 990, 5, 300).is_err(), "not yet valid");
        assert!(check_time(&p, 1030, 5, 30).is_err(), "too long-lived");
    }
}
