//! The request's authority (`Host`, `:authority`, or an absolute-form target), validated and
//! put in one canonical form.
//!
//! The authority decides which service answers, which cache key is used and which `Host`
//! the origin sees, so it is checked once, here, and only the canonical form goes on. What a
//! client may send is RFC 9110 §7.2 / RFC 3986 §3.2.2:
//!
//! ```text
//! Host       = uri-host [ ":" port ]            ; no userinfo (RFC 9110 §4.2.4)
//! uri-host   = IP-literal / IPv4address / reg-name
//! IP-literal = "[" IPv6address "]"               ; IPvFuture is refused: nothing routes it
//! reg-name   = *( unreserved / pct-encoded / sub-delims )
//! port       = *DIGIT
//! ```
//!
//! Anything else (`shop.test/pois`, `user@evil.com`, `a b`, `a:99999`) is an error, which
//! the proxy answers with 400. Two stricter rules than the grammar, because no DNS name
//! looks like this and every such request seen is an attack: empty labels (`..`, `.a`,
//! `a..b`) and names longer than 253 bytes are refused.
//!
//! Canonical form (RFC 3986 §6.2.2): letters lower-cased; percent-encoded unreserved
//! characters decoded and other percent-encodings upper-cased; one trailing dot removed
//! (`example.com.` is `example.com`); IPv6 in RFC 5952 form; the port as a plain number,
//! dropped when it is the scheme's default or empty.

use std::fmt;
use std::net::Ipv6Addr;

/// Longest host name accepted (a DNS name's limit, RFC 1035 §2.3.4, without the root dot).
pub const MAX_HOST_LEN: usize = 253;

/// Why an authority was refused. The text is what `Cache-Status` `detail` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityError {
    Empty,
    UserInfo,
    InvalidCharacter,
    EmptyLabel,
    TooLong,
    BadIpLiteral,
    BadPort,
}

impl AuthorityError {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityError::Empty => "empty host",
            AuthorityError::UserInfo => "userinfo in host",
            AuthorityError::InvalidCharacter => "invalid character in host",
            AuthorityError::EmptyLabel => "empty label in host",
            AuthorityError::TooLong => "host too long",
            AuthorityError::BadIpLiteral => "invalid IP literal",
            AuthorityError::BadPort => "invalid port",
        }
    }
}

impl fmt::Display for AuthorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for AuthorityError {}

/// A validated authority in canonical form: `host` or `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authority {
    text: String,
    host_len: usize,
    port: Option<u16>,
}

// === impl Authority ===

impl Authority {
    /// Parses and canonicalises `input`; `default_port` (80 for http, 443 for https) is
    /// left out of the canonical form.
    pub fn parse(input: &[u8], default_port: u16) -> Result<Self, AuthorityError> {
        if input.is_empty() {
            return Err(AuthorityError::Empty);
        }
        if input.contains(&b'@') {
            return Err(AuthorityError::UserInfo);
        }
        let (host, port) = split_port(input)?;
        let mut text = if host.first() == Some(&b'[') {
            ip_literal(host)?
        } else {
            reg_name(host)?
        };
        let host_len = text.len();
        let port = port.filter(|p| *p != default_port);
        if let Some(p) = port {
            text.push(':');
            text.push_str(&p.to_string());
        }
        Ok(Self {
            text,
            host_len,
            port,
        })
    }

    /// `host[:port]`, canonical.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host alone (IPv6 with its brackets).
    pub fn host(&self) -> &str {
        &self.text[..self.host_len]
    }

    /// The port, when it is not the scheme's default.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits `host[:port]`. An empty port (`host:`) is no port (RFC 3986 §6.2.3).
fn split_port(input: &[u8]) -> Result<(&[u8], Option<u16>), AuthorityError> {
    let colon = if input.first() == Some(&b'[') {
        let close = input
            .iter()
            .position(|&b| b == b']')
            .ok_or(AuthorityError::BadIpLiteral)?;
        match input.get(close + 1) {
            None => None,
            Some(b':') => Some(close + 1),
            Some(_) => return Err(AuthorityError::BadIpLiteral),
        }
    } else {
        input.iter().position(|&b| b == b':')
    };
    let Some(colon) = colon else {
        return Ok((input, None));
    };
    let (host, port) = (&input[..colon], &input[colon + 1..]);
    if port.is_empty() {
        return Ok((host, None));
    }
    // At most 5 digits, so leading zeros cannot hide an overflow (`000080` is refused).
    if port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return Err(AuthorityError::BadPort);
    }
    let n = port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let n = u16::try_from(n).map_err(|_| AuthorityError::BadPort)?;
    Ok((host, Some(n)))
}

fn ip_literal(host: &[u8]) -> Result<String, AuthorityError> {
    let inner = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .ok_or(AuthorityError::BadIpLiteral)?;
    let inner = std::str::from_utf8(inner).map_err(|_| AuthorityError::BadIpLiteral)?;
    // IPvFuture (`[v1.x]`) and zone identifiers (`%25eth0`) do not parse: refused.
    let addr: Ipv6Addr = inner.parse().map_err(|_| AuthorityError::BadIpLiteral)?;
    Ok(format!("[{addr}]"))
}

