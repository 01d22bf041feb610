//! An event in a peer's answer.

use std::sync::Arc;

use serde::Deserialize;
use time::OffsetDateTime;

use super::Event;
use crate::error::AppResult;
use crate::graphql::InstanceInfo;
use crate::graphql::ids::Kind;
use crate::graphql::wire::{Nullable, Wire, id_on};
use crate::users::wire::UserWire;
use crate::workspaces::wire::WorkspaceWire;

pub const FRAGMENT: &str = "fragment EventFields on Event { id title description startsAt endsAt location createdAt
    instance { id name }
    workspace { id name createdAt updatedAt }
    createdBy { id email name isAdmin } }";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventWire {
    id: String,
    title: String,
    description: Nullable<String>,
    #[serde(with = "time::serde::rfc3339")]
    starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    ends_at: OffsetDateTime,
    location: Nullable<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    workspace: WorkspaceWire,
    created_by: Nullable<UserWire>,
}

impl Wire for EventWire {
    type Object = Event;
    fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<Event> {
        let (global_id, id) = id_on(&self.id, Kind::Event, instance)?;
        Ok(Event {
            id,
            title: self.title,
            description: self.description.0,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            location: self.location.0,
            created_by: self.created_by.0.map(|u| u.into_object(instance)).transpose()?,
            created_at: self.created_at,
            workspace: self.workspace.into_object(instance)?,
            instance: instance.clone(),
            global_id,
        })
    }
}
