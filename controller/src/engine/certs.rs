//! The certificates the controller issues: agents' at launch and when they
//! renew over their stream, admins' on request, and its own server
//! certificate, re-issued live at two thirds of its life. Each is recorded
//! in the store's registry, which `ListCertificates` and `/metrics` read.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ebb_certs::{CertInfo, Identity, Issued};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::engine::{Engine, EngineError};
use crate::store::{CertKind, CertRecord, Write};

/// Admin certs are held by people and tools: a year unless asked otherwise.
pub const DEFAULT_ADMIN_DAYS: u32 = 365;
/// The longest admin cert `IssueCertificate` signs.
pub const MAX_ADMIN_DAYS: u32 = 3650;

/// How long issued certificates live.
#[derive(Debug, Clone)]
pub struct CertSettings {
    pub agent_lifetime: Duration,
}

impl Default for CertSettings {
    fn default() -> Self {
        Self {
            agent_lifetime: ebb_certs::AGENT_VALIDITY,
        }
    }
}

/// Whether two thirds of the life between `not_before` and `not_after`
/// (Unix ms) have passed at `now_ms`: when a certificate is renewed.
pub fn renewal_due(not_before_ms: i64, not_after_ms: i64, now_ms: i64) -> bool {
    now_ms >= not_before_ms + (not_after_ms - not_before_ms) * 2 / 3
}

fn unix_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A registry record of `info`, issued at `now_ms`.
fn record_of(kind: CertKind, info: &CertInfo, now_ms: i64) -> CertRecord {
    let identity = match (&info.identity, info.dns_names.first()) {
        (Some(id), _) => id.uri(),
        (None, Some(name)) => name.clone(),
        (None, None) => info.subject.clone(),
    };
    CertRecord {
        serial: info.serial.clone(),
        identity,
        kind,
        not_before_ms: unix_ms(info.not_before),
        not_after_ms: unix_ms(info.not_after),
        issued_at_ms: now_ms,
    }
}

impl Engine {
    /// Records the certificate in `cert_pem` in the registry.
    pub fn record_certificate(
        &self,
        kind: CertKind,
        cert_pem: &str,
    ) -> Result<CertRecord, EngineError> {
        let info = ebb_certs::describe_pem(cert_pem)?;
        let mut record = record_of(kind, &info, self.clock.now_ms());
        if kind == CertKind::Ca {
            // A CA names its trust domain alone.
            record.identity = format!("spiffe://{}", self.ca.trust_domain());
        }
        self.store
            .commit(vec![Write::PutCertificate(record.clone())])?;
        Ok(record)
    }

    /// A new agent certificate for a launched instance, recorded.
    pub fn issue_agent_certificate(&self, instance_id: &str) -> Result<Issued, EngineError> {
        let issued = self
            .ca
            .issue_agent(instance_id, self.certs.agent_lifetime)?;
        self.record_certificate(CertKind::Agent, &issued.cert_pem)?;
        Ok(issued)
    }

    /// Signs an agent's request for `instance_id` (never for a name the
    /// request asks for), recorded: a renewal for the instance its stream's
    /// certificate names, or a join for the instance the join mints.
    pub fn sign_agent_csr(&self, instance_id: &str, csr_pem: &str) -> Result<String, EngineError> {
        let identity = Identity::instance(self.ca.trust_domain(), instance_id)?;
        let cert_pem = self
            .ca
            .sign_csr(csr_pem, &identity, self.certs.agent_lifetime)?;
        self.record_certificate(CertKind::Agent, &cert_pem)?;
        Ok(cert_pem)
    }

    /// Signs a target agent's request for target `name`, with an agent's
    /// lifetime, recorded: a join with a target token, or a renewal over
    /// the target's stream.
    pub fn sign_target_csr(&self, name: &str, csr_pem: &str) -> Result<String, EngineError> {
        let identity = Identity::target(self.ca.trust_domain(), name)?;
        let cert_pem = self
            .ca
            .sign_csr(csr_pem, &identity, self.certs.agent_lifetime)?;
        self.record_certificate(CertKind::Target, &cert_pem)?;
        Ok(cert_pem)
    }

