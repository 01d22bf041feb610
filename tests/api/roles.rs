//! Who may do what in a workspace: every role against every mutation, as a
//! table derived from the policies in `migrations/0001_core.sql` (and
//! `0031_workspace_invitations.sql` for invitations).

use crate::common;

use common::{TestApp, codes, fingerprint, local_id, spawn_app};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Forbidden,
    /// The workspace is invisible to the caller, so it does not exist for them.
    NotFound,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    UpdateWorkspace,
    DeleteWorkspace,
    /// Invite a newcomer as MEMBER (they join only by accepting).
    InviteMember,
    /// Invite a newcomer as OWNER.
    InviteOwner,
    /// Change another MEMBER's role to GUEST.
    UpdateMember,
    /// Change another MEMBER's role to OWNER.
    PromoteToOwner,
    /// Remove another MEMBER.
    RemoveMember,
    /// Remove yourself.
    Leave,
    CreateProject,
    UpdateProject,
    DeleteProject,
    CreateTask,
    UpdateTask,
    DeleteTask,
    CreateEvent,
    UpdateEvent,
    DeleteEvent,
    CreateTeam,
    RenameTeam,
    DeleteTeam,
    /// Add yourself (a member of the workspace) to the team as ADMIN.
    AddTeamMember,
    /// Remove the other MEMBER from the team.
    RemoveTeamMember,
}

use Op::*;
use Outcome::{Allowed, Forbidden, NotFound};

/// The caller's place in the workspace, in the columns' order below.
const ROLES: [Option<&str>; 5] = [Some("OWNER"), Some("ADMIN"), Some("MEMBER"), Some("GUEST"), None];

/// Expected outcome per operation.
/// Non-members never see the workspace: NOT_FOUND for everything.
#[rustfmt::skip]
const RULES: &[(Op, [Outcome; 5])] = &[
    //                 OWNER      ADMIN      MEMBER     GUEST      non-member
    // workspaces_update: owners and admins (admin_workspace_ids)
    (UpdateWorkspace, [Allowed,   Allowed,   Forbidden, Forbidden, NotFound]),
    // workspaces_delete: owners only
    (DeleteWorkspace, [Allowed,   Forbidden, Forbidden, Forbidden, NotFound]),
    // invitations_invite: owners and admins ...
    (InviteMember,    [Allowed,   Allowed,   Forbidden, Forbidden, NotFound]),
    // ... and only owners hand out ownership
    (InviteOwner,     [Allowed,   Forbidden, Forbidden, Forbidden, NotFound]),
    // members_change: owners and admins; only owners make or change owners
    (UpdateMember,    [Allowed,   Allowed,   Forbidden, Forbidden, NotFound]),
    (PromoteToOwner,  [Allowed,   Forbidden, Forbidden, Forbidden, NotFound]),
    // members_remove: owners and admins remove others ...
    (RemoveMember,    [Allowed,   Allowed,   Forbidden, Forbidden, NotFound]),
    // ... and anyone may leave (an owner here, as a second owner exists)
    (Leave,           [Allowed,   Allowed,   Allowed,   Allowed,   NotFound]),
    // projects_insert / projects_update: members above guest (writable_workspace_ids)
    (CreateProject,   [Allowed,   Allowed,   Allowed,   Forbidden, NotFound]),
    (UpdateProject,   [Allowed,   Allowed,   Allowed,   Forbidden, NotFound]),
    // projects_delete: owners and admins
    (DeleteProject,   [Allowed,   Allowed,   Forbidden, Forbidden, NotFound]),
    // tasks_insert / tasks_update / tasks_delete: members above guest
    (CreateTask,      [Allowed,   Allowed,   Allowed,   Forbidden, NotFound]),
    (UpdateTask,      [Allowed,   Allowed,   Allowed,   Forbidden, NotFound]),
    (DeleteTask,      [Allowed,   Allowed,   Allowed,   Forbidden, NotFound]),
    // events_write (FOR ALL): members above guest
    (CreateEvent,     [Allowed,   Allowed,   Allowed,   Forbidden, NotFound]),
    (UpdateEvent,     [Allowed,   Allowed,   Allowed,   Forbidden, NotFound]),
    (DeleteEvent,     [Allowed,   Allowed,   Allowed,   Forbidden, NotFound]),
    // teams_write / team_members_write (FOR ALL): owners and admins (admin_workspace_ids)
    (CreateTeam,      [Allowed,   Allowed,   Forbidden, Forbidden, NotFound]),
    (RenameTeam,      [Allowed,   Allowed,   Forbidden, Forbidden, NotFound]),
    (DeleteTeam,      [Allowed,   Allowed,   Forbidden, Forbidden, NotFound]),
    (AddTeamMember,   [Allowed,   Allowed,   Forbidden, Forbidden, NotFound]),
    (RemoveTeamMember,[Allowed,   Allowed,   Forbidden, Forbidden, NotFound]),
];

