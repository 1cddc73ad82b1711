//! Request coalescing: concurrent misses for one object make one upstream request.
//!
//! The first request for a key becomes the *leader*: it registers an [`Inflight`] fill and
//! a task (not the client's) fetches from upstream. Later requests for the key *follow*:
//! they wait for the fill's outcome, then read the same chunks as they arrive
//! (read-while-write, see `strata_storage::ChunkedBody`). The fill stays registered until
//! its body is stored, so late arrivals attach to it instead of starting another.
//!
//! Outcomes release followers in every case, so no request waits on a fill that cannot
//! serve it:
//! - an object (new, or refreshed by a 304) whose `Vary` selection matches: served;
//! - an object for another variant: the follower looks again (and may lead its own fill);
//! - not cacheable: the leader takes the response, followers go upstream on their own, and
//!   the key is remembered as *hit-for-pass* for a while so later requests do not queue;
//! - failed: followers try once more (one of them leads), or serve stale within
//!   stale-if-error, or answer 502/504 with the reason.
//!
//! Waiting is bounded by the service's lock timeout; past it a follower goes upstream alone.
//!
//! Every client waiting on a fill holds a [`Waiter`]. When the last one leaves (its stream
//! reset, its connection closed) before the response head, the fill is cancelled: an
//! abandoned URL does not hold an origin connection for anyone (see `Proxy::spawn_fill`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Response};
use hyper::body::Incoming;
use strata_http_cache::CacheKey;
use strata_storage::StoredObject;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};

use crate::error::ProxyError;

/// Facts about the upstream exchange, for every waiter's `Cache-Status` and log.
#[derive(Debug, Clone, Default)]
pub struct FetchMeta {
    pub fwd_status: Option<u16>,
    pub upstream: Option<String>,
    pub stored: bool,
    pub detail: Option<String>,
    /// The response itself cannot be stored (as opposed to this request's directives
    /// forbidding it): later requests skip coalescing for a while (hit-for-pass).
    pub uncacheable: bool,
}

/// An upstream response streamed through uncached, with its origin connection slot.
pub type Passed = (Response<Incoming>, Option<OwnedSemaphorePermit>);

/// How a fill ended (as far as waiters are concerned).
pub enum Outcome {
    /// A cacheable object; its body may still be arriving. `first_headers` are the
    /// upstream fields as received, shown to the leader only (they may include fields the
    /// cache must not keep, such as `private="…"` ones).
    Object {
        object: Arc<StoredObject>,
        first_headers: HeaderMap,
        meta: FetchMeta,
    },
    /// Not cacheable. The leader takes the response (and the origin connection slot it
    /// holds); followers fetch on their own.
    Pass {
        response: Mutex<Option<Passed>>,
        meta: FetchMeta,
    },
    Failed(ProxyError),
}

/// One registered fill.
pub struct Inflight {
    outcome: watch::Sender<Option<Arc<Outcome>>>,
    /// Set when the object is invalidated while this fill runs: its body still reaches
    /// the readers that have it, but it is not stored.
    pub discard: Arc<AtomicBool>,
    /// Clients waiting for the outcome.
    waiters: AtomicUsize,
    left: Notify,
}

impl Inflight {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            outcome: watch::Sender::new(None),
            discard: Arc::new(AtomicBool::new(false)),
            waiters: AtomicUsize::new(0),
            left: Notify::new(),
        })
    }

    fn waiter(self: &Arc<Self>) -> Waiter {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        Waiter(Arc::clone(self))
    }

    /// Clients waiting for the outcome now.
    pub fn waiting(&self) -> usize {
        self.waiters.load(Ordering::Acquire)
    }

    /// Resolves once no client waits any more.
    pub async fn abandoned(&self) {
        loop {
            let left = self.left.notified();
            tokio::pin!(left);
            // Register before looking, so a waiter leaving in between wakes us.
            left.as_mut().enable();
            if self.waiting() == 0 {
                return;
            }
            left.await;
        }
    }

    fn current(&self) -> Option<Arc<Outcome>> {
        self.outcome.borrow().clone()
    }

    pub fn publish(&self, outcome: Outcome) {
        self.outcome.send_replace(Some(Arc::new(outcome)));
    }

    /// Waits for the outcome, up to `timeout`. `None` on timeout.
    pub async fn wait(&self, timeout: Duration) -> Option<Arc<Outcome>> {
        let mut rx = self.outcome.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|o| o.is_some())).await;
        match waited {
            Ok(Ok(o)) => o.clone(),
            // The sender lives in `self`, so it cannot close while we borrow it.
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

/// A client waiting on a fill; the fill knows how many there are.
pub struct Waiter(Arc<Inflight>);

impl std::ops::Deref for Waiter {
    type Target = Arc<Inflight>;
    fn deref(&self) -> &Arc<Inflight> {
        &self.0
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.0.waiters.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.left.notify_waiters();
        }
    }
}

/// What joining a key's fills gave.
pub enum Join {
    /// An object became usable in the cache meanwhile.
    Found(Arc<StoredObject>),
    /// Lead a new fill: start it, then wait on it like everyone else.
    Leader(Waiter),
    /// Wait on an existing fill.
    Follower(Waiter),
}

/// The table of fills in progress, by primary key.
#[derive(Default)]
pub struct Coalescer {
    fills: Mutex<HashMap<CacheKey, Vec<Arc<Inflight>>>>,
}

