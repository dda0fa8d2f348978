//! The quickstart's story, driven by a custom metric the demo controls
//! (`--load metric`) so it holds on a busy host; the CPU path it shows by
//! default is proven by `cpu_scaling.rs`. Run as root with `haproxy`
//! installed (as `.ci/run` does), the demo puts the group behind a real
//! HAProxy on a bridge of its own; the first two tests need that and fail
//! saying so otherwise. The third hides `haproxy` from the demo's PATH.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The demos each run a group of real instances: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The demo shows HAProxy only as root with `haproxy` installed.
fn needs_root_and_haproxy() {
    assert!(
        ebb_tests::net::is_root(),
        "this test needs root (the demo's instances get network namespaces on a bridge); run the suite as root, as .ci/run does"
    );
    let ok = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test needs the haproxy package (apt-get install haproxy; .ci/run installs it)"
    );
}

/// The demo's `--plain` request counts: `haproxy: N requests, F failed;
/// answered by i-a 12, i-b 30` as (total, failed, per instance).
fn request_counts(line: &str) -> Option<(u64, u64, BTreeMap<String, u64>)> {
    let rest = line.split("] haproxy: ").nth(1)?;
    let (total, rest) = rest.split_once(" requests, ")?;
    let (failed, rest) = rest.split_once(" failed; answered by ")?;
    let per = rest
        .split(", ")
        .filter_map(|p| {
            let (id, n) = p.split_once(' ')?;
            Some((id.to_owned(), n.parse().ok()?))
        })
        .collect();
    Some((total.parse().ok()?, failed.parse().ok()?, per))
}

/// What the demo's run on bridge `bridge` may have left: the bridge, its
/// namespaces, processes naming `data_dir`.
fn leftovers(bridge: &str, data_dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let link = std::process::Command::new("ip")
        .args(["link", "show", bridge])
        .output()
        .unwrap();
    if link.status.success() {
        left.push(format!("bridge {bridge}"));
    }
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{bridge}.")) {
            left.push(format!("namespace {name}"));
        }
    }
    // Its instances' agents and workloads, haproxy and the target agent
    // all name the data dir on their command lines.
    let procs = std::process::Command::new("pgrep")
        .args(["-af", &data_dir.display().to_string()])
        .output()
        .unwrap();
    left.extend(
        String::from_utf8_lossy(&procs.stdout)
            .lines()
            .map(|l| format!("process {l}")),
    );
    left
}

