//! Reading peers' answers into objects, by serde.
//!
//! Each entity's `wire.rs` declares the shape its fragment selects, next to
//! the fragment. A field the fragment selects but the answer lacks is
//! refused, never defaulted: nullable fields are [`Nullable`], which must be
//! present (as a value or `null`). Objects nested in another (a task's
//! workspace, assignee, ...) live where their parent lives, so they take
//! their parent's instance instead of claiming one; only the object at the
//! top of an answer names its instance, and its ID must name the same.

use std::sync::Arc;

use async_graphql::ID;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use uuid::Uuid;

use super::InstanceInfo;
use super::ids::{GlobalId, Kind};
use crate::error::{AppError, AppResult};

/// The shape of one entity in a peer's answer.
pub trait Wire: DeserializeOwned {
    type Object;
    /// The object, living on `instance`.
    fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<Self::Object>;
}

/// An object at the top of a peer's answer, with the instance it names.
pub fn owned<W: Wire>(v: &Value) -> AppResult<W::Object> {
    // Read apart, not through `#[serde(flatten)]`, which copies every field
    // of the object into a buffer first (measurable with ten peers' pages).
    let instance = decode::<InstanceInfo>(v.get("instance").ok_or_else(|| bad("missing field `instance`"))?)?;
    decode::<W>(v)?.into_object(&Arc::new(instance))
}

/// For an optional part a selection may leave out: `Some` whenever the
/// answer carries the field, `null` included (serde would read `null` as
/// `None`, as if it were absent); `None` only when it is absent, with
/// `#[serde(default)]`.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The global IDs a wire carries, its own first, then those of the
/// objects nested in it: each says where that object lives, a claim the
/// peer must be allowed to make (`federation::provenance::row_stands`).
pub trait Ids {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>);
}

impl<T: Ids> Ids for Option<T> {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        if let Some(t) = self {
            t.ids(out);
        }
    }
}

impl<T: Ids> Ids for Nullable<T> {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        self.0.ids(out);
    }
}

impl<T: Ids> Ids for Vec<T> {
    fn ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        for t in self {
            t.ids(out);
        }
    }
}

/// An entity's wire that stands at the top of a list in a peer's answer:
/// it names the instance it lives on (`instance { id name }`).
pub trait Row: Wire + Ids {
    fn instance(&self) -> &InstanceInfo;
    fn take_instance(&mut self) -> InstanceInfo;
}

/// A row of a peer's answer as its object, on the instance it names.
pub fn row<W: Row>(mut w: W) -> AppResult<W::Object> {
    let instance = Arc::new(w.take_instance());
    w.into_object(&instance)
}

/// A list of objects at the top of a peer's answer.
pub fn owned_list<W: Wire>(v: &Value) -> AppResult<Vec<W::Object>> {
    v.as_array()
        .ok_or_else(|| bad("expected a list"))?
        .iter()
        .map(owned::<W>)
        .collect()
}

/// A value of a peer's answer: a field it lacks or cannot hold is named.
pub fn decode<T: DeserializeOwned>(v: &Value) -> AppResult<T> {
    T::deserialize(v).map_err(|e| bad(&e.to_string()))
}

fn bad(why: &str) -> AppError {
    AppError::BadInput(format!("peer answer: {why}"))
}

/// A field the answer must carry, possibly as `null`. (serde would take a
/// missing `Option` for `None`.)
#[derive(Debug)]
pub struct Nullable<T>(pub Option<T>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Nullable<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Self(None)),
            v => T::deserialize(v)
                .map(|t| Self(Some(t)))
                .map_err(serde::de::Error::custom),
        }
    }
}

/// The global ID of an object of `kind` that lives on `instance`, and its
/// local UUID; an ID of another kind or instance is refused.
pub fn id_on(id: &str, kind: Kind, instance: &InstanceInfo) -> AppResult<(ID, Uuid)> {
    let g = GlobalId::parse(id).map_err(|_| bad("id is not a global ID"))?;
    if g.kind != kind {
        return Err(bad(&format!("id names a {:?}, not a {kind:?}", g.kind)));
    }
    if g.instance.to_string() != instance.id {
        return Err(bad("id names another instance than the object's"));
    }
    Ok((ID(id.to_string()), g.local))
}

/// A GraphQL enum's name as the answer gives it.
pub fn enum_value(name: &str) -> async_graphql::Value {
    async_graphql::Value::Enum(async_graphql::Name::new(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    struct Thing {
        name: String,
        note: Nullable<String>,
    }

    impl Wire for Thing {
        type Object = String;
        fn into_object(self, instance: &Arc<InstanceInfo>) -> AppResult<String> {
            Ok(format!("{} on {}", self.name, instance.name))
        }
    }

    #[test]
    fn an_owned_object_names_its_instance() {
        let on = |v: Value| owned::<Thing>(&v).map_err(|e| e.message());
        let instance = json!({ "id": Uuid::now_v7().to_string(), "name": "hq" });
        assert_eq!(
            on(json!({ "name": "a", "note": null, "instance": instance })).unwrap(),
            "a on hq"
        );
        assert!(
            on(json!({ "name": "a", "note": null }))
                .unwrap_err()
                .contains("instance")
        );
        assert!(
            on(json!({ "name": "a", "note": null, "instance": { "id": "x" } }))
                .unwrap_err()
                .contains("name")
        );
        assert!(
            on(json!({ "note": null, "instance": instance }))
                .unwrap_err()
                .contains("name")
        );
    }

    #[test]
    fn nullable_fields_must_be_present() {
        let t: Thing = decode(&json!({ "name": "a", "note": null })).unwrap();
        assert!(t.note.0.is_none());
        let t: Thing = decode(&json!({ "name": "a", "note": "n" })).unwrap();
        assert_eq!(t.note.0.as_deref(), Some("n"));
        let e = decode::<Thing>(&json!({ "name": "a" })).err().unwrap();
        assert!(e.message().contains("note"), "{}", e.message());
        let e = decode::<Thing>(&json!({ "note": null })).err().unwrap();
        assert!(e.message().contains("name"), "{}", e.message());
    }

    #[test]
    fn an_optional_part_carried_as_null_is_present() {
        #[derive(Deserialize)]
        struct Part {
            #[serde(default, deserialize_with = "present")]
            note: Option<Nullable<String>>,
        }
        let read = |text: &str| serde_json::from_str::<Part>(text).unwrap().note.map(|n| n.0);
        assert_eq!(read(r#"{}"#), None);
        assert_eq!(read(r#"{"note": null}"#), Some(None));
        assert_eq!(read(r#"{"note": "n"}"#), Some(Some("n".into())));
    }

    #[test]
    fn ids_must_name_the_kind_and_instance() {
        let here = InstanceInfo {
            id: Uuid::now_v7().to_string(),
            name: "here".into(),
        };
        let task = GlobalId::new(Kind::Task, here.id.parse().unwrap(), Uuid::now_v7()).to_id();
        assert!(id_on(&task, Kind::Task, &here).is_ok());
        assert!(id_on(&task, Kind::Event, &here).is_err());
        let elsewhere = InstanceInfo {
            id: Uuid::now_v7().to_string(),
            name: "elsewhere".into(),
        };
        assert!(id_on(&task, Kind::Task, &elsewhere).is_err());
        assert!(id_on("nonsense", Kind::Task, &here).is_err());
    }
}
