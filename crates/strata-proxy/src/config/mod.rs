//! The node's declarative configuration (TOML).
//!
//! Every error names the key path that caused it (`service[0].origins[1]`), so
//! `strata check-config` can point an operator at the line to fix. Parsing goes through
//! `serde_path_to_error`; checks serde cannot express live in [`NodeConfig::validate`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use strata_wire::config::{parse_size, parse_toml, ByteSize, ConfigError, Seconds};

/// The whole node configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub listen: ListenSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub purge: PurgeSection,
    #[serde(default)]
    pub bus: BusSection,
    #[serde(default)]
    pub ring: RingSection,
    #[serde(default)]
    pub parents: ParentsSection,
    #[serde(default)]
    pub hot: HotSection,
    #[serde(default)]
    pub forwarding: ForwardingSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
}

/// How this node joins the others.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BusSection {
    /// NATS server URL (`nats://127.0.0.1:4222`) with JetStream enabled. Purge events reach
    /// this node through a durable consumer named after `node.name`.
    #[serde(default)]
    pub nats: Option<String>,
}

/// What this node believes of the forwarding fields clients send, and which of the
/// fields it drops by default it forwards anyway.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardingSection {
    /// Networks of proxies in front of this node (a load balancer; a shield's edges):
    /// their `X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto` and client-address fields
    /// are kept and extended. Anyone else's are replaced with what the connection says.
    /// The ring's peers are trusted without being listed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Fields Strata drops from client requests because origins read them as the real
    /// host, URL or method (`X-Forwarded-Host`, `X-Original-URL`, `X-Rewrite-URL`,
    /// `X-HTTP-Method-Override`, ...) that this node forwards anyway.
    #[serde(default)]
    pub allow_request_headers: Vec<String>,
}

impl ForwardingSection {
    /// The trusted networks, parsed (validation has checked every entry).
    pub fn trusted_networks(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|a| parse_network(a).ok())
            .collect()
    }
}

/// The admin listener's credentials, and who may read the node's health report.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Bearer token every admin request must carry (`Authorization: Bearer <token>`).
    /// Required when `listen.admin` is not a loopback address. At least 16 characters.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (trailing whitespace ignored), instead of `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Networks allowed to read `/.well-known/strata/health` on the HTTP listeners (node
    /// name, role, error counts, load). Others get 404; the admin listener serves it too.
    #[serde(default = "default_health_allow")]
    pub health_allow: Vec<String>,
}

fn default_health_allow() -> Vec<String> {
    [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    ]
    .map(String::from)
    .to_vec()
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            token: None,
            token_file: None,
            health_allow: default_health_allow(),
        }
    }
}

impl AdminSection {
    /// The token, read from `token_file` when that is how it is given.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                "admin.token_file",
                "give either admin.token or admin.token_file, not both",
            )),
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim_end().to_string()))
                .map_err(|e| {
                    ConfigError::new("admin.token_file", format!("{}: {e}", path.display()))
                }),
            (None, None) => Ok(None),
        }
    }

    pub fn health_networks(&self) -> Vec<ipnet::IpNet> {
        self.health_allow
            .iter()
            .filter_map(|a| parse_network(a).ok())
            .collect()
    }
}

/// The HTTP `PURGE` method on the edge listener (the admin API's `POST /v1/purge` is
/// always available on the admin listener).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PurgeSection {
    /// Accept `PURGE <url>` on the edge listener. Off by default: 405.
    #[serde(default)]
    pub http_method: bool,
    /// Client addresses or networks allowed to send it (`"10.0.0.0/8"`, `"127.0.0.1"`);
    /// others get 403.
    #[serde(default)]
    pub allow: Vec<String>,
}

impl PurgeSection {
    /// The allow list, parsed (validation has checked every entry).
    pub fn allowed_networks(&self) -> Vec<ipnet::IpNet> {
        self.allow
            .iter()
            .filter_map(|a| parse_network(a).ok())
            .collect()
    }
}

fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{s}' is not an address or a network"))
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Names this node in `Cache-Status`, `Via`, `CDN-Loop`, the ring and purge acks.
    #[serde(default = "default_node_name")]
    pub name: String,
    /// `edge` (serves clients) or `shield` (regional mid-tier that edges use as parent).
    #[serde(default)]
    pub role: Role,
    /// The PoP this node belongs to (reported in metrics; the ring is this PoP's nodes).
    #[serde(default)]
    pub pop: Option<String>,
}

/// A node's place in the topology.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Edge,
    Shield,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Shield => "shield",
        }
    }
}

/// The consistent-hash ring of this node's PoP: every key has one owner among `peers`,
/// and other nodes forward to it, so each object is stored once per PoP.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RingSection {
    /// Every node of the PoP, this one included (matched by `node.name`). Empty: no ring.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Points per peer (times its weight).
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
    /// How often peers are probed (`/.well-known/strata/health` on their HTTP listener).
    /// A down owner is skipped within one interval; requests that find it down first move
    /// on at once.
    #[serde(default = "default_ring_probe_interval")]
    pub probe_interval: Seconds,
}

