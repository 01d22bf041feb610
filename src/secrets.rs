//! Secrets at rest: sealed with ChaCha20-Poly1305 under a key derived (HKDF-SHA256)
//! from `MOSAIC_SECRET_KEY`. Each purpose gets its own derived key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
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

/// The file in the data directory that holds the key `mosaic serve` made on
/// its first start when none was configured. Back it up with the database:
/// without it, sealed data (signing keys, agent secrets) cannot be opened.
pub const KEY_FILE: &str = "secret.key";

/// Reads the key file at `path`; when it does not exist and `create` is set,
/// first writes a new random key there (mode 0600, never over an existing file).
/// `Ok(None)`: no file, and not asked to create one.
pub fn key_file(path: &Path, create: bool) -> std::io::Result<Option<Secret>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim();
            if key.len() < 32 {
                return Err(std::io::Error::other(format!(
                    "{} holds {} characters; a key has at least 32",
                    path.display(),
                    key.len()
                )));
            }
            return Ok(Some(Secret(key.to_string())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{key}\n").as_bytes())?;
    file.sync_all()?;
    Ok(Some(Secret(key)))
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

    #[test]
    fn key_file_is_made_once_owner_only_and_then_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(KEY_FILE);
        assert!(key_file(&path, false).unwrap().is_none(), "not created unless asked");
        assert!(!path.exists());
        let made = key_file(&path, true).unwrap().unwrap();
        assert!(made.0.len() >= 32);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(key_file(&path, true).unwrap().unwrap().0, made.0, "the same key again");
        assert_eq!(key_file(&path, false).unwrap().unwrap().0, made.0);
        std::fs::write(&path, "short\n").unwrap();
        let e = key_file(&path, true).unwrap_err();
        assert!(e.to_string().contains("at least 32"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short\n", "never overwritten");
    }
}
