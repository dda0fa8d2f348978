//! Revocation and stream bounds (DESIGN §3), end to end: a real controller,
//! real agents and raw mTLS clients with certificates from the
//! controller's CA. Each refusal is refused, logged, counted, and changes
//! nothing stored; each close happens at once, not at the next pull.

use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use ebb_certs::{CertSpec, Identity};
use ebb_proto::v1 as pb;
use ebb_proto::v1::agent_message::Body as AgentBody;
use ebb_proto::v1::controller_message::Body as ControllerBody;
use ebb_tests::{
    Admin, AgentProc, ControllerProc, DEADLINE, Next, RawStream, Sandbox, activities, admin_call,
    eventually, hello, instances,
};

/// The longest sampling interval there is: the stream's task then wakes
/// for a pull only every five minutes, so a close that comes sooner was
/// not waiting for the next pull.
const LONG_INTERVAL_MS: u64 = 300_000;
/// Well under the five minutes, and generous on a slow, busy machine.
const PROMPTLY: Duration = Duration::from_secs(60);

fn closed(ctl: &ControllerProc, reason: &str) -> f64 {
    ctl.metric(&format!(
        "ebb_agent_streams_closed_total{{reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

fn refused(ctl: &ControllerProc, reason: &str) -> f64 {
    ctl.metric(&format!(
        "ebb_agent_connects_refused_total{{reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

/// What is stored about a group: its instances and activities, as the
/// admin API shows them (an agent's connection state left out).
fn stored(admin: &mut Admin, group: &str) -> String {
    let instances: Vec<_> = instances(admin, group)
        .into_iter()
        .map(|i| (i.id, i.lifecycle_state, i.health_status))
        .collect();
    let acts: Vec<_> = activities(admin, group)
        .into_iter()
        .map(|a| (a.id, a.status))
        .collect();
    format!("{instances:?} {acts:?}")
}

/// An agent that retries every second at most.
fn agent(ctl: &ControllerProc, id: &str) -> AgentProc {
    AgentProc::start(ctl, id, "").unwrap()
}

/// Revoking, detaching and removing each close the instance's live stream
/// at once, and its agent's reconnects are refused, logged and counted,
/// changing nothing stored.
#[test]
fn revoking_detaching_and_removing_close_the_stream_at_once_and_refuse_reconnects() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), LONG_INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    ctl.attach("web", &["i-revoked", "i-detached", "i-removed"]);
    let _agents: Vec<_> = ["i-revoked", "i-detached", "i-removed"]
        .iter()
        .map(|id| agent(&ctl, id))
        .collect();
    ctl.wait_metric("ebb_agents_connected", |v| v == 3.0);
    eventually("all three in service", DEADLINE, || {
        instances(&mut admin, "web")
            .iter()
            .all(|i| i.lifecycle_state == "InService")
            .then_some(())
    });

    // Instance, command, close and refusal reasons, the refusal's log line,
    // whether it stays in its group.
    type Step<'a> = (&'a str, &'a [&'a str], &'a str, &'a str, &'a str, bool);
    let steps: [Step; 3] = [
        (
            "i-revoked",
            &["cert", "revoke", "i-revoked", "--reason", "stolen laptop"],
            "revoked",
            "revoked",
            "certificate spiffe://ebb.local/instance/i-revoked was revoked",
            true,
        ),
        (
            "i-detached",
            &["instance", "detach", "--group", "web", "i-detached"],
            "left_group",
            "detached",
            "instance i-detached was detached from its group",
            false,
        ),
        (
            "i-removed",
            &["instance", "remove", "--group", "web", "i-removed"],
            "left_group",
            "unknown_instance",
            "instance i-removed is in no scaling group",
            false,
        ),
    ];
    for (n, (id, command, close_reason, refusal, log_line, stays)) in steps.into_iter().enumerate()
    {
        let closed_before = closed(&ctl, close_reason);
        let started = Instant::now();
        let out = ctl.ebbctl(command);
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ctl.wait_metric("ebb_agents_connected", |v| v == 2.0 - n as f64);
        assert!(
            started.elapsed() < PROMPTLY,
            "{id}: the stream closed after {:?}, not at once",
            started.elapsed()
        );
        assert!(closed(&ctl, close_reason) > closed_before, "{id}");
        ctl.wait_log("closed agent stream: ");
        // The agent comes back and is refused, every time, and nothing
        // stored changes for it (once the removal's activity is done).
        ctl.wait_passes("ebb_reconcile_passes_total", 2);
        let before = stored(&mut admin, "web");
        let refused_before = refused(&ctl, refusal);
        eventually(&format!("{id}'s reconnects refused"), DEADLINE, || {
            (refused(&ctl, refusal) >= refused_before + 2.0).then_some(())
        });
        ctl.wait_log(log_line);
        assert_eq!(stored(&mut admin, "web"), before, "{id}");
        assert_eq!(
            instances(&mut admin, "web").iter().any(|i| i.id == id),
            stays,
            "{id} in the group"
        );
    }
    assert_eq!(ctl.metric("ebb_agents_connected"), Some(0.0));
    let revoked = ctl.ebbctl(&["cert", "revoked", "-o", "json"]);
    let revoked: serde_json::Value = serde_json::from_slice(&revoked.stdout).unwrap();
    assert_eq!(
        revoked[0]["identity"], "spiffe://ebb.local/instance/i-revoked",
        "{revoked}"
    );
    assert_eq!(revoked[0]["reason"], "stolen laptop");
    assert_eq!(
        revoked[0]["revoked_by"],
        "spiffe://ebb.local/admin/local-admin"
    );
}

/// The deny-list survives a restart, and a revoked admin certificate is
/// refused by the admin API; revoking the caller's own certificate needs
/// --force; bad input names the field and changes nothing.
#[test]
fn revoked_admins_are_refused_and_bad_revocations_change_nothing() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let ca = ctl.ca();
    let alice = ca.issue_admin("alice", ebb_certs::ADMIN_VALIDITY).unwrap();
    let mut as_alice = Admin::with_identity(&ctl, &alice.cert_pem, &alice.key_pem);
    let list = pb::DescribeScalingGroupsRequest::default();
    admin_call!(as_alice, describe_scaling_groups, list.clone()).expect("alice may call");

    let mut admin = Admin::local(&ctl);
    let revoke = |identity: &str, force: bool| pb::RevokeCertificateRequest {
        identity: identity.into(),
        reason: String::new(),
        force,
    };
    let bad = [
        ("", "identity: `` is not spiffe://ebb.local/instance/<id>"),
        (
            "alice",
            "identity: `alice` is not spiffe://ebb.local/instance/<id>",
        ),
        ("instance/", "identity: "),
        (
            "spiffe://other.domain/admin/alice",
            "identity: spiffe://other.domain/admin/alice is of trust domain other.domain",
        ),
        ("spiffe://ebb.local/group/x", "identity: "),
    ];
    for (identity, want) in bad {
        let err = admin_call!(admin, revoke_certificate, revoke(identity, false)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{identity}");
        assert!(
            err.message().starts_with(want),
            "{identity}: {}",
            err.message()
        );
    }
    let long = pb::RevokeCertificateRequest {
        reason: "x".repeat(2000),
        ..revoke("admin/alice", false)
    };
    let err = admin_call!(admin, revoke_certificate, long).unwrap_err();
    assert!(
        err.message().starts_with("reason: is 2000 bytes long"),
        "{}",
        err.message()
    );
    let err = admin_call!(
        admin,
        revoke_certificate,
        revoke("admin/local-admin", false)
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("pass --force"), "{}", err.message());
    let none = admin_call!(
        admin,
        describe_revoked_certificates,
        pb::DescribeRevokedCertificatesRequest::default()
    )
    .unwrap();
    assert!(none.certificates.is_empty(), "{none:?}");

    let entry = admin_call!(admin, revoke_certificate, revoke("admin/alice", false)).unwrap();
    assert_eq!(entry.identity, "spiffe://ebb.local/admin/alice");
    // Again: the first entry stands.
    let again = admin_call!(
        admin,
        revoke_certificate,
        revoke("spiffe://ebb.local/admin/alice", false)
    )
    .unwrap();
    assert_eq!(again, entry);
    let err = admin_call!(as_alice, describe_scaling_groups, list.clone()).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("was revoked"), "{}", err.message());
    ctl.wait_log("refused admin call: certificate spiffe://ebb.local/admin/alice was revoked");

    // After a restart, from the store.
    let (grpc, http) = (ctl.grpc, ctl.http);
    let mut proc = ctl.proc;
    proc.signal("KILL");
    proc.wait_exit(DEADLINE);
    drop(proc);
    let ctl = ControllerProc::start_on(sb.path(), 1000, grpc, http).unwrap();
    let mut as_alice = Admin::with_identity(&ctl, &alice.cert_pem, &alice.key_pem);
    let err = admin_call!(as_alice, describe_scaling_groups, list.clone()).unwrap_err();
    assert!(err.message().contains("was revoked"), "{}", err.message());
    let out = ctl.ebbctl(&["cert", "revoked"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("spiffe://ebb.local/admin/alice"), "{text}");
    // With --force the local admin locks itself out.
    let out = ctl.ebbctl(&["cert", "revoke", "--admin", "local-admin", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl.ebbctl(&["group", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was revoked"));
}

/// A certificate that expires while its stream is open: the stream is
/// closed at its notAfter, logged and counted, and nothing stored changes.
#[test]
fn a_stream_is_closed_when_its_certificate_expires() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), LONG_INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    ctl.attach("web", &["i-short"]);
    let now = time::OffsetDateTime::now_utc();
    // Long enough to connect on a busy machine; X.509 times are whole seconds.
    let not_after = now + time::Duration::seconds(10);
    let short = ctl
        .ca()
        .issue(&CertSpec {
            identity: Some(Identity::instance("ebb.local", "i-short").unwrap()),
            dns_names: vec![],
            ips: vec![],
            not_before: now - time::Duration::minutes(5),
            not_after,
            server: false,
            client: true,
        })
        .unwrap();
    let ca_pem = ctl.ca().cert_pem().to_owned();
    let mut stream = RawStream::open(
        ctl.grpc,
        &ca_pem,
        (&short.cert_pem, &short.key_pem),
        hello("i-short"),
    )
    .expect("welcomed while the certificate is valid");
    ctl.wait_metric("ebb_agents_connected", |v| v == 1.0);
    let before = stored(&mut admin, "web");
    let seen = stream
        .until_end(DEADLINE)
        .expect("the stream closed at the certificate's notAfter");
    let ended = SystemTime::now();
    let not_after = SystemTime::from(not_after.replace_nanosecond(0).unwrap());
    assert!(
        ended >= not_after,
        "closed {:?} before the notAfter",
        not_after.duration_since(ended).unwrap_or_default()
    );
    let late = ended.duration_since(not_after).unwrap();
    assert!(
        late < Duration::from_secs(5),
        "closed {late:?} after the notAfter"
    );
    let reasons: Vec<_> = seen
        .iter()
        .filter_map(|m| match &m.body {
            Some(ControllerBody::Closing(c)) => Some(c.reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, ["its certificate expired"]);
    ctl.wait_log("closed agent stream: its certificate expired");
    assert_eq!(closed(&ctl, "expired"), 1.0);
    ctl.wait_metric("ebb_agents_connected", |v| v == 0.0);
    assert_eq!(stored(&mut admin, "web"), before);
}

/// At most one live stream per identity: a newer one replaces the older
/// at once, not at the older one's next pull.
#[test]
fn a_second_stream_for_the_same_identity_replaces_the_first_at_once() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), LONG_INTERVAL_MS).unwrap();
    ctl.attach("web", &["i-twin"]);
    let cert = ctl
        .ca()
        .issue_agent("i-twin", ebb_certs::AGENT_VALIDITY)
        .unwrap();
    let ca_pem = ctl.ca().cert_pem().to_owned();
    let id = (cert.cert_pem.as_str(), cert.key_pem.as_str());
    let mut first = RawStream::open(ctl.grpc, &ca_pem, id, hello("i-twin")).unwrap();
    // The first pull comes at once; the next would be five minutes on.
    assert!(matches!(first.next(DEADLINE), Next::Message(_)));
    let mut second = RawStream::open(ctl.grpc, &ca_pem, id, hello("i-twin")).unwrap();
    let started = Instant::now();
    let seen = first
        .until_end(PROMPTLY)
        .expect("the older stream closed at once");
    assert!(started.elapsed() < PROMPTLY);
    assert!(
        seen.iter().any(|m| matches!(
            &m.body,
            Some(ControllerBody::Closing(c)) if c.reason.contains("replaced by a newer stream")
        )),
        "{seen:?}"
    );
    assert_eq!(closed(&ctl, "replaced"), 1.0);
    ctl.wait_log("closed agent stream: replaced by a newer stream");
    assert_eq!(ctl.metric("ebb_agents_connected"), Some(1.0));
    // The newer stream lives on (its first pull may still be on its way).
    for _ in 0..3 {
        let next = second.next(Duration::from_secs(1));
        assert!(!matches!(next, Next::Ended(_)), "{next:?}");
    }
    assert_eq!(ctl.metric("ebb_agents_connected"), Some(1.0));
}

/// A HookResult is accepted only for an open action sent to the sending
/// instance: another instance's answer is dropped, logged and counted, and
/// the action stays open until its own instance answers.
#[test]
fn a_hook_result_for_another_instances_action_is_dropped() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    ctl.attach("web", &[]);
    admin_call!(
        admin,
        create_lifecycle_hook,
        pb::CreateLifecycleHookRequest {
            scaling_group: "web".into(),
            name: "warm".into(),
            transition: "SCALE_OUT".into(),
            script: vec!["true".into()],
            ..Default::default()
        }
    )
    .unwrap();
    ctl.attach("web", &["i-own", "i-rogue"]);
    let ca_pem = ctl.ca().cert_pem().to_owned();
    let open = |id: &str| {
        let cert = ctl.ca().issue_agent(id, ebb_certs::AGENT_VALIDITY).unwrap();
        RawStream::open(
            ctl.grpc,
            &ca_pem,
            (&cert.cert_pem, &cert.key_pem),
            hello(id),
        )
        .unwrap()
    };
    let mut own = open("i-own");
    let rogue = open("i-rogue");
    let token = eventually("the hook script sent to i-own", DEADLINE, || {
        match own.next(Duration::from_millis(500)) {
            Next::Message(m) => match m.body {
                Some(ControllerBody::RunHook(run)) => Some(run.token),
                _ => None,
            },
            _ => None,
        }
    });
    let answer = |exit_code| {
        AgentBody::HookResult(pb::HookResult {
            token: token.clone(),
            exit_code: Some(exit_code),
            output: "y".repeat(10_000),
            ..Default::default()
        })
    };
    eventually("both instances waiting on the hook", DEADLINE, || {
        let list = instances(&mut admin, "web");
        (list.len() == 2 && list.iter().all(|i| i.lifecycle_state == "Pending:Wait")).then_some(())
    });
    let before = stored(&mut admin, "web");
    rogue.send(answer(1));
    ctl.wait_metric("ebb_hook_results_dropped_total", |v| v == 1.0);
    ctl.wait_log(
        "hook result dropped: its token is not an open lifecycle action sent to this instance",
    );
    ctl.wait_passes("ebb_reconcile_passes_total", 3);
    let actions = admin_call!(
        admin,
        describe_lifecycle_actions,
        pb::DescribeLifecycleActionsRequest {
            scaling_group: "web".into(),
            ..Default::default()
        }
    )
    .unwrap()
    .lifecycle_actions;
    let action = actions
        .iter()
        .find(|a| a.lifecycle_action_token == token)
        .unwrap();
    assert_eq!(
        action.result, "",
        "decided by another instance's answer: {action:?}"
    );
    assert_eq!(stored(&mut admin, "web"), before);
    // Its own instance's answer is taken.
    own.send(answer(0));
    eventually("i-own in service", DEADLINE, || {
        instances(&mut admin, "web")
            .iter()
            .any(|i| i.id == "i-own" && i.lifecycle_state == "InService")
            .then_some(())
    });
    assert_eq!(ctl.metric("ebb_hook_results_dropped_total"), Some(1.0));
}

/// 1,000 TCP connections opened and left idle, never starting their TLS
/// handshake, do not keep a real agent out: it connects and is pulled.
#[test]
fn a_thousand_idle_connections_do_not_keep_an_agent_out() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    ctl.attach("web", &["i-real"]);
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(ctl.grpc).expect("connect"))
        .collect();
    let _agent = agent(&ctl, "i-real");
    ctl.wait_metric("ebb_agents_connected", |v| v == 1.0);
    let samples = ctl.wait_metric("ebb_samples_total", |v| v >= 1.0);
    ctl.wait_metric("ebb_samples_total", |v| v >= samples + 2.0);
    let busy = ctl
        .metric("ebb_tls_handshakes_dropped_total{reason=\"busy\"}")
        .unwrap_or(0.0);
    assert!(busy >= 1.0, "no connection was dropped over the cap");
    ctl.wait_metric("ebb_tls_handshakes_dropped_total{reason=\"idle\"}", |v| {
        v >= 1.0
    });
    ctl.wait_log("TLS handshakes are already under way");
    drop(idle);
}

/// Bounded Hello strings: a Hello with an overlong field is refused with
/// the field named, logged and counted; the same instance with an ordinary
/// Hello is welcomed.
#[test]
fn an_overlong_hello_is_refused_naming_the_field() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    ctl.attach("web", &["i-chatty"]);
    let cert = ctl
        .ca()
        .issue_agent("i-chatty", ebb_certs::AGENT_VALIDITY)
        .unwrap();
    let ca_pem = ctl.ca().cert_pem().to_owned();
    let id = (cert.cert_pem.as_str(), cert.key_pem.as_str());
    let before = stored(&mut admin, "web");
    let long = pb::Hello {
        hostname: "h".repeat(300),
        ..hello("i-chatty")
    };
    let err = RawStream::open(ctl.grpc, &ca_pem, id, long)
        .err()
        .expect("refused");
    assert!(
        err.contains("Hello field hostname is 300 bytes long, at most 253 are allowed"),
        "{err}"
    );
    let many = pb::Hello {
        addresses: vec!["10.0.0.1".into(); 1000],
        ..hello("i-chatty")
    };
    let err = RawStream::open(ctl.grpc, &ca_pem, id, many)
        .err()
        .expect("refused");
    assert!(
        err.contains("Hello field addresses has 1000 entries"),
        "{err}"
    );
    ctl.wait_log("refused agent stream: Hello field hostname is 300 bytes long");
    assert_eq!(refused(&ctl, "hello"), 2.0);
    assert_eq!(stored(&mut admin, "web"), before);
    assert_eq!(ctl.metric("ebb_agents_connected"), Some(0.0));
    RawStream::open(ctl.grpc, &ca_pem, id, hello("i-chatty")).expect("an ordinary Hello");
}