fn default_vnodes() -> u32 {
    160
}

fn default_ring_probe_interval() -> Seconds {
    Seconds(Duration::from_secs(1))
}

impl Default for RingSection {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            vnodes: default_vnodes(),
            probe_interval: default_ring_probe_interval(),
        }
    }
}

/// One node of the ring.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its `node.name`.
    pub name: String,
    /// Its HTTP listener, `http://host:port`.
    pub url: String,
    /// Share of keys relative to the others; 0 drains it.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// Where misses go before the origin: shields, in order (primary, then failover). When
/// every shield fails, the origin is asked directly.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParentsSection {
    /// Shield HTTP listeners, `http://host:port`, primary first.
    #[serde(default)]
    pub shields: Vec<String>,
    /// Most connections to one parent (or peer).
    #[serde(default = "default_parent_connections")]
    pub max_connections: usize,
}

fn default_parent_connections() -> usize {
    1024
}

impl Default for ParentsSection {
    fn default() -> Self {
        Self {
            shields: Vec::new(),
            max_connections: default_parent_connections(),
        }
    }
}

/// Hot objects: above `threshold` requests/s on this node, a key is also cached here,
/// not only on its ring owner, until its rate stays below the threshold for `cooldown`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HotSection {
    /// Requests per second over `window`; 0 turns hot-object caching off.
    #[serde(default = "default_hot_threshold")]
    pub threshold: f64,
    #[serde(default = "default_hot_window")]
    pub window: Seconds,
    #[serde(default = "default_hot_cooldown")]
    pub cooldown: Seconds,
}

fn default_hot_threshold() -> f64 {
    50.0
}

fn default_hot_window() -> Seconds {
    Seconds(Duration::from_secs(10))
}

fn default_hot_cooldown() -> Seconds {
    Seconds(Duration::from_secs(60))
}

impl Default for HotSection {
    fn default() -> Self {
        Self {
            threshold: default_hot_threshold(),
            window: default_hot_window(),
            cooldown: default_hot_cooldown(),
        }
    }
}

fn default_node_name() -> String {
    "strata".to_string()
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            name: default_node_name(),
            role: Role::default(),
            pop: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// Plain HTTP listeners (HTTP/1.1 and h2c with prior knowledge).
    #[serde(default = "default_http_listen")]
    pub http: Vec<SocketAddr>,
    /// Admin listener (`/metrics`, `/healthz`); off when absent.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
}

fn default_http_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 8080))]
}

