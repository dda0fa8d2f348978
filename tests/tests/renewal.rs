//! Certificates that renew themselves, end to end: real controllers and
//! agents over real mTLS. An agent renews over its open stream and never
//! drops it; the server certificate rotates under fifty open streams; a bad
//! renewal request is refused without harming the stream; admin certs are
//! issued from a CSR and every identity's expiry is listed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ebb_proto::v1 as pb;
use ebb_proto::v1::agent_message::Body as AgentBody;
use ebb_proto::v1::controller_message::Body as ControllerBody;
use ebb_tests::{
    Admin, ControllerProc, DEADLINE, Sandbox, admin_call, enabled_group, eventually, instances,
};
use tokio::sync::mpsc;

fn start(sb: &Sandbox, extra: &str) -> ControllerProc {
    let any = "127.0.0.1:0".parse().unwrap();
    ControllerProc::start_configured(sb.path(), 1000, any, any, extra).unwrap()
}

/// An active group of `min` launched `sleep` instances, room for `max`.
fn group(admin: &mut Admin, name: &str, min: u32, max: u32) {
    enabled_group(
        admin,
        pb::CreateScalingGroupRequest {
            name: name.into(),
            min_size: min,
            max_size: max,
            sampling_interval_secs: Some(1),
            health_check_grace_period_secs: Some(1),
            ..Default::default()
        },
    );
}

/// The group's one launched instance, once it is in service and healthy.
fn launched(admin: &mut Admin, group: &str) -> pb::Instance {
    eventually(
        &format!("an instance of {group} in service"),
        DEADLINE * 2,
        || {
            instances(admin, group).into_iter().find(|i| {
                i.lifecycle_state == "InService"
                    && i.agent_connected
                    && i.health_status == "Healthy"
            })
        },
    )
}

fn serial_of(pem: &str) -> String {
    ebb_certs::describe_pem(pem).unwrap().serial
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The serial of the certificate the controller serves to a new handshake.
fn served_serial(ctl: &ControllerProc) -> String {
    use rustls::pki_types::ServerName;
    use rustls::pki_types::pem::PemObject;
    let pki = ctl.pki_dir();
    let mut roots = rustls::RootCertStore::empty();
    for c in ebb_certs::load_certs(&pki.join("ca.crt")).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            ebb_certs::load_certs(&pki.join("admin.crt")).unwrap(),
            rustls::pki_types::PrivateKeyDer::from_pem_file(pki.join("admin.key")).unwrap(),
        )
        .unwrap();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tcp = std::net::TcpStream::connect(ctl.grpc).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    let leaf = &conn.peer_certificates().expect("server certificate")[0];
    ebb_certs::describe(leaf).unwrap().serial
}

/// An agent stream driven by the test: it answers every Pull with an
/// empty Sample, counts them, and hands every other message back.
struct RawAgent {
    tx: mpsc::Sender<pb::AgentMessage>,
    answers: mpsc::Receiver<ControllerBody>,
    pulls: Arc<AtomicU64>,
    ended: Arc<AtomicBool>,
}

impl RawAgent {
    /// Connects as instance `id` with a fresh cert from the controller's CA.
    async fn connect(ctl: &ControllerProc, ca: &ebb_certs::Ca, id: &str) -> Self {
        use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
        let issued = ca.issue_agent(id, ebb_certs::AGENT_VALIDITY).unwrap();
        let ca_pem = std::fs::read_to_string(ctl.pki_dir().join("ca.crt")).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(&issued.cert_pem, &issued.key_pem))
            .domain_name("localhost");
        let channel = Channel::from_shared(format!("https://{}", ctl.grpc))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_timeout(Duration::from_secs(20))
            .connect()
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::AgentMessage {
            body: Some(AgentBody::Hello(pb::Hello {
                protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
                instance_id: id.to_owned(),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let mut inbound = client
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap_or_else(|s| panic!("{id} refused: {s:?}"))
            .into_inner();
        let (answers_tx, answers) = mpsc::channel(16);
        let pulls = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(AtomicBool::new(false));
        let (pulls2, ended2, tx2) = (pulls.clone(), ended.clone(), tx.clone());
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                match msg.body {
                    Some(ControllerBody::Pull(p)) => {
                        pulls2.fetch_add(1, Ordering::SeqCst);
                        let sample = pb::Sample {
                            seq: p.seq,
                            ..Default::default()
                        };
                        let _ = tx2
                            .send(pb::AgentMessage {
                                body: Some(AgentBody::Sample(sample)),
                            })
                            .await;
                    }
                    Some(other) => {
                        let _ = answers_tx.send(other).await;
                    }
                    None => {}
                }
            }
            ended2.store(true, Ordering::SeqCst);
        });
        Self {
            tx,
            answers,
            pulls,
            ended,
        }
    }

