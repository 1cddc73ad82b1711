//! API tokens: several at once (so they can rotate), each with a name (logged with what it
//! did) and scopes, kept as SHA-256 hashes so the configuration file holds no usable
//! secret. `token` (plain, every scope) is still read for existing setups.

use aws_lc_rs::digest;
use serde::Deserialize;
use strata_wire::config::ConfigError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /v1/purge`, `GET /v1/purge/{id}`.
    Purge,
    /// `GET /v1/health`, `GET /metrics`, `GET /v1/purge/{id}`.
    Read,
    /// Configuration and compute deployments (their APIs are to come).
    Deploy,
}

const ALL: [Scope; 3] = [Scope::Purge, Scope::Read, Scope::Deploy];

/// `[[tokens]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// Hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    pub scopes: Vec<Scope>,
}

/// The tokens the API accepts.
#[derive(Debug)]
pub struct Tokens {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    hash: Vec<u8>,
    scopes: Vec<Scope>,
}

/// Who a request's token says it is.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub name: &'a str,
    scopes: &'a [Scope],
}

impl Caller<'_> {
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Every scope (the plain `token`, or a hashed one given them all).
    pub fn may_all(&self) -> bool {
        ALL.iter().all(|s| self.may(*s))
    }
}

// === impl Tokens ===

impl Tokens {
    /// Checks and builds: `plain` (the `token` key, every scope) and `hashed`.
    pub fn from_config(plain: Option<&str>, hashed: &[TokenConfig]) -> Result<Self, ConfigError> {
        let mut entries = Vec::new();
        if let Some(token) = plain {
            if token.len() < 16 {
                return Err(ConfigError::new("token", "must be at least 16 characters"));
            }
            entries.push(Entry {
                name: "token".into(),
                hash: sha256(token),
                scopes: ALL.to_vec(),
            });
        }
        for (i, t) in hashed.iter().enumerate() {
            let at = |k: &str| format!("tokens[{i}].{k}");
            if t.name.is_empty() || entries.iter().any(|e| e.name == t.name) {
                return Err(ConfigError::new(
                    at("name"),
                    "names must be unique and not empty",
                ));
            }
            let hash = data_encoding::HEXLOWER_PERMISSIVE
                .decode(t.sha256.as_bytes())
                .ok()
                .filter(|h| h.len() == 32)
                .ok_or_else(|| ConfigError::new(at("sha256"), "64 hex digits (a SHA-256)"))?;
            if t.scopes.is_empty() {
                return Err(ConfigError::new(
                    at("scopes"),
                    "at least one of purge, read, deploy",
                ));
            }
            entries.push(Entry {
                name: t.name.clone(),
                hash,
                scopes: t.scopes.clone(),
            });
        }
        if entries.is_empty() {
            return Err(ConfigError::new(
                "tokens",
                "a token or [[tokens]] is required",
            ));
        }
        Ok(Self { entries })
    }

    /// The caller a bearer token names. Every entry is compared (in constant time), so
    /// the answer's timing says nothing about which one matched.
    pub fn authenticate(&self, bearer: &str) -> Option<Caller<'_>> {
        let presented = sha256(bearer);
        let mut found = None;
        for entry in &self.entries {
            if same(&entry.hash, &presented) {
                found = Some(Caller {
                    name: &entry.name,
                    scopes: &entry.scopes,
                });
            }
        }
        found
    }
}

/// Equal bytes, compared to the end whatever differs (the crypto library's comparison).
fn same(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

fn sha256(text: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, text.as_bytes())
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashed(name: &str, token: &str, scopes: &[Scope]) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            sha256: data_encoding::HEXLOWER.encode(&sha256(token)),
            scopes: scopes.to_vec(),
        }
    }

    #[test]
    fn tokens_name_their_caller_and_scopes() {
        let tokens = Tokens::from_config(
            Some("0123456789abcdef-plain"),
            &[
                hashed("ci", "ci-secret", &[Scope::Purge]),
                hashed("grafana", "read-secret", &[Scope::Read]),
            ],
        )
        .unwrap();
        let ci = tokens.authenticate("ci-secret").unwrap();
        assert_eq!(ci.name, "ci");
        assert!(ci.may(Scope::Purge) && !ci.may(Scope::Read));
        let reader = tokens.authenticate("read-secret").unwrap();
        assert!(reader.may(Scope::Read) && !reader.may(Scope::Purge));
        let admin = tokens.authenticate("0123456789abcdef-plain").unwrap();
        assert!(ALL.iter().all(|s| admin.may(*s)));
        assert!(tokens.authenticate("ci-secret ").is_none());
        assert!(tokens.authenticate("").is_none());
    }

    #[test]
    fn bad_entries_name_their_key() {
        let err = |plain: Option<&str>, hashed: &[TokenConfig]| {
            Tokens::from_config(plain, hashed).unwrap_err().path
        };
        assert_eq!(err(None, &[]), "tokens");
        assert_eq!(err(Some("short"), &[]), "token");
        let mut bad = hashed("a", "x", &[Scope::Read]);
        bad.sha256 = "abc".into();
        assert_eq!(err(None, &[bad]), "tokens[0].sha256");
        assert_eq!(
            err(
                None,
                &[
                    hashed("a", "x", &[Scope::Read]),
                    hashed("a", "y", &[Scope::Read])
                ]
            ),
            "tokens[1].name"
        );
        assert_eq!(err(None, &[hashed("a", "x", &[])]), "tokens[0].scopes");
    }
}