    /// Signs an admin's request for admin `name`, living `days` (the
    /// default when 0), recorded.
    pub fn issue_admin_certificate(
        &self,
        name: &str,
        csr_pem: &str,
        days: u32,
    ) -> Result<(String, CertRecord), EngineError> {
        let identity = Identity::admin(self.ca.trust_domain(), name)?;
        self.issue_client_certificate(CertKind::Admin, &identity, csr_pem, days)
    }

    /// Signs a CSR for a target agent (`spiffe://<td>/target/<name>`),
    /// for `days` (0: the admin default, a year), and records it.
    pub fn issue_target_certificate(
        &self,
        name: &str,
        csr_pem: &str,
        days: u32,
    ) -> Result<(String, CertRecord), EngineError> {
        let identity = Identity::target(self.ca.trust_domain(), name)?;
        self.issue_client_certificate(CertKind::Target, &identity, csr_pem, days)
    }

    fn issue_client_certificate(
        &self,
        kind: CertKind,
        identity: &Identity,
        csr_pem: &str,
        days: u32,
    ) -> Result<(String, CertRecord), EngineError> {
        let days = if days == 0 { DEFAULT_ADMIN_DAYS } else { days };
        let validity = Duration::from_secs(u64::from(days) * 86_400);
        let cert_pem = self.ca.sign_csr(csr_pem, identity, validity)?;
        let record = self.record_certificate(kind, &cert_pem)?;
        Ok((cert_pem, record))
    }

    /// The soonest expiry of each kind among the registry's live
    /// certificates, as Prometheus text. Expired ones are left out: an
    /// expired cert nobody renewed is gone from service, and would pin the
    /// gauge in the past; each kind whose certs all expired has no line.
    pub fn render_cert_metrics(&self) -> String {
        let mut out = String::from(
            "# HELP ebb_certificate_expiry_seconds Soonest notAfter (Unix seconds) among the live certificates of each kind the controller issued, and its CA's.\n# TYPE ebb_certificate_expiry_seconds gauge\n",
        );
        let now = self.clock.now_ms();
        let Ok(records) = self.store.list_certificates() else {
            return out;
        };
        for kind in CertKind::ALL {
            let soonest = records
                .iter()
                .filter(|r| r.kind == kind && r.not_after_ms > now)
                .map(|r| r.not_after_ms)
                .min();
            if let Some(ms) = soonest {
                let _ = writeln!(
                    out,
                    "ebb_certificate_expiry_seconds{{kind=\"{}\"}} {}",
                    kind.as_str(),
                    ms / 1000
                );
            }
        }
        out
    }
}

/// The controller's server certificate, served to every new handshake and
/// re-issued live (same names, a new key) without touching open connections.
pub struct ServerCert {
    ca: Arc<ebb_certs::Ca>,
    names: Vec<String>,
    ips: Vec<IpAddr>,
    lifetime: Duration,
    files: (PathBuf, PathBuf),
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<(Arc<CertifiedKey>, CertInfo)>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("names", &self.names)
            .field("serial", &self.info().serial)
            .finish()
    }
}

