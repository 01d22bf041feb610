//! Who may administer an instance: every instance-admin operation (peers,
//! grants, users, agents) against every kind of caller, as one table walked by one
//! test, like `tests/roles.rs` does for workspace roles.
//!
//! The instance under test is the *hub*. Beside it run two more instances:
//! the *grantee*, which holds an active read-write grant on a hub workspace
//! for the whole test (it is the peer column), and the *fixture peer*, the
//! target of the peer operations, whose peering with the hub is brought into
//! the state each operation needs before every cell (pending for approve and
//! reject, active for suspend and revoke, no open request for connect), by
//! the same service calls the admin API uses.
//!
//! Columns (callers), all sending the same GraphQL document to the hub:
//! an instance admin with an API token; an instance admin signed in through
//! break-glass (session cookie and `x-mosaic-csrf`); the same session cookie
//! without the CSRF header; a non-admin who owns a workspace; a non-admin
//! with no workspace; nobody (no credential); and the grantee instance
//! sending the operation as a signed QUERY (COMMAND for mutations, after
//! checking that a mutation sent as QUERY is refused), acting for a user
//! whose address is that of the hub's own admin — peers are never admins.
//!
//! Every cell: the fixture is prepared and must not already show the
//! operation's effect; the content of every tenant and instance table
//! (users, workspaces, ..., peers, peer_audit, agent_config, agents,
//! sessions, auth_audit, ...) is digested before and after. An allowed
//! mutation must answer the expected data and take effect; an allowed query
//! must answer the expected data and change nothing; every refused cell must
//! answer no data and change nothing.
//!
//! `agentLogs` needs a Docker engine; the hub points at a socket that does not
//! exist, so an admin gets past the permission check and then AGENT_UNAVAILABLE
//! (`EngineDown`), deterministically, with or without Docker on the machine.
//!
//! Adding an operation: one `Op` variant, one
//! line in `RULES`, one arm in `Op::spec` (document, fixture, effect, answer);
//! a new kind of fixture adds a `Needs` variant and its arm in `prepare`.

use crate::common;

use common::{TestApp, code, codes, fingerprint, local_id, peer, spawn_app, spawn_instance_with};
use mosaic::federation::protocol::{self, Actor, Envelope, SubRequest};
use mosaic::federation::registry;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

/// The hub's Docker engine: a socket that does not exist.
const DOCKER_HOST: &str = "unix:///nonexistent/mosaic-admin-roles.sock";
/// The hub's agent image (seeded into `agent_config` at its first start).
const AGENT_IMAGE: &str = "mosaic-admin-roles-agent:test";
const ADMIN_EMAIL: &str = "admin@hub.example";
const BREAK_GLASS_EMAIL: &str = "root@hub.example";
const BREAK_GLASS_PASSWORD: &str = "correct horse battery staple";
const OWNER_EMAIL: &str = "owner@hub.example";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Runs: HTTP 200, no error, the expected data (and, for a mutation, its effect).
    Allowed,
    /// Past the admin check, then AGENT_UNAVAILABLE: the hub has no Docker engine.
    EngineDown,
    /// HTTP 200, GraphQL error FORBIDDEN alone, no data.
    Forbidden,
    /// HTTP 401 UNAUTHENTICATED: no GraphQL runs.
    Unauthenticated,
    /// HTTP 403 CSRF_TOKEN_INVALID: a session cookie without `x-mosaic-csrf`.
    CsrfRefused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Instance admin, API token.
    AdminToken,
    /// Instance admin signed in at `/auth/breakglass`: cookie + CSRF header.
    BreakGlass,
    /// The same session cookie, without the CSRF header.
    SessionNoCsrf,
    /// Not an admin; owns the hub workspace the grantee is granted.
    Owner,
    /// Not an admin; member of no workspace.
    NoWorkspace,
    /// No credential at all.
    Anonymous,
    /// The grantee instance, signed QUERY / COMMAND under its active read-write grant.
    Peer,
}