// === impl Coalescer ===

impl Coalescer {
    /// Joins a fill for `key` that can serve this request, or registers a new one.
    /// `serves` says whether a filled object may answer the request (variant, freshness);
    /// `usable` looks in the cache again under the table lock: a fill stores its object
    /// before it leaves the table, so a request never misses both.
    pub fn join(
        &self,
        key: &CacheKey,
        serves: impl Fn(&StoredObject) -> bool,
        usable: impl FnOnce() -> Option<Arc<StoredObject>>,
    ) -> Join {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = fills.get(key) {
            for inflight in list {
                match inflight.current().as_deref() {
                    // Pending: its variant is not known yet; wait and see.
                    None => return Join::Follower(inflight.waiter()),
                    Some(Outcome::Object { object, .. }) if serves(object) => {
                        return Join::Follower(inflight.waiter())
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(object) = usable() {
            return Join::Found(object);
        }
        let inflight = Inflight::new();
        fills
            .entry(key.clone())
            .or_default()
            .push(Arc::clone(&inflight));
        Join::Leader(inflight.waiter())
    }

    /// The object under `key` changed: fills in progress must not store what they fetched,
    /// and new requests must not join them.
    pub fn invalidate(&self, key: &CacheKey) {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = fills.remove(key) {
            for inflight in list {
                inflight.discard.store(true, Ordering::Release);
            }
        }
    }

    /// A purge landed: fills whose object it covers must not store it, and new requests
    /// must not join them. Fills still waiting for their response head are left alone:
    /// their object will be stored after the purge, which then does not cover it.
    pub fn invalidate_covered(&self, purge: &strata_storage::Purge) {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        for (key, list) in fills.iter_mut() {
            list.retain(|inflight| {
                let covered = matches!(
                    inflight.current().as_deref(),
                    Some(Outcome::Object { object, .. }) if purge.covers(key, object)
                );
                if covered {
                    inflight.discard.store(true, Ordering::Release);
                }
                !covered
            });
        }
        fills.retain(|_, list| !list.is_empty());
    }

    /// Unregisters a fill (after its object is stored, or it ended otherwise).
    pub fn leave(&self, key: &CacheKey, inflight: &Arc<Inflight>) {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = fills.get_mut(key) {
            list.retain(|i| !Arc::ptr_eq(i, inflight));
            if list.is_empty() {
                fills.remove(key);
            }
        }
    }

    /// Fills in progress (for metrics and tests).
    pub fn in_progress(&self) -> usize {
        self.fills
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }
}

/// Makes sure a fill's waiters are released and the table entry removed even if the fill
/// task ends early (panic, cancelled runtime).
pub struct FillGuard<'a> {
    pub coalescer: &'a Coalescer,
    pub key: &'a CacheKey,
    pub inflight: &'a Arc<Inflight>,
}

impl Drop for FillGuard<'_> {
    fn drop(&mut self) {
        if self.inflight.current().is_none() {
            self.inflight.publish(Outcome::Failed(ProxyError::Upstream(
                crate::upstream::UpstreamError::Protocol,
            )));
        }
        self.coalescer.leave(self.key, self.inflight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_http_cache::KeyRules;

    fn key() -> CacheKey {
        CacheKey::new("http", "h", "/x", None, &KeyRules::default())
    }

    #[tokio::test]
    async fn first_leads_and_others_follow_until_it_leaves() {
        let c = Coalescer::default();
        let Join::Leader(lead) = c.join(&key(), |_| true, || None) else {
            panic!("leader")
        };
        let Join::Follower(f) = c.join(&key(), |_| true, || None) else {
            panic!("follower")
        };
        assert!(Arc::ptr_eq(&lead, &f));
        lead.publish(Outcome::Failed(ProxyError::OnlyIfCached));
        assert!(matches!(
            f.wait(Duration::from_secs(1)).await.as_deref(),
            Some(Outcome::Failed(_))
        ));
        c.leave(&key(), &lead);
        assert_eq!(c.in_progress(), 0);
        assert!(matches!(c.join(&key(), |_| true, || None), Join::Leader(_)));
    }

    #[tokio::test]
    async fn wait_is_bounded() {
        let c = Coalescer::default();
        let Join::Leader(lead) = c.join(&key(), |_| true, || None) else {
            panic!()
        };
        assert!(lead.wait(Duration::from_millis(10)).await.is_none());
    }

    #[test]
    fn invalidation_marks_fills_and_clears_the_table() {
        let c = Coalescer::default();
        let Join::Leader(lead) = c.join(&key(), |_| true, || None) else {
            panic!()
        };
        c.invalidate(&key());
        assert!(lead.discard.load(Ordering::Acquire));
        assert!(matches!(c.join(&key(), |_| true, || None), Join::Leader(_)));
    }

    #[test]
    fn guard_releases_waiters_of_an_abandoned_fill() {
        let c = Coalescer::default();
        let k = key();
        let Join::Leader(lead) = c.join(&k, |_| true, || None) else {
            panic!()
        };
        drop(FillGuard {
            coalescer: &c,
            key: &k,
            inflight: &lead,
        });
        assert!(matches!(
            lead.current().as_deref(),
            Some(Outcome::Failed(_))
        ));
        assert_eq!(c.in_progress(), 0);
    }
}
