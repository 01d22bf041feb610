//! Agent tasks worked by containers Mosaic starts (issue 15), against the
//! real Docker engine (scripts/docker-test-env starts it): the image holds
//! this test build's `mosaic` binary, built locally by `deploy/build-image`
//! (nothing is pulled), and its containers run `mosaic worker` on the host's
//! loopback. Without an engine these tests fail saying so, as agents.rs does.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::{InspectContainerOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{self, Cleanup, TestApp, spawn_instance_with};
use mosaic::config::{AgentProfile, Config};

const TASK: &str = "id status attempts checkpoint checkpointStep result usage { tokens }
    events { fromStatus toStatus actor actorId reason at }";

async fn docker() -> Docker {
    let fail = |e: &dyn std::fmt::Display| -> ! {
        panic!("the Docker engine is not available ({e}); run `bash scripts/docker-test-env` (scripts/test does)")
    };
    let d = Docker::connect_with_unix("/var/run/docker.sock", 120, bollard::API_DEFAULT_VERSION)
        .unwrap_or_else(|e| fail(&e));
    d.negotiate_version().await.unwrap_or_else(|e| fail(&e))
}

/// The image with this build's binary: built once per binary by
/// `deploy/build-image`, under a file lock (tests run in parallel processes).
async fn worker_image() -> String {
    let binary = env!("CARGO_BIN_EXE_mosaic");
    let meta = std::fs::metadata(binary).unwrap();
    let modified = meta.modified().unwrap().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let image = format!("mosaic-test-worker:{:x}-{:x}", meta.len(), modified);
    let lock = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("mosaic-test-worker.lock");
    let script = r#"docker image inspect "$1" >/dev/null 2>&1 && exit 0
        docker images --format '{{.Repository}}:{{.Tag}}' mosaic-test-worker | xargs -r docker rmi >/dev/null 2>&1
        MOSAIC_IMAGE="$1" deploy/build-image "$2""#;
    let out = tokio::process::Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", script, "sh", &image, binary])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("flock runs");
    assert!(
        out.status.success(),
        "building {image}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

fn containers(c: &mut Config, image: &str) {
    c.agent_tasks.container_profiles = BTreeMap::from([(
        "SCRIPT".to_string(),
        AgentProfile {
            image: image.to_string(),
            ..AgentProfile::default()
        },
    )]);
    c.agent_tasks.container_network = Some("host".into());
    c.agent_tasks.reaper_interval = Duration::from_millis(200);
    c.agent_tasks.heartbeat_timeout = Duration::from_secs(5);
    c.agent_tasks.max_running = 3;
}

async fn spawn(adjust: impl FnOnce(&mut Config)) -> (TestApp, Cleanup, Docker, String) {
    let docker = docker().await;
    let image = worker_image().await;
    let app = spawn_instance_with("containers", |c| {
        containers(c, &image);
        adjust(c);
    })
    .await;
    let cleanup = Cleanup(app.state.instance_id);
    (app, cleanup, docker, image)
}

async fn create(app: &TestApp, token: &str, ws: &str, title: &str, steps: Value) -> String {
    app.gql_ok(
        token,
        &format!("mutation($i: CreateAgentTaskInput!) {{ createAgentTask(input: $i) {{ {TASK} }} }}"),
        json!({ "i": { "workspaceId": ws, "title": title, "kind": "SCRIPT", "instructions": steps } }),
    )
    .await["createAgentTask"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn task(app: &TestApp, token: &str, id: &str) -> Value {
    app.gql_ok(
        token,
        &format!("query($id: ID!) {{ node(id: $id) {{ ... on AgentTask {{ {TASK} }} }} }}"),
        json!({ "id": id }),
    )
    .await["node"]
        .clone()
}

fn transitions(task: &Value) -> Vec<String> {
    task["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}>{}",
                e["fromStatus"].as_str().unwrap_or("-"),
                e["toStatus"].as_str().unwrap()
            )
        })
        .collect()
}

async fn until<F: AsyncFnMut() -> bool>(what: &str, limit: Duration, mut check: F) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// This instance's task agent containers: name -> (id, running, agent).
async fn task_agents(docker: &Docker, app: &TestApp) -> HashMap<String, (String, bool, Uuid)> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("mosaic.instance={}", app.state.instance_id),
            "mosaic.role=task-agent".to_string(),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    let mut out = HashMap::new();
    for c in docker.list_containers(Some(options)).await.unwrap() {
        let labels = c.labels.unwrap_or_default();
        let agent = labels
            .get("mosaic.task-agent")
            .and_then(|a| a.parse().ok())
            .unwrap_or_default();
        let name = c.names.unwrap_or_default().first().cloned().unwrap_or_default();
        out.insert(
            name.trim_start_matches('/').to_string(),
            (
                c.id.unwrap_or_default(),
                c.state.map(|s| s.to_string()).as_deref() == Some("running"),
                agent,
            ),
        );
    }
    out
}

async fn exists(docker: &Docker, id: &str) -> bool {
    docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .is_ok()
}

/// The container whose agent holds `task` now.
async fn holder(app: &TestApp, task_id: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT a.container_name FROM agent_tasks t JOIN task_agents a ON a.id = t.agent_id
         WHERE t.id = $1 AND t.status IN ('ASSIGNED', 'RUNNING')",
    )
    .bind(common::local_id(task_id))
    .fetch_optional(&mut app.admin().await)
    .await
    .unwrap()
    .flatten()
}

