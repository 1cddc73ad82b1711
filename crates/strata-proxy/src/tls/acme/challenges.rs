//! The answers to ACME validations in progress: `http-01` tokens the plain HTTP listeners
//! answer, and `tls-alpn-01` certificates the TLS listeners present to a handshake that
//! offers ALPN `acme-tls/1`.
//!
//! Entries live exactly as long as the [`Pending`] guard the manager holds while the CA
//! validates, so nothing is left answering after an order ends, however it ends.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of a TLS-ALPN-01 validation (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The path prefix of an HTTP-01 validation (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Debug, Default)]
pub struct Challenges {
    /// token -> key authorization.
    http: RwLock<HashMap<String, String>>,
    /// host name -> the self-signed validation certificate.
    tls: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The key authorization for an HTTP-01 `token`, if a validation of it is under way.
    pub fn http01(&self, token: &str) -> Option<String> {
        read(&self.http).get(token).cloned()
    }

    /// The validation certificate for `name`, if a TLS-ALPN-01 validation is under way.
    pub fn tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        read(&self.tls).get(&name).cloned()
    }

    /// Answers HTTP-01 for `token` until the guard is dropped.
    pub fn serve_http01(self: &Arc<Self>, token: &str, key_authorization: &str) -> Pending {
        write(&self.http).insert(token.to_string(), key_authorization.to_string());
        Pending {
            challenges: Arc::clone(self),
            entry: Entry::Http(token.to_string()),
        }
    }

    /// Answers TLS-ALPN-01 for `name` until the guard is dropped: a certificate for
    /// `name` alone carrying the SHA-256 of the key authorization in a critical
    /// `id-pe-acmeIdentifier` extension (RFC 8737 §3).
    pub fn serve_tls_alpn01(
        self: &Arc<Self>,
        name: &str,
        key_authorization_sha256: &[u8],
    ) -> Result<Pending, String> {
        let name = name.to_ascii_lowercase();
        let cert = validation_certificate(&name, key_authorization_sha256)?;
        write(&self.tls).insert(name.clone(), Arc::new(cert));
        Ok(Pending {
            challenges: Arc::clone(self),
            entry: Entry::Tls(name),
        })
    }
}

fn validation_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    if digest.len() != 32 {
        return Err("the key authorization digest is not SHA-256".into());
    }
    let mut params =
        CertificateParams::new(vec![name.to_string()]).map_err(|e| format!("{name}: {e}"))?;
    params
        .custom_extensions
        .push(CustomExtension::new_acme_identifier(digest));
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = super::super::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

// === impl Pending ===

/// A challenge being answered; dropping it stops the answer.
#[derive(Debug)]
pub struct Pending {
    challenges: Arc<Challenges>,
    entry: Entry,
}

#[derive(Debug)]
enum Entry {
    Http(String),
    Tls(String),
}

impl Drop for Pending {
    fn drop(&mut self) {
        match &self.entry {
            Entry::Http(token) => {
                write(&self.challenges.http).remove(token);
            }
            Entry::Tls(name) => {
                write(&self.challenges.tls).remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_last_as_long_as_the_guard() {
        let c = Arc::new(Challenges::default());
        let http = c.serve_http01("tok", "tok.thumb");
        assert_eq!(c.http01("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(c.http01("other"), None);
        drop(http);
        assert_eq!(c.http01("tok"), None);

        let tls = c.serve_tls_alpn01("Shop.Example", &[7; 32]).unwrap();
        assert!(c.tls_alpn01("shop.example.").is_some());
        drop(tls);
        assert!(c.tls_alpn01("shop.example").is_none());
    }

    /// RFC 8737 §3: the certificate names the identifier alone and carries the digest in
    /// a critical id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31) extension as an OCTET STRING.
    #[test]
    fn rfc8737_3_validation_certificate_carries_the_digest() {
        let digest = [0xab; 32];
        let cert = validation_certificate("shop.example", &digest).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.cert[0].as_ref()).unwrap();
        let ext = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        let mut der = vec![0x04, 32];
        der.extend_from_slice(&digest);
        assert_eq!(ext.value, der.as_slice());
        let info = crate::tls::certs::inspect(&cert.cert[0]).unwrap();
        assert_eq!(info.dns_names, vec!["shop.example".to_string()]);
        assert!(validation_certificate("shop.example", &[0; 20]).is_err());
    }
}