impl Op {
    /// The mutation; variables: $w workspace, $p project, $t task, $e event,
    /// $team team, $other (a MEMBER), $me (the caller).
    fn mutation(self) -> &'static str {
        match self {
            UpdateWorkspace => "mutation($w: ID!) { updateWorkspace(input: {id: $w, name: \"renamed\"}) { name } }",
            DeleteWorkspace => "mutation($w: ID!) { deleteWorkspace(id: $w) }",
            InviteMember => {
                "mutation($w: ID!) { inviteWorkspaceMember(input: {workspaceId: $w, email: \"newcomer@example.com\", role: MEMBER}) { role } }"
            }
            InviteOwner => {
                "mutation($w: ID!) { inviteWorkspaceMember(input: {workspaceId: $w, email: \"newcomer@example.com\", role: OWNER}) { role } }"
            }
            UpdateMember => {
                "mutation($w: ID!, $other: ID!) { updateWorkspaceMember(input: {workspaceId: $w, userId: $other, role: GUEST}) { role } }"
            }
            PromoteToOwner => {
                "mutation($w: ID!, $other: ID!) { updateWorkspaceMember(input: {workspaceId: $w, userId: $other, role: OWNER}) { role } }"
            }
            RemoveMember => {
                "mutation($w: ID!, $other: ID!) { removeWorkspaceMember(input: {workspaceId: $w, userId: $other}) }"
            }
            Leave => "mutation($w: ID!, $me: ID!) { removeWorkspaceMember(input: {workspaceId: $w, userId: $me}) }",
            CreateProject => {
                "mutation($w: ID!) { createProject(input: {workspaceId: $w, name: \"new project\"}) { id } }"
            }
            UpdateProject => "mutation($p: ID!) { updateProject(input: {id: $p, name: \"renamed\"}) { id } }",
            DeleteProject => "mutation($p: ID!) { deleteProject(id: $p) }",
            CreateTask => "mutation($w: ID!) { createTask(input: {workspaceId: $w, title: \"new task\"}) { id } }",
            UpdateTask => "mutation($t: ID!) { updateTask(input: {id: $t, title: \"renamed\", status: DONE}) { id } }",
            DeleteTask => "mutation($t: ID!) { deleteTask(id: $t) }",
            CreateEvent => {
                "mutation($w: ID!) { createEvent(input: {workspaceId: $w, title: \"new event\", startsAt: \"2030-01-01T09:00:00Z\", endsAt: \"2030-01-01T10:00:00Z\"}) { id } }"
            }
            UpdateEvent => {
                "mutation($e: ID!) { updateEvent(input: {id: $e, title: \"renamed\", location: \"elsewhere\"}) { id } }"
            }
            DeleteEvent => "mutation($e: ID!) { deleteEvent(id: $e) }",
            CreateTeam => "mutation($w: ID!) { createTeam(input: {workspaceId: $w, name: \"new team\"}) { id } }",
            RenameTeam => "mutation($team: ID!) { renameTeam(input: {id: $team, name: \"renamed\"}) { id } }",
            DeleteTeam => "mutation($team: ID!) { deleteTeam(id: $team) }",
            AddTeamMember => {
                "mutation($team: ID!) { addTeamMember(input: {teamId: $team, email: \"actor@example.com\", role: ADMIN}) { role } }"
            }
            RemoveTeamMember => {
                "mutation($team: ID!, $other: ID!) { removeTeamMember(input: {teamId: $team, userId: $other}) }"
            }
        }
    }

    /// SQL that is true once the operation took effect; parameters: $1
    /// workspace, $2 project, $3 task, $4 the other member, $5 the newcomer,
    /// $6 the caller, $7 event, $8 team.
    fn effect(self) -> &'static str {
        match self {
            UpdateWorkspace => "SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1 AND name = 'renamed')",
            DeleteWorkspace => "SELECT NOT EXISTS (SELECT 1 FROM workspaces WHERE id = $1)",
            // Invited, pending, and not (yet) a member.
            InviteMember => {
                "SELECT EXISTS (SELECT 1 FROM workspace_invitations i JOIN users u ON u.email = i.email
                                WHERE i.workspace_id = $1 AND u.id = $5 AND i.role = 'MEMBER' AND i.status = 'PENDING')
                    AND NOT EXISTS (SELECT 1 FROM workspace_members WHERE workspace_id = $1 AND user_id = $5)"
            }
            InviteOwner => {
                "SELECT EXISTS (SELECT 1 FROM workspace_invitations i JOIN users u ON u.email = i.email
                                WHERE i.workspace_id = $1 AND u.id = $5 AND i.role = 'OWNER' AND i.status = 'PENDING')
                    AND NOT EXISTS (SELECT 1 FROM workspace_members WHERE workspace_id = $1 AND user_id = $5)"
            }
            UpdateMember => {
                "SELECT EXISTS (SELECT 1 FROM workspace_members WHERE workspace_id = $1 AND user_id = $4 AND role = 'GUEST')"
            }
            PromoteToOwner => {
                "SELECT EXISTS (SELECT 1 FROM workspace_members WHERE workspace_id = $1 AND user_id = $4 AND role = 'OWNER')"
            }
            RemoveMember => {
                "SELECT NOT EXISTS (SELECT 1 FROM workspace_members WHERE workspace_id = $1 AND user_id = $4)"
            }
            Leave => "SELECT NOT EXISTS (SELECT 1 FROM workspace_members WHERE workspace_id = $1 AND user_id = $6)",
            CreateProject => "SELECT EXISTS (SELECT 1 FROM projects WHERE workspace_id = $1 AND name = 'new project')",
            UpdateProject => "SELECT EXISTS (SELECT 1 FROM projects WHERE id = $2 AND name = 'renamed')",
            DeleteProject => "SELECT NOT EXISTS (SELECT 1 FROM projects WHERE id = $2)",
            CreateTask => "SELECT EXISTS (SELECT 1 FROM tasks WHERE workspace_id = $1 AND title = 'new task')",
            UpdateTask => "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $3 AND title = 'renamed' AND status = 'DONE')",
            DeleteTask => "SELECT NOT EXISTS (SELECT 1 FROM tasks WHERE id = $3)",
            CreateEvent => "SELECT EXISTS (SELECT 1 FROM events WHERE workspace_id = $1 AND title = 'new event')",
            UpdateEvent => {
                "SELECT EXISTS (SELECT 1 FROM events WHERE id = $7 AND title = 'renamed' AND location = 'elsewhere')"
            }
            DeleteEvent => "SELECT NOT EXISTS (SELECT 1 FROM events WHERE id = $7)",
            CreateTeam => {
                "SELECT EXISTS (SELECT 1 FROM teams t JOIN team_members m ON m.team_id = t.id
                                WHERE t.workspace_id = $1 AND t.name = 'new team' AND m.user_id = $6 AND m.role = 'OWNER')"
            }
            RenameTeam => "SELECT EXISTS (SELECT 1 FROM teams WHERE id = $8 AND name = 'renamed')",
            DeleteTeam => "SELECT NOT EXISTS (SELECT 1 FROM teams WHERE id = $8)",
            AddTeamMember => {
                "SELECT EXISTS (SELECT 1 FROM team_members WHERE team_id = $8 AND user_id = $6 AND role = 'ADMIN')"
            }
            RemoveTeamMember => "SELECT NOT EXISTS (SELECT 1 FROM team_members WHERE team_id = $8 AND user_id = $4)",
        }
    }
}

