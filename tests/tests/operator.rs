//! The controller as an operator runs it: `check-config`, JSON logs, and
//! `SIGHUP` reloading the log level, against the real binary.

use std::fs;
use std::process::Command;

use ebb_proto::v1 as pb;
use ebb_tests::{Admin, ControllerProc, DEADLINE, Sandbox, admin_call, bin, eventually};

fn check_config(path: &std::path::Path) -> std::process::Output {
    Command::new(bin("ebb-controller"))
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run ebb-controller check-config")
}

#[test]
fn check_config_says_what_a_file_sets_and_names_every_bad_key() {
    let sb = Sandbox::new();
    let good = sb.path().join("good.toml");
    fs::write(
        &good,
        "data_dir = \"/var/lib/ebb\"\n[log]\nlevel = \"info,ebb_controller::engine=debug\"\nformat = \"json\"\n",
    )
    .unwrap();
    let out = check_config(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.starts_with(&format!("{}: ok\n", good.display())),
        "{stdout}"
    );
    for line in [
        "data_dir      /var/lib/ebb",
        "store         sqlite (/var/lib/ebb/ebb.db)",
        "log           info,ebb_controller::engine=debug (Json)",
    ] {
        assert!(stdout.contains(line), "{line} in:\n{stdout}");
    }

    let bad = sb.path().join("bad.toml");
    fs::write(
        &bad,
        "[log]\nlevel = \"verbose\"\n[fleet]\nsampling_interval_ms = 5\n",
    )
    .unwrap();
    let out = check_config(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for problem in [
        "log.level: `verbose`: `verbose` is not one of trace, debug, info, warn, error, off",
        "fleet.sampling_interval_ms: 5 is outside 1000..=300000",
    ] {
        assert!(stderr.contains(problem), "{problem} in:\n{stderr}");
    }
    fs::write(&bad, "[log]\nformat = \"xml\"\n").unwrap();
    let out = check_config(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("unknown variant `xml`, expected `text` or `json`"),
        "{stderr}"
    );
    // The overrides `serve` takes are checked with the file.
    let out = Command::new(bin("ebb-controller"))
        .args(["check-config", "--store", "etcd"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("store.etcd.endpoints"), "{stderr}");
}

#[test]
fn json_logs_are_one_object_a_line() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start_with(sb.path(), 1000, "[log]\nformat = \"json\"\n").unwrap();
    ctl.wait_log("ebb-controller serving");
    let text = ctl.proc.log_text();
    let serving = text
        .lines()
        .find(|l| l.contains("ebb-controller serving"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(serving).expect(serving);
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["fields"]["message"], "ebb-controller serving", "{v}");
    assert!(
        v["fields"]["grpc"].is_string() && v["timestamp"].is_string(),
        "{v}"
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

#[test]
fn sighup_reloads_the_log_level_from_the_file() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    ctl.wait_log("ebb-controller serving");
    let config = sb.path().join("controller.toml");
    let original = fs::read_to_string(&config).unwrap();
    let set_level = |level: &str| {
        fs::write(&config, format!("{original}[log]\nlevel = \"{level}\"\n")).unwrap();
        ctl.proc.signal("HUP");
    };
    let mut admin = Admin::local(&ctl);
    let mut create = |name: &str| {
        admin_call!(
            admin,
            create_scaling_group,
            pb::CreateScalingGroupRequest {
                name: name.into(),
                max_size: 1,
                ..Default::default()
            }
        )
        .expect("create a group");
    };
    let reloads = || ctl.proc.log_text().matches("log level reloaded").count();

    // At warn, an info line (a group created) is not written.
    set_level("warn");
    eventually("the reload at warn", DEADLINE, || {
        (reloads() == 1).then_some(())
    });
    create("quiet");
    // Back at info, it is: once `loud` shows, `quiet` would have before it.
    set_level("info");
    eventually("the reload at info", DEADLINE, || {
        (reloads() == 2).then_some(())
    });
    create("loud");
    ctl.wait_log("group=loud");
    assert!(
        !ctl.proc.log_text().contains("group=quiet"),
        "{}",
        ctl.proc.log_text()
    );

    // A file that no longer loads keeps the level there was, and says why.
    fs::write(&config, format!("{original}[log]\nlevel = \"loud\"\n")).unwrap();
    ctl.proc.signal("HUP");
    ctl.wait_log("SIGHUP: the log level stays as it was");
    ctl.wait_log("log.level: `loud`");
    create("still");
    ctl.wait_log("group=still");
}
