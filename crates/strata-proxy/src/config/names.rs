//! The shapes of names the configuration holds: node tokens, host patterns, networks and
//! query-parameter patterns. Each check says what it expected.

use super::ConfigError;

/// A node or PoP name: letters, digits, `-`, `_`, `.`.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A host name, `*.domain`, or `*`.
pub(crate) fn valid_host_pattern(h: &str) -> bool {
    if h == "*" {
        return true;
    }
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An address (`127.0.0.1`) or a network (`10.0.0.0/8`).
pub(crate) fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{s}' is not an address or a network"))
}

/// A query parameter name, or a `prefix*`, at key path `path`.
pub(super) fn check_strip_pattern(
    pattern: &str,
    path: impl Fn() -> String,
) -> Result<(), ConfigError> {
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    if name.is_empty() || name.contains(['*', '&', '=', ' ']) {
        return Err(ConfigError::new(
            path(),
            format!("'{pattern}' is not a parameter name or 'prefix*'"),
        ));
    }
    Ok(())
}
