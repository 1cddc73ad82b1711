//! The experiments phase: each request of a service with experiments gets a variant of
//! each (see `crate::experiment`), after access and before the filters and the cache key.
//! The variant replaces whatever `x-experiment-<name>` the client sent, goes to the origin
//! in that header, and into the cache key (`<key>#exp=<name>=<variant>,…`): the variants'
//! answers are stored apart, and a URL's purge takes them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::header::SET_COOKIE;
use http::{HeaderValue, Response};

use super::{Ctx, Head};
use crate::body::ProxyBody;
use crate::experiment::{Experiment, Source};
use crate::proxy::Proxy;
use crate::service::Service;

// === impl Proxy ===

impl Proxy {
    /// Assigns the request's variants; the key's variant tag, if the service has any.
    pub(super) fn experiments(
        &self,
        service: &Service,
        head: &mut Head,
        ctx: &mut Ctx,
    ) -> Option<String> {
        if service.experiments.is_empty() {
            return None;
        }
        let trusted = self.forwarder.trusts(head.client.ip());
        let mut tag = String::new();
        for experiment in &service.experiments {
            let a = experiment.assign(&head.headers, trusted, fresh_random());
            let name = experiment.variant(a.variant);
            if let Ok(v) = HeaderValue::from_str(name) {
                head.headers.insert(experiment.header.clone(), v);
            }
            if a.source == Source::Random {
                ctx.set_cookies.extend(experiment.set_cookie(a.variant));
            }
            if !tag.is_empty() {
                tag.push(',');
            }
            tag.push_str(&experiment.name);
            tag.push('=');
            tag.push_str(name);
            ctx.variants.push((Arc::clone(experiment), a.variant));
        }
        Some(tag)
    }

    /// The answer's cookies for new clients, and its count per variant.
    pub(super) fn experiment_results(&self, resp: &mut Response<ProxyBody>, ctx: &mut Ctx) {
        for cookie in ctx.set_cookies.drain(..) {
            resp.headers_mut().append(SET_COOKIE, cookie);
        }
        let class = match resp.status().as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        for (experiment, variant) in &ctx.variants {
            self.metrics
                .experiment(&experiment.name, experiment.variant(*variant), class);
        }
    }
}

/// A number to place a new client by: not secret (a client may pick its variant anyway,
/// by cookie), only evenly spread.
fn fresh_random() -> u64 {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    seed[8..].copy_from_slice(&nanos.to_le_bytes());
    xxhash_rust::xxh64::xxh64(&seed, 0x4142)
}

/// Kept beside the experiment for the metrics.
pub(super) type Assigned = (Arc<Experiment>, usize);
