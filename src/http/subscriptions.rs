//! GraphQL subscriptions on `/graphql`, over two transports:
//!
//! * WebSocket, subprotocol `graphql-transport-ws` (a GET upgrade). The
//!   credential is a bearer token in the upgrade's `Authorization` header or
//!   in `connection_init`'s payload (`{"authorization": "Bearer <token>"}`),
//!   or the session cookie when the upgrade comes from the instance's own
//!   origin (a browser cannot add the CSRF header to an upgrade).
//! * Server-sent events, GraphQL over SSE in distinct-connections mode (a
//!   POST with `Accept: text/event-stream`): `event: next` per result, then
//!   `event: complete`.
//!
//! Only subscription operations are served here. Each send to a subscriber
//! must finish within `limits.subscription_send_timeout_ms`, else its
//! connection is dropped: a client that stops reading holds no more than the
//! socket buffers and the bounded change feed. Shutdown closes WebSockets
//! with 1001 and ends event streams.

mod graphql_ws;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream::{AbortHandle, Abortable, BoxStream, SelectAll};
use futures::{StreamExt, stream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use super::{AppState, error_response};
use crate::auth::Principal;
use crate::auth::tokens::{self, TokenRejection};
use crate::db::{RequestDb, Scope};
use crate::error::AppError;
use crate::graphql::{Caller, limits};
use crate::live::Admission;
use crate::schema::execute::operation;
use crate::server::ConnectionHandle;
use graphql_ws::{ClientMessage, ServerMessage};

/// Whether a GET asks for a WebSocket.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Runs one subscription for a user: its results, each read in a
/// transaction of its own with the user's scope.
fn subscribe(
    state: &AppState,
    principal: Principal,
    mut request: async_graphql::Request,
) -> BoxStream<'static, async_graphql::Response> {
    let name = request.operation_name.clone();
    // A document that does not parse, or names no operation, is left to
    // execution, which reports it.
    let other = request
        .parsed_query()
        .is_ok_and(|doc| operation(doc, name.as_deref()).is_ok_and(|op| op.ty != OperationType::Subscription));
    if other {
        let refusal = limits::with_code(
            async_graphql::ServerError::new(
                "only subscriptions are served here; send queries and mutations as a POST with Content-Type application/json",
                None,
            ),
            "BAD_REQUEST",
        );
        return stream::once(async move { async_graphql::Response::from_errors(vec![refusal]) }).boxed();
    }
    // A subscription outlives any federation deadline: it serves this instance's data only.
    let mut hop = state.executor.user_hop(&principal);
    hop.may_forward = false;
    let db = Arc::new(RequestDb::new(
        state.pool.clone(),
        Scope::user(principal.user_id),
        state.config.statement_timeout,
        true,
    ));
    let context = state.executor.context(db, Caller::User(principal), hop);
    state
        .executor
        .schemas
        .execute_stream(request.data(context).data(state.live.clone()))
        .map(|mut response| {
            // As for a POST: errors of async-graphql's own carry no code.
            response.errors = std::mem::take(&mut response.errors)
                .into_iter()
                .map(|e| limits::with_code(e, "BAD_USER_INPUT"))
                .collect();
            response
        })
        .boxed()
}

fn limit_refusal(e: AppError) -> Response {
    error_response(StatusCode::TOO_MANY_REQUESTS, e.code(), e.message())
}

// ---------------------------------------------------------------------------
// Server-sent events
// ---------------------------------------------------------------------------

fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `POST /graphql` with `Accept: text/event-stream`, the caller authenticated.
pub async fn sse(
    state: &AppState,
    principal: Principal,
    request: async_graphql::Request,
    connection: Option<ConnectionHandle>,
) -> Response {
    let mut responses = subscribe(state, principal, request);
    let limits = &state.config.limits;
    let (send_timeout, keepalive) = (limits.subscription_send_timeout, limits.subscription_keepalive);
    let closing = state.live.closing();
    // One frame in hand at most: a reader that stops holds no more than that.
    let (tx, mut rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        tokio::pin!(closing);
        let mut keepalive = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        loop {
            let (frame, last) = tokio::select! {
                biased;
                // Dropping the sender ends the stream.
                () = &mut closing => return,
                () = tx.closed() => return,
                next = responses.next() => match next {
                    Some(response) => (event("next", &serde_json::to_string(&response).expect("JSON")), false),
                    None => (event("complete", ""), true),
                },
                _ = keepalive.tick() => (Bytes::from_static(b":\n\n"), false),
            };
            match timeout(send_timeout, tx.send(frame)).await {
                Ok(Ok(())) if !last => {}
                Ok(_) => return,
                Err(_) => {
                    tracing::info!("event stream subscriber stopped reading; disconnected");
                    if let Some(connection) = &connection {
                        connection.abort();
                    }
                    return;
                }
            }
        }
    });
    let body = stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------

