//! What a peer's answer may claim (pure).
//!
//! A peer speaks for itself and for the instances it reached on this
//! request, never for this instance or for instances we ask ourselves. Every
//! object in its answer that names an instance — by a global ID
//! (`Type:instance:uuid`) or by `instance { id }` — must name one it may
//! speak for, and both must agree. An object that does not is removed with
//! the list element that holds it (a whole edge, say), or nulled where it is
//! not in a list, so nothing false reaches the merged view.

use serde_json::{Map, Value};

/// Removes every claim `may_speak_for` refuses from a peer's `data`;
/// returns how many objects were removed.
pub fn prune(data: &mut Value, may_speak_for: &dyn Fn(&str) -> bool) -> usize {
    let mut removed = 0;
    if let Value::Object(fields) = data {
        for field in fields.values_mut() {
            if walk(field, may_speak_for, &mut removed) {
                *field = Value::Null;
                removed += 1;
            }
        }
    }
    removed
}

/// Whether `v` must be removed from its parent.
fn walk(v: &mut Value, ok: &dyn Fn(&str) -> bool, removed: &mut usize) -> bool {
    match v {
        Value::Array(items) => {
            items.retain_mut(|item| {
                let bad = walk(item, ok, removed);
                *removed += usize::from(bad);
                !bad
            });
            false
        }
        Value::Object(map) => bad_claim(map, ok) || map.values_mut().any(|child| walk(child, ok, removed)),
        _ => false,
    }
}

fn bad_claim(object: &Map<String, Value>, ok: &dyn Fn(&str) -> bool) -> bool {
    let by_id = object.get("id").and_then(Value::as_str).and_then(instance_of_id);
    let by_instance = object.get("instance").and_then(|i| i.get("id")).and_then(Value::as_str);
    match (by_id, by_instance) {
        (Some(a), Some(b)) => a != b || !ok(a),
        (Some(a), None) | (None, Some(a)) => !ok(a),
        (None, None) => false,
    }
}

/// Whether a typed row of a peer's answer may stand (the same rule, read
/// off typed rows instead of JSON): the instance it names is one
/// `may_speak_for` accepts, its own ID (the first of `ids`) names that
/// instance, and so does every ID nested in it, since nested objects live
/// where their row lives.
pub fn row_stands(instance: &str, ids: &[&str], may_speak_for: &dyn Fn(&str) -> bool) -> bool {
    may_speak_for(instance)
        && ids
            .iter()
            .filter_map(|id| instance_of_id(id))
            .all(|named| named == instance)
}

/// The instance part of a global ID; None for anything else.
fn instance_of_id(id: &str) -> Option<&str> {
    let mut parts = id.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(instance), Some(local))
            if !kind.is_empty()
                && kind.chars().all(|c| c.is_ascii_alphabetic())
                && uuid::Uuid::parse_str(instance).is_ok()
                && uuid::Uuid::parse_str(local).is_ok() =>
        {
            Some(instance)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: &str = "0196f2a4-6b1e-7c3d-9a58-2f4e6d8b0c11";
    const ME: &str = "0196f2a4-6b1e-7c3d-9a58-2f4e6d8b0c22";
    const L: &str = "0196f2a4-7000-7000-8000-000000000001";

    fn task(instance: &str, claimed: &str, title: &str) -> Value {
        json!({ "cursor": "c", "node": {
            "id": format!("Task:{instance}:{L}"), "title": title,
            "instance": { "id": claimed, "name": "x" },
            "workspace": { "id": format!("Workspace:{instance}:{L}") } } })
    }

    #[test]
    fn rows_of_other_instances_are_removed_with_their_edge() {
        let ok = |i: &str| i == P;
        let mut data = json!({ "tasks": { "edges": [
            task(P, P, "honest"),
            task(ME, ME, "our own id, false title"),
            task(P, ME, "ids disagree"),
            task(ME, P, "ids disagree the other way"),
        ], "pageInfo": { "hasNextPage": false } } });
        assert_eq!(prune(&mut data, &ok), 3);
        let edges = data["tasks"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0]["node"]["title"], "honest");
    }

    #[test]
    fn a_nested_false_claim_removes_the_row_and_a_lone_object_is_nulled() {
        let ok = |i: &str| i == P;
        let mut row = task(P, P, "assignee is ours");
        row["node"]["assignee"] = json!({ "id": format!("User:{ME}:{L}"), "email": "forged@x" });
        let mut data = json!({ "tasks": { "edges": [row] }, "node": { "id": format!("Task:{ME}:{L}") } });
        assert_eq!(prune(&mut data, &ok), 2);
        assert_eq!(data["tasks"]["edges"], json!([]));
        assert!(data["node"].is_null());
    }

    #[test]
    fn a_typed_row_stands_only_where_every_id_names_its_instance() {
        let ok = |i: &str| i == P;
        let own = format!("Task:{P}:{L}");
        let nested_here = format!("Workspace:{P}:{L}");
        let nested_ours = format!("Workspace:{ME}:{L}");
        assert!(row_stands(P, &[&own, &nested_here], &ok));
        assert!(
            !row_stands(ME, &[&format!("Task:{ME}:{L}")], &ok),
            "not its to speak for"
        );
        assert!(
            !row_stands(P, &[&format!("Task:{ME}:{L}")], &ok),
            "its id names another"
        );
        assert!(!row_stands(P, &[&own, &nested_ours], &ok), "a nested object elsewhere");
        assert!(
            row_stands(P, &[&own, "Task:nope", L], &ok),
            "not global IDs, not claims"
        );
    }

    #[test]
    fn plain_uuids_and_other_strings_are_not_claims() {
        let ok = |i: &str| i == P;
        let mut data = json!({ "instance": { "id": P, "name": "p" }, "x": { "id": ME }, "y": { "id": "Task:nope" } });
        let before = data.clone();
        assert_eq!(prune(&mut data, &ok), 0);
        assert_eq!(data, before);
    }
}
