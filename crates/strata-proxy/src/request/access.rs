//! The access phase: the service's or rule's access settings (see [`crate::access`]),
//! after the service is known and before the cache.

use std::net::IpAddr;
use std::time::UNIX_EPOCH;

use strata_wire::clock::Now;

use super::parse::Head;
use crate::access::Asking;
use crate::error::ProxyError;
use crate::forward::X_FORWARDED_FOR;
use crate::proxy::Proxy;
use crate::server::Conn;
use crate::service::Resolved;

impl Proxy {
    /// The client the checks are about: the connection's peer, or behind a trusted proxy
    /// (a load balancer in `forwarding.trusted_proxies`) the address it forwarded for: the
    /// rightmost `X-Forwarded-For` entry that is not itself trusted. An entry that is not
    /// an address ends the walk (the last trusted hop answers for it).
    fn asking_client(&self, head: &Head) -> IpAddr {
        let mut client = head.client.ip();
        if !self.forwarder.trusts(client) {
            return client;
        }
        let hops = head
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .rev()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.rsplit(','))
            .map(str::trim);
        for hop in hops {
            // As a dual-stack balancer may write it (`::ffff:192.0.2.9`), or with a port.
            let Some(ip) = hop
                .parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
                .map(|ip| ip.to_canonical())
            else {
                break;
            };
            client = ip;
            if !self.forwarder.trusts(ip) {
                break;
            }
        }
        client
    }

    /// Checks `head` against `resolved.access`; the request to go on with, without its
    /// credentials. A ring peer's request was checked by the node its client reached,
    /// which removed the credentials: it is not checked again.
    pub(super) fn access(
        &self,
        resolved: &Resolved,
        mut head: Head,
        conn: &Conn,
        now: Now,
    ) -> Result<Head, ProxyError> {
        let Some(access) = &resolved.access else {
            return Ok(head);
        };
        let peer = head.client.ip();
        if self.tier.is_peer(peer) && (!self.peers_authenticate || conn.authenticated) {
            return Ok(head);
        }
        let client = self.asking_client(&head);
        let country = access.wants_country().then(|| {
            self.countries
                .as_ref()
                .map_or(crate::config::UNKNOWN_COUNTRY, |c| c.of(client))
        });
        let admitted = access
            .check(&Asking {
                client,
                country,
                method: &head.method,
                uri: &head.uri,
                headers: &head.headers,
                now: now
                    .wall
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            })
            .map_err(|refusal| {
                self.metrics().access_refused(refusal.detail());
                ProxyError::Refused(refusal)
            })?;
        if let Some(uri) = admitted.uri {
            head.uri = uri;
        }
        Ok(head)
    }
}
