//! Shared state of one node's data plane: the services, storage, upstream clients and
//! counters every request uses. What a request does with them is in `request/`.

use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use strata_http_cache::CacheKey;
use strata_storage::Storage;
use strata_wire::clock::Clock;

use crate::access_log::AccessLog;
use crate::budget::Budget;
use crate::coalesce::Coalescer;
use crate::config::NodeConfig;
use crate::forward::Forwarder;
use crate::health_report::HealthCounters;
use crate::metrics::Metrics;
use crate::service::Services;
use crate::tier::Tier;
use crate::upstream::send::Sender;
use crate::upstream::{Timeouts, UpstreamClient};

/// Bytes the hit-for-pass marks may take, key text included.
const HIT_FOR_PASS_BYTES: u64 = 8 << 20;

/// Shared state of one node's data plane.
pub struct Proxy {
    pub(crate) node: String,
    /// `Via: 1.1 <node>`, built once.
    pub(crate) via: HeaderValue,
    pub(crate) services: Services,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) upstream: UpstreamClient,
    pub(crate) sender: Sender,
    pub(crate) forwarder: Forwarder,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access_log: AccessLog,
    pub(crate) max_uri_length: usize,
    pub(crate) max_object_size: u64,
    pub(crate) timeouts: Timeouts,
    pub(crate) coalescer: Coalescer,
    pub(crate) purge_method_enabled: bool,
    pub(crate) purge_allow: Vec<ipnet::IpNet>,
    /// Who may read the health report on the HTTP listeners.
    pub(crate) health_allow: Vec<ipnet::IpNet>,
    pub(crate) strip_cdn_cache_control: bool,
    /// `cache.compression`: compress uncompressed bodies into stored variants.
    pub(crate) compression: bool,
    /// `tls.client_ca` is set: `strata-ring` needs a client certificate from it.
    pub(crate) peers_authenticate: bool,
    /// Fills with no client waiting: refreshes, bodies whose clients left.
    pub(crate) background: Arc<Budget>,
    /// What the node learned from playlists, and its segment prefetches.
    pub(crate) media: Arc<crate::media::Media>,
    /// Trusted proxies and ring peers.
    pub(crate) carriers: Vec<ipnet::IpNet>,
    /// Keys that recently answered uncacheable, with the time the mark expires.
    pub(crate) hit_for_pass: moka::sync::Cache<CacheKey, Instant>,
    pub(crate) tier: Tier,
    pub(crate) pop: String,
    pub(crate) role: &'static str,
    pub(crate) health: HealthCounters,
    /// Where this node's time comes from: read when a request arrives (and by later steps
    /// that need the time of their own moment), and handed to the logic below (storage,
    /// breakers, hot keys). Nothing on the request path reads the system clock for a
    /// decision.
    pub(crate) clock: Clock,
    /// ACME validations in progress: HTTP-01 tokens are answered in the parse phase, and
    /// the TLS listeners answer TLS-ALPN-01 from the same table.
    pub(crate) acme: Arc<crate::tls::Challenges>,
    /// `[geo]`: clients' countries for the access rules that ask.
    pub(crate) countries: Option<crate::access::country::Countries>,
    /// The node's name, PoP and role, shared with the properties filters read.
    pub(crate) names: Arc<[String; 3]>,
    /// Edge KV: filters' shared data, the admin API's `/v1/kv/`.
    pub(crate) kv: Arc<crate::kv::EdgeKv>,
}

// === impl Proxy ===

