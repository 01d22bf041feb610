//! A workspace in a peer's answer, with the nested lists its owner was asked for.

use std::sync::Arc;

use serde::Deserialize;
use time::OffsetDateTime;

use super::{Nested, Workspace, WorkspaceMember, WorkspaceRole};
use crate::error::AppResult;
use crate::graphql::InstanceInfo;
use crate::graphql::ids::Kind;
use crate::graphql::wire::{Ids, Wire, id_on};
use crate::projects::wire::ProjectWire;
use crate::teams::wire::TeamWire;
use crate::users::wire::UserWire;

pub const FRAGMENT: &str = "fragment WorkspaceFields on Workspace { id name createdAt updatedAt instance { id name } }";

/// What to ask an owner about its workspaces besides their own fields: the
/// nested lists the client selects, so one subquery per owner answers
/// `workspaces(scope:) { members projects teams }`, not one per workspace
/// and field.
pub struct NestedSelection {
    fields: String,
    fragments: String,
}

impl NestedSelection {
    pub fn of(selected: &async_graphql::Lookahead<'_>) -> Self {
        let mut fields = String::from("...WorkspaceFields");
        let mut fragments = String::from(FRAGMENT);
        if selected.field("members").exists() {
            fields.push_str(" members { role joinedAt user { id email name isAdmin } }");
        }
        for (field, spread, fragment) in [
            ("projects", "...ProjectFields", crate::projects::wire::FRAGMENT),
            ("teams", "...TeamFields", crate::teams::wire::FRAGMENT),
        ] {
            if selected.field(field).exists() {
                fields.push_str(&format!(" {field} {{ {spread} }}"));
                fragments.push(' ');
                fragments.push_str(fragment);
            }
        }
        Self { fields, fragments }
    }

    /// A query whose `root` field selects workspaces with what was selected.
    pub fn query(&self, head: &str, root: &str) -> String {
        format!("{head} {{ {root} {{ {} }} }} {}", self.fields, self.fragments)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceWire {
    id: String,
    name: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    // Present when `NestedSelection` asked for them, and only then.
    #[serde(default)]
    members: Option<Vec<MemberWire>>,
    #[serde(default)]
    projects: Option<Vec<ProjectWire>>,
    #[serde(default)]
    teams: Option<Vec<TeamWire>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberWire {
    role: String,
    #[serde(with = "time::serde::rfc3339")]
    joined_at: OffsetDateTime,
    user: UserWire,
}

impl Ids for MemberWire {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        self.user.ids(out);
    }
}

impl Wire for MemberWire {
    type Object = WorkspaceMember;
    fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<WorkspaceMember> {
        Ok(WorkspaceMember {
            role: WorkspaceRole::from_db(&self.role)?,
            user: self.user.into_object(instance)?,
            joined_at: self.joined_at,
        })
    }
}

fn all<W: Wire>(list: Option<Vec<W>>, instance: &Arc<InstanceInfo>) -> AppResult<Option<Vec<W::Object>>> {
    list.map(|l| l.into_iter().map(|w| w.into_object(instance)).collect())
        .transpose()
}

impl Ids for WorkspaceWire {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        out.push(&self.id);
        self.members.ids(out);
        self.projects.ids(out);
        self.teams.ids(out);
    }
}

impl Wire for WorkspaceWire {
    type Object = Workspace;
    fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<Workspace> {
        let (global_id, id) = id_on(&self.id, Kind::Workspace, instance)?;
        let nested = Nested {
            members: all(self.members, instance)?,
            projects: all(self.projects, instance)?,
            teams: all(self.teams, instance)?,
        };
        let asked = nested.members.is_some() || nested.projects.is_some() || nested.teams.is_some();
        Ok(Workspace {
            id,
            name: self.name,
            created_at: self.created_at,
            updated_at: self.updated_at,
            instance: instance.clone(),
            global_id,
            nested: asked.then(|| Arc::new(nested)),
        })
    }
}