/// `GET /graphql` asking for a WebSocket upgrade.
pub async fn websocket(state: AppState, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let connection = parts.extensions.get::<ConnectionHandle>().cloned();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let offered = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == graphql_ws::PROTOCOL);
    if !offered {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            format!(
                "GraphQL over WebSocket speaks {}: offer it in Sec-WebSocket-Protocol",
                graphql_ws::PROTOCOL
            ),
        );
    }
    let user = match upgrade_credential(&state, &parts.headers).await {
        Ok(Some(principal)) => match state.live.admit_connection(principal.user_id) {
            Ok(admission) => Some((principal, admission)),
            Err(e) => return limit_refusal(e),
        },
        Ok(None) => None,
        Err(refusal) => return refusal,
    };
    let max = state.config.limits.max_body_bytes;
    upgrade
        .protocols([graphql_ws::PROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            Socket {
                send_timeout: state.config.limits.subscription_send_timeout,
                state,
                socket,
                user,
                _connection: connection,
            }
            .run()
        })
}

/// The credential an upgrade carries: a bearer token, or the session cookie
/// from this instance's own origin. `None`: it comes in `connection_init`.
async fn upgrade_credential(state: &AppState, headers: &HeaderMap) -> Result<Option<Principal>, Response> {
    if headers.contains_key(header::AUTHORIZATION) {
        return crate::http::authenticate(state, headers).await.map(Some);
    }
    match crate::http::auth::session_principal(state, headers, false).await {
        None => Ok(None),
        Some(_) if !same_origin(headers, &state.federation.base_url) => Err(error_response(
            StatusCode::FORBIDDEN,
            "ORIGIN_NOT_ALLOWED",
            "a WebSocket signed in by the session cookie must be opened from this instance's own origin",
        )),
        Some(result) => result.map(Some),
    }
}

/// Whether the request's Origin is the scheme, host and port of `base_url`.
fn same_origin(headers: &HeaderMap, base_url: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(scheme_end) = base_url.find("://").map(|i| i + 3) else {
        return false;
    };
    let end = base_url[scheme_end..]
        .find('/')
        .map_or(base_url.len(), |i| scheme_end + i);
    origin.eq_ignore_ascii_case(&base_url[..end])
}

/// One GraphQL WebSocket connection.
struct Socket {
    state: AppState,
    socket: WebSocket,
    /// Known from the upgrade, or from `connection_init`.
    user: Option<(Principal, Admission)>,
    send_timeout: std::time::Duration,
    /// Keeps the connection's place in the server's connection limits.
    _connection: Option<ConnectionHandle>,
}

/// Results of one subscription, tagged with its id; `None` when it ends.
type Tagged = BoxStream<'static, (String, Option<async_graphql::Response>)>;