#[test]
fn the_quickstart_demo_shows_live_samples_and_leaves_nothing_behind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    needs_root_and_haproxy();
    let child = std::process::Command::new(ebb_tests::bin("ebb-controller"))
        .args(["demo", "--seconds", "32", "--plain", "--load", "metric"])
        .env("EBB_AGENT_BIN", ebb_tests::bin("ebb-agent"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let data_dir = std::env::temp_dir().join(format!("ebb-demo-{}", child.id()));
    let bridge = format!("ebd{}", child.id());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("created group demo"), "{stdout}");
    let live = stdout
        .lines()
        .filter(|l| l.contains("InService load 10.0") || l.contains("InService load 90.0"))
        .count();
    assert!(live >= 2, "expected live samples:\n{stdout}");
    let done = |needle: &str| {
        stdout
            .lines()
            .any(|l| l.contains("Successful") && l.contains(needle))
    };
    assert!(
        done("alarm `load-high` executed rule `add-1`"),
        "no scale-out:\n{stdout}"
    );
    assert!(
        done("alarm `load-low` executed rule `remove-1`"),
        "no scale-in:\n{stdout}"
    );
    assert!(
        done("vanished") || done("is unhealthy"),
        "the killed instance was not replaced:\n{stdout}"
    );
    // Behind HAProxy: the instances' ids answer requests through it, more
    // than one of them once the group has scaled out, and only instances
    // of the group.
    assert!(
        stdout.contains("HAProxy: frontend http://127.0.0.1:")
            && stdout.contains(&format!("instances on bridge {bridge} ")),
        "{stdout}"
    );
    assert!(!stdout.contains("HAProxy: not shown"), "{stdout}");
    let members: BTreeSet<&str> = stdout
        .lines()
        .filter(|l| l.contains("] group demo desired "))
        .flat_map(|l| l.split_whitespace())
        .filter(|w| w.starts_with("i-"))
        .collect();
    let counts: Vec<_> = stdout.lines().filter_map(request_counts).collect();
    let (total, failed, per) = counts.last().cloned().expect("no request counts");
    println!("through HAProxy: {total} requests, {failed} failed; answered by {per:?}");
    let scaled_out = counts
        .iter()
        .any(|(_, _, per)| per.values().filter(|n| **n > 0).count() >= 2);
    assert!(
        scaled_out,
        "never more than one instance answered:\n{stdout}"
    );
    for id in per.keys() {
        assert!(
            members.contains(id.as_str()),
            "{id} answered but is no instance of the group:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("haproxy: backend web now "),
        "the backend's changes were not told:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "demo over: every instance released; haproxy, its target agent and bridge {bridge} removed"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("teardown:"), "{stdout}");
    // The demo's instances ran from its own data dir and on its own bridge;
    // nothing of them, of HAProxy or of its agent may survive it.
    let left = leftovers(&bridge, &data_dir);
    assert!(left.is_empty(), "the demo left behind: {left:?}\n{stdout}");
    assert!(
        !data_dir.exists(),
        "demo left {} behind",
        data_dir.display()
    );
}

/// On a terminal (a pty from `script`), the demo redraws one screen with
/// the instances, HAProxy's servers and counts, the alarms, the activities
/// and the story. 12 s: a namespaced instance is InService once HAProxy's
/// check passes, which takes a few seconds on a busy machine.
#[test]
fn on_a_terminal_the_demo_redraws_a_live_screen() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    needs_root_and_haproxy();
    let command = format!(
        "{} demo --seconds 12 --load metric",
        ebb_tests::bin("ebb-controller").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("EBB_AGENT_BIN", ebb_tests::bin("ebb-agent"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    // Redrawn in place: cursor home, lines cleared to their end.
    let redraws = screen.matches("\x1b[H").count();
    assert!(redraws >= 5, "{redraws} redraws:\n{screen}");
    assert!(screen.contains("\x1b[K"), "{screen}");
    let last = screen.rsplit("\x1b[H").next().unwrap();
    for part in [
        "ebb demo  t=",
        "GROUP demo  Active  min 1 max 3",
        "INSTANCE",
        "ALARMS",
        "load-high   demo_load Average >= 70 for 3x1s  -> ",
        "load-low    demo_load Average <= 40 for 4x1s  -> ",
        "LATEST ACTIVITIES",
        // The latest activities, each with its cause.
        "changing the Total Capacity from ",
        // HAProxy in front of the group, with its request counts.
        "HAPROXY  frontend http://127.0.0.1:",
        "STORY",
    ] {
        assert!(
            last.contains(part),
            "`{part}` not on the last screen:\n{last}"
        );
    }
    assert!(
        last.lines()
            .any(|l| l.contains("InService") && l.contains("Healthy") && l.contains("connected")),
        "no instance in service on the last screen:\n{last}"
    );
    // The teardown is told as lines below the last screen.
    assert!(
        screen.contains("demo over: every instance released"),
        "{screen}"
    );
}

/// Without `haproxy` on its PATH the demo runs as before, on the host's
/// network, and says once, at the start, why HAProxy is not shown.
#[test]
fn without_haproxy_the_demo_says_so_and_runs_as_before() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // A PATH of everything on ours but haproxy.
    let bin = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            if name != "haproxy" && !bin.path().join(&name).exists() {
                let _ = std::os::unix::fs::symlink(e.path(), bin.path().join(&name));
            }
        }
    }
    let child = std::process::Command::new(ebb_tests::bin("ebb-controller"))
        .args(["demo", "--seconds", "8", "--plain", "--load", "metric"])
        .env("EBB_AGENT_BIN", ebb_tests::bin("ebb-agent"))
        .env("PATH", bin.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let data_dir = std::env::temp_dir().join(format!("ebb-demo-{}", child.id()));
    let bridge = format!("ebd{}", child.id());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("HAProxy: not shown"))
        .collect();
    assert_eq!(said.len(), 1, "{stdout}");
    assert!(
        said[0].contains("`haproxy` is not installed (apt-get install haproxy"),
        "{stdout}"
    );
    // It comes first, before the group is applied.
    let said_at = stdout.find("HAProxy: not shown").unwrap();
    assert!(said_at < stdout.find("$ ebbctl apply").unwrap(), "{stdout}");
    assert!(!stdout.contains("haproxy:"), "{stdout}");
    assert!(stdout.contains("InService load 10.0"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.ends_with("] demo over: every instance released")),
        "{stdout}"
    );
    let left = leftovers(&bridge, &data_dir);
    assert!(left.is_empty(), "the demo left behind: {left:?}\n{stdout}");
    assert!(
        !data_dir.exists(),
        "demo left {} behind",
        data_dir.display()
    );
}
