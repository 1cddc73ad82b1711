//! Prometheus metrics, served by the admin listener at `/metrics` (OpenMetrics text).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use strata_storage::{DiskReport, StorageStats};

use crate::proxy::Proxy;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    /// `hit`, `uri-miss`, `vary-miss`, `stale`, `request`, `bypass`, `method`, `none`.
    pub cache_status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok`, or the upstream error kind.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabel {
    pub certificate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HopLabel {
    /// `peer` (ring member of this PoP) or `parent` (shield).
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabel {
    pub key: String,
}

/// An experiment's variant (both named by the configuration) and the answer's class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantLabel {
    pub experiment: String,
    pub variant: String,
    pub status: &'static str,
}

/// A filter (named by the operator's configuration) and what went wrong.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterLabel {
    pub filter: String,
    pub fault: String,
}

/// A metric a filter defined (`proxy_define_metric`), by the filter's name and its own.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterMetricLabel {
    pub filter: String,
    pub metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterNameLabel {
    pub filter: String,
}

/// One filter's figures, read when the metrics are.
pub struct FilterSample {
    pub filter: String,
    pub warm: usize,
    pub instantiated: u64,
    pub metrics: Vec<(String, i64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabel {
    pub service: String,
    pub origin: String,
}

/// A counter that follows a running total kept elsewhere (a tier's own counters).
#[derive(Default)]
struct Cumulative {
    counter: Counter,
    seen: AtomicU64,
}

impl Cumulative {
    fn set(&self, total: u64) {
        let before = self.seen.swap(total, Ordering::Relaxed);
        self.counter.inc_by(total.saturating_sub(before));
    }
}

/// The disk tier's figures (all zero without one).
#[derive(Default)]
struct DiskMetrics {
    bytes: Gauge,
    capacity: Gauge,
    objects: Gauge,
    open: Gauge,
    pending_purges: Gauge,
    writes: Cumulative,
    dropped_writes: Cumulative,
    errors: Cumulative,
    evictions: Cumulative,
}

impl DiskMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "disk_cache_bytes",
            "Bytes held by the disk tier",
            self.bytes.clone(),
        );
        registry.register(
            "disk_cache_capacity_bytes",
            "Capacity of the disk tier",
            self.capacity.clone(),
        );
        registry.register(
            "disk_cache_objects",
            "Primary keys held by the disk tier",
            self.objects.clone(),
        );
        registry.register(
            "disk_cache_open",
            "1 once lookups read the disk tier (after the purges missed while away are applied)",
            self.open.clone(),
        );
        registry.register(
            "disk_cache_pending_purges",
            "Journaled purges not yet applied to the disk index (lookups apply them meanwhile)",
            self.pending_purges.clone(),
        );
        registry.register(
            "disk_cache_writes",
            "Objects written to the disk tier",
            self.writes.counter.clone(),
        );
        registry.register(
            "disk_cache_dropped_writes",
            "Objects not written to the disk tier because its write queue was full",
            self.dropped_writes.counter.clone(),
        );
        registry.register(
            "disk_cache_errors",
            "Disk tier reads, writes and deletions that failed",
            self.errors.counter.clone(),
        );
        registry.register(
            "disk_cache_evictions",
            "Objects evicted from the disk tier",
            self.evictions.counter.clone(),
        );
    }

    fn set(&self, disk: &DiskReport) {
        self.bytes.set(disk.stats.bytes as i64);
        self.capacity.set(disk.stats.capacity as i64);
        self.objects.set(disk.stats.keys as i64);
        self.open.set(i64::from(disk.open));
        self.pending_purges.set(disk.pending_purges as i64);
        self.writes.set(disk.counters.writes);
        self.dropped_writes.set(disk.counters.dropped_writes);
        self.errors.set(disk.counters.errors);
        self.evictions.set(disk.stats.evictions);
    }
}

/// Every metric the node exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<CacheLabel, Counter>,
    response_bytes: Counter,
    origin_requests: Family<OutcomeLabel, Counter>,
    request_duration: Family<CacheLabel, Histogram>,
    origin_first_byte: Histogram,
    cache_bytes: Gauge,
    cache_capacity: Gauge,
    cache_keys: Gauge,
    cache_evictions: Cumulative,
    disk: DiskMetrics,
    origin_breaker_open: Family<OriginLabel, Gauge>,
    origin_connections: Family<OriginLabel, Gauge>,
    fills_in_progress: Gauge,
    tier_upstream_up: Family<HopLabel, Gauge>,
    hot_objects: Gauge,
    hot_object_rate: Family<KeyLabel, Gauge<f64, AtomicU64>>,
    by_status: Vec<(&'static str, Counter, Histogram)>,
    client_connections: Gauge,
    connections_refused: Family<ReasonLabel, Counter>,
    connections_timed_out: Family<ReasonLabel, Counter>,
    connections_cut_off: Family<ReasonLabel, Counter>,
    tls_handshakes_failed: Family<ReasonLabel, Counter>,
    acme_orders: Family<OutcomeLabel, Counter>,
    prefetches: Family<OutcomeLabel, Counter>,
    prefetched_bytes: Counter,
    playlists_unreadable: Counter,
    acme_certificate_expiry: Family<CertificateLabel, Gauge>,
    fills_cancelled: Family<ReasonLabel, Counter>,
    bus_connected: Gauge,
    shed: Family<ReasonLabel, Counter>,
    access_refused: Family<ReasonLabel, Counter>,
    filter_faults: Family<FilterLabel, Counter>,
    experiment_responses: Family<VariantLabel, Counter>,
    filter_metric: Family<FilterMetricLabel, Gauge>,
    filter_instances_warm: Family<FilterNameLabel, Gauge>,
    filter_instantiated: Family<FilterNameLabel, Gauge>,
    event_loop_lag: Gauge<f64, AtomicU64>,
    upstream_in_flight: Gauge,
}

/// Live topology state, sampled when metrics are scraped.
#[derive(Default)]
pub struct TierSample {
    /// Peers and parents: kind, name, whether its breaker lets requests through.
    pub upstreams: Vec<(&'static str, String, bool)>,
    /// Hot keys on this node and their request rates (per second).
    pub hot: Vec<(String, f64)>,
}

/// How many hot keys are named in metrics (the count covers all).
pub const HOT_KEYS_REPORTED: usize = 50;

/// Live state of one origin, sampled when metrics are scraped.
pub struct OriginSample {
    pub service: String,
    pub origin: String,
    pub breaker_open: bool,
    pub connections: usize,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~26 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strata");
        let requests = Family::<CacheLabel, Counter>::default();
        registry.register(
            "requests",
            "Client requests by cache status",
            requests.clone(),
        );
        let response_bytes = Counter::default();
        registry.register(
            "response_bytes",
            "Body bytes sent to clients",
            response_bytes.clone(),
        );
        let origin_requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "origin_requests",
            "Requests sent to origins by outcome",
            origin_requests.clone(),
        );
        let request_duration = Family::<CacheLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time to response head, by cache status",
            request_duration.clone(),
        );
        let origin_first_byte = latency_histogram();
        registry.register(
            "origin_first_byte_seconds",
            "Time from upstream request to response head",
            origin_first_byte.clone(),
        );
        let shed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "shed_requests",
            "Upstream requests shed because the node was past its capacity, by reason",
            shed.clone(),
        );
        let access_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "access_refused",
            "Requests refused by the access phase (networks, methods, referrers, tokens, rate limits), by reason",
            access_refused.clone(),
        );
        let filter_faults = Family::<FilterLabel, Counter>::default();
        registry.register(
            "filter_faults",
            "Edge compute filters that trapped, ran out of CPU, broke a host limit or found no free instance, by filter and fault",
            filter_faults.clone(),
        );
        let experiment_responses = Family::<VariantLabel, Counter>::default();
        registry.register(
            "experiment_responses",
            "Answers to requests in an experiment, by experiment, variant and status class",
            experiment_responses.clone(),
        );
        let filter_metric = Family::<FilterMetricLabel, Gauge>::default();
        registry.register(
            "filter_metric",
            "Metrics edge compute filters define (proxy_define_metric), by filter and name: counters and gauges as their value, histograms as the last value recorded",
            filter_metric.clone(),
        );
        let filter_instances_warm = Family::<FilterNameLabel, Gauge>::default();
        registry.register(
            "filter_instances_warm",
            "Warm instances an edge compute filter keeps for its next requests",
            filter_instances_warm.clone(),
        );
        let filter_instantiated = Family::<FilterNameLabel, Gauge>::default();
        registry.register(
            "filter_instantiated",
            "Instances an edge compute filter has made since start (a fault drops one)",
            filter_instantiated.clone(),
        );
        let event_loop_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "event_loop_lag_seconds",
            "How late a 10 ms timer fired, last sample",
            event_loop_lag.clone(),
        );
        let upstream_in_flight = Gauge::default();
        registry.register(
            "upstream_requests_in_flight",
            "Upstream requests waiting for their response head (limits.max_upstream_requests)",
            upstream_in_flight.clone(),
        );
        let bus_connected = Gauge::default();
        registry.register(
            "bus_connected",
            "1 when this node has joined the NATS bus (purges reach it), 0 while it is cut off",
            bus_connected.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            "cache_bytes",
            "Bytes held by the memory tier",
            cache_bytes.clone(),
        );
        let cache_capacity = Gauge::default();
        registry.register(
            "cache_capacity_bytes",
            "Capacity of the memory tier",
            cache_capacity.clone(),
        );
        let cache_keys = Gauge::default();
        registry.register(
            "cache_objects",
            "Primary keys held by the memory tier",
            cache_keys.clone(),
        );
        let cache_evictions = Cumulative::default();
        registry.register(
            "cache_evictions",
            "Objects evicted from the memory tier",
            cache_evictions.counter.clone(),
        );
        let disk = DiskMetrics::default();
        disk.register(&mut registry);
        let origin_breaker_open = Family::<OriginLabel, Gauge>::default();
        registry.register(
            "origin_breaker_open",
            "1 while the origin's circuit breaker is open or half-open",
            origin_breaker_open.clone(),
        );
        let origin_connections = Family::<OriginLabel, Gauge>::default();
        registry.register(
            "origin_connections",
            "Connections in use to the origin",
            origin_connections.clone(),
        );
        let fills_in_progress = Gauge::default();
        registry.register(
            "fills_in_progress",
            "Cache fills in progress (coalesced requests wait on these)",
            fills_in_progress.clone(),
        );
        let tier_upstream_up = Family::<HopLabel, Gauge>::default();
        registry.register(
            "tier_upstream_up",
            "Whether a ring peer or parent shield takes requests (its breaker is not open)",
            tier_upstream_up.clone(),
        );
        let hot_objects = Gauge::default();
        registry.register(
            "hot_objects",
            "Keys hot on this node (cached here besides their ring owner)",
            hot_objects.clone(),
        );
        let hot_object_rate = Family::<KeyLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "hot_object_requests_per_second",
            "Request rate of the hottest keys on this node",
            hot_object_rate.clone(),
        );
        let client_connections = Gauge::default();
        registry.register(
            "client_connections",
            "Client connections open (HTTP and admin listeners)",
            client_connections.clone(),
        );
        let connections_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "client_connections_refused",
            "Client connections answered 503 and closed: `connection-limit` (the node's), `client-connection-limit` (one address's)",
            connections_refused.clone(),
        );
        let connections_timed_out = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "client_connections_closed_by_timeout",
            "Client connections closed by Strata: `idle` (no request in progress), `send` (the client stopped reading)",
            connections_timed_out.clone(),
        );
        let connections_cut_off = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "client_connections_cut_off",
            "Client connections ended for abuse: `h2-resets` (an h2 client resetting most of its streams as soon as it opened them, CVE-2023-44487; GOAWAY ENHANCE_YOUR_CALM)",
            connections_cut_off.clone(),
        );
        let tls_handshakes_failed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "tls_handshakes_failed",
            "TLS handshakes on the https listeners that did not complete: `timeout` (the client did not finish in limits.client_header_timeout), `error` (a malformed hello, no shared protocol or cipher, an unknown name with tls.unknown_sni = \"reject\", a client alert)",
            tls_handshakes_failed.clone(),
        );
        let prefetches = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "prefetches",
            "Segments fetched ahead of players ([service.media]): `started`; `hit` (a player asked for one, fetched or still coming); `wasted` (not asked for within 5 minutes, or evicted first); `budget` (not started: limits.max_prefetches)",
            prefetches.clone(),
        );
        let prefetched_bytes = Counter::default();
        registry.register(
            "prefetched_bytes",
            "Bytes of segments fetched ahead and stored",
            prefetched_bytes.clone(),
        );
        let playlists_unreadable = Counter::default();
        registry.register(
            "playlists_unreadable",
            "Responses for a playlist or manifest path (or type) that did not parse as HLS or DASH: served and cached as the origin said, not used for prefetch",
            playlists_unreadable.clone(),
        );
        let acme_orders = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "acme_orders",
            "ACME orders by outcome: `issued` (in service), `failed` (retried with backoff; the certificate in service stays)",
            acme_orders.clone(),
        );
        let acme_certificate_expiry = Family::<CertificateLabel, Gauge>::default();
        registry.register(
            "acme_certificate_expiry_timestamp_seconds",
            "When each ACME certificate in service expires (Unix time), by its first configured name",
            acme_certificate_expiry.clone(),
        );
        let fills_cancelled = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "fills_cancelled",
            "Fills stopped because no client waited for them any more: `head` (before the response head), `body` (while storing, over the background budget); and background refreshes not started (`budget`)",
            fills_cancelled.clone(),
        );
        let by_status = [
            "hit",
            "uri-miss",
            "vary-miss",
            "stale",
            "request",
            "bypass",
            "method",
            "none",
        ]
        .into_iter()
        .map(|l| {
            let label = CacheLabel {
                cache_status: l.to_string(),
            };
            let count = requests.get_or_create(&label).clone();
            let hist = request_duration.get_or_create(&label).clone();
            (l, count, hist)
        })
        .collect();
        Self {
            client_connections,
            connections_refused,
            connections_timed_out,
            connections_cut_off,
            tls_handshakes_failed,
            acme_orders,
            prefetches,
            prefetched_bytes,
            playlists_unreadable,
            acme_certificate_expiry,
            fills_cancelled,
            bus_connected,
            shed,
            access_refused,
            filter_faults,
            experiment_responses,
            filter_metric,
            filter_instances_warm,
            filter_instantiated,
            event_loop_lag,
            upstream_in_flight,
            by_status,
            tier_upstream_up,
            hot_objects,
            hot_object_rate,
            origin_breaker_open,
            origin_connections,
            fills_in_progress,
            registry: Mutex::new(registry),
            requests,
            response_bytes,
            origin_requests,
            request_duration,
            origin_first_byte,
            cache_bytes,
            cache_capacity,
            cache_keys,
            cache_evictions,
            disk,
        }
    }

    pub fn request(&self, cache_status: &'static str, head_latency: Duration) {
        // Known labels have their series made up front; the lookup is a short scan, with
        // no allocation or map lock on the request path.
        if let Some((_, count, hist)) = self.by_status.iter().find(|(l, _, _)| *l == cache_status) {
            count.inc();
            hist.observe(head_latency.as_secs_f64());
            return;
        }
        let label = CacheLabel {
            cache_status: cache_status.to_string(),
        };
        self.requests.get_or_create(&label).inc();
        self.request_duration
            .get_or_create(&label)
            .observe(head_latency.as_secs_f64());
    }

    pub fn response_bytes(&self, n: u64) {
        self.response_bytes.inc_by(n);
    }

    pub fn origin_request(&self, outcome: &str, first_byte: Option<Duration>) {
        self.origin_requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(d) = first_byte {
            self.origin_first_byte.observe(d.as_secs_f64());
        }
    }

    pub fn connection_opened(&self) {
        self.client_connections.inc();
    }

    pub fn connection_closed(&self) {
        self.client_connections.dec();
    }

    /// `reason`: `timeout` or `error`.
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshakes_failed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// `outcome`: `issued` or `failed`.
    pub fn prefetch(&self, outcome: &'static str) {
        self.prefetches
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn prefetched_bytes(&self, bytes: u64) {
        self.prefetched_bytes.inc_by(bytes);
    }

    pub fn playlist_unreadable(&self) {
        self.playlists_unreadable.inc();
    }

    pub fn acme_order(&self, outcome: &'static str) {
        self.acme_orders
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// `name`: the first configured name of an ACME certificate (operator text).
    pub fn acme_certificate_expiry(&self, name: &str, not_after: std::time::SystemTime) {
        let secs = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.acme_certificate_expiry
            .get_or_create(&CertificateLabel {
                certificate: name.to_string(),
            })
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// `reason` is one of a fixed set (never client text).
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn connection_timed_out(&self, reason: &'static str) {
        self.connections_timed_out
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn connection_cut_off(&self, reason: &'static str) {
        self.connections_cut_off
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// One request refused by the access phase; `reason` is its `Cache-Status` detail (a
    /// fixed set).
    pub fn experiment(&self, experiment: &str, variant: &str, status: &'static str) {
        self.experiment_responses
            .get_or_create(&VariantLabel {
                experiment: experiment.to_string(),
                variant: variant.to_string(),
                status,
            })
            .inc();
    }

    pub fn filter_fault(&self, filter: &str, fault: &'static str) {
        self.filter_faults
            .get_or_create(&FilterLabel {
                filter: filter.to_string(),
                fault: fault.to_string(),
            })
            .inc();
    }

    pub fn access_refused(&self, reason: &'static str) {
        self.access_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn shed(&self, reason: &'static str) {
        self.shed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The load figures the shedder decides on, sampled every 10 ms.
    pub fn load(&self, lag: Duration, upstream_in_flight: usize) {
        self.event_loop_lag.set(lag.as_secs_f64());
        self.upstream_in_flight.set(upstream_in_flight as i64);
    }

    /// Whether the node is on the bus now.
    pub fn bus_connected(&self, connected: bool) {
        self.bus_connected.set(i64::from(connected));
    }

    pub fn fill_cancelled(&self, reason: &'static str) {
        self.fills_cancelled
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Renders the registry, refreshing sampled figures first.
    pub fn render(
        &self,
        stats: StorageStats,
        disk: Option<DiskReport>,
        origins: &[OriginSample],
        fills: usize,
        tier: &TierSample,
        filters: &[FilterSample],
    ) -> String {
        for f in filters {
            let name = FilterNameLabel {
                filter: f.filter.clone(),
            };
            self.filter_instances_warm
                .get_or_create(&name)
                .set(f.warm as i64);
            self.filter_instantiated
                .get_or_create(&name)
                .set(f.instantiated as i64);
            for (metric, value) in &f.metrics {
                self.filter_metric
                    .get_or_create(&FilterMetricLabel {
                        filter: f.filter.clone(),
                        metric: metric.clone(),
                    })
                    .set(*value);
            }
        }
        for (kind, name, up) in &tier.upstreams {
            self.tier_upstream_up
                .get_or_create(&HopLabel {
                    kind: kind.to_string(),
                    name: name.clone(),
                })
                .set(i64::from(*up));
        }
        self.hot_objects.set(tier.hot.len() as i64);
        // Keys that cooled down disappear from the family.
        self.hot_object_rate.clear();
        for (key, rate) in tier.hot.iter().take(HOT_KEYS_REPORTED) {
            self.hot_object_rate
                .get_or_create(&KeyLabel { key: key.clone() })
                .set(*rate);
        }
        for o in origins {
            let label = OriginLabel {
                service: o.service.clone(),
                origin: o.origin.clone(),
            };
            self.origin_breaker_open
                .get_or_create(&label)
                .set(i64::from(o.breaker_open));
            self.origin_connections
                .get_or_create(&label)
                .set(o.connections as i64);
        }
        self.fills_in_progress.set(fills as i64);
        self.cache_bytes.set(stats.bytes as i64);
        self.cache_capacity.set(stats.capacity as i64);
        self.cache_keys.set(stats.keys as i64);
        self.cache_evictions.set(stats.evictions);
        if let Some(disk) = disk {
            self.disk.set(&disk);
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
// === impl Proxy ===

/// Samples of node state taken when metrics are read.
impl Proxy {
    /// Topology state for metrics.
    pub fn tier_sample(&self) -> TierSample {
        let now = self.clock.mono();
        TierSample {
            upstreams: self
                .tier
                .upstreams()
                .map(|hop| (hop.kind.as_str(), hop.name.clone(), !hop.state.refuses(now)))
                .collect(),
            hot: self.tier.hot_keys(now, usize::MAX),
        }
    }

    /// Origin states for metrics.
    /// Each filter of the node's services, once (a chain shared by rules counts once).
    pub fn filter_samples(&self) -> Vec<FilterSample> {
        self.filters()
            .into_iter()
            .map(|f| FilterSample {
                filter: f.name().to_owned(),
                warm: f.idle(),
                instantiated: f
                    .stats()
                    .instantiated
                    .load(std::sync::atomic::Ordering::Relaxed),
                metrics: f.metrics(),
            })
            .collect()
    }

    /// The node's filters, each once.
    pub fn filters(&self) -> Vec<std::sync::Arc<strata_compute::Filter>> {
        let mut seen: Vec<std::sync::Arc<strata_compute::Filter>> = Vec::new();
        for service in self.services.all() {
            for link in service.filter_links() {
                if !seen.iter().any(|f| std::sync::Arc::ptr_eq(f, &link.filter)) {
                    seen.push(std::sync::Arc::clone(&link.filter));
                }
            }
        }
        seen
    }

    pub fn origin_samples(&self) -> Vec<OriginSample> {
        let mut out = Vec::new();
        for service in self.services.all() {
            for o in service.origins.all() {
                out.push(OriginSample {
                    service: service.name.clone(),
                    origin: o.name(),
                    breaker_open: o.breaker_state() != "closed",
                    connections: o.busy(),
                });
            }
        }
        out
    }
}
