//! The real ebb-agent binary against stand-in controllers over real mTLS,
//! as several controllers on one store look to it: one is the leader, the
//! others refuse with `UNAVAILABLE` naming it (`ebb_proto::redirect`). The
//! agent skips a dead address, follows the leader named even when it is not
//! in its list, and follows again when its leader steps down naming another;
//! `ebb-agent join` joins at the leader a follower names.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_proto::redirect::not_leader;
use ebb_proto::v1::agent_message::Body as In;
use ebb_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use ebb_proto::v1::controller_message::Body as Out;
use ebb_proto::v1::join_service_server::{JoinService, JoinServiceServer};
use ebb_proto::v1::{AgentMessage, ControllerMessage, JoinRequest, JoinResponse, Welcome};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// Generous for a busy machine: every wait here is for something that
/// takes well under a second on an idle one.
const DEADLINE: Duration = Duration::from_secs(30);

type Script = mpsc::Receiver<Result<ControllerMessage, Status>>;

/// A stand-in for one controller's AgentService: a follower refuses every
/// stream naming `leader`; a leader hands the test each stream's first
/// message and sends what the test scripts.
struct Controller {
    leader: Option<String>,
    refused: Arc<AtomicUsize>,
    hellos: mpsc::Sender<AgentMessage>,
    script: Mutex<Option<Script>>,
}

#[tonic::async_trait]
impl AgentService for Controller {
    type ConnectStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        if let Some(leader) = &self.leader {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(not_leader(Some(leader)));
        }
        let Some(script) = self.script.lock().unwrap().take() else {
            return Err(Status::unavailable("one stream only"));
        };
        let mut inbound = request.into_inner();
        if let Ok(Some(hello)) = inbound.message().await {
            let _ = self.hellos.send(hello).await;
        }
        // Keep reading so the agent's half stays open.
        tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
        Ok(Response::new(ReceiverStream::new(script)))
    }
}

