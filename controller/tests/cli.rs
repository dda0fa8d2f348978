//! The `ebb-controller` binary's start-up: bad config exits 64 before
//! anything starts; a taken port, a held data dir or half a CA give one clear
//! message and leave the data dir as it was.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_ebb-controller");

fn serve(dir: &Path, config: &str) -> Command {
    let path = dir.join("controller.toml");
    fs::write(&path, config).unwrap();
    let mut cmd = Command::new(CONTROLLER);
    cmd.arg("serve").arg("--config").arg(&path).current_dir(dir);
    cmd
}

fn run(dir: &Path, config: &str) -> (i32, String) {
    let out = serve(dir, config).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(dir: &Path) -> String {
    format!(
        "data_dir = \"{}\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("data").display()
    )
}

/// Starts a controller and waits until it is serving.
fn start(dir: &Path, config: &str) -> Child {
    let endpoints = dir.join("data/endpoints.toml");
    assert!(
        !endpoints.exists(),
        "a stopped controller left endpoints.toml behind"
    );
    let mut child = serve(dir, config).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while !endpoints.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "controller exited early"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "controller did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    assert!(child.wait().unwrap().success());
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir.join("data/pki"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn unknown_key_exits_64_before_touching_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run(
        dir.path(),
        &format!("{}[fleet]\nsample_rings = 3\n", config(dir.path())),
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("controller.toml") && err.contains("sample_rings"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists());
}

#[test]
fn invalid_values_are_all_reported_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run(
        dir.path(),
        "[fleet]\nsampling_interval_ms = 50\nsample_ring = 0\n",
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("fleet.sampling_interval_ms: 50"), "{err}");
    assert!(err.contains("fleet.sample_ring: 0"), "{err}");
}

#[test]
fn missing_config_file_exits_64() {
    let out = Command::new(CONTROLLER)
        .args(["serve", "--config", "/nonexistent/controller.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/controller.toml"));
}

#[test]
fn a_taken_port_is_named_and_the_data_dir_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    stop(start(dir.path(), &config(dir.path())));
    let before = snapshot(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = config(dir.path()).replacen("127.0.0.1:0", &addr.to_string(), 1);
    let (code, err) = run(dir.path(), &cfg);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("cannot listen on {addr} (grpc.listen)")),
        "{err}"
    );
    assert!(err.contains("in use"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_second_controller_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), &config(dir.path()));
    let before = snapshot(dir.path());
    let (code, err) = run(dir.path(), &config(dir.path()));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use by another ebb-controller"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
    stop(first);
}

#[test]
fn half_a_ca_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    stop(start(dir.path(), &config(dir.path())));
    fs::remove_file(dir.path().join("data/pki/ca.key")).unwrap();
    let ca_before = fs::read(dir.path().join("data/pki/ca.crt")).unwrap();
    let (code, err) = run(dir.path(), &config(dir.path()));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ca.key does not"), "{err}");
    assert_eq!(
        fs::read(dir.path().join("data/pki/ca.crt")).unwrap(),
        ca_before
    );
}

#[test]
fn certificates_are_made_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    stop(start(dir.path(), &config(dir.path())));
    let first = snapshot(dir.path());
    let names: Vec<_> = first.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "admin.crt",
            "admin.key",
            "ca.crt",
            "ca.key",
            "server.crt",
            "server.key"
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "server.key", "admin.key"] {
        let mode = fs::metadata(dir.path().join("data/pki").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    stop(start(dir.path(), &config(dir.path())));
    assert_eq!(snapshot(dir.path()), first);
}
