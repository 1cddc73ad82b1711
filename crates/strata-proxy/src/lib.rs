//! Strata's data plane: one node's listeners, request path, cache and upstreams.
//!
//! [`Node::start`] binds everything a [`config::NodeConfig`] asks for and returns a handle
//! with the bound addresses (tests bind port 0) and a graceful shutdown.

pub mod access;
mod access_log;
mod admin;
mod body;
mod budget;
mod coalesce;
mod compress;
pub mod compute;
pub mod config;
mod error;
mod experiment;
mod fill;
mod forward;
mod health_report;
pub mod kv;
mod media;
mod metrics;
mod proxy;
pub mod purge;
mod purge_consumer;
pub mod reload;
mod request;
mod server;
mod service;
mod shed;
mod throttled_log;
mod tier;
pub mod tls;
mod upstream;

pub use crate::proxy::Proxy;
pub use strata_wire::clock;

use crate::clock::Clock;

use std::net::SocketAddr;
use std::sync::Arc;

use strata_storage::{DiskStorage, MemoryStorage, Storage, TieredStorage};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::access_log::AccessLog;
use crate::budget::Budget;
use crate::config::NodeConfig;
use crate::metrics::Metrics;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot open the disk cache (cache.disk.path) {path}")]
    Disk {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A running node.
pub struct Node {
    pub http_addrs: Vec<SocketAddr>,
    pub https_addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    proxy: Arc<Proxy>,
    /// Reads the configuration again and applies what can change in place.
    reloader: Arc<reload::Reloader>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Drops idle rate-limit buckets every 10 s, on a blocking thread: a sweep walks every
/// bucket, and a client spraying keys can leave many.
async fn sweep_rate_limits(proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            _ = shutdown.changed() => return,
        }
        let proxy = Arc::clone(&proxy);
        let _ = tokio::task::spawn_blocking(move || {
            for service in proxy.services().all() {
                for access in service.accesses() {
                    access.sweep();
                }
            }
        })
        .await;
    }
}

impl Node {
    /// Starts a node; joins the NATS bus when `bus.nats` is configured.
    pub async fn start(config: &NodeConfig) -> Result<Self, StartError> {
        Self::start_with_bus(config, None).await
    }

    /// Starts a node on a bus it is given (the embedded bus of a single-process setup), or
    /// with `None` on the NATS bus `bus.nats` names, if any.
    pub async fn start_with_bus(
        config: &NodeConfig,
        bus: Option<strata_bus::Bus>,
    ) -> Result<Self, StartError> {
        let listeners = Listeners::bind(config)?;
        Self::start_on(config, bus, listeners).await
    }

    /// Starts a node on listeners bound beforehand. Nodes that name each other in their
    /// configuration (a PoP's ring, on port 0) bind first, then configure, then start.
    /// `bus` as for [`Node::start_with_bus`].
    pub async fn start_on(
        config: &NodeConfig,
        bus: Option<strata_bus::Bus>,
        listeners: Listeners,
    ) -> Result<Self, StartError> {
        Self::start_with(config, bus, listeners, Clock::system()).await
    }