impl Default for ListenSection {
    fn default() -> Self {
        Self {
            http: default_http_listen(),
            admin: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Memory tier capacity.
    #[serde(default = "default_cache_size")]
    pub size: ByteSize,
    /// Larger responses are streamed through without being stored.
    #[serde(default = "default_max_object_size")]
    pub max_object_size: ByteSize,
    /// Heuristic freshness: this fraction of the time since `Last-Modified`.
    #[serde(default = "default_heuristic_fraction")]
    pub heuristic_fraction: f64,
    /// Cap on heuristic freshness.
    #[serde(default = "default_heuristic_max")]
    pub heuristic_max: Seconds,
    /// A disk tier under the memory tier: capacity, and a cache that survives restarts.
    #[serde(default)]
    pub disk: Option<DiskSection>,
    /// Remove `CDN-Cache-Control` from responses. Off by default: the field is for every
    /// CDN cache on the way (RFC 9213), so a Strata edge behind a Strata shield, or another
    /// CDN in front of this one, applies the same policy; browsers ignore it.
    /// `Surrogate-Control` is always removed (Edge Architecture 1.0: it is for the
    /// surrogate that acts on it).
    #[serde(default)]
    pub strip_cdn_cache_control: bool,
}

/// `[cache.disk]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskSection {
    /// Directory of the tier (created if missing). One node per directory.
    pub path: PathBuf,
    /// Bytes the tier may hold on disk.
    pub size: ByteSize,
}

fn default_cache_size() -> ByteSize {
    ByteSize(512 << 20)
}
fn default_max_object_size() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_heuristic_fraction() -> f64 {
    0.1
}
fn default_heuristic_max() -> Seconds {
    Seconds(Duration::from_secs(86_400))
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            size: default_cache_size(),
            max_object_size: default_max_object_size(),
            heuristic_fraction: default_heuristic_fraction(),
            heuristic_max: default_heuristic_max(),
            disk: None,
            strip_cdn_cache_control: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Bytes of request head an HTTP/1 client may send (431 past it).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: ByteSize,
    /// Number of request header fields (431 past it).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Request-target length (414 past it).
    #[serde(default = "default_max_uri_length")]
    pub max_uri_length: usize,
    /// Time a client has to send its request head.
    #[serde(default = "default_client_header_timeout")]
    pub client_header_timeout: Seconds,
    #[serde(default = "default_connect_timeout")]
    pub upstream_connect_timeout: Seconds,
    /// From request sent to response head received.
    #[serde(default = "default_first_byte_timeout")]
    pub upstream_first_byte_timeout: Seconds,
    /// Longest silence between two pieces of an upstream body.
    #[serde(default = "default_idle_timeout")]
    pub upstream_idle_timeout: Seconds,
    /// A client connection with no request in progress this long is closed: before its
    /// first byte, inside the h2 preface, after SETTINGS, or between keep-alive requests.
    #[serde(default = "default_client_idle_timeout")]
    pub client_idle_timeout: Seconds,
    /// A response write blocked this long (the client stopped reading) closes the
    /// connection.
    #[serde(default = "default_client_send_timeout")]
    pub client_send_timeout: Seconds,
    /// Client connections held at once; 0 picks three quarters of the descriptor limit
    /// (raised to its hard maximum at start). Connections past it are answered 503.
    #[serde(default)]
    pub max_connections: usize,
    /// Client connections one address (IPv6: one /64) may hold; past it, 503.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: u32,
    /// Concurrent h2 streams per connection.
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: u32,
    /// Fills that run on with no client waiting (stale-while-revalidate refreshes, fills
    /// whose clients left) at once on this node; others are cancelled (or not started).
    /// Kept well below an origin's connection limit, so abandoned work cannot hold it.
    #[serde(default = "default_max_background_fills")]
    pub max_background_fills: usize,
    /// The same, per client address: one client cannot use the node's whole budget.
    #[serde(default = "default_max_background_fills_per_client")]
    pub max_background_fills_per_client: u32,
}

fn default_client_idle_timeout() -> Seconds {
    Seconds(Duration::from_secs(30))
}
fn default_client_send_timeout() -> Seconds {
    Seconds(Duration::from_secs(60))
}
fn default_max_connections_per_client() -> u32 {
    256
}
fn default_max_streams_per_connection() -> u32 {
    256
}
fn default_max_background_fills() -> usize {
    64
}
fn default_max_background_fills_per_client() -> u32 {
    16
}

fn default_max_header_bytes() -> ByteSize {
    ByteSize(32 << 10)
}
fn default_max_headers() -> usize {
    100
}
fn default_max_uri_length() -> usize {
    8192
}
fn default_client_header_timeout() -> Seconds {
    Seconds(Duration::from_secs(30))
}
fn default_connect_timeout() -> Seconds {
    Seconds(Duration::from_secs(5))
}
fn default_first_byte_timeout() -> Seconds {
    Seconds(Duration::from_secs(30))
}
fn default_idle_timeout() -> Seconds {
    Seconds(Duration::from_secs(30))
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_uri_length: default_max_uri_length(),
            client_header_timeout: default_client_header_timeout(),
            upstream_connect_timeout: default_connect_timeout(),
            upstream_first_byte_timeout: default_first_byte_timeout(),
            upstream_idle_timeout: default_idle_timeout(),
            client_idle_timeout: default_client_idle_timeout(),
            client_send_timeout: default_client_send_timeout(),
            max_connections: 0,
            max_connections_per_client: default_max_connections_per_client(),
            max_streams_per_connection: default_max_streams_per_connection(),
            max_background_fills: default_max_background_fills(),
            max_background_fills_per_client: default_max_background_fills_per_client(),
        }
    }
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `"stdout"`, `"off"`, or a file path.
    #[serde(default = "default_access_log")]
    pub access: String,
}

fn default_access_log() -> String {
    "stdout".to_string()
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            access: default_access_log(),
        }
    }
}

impl LogSection {
    pub fn target(&self) -> AccessLogTarget {
        match self.access.as_str() {
            "off" | "" => AccessLogTarget::Off,
            "stdout" | "-" => AccessLogTarget::Stdout,
            path => AccessLogTarget::File(PathBuf::from(path)),
        }
    }
}

/// A service: the host names it answers for, where its content comes from, and how it is
/// cached.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// Exact names, `*.example.com` wildcards, or `*` for any host.
    pub hosts: Vec<String>,
    /// Origins: `"http://host:port"`, or `{ url, priority, weight, max_connections }`.
    /// Lower priority numbers are tried first; weights split traffic within a priority.
    pub origins: Vec<OriginEntry>,
    /// Concurrent connections per origin unless the origin sets its own.
    #[serde(default = "default_origin_max_connections")]
    pub origin_max_connections: usize,
    /// Active probes and circuit breaker thresholds for this service's origins.
    #[serde(default)]
    pub health: HealthConfig,
    /// `Host` sent upstream; the client's when absent.
    #[serde(default)]
    pub origin_host: Option<String>,
    /// The host cache keys use for every host name of this service, so aliases share one
    /// copy (purge URLs then name this host). Default: the request's host.
    #[serde(default)]
    pub cache_key_host: Option<String>,
    /// Query parameters left out of the cache key (`utm_*`).
    #[serde(default)]
    pub strip_query: Vec<String>,
    /// Lifetime for 404/410 that carry no freshness.
    #[serde(default)]
    pub negative_ttl: Option<Seconds>,
    /// Lifetime for 500/502/503/504 that carry no freshness.
    #[serde(default)]
    pub negative_ttl_5xx: Option<Seconds>,
    /// Store responses that carry `Set-Cookie`.
    #[serde(default)]
    pub cache_set_cookie: bool,
    /// Serve stale this long past expiry while revalidating (RFC 5861 default).
    #[serde(default)]
    pub stale_while_revalidate: Option<Seconds>,
    /// Serve stale this long past expiry when upstream fails (RFC 5861 default).
    #[serde(default)]
    pub stale_if_error: Option<Seconds>,
    /// Longest a request waits for another request's fill of the same object before
    /// going upstream on its own.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Seconds,
    /// How long a key that answered uncacheable skips coalescing (hit-for-pass).
    #[serde(default = "default_hit_for_pass")]
    pub hit_for_pass: Seconds,
    /// Methods besides POST, PUT, DELETE and PATCH whose 2xx answer invalidates the target
    /// URI (RFC 9111 §4.4), e.g. WebDAV's `MOVE`. Other methods unknown to Strata pass
    /// through without touching the cache.
    #[serde(default)]
    pub invalidating_methods: Vec<String>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

