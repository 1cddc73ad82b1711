//! A resource budget with a cap for the node and one per client address: client
//! connections (see `server`), fills that run on with no client waiting (see `fill`).
//!
//! Per address means per IPv4 address and per IPv6 /64 (one subscriber's prefix: a client
//! with a /64 has 2^64 addresses to spread over). Trusted proxies and ring peers carry many
//! clients' requests from one address: only the node's cap applies to them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which cap refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The node's.
    Node,
    /// This client address's.
    Client,
}

/// A budget: `max` in all, `per_client_max` per client address.
pub struct Budget {
    max: usize,
    global: Arc<Semaphore>,
    per_client_max: u32,
    per_client: Mutex<HashMap<IpAddr, u32>>,
    /// Addresses the per-client cap does not apply to.
    exempt: Vec<ipnet::IpNet>,
}

/// One unit of the budget; dropping it gives its place back.
pub struct Permit {
    _global: OwnedSemaphorePermit,
    limits: Arc<Budget>,
    /// The address counted against its cap (`None`: exempt).
    client: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(client) = self.client else {
            return;
        };
        let mut map = self.limits.clients();
        if let Some(n) = map.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&client);
            }
        }
    }
}

// === impl Budget ===

impl Budget {
    pub fn new(max: usize, per_client_max: u32) -> Arc<Self> {
        Self::with_exempt(max, per_client_max, Vec::new())
    }

    /// A budget whose per-client cap does not apply to `exempt`.
    pub fn with_exempt(max: usize, per_client_max: u32, exempt: Vec<ipnet::IpNet>) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            max,
            global: Arc::new(Semaphore::new(max)),
            per_client_max: per_client_max.max(1),
            per_client: Mutex::default(),
            exempt,
        })
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.per_client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One unit for the client at `ip`, or which cap refused.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Exhausted> {
        let client = client_key(ip);
        let global = Arc::clone(&self.global)
            .try_acquire_owned()
            .map_err(|_| Exhausted::Node)?;
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return Ok(Permit {
                _global: global,
                limits: Arc::clone(self),
                client: None,
            });
        }
        let mut map = self.clients();
        let n = map.entry(client).or_insert(0);
        if *n >= self.per_client_max {
            return Err(Exhausted::Client);
        }
        *n += 1;
        drop(map);
        Ok(Permit {
            _global: global,
            limits: Arc::clone(self),
            client: Some(client),
        })
    }

    /// Units held now.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.max - self.global.available_permits()
    }

    /// Waits until every unit is back.
    pub async fn drained(&self) {
        let _ = self.global.acquire_many(self.max as u32).await;
    }
}

/// The address a client is counted under: IPv4 as is (also when mapped into IPv6), IPv6
/// by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_cap_then_global_cap_and_places_come_back() {
        let limits = Budget::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).err(), Some(Exhausted::Client));
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).err(), Some(Exhausted::Node));
        assert_eq!(limits.used(), 3);
        drop(a1);
        assert_eq!(limits.used(), 2);
        assert!(limits.admit(a).is_ok());
    }

    #[test]
    fn exempt_addresses_meet_only_the_node_cap() {
        let limits = Budget::with_exempt(3, 1, vec!["10.0.0.0/8".parse().unwrap()]);
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| limits.admit(proxy).unwrap()).collect();
        assert_eq!(limits.admit(proxy).err(), Some(Exhausted::Node));
        drop(held);
        let other: IpAddr = "192.0.2.9".parse().unwrap();
        let _one = limits.admit(other).unwrap();
        assert_eq!(limits.admit(other).err(), Some(Exhausted::Client));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let k = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
    }
}
