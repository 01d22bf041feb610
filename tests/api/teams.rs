//! Teams through GraphQL: the mutations, `Workspace.teams`, membership,
//! refused input, and isolation between workspaces. Who may write per role is
//! in tests/roles.rs; teams of a peer's workspace in tests/federation_merge.rs.

use crate::common;

use common::{TestApp, codes, fingerprint, local_id, spawn_app};
use serde_json::{Value, json};
use uuid::Uuid;

const CREATE: &str = "mutation($i: CreateTeamInput!) { createTeam(input: $i) {
    id name createdAt workspace { id } instance { id name } members { role user { email } } } }";
const RENAME: &str = "mutation($i: RenameTeamInput!) { renameTeam(input: $i) { id name } }";
const DELETE: &str = "mutation($id: ID!) { deleteTeam(id: $id) }";
const ADD: &str = "mutation($i: AddTeamMemberInput!) { addTeamMember(input: $i) { role user { id email } } }";
const REMOVE: &str = "mutation($i: RemoveTeamMemberInput!) { removeTeamMember(input: $i) }";
const NODE: &str =
    "query($id: ID!) { node(id: $id) { id ... on Team { name workspace { id } members { role user { email } } } } }";
const LIST: &str = "query($w: ID!) { workspace(id: $w) { teams { id name members { role user { email } } } } }";

async fn create_team(app: &TestApp, token: &str, ws: &str, name: &str) -> String {
    let d = app
        .gql_ok(token, CREATE, json!({ "i": { "workspaceId": ws, "name": name } }))
        .await;
    d["createTeam"]["id"].as_str().unwrap().to_string()
}

async fn add(app: &TestApp, token: &str, team: &str, email: &str, role: &str) -> Value {
    app.gql_ok(
        token,
        ADD,
        json!({ "i": { "teamId": team, "email": email, "role": role } }),
    )
    .await["addTeamMember"]
        .clone()
}

/// (name, [(email, role)]) of every team `Workspace.teams` lists, in order.
async fn teams(app: &TestApp, token: &str, ws: &str) -> Vec<(String, Vec<(String, String)>)> {
    let d = app.gql_ok(token, LIST, json!({ "w": ws })).await;
    d["workspace"]["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let members = t["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["user"]["email"].as_str().unwrap().to_string(),
                        m["role"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (t["name"].as_str().unwrap().to_string(), members)
        })
        .collect()
}

fn m(email: &str, role: &str) -> (String, String) {
    (email.to_string(), role.to_string())
}

