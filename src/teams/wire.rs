//! A team in a peer's answer, with its members.

use std::sync::Arc;

use serde::Deserialize;
use time::OffsetDateTime;

use super::{Team, TeamMember, TeamRole};
use crate::error::AppResult;
use crate::graphql::InstanceInfo;
use crate::graphql::ids::Kind;
use crate::graphql::wire::{Ids, Wire, id_on};
use crate::users::wire::UserWire;
use crate::workspaces::wire::WorkspaceWire;

pub const FRAGMENT: &str = "fragment TeamFields on Team { id name createdAt
    instance { id name }
    workspace { id name createdAt updatedAt }
    members { role user { id email name isAdmin } } }";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamWire {
    id: String,
    name: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    workspace: WorkspaceWire,
    members: Vec<MemberWire>,
}

#[derive(Deserialize)]
struct MemberWire {
    role: String,
    user: UserWire,
}

impl Ids for TeamWire {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        out.push(&self.id);
        self.workspace.ids(out);
        for m in &self.members {
            m.user.ids(out);
        }
    }
}

impl Wire for TeamWire {
    type Object = Team;
    fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<Team> {
        let (global_id, id) = id_on(&self.id, Kind::Team, instance)?;
        let members = self
            .members
            .into_iter()
            .map(|m| {
                Ok(TeamMember {
                    role: TeamRole::from_db(&m.role)?,
                    user: m.user.into_object(instance)?,
                })
            })
            .collect::<AppResult<_>>()?;
        Ok(Team {
            id,
            name: self.name,
            created_at: self.created_at,
            workspace: self.workspace.into_object(instance)?,
            instance: instance.clone(),
            global_id,
            remote_members: Some(members),
        })
    }
}