impl ServerCert {
    /// Serves the cert and key already in `files` (written by the PKI
    /// bootstrap); re-issues into them with `lifetime`.
    pub fn load(
        ca: Arc<ebb_certs::Ca>,
        names: Vec<String>,
        ips: Vec<IpAddr>,
        lifetime: Duration,
        files: (PathBuf, PathBuf),
    ) -> Result<Self, EngineError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let issued = Issued {
            cert_pem: std::fs::read_to_string(&files.0).map_err(|source| ebb_certs::Error::Io {
                path: files.0.clone(),
                source,
            })?,
            key_pem: std::fs::read_to_string(&files.1).map_err(|source| ebb_certs::Error::Io {
                path: files.1.clone(),
                source,
            })?,
        };
        let current = RwLock::new(certified(&provider, &ca, &issued)?);
        Ok(Self {
            ca,
            names,
            ips,
            lifetime,
            files,
            provider,
            current,
        })
    }

    /// The certificate now served.
    pub fn info(&self) -> CertInfo {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// The PEM of the certificate now served.
    pub fn cert_pem(&self) -> Result<String, EngineError> {
        std::fs::read_to_string(&self.files.0).map_err(|source| {
            EngineError::Certs(ebb_certs::Error::Io {
                path: self.files.0.clone(),
                source,
            })
        })
    }

    /// Issues a new server certificate, writes it over the files and
    /// serves it to every handshake from now on.
    pub fn rotate(&self) -> Result<(Issued, CertInfo), EngineError> {
        let issued = self
            .ca
            .issue_server_for(&self.names, &self.ips, self.lifetime)?;
        let next = certified(&self.provider, &self.ca, &issued)?;
        issued.write(&self.files.0, &self.files.1)?;
        let info = next.1.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok((issued, info))
    }
}

/// The served chain: the server certificate, then the CA's, so that
/// `ebb-agent join` can find the CA its `--ca-hash` pins.
fn certified(
    provider: &rustls::crypto::CryptoProvider,
    ca: &ebb_certs::Ca,
    issued: &Issued,
) -> Result<(Arc<CertifiedKey>, CertInfo), EngineError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: String| EngineError::Certs(ebb_certs::Error::Parse(e));
    let mut certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("server certificate: {e}")))?;
    certs.truncate(1);
    let ca_cert = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())
        .map_err(|e| bad(format!("CA certificate: {e}")))?;
    certs.push(ca_cert);
    let first = certs
        .first()
        .ok_or_else(|| bad("server certificate: no PEM certificate".into()))?;
    let info = ebb_certs::describe(first)?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
        .map_err(|e| bad(format!("server key: {e}")))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad(format!("server key: {e}")))?;
    Ok((Arc::new(CertifiedKey::new(certs, key)), info))
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone(),
        )
    }
}

impl Engine {
    /// Re-issues the server certificate now, records it and logs it.
    pub fn rotate_server_certificate_now(
        &self,
        why: &str,
    ) -> Result<(String, CertRecord), EngineError> {
        let server = self.server_cert.as_ref().ok_or_else(|| {
            EngineError::Refused("this controller has no server certificate to rotate".into())
        })?;
        let (issued, info) = server.rotate()?;
        let record = record_of(CertKind::Server, &info, self.clock.now_ms());
        self.store
            .commit(vec![Write::PutCertificate(record.clone())])?;
        info!(serial = %record.serial, not_after_ms = record.not_after_ms, "rotated the server certificate: {why}");
        Ok((issued.cert_pem, record))
    }
}

/// Re-issues the server certificate whenever two thirds of its life have
/// passed, until shutdown. Looks about a hundred times per lifetime (at
/// least every second, at most every ten minutes); a failure is logged
/// and tried again at the next look.
pub async fn rotate_server_loop(
    engine: Arc<Engine>,
    lifetime: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let Some(server) = engine.server_cert.clone() else {
        return;
    };
    let every = (lifetime / 100).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let info = server.info();
        let due = renewal_due(
            unix_ms(info.not_before),
            unix_ms(info.not_after),
            engine.clock.now_ms(),
        );
        if due && let Err(e) = engine.rotate_server_certificate_now("two thirds of its life passed")
        {
            warn!("cannot rotate the server certificate (retrying in {every:?}): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds() {
        assert!(!renewal_due(0, 30_000, 19_999));
        assert!(renewal_due(0, 30_000, 20_000));
        assert!(renewal_due(0, 30_000, 40_000));
        assert!(!renewal_due(1_000, 1_000 + 86_400_000, 1_000 + 57_599_999));
    }
}
