//! The protocol vectors in `peers/vectors/` (see `peers/PROTOCOL.md`).
//!
//! `vectors_match_the_implementation` checks every case through the public
//! API of `mosaic::federation::{signing, document}` only. The files are
//! written by the ignored generator below, so they are reproducible:
//!
//! ```sh
//! cargo test --test protocol_vectors -- --ignored regenerate
//! ```

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use mosaic::federation::document::{self, IdentityDocument, PublicKey, SignedDocument};
use mosaic::federation::signing::{self, SignatureError, SignatureParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// --- file format ------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SigningVectors {
    about: Vec<String>,
    /// Correctly signed requests: every derived value, byte for byte.
    cases: Vec<GoodCase>,
    /// Requests that verify although their header is written differently, or
    /// that sit exactly on a time-window boundary.
    must_verify: Vec<RequestCase>,
    /// Requests that must be refused, with the error the receiver reports.
    must_fail: Vec<RequestCase>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct GoodCase {
    name: String,
    /// ed25519 seed (the 32-byte secret key), hex.
    seed: String,
    /// 32 bytes, unpadded base64url (as in the identity document).
    public_key: String,
    public_key_hex: String,
    key_id: String,
    params: Params,
    /// The request body as UTF-8 text; its bytes are what is digested.
    body: String,
    digest: String,
    canonical_string: String,
    /// 64 bytes, unpadded base64url.
    signature: String,
    /// Value of the `Mosaic-Signature` header.
    header: String,
}

/// Mirror of `signing::SignatureParams`.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Params {
    method: String,
    path: String,
    origin: String,
    destination: String,
    digest: String,
    created: i64,
    expires: i64,
    nonce: String,
    key_id: String,
}

impl From<&SignatureParams> for Params {
    fn from(p: &SignatureParams) -> Self {
        Self {
            method: p.method.clone(),
            path: p.path.clone(),
            origin: p.origin.clone(),
            destination: p.destination.clone(),
            digest: p.digest.clone(),
            created: p.created,
            expires: p.expires,
            nonce: p.nonce.clone(),
            key_id: p.key_id.clone(),
        }
    }
}

impl From<&Params> for SignatureParams {
    fn from(p: &Params) -> Self {
        Self {
            method: p.method.clone(),
            path: p.path.clone(),
            origin: p.origin.clone(),
            destination: p.destination.clone(),
            digest: p.digest.clone(),
            created: p.created,
            expires: p.expires,
            nonce: p.nonce.clone(),
            key_id: p.key_id.clone(),
        }
    }
}

/// One arriving request, checked as a receiver does: parse the header with
/// the request line's method and path, verify digest and signature under
/// `public_key`, then check the time window at `now`.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct RequestCase {
    name: String,
    why: String,
    /// The key the receiver verifies with (unpadded base64url).
    public_key: String,
    method: String,
    path: String,
    header: String,
    body: String,
    now: i64,
    skew: i64,
    max_lifetime: i64,
    /// `Malformed`, `DigestMismatch`, `BadSignature` or `OutsideTimeWindow`;
    /// absent in `must_verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct DocumentVectors {
    about: Vec<String>,
    seed: String,
    public_key: String,
    key_id: String,
    /// The identity document.
    document: Value,
    /// The exact bytes that are signed.
    canonical_json: String,
    signature: String,
    /// What `/.well-known/mosaic` serves.
    signed: Value,
    /// Other encodings of `signed` (as text) that must verify.
    must_verify: Vec<DocumentText>,
    /// Signed documents that must not verify, with the error text.
    must_fail: Vec<DocumentFailure>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct DocumentText {
    name: String,
    why: String,
    json: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct DocumentFailure {
    name: String,
    why: String,
    signed: Value,
    error: String,
}

// --- helpers ----------------------------------------------------------------

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/vectors")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> [u8; 32] {
    assert_eq!(text.len(), 64, "hex of 32 bytes: {text}");
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn verifying_key(b64url: &str) -> VerifyingKey {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD
        .decode(b64url)
        .expect("public key is base64url")
        .try_into()
        .expect("public key is 32 bytes");
    VerifyingKey::from_bytes(&bytes).expect("public key is a curve point")
}

fn error_name(e: &SignatureError) -> &'static str {
    match e {
        SignatureError::Malformed(_) => "Malformed",
        SignatureError::DigestMismatch => "DigestMismatch",
        SignatureError::BadSignature => "BadSignature",
        SignatureError::OutsideTimeWindow(_) => "OutsideTimeWindow",
    }
}

