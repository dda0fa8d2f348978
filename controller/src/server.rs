//! `ebb-controller serve`: claim the data dir, bind, make or load the PKI,
//! then run the agent gRPC service and the HTTP endpoints until shutdown.

use ebb_core::local::{ENDPOINTS_FILE, Endpoints};
use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
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
use crate::config::StoreBackend;
use crate::config::{Isolation, Network as NetworkMode, ProviderConfig};
use crate::denylist::DenyList;
use crate::engine::certs::{CertSettings, ServerCert};
use crate::engine::{Engine, EngineError, HealthSettings, LaunchSettings};
use crate::etcd::{Etcd, EtcdSettings, EtcdTls};
use crate::fleet::CloseReason;
use crate::fleet::Fleet;
use crate::fleet::agent_service::{Admission, AgentApi, IntervalLookup, Refusal, Renewal};
use crate::ha::election::{ElectionSettings, FencedStore};
use crate::ha::secrets::{SecretKey, Shared};
use crate::ha::{LeaderOnly, Leadership, Role};
use crate::pki::{Pki, PkiError};
use crate::provider::exec::{self, ExecProvider};
use crate::provider::isolation::{self, Users};
use crate::provider::microvm::{MicrovmHost, MicrovmProvider};
use crate::provider::netns::Network;
use crate::provider::process::{AgentHooks, ProcessProvider};
use crate::provider::{Providers, find_agent_binary};
use crate::store::CertKind;
use crate::store::Store;
use crate::store::etcd::EtcdStore;
use crate::store::sqlite::SqliteStore;
use ebb_core::model::ProviderKind;

/// The largest message an agent may send: a sample with every health check
/// and custom metric, or a hook's result with its output, is a few KiB; a
/// bigger one is refused before it is read into memory.
pub const MAX_AGENT_MESSAGE: usize = 64 * 1024;
/// The largest admin request (an apply of a big group's rules and alarms is
/// well under it).
pub const MAX_ADMIN_MESSAGE: usize = 4 * 1024 * 1024;
/// Concurrent streams on one connection: an agent needs one, ebbctl a
/// few; a client opening thousands is hostile.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;
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
    #[error("{0}")]
    Webhooks(String),
    #[error("provider.isolation = \"on\", but {0}")]
    Isolation(String),
    #[error("provider.network = \"namespace\": {0}")]
    Network(String),
    #[error("cannot write the endpoints file: {0}")]
    Endpoints(#[from] toml::ser::Error),
    #[error("certificates: {0}")]
    Certificates(String),
    #[error("etcd store: {0}")]
    Etcd(String),
}

/// A controller that has claimed its data dir, bound its ports and loaded
/// its certificates, ready to serve.
pub struct Controller {
    config: Config,
    pki: Pki,
    grpc: TcpListener,
    /// The gRPC port again on the bridge's address, for namespaced agents
    /// (a namespace's loopback is its own).
    bridge_grpc: Option<TcpListener>,
    http: TcpListener,
    /// With `provider.network = "namespace"`, the bridge and its addresses.
    network: Option<Arc<Network>>,
    fleet: Arc<Fleet>,
    store: Arc<dyn Store>,
    deny: Arc<DenyList>,
    /// Always the leader with SQLite; elected with etcd.
    leadership: Arc<Leadership>,
    /// With the etcd store: what the election runs on.
    election: Option<Election>,
    _lock: File,
}

/// The parts of a controller that campaigns for leadership.
struct Election {
    etcd: Etcd,
    store: Arc<dyn FencedStore>,
    settings: ElectionSettings,
}

/// The store's file in the data dir.
pub const STORE_FILE: &str = "ebb.db";

