//! The spine, end to end: real `ebb-controller` and `ebb-agent` processes on
//! ephemeral ports, mTLS with certs from ebb's own PKI.

use ebb_certs::{Ca, CertSpec, Identity};
use ebb_tests::{
    AgentProc, ControllerProc, DEADLINE, Next, RawOutcome, RawStream, eventually, hello,
    raw_connect, raw_connect_with,
};

/// 1 s pulls keep the tests short; nothing below depends on wall-clock speed.
const INTERVAL_MS: u64 = 1000;

/// The series of an instance attached to the group `spine`, as every test
/// here attaches them.
fn cpu_series(id: &str) -> String {
    format!("ebb_instance_cpu_utilization{{instance_id=\"{id}\",group=\"spine\"}}")
}

fn mem_series(id: &str) -> String {
    format!("ebb_instance_memory_utilization{{instance_id=\"{id}\",group=\"spine\"}}")
}

/// Waits for `line` in the controller's log; false if it never comes.
fn eventually_or_log(ctl: &ControllerProc, line: &str) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < DEADLINE {
        if ctl.proc.log_text().contains(line) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
fn agent_samples_reach_the_controller_with_plausible_values() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(tmp.path(), INTERVAL_MS).unwrap();
    ctl.attach("spine", &["host-1"]);
    let agent = AgentProc::start(&ctl, "host-1", "").unwrap();
    ctl.wait_metric("ebb_agents_connected", |v| v == 1.0);
    // CPU needs two reads for a window, so it appears from the first pull on
    // (the agent primes on Welcome); wait for a few samples to be sure.
    ctl.wait_metric("ebb_samples_total", |v| v >= 3.0);
    let cpu = ctl.wait_metric(&cpu_series("host-1"), |_| true);
    let mem = ctl.wait_metric(&mem_series("host-1"), |_| true);
    assert!((0.0..=100.0).contains(&cpu), "cpu {cpu}");
    assert!(mem > 0.0 && mem <= 100.0, "memory {mem}");
    assert_eq!(ctl.metric("ebb_pulls_missed_total"), Some(0.0));
    assert_eq!(ctl.http_get("/healthz").unwrap(), "ok\n");
    let log = ctl.proc.log_text();
    assert!(
        log.contains("agent connected") && log.contains("host-1"),
        "{log}"
    );
    drop(agent);
}

#[test]
fn a_killed_agent_is_noticed_within_two_pulls() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(tmp.path(), INTERVAL_MS).unwrap();
    ctl.attach("spine", &["host-k"]);
    let agent = AgentProc::start(&ctl, "host-k", "").unwrap();
    ctl.wait_metric("ebb_samples_total", |v| v >= 2.0);
    let pulls_at_kill = ctl.metric("ebb_pulls_total").unwrap();
    agent.proc.signal("KILL");
    ctl.wait_metric("ebb_agents_connected", |v| v == 0.0);
    // Counted in pulls, not seconds, so a slow machine cannot fail it: once
    // the stream is known gone no more pulls are sent.
    let pulls_after = ctl.metric("ebb_pulls_total").unwrap();
    assert!(
        pulls_after - pulls_at_kill <= 2.0,
        "{} pulls went out after the agent died",
        pulls_after - pulls_at_kill
    );
    assert!(ctl.metric(&cpu_series("host-k")).is_none());
    let log = ctl.proc.log_text();
    assert!(
        log.contains("agent disconnected") && log.contains("host-k"),
        "{log}"
    );
}

#[test]
fn a_stopped_agent_shows_up_as_missed_pulls() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(tmp.path(), INTERVAL_MS).unwrap();
    ctl.attach("spine", &["host-s"]);
    let agent = AgentProc::start(&ctl, "host-s", "").unwrap();
    ctl.wait_metric("ebb_samples_total", |v| v >= 2.0);
    agent.proc.signal("STOP");
    ctl.wait_metric("ebb_pulls_missed_total", |v| v >= 2.0);
    let log = ctl.proc.log_text();
    assert!(log.contains("did not answer a pull"), "{log}");
    agent.proc.signal("CONT");
    let missed = ctl.metric("ebb_pulls_missed_total").unwrap();
    let samples = ctl.metric("ebb_samples_total").unwrap();
    ctl.wait_metric("ebb_samples_total", |v| v >= samples + 2.0);
    assert!(ctl.proc.log_text().contains("answers pulls again"));
    assert!(ctl.metric("ebb_pulls_missed_total").unwrap() <= missed + 1.0);
}

