//! A user in a peer's answer.

use std::sync::Arc;

use serde::Deserialize;

use super::User;
use crate::error::AppResult;
use crate::graphql::InstanceInfo;
use crate::graphql::ids::Kind;
use crate::graphql::wire::{Ids, Nullable, Wire, id_on};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserWire {
    id: String,
    email: String,
    name: Nullable<String>,
    is_admin: bool,
}

impl Ids for UserWire {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        out.push(&self.id);
    }
}

impl Wire for UserWire {
    type Object = User;
    fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<User> {
        let (global_id, id) = id_on(&self.id, Kind::User, instance)?;
        Ok(User {
            id,
            email: self.email,
            name: self.name.0,
            is_admin: self.is_admin,
            instance: instance.clone(),
            global_id,
        })
    }
}
