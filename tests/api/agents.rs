//! Per-user agent containers against the real Docker engine (scripts/test
//! runs scripts/docker-test-env first, which starts dockerd and builds the
//! local image `mosaic-test-agent:latest`). Without an engine these tests
//! fail with a message saying so; they never skip.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
};
use common::{Cleanup, TestApp, code, eventually, spawn_app_with, spawn_config, test_config};
use futures::{FutureExt, StreamExt};
use mosaic::config::Config;
use mosaic::containers::reaper;
use serde_json::{Value, json};
use uuid::Uuid;

const IMAGE: &str = "mosaic-test-agent:latest";

async fn docker() -> Docker {
    let fail = |e: &dyn std::fmt::Display| -> ! {
        panic!(
            "the Docker engine is not available ({e}); run `bash scripts/docker-test-env` \
             (scripts/test does) to start dockerd and build {IMAGE}"
        )
    };
    let d = Docker::connect_with_unix("/var/run/docker.sock", 60, bollard::API_DEFAULT_VERSION)
        .unwrap_or_else(|e| fail(&e));
    let d = d.negotiate_version().await.unwrap_or_else(|e| fail(&e));
    d.inspect_image(IMAGE)
        .await
        .unwrap_or_else(|e| fail(&format!("image {IMAGE} missing: {e}")));
    d
}

fn agent_config(c: &mut Config) {
    c.agents.image = IMAGE.into();
    c.agents.reaper_interval = Duration::from_millis(200);
    c.agents.start_timeout = Duration::from_secs(20);
}

async fn spawn(adjust: impl FnOnce(&mut Config)) -> (TestApp, Cleanup, Docker) {
    let docker = docker().await;
    let app = spawn_app_with(|c| {
        agent_config(c);
        adjust(c);
    })
    .await;
    let cleanup = Cleanup(app.state.instance_id);
    (app, cleanup, docker)
}

async fn admin_user(app: &TestApp, email: &str) -> String {
    let mut conn = app.admin().await;
    mosaic::auth::users::create(&mut conn, email, None, true).await.unwrap();
    mosaic::auth::tokens::create(&mut conn, email, None).await.unwrap()
}

/// GET through the proxy; (status, body).
async fn get(app: &TestApp, token: &str, path: &str) -> (u16, String) {
    let r = app
        .client
        .get(format!("{}/agent{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("proxy request sent");
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn my_agent(app: &TestApp, token: &str) -> Value {
    app.gql_ok(
        token,
        "{ myAgent { status startedAt lastActiveAt configVersion desiredConfigVersion secretNames } }",
        json!({}),
    )
    .await["myAgent"]
        .clone()
}

async fn containers_of_user(docker: &Docker, user: Uuid) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("mosaic.user={user}")])]);
    let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

