//! The mTLS front door: accepts TCP connections, runs each handshake in its
//! own task (a slow client cannot hold up others), logs every refusal with
//! the peer and a plain reason, and hands finished streams to tonic.
//!
//! At most [`MAX_HANDSHAKES`] handshakes are under way at once; a
//! connection past that is dropped at once (counted, and logged at most
//! every [`SHED_LOG_EVERY`]), and one that sends nothing for
//! [`IDLE_TIMEOUT`] gives its place back. Idle connections cannot starve
//! real agents, which retry.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use crate::fleet::Fleet;

/// A handshake that takes longer than this is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client sends its ClientHello as soon as it connected; one silent this
/// long is not a client, only a held slot.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Handshakes under way at once: far more than a fleet reconnecting after
/// a controller restart needs at any instant (each takes milliseconds), and
/// few enough that their tasks and buffers stay small.
pub const MAX_HANDSHAKES: usize = 256;
/// Dropped connections are logged at most this often, with their count.
const SHED_LOG_EVERY: Duration = Duration::from_secs(10);

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
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let shed = Shed::default();
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
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                fleet.counters.handshakes_dropped.add("busy");
                shed.dropped(peer);
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, fleet) = (acceptor.clone(), tx.clone(), fleet.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                match tokio::time::timeout(IDLE_TIMEOUT, tcp.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    Ok(_) => return,
                    Err(_) => {
                        fleet.counters.handshakes_dropped.add("idle");
                        debug!(%peer, "dropped a TCP connection that sent nothing for {IDLE_TIMEOUT:?}");
                        return;
                    }
                }
                let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(slot);
                match accepted {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => refused(&fleet, peer, &e),
                    Err(_) => {
                        fleet.counters.handshakes_dropped.add("timeout");
                        warn!(%peer, "refused TLS connection: handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Connections dropped over the cap, logged at most every
/// [`SHED_LOG_EVERY`] with how many went since the last line.
#[derive(Default)]
struct Shed {
    since_log: AtomicU64,
    last_log: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Shed {
    fn dropped(&self, peer: SocketAddr) {
        let n = self.since_log.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        if last.is_none_or(|t| now - t >= SHED_LOG_EVERY) {
            *last = Some(now);
            self.since_log.store(0, Ordering::Relaxed);
            warn!(%peer, dropped = n, "dropped TCP connections: {MAX_HANDSHAKES} TLS handshakes are already under way (see ebb_tls_handshakes_dropped_total)");
        }
    }
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