#[tokio::test]
async fn a_killed_container_s_task_resumes_from_its_checkpoint_in_another_container_and_completes_once() {
    let (app, _cleanup, docker, image) = spawn(|_| {}).await;
    let (_, token) = app.user("owner@example.com").await;
    let ws = app.create_workspace(&token, "Crew").await;
    let steps = json!({ "steps": [
        { "usage": { "tokens": 10 } },
        { "checkpoint": { "phase": "first half" } },
        { "sleep_ms": 4000 },
        { "usage": { "tokens": 1 } },
        { "complete": { "done": true } }
    ]});
    let id = create(&app, &token, &ws, "long", steps).await;
    until("a container agent checkpoints", Duration::from_secs(60), async || {
        !task(&app, &token, &id).await["checkpoint"].is_null()
    })
    .await;
    let first = holder(&app, &id).await.expect("a container agent holds the task");
    let all = task_agents(&docker, &app).await;
    let (first_id, running, _) = all[&first].clone();
    assert!(running, "{all:?}");
    let inspected = docker
        .inspect_container(&first_id, None::<InspectContainerOptions>)
        .await
        .unwrap();
    assert_eq!(
        inspected.config.as_ref().unwrap().image.as_deref(),
        Some(image.as_str())
    );
    let host = inspected.host_config.unwrap();
    assert_eq!((host.privileged, host.readonly_rootfs), (Some(false), Some(true)));
    assert_eq!(host.network_mode.as_deref(), Some("host"));
    let command = inspected.config.unwrap().cmd.unwrap();
    assert_eq!(command[..2], ["worker", "--exit-when-idle"], "{command:?}");
    assert!(command.contains(&app.base), "{command:?}");

    docker
        .kill_container(
            &first_id,
            Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
        )
        .await
        .unwrap();
    until(
        "the task completes in another container",
        Duration::from_secs(60),
        async || task(&app, &token, &id).await["status"] == "COMPLETED",
    )
    .await;
    let done = task(&app, &token, &id).await;
    assert_eq!(done["attempts"], 2);
    assert_eq!(
        done["usage"]["tokens"], 11,
        "the second attempt began after the checkpoint's step"
    );
    assert_eq!(done["result"], json!({ "done": true }));
    assert_eq!(
        transitions(&done),
        [
            "->QUEUED",
            "QUEUED>ASSIGNED",
            "ASSIGNED>RUNNING",
            "RUNNING>QUEUED",
            "QUEUED>ASSIGNED",
            "ASSIGNED>RUNNING",
            "RUNNING>COMPLETED"
        ]
    );
    assert_eq!(done["events"][3]["actor"], "SYSTEM");
    assert!(
        done["events"][3]["reason"].as_str().unwrap().contains("exited"),
        "the dispatcher saw the container exit: {}",
        done["events"][3]
    );
    let holders = [&done["events"][1]["actorId"], &done["events"][4]["actorId"]];
    assert_ne!(holders[0], holders[1], "another agent resumed it");
    assert!(!exists(&docker, &first_id).await, "the killed container was removed");
    // The dead container's token was revoked with it.
    let revoked: bool = sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM task_agents WHERE container_name = $1")
        .bind(&first)
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap();
    assert!(revoked);
    app.stop().await;
}