#[tokio::test]
async fn first_request_starts_the_agent_isolated_on_loopback() {
    let (app, _cleanup, docker) = spawn(|_| {}).await;
    let (user, token) = app.user("alice@example.com").await;
    assert_eq!(my_agent(&app, &token).await["status"], "STOPPED");

    let unauthenticated = app.client.get(format!("{}/agent/", app.base)).send().await.unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);

    let (status, body) = get(&app, &token, "/").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let agent = my_agent(&app, &token).await;
    assert_eq!(agent["status"], "RUNNING", "{agent}");
    assert!(
        agent["startedAt"].is_string() && agent["lastActiveAt"].is_string(),
        "{agent}"
    );
    assert_eq!(agent["configVersion"], agent["desiredConfigVersion"]);

    // The caller's Mosaic credentials stay with Mosaic; its identity is passed on.
    let (_, env) = get(&app, &token, "/cgi-bin/env").await;
    assert!(env.contains(&format!("MOSAIC_AGENT_USER={user}")), "{env}");
    assert!(env.contains(&format!("HTTP_X_MOSAIC_USER={user}")), "{env}");
    assert!(!env.contains(&token) && !env.contains("HTTP_AUTHORIZATION"), "{env}");

    // Labels, limits, no privileges, read-only root, loopback-only port, ICC off.
    let ids = containers_of_user(&docker, user).await;
    assert_eq!(ids.len(), 1);
    let c = docker
        .inspect_container(&ids[0], None::<InspectContainerOptions>)
        .await
        .unwrap();
    let labels = c.config.unwrap().labels.unwrap();
    assert_eq!(labels["mosaic.instance"], app.state.instance_id.to_string());
    assert_eq!(labels["mosaic.user"], user.to_string());
    assert_eq!(labels["mosaic.config-version"], agent["configVersion"].to_string());
    assert_eq!(c.name.unwrap(), format!("/{}", app.state.agents.container_name(user)));
    let host = c.host_config.unwrap();
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert!(host.memory.unwrap() > 0 && host.nano_cpus.unwrap() > 0 && host.pids_limit.unwrap() > 0);
    let bindings = host.port_bindings.unwrap();
    for b in bindings.values().flatten().flatten() {
        assert_eq!(b.host_ip.as_deref(), Some("127.0.0.1"));
    }
    let published = c.network_settings.unwrap().ports.unwrap();
    assert!(
        published
            .values()
            .flatten()
            .flatten()
            .all(|b| b.host_ip.as_deref() == Some("127.0.0.1"))
    );
    let network = docker
        .inspect_network(&app.state.agents.lifecycle.network_name(), None)
        .await
        .unwrap();
    assert_eq!(
        network
            .options
            .unwrap()
            .get("com.docker.network.bridge.enable_icc")
            .map(String::as_str),
        Some("false")
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_first_requests_start_exactly_one_container() {
    let (app, _cleanup, docker) = spawn(|_| {}).await;
    let (user, token) = app.user("bob@example.com").await;
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 1;
    let answers = futures::future::join_all((0..16).map(|_| get(&app, &token, "/"))).await;
    for (status, body) in &answers {
        assert_eq!((*status, body.trim()), (200, "ok"));
    }
    assert_eq!(containers_of_user(&docker, user).await.len(), 1);
    // The engine's own record: one create, one start.
    let until = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 1;
    let filters = HashMap::from([
        ("type", vec!["container".to_string()]),
        ("label", vec![format!("mosaic.user={user}")]),
    ]);
    let options = EventsOptionsBuilder::new()
        .since(&since.to_string())
        .until(&until.to_string())
        .filters(&filters)
        .build();
    let events: Vec<String> = docker
        .events(Some(options))
        .filter_map(|e| async move { e.ok().and_then(|e| e.action) })
        .collect()
        .await;
    let count = |a: &str| events.iter().filter(|e| e.as_str() == a).count();
    assert_eq!((count("create"), count("start")), (1, 1), "{events:?}");
    app.stop().await;
}

#[tokio::test]
async fn idle_agent_is_stopped_and_started_again_by_the_next_request() {
    let (app, _cleanup, docker) = spawn(|c| c.agents.idle_timeout = Duration::from_secs(2)).await;
    let (user, token) = app.user("carol@example.com").await;
    assert_eq!(get(&app, &token, "/").await.0, 200);
    let first = my_agent(&app, &token).await;
    assert_eq!(first["status"], "RUNNING");

    eventually(Duration::from_secs(20), "the idle agent to stop", || async {
        my_agent(&app, &token).await["status"] == "STOPPED"
    })
    .await;
    let ids = containers_of_user(&docker, user).await;
    assert_eq!(ids.len(), 1, "stopped, not removed");
    let state = docker
        .inspect_container(&ids[0], None::<InspectContainerOptions>)
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(state.running, Some(false));

    assert_eq!(get(&app, &token, "/").await.0, 200);
    let again = my_agent(&app, &token).await;
    assert_eq!(again["status"], "RUNNING");
    assert_ne!(again["startedAt"], first["startedAt"], "started anew");
    app.stop().await;
}

/// The test image's httpd, serving besides "/" a `/hold.sh` that holds its
/// request open until the test says so: it writes to the FIFO /tmp/entered
/// (so the test knows the agent has the request) and then answers with what
/// the test writes to the FIFO /tmp/release. busybox httpd runs `*.sh` with
/// /bin/sh, so the script may live on the agent's noexec /tmp.
const HOLDING_AGENT: &str = r#"set -e
cd /tmp
busybox mkdir -p www
echo ok > www/index.html
echo '*.sh:/bin/sh' > httpd.conf
busybox mkfifo entered release
cat > www/hold.sh <<'EOF'
echo "Content-Type: text/plain"
echo ""
echo in > /tmp/entered
cat /tmp/release
EOF
exec httpd -f -p 8080 -h /tmp/www -c /tmp/httpd.conf"#;

/// Runs `sh -c script` in a container; its output. Bounded: the scripts here
/// block on the agent's FIFOs.
async fn exec(docker: &Docker, container: &str, script: &str) -> String {
    let run = async {
        let options = CreateExecOptions {
            cmd: Some(vec!["/bin/sh", "-c", script]),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = docker.create_exec(container, options).await.expect("exec created");
        let StartExecResults::Attached { mut output, .. } = docker.start_exec(&created.id, None).await.unwrap() else {
            panic!("exec started detached")
        };
        let mut text = String::new();
        while let Some(chunk) = output.next().await {
            text.push_str(&chunk.unwrap().to_string());
        }
        text
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or_else(|_| panic!("`{script}` in {container} did not finish within 30 s"))
}

async fn container_running(docker: &Docker, name: &str) -> bool {
    let c = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .unwrap();
    c.state.and_then(|s| s.running) == Some(true)
}

#[tokio::test]
async fn a_request_outlasting_the_idle_timeout_keeps_the_agent_until_it_ends() {
    let idle = Duration::from_secs(2);
    // The reaper runs only when the test calls `reaper::tick`: the background
    // loop reconciles and ticks once at start, then sleeps for an hour.
    let (app, _cleanup, docker) = spawn(|c| {
        c.agents.idle_timeout = idle;
        c.agents.reaper_interval = Duration::from_secs(3600);
    })
    .await;
    let svc = app.state.agents.clone();
    let admin = admin_user(&app, "root@example.com").await;
    let (user, token) = app.user("grace@example.com").await;
    app.gql_ok(
        &admin,
        "mutation($c: [String!]) { updateAgentConfig(input: {command: $c}) { version } }",
        json!({ "c": ["/bin/sh", "-c", HOLDING_AGENT] }),
    )
    .await;
    eventually(Duration::from_secs(20), "reconciliation", || async {
        svc.is_reconciled()
    })
    .await;
    assert_eq!(get(&app, &token, "/").await, (200, "ok\n".to_string()));
    let name = svc.container_name(user);

    let held = tokio::spawn({
        let (client, url, token) = (app.client.clone(), format!("{}/agent/hold.sh", app.base), token.clone());
        async move {
            let r = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("proxy request sent");
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    assert_eq!(exec(&docker, &name, "cat /tmp/entered").await.trim(), "in");
    assert_eq!(svc.in_flight(user), 1);

    // The idle timeout passes with the request still in the agent; the last
    // activity is when the request started (and its answer's head arrived).
    eventually(
        Duration::from_secs(20),
        "the idle timeout to pass during the request",
        || async {
            let last = svc.last_active(user).expect("activity recorded");
            time::OffsetDateTime::now_utc() - last > idle
        },
    )
    .await;
    reaper::tick(&svc).await;
    reaper::tick(&svc).await;
    assert!(!held.is_finished(), "the request is still held by the agent");
    assert!(
        container_running(&docker, &name).await,
        "stopped under a request in flight"
    );
    assert_eq!(my_agent(&app, &token).await["status"], "RUNNING");

    exec(&docker, &name, "echo released > /tmp/release").await;
    assert_eq!(held.await.unwrap(), (200, "released\n".to_string()));
    assert_eq!(svc.in_flight(user), 0);
    // When the request ended, as the proxy recorded it.
    let ended = svc.last_active(user).expect("activity recorded");
    let since_end = || time::OffsetDateTime::now_utc() - ended;

    // Idleness counts from the end of the request...
    reaper::tick(&svc).await;
    assert!(since_end() < idle, "the pass above ran within the idle timeout");
    assert!(
        container_running(&docker, &name).await,
        "stopped right after its request ended"
    );
    assert_eq!(my_agent(&app, &token).await["status"], "RUNNING");

    // ...and once it has passed, the agent is stopped.
    eventually(Duration::from_secs(20), "the idle agent to stop", || async {
        reaper::tick(&svc).await;
        my_agent(&app, &token).await["status"] == "STOPPED"
    })
    .await;
    assert!(since_end() >= idle);
    assert!(!container_running(&docker, &name).await);
    app.stop().await;
}

#[tokio::test]
async fn config_change_restarts_the_agent_with_the_new_environment() {
    let (app, _cleanup, _docker) = spawn(|_| {}).await;
    let admin = admin_user(&app, "root@example.com").await;
    let (_, token) = app.user("dave@example.com").await;
    let (_, env) = get(&app, &token, "/cgi-bin/env").await;
    assert!(!env.contains("GREETING="), "{env}");
    let before = my_agent(&app, &token).await["configVersion"].as_i64().unwrap();

    let update = "mutation($e: JSON!) { updateAgentConfig(input: {env: $e}) { version env } }";
    let d = app
        .gql_ok(&admin, update, json!({ "e": { "GREETING": "hello-1" } }))
        .await;
    assert!(d["updateAgentConfig"]["version"].as_i64().unwrap() > before);

    // On next use: the container is rebuilt from the new configuration.
    let (_, env) = get(&app, &token, "/cgi-bin/env").await;
    assert!(env.contains("GREETING=hello-1"), "{env}");
    let agent = my_agent(&app, &token).await;
    assert_eq!(agent["configVersion"], agent["desiredConfigVersion"]);
    assert!(agent["configVersion"].as_i64().unwrap() > before);

    // At once while running: the reaper restarts it without any request.
    app.gql_ok(&admin, update, json!({ "e": { "GREETING": "hello-2" } }))
        .await;
    eventually(
        Duration::from_secs(20),
        "the running agent to move to the new version",
        || async {
            let a = my_agent(&app, &token).await;
            a["status"] == "RUNNING" && a["configVersion"] == a["desiredConfigVersion"]
        },
    )
    .await;
    let (_, env) = get(&app, &token, "/cgi-bin/env").await;
    assert!(env.contains("GREETING=hello-2"), "{env}");

    // Per-user settings are part of the configuration too.
    let settings = "mutation { updateMyAgentSettings(env: {MINE: \"dave-only\"}, idleTimeoutSeconds: 60) { desiredConfigVersion idleTimeoutSeconds } }";
    let d = app.gql_ok(&token, settings, json!({})).await;
    assert_eq!(d["updateMyAgentSettings"]["idleTimeoutSeconds"], 60);
    let (_, env) = get(&app, &token, "/cgi-bin/env").await;
    assert!(
        env.contains("MINE=dave-only") && env.contains("GREETING=hello-2"),
        "{env}"
    );
    let too_long = "mutation { updateMyAgentSettings(idleTimeoutSeconds: 100000000) { status } }";
    assert_eq!(code(&app.gql(&token, too_long, json!({})).await), "BAD_USER_INPUT");

    // Only administrators change it.
    let body = app.gql(&token, update, json!({ "e": {} })).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn secrets_reach_only_their_users_container_and_never_the_api() {
    let (app, _cleanup, docker) = spawn(|_| {}).await;
    let admin = admin_user(&app, "root@example.com").await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let secret = "sk-alice-0123456789-very-private";
    let set = app
        .gql(
            &alice,
            "mutation($v: String!) { setMyAgentSecret(name: \"PROVIDER_API_KEY\", value: $v) { name updatedAt } }",
            json!({ "v": secret }),
        )
        .await;
    assert!(set.get("errors").is_none(), "{set}");
    assert!(!set.to_string().contains(secret));
    let bad = app
        .gql(
            &alice,
            "mutation { setMyAgentSecret(name: \"1 bad\", value: \"x\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&bad), "BAD_USER_INPUT");

    let (_, env) = get(&app, &alice, "/cgi-bin/env").await;
    assert!(env.contains(&format!("PROVIDER_API_KEY={secret}")), "{env}");
    let (_, env) = get(&app, &bob, "/cgi-bin/env").await;
    assert!(!env.contains(secret) && !env.contains("PROVIDER_API_KEY"), "{env}");

    // Bob's agent cannot reach Alice's over the agents' network (only loopback, its own).
    let alice_id = app.gql_ok(&alice, "{ me { id } }", json!({})).await["me"]["id"]
        .as_str()
        .map(common::local_id)
        .unwrap();
    let alice_container = docker
        .inspect_container(
            &app.state.agents.container_name(alice_id),
            None::<InspectContainerOptions>,
        )
        .await
        .unwrap();
    let alice_ip = alice_container
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.into_values().find_map(|e| e.ip_address))
        .filter(|ip| !ip.is_empty())
        .expect("alice's container has a bridge address");
    assert_eq!(
        get(&app, &bob, "/cgi-bin/fetch?127.0.0.1:8080").await.1.trim(),
        "reached"
    );
    let (_, across) = get(&app, &bob, &format!("/cgi-bin/fetch?{alice_ip}:8080")).await;
    assert_eq!(across.trim(), "unreachable", "agents must not reach each other");

    // Not through GraphQL, not for the owner, not for an administrator.
    let mine = my_agent(&app, &alice).await;
    assert_eq!(mine["secretNames"], json!(["PROVIDER_API_KEY"]));
    assert!(!mine.to_string().contains(secret));
    let all = app
        .gql_ok(
            &admin,
            "{ agents { email status lastError } agentConfig { env } }",
            json!({}),
        )
        .await;
    assert_eq!(all["agents"].as_array().unwrap().len(), 2, "{all}");
    assert!(!all.to_string().contains(secret));
    let body = app.gql(&alice, "{ agents { email } }", json!({})).await;
    assert_eq!(code(&body), "FORBIDDEN");

    // Sealed at rest, and RLS keeps Bob's scope away from Alice's rows.
    let mut conn = app.admin().await;
    let sealed: Vec<Vec<u8>> = sqlx::query_scalar("SELECT sealed FROM agent_secrets")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(sealed.len(), 1);
    assert!(!sealed[0].windows(secret.len()).any(|w| w == secret.as_bytes()));
    let bob_id: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'bob@example.com'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let mut tx = mosaic::containers::store::scoped(&app.state.pool, bob_id)
        .await
        .unwrap();
    let visible: i64 =
        sqlx::query_scalar("SELECT (SELECT count(*) FROM agent_secrets) + (SELECT count(*) FROM agents)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(visible, 1, "bob sees his own agent row only");
    tx.rollback().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn reconcile_removes_orphans_and_adopts_known_containers() {
    let docker = docker().await;
    let mut config = test_config(common::fresh_database().await);
    agent_config(&mut config);
    let app = spawn_config(config.clone()).await;
    let instance = app.state.instance_id;
    let _cleanup = Cleanup(instance);
    let (user, token) = app.user("erin@example.com").await;
    assert_eq!(get(&app, &token, "/").await.0, 200);
    let known = containers_of_user(&docker, user).await;
    assert_eq!(known.len(), 1);
    app.stop().await;

    // While the instance is down: an orphan with this instance's labels, and
    // a database that no longer knows the known container runs.
    let stranger = Uuid::new_v4();
    let orphan_name = format!("mosaic-orphan-{}", stranger.simple());
    let labels = HashMap::from([
        ("mosaic.instance".to_string(), instance.to_string()),
        ("mosaic.role".to_string(), "agent".to_string()),
        ("mosaic.user".to_string(), stranger.to_string()),
        ("mosaic.config-version".to_string(), "1".to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let orphan = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&orphan_name).build()),
            body,
        )
        .await
        .unwrap()
        .id;
    docker.start_container(&orphan, None).await.unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app_db(&config))
        .await
        .unwrap();
    sqlx::query("UPDATE agents SET status = 'STOPPED', started_at = NULL, container_id = NULL")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);

    let app = spawn_config(config).await;
    assert_eq!(app.state.instance_id, instance);
    eventually(Duration::from_secs(20), "reconciliation", || async {
        app.state.agents.is_reconciled()
    })
    .await;
    let gone = docker.inspect_container(&orphan, None::<InspectContainerOptions>).await;
    assert!(gone.is_err(), "the orphan was removed");
    let agent = my_agent(&app, &token).await;
    assert_eq!(agent["status"], "RUNNING", "adopted with its real state: {agent}");
    assert!(agent["startedAt"].is_string());
    assert_eq!(get(&app, &token, "/").await.0, 200);
    assert_eq!(
        containers_of_user(&docker, user).await,
        known,
        "the same container, adopted"
    );
    app.stop().await;
}

fn app_db(config: &Config) -> String {
    config.database_url.clone().unwrap()
}

#[tokio::test]
async fn engine_down_fails_agent_operations_only() {
    let app = spawn_app_with(|c| {
        agent_config(c);
        c.agents.docker_host = "unix:///nonexistent.sock".into();
    })
    .await;
    let (_, token) = app.user("frank@example.com").await;
    let body = app.gql(&token, "mutation { startMyAgent { status } }", json!({})).await;
    assert_eq!(code(&body), "AGENT_UNAVAILABLE", "{body}");
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("Docker"),
        "{body}"
    );
    let r = app
        .client
        .get(format!("{}/agent/", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(code(&body), "AGENT_UNAVAILABLE", "{body}");

    // The rest of the instance keeps serving.
    let d = app
        .gql_ok(
            &token,
            "{ me { email } tasks { totalCount } myAgent { status } }",
            json!({}),
        )
        .await;
    assert_eq!(d["me"]["email"], "frank@example.com");
    assert_eq!(d["tasks"]["totalCount"], 0);
    assert_eq!(d["myAgent"]["status"], "STOPPED");
    app.stop().await;
}

/// Who holds the user's agent lease now (None: nobody, or it lapsed).
async fn lease_holder(conn: &mut sqlx::PgConnection, user: Uuid) -> Option<Uuid> {
    sqlx::query_scalar("SELECT managed_by FROM agents WHERE user_id = $1 AND lease_until > now()")
        .bind(user)
        .fetch_optional(conn)
        .await
        .unwrap()
        .flatten()
}

#[tokio::test]
async fn replicas_share_one_agent_managed_by_the_lease_holder() {
    let docker = docker().await;
    let mut config = test_config(common::fresh_database().await);
    agent_config(&mut config);
    config.agents.start_timeout = Duration::from_secs(5);
    let (a, b) = (spawn_config(config.clone()).await, spawn_config(config.clone()).await);
    assert_eq!(a.state.instance_id, b.state.instance_id, "two replicas of one instance");
    let _cleanup = Cleanup(a.state.instance_id);
    let (user, token) = a.user("ivy@example.com").await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app_db(&config))
        .await
        .unwrap();

    // The first requests arrive at both replicas at once: one container.
    let (via_a, via_b) = tokio::join!(get(&a, &token, "/"), get(&b, &token, "/"));
    assert_eq!((via_a.0, via_b.0), (200, 200), "{via_a:?} {via_b:?}");
    let containers = containers_of_user(&docker, user).await;
    assert_eq!(containers.len(), 1, "one container for the user across replicas");
    let holder = lease_holder(&mut conn, user).await.expect("a live lease");
    let (manager, other) = if holder == a.state.agents.replica_id {
        (a, b)
    } else {
        assert_eq!(holder, b.state.agents.replica_id);
        (b, a)
    };
    let started_at = |docker: Docker, id: String| async move {
        let c = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .unwrap();
        c.state.unwrap().started_at.unwrap()
    };
    let first_start = started_at(docker.clone(), containers[0].clone()).await;
    // The other replica uses the container the manager runs: not started again.
    assert_eq!(get(&other, &token, "/").await.0, 200);
    assert_eq!(containers_of_user(&docker, user).await, containers);
    assert_eq!(started_at(docker.clone(), containers[0].clone()).await, first_start);

    // The manager goes away without letting go; once its lease lapses, the
    // other replica takes the agent over (here: stops it, idle), never before.
    manager.stop().await;
    let lapses: time::OffsetDateTime = sqlx::query_scalar("SELECT lease_until FROM agents WHERE user_id = $1")
        .bind(user)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE agents SET idle_timeout_s = 1 WHERE user_id = $1")
        .bind(user)
        .execute(&mut conn)
        .await
        .unwrap();
    let name = other.state.agents.container_name(user);
    eventually(
        Duration::from_secs(30),
        "the lapsed agent taken over and stopped",
        || container_running(&docker, &name).map(|running| !running),
    )
    .await;
    let stopped = docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .unwrap()
        .state
        .unwrap()
        .finished_at
        .unwrap();
    let stopped = time::OffsetDateTime::parse(&stopped, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(
        stopped >= lapses,
        "stopped at {stopped}, while the lease held until {lapses}"
    );
    let conn = tokio::sync::Mutex::new(conn);
    eventually(Duration::from_secs(10), "a stopped agent let go", || async {
        lease_holder(&mut *conn.lock().await, user).await.is_none()
    })
    .await;
    let mut conn = conn.into_inner();
    // The survivor now starts and manages it.
    assert_eq!(get(&other, &token, "/").await.0, 200);
    assert_eq!(lease_holder(&mut conn, user).await, Some(other.state.agents.replica_id));
    other.stop().await;
}
