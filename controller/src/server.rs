//! `ebb-controller serve`: claim the data dir, bind, make or load the PKI,
//! then run the agent gRPC service and the HTTP endpoints until shutdown.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ebb_proto::v1::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::agent_service::AgentApi;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::pki::{Pki, PkiError};

/// After the shutdown signal, streams and requests get this long to finish.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Written after binding so `ebbctl`, the demo and tests find the ports.
pub const ENDPOINTS_FILE: &str = "endpoints.toml";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the data dir {0} is in use by another ebb-controller; stop it or give this one another data_dir"
    )]
    Locked(PathBuf),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: ebb_certs::Error,
    },
}

/// A controller that has claimed its data dir, bound its ports and loaded
/// its certificates, ready to serve.
pub struct Controller {
    config: Config,
    pki: Pki,
    grpc: TcpListener,
    http: TcpListener,
    fleet: Arc<Fleet>,
    _lock: File,
}

impl Controller {
    /// Everything that can fail before serving, in an order that leaves the
    /// data dir untouched when another controller holds it or a port is taken.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let lock = lock_data_dir(dir)?;
        let grpc = bind(config.grpc.listen, "grpc.listen").await?;
        let http = bind(config.http.listen, "http.listen").await?;
        let operator_ca = config
            .tls
            .ca_cert
            .as_deref()
            .zip(config.tls.ca_key.as_deref());
        let pki = Pki::bootstrap(
            dir,
            &config.trust_domain,
            operator_ca,
            &config.grpc.server_names,
            config.grpc.listen,
        )?;
        Ok(Self {
            fleet: Arc::new(Fleet::new(config.fleet.sample_ring)),
            config,
            pki,
            grpc,
            http,
            _lock: lock,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound socket has an address")
    }

    /// The CA this controller issues certificates from.
    pub fn ca(&self) -> &ebb_certs::Ca {
        &self.pki.ca
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The live fleet, for in-process views (the demo).
    pub fn fleet(&self) -> Arc<Fleet> {
        self.fleet.clone()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound socket has an address")
    }

    /// Serves until `shutdown` completes, then drains within a deadline.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let (grpc_addr, http_addr) = (self.grpc_addr(), self.http_addr());
        write_endpoints(&self.config, grpc_addr, http_addr)?;
        let fleet = self.fleet.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let tls = self.pki.server_config()?;
        let incoming = crate::tls::incoming(self.grpc, tls, fleet.clone(), stop_rx.clone());
        let agents = AgentApi::new(
            fleet.clone(),
            self.pki.ca.trust_domain().to_owned(),
            self.config.sampling_interval(),
            stop_rx.clone(),
        );
        let grpc = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(AgentServiceServer::new(agents))
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
        let http = crate::http::serve(self.http, fleet.clone(), stopped(stop_rx.clone()));
        info!(grpc = %grpc_addr, http = %http_addr, data_dir = %self.config.data_dir.display(), "ebb-controller serving");
        let grpc = tokio::spawn(grpc);
        let http = tokio::spawn(http);
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
            let (g, h) = tokio::join!(grpc, http);
            (g, h)
        })
        .await;
        match drained {
            Ok((Ok(Ok(())), Ok(Ok(())))) => info!("stopped"),
            Ok((g, h)) => warn!(grpc = ?g, http = ?h, "stopped with errors"),
            Err(_) => warn!("gave up waiting for connections to close after {SHUTDOWN_DEADLINE:?}"),
        }
        // A stopped controller must not be found by ebbctl or the demo.
        let _ = std::fs::remove_file(self.config.data_dir.join(ENDPOINTS_FILE));
        Ok(())
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, key, source })
}

fn lock_data_dir(dir: &Path) -> Result<File, StartError> {
    let path = dir.join("controller.lock");
    let file = File::create(&path).map_err(|source| StartError::DataDir {
        path: path.clone(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(StartError::DataDir { path, source }),
    }
}

/// Where a running controller can be reached, as written to the data dir.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct Endpoints {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// The DNS name to verify the server certificate against.
    pub server_name: String,
}

fn write_endpoints(config: &Config, grpc: SocketAddr, http: SocketAddr) -> anyhow::Result<()> {
    let endpoints = Endpoints {
        grpc,
        http,
        server_name: config.grpc.server_names[0].clone(),
    };
    let path = config.data_dir.join(ENDPOINTS_FILE);
    let text = toml::to_string(&endpoints)?;
    ebb_certs::write_atomic(&path, text.as_bytes(), 0o644)
        .map_err(|source| StartError::Write { path, source })?;
    Ok(())
}
