//! Agent task events from PostgreSQL notifications (migration 0064's
//! trigger, one per row of `agent_task_events`), heard by the instance's
//! listener and sent to a bounded broadcast for `agentTaskEvents`.

use serde::Deserialize;
use uuid::Uuid;

pub const CHANNEL: &str = "mosaic_agent_task_events";

/// Which event of which task of which workspace was logged. Nothing more is
/// trusted from it: subscribers read the event themselves, under RLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct AgentTaskEventNote {
    pub task: Uuid,
    pub workspace: Uuid,
    pub event: i64,
}

impl AgentTaskEventNote {
    pub fn parse(payload: &str) -> Option<Self> {
        serde_json::from_str(payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_parse_from_the_trigger_payload_only() {
        let (task, ws) = (Uuid::new_v4(), Uuid::new_v4());
        let payload = format!(r#"{{"task" : "{task}", "workspace" : "{ws}", "event" : 42}}"#);
        assert_eq!(
            AgentTaskEventNote::parse(&payload),
            Some(AgentTaskEventNote {
                task,
                workspace: ws,
                event: 42
            })
        );
        assert_eq!(
            AgentTaskEventNote::parse(r#"{"task":"x","workspace":"y","event":1}"#),
            None
        );
        assert_eq!(AgentTaskEventNote::parse("not json"), None);
    }
}
