//! Secrets at rest: sealed with ChaCha20-Poly1305 under a key derived (HKDF-SHA256)
//! from `MOSAIC_SECRET_KEY`. Each purpose gets its own derived key.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

/// A configured secret; never printed.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open sealed secret: wrong MOSAIC_SECRET_KEY or corrupted data")]
pub struct OpenError;

impl Sealer {
    pub fn new(secret: &Secret, purpose: &str) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"mosaic-secrets-v1"), secret.0.as_bytes());
        let mut key = [0u8; 32];
        hk.expand(purpose.as_bytes(), &mut key)
            .expect("32 bytes is a valid HKDF length");
        Self {
            cipher: ChaCha20Poly1305::new(&Key::from(key)),
        }
    }

    /// nonce (12 bytes) || ciphertext+tag. `context` is bound as associated data.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("encryption cannot fail for in-memory buffers");
        out.extend(ct);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < 12 {
            return Err(OpenError);
        }
        let (nonce, ct) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| OpenError)?;
        self.cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad: context })
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_refuses_wrong_key_or_context() {
        let s = Sealer::new(&Secret("correct horse battery staple and more".into()), "test");
        let sealed = s.seal(b"private", b"ctx");
        assert_ne!(&sealed[12..], b"private");
        assert_eq!(s.open(&sealed, b"ctx").unwrap(), b"private");
        assert!(s.open(&sealed, b"other").is_err());
        let wrong = Sealer::new(&Secret("another secret entirely, also long".into()), "test");
        assert!(wrong.open(&sealed, b"ctx").is_err());
        assert!(format!("{:?}", Secret("x".into())).contains("redacted"));
    }
}
