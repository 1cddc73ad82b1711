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
//! One `hyper-util` client serves every origin; it keeps idle connections per host. The
//! connect timeout lives in the connector; the first-byte timeout wraps the request future;
//! the idle timeout is enforced while reading bodies (see `body::IdleTimeout`).

pub mod breaker;
pub mod health;
pub mod origins;
pub mod request_body;
pub mod ring;
pub mod send;

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

    /// The absolute URI for a path-and-query on this origin.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
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

/// The shared upstream client.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
}

impl UpstreamClient {
    /// `tls`: the names and trust of the https origins (see [`crate::tls::origin`]).
    pub fn new(connect_timeout: Duration, tls: &OriginTls) -> Result<Self, ConfigError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector =
            HttpsConnector::new(http, tls.client_config()?, false, Arc::new(tls.names()));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(Self { client })
    }

    /// Sends a request and waits for the response head, within the first-byte timeout.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
        timeouts: Timeouts,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(timeouts.first_byte, self.client.request(request)).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_parsing() {
        let o = Origin::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(o.authority.as_str(), "127.0.0.1:9000");
        assert_eq!(
            o.uri_for("/a?b=1").unwrap().to_string(),
            "http://127.0.0.1:9000/a?b=1"
        );
        assert!(Origin::parse("ftp://x").is_err());
        assert_eq!(Origin::parse("https://x").unwrap().scheme, Scheme::HTTPS);
        assert!(Origin::parse("http://x/path").is_err());
        assert!(Origin::parse("not a url").is_err());
    }
}