#[tokio::test]
async fn a_team_is_created_read_renamed_staffed_and_deleted() {
    let app = spawn_app().await;
    let (alice_id, alice) = app.user("alice@example.com").await;
    let (bob_id, _) = app.user("bob@example.com").await;
    app.user("carol@example.com").await;
    let ws = app.create_workspace(&alice, "Company").await;
    app.add_member(&alice, &ws, "bob@example.com", "MEMBER").await;
    app.add_member(&alice, &ws, "carol@example.com", "GUEST").await;
    let instance = app.state.instance_id.to_string();

    // The creator becomes the team's OWNER; the name is stored trimmed.
    let d = app
        .gql_ok(
            &alice,
            CREATE,
            json!({ "i": { "workspaceId": ws, "name": "  Platform  " } }),
        )
        .await;
    let t = &d["createTeam"];
    let id = t["id"].as_str().unwrap().to_string();
    assert!(id.starts_with(&format!("Team:{instance}:")), "{id}");
    assert_eq!(t["name"], "Platform");
    assert_eq!(t["workspace"]["id"], ws);
    assert_eq!(t["instance"], json!({ "id": instance, "name": "test" }));
    assert_eq!(
        t["members"],
        json!([{ "role": "OWNER", "user": { "email": "alice@example.com" } }])
    );

    // node(id:) shows it.
    let d = app.gql_ok(&alice, NODE, json!({ "id": id })).await;
    assert_eq!(
        d["node"],
        json!({ "id": id, "name": "Platform", "workspace": { "id": ws },
                "members": [{ "role": "OWNER", "user": { "email": "alice@example.com" } }] })
    );

    // Listed by name, then id (two teams may share a name).
    let design = create_team(&app, &alice, &ws, "Design").await;
    let second = create_team(&app, &alice, &ws, "Design").await;
    assert!(local_id(&design) < local_id(&second));
    let d = app.gql_ok(&alice, LIST, json!({ "w": ws })).await;
    let ids: Vec<&str> = d["workspace"]["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [design.as_str(), second.as_str(), id.as_str()]);

    let d = app
        .gql_ok(&alice, RENAME, json!({ "i": { "id": id, "name": " Infrastructure " } }))
        .await;
    assert_eq!(d["renameTeam"], json!({ "id": id, "name": "Infrastructure" }));

    // Members of the workspace join, guests too; listed by e-mail.
    let bob_user = format!("User:{instance}:{bob_id}");
    assert_eq!(
        add(&app, &alice, &id, " Bob@Example.com ", "ADMIN").await,
        json!({ "role": "ADMIN", "user": { "id": bob_user, "email": "bob@example.com" } })
    );
    add(&app, &alice, &id, "carol@example.com", "MEMBER").await;
    assert_eq!(
        teams(&app, &alice, &ws).await[2],
        (
            "Infrastructure".to_string(),
            vec![
                m("alice@example.com", "OWNER"),
                m("bob@example.com", "ADMIN"),
                m("carol@example.com", "MEMBER")
            ]
        )
    );

    let d = app
        .gql_ok(&alice, REMOVE, json!({ "i": { "teamId": id, "userId": bob_user } }))
        .await;
    assert_eq!(d["removeTeamMember"], bob_user);
    assert_eq!(
        teams(&app, &alice, &ws).await[2].1,
        [m("alice@example.com", "OWNER"), m("carol@example.com", "MEMBER")]
    );

    // Deleting the team takes its memberships with it.
    let d = app.gql_ok(&alice, DELETE, json!({ "id": id })).await;
    assert_eq!(d["deleteTeam"], id);
    assert!(app.gql_ok(&alice, NODE, json!({ "id": id })).await["node"].is_null());
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM teams WHERE id = $1), (SELECT count(*) FROM team_members WHERE team_id = $1)",
    )
    .bind(local_id(&id))
    .fetch_one(&mut app.admin().await)
    .await
    .unwrap();
    assert_eq!(left, (0, 0));
    assert_eq!(teams(&app, &alice, &ws).await.len(), 2);

    // The activity log's trigger on teams recorded each change, by Alice.
    let d = app
        .gql_ok(
            &alice,
            "query($w: ID!) { activity(workspaceId: $w) { action entityType entityId actorId } }",
            json!({ "w": ws }),
        )
        .await;
    let on_team: Vec<(&str, &str)> = d["activity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["entityType"] == "teams" && a["entityId"] == local_id(&id).to_string())
        .map(|a| (a["action"].as_str().unwrap(), a["actorId"].as_str().unwrap()))
        .collect();
    let alice_user = format!("User:{instance}:{alice_id}");
    assert_eq!(
        on_team,
        [
            ("delete", alice_user.as_str()),
            ("update", alice_user.as_str()),
            ("insert", alice_user.as_str())
        ]
    );

    // Deleting the workspace takes its teams with it.
    app.gql_ok(
        &alice,
        "mutation($w: ID!) { deleteWorkspace(id: $w) }",
        json!({ "w": ws }),
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM teams")
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap();
    assert_eq!(left, 0);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, token) = app.user("careful@example.com").await;
    let (member_id, _) = app.user("member@example.com").await;
    app.user("outsider@example.com").await;
    let ws = app.create_workspace(&token, "W").await;
    app.add_member(&token, &ws, "member@example.com", "MEMBER").await;
    let task = app.create_task(&token, &ws, "a task").await;
    let team = create_team(&app, &token, &ws, "kept").await;
    add(&app, &token, &team, "member@example.com", "MEMBER").await;
    let instance = app.state.instance_id.to_string();
    let member = format!("User:{instance}:{member_id}");
    // Objects of the right type on another instance: no peer grant covers teams.
    let elsewhere = Uuid::new_v4();
    let remote_team = format!("Team:{elsewhere}:{}", Uuid::now_v7());
    let remote_ws = format!("Workspace:{elsewhere}:{}", Uuid::now_v7());
    const BAD: &str = "BAD_USER_INPUT";

    // createTeam
    let create = |ws: &str, name: Value| json!({ "i": { "workspaceId": ws, "name": name } });
    for (vars, code, field) in [
        (create(&ws, json!("")), BAD, "name"),
        (create(&ws, json!(" \t\n ")), BAD, "name"),
        (create(&ws, json!("x".repeat(201))), BAD, "name"),
        (create(&ws, json!("a\u{0}b")), BAD, "name"),
        (create(&task, json!("ok")), BAD, "workspaceId"),
        (create(&team, json!("ok")), BAD, "workspaceId"),
        (create("nope", json!("ok")), BAD, "workspaceId"),
        (create(&remote_ws, json!("ok")), "FORBIDDEN", "workspaceId"),
    ] {
        app.assert_refused(&token, CREATE, vars, code, field).await;
    }

    // renameTeam
    let rename = |id: &str, name: Value| json!({ "i": { "id": id, "name": name } });
    for (vars, code, field) in [
        (rename(&team, json!("   ")), BAD, "name"),
        (rename(&team, json!("x".repeat(201))), BAD, "name"),
        (rename(&team, json!("a\u{0}b")), BAD, "name"),
        (rename(&ws, json!("ok")), BAD, "id"),
        (rename(&remote_team, json!("ok")), "FORBIDDEN", "id"),
    ] {
        app.assert_refused(&token, RENAME, vars, code, field).await;
    }

    // deleteTeam
    for (id, code) in [
        (ws.as_str(), BAD),
        (task.as_str(), BAD),
        ("Team:nope", BAD),
        (remote_team.as_str(), "FORBIDDEN"),
    ] {
        app.assert_refused(&token, DELETE, json!({ "id": id }), code, "id")
            .await;
    }

    // addTeamMember
    let adding = |team: &str, email: &str| json!({ "i": { "teamId": team, "email": email, "role": "MEMBER" } });
    for (vars, code, field) in [
        // No account and no membership answer alike: nothing is told about accounts.
        (adding(&team, "nobody@example.com"), BAD, "email"),
        (adding(&team, "outsider@example.com"), BAD, "email"),
        (adding(&team, "member@example.com"), "CONFLICT", "email"),
        (adding(&team, "careful@example.com"), "CONFLICT", "email"),
        (adding(&team, ""), BAD, "email"),
        (adding(&team, "a\u{0}@example.com"), BAD, "email"),
        (adding(&ws, "member@example.com"), BAD, "teamId"),
        (adding(&remote_team, "member@example.com"), "FORBIDDEN", "teamId"),
    ] {
        app.assert_refused(&token, ADD, vars, code, field).await;
    }
    // A role that is no team role (GUEST is a workspace role) is refused by
    // the schema's validation, naming the type.
    app.assert_refused(
        &token,
        ADD,
        json!({ "i": { "teamId": team, "email": "member@example.com", "role": "GUEST" } }),
        "GRAPHQL_VALIDATION_FAILED",
        "TeamRole",
    )
    .await;

    // removeTeamMember
    let (outsider_id, _): (Uuid, String) =
        sqlx::query_as("SELECT id, email FROM users WHERE email = 'outsider@example.com'")
            .fetch_one(&mut app.admin().await)
            .await
            .unwrap();
    let outsider = format!("User:{instance}:{outsider_id}");
    let removing = |team: &str, user: &str| json!({ "i": { "teamId": team, "userId": user } });
    for (vars, code, field) in [
        (removing(&team, &outsider), "NOT_FOUND", "userId"),
        (removing(&team, &team), BAD, "userId"),
        (removing(&team, "nope"), BAD, "userId"),
        (removing(&ws, &member), BAD, "teamId"),
        (removing(&remote_team, &member), "FORBIDDEN", "teamId"),
    ] {
        app.assert_refused(&token, REMOVE, vars, code, field).await;
    }

    // All or nothing: a request whose last write fails keeps none of its writes.
    app.assert_refused(
        &token,
        "mutation($w: ID!, $t: ID!) {
           a: createTeam(input: {workspaceId: $w, name: \"new\"}) { id }
           b: renameTeam(input: {id: $t, name: \"changed\"}) { id }
           c: addTeamMember(input: {teamId: $t, email: \"outsider@example.com\", role: MEMBER}) { role } }",
        json!({ "w": ws, "t": team }),
        BAD,
        "email",
    )
    .await;
    assert_eq!(
        teams(&app, &token, &ws).await,
        [(
            "kept".to_string(),
            vec![m("careful@example.com", "OWNER"), m("member@example.com", "MEMBER")]
        )]
    );

    // Exactly at the limit, the name is accepted.
    let d = app
        .gql_ok(
            &token,
            CREATE,
            json!({ "i": { "workspaceId": ws, "name": "x".repeat(200) } }),
        )
        .await;
    assert_eq!(d["createTeam"]["name"].as_str().unwrap().len(), 200);
    app.stop().await;
}

/// A user of another workspace sees none of its teams, by any path, and
/// cannot change them or their members; a guest of the workspace reads them.
#[tokio::test]
async fn teams_stay_inside_their_workspace() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (bob_id, bob) = app.user("bob@example.com").await;
    let (_, gina) = app.user("gina@example.com").await;
    let ws_a = app.create_workspace(&alice, "Alice's").await;
    let ws_b = app.create_workspace(&bob, "Bob's").await;
    app.add_member(&alice, &ws_a, "gina@example.com", "GUEST").await;
    let secret = create_team(&app, &alice, &ws_a, "secret").await;
    add(&app, &alice, &secret, "gina@example.com", "MEMBER").await;
    create_team(&app, &bob, &ws_b, "bob's").await;
    let instance = app.state.instance_id.to_string();
    let bob_user = format!("User:{instance}:{bob_id}");
    let gina_user = {
        let d = app.gql_ok(&gina, "{ me { id } }", json!({})).await;
        d["me"]["id"].as_str().unwrap().to_string()
    };

    let d = app
        .gql_ok(
            &bob,
            "query($w: ID!, $t: ID!) { node(id: $t) { id } workspace(id: $w) { teams { id } }
               workspaces { name teams { name members { user { email } } } } }",
            json!({ "w": ws_a, "t": secret }),
        )
        .await;
    assert!(d["node"].is_null() && d["workspace"].is_null(), "{d}");
    assert_eq!(
        d["workspaces"],
        json!([{ "name": "Bob's", "teams": [{ "name": "bob's", "members": [{ "user": { "email": "bob@example.com" } }] }] }])
    );

    let mut admin = app.admin().await;
    let before = fingerprint(&mut admin).await;
    for (query, vars) in [
        (CREATE, json!({ "i": { "workspaceId": ws_a, "name": "intruder" } })),
        (RENAME, json!({ "i": { "id": secret, "name": "mine" } })),
        (DELETE, json!({ "id": secret })),
        (
            ADD,
            json!({ "i": { "teamId": secret, "email": "bob@example.com", "role": "OWNER" } }),
        ),
        (REMOVE, json!({ "i": { "teamId": secret, "userId": gina_user } })),
        (REMOVE, json!({ "i": { "teamId": secret, "userId": bob_user } })),
    ] {
        let body = app.gql(&bob, query, vars).await;
        assert_eq!(codes(&body), ["NOT_FOUND"], "{query}: {body}");
        assert!(body["data"].is_null(), "{body}");
    }
    // Nor can Bob put Alice's people into his own team: they are not his
    // workspace's members (and he cannot tell whether the address exists).
    let bobs = teams(&app, &bob, &ws_b).await;
    assert_eq!(bobs.len(), 1);
    let d = app.gql_ok(&bob, LIST, json!({ "w": ws_b })).await;
    let bobs_team = d["workspace"]["teams"][0]["id"].as_str().unwrap().to_string();
    let body = app
        .gql(
            &bob,
            ADD,
            json!({ "i": { "teamId": bobs_team, "email": "gina@example.com", "role": "MEMBER" } }),
        )
        .await;
    assert_eq!(codes(&body), ["BAD_USER_INPUT"], "{body}");
    assert_eq!(fingerprint(&mut admin).await, before, "refused but changed data");

    // The guest reads Alice's teams and their members, but not Bob's, and
    // changes nothing (tests/roles.rs has every role).
    let d = app
        .gql_ok(
            &gina,
            "query($t: ID!) { node(id: $t) { ... on Team { name members { role user { email } } } }
               workspaces { name teams { name } } }",
            json!({ "t": secret }),
        )
        .await;
    assert_eq!(
        d["node"],
        json!({ "name": "secret", "members": [
            { "role": "OWNER", "user": { "email": "alice@example.com" } },
            { "role": "MEMBER", "user": { "email": "gina@example.com" } }] })
    );
    assert_eq!(
        d["workspaces"],
        json!([{ "name": "Alice's", "teams": [{ "name": "secret" }] }])
    );
    let body = app
        .gql(&gina, RENAME, json!({ "i": { "id": secret, "name": "guest's" } }))
        .await;
    assert_eq!(codes(&body), ["FORBIDDEN"], "{body}");
    assert_eq!(fingerprint(&mut admin).await, before, "refused but changed data");
    app.stop().await;
}

#[tokio::test]
async fn leaving_a_workspace_leaves_its_teams_and_team_memberships_are_logged() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (bob_id, _) = app.user("bob@example.com").await;
    let ws = app.create_workspace(&alice, "Company").await;
    let other_ws = app.create_workspace(&alice, "Elsewhere").await;
    app.add_member(&alice, &ws, "bob@example.com", "MEMBER").await;
    app.add_member(&alice, &other_ws, "bob@example.com", "MEMBER").await;
    let team = create_team(&app, &alice, &ws, "Platform").await;
    let other_team = create_team(&app, &alice, &other_ws, "Kept").await;
    add(&app, &alice, &team, "bob@example.com", "MEMBER").await;
    add(&app, &alice, &other_team, "bob@example.com", "MEMBER").await;

    let bob = format!("User:{}:{bob_id}", app.state.instance_id);
    app.gql_ok(
        &alice,
        "mutation($i: RemoveWorkspaceMemberInput!) { removeWorkspaceMember(input: $i) }",
        json!({ "i": { "workspaceId": ws, "userId": bob } }),
    )
    .await;
    assert_eq!(
        teams(&app, &alice, &ws).await,
        [("Platform".to_string(), vec![m("alice@example.com", "OWNER")])],
        "bob left the workspace's team with the workspace"
    );
    assert_eq!(
        teams(&app, &alice, &other_ws).await,
        [(
            "Kept".to_string(),
            vec![m("alice@example.com", "OWNER"), m("bob@example.com", "MEMBER")]
        )],
        "his team in another workspace stays"
    );
    let logged: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, changes ->> 'user_id' FROM activity_log
         WHERE entity_type = 'team_members' AND workspace_id = $1 ORDER BY id",
    )
    .bind(local_id(&ws))
    .fetch_all(&mut app.admin().await)
    .await
    .unwrap();
    let alice_id = logged[0].1.clone();
    assert_eq!(
        logged,
        [
            ("insert".to_string(), alice_id),
            ("insert".to_string(), bob_id.to_string()),
            ("delete".to_string(), bob_id.to_string())
        ]
    );
    app.stop().await;
}
