//! What a grant allows, and which remote users it covers. Pure: no I/O.
//!
//! A grant is a scope document: workspaces, the resources (kinds of data)
//! readable in them and those writable, a cap on rows per page, a rate
//! limit, the remote users it covers, and remote people mapped to local
//! users. [`Terms::checked`] refuses unknown names, an empty scope and
//! contradictions, naming the field (as the GraphQL input spells it).
//!
//! A grant may be limited to named remote users, each named by e-mail address
//! or by global User ID (`User:<instance>:<user>`). The sending instance names
//! the actor in the envelope and includes the address only when it is
//! verified, so an unverified address never matches.

use uuid::Uuid;

use super::protocol::Actor;

/// A kind of data a grant may expose; the policies of its tables require it
/// (migration 0075).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Tasks,
    Projects,
    Events,
    Teams,
    /// Workspace members, and so their users' names and addresses.
    Members,
    Activity,
    Knowledge,
    AgentTasks,
}

impl Resource {
    pub const ALL: [Resource; 8] = [
        Self::Tasks,
        Self::Projects,
        Self::Events,
        Self::Teams,
        Self::Members,
        Self::Activity,
        Self::Knowledge,
        Self::AgentTasks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tasks => "tasks",
            Self::Projects => "projects",
            Self::Events => "events",
            Self::Teams => "teams",
            Self::Members => "members",
            Self::Activity => "activity",
            Self::Knowledge => "knowledge",
            Self::AgentTasks => "agent_tasks",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What happens to a remote person the grant maps to no local user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unmapped {
    /// Runs as a guest of the grant: its workspaces and resources, no user.
    #[default]
    Guest,
    /// Refused (GRANT_DENIED).
    Refuse,
}

impl Unmapped {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guest => "guest",
            Self::Refuse => "refuse",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "guest" => Some(Self::Guest),
            "refuse" => Some(Self::Refuse),
            _ => None,
        }
    }
}

/// A remote person (verified address or global User ID) who acts here as a
/// local user, within the grant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserMapping {
    pub remote: String,
    pub local_user: Uuid,
}

/// What an admin grants a peer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Terms {
    pub workspaces: Vec<Uuid>,
    /// COMMANDs (writes) allowed in those workspaces.
    pub read_write: bool,
    /// Limited to these remote users (None: anyone the peer vouches for).
    pub users: Option<Vec<String>>,
    /// The peer's reads may go on to this instance's own peers. Writes never
    /// do: a COMMAND is not forwarded on a peer's behalf.
    pub forward: bool,
    /// Resources granted (None: all of them, the grants made before scopes).
    pub resources: Option<Vec<Resource>>,
    /// Resources taken out of `resources` (or of all).
    pub excluded_resources: Vec<Resource>,
    /// Of the readable resources, those a read-write grant may change
    /// (None: all readable ones).
    pub write_resources: Option<Vec<Resource>>,
    /// Most rows one page (and one total) may hold for the peer (None: the
    /// instance's page size).
    pub max_rows_per_query: Option<u32>,
    /// The peer's own rate (None: the instance's defaults).
    pub rate_limit: Option<RateLimit>,
    pub user_mappings: Vec<UserMapping>,
    pub unmapped: Unmapped,
}

/// How often a peer may ask: a token bucket of `burst` tokens refilled at
/// `per_second` (a grant without one gets the instance's defaults).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// Most users one grant may name.
pub const MAX_GRANT_USERS: usize = 200;
/// Most remote people one grant may map to local users.
pub const MAX_USER_MAPPINGS: usize = 200;
/// The largest `maxRowsPerQuery` (the largest page size an instance may set).
pub const MAX_ROWS_PER_QUERY: u32 = 10_000;
/// The largest rate and burst a grant may set.
pub const MAX_PER_SECOND: f64 = 100_000.0;
pub const MAX_BURST: u32 = 1_000_000;

