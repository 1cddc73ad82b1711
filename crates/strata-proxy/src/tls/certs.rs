//! Server certificates: read from PEM files, checked, and chosen by the name a client
//! asks for (SNI).
//!
//! A [`CertTable`] is built whole from `[tls]` and never changed; a reload builds a new
//! one and swaps it into the [`CertStore`] rustls asks at each handshake, so a bad file
//! at reload leaves the running table in service.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{CertificateConfig, ConfigError, TlsSection, UnknownSni};

/// Every configured certificate, indexed by the names it answers for.
#[derive(Debug)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is kept under `example.com`: one label replaced, as RFC 6125 §6.4.3
    /// allows and browsers do.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    reject_unknown: bool,
}

impl CertTable {
    /// Reads and checks every `[[tls.certificate]]`: an unreadable file, a key that does
    /// not match, a certificate outside its validity at `now`, or a name it does not
    /// cover is an error naming the key.
    pub fn load(section: &TlsSection, now: SystemTime) -> Result<Self, ConfigError> {
        let provider = super::provider();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut keys = Vec::new();
        for (i, c) in section.certificates.iter().enumerate() {
            let (key, names) = load_one(i, c, &provider, now)?;
            let key = Arc::new(key);
            for name in &names {
                let table = match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()),
                    None => exact.entry(name.clone()),
                };
                // The first certificate naming a host keeps it.
                table.or_insert_with(|| Arc::clone(&key));
            }
            keys.push(key);
        }
        let chosen = section.certificates.iter().position(|c| c.default);
        let default = keys
            .get(chosen.unwrap_or(0))
            .map(Arc::clone)
            .ok_or_else(|| {
                ConfigError::new("tls.certificate", "at least one certificate is required")
            })?;
        Ok(Self {
            exact,
            wildcard,
            default,
            reject_unknown: section.unknown_sni == UnknownSni::Reject,
        })
    }

    /// The certificate for a client naming `sni` (none: the default one).
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni else {
            return Some(Arc::clone(&self.default));
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match self.find(&name) {
            Some(key) => Some(key),
            None if self.reject_unknown => None,
            None => Some(Arc::clone(&self.default)),
        }
    }

    /// The certificate for `name` exactly, else for `*.` its parent.
    fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if let Some(key) = self.exact.get(name) {
            return Some(Arc::clone(key));
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).map(Arc::clone)
    }
}

/// One configured certificate and its key, checked, with the names it answers for.
fn load_one(
    i: usize,
    c: &CertificateConfig,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<(CertifiedKey, Vec<String>), ConfigError> {
    let cert_key = format!("tls.certificate[{i}].cert");
    let key_key = format!("tls.certificate[{i}].key");
    let at = |key: &str, path: &std::path::Path, why: String| {
        ConfigError::new(key, format!("{}: {why}", path.display()))
    };
    let (certified, info) = load_checked(&c.cert, &c.key, &cert_key, &key_key, provider, now)?;
    let names = if c.names.is_empty() {
        info.dns_names
    } else {
        let mut names = Vec::new();
        for (n, name) in c.names.iter().enumerate() {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if !info.dns_names.iter().any(|covered| covers(covered, &name)) {
                return Err(ConfigError::new(
                    format!("tls.certificate[{i}].names[{n}]"),
                    format!("'{name}' is not among the certificate's names"),
                ));
            }
            names.push(name);
        }
        names
    };
    if names.is_empty() {
        return Err(at(
            &cert_key,
            &c.cert,
            "the certificate names no DNS host (subjectAltName)".into(),
        ));
    }
    Ok((certified, names))
}

/// A certificate chain and its key from PEM files: readable, valid at `now`, the key
/// matching. Errors name `cert_key` / `key_key`.
fn load_checked(
    cert: &std::path::Path,
    key: &std::path::Path,
    cert_key: &str,
    key_key: &str,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<(CertifiedKey, CertInfo), ConfigError> {
    let at = |name: &str, path: &std::path::Path, why: String| {
        ConfigError::new(name, format!("{}: {why}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| at(cert_key, cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(cert_key, cert, e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(at(cert_key, cert, "no certificate in the file".into()));
    };
    let info = inspect(leaf).map_err(|why| at(cert_key, cert, why))?;
    if now > info.not_after {
        return Err(at(
            cert_key,
            cert,
            format!("expired on {}", httpdate::fmt_http_date(info.not_after)),
        ));
    }
    if now < info.not_before {
        return Err(at(
            cert_key,
            cert,
            format!(
                "not valid before {}",
                httpdate::fmt_http_date(info.not_before)
            ),
        ));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| at(key_key, key, e.to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| at(key_key, key, format!("unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        at(
            key_key,
            key,
            format!("does not match the certificate in {}", cert.display()),
        )
    })?;
    Ok((certified, info))
}

/// This node's client certificate (`tls.client_cert`, `tls.client_key`), checked.
pub fn load_pair(
    cert: &std::path::Path,
    key: &std::path::Path,
    cert_key: &str,
    key_key: &str,
) -> Result<CertifiedKey, ConfigError> {
    load_checked(
        cert,
        key,
        cert_key,
        key_key,
        &super::provider(),
        SystemTime::now(),
    )
    .map(|(certified, _)| certified)
}

/// A CA bundle: every certificate in a PEM file.
pub fn load_ca(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    let at = |why: String| format!("{}: {why}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| at(e.to_string()))? {
        roots
            .add(cert.map_err(|e| at(e.to_string()))?)
            .map_err(|e| at(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(at("no certificate in the file".into()));
    }
    Ok(roots)
}

/// Whether a certificate name (`a.example.com` or `*.example.com`) covers `name`.
fn covers(cert_name: &str, name: &str) -> bool {
    if cert_name == name {
        return true;
    }
    match (cert_name.strip_prefix("*."), name.split_once('.')) {
        (Some(parent), Some((_, rest))) => parent == rest,
        _ => false,
    }
}

/// What a leaf certificate says about itself.
pub struct CertInfo {
    pub dns_names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Reads the names and validity of a DER certificate.
pub fn inspect(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not a readable X.509 certificate: {e}"))?;
    let time = |t: &x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    let validity = cert.validity();
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                dns_names.push(n.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    Ok(CertInfo {
        dns_names,
        not_before: time(&validity.not_before),
        not_after: time(&validity.not_after),
    })
}

// === impl CertStore ===

/// The certificates in service: rustls asks it at every handshake; a reload replaces
/// its table whole.
#[derive(Debug)]
pub struct CertStore {
    table: RwLock<Arc<CertTable>>,
}

impl CertStore {
    pub fn new(table: CertTable) -> Self {
        Self {
            table: RwLock::new(Arc::new(table)),
        }
    }

    pub fn table(&self) -> Arc<CertTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn replace(&self, table: CertTable) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table().select(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_covers_one_label() {
        assert!(covers("*.example.com", "a.example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(covers("example.com", "example.com"));
    }
}
