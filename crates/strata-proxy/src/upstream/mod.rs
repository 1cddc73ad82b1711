//! Upstream origins: addressing, a keep-alive connection pool, and timeouts.
//!
//! - [`origins`]: priority groups, weights, per-origin connection limits and breakers;
//! - [`breaker`]: the circuit breaker (pure logic, time passed in);
//! - [`health`]: active HTTP probes that feed the breakers;
//! - [`send`]: upstream selection (hops in order, failover, panic routing) and the
//!   verdicts that feed the breakers;
//! - [`request_body`]: a client body on its way upstream, so its failures are the
//!   client's.
//!
//! One `hyper-util` client serves every http origin (HTTP/1.1, idle connections kept per
//! origin address); each https origin has its own (HTTP/1.1 or h2 as ALPN agrees, see
//! [`connect`] for why). The connect timeout lives in the connector; the first-byte
//! timeout wraps the request future; the idle timeout is enforced while reading bodies
//! (see `body::IdleTimeout`).

pub mod breaker;
pub mod connect;
pub mod health;
pub mod origins;
pub mod request_body;
pub mod ring;
pub mod send;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::ConfigError;
use crate::tls::OriginTls;

/// A request body sent upstream.
pub type UpstreamBody = BoxBody<Bytes, crate::body::BoxError>;

/// An origin server's base address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: Scheme,
    pub authority: Authority,
}

impl Origin {
    /// Parses `http://host[:port]` or `https://host[:port]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: Uri = s.parse().map_err(|e| format!("'{s}' is not a URL: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("'{s}' has no scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!("'{s}': an origin is http:// or https://"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("'{s}' has no host"))?;
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(format!(
                "'{s}': an origin is a scheme and host, without a path"
            ));
        }
        Ok(Self { scheme, authority })
    }

    /// The absolute URI of a request to this origin for `host` (the `Host` it is sent
    /// with). An http origin is named by its address (its connections are pooled by
    /// it, and HTTP/1.1 sends only the path); an https origin by the site, which h2 sends
    /// as `:authority` (see [`connect`]).
    pub fn uri_for(&self, host: &str, path_and_query: &str) -> Result<Uri, http::Error> {
        let builder = Uri::builder().scheme(self.scheme.clone());
        let builder = if self.scheme == Scheme::HTTPS {
            builder.authority(host)
        } else {
            builder.authority(self.authority.clone())
        };
        builder.path_and_query(path_and_query).build()
    }

    /// The key of this origin's client (and TLS name): its authority, lowercase.
    fn key(&self) -> String {
        self.authority.as_str().to_ascii_lowercase()
    }
}

/// Why an upstream exchange failed. Becomes a 502 or 504 with this text in `Cache-Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect-timeout")]
    ConnectTimeout,
    #[error("connect-failed")]
    ConnectFailed,
    #[error("first-byte-timeout")]
    FirstByteTimeout,
    #[error("idle-timeout")]
    IdleTimeout,
    #[error("upstream-error")]
    Protocol,
    #[error("bad-upstream-uri")]
    BadUri,
    /// Every origin's circuit breaker is open.
    #[error("origin-unavailable")]
    Unavailable,
    /// The origin answered with this server error (and no stale copy could stand in).
    #[error("upstream-{0}")]
    Status(u16),
    /// No connection slot to the origin freed up in time.
    #[error("connection-limit")]
    ConnectionLimit,
    /// Every client waiting for this fill left before the answer came.
    #[error("cancelled")]
    Cancelled,
    /// The node is past its capacity: the request was shed (see `crate::shed`).
    #[error("overloaded")]
    Overloaded,
}

impl UpstreamError {
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectTimeout
                | UpstreamError::FirstByteTimeout
                | UpstreamError::IdleTimeout
        )
    }
}

/// Timeouts for one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub first_byte: Duration,
    pub idle: Duration,
}

type TlsClient = Client<HttpsConnector<connect::ToOrigin>, UpstreamBody>;

/// The upstream clients: one for the http origins, one per https origin and site.
#[derive(Clone)]
pub struct UpstreamClient {
    plain: Client<HttpConnector, UpstreamBody>,
    /// Each https origin's connector, by [`Origin::key`].
    connectors: Arc<HashMap<String, HttpsConnector<connect::ToOrigin>>>,
    /// By (origin key, site), at most `limits.upstream_tls_sites`. Each keeps its own
    /// idle connections, and a client of a wildcard service chooses the site: without a
    /// bound, one request per made-up host would leave a connection open to the origin
    /// for the pool's idle timeout. The least recently used goes (its idle connections
    /// close).
    sites: moka::sync::Cache<(String, String), TlsClient>,
}

