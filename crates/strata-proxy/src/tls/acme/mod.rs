//! Automatic certificates (ACME, RFC 8555): for each `[[tls.acme.certificate]]`, the
//! node orders a certificate from the CA, proves it serves the names (TLS-ALPN-01 on the
//! `https` listeners, or HTTP-01 on the `http` ones, answered from [`Challenges`]), keeps
//! the result on disk ([`store`]) and puts it in service ([`CertStore::install`]), then
//! renews it at two thirds of its lifetime ([`schedule`]).
//!
//! The protocol is instant-acme's; what is here is when to order, how the challenges are
//! answered by the node's own listeners, and what happens on failure: the error is logged
//! and counted, the order is retried with backoff, and the certificate in service (from
//! disk, or the previous one) stays in service until a new one replaces it. A CA that is
//! down therefore costs nothing until the certificate it should renew expires.

pub mod challenges;
mod client;
pub mod schedule;
mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, Key, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::pki_types::PrivateKeyDer;
use tokio::sync::watch;

pub use self::challenges::{Challenges, Pending, ACME_TLS_ALPN, HTTP01_PREFIX};
use self::client::AcmeHttp;
use self::schedule::Schedule;
use self::store::Store;
use super::CertStore;
use crate::clock::Clock;
use crate::config::{AcmeSection, ChallengeKind, ConfigError};
use crate::metrics::Metrics;

/// How often the schedule is looked at (on the node clock).
const TICK: Duration = Duration::from_secs(1);
/// How long the CA may take to validate the challenges, then to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(90);
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(90);

/// Orders and renews the configured certificates for as long as the node runs.
pub struct Manager {
    section: AcmeSection,
    certs: Arc<CertStore>,
    challenges: Arc<Challenges>,
    store: Store,
    http: AcmeHttp,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// One per configured certificate, in order.
    managed: Vec<Managed>,
}

struct Managed {
    names: Vec<String>,
    schedule: Schedule,
}

impl Manager {
    /// Opens the storage and puts the certificates it holds in service at once (a
    /// restart serves what the node had, before the CA is asked anything).
    pub fn start(
        section: &AcmeSection,
        certs: Arc<CertStore>,
        challenges: Arc<Challenges>,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        let store = Store::open(&section.storage)
            .map_err(|why| ConfigError::new("tls.acme.storage", why))?;
        let http = AcmeHttp::new(section.ca_file.as_deref())
            .map_err(|why| ConfigError::new("tls.acme.ca_file", why))?;
        let mut manager = Self {
            section: section.clone(),
            certs,
            challenges,
            store,
            http,
            clock,
            metrics,
            managed: section
                .certificates
                .iter()
                .map(|c| Managed {
                    names: c.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
                    schedule: Schedule::default(),
                })
                .collect(),
        };
        for i in 0..manager.managed.len() {
            if manager.install(i, None) {
                tracing::info!(names = ?manager.managed[i].names, "serving the stored ACME certificate");
            }
        }
        Ok(manager)
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            for i in 0..self.managed.len() {
                let now = self.clock.wall();
                if !self.managed[i].schedule.due(now) {
                    continue;
                }
                let ordered = tokio::select! {
                    ordered = self.order(&self.managed[i].names) => ordered,
                    _ = shutdown.changed() => return,
                };
                let outcome = ordered.and_then(|(chain, key)| {
                    self.store.save(&self.managed[i].names, &chain, &key)?;
                    if self.install(i, Some(self.clock.wall())) {
                        Ok(())
                    } else {
                        Err("the CA's certificate does not load (see above)".into())
                    }
                });
                let m = &mut self.managed[i];
                match outcome {
                    Ok(()) => {
                        self.metrics.acme_order("issued");
                        tracing::info!(names = ?m.names, renew_at = ?m.schedule.renew_at().map(httpdate::fmt_http_date), "ACME certificate obtained and in service");
                    }
                    Err(error) => {
                        self.metrics.acme_order("failed");
                        let wait = m.schedule.failed(now, self.section.retry.0);
                        tracing::warn!(names = ?m.names, %error, failures = m.schedule.failures(), retry_in = ?wait, "ACME order failed; the certificate in service (if any) stays");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Loads certificate `i` from storage and puts it in service, its schedule counted
    /// from `arrived` (None: it was stored before this start, so it arrived at the latest
    /// when it became valid). False when storage holds no usable certificate for it.
    fn install(&mut self, i: usize, arrived: Option<SystemTime>) -> bool {
        let now = self.clock.wall();
        let m = &mut self.managed[i];
        let Some((key, info)) = self.store.load(&m.names, now) else {
            return false;
        };
        let arrived = arrived.unwrap_or(info.not_before.min(now));
        self.certs.install(&m.names, Arc::new(key), i == 0);
        m.schedule
            .installed(arrived, info.not_before, info.not_after);
        self.metrics
            .acme_certificate_expiry(&m.names[0], info.not_after);
        true
    }

    /// One order, start to finish: the account (made or found from the stored key), the
    /// challenges answered while the CA validates, then the chain and its new key (PEM).
    async fn order(&self, names: &[String]) -> Result<(String, String), String> {
        let key = self.store.account_key()?;
        let signer = Key::from_pkcs8_der(key.clone_key()).map_err(|e| e.to_string())?;
        // Finds the account of this key, or opens one (a CA that forgot it: a new one).
        let (account, _) = Account::builder_with_http(Box::new(self.http.clone()))
            .create_from_key(
                (signer, PrivateKeyDer::Pkcs8(key)),
                self.section.directory.clone(),
            )
            .await
            .map_err(|e| format!("account: {e}"))?;
        if !self.section.contact.is_empty() {
            let contact: Vec<&str> = self.section.contact.iter().map(String::as_str).collect();
            account
                .update_contacts(&contact)
                .await
                .map_err(|e| format!("account contact: {e}"))?;
        }
        let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        // Answered until the CA has validated (or the order failed): then dropped.
        let mut answering: Vec<Pending> = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
            let name = authorization.identifier().to_string();
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("the authorization for {name} is {other:?}")),
            }
            let kind = match self.section.challenge {
                ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
                ChallengeKind::Http01 => ChallengeType::Http01,
            };
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or_else(|| format!("the CA offers no {kind:?} challenge for {name}"))?;
            let answer = challenge.key_authorization();
            answering.push(match self.section.challenge {
                ChallengeKind::Http01 => self
                    .challenges
                    .serve_http01(&challenge.token, answer.as_str()),
                ChallengeKind::TlsAlpn01 => self
                    .challenges
                    .serve_tls_alpn01(&name, answer.digest().as_ref())?,
            });
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge for {name}: {e}"))?;
        }
        let status = order
            .poll_ready(&RetryPolicy::new().timeout(VALIDATION_TIMEOUT))
            .await
            .map_err(|e| format!("validation: {e}"))?;
        drop(answering);
        if status != OrderStatus::Ready {
            return Err(format!(
                "the CA did not validate the names: order {status:?}"
            ));
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(ISSUANCE_TIMEOUT))
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        Ok((chain, key_pem))
    }
}
