//! Relay-style cursors for keyset pagination.
//!
//! A cursor carries the ordering it was issued for, the row's sort key (as
//! PostgreSQL renders it, so it binds back exactly) and the row's id (the
//! tie-breaker). Resuming with a cursor of another ordering is refused.

use async_graphql::SimpleObject;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The ordering, e.g. `CREATED_AT:ASC`.
    pub o: String,
    /// The sort key; `None` where the key is the id alone.
    pub k: Option<String>,
    pub i: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("cursor serialises"))
    }

    pub fn decode(text: &str, ordering: &str) -> AppResult<Self> {
        let bad = || AppError::BadInput("after: not a cursor issued by this field".into());
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
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

#[derive(SimpleObject, Clone, Debug, Default)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_orderings() {
        let c = Cursor {
            o: "TITLE:ASC".into(),
            k: Some("a,b".into()),
            i: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&c.encode(), "TITLE:ASC").unwrap(), c);
        assert!(Cursor::decode(&c.encode(), "TITLE:DESC").is_err());
        assert!(Cursor::decode("!!", "TITLE:ASC").is_err());
        assert_eq!(page_size(None, 100).unwrap(), 20);
        assert!(page_size(Some(101), 100).is_err());
        assert!(page_size(Some(-1), 100).is_err());
    }
}