    /// As [`Node::start_on`], on `clock`: tests and the simulator give a manual one, and
    /// expiry, breaker cool-downs and hot-key decay follow it alone.
    pub async fn start_with(
        config: &NodeConfig,
        bus: Option<strata_bus::Bus>,
        listeners: Listeners,
        clock: Clock,
    ) -> Result<Self, StartError> {
        config
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))?;
        // NATS is joined by the purge consumer's task: a server that is down or refuses
        // the node does not keep it from serving (see `purge_consumer::BusLink`).
        let bus = match (bus, &config.bus.nats) {
            (Some(bus), _) => Some(purge_consumer::BusLink::Ready(bus)),
            (None, Some(url)) => Some(purge_consumer::BusLink::Nats {
                url: url.clone(),
                auth: Box::new(config.bus.auth.clone()),
            }),
            (None, None) => None,
        };
        let access_log = AccessLog::start(&config.log.target())
            .await
            .map_err(StartError::AccessLog)?;
        let memory = MemoryStorage::new(config.cache.size.0);
        let (storage, tiers): (Arc<dyn Storage>, _) = match &config.cache.disk {
            None => (Arc::new(memory), None),
            Some(disk) => {
                let (path, size) = (disk.path.clone(), disk.size.0);
                let opened = tokio::task::spawn_blocking(move || {
                    DiskStorage::open(&path, size)
                        .map_err(|source| StartError::Disk { path, source })
                })
                .await
                .map_err(|e| StartError::Config(format!("opening the disk cache: {e}")))??;
                // A NATS bus kept purges while the node was away: the disk is read only once
                // they are applied (the purge consumer opens it). Without one, nothing can
                // have been missed.
                let open = !matches!(
                    bus,
                    Some(
                        purge_consumer::BusLink::Nats { .. }
                            | purge_consumer::BusLink::Ready(strata_bus::Bus::Nats(_))
                    )
                );
                let tiers = Arc::new(TieredStorage::new(memory, opened, open));
                (Arc::clone(&tiers) as Arc<dyn Storage>, Some(tiers))
            }
        };
        let metrics = Arc::new(Metrics::new());
        let proxy = Arc::new(
            Proxy::new(config, storage, metrics, access_log, clock.clone())
                .map_err(StartError::Config)?,
        );
        if bus.is_some() {
            proxy.kv().expect_bus();
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let protocols = Arc::new(server::protocols(&config.limits));
        let connections = connection_budget(config.limits.max_connections);
        let serve = server::ServeConfig {
            node: config.node.name.clone(),
            protocols,
            limits: Budget::with_exempt(
                connections,
                config.limits.max_connections_per_client,
                proxy.carriers(),
            ),
            refusals: (connections / 32).clamp(4, 256),
            idle_timeout: config.limits.client_idle_timeout.0,
            send_timeout: config.limits.client_send_timeout.0,
            handshake_timeout: config.limits.client_header_timeout.0,
            metrics: Arc::clone(proxy.metrics()),
            tls: None,
            alt_svc: None,
            max_header_bytes: config.limits.max_header_bytes.0,
        };
        let tls = if listeners.https.is_empty() {
            None
        } else {
            Some(
                tls::ServerTls::new(&config.tls, Arc::clone(proxy.acme_challenges()))
                    .map_err(|e| StartError::Config(e.to_string()))?,
            )
        };
        // Certificates from ACME: those stored are in service before the listeners accept.
        let acme = match &tls {
            Some(tls) if config.tls.acme.enabled() => Some(
                tls::acme::Manager::start(
                    &config.tls.acme,
                    Arc::clone(tls.certs()),
                    Arc::clone(proxy.acme_challenges()),
                    clock.clone(),
                    Arc::clone(proxy.metrics()),
                )
                .map_err(|e| StartError::Config(e.to_string()))?,
            ),
            _ => None,
        };
        let mut tasks = JoinSet::new();

        let mut http_addrs = Vec::new();
        for (listener, addr) in listeners.http {
            let listener = into_tokio(listener, addr)?;
            http_addrs.push(addr);
            let proxy = Arc::clone(&proxy);
            let handler = move |req, conn| Arc::clone(&proxy).handle(req, conn);
            tasks.spawn(server::serve(
                listener,
                serve.clone(),
                handler,
                shutdown_rx.clone(),
            ));
        }
        let mut https_addrs = Vec::new();
        for (listener, addr) in listeners.https {
            let listener = into_tokio(listener, addr)?;
            https_addrs.push(addr);
            let handler = {
                let proxy = Arc::clone(&proxy);
                move |req, conn| Arc::clone(&proxy).handle(req, conn)
            };
            let quic = match (&tls, config.listen.http3) {
                (Some(tls), true) => Some(quic_endpoint(tls, config, addr)?),
                _ => None,
            };
            let serve = server::ServeConfig {
                tls: tls.as_ref().map(|t| t.acceptor().clone()),
                alt_svc: quic.as_ref().and_then(|_| {
                    http::HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", addr.port())).ok()
                }),
                ..serve.clone()
            };
            if let Some(endpoint) = quic {
                let proxy = Arc::clone(&proxy);
                let handler = move |req, conn| Arc::clone(&proxy).handle(req, conn);
                tasks.spawn(server::quic::serve(
                    endpoint,
                    serve.clone(),
                    handler,
                    shutdown_rx.clone(),
                ));
            }
            tasks.spawn(server::serve(listener, serve, handler, shutdown_rx.clone()));
        }
        let reloader = Arc::new(reload::Reloader::new(config.clone(), tls.clone()));
        let admin_addr = match listeners.admin {
            Some((listener, bound)) => {
                let listener = into_tokio(listener, bound)?;
                if !bound.ip().is_loopback() {
                    tracing::warn!(addr = %bound, "the admin listener is reachable beyond loopback: every request needs the admin token");
                }
                let admin = Arc::new(admin::Admin::new(
                    Arc::clone(&proxy),
                    Arc::clone(&reloader),
                    config
                        .admin
                        .token()
                        .map_err(|e| StartError::Config(e.to_string()))?,
                ));
                let handler = move |req, _conn| admin::handle(Arc::clone(&admin), req);
                // Its own budget: a flood on the HTTP listeners leaves room for operators.
                let admin_serve = server::ServeConfig {
                    limits: Budget::new(ADMIN_CONNECTIONS, ADMIN_CONNECTIONS_PER_CLIENT),
                    refusals: 4,
                    ..serve.clone()
                };
                tasks.spawn(server::serve(
                    listener,
                    admin_serve,
                    handler,
                    shutdown_rx.clone(),
                ));
                Some(bound)
            }
            None => None,
        };
        if let Some(acme) = acme {
            tasks.spawn(acme.run(shutdown_rx.clone()));
        }
        tasks.spawn(
            Arc::clone(&proxy.sender.shedder)
                .watch_lag(Arc::clone(proxy.metrics()), shutdown_rx.clone()),
        );
        tasks.spawn(sweep_rate_limits(Arc::clone(&proxy), shutdown_rx.clone()));
        for filter in proxy.filters() {
            if let Some(period) = filter.tick_period() {
                tasks.spawn(compute::tick(filter, period, shutdown_rx.clone()));
            }
        }
        if let Some(bus) = bus {
            let announcement = serde_json::json!({
                "name": config.node.name,
                "pop": config.node.pop,
                "role": config.node.role.as_str(),
                "url": config.node.url,
            });
            tasks.spawn(purge_consumer::run(
                Arc::clone(&proxy),
                bus,
                config.node.name.clone(),
                bytes::Bytes::from(announcement.to_string()),
                tiers,
                shutdown_rx.clone(),
            ));
        }
        for (set, probe) in proxy.tier().probes() {
            tasks.spawn(upstream::health::run(
                proxy.upstream().clone(),
                set,
                probe,
                clock.clone(),
                shutdown_rx.clone(),
            ));
        }
        for service in proxy.services().all() {
            if let Some(probe) = &service.probe {
                tasks.spawn(upstream::health::run(
                    proxy.upstream().clone(),
                    Arc::clone(&service.origins),
                    probe.clone(),
                    clock.clone(),
                    shutdown_rx.clone(),
                ));
            }
        }
        Ok(Self {
            http_addrs,
            https_addrs,
            admin_addr,
            proxy,
            reloader,
            shutdown,
            tasks,
        })
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Reads the certificates of `section` again and puts them in service for new
    /// handshakes. On any error (named by key) the ones in service stay.
    pub fn reload_tls(&self, section: &config::TlsSection) -> Result<(), config::ConfigError> {
        self.reloader.reload_tls(section)
    }

    /// Where [`Node::reload`] (and `POST /v1/reload`) read the configuration again.
    pub fn set_config_source(&self, source: reload::ConfigSource) {
        self.reloader.set_source(source);
    }

    /// Reads the configuration again and applies it (see [`reload`]).
    pub fn reload(&self) -> Result<reload::Reloaded, reload::ReloadError> {
        self.reloader.reload()
    }

    /// Stops accepting, lets open exchanges finish (bounded), and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Connections the admin listener holds at once, and per client address (one address
/// cannot take them all before it has even shown a token).
const ADMIN_CONNECTIONS: usize = 64;
const ADMIN_CONNECTIONS_PER_CLIENT: u32 = 8;

/// How many client connections the node may hold: raises the descriptor limit to its
/// hard maximum, and keeps a quarter of it for upstream connections and files.
/// `configured` (0: as many as that allows) is lowered to fit, with a warning.
fn connection_budget(configured: usize) -> usize {
    let descriptors = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let fits = usize::try_from(descriptors / 4 * 3)
        .unwrap_or(usize::MAX)
        .clamp(64, 1_000_000);
    match configured {
        0 => fits,
        n if n > fits => {
            tracing::warn!(
                configured = n,
                descriptors,
                using = fits,
                "limits.max_connections is more than the descriptor limit allows"
            );
            fits
        }
        n => n,
    }
}

/// A node's sockets, bound and listening, with their addresses.
pub struct Listeners {
    http: Vec<(std::net::TcpListener, SocketAddr)>,
    https: Vec<(std::net::TcpListener, SocketAddr)>,
    admin: Option<(std::net::TcpListener, SocketAddr)>,
}

impl Listeners {
    /// Binds what `config.listen` names (port 0 picks a free port).
    pub fn bind(config: &NodeConfig) -> Result<Self, StartError> {
        let mut listeners = Self::bind_addrs(&config.listen.http, config.listen.admin)?;
        listeners.bind_https(&config.listen.https)?;
        Ok(listeners)
    }

    /// Adds TLS listeners (they need `[tls]` certificates in the node's config).
    pub fn bind_https(&mut self, addrs: &[SocketAddr]) -> Result<(), StartError> {
        for addr in addrs {
            self.https.push(bind(*addr)?);
        }
        Ok(())
    }

    /// Binds HTTP listeners and an optional admin listener.
    pub fn bind_addrs(http: &[SocketAddr], admin: Option<SocketAddr>) -> Result<Self, StartError> {
        Ok(Self {
            http: http.iter().map(|a| bind(*a)).collect::<Result<_, _>>()?,
            https: Vec::new(),
            admin: admin.map(bind).transpose()?,
        })
    }

    /// The bound https addresses.
    pub fn https_addrs(&self) -> Vec<SocketAddr> {
        self.https.iter().map(|(_, a)| *a).collect()
    }

    /// The bound HTTP addresses.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http.iter().map(|(_, a)| *a).collect()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, a)| *a)
    }
}

