//! Request rate limits: a token bucket (GCRA, from `governor`) per client address, token
//! `id` or header value, per service or rule, on this node alone.
//!
//! Not shared across the nodes of a PoP: a client spread over N nodes gets N buckets.
//! Sharing would put a round trip to the bus (or a peer) on every request, and anycast or
//! DNS keeps a client on one node for the length of a flow; an operator who needs a PoP
//! budget divides it by the PoP's nodes. Time is the node clock's (`Clock::mono`).

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::Clock as _;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use strata_wire::clock::Clock;

/// What a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    /// The client's address (IPv6: its /64, as the connection caps count).
    Client,
    /// The `id` of the request's token; the address for requests without one.
    TokenId,
    /// A request header's value (an API key); the address for requests without it.
    Header(http::HeaderName),
}

/// One service's or rule's limit.
pub struct Limit {
    limiter: RateLimiter<u64, DefaultKeyedStateStore<u64>, NodeClock>,
    pub key_by: KeyBy,
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limit")
            .field("key_by", &self.key_by)
            .finish()
    }
}

// === impl Limit ===

impl Limit {
    /// `per_second` requests a second on average, up to `burst` at once.
    pub fn new(per_second: f64, burst: u32, key_by: KeyBy, clock: Clock) -> Result<Self, String> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err("must be a number above 0".into());
        }
        let period = Duration::try_from_secs_f64(1.0 / per_second).map_err(|_| "too low a rate")?;
        let burst = NonZeroU32::new(burst).ok_or("burst must be at least 1")?;
        let quota = Quota::with_period(period)
            .ok_or("too high a rate")?
            .allow_burst(burst);
        Ok(Self {
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), NodeClock(clock)),
            key_by,
        })
    }

    /// Takes one request from the bucket of `key` (see [`Limit::key`]); when it is empty,
    /// how long until it holds one again.
    pub fn check(&self, key: u64) -> Result<(), Duration> {
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// The bucket for a request: by what the limit is keyed on, hashed (an attacker's
    /// strings are not kept).
    pub fn key(&self, client: IpAddr, token_id: Option<&str>, headers: &http::HeaderMap) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match (&self.key_by, token_id) {
            (KeyBy::TokenId, Some(id)) => ("id", id).hash(&mut h),
            (KeyBy::Header(name), _) if headers.contains_key(name) => {
                ("header", headers.get(name).map(|v| v.as_bytes())).hash(&mut h)
            }
            _ => ("client", crate::budget::client_key(client)).hash(&mut h),
        }
        h.finish()
    }

    /// Drops the buckets that are full again (they hold nothing a new one would not).
    /// Run off the request path (see `Node`'s sweeper): it walks every bucket.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Buckets held (for tests and metrics).
    pub fn buckets(&self) -> usize {
        self.limiter.len()
    }
}

/// The node clock, as `governor` reads time.
#[derive(Clone)]
struct NodeClock(Clock);

impl governor::clock::Clock for NodeClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        self.0.mono()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> http::HeaderMap {
        http::HeaderMap::new()
    }

    #[test]
    fn a_burst_then_the_rate_then_a_wait_that_says_how_long() {
        let (clock, manual) = Clock::manual(std::time::SystemTime::UNIX_EPOCH);
        let limit = Limit::new(2.0, 3, KeyBy::Client, clock.clone()).unwrap();
        let a = limit.key("192.0.2.1".parse().unwrap(), None, &headers());
        for _ in 0..3 {
            assert_eq!(limit.check(a), Ok(()));
        }
        let wait = limit.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another client has its own bucket.
        let b = limit.key("192.0.2.2".parse().unwrap(), None, &headers());
        assert_eq!(limit.check(b), Ok(()));
        manual.advance(Duration::from_millis(500));
        assert_eq!(limit.check(a), Ok(()));
        assert!(limit.check(a).is_err());
    }

    #[test]
    fn keys_by_token_id_or_header_and_falls_back_to_the_address() {
        let (clock, _) = Clock::manual(std::time::SystemTime::UNIX_EPOCH);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let by_id = Limit::new(1.0, 1, KeyBy::TokenId, clock.clone()).unwrap();
        assert_ne!(
            by_id.key(ip, Some("a"), &headers()),
            by_id.key(ip, Some("b"), &headers())
        );
        assert_eq!(
            by_id.key(ip, None, &headers()),
            by_id.key(ip, None, &headers())
        );
        let name = http::HeaderName::from_static("x-api-key");
        let by_header = Limit::new(1.0, 1, KeyBy::Header(name.clone()), clock).unwrap();
        let mut h = headers();
        h.insert(name, http::HeaderValue::from_static("k1"));
        assert_ne!(
            by_header.key(ip, None, &h),
            by_header.key(ip, None, &headers())
        );
        // An IPv6 client's /64 is one client.
        let v6a = by_id.key("2001:db8::1".parse().unwrap(), None, &headers());
        let v6b = by_id.key("2001:db8::2".parse().unwrap(), None, &headers());
        assert_eq!(v6a, v6b);
    }

    #[test]
    fn full_buckets_are_swept() {
        let (clock, manual) = Clock::manual(std::time::SystemTime::UNIX_EPOCH);
        let limit = Limit::new(1000.0, 1, KeyBy::Client, clock.clone()).unwrap();
        for i in 0..1000 {
            let _ = limit.check(i);
        }
        assert_eq!(limit.buckets(), 1000);
        manual.advance(Duration::from_secs(10));
        let _ = limit.check(u64::MAX);
        limit.sweep();
        assert!(limit.buckets() <= 1, "{}", limit.buckets());
    }
}
