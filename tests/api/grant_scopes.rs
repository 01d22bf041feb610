//! Grants as scope documents (issue 16): what a peer sees through every read
//! path under each scope, `maxRowsPerQuery`, remote people mapped to local
//! users, refusals of bad documents. Real instances over HTTPS: `work` asks,
//! `hq` serves; requests are signed by `work` exactly as its federation
//! signs them (and, where it matters, go through `work`'s own merged view).

use crate::common;

use common::{TestApp, local_id, spawn_instance};
use mosaic::federation::grant::{RateLimit, Resource, Terms, Unmapped, UserMapping};
use mosaic::federation::protocol::{self, Actor, Envelope, SubRequest};
use serde_json::{Value, json};
use uuid::Uuid;

fn id(app: &TestApp) -> Uuid {
    app.state.instance_id
}

/// Sends a signed QUERY (or COMMAND) from `from` to `to`, acting for `actor`;
/// (HTTP status, body).
async fn ask(
    from: &TestApp,
    to: &TestApp,
    query: &str,
    variables: Value,
    actor: Option<Actor>,
    command: bool,
) -> (u16, Value) {
    let path = if command {
        protocol::COMMAND_PATH
    } else {
        protocol::QUERY_PATH
    };
    let body = serde_json::to_vec(&SubRequest {
        query: query.into(),
        variables,
        envelope: Envelope {
            visited: vec![id(from).to_string()],
            hop_limit: 4,
            deadline_ms: 10_000,
            actor,
            ..Envelope::default()
        },
    })
    .unwrap();
    let response = common::post_signed(from, to, path, body).await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// A person of `from`, as its federation names them (address verified).
fn person(from: &TestApp, user: Uuid, email: &str) -> Actor {
    Actor {
        user: format!("User:{}:{user}", id(from)),
        email: Some(email.into()),
    }
}

/// Replaces `asking`'s grant at `asked`, as `setPeerGrant` does.
async fn set_grant(asked: &TestApp, asking: &TestApp, terms: Terms) {
    asked
        .state
        .federation
        .set_grant(id(asking), &terms, "test")
        .await
        .expect("grant accepted");
}

/// One question over every read path of one workspace.
const EVERY_PATH: &str = r#"query($ws: ID!, $task: ID!, $project: ID!, $entry: ID!) {
  tasks(workspaceId: $ws, first: 10) { totalCount edges { node { title project { name } assignee { email } } } }
  task: node(id: $task) { id }
  project: node(id: $project) { id }
  entry: node(id: $entry) { id }
  workspace(id: $ws) {
    name
    members { user { email } }
    projects { name }
    teams { name }
    events(first: 10) { totalCount edges { node { title } } }
  }
  activity(workspaceId: $ws, first: 50) { entityType }
  knowledgeEntries(workspaceId: $ws, first: 10) { totalCount edges { node { title } } }
  searchKnowledge(query: "handbook", mode: TEXT, workspaceId: $ws) { entry { title } }
}"#;

/// What one answer to EVERY_PATH shows, path by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    tasks: usize,
    task_total: i64,
    task_project: bool,
    task_assignee: bool,
    node_task: bool,
    node_project: bool,
    node_entry: bool,
    workspace: bool,
    members: usize,
    projects: usize,
    teams: usize,
    events: i64,
    activity: bool,
    knowledge: i64,
    search: usize,
}

fn seen(data: &Value) -> Seen {
    let task = &data["tasks"]["edges"][0]["node"];
    let len = |v: &Value| v.as_array().map_or(0, Vec::len);
    Seen {
        tasks: len(&data["tasks"]["edges"]),
        task_total: data["tasks"]["totalCount"].as_i64().unwrap(),
        task_project: !task["project"].is_null(),
        task_assignee: !task["assignee"].is_null(),
        node_task: !data["task"].is_null(),
        node_project: !data["project"].is_null(),
        node_entry: !data["entry"].is_null(),
        workspace: !data["workspace"].is_null(),
        members: len(&data["workspace"]["members"]),
        projects: len(&data["workspace"]["projects"]),
        teams: len(&data["workspace"]["teams"]),
        events: data["workspace"]["events"]["totalCount"].as_i64().unwrap(),
        activity: len(&data["activity"]) > 0,
        knowledge: data["knowledgeEntries"]["totalCount"].as_i64().unwrap(),
        search: len(&data["searchKnowledge"]),
    }
}

