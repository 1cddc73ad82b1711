//! The `Cache-Status` response field (RFC 9211).
//!
//! Each cache that handled a response appends one list member naming itself; the member
//! closest to the origin comes first (§2). We append ours after whatever upstream sent.

use std::fmt::{self, Write};

/// Why a request went forward (RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// Configuration said not to use the cache.
    Bypass,
    /// The method is not cacheable.
    Method,
    /// Nothing stored under this URI.
    UriMiss,
    /// Stored, but no variant matches the request's `Vary` selection.
    VaryMiss,
    /// A miss we cannot further classify.
    Miss,
    /// The request's directives demanded it (`no-cache`, `max-age=0`, …).
    Request,
    /// Stored and stale: validated or refetched.
    Stale,
}

impl Fwd {
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Miss => "miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
        }
    }
}

/// One `Cache-Status` member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    pub cache: String,
    pub hit: bool,
    pub fwd: Option<Fwd>,
    pub fwd_status: Option<u16>,
    pub ttl: Option<i64>,
    pub stored: bool,
    pub collapsed: bool,
    pub detail: Option<String>,
}

impl CacheStatus {
    pub fn new(cache: impl Into<String>) -> Self {
        Self {
            cache: cache.into(),
            hit: false,
            fwd: None,
            fwd_status: None,
            ttl: None,
            stored: false,
            collapsed: false,
            detail: None,
        }
    }

    /// The short label used for metrics and access logs.
    pub fn label(&self) -> &'static str {
        match (self.hit, self.fwd) {
            (true, _) => "hit",
            (false, Some(f)) => f.as_str(),
            (false, None) => "none",
        }
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_token_or_string(f, &self.cache)?;
        if self.hit {
            f.write_str("; hit")?;
        }
        if let Some(fwd) = self.fwd {
            write!(f, "; fwd={}", fwd.as_str())?;
        }
        if let Some(s) = self.fwd_status {
            write!(f, "; fwd-status={s}")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, "; ttl={ttl}")?;
        }
        if self.stored {
            f.write_str("; stored")?;
        }
        if self.collapsed {
            f.write_str("; collapsed")?;
        }
        if let Some(detail) = &self.detail {
            f.write_str("; detail=")?;
            write_token_or_string(f, detail)?;
        }
        Ok(())
    }
}

/// sf-token when the text is one (RFC 9651 §3.3.4), else sf-string with escapes.
fn write_token_or_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let is_token = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
    if is_token {
        return f.write_str(s);
    }
    f.write_char('"')?;
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9211_2_hit_with_ttl() {
        let mut s = CacheStatus::new("strata-edge-1");
        s.hit = true;
        s.ttl = Some(42);
        assert_eq!(s.to_string(), "strata-edge-1; hit; ttl=42");
    }

    #[test]
    fn rfc9211_2_2_fwd_miss_stored_with_status() {
        let mut s = CacheStatus::new("edge");
        s.fwd = Some(Fwd::UriMiss);
        s.fwd_status = Some(200);
        s.stored = true;
        s.ttl = Some(60);
        assert_eq!(
            s.to_string(),
            "edge; fwd=uri-miss; fwd-status=200; ttl=60; stored"
        );
    }

    #[test]
    fn rfc9211_2_8_detail_is_a_string_when_not_a_token() {
        let mut s = CacheStatus::new("edge 1");
        s.fwd = Some(Fwd::Miss);
        s.detail = Some("upstream \"timeout\"".into());
        assert_eq!(
            s.to_string(),
            "\"edge 1\"; fwd=miss; detail=\"upstream \\\"timeout\\\"\""
        );
        // The output is a valid Structured Field List.
        let list: Result<sfv::List, _> = sfv::Parser::new(&s.to_string()).parse();
        assert!(list.is_ok());
    }
}
