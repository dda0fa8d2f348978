//! `ebb-controller serve`: claim the data dir, bind, make or load the PKI,
//! then run the agent gRPC service and the HTTP endpoints until shutdown.

use ebb_core::local::{ENDPOINTS_FILE, Endpoints};
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

use ebb_proto::v1::admin_service_server::AdminServiceServer;
use ebb_proto::v1::join_service_server::JoinServiceServer;

use crate::api::join::{JoinApi, MAX_JOIN_MESSAGE};
use crate::api::{AdminApi, admin_only, certified};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::engine::{Engine, HealthSettings, LaunchSettings};
use crate::fleet::Fleet;
use crate::fleet::agent_service::{AgentApi, IntervalLookup};
use crate::pki::{Pki, PkiError};
use crate::provider::find_agent_binary;
use crate::provider::process::ProcessProvider;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// The largest message an agent may send: a sample with every health check
/// and custom metric, or a hook's result with its output, is a few KiB; a
/// bigger one is refused before it is read into memory.
pub const MAX_AGENT_MESSAGE: usize = 64 * 1024;
/// The largest admin request (an apply of a big group's rules and alarms is
/// well under it).
pub const MAX_ADMIN_MESSAGE: usize = 4 * 1024 * 1024;
/// After the shutdown signal, streams and requests get this long to finish.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

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
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: ebb_certs::Error,
    },
    #[error(transparent)]
    Provider(#[from] crate::provider::ProviderError),
    #[error("cannot start the control loops' thread: {0}")]
    Loops(std::io::Error),
    #[error("cannot serve gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot write the endpoints file: {0}")]
    Endpoints(#[from] toml::ser::Error),
}

/// A controller that has claimed its data dir, bound its ports and loaded
/// its certificates, ready to serve.
pub struct Controller {
    config: Config,
    pki: Pki,
    grpc: TcpListener,
    http: TcpListener,
    fleet: Arc<Fleet>,
    store: Arc<dyn Store>,
    _lock: File,
}

/// The store's file in the data dir.
pub const STORE_FILE: &str = "ebb.db";

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
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join(STORE_FILE))?);
        let pki = Pki::bootstrap(
            dir,
            &config.trust_domain,
            operator_ca,
            &config.grpc.server_names,
            config.grpc.listen,
        )?;
        Ok(Self {
            fleet: Arc::new(Fleet::new(config.fleet.sample_ring, Arc::new(SystemClock))),
            store,
            config,
            pki,
            grpc,
            http,
            _lock: lock,
        })
    }

    /// The engine over this controller's store, fleet, CA and provider.
    fn engine(&self, grpc_addr: SocketAddr) -> Result<Engine, StartError> {
        let provider_config = &self.config.provider;
        let agent_bin = match find_agent_binary(provider_config.agent_bin.as_deref()) {
            Ok(p) => p,
            Err(e) if provider_config.agent_bin.is_some() => return Err(e.into()),
            Err(e) => {
                warn!("{e}; launches will fail until it is installed");
                PathBuf::from("ebb-agent")
            }
        };
        let provider = ProcessProvider::new(
            self.config.data_dir.join("instances"),
            agent_bin,
            Duration::from_millis(provider_config.release_timeout_ms),
        );
        // Local instances reach the controller on loopback when it listens
        // on every address.
        let dial = if grpc_addr.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), grpc_addr.port())
        } else {
            grpc_addr
        };
        Ok(Engine::new(
            self.store.clone(),
            Arc::new(provider),
            self.fleet.clone(),
            self.pki.ca.clone(),
            LaunchSettings {
                controller: dial.to_string(),
                server_name: self.config.grpc.server_names[0].clone(),
                timeout: Duration::from_millis(provider_config.launch_timeout_ms),
            },
        )
        .with_health(HealthSettings {
            guard_share: self.config.health.guard_share,
            guard_interval: Duration::from_millis(self.config.health.guard_interval_ms),
            ..HealthSettings::default()
        }))
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

    /// The store, for in-process views (the demo).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The live fleet, for in-process views (the demo).
    pub fn fleet(&self) -> Arc<Fleet> {
        self.fleet.clone()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound socket has an address")
    }

    /// Serves until `shutdown` completes, then drains within a deadline.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
        let (grpc_addr, http_addr) = (self.grpc_addr(), self.http_addr());
        write_endpoints(&self.config, grpc_addr, http_addr)?;
        let fleet = self.fleet.clone();
        let trust_domain = self.pki.ca.trust_domain().to_owned();
        let engine = Arc::new(self.engine(grpc_addr)?);
        let (stop_tx, stop_rx) = watch::channel(false);
        let tls = self.pki.server_config()?;
        let incoming = crate::tls::incoming(self.grpc, tls, fleet.clone(), stop_rx.clone());
        let loops = control_loops(engine.clone(), stop_rx.clone())?;
        let notifier = tokio::spawn(crate::engine::notify::run(engine.clone(), stop_rx.clone()));
        let agents = AgentApi::new(
            fleet.clone(),
            trust_domain.clone(),
            self.config.sampling_interval(),
            stop_rx.clone(),
        )
        .with_group_intervals(group_intervals(self.store.clone()));
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AgentServiceServer<AgentApi>>().await;
        health.set_serving::<AdminServiceServer<AdminApi>>().await;
        health.set_serving::<JoinServiceServer<JoinApi>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ebb_proto::v1::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // Only JoinService serves a client without a certificate.
        let health_service =
            tonic::service::interceptor::InterceptedService::new(health_service, certified);
        let reflection =
            tonic::service::interceptor::InterceptedService::new(reflection, certified);
        let admin = tonic::service::interceptor::InterceptedService::new(
            AdminServiceServer::new(AdminApi::new(engine.clone()))
                .max_decoding_message_size(MAX_ADMIN_MESSAGE),
            admin_only(trust_domain),
        );
        let grpc = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(
                AgentServiceServer::new(agents).max_decoding_message_size(MAX_AGENT_MESSAGE),
            )
            .add_service(admin)
            .add_service(
                JoinServiceServer::new(JoinApi::new(engine.clone()))
                    .max_decoding_message_size(MAX_JOIN_MESSAGE),
            )
            .add_service(health_service)
            .add_service(reflection)
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
        let http = crate::http::serve(self.http, fleet.clone(), stopped(stop_rx.clone()));
        info!(grpc = %grpc_addr, http = %http_addr, data_dir = %self.config.data_dir.display(), "ebb-controller serving");
        let grpc = tokio::spawn(grpc);
        let http = tokio::spawn(http);
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
            let (g, h, _, _) = tokio::join!(grpc, http, loops, notifier);
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