struct Hq {
    hq: TestApp,
    work: TestApp,
    owner_token: String,
    ws: String,
    vars: Value,
}

/// `hq` with one workspace holding one of everything (a task in a project,
/// assigned to its owner; a second member; a team; an event; a published
/// knowledge entry), peered with `work` by an unrestricted grant.
async fn hq_with_everything() -> Hq {
    let hq = spawn_instance("hq").await;
    let work = spawn_instance("work").await;
    let (owner, owner_token) = hq.user("owner@hq.example").await;
    hq.user("bob@hq.example").await;
    let ws = hq.create_workspace(&owner_token, "plans").await;
    hq.add_member(&owner_token, &ws, "bob@hq.example", "MEMBER").await;
    let task = hq.create_task(&owner_token, &ws, "the plan").await;
    let d = hq
        .gql_ok(
            &owner_token,
            r#"mutation($w: ID!) {
                 p: createProject(input: {workspaceId: $w, name: "launch"}) { id }
                 t: createTeam(input: {workspaceId: $w, name: "crew"}) { id }
                 e: createEvent(input: {workspaceId: $w, title: "kick-off", startsAt: "2030-01-01T10:00:00Z", endsAt: "2030-01-01T11:00:00Z"}) { id }
                 k: createKnowledgeEntry(input: {workspaceId: $w, title: "The handbook", content: "handbook of the crew", status: PUBLISHED}) { id }
               }"#,
            json!({ "w": ws }),
        )
        .await;
    let project = d["p"]["id"].as_str().unwrap().to_string();
    sqlx::query("UPDATE tasks SET project_id = $2, assignee_id = $3 WHERE id = $1")
        .bind(local_id(&task))
        .bind(local_id(&project))
        .bind(owner)
        .execute(&mut hq.admin().await)
        .await
        .unwrap();
    common::peer(&work, &hq, &[&ws], false).await;
    let vars = json!({ "ws": ws, "task": task, "project": project, "entry": d["k"]["id"] });
    Hq {
        hq,
        work,
        owner_token,
        ws,
        vars,
    }
}