impl Controller {
    /// Everything that can fail before serving, in an order that leaves the
    /// data dir untouched when another controller holds it or a port is taken.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let dir = &config.data_dir;
        // Others may pass through (isolated instances live under it) but
        // not list it; what is inside is the controller's alone.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(|source| StartError::DataDir {
                path: dir.clone(),
                source,
            })?;
        let lock = lock_data_dir(dir, LOCK_WAIT)?;
        let grpc = bind(config.grpc.listen, "grpc.listen").await?;
        let http = bind(config.http.listen, "http.listen").await?;
        let (network, bridge_grpc) = match config.provider.network {
            NetworkMode::Host => (None, None),
            NetworkMode::Namespace => {
                let (network, listener) = bridge(&config.provider, &grpc).await?;
                (Some(network), listener)
            }
        };
        let operator_ca = config
            .tls
            .ca_cert
            .as_deref()
            .zip(config.tls.ca_key.as_deref());
        let (store, leadership, election) = match config.store.backend {
            StoreBackend::Sqlite => {
                let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join(STORE_FILE))?);
                // SQLite gives its -wal and -shm files the database's mode.
                let db = dir.join(STORE_FILE);
                std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600))
                    .map_err(|source| StartError::DataDir { path: db, source })?;
                (store, Leadership::single(), None)
            }
            StoreBackend::Etcd => {
                let e = &config.store.etcd;
                let settings = EtcdSettings {
                    endpoints: e.endpoints.clone(),
                    tls: e.ca.clone().map(|ca| EtcdTls {
                        ca,
                        cert: e.cert.clone(),
                        key: e.key.clone(),
                    }),
                    request_timeout: Duration::from_millis(e.request_timeout_ms),
                };
                let etcd = Etcd::connect(&settings).map_err(|e| StartError::Etcd(e.to_string()))?;
                let (store, fenced) = open_etcd_store(settings, &e.prefix).await?;
                let settings = ElectionSettings {
                    key: format!("{}leader", e.prefix).into_bytes(),
                    advertise: config.advertise().unwrap_or_default(),
                    ttl: Duration::from_secs(config.ha.lease_ttl_secs),
                };
                info!(endpoints = %e.endpoints.join(","), prefix = %e.prefix, advertise = %settings.advertise, "store: etcd; campaigning for leadership");
                (
                    store,
                    Leadership::elected(),
                    Some(Election {
                        etcd,
                        store: fenced,
                        settings,
                    }),
                )
            }
        };
        let deny = Arc::new(DenyList::new(
            store.list_revoked()?.into_iter().map(|r| r.identity),
        ));
        let bootstrap = || {
            Pki::bootstrap(
                dir,
                &config.trust_domain,
                operator_ca,
                &config.grpc.server_names,
                config.grpc.listen,
                config.server_cert_lifetime(),
            )
        };
        let mut pki = bootstrap()?;
        // Several controllers issue from one CA, kept sealed in the store
        // (unless the operator gave each the same CA).
        if let (Some(election), None, Some(key_file)) =
            (&election, operator_ca, config.ha.secret_key_file.as_deref())
        {
            let secret = SecretKey::load(key_file).map_err(StartError::Etcd)?;
            let key = format!("{}secrets/ca", config.store.etcd.prefix);
            let shared =
                crate::ha::secrets::share_ca(&election.etcd, key.as_bytes(), &secret, &pki.paths)
                    .await
                    .map_err(StartError::Etcd)?;
            if shared == Shared::Replaced {
                pki = bootstrap()?;
            }
        }
        Ok(Self {
            fleet: Arc::new(Fleet::new(config.fleet.sample_ring, Arc::new(SystemClock))),
            store,
            deny,
            leadership,
            election,
            config,
            pki,
            grpc,
            bridge_grpc,
            http,
            network,
            _lock: lock,
        })
    }

    /// The engine over this controller's store, fleet, CA and provider.
    fn engine(
        &self,
        grpc_addr: SocketAddr,
        server_cert: Arc<ServerCert>,
    ) -> Result<Engine, StartError> {
        let provider_config = &self.config.provider;
        let agent_bin = match find_agent_binary(provider_config.agent_bin.as_deref()) {
            Ok(p) => p,
            Err(e) if provider_config.agent_bin.is_some() => return Err(e.into()),
            Err(e) => {
                warn!("{e}; launches will fail until it is installed");
                PathBuf::from("ebb-agent")
            }
        };
        let mut provider = ProcessProvider::with_hooks(
            provider_config
                .instances_dir
                .clone()
                .unwrap_or_else(|| self.config.data_dir.join("instances")),
            agent_bin,
            Duration::from_millis(provider_config.release_timeout_ms),
            AgentHooks {
                allow_scripts: provider_config.allow_hook_scripts,
                dir: provider_config.hooks_dir.clone(),
            },
        );
        if let Some(users) = instance_users(provider_config)? {
            provider = provider.isolated(users);
        }
        if let Some(network) = &self.network {
            provider = provider.namespaced(network.clone());
        }
        // Local instances reach the controller on loopback when it listens
        // on every address.
        let dial = if grpc_addr.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), grpc_addr.port())
        } else {
            grpc_addr
        };
        // The exec and microvm providers join the router here.
        let exec = ExecProvider::new(
            self.config.data_dir.join("exec"),
            exec::controller_tag(self.pki.ca.cert_pem()),
            AgentHooks {
                allow_scripts: provider_config.allow_hook_scripts,
                dir: provider_config.hooks_dir.clone(),
            },
            provider_config.exec_programs.clone(),
        );
        let microvm = MicrovmProvider::new(
            self.config.data_dir.join("microvms"),
            MicrovmHost {
                kernel: provider_config.microvm.kernel.clone(),
                initramfs: provider_config.microvm.initramfs.clone(),
                accel: provider_config.microvm.accel,
            },
            self.network.clone(),
            Duration::from_millis(provider_config.release_timeout_ms),
            AgentHooks {
                allow_scripts: provider_config.allow_hook_scripts,
                dir: provider_config.hooks_dir.clone(),
            },
        );
        match microvm.unavailable() {
            Some(why) => info!("instance_type \"microvm\" is unavailable: {why}"),
            None => info!(
                accel = ?provider_config.microvm.accel,
                "instance_type \"microvm\" boots {}",
                provider_config.microvm.kernel.display()
            ),
        }
        let webhooks = self
            .config
            .webhooks
            .webhooks()
            .map_err(|e| StartError::Webhooks(e.to_string()))?;
        info!(
            roots = ?webhooks.client.roots_from,
            attempts = webhooks.attempts,
            "https webhooks trust these CA bundles"
        );
        let providers = Providers::new(Arc::new(provider))
            .with(ProviderKind::Exec, Arc::new(exec))
            .with(ProviderKind::Microvm, Arc::new(microvm));
        Ok(Engine::new(
            self.store.clone(),
            Arc::new(providers),
            self.fleet.clone(),
            self.pki.ca.clone(),
            LaunchSettings {
                // With several controllers, launched agents know them all
                // (comma-separated; see provider::agent_config).
                controller: if self.election.is_some() {
                    self.config.controllers().join(",")
                } else {
                    dial.to_string()
                },
                server_name: self.config.grpc.server_names[0].clone(),
                timeout: Duration::from_millis(provider_config.launch_timeout_ms),
            },
        )
        .with_health(HealthSettings {
            guard_share: self.config.health.guard_share,
            guard_interval: Duration::from_millis(self.config.health.guard_interval_ms),
            ..HealthSettings::default()
        })
        .with_limits(self.config.limits.limits())
        .with_retention(self.config.activities.retention())
        .with_webhooks(webhooks)
        .with_deny_list(self.deny.clone())
        .with_certs(CertSettings {
            agent_lifetime: self.config.agent_cert_lifetime(),
        })
        .with_server_cert(server_cert))
    }

    /// Records the CA, server and local admin certificates in the registry
    /// (again on every start: a record is keyed by serial).
    fn record_own_certificates(&self, engine: &Engine) -> Result<(), StartError> {
        let pem = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|source| {
                StartError::Pki(PkiError::Certs(ebb_certs::Error::Io { path, source }))
            })
        };
        let paths = &self.pki.paths;
        for (kind, text) in [
            (CertKind::Ca, self.pki.ca.cert_pem().to_owned()),
            (CertKind::Server, pem(paths.server().0)?),
            (CertKind::Admin, pem(paths.admin().0)?),
        ] {
            engine
                .record_certificate(kind, &text)
                .map_err(|e| match e {
                    EngineError::Store(e) => StartError::Store(e),
                    other => StartError::Certificates(other.to_string()),
                })?;
        }
        Ok(())
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

    /// Times everything the controller decides (samples, alarms, schedules,
    /// forecasts, activities) by `clock` instead of the system's: for a test
    /// that drives time by hand, with the controller in its own process.
    /// The system clock is the default; certificates and leases keep real time.
    pub fn with_clock(mut self, clock: Arc<dyn crate::clock::Clock>) -> Self {
        self.fleet = Arc::new(Fleet::new(self.config.fleet.sample_ring, clock));
        self
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
        let server_cert = Arc::new(
            ServerCert::load(
                self.pki.ca.clone(),
                self.config.grpc.server_names.clone(),
                crate::pki::server_ips(self.config.grpc.listen),
                self.config.server_cert_lifetime(),
                self.pki.paths.server(),
            )
            .map_err(|e| StartError::Certificates(e.to_string()))?,
        );
        let engine = Arc::new(self.engine(grpc_addr, server_cert.clone())?);
        self.record_own_certificates(&engine)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let tls = self.pki.server_config(server_cert)?;
        // Without a bridge listener, a stream that has ended: merged, it
        // leaves the main listener's alone.
        let bridge_incoming = match self.bridge_grpc {
            Some(listener) => {
                crate::tls::incoming(listener, tls.clone(), fleet.clone(), stop_rx.clone())
            }
            None => tokio_stream::wrappers::ReceiverStream::new(tokio::sync::mpsc::channel(1).1),
        };
        let incoming = crate::tls::incoming(self.grpc, tls, fleet.clone(), stop_rx.clone());
        let incoming = tokio_stream::StreamExt::merge(incoming, bridge_incoming);
        // The control loops and the notifier run while this controller
        // leads: always with SQLite; each term it wins with etcd.
        let terms = tokio::spawn(lead_terms(
            engine.clone(),
            self.leadership.clone(),
            stop_rx.clone(),
        ));
        let election = self.election.map(|e| {
            tokio::spawn(crate::ha::election::run(
                e.etcd,
                e.store,
                e.settings,
                self.leadership.clone(),
                stop_rx.clone(),
            ))
        });
        let rotation = tokio::spawn(crate::engine::certs::rotate_server_loop(
            engine.clone(),
            self.config.server_cert_lifetime(),
            stop_rx.clone(),
        ));
        let signer = engine.clone();
        let renewal = Renewal::new(
            Arc::new(move |instance: &str, csr: &str| {
                signer
                    .sign_agent_csr(instance, csr)
                    .map_err(|e| e.to_string())
            }),
            self.config.agent_cert_lifetime(),
        )
        .with_targets({
            let signer = engine.clone();
            Arc::new(move |name: &str, csr: &str| {
                signer.sign_target_csr(name, csr).map_err(|e| e.to_string())
            })
        });
        let agents = AgentApi::new(
            fleet.clone(),
            trust_domain.clone(),
            self.config.sampling_interval(),
            admission(self.store.clone(), self.deny.clone(), trust_domain.clone()),
            stop_rx.clone(),
        )
        .with_group_intervals(group_intervals(self.store.clone()))
        .with_targets(target_admission(self.deny.clone(), trust_domain.clone()))
        .with_renewal(renewal)
        .with_gate(self.leadership.gate());
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AgentServiceServer<AgentApi>>().await;
        health.set_serving::<AdminServiceServer<AdminApi>>().await;
        health.set_serving::<JoinServiceServer<JoinApi>>().await;
        // Reflection v1, and v1alpha for the clients that only speak it
        // (grpcio-reflection, Postman, older grpcurl and grpcui).
        let reflecting = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(ebb_proto::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection = reflecting().build_v1()?;
        let reflection_v1alpha = reflecting().build_v1alpha()?;
        // Only JoinService serves a client without a certificate.
        let health_service =
            tonic::service::interceptor::InterceptedService::new(health_service, certified);
        let reflection =
            tonic::service::interceptor::InterceptedService::new(reflection, certified);
        let reflection_v1alpha =
            tonic::service::interceptor::InterceptedService::new(reflection_v1alpha, certified);
        // A follower serves reads and refuses writes, naming the leader.
        let admin = tonic::service::interceptor::InterceptedService::new(
            LeaderOnly::new(
                AdminServiceServer::new(AdminApi::new(engine.clone()))
                    .max_decoding_message_size(MAX_ADMIN_MESSAGE),
                self.leadership.gate(),
            ),
            admin_only(trust_domain, self.deny.clone()),
        );
        let grpc = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .add_service(
                AgentServiceServer::new(agents).max_decoding_message_size(MAX_AGENT_MESSAGE),
            )
            .add_service(admin)
            .add_service(LeaderOnly::new(
                JoinServiceServer::new(JoinApi::new(engine.clone()))
                    .max_decoding_message_size(MAX_JOIN_MESSAGE),
                self.leadership.gate(),
            ))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
        let http = crate::http::serve(
            self.http,
            engine.clone(),
            self.leadership.clone(),
            self.config.http.instance_metrics,
            stopped(stop_rx.clone()),
        );
        info!(grpc = %grpc_addr, http = %http_addr, data_dir = %self.config.data_dir.display(), "ebb-controller serving");
        let grpc = tokio::spawn(grpc);
        let http = tokio::spawn(http);
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
            let election = async {
                if let Some(e) = election {
                    let _ = e.await;
                }
            };
            let (g, h, _, _, _) = tokio::join!(grpc, http, terms, election, rotation);
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

/// Runs the control loops (`control_loops`) and the notifier for each term
/// this controller leads, until `stop`: from the start with SQLite, from
/// each election won with etcd. When a term ends (leadership lost), the
/// loops stop before anything else happens, and the agents' streams are
/// closed so they go to the new leader.
async fn lead_terms(engine: Arc<Engine>, leadership: Arc<Leadership>, stop: watch::Receiver<bool>) {
    let mut role = leadership.subscribe();
    loop {
        tokio::select! {
            led = role.wait_for(|r| *r == Role::Leader) => if led.is_err() { return },
            () = stopped(stop.clone()) => return,
        }
        if leadership.is_elected()
            && let Err(e) = engine.begin_term().await
        {
            warn!("taking over: {e}");
        }
        if let Err(e) = crate::engine::alarms::align_owned_alarms(&engine).await {
            warn!("aligning target-tracking alarms: {e}");
        }
        let (term_tx, term_rx) = watch::channel(false);
        let loops = match control_loops(engine.clone(), term_rx.clone()) {
            Ok(loops) => loops,
            Err(e) => {
                warn!("{e}");
                return;
            }
        };
        let notifier = tokio::spawn(crate::engine::notify::run(engine.clone(), term_rx));
        tokio::select! {
            _ = role.wait_for(|r| *r != Role::Leader) => {}
            () = stopped(stop.clone()) => {}
        }
        let _ = term_tx.send(true);
        let _ = tokio::join!(loops, notifier);
        if *stop.borrow() {
            return;
        }
        let agents = engine.fleet.instance_ids();
        for id in &agents {
            engine.fleet.close(id, CloseReason::SteppedDown);
        }
        warn!(
            agents = agents.len(),
            "stopped acting: the control loops ended and the agents were sent to the leader"
        );
    }
}

/// Opens the etcd store: a replica of etcd's keys under `prefix`, and the
/// fence the election sets on its writes. Blocks until the replica holds
/// etcd's current revision.
async fn open_etcd_store(
    settings: EtcdSettings,
    prefix: &str,
) -> Result<(Arc<dyn Store>, Arc<dyn FencedStore>), StartError> {
    let prefix = prefix.to_owned();
    let store = tokio::task::spawn_blocking(move || EtcdStore::open(&settings, &prefix))
        .await
        .map_err(|e| StartError::Etcd(e.to_string()))??;
    let store = Arc::new(store);
    Ok((store.clone(), store))
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

/// Makes or reuses the bridge of `provider.network = "namespace"`, and
/// listens on its address with the gRPC port, unless `grpc.listen` already
/// covers it (every address, or the bridge's).
async fn bridge(
    config: &ProviderConfig,
    grpc: &TcpListener,
) -> Result<(Arc<Network>, Option<TcpListener>), StartError> {
    let subnet = config.subnet().map_err(StartError::Network)?;
    let network = Network::setup(&config.bridge, subnet)
        .await
        .map_err(StartError::Network)?;
    let grpc = grpc.local_addr().expect("bound socket has an address");
    let gateway = std::net::IpAddr::V4(network.gateway());
    let listener = if grpc.ip().is_unspecified() || grpc.ip() == gateway {
        None
    } else {
        Some(
            bind(
                SocketAddr::new(gateway, grpc.port()),
                "grpc.listen, on provider.bridge",
            )
            .await?,
        )
    };
    info!(bridge = network.bridge(), address = %gateway, %subnet, "instances get network namespaces on the bridge");
    Ok((Arc::new(network), listener))
}

/// Looks up the sampling interval of an instance's group.
fn group_intervals(store: Arc<dyn Store>) -> IntervalLookup {
    Arc::new(move |id: &str| {
        let instance = store.get_instance(id).ok().flatten()?;
        let group = store.get_group(&instance.group_id).ok().flatten()?;
        Some(Duration::from_secs(u64::from(group.sampling_interval_secs)))
    })
}

/// The uids instances run as, when isolation is on (see `provider::isolation`).
fn instance_users(config: &ProviderConfig) -> Result<Option<Users>, StartError> {
    let why_not = isolation::cannot_switch_users()
        .map(Err)
        .unwrap_or_else(isolation::find_setpriv);
    let setpriv = match (config.isolation, why_not) {
        (Isolation::Off, _) => {
            warn!(
                "provider.isolation = \"off\": instances run as the controller's own user and can read its keys"
            );
            return Ok(None);
        }
        (_, Ok(setpriv)) => setpriv,
        (Isolation::Auto, Err(why)) => {
            warn!(
                "instances run as the controller's own user and can read its keys: {why} (see provider.isolation in docs/configuration.md)"
            );
            return Ok(None);
        }
        (Isolation::On, Err(why)) => return Err(StartError::Isolation(why)),
    };
    let (first, count) = config.uids().map_err(StartError::Isolation)?;
    info!(uids = %config.uid_range, "each instance runs as a uid of its own");
    Ok(Some(Users::new(first, count, setpriv)))
}

/// Whether a target agent may hold a stream: its identity is not revoked.
/// Which attachments name it decides what it is sent, not whether it may
/// connect: a target set up before its group's attach call waits, idle.
fn target_admission(deny: Arc<DenyList>, trust_domain: String) -> Admission {
    Arc::new(move |name: &str| {
        let uri = format!("spiffe://{trust_domain}/target/{name}");
        if deny.contains(&uri) {
            return Err(Refusal {
                reason: "revoked",
                message: format!(
                    "certificate {uri} was revoked (`ebbctl cert revoked` lists the deny-list)"
                ),
            });
        }
        Ok(())
    })
}

/// Whether an instance may hold a stream: one point read of the store
/// (and one more, of the detached table, only to explain a refusal).
fn admission(store: Arc<dyn Store>, deny: Arc<DenyList>, trust_domain: String) -> Admission {
    Arc::new(move |id: &str| {
        let uri = format!("spiffe://{trust_domain}/instance/{id}");
        if deny.contains(&uri) {
            return Err(Refusal {
                reason: "revoked",
                message: format!(
                    "certificate {uri} was revoked (`ebbctl cert revoked` lists the deny-list)"
                ),
            });
        }
        let unavailable = |e: crate::store::StoreError| Refusal {
            reason: "store",
            message: format!("cannot check instance {id} in the store: {e}"),
        };
        if store.get_instance(id).map_err(unavailable)?.is_some() {
            return Ok(());
        }
        Err(match store.get_detached(id).map_err(unavailable)? {
            Some(_) => Refusal {
                reason: "detached",
                message: format!(
                    "instance {id} was detached from its group; attach it again (`ebbctl instance attach`) to let it connect"
                ),
            },
            None => Refusal {
                reason: "unknown_instance",
                message: format!(
                    "instance {id} is in no scaling group (removed, or never attached); attach it (`ebbctl instance attach`) to let it connect"
                ),
            },
        })
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

/// How long a start waits for the data dir's lock. A controller killed
/// while launching an instance can leave a child between its fork and its
/// exec, which holds a copy of the lock until it execs (the descriptor is
/// close-on-exec): a moment, but a restart can come sooner.
const LOCK_WAIT: Duration = Duration::from_secs(3);

fn lock_data_dir(dir: &Path, wait: Duration) -> Result<File, StartError> {
    let path = dir.join("controller.lock");
    let file = File::create(&path).map_err(|source| StartError::DataDir {
        path: path.clone(),
        source,
    })?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StartError::Locked(dir.to_owned()));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StartError::DataDir { path, source });
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_lock_is_waited_for_a_moment_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_data_dir(dir.path(), Duration::ZERO).unwrap();
        // Held throughout the wait: another controller owns the dir.
        let err = lock_data_dir(dir.path(), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, StartError::Locked(_)), "{err}");
        // Let go during the wait, as a dead predecessor's child does when it
        // execs: taken.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        lock_data_dir(dir.path(), Duration::from_secs(30)).unwrap();
        release.join().unwrap();
    }
}
