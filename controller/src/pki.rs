//! The controller's certificates in `<data_dir>/pki`: made on first start,
//! reused on the next, never overwritten; and the rustls server config that
//! checks client certificates against our CA.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ebb_certs::Ca;
use ebb_core::local::PkiPaths;
use rustls::server::WebPkiClientVerifier;
use time::OffsetDateTime;
use tracing::info;

/// The admin cert made on first start, used by `ebbctl` on this machine.
pub const LOCAL_ADMIN_NAME: &str = "local-admin";
/// A server cert closer to expiry than this is re-issued on start.
const SERVER_RENEW_BEFORE: time::Duration = time::Duration::days(30);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Certs(#[from] ebb_certs::Error),
    #[error(
        "{present} exists but {missing} does not; restore {missing}, or move both away to make a new CA (every agent cert must then be re-issued)"
    )]
    HalfCa { present: PathBuf, missing: PathBuf },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The CA and the files the controller serves with.
pub struct Pki {
    pub ca: Arc<Ca>,
    pub paths: PkiPaths,
}

impl Pki {
    /// Loads the CA (the operator's, or ours from the data dir, made if
    /// absent) and makes the server and admin certs if they are missing or,
    /// for the server cert, near expiry or missing a name.
    pub fn bootstrap(
        data_dir: &Path,
        trust_domain: &str,
        operator_ca: Option<(&Path, &Path)>,
        server_names: &[String],
        listen: SocketAddr,
    ) -> Result<Self, PkiError> {
        let paths = PkiPaths::new(data_dir);
        let ca = match operator_ca {
            Some((crt, key)) => Ca::load(crt, key)?,
            None => load_or_make_ca(&paths, trust_domain)?,
        };
        let ips = server_ips(listen);
        let (crt, key) = paths.server();
        if !server_cert_usable(&crt, &key, server_names) {
            ca.issue_server(server_names, &ips)?.write(&crt, &key)?;
            info!(cert = %crt.display(), "issued the controller's server certificate");
        }
        let (crt, key) = paths.admin();
        if !crt.exists() || !key.exists() {
            ca.issue_admin(LOCAL_ADMIN_NAME, ebb_certs::ADMIN_VALIDITY)?
                .write(&crt, &key)?;
            info!(cert = %crt.display(), "issued the local admin certificate for ebbctl");
        }
        // Agents and ebbctl need the CA cert next to the others.
        let ca_copy = paths.file("ca.crt");
        if !ca_copy.exists() {
            ebb_certs::write_atomic(&ca_copy, ca.cert_pem().as_bytes(), 0o644)?;
        }
        Ok(Self {
            ca: Arc::new(ca),
            paths,
        })
    }

    /// A rustls server config that verifies client certs against our CA.
    /// A client without one may finish the handshake, for
    /// `JoinService.Join` alone: every other service refuses a caller
    /// without a certificate (`admin_only`, `AgentApi::instance_of`). The
    /// chain sent ends with the CA cert, so that `ebb-agent join` can find
    /// the CA its `--ca-hash` pins.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in ebb_certs::load_certs(&self.paths.file("ca.crt"))? {
            roots.add(cert)?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let (crt, key) = self.paths.server();
        let mut chain = ebb_certs::load_certs(&crt)?;
        chain.truncate(1);
        chain.extend(ebb_certs::load_certs(&self.paths.file("ca.crt"))?);
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, ebb_certs::load_key(&key)?)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn load_or_make_ca(paths: &PkiPaths, trust_domain: &str) -> Result<Ca, PkiError> {
    let (crt, key) = paths.ca();
    match (crt.exists(), key.exists()) {
        (true, true) => Ok(Ca::load(&crt, &key)?),
        (false, false) => {
            let ca = Ca::generate(trust_domain, ebb_certs::CA_VALIDITY)?;
            ca.to_issued().write(&crt, &key)?;
            info!(cert = %crt.display(), trust_domain, "made a new CA");
            Ok(ca)
        }
        (true, false) => Err(PkiError::HalfCa {
            present: crt,
            missing: key,
        }),
        (false, true) => Err(PkiError::HalfCa {
            present: key,
            missing: crt,
        }),
    }
}

/// Loopback, plus the listen address when it is a concrete one.
fn server_ips(listen: SocketAddr) -> Vec<IpAddr> {
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ips.contains(&ip) {
        ips.push(ip);
    }
    ips
}

fn server_cert_usable(crt: &Path, key: &Path, names: &[String]) -> bool {
    if !key.exists() {
        return false;
    }
    let Ok(certs) = ebb_certs::load_certs(crt) else {
        return false;
    };
    let Ok(info) = ebb_certs::describe(&certs[0]) else {
        return false;
    };
    let fresh = info.not_after - OffsetDateTime::now_utc() > SERVER_RENEW_BEFORE;
    fresh && names.iter().all(|n| info.dns_names.contains(n))
}