fn scope(ws: &str, resources: Option<&[Resource]>, excluded: &[Resource]) -> Terms {
    Terms {
        resources: resources.map(<[Resource]>::to_vec),
        excluded_resources: excluded.to_vec(),
        ..common::grant(&[local_id(ws)], false, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_shows_exactly_its_resources_through_every_read_path() {
    use Resource::*;
    let Hq { hq, work, ws, vars, .. } = hq_with_everything().await;
    let everything = Seen {
        tasks: 1,
        task_total: 1,
        task_project: true,
        task_assignee: true,
        node_task: true,
        node_project: true,
        node_entry: true,
        workspace: true,
        members: 2,
        projects: 1,
        teams: 1,
        events: 1,
        activity: true,
        knowledge: 1,
        search: 1,
    };
    let nothing_but_the_workspace = Seen {
        tasks: 0,
        task_total: 0,
        task_project: false,
        task_assignee: false,
        node_task: false,
        node_project: false,
        node_entry: false,
        workspace: true,
        members: 0,
        projects: 0,
        teams: 0,
        events: 0,
        activity: false,
        knowledge: 0,
        search: 0,
    };
    let table: Vec<(&str, Terms, Seen)> = vec![
        ("all (no resources named)", scope(&ws, None, &[]), everything),
        (
            "tasks only: no project, no assignee, no members, activity or knowledge",
            scope(&ws, Some(&[Tasks]), &[]),
            Seen {
                tasks: 1,
                task_total: 1,
                node_task: true,
                ..nothing_but_the_workspace
            },
        ),
        (
            "all but members and activity: the assignee's address goes with the members",
            scope(&ws, None, &[Members, Activity]),
            Seen {
                task_assignee: false,
                members: 0,
                activity: false,
                ..everything
            },
        ),
        (
            "knowledge and events only",
            scope(&ws, Some(&[Knowledge, Events]), &[]),
            Seen {
                node_entry: true,
                events: 1,
                knowledge: 1,
                search: 1,
                ..nothing_but_the_workspace
            },
        ),
        (
            "projects, teams and members",
            scope(&ws, Some(&[Projects, Teams, Members]), &[]),
            Seen {
                node_project: true,
                members: 2,
                projects: 1,
                teams: 1,
                ..nothing_but_the_workspace
            },
        ),
    ];
    for (name, terms, expected) in table {
        set_grant(&hq, &work, terms).await;
        let (status, body) = ask(&work, &hq, EVERY_PATH, vars.clone(), None, false).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert!(body.get("errors").is_none(), "{name}: {body}");
        assert_eq!(seen(&body["data"]), expected, "{name}");
    }

    // Through `work`'s own merged view, by one of its users: the same.
    set_grant(&hq, &work, scope(&ws, Some(&[Knowledge]), &[])).await;
    let (_, token) = work.user("ann@work.example").await;
    let d = work
        .gql_ok(
            &token,
            "query($task: ID!) { tasks(scope: {all: true}, first: 10) { totalCount edges { node { title } } } node(id: $task) { id } }",
            json!({ "task": vars["task"] }),
        )
        .await;
    assert_eq!(d["tasks"]["totalCount"], 0, "{d}");
    assert!(d["node"].is_null(), "{d}");
    let d = work
        .gql_ok(
            &token,
            "{ knowledgeEntries(scope: {all: true}, first: 10) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(d["knowledgeEntries"]["totalCount"], 1, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rows_per_query_caps_every_page_and_total() {
    let Hq {
        hq,
        work,
        owner_token,
        ws,
        ..
    } = hq_with_everything().await;
    hq.user("carl@hq.example").await;
    hq.add_member(&owner_token, &ws, "carl@hq.example", "GUEST").await;
    for i in 0..4 {
        hq.create_task(&owner_token, &ws, &format!("more {i}")).await;
    }
    set_grant(
        &hq,
        &work,
        Terms {
            max_rows_per_query: Some(2),
            ..scope(&ws, None, &[])
        },
    )
    .await;
    let page = "query($ws: ID!, $after: String) { tasks(workspaceId: $ws, first: 50, after: $after) {
        totalCount edges { node { title } } pageInfo { hasNextPage endCursor } }
      activity(workspaceId: $ws, first: 50) { entityType }
      workspace(id: $ws) { members { role } } }";
    let (status, body) = ask(&work, &hq, page, json!({ "ws": ws }), None, false).await;
    assert_eq!(status, 200, "{body}");
    let tasks = &body["data"]["tasks"];
    assert_eq!(tasks["edges"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(tasks["totalCount"], 2, "the total is capped too: {body}");
    assert_eq!(tasks["pageInfo"]["hasNextPage"], true);
    assert_eq!(body["data"]["activity"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(
        body["data"]["workspace"]["members"].as_array().unwrap().len(),
        2,
        "lists without pages too (three members): {body}"
    );
    // The next page is capped as well, and resumes where the first stopped.
    let after = tasks["pageInfo"]["endCursor"].as_str().unwrap();
    let (_, next) = ask(&work, &hq, page, json!({ "ws": ws, "after": after }), None, false).await;
    assert_eq!(next["data"]["tasks"]["edges"].as_array().unwrap().len(), 2, "{next}");
    assert_ne!(next["data"]["tasks"]["edges"][0], tasks["edges"][0]);

    // Through `work`'s merged view: at most two of hq's rows per page.
    let (_, token) = work.user("ann@work.example").await;
    let d = work
        .gql_ok(
            &token,
            "{ tasks(scope: {all: true}, first: 50) { totalCount edges { node { title } } } }",
            json!({}),
        )
        .await;
    assert_eq!(d["tasks"]["edges"].as_array().unwrap().len(), 2, "{d}");
    assert_eq!(d["tasks"]["totalCount"], 2, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_person_sees_and_does_no_more_than_their_local_user_within_the_grant() {
    let hq = spawn_instance("hq").await;
    let work = spawn_instance("work").await;
    let (_, owner_token) = hq.user("owner@hq.example").await;
    let (carol, _) = hq.user("carol@hq.example").await;
    let open = hq.create_workspace(&owner_token, "open").await;
    let closed = hq.create_workspace(&owner_token, "closed").await;
    hq.create_task(&owner_token, &open, "open task").await;
    hq.create_task(&owner_token, &closed, "closed task").await;
    hq.add_member(&owner_token, &open, "carol@hq.example", "GUEST").await;
    let (ann, _) = work.user("ann@work.example").await;
    let (dan, _) = work.user("dan@work.example").await;
    let ann = person(&work, ann, "ann@work.example");
    let dan = person(&work, dan, "dan@work.example");
    let both = [local_id(&open), local_id(&closed)];
    common::peer_with(&work, &hq, common::grant(&both, true, None)).await;
    let titles = |body: &Value| -> Vec<String> {
        let mut t: Vec<String> = body["data"]["tasks"]["edges"]
            .as_array()
            .unwrap_or(&vec![])
            .iter()
            .map(|e| e["node"]["title"].as_str().unwrap().to_string())
            .collect();
        t.sort();
        t
    };
    let list = "{ tasks(first: 10) { edges { node { title } } } }";

    // Unmapped, the grant's guest: both workspaces.
    let (_, body) = ask(&work, &hq, list, json!({}), Some(dan.clone()), false).await;
    assert_eq!(titles(&body), ["closed task", "open task"], "{body}");

    // Ann acts as carol, a guest of one workspace: that one only, though the grant has both.
    let mapped = Terms {
        user_mappings: vec![UserMapping {
            remote: "Ann@Work.example".into(),
            local_user: carol,
        }],
        ..common::grant(&both, true, None)
    };
    set_grant(&hq, &work, mapped.clone()).await;
    let (_, body) = ask(&work, &hq, list, json!({}), Some(ann.clone()), false).await;
    assert_eq!(titles(&body), ["open task"], "{body}");
    // A guest writes nothing, though the grant is read-write.
    let create = "mutation($w: ID!) { createTask(input: {workspaceId: $w, title: \"by ann\"}) { id } }";
    let before = hq.row_counts().await;
    let (_, body) = ask(&work, &hq, create, json!({ "w": open }), Some(ann.clone()), true).await;
    assert!(body.get("errors").is_some(), "a guest cannot create: {body}");
    assert_eq!(hq.row_counts().await, before, "nothing written");

    // As a member carol writes, and the log names her, the peer and ann.
    sqlx::query("UPDATE workspace_members SET role = 'MEMBER' WHERE user_id = $1")
        .bind(carol)
        .execute(&mut hq.admin().await)
        .await
        .unwrap();
    let (status, body) = ask(&work, &hq, create, json!({ "w": open }), Some(ann.clone()), true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    // Never in a workspace she is not a member of, though the grant has it.
    let (_, body) = ask(&work, &hq, create, json!({ "w": closed }), Some(ann.clone()), true).await;
    assert!(body.get("errors").is_some(), "{body}");
    let logged: (Option<Uuid>, Option<Uuid>, Option<String>) = sqlx::query_as(
        "SELECT actor_id, peer_id, remote_actor FROM activity_log WHERE entity_type = 'tasks' AND changes->>'title' = 'by ann'",
    )
    .fetch_one(&mut hq.admin().await)
    .await
    .unwrap();
    assert_eq!(logged, (Some(carol), Some(id(&work)), Some(ann.user.clone())));

    // An unmapped person's COMMAND is recorded with the peer and who asked, no local actor.
    set_grant(&hq, &work, common::grant(&both, true, None)).await;
    let (_, body) = ask(
        &work,
        &hq,
        create.replace("by ann", "by dan").as_str(),
        json!({ "w": closed }),
        Some(dan.clone()),
        true,
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let logged: (Option<Uuid>, Option<Uuid>, Option<String>) = sqlx::query_as(
        "SELECT actor_id, peer_id, remote_actor FROM activity_log WHERE entity_type = 'tasks' AND changes->>'title' = 'by dan'",
    )
    .fetch_one(&mut hq.admin().await)
    .await
    .unwrap();
    assert_eq!(logged, (None, Some(id(&work)), Some(dan.user.clone())));

    // A strict grant refuses anyone it maps to nobody, and a relayed actor.
    set_grant(
        &hq,
        &work,
        Terms {
            unmapped: Unmapped::Refuse,
            ..mapped
        },
    )
    .await;
    let (status, body) = ask(&work, &hq, list, json!({}), Some(dan), false).await;
    assert_eq!((status, common::code(&body).as_str()), (403, "GRANT_DENIED"), "{body}");
    let (status, _) = ask(&work, &hq, list, json!({}), None, false).await;
    assert_eq!(status, 403, "no person, no mapping");
    let (_, body) = ask(&work, &hq, list, json!({}), Some(ann), false).await;
    assert_eq!(titles(&body), ["by ann", "open task"], "{body}");
}

const SET_GRANT: &str = "mutation($i: SetPeerGrantInput!) { setPeerGrant(input: $i) {
    grant { workspaces readWrite resources excludedResources writeResources readableResources writableResources
            maxRowsPerQuery rateLimit { perSecond burst } userMappings { remote localUserId } unmapped }
    audit { action } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scope_documents_are_refused_naming_the_field_and_change_nothing() {
    let hq = spawn_instance("hq").await;
    let work = spawn_instance("work").await;
    let (_, owner_token) = hq.user("owner@hq.example").await;
    let ws = hq.create_workspace(&owner_token, "plans").await;
    let admin = {
        let mut conn = hq.admin().await;
        mosaic::auth::users::create(&mut conn, "root@hq.example", None, true)
            .await
            .unwrap();
        mosaic::auth::tokens::create(&mut conn, "root@hq.example", None)
            .await
            .unwrap()
    };
    common::peer(&work, &hq, &[&ws], false).await;
    let peers = "{ peers { grant { workspaces resources excludedResources maxRowsPerQuery rateLimit { burst } userMappings { remote } unmapped } audit { action } } }";
    let before = hq.gql_ok(&admin, peers, json!({})).await;
    let input = |extra: Value| {
        let mut i = json!({ "peerId": id(&work).to_string(), "workspaceIds": [ws] });
        i.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({ "i": i })
    };
    let nobody = format!("User:{}:{}", id(&hq), Uuid::new_v4());
    let cases = [
        (json!({ "resources": ["tasks", "secrets"] }), "resources"),
        (json!({ "excludedResources": ["Tasks"] }), "excludedResources"),
        (json!({ "resources": [] }), "resources"),
        (
            json!({ "resources": ["tasks"], "excludedResources": ["tasks"] }),
            "excludedResources",
        ),
        (json!({ "writeResources": ["tasks"] }), "writeResources"),
        (
            json!({ "readWrite": true, "resources": ["projects"], "writeResources": ["tasks"] }),
            "writeResources",
        ),
        (json!({ "maxRowsPerQuery": 0 }), "maxRowsPerQuery"),
        (json!({ "maxRowsPerQuery": -5 }), "maxRowsPerQuery"),
        (json!({ "maxRowsPerQuery": 1_000_000 }), "maxRowsPerQuery"),
        (
            json!({ "rateLimit": { "perSecond": 0.0, "burst": 5 } }),
            "rateLimit.perSecond",
        ),
        (
            json!({ "rateLimit": { "perSecond": 5.0, "burst": 0 } }),
            "rateLimit.burst",
        ),
        (json!({ "unmapped": "REFUSE" }), "unmapped"),
        (
            json!({ "userMappings": [{ "remote": "not an address", "localUserId": nobody }] }),
            "userMappings.remote",
        ),
        (
            json!({ "userMappings": [{ "remote": "a@work.example", "localUserId": nobody }] }),
            "userMappings.localUserId",
        ),
        (json!({ "workspaceIds": [] }), "workspaceIds"),
    ];
    for (extra, field) in cases {
        let body = hq.gql(&admin, SET_GRANT, input(extra.clone())).await;
        assert_eq!(common::code(&body), "BAD_USER_INPUT", "{extra}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}:")), "{extra}: {message}");
        assert_eq!(
            hq.gql_ok(&admin, peers, json!({})).await,
            before,
            "{extra}: nothing changed"
        );
    }

    // A good document is stored, shown and audited with what it replaced.
    let (carol, _) = hq.user("carol@hq.example").await;
    let carol_id = format!("User:{}:{carol}", id(&hq));
    let d = hq
        .gql_ok(
            &admin,
            SET_GRANT,
            input(json!({
                "readWrite": true,
                "excludedResources": ["members", "activity"],
                "writeResources": ["tasks"],
                "maxRowsPerQuery": 25,
                "rateLimit": { "perSecond": 2.5, "burst": 10 },
                "userMappings": [{ "remote": "Ann@Work.example", "localUserId": carol_id }],
                "unmapped": "REFUSE",
            })),
        )
        .await;
    let g = &d["setPeerGrant"]["grant"];
    assert_eq!(g["resources"], Value::Null);
    assert_eq!(g["excludedResources"], json!(["members", "activity"]));
    assert_eq!(
        g["readableResources"],
        json!(["tasks", "projects", "events", "teams", "knowledge", "agent_tasks"])
    );
    assert_eq!(g["writableResources"], json!(["tasks"]));
    assert_eq!(g["maxRowsPerQuery"], 25);
    assert_eq!(g["rateLimit"], json!({ "perSecond": 2.5, "burst": 10 }));
    assert_eq!(
        g["userMappings"],
        json!([{ "remote": "ann@work.example", "localUserId": carol_id }])
    );
    assert_eq!(g["unmapped"], "REFUSE");
    let actions: Vec<&str> = d["setPeerGrant"]["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.last(), Some(&"grant_changed"), "{actions:?}");
    let stored = mosaic::federation::registry::get(&hq.state.federation.pool, id(&work))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.grant_rate_limit,
        Some(RateLimit {
            per_second: 2.5,
            burst: 10
        })
    );

    // Only an active peer's grant is replaced.
    hq.state.federation.suspend(id(&work), "test").await.unwrap();
    let body = hq.gql(&admin, SET_GRANT, input(json!({}))).await;
    assert_eq!(common::code(&body), "BAD_USER_INPUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().starts_with("peer:"));
}

/// `mosaic peer grant set|show` against `app`'s database; (exit code, stdout, stderr).
async fn cli(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.database_url)
        .env("MOSAIC_SECRET_KEY", "test-secret-key-that-is-long-enough-0123456789")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("command ran");
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_and_shows_a_grant_and_names_the_flag_it_refuses() {
    let hq = spawn_instance("hq").await;
    let work = spawn_instance("work").await;
    let (_, owner_token) = hq.user("owner@hq.example").await;
    hq.user("carol@hq.example").await;
    let ws = hq.create_workspace(&owner_token, "plans").await;
    common::peer(&work, &hq, &[&ws], false).await;
    let peer = id(&work).to_string();
    let set = |extra: &[&str]| {
        let mut args = vec!["peer", "grant", "set", peer.as_str(), "--workspace", ws.as_str()];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let before = hq.state.federation.peer(id(&work)).await.unwrap().unwrap().terms();
    for (extra, flag) in [
        (&["--resource", "secrets"][..], "--resource:"),
        (
            &["--resource", "tasks", "--exclude-resource", "tasks"],
            "--exclude-resource:",
        ),
        (&["--max-rows", "0"], "--max-rows:"),
        (&["--write-resource", "tasks"], "--write-resource:"),
        (&["--unmapped", "refuse"], "--unmapped:"),
        (&["--map", "ann@work.example=nobody@hq.example"], "--map:"),
    ] {
        let args = set(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, stderr) = cli(&hq, &args).await;
        assert_ne!(code, Some(0), "{extra:?}");
        assert!(stderr.contains(flag), "{extra:?}: {stderr}");
        let now = hq.state.federation.peer(id(&work)).await.unwrap().unwrap().terms();
        assert_eq!(now, before, "{extra:?}: nothing changed");
    }
    let args = set(&[
        "--resource",
        "tasks",
        "--resource",
        "projects",
        "--max-rows",
        "5",
        "--rate",
        "3",
        "--burst",
        "6",
        "--map",
        "Ann@work.example=carol@hq.example",
        "--unmapped",
        "refuse",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = cli(&hq, &args).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, shown, stderr) = cli(&hq, &["peer", "grant", "show", &peer]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["resources"], json!(["tasks", "projects"]));
    assert_eq!(shown["max_rows_per_query"], 5);
    assert_eq!(shown["rate_limit"], json!({ "per_second": 3.0, "burst": 6 }));
    assert_eq!(shown["user_mappings"][0]["remote"], "ann@work.example");
    assert_eq!(shown["unmapped"], "refuse");
    let audit = mosaic::federation::registry::audit_log(&hq.state.federation.pool, id(&work))
        .await
        .unwrap();
    let last = audit.last().unwrap();
    assert_eq!((last.actor.as_str(), last.action.as_str()), ("cli", "grant_changed"));
    assert_eq!(last.details["was"]["resources"], Value::Null, "the grant it replaced");
}