/// A CA, a server certificate for 127.0.0.1 whose chain carries the CA
/// (as the controller's does, for `join`'s pin) and a directory.
struct Pki {
    ca: Arc<ebb_certs::Ca>,
    server: ebb_certs::Issued,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let ca = ebb_certs::Ca::generate("ebb.local", ebb_certs::CA_VALIDITY).unwrap();
        let server = ca
            .issue_server(&[], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        Self {
            ca: Arc::new(ca),
            server,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `required`: whether a client certificate must be shown (the agent
    /// stream), or may not be (`join`).
    fn tls(&self, required: bool) -> ServerTlsConfig {
        let chain = format!("{}{}", self.server.cert_pem, self.ca.cert_pem());
        ServerTlsConfig::new()
            .identity(Identity::from_pem(chain, &self.server.key_pem))
            .client_ca_root(Certificate::from_pem(self.ca.cert_pem()))
            .client_auth_optional(!required)
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// Serves `routes` over TLS on a fresh loopback port; its `host:port`.
async fn serve(routes: tonic::service::Routes, tls: ServerTlsConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_routes(routes)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// A follower naming `leader`, and how many streams it refused.
async fn follower(pki: &Pki, leader: &str) -> (String, Arc<AtomicUsize>) {
    let refused = Arc::new(AtomicUsize::new(0));
    let (hellos, _) = mpsc::channel(1);
    let svc = Controller {
        leader: Some(leader.to_owned()),
        refused: refused.clone(),
        hellos,
        script: Mutex::new(None),
    };
    let routes = tonic::service::Routes::new(AgentServiceServer::new(svc));
    (serve(routes, pki.tls(true)).await, refused)
}

/// A leader: its address, the Hellos it gets and what to send.
struct Leader {
    addr: String,
    hellos: mpsc::Receiver<AgentMessage>,
    send: mpsc::Sender<Result<ControllerMessage, Status>>,
}

async fn leader(pki: &Pki) -> Leader {
    let (hello_tx, hellos) = mpsc::channel(4);
    let (send, script) = mpsc::channel(4);
    let svc = Controller {
        leader: None,
        refused: Arc::default(),
        hellos: hello_tx,
        script: Mutex::new(Some(script)),
    };
    let routes = tonic::service::Routes::new(AgentServiceServer::new(svc));
    Leader {
        addr: serve(routes, pki.tls(true)).await,
        hellos,
        send,
    }
}

impl Leader {
    /// The instance id in the first Hello this leader gets.
    async fn hello(&mut self) -> String {
        let got = tokio::time::timeout(DEADLINE, self.hellos.recv())
            .await
            .unwrap_or_else(|_| panic!("no Hello at {} within {DEADLINE:?}", self.addr))
            .expect("the stand-in is running");
        match got.body {
            Some(In::Hello(h)) => h.instance_id,
            other => panic!("a stream opened with {other:?}, not a Hello"),
        }
    }

    async fn welcome(&self) {
        let body = Out::Welcome(Welcome {
            protocol_version: 1,
            sampling_interval_ms: 1000,
            collect: vec![],
        });
        self.send
            .send(Ok(ControllerMessage { body: Some(body) }))
            .await
            .unwrap();
    }
}

/// The process's stderr as it arrives.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);

impl Log {
    fn capture(&self, stderr: tokio::process::ChildStderr) {
        let log = self.0.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push_str(&line);
                log.lock().unwrap().push('\n');
            }
        });
    }

    async fn wait_for(&self, needle: &str) {
        let start = Instant::now();
        while !self.0.lock().unwrap().contains(needle) {
            assert!(
                start.elapsed() < DEADLINE,
                "no `{needle}` in the agent's log within {DEADLINE:?}:\n{}",
                self.0.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn the_agent_skips_a_dead_controller_and_follows_the_leader_named() {
    let pki = Pki::new();
    pki.ca
        .issue_agent("i-follow", ebb_certs::AGENT_VALIDITY)
        .unwrap()
        .write(&pki.path("agent.crt"), &pki.path("agent.key"))
        .unwrap();
    std::fs::write(pki.path("ca.crt"), pki.ca.cert_pem()).unwrap();
    let mut first = leader(&pki).await;
    let mut second = leader(&pki).await;
    let (follower, refused) = follower(&pki, &first.addr).await;
    // Nothing listens here: the agent must move on to the next address.
    let dead = format!("127.0.0.1:{}", ebb_tests::peers::free_port());
    // The leaders are not in the list: only the follower names them.
    std::fs::write(
        pki.path("agent.toml"),
        format!(
            "controller = [\"{dead}\", \"{follower}\"]\n[reconnect]\nmax_backoff_ms = 1000\n\
             [tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n"
        ),
    )
    .unwrap();
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_ebb-agent"))
        .arg("--config")
        .arg(pki.path("agent.toml"))
        .env("EBB_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = Log::default();
    log.capture(agent.stderr.take().unwrap());

    assert_eq!(first.hello().await, "i-follow");
    first.welcome().await;
    log.wait_for(&format!("cannot connect to the controller at {dead}"))
        .await;
    log.wait_for(&format!(
        "the controller at {follower} is not the leader; following the leader at {}",
        first.addr
    ))
    .await;
    log.wait_for(&format!(
        "connected to the controller controller={}",
        first.addr
    ))
    .await;
    assert!(refused.load(Ordering::SeqCst) >= 1);

    // The leader steps down, naming its successor on the open stream.
    first
        .send
        .send(Err(not_leader(Some(&second.addr))))
        .await
        .unwrap();
    assert_eq!(second.hello().await, "i-follow");
    second.welcome().await;
    log.wait_for(&format!(
        "the controller at {} is not the leader; following the leader at {}",
        first.addr, second.addr
    ))
    .await;
    log.wait_for(&format!(
        "connected to the controller controller={}",
        second.addr
    ))
    .await;
    let text = log.0.lock().unwrap().clone();
    assert_eq!(
        text.matches("following the leader at").count(),
        2,
        "once per change of leader:\n{text}"
    );
    agent.kill().await.unwrap();
}

/// A stand-in JoinService: a follower refuses naming `leader`; the leader
/// signs the request for instance `i-joined`.
struct Joiner {
    leader: Option<String>,
    ca: Arc<ebb_certs::Ca>,
    joins: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl JoinService for Joiner {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        if let Some(leader) = &self.leader {
            return Err(not_leader(Some(leader)));
        }
        self.joins.fetch_add(1, Ordering::SeqCst);
        let r = request.into_inner();
        let identity = ebb_certs::Identity::instance("ebb.local", "i-joined").unwrap();
        let cert_pem = self
            .ca
            .sign_csr(&r.csr_pem, &identity, ebb_certs::AGENT_VALIDITY)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(JoinResponse {
            cert_pem,
            ca_pem: self.ca.cert_pem().to_owned(),
            instance_id: "i-joined".into(),
            scaling_group_name: "web".into(),
            ..Default::default()
        }))
    }
}

#[tokio::test]
async fn join_is_made_at_the_leader_a_follower_names() {
    let pki = Pki::new();
    let ca = pki.ca.clone();
    let joins = Arc::new(AtomicUsize::new(0));
    let joiner = |leader: Option<String>| {
        tonic::service::Routes::new(JoinServiceServer::new(Joiner {
            leader,
            ca: ca.clone(),
            joins: joins.clone(),
        }))
    };
    let leader = serve(joiner(None), pki.tls(false)).await;
    let follower = serve(joiner(Some(leader.clone())), pki.tls(false)).await;
    let ca_hash = ebb_certs::ca_hash_pem(pki.ca.cert_pem()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ebb-agent"))
        .arg("--config")
        .arg(pki.path("agent.toml"))
        .args(["join", "--controller", &follower, "--token"])
        .arg("abcdef.0123456789abcdef")
        .args(["--ca-hash", &ca_hash, "--no-run"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "joined as instance i-joined of group web at the leader, {leader} ({follower} is not the leader)"
        )),
        "{stderr}"
    );
    assert_eq!(joins.load(Ordering::SeqCst), 1);
    let cert = ebb_certs::load_certs(&pki.path("agent.crt")).unwrap();
    let id = ebb_certs::peer_identity(&cert[0]).unwrap();
    assert_eq!(id.role, ebb_certs::Role::Instance("i-joined".into()));
    // agent.toml keeps the address given: the agent finds the leader itself.
    let config = std::fs::read_to_string(pki.path("agent.toml")).unwrap();
    assert!(
        config.contains(&format!("controller = \"{follower}\"")),
        "{config}"
    );
}