impl Proxy {
    pub fn new(
        config: &NodeConfig,
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
        clock: Clock,
    ) -> Result<Self, String> {
        let origin_tls = crate::tls::OriginTls::from_config(config).map_err(|e| e.to_string())?;
        let upstream = UpstreamClient::new(
            config.limits.upstream_connect_timeout.0,
            &origin_tls,
            config.limits.upstream_tls_sites,
        )
        .map_err(|e| e.to_string())?;
        let timeouts = Timeouts {
            first_byte: config.limits.upstream_first_byte_timeout.0,
            idle: config.limits.upstream_idle_timeout.0,
        };
        let tier = Tier::new(config)?;
        // Trusted proxies and ring peers: their forwarding fields are believed, and they
        // carry many clients' requests (the per-client caps do not apply to them).
        let mut carriers = config.forwarding.trusted_networks();
        carriers.extend(
            tier.peer_addresses()
                .iter()
                .map(|ip| ipnet::IpNet::from(*ip)),
        );
        let allowed = config
            .forwarding
            .allow_request_headers
            .iter()
            .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        let kv = Arc::new(crate::kv::EdgeKv::default());
        let media = Arc::new(crate::media::Media::new(
            Budget::with_exempt(
                config.limits.max_prefetches,
                config.limits.max_prefetches_per_client,
                carriers.clone(),
            ),
            Arc::clone(&metrics),
        ));
        Ok(Self {
            via: HeaderValue::from_str(&format!("1.1 {}", config.node.name))
                .map_err(|_| "node.name is not a valid header value".to_string())?,
            node: config.node.name.clone(),
            purge_method_enabled: config.purge.http_method,
            purge_allow: config.purge.allowed_networks(),
            health_allow: config.admin.health_networks(),
            strip_cdn_cache_control: config.cache.strip_cdn_cache_control,
            compression: config.cache.compression,
            peers_authenticate: config.tls.client_ca.is_some(),
            names: Arc::new([
                config.node.name.clone(),
                config.node.pop.clone().unwrap_or_default(),
                config.node.role.as_str().to_string(),
            ]),
            services: Services::with_kv(config, &clock, &kv)?,
            kv,
            storage,
            sender: Sender {
                client: upstream.clone(),
                timeouts,
                metrics: Arc::clone(&metrics),
                clock: clock.clone(),
                shedder: crate::shed::Shedder::new(
                    config.limits.max_upstream_requests,
                    config.limits.shed_queue_timeout.0,
                    config.limits.shed_loop_lag.0,
                    config.limits.shed_memory.map_or(0, |b| b.0),
                ),
            },
            forwarder: Forwarder::new(&config.node.name, carriers.clone(), allowed),
            countries: crate::access::country::Countries::from_config(&config.geo)
                .map_err(|e| e.to_string())?,
            upstream,
            metrics,
            access_log,
            max_uri_length: config.limits.max_uri_length,
            max_object_size: config.cache.max_object_size.0,
            timeouts,
            coalescer: Coalescer::default(),
            background: Budget::with_exempt(
                config.limits.max_background_fills,
                config.limits.max_background_fills_per_client,
                carriers.clone(),
            ),
            media,
            carriers,
            hit_for_pass: hit_for_pass_marks(config),
            tier,
            pop: config.node.pop.clone().unwrap_or_default(),
            role: config.node.role.as_str(),
            health: HealthCounters::default(),
            clock,
            acme: Arc::default(),
        })
    }

    pub fn tier(&self) -> &Tier {
        &self.tier
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn acme_challenges(&self) -> &Arc<crate::tls::Challenges> {
        &self.acme
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn kv(&self) -> &Arc<crate::kv::EdgeKv> {
        &self.kv
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    pub fn upstream(&self) -> &UpstreamClient {
        &self.upstream
    }

    /// Addresses that carry many clients' requests (trusted proxies, ring peers): the
    /// per-client caps do not apply to them.
    pub fn carriers(&self) -> Vec<ipnet::IpNet> {
        self.carriers.clone()
    }

    /// Fills in progress.
    pub fn fills_in_progress(&self) -> usize {
        self.coalescer.in_progress()
    }
}

/// Keys that recently answered uncacheable. Keys are chosen by clients: bounded in bytes,
/// key text included, and kept no longer than the longest mark. (The marks' own expiry is
/// on the node clock; this bound, on the system's, only frees memory.)
fn hit_for_pass_marks(config: &NodeConfig) -> moka::sync::Cache<CacheKey, Instant> {
    moka::sync::Cache::builder()
        .max_capacity(HIT_FOR_PASS_BYTES)
        .weigher(|k: &CacheKey, _: &Instant| {
            u32::try_from(k.as_str().len() + 96).unwrap_or(u32::MAX)
        })
        .time_to_live(
            config
                .services
                .iter()
                .map(|s| s.hit_for_pass.0)
                .max()
                .unwrap_or_default()
                .max(crate::request::TOO_LARGE_MARK),
        )
        .build()
}
