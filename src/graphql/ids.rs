//! Global object IDs: `Type:instance-id:uuid`. The owning instance is part of
//! the ID, so any instance can tell where an object lives and route to it.

use async_graphql::ID;
use uuid::Uuid;

use crate::error::AppError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    User,
    Workspace,
    Project,
    Task,
    Event,
    Team,
    KnowledgeEntry,
    AgentTask,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Workspace => "Workspace",
            Self::Project => "Project",
            Self::Task => "Task",
            Self::Event => "Event",
            Self::Team => "Team",
            Self::KnowledgeEntry => "KnowledgeEntry",
            Self::AgentTask => "AgentTask",
        }
    }

    /// The name with its indefinite article, for messages ("an Event").
    fn with_article(self) -> String {
        let article = if self.as_str().starts_with(['A', 'E', 'I', 'O', 'U']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {}", self.as_str())
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::User,
            Self::Workspace,
            Self::Project,
            Self::Task,
            Self::Event,
            Self::Team,
            Self::KnowledgeEntry,
            Self::AgentTask,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalId {
    pub kind: Kind,
    pub instance: Uuid,
    pub local: Uuid,
}

impl GlobalId {
    pub fn new(kind: Kind, instance: Uuid, local: Uuid) -> Self {
        Self { kind, instance, local }
    }

    pub fn to_id(&self) -> ID {
        ID(format!("{}:{}:{}", self.kind.as_str(), self.instance, self.local))
    }

    pub fn parse(id: &str) -> Result<Self, AppError> {
        let bad = || AppError::BadInput(format!("'{id}' is not a Mosaic ID (Type:instance:uuid)"));
        let mut parts = id.splitn(3, ':');
        let (Some(kind), Some(instance), Some(local)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        Ok(Self {
            kind: Kind::parse(kind).ok_or_else(bad)?,
            instance: instance.parse().map_err(|_| bad())?,
            local: local.parse().map_err(|_| bad())?,
        })
    }

    /// Parses an ID that must be of `kind` and live on this instance.
    pub fn local(id: &str, kind: Kind, this_instance: Uuid) -> Result<Uuid, AppError> {
        let g = Self::of_kind(id, kind)?;
        if g.instance != this_instance {
            return Err(AppError::BadInput(format!(
                "'{id}' belongs to instance {}, not this one ({this_instance})",
                g.instance
            )));
        }
        Ok(g.local)
    }

    /// Parses an ID that must name an object of `kind`, on any instance.
    pub fn of_kind(id: &str, kind: Kind) -> Result<Self, AppError> {
        let g = Self::parse(id)?;
        if g.kind != kind {
            return Err(AppError::BadInput(format!(
                "'{id}' is {} ID where {} ID is expected",
                g.kind.with_article(),
                kind.with_article()
            )));
        }
        Ok(g)
    }
}

/// Where the object an ID names lives: the one answer to "local or remote?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// On this instance: its local UUID.
    Here(Uuid),
    /// On another instance, which must be asked.
    Instance(Uuid),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_wrong_kind_or_instance() {
        let (i, l) = (Uuid::new_v4(), Uuid::new_v4());
        let id = GlobalId::new(Kind::Task, i, l).to_id();
        assert_eq!(GlobalId::parse(&id).unwrap(), GlobalId::new(Kind::Task, i, l));
        assert_eq!(GlobalId::local(&id, Kind::Task, i).unwrap(), l);
        assert!(
            GlobalId::local(&id, Kind::Project, i)
                .unwrap_err()
                .message()
                .contains("Task ID")
        );
        assert!(GlobalId::local(&id, Kind::Task, Uuid::new_v4()).is_err());
        let event = GlobalId::new(Kind::Event, i, l).to_id();
        assert_eq!(GlobalId::parse(&event).unwrap().kind, Kind::Event);
        assert!(
            GlobalId::local(&id, Kind::Event, i)
                .unwrap_err()
                .message()
                .contains("is a Task ID where an Event ID is expected")
        );
        let team = GlobalId::new(Kind::Team, i, l).to_id();
        assert_eq!(GlobalId::parse(&team).unwrap().kind, Kind::Team);
        assert!(
            GlobalId::local(&team, Kind::Workspace, i)
                .unwrap_err()
                .message()
                .contains("is a Team ID where a Workspace ID is expected")
        );
        assert!(GlobalId::parse("Task:nope").is_err());
        assert!(
            GlobalId::parse("Robot:00000000-0000-0000-0000-000000000000:00000000-0000-0000-0000-000000000000").is_err()
        );
    }
}