/// The receiver's order: parse, digest + signature, time window.
fn receive(c: &RequestCase) -> Result<(), SignatureError> {
    let (params, sig) = signing::parse_header(&c.header, &c.method, &c.path)?;
    signing::verify(&verifying_key(&c.public_key), &params, &sig, c.body.as_bytes())?;
    signing::check_time(&params, c.now, c.skew, c.max_lifetime)
}

fn read<T: for<'de> Deserialize<'de>>(file: &str) -> T {
    let path = vectors_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

// --- the check --------------------------------------------------------------

#[test]
fn vectors_match_the_implementation() {
    let v: SigningVectors = read("signing.json");
    assert!(!v.cases.is_empty() && !v.must_fail.is_empty());
    for c in &v.cases {
        let key = SigningKey::from_bytes(&unhex32(&c.seed));
        let vk = key.verifying_key();
        assert_eq!(b64(vk.as_bytes()), c.public_key, "{}: public key", c.name);
        assert_eq!(hex(vk.as_bytes()), c.public_key_hex, "{}: public key (hex)", c.name);
        assert_eq!(signing::key_id(&vk), c.key_id, "{}: key id", c.name);
        assert_eq!(c.params.key_id, c.key_id, "{}: params name the key", c.name);
        let params = SignatureParams::from(&c.params);
        assert_eq!(signing::body_digest(c.body.as_bytes()), c.digest, "{}: digest", c.name);
        assert_eq!(params.digest, c.digest, "{}: params carry the digest", c.name);
        assert_eq!(
            signing::canonical_string(&params),
            c.canonical_string,
            "{}: canonical",
            c.name
        );
        let sig = signing::sign(&key, &params);
        assert_eq!(sig, c.signature, "{}: signature", c.name);
        assert_eq!(signing::header_value(&params, &sig), c.header, "{}: header", c.name);
        assert_eq!(
            signing::parse_header(&c.header, &c.params.method, &c.params.path),
            Ok((params.clone(), c.signature.clone())),
            "{}: header parses back",
            c.name
        );
        assert_eq!(
            signing::verify(&verifying_key(&c.public_key), &params, &c.signature, c.body.as_bytes()),
            Ok(()),
            "{}: verifies",
            c.name
        );
        assert_eq!(
            signing::check_time(&params, params.created, 30, 60),
            Ok(()),
            "{}: within its window",
            c.name
        );
    }
    for c in &v.must_verify {
        assert_eq!(c.error, None, "{}: must_verify names no error", c.name);
        assert_eq!(receive(c), Ok(()), "{}: must verify ({})", c.name, c.why);
    }
    for c in &v.must_fail {
        let expected = c
            .error
            .as_deref()
            .unwrap_or_else(|| panic!("{}: names no error", c.name));
        match receive(c) {
            Ok(()) => panic!("{}: verified, expected {expected} ({})", c.name, c.why),
            Err(e) => assert_eq!(error_name(&e), expected, "{}: {e:?} ({})", c.name, c.why),
        }
    }

    let d: DocumentVectors = read("document.json");
    let key = SigningKey::from_bytes(&unhex32(&d.seed));
    let vk = key.verifying_key();
    assert_eq!(b64(vk.as_bytes()), d.public_key);
    assert_eq!(signing::key_id(&vk), d.key_id);
    let doc: IdentityDocument = serde_json::from_value(d.document.clone()).expect("document parses");
    assert_eq!(document::canonical_json(&doc), d.canonical_json, "canonical JSON");
    let signed = document::sign_document(doc, &key);
    assert_eq!(signed.signature, d.signature, "document signature");
    assert_eq!(signed.key_id, d.key_id);
    assert_eq!(
        serde_json::to_value(&signed).expect("serialises"),
        d.signed,
        "signed form"
    );
    let served: SignedDocument = serde_json::from_value(d.signed.clone()).expect("signed parses");
    assert_eq!(
        document::verify_document(&served),
        Ok(()),
        "the served document verifies"
    );
    for t in &d.must_verify {
        let s: SignedDocument = serde_json::from_str(&t.json).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(
            document::verify_document(&s),
            Ok(()),
            "{}: must verify ({})",
            t.name,
            t.why
        );
    }
    for f in &d.must_fail {
        let s: SignedDocument = serde_json::from_value(f.signed.clone()).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(
            document::verify_document(&s),
            Err(f.error.clone()),
            "{}: must fail ({})",
            f.name,
            f.why
        );
    }
}

/// The files are exactly what the generator writes today.
#[test]
fn vectors_are_reproducible() {
    for (file, text) in generate() {
        let on_disk = std::fs::read_to_string(vectors_dir().join(file)).expect("vector file");
        assert!(
            on_disk == text,
            "peers/vectors/{file} differs from the generator's output; run \
             `cargo test --test protocol_vectors -- --ignored regenerate` and review the diff"
        );
    }
}

// --- the generator ----------------------------------------------------------

#[test]
#[ignore = "writes peers/vectors/*.json"]
fn regenerate() {
    std::fs::create_dir_all(vectors_dir()).expect("vectors dir");
    for (file, text) in generate() {
        std::fs::write(vectors_dir().join(file), text).expect("writing vectors");
    }
}

/// RFC 8032, section 7.1, TEST 1.
const SEED_A: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const SEED_B: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const SEED_OTHER: &str = "4242424242424242424242424242424242424242424242424242424242424242";

const ORIGIN: &str = "0196f2a4-6b1e-7c3d-9a58-2f4e6d8b0c11";
const DESTINATION: &str = "0196f2a4-9d07-7e21-8b3c-5a6f7e8d9c22";
const THIRD: &str = "0196f2a5-1c44-7a90-b1d2-3e4f5a6b7c33";
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;
const SKEW: i64 = 30;
const LIFETIME: i64 = 60;

fn key(seed: &str) -> SigningKey {
    SigningKey::from_bytes(&unhex32(seed))
}

fn generate() -> Vec<(&'static str, String)> {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("serialises") + "\n";
    vec![
        (
            "signing.json",
            pretty(&serde_json::to_value(signing_vectors()).expect("serialises")),
        ),
        (
            "document.json",
            pretty(&serde_json::to_value(document_vectors()).expect("serialises")),
        ),
    ]
}

fn query_body() -> String {
    use mosaic::federation::protocol::{Actor, Envelope, SubRequest};
    let body = SubRequest {
        query: "query($scope: InstanceScope, $first: Int, $after: String) { tasks(scope: $scope, first: $first, \
                after: $after) { edges { cursor node { id title status instance { id name } } } \
                pageInfo { hasNextPage } } }"
            .into(),
        variables: json!({ "scope": { "all": true }, "first": 50, "after": null }),
        envelope: Envelope {
            visited: vec![ORIGIN.into()],
            exclude: vec![DESTINATION.into(), THIRD.into()],
            hop_limit: 3,
            deadline_ms: 4500,
            actor: Some(Actor {
                user: format!("User:{ORIGIN}:0196f2a4-7000-7000-8000-000000000001"),
                email: Some("ada@example.org".into()),
            }),
            traceparent: None,
        },
    };
    serde_json::to_string(&body).expect("serialises")
}

fn command_body() -> String {
    use mosaic::federation::protocol::{Envelope, SubRequest};
    let body = SubRequest {
        query: "mutation($input: CreateTaskInput!) { createTask(input: $input) { id title } }".into(),
        variables: json!({ "input": {
            "workspaceId": format!("Workspace:{DESTINATION}:0196f2a4-9d07-7000-8000-00000000000a"),
            "title": "Übersetzung prüfen — 検証 ✓ \"quoted\"\ttab",
        }}),
        envelope: Envelope {
            visited: vec![ORIGIN.into()],
            exclude: vec![],
            hop_limit: 2,
            deadline_ms: 1200,
            actor: None,
            traceparent: None,
        },
    };
    serde_json::to_string(&body).expect("serialises")
}

fn params(
    method: &str,
    path: &str,
    body: &str,
    created: i64,
    expires: i64,
    nonce: &str,
    key_id: &str,
) -> SignatureParams {
    SignatureParams {
        method: method.into(),
        path: path.into(),
        origin: ORIGIN.into(),
        destination: DESTINATION.into(),
        digest: signing::body_digest(body.as_bytes()),
        created,
        expires,
        nonce: nonce.into(),
        key_id: key_id.into(),
    }
}

fn good_case(name: &str, seed: &str, p: SignatureParams, body: &str) -> GoodCase {
    let k = key(seed);
    let vk = k.verifying_key();
    assert_eq!(p.key_id, signing::key_id(&vk));
    let signature = signing::sign(&k, &p);
    GoodCase {
        name: name.into(),
        seed: seed.into(),
        public_key: b64(vk.as_bytes()),
        public_key_hex: hex(vk.as_bytes()),
        key_id: signing::key_id(&vk),
        digest: p.digest.clone(),
        canonical_string: signing::canonical_string(&p),
        header: signing::header_value(&p, &signature),
        signature,
        body: body.into(),
        params: Params::from(&p),
    }
}

fn signing_vectors() -> SigningVectors {
    let kid_a = signing::key_id(&key(SEED_A).verifying_key());
    let kid_b = signing::key_id(&key(SEED_B).verifying_key());
    let query = query_body();
    let event = serde_json::to_string(&mosaic::federation::protocol::Event::Granted {
        read_write: false,
        workspaces: vec!["0196f2a4-9d07-7000-8000-00000000000a".into()],
    })
    .expect("serialises");
    let disconnect = serde_json::to_string(&mosaic::federation::protocol::Disconnect::default()).expect("serialises");
    let connect = serde_json::to_string(&mosaic::federation::protocol::ConnectRequest {
        identity: signed_document(),
    })
    .expect("serialises");

    let cases = vec![
        good_case(
            "query",
            SEED_A,
            params(
                "POST",
                "/federation/query",
                &query,
                T0,
                T0 + 60,
                "q4bCIa3dTzqVbYfM1sLk0w",
                &kid_a,
            ),
            &query,
        ),
        good_case(
            "connect",
            SEED_A,
            params(
                "POST",
                "/federation/connect",
                &connect,
                T0,
                T0 + 60,
                "Y29ubmVjdC1ub25jZS0x",
                &kid_a,
            ),
            &connect,
        ),
        good_case(
            "event-granted",
            SEED_A,
            params(
                "POST",
                "/federation/event",
                &event,
                T0 + 5,
                T0 + 65,
                "ZXZlbnQtbm9uY2UtMDAx",
                &kid_a,
            ),
            &event,
        ),
        good_case(
            "disconnect",
            SEED_A,
            params(
                "POST",
                "/federation/disconnect",
                &disconnect,
                T0,
                T0 + 60,
                "ZGlzY29ubmVjdC0wMDE",
                &kid_a,
            ),
            &disconnect,
        ),
        good_case(
            "empty-body",
            SEED_B,
            params(
                "POST",
                "/federation/event",
                "",
                T0,
                T0 + 1,
                "AAAAAAAAAAAAAAAAAAAAAA",
                &kid_b,
            ),
            "",
        ),
        good_case(
            "command-non-ascii-lowercase-method",
            SEED_B,
            params(
                "post",
                "/federation/command",
                &command_body(),
                T0,
                T0 + 30,
                "_-_-MDEyMzQ1Njc4OQ",
                &kid_b,
            ),
            &command_body(),
        ),
    ];

    let base = &cases[0];
    let pk_a = base.public_key.clone();
    let request = |name: &str, why: &str, header: String, body: &str| RequestCase {
        name: name.into(),
        why: why.into(),
        public_key: pk_a.clone(),
        method: "POST".into(),
        path: "/federation/query".into(),
        header,
        body: body.into(),
        now: T0 + 10,
        skew: SKEW,
        max_lifetime: LIFETIME,
        error: None,
    };
    let with_error = |mut c: RequestCase, e: &str| {
        c.error = Some(e.into());
        c
    };
    let h = base.header.clone();
    let sig = base.signature.clone();
    let replace = |from: &str, to: &str| {
        assert!(h.contains(from), "{from} in header");
        h.replacen(from, to, 1)
    };
    let with_sig = |s: &str| replace(&format!("sig=\"{sig}\""), &format!("sig=\"{s}\""));
    let p = SignatureParams::from(&base.params);
    // A header for the base request with other times, correctly signed.
    let signed_at = |created: i64, expires: i64| {
        let mut q = p.clone();
        q.created = created;
        q.expires = expires;
        signing::header_value(&q, &signing::sign(&key(SEED_A), &q))
    };
    let sig_bytes = URL_SAFE_NO_PAD.decode(&sig).expect("sig");

    // Equivalent encodings.
    let parts: Vec<&str> = h.split(", ").collect();
    let reordered = parts.iter().rev().copied().collect::<Vec<_>>().join(",");
    let unquoted = h.replace('"', "");
    let quoted_numbers = replace(&format!("created={}", p.created), &format!("created=\"{}\"", p.created));
    let spaced = parts
        .iter()
        .map(|part| {
            let (name, value) = part.split_once('=').expect("name=value");
            format!("{name} = {value}")
        })
        .collect::<Vec<_>>()
        .join(" ,\t");
    let must_verify = vec![
        request(
            "as-sent",
            "the header exactly as signing::header_value writes it",
            h.clone(),
            &query,
        ),
        request(
            "reordered",
            "parameter order is free; no space after commas",
            reordered,
            &query,
        ),
        request("unquoted", "quotes around a value are optional", unquoted, &query),
        request("quoted-integer", "integers may be quoted", quoted_numbers, &query),
        request(
            "whitespace",
            "whitespace (spaces, tabs) around names, '=' and commas is ignored",
            spaced,
            &query,
        ),
        {
            let mut c = request(
                "lowercase-method",
                "the method is upper-cased before signing",
                h.clone(),
                &query,
            );
            c.method = "post".into();
            c
        },
        {
            let mut c = request(
                "at-expiry-plus-skew",
                "now = expires + skew is still accepted",
                h.clone(),
                &query,
            );
            c.now = p.expires + SKEW;
            c
        },
        {
            let mut c = request(
                "at-created-minus-skew",
                "now = created - skew is accepted",
                h.clone(),
                &query,
            );
            c.now = p.created - SKEW;
            c
        },
        {
            let mut c = request(
                "lifetime-equals-max",
                "expires - created = max_lifetime is accepted",
                signed_at(T0, T0 + LIFETIME),
                &query,
            );
            c.now = T0;
            c
        },
    ];

    let tampered_body = query.replacen("\"first\":50", "\"first\":51", 1);
    assert_ne!(tampered_body, query);
    let other_key = b64(key(SEED_OTHER).verifying_key().as_bytes());
    let mut non_canonical_s = sig_bytes.clone();
    add_group_order(&mut non_canonical_s[32..]);
    let mut flipped = sig_bytes.clone();
    flipped[10] ^= 0x01;
    let standard_alphabet = {
        // The same signature in the standard base64 alphabet (if it differs).
        let std = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&sig_bytes);
        if std == sig { format!("{}+", &sig[..85]) } else { std }
    };
    // The small-order key (the identity point) and the signature (R = identity,
    // S = 0) that a non-strict verifier accepts for any message.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut identity_sig = [0u8; 64];
    identity_sig[0] = 1;

    let bad = |name: &str, why: &str, header: String, e: &str| with_error(request(name, why, header, &query), e);
    let mut must_fail = vec![
        with_error(
            request(
                "body-changed",
                "one byte of the body differs",
                h.clone(),
                &tampered_body,
            ),
            "DigestMismatch",
        ),
        with_error(
            request(
                "body-trailing-newline",
                "the body is digested byte for byte",
                h.clone(),
                &(query.clone() + "\n"),
            ),
            "DigestMismatch",
        ),
        with_error(
            request(
                "body-changed-digest-updated",
                "the body and its digest parameter both changed; the signature covers the digest",
                replace(&p.digest, &signing::body_digest(tampered_body.as_bytes())),
                &tampered_body,
            ),
            "BadSignature",
        ),
        with_error(
            request(
                "digest-changed",
                "the digest parameter differs from the body's digest",
                replace(&p.digest, &signing::body_digest(b"{}")),
                &query,
            ),
            "DigestMismatch",
        ),
        {
            let mut c = bad(
                "wrong-key",
                "verified with a key that did not sign",
                h.clone(),
                "BadSignature",
            );
            c.public_key = other_key.clone();
            c
        },
        bad(
            "destination-changed",
            "destination is signed",
            replace(DESTINATION, THIRD),
            "BadSignature",
        ),
        bad(
            "origin-changed",
            "origin is signed",
            replace(&format!("origin=\"{ORIGIN}\""), &format!("origin=\"{THIRD}\"")),
            "BadSignature",
        ),
        {
            let mut c = bad("path-changed", "the request path is signed", h.clone(), "BadSignature");
            c.path = "/federation/command".into();
            c
        },
        {
            let mut c = bad(
                "path-trailing-slash",
                "the path is compared exactly",
                h.clone(),
                "BadSignature",
            );
            c.path = "/federation/query/".into();
            c
        },
        {
            let mut c = bad("method-changed", "the method is signed", h.clone(), "BadSignature");
            c.method = "PUT".into();
            c
        },
        bad(
            "nonce-changed",
            "the nonce is signed",
            replace(&p.nonce, "q4bCIa3dTzqVbYfM1sLk0x"),
            "BadSignature",
        ),
        bad(
            "key-id-changed",
            "the key id is signed",
            replace(&p.key_id, &kid_b),
            "BadSignature",
        ),
        bad(
            "created-changed",
            "created is signed",
            replace(&format!("created={}", p.created), &format!("created={}", p.created + 1)),
            "BadSignature",
        ),
        bad(
            "expires-changed",
            "expires is signed",
            replace(&format!("expires={}", p.expires), &format!("expires={}", p.expires + 1)),
            "BadSignature",
        ),
        bad(
            "signature-bit-flipped",
            "one bit of the signature differs",
            with_sig(&b64(&flipped)),
            "BadSignature",
        ),
        bad(
            "signature-of-another-request",
            "a valid signature, of another request",
            with_sig(&cases[3].signature),
            "BadSignature",
        ),
        bad(
            "signature-non-canonical-s",
            "S + L (the group order): verification is strict, S must be reduced",
            with_sig(&b64(&non_canonical_s)),
            "BadSignature",
        ),
        {
            let mut c = bad(
                "small-order-key",
                "the identity point as public key with R = identity, S = 0, accepted by non-strict \
                 verifiers for any message; strict verification refuses weak keys",
                with_sig(&b64(&identity_sig)),
                "BadSignature",
            );
            c.public_key = b64(&identity);
            c
        },
        bad(
            "missing-sig",
            "every parameter is required",
            replace(&format!(", sig=\"{sig}\""), ""),
            "Malformed",
        ),
        bad(
            "missing-nonce",
            "every parameter is required",
            replace(&format!(" nonce=\"{}\",", p.nonce), ""),
            "Malformed",
        ),
        bad(
            "empty-nonce",
            "an empty value counts as missing",
            replace(&format!("nonce=\"{}\"", p.nonce), "nonce=\"\""),
            "Malformed",
        ),
        bad(
            "short-nonce",
            "a nonce has 16..=64 base64url characters",
            replace(&format!("nonce=\"{}\"", p.nonce), "nonce=\"AAAAAAAAAAAAAAA\""),
            "Malformed",
        ),
        bad(
            "long-nonce",
            "a nonce has 16..=64 base64url characters",
            replace(
                &format!("nonce=\"{}\"", p.nonce),
                &format!("nonce=\"{}\"", "A".repeat(65)),
            ),
            "Malformed",
        ),
        bad(
            "nonce-outside-alphabet",
            "a nonce uses only the base64url alphabet",
            replace(&format!("nonce=\"{}\"", p.nonce), "nonce=\"AAAAAAAAAAAAAAA+\""),
            "Malformed",
        ),
        bad(
            "duplicate-parameter",
            "a parameter given twice",
            format!("{h}, nonce=\"{}\"", p.nonce),
            "Malformed",
        ),
        bad(
            "unknown-parameter",
            "unknown parameters are refused",
            format!("{h}, alg=\"ed25519\""),
            "Malformed",
        ),
        bad(
            "trailing-comma",
            "an empty list member is not name=value",
            format!("{h},"),
            "Malformed",
        ),
        bad(
            "not-name-value",
            "every member is name=value",
            format!("{h}, ed25519"),
            "Malformed",
        ),
        bad(
            "uppercase-name",
            "parameter names are lower case, matched exactly",
            replace("origin=", "Origin="),
            "Malformed",
        ),
        bad(
            "created-not-integer",
            "created is a decimal integer",
            replace(&format!("created={}", p.created), &format!("created={}.0", p.created)),
            "Malformed",
        ),
        bad(
            "expires-not-integer",
            "expires is a decimal integer",
            replace(&format!("expires={}", p.expires), "expires=soon"),
            "Malformed",
        ),
        bad(
            "created-plus-sign",
            "integers have no sign: '+' is refused although the value would be the same",
            replace(&format!("created={}", p.created), &format!("created=+{}", p.created)),
            "Malformed",
        ),
        bad(
            "expires-leading-zero",
            "integers have no leading zeros, so each value has one spelling",
            replace(&format!("expires={}", p.expires), &format!("expires=0{}", p.expires)),
            "Malformed",
        ),
        bad(
            "quote-inside-value",
            "a value cannot contain '\"'",
            replace(&format!("nonce=\"{}\"", p.nonce), "nonce=\"a\"b\""),
            "Malformed",
        ),
        bad(
            "unbalanced-quote",
            "an opening quote without a closing one",
            replace(&format!("nonce=\"{}\"", p.nonce), &format!("nonce=\"{}", p.nonce)),
            "Malformed",
        ),
        bad(
            "comma-inside-value",
            "commas separate parameters; values cannot contain them",
            replace(&format!("nonce=\"{}\"", p.nonce), "nonce=\"a,b\""),
            "Malformed",
        ),
        bad(
            "sig-padded",
            "the signature is unpadded base64url",
            with_sig(&format!("{sig}==")),
            "Malformed",
        ),
        bad(
            "sig-standard-alphabet",
            "the signature uses the URL-safe alphabet",
            with_sig(&standard_alphabet),
            "Malformed",
        ),
        bad(
            "sig-non-canonical-trailing-bits",
            "the last character's 4 unused bits must be zero (decoding is canonical)",
            with_sig(&non_canonical_tail(&sig)),
            "Malformed",
        ),
        bad(
            "sig-63-bytes",
            "the signature is 64 bytes",
            with_sig(&b64(&sig_bytes[..63])),
            "Malformed",
        ),
    ];
    let window = |name: &str, why: &str, header: String, now: i64| {
        let mut c = with_error(request(name, why, header, &query), "OutsideTimeWindow");
        c.now = now;
        c
    };
    must_fail.extend([
        window("expired", "now > expires + skew", h.clone(), p.expires + SKEW + 1),
        window("not-yet-valid", "now < created - skew", h.clone(), p.created - SKEW - 1),
        window(
            "lifetime-too-long",
            "expires - created > max_lifetime",
            signed_at(T0, T0 + LIFETIME + 1),
            T0,
        ),
        window(
            "expires-equals-created",
            "expires must be after created",
            signed_at(T0, T0),
            T0,
        ),
        window(
            "expires-before-created",
            "expires must be after created",
            signed_at(T0, T0 - 1),
            T0,
        ),
    ]);

    // Every case is what the implementation says it is.
    for c in &must_verify {
        assert_eq!(receive(c), Ok(()), "{}", c.name);
    }
    for c in &must_fail {
        let e = receive(c).expect_err(&c.name);
        assert_eq!(Some(error_name(&e)), c.error.as_deref(), "{}: {e:?}", c.name);
    }

    SigningVectors {
        about: vec![
            "Signing vectors for the Mosaic peer protocol (peers/PROTOCOL.md), written by \
             `cargo test --test protocol_vectors -- --ignored regenerate`."
                .into(),
            "cases: seed (hex) -> public_key (base64url, no padding) -> key_id; body (UTF-8) -> digest; \
             params -> canonical_string -> signature (base64url, no padding) -> header."
                .into(),
            "must_verify / must_fail: a receiver parses `header` with the request line's `method` and \
             `path`, checks the body's digest and the signature under `public_key`, then the time window \
             with `now`, `skew` and `max_lifetime` (seconds). `error` is the first check that fails."
                .into(),
        ],
        cases,
        must_verify,
        must_fail,
    }
}