impl Socket {
    async fn run(mut self) {
        let limits = self.state.config.limits.clone();
        let init_deadline = Instant::now() + limits.header_read_timeout;
        let mut initialised = false;
        let mut acked = false;
        let mut running: SelectAll<Tagged> = SelectAll::new();
        let mut active: HashMap<String, AbortHandle> = HashMap::new();
        let every = limits.subscription_keepalive;
        let mut keepalive = tokio::time::interval_at(Instant::now() + every, every);
        let closing = self.state.live.closing();
        tokio::pin!(closing);
        loop {
            tokio::select! {
                biased;
                () = &mut closing => {
                    self.close(graphql_ws::GOING_AWAY, "the server is shutting down").await;
                    return;
                }
                received = self.socket.recv() => {
                    let text = match received {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Binary(_))) => {
                            self.close(graphql_ws::BAD_MESSAGE, "binary messages are not part of the protocol").await;
                            return;
                        }
                        // Ping and pong frames: answered by the WebSocket layer.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    };
                    let Some(message) = ClientMessage::parse(&text) else {
                        self.close(graphql_ws::BAD_MESSAGE, "Invalid message received").await;
                        return;
                    };
                    match message {
                        ClientMessage::ConnectionInit { payload } => {
                            if initialised {
                                self.close(graphql_ws::TOO_MANY_INITS, "Too many initialisation requests").await;
                                return;
                            }
                            initialised = true;
                            if self.user.is_none() {
                                match init_credential(&self.state, graphql_ws::bearer_token(payload.as_ref())).await {
                                    Ok(user) => self.user = Some(user),
                                    Err((code, reason)) => {
                                        self.close(code, &reason).await;
                                        return;
                                    }
                                }
                            }
                            acked = true;
                            if !self.send(ServerMessage::ConnectionAck).await {
                                return;
                            }
                        }
                        ClientMessage::Ping {} => {
                            if !self.send(ServerMessage::Pong).await {
                                return;
                            }
                        }
                        ClientMessage::Pong {} => {}
                        ClientMessage::Subscribe { id, payload } => {
                            let Some((principal, _)) = self.user.as_ref().filter(|_| acked) else {
                                self.close(graphql_ws::UNAUTHORIZED, "Unauthorized").await;
                                return;
                            };
                            if active.contains_key(&id) {
                                self.close(graphql_ws::SUBSCRIBER_EXISTS, "Subscriber for this id already exists").await;
                                return;
                            }
                            let results = subscribe(&self.state, principal.clone(), *payload);
                            let (abort, registration) = AbortHandle::new_pair();
                            active.insert(id.clone(), abort);
                            let tagged = Abortable::new(results, registration)
                                .map(Some)
                                .chain(stream::once(async { None }))
                                .map(move |item| (id.clone(), item));
                            running.push(tagged.boxed());
                        }
                        ClientMessage::Complete { id } => {
                            if let Some(abort) = active.remove(&id) {
                                abort.abort();
                            }
                        }
                    }
                }
                Some((id, item)) = running.next(), if !running.is_empty() => {
                    let sent = match item {
                        _ if !active.contains_key(&id) => true,
                        // Refused or failed with nothing to show: `error`, and no `complete`.
                        Some(response) if response.data == async_graphql::Value::Null && response.is_err() => {
                            if let Some(abort) = active.remove(&id) {
                                abort.abort();
                            }
                            self.send(ServerMessage::Error { id: &id, payload: &response.errors }).await
                        }
                        Some(response) => self.send(ServerMessage::Next { id: &id, payload: &response }).await,
                        None => {
                            active.remove(&id);
                            self.send(ServerMessage::Complete { id: &id }).await
                        }
                    };
                    if !sent {
                        return;
                    }
                }
                () = tokio::time::sleep_until(init_deadline), if !acked => {
                    self.close(graphql_ws::INIT_TIMEOUT, "Connection initialisation timeout").await;
                    return;
                }
                _ = keepalive.tick() => {
                    if acked && !self.send(ServerMessage::Ping).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sends within the send timeout; false: the subscriber is gone or too
    /// slow, and the connection is to be dropped.
    async fn send(&mut self, message: ServerMessage<'_>) -> bool {
        let text = message.to_text();
        match timeout(self.send_timeout, self.socket.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::info!("WebSocket subscriber stopped reading; disconnected");
                false
            }
        }
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = timeout(self.send_timeout, self.socket.send(Message::Close(Some(frame)))).await;
    }
}

/// Authenticates `connection_init`'s token and takes a connection place.
async fn init_credential(state: &AppState, token: Option<&str>) -> Result<(Principal, Admission), (u16, String)> {
    let forbidden = |why: &str| (graphql_ws::FORBIDDEN, format!("Forbidden: {why}"));
    let Some(token) = token else {
        return Err(forbidden(
            "send {\"authorization\": \"Bearer <token>\"} in connection_init",
        ));
    };
    let principal = match tokens::authenticate(&state.pool, &state.tokens, token).await {
        Ok(Ok(principal)) => principal,
        Ok(Err(TokenRejection::Expired)) => return Err(forbidden("token expired")),
        Ok(Err(TokenRejection::Unknown)) => return Err(forbidden("unknown token")),
        Ok(Err(TokenRejection::Deactivated)) => return Err(forbidden("this account is deactivated")),
        Err(e) => {
            tracing::error!(error = %e, "token lookup failed");
            return Err((graphql_ws::INTERNAL_ERROR, "cannot check credentials right now".into()));
        }
    };
    match state.live.admit_connection(principal.user_id) {
        Ok(admission) => Ok((principal, admission)),
        Err(e) => Err((
            graphql_ws::TRY_AGAIN_LATER,
            format!("{}: limits.max_ws_connections_per_user reached", e.code()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let with = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, origin.parse().unwrap());
            h
        };
        let base = "https://mosaic.example:8443/";
        assert!(same_origin(&with("https://mosaic.example:8443"), base));
        assert!(same_origin(
            &with("https://mosaic.example:8443"),
            "https://mosaic.example:8443"
        ));
        assert!(!same_origin(&with("https://mosaic.example"), base));
        assert!(!same_origin(&with("http://mosaic.example:8443"), base));
        assert!(!same_origin(&with("https://evil.example:8443"), base));
        assert!(!same_origin(&HeaderMap::new(), base));
    }
}
