//! The access phase: the service's or rule's access settings (see [`crate::access`]),
//! after the service is known and before the cache.

use std::time::UNIX_EPOCH;

use strata_wire::clock::Now;

use super::parse::Head;
use crate::access::Asking;
use crate::error::ProxyError;
use crate::proxy::Proxy;
use crate::server::Conn;
use crate::service::Resolved;

impl Proxy {
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
        let client = head.client.ip();
        if self.tier.is_peer(client) && (!self.peers_authenticate || conn.authenticated) {
            return Ok(head);
        }
        let admitted = access
            .check(&Asking {
                client,
                method: &head.method,
                uri: &head.uri,
                headers: &head.headers,
                now: now
                    .wall
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            })
            .map_err(ProxyError::Refused)?;
        if let Some(uri) = admitted.uri {
            head.uri = uri;
        }
        Ok(head)
    }
}
