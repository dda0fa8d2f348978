//! A target agent's HAProxy driver against a real `haproxy` (Debian's 2.6)
//! with a runtime socket, real HTTP backends on loopback ports, and
//! requests through its frontend.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ebb_agent::target::haproxy::Haproxy as Driver;
use ebb_proto::v1::{AttachmentReport, LoadBalancerMembers, Member, MemberState};
use ebb_tests::peers::{Haproxy, free_port, http_get};

const DEADLINE: Duration = Duration::from_secs(30);

/// A real haproxy (`ebb_tests::peers`) whose backend `web` (roundrobin)
/// holds one static server ebb must leave alone.
struct Proxy(Haproxy);

impl Proxy {
    /// `static1` at `static_port` in backend `web`; `extra` is added to
    /// the config.
    fn start(static_port: u16, extra: &str) -> Self {
        Self(Haproxy::start(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "web",
            &format!(
                "backend web\n    balance roundrobin\n    server static1 127.0.0.1:{static_port}\n{extra}"
            ),
        ))
    }

    fn socket(&self) -> PathBuf {
        self.0.socket()
    }

    fn state_dir(&self) -> PathBuf {
        self.0.dir().join("state")
    }

    fn runtime(&self, cmd: &str) -> String {
        self.0.runtime(cmd)
    }

    /// Backend `web`'s servers: (name, port, admin state, weight).
    fn servers(&self) -> Vec<(String, u16, u32, u32)> {
        self.0
            .servers("web")
            .into_iter()
            .map(|s| (s.name, s.port, s.admin_state, s.weight))
            .collect()
    }

    /// Who answers 24 requests through the frontend.
    fn answers(&self) -> BTreeSet<String> {
        (0..24).filter_map(|_| http_get(self.0.frontend)).collect()
    }
}

/// A tiny HTTP server on a loopback port answering its name, for the life
/// of the test process.
fn backend(name: &str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let name = name.to_owned();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                name.len()
            );
        }
    });
    port
}

fn member(id: &str, port: u16, weight: u32, state: MemberState) -> Member {
    Member {
        instance_id: id.into(),
        address: "127.0.0.1".into(),
        port: port.into(),
        weight,
        state: state as i32,
    }
}

fn web(members: Vec<Member>) -> Vec<LoadBalancerMembers> {
    vec![LoadBalancerMembers {
        attachment_id: "g-1/web".into(),
        backend: "web".into(),
        members,
    }]
}

async fn converge(h: &mut Driver, lbs: &[LoadBalancerMembers]) -> Vec<AttachmentReport> {
    h.converge(lbs, &|| false).await
}