impl Terms {
    /// The terms checked and normalised (names de-duplicated and sorted,
    /// addresses lower-cased), or why not, naming the field.
    pub fn checked(&self) -> Result<Terms, String> {
        if self.workspaces.is_empty() {
            return Err("workspaceIds: grant at least one workspace".into());
        }
        let users = self.users.as_deref().map(normalise_users).transpose()?;
        let resources = self.resources.as_deref().map(sorted);
        let excluded = sorted(&self.excluded_resources);
        if let Some(both) = excluded
            .iter()
            .find(|r| resources.as_ref().is_some_and(|rs| rs.contains(r)))
        {
            return Err(format!(
                "excludedResources: '{}' is also in resources; name it in one of them",
                both.as_str()
            ));
        }
        let terms = Terms {
            users,
            resources,
            excluded_resources: excluded,
            write_resources: self.write_resources.as_deref().map(sorted),
            user_mappings: normalise_mappings(&self.user_mappings)?,
            ..self.clone()
        };
        let readable = terms.readable();
        if readable.is_empty() {
            return Err("resources: the scope grants no resource; name at least one".into());
        }
        if let Some(write) = &terms.write_resources {
            if !terms.read_write {
                return Err("writeResources: only a read-write grant (readWrite: true) writes".into());
            }
            if let Some(r) = write.iter().find(|r| !readable.contains(r)) {
                return Err(format!(
                    "writeResources: '{}' is not among the resources granted",
                    r.as_str()
                ));
            }
        }
        if let Some(n) = terms.max_rows_per_query
            && !(1..=MAX_ROWS_PER_QUERY).contains(&n)
        {
            return Err(format!("maxRowsPerQuery: must be within 1..={MAX_ROWS_PER_QUERY}"));
        }
        if let Some(RateLimit { per_second, burst }) = terms.rate_limit {
            if !(per_second > 0.0 && per_second <= MAX_PER_SECOND) {
                return Err(format!(
                    "rateLimit.perSecond: must be above 0 and at most {MAX_PER_SECOND}"
                ));
            }
            if !(1..=MAX_BURST).contains(&burst) {
                return Err(format!("rateLimit.burst: must be within 1..={MAX_BURST}"));
            }
        }
        if terms.unmapped == Unmapped::Refuse && terms.user_mappings.is_empty() {
            return Err("unmapped: REFUSE with no userMappings would refuse everyone; map someone".into());
        }
        Ok(terms)
    }

    /// The resources the peer may read: `resources` (or all) less the excluded.
    pub fn readable(&self) -> Vec<Resource> {
        let granted = self.resources.clone().unwrap_or_else(|| Resource::ALL.to_vec());
        granted
            .into_iter()
            .filter(|r| !self.excluded_resources.contains(r))
            .collect()
    }

    /// The resources a COMMAND may change: none unless read-write.
    pub fn writable(&self) -> Vec<Resource> {
        if !self.read_write {
            return Vec::new();
        }
        let readable = self.readable();
        match &self.write_resources {
            Some(w) => readable.into_iter().filter(|r| w.contains(r)).collect(),
            None => readable,
        }
    }

    /// The local user a vouched remote person acts as, if the grant maps them.
    pub fn mapped_user(&self, actor: Option<&Actor>) -> Option<Uuid> {
        let actor = actor?;
        self.user_mappings
            .iter()
            .find(|m| matches_actor(&m.remote, actor))
            .map(|m| m.local_user)
    }
}

/// Resource names as given (lower case), or the first unknown one, naming `field`.
pub fn parse_resources(field: &str, names: &[String]) -> Result<Vec<Resource>, String> {
    names
        .iter()
        .map(|n| {
            Resource::parse(n.trim()).ok_or_else(|| {
                let known: Vec<&str> = Resource::ALL.iter().map(|r| r.as_str()).collect();
                format!("{field}: unknown resource '{n}'; known: {}", known.join(", "))
            })
        })
        .collect()
}

pub fn resource_names(rs: &[Resource]) -> Vec<String> {
    rs.iter().map(|r| r.as_str().to_string()).collect()
}

fn sorted(rs: &[Resource]) -> Vec<Resource> {
    let mut v = rs.to_vec();
    v.sort();
    v.dedup();
    v
}

fn normalise_mappings(mappings: &[UserMapping]) -> Result<Vec<UserMapping>, String> {
    if mappings.len() > MAX_USER_MAPPINGS {
        return Err(format!("userMappings: at most {MAX_USER_MAPPINGS} per grant"));
    }
    let mut out: Vec<UserMapping> = Vec::with_capacity(mappings.len());
    for m in mappings {
        let remote = normalise_users(std::slice::from_ref(&m.remote))
            .map_err(|e| format!("userMappings.remote{}", e.trim_start_matches("users")))?
            .remove(0);
        if out.iter().any(|o| o.remote == remote) {
            return Err(format!("userMappings.remote: '{remote}' is mapped twice"));
        }
        out.push(UserMapping {
            remote,
            local_user: m.local_user,
        });
    }
    Ok(out)
}

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
    users.iter().any(|u| matches_actor(u, actor))
}

