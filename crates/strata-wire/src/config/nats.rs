//! How a process proves itself to NATS and checks the server: the same keys on every role
//! that joins the bus (`[bus.auth]` on nodes, `[nats_auth]` on the control plane and the
//! DNS router).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsAuth {
    /// User and password (`authorization { users = [...] }` on the server).
    pub user: Option<String>,
    pub password: Option<String>,
    /// A token (`authorization { token = ... }`).
    pub token: Option<String>,
    /// A credentials file (a user JWT and its nkey seed, as `nsc` writes it).
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`) for servers that list nkeys.
    pub nkey_file: Option<PathBuf>,
    /// PEM CA certificates the server's certificate must chain to. Implies TLS.
    pub ca_file: Option<PathBuf>,
    /// This process's certificate and key, for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Refuse a server that does not speak TLS (on whenever `ca_file` is set or the URL is
    /// `tls://`).
    pub require_tls: bool,
}

impl NatsAuth {
    /// Checks the keys under `at` (`bus.auth`): one way to authenticate, and the files
    /// there.
    pub fn check(&self, at: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        match (&self.user, &self.password) {
            (Some(_), None) => {
                return Err(ConfigError::new(key("password"), "user needs a password"))
            }
            (None, Some(_)) => return Err(ConfigError::new(key("user"), "password needs a user")),
            _ => {}
        }
        let ways = [
            self.user.is_some(),
            self.token.is_some(),
            self.creds_file.is_some(),
            self.nkey_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(ConfigError::new(
                at,
                "one of user/password, token, creds_file or nkey_file",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ConfigError::new(
                key("cert_file"),
                "cert_file and key_file go together",
            ));
        }
        for (name, file) in [
            ("creds_file", &self.creds_file),
            ("nkey_file", &self.nkey_file),
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(path) = file {
                readable(path).map_err(|why| ConfigError::new(key(name), why))?;
            }
        }
        Ok(())
    }
}

/// A NATS URL (or list) fit for a log: user info (`user:password@`) removed.
pub fn redacted(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}{}", &url[..scheme + 3], &url[at + 1..])
            }
            _ => url.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks a NATS URL, or several separated by commas (the servers of a cluster, tried in
/// turn), each `nats://` or `tls://`; an error names `at` and the URL without its
/// credentials.
pub fn check_nats_urls(urls: &str, at: &str) -> Result<(), ConfigError> {
    for url in urls.split(',').map(str::trim) {
        let rest = url
            .strip_prefix("nats://")
            .or_else(|| url.strip_prefix("tls://"));
        if rest.is_none_or(str::is_empty) {
            return Err(ConfigError::new(
                at,
                format!("'{}' is not a nats:// or tls:// URL", redacted(url)),
            ));
        }
    }
    Ok(())
}

fn readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_way_to_authenticate_and_files_that_exist() {
        assert!(NatsAuth::default().check("bus.auth").is_ok());
        let both = NatsAuth {
            user: Some("edge".into()),
            password: Some("x".into()),
            token: Some("t".into()),
            ..NatsAuth::default()
        };
        assert_eq!(both.check("bus.auth").unwrap_err().path, "bus.auth");
        let half = NatsAuth {
            user: Some("edge".into()),
            ..NatsAuth::default()
        };
        assert_eq!(
            half.check("bus.auth").unwrap_err().path,
            "bus.auth.password"
        );
        let missing = NatsAuth {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..NatsAuth::default()
        };
        assert_eq!(
            missing.check("nats_auth").unwrap_err().path,
            "nats_auth.ca_file"
        );
    }
}
