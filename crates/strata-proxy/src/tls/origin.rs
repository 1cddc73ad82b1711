//! TLS to `https://` origins: which name each origin is asked for (SNI) and checked
//! against, and how its certificate is verified.
//!
//! One client config serves every origin (one connection pool). Verification is chosen
//! by the name being verified: the system roots by default, a configured CA bundle
//! (`ca_file`), or none at all when an origin sets `tls_verify = false` (logged as a
//! warning at start). The name is the origin URL's host, or the service's `origin_host`
//! (without its port) when set: an origin addressed by IP still has its certificate
//! checked for the site's name.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};

use super::certs::load_ca;
use crate::config::{ConfigError, NodeConfig, OriginEntry};
use crate::upstream::Origin;

/// How one name's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Trust {
    SystemRoots,
    CaFile(PathBuf),
    Nothing,
}

/// Every https origin's name and trust, from the configuration.
#[derive(Debug, Default)]
pub struct OriginTls {
    /// Origin authority, lowercase -> the origin, the name sent in SNI, and whether h2 is
    /// offered to it.
    names: HashMap<String, (Origin, ServerName<'static>, bool)>,
    /// SNI name -> how it is verified.
    trust: HashMap<String, Trust>,
    /// This node's certificate for the tiers (`tls.client_cert`, `tls.client_key`).
    identity: Option<(PathBuf, PathBuf)>,
}

impl OriginTls {
    /// Collects the https origins of every service (and parent). Two origins that share
    /// an address but want different names, or a name with two trusts, are refused:
    /// they would share connections.
    pub fn from_config(config: &NodeConfig) -> Result<Self, ConfigError> {
        let mut tls = Self::default();
        for (i, service) in config.services.iter().enumerate() {
            for (o, entry) in service.origins.iter().enumerate() {
                let at = format!("service[{i}].origins[{o}]");
                let origin =
                    Origin::parse(entry.url()).map_err(|why| ConfigError::new(&at, why))?;
                if origin.scheme != http::uri::Scheme::HTTPS {
                    continue;
                }
                let trust = match entry {
                    OriginEntry::Detailed(d) if !d.tls_verify => Trust::Nothing,
                    OriginEntry::Detailed(d) => {
                        d.ca_file.clone().map_or(Trust::SystemRoots, Trust::CaFile)
                    }
                    OriginEntry::Url(_) => Trust::SystemRoots,
                };
                let h2 = match entry {
                    OriginEntry::Detailed(d) => d.http2,
                    OriginEntry::Url(_) => true,
                };
                let sni = service
                    .origin_host
                    .as_deref()
                    .map(host_without_port)
                    .unwrap_or_else(|| origin.authority.host().to_string());
                tls.add(&at, &origin, &sni, trust, h2)?;
            }
        }
        // The tiers: verified against the cluster CA when there is one (ring peers need it:
        // they are named by address), else, for parents, the system's roots.
        let cluster = config.tls.client_ca.clone().map(Trust::CaFile);
        let tiers = config
            .parents
            .shields
            .iter()
            .enumerate()
            .map(|(i, url)| (format!("parents.shields[{i}]"), url))
            .chain(
                config
                    .ring
                    .peers
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.name != config.node.name)
                    .map(|(i, p)| (format!("ring.peers[{i}].url"), &p.url)),
            );
        for (at, url) in tiers {
            let origin = Origin::parse(url).map_err(|why| ConfigError::new(&at, why))?;
            if origin.scheme == http::uri::Scheme::HTTPS {
                let sni = origin.authority.host().to_string();
                let trust = cluster.clone().unwrap_or(Trust::SystemRoots);
                tls.add(&at, &origin, &sni, trust, true)?;
            }
        }
        tls.identity = config
            .tls
            .client_cert
            .clone()
            .zip(config.tls.client_key.clone());
        Ok(tls)
    }