fn default_origin_max_connections() -> usize {
    256
}

/// One origin of a service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OriginEntry {
    Url(String),
    Detailed(OriginConfig),
}

impl OriginEntry {
    pub fn url(&self) -> &str {
        match self {
            OriginEntry::Url(u) => u,
            OriginEntry::Detailed(o) => &o.url,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    pub url: String,
    /// Lower is preferred; higher priorities are failover groups.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Share of first picks within a priority.
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub max_connections: Option<usize>,
}

fn default_priority() -> u32 {
    1
}
fn default_weight() -> u32 {
    1
}

/// Health checking and circuit breaking for a service's origins.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Path probed with GET; no active probes when absent (passive detection still runs).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "default_probe_interval")]
    pub interval: Seconds,
    #[serde(default = "default_probe_timeout")]
    pub timeout: Seconds,
    #[serde(default = "default_expected_status")]
    pub expected_status: u16,
    /// Transport failures in a row (failed probes; connections refused, reset or timed
    /// out; requests with no response head in time) that open an origin's breaker.
    /// Failures of sent requests count only when they span `distinct_urls` URLs.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// Successes in half-open that close it again.
    #[serde(default = "default_breaker_successes")]
    pub successes: u32,
    /// Time an open breaker waits before letting a test request through.
    #[serde(default = "default_breaker_cooldown")]
    pub cooldown: Seconds,
    /// Share of 5xx answers over `error_window` that opens the breaker (0 < rate <= 1).
    #[serde(default = "default_error_rate")]
    pub error_rate: f64,
    #[serde(default = "default_error_window")]
    pub error_window: Seconds,
    /// Answers in the window before the 5xx share is judged.
    #[serde(default = "default_error_min_responses")]
    pub error_min_responses: u32,
    /// Different URLs the 5xx answers, or a run of failed requests, must span: one URL
    /// that fails cannot open the breaker for a whole site.
    #[serde(default = "default_distinct_urls")]
    pub distinct_urls: u32,
}

fn default_error_rate() -> f64 {
    0.5
}
fn default_error_window() -> Seconds {
    Seconds(Duration::from_secs(10))
}
fn default_error_min_responses() -> u32 {
    20
}
fn default_distinct_urls() -> u32 {
    3
}

fn default_probe_interval() -> Seconds {
    Seconds(Duration::from_secs(5))
}
fn default_probe_timeout() -> Seconds {
    Seconds(Duration::from_secs(2))
}
fn default_expected_status() -> u16 {
    200
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_successes() -> u32 {
    2
}
fn default_breaker_cooldown() -> Seconds {
    Seconds(Duration::from_secs(10))
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: None,
            interval: default_probe_interval(),
            timeout: default_probe_timeout(),
            expected_status: default_expected_status(),
            failures: default_breaker_failures(),
            successes: default_breaker_successes(),
            cooldown: default_breaker_cooldown(),
            error_rate: default_error_rate(),
            error_window: default_error_window(),
            error_min_responses: default_error_min_responses(),
            distinct_urls: default_distinct_urls(),
        }
    }
}

fn default_lock_timeout() -> Seconds {
    Seconds(Duration::from_secs(10))
}
fn default_hit_for_pass() -> Seconds {
    Seconds(Duration::from_secs(10))
}

