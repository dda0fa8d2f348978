//! The controller's certificates in `<data_dir>/pki`: made on first start,
//! reused on the next (the server and local admin certs re-issued when
//! close to expiry); and the rustls server config that checks client
//! certificates against our CA and serves the live-rotated server cert.

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
/// A server or local admin cert closer to expiry than this is re-issued on
/// start (the server's is also rotated live at two thirds of its life).
const RENEW_BEFORE: time::Duration = time::Duration::days(30);

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
        server_lifetime: std::time::Duration,
    ) -> Result<Self, PkiError> {
        let paths = PkiPaths::new(data_dir);
        private_dir(&paths.dir)?;
        let ca = match operator_ca {
            Some((crt, key)) => Ca::load(crt, key)?,
            None => load_or_make_ca(&paths, trust_domain)?,
        };
        let ips = server_ips(listen);
        let (crt, key) = paths.server();
        ebb_certs::recover_pair(&crt, &key)?;
        if !cert_usable(&crt, &key, server_names) {
            ca.issue_server_for(server_names, &ips, server_lifetime)?
                .write(&crt, &key)?;
            info!(cert = %crt.display(), "issued the controller's server certificate");
        }
        let (crt, key) = paths.admin();
        ebb_certs::recover_pair(&crt, &key)?;
        if !cert_usable(&crt, &key, &[]) {
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

    /// A rustls server config that verifies client certs against our CA
    /// and serves whatever certificate `server` holds at each handshake
    /// (its chain ends with the CA cert, so that `ebb-agent join` can find
    /// the CA its `--ca-hash` pins). A client without a certificate may
    /// finish the handshake, for `JoinService.Join` alone: every other
    /// service refuses a caller without one (`admin_only`,
    /// `AgentApi::instance_of`, and the health and reflection services).
    pub fn server_config(
        &self,
        server: Arc<dyn rustls::server::ResolvesServerCert>,
    ) -> Result<rustls::ServerConfig, PkiError> {
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
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(server);
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// `pki/`, made if absent and readable by the controller alone, whatever
/// an older version or the operator left: the CA key is the fleet.
fn private_dir(dir: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| ebb_certs::Error::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    Ok(())
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
pub fn server_ips(listen: SocketAddr) -> Vec<IpAddr> {
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

/// Whether the cert in `crt` has its key, names every one of `names` and
/// is not within [`RENEW_BEFORE`] of expiry.
fn cert_usable(crt: &Path, key: &Path, names: &[String]) -> bool {
    if !key.exists() {
        return false;
    }
    let Ok(certs) = ebb_certs::load_certs(crt) else {
        return false;
    };
    let Ok(info) = ebb_certs::describe(&certs[0]) else {
        return false;
    };
    let left = info.not_after - OffsetDateTime::now_utc();
    // A short-lived cert (a test's) is fresh until a third of it is left.
    let life = info.not_after - info.not_before;
    let fresh = left > RENEW_BEFORE.min(life / 3);
    fresh && names.iter().all(|n| info.dns_names.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap(dir: &Path) -> Pki {
        Pki::bootstrap(
            dir,
            "ebb.local",
            None,
            &["localhost".to_owned()],
            "127.0.0.1:7440".parse().unwrap(),
            ebb_certs::SERVER_VALIDITY,
        )
        .unwrap()
    }

    fn serial(path: &Path) -> String {
        ebb_certs::describe_pem(&std::fs::read_to_string(path).unwrap())
            .unwrap()
            .serial
    }

    #[test]
    fn the_local_admin_cert_is_reissued_within_thirty_days_of_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let pki = bootstrap(dir.path());
        let (crt, key) = pki.paths.admin();
        let first = serial(&crt);
        // A restart keeps a fresh one.
        let pki = bootstrap(dir.path());
        assert_eq!(serial(&crt), first);
        // One with ten days left is replaced on start.
        let now = OffsetDateTime::now_utc();
        pki.ca
            .issue(&ebb_certs::CertSpec {
                identity: Some(ebb_certs::Identity::admin("ebb.local", LOCAL_ADMIN_NAME).unwrap()),
                dns_names: vec![],
                ips: vec![],
                not_before: now - time::Duration::days(355),
                not_after: now + time::Duration::days(10),
                server: false,
                client: true,
            })
            .unwrap()
            .write(&crt, &key)
            .unwrap();
        let aging = serial(&crt);
        bootstrap(dir.path());
        let renewed = serial(&crt);
        assert_ne!(renewed, aging);
        let info = ebb_certs::describe_pem(&std::fs::read_to_string(&crt).unwrap()).unwrap();
        assert!(info.not_after - now > time::Duration::days(300));
        assert!(
            ebb_certs::key_matches(
                &std::fs::read_to_string(&crt).unwrap(),
                &std::fs::read_to_string(&key).unwrap()
            )
            .unwrap()
        );
    }
}