    fn add(
        &mut self,
        at: &str,
        origin: &Origin,
        sni: &str,
        trust: Trust,
        h2: bool,
    ) -> Result<(), ConfigError> {
        let sni = sni
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let name = ServerName::try_from(sni.clone())
            .map_err(|_| ConfigError::new(at, format!("'{sni}' is not a name TLS can check")))?;
        let authority = origin.authority.as_str().to_ascii_lowercase();
        // An address two services reach: h2 only if both allow it.
        let h2 = h2 && self.names.get(&authority).is_none_or(|(_, _, h2)| *h2);
        if let Some((_, known, _)) = self.names.get(&authority) {
            if *known != name {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "{authority} is already reached as '{}'; one address, one TLS name",
                        known.to_str()
                    ),
                ));
            }
        }
        if let Some(known) = self.trust.get(&sni) {
            if *known != trust {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "'{sni}' is verified differently by another origin (tls_verify, ca_file)"
                    ),
                ));
            }
        }
        if let Trust::CaFile(path) = &trust {
            load_ca(path).map_err(|why| ConfigError::new(format!("{at}.ca_file"), why))?;
        }
        self.names.insert(authority, (origin.clone(), name, h2));
        self.trust.insert(sni, trust);
        Ok(())
    }

    /// The client config for upstream connections (ALPN `h2`, `http/1.1`).
    pub fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        let provider = Arc::new(super::provider());
        let mut by_name = HashMap::new();
        let mut verifiers: HashMap<Trust, Check> = HashMap::new();
        for (name, trust) in &self.trust {
            if *trust == Trust::Nothing {
                tracing::warn!(%name, "an https origin's certificate is not verified (tls_verify = false)");
            }
            let check = match verifiers.entry(trust.clone()) {
                Entry::Occupied(known) => known.get().clone(),
                Entry::Vacant(new) => new.insert(verifier_for(trust, &provider)?).clone(),
            };
            by_name.insert(name.clone(), check);
        }
        let verifier = ByName {
            by_name,
            // A name not configured (none should reach here) gets the strictest check.
            fallback: verifiers.get(&Trust::SystemRoots).cloned(),
            provider: Arc::clone(&provider),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError::new("tls", e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &self.identity {
            // Presented to whoever asks for a client certificate: the tiers do; origins
            // rarely ask, and would learn only this node's cluster name.
            Some((cert, key)) => {
                let identity =
                    super::certs::load_pair(cert, key, "tls.client_cert", "tls.client_key")?;
                config.with_client_cert_resolver(Arc::new(Identity(Arc::new(identity))))
            }
            None => config.with_no_client_auth(),
        };
        // h2 when the origin agrees: requests carry the site as their URI's authority,
        // so `:authority` names what `Host` does (RFC 9113 §8.3.1; see
        // `upstream::connect`).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Every https origin (and tier), the name it is asked for in SNI, and whether h2 is
    /// offered to it.
    pub fn origins(&self) -> impl Iterator<Item = (&Origin, &ServerName<'static>, bool)> {
        self.names
            .values()
            .map(|(origin, name, h2)| (origin, name, *h2))
    }
}

fn host_without_port(host: &str) -> String {
    host.parse::<http::uri::Authority>()
        .map_or_else(|_| host.to_string(), |a| a.host().to_string())
}

/// How one origin name's certificate is checked.
#[derive(Debug, Clone)]
enum Check {
    WebPki(Arc<WebPkiServerVerifier>),
    /// `tls_verify = false`: any certificate (the handshake signature is still checked
    /// against it, by [`ByName`]).
    Nothing,
}

fn verifier_for(trust: &Trust, provider: &Arc<CryptoProvider>) -> Result<Check, ConfigError> {
    let roots = match trust {
        Trust::Nothing => return Ok(Check::Nothing),
        Trust::SystemRoots => super::certs::system_roots().map_err(|why| {
            ConfigError::new(
                "service.origins",
                format!("https origins are verified against {why}"),
            )
        })?,
        Trust::CaFile(path) => load_ca(path).map_err(|why| ConfigError::new("ca_file", why))?,
    };
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map(Check::WebPki)
        .map_err(|e| ConfigError::new("service.origins", e.to_string()))
}

/// This node's certificate, offered to every server that asks for one.
#[derive(Debug)]
struct Identity(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hints: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

// === impl ByName ===

/// Verifies each origin by the trust configured for the name it was asked as.
#[derive(Debug)]
struct ByName {
    by_name: HashMap<String, Check>,
    fallback: Option<Check>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ByName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let name = server_name.to_str();
        let check = self
            .by_name
            .get(name.as_ref())
            .or(self.fallback.as_ref())
            .ok_or(Error::General("no trust configured for this origin".into()))?;
        match check {
            Check::WebPki(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            Check::Nothing => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_host_port_is_not_part_of_the_name() {
        assert_eq!(host_without_port("example.com:8443"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[2001:db8::1]:443"), "[2001:db8::1]");
        assert_eq!(host_without_port("[2001:db8::1]"), "[2001:db8::1]");
    }
}