impl ServiceConfig {
    /// A service with defaults for everything but its name, hosts and origins.
    pub fn new(name: &str, hosts: Vec<String>, origins: Vec<String>) -> Self {
        Self {
            name: name.to_string(),
            hosts,
            origins: origins.into_iter().map(OriginEntry::Url).collect(),
            origin_max_connections: default_origin_max_connections(),
            health: HealthConfig::default(),
            origin_host: None,
            cache_key_host: None,
            strip_query: Vec::new(),
            negative_ttl: None,
            negative_ttl_5xx: None,
            cache_set_cookie: false,
            stale_while_revalidate: None,
            stale_if_error: None,
            lock_timeout: default_lock_timeout(),
            hit_for_pass: default_hit_for_pass(),
            invalidating_methods: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// A per-path rule. The first rule whose prefix matches the path applies.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Path prefix (`/api/`).
    pub path: String,
    /// Overrides the origin's freshness lifetime.
    #[serde(default)]
    pub ttl: Option<Seconds>,
    /// Added to the service's strip list.
    #[serde(default)]
    pub strip_query: Vec<String>,
    /// Leave the query out of the key entirely.
    #[serde(default)]
    pub ignore_query: bool,
    /// Never use the cache for these paths.
    #[serde(default)]
    pub bypass: bool,
    /// Micro-caching: store 200 answers that would otherwise not be stored (`no-store`,
    /// `private`, `max-age=0`, no freshness) for this long, for flash crowds on dynamic
    /// endpoints. Answers that set cookies are still never stored.
    #[serde(default)]
    pub micro_cache: Option<Seconds>,
}

impl RuleConfig {
    /// A rule for a path prefix with every option off.
    pub fn prefix(path: &str) -> Self {
        Self {
            path: path.to_string(),
            ..Self::default()
        }
    }
}

// === impl NodeConfig ===

impl NodeConfig {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: NodeConfig = parse_toml(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        Self::from_toml(&text)
    }

    /// A one-origin, any-host configuration, as `strata edge --origin URL` builds.
    pub fn single_origin(origin: &str) -> Self {
        Self {
            node: NodeSection::default(),
            listen: ListenSection::default(),
            cache: CacheSection::default(),
            limits: LimitsSection::default(),
            log: LogSection::default(),
            purge: PurgeSection::default(),
            bus: BusSection::default(),
            ring: RingSection::default(),
            parents: ParentsSection::default(),
            hot: HotSection::default(),
            forwarding: ForwardingSection::default(),
            admin: AdminSection::default(),
            services: vec![ServiceConfig::new(
                "default",
                vec!["*".into()],
                vec![origin.to_string()],
            )],
        }
    }

    /// Checks serde cannot express. Each error names its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_token(&self.node.name) {
            return Err(ConfigError::new(
                "node.name",
                "must be a non-empty token (letters, digits, '-', '_', '.')",
            ));
        }
        if self.listen.http.is_empty() {
            return Err(ConfigError::new(
                "listen.http",
                "at least one listener is required",
            ));
        }
        if self.cache.size.0 < 1 << 20 {
            return Err(ConfigError::new("cache.size", "must be at least 1MiB"));
        }
        if self.cache.max_object_size.0 == 0 || self.cache.max_object_size.0 > self.cache.size.0 {
            return Err(ConfigError::new(
                "cache.max_object_size",
                "must be more than 0 and at most cache.size",
            ));
        }
        if self.cache.max_object_size.0 > 4 << 30 {
            return Err(ConfigError::new(
                "cache.max_object_size",
                "must be at most 4GiB for the memory tier",
            ));
        }
        if let Some(disk) = &self.cache.disk {
            if disk.path.as_os_str().is_empty() {
                return Err(ConfigError::new("cache.disk.path", "must name a directory"));
            }
            if disk.size.0 < self.cache.max_object_size.0.max(1 << 20) {
                return Err(ConfigError::new(
                    "cache.disk.size",
                    "must be at least 1MiB and at least cache.max_object_size",
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.cache.heuristic_fraction) {
            return Err(ConfigError::new(
                "cache.heuristic_fraction",
                "must be between 0 and 1",
            ));
        }
        if self.limits.max_header_bytes.0 < 8192 {
            return Err(ConfigError::new(
                "limits.max_header_bytes",
                "must be at least 8KiB",
            ));
        }
        if self.limits.max_headers == 0 {
            return Err(ConfigError::new("limits.max_headers", "must be at least 1"));
        }
        if self.limits.max_uri_length < 16 {
            return Err(ConfigError::new(
                "limits.max_uri_length",
                "must be at least 16",
            ));
        }
        for (key, d) in [
            (
                "limits.client_idle_timeout",
                self.limits.client_idle_timeout,
            ),
            (
                "limits.client_send_timeout",
                self.limits.client_send_timeout,
            ),
            (
                "limits.client_header_timeout",
                self.limits.client_header_timeout,
            ),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::new(key, "must be more than 0"));
            }
        }
        for (key, n) in [
            (
                "limits.max_connections_per_client",
                self.limits.max_connections_per_client as usize,
            ),
            (
                "limits.max_streams_per_connection",
                self.limits.max_streams_per_connection as usize,
            ),
            (
                "limits.max_background_fills",
                self.limits.max_background_fills,
            ),
            (
                "limits.max_background_fills_per_client",
                self.limits.max_background_fills_per_client as usize,
            ),
        ] {
            if n == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        for (i, a) in self.purge.allow.iter().enumerate() {
            parse_network(a).map_err(|m| ConfigError::new(format!("purge.allow[{i}]"), m))?;
        }
        self.validate_access()?;
        if self.purge.http_method && self.purge.allow.is_empty() {
            return Err(ConfigError::new(
                "purge.allow",
                "http_method needs at least one allowed network",
            ));
        }
        if let Some(url) = &self.bus.nats {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) || url.len() <= 7 {
                return Err(ConfigError::new(
                    "bus.nats",
                    format!("'{url}' is not a nats:// URL"),
                ));
            }
        }
        self.validate_topology()?;
        if self.services.is_empty() {
            return Err(ConfigError::new(
                "service",
                "at least one [[service]] is required",
            ));
        }
        let mut seen_hosts: Vec<(String, usize)> = Vec::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = |key: &str| format!("service[{i}].{key}");
            if s.name.trim().is_empty() {
                return Err(ConfigError::new(at("name"), "must not be empty"));
            }
            if s.hosts.is_empty() {
                return Err(ConfigError::new(
                    at("hosts"),
                    "at least one host name is required",
                ));
            }
            for (h, host) in s.hosts.iter().enumerate() {
                let host = host.to_ascii_lowercase();
                if !valid_host_pattern(&host) {
                    return Err(ConfigError::new(
                        format!("service[{i}].hosts[{h}]"),
                        format!("'{host}' is not a host name, '*.domain' or '*'"),
                    ));
                }
                if let Some((_, other)) = seen_hosts.iter().find(|(seen, _)| *seen == host) {
                    return Err(ConfigError::new(
                        format!("service[{i}].hosts[{h}]"),
                        format!("'{host}' is already served by service[{other}]"),
                    ));
                }
                seen_hosts.push((host, i));
            }
            if s.origins.is_empty() {
                return Err(ConfigError::new(
                    at("origins"),
                    "at least one origin is required",
                ));
            }
            for (o, origin) in s.origins.iter().enumerate() {
                if let Err(why) = crate::upstream::Origin::parse(origin.url()) {
                    return Err(ConfigError::new(format!("service[{i}].origins[{o}]"), why));
                }
                if let OriginEntry::Detailed(d) = origin {
                    if d.weight == 0 {
                        return Err(ConfigError::new(
                            format!("service[{i}].origins[{o}].weight"),
                            "must be at least 1",
                        ));
                    }
                    if d.max_connections == Some(0) {
                        return Err(ConfigError::new(
                            format!("service[{i}].origins[{o}].max_connections"),
                            "must be at least 1",
                        ));
                    }
                }
            }
            if s.origin_max_connections == 0 {
                return Err(ConfigError::new(
                    at("origin_max_connections"),
                    "must be at least 1",
                ));
            }
            if let Some(p) = &s.health.path {
                if !p.starts_with('/') {
                    return Err(ConfigError::new(at("health.path"), "must start with '/'"));
                }
            }
            if http::StatusCode::from_u16(s.health.expected_status).is_err() {
                return Err(ConfigError::new(
                    at("health.expected_status"),
                    "not an HTTP status",
                ));
            }
            if s.health.failures == 0 || s.health.successes == 0 {
                return Err(ConfigError::new(
                    at("health"),
                    "failures and successes must be at least 1",
                ));
            }
            if !(s.health.error_rate > 0.0 && s.health.error_rate <= 1.0) {
                return Err(ConfigError::new(
                    at("health.error_rate"),
                    "must be more than 0 and at most 1",
                ));
            }
            if s.health.error_window.0.is_zero() {
                return Err(ConfigError::new(
                    at("health.error_window"),
                    "must be more than 0",
                ));
            }
            if s.health.error_min_responses == 0 || s.health.distinct_urls == 0 {
                return Err(ConfigError::new(
                    at("health"),
                    "error_min_responses and distinct_urls must be at least 1",
                ));
            }
            if s.health.interval.0.is_zero() {
                return Err(ConfigError::new(
                    at("health.interval"),
                    "must be more than 0",
                ));
            }
            if let Some(h) = &s.cache_key_host {
                if !valid_host_pattern(&h.to_ascii_lowercase()) || h.contains('*') {
                    return Err(ConfigError::new(
                        at("cache_key_host"),
                        "must be a host name",
                    ));
                }
            }
            if let Some(h) = &s.origin_host {
                if http::HeaderValue::from_str(h).is_err() || h.is_empty() {
                    return Err(ConfigError::new(
                        at("origin_host"),
                        "not a valid Host value",
                    ));
                }
            }
            for (m, method) in s.invalidating_methods.iter().enumerate() {
                let safe = ["GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"];
                if http::Method::from_bytes(method.as_bytes()).is_err()
                    || safe.contains(&method.as_str())
                {
                    return Err(ConfigError::new(
                        format!("service[{i}].invalidating_methods[{m}]"),
                        format!("'{method}' is not an unsafe method name"),
                    ));
                }
            }
            for (p, pattern) in s.strip_query.iter().enumerate() {
                check_strip_pattern(pattern, || format!("service[{i}].strip_query[{p}]"))?;
            }
            for (r, rule) in s.rules.iter().enumerate() {
                if !rule.path.starts_with('/') {
                    return Err(ConfigError::new(
                        format!("service[{i}].rule[{r}].path"),
                        "must start with '/'",
                    ));
                }
                for (p, pattern) in rule.strip_query.iter().enumerate() {
                    check_strip_pattern(pattern, || {
                        format!("service[{i}].rule[{r}].strip_query[{p}]")
                    })?;
                }
            }
        }
        Ok(())
    }
}

