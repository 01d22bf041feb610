//! The `graphql-transport-ws` protocol (the GraphQL over WebSocket protocol
//! of the graphql-ws library): its messages and close codes. No I/O here.

use async_graphql::{Response, ServerError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The WebSocket subprotocol name.
pub const PROTOCOL: &str = "graphql-transport-ws";

pub const GOING_AWAY: u16 = 1001;
/// The server cannot check credentials right now.
pub const INTERNAL_ERROR: u16 = 1011;
/// A limit is reached; the client may try again later.
pub const TRY_AGAIN_LATER: u16 = 1013;
pub const BAD_MESSAGE: u16 = 4400;
pub const UNAUTHORIZED: u16 = 4401;
pub const FORBIDDEN: u16 = 4403;
pub const INIT_TIMEOUT: u16 = 4408;
pub const SUBSCRIBER_EXISTS: u16 = 4409;
pub const TOO_MANY_INITS: u16 = 4429;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    /// Any payload is ignored.
    Ping {},
    Pong {},
    Subscribe {
        id: String,
        payload: Box<async_graphql::Request>,
    },
    Complete {
        id: String,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    ConnectionAck,
    Ping,
    Pong,
    Next { id: &'a str, payload: &'a Response },
    Error { id: &'a str, payload: &'a [ServerError] },
    Complete { id: &'a str },
}

impl ClientMessage {
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

impl ServerMessage<'_> {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("protocol messages serialise")
    }
}

/// The bearer token a `connection_init` payload carries as
/// `{"authorization": "Bearer <token>"}`.
pub fn bearer_token(payload: Option<&Value>) -> Option<&str> {
    payload?
        .get("authorization")?
        .as_str()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_and_write_as_the_protocol_spells_them() {
        let init = ClientMessage::parse(r#"{"type":"connection_init","payload":{"authorization":"Bearer abc"}}"#);
        let Some(ClientMessage::ConnectionInit { payload }) = init else {
            panic!("{init:?}")
        };
        assert_eq!(bearer_token(payload.as_ref()), Some("abc"));
        assert_eq!(bearer_token(Some(&serde_json::json!({"authorization": "abc"}))), None);
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"subscribe","id":"1","payload":{"query":"subscription { x }"}}"#),
            Some(ClientMessage::Subscribe { id, .. }) if id == "1"
        ));
        assert!(ClientMessage::parse(r#"{"type":"subscribe","id":"1"}"#).is_none());
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"ping","payload":{"x":1}}"#),
            Some(ClientMessage::Ping {})
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"pong"}"#),
            Some(ClientMessage::Pong {})
        ));
        assert!(ClientMessage::parse(r#"{"type":"start","id":"1"}"#).is_none());
        assert_eq!(ServerMessage::ConnectionAck.to_text(), r#"{"type":"connection_ack"}"#);
        assert_eq!(
            ServerMessage::Complete { id: "7" }.to_text(),
            r#"{"type":"complete","id":"7"}"#
        );
    }
}
