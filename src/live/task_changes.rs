//! Task changes from PostgreSQL notifications (migration 0050), heard by the
//! instance's listener (`listener.rs`) and sent to a bounded broadcast.

use serde::Deserialize;
use uuid::Uuid;

pub const CHANNEL: &str = "mosaic_task_changes";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

/// What a notification says: which task of which workspace changed, and how.
/// Nothing more is trusted from it: subscribers read the task themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskNote {
    pub kind: ChangeKind,
    pub task: Uuid,
    pub workspace: Uuid,
}

impl TaskNote {
    pub fn parse(payload: &str) -> Option<Self> {
        serde_json::from_str(payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_parse_from_the_trigger_payload_only() {
        let task = Uuid::new_v4();
        let ws = Uuid::new_v4();
        let payload = format!(r#"{{"kind" : "DELETE", "task" : "{task}", "workspace" : "{ws}"}}"#);
        assert_eq!(
            TaskNote::parse(&payload),
            Some(TaskNote {
                kind: ChangeKind::Delete,
                task,
                workspace: ws
            })
        );
        assert_eq!(
            TaskNote::parse(r#"{"kind":"TRUNCATE","task":"x","workspace":"y"}"#),
            None
        );
        assert_eq!(TaskNote::parse("not json"), None);
    }
}
