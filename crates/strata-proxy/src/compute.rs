//! Edge compute filter chains: the filters of a service or rule loaded from their
//! modules into the node's runtime (`strata_compute`). Where they run in the request
//! path is `request/filter.rs`; what they may do is docs/compute.md.

use std::sync::Arc;

use strata_compute::{Filter, Runtime, Spec};

use crate::config::{ComputeSection, ConfigError, FilterConfig, NodeConfig};
use crate::kv::EdgeKv;

/// One filter of a chain, and what to do when it faults.
pub struct Link {
    pub filter: Arc<Filter>,
    pub fail_open: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("filter", &self.filter.name())
            .field("sha256", &self.filter.hash())
            .field("fail_open", &self.fail_open)
            .finish()
    }
}

/// A chain: requests through it in order, responses in reverse.
pub type Chain = Arc<[Arc<Link>]>;

/// The node's compute runtime and the shared data its filters see, made only when some
/// service has filters (the runtime reserves its instance slots' address space).
pub struct Compute {
    runtime: Arc<Runtime>,
    kv: Arc<EdgeKv>,
}

impl Compute {
    /// For a configuration, when any service or rule has filters.
    pub fn for_config(
        config: &NodeConfig,
        kv: &Arc<EdgeKv>,
    ) -> Result<Option<Compute>, ConfigError> {
        let any = config.services.iter().any(|s| {
            !s.filters.is_empty()
                || s.rules
                    .iter()
                    .any(|r| r.filters.as_ref().is_some_and(|f| !f.is_empty()))
        });
        if !any {
            return Ok(None);
        }
        Compute::new(&config.compute, kv).map(Some)
    }

    pub fn new(section: &ComputeSection, kv: &Arc<EdgeKv>) -> Result<Compute, ConfigError> {
        let runtime = Runtime::new(section.limits()).map_err(|e| ConfigError::new("compute", e))?;
        Ok(Compute {
            runtime: Arc::new(runtime),
            kv: Arc::clone(kv),
        })
    }

    /// Loads a chain's modules; `at` names the chain's key (`service[0].filter`); the
    /// filters' shared data is the service's namespace of Edge KV unless one says another.
    pub fn chain(
        &self,
        filters: &[FilterConfig],
        service: &str,
        at: &str,
    ) -> Result<Chain, ConfigError> {
        let mut chain = Vec::with_capacity(filters.len());
        for (f, config) in filters.iter().enumerate() {
            let key = || format!("{at}[{f}].module");
            let shown = config.module.display();
            let wasm = std::fs::read(&config.module)
                .map_err(|e| ConfigError::new(key(), format!("{shown}: {e}")))?;
            let filter = Filter::load(
                &self.runtime,
                Spec {
                    name: &config.name,
                    wasm: &wasm,
                    sha256: config.sha256.as_deref(),
                    config: config.config.as_bytes(),
                    shared: self
                        .kv
                        .namespace(config.kv_namespace.as_deref().unwrap_or(service)),
                },
            )
            .map_err(|e| ConfigError::new(key(), format!("{shown}: {e}")))?;
            chain.push(Arc::new(Link {
                filter: Arc::new(filter),
                fail_open: config.fail_open,
            }));
        }
        Ok(chain.into())
    }
}

/// Loads every chain of a configuration: what `check-config` does for filters (a module
/// that is not wasm, imports what the host lacks, or refuses its configuration is an
/// error naming its key).
pub fn check(config: &NodeConfig) -> Result<(), ConfigError> {
    let Some(compute) = Compute::for_config(config, &Arc::default())? else {
        return Ok(());
    };
    for (i, service) in config.services.iter().enumerate() {
        let name = &service.name;
        compute.chain(&service.filters, name, &format!("service[{i}].filter"))?;
        for (r, rule) in service.rules.iter().enumerate() {
            if let Some(filters) = &rule.filters {
                compute.chain(filters, name, &format!("service[{i}].rule[{r}].filter"))?;
            }
        }
    }
    Ok(())
}

/// Delivers `proxy_on_tick` to a filter's warm instances every `period` (what it asked for
/// with `proxy_set_tick_period_milliseconds` when it started), until shutdown. On the
/// blocking pool: a tick may use a whole CPU budget.
pub async fn tick(
    filter: Arc<Filter>,
    period: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // A period of a millisecond would be a busy loop for nothing a filter needs.
    let period = period.max(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        let f = Arc::clone(&filter);
        if tokio::task::spawn_blocking(move || f.tick()).await.is_err() {
            return;
        }
    }
}