impl UpstreamClient {
    /// `tls`: the names and trust of the https origins (see [`crate::tls::origin`]).
    /// `sites`: how many (https origin, site) clients are kept.
    pub fn new(
        connect_timeout: Duration,
        tls: &OriginTls,
        sites: usize,
    ) -> Result<Self, ConfigError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let plain = client_builder().build(http.clone());
        let h2 = Arc::new(tls.client_config()?);
        let mut config = (*h2).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http1 = Arc::new(config);
        let connectors = tls
            .origins()
            .map(|(origin, name, offers_h2)| {
                let address = Uri::builder()
                    .scheme(origin.scheme.clone())
                    .authority(origin.authority.clone())
                    .path_and_query("/")
                    .build()
                    .map_err(|e| {
                        ConfigError::new("service.origins", format!("{}: {e}", origin.authority))
                    })?;
                let connector = HttpsConnector::new(
                    connect::ToOrigin::new(http.clone(), address),
                    Arc::clone(if offers_h2 { &h2 } else { &http1 }),
                    true,
                    Arc::new(hyper_rustls::FixedServerNameResolver::new(name.clone())),
                );
                Ok((origin.key(), connector))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self {
            plain,
            connectors: Arc::new(connectors),
            sites: moka::sync::Cache::new(sites as u64),
        })
    }

    /// The client for an https origin and the site a request names.
    fn tls_client(&self, origin: &Origin, site: &str) -> Option<TlsClient> {
        let key = origin.key();
        let connector = self.connectors.get(&key)?;
        let entry = self
            .sites
            .entry((key, site.to_string()))
            .or_insert_with(|| client_builder().build(connector.clone()));
        if entry.is_fresh() {
            // Evict now rather than at moka's leisure: the bound is on open connections.
            self.sites.run_pending_tasks();
        }
        Some(entry.into_value())
    }

    /// Sends a request to `origin` (its URI from [`Origin::uri_for`]) and waits for the
    /// response head, within the first-byte timeout.
    pub async fn send(
        &self,
        origin: &Origin,
        request: Request<UpstreamBody>,
        timeouts: Timeouts,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let sent = if origin.scheme == Scheme::HTTPS {
            let site = request.uri().authority().map_or("", |a| a.as_str());
            // Every https origin of the configuration has its connector (`OriginTls`).
            let Some(client) = self.tls_client(origin, site) else {
                tracing::error!(origin = %origin.authority, "no TLS client for this origin");
                return Err(UpstreamError::BadUri);
            };
            client.request(request)
        } else {
            self.plain.request(request)
        };
        match tokio::time::timeout(timeouts.first_byte, sent).await {
            Err(_) => Err(UpstreamError::FirstByteTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => {
                let timed_out = std::error::Error::source(&e)
                    .map(|s| s.to_string().contains("timed out"))
                    .unwrap_or(false);
                tracing::debug!(error = %e, "upstream connect failed");
                Err(if timed_out {
                    UpstreamError::ConnectTimeout
                } else {
                    UpstreamError::ConnectFailed
                })
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upstream request failed");
                Err(UpstreamError::Protocol)
            }
        }
    }
}

fn client_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        // h2 (an https origin that offers it): pings find a dead connection before a
        // request waits on it for its whole first-byte timeout.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(10));
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_parsing() {
        let o = Origin::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(o.authority.as_str(), "127.0.0.1:9000");
        assert_eq!(
            o.uri_for("site.test", "/a?b=1").unwrap().to_string(),
            "http://127.0.0.1:9000/a?b=1"
        );
        let tls = Origin::parse("https://127.0.0.1:9443").unwrap();
        assert_eq!(
            tls.uri_for("site.test", "/a?b=1").unwrap().to_string(),
            "https://site.test/a?b=1"
        );
        assert!(Origin::parse("ftp://x").is_err());
        assert_eq!(Origin::parse("https://x").unwrap().scheme, Scheme::HTTPS);
        assert!(Origin::parse("http://x/path").is_err());
        assert!(Origin::parse("not a url").is_err());
    }
}