#[tokio::test]
async fn kill_agent_stops_its_container_and_the_task_is_killed() {
    let (app, _cleanup, docker, _) = spawn(|_| {}).await;
    let (_, token) = app.user("owner@example.com").await;
    let ws = app.create_workspace(&token, "Crew").await;
    let steps = json!({ "steps": [{ "checkpoint": { "n": 1 } }, { "sleep_ms": 60000 }, { "complete": {} }] });
    let id = create(&app, &token, &ws, "endless", steps).await;
    until("a container agent runs the task", Duration::from_secs(60), async || {
        task(&app, &token, &id).await["checkpointStep"] == 0
    })
    .await;
    let name = holder(&app, &id).await.unwrap();
    let container = task_agents(&docker, &app).await[&name].0.clone();
    let killed = app
        .gql_ok(
            &token,
            "mutation($t: ID!) { killAgent(taskId: $t) { status } }",
            json!({ "t": id }),
        )
        .await;
    assert_eq!(killed["killAgent"]["status"], "KILLED");
    let started = Instant::now();
    until(
        "the container is stopped and removed",
        Duration::from_secs(20),
        async || !exists(&docker, &container).await,
    )
    .await;
    eprintln!("measured: killAgent to its container removed: {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the worker exits on SIGTERM, within the grace: {:?}",
        started.elapsed()
    );
    let t = task(&app, &token, &id).await;
    assert_eq!(t["status"], "KILLED", "not retried");
    assert_eq!(transitions(&t).last().unwrap(), "RUNNING>KILLED");
    // No container is started for a killed task.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        task_agents(&docker, &app)
            .await
            .values()
            .all(|(_, running, _)| !running)
    );
    app.stop().await;
}

