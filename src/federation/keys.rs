//! This instance's ed25519 keys: generated on first start, private halves
//! sealed with `MOSAIC_SECRET_KEY`, rotated by `mosaic keys rotate` (the old
//! key keeps verifying until its `valid_until`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use rand::RngCore;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use time::OffsetDateTime;

use super::document::PublicKey;
use super::signing;
use crate::db::Database;
use crate::db::cache::Cache;
use crate::secrets::Sealer;

fn generate() -> SigningKey {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

async fn insert(conn: &mut PgConnection, sealer: &Sealer, key: &SigningKey) -> Result<String> {
    let vk = key.verifying_key();
    let key_id = signing::key_id(&vk);
    sqlx::query("INSERT INTO instance_keys (key_id, public_key, private_key_sealed) VALUES ($1, $2, $3)")
        .bind(&key_id)
        .bind(vk.as_bytes().as_slice())
        .bind(sealer.seal(&key.to_bytes(), key_id.as_bytes()))
        .execute(conn)
        .await?;
    Ok(key_id)
}

/// Creates the first key if there is none, and proves the secret opens the current one.
pub async fn ensure(conn: &mut PgConnection, sealer: &Sealer) -> Result<()> {
    let current: Option<(String, Vec<u8>)> =
        sqlx::query_as("SELECT key_id, private_key_sealed FROM instance_keys WHERE retired_at IS NULL")
            .fetch_optional(&mut *conn)
            .await?;
    match current {
        None => {
            insert(conn, sealer, &generate()).await?;
        }
        Some((key_id, sealed)) => {
            sealer
                .open(&sealed, key_id.as_bytes())
                .map_err(|_| {
                    anyhow!(
                        "the secret key does not open this instance's signing key {key_id}: start with the key this instance was first started with (MOSAIC_SECRET_KEY, secret_key in the configuration file, or the data directory's {}, restored from a backup); a different key cannot read what the old one sealed",
                        crate::secrets::KEY_FILE
                    )
                })?;
        }
    }
    Ok(())
}

/// Retires the current key (it verifies for `grace` more) and makes a new one.
pub async fn rotate(conn: &mut PgConnection, sealer: &Sealer, grace: time::Duration) -> Result<String> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::query("UPDATE instance_keys SET retired_at = now(), valid_until = now() + $1 WHERE retired_at IS NULL")
        .bind(grace)
        .execute(&mut *tx)
        .await?;
    let id = insert(&mut tx, sealer, &generate()).await?;
    tx.commit().await?;
    Ok(id)
}

/// Reads public keys through the application pool, which cannot read the
/// sealed private keys (migration 0030): those are read with the
/// administrative connection once per key id and kept, opened, in memory.
pub struct KeyRing {
    pool: PgPool,
    admin: PgConnectOptions,
    sealer: Sealer,
    cache: Mutex<HashMap<String, SigningKey>>,
    /// The current key's id, cleared when the keys change (a rotation by the
    /// CLI takes effect at once, through `db::cache`).
    pub current_id: Arc<Cache<(), String>>,
}

impl KeyRing {
    pub fn new(db: &Database, sealer: Sealer) -> Self {
        Self {
            pool: db.app.clone(),
            admin: db.admin_options(),
            sealer,
            cache: Mutex::new(HashMap::new()),
            current_id: Arc::new(Cache::new(1)),
        }
    }

    /// The current signing key.
    pub async fn current(&self) -> Result<(String, SigningKey)> {
        let key_id = match self.current_id.get(&()) {
            Some(id) => id,
            None => {
                let generation = self.current_id.generation();
                let id: String = sqlx::query_scalar("SELECT key_id FROM instance_keys WHERE retired_at IS NULL")
                    .fetch_one(&self.pool)
                    .await
                    .context("reading the current signing key's id")?;
                self.current_id.keep(generation, (), id.clone());
                id
            }
        };
        if let Some(k) = self.cache.lock().expect("key cache").get(&key_id) {
            return Ok((key_id, k.clone()));
        }
        let mut admin = PgConnection::connect_with(&self.admin)
            .await
            .context("connecting as the administrative user to read the signing key")?;
        let sealed: Vec<u8> = sqlx::query_scalar("SELECT private_key_sealed FROM instance_keys WHERE key_id = $1")
            .bind(&key_id)
            .fetch_one(&mut admin)
            .await
            .context("reading the current signing key")?;
        let _ = admin.close().await;
        let bytes = self.sealer.open(&sealed, key_id.as_bytes())?;
        let key = SigningKey::from_bytes(
            &bytes
                .try_into()
                .map_err(|_| anyhow!("sealed key has the wrong length"))?,
        );
        self.cache
            .lock()
            .expect("key cache")
            .insert(key_id.clone(), key.clone());
        Ok((key_id, key))
    }

    /// The current public key and the retired ones still within their validity.
    pub async fn public_keys(&self) -> Result<(PublicKey, Vec<PublicKey>)> {
        let rows: Vec<(String, Vec<u8>, Option<OffsetDateTime>)> = sqlx::query_as(
            "SELECT key_id, public_key, valid_until FROM instance_keys
             WHERE retired_at IS NULL OR valid_until > now() ORDER BY created_at DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut current = None;
        let mut old = Vec::new();
        for (key_id, public, valid_until) in rows {
            let k = PublicKey {
                key_id,
                public_key: URL_SAFE_NO_PAD.encode(public),
                valid_until: valid_until.map(OffsetDateTime::unix_timestamp),
            };
            if k.valid_until.is_none() {
                current = Some(k);
            } else {
                old.push(k);
            }
        }
        Ok((current.ok_or_else(|| anyhow!("no current signing key"))?, old))
    }
}
