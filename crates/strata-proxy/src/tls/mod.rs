//! TLS, both ways: the certificates `https` listeners present ([`ServerTls`], with
//! [`certs`], and those obtained by [`acme`]), and how origins' certificates are checked
//! ([`origin`]).
//!
//! rustls on the `aws-lc-rs` provider (RSA signing at OpenSSL's speed; `ring` was 1.74x
//! slower, which full RSA handshakes paid for): TLS 1.3 and
//! 1.2 only, ECDHE key exchange and AEAD ciphers only, which is all rustls implements.
//! Sessions resume by ticket (TLS 1.3 PSK and TLS 1.2 tickets) with keys rustls rotates
//! every 6 hours, shared by every connection of the node (one `ServerConfig`), and by
//! TLS 1.2 session ID from a bounded in-memory cache.

pub mod acme;
pub mod certs;
pub mod origin;

use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::{ChallengeKind, ConfigError, TlsSection};

pub use self::acme::{Challenges, ACME_TLS_ALPN};
pub use self::certs::{CertStore, CertTable};
pub use self::origin::OriginTls;

/// The cryptography every TLS config of the node uses.
pub fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Who may present a client certificate: nobody is asked without `tls.client_ca`; with it,
/// every client is asked, none is required (the public has none), and a certificate that
/// is presented must chain to the cluster CA or the handshake fails.
fn client_verifier(section: &TlsSection) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
    let Some(ca) = &section.client_ca else {
        return Ok(Arc::new(rustls::server::NoClientAuth));
    };
    let roots = certs::load_ca(ca).map_err(|why| ConfigError::new("tls.client_ca", why))?;
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| ConfigError::new("tls.client_ca", e.to_string()))
}

/// The TLS side of the `https` listeners: one config for all of them, its certificates
/// replaceable while it serves.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    store: Arc<CertStore>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    /// Client certificates from the cluster CA, asked for (not required) when
    /// `tls.client_ca` is set.
    clients: Arc<dyn ClientCertVerifier>,
}

impl ServerTls {
    /// `challenges`: the ACME validations in progress, answered in the handshake.
    pub fn new(section: &TlsSection, challenges: Arc<Challenges>) -> Result<Self, ConfigError> {
        let table = CertTable::load(section, SystemTime::now())?;
        let store = Arc::new(CertStore::new(table, challenges));
        let clients = client_verifier(section)?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError::new("tls", e.to_string()))?
            .with_client_cert_verifier(Arc::clone(&clients))
            .with_cert_resolver(Arc::clone(&store) as Arc<_>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if section.acme.enabled() && section.acme.challenge == ChallengeKind::TlsAlpn01 {
            // Only a validation offers it; the connection is closed after the handshake.
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| ConfigError::new("tls", format!("session tickets: {e}")))?;
        config.ticketer = Arc::clone(&ticketer);
        // One TLS 1.3 ticket per handshake, as OpenSSL sends on resumption: the ticket is
        // stateless and can be used again, and each one is work for the client (measured:
        // resumed connections per second under a CPU-bound client, 2 tickets 0.93-0.97x
        // nginx's).
        config.send_tls13_tickets = 1;
        config.session_storage = ServerSessionMemoryCache::new(section.session_cache_size());
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            store,
            ticketer,
            clients,
        })
    }

    /// The TLS config for QUIC: TLS 1.3 only (QUIC has no other), ALPN `h3`, the same
    /// certificates (a reload reaches both) and ticket keys, no early data (0-RTT off).
    pub fn quic(&self) -> Result<ServerConfig, ConfigError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ConfigError::new("tls", e.to_string()))?
            .with_client_cert_verifier(Arc::clone(&self.clients))
            .with_cert_resolver(Arc::clone(&self.store) as Arc<_>);
        config.alpn_protocols = vec![b"h3".to_vec()];
        config.ticketer = Arc::clone(&self.ticketer);
        config.max_early_data_size = 0;
        Ok(config)
    }

    /// The certificates in service (the ACME manager installs into it).
    pub fn certs(&self) -> &Arc<CertStore> {
        &self.store
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the certificates again; on any error the ones in service stay.
    pub fn reload(&self, section: &TlsSection) -> Result<(), ConfigError> {
        let table = CertTable::load(section, SystemTime::now())?;
        self.store.replace(table);
        Ok(())
    }
}
