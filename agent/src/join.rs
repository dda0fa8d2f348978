//! `ebb-agent join`: a host gets its identity with a join token. It makes
//! its key here (the key never leaves the host), dials the controller
//! without a client certificate, trusts the server only if the chain it
//! sends holds a CA whose public key matches `--ca-hash` (as kubeadm pins
//! its CA) and the server certificate verifies against that CA alone, and
//! only then sends the token and a CSR to `JoinService.Join`. A controller
//! that is not the leader refuses, naming the leader: the join is made
//! there, with the same pin. The signed certificate, the key (0600) and the
//! CA are written where agent.toml's `[tls]` says.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ebb_proto::redirect::leader_of;
use ebb_proto::v1 as pb;
use ebb_proto::v1::join_service_client::JoinServiceClient;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::Endpoint;

use crate::config::{Config, DEFAULT_TLS_DIR, server_name_for, split_host_port};

/// A join that has not finished by then has failed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Controllers naming yet another leader this many times are mid-election:
/// the join fails, to be run again, rather than chase them.
const MAX_REDIRECTS: usize = 3;

/// What `ebb-agent join` was asked to do.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub controller: String,
    pub token: String,
    /// `sha256:<64 hex>`.
    pub ca_hash: String,
    pub config: PathBuf,
    pub server_name: Option<String>,
    pub force: bool,
}

/// Why a join failed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Bad flags, a host already joined, files that cannot be written.
    #[error("{0}")]
    Usage(String),
    /// The controller refused the token, or is not the one pinned.
    #[error("{0}")]
    Refused(String),
    /// The controller could not be reached.
    #[error("{0}")]
    Unreachable(String),
}

/// What a successful join wrote.
#[derive(Debug)]
pub struct Joined {
    pub instance_id: String,
    /// The group's name.
    pub group: String,
    /// Set instead of the two above when the token was a target token.
    pub target: String,
    /// The leader the join was made at, when `--controller` was not it.
    pub leader: Option<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Checks the flags, joins, writes the files and agent.toml.
pub async fn join(args: &JoinArgs) -> Result<Joined, JoinError> {
    let pin = check_args(args)?;
    let (tls, config_text) = tls_paths(&args.config)?;
    if tls.cert.exists() && !args.force {
        let who = ebb_certs::load_certs(&tls.cert)
            .ok()
            .and_then(|c| ebb_certs::peer_identity(&c[0]).ok())
            .map_or_else(String::new, |id| format!(" ({id})"));
        return Err(JoinError::Usage(format!(
            "this host has joined already: {} exists{who}; pass --force to join again with a new identity",
            tls.cert.display()
        )));
    }
    let csr = ebb_certs::Csr::generate()
        .map_err(|e| JoinError::Usage(format!("cannot make a key: {e}")))?;
    let request = pb::JoinRequest {
        token: args.token.clone(),
        csr_pem: csr.csr_pem.clone(),
        hostname: hostname(),
    };
    let mut controller = args.controller.clone();
    let mut redirects = 0;
    let response = loop {
        let server_name = server_name_for(args.server_name.as_deref(), &controller);
        match call(&controller, &server_name, &pin, request.clone()).await? {
            Answer::Joined(response) => break response,
            Answer::NotLeader(leader) if redirects < MAX_REDIRECTS => {
                redirects += 1;
                controller = leader;
            }
            Answer::NotLeader(leader) => {
                return Err(JoinError::Unreachable(format!(
                    "the controllers named {} leaders in a row (last {leader} at {controller}); an election may be under way: run the join again",
                    redirects + 1
                )));
            }
        }
    };
    // The CA handed back must be the one pinned, not only the one that
    // signed the server's certificate.
    let got = ebb_certs::ca_hash_pem(&response.ca_pem)
        .map_err(|e| JoinError::Refused(format!("the controller sent an unusable CA: {e}")))?;
    if got != pin {
        return Err(JoinError::Refused(format!(
            "the controller sent CA {got}, not the pinned {pin}"
        )));
    }
    let issued = csr.into_issued(response.cert_pem);
    let write_failed = |e: ebb_certs::Error| JoinError::Usage(format!("cannot write: {e}"));
    ebb_certs::write_atomic(&tls.ca, response.ca_pem.as_bytes(), 0o644).map_err(write_failed)?;
    issued.write(&tls.cert, &tls.key).map_err(write_failed)?;
    write_config(args, config_text.as_deref())?;
    Ok(Joined {
        instance_id: response.instance_id,
        group: response.scaling_group_name,
        target: response.target_name,
        leader: (controller != args.controller).then_some(controller),
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
    })
}

/// The pin, lowercased, when every flag is usable.
fn check_args(args: &JoinArgs) -> Result<String, JoinError> {
    let mut problems = Vec::new();
    if let Err(e) = split_host_port(&args.controller) {
        problems.push(format!("--controller: {e}"));
    }
    let pin = args.ca_hash.to_ascii_lowercase();
    let hex = pin.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        problems.push(format!(
            "--ca-hash: `{}` is not sha256:<64 hex digits> (ebbctl cert ca-hash prints it)",
            args.ca_hash
        ));
    }
    let shaped = args.token.split_once('.').is_some_and(|(id, secret)| {
        let ok = |s: &str, n: usize| {
            s.len() == n
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        };
        ok(id, 6) && ok(secret, 16)
    });
    if !shaped {
        problems.push(
            "--token: not a join token; expected `abcdef.0123456789abcdef` as `ebbctl token create` prints it"
                .to_owned(),
        );
    }
    if args.server_name.as_deref() == Some("") {
        problems.push("--server-name: must not be empty".to_owned());
    }
    if problems.is_empty() {
        Ok(pin)
    } else {
        Err(JoinError::Usage(problems.join("; ")))
    }
}