/// Whether a grant's entry (address or global User ID) names `actor`.
fn matches_actor(entry: &str, actor: &Actor) -> bool {
    if is_user_id(entry) {
        entry == actor.user
    } else {
        actor.email.as_deref().is_some_and(|e| entry.eq_ignore_ascii_case(e))
    }
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

    fn scope() -> Terms {
        Terms {
            workspaces: vec![Uuid::nil()],
            ..Terms::default()
        }
    }

    #[test]
    fn an_old_grant_reads_everything_and_writes_when_read_write() {
        let t = scope().checked().unwrap();
        assert_eq!(t.readable(), Resource::ALL.to_vec());
        assert!(t.writable().is_empty());
        let rw = Terms {
            read_write: true,
            ..scope()
        }
        .checked()
        .unwrap();
        assert_eq!(rw.writable(), Resource::ALL.to_vec());
    }

    #[test]
    fn scopes_narrow_by_resources_exclusions_and_write_resources() {
        let t = Terms {
            read_write: true,
            resources: Some(vec![
                Resource::Tasks,
                Resource::Members,
                Resource::Tasks,
                Resource::Projects,
            ]),
            excluded_resources: vec![],
            write_resources: Some(vec![Resource::Tasks]),
            ..scope()
        }
        .checked()
        .unwrap();
        assert_eq!(
            t.readable(),
            vec![Resource::Tasks, Resource::Projects, Resource::Members]
        );
        assert_eq!(t.writable(), vec![Resource::Tasks]);
        let all_but = Terms {
            excluded_resources: vec![Resource::Members, Resource::Activity],
            ..scope()
        }
        .checked()
        .unwrap();
        assert!(!all_but.readable().contains(&Resource::Members));
        assert_eq!(all_but.readable().len(), Resource::ALL.len() - 2);
    }

    #[test]
    fn bad_scopes_are_refused_naming_the_field() {
        let cases: Vec<(Terms, &str)> = vec![
            (Terms::default(), "workspaceIds:"),
            (
                Terms {
                    resources: Some(vec![]),
                    ..scope()
                },
                "resources:",
            ),
            (
                Terms {
                    excluded_resources: Resource::ALL.to_vec(),
                    ..scope()
                },
                "resources:",
            ),
            (
                Terms {
                    resources: Some(vec![Resource::Tasks]),
                    excluded_resources: vec![Resource::Tasks],
                    ..scope()
                },
                "excludedResources:",
            ),
            (
                Terms {
                    write_resources: Some(vec![Resource::Tasks]),
                    ..scope()
                },
                "writeResources:",
            ),
            (
                Terms {
                    read_write: true,
                    resources: Some(vec![Resource::Projects]),
                    write_resources: Some(vec![Resource::Tasks]),
                    ..scope()
                },
                "writeResources:",
            ),
            (
                Terms {
                    max_rows_per_query: Some(0),
                    ..scope()
                },
                "maxRowsPerQuery:",
            ),
            (
                Terms {
                    max_rows_per_query: Some(MAX_ROWS_PER_QUERY + 1),
                    ..scope()
                },
                "maxRowsPerQuery:",
            ),
            (
                Terms {
                    rate_limit: Some(RateLimit {
                        per_second: 0.0,
                        burst: 1,
                    }),
                    ..scope()
                },
                "rateLimit.perSecond:",
            ),
            (
                Terms {
                    rate_limit: Some(RateLimit {
                        per_second: f64::NAN,
                        burst: 1,
                    }),
                    ..scope()
                },
                "rateLimit.perSecond:",
            ),
            (
                Terms {
                    rate_limit: Some(RateLimit {
                        per_second: 1.0,
                        burst: 0,
                    }),
                    ..scope()
                },
                "rateLimit.burst:",
            ),
            (
                Terms {
                    unmapped: Unmapped::Refuse,
                    ..scope()
                },
                "unmapped:",
            ),
            (
                Terms {
                    user_mappings: vec![UserMapping {
                        remote: "nobody".into(),
                        local_user: Uuid::nil(),
                    }],
                    ..scope()
                },
                "userMappings.remote:",
            ),
            (
                Terms {
                    user_mappings: vec![
                        UserMapping {
                            remote: "A@x.org".into(),
                            local_user: Uuid::nil(),
                        },
                        UserMapping {
                            remote: "a@x.org".into(),
                            local_user: Uuid::max(),
                        },
                    ],
                    ..scope()
                },
                "userMappings.remote:",
            ),
        ];
        for (terms, field) in cases {
            let e = terms.checked().unwrap_err();
            assert!(e.starts_with(field), "{terms:?}: {e}");
        }
        let e = parse_resources("resources", &["tasks".into(), "secrets".into()]).unwrap_err();
        assert!(e.starts_with("resources: unknown resource 'secrets'"), "{e}");
        assert_eq!(
            parse_resources("resources", &["agent_tasks".into()]).unwrap(),
            vec![Resource::AgentTasks]
        );
    }

    #[test]
    fn only_a_vouched_mapped_person_acts_as_a_local_user() {
        let local = Uuid::max();
        let t = Terms {
            user_mappings: vec![UserMapping {
                remote: "Ada@Example.org".into(),
                local_user: local,
            }],
            unmapped: Unmapped::Refuse,
            ..scope()
        }
        .checked()
        .unwrap();
        assert_eq!(t.user_mappings[0].remote, "ada@example.org");
        assert_eq!(t.mapped_user(Some(&actor(Some("ADA@example.org")))), Some(local));
        assert_eq!(t.mapped_user(Some(&actor(None))), None, "no verified address");
        assert_eq!(t.mapped_user(None), None);
        let by_id = Terms {
            user_mappings: vec![UserMapping {
                remote: ID.into(),
                local_user: local,
            }],
            ..scope()
        };
        assert_eq!(by_id.mapped_user(Some(&actor(None))), Some(local));
    }
}
