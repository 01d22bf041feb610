//! The accept loop: every client connection is bounded in number (per client
//! address and in total) and in time (TLS handshake, request head, idle time
//! before the first and between keep-alive requests), so silent or slow
//! clients cannot use up descriptors. Shutdown lets requests in flight finish.
//! A request is in flight until its response body ends (an event stream
//! included), and a WebSocket keeps its connection's place while it is open.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::Limits;

/// How long a connection closed for idleness may take to say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Serving,
    /// Finish requests in flight, accept no new ones.
    Draining,
    /// Drop whatever is left.
    Stopped,
}

/// Open connections, in all and per client address.
#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; gives its place back when dropped.
struct Slot {
    counts: watch::Sender<Counts>,
    ip: IpAddr,
}

fn admit(counts: &watch::Sender<Counts>, ip: IpAddr, limits: &Limits) -> Option<Slot> {
    let admitted = counts.send_if_modified(|c| {
        let here = c.by_address.get(&ip).copied().unwrap_or(0);
        if c.total >= limits.max_connections || here >= limits.max_connections_per_address {
            return false;
        }
        c.total += 1;
        c.by_address.insert(ip, here + 1);
        true
    });
    admitted.then(|| Slot {
        counts: counts.clone(),
        ip,
    })
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.send_modify(|c| {
            c.total -= 1;
            if let Some(n) = c.by_address.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    c.by_address.remove(&self.ip);
                }
            }
        });
    }
}

/// The connection a request came on, in its extensions. While a clone is
/// held (a WebSocket holds one for its life) the connection keeps its place
/// in the limits; [`ConnectionHandle::abort`] cuts it at once (a client that
/// stopped reading cannot be sent a goodbye).
#[derive(Clone)]
pub struct ConnectionHandle(Arc<Held>);

struct Held {
    _slot: Slot,
    abort: Notify,
}

impl ConnectionHandle {
    pub fn abort(&self) {
        self.0.abort.notify_one();
    }
}

/// Serves `router` on `listener` (HTTPS when `tls` is given) until `shutdown`
/// completes, then closes the port and lets requests in flight finish for up
/// to `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    drain: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let limits = Arc::new(limits);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let (counts, mut open) = watch::channel(Counts::default());
    let (phase, _) = watch::channel(Phase::Serving);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: let connections end before accepting more.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = admit(&counts, peer.ip(), &limits) else {
            tracing::debug!(client = %peer, "connection limit reached; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            router: router.clone(),
            peer,
            limits: limits.clone(),
            phase: phase.subscribe(),
            drain,
            handle: ConnectionHandle(Arc::new(Held {
                _slot: slot,
                abort: Notify::new(),
            })),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection.serve(stream, false).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(connection.limits.tls_handshake_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            connection.serve(stream, h2).await
                        }
                        Ok(Err(e)) => tracing::debug!(client = %connection.peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(client = %connection.peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = phase.send(Phase::Draining);
    if tokio::time::timeout(drain, open.wait_for(|c| c.total == 0))
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {drain:?}; closing their connections");
    }
    let _ = phase.send(Phase::Stopped);
    Ok(())
}

/// Whether a connection has a request in flight, and since when it has not.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

struct Busy(Arc<Activity>);

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// When the connection will have been idle for `limit`, if it stays idle.
    fn idle_deadline(&self, limit: Duration) -> Instant {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Instant::now() + limit;
        }
        *self.idle_since.lock().expect("idle clock") + limit
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock().expect("idle clock") = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Connection {
    router: Router,
    peer: SocketAddr,
    limits: Arc<Limits>,
    phase: watch::Receiver<Phase>,
    drain: Duration,
    handle: ConnectionHandle,
}

/// A response body that keeps its request in flight until it ends.
struct Tracked {
    body: axum::body::Body,
    _busy: Busy,
}

impl axum::body::HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Connection {
    async fn serve<I>(mut self, io: I, h2: bool)
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        });
        let (router, peer, busy, handle) = (self.router.clone(), self.peer, activity.clone(), self.handle.clone());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(handle.clone());
            let busy = busy.begin();
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                response.map(|r| r.map(|body| axum::body::Body::new(Tracked { body, _busy: busy })))
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.limits.idle_timeout)
            .keep_alive_timeout(self.limits.header_read_timeout);
        let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let idle_limit = self.limits.idle_timeout;
        // Set once the connection is asked to close: the time it has left.
        let mut closing: Option<Instant> = None;
        let abort = self.handle.clone();
        loop {
            let idle_at = activity.idle_deadline(idle_limit);
            tokio::select! {
                () = abort.0.abort.notified() => {
                    tracing::debug!(client = %self.peer, "connection cut by the server");
                    return;
                }
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(client = %self.peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                changed = self.phase.changed() => {
                    let phase = *self.phase.borrow_and_update();
                    if changed.is_err() || phase == Phase::Stopped {
                        return;
                    }
                    if closing.is_none() {
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Instant::now() + self.drain);
                    }
                }
                () = tokio::time::sleep_until(idle_at), if closing.is_none() => {
                    if activity.idle_deadline(idle_limit) <= Instant::now() {
                        tracing::debug!(client = %self.peer, "closing an idle connection");
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Instant::now() + CLOSE_GRACE);
                    }
                }
                () = tokio::time::sleep_until(closing.unwrap_or_else(Instant::now)), if closing.is_some() => {
                    if activity.in_flight.load(Ordering::SeqCst) == 0 {
                        return;
                    }
                    // A request is still running: its own timeout bounds it.
                    closing = Some(Instant::now() + idle_limit);
                }
            }
        }
    }
}
