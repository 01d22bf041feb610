//! Query, request, connection and subscription limits (traffic shaping as
//! configuration).

use std::time::Duration;

use super::setting::settings;

settings! {
    /// Query and request limits.
    pub struct Limits {
        max_depth: usize = 12; "limits.max_depth", "MOSAIC_MAX_DEPTH", range(2, 1000);
        max_complexity: usize = 20_000; "limits.max_complexity", "MOSAIC_MAX_COMPLEXITY", range(10, 100_000_000);
        max_aliases: usize = 30; "limits.max_aliases", "MOSAIC_MAX_ALIASES", range(0, 10_000);
        max_body_bytes: usize = 256 * 1024;
            "limits.max_body_bytes", "MOSAIC_MAX_BODY_BYTES", range(1024, 64 * 1024 * 1024);
        max_page_size: usize = 100; "limits.max_page_size", "MOSAIC_MAX_PAGE_SIZE", range(1, 10_000);
        request_timeout: Duration = Duration::from_secs(30);
            "limits.request_timeout_ms", "MOSAIC_REQUEST_TIMEOUT_MS", millis();
        /// How long a client may take to send a request head (HTTP/1).
        header_read_timeout: Duration = Duration::from_secs(10);
            "limits.header_read_timeout_ms", "MOSAIC_HEADER_READ_TIMEOUT_MS", millis();
        /// A connection with no request in flight for this long is closed
        /// (before its first request, and between keep-alive requests).
        idle_timeout: Duration = Duration::from_secs(60);
            "limits.idle_timeout_ms", "MOSAIC_IDLE_TIMEOUT_MS", millis();
        tls_handshake_timeout: Duration = Duration::from_secs(10);
            "limits.tls_handshake_timeout_ms", "MOSAIC_TLS_HANDSHAKE_TIMEOUT_MS", millis();
        /// Open client connections in all; more are closed at once.
        max_connections: usize = 512;
            "limits.max_connections", "MOSAIC_MAX_CONNECTIONS", range(1, 1_000_000);
        /// Open client connections from one IP address.
        max_connections_per_address: usize = 64;
            "limits.max_connections_per_address", "MOSAIC_MAX_CONNECTIONS_PER_ADDRESS", range(1, 1_000_000);
        /// Live subscriptions one user may hold, over WebSocket and SSE together.
        max_subscriptions_per_user: usize = 20;
            "limits.max_subscriptions_per_user", "MOSAIC_MAX_SUBSCRIPTIONS_PER_USER", range(1, 100_000);
        /// Open GraphQL WebSocket connections of one user.
        max_ws_connections_per_user: usize = 8;
            "limits.max_ws_connections_per_user", "MOSAIC_MAX_WS_CONNECTIONS_PER_USER", range(1, 100_000);
        /// Changes buffered for the slowest subscriber; one that falls further
        /// behind is cut off (SUBSCRIBER_TOO_SLOW).
        subscription_buffer: usize = 256;
            "limits.subscription_buffer", "MOSAIC_SUBSCRIPTION_BUFFER", range(1, 1_000_000);
        /// How often an idle subscription connection gets a keep-alive.
        subscription_keepalive: Duration = Duration::from_secs(15);
            "limits.subscription_keepalive_ms", "MOSAIC_SUBSCRIPTION_KEEPALIVE_MS", millis();
        /// How long one message to a subscriber may take to send before the
        /// subscriber's connection is dropped.
        subscription_send_timeout: Duration = Duration::from_secs(10);
            "limits.subscription_send_timeout_ms", "MOSAIC_SUBSCRIPTION_SEND_TIMEOUT_MS", millis();
    }
}