fn reg_name(host: &[u8]) -> Result<String, AuthorityError> {
    let host = match host {
        [rest @ .., b'.'] if !rest.is_empty() => rest,
        _ => host,
    };
    if host.is_empty() {
        return Err(AuthorityError::Empty);
    }
    let mut out = String::with_capacity(host.len());
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        match b {
            b'%' => {
                let hex = host
                    .get(i + 1..i + 3)
                    .ok_or(AuthorityError::InvalidCharacter)?;
                let decoded = hex_pair(hex).ok_or(AuthorityError::InvalidCharacter)?;
                if is_unreserved(decoded) {
                    out.push(char::from(decoded.to_ascii_lowercase()));
                } else {
                    out.push('%');
                    out.push(char::from(hex[0].to_ascii_uppercase()));
                    out.push(char::from(hex[1].to_ascii_uppercase()));
                }
                i += 3;
                continue;
            }
            _ if is_unreserved(b) || is_sub_delim(b) => {
                out.push(char::from(b.to_ascii_lowercase()))
            }
            _ => return Err(AuthorityError::InvalidCharacter),
        }
        i += 1;
    }
    if out.split('.').any(str::is_empty) {
        return Err(AuthorityError::EmptyLabel);
    }
    if out.len() > MAX_HOST_LEN {
        return Err(AuthorityError::TooLong);
    }
    Ok(out)
}

fn hex_pair(hex: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(hex[0])? * 16 + digit(hex[1])?) as u8)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> Result<String, AuthorityError> {
        Authority::parse(s.as_bytes(), 80).map(|a| a.as_str().to_string())
    }

    #[test]
    fn rfc3986_6_2_2_1_case_is_normalised() {
        assert_eq!(canon("Shop.EXAMPLE.com").unwrap(), "shop.example.com");
    }

    #[test]
    fn rfc3986_6_2_3_default_and_empty_ports_are_dropped() {
        assert_eq!(canon("a.test:80").unwrap(), "a.test");
        assert_eq!(canon("a.test:").unwrap(), "a.test");
        assert_eq!(canon("a.test:8080").unwrap(), "a.test:8080");
        assert_eq!(canon("a.test:08080").unwrap(), "a.test:8080");
        assert_eq!(
            Authority::parse(b"a.test:443", 443).unwrap().as_str(),
            "a.test"
        );
    }

    #[test]
    fn rfc3986_3_2_3_port_must_be_digits_within_range() {
        assert_eq!(canon("a:99999"), Err(AuthorityError::BadPort));
        assert_eq!(canon("a:65536"), Err(AuthorityError::BadPort));
        assert_eq!(canon("a:1x"), Err(AuthorityError::BadPort));
        assert_eq!(canon("a:000080"), Err(AuthorityError::BadPort));
        assert_eq!(canon("a:1:2"), Err(AuthorityError::BadPort));
        assert_eq!(canon("a:65535").unwrap(), "a:65535");
    }

    #[test]
    fn rfc9110_4_2_4_userinfo_is_refused() {
        assert_eq!(canon("user@evil.com"), Err(AuthorityError::UserInfo));
        assert_eq!(canon("user:pw@evil.com:80"), Err(AuthorityError::UserInfo));
    }

    #[test]
    fn rfc3986_3_2_2_path_space_and_controls_are_not_reg_name() {
        for bad in [
            "shop.test/pois",
            "../../etc",
            "a b",
            "a\tb",
            "a\\b",
            "a?b",
            "a#b",
            "a\"b",
            "a<b",
            "é.test",
            "a%2",
            "a%zz",
        ] {
            assert!(canon(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rfc3986_3_2_2_sub_delims_and_unreserved_are_reg_name() {
        assert_eq!(canon("a-b_c~d.test").unwrap(), "a-b_c~d.test");
        assert_eq!(canon("a!$&'()*+,;=b").unwrap(), "a!$&'()*+,;=b");
    }

    #[test]
    fn rfc3986_6_2_2_2_percent_encoding_is_normalised() {
        assert_eq!(canon("%41%62c.test").unwrap(), "abc.test");
        assert_eq!(canon("a%2fb").unwrap(), "a%2Fb");
        assert_eq!(canon("a%2Fb").unwrap(), "a%2Fb");
    }

    #[test]
    fn empty_labels_and_overlong_names_are_refused() {
        assert_eq!(canon(""), Err(AuthorityError::Empty));
        assert_eq!(canon(":80"), Err(AuthorityError::Empty));
        assert_eq!(canon("."), Err(AuthorityError::EmptyLabel));
        assert_eq!(canon(".."), Err(AuthorityError::EmptyLabel));
        assert_eq!(canon(".a"), Err(AuthorityError::EmptyLabel));
        assert_eq!(canon("a..b"), Err(AuthorityError::EmptyLabel));
        let long = format!("{}.test", "a".repeat(250));
        assert_eq!(canon(&long), Err(AuthorityError::TooLong));
    }

    #[test]
    fn one_trailing_dot_is_the_same_name() {
        assert_eq!(canon("Example.com.").unwrap(), "example.com");
        assert_eq!(canon("example.com.:8080").unwrap(), "example.com:8080");
    }

    #[test]
    fn rfc3986_3_2_2_ipv6_literals_are_canonical_and_ipvfuture_is_refused() {
        assert_eq!(canon("[::1]").unwrap(), "[::1]");
        assert_eq!(canon("[0:0:0:0:0:0:0:1]:8080").unwrap(), "[::1]:8080");
        assert_eq!(canon("[2001:DB8::A]:80").unwrap(), "[2001:db8::a]");
        let a = Authority::parse(b"[::1]:8080", 80).unwrap();
        assert_eq!((a.host(), a.port()), ("[::1]", Some(8080)));
        for bad in [
            "[::1",
            "[v1.x]",
            "[::1]x",
            "[::1%25eth0]",
            "[1.2.3.4]",
            "[]",
        ] {
            assert_eq!(canon(bad), Err(AuthorityError::BadIpLiteral), "{bad}");
        }
    }

    #[test]
    fn ipv4_is_a_reg_name() {
        assert_eq!(canon("127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
    }
}
