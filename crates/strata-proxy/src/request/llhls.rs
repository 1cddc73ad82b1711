//! LL-HLS delivery directives at the edge (RFC 8216bis §6.2.5): a media playlist request
//! with `_HLS_msn` / `_HLS_part` / `_HLS_skip` is keyed on those alone (other parameters
//! leave the key, and the request sent upstream), so every player blocked on the same
//! part shares one request through the coalescer; malformed directives, `_HLS_part`
//! without `_HLS_msn`, and an `_HLS_msn` more than two segments past the last filled
//! playlist's (plus one per target duration since it was filled) are answered 400; a blocking reload that takes longer than a player waits is
//! answered 503 (never an unchanged playlist).

use std::time::Duration;

use strata_http_cache::key::{CacheKey, KeyRules};
use strata_media::hls;

use super::parse::Head;
use crate::error::ProxyError;
use crate::proxy::Proxy;
use crate::service::{Resolved, Service};

/// How long a blocking reload is held when the node has not stored its playlist yet:
/// less than hls.js waits for any playlist with a target duration of 4 s or more.
const DEFAULT_HOLD: Duration = Duration::from_millis(2500);

impl Proxy {
    /// For a media playlist request: its directives checked, the key narrowed to them.
    /// `Some(hold)`: a blocking reload, answered 503 if not done by then.
    pub(super) fn delivery_directives(
        &self,
        service: &Service,
        resolved: &mut Resolved,
        head: &Head,
    ) -> Result<Option<Duration>, ProxyError> {
        let Some(directives) = hls::directives(head.uri.query()).map_err(ProxyError::BadRequest)?
        else {
            return Ok(None);
        };
        resolved.key_rules.only_query = hls::DIRECTIVES;
        let Some(msn) = directives.msn else {
            return Ok(None);
        };
        let path_key = CacheKey::new(
            head.scheme(),
            service.key_host(head.host()),
            head.uri.path(),
            None,
            &KeyRules::default(),
        );
        let known = self.media.playlist(path_key.as_str());
        if let Some(highest) = known.and_then(|p| p.highest_msn(self.clock.mono())) {
            if msn > highest {
                return Err(ProxyError::BadRequest(
                    "_HLS_msn is more than two segments past the playlist's last",
                ));
            }
        }
        Ok(Some(known.map_or(DEFAULT_HOLD, |p| p.hold)))
    }
}
