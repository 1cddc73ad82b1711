//! `[tls]`: the certificates the `listen.https` listeners present, and what a client
//! that names no known host gets.
//!
//! Each `[[tls.certificate]]` is a PEM chain and its key; the host names it answers for
//! are its own subjectAltName DNS names (wildcards included), unless `names` lists them.
//! The files are read and checked here (readable, key matches, not expired), so
//! `strata check-config` refuses what the node would refuse at start or reload.

use std::path::PathBuf;

use serde::Deserialize;

use super::acme::AcmeSection;
use super::{ConfigError, ListenSection};

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    #[serde(rename = "certificate")]
    pub certificates: Vec<CertificateConfig>,
    /// A client whose SNI names no configured certificate (or that sends none): `default`
    /// presents the default certificate, `reject` ends the handshake with an alert.
    /// Clients without SNI always get the default certificate.
    pub unknown_sni: UnknownSni,
    /// TLS 1.2 sessions remembered for resumption by session ID (TLS 1.3 and ticket
    /// resumption need no server memory).
    pub session_cache: usize,
    /// The cluster CA (PEM). When set, `https` listeners ask clients for a certificate
    /// (optional: the public needs none) and verify it against this CA; `strata-ring` is
    /// then believed only on connections that presented one (and from a ring peer's
    /// address), ring peers are `https://` and verified against this CA, and so are
    /// `https://` parents.
    pub client_ca: Option<PathBuf>,
    /// This node's certificate from the cluster CA (PEM chain), presented on TLS
    /// connections to ring peers and parents that ask for one.
    pub client_cert: Option<PathBuf>,
    /// The key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Certificates obtained and renewed from an ACME CA.
    pub acme: AcmeSection,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file: the leaf certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1; RSA or ECDSA).
    pub key: PathBuf,
    /// Host names this certificate answers for (`*.example.com` allowed). Default: the
    /// certificate's own subjectAltName DNS names.
    #[serde(default)]
    pub names: Vec<String>,
    /// Presented to clients without SNI (and, with `unknown_sni = "default"`, to clients
    /// naming an unknown host). Default: the first certificate.
    #[serde(default)]
    pub default: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSni {
    #[default]
    Default,
    Reject,
}

impl TlsSection {
    /// Structure first (what `https` listeners need), then every certificate loaded and
    /// checked as the listener would.
    pub(super) fn check(&self, listen: &ListenSection) -> Result<(), ConfigError> {
        let https_listeners = !listen.https.is_empty();
        if https_listeners && self.certificates.is_empty() && !self.acme.enabled() {
            return Err(ConfigError::new(
                "tls.certificate",
                "listen.https needs at least one [[tls.certificate]] or [[tls.acme.certificate]]",
            ));
        }
        self.acme.check(https_listeners, !listen.http.is_empty())?;
        if self.certificates.iter().filter(|c| c.default).count() > 1 {
            return Err(ConfigError::new(
                "tls.certificate",
                "only one certificate can be the default",
            ));
        }
        if !self.certificates.is_empty() {
            crate::tls::CertTable::load(self, std::time::SystemTime::now())?;
        }
        if let Some(ca) = &self.client_ca {
            crate::tls::certs::load_ca(ca).map_err(|why| ConfigError::new("tls.client_ca", why))?;
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "tls.client_key",
                    "client_cert needs client_key",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "tls.client_cert",
                    "client_key needs client_cert",
                ))
            }
            (Some(cert), Some(key)) => {
                crate::tls::certs::load_pair(cert, key, "tls.client_cert", "tls.client_key")?;
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// Ring hops and the cluster CA go together: `https://` peers are verified against it
    /// (they are named by address, which the web's CAs do not certify) and must present
    /// `client_cert`; with a cluster CA, a plain-HTTP peer could never prove itself, so
    /// every other peer must be `https://`.
    pub(super) fn check_ring(
        &self,
        ring: &super::RingSection,
        node: &str,
    ) -> Result<(), ConfigError> {
        for (i, peer) in ring.peers.iter().enumerate() {
            if peer.name == node {
                continue;
            }
            let https = peer.url.starts_with("https://");
            let at = format!("ring.peers[{i}].url");
            if https && (self.client_ca.is_none() || self.client_cert.is_none()) {
                return Err(ConfigError::new(
                    at,
                    "https:// ring peers need tls.client_ca (the cluster CA) and tls.client_cert",
                ));
            }
            if !https && self.client_ca.is_some() {
                return Err(ConfigError::new(
                    at,
                    "with tls.client_ca, ring peers are reached over https:// (a peer proves itself with its certificate)",
                ));
            }
        }
        Ok(())
    }

    /// TLS 1.2 session IDs remembered when `session_cache` is left at 0.
    pub fn session_cache_size(&self) -> usize {
        if self.session_cache == 0 {
            DEFAULT_SESSION_CACHE
        } else {
            self.session_cache
        }
    }
}

/// About 2.5 MB of session state at most.
const DEFAULT_SESSION_CACHE: usize = 10_000;
