//! Relay-style cursors for keyset pagination.
//!
//! A cursor is a row's position in its list's total order: the ordering it
//! was issued for, the row's sort key (text PostgreSQL casts back exactly),
//! and the tie-breakers, the row's instance and id. The order is global
//! (field, then instance, then id), so one position resumes every source of
//! a merged list and a cursor stays small however many instances it spans.
//!
//! Cursors given to clients carry a MAC keyed from this instance's secret,
//! so a client resumes only where a list of ours stopped. A peer resuming a
//! list for its own client sends the position plain: it cannot know our key,
//! and its request is signed.

use async_graphql::SimpleObject;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::secrets::Secret;

/// The longest `after` accepted; a title as sort key fits with room.
pub const MAX_CURSOR_BYTES: usize = 4096;
/// MAC bytes kept: forging one is a 2^-128 guess.
const MAC_BYTES: usize = 16;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The ordering, e.g. `CREATED_AT:ASC`.
    pub o: String,
    /// The sort key; `None` where the key is the id alone.
    pub k: Option<String>,
    /// The row's instance, in lists that span instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<Uuid>,
    pub i: Uuid,
}

impl Cursor {
    /// The cursor without a MAC, as sent to a peer.
    pub fn plain(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("cursor serialises"))
    }

    fn parse(body: &str, ordering: &str) -> AppResult<Self> {
        let bad = || AppError::BadInput("after: not a cursor issued by this field".into());
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if cursor.o != ordering {
            return Err(AppError::BadInput(format!(
                "after: cursor was issued for ordering {}, not {ordering}",
                cursor.o
            )));
        }
        Ok(cursor)
    }
}

/// Signs and checks the cursors this instance issues.
pub struct CursorKey(Hmac<Sha256>);

impl CursorKey {
    pub fn new(secret: &Secret) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"mosaic-cursors-v1"), secret.0.as_bytes());
        let mut key = [0u8; 32];
        hk.expand(b"cursor mac", &mut key)
            .expect("32 bytes is a valid HKDF length");
        Self(Hmac::new_from_slice(&key).expect("HMAC takes any key length"))
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(body.as_bytes());
        mac
    }

    /// The cursor as a client receives it: `<plain>.<mac>`.
    pub fn seal(&self, cursor: &Cursor) -> String {
        let body = cursor.plain();
        let tag = self.mac(&body).finalize().into_bytes();
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(&tag[..MAC_BYTES]))
    }

    /// Reads `after`: sealed by this instance, or plain when `plain_ok` (a
    /// peer's request). A MAC, when present, must be ours.
    pub fn open(&self, text: &str, ordering: &str, plain_ok: bool) -> AppResult<Cursor> {
        if text.len() > MAX_CURSOR_BYTES {
            return Err(AppError::BadInput(format!(
                "after: a cursor is at most {MAX_CURSOR_BYTES} bytes"
            )));
        }
        let forged = || AppError::BadInput("after: not a cursor this instance issued".into());
        match text.split_once('.') {
            Some((body, tag)) => {
                let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| forged())?;
                if tag.len() != MAC_BYTES {
                    return Err(forged());
                }
                // Compared in constant time by the MAC crate.
                self.mac(body).verify_truncated_left(&tag).map_err(|_| forged())?;
                Cursor::parse(body, ordering)
            }
            None if plain_ok => Cursor::parse(text, ordering),
            None => Err(forged()),
        }
    }
}

#[derive(SimpleObject, Clone, Debug, Default)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

impl PageInfo {
    /// A page's info from its edges' cursors, in order.
    pub fn of<'a>(
        mut cursors: impl DoubleEndedIterator<Item = &'a String>,
        has_next_page: bool,
        has_previous_page: bool,
    ) -> Self {
        let start_cursor = cursors.next().cloned();
        let end_cursor = cursors.next_back().cloned().or_else(|| start_cursor.clone());
        Self {
            has_next_page,
            has_previous_page,
            start_cursor,
            end_cursor,
        }
    }

    /// A page's info from its edges, sealing only the first and the last
    /// cursor: edges seal theirs when selected (`tasks::TaskEdge`).
    pub fn of_edges<E>(
        edges: &[E],
        seal: impl Fn(&E) -> AppResult<String>,
        has_next_page: bool,
        has_previous_page: bool,
    ) -> AppResult<Self> {
        let start_cursor = edges.first().map(&seal).transpose()?;
        let end_cursor = match edges {
            [_, .., last] => Some(seal(last)?),
            _ => start_cursor.clone(),
        };
        Ok(Self {
            has_next_page,
            has_previous_page,
            start_cursor,
            end_cursor,
        })
    }
}

