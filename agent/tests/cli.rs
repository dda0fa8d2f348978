//! The `ebb-agent` binary's start-up: bad config exits 64 naming the
//! problem; an unreachable controller is retried and logged once.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_ebb-agent");

fn write_certs(dir: &Path) {
    let ca = ebb_certs::Ca::generate("ebb.local", ebb_certs::CA_VALIDITY).unwrap();
    ca.issue_agent("cli-1", ebb_certs::AGENT_VALIDITY)
        .unwrap()
        .write(&dir.join("agent.crt"), &dir.join("agent.key"))
        .unwrap();
    std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
}

const TLS: &str = "[tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n";

fn run(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_key_exits_64_naming_it() {
    let (code, err) = run(&format!("{TLS}controler = \"127.0.0.1:1\"\n"));
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("agent.toml") && err.contains("controler"),
        "{err}"
    );
}

#[test]
fn malformed_toml_exits_64() {
    let (code, err) = run("controller = \n");
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("agent.toml"), "{err}");
}

#[test]
fn missing_cert_file_exits_64_naming_it() {
    let (code, err) = run("[tls]\nca = \"ca.crt\"\ncert = \"nope.crt\"\nkey = \"agent.key\"\n");
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("tls.cert") && err.contains("nope.crt"),
        "{err}"
    );
}

#[test]
fn bad_custom_metrics_exit_64_naming_each_field() {
    let (code, err) = run(&format!(
        "{TLS}
[[metric]]
name = \"rps\"
prometheus = {{ url = \"ftp://127.0.0.1/metrics\", metric = \"http_requests_total\" }}
[[metric]]
name = \"rps\"
command = []
timeout_ms = 0
"
    ));
    assert_eq!(code, 64, "{err}");
    for needle in [
        "agent.toml",
        "metric[0].prometheus.url: bad URL \"ftp://127.0.0.1/metrics\": unsupported scheme",
        "metric[1].name: `rps` is already metric[0]'s name",
        "metric[1].command: name the program to run",
        "metric[1].timeout_ms: 0 is outside 1..=60000",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn an_unknown_metric_source_exits_64_naming_it() {
    let (code, err) = run(&format!(
        "{TLS}[[metric]]\nname = \"q\"\nstatsd = \"127.0.0.1:8125\"\n"
    ));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("unknown field `statsd`"), "{err}");
    assert!(
        err.contains("prometheus") && err.contains("command"),
        "{err}"
    );
}

#[test]
fn missing_config_file_exits_64() {
    let out = Command::new(AGENT)
        .args(["--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read /nonexistent/agent.toml"), "{err}");
}

#[test]
fn an_admin_cert_is_not_an_agent_cert() {
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    let ca = ebb_certs::Ca::generate("ebb.local", ebb_certs::CA_VALIDITY).unwrap();
    ca.issue_admin("ops", ebb_certs::ADMIN_VALIDITY)
        .unwrap()
        .write(&dir.path().join("agent.crt"), &dir.path().join("agent.key"))
        .unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, TLS).unwrap();
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is an admin certificate"), "{err}");
}

/// Runs the agent with `config` in a dir holding a target's certificate
/// (`target`) or an instance's, and a unix socket something listens on
/// (`admin.sock`, as HAProxy's).
fn run_with(config: &str, target: bool) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    if target {
        let ca = ebb_certs::Ca::generate("ebb.local", ebb_certs::CA_VALIDITY).unwrap();
        ca.issue_target("lb-1", ebb_certs::AGENT_VALIDITY)
            .unwrap()
            .write(&dir.path().join("agent.crt"), &dir.path().join("agent.key"))
            .unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
    }
    let _listening = std::os::unix::net::UnixListener::bind(dir.path().join("admin.sock")).unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const HAPROXY: &str =
    "[target]\nstate_dir = \"state\"\n[target.haproxy]\nsocket = \"admin.sock\"\n";

#[test]
fn a_target_cert_needs_a_target_section() {
    let (code, err) = run_with(TLS, true);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("is target lb-1's certificate, but agent.toml has no [target] section"),
        "{err}"
    );
}

#[test]
fn a_target_section_needs_a_target_cert() {
    let (code, err) = run_with(&format!("{TLS}{HAPROXY}"), false);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("is instance cli-1's certificate")
            && err.contains("ebbctl cert issue --target NAME"),
        "{err}"
    );
}

#[test]
fn a_target_socket_that_cannot_be_opened_exits_64_naming_it() {
    let (code, err) = run_with(
        &format!("{TLS}[target.haproxy]\nsocket = \"/nonexistent/haproxy.sock\"\n"),
        true,
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("target.haproxy.socket: cannot connect to /nonexistent/haproxy.sock"),
        "{err}"
    );
}

#[test]
fn an_unreachable_controller_is_retried_and_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        format!("controller = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\n[reconnect]\nmax_backoff_ms = 200\n{TLS}"),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let mut child = Command::new(AGENT)
        .arg("--config")
        .arg(&path)
        .env("EBB_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches("retrying in").count() >= 4 {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no retries:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM while retrying should exit 0, got {status}"
    );
    assert_eq!(
        text.matches("cannot connect to the controller").count(),
        1,
        "one warning per state change, not per retry:\n{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
}
