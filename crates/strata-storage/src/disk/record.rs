//! The metadata file of one object on disk: everything but the body, as JSON.
//!
//! JSON so an operator can read a cache directory with `jq`; the format carries a version,
//! and a file that does not parse (torn write, older format, foreign file) is dropped when
//! the tier opens, never served. The body sits in its own file, so a soft purge rewrites
//! only this small one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use strata_http_cache::freshness::{Freshness, FreshnessSource};
use strata_http_cache::vary::VariantKey;
use strata_http_cache::{CacheKey, CachePolicy, ResponseCacheControl};

use crate::object::StoredObject;

/// Bumped when the layout changes; other versions are dropped at open.
pub const VERSION: u32 = 1;

/// What a metadata file holds, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub key: CacheKey,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub policy: CachePolicy,
    pub variant: VariantKey,
    pub stored_at: SystemTime,
    pub body_len: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a metadata record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("record version {0}, expected {VERSION}")]
    Version(u32),
    #[error("invalid {0}")]
    Field(&'static str),
}

// === impl Meta ===

impl Meta {
    /// What a metadata file holds for `object` stored under `key` with a body of `body_len`.
    pub fn of(key: &CacheKey, object: &StoredObject, body_len: u64) -> Self {
        Self {
            key: key.clone(),
            status: object.status,
            headers: object.headers.clone(),
            policy: object.policy.clone(),
            variant: object.variant.clone(),
            stored_at: object.stored_at,
            body_len,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let record = Record {
            version: VERSION,
            key: self.key.as_str().to_string(),
            status: self.status.as_u16(),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| Field {
                    name: name.as_str().to_string(),
                    value: match value.to_str() {
                        Ok(text) => FieldValue::Text(text.to_string()),
                        Err(_) => FieldValue::Bytes(value.as_bytes().to_vec()),
                    },
                })
                .collect(),
            variant: self
                .variant
                .0
                .iter()
                .map(|(name, value)| (name.as_str().to_string(), value.clone()))
                .collect(),
            stored_at_ns: nanos_since_epoch(self.stored_at),
            body_len: self.body_len,
            policy: PolicyRecord::from(&self.policy),
        };
        // Serialising plain strings, numbers and vectors cannot fail.
        serde_json::to_vec(&record).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let record: Record = serde_json::from_slice(bytes)?;
        if record.version != VERSION {
            return Err(RecordError::Version(record.version));
        }
        let mut headers = HeaderMap::with_capacity(record.headers.len());
        for field in record.headers {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| RecordError::Field("header name"))?;
            let value = match field.value {
                FieldValue::Text(t) => HeaderValue::from_str(&t),
                FieldValue::Bytes(b) => HeaderValue::from_bytes(&b),
            }
            .map_err(|_| RecordError::Field("header value"))?;
            headers.append(name, value);
        }
        let variant = record
            .variant
            .into_iter()
            .map(|(name, value)| {
                HeaderName::from_bytes(name.as_bytes())
                    .map(|n| (n, value))
                    .map_err(|_| RecordError::Field("variant field"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            key: CacheKey::from_text(record.key),
            status: StatusCode::from_u16(record.status)
                .map_err(|_| RecordError::Field("status"))?,
            headers,
            policy: record.policy.into_policy()?,
            variant: VariantKey(variant),
            stored_at: UNIX_EPOCH + Duration::from_nanos(record.stored_at_ns),
            body_len: record.body_len,
        })
    }
}

fn nanos_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

// === serialised form ===

#[derive(Serialize, Deserialize)]
struct Record {
    version: u32,
    key: String,
    status: u16,
    headers: Vec<Field>,
    variant: Vec<(String, Option<String>)>,
    stored_at_ns: u64,
    body_len: u64,
    policy: PolicyRecord,
}

#[derive(Serialize, Deserialize)]
struct Field {
    name: String,
    value: FieldValue,
}

/// Header values are text nearly always; the rare `obs-text` value keeps its bytes.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum FieldValue {
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Serialize, Deserialize)]
struct PolicyRecord {
    cc: CcRecord,
    targeted: bool,
    lifetime_ns: u64,
    source: String,
    initial_age_ns: u64,
    response_time_ns: u64,
    private_fields: Vec<String>,
    has_validators: bool,
}

#[derive(Serialize, Deserialize)]
struct CcRecord {
    max_age: Option<u32>,
    s_maxage: Option<u32>,
    no_store: bool,
    no_cache: bool,
    private: bool,
    private_fields: Vec<String>,
    public: bool,
    must_revalidate: bool,
    proxy_revalidate: bool,
    must_understand: bool,
    no_transform: bool,
    immutable: bool,
    stale_while_revalidate: Option<u32>,
    stale_if_error: Option<u32>,
}

