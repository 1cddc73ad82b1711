//! `[limits]`: what one client, connection or upstream exchange may take.

use std::time::Duration;

use serde::Deserialize;

use super::{ByteSize, ConfigError, Seconds};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Bytes of request head an HTTP/1 client may send (431 past it).
    pub max_header_bytes: ByteSize,
    /// Number of request header fields (431 past it).
    pub max_headers: usize,
    /// Request-target length (414 past it).
    pub max_uri_length: usize,
    /// Time a client has to send its request head.
    pub client_header_timeout: Seconds,
    pub upstream_connect_timeout: Seconds,
    /// From request sent to response head received.
    pub upstream_first_byte_timeout: Seconds,
    /// Longest silence between two pieces of an upstream body.
    pub upstream_idle_timeout: Seconds,
    /// A client connection with no request in progress this long is closed: before its
    /// first byte, inside the h2 preface, after SETTINGS, or between keep-alive requests.
    pub client_idle_timeout: Seconds,
    /// A response write blocked this long (the client stopped reading) closes the
    /// connection.
    pub client_send_timeout: Seconds,
    /// Client connections held at once; 0 picks three quarters of the descriptor limit
    /// (raised to its hard maximum at start). Connections past it are answered 503.
    pub max_connections: usize,
    /// Client connections one address (IPv6: one /64) may hold; past it, 503.
    pub max_connections_per_client: u32,
    /// Concurrent h2 streams per connection.
    pub max_streams_per_connection: u32,
    /// Fills that run on with no client waiting (stale-while-revalidate refreshes, fills
    /// whose clients left) at once on this node; others are cancelled (or not started).
    /// Kept well below an origin's connection limit, so abandoned work cannot hold it.
    pub max_background_fills: usize,
    /// The same, per client address: one client cannot use the node's whole budget.
    pub max_background_fills_per_client: u32,
    /// Segment prefetches (`[service.media]`) running at once on this node; past it, no
    /// more are started (client misses never wait for prefetches).
    pub max_prefetches: usize,
    /// The same, per client address whose requests started them.
    pub max_prefetches_per_client: u32,
    /// Sites whose connections to https origins are kept (one client, with its pool, per
    /// https origin and `Host` sent); the least recently used go, closing their idle
    /// connections. Bounds what clients of a wildcard service can make the node hold.
    pub upstream_tls_sites: usize,
    /// Upstream requests (misses, passes, revalidations, ring hops) waiting for their
    /// response head at once, node-wide; past it they queue, then are shed (503).
    pub max_upstream_requests: usize,
    /// How long a request queues for an upstream slot before it is shed.
    pub shed_queue_timeout: Seconds,
    /// Event-loop lag past which new upstream requests are shed at once.
    pub shed_loop_lag: Seconds,
    /// Resident memory (RSS) past which new upstream requests are shed at once; none: not
    /// watched.
    pub shed_memory: Option<ByteSize>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let secs = |s| Seconds(Duration::from_secs(s));
        Self {
            max_header_bytes: ByteSize(32 << 10),
            max_headers: 100,
            max_uri_length: 8192,
            client_header_timeout: secs(30),
            upstream_connect_timeout: secs(5),
            upstream_first_byte_timeout: secs(30),
            upstream_idle_timeout: secs(30),
            client_idle_timeout: secs(30),
            client_send_timeout: secs(60),
            max_connections: 0,
            max_connections_per_client: 256,
            max_streams_per_connection: 256,
            max_background_fills: 64,
            max_background_fills_per_client: 16,
            max_prefetches: 32,
            max_prefetches_per_client: 8,
            upstream_tls_sites: 1024,
            max_upstream_requests: 4096,
            shed_queue_timeout: Seconds(Duration::from_secs(1)),
            shed_loop_lag: Seconds(Duration::from_millis(500)),
            shed_memory: None,
        }
    }
}

impl LimitsSection {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.max_header_bytes.0 < 8192 {
            return Err(ConfigError::new(
                "limits.max_header_bytes",
                "must be at least 8KiB",
            ));
        }
        if self.max_headers == 0 {
            return Err(ConfigError::new("limits.max_headers", "must be at least 1"));
        }
        if self.max_uri_length < 16 {
            return Err(ConfigError::new(
                "limits.max_uri_length",
                "must be at least 16",
            ));
        }
        for (key, d) in [
            ("limits.client_idle_timeout", self.client_idle_timeout),
            ("limits.client_send_timeout", self.client_send_timeout),
            ("limits.client_header_timeout", self.client_header_timeout),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::new(key, "must be more than 0"));
            }
        }
        for (key, n) in [
            (
                "limits.max_connections_per_client",
                self.max_connections_per_client as usize,
            ),
            (
                "limits.max_streams_per_connection",
                self.max_streams_per_connection as usize,
            ),
            ("limits.max_background_fills", self.max_background_fills),
            (
                "limits.max_background_fills_per_client",
                self.max_background_fills_per_client as usize,
            ),
            ("limits.max_prefetches", self.max_prefetches),
            (
                "limits.max_prefetches_per_client",
                self.max_prefetches_per_client as usize,
            ),
            ("limits.upstream_tls_sites", self.upstream_tls_sites),
            ("limits.max_upstream_requests", self.max_upstream_requests),
        ] {
            if n == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        // tokio's semaphore panics past this; nobody means more than a few million.
        if self.max_upstream_requests > 1 << 24 {
            return Err(ConfigError::new(
                "limits.max_upstream_requests",
                "must be at most 16777216",
            ));
        }
        // Lag is sampled every 10 ms and every sample is a little late: under that, every
        // miss would be shed.
        if self.shed_loop_lag.0 < Duration::from_millis(20) {
            return Err(ConfigError::new(
                "limits.shed_loop_lag",
                "must be at least 20ms",
            ));
        }
        Ok(())
    }
}
