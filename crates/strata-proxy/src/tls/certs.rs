//! Server certificates: read from PEM files, checked, and chosen by the name a client
//! asks for (SNI).
//!
//! A [`CertTable`] is built whole from `[tls]` and never changed; a reload builds a new
//! one and swaps it into the [`CertStore`] rustls asks at each handshake, so a bad file
//! at reload leaves the running table in service. Certificates obtained by ACME live
//! beside the table in the store (a reload does not drop them).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::acme::{Challenges, ACME_TLS_ALPN};
use crate::config::{CertificateConfig, ConfigError, TlsSection, UnknownSni};

/// Every configured certificate, indexed by the names it answers for.
#[derive(Debug)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is kept under `example.com`: one label replaced, as RFC 6125 §6.4.3
    /// allows and browsers do.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// None when every certificate comes from ACME.
    default: Option<Arc<CertifiedKey>>,
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
        let default = keys.get(chosen.unwrap_or(0)).map(Arc::clone);
        Ok(Self {
            exact,
            wildcard,
            default,
            reject_unknown: section.unknown_sni == UnknownSni::Reject,
        })
    }
}

/// What a handshake is answered with, by the name the client asked for: a configured
/// certificate for that exact name, else an obtained (ACME) one, else a configured
/// wildcard; a client naming none of them gets the default certificate, or an alert with
/// `tls.unknown_sni = "reject"`.
struct Selection(Option<String>);

impl Selection {
    fn new(sni: Option<&str>) -> Self {
        Self(sni.map(|n| n.trim_end_matches('.').to_ascii_lowercase()))
    }

    fn pick(&self, table: &CertTable, obtained: &Obtained) -> Option<Arc<CertifiedKey>> {
        let default = || table.default.clone().or_else(|| obtained.first.clone());
        let Some(name) = &self.0 else {
            return default();
        };
        let found = table
            .exact
            .get(name)
            .or_else(|| obtained.by_name.get(name))
            .or_else(|| {
                let (_, parent) = name.split_once('.')?;
                table.wildcard.get(parent)
            });
        match found {
            Some(key) => Some(Arc::clone(key)),
            None if table.reject_unknown => None,
            None => default(),
        }
    }
}

/// Certificates obtained from the ACME CA, by the names each is for.
#[derive(Debug, Default, Clone)]
struct Obtained {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    /// The first configured ACME certificate, the default when no file is configured.
    first: Option<Arc<CertifiedKey>>,
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
pub(crate) fn load_checked(
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

/// The system's CA certificates; the error says none were found.
pub fn system_roots() -> Result<rustls::RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(
            "the system's CA certificates, and none were found (install ca-certificates, or set ca_file)"
                .into(),
        );
    }
    Ok(roots)
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

/// The certificates in service: rustls asks it at every handshake. A reload replaces the
/// configured table whole; the ACME manager installs what it obtains; a TLS-ALPN-01
/// validation (ALPN `acme-tls/1`) is answered from the challenges in progress.
#[derive(Debug)]
pub struct CertStore {
    table: RwLock<Arc<CertTable>>,
    obtained: RwLock<Arc<Obtained>>,
    challenges: Arc<Challenges>,
}

impl CertStore {
    pub fn new(table: CertTable, challenges: Arc<Challenges>) -> Self {
        Self {
            table: RwLock::new(Arc::new(table)),
            obtained: RwLock::new(Arc::default()),
            challenges,
        }
    }

    pub fn table(&self) -> Arc<CertTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn replace(&self, table: CertTable) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    /// Puts an obtained certificate in service for `names` (replacing the one it renews).
    /// `first`: it is the first configured ACME certificate.
    pub fn install(&self, names: &[String], key: Arc<CertifiedKey>, first: bool) {
        let mut slot = self.obtained.write().unwrap_or_else(|e| e.into_inner());
        let mut next = Obtained::clone(&slot);
        for name in names {
            next.by_name
                .insert(name.to_ascii_lowercase(), Arc::clone(&key));
        }
        if first {
            next.first = Some(key);
        }
        *slot = Arc::new(next);
    }

    /// The certificate a handshake naming `sni` gets (what rustls is given).
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let obtained = Arc::clone(&self.obtained.read().unwrap_or_else(|e| e.into_inner()));
        Selection::new(sni).pick(&self.table(), &obtained)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: a validation offers `acme-tls/1` alone; it gets the challenge
        // certificate for its name, or nothing (no other certificate is shown to it).
        let acme = hello
            .alpn()
            .map(|mut offered| offered.any(|p| p == ACME_TLS_ALPN))
            .unwrap_or(false);
        if acme {
            return self.challenges.tls_alpn01(hello.server_name()?);
        }
        self.select(hello.server_name())
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
