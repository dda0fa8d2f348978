//! A compromised instance cannot reach the controller's keys (DESIGN §3):
//! with the controller running as root, each launched instance's agent and
//! workload run as a uid of their own, in a clean environment. The
//! workloads themselves try to read the CA key, the admin key, the store and
//! each other's agent keys; only their own key opens.
//!
//! Needs root (as `.ci/run` is): as another user the controller cannot
//! switch users, and this test fails saying so rather than pass unproven.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ebb_tests::{Admin, ControllerProc, DEADLINE, Sandbox, eventually, instances};

const GROUP: &str = "probes";

/// Each workload waits for the probe list, tries every path on it and
/// prints what it could read, then its uid, gid, groups and environment.
const FILE: &str = r#"
[group]
name = "probes"
min_size = 2
max_size = 2
sampling_interval_secs = 1

[configuration]
name = "probes-v1"
command = ["sh", "-c", """
until [ -r "{LIST}" ]; do sleep 0.2; done
while read -r f; do
  if cat "$f" >/dev/null 2>&1; then echo "READ $f"; else echo "DENIED $f"; fi
done < "{LIST}"
echo "UID $(id -u) GID $(id -g) GROUPS $(id -G)"
env | sed 's/^/ENV /'
echo DONE
while :; do sleep 1; done
"""]
"#;

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn a_workload_cannot_read_the_ca_key_or_another_instances_key() {
    assert!(
        is_root(),
        "this test needs root (the controller must be able to switch users); run the suite as root, as .ci/run does"
    );
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    let list = sb.path().join("probe-list");
    let file = sb.path().join("probes.toml");
    fs::write(&file, FILE.replace("{LIST}", &list.display().to_string())).unwrap();
    let applied = ctl.ebbctl(&["apply", "-f", &file.display().to_string()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let ids = eventually("two instances in service", DEADLINE * 2, || {
        let ids: Vec<String> = instances(&mut admin, GROUP)
            .into_iter()
            .filter(|i| i.lifecycle_state == "InService")
            .map(|i| i.id)
            .collect();
        (ids.len() == 2).then_some(ids)
    });

    let data = ctl.dir.join("ebb-data");
    let host = |id: &str| data.join("instances").join(id).join("host");
    // The controller's own files are its alone.
    for (path, mode) in [(data.join("pki"), 0o700), (data.join("ebb.db"), 0o600)] {
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, mode, "{}", path.display());
        assert_eq!(meta.uid(), 0, "{}", path.display());
    }
    let mut lines = vec![
        data.join("pki/ca.key"),
        data.join("pki/admin.key"),
        data.join("ebb.db"),
    ];
    lines.extend(ids.iter().map(|id| host(id).join("agent.key")));
    let text: String = lines.iter().map(|p| format!("{}\n", p.display())).collect();
    fs::write(&list, text).unwrap();

    let mut uids = HashSet::new();
    for (n, id) in ids.iter().enumerate() {
        let other = &ids[1 - n];
        let log = data.join("instances").join(id).join("workload.log");
        let out = eventually(&format!("{id}'s workload to report"), DEADLINE, || {
            fs::read_to_string(&log).ok().filter(|t| t.contains("DONE"))
        });
        let expect = |verdict: &str, path: &Path| {
            let line = format!("{verdict} {}", path.display());
            assert!(
                out.lines().any(|l| l == line),
                "{id}: no `{line}` in:\n{out}"
            );
        };
        expect("DENIED", &data.join("pki/ca.key"));
        expect("DENIED", &data.join("pki/admin.key"));
        expect("DENIED", &data.join("ebb.db"));
        expect("DENIED", &host(other).join("agent.key"));
        // Its own key opens: the probe itself works.
        expect("READ", &host(id).join("agent.key"));

        let ids_line = out.lines().find(|l| l.starts_with("UID ")).unwrap();
        let fields: Vec<&str> = ids_line.split_whitespace().collect();
        let uid: u32 = fields[1].parse().unwrap();
        assert!((200_000..201_000).contains(&uid), "{id}: {ids_line}");
        assert_eq!(fields[3], fields[1], "{id}: gid is the uid: {ids_line}");
        assert_eq!(
            &fields[5..],
            [fields[1]],
            "{id}: no other groups: {ids_line}"
        );
        assert_eq!(fs::metadata(host(id)).unwrap().uid(), uid);
        uids.insert(uid);
        // Nothing of the controller's environment (cargo's test variables
        // are in it) reaches the workload.
        let env: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("ENV ")).collect();
        assert!(
            env.iter().all(|v| !v.starts_with("CARGO")),
            "{id}: the controller's environment leaked: {env:?}"
        );
        assert!(
            env.contains(&format!("EBB_INSTANCE_ID={id}").as_str()),
            "{env:?}"
        );
        assert!(
            env.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            "{env:?}"
        );
    }
    assert_eq!(uids.len(), 2, "each instance has a uid of its own");

    // Its agent runs as that uid too, and still reports.
    let agents: Vec<String> = ctl
        .instance_processes()
        .into_iter()
        .filter(|p| p.contains("ebb-agent"))
        .collect();
    assert_eq!(agents.len(), 2, "{agents:?}");
    for line in agents {
        let pid = line.split_whitespace().next().unwrap();
        let uid = fs::metadata(format!("/proc/{pid}")).unwrap().uid();
        assert!(uids.contains(&uid), "agent {line} runs as {uid}");
    }
}