#[test]
fn the_agent_reconnects_after_the_controller_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(tmp.path(), INTERVAL_MS).unwrap();
    ctl.attach("spine", &["host-r"]);
    let _agent = AgentProc::start(&ctl, "host-r", "").unwrap();
    ctl.wait_metric("ebb_samples_total", |v| v >= 1.0);
    let (grpc, http) = (ctl.grpc, ctl.http);
    let ca_before = std::fs::read(ctl.pki_dir().join("ca.crt")).unwrap();
    let mut proc = ctl.proc;
    proc.signal("KILL");
    proc.wait_exit(DEADLINE);
    drop(proc);
    let ctl = ControllerProc::start_on(tmp.path(), INTERVAL_MS, grpc, http).unwrap();
    // Same CA: the data dir's PKI is reused, so the agent's cert still works.
    assert_eq!(
        std::fs::read(ctl.pki_dir().join("ca.crt")).unwrap(),
        ca_before
    );
    ctl.wait_metric("ebb_agents_connected", |v| v == 1.0);
    ctl.wait_metric("ebb_samples_total", |v| v >= 1.0);
}

#[test]
fn the_agent_shuts_down_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(tmp.path(), INTERVAL_MS).unwrap();
    ctl.attach("spine", &["host-t"]);
    let mut agent = AgentProc::start(&ctl, "host-t", "").unwrap();
    ctl.wait_metric("ebb_samples_total", |v| v >= 1.0);
    agent.proc.signal("TERM");
    let status = agent.proc.wait_exit(DEADLINE);
    assert!(status.success(), "agent exited with {status}");
    ctl.wait_metric("ebb_agents_connected", |v| v == 0.0);
    let log = ctl.proc.log_text();
    assert!(log.contains("the agent closed the stream"), "{log}");
}

/// Every refusal of point 6: each is refused, logged with a clear line, and
/// leaves a connected agent untouched.
#[test]
fn untrusted_and_mismatched_callers_are_refused_and_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(tmp.path(), INTERVAL_MS).unwrap();
    // Attached, so that only the certificate or the Hello is wrong.
    ctl.attach("spine", &["good", "old", "alice", "i-mine", "raw-ok"]);
    let _agent = AgentProc::start(&ctl, "good", "").unwrap();
    ctl.wait_metric("ebb_agents_connected", |v| v == 1.0);
    let ca = ctl.ca();
    let ca_pem = ca.cert_pem().to_owned();
    let other_ca = Ca::generate("ebb.local", ebb_certs::CA_VALIDITY).unwrap();
    let foreign = other_ca
        .issue_agent("good", ebb_certs::AGENT_VALIDITY)
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let expired = ca
        .issue(&CertSpec {
            identity: Some(Identity::instance("ebb.local", "old").unwrap()),
            dns_names: vec![],
            ips: vec![],
            not_before: now - time::Duration::days(10),
            not_after: now - time::Duration::days(1),
            server: false,
            client: true,
        })
        .unwrap();
    let admin = ca.issue_admin("alice", ebb_certs::ADMIN_VALIDITY).unwrap();
    let impostor = ca.issue_agent("i-mine", ebb_certs::AGENT_VALIDITY).unwrap();

    let cases: [(&str, Option<&ebb_certs::Issued>, &str, &str); 5] = [
        (
            "no client cert",
            None,
            "x",
            "refused agent stream: no client certificate",
        ),
        (
            "another CA",
            Some(&foreign),
            "good",
            "not issued by this controller's CA",
        ),
        ("expired", Some(&expired), "old", "has expired"),
        (
            "admin cert",
            Some(&admin),
            "alice",
            "admin certificate spiffe://ebb.local/admin/alice cannot connect as an agent",
        ),
        (
            "wrong Hello",
            Some(&impostor),
            "good",
            "Hello names instance `good` but the certificate is for `i-mine`",
        ),
    ];
    for (name, cert, hello_id, log_line) in cases {
        let samples_before = ctl.metric("ebb_samples_total").unwrap();
        let identity = cert.map(|c| (c.cert_pem.as_str(), c.key_pem.as_str()));
        let outcome = raw_connect(ctl.grpc, &ca_pem, identity, hello_id);
        assert!(
            matches!(outcome, RawOutcome::Refused(_)),
            "{name}: {outcome:?}"
        );
        let found = eventually_or_log(&ctl, log_line);
        assert!(
            found,
            "{name}: no log line `{log_line}` in:\n{}",
            ctl.proc.log_text()
        );
        // The connected agent goes on being pulled.
        ctl.wait_metric("ebb_samples_total", |v| v > samples_before);
        assert_eq!(ctl.metric("ebb_agents_connected"), Some(1.0), "{name}");
    }
    assert!(ctl.metric("ebb_connections_refused_total").unwrap() >= 5.0);
    // A good cert with the right Hello is welcomed: the refusals above were
    // about the caller, not a broken server.
    let ok = ca.issue_agent("raw-ok", ebb_certs::AGENT_VALIDITY).unwrap();
    let outcome = raw_connect(
        ctl.grpc,
        &ca_pem,
        Some((&ok.cert_pem, &ok.key_pem)),
        "raw-ok",
    );
    assert!(matches!(outcome, RawOutcome::Welcomed), "{outcome:?}");
}

