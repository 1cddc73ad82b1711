//! The purge wire types: the JSON body of `POST /v1/purge` (node admin API and control
//! plane alike), the event the control plane publishes on the bus, a node's ack, and the
//! report a node answers with. [`PurgeRequest::check`] checks a request's syntax with no
//! node's services at hand (the control plane checks before it publishes); a node resolves
//! it against its own services (`strata_proxy::purge::resolve`), with the same messages.

use http::Uri;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

/// The JSON body of a purge request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// Absolute URLs; every `Vary` variant of each.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Surrogate keys (`Surrogate-Key` / `Cache-Tag` values).
    #[serde(default)]
    pub tags: Vec<String>,
    /// URL prefixes: `http://host/path/`.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Globs on the path (`*`, `?`): `"/img/*.jpg"` on every host, or
    /// `"http://host/img/*.jpg"` on one. Applied at once to lookups, and by a background
    /// sweep to everything stored.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Everything in the cache.
    #[serde(default)]
    pub all: bool,
    /// Mark stale instead of removing.
    #[serde(default)]
    pub soft: bool,
    /// Control plane only: seconds to wait for every node's ack before answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<f64>,
}

/// A purge as carried on the bus: the request, when it was issued, and its id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PurgeEvent {
    pub id: String,
    /// Unix time in milliseconds, rounded up by the publisher (see `strata-control`).
    pub issued_at_ms: u64,
    pub request: PurgeRequest,
}

/// A node's acknowledgement of a purge event. Published on the bus in batches: each
/// message is a JSON array of these.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PurgeAck {
    pub id: String,
    pub node: String,
    pub seq: u64,
    pub objects: u64,
    /// Unix time in milliseconds.
    pub applied_at_ms: u64,
    /// Set when the event could not be applied (it is still acknowledged: retrying a
    /// malformed event would not help).
    pub error: Option<String>,
}

/// What a node reports after applying a purge.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PurgeReport {
    pub id: String,
    pub objects: u64,
    pub applied_us: u64,
    /// Pattern purges are in force at once; their sweep over the whole cache (which
    /// counts and removes the objects) runs in the background.
    pub sweeping: bool,
}

impl PurgeRequest {
    /// Checks what can be checked before any node sees the request: `wait`, and the syntax
    /// of every scope (the messages name the field at fault: `urls[0]: …`).
    pub fn check(&self) -> Result<(), String> {
        if self.wait.is_some_and(|w| !(0.0..=300.0).contains(&w)) {
            return Err("wait: between 0 and 300 seconds".into());
        }
        self.check_scopes()
    }

    /// The syntax of the scopes: something to purge, URLs that parse, one-word tags,
    /// prefixes without a query, path globs.
    pub fn check_scopes(&self) -> Result<(), String> {
        if self.urls.is_empty()
            && self.tags.is_empty()
            && self.prefixes.is_empty()
            && self.patterns.is_empty()
            && !self.all
        {
            return Err("nothing to purge: give urls, tags, prefixes, patterns or all".into());
        }
        for (i, url) in self.urls.iter().enumerate() {
            parse_url(url).map_err(|why| format!("urls[{i}]: {why}"))?;
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if tag.is_empty() || tag.contains([' ', ',', '\t']) {
                return Err(format!("tags[{i}]: a tag is one non-empty word"));
            }
        }
        for (i, p) in self.prefixes.iter().enumerate() {
            let (_, uri) = parse_url(p).map_err(|why| format!("prefixes[{i}]: {why}"))?;
            if uri.query().is_some() {
                return Err(format!("prefixes[{i}]: a prefix has no query"));
            }
        }
        for (i, p) in self.patterns.iter().enumerate() {
            let glob = if p.starts_with('/') {
                p.clone()
            } else {
                let (_, uri) = parse_url(p).map_err(|why| format!("patterns[{i}]: {why}"))?;
                uri.path().to_string()
            };
            if glob.is_empty() || !glob.starts_with('/') {
                return Err(format!(
                    "patterns[{i}]: a pattern is a path glob such as /img/*.jpg"
                ));
            }
        }
        Ok(())
    }
}

/// An absolute `http://` or `https://` URL: its host (with any port) and the URI.
pub fn parse_url(s: &str) -> Result<(String, Uri), String> {
    let uri: Uri = s.parse().map_err(|_| format!("'{s}' is not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("'{s}' is not an http:// or https:// URL")),
    }
    let host = uri
        .authority()
        .ok_or_else(|| format!("'{s}' has no host"))?
        .as_str()
        .to_string();
    Ok((host, uri))
}

/// Largest purge request body accepted (node admin API and control plane).
pub const MAX_PURGE_BODY: usize = 1 << 20;

/// Reads a purge request (the JSON body of `POST /v1/purge`): the reason as text when the
/// body is too large, unreadable or not a purge request.
pub async fn read_request<B>(body: B) -> Result<PurgeRequest, String>
where
    B: http_body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bytes = http_body_util::Limited::new(body, MAX_PURGE_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    parse_request(&bytes)
}

/// A purge request from a body already read (at most [`MAX_PURGE_BODY`] bytes).
pub fn parse_request(bytes: &[u8]) -> Result<PurgeRequest, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid purge request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_refused_with_the_place() {
        assert!(PurgeRequest::default()
            .check()
            .unwrap_err()
            .contains("nothing to purge"));
        let bad = PurgeRequest {
            urls: vec!["/relative".into()],
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().starts_with("urls[0]"));
        let bad = PurgeRequest {
            tags: vec!["two words".into()],
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().starts_with("tags[0]"));
        let bad = PurgeRequest {
            patterns: vec!["img/*".into()],
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().starts_with("patterns[0]"));
        let bad = PurgeRequest {
            prefixes: vec!["http://a.test/x?y".into()],
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().starts_with("prefixes[0]"));
        let bad = PurgeRequest {
            all: true,
            wait: Some(301.0),
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().starts_with("wait"));
        let good = PurgeRequest {
            patterns: vec!["/a/*".into(), "http://x.test:80/b/*".into()],
            ..Default::default()
        };
        assert!(good.check().is_ok());
    }
}