use Outcome::{Allowed, CsrfRefused, EngineDown, Forbidden, Unauthenticated};
use Role::*;

/// The columns of `RULES`, in order.
const ROLES: [Role; 7] = [
    AdminToken,
    BreakGlass,
    SessionNoCsrf,
    Owner,
    NoWorkspace,
    Anonymous,
    Peer,
];

#[derive(Clone, Copy, Debug)]
enum Op {
    Peers,
    GrantOptions,
    Agents,
    AgentConfig,
    AgentLogs,
    ConnectPeer,
    ApprovePeer,
    RejectPeer,
    SuspendPeer,
    RevokePeer,
    UpdateAgentConfig,
    Users,
    AuthAudit,
    MySessions,
    SetUserAdmin,
    DeactivateUser,
    ReactivateUser,
}

use Op::*;

/// Expected outcome per operation and caller. Every operation here starts
/// with `RequestContext::admin()`: a local user who is not an instance admin
/// gets FORBIDDEN, a peer gets FORBIDDEN from `RequestContext::user()`
/// whatever user it claims to act for, and authentication (token, or session
/// cookie with its CSRF header) is checked before any GraphQL runs.
#[rustfmt::skip]
const RULES: &[(Op, [Outcome; 7])] = &[
    //                   admin token admin session  no CSRF      owner      no workspace anonymous        peer
    // peers: instance admins only (PeerQuery::peers)
    (Peers,             [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // grantOptions: instance admins only (PeerQuery::grant_options)
    (GrantOptions,      [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // agents: instance admins only (AgentQuery::agents)
    (Agents,            [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // agentConfig: instance admins only, though RLS lets every local user read the row
    (AgentConfig,       [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // agentLogs: instance admins only; an admin then needs the engine
    (AgentLogs,         [EngineDown, EngineDown,    CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // connectPeer: instance admins only (PeerMutation::connect_peer)
    (ConnectPeer,       [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // approvePeer: instance admins only; grants workspaces they need not be members of
    (ApprovePeer,       [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // rejectPeer: instance admins only
    (RejectPeer,        [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // suspendPeer: instance admins only
    (SuspendPeer,       [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // revokePeer: instance admins only
    (RevokePeer,        [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // updateAgentConfig: instance admins only (and policy agent_config_change)
    (UpdateAgentConfig, [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // users: instance admins only (UserAdminQuery::users, and admin_users() checks again)
    (Users,             [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // authAudit: instance admins only (AuthAuditQuery, and admin_auth_audit checks again)
    (AuthAudit,         [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // mySessions: every local user, their own only; never a peer (RequestContext::user)
    (MySessions,        [Allowed,    Allowed,       CsrfRefused, Allowed,   Allowed,     Unauthenticated, Forbidden]),
    // setUserAdmin: instance admins only (admin_set_user_admin checks again)
    (SetUserAdmin,      [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    // deactivateUser / reactivateUser: instance admins only (admin_set_user_active checks again)
    (DeactivateUser,    [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
    (ReactivateUser,    [Allowed,    Allowed,       CsrfRefused, Forbidden, Forbidden,   Unauthenticated, Forbidden]),
];

/// The state the fixture peer's peering with the hub must be in before a cell.
#[derive(Clone, Copy, Debug)]
enum Needs {
    Nothing,
    /// It asked to connect to the hub and waits (hub's inbound state `pending`).
    PendingPeer,
    /// It holds an active grant on the hub (inbound `active`).
    ActivePeer,
    /// The hub has no open request to it (outbound not `requested`).
    NoRequestToPeer,
    /// `$target` is an active user who is not an admin.
    PlainTarget,
    /// `$target` is deactivated.
    DeactivatedTarget,
}

/// Everything one operation needs, in one place.
struct Spec {
    /// The GraphQL document. Variables: `$peer` the fixture peer's instance
    /// id, `$url` its base URL, `$ws` a hub workspace (global ID), `$user` a
    /// hub user with an agent (global ID), `$target` a plain hub user no
    /// column acts as (global ID; for user administration), `$n` a number
    /// unique to the cell.
    document: &'static str,
    needs: Needs,
    /// For a mutation: SQL on the hub, true once it took effect. Parameters:
    /// $1 the fixture peer's id, $2 `$user`'s local id, $3 `$n`, $4 `$target`'s local id.
    effect: Option<&'static str>,
    /// Whether an allowed answer's `data` is right.
    answer: fn(&Value, &Vars) -> bool,
}

impl Op {
    fn spec(self) -> Spec {
        match self {
            Peers => Spec {
                document: "{ peers { id inboundState grant { readWrite } } }",
                needs: Needs::Nothing,
                effect: None,
                answer: |d, v| {
                    d["peers"].as_array().is_some_and(|all| {
                        all.iter().any(|p| {
                            p["id"] == v.grantee.as_str()
                                && p["inboundState"] == "active"
                                && p["grant"]["readWrite"] == true
                        })
                    })
                },
            },
            GrantOptions => Spec {
                document: "{ grantOptions { resources maxRowsPerQuery maxPerSecond maxBurst maxUsers maxUserMappings } }",
                needs: Needs::Nothing,
                effect: None,
                // The one list of resources and the bounds Terms::checked enforces.
                answer: |d, _| {
                    use mosaic::federation::grant::{self, Resource};
                    let names: Vec<&str> = Resource::ALL.iter().map(|r| r.as_str()).collect();
                    d["grantOptions"]
                        == json!({
                            "resources": names,
                            "maxRowsPerQuery": grant::MAX_ROWS_PER_QUERY,
                            "maxPerSecond": grant::MAX_PER_SECOND,
                            "maxBurst": grant::MAX_BURST,
                            "maxUsers": grant::MAX_GRANT_USERS,
                            "maxUserMappings": grant::MAX_USER_MAPPINGS,
                        })
                },
            },
            Agents => Spec {
                document: "{ agents { userId email } }",
                needs: Needs::Nothing,
                effect: None,
                answer: |d, v| d["agents"] == json!([{ "userId": v.user, "email": OWNER_EMAIL }]),
            },
            AgentConfig => Spec {
                document: "{ agentConfig { image version } }",
                needs: Needs::Nothing,
                effect: None,
                answer: |d, _| d["agentConfig"]["image"] == AGENT_IMAGE && d["agentConfig"]["version"].is_i64(),
            },
            AgentLogs => Spec {
                document: "query($user: ID!) { agentLogs(userId: $user, tail: 10) }",
                needs: Needs::Nothing,
                effect: None,
                answer: |d, _| d["agentLogs"].is_array(),
            },
            ConnectPeer => Spec {
                document: "mutation($url: String!) { connectPeer(url: $url) { id outboundState } }",
                needs: Needs::NoRequestToPeer,
                effect: Some("SELECT EXISTS (SELECT 1 FROM peers WHERE id = $1 AND outbound_state = 'requested')"),
                answer: |d, v| d["connectPeer"] == json!({ "id": v.peer, "outboundState": "requested" }),
            },
            ApprovePeer => Spec {
                document: "mutation($peer: String!, $ws: ID!) { approvePeer(input: {peerId: $peer, workspaceIds: [$ws]}) { id inboundState grant { workspaces readWrite } } }",
                needs: Needs::PendingPeer,
                effect: Some("SELECT EXISTS (SELECT 1 FROM peers WHERE id = $1 AND inbound_state = 'active')"),
                answer: |d, v| {
                    d["approvePeer"]
                        == json!({
                            "id": v.peer,
                            "inboundState": "active",
                            "grant": { "workspaces": [v.ws], "readWrite": false },
                        })
                },
            },
            RejectPeer => Spec {
                document: "mutation($peer: String!) { rejectPeer(peerId: $peer) { id inboundState } }",
                needs: Needs::PendingPeer,
                effect: Some("SELECT EXISTS (SELECT 1 FROM peers WHERE id = $1 AND inbound_state = 'rejected')"),
                answer: |d, v| d["rejectPeer"] == json!({ "id": v.peer, "inboundState": "rejected" }),
            },
            SuspendPeer => Spec {
                document: "mutation($peer: String!) { suspendPeer(peerId: $peer) { id inboundState } }",
                needs: Needs::ActivePeer,
                effect: Some("SELECT EXISTS (SELECT 1 FROM peers WHERE id = $1 AND inbound_state = 'suspended')"),
                answer: |d, v| d["suspendPeer"] == json!({ "id": v.peer, "inboundState": "suspended" }),
            },
            RevokePeer => Spec {
                document: "mutation($peer: String!) { revokePeer(peerId: $peer) { id inboundState outboundState } }",
                needs: Needs::ActivePeer,
                effect: Some(
                    "SELECT EXISTS (SELECT 1 FROM peers WHERE id = $1 AND inbound_state = 'revoked' AND outbound_state = 'revoked')",
                ),
                answer: |d, v| {
                    d["revokePeer"] == json!({ "id": v.peer, "inboundState": "revoked", "outboundState": "revoked" })
                },
            },
            UpdateAgentConfig => Spec {
                document: "mutation($n: Int!) { updateAgentConfig(input: {idleTimeoutSeconds: $n}) { idleTimeoutSeconds } }",
                needs: Needs::Nothing,
                effect: Some("SELECT idle_timeout_s = $3 FROM agent_config"),
                answer: |d, v| d["updateAgentConfig"]["idleTimeoutSeconds"] == v.n,
            },
            Users => Spec {
                document: "{ users { id email } }",
                needs: Needs::Nothing,
                effect: None,
                answer: |d, v| {
                    d["users"]
                        .as_array()
                        .is_some_and(|all| all.len() == 5 && all.iter().any(|u| u["id"] == v.target.as_str()))
                },
            },
            AuthAudit => Spec {
                document: "{ authAudit(action: \"breakglass_login\") { action email } }",
                needs: Needs::Nothing,
                effect: None,
                answer: |d, _| {
                    d["authAudit"]
                        .as_array()
                        .is_some_and(|all| !all.is_empty() && all.iter().all(|e| e["email"] == BREAK_GLASS_EMAIL))
                },
            },
            MySessions => Spec {
                document: "{ mySessions { current } }",
                needs: Needs::Nothing,
                effect: None,
                // Only the break-glass column signs in with a session: one, and current.
                answer: |d, _| d["mySessions"] == json!([]) || d["mySessions"] == json!([{ "current": true }]),
            },
            SetUserAdmin => Spec {
                document: "mutation($target: ID!) { setUserAdmin(userId: $target, admin: true) { id isAdmin } }",
                needs: Needs::PlainTarget,
                effect: Some("SELECT is_admin FROM users WHERE id = $4"),
                answer: |d, v| d["setUserAdmin"] == json!({ "id": v.target, "isAdmin": true }),
            },
            DeactivateUser => Spec {
                document: "mutation($target: ID!) { deactivateUser(userId: $target) { id deactivatedAt } }",
                needs: Needs::PlainTarget,
                effect: Some("SELECT deactivated_at IS NOT NULL FROM users WHERE id = $4"),
                answer: |d, v| {
                    d["deactivateUser"]["id"] == v.target.as_str() && d["deactivateUser"]["deactivatedAt"].is_string()
                },
            },
            ReactivateUser => Spec {
                document: "mutation($target: ID!) { reactivateUser(userId: $target) { id deactivatedAt } }",
                needs: Needs::DeactivatedTarget,
                effect: Some("SELECT deactivated_at IS NULL FROM users WHERE id = $4"),
                answer: |d, v| d["reactivateUser"] == json!({ "id": v.target, "deactivatedAt": null }),
            },
        }
    }

    fn is_mutation(self) -> bool {
        self.spec().document.starts_with("mutation")
    }
}

/// What the operations refer to in one cell.
struct Vars {
    /// The fixture peer's instance id.
    peer: String,
    /// The fixture peer's base URL.
    url: String,
    /// The grantee's instance id (never a target).
    grantee: String,
    /// The hub workspace granted to the grantee (global ID).
    ws: String,
    /// The owner, who has an agent row on the hub (global ID).
    user: String,
    /// A plain user no column acts as (global ID).
    target: String,
    /// Unique to the cell.
    n: i32,
}

impl Vars {
    fn json(&self) -> Value {
        json!({ "peer": self.peer, "url": self.url, "ws": self.ws, "user": self.user, "target": self.target, "n": self.n })
    }
}

/// Instance-level tables, digested beside `common::TENANT_TABLES`.
const INSTANCE_TABLES: [&str; 11] = [
    "instance_keys",
    "peers",
    "peer_audit",
    "agent_config",
    "agents",
    "agent_secrets",
    "sessions",
    "local_credentials",
    "auth_audit",
    "user_identities",
    "oidc_logins",
];

/// The whole content of every tenant and instance table (api_tokens aside:
/// authenticating touches `last_used_at`).
async fn snapshot(conn: &mut PgConnection) -> Vec<(String, String)> {
    let mut out = fingerprint(conn).await;
    for table in INSTANCE_TABLES {
        let digest: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {table} x"
        )))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        out.push((table.to_string(), digest));
    }
    out
}

/// The three instances and the hub's callers.
struct World {
    hub: TestApp,
    grantee: TestApp,
    fixture: TestApp,
    /// The hub workspace the owner owns and the grantee is granted.
    ws: String,
    owner: Uuid,
    target: Uuid,
    admin_token: String,
    owner_token: String,
    loner_token: String,
    /// `mosaic_session=...` of the break-glass admin, and its CSRF token.
    session_cookie: String,
    csrf: String,
    /// The grantee's user the signed requests act for.
    actor: Actor,
}

fn no_docker(c: &mut mosaic::config::Config) {
    c.agents.docker_host = DOCKER_HOST.into();
    c.agents.image = AGENT_IMAGE.into();
}

/// Creates a user (admin or not) and an API token for them.
async fn user_with_token(app: &TestApp, email: &str, admin: bool) -> (Uuid, String) {
    let mut conn = app.admin().await;
    let id = mosaic::auth::users::create(&mut conn, email, None, admin)
        .await
        .unwrap();
    let token = mosaic::auth::tokens::create(&mut conn, email, None).await.unwrap();
    (id, token)
}

/// Signs in at `/auth/breakglass`; returns the `Cookie` header and the CSRF token.
async fn break_glass_session(hub: &TestApp) -> (String, String) {
    let s = hub.break_glass_session(BREAK_GLASS_EMAIL, BREAK_GLASS_PASSWORD).await;
    assert_eq!(s.body["user"], json!({ "email": BREAK_GLASS_EMAIL, "isAdmin": true }));
    (s.cookie, s.csrf)
}

async fn world() -> World {
    let (hub, grantee, fixture) = tokio::join!(
        spawn_instance_with("hub", no_docker),
        spawn_instance_with("grantee", no_docker),
        spawn_instance_with("fixture", no_docker),
    );
    let (_, admin_token) = user_with_token(&hub, ADMIN_EMAIL, true).await;
    let (owner, owner_token) = user_with_token(&hub, OWNER_EMAIL, false).await;
    let (_, loner_token) = user_with_token(&hub, "loner@hub.example", false).await;
    let (target, _) = user_with_token(&hub, "target@hub.example", false).await;
    let ws = hub.create_workspace(&owner_token, "shared").await;
    // The owner has (had) an agent, so `agents` has a row to show.
    sqlx::query("INSERT INTO agents (user_id, container_name) VALUES ($1, 'mosaic-agent-admin-roles')")
        .bind(owner)
        .execute(&mut hub.admin().await)
        .await
        .unwrap();
    let (session_cookie, csrf) = break_glass_session(&hub).await;
    peer(&grantee, &hub, &[&ws], true).await;
    // The same person administers the grantee, with the hub admin's address.
    let (grantee_admin, _) = user_with_token(&grantee, ADMIN_EMAIL, true).await;
    let actor = Actor {
        user: format!("User:{}:{grantee_admin}", grantee.state.instance_id),
        email: Some(ADMIN_EMAIL.into()),
    };
    let w = World {
        hub,
        grantee,
        fixture,
        ws,
        owner,
        target,
        admin_token,
        owner_token,
        loner_token,
        session_cookie,
        csrf,
        actor,
    };
    // The hub re-reads a peer's keys at its first signed request: let that
    // happen now, not inside a cell.
    let warm = w.signed(protocol::QUERY_PATH, "{ __typename }", &json!({})).await;
    assert_eq!(warm, (200, json!({ "data": { "__typename": "QueryRoot" } })));
    w
}

impl World {
    fn vars(&self, n: i32) -> Vars {
        Vars {
            peer: self.fixture.state.instance_id.to_string(),
            url: self.fixture.base.clone(),
            grantee: self.grantee.state.instance_id.to_string(),
            ws: self.ws.clone(),
            user: format!("User:{}:{}", self.hub.state.instance_id, self.owner),
            target: format!("User:{}:{}", self.hub.state.instance_id, self.target),
            n,
        }
    }

    /// Sends `document` to the hub as `role`; (HTTP status, body).
    async fn send(&self, role: Role, op: Op, vars: &Value) -> (u16, Value) {
        let document = op.spec().document;
        if role == Peer {
            if !op.is_mutation() {
                return self.signed(protocol::QUERY_PATH, document, vars).await;
            }
            // A mutation never travels as QUERY, whatever it is.
            let (status, body) = self.signed(protocol::QUERY_PATH, document, vars).await;
            assert_eq!(
                (status, code(&body).as_str()),
                (400, "BAD_REQUEST"),
                "{op:?} as QUERY: {body}"
            );
            return self.signed(protocol::COMMAND_PATH, document, vars).await;
        }
        let request = self
            .hub
            .client
            .post(format!("{}/graphql", self.hub.base))
            .json(&json!({ "query": document, "variables": vars }));
        let request = match role {
            AdminToken => request.bearer_auth(&self.admin_token),
            BreakGlass => request
                .header(reqwest::header::COOKIE, &self.session_cookie)
                .header("x-mosaic-csrf", &self.csrf),
            SessionNoCsrf => request.header(reqwest::header::COOKIE, &self.session_cookie),
            Owner => request.bearer_auth(&self.owner_token),
            NoWorkspace => request.bearer_auth(&self.loner_token),
            Anonymous => request,
            Peer => unreachable!("answered above"),
        };
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// A QUERY or COMMAND from the grantee, signed with its current key.
    async fn signed(&self, path: &str, document: &str, vars: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(&SubRequest {
            query: document.to_string(),
            variables: vars.clone(),
            envelope: Envelope {
                visited: vec![self.grantee.state.instance_id.to_string()],
                exclude: Vec::new(),
                hop_limit: 3,
                deadline_ms: 5_000,
                actor: Some(self.actor.clone()),
                traceparent: None,
            },
        })
        .unwrap();
        let response = common::post_signed(&self.grantee, &self.hub, path, body).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// The hub's inbound and outbound states for the fixture peer (None: unknown to it).
    async fn fixture_states(&self) -> Option<(String, String)> {
        registry::get(&self.hub.state.federation.pool, self.fixture.state.instance_id)
            .await
            .unwrap()
            .map(|p| (p.inbound_state.to_string(), p.outbound_state.to_string()))
    }

    /// The hub's inbound state for the fixture peer.
    async fn inbound(&self) -> Option<String> {
        self.fixture_states().await.map(|s| s.0)
    }

    /// Brings the fixture peer's peering with the hub into the state `needs` says.
    async fn prepare(&self, needs: Needs) {
        let hub = &self.hub.state.federation;
        let fixture = &self.fixture.state.federation;
        match needs {
            Needs::Nothing => {}
            Needs::PendingPeer => {
                if self.inbound().await.as_deref() == Some("pending") {
                    return;
                }
                if matches!(self.inbound().await.as_deref(), Some("active" | "suspended")) {
                    // A CONNECT leaves these as they are.
                    hub.reject(fixture.instance_id, "fixture").await.unwrap();
                }
                fixture.connect(&self.hub.base, "fixture").await.unwrap();
                assert_eq!(self.inbound().await.as_deref(), Some("pending"));
            }
            Needs::ActivePeer => {
                if self.inbound().await.as_deref() == Some("active") {
                    return;
                }
                if !matches!(self.inbound().await.as_deref(), Some("pending" | "suspended")) {
                    fixture.connect(&self.hub.base, "fixture").await.unwrap();
                }
                hub.approve(
                    fixture.instance_id,
                    &common::grant(&[local_id(&self.ws)], false, None),
                    "fixture",
                )
                .await
                .unwrap();
                assert_eq!(self.inbound().await.as_deref(), Some("active"));
            }
            Needs::NoRequestToPeer => {
                if self.fixture_states().await.is_some_and(|s| s.1 == "requested") {
                    // The fixture peer turns the request down (EVENT rejected).
                    fixture.reject(hub.instance_id, "fixture").await.unwrap();
                }
                let outbound = self.fixture_states().await.map(|s| s.1);
                assert_ne!(outbound.as_deref(), Some("requested"));
            }
            Needs::PlainTarget | Needs::DeactivatedTarget => {
                let deactivated = matches!(needs, Needs::DeactivatedTarget);
                sqlx::query(
                    "UPDATE users SET is_admin = false, \
                     deactivated_at = CASE WHEN $2 THEN now() END WHERE id = $1",
                )
                .bind(self.target)
                .bind(deactivated)
                .execute(&mut self.hub.admin().await)
                .await
                .unwrap();
                self.hub.caught_up().await;
            }
        }
    }

    async fn took_effect(&self, conn: &mut PgConnection, sql: Option<&'static str>, vars: &Vars) -> bool {
        let Some(sql) = sql else { return false };
        sqlx::query_scalar(sql)
            .bind(self.fixture.state.instance_id)
            .bind(self.owner)
            .bind(vars.n)
            .bind(self.target)
            .fetch_one(conn)
            .await
            .unwrap()
    }
}

/// Which outcome an answer is, if any.
fn outcome(status: u16, body: &Value) -> Option<Outcome> {
    match (status, codes(body).as_slice()) {
        (200, []) => Some(Allowed),
        (200, [c]) if c == "FORBIDDEN" => Some(Forbidden),
        (200, [c]) if c == "AGENT_UNAVAILABLE" => Some(EngineDown),
        (401, [c]) if c == "UNAUTHENTICATED" => Some(Unauthenticated),
        (403, [c]) if c == "CSRF_TOKEN_INVALID" => Some(CsrfRefused),
        _ => None,
    }
}

/// The message a refusal must carry.
fn refusal_message(outcome: Outcome, role: Role) -> String {
    match (outcome, role) {
        (Forbidden, Peer) => "not available to peer instances".into(),
        (Forbidden, _) => "only instance administrators may do this".into(),
        (EngineDown, _) => format!("agents are unavailable: the Docker engine at {DOCKER_HOST} is not reachable"),
        (Unauthenticated, _) => "authentication required".into(),
        (CsrfRefused, _) => "a request authenticated by the session cookie must send the session's CSRF token".into(),
        (Allowed, _) => unreachable!("not a refusal"),
    }
}

#[tokio::test]
async fn every_caller_may_do_exactly_the_instance_administration_it_should() {
    let w = world().await;
    let mut db = w.hub.admin().await;
    let mut mismatches = Vec::new();
    let mut n = 1000;
    for (op, outcomes) in RULES {
        let spec = op.spec();
        for (role, expected) in ROLES.iter().zip(outcomes) {
            n += 1;
            let cell = format!("{op:?} as {role:?}");
            w.prepare(spec.needs).await;
            let vars = w.vars(n);
            assert!(
                !w.took_effect(&mut db, spec.effect, &vars).await,
                "{cell}: the fixture already shows the effect"
            );
            let before = snapshot(&mut db).await;
            let (status, body) = w.send(*role, *op, &vars.json()).await;
            let after = snapshot(&mut db).await;
            let effect = w.took_effect(&mut db, spec.effect, &vars).await;
            let Some(got) = outcome(status, &body) else {
                mismatches.push(format!("{cell}: expected {expected:?}, got HTTP {status} {body}"));
                continue;
            };
            if got != *expected {
                mismatches.push(format!(
                    "{cell}: expected {expected:?}, got {got:?}: HTTP {status} {body}"
                ));
                continue;
            }
            if got == Allowed {
                assert!((spec.answer)(&body["data"], &vars), "{cell}: wrong answer {body}");
                match spec.effect {
                    Some(_) => {
                        assert!(effect, "{cell}: answered but did nothing: {body}");
                        assert_ne!(before, after, "{cell}: answered but changed nothing");
                    }
                    None => assert_eq!(before, after, "{cell}: a query changed data"),
                }
            } else {
                let message = body["errors"][0]["message"].as_str().unwrap_or_default();
                let wanted = refusal_message(got, *role);
                assert!(
                    message.starts_with(&wanted),
                    "{cell}: message '{message}', wanted '{wanted}...'"
                );
                assert!(body["data"].is_null(), "{cell}: a refusal carries no data: {body}");
                assert!(!effect, "{cell}: refused but took effect");
                assert_eq!(before, after, "{cell}: refused but changed data");
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    w.hub.stop().await;
    w.grantee.stop().await;
    w.fixture.stop().await;
}

/// A mutation in a GET /graphql URL never runs, even with an admin's token:
/// a browser gets the IDE page, a GraphQL client 405 (tests/graphql_over_http.rs).
#[tokio::test]
async fn graphql_over_get_never_runs_a_mutation() {
    let app = spawn_app().await;
    let (_, token) = user_with_token(&app, ADMIN_EMAIL, true).await;
    let mut db = app.admin().await;
    let mutation = "mutation { createWorkspace(input: {name: \"x\"}) { id } }";
    let named_x = "SELECT count(*) FROM workspaces WHERE name = 'x'";
    let before = snapshot(&mut db).await;
    for accept in ["text/html", "application/json", "application/graphql-response+json"] {
        let url = reqwest::Url::parse_with_params(&format!("{}/graphql", app.base), [("query", mutation)]).unwrap();
        let r = app
            .client
            .get(url)
            .bearer_auth(&token)
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let content_type = r.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
        let text = r.text().await.unwrap();
        if accept == "text/html" {
            assert_eq!(status, 200, "Accept: {accept}");
            assert_eq!(content_type, "text/html; charset=utf-8", "Accept: {accept}");
            assert!(text.contains("<html"), "Accept: {accept}: not the IDE page");
        } else {
            assert_eq!(status, 405, "Accept: {accept}: {text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["errors"][0]["extensions"]["code"], "METHOD_NOT_ALLOWED", "{body}");
            assert!(
                body.get("data").is_none(),
                "Accept: {accept}: GraphQL data over GET: {text}"
            );
        }
    }
    assert_eq!(snapshot(&mut db).await, before, "a GET changed data");
    let none: i64 = sqlx::query_scalar(named_x).fetch_one(&mut db).await.unwrap();
    assert_eq!(none, 0, "a GET created a workspace");
    // The same mutation, POSTed, does create one: the checks above can see it.
    app.gql_ok(&token, mutation, json!({})).await;
    assert_ne!(snapshot(&mut db).await, before);
    let one: i64 = sqlx::query_scalar(named_x).fetch_one(&mut db).await.unwrap();
    assert_eq!(one, 1);
    app.stop().await;
}
