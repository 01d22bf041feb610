//! What a grant allows, and which remote users it covers. Pure: no I/O.
//!
//! A grant may be limited to named remote users, each named by e-mail address
//! or by global User ID (`User:<instance>:<user>`). The sending instance names
//! the actor in the envelope and includes the address only when it is
//! verified, so an unverified address never matches.

use uuid::Uuid;

use super::protocol::Actor;

/// What an admin grants a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Terms {
    pub workspaces: Vec<Uuid>,
    /// COMMANDs (writes) allowed in those workspaces.
    pub read_write: bool,
    /// Limited to these remote users (None: anyone the peer vouches for).
    pub users: Option<Vec<String>>,
    /// The peer's reads may go on to this instance's own peers. Writes never
    /// do: a COMMAND is not forwarded on a peer's behalf.
    pub forward: bool,
}

/// How often a peer may ask: a token bucket of `burst` tokens refilled at
/// `per_second` (a grant without one gets the instance's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// Most users one grant may name.
pub const MAX_GRANT_USERS: usize = 200;

/// Checks and normalises a grant's user list (addresses lower-cased, IDs as given).
pub fn normalise_users(users: &[String]) -> Result<Vec<String>, String> {
    if users.len() > MAX_GRANT_USERS {
        return Err(format!("users: at most {MAX_GRANT_USERS} users per grant"));
    }
    let mut out: Vec<String> = Vec::with_capacity(users.len());
    for raw in users {
        let u = raw.trim();
        let entry = if is_user_id(u) {
            u.to_string()
        } else if is_address(u) {
            u.to_ascii_lowercase()
        } else {
            return Err(format!(
                "users: '{raw}' is neither an e-mail address nor a global User ID (User:<instance>:<user>)"
            ));
        };
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Whether a grant limited to `users` (None: anyone the peer sends) covers `actor`.
pub fn covers(users: Option<&[String]>, actor: Option<&Actor>) -> bool {
    let Some(users) = users else { return true };
    let Some(actor) = actor else { return false };
    users.iter().any(|u| {
        if is_user_id(u) {
            *u == actor.user
        } else {
            actor.email.as_deref().is_some_and(|e| u.eq_ignore_ascii_case(e))
        }
    })
}

fn is_user_id(s: &str) -> bool {
    let mut parts = s.split(':');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("User"), Some(instance), Some(user), None)
            if Uuid::parse_str(instance).is_ok() && Uuid::parse_str(user).is_ok()
    )
}

fn is_address(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && s.len() <= 320
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "User:0196f2a4-6b1e-7c3d-9a58-2f4e6d8b0c11:0196f2a4-7000-7000-8000-000000000001";

    fn actor(email: Option<&str>) -> Actor {
        Actor {
            user: ID.into(),
            email: email.map(String::from),
        }
    }

    #[test]
    fn addresses_are_lower_cased_and_ids_kept() {
        let got = normalise_users(&[" Ada@Example.org ".into(), ID.into(), "ada@example.org".into()]).unwrap();
        assert_eq!(got, vec!["ada@example.org".to_string(), ID.to_string()]);
    }

    #[test]
    fn garbage_is_refused_naming_the_field() {
        for bad in ["", "ada", "a b@example.org", "@example.org", "a@", "User:1:2", "a@b@c"] {
            let e = normalise_users(&[bad.into()]).unwrap_err();
            assert!(e.starts_with("users:"), "{bad}: {e}");
        }
        let many: Vec<String> = (0..=MAX_GRANT_USERS).map(|i| format!("u{i}@example.org")).collect();
        assert!(normalise_users(&many).is_err());
    }

    #[test]
    fn only_a_verified_address_or_the_id_matches() {
        let by_mail = vec!["ada@example.org".to_string()];
        assert!(covers(Some(&by_mail), Some(&actor(Some("ADA@example.org")))));
        assert!(!covers(Some(&by_mail), Some(&actor(None))), "no verified address");
        assert!(!covers(Some(&by_mail), None), "no actor");
        let by_id = vec![ID.to_string()];
        assert!(covers(Some(&by_id), Some(&actor(None))));
        let mut other = actor(Some("ada@example.org"));
        other.user = ID.replace("0001", "0002");
        assert!(!covers(Some(&by_id), Some(&other)));
        assert!(covers(None, None), "an unlimited grant");
        assert!(
            !covers(Some(&[]), Some(&actor(Some("ada@example.org")))),
            "an empty list covers nobody"
        );
    }
}