/// The members a report holds: (id, state, error).
fn held(r: &AttachmentReport) -> Vec<(String, MemberState, String)> {
    let mut v: Vec<_> = r
        .members
        .iter()
        .map(|m| {
            (
                m.instance_id.clone(),
                MemberState::try_from(m.state).unwrap(),
                m.error.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn servers_follow_the_member_list_and_others_are_left_alone() {
    let (s0, a, b, a2) = (
        backend("static"),
        backend("i-a"),
        backend("i-b"),
        backend("i-a moved"),
    );
    let p = Proxy::start(s0, "");
    let mut h = Driver::new(p.socket(), false, &p.state_dir()).unwrap();

    // Two added: both serve traffic through the frontend, beside the static server.
    let r = converge(
        &mut h,
        &web(vec![
            member("i-a", a, 1, MemberState::Ready),
            member("i-b", b, 1, MemberState::Ready),
        ]),
    )
    .await;
    assert_eq!(r[0].error, "");
    assert_eq!(
        held(&r[0]),
        [
            ("i-a".into(), MemberState::Ready, String::new()),
            ("i-b".into(), MemberState::Ready, String::new())
        ]
    );
    assert!(
        r[0].members.iter().all(|m| m.up.is_none()),
        "no checks, no verdict: {r:?}"
    );
    assert_eq!(p.answers(), set(&["static", "i-a", "i-b"]));

    // Converging the same list again changes nothing.
    let again = converge(
        &mut h,
        &web(vec![
            member("i-a", a, 1, MemberState::Ready),
            member("i-b", b, 1, MemberState::Ready),
        ]),
    )
    .await;
    assert_eq!(again, r);

    // Drained: HAProxy shows DRAIN (admin state 0x08) and sends it nothing new.
    let r = converge(
        &mut h,
        &web(vec![
            member("i-a", a, 1, MemberState::Ready),
            member("i-b", b, 1, MemberState::Drain),
        ]),
    )
    .await;
    assert!(
        held(&r[0]).contains(&("i-b".into(), MemberState::Drain, String::new())),
        "{r:?}"
    );
    assert!(
        p.servers().iter().any(|s| s.0 == "i-b" && s.2 & 0x08 != 0),
        "{:?}",
        p.servers()
    );
    assert_eq!(p.answers(), set(&["static", "i-a"]));

    // Removed: deleted from the backend; the static server untouched.
    let r = converge(&mut h, &web(vec![member("i-a", a, 1, MemberState::Ready)])).await;
    assert_eq!(
        held(&r[0]),
        [("i-a".into(), MemberState::Ready, String::new())]
    );
    let servers = p.servers();
    assert!(!servers.iter().any(|s| s.0 == "i-b"), "{servers:?}");
    assert!(
        servers.contains(&("static1".into(), s0, 0, 1)),
        "{servers:?}"
    );

    // A new port and weight.
    converge(&mut h, &web(vec![member("i-a", a2, 7, MemberState::Ready)])).await;
    assert!(
        p.servers()
            .iter()
            .any(|s| s.0 == "i-a" && s.1 == a2 && s.3 == 7),
        "{:?}",
        p.servers()
    );
    assert_eq!(p.answers(), set(&["static", "i-a moved"]));

    // Maintenance: no traffic at all.
    let r = converge(&mut h, &web(vec![member("i-a", a2, 7, MemberState::Maint)])).await;
    assert_eq!(
        held(&r[0]),
        [("i-a".into(), MemberState::Maint, String::new())]
    );
    assert_eq!(p.answers(), set(&["static"]));

    // A member named like the static server: refused, the server untouched.
    let r = converge(
        &mut h,
        &web(vec![
            member("static1", a, 9, MemberState::Drain),
            member("i-a", a2, 7, MemberState::Ready),
        ]),
    )
    .await;
    let refused = r[0]
        .members
        .iter()
        .find(|m| m.instance_id == "static1")
        .unwrap();
    assert!(
        refused.error.contains("that ebb did not add; left alone"),
        "{r:?}"
    );
    assert!(
        p.servers().contains(&("static1".into(), s0, 0, 1)),
        "{:?}",
        p.servers()
    );

    // The agent restarts: it remembers i-a as its own and removes it when
    // no longer listed, still leaving the static server alone.
    drop(h);
    let mut h = Driver::new(p.socket(), false, &p.state_dir()).unwrap();
    let r = converge(&mut h, &web(vec![])).await;
    assert_eq!((r[0].error.as_str(), r[0].members.len()), ("", 0), "{r:?}");
    let servers = p.servers();
    assert_eq!(servers, [("static1".into(), s0, 0, 1)]);
    assert_eq!(p.answers(), set(&["static"]));
}

#[tokio::test]
async fn a_fresh_agent_never_touches_servers_it_did_not_add() {
    let (s0, a) = (backend("static"), backend("i-a"));
    let p = Proxy::start(s0, "");
    let mut h = Driver::new(p.socket(), false, &p.state_dir()).unwrap();
    converge(&mut h, &web(vec![member("i-a", a, 1, MemberState::Ready)])).await;
    // Another state dir: i-a is not this agent's, so it stays.
    let other = tempfile::tempdir().unwrap();
    let mut stranger = Driver::new(p.socket(), false, other.path()).unwrap();
    converge(&mut stranger, &web(vec![])).await;
    assert_eq!(p.servers().len(), 2, "{:?}", p.servers());
}

#[tokio::test]
async fn an_unknown_backend_is_an_attachment_error() {
    let p = Proxy::start(backend("static"), "backend hashed\n    balance source\n");
    let mut h = Driver::new(p.socket(), false, &p.state_dir()).unwrap();
    let lbs = vec![
        LoadBalancerMembers {
            attachment_id: "g-1/nope".into(),
            backend: "nope".into(),
            members: vec![member("i-a", 1, 1, MemberState::Ready)],
        },
        LoadBalancerMembers {
            attachment_id: "g-1/hashed".into(),
            backend: "hashed".into(),
            members: vec![member("i-a", 1, 1, MemberState::Ready)],
        },
    ];
    let r = converge(&mut h, &lbs).await;
    assert!(
        r[0].error.contains("HAProxy has no backend `nope`"),
        "{r:?}"
    );
    // A backend whose algorithm cannot take dynamic servers: HAProxy's reason.
    assert!(
        r[1].members[0].error.contains("dynamic load balancing"),
        "{r:?}"
    );
    assert_eq!(r[1].members[0].state, MemberState::Unspecified as i32);
}

#[tokio::test]
async fn checked_servers_report_the_verdict() {
    let (s0, a) = (backend("static"), backend("i-a"));
    let dead = free_port();
    let p = Proxy::start(
        s0,
        "backend checked\n    balance roundrobin\n    option httpchk GET /\n    default-server inter 200ms\n",
    );
    let mut h = Driver::new(p.socket(), true, &p.state_dir()).unwrap();
    let lbs = vec![LoadBalancerMembers {
        attachment_id: "g-1/checked".into(),
        backend: "checked".into(),
        members: vec![
            member("i-a", a, 1, MemberState::Ready),
            member("i-dead", dead, 1, MemberState::Ready),
        ],
    }];
    let up = |r: &[AttachmentReport], id: &str| {
        r[0].members
            .iter()
            .find(|m| m.instance_id == id)
            .and_then(|m| m.up)
    };
    let start = Instant::now();
    loop {
        let r = converge(&mut h, &lbs).await;
        if up(&r, "i-a") == Some(true) && up(&r, "i-dead") == Some(false) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "no verdicts: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A stand-in for the controller's AgentService: hands the test each
/// stream's inbound messages and takes what to send on it.
struct FakeController {
    inbound: tokio::sync::mpsc::Sender<ebb_proto::v1::AgentMessage>,
    outbound: std::sync::Mutex<
        Option<
            tokio::sync::mpsc::Receiver<Result<ebb_proto::v1::ControllerMessage, tonic::Status>>,
        >,
    >,
}

#[tonic::async_trait]
impl ebb_proto::v1::agent_service_server::AgentService for FakeController {
    type ConnectStream = tokio_stream::wrappers::ReceiverStream<
        Result<ebb_proto::v1::ControllerMessage, tonic::Status>,
    >;

    async fn connect(
        &self,
        request: tonic::Request<tonic::Streaming<ebb_proto::v1::AgentMessage>>,
    ) -> Result<tonic::Response<Self::ConnectStream>, tonic::Status> {
        let Some(outbound) = self.outbound.lock().unwrap().take() else {
            return Err(tonic::Status::unavailable("one stream only"));
        };
        let mut stream = request.into_inner();
        let tx = self.inbound.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = stream.message().await {
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(outbound),
        ))
    }
}

/// The real ebb-agent binary in target mode, over real mTLS, against a fake
/// controller: its Hello names the target, each TargetState is converged
/// in HAProxy and answered with a report of its version, and a check going
/// UP later is reported again without being asked.
#[tokio::test]
async fn a_target_agent_converges_each_state_and_reports_what_changes() {
    use ebb_proto::v1::controller_message::Body as Out;
    use ebb_proto::v1::{
        ControllerMessage, TargetKind, TargetState, Welcome, agent_message::Body as In,
    };

    let s0 = backend("static");
    let late = free_port();
    let p = Proxy::start(
        s0,
        "backend checked\n    balance roundrobin\n    option httpchk GET /\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = ebb_certs::Ca::generate("ebb.local", ebb_certs::CA_VALIDITY).unwrap();
    let server = ca
        .issue_server(&[], &["127.0.0.1".parse().unwrap()])
        .unwrap();
    ca.issue_target("lb-1", ebb_certs::AGENT_VALIDITY)
        .unwrap()
        .write(&dir.path().join("agent.crt"), &dir.path().join("agent.key"))
        .unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();

    let (in_tx, mut inbound) = tokio::sync::mpsc::channel(16);
    let (out, out_rx) = tokio::sync::mpsc::channel(16);
    let fake = FakeController {
        inbound: in_tx,
        outbound: std::sync::Mutex::new(Some(out_rx)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &server.cert_pem,
            &server.key_pem,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca.cert_pem()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(ebb_proto::v1::agent_service_server::AgentServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "controller = \"{addr}\"\n[tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n[target]\nstate_dir = \"{}\"\n[target.haproxy]\nsocket = \"{}\"\ncheck = true\n",
            p.state_dir().display(),
            p.socket().display()
        ),
    )
    .unwrap();
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_ebb-agent"))
        .arg("--config")
        .arg(dir.path().join("agent.toml"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let In::Hello(hello) = next(&mut inbound).await else {
        panic!("no Hello first")
    };
    assert_eq!(
        (
            hello.instance_id.as_str(),
            hello.target_name.as_str(),
            hello.drives.as_slice()
        ),
        ("", "lb-1", [TargetKind::Haproxy as i32].as_slice())
    );
    let send = |body| out.send(Ok(ControllerMessage { body: Some(body) }));
    send(Out::Welcome(Welcome {
        protocol_version: 1,
        sampling_interval_ms: 1000,
        collect: vec![],
    }))
    .await
    .unwrap();
    let state = |version, members| TargetState {
        version,
        load_balancers: vec![LoadBalancerMembers {
            attachment_id: "g-1/checked".into(),
            backend: "checked".into(),
            members,
        }],
        allow_lists: vec![],
    };
    // Nobody listens on `late` yet: the server is added, its check says DOWN.
    send(Out::TargetState(state(
        3,
        vec![member("i-a", late, 1, MemberState::Ready)],
    )))
    .await
    .unwrap();
    let r = report(&mut inbound).await;
    assert_eq!(r.version, 3);
    assert_eq!(
        held(&r.attachments[0]),
        [("i-a".into(), MemberState::Ready, String::new())]
    );
    assert_eq!(r.attachments[0].members[0].up, Some(false));

    // The workload comes up: a new report, same version, says so unasked.
    let l = TcpListener::bind(("127.0.0.1", late)).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0; 4096];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    loop {
        let r = report(&mut inbound).await;
        assert_eq!(r.version, 3);
        if r.attachments[0].members[0].up == Some(true) {
            break;
        }
    }

    // Two states in a row: the last one is what HAProxy ends up holding.
    send(Out::TargetState(state(
        4,
        vec![member("i-a", late, 1, MemberState::Drain)],
    )))
    .await
    .unwrap();
    send(Out::TargetState(state(5, vec![]))).await.unwrap();
    loop {
        let r = report(&mut inbound).await;
        if r.version == 5 {
            assert!(r.attachments[0].members.is_empty(), "{r:?}");
            break;
        }
    }
    assert!(!p.runtime("show servers state checked").contains("i-a"));
    agent.kill().await.unwrap();
}

type Inbound = tokio::sync::mpsc::Receiver<ebb_proto::v1::AgentMessage>;

async fn next(inbound: &mut Inbound) -> ebb_proto::v1::agent_message::Body {
    tokio::time::timeout(DEADLINE, inbound.recv())
        .await
        .expect("a message from the agent in time")
        .expect("the stream is open")
        .body
        .expect("a body")
}

/// The next TargetReport, skipping anything else the agent sends.
async fn report(inbound: &mut Inbound) -> ebb_proto::v1::TargetReport {
    loop {
        if let ebb_proto::v1::agent_message::Body::TargetReport(r) = next(inbound).await {
            return r;
        }
    }
}

/// A backend that answers only once `release` is set: its requests stay
/// in flight, as sessions HAProxy counts (`scur`).
fn held_backend(release: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let release = release.clone();
            std::thread::spawn(move || {
                let mut buf = [0; 4096];
                let _ = s.read(&mut buf);
                while !release.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow",
                );
            });
        }
    });
    port
}

#[tokio::test]
async fn a_drained_servers_sessions_are_reported_and_cut_at_removal() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let release = Arc::new(AtomicBool::new(false));
    let slow = held_backend(release.clone());
    let fe2 = free_port();
    let p = Proxy::start(
        backend("static"),
        &format!(
            "frontend fe2\n    bind 127.0.0.1:{fe2}\n    default_backend pool\nbackend pool\n    balance roundrobin\n"
        ),
    );
    let mut h = Driver::new(p.socket(), false, &p.state_dir()).unwrap();
    let pool = |state| {
        vec![LoadBalancerMembers {
            attachment_id: "g-1/pool".into(),
            backend: "pool".into(),
            members: vec![member("i-a", slow, 1, state)],
        }]
    };
    converge(&mut h, &pool(MemberState::Ready)).await;
    // Two requests in flight (HAProxy has handed both to the server: a
    // request that arrives once it drains has no server to go to), then
    // the server is drained, and its sessions are still reported.
    let clients: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || http_get(SocketAddr::from(([127, 0, 0, 1], fe2)))))
        .collect();
    let sessions = |r: &[AttachmentReport]| r[0].members[0].current_sessions;
    let start = Instant::now();
    while sessions(&converge(&mut h, &pool(MemberState::Ready)).await) != 2 {
        assert!(start.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = converge(&mut h, &pool(MemberState::Drain)).await;
    assert_eq!(r[0].members[0].state, MemberState::Drain as i32, "{r:?}");
    assert_eq!(sessions(&r), 2, "{r:?}");
    // They finish: the report says no session is left.
    release.store(true, Ordering::SeqCst);
    for c in clients {
        assert_eq!(c.join().unwrap().as_deref(), Some("slow"));
    }
    let start = Instant::now();
    while sessions(&converge(&mut h, &pool(MemberState::Drain)).await) != 0 {
        assert!(start.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A session still open when the member is unlisted is cut, and the
    // server deleted.
    release.store(false, Ordering::SeqCst);
    converge(&mut h, &pool(MemberState::Ready)).await;
    let client = std::thread::spawn(move || http_get(SocketAddr::from(([127, 0, 0, 1], fe2))));
    let start = Instant::now();
    while sessions(&converge(&mut h, &pool(MemberState::Ready)).await) != 1 {
        assert!(start.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = Instant::now();
    loop {
        let r = converge(
            &mut h,
            &[LoadBalancerMembers {
                attachment_id: "g-1/pool".into(),
                backend: "pool".into(),
                members: vec![],
            }],
        )
        .await;
        if r[0].members.is_empty() {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!p.runtime("show servers state pool").contains("i-a"));
    assert_eq!(
        client.join().unwrap(),
        None,
        "the cut request got no answer"
    );
    release.store(true, Ordering::SeqCst);
}
