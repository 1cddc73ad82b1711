//! Strata's data plane: one node's listeners, request path, cache and upstreams.
//!
//! [`Node::start`] binds everything a [`config::NodeConfig`] asks for and returns a handle
//! with the bound addresses (tests bind port 0) and a graceful shutdown.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod coalesce;
pub mod config;
pub mod error;
pub mod fill;
pub mod forward;
pub mod metrics;
pub mod proxy;
pub mod purge;
pub mod purge_consumer;
pub mod respond;
pub mod server;
pub mod service;
pub mod tier;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use strata_storage::MemoryStorage;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::access_log::AccessLog;
use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::proxy::Proxy;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot join the bus: {0}")]
    Bus(strata_bus::BusError),
}

/// A running node.
pub struct Node {
    pub http_addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    proxy: Arc<Proxy>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Node {
    /// Starts a node; joins the NATS bus when `bus.nats` is configured.
    pub async fn start(config: &NodeConfig) -> Result<Self, StartError> {
        let bus = match &config.bus.nats {
            Some(url) => Some(strata_bus::Bus::nats(url).await.map_err(StartError::Bus)?),
            None => None,
        };
        Self::start_with_bus(config, bus).await
    }

    /// Starts a node on a bus it is given (the embedded bus of a single-process setup).
    pub async fn start_with_bus(
        config: &NodeConfig,
        bus: Option<strata_bus::Bus>,
    ) -> Result<Self, StartError> {
        config
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))?;
        let access_log = AccessLog::start(&config.log.target())
            .await
            .map_err(StartError::AccessLog)?;
        let storage = Arc::new(MemoryStorage::new(config.cache.size.0));
        let metrics = Arc::new(Metrics::new());
        let proxy =
            Arc::new(Proxy::new(config, storage, metrics, access_log).map_err(StartError::Config)?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let builder = Arc::new(server::connection_builder(&config.limits));
        let mut tasks = JoinSet::new();

        let mut http_addrs = Vec::new();
        for addr in &config.listen.http {
            let listener = bind(*addr).await?;
            http_addrs.push(listener.local_addr().map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?);
            let proxy = Arc::clone(&proxy);
            let handler = move |req, peer| Arc::clone(&proxy).handle(req, peer);
            tasks.spawn(server::serve(
                listener,
                Arc::clone(&builder),
                handler,
                shutdown_rx.clone(),
            ));
        }
        let admin_addr = match config.listen.admin {
            Some(addr) => {
                let listener = bind(addr).await?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?;
                let proxy = Arc::clone(&proxy);
                let handler = move |req, _peer| admin::handle(Arc::clone(&proxy), req);
                tasks.spawn(server::serve(
                    listener,
                    Arc::clone(&builder),
                    handler,
                    shutdown_rx.clone(),
                ));
                Some(bound)
            }
            None => None,
        };
        if let Some(bus) = bus {
            tasks.spawn(purge_consumer::run(
                Arc::clone(&proxy),
                bus,
                config.node.name.clone(),
                shutdown_rx.clone(),
            ));
        }
        for (set, probe) in proxy.tier().probes() {
            tasks.spawn(upstream::health::run(
                proxy.upstream().clone(),
                set,
                probe,
                shutdown_rx.clone(),
            ));
        }
        for service in proxy.services().all() {
            if let Some(probe) = &service.probe {
                tasks.spawn(upstream::health::run(
                    proxy.upstream().clone(),
                    Arc::clone(&service.origins),
                    probe.clone(),
                    shutdown_rx.clone(),
                ));
            }
        }
        Ok(Self {
            http_addrs,
            admin_addr,
            proxy,
            shutdown,
            tasks,
        })
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Stops accepting, lets open exchanges finish (bounded), and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}
