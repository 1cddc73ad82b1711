//! `[tls.acme]`: certificates Strata obtains and renews itself from an ACME CA (RFC 8555:
//! Let's Encrypt, ZeroSSL, an internal CA such as smallstep or Pebble).
//!
//! Each `[[tls.acme.certificate]]` is one certificate for its `names`. The node proves it
//! serves them with the configured challenge: `tls-alpn-01` (RFC 8737) on the `https`
//! listeners, or `http-01` on the plain `http` listeners; the CA connects to each name on
//! port 443 or 80, so those listeners must be what the names resolve to. Certificates and
//! the account key are kept under `storage`, so a restart serves what it had.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Seconds};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeSection {
    /// The CA's directory URL (`https://`), e.g.
    /// `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: String,
    /// Where the CA may reach the operator (`mailto:` URLs): expiry and policy notices.
    pub contact: Vec<String>,
    /// A CA bundle (PEM) trusted for the directory's own HTTPS, for CAs on a private PKI
    /// (Pebble, an internal CA). Default: the system's CA certificates.
    pub ca_file: Option<PathBuf>,
    /// Directory for the account key and the certificates (created if missing; keys are
    /// written readable by the owner only).
    pub storage: PathBuf,
    pub challenge: ChallengeKind,
    /// The wait after a failed order before the next; it doubles with each failure in a
    /// row, up to an hour. The certificate in service stays in service meanwhile.
    pub retry: Seconds,
    #[serde(rename = "certificate")]
    pub certificates: Vec<AcmeCertificate>,
}

impl Default for AcmeSection {
    fn default() -> Self {
        Self {
            directory: String::new(),
            contact: Vec::new(),
            ca_file: None,
            storage: PathBuf::new(),
            challenge: ChallengeKind::default(),
            retry: Seconds(Duration::from_secs(60)),
            certificates: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcmeCertificate {
    /// Host names the certificate is for (no wildcards: those need DNS-01).
    pub names: Vec<String>,
}

/// How the node proves to the CA that it serves a name.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum ChallengeKind {
    /// A TLS handshake with ALPN `acme-tls/1` on port 443 (RFC 8737): the `https`
    /// listeners answer it; nothing on port 80 needed.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// `GET /.well-known/acme-challenge/TOKEN` over plain HTTP on port 80 (RFC 8555 §8.3):
    /// the `http` listeners answer it before any service is looked up.
    #[serde(rename = "http-01")]
    Http01,
}

impl AcmeSection {
    /// Whether any certificate is to be obtained.
    pub fn enabled(&self) -> bool {
        !self.certificates.is_empty()
    }

    /// `https`/`http`: whether the node has the listeners the challenge needs.
    pub(super) fn check(&self, https: bool, http: bool) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let at = |key: &str| format!("tls.acme.{key}");
        if !self.directory.starts_with("https://") || self.directory.parse::<http::Uri>().is_err() {
            return Err(ConfigError::new(
                at("directory"),
                "the CA's directory URL, https:// (e.g. https://acme-v02.api.letsencrypt.org/directory)",
            ));
        }
        if self.storage.as_os_str().is_empty() {
            return Err(ConfigError::new(
                at("storage"),
                "a directory for the account key and certificates is required",
            ));
        }
        for (i, c) in self.contact.iter().enumerate() {
            if !c.starts_with("mailto:") {
                return Err(ConfigError::new(
                    format!("tls.acme.contact[{i}]"),
                    "a mailto: URL",
                ));
            }
        }
        if let Some(ca) = &self.ca_file {
            crate::tls::certs::load_ca(ca).map_err(|why| ConfigError::new(at("ca_file"), why))?;
        }
        if self.retry.0 < Duration::from_millis(100) {
            return Err(ConfigError::new(at("retry"), "at least 100ms"));
        }
        if !https {
            return Err(ConfigError::new(
                at("certificate"),
                "certificates are served on listen.https, and there is none",
            ));
        }
        if self.challenge == ChallengeKind::Http01 && !http {
            return Err(ConfigError::new(
                at("challenge"),
                "http-01 is answered on listen.http (port 80), and there is none",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.certificates.iter().enumerate() {
            if c.names.is_empty() {
                return Err(ConfigError::new(
                    format!("tls.acme.certificate[{i}].names"),
                    "at least one host name",
                ));
            }
            for (n, name) in c.names.iter().enumerate() {
                let key = format!("tls.acme.certificate[{i}].names[{n}]");
                if name.starts_with("*.") {
                    return Err(ConfigError::new(
                        key,
                        "wildcard names need the DNS-01 challenge, which Strata does not answer",
                    ));
                }
                if !super::names::valid_host_pattern(name) || !name.contains('.') {
                    return Err(ConfigError::new(
                        key,
                        format!("'{name}' is not a fully qualified host name"),
                    ));
                }
                if !seen.insert(name.to_ascii_lowercase()) {
                    return Err(ConfigError::new(
                        key,
                        format!("'{name}' is in another ACME certificate already"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(names: &[&str]) -> AcmeSection {
        AcmeSection {
            directory: "https://acme.example/dir".into(),
            storage: "/var/lib/strata/acme".into(),
            certificates: vec![AcmeCertificate {
                names: names.iter().map(|n| n.to_string()).collect(),
            }],
            ..AcmeSection::default()
        }
    }

    #[test]
    fn names_must_be_plain_host_names() {
        assert!(section(&["shop.example.com"]).check(true, true).is_ok());
        let wildcard = section(&["*.example.com"]).check(true, true).unwrap_err();
        assert!(wildcard.to_string().contains("names[0]"), "{wildcard}");
        assert!(section(&["localhost"]).check(true, true).is_err());
        assert!(section(&["a..b"]).check(true, true).is_err());
        assert!(section(&[]).check(true, true).is_err());
    }

    #[test]
    fn the_challenge_needs_its_listener() {
        assert!(section(&["a.example"]).check(false, true).is_err());
        let mut http01 = section(&["a.example"]);
        http01.challenge = ChallengeKind::Http01;
        let e = http01.check(true, false).unwrap_err();
        assert!(e.to_string().contains("tls.acme.challenge"), "{e}");
        assert!(http01.check(true, true).is_ok());
    }

    #[test]
    fn directory_and_storage_are_required() {
        let mut s = section(&["a.example"]);
        s.directory = "http://acme.example/dir".into();
        assert!(s.check(true, true).is_err());
        let mut s = section(&["a.example"]);
        s.storage = PathBuf::new();
        assert!(s.check(true, true).is_err());
    }
}