#[tokio::test]
async fn restarting_mosaic_adopts_live_containers_removes_the_rest_and_loses_nothing() {
    let restart = |c: &mut Config| {
        c.agent_tasks.max_running = 2;
        // Longer than the restart: the adopted agent's heartbeats pause meanwhile.
        c.agent_tasks.heartbeat_timeout = Duration::from_secs(30);
    };
    let (app, cleanup, docker, image) = spawn(restart).await;
    let (_, token) = app.user("owner@example.com").await;
    let ws = app.create_workspace(&token, "Crew").await;
    let steps =
        json!({ "steps": [{ "checkpoint": { "a": 1 } }, { "sleep_ms": 3000 }, { "complete": { "ok": true } }] });
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(create(&app, &token, &ws, &format!("t{i}"), steps.clone()).await);
    }
    until("two container agents hold tasks", Duration::from_secs(60), async || {
        let mut held = 0;
        for id in &ids {
            held += usize::from(holder(&app, id).await.is_some());
        }
        held == 2
    })
    .await;
    let mut held = HashMap::new();
    for id in &ids {
        if let Some(name) = holder(&app, id).await {
            held.insert(name, id.clone());
        }
    }
    let (database, listen) = (
        app.database_url.clone(),
        app.base.rsplit(':').next().unwrap().to_string(),
    );
    let agents = task_agents(&docker, &app).await;
    let mut names = held.keys().cloned().collect::<Vec<_>>();
    names.sort();
    let (survivor, lost) = (names[0].clone(), names[1].clone());
    app.stop().await;

    // While Mosaic is down: one container dies, a stranger appears.
    docker
        .kill_container(
            &agents[&lost].0,
            Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
        )
        .await
        .unwrap();
    let instance = cleanup.0;
    let stranger = format!("mosaic-stranger-{}", Uuid::new_v4().simple());
    let out = tokio::process::Command::new("docker")
        .args(["run", "-d", "--name", &stranger, "--label"])
        .arg(format!("mosaic.instance={instance}"))
        .args([
            "--label",
            "mosaic.role=task-agent",
            "--entrypoint",
            "/usr/local/bin/mosaic",
            &image,
            "--help",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let app = spawn_instance_with("containers", |c| {
        containers(c, &image);
        restart(c);
        c.database_url = Some(database);
        c.listen = format!("127.0.0.1:{listen}").parse().unwrap();
    })
    .await;
    until("the stranger is removed", Duration::from_secs(30), async || {
        !exists(&docker, &stranger).await
    })
    .await;
    until("every task completes", Duration::from_secs(90), async || {
        let mut done = 0;
        for id in &ids {
            done += usize::from(task(&app, &token, id).await["status"] == "COMPLETED");
        }
        done == ids.len()
    })
    .await;
    let adopted = task(&app, &token, &held[&survivor]).await;
    assert_eq!(
        adopted["attempts"], 1,
        "the adopted container finished its task: {adopted}"
    );
    let requeued = task(&app, &token, &held[&lost]).await;
    assert_eq!(requeued["attempts"], 2, "{requeued}");
    assert!(
        requeued["events"][3]["reason"].as_str().unwrap().contains("exited"),
        "{}",
        requeued["events"][3]
    );
    assert!(!exists(&docker, &agents[&lost].0).await);
    let once: Vec<(i64,)> =
        sqlx::query_as("SELECT count(*) FROM agent_task_events WHERE to_status = 'COMPLETED' GROUP BY task_id")
            .fetch_all(&mut app.admin().await)
            .await
            .unwrap();
    assert_eq!(once, vec![(1,); ids.len()], "each task completed exactly once");
    app.stop().await;
}

#[tokio::test]
async fn an_explicit_start_beyond_the_cap_is_refused_and_dispatch_keeps_to_the_cap() {
    let (app, _cleanup, docker, _) = spawn(|c| c.agent_tasks.max_running = 1).await;
    let (_, token) = app.user("owner@example.com").await;
    let ws = app.create_workspace(&token, "Crew").await;
    let start = "mutation($w: ID!, $k: AgentTaskKind!) { startAgent(workspaceId: $w, kind: $k) }";
    let agent = app.gql_ok(&token, start, json!({ "w": ws, "k": "SCRIPT" })).await["startAgent"]
        .as_str()
        .unwrap()
        .to_string();
    let running = task_agents(&docker, &app).await;
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running.values().next().unwrap().2.to_string(), agent);
    let list = "query($w: ID!) { agentTokens(workspaceId: $w) { id kinds container createdBy } }";
    let tokens = app.gql_ok(&token, list, json!({ "w": ws })).await["agentTokens"].clone();
    assert_eq!(
        tokens,
        json!([{ "id": agent, "kinds": ["SCRIPT"], "container": true, "createdBy": null }])
    );

    let agents_before: i64 = sqlx::query_scalar("SELECT count(*) FROM task_agents")
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap();
    let refused = app.gql(&token, start, json!({ "w": ws, "k": "SCRIPT" })).await;
    assert_eq!(common::codes(&refused), ["AGENT_LIMIT_REACHED"], "{refused}");
    let refused = app.gql(&token, start, json!({ "w": ws, "k": "WORKER" })).await;
    assert_eq!(common::codes(&refused), ["AGENT_PROFILE_MISSING"], "{refused}");
    let (_, stranger) = app.user("stranger@example.com").await;
    let refused = app.gql(&stranger, start, json!({ "w": ws, "k": "SCRIPT" })).await;
    assert_eq!(common::codes(&refused), ["NOT_FOUND"], "{refused}");
    let agents_after: i64 = sqlx::query_scalar("SELECT count(*) FROM task_agents")
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap();
    assert_eq!(agents_after, agents_before, "refused starts made no agent");
    assert_eq!(task_agents(&docker, &app).await.len(), 1, "and no container");

    // Three tasks at once: the one agent works them all, never a second container.
    let steps = json!({ "steps": [{ "sleep_ms": 300 }, { "complete": {} }] });
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(create(&app, &token, &ws, &format!("t{i}"), steps.clone()).await);
    }
    until("every task completes", Duration::from_secs(60), async || {
        let running = task_agents(&docker, &app).await.values().filter(|c| c.1).count();
        assert!(running <= 1, "over the cap: {running}");
        let mut done = 0;
        for id in &ids {
            done += usize::from(task(&app, &token, id).await["status"] == "COMPLETED");
        }
        done == ids.len()
    })
    .await;
    let holders: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT actor_id::text FROM agent_task_events WHERE to_status = 'COMPLETED'")
            .fetch_all(&mut app.admin().await)
            .await
            .unwrap();
    assert_eq!(holders, [agent], "the explicitly started agent did the work");
    app.stop().await;
}