impl NodeConfig {
    /// Forwarding trust, the admin token and who may read health.
    fn validate_access(&self) -> Result<(), ConfigError> {
        for (i, a) in self.forwarding.trusted_proxies.iter().enumerate() {
            parse_network(a)
                .map_err(|m| ConfigError::new(format!("forwarding.trusted_proxies[{i}]"), m))?;
        }
        for (i, name) in self.forwarding.allow_request_headers.iter().enumerate() {
            let known = http::HeaderName::from_bytes(name.as_bytes())
                .ok()
                .filter(|n| crate::forward::OVERRIDES.contains(n));
            if known.is_none() {
                let list: Vec<&str> = crate::forward::OVERRIDES
                    .iter()
                    .map(|n| n.as_str())
                    .collect();
                return Err(ConfigError::new(
                    format!("forwarding.allow_request_headers[{i}]"),
                    format!(
                        "'{name}' is not a field Strata drops (every other end-to-end field is forwarded): one of {}",
                        list.join(", ")
                    ),
                ));
            }
        }
        for (i, a) in self.admin.health_allow.iter().enumerate() {
            parse_network(a)
                .map_err(|m| ConfigError::new(format!("admin.health_allow[{i}]"), m))?;
        }
        let token = self.admin.token()?;
        let key = if self.admin.token_file.is_some() {
            "admin.token_file"
        } else {
            "admin.token"
        };
        if let Some(t) = &token {
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::new(
                    key,
                    "must be at least 16 characters, without spaces",
                ));
            }
        }
        if let Some(addr) = self.listen.admin {
            if !addr.ip().is_loopback() && token.is_none() {
                return Err(ConfigError::new(
                    "admin.token",
                    format!(
                        "required when the admin listener ({addr}) is not on a loopback address"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_topology(&self) -> Result<(), ConfigError> {
        if let Some(pop) = &self.node.pop {
            if !is_token(pop) {
                return Err(ConfigError::new("node.pop", "must be a non-empty token"));
            }
        }
        let peers = &self.ring.peers;
        let mut names: Vec<&str> = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            if !is_token(&peer.name) {
                return Err(ConfigError::new(
                    format!("ring.peers[{i}].name"),
                    "must be a node name",
                ));
            }
            if names.contains(&peer.name.as_str()) {
                return Err(ConfigError::new(
                    format!("ring.peers[{i}].name"),
                    format!("'{}' is listed twice", peer.name),
                ));
            }
            names.push(&peer.name);
            let origin = crate::upstream::Origin::parse(&peer.url)
                .map_err(|why| ConfigError::new(format!("ring.peers[{i}].url"), why))?;
            // Peers are recognised by the address they connect from: only a peer may ask a
            // node to serve a key it does not own (`strata-ring`).
            let host = origin.authority.host();
            if host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_err()
            {
                return Err(ConfigError::new(
                    format!("ring.peers[{i}].url"),
                    format!(
                        "'{}': a peer is named by its IP address, not a host name",
                        peer.url
                    ),
                ));
            }
        }
        if !peers.is_empty() {
            if !names.contains(&self.node.name.as_str()) {
                return Err(ConfigError::new(
                    "ring.peers",
                    format!(
                        "must include this node ('{}', from node.name)",
                        self.node.name
                    ),
                ));
            }
            if peers.iter().all(|p| p.weight == 0) {
                return Err(ConfigError::new(
                    "ring.peers",
                    "at least one peer needs a weight above 0",
                ));
            }
        }
        if !(1..=4096).contains(&self.ring.vnodes) {
            return Err(ConfigError::new(
                "ring.vnodes",
                "must be between 1 and 4096",
            ));
        }
        if self.ring.probe_interval.0.is_zero() {
            return Err(ConfigError::new(
                "ring.probe_interval",
                "must be more than 0",
            ));
        }
        for (i, url) in self.parents.shields.iter().enumerate() {
            crate::upstream::Origin::parse(url)
                .map_err(|why| ConfigError::new(format!("parents.shields[{i}]"), why))?;
        }
        if self.parents.max_connections == 0 {
            return Err(ConfigError::new(
                "parents.max_connections",
                "must be at least 1",
            ));
        }
        if !self.hot.threshold.is_finite() || self.hot.threshold < 0.0 {
            return Err(ConfigError::new(
                "hot.threshold",
                "must be a number of requests per second, 0 or more",
            ));
        }
        if self.hot.window.0.is_zero() {
            return Err(ConfigError::new("hot.window", "must be more than 0"));
        }
        Ok(())
    }
}

fn check_strip_pattern(pattern: &str, path: impl Fn() -> String) -> Result<(), ConfigError> {
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    if name.is_empty() || name.contains(['*', '&', '=', ' ']) {
        return Err(ConfigError::new(
            path(),
            format!("'{pattern}' is not a parameter name or 'prefix*'"),
        ));
    }
    Ok(())
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn valid_host_pattern(h: &str) -> bool {
    if h == "*" {
        return true;
    }
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [node]
        name = "edge-1"
        [listen]
        http = ["127.0.0.1:0"]
        admin = "127.0.0.1:0"
        [cache]
        size = "64MiB"
        max_object_size = "8MiB"
        [[service]]
        name = "site"
        hosts = ["example.com", "*.example.org"]
        origins = ["http://127.0.0.1:9000"]
        strip_query = ["utm_*"]
        negative_ttl = "10s"
          [[service.rule]]
          path = "/api/"
          bypass = true
    "#;

    #[test]
    fn parses_a_full_config() {
        let c = NodeConfig::from_toml(GOOD).unwrap();
        assert_eq!(c.cache.size.0, 64 << 20);
        assert_eq!(
            c.services[0].negative_ttl,
            Some(Seconds(Duration::from_secs(10)))
        );
        assert!(c.services[0].rules[0].bypass);
    }

    #[test]
    fn error_names_the_key_path_of_a_bad_value() {
        let bad = GOOD.replace("negative_ttl = \"10s\"", "negative_ttl = \"ten\"");
        let e = NodeConfig::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "service[0].negative_ttl");
    }

    #[test]
    fn error_names_the_key_path_of_an_unknown_key() {
        let bad = GOOD.replace("bypass = true", "bypass = true\nbypas = false");
        let e = NodeConfig::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "service[0].rule[0].bypas");
        assert!(e.message.contains("bypas"), "{e}");
    }

    #[test]
    fn error_names_the_key_path_of_a_bad_origin() {
        let bad = GOOD.replace("http://127.0.0.1:9000", "ftp://x");
        let e = NodeConfig::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "service[0].origins[0]");
    }

    #[test]
    fn duplicate_host_is_rejected() {
        let bad = format!("{GOOD}\n[[service]]\nname = \"b\"\nhosts = [\"example.com\"]\norigins = [\"http://127.0.0.1:1\"]\n");
        let e = NodeConfig::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "service[1].hosts[0]");
    }

    #[test]
    fn origins_accept_urls_and_tables() {
        let text = GOOD.replace(
            "origins = [\"http://127.0.0.1:9000\"]",
            "origins = [\"http://127.0.0.1:9000\", { url = \"http://127.0.0.1:9001\", priority = 2, weight = 3 }]",
        );
        let c = NodeConfig::from_toml(&text).unwrap();
        assert_eq!(
            c.services[0].origins[1],
            OriginEntry::Detailed(OriginConfig {
                url: "http://127.0.0.1:9001".into(),
                priority: 2,
                weight: 3,
                max_connections: None
            })
        );
        let bad = text.replace("weight = 3", "weight = 0");
        assert_eq!(
            NodeConfig::from_toml(&bad).unwrap_err().path,
            "service[0].origins[1].weight"
        );
    }

    #[test]
    fn purge_method_needs_a_valid_allow_list() {
        let on = format!("{GOOD}\n[purge]\nhttp_method = true\n");
        assert_eq!(NodeConfig::from_toml(&on).unwrap_err().path, "purge.allow");
        let bad = format!("{GOOD}\n[purge]\nhttp_method = true\nallow = [\"10.0.0.0/33\"]\n");
        assert_eq!(
            NodeConfig::from_toml(&bad).unwrap_err().path,
            "purge.allow[0]"
        );
        let ok =
            format!("{GOOD}\n[purge]\nhttp_method = true\nallow = [\"10.0.0.0/8\", \"::1\"]\n");
        assert!(NodeConfig::from_toml(&ok).is_ok());
    }

    #[test]
    fn empty_key_error_still_names_a_place() {
        // Found by the config fuzz target.
        let e = NodeConfig::from_toml("\"\"=0").unwrap_err();
        assert_eq!(e.path, "(document)");
    }

    #[test]
    fn syntax_error_is_reported() {
        let e = NodeConfig::from_toml("[node\nname=").unwrap_err();
        assert_eq!(e.path, "(document)");
    }

    #[test]
    fn max_object_size_must_fit_in_cache() {
        let bad = GOOD.replace("max_object_size = \"8MiB\"", "max_object_size = \"1GiB\"");
        assert_eq!(
            NodeConfig::from_toml(&bad).unwrap_err().path,
            "cache.max_object_size"
        );
    }

    #[test]
    fn disk_tier_keys_are_checked_by_name() {
        let ok = format!("{GOOD}\n[cache.disk]\npath = \"/var/cache/strata\"\nsize = \"10GiB\"\n");
        let disk = NodeConfig::from_toml(&ok).unwrap().cache.disk.unwrap();
        assert_eq!(disk.size.0, 10 << 30);
        let small = ok.replace("\"10GiB\"", "\"1MiB\"");
        assert_eq!(
            NodeConfig::from_toml(&small).unwrap_err().path,
            "cache.disk.size"
        );
        let missing = format!("{GOOD}\n[cache.disk]\nsize = \"10GiB\"\n");
        assert!(NodeConfig::from_toml(&missing)
            .unwrap_err()
            .to_string()
            .contains("path"));
        let unknown = ok.replace("size =", "sise =");
        assert!(NodeConfig::from_toml(&unknown)
            .unwrap_err()
            .path
            .starts_with("cache.disk"));
    }
}