/// Binds as tokio does (`SO_REUSEADDR`) but with a deeper accept queue than std's 128: a
/// flash crowd's connections wait in the kernel rather than being refused.
fn bind(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), StartError> {
    use socket2::{Domain, Socket, Type};
    let err = |source| StartError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    #[cfg(unix)]
    socket.set_reuse_address(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    let listener = std::net::TcpListener::from(socket);
    let bound = listener.local_addr().map_err(err)?;
    Ok((listener, bound))
}

/// A QUIC endpoint on the UDP port of the same number as an https listener.
fn quic_endpoint(
    tls: &tls::ServerTls,
    config: &NodeConfig,
    addr: SocketAddr,
) -> Result<quinn::Endpoint, StartError> {
    let crypto = tls.quic().map_err(|e| StartError::Config(e.to_string()))?;
    let endpoint = server::quic::endpoint_config(
        crypto,
        config.limits.max_streams_per_connection,
        config.limits.client_idle_timeout.0,
    )
    .map_err(StartError::Config)?;
    quinn::Endpoint::server(endpoint, addr).map_err(|source| StartError::Bind { addr, source })
}

fn into_tokio(
    listener: std::net::TcpListener,
    addr: SocketAddr,
) -> Result<TcpListener, StartError> {
    TcpListener::from_std(listener).map_err(|source| StartError::Bind { addr, source })
}
