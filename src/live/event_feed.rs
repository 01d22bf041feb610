//! Domain events for `events` subscribers (migrations 0082 and 0083): the
//! outbox numbered up to an id (this instance's events) or a peer's batch
//! recorded. Nothing else is trusted from a notification: subscribers read
//! the rows themselves, under their own scope.

use uuid::Uuid;

/// Where `outbox_sequence()` announces the last id numbered.
pub const OUTBOX_CHANNEL: &str = "mosaic_outbox";
/// Where the outbox triggers announce a write (for the delivery worker).
pub const OUTBOX_WRITTEN_CHANNEL: &str = "mosaic_outbox_written";
/// Where `record_received_events()` announces a peer's recorded batch.
pub const RECEIVED_CHANNEL: &str = "mosaic_received_events";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedNote {
    /// This instance's outbox is numbered up to this id.
    Local(i64),
    /// Events of this peer were recorded.
    Peer(Uuid),
}

impl FeedNote {
    pub fn parse(channel: &str, payload: &str) -> Option<Self> {
        match channel {
            OUTBOX_CHANNEL => payload.parse().ok().map(Self::Local),
            RECEIVED_CHANNEL => payload.parse().ok().map(Self::Peer),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_parse_by_channel() {
        let peer = Uuid::new_v4();
        assert_eq!(FeedNote::parse(OUTBOX_CHANNEL, "42"), Some(FeedNote::Local(42)));
        assert_eq!(
            FeedNote::parse(RECEIVED_CHANNEL, &peer.to_string()),
            Some(FeedNote::Peer(peer))
        );
        assert_eq!(FeedNote::parse(OUTBOX_CHANNEL, "x"), None);
        assert_eq!(FeedNote::parse("other", "42"), None);
    }
}
