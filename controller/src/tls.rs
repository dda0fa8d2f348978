//! The mTLS front door: accepts TCP connections, runs each handshake in its
//! own task (a slow client cannot hold up others), logs every refusal with
//! the peer and a plain reason, and hands finished streams to tonic.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::warn;

use crate::fleet::Fleet;

/// A handshake that takes longer than this is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub type Incoming = ReceiverStream<Result<TlsStream<TcpStream>, io::Error>>;

/// Accepts on `listener` until shutdown, yielding authenticated streams.
pub fn incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
    fleet: Arc<Fleet>,
    mut shutdown: watch::Receiver<bool>,
) -> Incoming {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, go on.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, fleet) = (acceptor.clone(), tx.clone(), fleet.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => refused(&fleet, peer, &e),
                    Err(_) => warn!(%peer, "refused TLS connection: handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

fn refused(fleet: &Fleet, peer: SocketAddr, e: &io::Error) {
    fleet
        .counters
        .connections_refused_total
        .fetch_add(1, Ordering::Relaxed);
    warn!(%peer, "refused TLS connection: {}", explain(e));
}

/// Turns a rustls handshake error into a sentence an operator can act on.
pub fn explain(e: &io::Error) -> String {
    use rustls::{CertificateError, Error};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return e.to_string();
    };
    // A client without a certificate is let through the handshake (for
    // JoinService.Join) and refused by every other service.
    match tls {
        // A foreign CA with the same name as ours shows up as a bad signature.
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. },
        ) => "the client certificate was not issued by this controller's CA".into(),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the client certificate has expired; issue a new one".into(),
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "the client certificate is not valid yet (check the clocks)".into(),
        Error::InvalidCertificate(other) => format!("invalid client certificate: {other:?}"),
        other => format!("TLS error: {other}"),
    }
}