/// The same text with non-zero unused bits in the last character.
fn non_canonical_tail(sig: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *sig.as_bytes().last().expect("non-empty");
    let index = ALPHABET.iter().position(|&c| c == last).expect("base64url");
    assert_eq!(index & 0x0f, 0, "canonical: 86 characters carry 516 bits for 512");
    format!("{}{}", &sig[..sig.len() - 1], ALPHABET[index | 1] as char)
}

/// Adds the ed25519 group order L to a 32-byte little-endian scalar.
fn add_group_order(s: &mut [u8]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (b, l) in s.iter_mut().zip(L) {
        let sum = u16::from(*b) + u16::from(l) + carry;
        *b = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
}

fn identity_document() -> IdentityDocument {
    let current = key(SEED_A).verifying_key();
    let old = key(SEED_B).verifying_key();
    IdentityDocument {
        protocol: document::PROTOCOL.into(),
        instance_id: ORIGIN.into(),
        name: "Zürich \"HQ\"\t— ✓\u{1}".into(),
        base_url: "https://mosaic-zh.example.org:8443".into(),
        current_key: PublicKey {
            key_id: signing::key_id(&current),
            public_key: b64(current.as_bytes()),
            valid_until: None,
        },
        old_keys: vec![PublicKey {
            key_id: signing::key_id(&old),
            public_key: b64(old.as_bytes()),
            valid_until: Some(T0 + 7 * 24 * 3600),
        }],
        schema_hash: "3f2a9c4e8b1d7065a4c3b2e1f0d9c8b7".into(),
        capabilities: ["connect", "query", "command", "event", "disconnect"]
            .map(String::from)
            .to_vec(),
        issued_at: T0,
    }
}

fn signed_document() -> SignedDocument {
    document::sign_document(identity_document(), &key(SEED_A))
}

fn document_vectors() -> DocumentVectors {
    let doc = identity_document();
    let signed = signed_document();
    let signed_value = serde_json::to_value(&signed).expect("serialises");
    let vk = key(SEED_A).verifying_key();

    let pretty = serde_json::to_string_pretty(&signed).expect("serialises");
    let mut null_valid_until = signed_value.clone();
    null_valid_until["document"]["current_key"]["valid_until"] = Value::Null;
    let mut unknown_member = signed_value.clone();
    unknown_member["document"]["comment"] = json!("not covered by the signature");
    // Key order reversed everywhere (serde_json's Map is ordered, so write by hand).
    let reversed = reverse_keys(&signed_value);
    let must_verify = vec![
        DocumentText {
            name: "pretty-printed".into(),
            why: "the signature covers the canonical form, not the bytes on the wire".into(),
            json: pretty,
        },
        DocumentText {
            name: "members-in-reverse-order".into(),
            why: "member order on the wire does not matter".into(),
            json: reversed,
        },
        DocumentText {
            name: "valid-until-null".into(),
            why: "a null valid_until reads as absent, and absent members are left out of the canonical form".into(),
            json: serde_json::to_string(&null_valid_until).expect("serialises"),
        },
        DocumentText {
            name: "unknown-member-ignored".into(),
            why: "members the receiver does not know are dropped before canonicalising, so they are NOT covered \
                  by the signature; do not rely on them"
                .into(),
            json: serde_json::to_string(&unknown_member).expect("serialises"),
        },
    ];

    let fail = |name: &str, why: &str, s: &SignedDocument| {
        let error = document::verify_document(s).expect_err(name);
        DocumentFailure {
            name: name.into(),
            why: why.into(),
            signed: serde_json::to_value(s).expect("serialises"),
            error,
        }
    };
    let mut must_fail = Vec::new();
    let mut s = signed.clone();
    s.document.base_url = "https://mosaic-zh.example.net:8443".into();
    must_fail.push(fail("base-url-changed", "the document changed after signing", &s));
    let mut s = signed.clone();
    s.document.old_keys[0].valid_until = Some(T0 + 365 * 24 * 3600);
    must_fail.push(fail(
        "old-key-extended",
        "an old key's validity was extended after signing",
        &s,
    ));
    let mut s = signed.clone();
    s.document.issued_at += 1;
    must_fail.push(fail("issued-at-changed", "issued_at is covered", &s));
    let mut s = signed.clone();
    s.document.name = "Zurich \"HQ\"\t— ✓\u{1}".into();
    must_fail.push(fail("name-changed", "one character of the name differs", &s));
    let mut s = signed.clone();
    s.signature = document::sign_document(doc.clone(), &key(SEED_B)).signature;
    must_fail.push(fail(
        "signed-by-old-key",
        "signed with a key other than current_key",
        &s,
    ));
    let mut s = signed.clone();
    s.key_id = doc.old_keys[0].key_id.clone();
    must_fail.push(fail(
        "key-id-names-old-key",
        "the outer key_id must name current_key",
        &s,
    ));
    let mut forged = doc.clone();
    forged.current_key.key_id = "ed25519:AAAAAAAAAAAAAAAA".into();
    let s = document::sign_document(forged, &key(SEED_A));
    must_fail.push(fail(
        "key-id-not-fingerprint",
        "current_key.key_id must be the fingerprint of current_key.public_key",
        &s,
    ));
    let mut bad_key = doc.clone();
    bad_key.current_key.public_key = b64(&[vk.as_bytes().as_slice(), &[0]].concat());
    let s = document::sign_document(bad_key, &key(SEED_A));
    must_fail.push(fail("public-key-33-bytes", "the public key is 32 bytes", &s));
    let mut s = signed.clone();
    s.signature = s.signature[..s.signature.len() - 2].to_string();
    must_fail.push(fail("signature-truncated", "the signature is 64 bytes", &s));

    DocumentVectors {
        about: vec![
            "Identity document vectors for the Mosaic peer protocol (peers/PROTOCOL.md), written by \
             `cargo test --test protocol_vectors -- --ignored regenerate`."
                .into(),
            "signature = ed25519(seed, canonical_json(document)), base64url without padding; `signed` is the \
             JSON served at /.well-known/mosaic and sent in CONNECT."
                .into(),
            "must_fail: `error` is the text verify_document returns.".into(),
        ],
        seed: SEED_A.into(),
        public_key: b64(vk.as_bytes()),
        key_id: signing::key_id(&vk),
        canonical_json: document::canonical_json(&doc),
        document: serde_json::to_value(&doc).expect("serialises"),
        signature: signed.signature.clone(),
        signed: signed_value,
        must_verify,
        must_fail,
    }
}

/// JSON text with every object's members in reverse byte order of their names.
fn reverse_keys(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            keys.reverse();
            let members: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), reverse_keys(&map[k])))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(reverse_keys).collect::<Vec<_>>().join(",")),
        scalar => scalar.to_string(),
    }
}