#[tokio::test]
async fn a_frozen_container_agent_misses_its_heartbeat_loses_its_task_and_is_removed() {
    let (app, _cleanup, docker, _) = spawn(|c| c.agent_tasks.heartbeat_timeout = Duration::from_secs(2)).await;
    let (_, token) = app.user("owner@example.com").await;
    let ws = app.create_workspace(&token, "Crew").await;
    let steps =
        json!({ "steps": [{ "checkpoint": { "n": 1 } }, { "sleep_ms": 4000 }, { "complete": { "ok": true } }] });
    let created = Instant::now();
    let id = create(&app, &token, &ws, "frozen", steps).await;
    until("a container agent checkpoints", Duration::from_secs(60), async || {
        task(&app, &token, &id).await["checkpointStep"] == 0
    })
    .await;
    eprintln!(
        "measured: enqueue to first checkpoint in a new container: {:?}",
        created.elapsed()
    );
    let name = holder(&app, &id).await.unwrap();
    let frozen = task_agents(&docker, &app).await[&name].0.clone();
    docker.pause_container(&frozen).await.unwrap();
    let paused = Instant::now();
    until("the task runs again elsewhere", Duration::from_secs(60), async || {
        holder(&app, &id).await.is_some_and(|h| h != name)
    })
    .await;
    eprintln!(
        "measured: container frozen to its task held again: {:?} (heartbeat timeout 2 s)",
        paused.elapsed()
    );
    until("the task completes", Duration::from_secs(60), async || {
        task(&app, &token, &id).await["status"] == "COMPLETED"
    })
    .await;
    let done = task(&app, &token, &id).await;
    assert_eq!(done["attempts"], 2);
    let requeue = &done["events"][3];
    assert_eq!(requeue["toStatus"], "QUEUED");
    assert!(
        requeue["reason"].as_str().unwrap().contains("no heartbeat"),
        "{requeue}"
    );
    until("the frozen container is removed", Duration::from_secs(20), async || {
        !exists(&docker, &frozen).await
    })
    .await;
    let revoked: bool = sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM task_agents WHERE container_name = $1")
        .bind(&name)
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap();
    assert!(revoked, "the lost agent's token is revoked");
    app.stop().await;
}