struct People {
    /// This instance's id, for building global IDs.
    instance: String,
    creator: Uuid,
    actor: Uuid,
    actor_token: String,
    other: Uuid,
    newcomer: Uuid,
}

impl People {
    fn global(&self, kind: &str, id: Uuid) -> String {
        format!("{kind}:{}:{id}", self.instance)
    }
}

async fn people(app: &TestApp) -> People {
    let (creator, creator_token) = app.user("creator@example.com").await;
    let (actor, actor_token) = app.user("actor@example.com").await;
    let (other, _) = app.user("other@example.com").await;
    let (newcomer, _) = app.user("newcomer@example.com").await;
    let me = app.gql_ok(&creator_token, "{ me { id } }", json!({})).await;
    let instance = me["me"]["id"].as_str().unwrap().split(':').nth(1).unwrap().to_string();
    People {
        instance,
        creator,
        actor,
        actor_token,
        other,
        newcomer,
    }
}

/// Fresh objects for one row of the table: a workspace the creator owns, the
/// caller in `role` (or not a member), another MEMBER, a project, a task,
/// an event and a team with the other MEMBER in it.
struct Fixture {
    ws: Uuid,
    project: Uuid,
    task: Uuid,
    event: Uuid,
    team: Uuid,
}

async fn fixture(admin: &mut PgConnection, p: &People, role: Option<&str>) -> Fixture {
    let f = Fixture {
        ws: Uuid::now_v7(),
        project: Uuid::now_v7(),
        task: Uuid::now_v7(),
        event: Uuid::now_v7(),
        team: Uuid::now_v7(),
    };
    let mut tx = admin.begin().await.unwrap();
    // The creator becomes the owner (trigger workspaces_owner).
    sqlx::query("INSERT INTO workspaces (id, name, created_by) VALUES ($1, 'fresh', $2)")
        .bind(f.ws)
        .bind(p.creator)
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut members = vec![(p.other, "MEMBER")];
    if let Some(role) = role {
        members.push((p.actor, role));
    }
    for (user, role) in members {
        sqlx::query("INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, $3)")
            .bind(f.ws)
            .bind(user)
            .bind(role)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO projects (id, workspace_id, name) VALUES ($1, $2, 'project')")
        .bind(f.project)
        .bind(f.ws)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO tasks (id, workspace_id, project_id, title) VALUES ($1, $2, $3, 'task')")
        .bind(f.task)
        .bind(f.ws)
        .bind(f.project)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (id, workspace_id, title, starts_at, ends_at)
         VALUES ($1, $2, 'event', '2030-01-01 09:00Z', '2030-01-01 10:00Z')",
    )
    .bind(f.event)
    .bind(f.ws)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO teams (id, workspace_id, name) VALUES ($1, $2, 'team')")
        .bind(f.team)
        .bind(f.ws)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO team_members (workspace_id, team_id, user_id, role) VALUES ($1, $2, $3, 'MEMBER')")
        .bind(f.ws)
        .bind(f.team)
        .bind(p.other)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    f
}

