//! Starts a real edge node in-process on 127.0.0.1:0 and talks to it over sockets.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_proxy::clock::Clock;
use strata_proxy::config::NodeConfig;
use strata_proxy::{Listeners, Node};

/// Builder for a test edge.
pub struct EdgeBuilder {
    config: NodeConfig,
    clock: Clock,
}

impl EdgeBuilder {
    pub fn new(origin: &str) -> Self {
        let mut config = NodeConfig::single_origin(origin);
        config.node.name = "edge-test".into();
        config.listen.http = vec!["127.0.0.1:0".parse().expect("addr")];
        config.listen.admin = Some("127.0.0.1:0".parse().expect("addr"));
        config.log.access = "off".into();
        config.cache.size.0 = 64 << 20;
        config.cache.max_object_size.0 = 16 << 20;
        Self::with_config(config)
    }

    /// A node from a configuration as it is.
    pub fn with_config(config: NodeConfig) -> Self {
        Self {
            config,
            clock: Clock::system(),
        }
    }

    /// A node from a full TOML configuration (listeners are forced to port 0).
    pub fn from_toml(toml: &str) -> Self {
        let mut config = NodeConfig::from_toml(toml).expect("test config");
        config.listen.http = vec!["127.0.0.1:0".parse().expect("addr")];
        config.listen.admin = Some("127.0.0.1:0".parse().expect("addr"));
        Self::with_config(config)
    }

    /// An https listener on 127.0.0.1:0 presenting these certificates (the first is the
    /// default).
    pub fn https(mut self, certs: &[&super::tls::CertFiles]) -> Self {
        self.config.listen.https = vec!["127.0.0.1:0".parse().expect("addr")];
        self.config.tls.certificates = certs
            .iter()
            .map(|c| strata_proxy::config::CertificateConfig {
                cert: c.cert.clone(),
                key: c.key.clone(),
                names: Vec::new(),
                default: false,
            })
            .collect();
        self
    }

    pub fn config(mut self, f: impl FnOnce(&mut NodeConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// The node's clock (a manual one: time moves only when the test says so).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub async fn start(self) -> Edge {
        let listeners = Listeners::bind(&self.config).expect("bind");
        self.start_on(listeners).await
    }

    /// Starts on listeners bound beforehand (nodes that name each other).
    pub async fn start_on(self, listeners: Listeners) -> Edge {
        let node = Node::start_with(&self.config, None, listeners, self.clock)
            .await
            .expect("edge starts");
        let addr = node.http_addrs[0];
        let admin = node.admin_addr.expect("admin addr");
        Edge {
            https: node.https_addrs.first().copied(),
            node: Some(node),
            addr,
            admin,
            client: client(false),
            h2: client(true),
        }
    }
}

fn client(h2: bool) -> Client<HttpConnector, Full<Bytes>> {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_max_idle_per_host(8);
    if h2 {
        b.http2_only(true);
    }
    b.build_http()
}

pub struct Edge {
    node: Option<Node>,
    pub addr: SocketAddr,
    /// The https listener, when the builder asked for one.
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    h2: Client<HttpConnector, Full<Bytes>>,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Our member of `Cache-Status` (the last one).
    pub fn cache_status(&self) -> String {
        self.headers
            .get_all("cache-status")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .next_back()
            .unwrap_or_default()
            .to_string()
    }

    /// Every `Cache-Status` member, the one closest to the origin first.
    pub fn cache_statuses(&self) -> Vec<String> {
        self.headers
            .get_all("cache-status")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|m| m.trim().to_string())
            .collect()
    }

    /// The `Cache-Status` member of the cache named `name`.
    pub fn status_of(&self, name: &str) -> Option<String> {
        self.cache_statuses()
            .into_iter()
            .find(|m| m.split(';').next() == Some(name))
    }

    /// The `ttl` parameter of our `Cache-Status` member.
    pub fn ttl(&self) -> Option<i64> {
        let status = self.cache_status();
        status
            .split("ttl=")
            .nth(1)?
            .split(';')
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub fn is_hit(&self) -> bool {
        self.cache_status().split(';').any(|p| p.trim() == "hit")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request under construction.
pub struct Req<'a> {
    edge: &'a Edge,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    h2: bool,
}

impl<'a> Req<'a> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn h2(mut self) -> Self {
        self.h2 = true;
        self
    }

    pub async fn send(self) -> Got {
        let resp = self.send_head().await;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
            .await
            .expect("body within 30s")
            .expect("body")
            .to_bytes();
        Got {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    /// Sends and returns as soon as the head arrives (the body streams).
    pub async fn send_head(self) -> http::Response<hyper::body::Incoming> {
        let mut req = Request::builder()
            .method(self.method)
            .uri(format!("http://{}{}", self.edge.addr, self.path));
        let has_host = self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"));
        if !has_host && !self.h2 {
            req = req.header("host", "example.com");
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Full::new(self.body)).expect("request");
        let client = if self.h2 {
            &self.edge.h2
        } else {
            &self.edge.client
        };
        tokio::time::timeout(Duration::from_secs(30), client.request(req))
            .await
            .expect("response within 30s")
            .expect("response")
    }
}

impl Edge {
    pub fn get(&self, path: &str) -> Req<'_> {
        self.request(Method::GET, path)
    }

    pub fn head(&self, path: &str) -> Req<'_> {
        self.request(Method::HEAD, path)
    }

    pub fn request(&self, method: Method, path: &str) -> Req<'_> {
        Req {
            edge: self,
            method,
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
            h2: false,
        }
    }

    /// GET on the admin listener.
    pub async fn admin(&self, path: &str) -> Got {
        let req = Request::get(format!("http://{}{}", self.admin, path))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = self.client.request(req).await.expect("admin response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Got {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    /// POST a JSON body to the admin listener.
    pub async fn admin_post(&self, path: &str, json: &str) -> Got {
        let req = Request::post(format!("http://{}{}", self.admin, path))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json.to_string())))
            .expect("request");
        let resp = self.client.request(req).await.expect("admin response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Got {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    /// Purges through the admin API and returns the objects affected.
    pub async fn purge(&self, json: &str) -> u64 {
        let r = self.admin_post("/v1/purge", json).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        v["objects"].as_u64().expect("objects")
    }

    /// Waits (bounded) until `cond` holds, polling; for effects that land on another task.
    pub async fn eventually(&self, what: &str, mut cond: impl FnMut() -> bool) {
        // Up to 10 s: generous, because CI runs every test at once on two cores.
        for _ in 0..1000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("running")
    }

    pub fn proxy(&self) -> &std::sync::Arc<strata_proxy::Proxy> {
        self.node.as_ref().expect("running").proxy()
    }
}