/// DESIGN §3, bounded inputs: an agent's message over 64 KiB (here a
/// 10 MiB Hello) is refused before it is read, logged and counted, and the
/// controller goes on welcoming agents.
#[test]
fn an_oversized_agent_message_is_refused_logged_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(tmp.path(), INTERVAL_MS).unwrap();
    let ca_pem = std::fs::read_to_string(ctl.pki_dir().join("ca.crt")).unwrap();
    let ca = ctl.ca();
    let big = ca.issue_agent("big", ebb_certs::AGENT_VALIDITY).unwrap();
    ctl.attach("spine", &["big"]);
    let identity = Some((big.cert_pem.as_str(), big.key_pem.as_str()));
    let hello = |hostname: String| ebb_proto::v1::Hello {
        protocol_version: ebb_proto::v1::ProtocolVersion::ProtocolVersion1 as i32,
        instance_id: "big".into(),
        hostname,
        ..Default::default()
    };
    let refused_before = ctl.metric("ebb_connections_refused_total").unwrap();
    let outcome = raw_connect_with(ctl.grpc, &ca_pem, identity, hello("x".repeat(10 << 20)));
    assert!(matches!(outcome, RawOutcome::Refused(_)), "{outcome:?}");
    assert!(
        eventually_or_log(&ctl, "refused agent stream: unreadable first message"),
        "{}",
        ctl.proc.log_text()
    );
    assert!(ctl.metric("ebb_connections_refused_total").unwrap() > refused_before);
    // The same identity with a Hello of ordinary size is welcomed.
    let outcome = raw_connect_with(ctl.grpc, &ca_pem, identity, hello("host".into()));
    assert!(matches!(outcome, RawOutcome::Welcomed), "{outcome:?}");
}

/// DESIGN §3, bounded inputs: a rogue agent answering pulls with CPU
/// utilisations of 1e308, -5, NaN and infinity, and a load and a custom
/// metric out of range, moves nothing: each value is dropped and counted,
/// `/metrics` never prints them, and the next sound sample is taken.
#[test]
fn out_of_range_sample_values_are_dropped_and_counted() {
    use ebb_proto::v1 as pb;
    use pb::agent_message::Body;
    use pb::controller_message::Body as Command;
    let tmp = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(tmp.path(), 3000).unwrap();
    let ca_pem = std::fs::read_to_string(ctl.pki_dir().join("ca.crt")).unwrap();
    let rogue = ctl
        .ca()
        .issue_agent("rogue", ebb_certs::AGENT_VALIDITY)
        .unwrap();
    ctl.attach("spine", &["rogue"]);
    // Pulls 3 s apart: each answer is in time (a late one is dropped as
    // late, before its values are looked at) however busy the host.
    let mut stream = RawStream::open(
        ctl.grpc,
        &ca_pem,
        (&rogue.cert_pem, &rogue.key_pem),
        hello("rogue"),
    )
    .unwrap();
    let dropped_before = ctl.metric("ebb_sample_values_dropped_total").unwrap();
    let custom_before = ctl.metric("ebb_custom_values_dropped_total").unwrap();
    // Four bad CPU figures, then one sound sample; each answers a pull.
    let mut answers: Vec<pb::Sample> = [1e308, -5.0, f64::NAN, f64::INFINITY]
        .into_iter()
        .map(|cpu| pb::Sample {
            cpu_utilization: Some(cpu),
            load: Some(pb::LoadAverage {
                one: -1.0,
                five: 0.5,
                fifteen: 0.5,
            }),
            custom: vec![pb::CustomMetric {
                name: "queue".into(),
                value: f64::NEG_INFINITY,
            }],
            ..Default::default()
        })
        .collect();
    answers.push(pb::Sample {
        cpu_utilization: Some(42.0),
        ..Default::default()
    });
    for mut sample in answers {
        let seq = loop {
            match stream.next(DEADLINE) {
                Next::Message(m) => {
                    if let Some(Command::Pull(p)) = m.body {
                        break p.seq;
                    }
                }
                other => panic!("no pull: {other:?}"),
            }
        };
        sample.seq = seq;
        sample.collected_at_unix_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        stream.send(Body::Sample(sample));
    }
    let cpu = eventually("the sound sample on /metrics", DEADLINE, || {
        let text = ctl.http_get("/metrics").ok()?;
        let line = text
            .lines()
            .find(|l| l.starts_with(&cpu_series("rogue")))?
            .to_owned();
        line.ends_with(" 42").then_some(text)
    });
    for bad in ["inf", "NaN", "1e308", "-5"] {
        assert!(
            !cpu.lines()
                .any(|l| l.contains("rogue") && l.ends_with(&format!(" {bad}"))),
            "/metrics shows {bad}:\n{cpu}"
        );
    }
    // Per bad sample: the CPU figure and the negative load; and the custom value.
    let dropped = ctl.metric("ebb_sample_values_dropped_total").unwrap() - dropped_before;
    assert_eq!(dropped, 8.0, "sample values dropped");
    let custom = ctl.metric("ebb_custom_values_dropped_total").unwrap() - custom_before;
    assert_eq!(custom, 4.0, "custom values dropped");
    assert!(
        ctl.proc
            .log_text()
            .contains("sample values out of range dropped"),
        "{}",
        ctl.proc.log_text()
    );
}