async fn took_effect(admin: &mut PgConnection, op: Op, f: &Fixture, p: &People) -> bool {
    sqlx::query_scalar(op.effect())
        .bind(f.ws)
        .bind(f.project)
        .bind(f.task)
        .bind(p.other)
        .bind(p.newcomer)
        .bind(p.actor)
        .bind(f.event)
        .bind(f.team)
        .fetch_one(admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_role_may_do_exactly_what_the_policies_allow() {
    let app = spawn_app().await;
    let p = people(&app).await;
    let mut admin = app.admin().await;
    let mut mismatches = Vec::new();
    for (op, outcomes) in RULES {
        for (role, expected) in ROLES.iter().zip(outcomes) {
            let who = role.unwrap_or("non-member");
            let f = fixture(&mut admin, &p, *role).await;
            let vars = json!({
                "w": p.global("Workspace", f.ws),
                "p": p.global("Project", f.project),
                "t": p.global("Task", f.task),
                "e": p.global("Event", f.event),
                "team": p.global("Team", f.team),
                "other": p.global("User", p.other),
                "me": p.global("User", p.actor),
            });
            let before = fingerprint(&mut admin).await;
            let body = app.gql(&p.actor_token, op.mutation(), vars).await;
            let after = fingerprint(&mut admin).await;
            let effect = took_effect(&mut admin, *op, &f, &p).await;
            let got = match codes(&body).as_slice() {
                [] => Allowed,
                [c] if c == "FORBIDDEN" => Forbidden,
                [c] if c == "NOT_FOUND" => NotFound,
                _ => panic!("{op:?} as {who}: unexpected answer {body}"),
            };
            if got != *expected {
                mismatches.push(format!("{op:?} as {who}: expected {expected:?}, got {body}"));
                continue;
            }
            if got == Allowed {
                assert!(effect, "{op:?} as {who}: answered but did nothing: {body}");
                assert_ne!(before, after, "{op:?} as {who}");
            } else {
                assert!(body["data"].is_null(), "{op:?} as {who}: {body}");
                assert_eq!(before, after, "{op:?} as {who}: refused but changed data");
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    app.stop().await;
}

const SET_ROLE: &str = "mutation($w: ID!, $u: ID!, $r: WorkspaceRole!) { updateWorkspaceMember(input: {workspaceId: $w, userId: $u, role: $r}) { role } }";
const REMOVE: &str = "mutation($w: ID!, $u: ID!) { removeWorkspaceMember(input: {workspaceId: $w, userId: $u}) }";

async fn roles(admin: &mut PgConnection, ws: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT u.email, m.role FROM workspace_members m JOIN users u ON u.id = m.user_id
         WHERE m.workspace_id = $1 ORDER BY u.email",
    )
    .bind(local_id(ws))
    .fetch_all(admin)
    .await
    .unwrap()
}

/// Sends a request that must fail with `code` alone and change nothing.
async fn refused(app: &TestApp, token: &str, query: &str, vars: Value, code: &str) -> Value {
    let mut admin = app.admin().await;
    let before = fingerprint(&mut admin).await;
    let body = app.gql(token, query, vars).await;
    assert_eq!(codes(&body), [code], "{query}: {body}");
    assert_eq!(
        fingerprint(&mut admin).await,
        before,
        "{query}: refused but changed data"
    );
    body
}

#[tokio::test]
async fn the_last_owner_can_be_neither_demoted_nor_removed() {
    let app = spawn_app().await;
    let (a_id, a) = app.user("a@example.com").await;
    let (b_id, b) = app.user("b@example.com").await;
    let ws = app.create_workspace(&a, "W").await;
    app.add_member(&a, &ws, "b@example.com", "ADMIN").await;
    let instance = ws.split(':').nth(1).unwrap();
    let (a_user, b_user) = (format!("User:{instance}:{a_id}"), format!("User:{instance}:{b_id}"));
    let mut admin = app.admin().await;

    // A is the only owner: neither demoting nor removing A is possible.
    for role in ["ADMIN", "MEMBER", "GUEST"] {
        let body = refused(
            &app,
            &a,
            SET_ROLE,
            json!({ "w": ws, "u": a_user, "r": role }),
            "BAD_USER_INPUT",
        )
        .await;
        assert!(
            body["errors"][0]["message"].as_str().unwrap().contains("owner"),
            "{body}"
        );
    }
    refused(&app, &a, REMOVE, json!({ "w": ws, "u": a_user }), "BAD_USER_INPUT").await;
    // An admin cannot touch an owner at all.
    refused(
        &app,
        &b,
        SET_ROLE,
        json!({ "w": ws, "u": a_user, "r": "MEMBER" }),
        "FORBIDDEN",
    )
    .await;
    refused(&app, &b, REMOVE, json!({ "w": ws, "u": a_user }), "FORBIDDEN").await;

    // Handing ownership over in one request works: promote B, then demote A.
    app.gql_ok(
        &a,
        "mutation($w: ID!, $a: ID!, $b: ID!) { p: updateWorkspaceMember(input: {workspaceId: $w, userId: $b, role: OWNER}) { role } d: updateWorkspaceMember(input: {workspaceId: $w, userId: $a, role: ADMIN}) { role } }",
        json!({ "w": ws, "a": a_user, "b": b_user }),
    )
    .await;
    let expected = |a_role: &str, b_role: &str| {
        vec![
            ("a@example.com".to_string(), a_role.to_string()),
            ("b@example.com".to_string(), b_role.to_string()),
        ]
    };
    assert_eq!(roles(&mut admin, &ws).await, expected("ADMIN", "OWNER"));

    // Now B is the last owner, with the same protection.
    refused(
        &app,
        &b,
        SET_ROLE,
        json!({ "w": ws, "u": b_user, "r": "ADMIN" }),
        "BAD_USER_INPUT",
    )
    .await;
    refused(&app, &b, REMOVE, json!({ "w": ws, "u": b_user }), "BAD_USER_INPUT").await;
    // The demotion is refused even when it comes after other changes in the
    // request: the whole request is rolled back.
    refused(
        &app,
        &b,
        "mutation($w: ID!, $a: ID!, $b: ID!) { x: updateWorkspaceMember(input: {workspaceId: $w, userId: $a, role: MEMBER}) { role } y: removeWorkspaceMember(input: {workspaceId: $w, userId: $b}) }",
        json!({ "w": ws, "a": a_user, "b": b_user }),
        "BAD_USER_INPUT",
    )
    .await;
    assert_eq!(roles(&mut admin, &ws).await, expected("ADMIN", "OWNER"));

    // With a second owner, one of them may leave.
    app.gql_ok(&b, SET_ROLE, json!({ "w": ws, "u": a_user, "r": "OWNER" }))
        .await;
    app.gql_ok(&b, REMOVE, json!({ "w": ws, "u": b_user })).await;
    assert_eq!(
        roles(&mut admin, &ws).await,
        vec![("a@example.com".to_string(), "OWNER".to_string())]
    );
    refused(&app, &a, REMOVE, json!({ "w": ws, "u": a_user }), "BAD_USER_INPUT").await;

    // Deleting the workspace is not "removing the last owner": it goes, members and all.
    app.gql_ok(&a, "mutation($w: ID!) { deleteWorkspace(id: $w) }", json!({ "w": ws }))
        .await;
    assert!(roles(&mut admin, &ws).await.is_empty());
    app.stop().await;
}