/// Runs the reconcile loop and the alarm and schedule loop on a thread of
/// their own. Their passes do synchronous store work (SQLite reads and
/// writes, JSON decoding) that grows with the fleet: on the runtime that
/// drives the agents' streams, a pass over 10,000 instances held pulls back
/// (p99 round trip 320 ms); on their own thread the OS shares the cores and
/// the streams keep their pace. Resolves when both loops have stopped.
fn control_loops(
    engine: Arc<Engine>,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("ebb-loops")
        .build()
        .map_err(StartError::Loops)?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ebb-loops".into())
        .spawn(move || {
            runtime.block_on(async {
                tokio::join!(
                    engine.clone().run(stop.clone()),
                    crate::engine::loops::run(engine, stop),
                );
            });
            let _ = done_tx.send(());
        })
        .map_err(StartError::Loops)?;
    Ok(tokio::spawn(async {
        let _ = done_rx.await;
    }))
}

/// Looks up the sampling interval of an instance's group.
fn group_intervals(store: Arc<dyn Store>) -> IntervalLookup {
    Arc::new(move |id: &str| {
        let instance = store.get_instance(id).ok().flatten()?;
        let group = store.get_group(&instance.group_id).ok().flatten()?;
        Some(Duration::from_secs(u64::from(group.sampling_interval_secs)))
    })
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

fn write_endpoints(config: &Config, grpc: SocketAddr, http: SocketAddr) -> Result<(), StartError> {
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
