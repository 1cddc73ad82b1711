//! Connecting to one https origin whatever authority the request names.
//!
//! Over h2 the request's authority travels as `:authority`, taken from the request URI,
//! and RFC 9113 §8.3.1 wants it to name what `Host` would: the site (the client's `Host`
//! or the service's `origin_host`), not the origin's address. So requests to an https
//! origin carry the site in their URI, and each https origin and site has its own client
//! (a bounded number: `limits.upstream_tls_sites`) whose connector goes to the origin's
//! address whatever the URI says: two origins serving one site (failover) never share a
//! connection, and a breaker judges the origin that really answered.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects to `address` for any request URI.
#[derive(Clone)]
pub struct ToOrigin {
    http: HttpConnector,
    /// `scheme://host:port/` of the origin (its host is resolved at each connect, as a
    /// URL's would be).
    address: Uri,
}

// === impl ToOrigin ===

impl ToOrigin {
    pub fn new(http: HttpConnector, address: Uri) -> Self {
        Self { http, address }
    }
}

impl tower_service::Service<Uri> for ToOrigin {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, _site: Uri) -> Self::Future {
        let connecting = self.http.call(self.address.clone());
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service;

    #[tokio::test]
    async fn connects_to_the_origin_whatever_the_uri_names() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let mut connector = ToOrigin::new(HttpConnector::new(), origin);
        let site: Uri = "https://www.example.test:8443/a".parse().unwrap();
        let (connected, accepted) = tokio::join!(connector.call(site), listener.accept());
        let ours = connected.unwrap().into_inner().local_addr().unwrap();
        assert_eq!(accepted.unwrap().1, ours);
    }
}