const SOURCES: [(FreshnessSource, &str); 9] = [
    (FreshnessSource::SMaxAge, "s-maxage"),
    (FreshnessSource::MaxAge, "max-age"),
    (FreshnessSource::Expires, "expires"),
    (FreshnessSource::Heuristic, "heuristic"),
    (FreshnessSource::Negative, "negative"),
    (FreshnessSource::Override, "override"),
    (FreshnessSource::Micro, "micro"),
    (FreshnessSource::Purged, "purged"),
    (FreshnessSource::None, "none"),
];

fn names(fields: &[HeaderName]) -> Vec<String> {
    fields.iter().map(|f| f.as_str().to_string()).collect()
}

fn header_names(names: Vec<String>) -> Result<Vec<HeaderName>, RecordError> {
    names
        .iter()
        .map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(|_| RecordError::Field("field name")))
        .collect()
}

impl From<&CachePolicy> for PolicyRecord {
    fn from(p: &CachePolicy) -> Self {
        let cc = &p.cc;
        Self {
            cc: CcRecord {
                max_age: cc.max_age,
                s_maxage: cc.s_maxage,
                no_store: cc.no_store,
                no_cache: cc.no_cache,
                private: cc.private,
                private_fields: names(&cc.private_fields),
                public: cc.public,
                must_revalidate: cc.must_revalidate,
                proxy_revalidate: cc.proxy_revalidate,
                must_understand: cc.must_understand,
                no_transform: cc.no_transform,
                immutable: cc.immutable,
                stale_while_revalidate: cc.stale_while_revalidate,
                stale_if_error: cc.stale_if_error,
            },
            targeted: p.targeted,
            lifetime_ns: p.freshness.lifetime.as_nanos().min(u128::from(u64::MAX)) as u64,
            source: SOURCES
                .iter()
                .find(|(s, _)| *s == p.freshness.source)
                .map_or("none", |(_, name)| name)
                .to_string(),
            initial_age_ns: p.initial_age.as_nanos().min(u128::from(u64::MAX)) as u64,
            response_time_ns: nanos_since_epoch(p.response_time),
            private_fields: names(&p.private_fields),
            has_validators: p.has_validators,
        }
    }
}

impl PolicyRecord {
    fn into_policy(self) -> Result<CachePolicy, RecordError> {
        let cc = self.cc;
        let source = SOURCES
            .iter()
            .find(|(_, name)| *name == self.source)
            .map(|(s, _)| *s)
            .ok_or(RecordError::Field("freshness source"))?;
        Ok(CachePolicy {
            cc: ResponseCacheControl {
                max_age: cc.max_age,
                s_maxage: cc.s_maxage,
                no_store: cc.no_store,
                no_cache: cc.no_cache,
                private: cc.private,
                private_fields: header_names(cc.private_fields)?,
                public: cc.public,
                must_revalidate: cc.must_revalidate,
                proxy_revalidate: cc.proxy_revalidate,
                must_understand: cc.must_understand,
                no_transform: cc.no_transform,
                immutable: cc.immutable,
                stale_while_revalidate: cc.stale_while_revalidate,
                stale_if_error: cc.stale_if_error,
            },
            targeted: self.targeted,
            freshness: Freshness {
                lifetime: Duration::from_nanos(self.lifetime_ns),
                source,
            },
            initial_age: Duration::from_nanos(self.initial_age_ns),
            response_time: UNIX_EPOCH + Duration::from_nanos(self.response_time_ns),
            private_fields: header_names(self.private_fields)?,
            has_validators: self.has_validators,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::response;
    use strata_http_cache::KeyRules;

    fn sample() -> Meta {
        let mut headers = HeaderMap::new();
        headers.insert(
            "cache-control",
            HeaderValue::from_static("max-age=60, stale-if-error=30"),
        );
        headers.insert("surrogate-key", HeaderValue::from_static("a b"));
        headers.append("x-many", HeaderValue::from_static("1"));
        headers.append("x-many", HeaderValue::from_static("2"));
        headers.insert("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let key = CacheKey::new(
            "https",
            "a.test",
            "/x",
            Some("b=2&a=1"),
            &KeyRules::default(),
        );
        Meta::of(&key, &response(headers, now, Some("fr"), 1234), 1234)
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let meta = sample();
        let back = Meta::decode(&meta.encode()).unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.key.hash64(), meta.key.hash64());
    }

    #[test]
    fn torn_foreign_or_other_version_records_are_refused() {
        let bytes = sample().encode();
        assert!(Meta::decode(&bytes[..bytes.len() / 2]).is_err());
        assert!(Meta::decode(b"GIF89a").is_err());
        let other =
            String::from_utf8(bytes)
                .unwrap()
                .replacen("\"version\":1", "\"version\":99", 1);
        assert!(matches!(
            Meta::decode(other.as_bytes()),
            Err(RecordError::Version(99))
        ));
        let bad_source = String::from_utf8(sample().encode()).unwrap().replacen(
            "\"source\":\"max-age\"",
            "\"source\":\"guess\"",
            1,
        );
        assert!(Meta::decode(bad_source.as_bytes()).is_err());
    }
}