    /// Sends a renewal request and waits for its answer.
    async fn renew(&mut self, csr_pem: String) -> pb::Renewed {
        self.tx
            .send(pb::AgentMessage {
                body: Some(AgentBody::RenewRequest(pb::RenewRequest { csr_pem })),
            })
            .await
            .unwrap();
        loop {
            let next = tokio::time::timeout(DEADLINE, self.answers.recv())
                .await
                .expect("an answer to the renewal request")
                .expect("stream open");
            if let ControllerBody::Renewed(r) = next {
                return r;
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn attach(admin: &mut Admin, group: &str, ids: Vec<String>) {
    admin_call!(
        *admin,
        attach_instances,
        pb::AttachInstancesRequest {
            client_token: String::new(),
            scaling_group: group.into(),
            instance_ids: ids,
        }
    )
    .unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// 30 s agent certificates, renewed at about 20 s: across three renewals
/// the agent keeps its one stream and stays healthy; each new cert on disk
/// names the same instance and is for the key beside it, which stays 0600.
#[test]
fn an_agent_renews_three_times_over_one_stream() {
    let sb = Sandbox::new();
    let ctl = start(&sb, "[tls]\nagent_cert_lifetime_secs = 30\n");
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "web", 1, 2);
    let inst = launched(&mut admin, "web");
    let dir = ctl.dir.join("ebb-data/instances").join(&inst.id);
    // The agent keeps its certificate and key in its host dir (its own uid's).
    let (crt, key) = (dir.join("host/agent.crt"), dir.join("host/agent.key"));
    let first = std::fs::read_to_string(&crt).unwrap();
    let first_info = ebb_certs::describe_pem(&first).unwrap();
    let life = first_info.not_after - first_info.not_before;
    assert!(life <= time::Duration::seconds(40), "launched with {life}");

    let mut seen = vec![first_info.serial.clone()];
    let mut last_not_after = first_info.not_after;
    while seen.len() < 4 {
        let pem = eventually(
            &format!("renewal {} of the agent's certificate", seen.len()),
            DEADLINE * 3,
            || {
                let pem = std::fs::read_to_string(&crt).ok()?;
                let serial = ebb_certs::describe_pem(&pem).ok()?.serial;
                (!seen.contains(&serial)).then_some(pem)
            },
        );
        let info = ebb_certs::describe_pem(&pem).unwrap();
        assert_eq!(
            info.identity.as_ref().map(|i| i.uri()),
            Some(format!("spiffe://ebb.local/instance/{}", inst.id))
        );
        assert!(
            info.not_after > last_not_after,
            "a renewal extends the life"
        );
        assert!(info.not_before <= time::OffsetDateTime::now_utc());
        let key_pem = std::fs::read_to_string(&key).unwrap();
        assert!(
            ebb_certs::key_matches(&pem, &key_pem).unwrap(),
            "agent.crt is for agent.key"
        );
        assert_eq!(mode(&key), 0o600, "agent.key stays 0600");
        // Still the same stream, in service and healthy.
        let now = instances(&mut admin, "web");
        assert_eq!(now.len(), 1, "{now:?}");
        assert_eq!(now[0].id, inst.id, "never replaced");
        assert_eq!(now[0].health_status, "Healthy");
        assert!(now[0].agent_connected);
        seen.push(info.serial);
        last_not_after = info.not_after;
    }
    // The stream the agent opened first is the only one it ever had.
    let agent_log = std::fs::read_to_string(dir.join("agent.log")).unwrap();
    assert_eq!(
        agent_log.matches("connected to the controller").count(),
        1,
        "{agent_log}"
    );
    assert!(!agent_log.contains("lost the controller"), "{agent_log}");
    assert!(agent_log.contains("renewed the certificate"), "{agent_log}");
    let log = ctl.proc.log_text();
    assert!(!log.contains("agent disconnected"), "{log}");
    assert_eq!(log.matches("agent connected").count(), 1, "{log}");
    assert!(ctl.metric("ebb_cert_renewals_total").unwrap() >= 3.0);
    assert_eq!(ctl.metric("ebb_cert_renewals_refused_total"), Some(0.0));
    // The registry holds the latest one.
    let listed = admin_call!(
        admin,
        list_certificates,
        pb::ListCertificatesRequest::default()
    )
    .unwrap();
    let mine = listed
        .certificates
        .iter()
        .find(|c| c.identity.ends_with(&format!("/instance/{}", inst.id)))
        .expect("the agent's entry");
    assert_eq!(mine.kind, "agent");
    assert!(seen.contains(&mine.serial), "{mine:?}");

    // The first certificate has expired by now: the agent's next
    // connection, after a controller restart, uses the latest one.
    assert!(first_info.not_after < time::OffsetDateTime::now_utc());
    drop(admin);
    let (grpc, http) = ctl.kill();
    let ctl = ControllerProc::start_configured(
        sb.path(),
        1000,
        grpc,
        http,
        "[tls]\nagent_cert_lifetime_secs = 30\n",
    )
    .unwrap();
    let mut admin = Admin::local(&ctl);
    let back = launched(&mut admin, "web");
    assert_eq!(back.id, inst.id);
    let log = ctl.proc.log_text();
    assert!(!log.contains("refused TLS connection"), "{log}");
}

/// The server certificate rotates by itself at two thirds of its (30 s)
/// life and when asked, while fifty streams and a real agent stay up: new
/// handshakes get the new certificate, nobody is disconnected.
#[test]
fn the_server_certificate_rotates_under_fifty_open_streams() {
    let sb = Sandbox::new();
    let ctl = start(&sb, "[tls]\nserver_cert_lifetime_secs = 30\n");
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "web", 1, 2);
    let real = launched(&mut admin, "web");
    group(&mut admin, "raw", 0, 60);
    let ids: Vec<String> = (0..50).map(|n| format!("raw-{n}")).collect();
    attach(&mut admin, "raw", ids.clone());
    let rt = runtime();
    let ca = ctl.ca();
    let streams: Vec<RawAgent> = rt.block_on(async {
        let mut streams = Vec::new();
        for id in &ids {
            streams.push(RawAgent::connect(&ctl, &ca, id).await);
        }
        streams
    });
    ctl.wait_metric("ebb_agents_connected", |v| v >= 51.0);
    let before = served_serial(&ctl);

    // By itself, at two thirds of the server cert's life.
    let rotated = eventually(
        "the server certificate to rotate by itself",
        DEADLINE * 3,
        || {
            let now = served_serial(&ctl);
            (now != before).then_some(now)
        },
    );
    assert!(
        ctl.proc
            .log_text()
            .contains("rotated the server certificate: two thirds"),
        "{}",
        ctl.proc.log_text()
    );
    // And when asked.
    let out = ctl.ebbctl(&["cert", "rotate-server", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let forced = answer["serial"].as_str().unwrap().to_owned();
    assert_ne!(forced, rotated);
    assert_eq!(
        served_serial(&ctl),
        forced,
        "new handshakes get the new cert"
    );
    let on_disk = std::fs::read_to_string(ctl.pki_dir().join("server.crt")).unwrap();
    assert_eq!(serial_of(&on_disk), forced);

    // Every stream is still up and still pulled.
    let pulled: Vec<u64> = streams
        .iter()
        .map(|s| s.pulls.load(Ordering::SeqCst))
        .collect();
    eventually("every stream pulled twice more", DEADLINE * 2, || {
        streams
            .iter()
            .zip(&pulled)
            .all(|(s, &p)| s.pulls.load(Ordering::SeqCst) >= p + 2)
            .then_some(())
    });
    for (s, id) in streams.iter().zip(&ids) {
        assert!(!s.ended.load(Ordering::SeqCst), "{id}'s stream ended");
    }
    assert_eq!(ctl.metric("ebb_agents_connected"), Some(51.0));
    let log = ctl.proc.log_text();
    assert!(!log.contains("agent disconnected"), "{log}");
    let agent_log = std::fs::read_to_string(
        ctl.dir
            .join("ebb-data/instances")
            .join(&real.id)
            .join("agent.log"),
    )
    .unwrap();
    assert!(!agent_log.contains("lost the controller"), "{agent_log}");
    let list = ctl.ebbctl(&["cert", "list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let server = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "server")
        .unwrap();
    assert_eq!(
        server["serial"],
        forced.as_str(),
        "{list:#}\n{}",
        ctl.proc.log_text()
    );
    drop(streams);
}

/// A CSR that does not parse, one that is too big, and a second renewal
/// within the rate limit: each is refused with a reason, logged and
/// counted; nothing is added to the registry; the stream stays up.
#[test]
fn bad_renewal_requests_are_refused_and_the_stream_stays_up() {
    let sb = Sandbox::new();
    let ctl = start(&sb, "");
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "raw", 0, 2);
    attach(&mut admin, "raw", vec!["raw-1".into()]);
    let rt = runtime();
    let ca = ctl.ca();
    let mut agent = rt.block_on(RawAgent::connect(&ctl, &ca, "raw-1"));
    let entries = |admin: &mut Admin| {
        admin_call!(
            *admin,
            list_certificates,
            pb::ListCertificatesRequest::default()
        )
        .unwrap()
        .certificates
    };
    let before = entries(&mut admin);

    let garbled =
        rt.block_on(agent.renew("-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n".into()));
    assert!(garbled.cert_pem.is_empty());
    assert!(
        garbled
            .error
            .contains("unusable certificate signing request"),
        "{garbled:?}"
    );
    let oversized = rt.block_on(agent.renew("A".repeat(9 * 1024)));
    assert!(oversized.cert_pem.is_empty());
    assert_eq!(
        oversized.error,
        "the request is 9216 bytes, more than the 8192 allowed"
    );
    assert_eq!(entries(&mut admin), before, "nothing recorded");

    // A good one is signed for the stream's identity, whatever it asks for.
    let csr = ebb_certs::Csr::generate().unwrap();
    let good = rt.block_on(agent.renew(csr.csr_pem.clone()));
    assert!(good.error.is_empty(), "{good:?}");
    let info = ebb_certs::describe_pem(&good.cert_pem).unwrap();
    assert_eq!(
        info.identity.unwrap().uri(),
        "spiffe://ebb.local/instance/raw-1"
    );
    assert!(ebb_certs::key_matches(&good.cert_pem, &csr.key_pem).unwrap());
    let after_good = entries(&mut admin);

    let again = rt.block_on(agent.renew(ebb_certs::Csr::generate().unwrap().csr_pem));
    assert!(again.cert_pem.is_empty());
    assert!(
        again.error.contains("at most one renewal per 60s"),
        "{again:?}"
    );
    assert_eq!(entries(&mut admin), after_good, "nothing more recorded");

    assert_eq!(ctl.metric("ebb_cert_renewals_refused_total"), Some(3.0));
    assert_eq!(ctl.metric("ebb_cert_renewals_total"), Some(1.0));
    let log = ctl.proc.log_text();
    assert_eq!(
        log.matches("refused a certificate renewal").count(),
        3,
        "{log}"
    );
    // Still pulled on the same stream.
    let pulls = agent.pulls.load(Ordering::SeqCst);
    eventually("two more pulls", DEADLINE, || {
        (agent.pulls.load(Ordering::SeqCst) >= pulls + 2).then_some(())
    });
    assert!(!agent.ended.load(Ordering::SeqCst));
    assert!(!log.contains("agent disconnected"), "{log}");
}

/// `cert issue --admin` makes the key here and has the controller sign it;
/// the cert works for admin calls; `cert list` shows agent, admin and
/// server entries; bad names and kinds are refused, nothing recorded.
#[test]
fn ebbctl_issues_admin_certificates_and_lists_every_identity() {
    let sb = Sandbox::new();
    let ctl = start(&sb, "");
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "web", 1, 2);
    let inst = launched(&mut admin, "web");
    let out_dir = sb.path().join("alice");
    let out = ctl.ebbctl(&[
        "cert",
        "issue",
        "--admin",
        "alice",
        "--days",
        "30",
        "--out-dir",
        &out_dir.display().to_string(),
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(issued["identity"], "spiffe://ebb.local/admin/alice");
    assert_eq!(mode(&out_dir.join("admin.key")), 0o600);
    let cert = std::fs::read_to_string(out_dir.join("admin.crt")).unwrap();
    let info = ebb_certs::describe_pem(&cert).unwrap();
    let days = (info.not_after - time::OffsetDateTime::now_utc()).whole_days();
    assert!((29..=30).contains(&days), "{days}");
    // It works: a call with it, from another process.
    let out = std::process::Command::new(ebb_tests::bin("ebbctl"))
        .arg("--controller")
        .arg(ctl.grpc.to_string())
        .arg("--server-name")
        .arg("localhost")
        .arg("--cert")
        .arg(out_dir.join("admin.crt"))
        .arg("--key")
        .arg(out_dir.join("admin.key"))
        .arg("--ca")
        .arg(out_dir.join("ca.crt"))
        .args(["group", "list", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"web\""), "{}", stdout(&out));

    let out = ctl.ebbctl(&["cert", "list", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    let find = |identity: &str| list.iter().find(|c| c["identity"] == identity).cloned();
    let alice = find("spiffe://ebb.local/admin/alice").expect("alice listed");
    assert_eq!(alice["kind"], "admin");
    assert_eq!(alice["serial"], info.serial.as_str());
    let agent = find(&format!("spiffe://ebb.local/instance/{}", inst.id)).expect("agent");
    assert_eq!(agent["kind"], "agent");
    assert_eq!(find("localhost").expect("server")["kind"], "server");
    assert_eq!(
        find("spiffe://ebb.local/admin/local-admin").unwrap()["kind"],
        "admin"
    );
    assert_eq!(find("spiffe://ebb.local").expect("the CA")["kind"], "ca");
    let expiries: Vec<i64> = list
        .iter()
        .map(|c| c["not_after_ms"].as_i64().unwrap())
        .collect();
    assert!(expiries.is_sorted(), "soonest first: {expiries:?}");
    let table = stdout(&ctl.ebbctl(&["cert", "list"]));
    assert!(table.starts_with("EXPIRES"), "{table}");
    assert!(table.contains("spiffe://ebb.local/admin/alice"), "{table}");

    // /metrics: the soonest expiry of each kind.
    let agent_expiry = ctl
        .metric("ebb_certificate_expiry_seconds{kind=\"agent\"}")
        .unwrap();
    assert_eq!(
        agent_expiry as i64,
        agent["not_after_ms"].as_i64().unwrap() / 1000
    );
    let admin_expiry = ctl
        .metric("ebb_certificate_expiry_seconds{kind=\"admin\"}")
        .unwrap();
    assert_eq!(admin_expiry as i64, info.not_after.unix_timestamp());
    for kind in ["server", "ca"] {
        assert!(
            ctl.metric(&format!(
                "ebb_certificate_expiry_seconds{{kind=\"{kind}\"}}"
            ))
            .is_some()
        );
    }

    // Bad input: a bad name, a kind other than admin, a garbled CSR.
    let bad_dir = sb.path().join("bad");
    let out = ctl.ebbctl(&[
        "cert",
        "issue",
        "--admin",
        "../root",
        "--out-dir",
        &bad_dir.display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("name: invalid identity `../root`: admin name may use only"),
        "{}",
        stderr(&out)
    );
    assert!(!bad_dir.join("admin.key").exists(), "nothing written");
    let err = admin_call!(
        admin,
        issue_certificate,
        pb::IssueCertificateRequest {
            kind: "agent".into(),
            name: "i-9".into(),
            csr_pem: ebb_certs::Csr::generate().unwrap().csr_pem,
            days: 5000,
        }
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("days: 5000 is more than 3650"),
        "{}",
        err.message()
    );
    assert!(
        err.message()
            .contains("kind: `agent` cannot be issued here"),
        "{}",
        err.message()
    );
    let err = admin_call!(
        admin,
        issue_certificate,
        pb::IssueCertificateRequest {
            kind: "admin".into(),
            name: "bob".into(),
            csr_pem: "garbage".into(),
            days: 0,
        }
    )
    .unwrap_err();
    assert!(
        err.message()
            .contains("csr_pem: unusable certificate signing request"),
        "{}",
        err.message()
    );
    let after = stdout(&ctl.ebbctl(&["cert", "list", "-o", "json"]));
    assert!(
        !after.contains("admin/bob") && !after.contains("../root"),
        "{after}"
    );
}