/// Where the files go: agent.toml's `[tls]` when it exists (with its text),
/// else beside the config file.
fn tls_paths(config: &Path) -> Result<(crate::config::TlsConfig, Option<String>), JoinError> {
    match std::fs::read_to_string(config) {
        Ok(text) => {
            let parsed = Config::parse_unchecked(&text, config)
                .map_err(|e| JoinError::Usage(e.to_string()))?;
            Ok((parsed.tls, Some(text)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = config
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new(DEFAULT_TLS_DIR));
            Ok((
                crate::config::TlsConfig {
                    ca: dir.join("ca.crt"),
                    cert: dir.join("agent.crt"),
                    key: dir.join("agent.key"),
                },
                None,
            ))
        }
        Err(e) => Err(JoinError::Usage(format!(
            "cannot read {}: {e}",
            config.display()
        ))),
    }
}

/// Writes agent.toml when there is none; otherwise adds `controller` (and
/// `server_name`, when given) if it does not set them, keeping the rest.
fn write_config(args: &JoinArgs, existing: Option<&str>) -> Result<(), JoinError> {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut lines = String::new();
    let table: toml::Table = existing.and_then(|t| t.parse().ok()).unwrap_or_default();
    if !table.contains_key("controller") {
        lines.push_str(&format!("controller = {}\n", q(&args.controller)));
    }
    if let Some(name) = &args.server_name
        && !table.contains_key("server_name")
    {
        lines.push_str(&format!("server_name = {}\n", q(name)));
    }
    let text = match existing {
        None => format!(
            "# Written by ebb-agent join; every key is in docs/configuration.md.\n{lines}\n[tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n"
        ),
        Some(_) if lines.is_empty() => return Ok(()),
        // Top-level keys must come before the first table: put them first.
        Some(old) => format!("# Added by ebb-agent join.\n{lines}\n{old}"),
    };
    ebb_certs::write_atomic(&args.config, text.as_bytes(), 0o644)
        .map_err(|e| JoinError::Usage(format!("cannot write: {e}")))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// What a controller answered to a join.
enum Answer {
    Joined(pb::JoinResponse),
    /// It is not the leader; the leader is at this `host:port`.
    NotLeader(String),
}

/// Dials with the pinned CA and calls Join.
async fn call(
    controller: &str,
    server_name: &str,
    pin: &str,
    request: pb::JoinRequest,
) -> Result<Answer, JoinError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mismatch = Arc::new(Mutex::new(None));
    let verifier = PinnedCa {
        pin: pin.to_owned(),
        provider: provider.clone(),
        mismatch: mismatch.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| JoinError::Usage(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| JoinError::Usage(format!("`{server_name}` is not a valid server name")))?;
    let addr = controller.to_owned();
    let dial = tower::service_fn(move |_: tonic::transport::Uri| {
        let (connector, name, addr) = (connector.clone(), name.clone(), addr.clone());
        async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let unreachable = |why: String| {
        let pinned = mismatch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match pinned {
            Some(m) => JoinError::Refused(m),
            None if why.contains("not valid for name") => JoinError::Refused(format!(
                "the controller's certificate is not valid for `{server_name}` ({why}); pass --server-name with one of its grpc.server_names"
            )),
            None => JoinError::Unreachable(format!(
                "cannot reach the controller at {controller}: {why}"
            )),
        }
    };
    let channel = Endpoint::from_shared(format!("http://{controller}"))
        .map_err(|_| JoinError::Usage(format!("`{controller}` is not host:port")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(JOIN_TIMEOUT)
        .connect_with_connector(dial)
        .await
        .map_err(|e| unreachable(innermost(&e)))?;
    let status = match JoinServiceClient::new(channel).join(request).await {
        Ok(r) => return Ok(Answer::Joined(r.into_inner())),
        Err(status) => status,
    };
    if let Some(leader) = leader_of(&status).filter(|l| split_host_port(l).is_ok()) {
        return Ok(Answer::NotLeader(leader));
    }
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            Err(unreachable(status.message().to_owned()))
        }
        _ => Err(JoinError::Refused(format!(
            "the controller refused to join this host: {}",
            status.message()
        ))),
    }
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Trusts a server whose chain holds the CA pinned by hash and whose
/// certificate that CA signed for the name dialled.
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<CryptoProvider>,
    /// Why the pin did not match, for the error the user sees.
    mismatch: Arc<Mutex<Option<String>>>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = Vec::new();
        for cert in intermediates {
            let Ok(hash) = ebb_certs::ca_hash(cert) else {
                continue;
            };
            if hash == self.pin {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(cert.clone().into_owned())?;
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
                return webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now);
            }
            seen.push(hash);
        }
        let found = if seen.is_empty() {
            "it sent no CA certificate".to_owned()
        } else {
            format!("its CA is {}", seen.join(", "))
        };
        let why = format!(
            "refusing the controller: --ca-hash pins {}, but {found}; check the hash (ebbctl cert ca-hash on the controller's host) and the address. The token was not sent.",
            self.pin
        );
        *self.mismatch.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.clone());
        Err(rustls::Error::General(why))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

    fn args(config: &Path) -> JoinArgs {
        JoinArgs {
            controller: "ctl.example:7440".into(),
            token: "abcdef.0123456789abcdef".into(),
            ca_hash: format!("sha256:{}", "AB".repeat(32)),
            config: config.to_owned(),
            server_name: None,
            force: false,
        }
    }

    #[test]
    fn bad_flags_are_named_together() {
        let mut a = args(Path::new("agent.toml"));
        assert_eq!(
            check_args(&a).unwrap(),
            format!("sha256:{}", "ab".repeat(32))
        );
        a.controller = "nohost".into();
        a.ca_hash = "md5:00".into();
        a.token = "abc".into();
        let err = check_args(&a).unwrap_err().to_string();
        for field in ["--controller", "--ca-hash", "--token"] {
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn a_new_config_names_the_files_beside_it_and_an_old_one_keeps_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let (tls, text) = tls_paths(&path).unwrap();
        assert_eq!(text, None);
        assert_eq!(tls.key, dir.path().join("agent.key"));
        write_config(&args(&path), None).unwrap();
        let written =
            Config::parse_unchecked(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        assert_eq!(written.controller, ["ctl.example:7440"]);
        assert_eq!(written.tls.cert, dir.path().join("agent.crt"));

        // A config without `controller` gets it; its other keys stay.
        let old = "# mine\n[tls]\nca = \"/x/ca.crt\"\ncert = \"/x/a.crt\"\nkey = \"/x/a.key\"\n";
        std::fs::write(&path, old).unwrap();
        let (tls, text) = tls_paths(&path).unwrap();
        assert_eq!(tls.cert, Path::new("/x/a.crt"));
        write_config(&args(&path), text.as_deref()).unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(now.ends_with(old), "{now}");
        let parsed = Config::parse_unchecked(&now, &path).unwrap();
        assert_eq!(parsed.controller, ["ctl.example:7440"]);
        // One that sets it is left alone.
        let mut other = args(&path);
        other.controller = "elsewhere:1".into();
        write_config(&other, Some(&now)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), now);
    }
}