/// Checks `first` against the configured page size; default 20.
pub fn page_size(first: Option<i32>, max: usize) -> AppResult<usize> {
    match first {
        None => Ok(20.min(max)),
        Some(n) if n < 0 => Err(AppError::BadInput("first must not be negative".into())),
        Some(n) if n as usize > max => Err(AppError::BadInput(format!("first must be at most {max}"))),
        Some(n) => Ok(n as usize),
    }
}

/// The keyset condition of a page after `cursor` in the global order
/// (key, instance, id): `expr` is the sort key in SQL (cast to `cast`),
/// `id` the row's id column, `cmp` `>` or `<` by direction, `key` the
/// cursor's key as SQL text, `me` this instance. On this instance's own row
/// it is (key, id) past the cursor's; on another's, rows with an equal key
/// come after it exactly when this instance sorts after that one.
#[allow(clippy::too_many_arguments)]
pub fn push_after(
    q: &mut QueryBuilder<Postgres>,
    cursor: &Cursor,
    me: Uuid,
    expr: &str,
    cast: &str,
    id: &str,
    cmp: &str,
    ascending: bool,
    key: String,
) {
    let at = cursor.n.unwrap_or(me);
    if at == me {
        q.push(format!(" AND ({expr}, {id}) {cmp} ("))
            .push_bind(key)
            .push(format!("::{cast}, "))
            .push_bind(cursor.i)
            .push(")");
    } else {
        let equal_follows = (me.to_string() > at.to_string()) == ascending;
        let op = if equal_follows {
            format!("{cmp}=")
        } else {
            cmp.to_string()
        };
        q.push(format!(" AND {expr} {op} "))
            .push_bind(key)
            .push(format!("::{cast}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> CursorKey {
        CursorKey::new(&Secret(s.repeat(8)))
    }

    #[test]
    fn cursors_round_trip_sealed_and_refuse_forgeries() {
        let c = Cursor {
            o: "TITLE:ASC".into(),
            k: Some("a,b".into()),
            n: Some(Uuid::new_v4()),
            i: Uuid::new_v4(),
        };
        let k = key("one");
        let sealed = k.seal(&c);
        assert_eq!(k.open(&sealed, "TITLE:ASC", false).unwrap(), c);
        assert!(k.open(&sealed, "TITLE:DESC", false).is_err());
        // Another instance's key, a plain cursor from a client, a changed body.
        assert!(key("two").open(&sealed, "TITLE:ASC", true).is_err());
        assert!(k.open(&c.plain(), "TITLE:ASC", false).is_err());
        assert_eq!(k.open(&c.plain(), "TITLE:ASC", true).unwrap(), c);
        let other = Cursor {
            k: Some("z".into()),
            ..c.clone()
        };
        let (_, tag) = sealed.split_once('.').unwrap();
        assert!(k.open(&format!("{}.{tag}", other.plain()), "TITLE:ASC", true).is_err());
        // A truncated MAC is no MAC.
        assert!(
            k.open(&format!("{}.{}", c.plain(), &tag[..4]), "TITLE:ASC", true)
                .is_err()
        );
        assert!(k.open("!!", "TITLE:ASC", true).is_err());
        assert!(k.open(&"a".repeat(MAX_CURSOR_BYTES + 1), "TITLE:ASC", true).is_err());
        assert_eq!(page_size(None, 100).unwrap(), 20);
        assert!(page_size(Some(101), 100).is_err());
        assert!(page_size(Some(-1), 100).is_err());
    }
}
