//! The signed identity document served at `/.well-known/mosaic` (pure).
//!
//! Signed over canonical JSON: object keys sorted bytewise, no insignificant
//! whitespace, serde_json's escaping. The signature travels beside the
//! document, never inside it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const PROTOCOL: &str = "mosaic/1";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: String,
    /// 32 bytes, unpadded base64url.
    pub public_key: String,
    /// Unix seconds after which the key no longer verifies; absent for the current key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<i64>,
}

impl PublicKey {
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        let bytes = URL_SAFE_NO_PAD.decode(&self.public_key).ok()?;
        VerifyingKey::from_bytes(&bytes.try_into().ok()?).ok()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IdentityDocument {
    pub protocol: String,
    pub instance_id: String,
    pub name: String,
    pub base_url: String,
    pub current_key: PublicKey,
    pub old_keys: Vec<PublicKey>,
    pub schema_hash: String,
    pub capabilities: Vec<String>,
    pub issued_at: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SignedDocument {
    pub document: IdentityDocument,
    pub key_id: String,
    pub signature: String,
}

/// Canonical JSON of any serialisable value.
pub fn canonical_json<T: Serialize>(value: &T) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(&serde_json::to_value(value).expect("serialisable"), &mut out);
    out
}

pub fn sign_document(doc: IdentityDocument, key: &SigningKey) -> SignedDocument {
    let sig = key.sign(canonical_json(&doc).as_bytes());
    SignedDocument {
        key_id: doc.current_key.key_id.clone(),
        signature: URL_SAFE_NO_PAD.encode(sig.to_bytes()),
        document: doc,
    }
}

/// The largest identity document read from anyone.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest base URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Most keys a document may list (the current one and retired ones).
pub const MAX_KEYS: usize = 8;

/// Bounds every field an outsider controls, before anything is stored.
pub fn check_bounds(doc: &IdentityDocument) -> Result<(), String> {
    let short = |field: &str, v: &str, max: usize| {
        if v.len() > max {
            Err(format!("{field} is longer than {max} bytes"))
        } else {
            Ok(())
        }
    };
    let name_chars = doc.name.chars().count();
    if name_chars == 0 || name_chars > MAX_NAME_CHARS || doc.name.chars().any(char::is_control) {
        return Err(format!(
            "name must be 1..={MAX_NAME_CHARS} characters without control characters"
        ));
    }
    short("base_url", &doc.base_url, MAX_URL_BYTES)?;
    short("instance_id", &doc.instance_id, 64)?;
    short("protocol", &doc.protocol, 32)?;
    short("schema_hash", &doc.schema_hash, 64)?;
    if doc.old_keys.len() + 1 > MAX_KEYS {
        return Err(format!("a document lists at most {MAX_KEYS} keys"));
    }
    for k in std::iter::once(&doc.current_key).chain(&doc.old_keys) {
        short("key_id", &k.key_id, 64)?;
        short("public_key", &k.public_key, 64)?;
    }
    if doc.capabilities.len() > 16 {
        return Err("a document lists at most 16 capabilities".into());
    }
    for c in &doc.capabilities {
        short("capability", c, 32)?;
    }
    Ok(())
}

/// Verifies a document against its own current key (self-certifying: the
/// caller decides separately whether it trusts that key).
pub fn verify_document(signed: &SignedDocument) -> Result<(), String> {
    let doc = &signed.document;
    if signed.key_id != doc.current_key.key_id {
        return Err("document is not signed by its current key".into());
    }
    let key = doc
        .current_key
        .verifying_key()
        .ok_or("current key is not an ed25519 public key")?;
    if super::signing::key_id(&key) != doc.current_key.key_id {
        return Err("key id does not match the key's fingerprint".into());
    }
    let bytes: [u8; 64] = URL_SAFE_NO_PAD
        .decode(&signed.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("signature is not 64 bytes of base64url")?;
    key.verify_strict(canonical_json(doc).as_bytes(), &Signature::from_bytes(&bytes))
        .map_err(|_| "bad document signature".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let v: Value = serde_json::from_str("{ \"b\": [1, {\"z\": 1, \"a\": \"\\u00e9\"}], \"a\": null }").unwrap();
        assert_eq!(canonical_json(&v), "{\"a\":null,\"b\":[1,{\"a\":\"é\",\"z\":1}]}");
    }

    #[test]
    fn signed_document_verifies_and_tampering_fails() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let vk = key.verifying_key();
        let doc = IdentityDocument {
            protocol: PROTOCOL.into(),
            instance_id: "i".into(),
            name: "n".into(),
            base_url: "https://127.0.0.1:1".into(),
            current_key: PublicKey {
                key_id: crate::federation::signing::key_id(&vk),
                public_key: URL_SAFE_NO_PAD.encode(vk.as_bytes()),
                valid_until: None,
            },
            old_keys: vec![],
            schema_hash: "h".into(),
            capabilities: vec!["query".into()],
            issued_at: 1,
        };
        let mut signed = sign_document(doc, &key);
        assert_eq!(verify_document(&signed), Ok(()));
        signed.document.base_url = "https://evil".into();
        assert!(verify_document(&signed).is_err());
    }
}
