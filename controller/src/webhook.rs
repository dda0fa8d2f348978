//! The webhook client: one HTTP/1.1 POST over TCP or TLS (hyper's client
//! over tokio-rustls, ring provider), signed when the target has a secret.
//! What to send and when lives in `engine::notify`; this only sends.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use ring::hmac;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use ebb_core::url::{WebhookUrl, parse_url};

/// Where distributions keep the system's CA bundle, as OpenSSL and Go
/// look for it (Debian and Ubuntu, Fedora and RHEL, openSUSE, Alpine).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's CA bundle and where it was found, read once per process
/// (the config check, the engine's default and the served engine each
/// make a client).
fn system_roots() -> &'static (Vec<CertificateDer<'static>>, Option<PathBuf>) {
    static ROOTS: OnceLock<(Vec<CertificateDer<'static>>, Option<PathBuf>)> = OnceLock::new();
    ROOTS.get_or_init(|| {
        std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
            .and_then(|path| Some((ebb_certs::load_certs(&path).ok()?, Some(path))))
            .unwrap_or_default()
    })
}

/// One POST to send.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    pub url: &'a str,
    /// `X-Ebb-Event`.
    pub event: &'a str,
    /// `X-Ebb-Delivery`: the same on every retry, for the receiver to
    /// drop a duplicate.
    pub delivery_id: &'a str,
    pub body: &'a str,
    pub secret: Option<&'a str>,
    pub timeout: Duration,
}

/// Sends webhook POSTs; cheap to share.
pub struct Client {
    tls: TlsConnector,
    /// Where the roots came from, for the start-up log.
    pub roots_from: Vec<PathBuf>,
}

impl Client {
    /// A client trusting the system's CA bundle (`SSL_CERT_FILE` first)
    /// and `extra_ca` (a PEM file of more roots), if given. A missing
    /// system bundle is no error: `extra_ca` may be all an operator uses.
    pub fn new(extra_ca: Option<&Path>) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        let mut roots_from = Vec::new();
        let (system, path) = system_roots();
        let (added, _) = roots.add_parsable_certificates(system.iter().cloned());
        if added > 0
            && let Some(path) = path
        {
            roots_from.push(path.clone());
        }
        if let Some(path) = extra_ca {
            let certs = ebb_certs::load_certs(path)
                .map_err(|e| anyhow::anyhow!("webhooks.ca_file {}: {e}", path.display()))?;
            let (added, refused) = roots.add_parsable_certificates(certs);
            if added == 0 {
                anyhow::bail!(
                    "webhooks.ca_file {}: no usable CA certificate ({refused} refused)",
                    path.display()
                );
            }
            roots_from.push(path.to_owned());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            roots_from,
        })
    }

    /// Sends one POST within its timeout; Ok on a 2xx status, else why not.
    pub async fn post(&self, post: Post<'_>) -> Result<(), String> {
        let url = parse_url(post.url).map_err(|e| format!("notification_url {e}"))?;
        match tokio::time::timeout(post.timeout, self.send(&url, post)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(format!("HTTP {status}")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {:?}", post.timeout)),
        }
    }

    async fn send(&self, url: &WebhookUrl, post: Post<'_>) -> Result<u16, String> {
        let address = format!("{}:{}", url.host, url.port);
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("connect to {address}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let request = request(url, post)?;
        if !url.https {
            return exchange(tcp, request).await;
        }
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| format!("`{}` is not a TLS server name: {e}", url.host))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {address}: {e}"))?;
        exchange(tls, request).await
    }
}

/// The request: JSON body, signed when there is a secret, one connection
/// per request.
fn request(url: &WebhookUrl, post: Post<'_>) -> Result<http::Request<Full<Bytes>>, String> {
    let mut builder = http::Request::post(url.path_and_query.as_str())
        .header(http::header::HOST, url.authority.as_str())
        .header(
            http::header::USER_AGENT,
            concat!("ebb-controller/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONNECTION, "close")
        .header("X-Ebb-Event", post.event)
        .header("X-Ebb-Delivery", post.delivery_id);
    if let Some(secret) = post.secret {
        builder = builder.header("X-Ebb-Signature", signature(secret, post.body));
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(post.body.as_bytes())))
        .map_err(|e| format!("building the request: {e}"))
}

/// `sha256=<lowercase hex of HMAC-SHA256(secret, body)>`, as GitHub's
/// `X-Hub-Signature-256`: a receiver computes the same over the raw body
/// and compares in constant time.
pub fn signature(secret: &str, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body.as_bytes());
    format!("sha256={}", ebb_certs::hex(tag.as_ref()))
}

async fn exchange<S>(io: S, request: http::Request<Full<Bytes>>) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let answer = sender.send_request(request).await;
    conn.abort();
    answer
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("HTTP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example of `X-Hub-Signature-256` (the same
    /// construction): secret "It's a Secret to Everybody", payload
    /// "Hello, World!".
    #[test]
    fn signature_matches_githubs_worked_example() {
        assert_eq!(
            signature("It's a Secret to Everybody", "Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = Client::new(Some(&path)).err().unwrap().to_string();
        assert!(err.starts_with("webhooks.ca_file "), "{err}");
        let err = Client::new(Some(&dir.path().join("missing.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
