//! `ebbctl` against a real controller: apply is idempotent, the instance
//! list shows live numbers, activities tell the story, bad files change nothing.

use ebb_tests::{ControllerProc, DEADLINE, Sandbox, eventually};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const GROUP: &str = r#"
[group]
name = "batch"
min_size = 2
max_size = 5
sampling_interval_secs = 1
removal_policies = ["OldestInstance"]

[configuration]
name = "batch-v1"
command = ["sleep", "infinity"]
env = { MODE = "batch" }
"#;

#[test]
fn apply_twice_then_list_instances_and_activities() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let file = sb.path().join("batch.toml");
    std::fs::write(&file, GROUP).unwrap();
    let file = file.display().to_string();

    let first = ctl.ebbctl(&["apply", "-f", &file]);
    assert!(
        first.status.success(),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    assert!(
        stdout(&first).contains("created group batch"),
        "{}",
        stdout(&first)
    );

    let instances = eventually(
        "two InService instances with CPU and memory",
        DEADLINE * 2,
        || {
            let out = ctl.ebbctl(&["instance", "list", "--group", "batch", "-o", "json"]);
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let list = list.as_array()?.clone();
            let ready = list.len() == 2
                && list.iter().all(|i| {
                    i["lifecycle_state"] == "InService"
                        && i["agent_connected"] == true
                        && i["cpu_utilization"].is_number()
                        && i["memory_utilization"].as_f64().is_some_and(|m| m > 0.0)
                });
            ready.then_some(list)
        },
    );
    assert_eq!(instances.len(), 2);

    let again = ctl.ebbctl(&["apply", "-f", &file]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), "no changes");

    let table = ctl.ebbctl(&["instance", "list", "--group", "batch"]);
    let text = stdout(&table);
    assert!(
        text.lines().next().unwrap_or("").contains("STATE"),
        "{text}"
    );
    assert_eq!(text.matches("InService").count(), 2, "{text}");

    // A changed value is applied, and only it.
    std::fs::write(
        sb.path().join("batch.toml"),
        GROUP.replace("min_size = 2", "min_size = 3"),
    )
    .unwrap();
    let changed = ctl.ebbctl(&["apply", "-f", &file]);
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert!(
        stdout(&changed).contains("min_size"),
        "{}",
        stdout(&changed)
    );
    eventually("three instances", DEADLINE * 2, || {
        let out = ctl.ebbctl(&[
            "instance",
            "list",
            "--group",
            "batch",
            "--state",
            "InService",
            "-o",
            "json",
        ]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (list.as_array()?.len() == 3).then_some(())
    });

    let acts = eventually("both activities finished", DEADLINE, || {
        let out = ctl.ebbctl(&["activity", "list", "--group", "batch", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let list = list.as_array()?.clone();
        (list.len() == 2 && list.iter().all(|a| a["status"] == "Successful")).then_some(list)
    });
    assert!(
        acts[0]["cause"].as_str().unwrap().contains("from 2 to 3"),
        "{acts:?}"
    );
    assert!(
        acts[1]["cause"].as_str().unwrap().contains("from 0 to 2"),
        "{acts:?}"
    );
    let id = acts[0]["id"].as_str().unwrap();
    let described = ctl.ebbctl(&["activity", "describe", id]);
    assert!(
        stdout(&described).contains("bounds"),
        "{}",
        stdout(&described)
    );
    // --limit, --since and --status are answered by the controller.
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["activity", "list", "--group", "batch", "-o", "json"];
        all.extend_from_slice(args);
        let out = ctl.ebbctl(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&["--limit", "1"]), [id]);
    assert_eq!(ids(&["--since", "2000-01-01T00:00:00Z"]).len(), 2);
    assert!(ids(&["--since", "2999-01-01T00:00:00Z"]).is_empty());
    assert!(ids(&["--status", "Rejected"]).is_empty());
    assert_eq!(ids(&["--status", "Successful", "--limit", "5"]).len(), 2);
}

#[test]
fn a_bad_apply_file_names_the_problem_and_changes_nothing() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let file = sb.path().join("bad.toml");
    std::fs::write(
        &file,
        GROUP.replace("max_size = 5", "max_size = 1\nmax_sise = 4"),
    )
    .unwrap();
    let out = ctl.ebbctl(&["apply", "-f", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("max_sise"), "{}", stderr(&out));
    std::fs::write(&file, GROUP.replace("max_size = 5", "max_size = 1")).unwrap();
    let out = ctl.ebbctl(&["apply", "-f", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("min_size: 2 is greater than max_size 1"),
        "{}",
        stderr(&out)
    );
    let groups = ctl.ebbctl(&["group", "list", "-o", "json"]);
    assert_eq!(stdout(&groups).trim(), "[]");
}

#[test]
fn errors_are_one_readable_line() {
    let sb = Sandbox::new();
    let out = std::process::Command::new(ebb_tests::bin("ebbctl"))
        .args([
            "--data-dir",
            &sb.path().join("nowhere").display().to_string(),
            "group",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no controller found"), "{err}");
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let out = ctl.ebbctl(&["group", "modify", "ghost", "--desired", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "ebbctl: scaling group `ghost` does not exist"
    );
}

/// A host managed by hand: `ebbctl cert issue`, its agent, `instance attach`.
#[test]
fn a_hand_managed_host_is_issued_a_cert_and_attached() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let file = sb.path().join("batch.toml");
    std::fs::write(&file, GROUP.replace("min_size = 2", "min_size = 1")).unwrap();
    let out = ctl.ebbctl(&["apply", "-f", &file.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let host = sb.path().join("host-7");
    let out = ctl.ebbctl(&[
        "cert",
        "issue",
        "--id",
        "host-7",
        "--out-dir",
        &host.display().to_string(),
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::write(
        host.join("agent.toml"),
        issued["agent_toml"].as_str().unwrap(),
    )
    .unwrap();
    // Attached first: the controller refuses an instance in no group.
    let out = ctl.ebbctl(&["instance", "attach", "--group", "batch", "host-7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut agent = std::process::Command::new(ebb_tests::bin("ebb-agent"))
        .arg("--config")
        .arg(host.join("agent.toml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let attached = eventually("host-7 in service", DEADLINE * 2, || {
        let out = ctl.ebbctl(&["instance", "list", "--group", "batch", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        list.as_array()?
            .iter()
            .find(|i| i["id"] == "host-7" && i["lifecycle_state"] == "InService")
            .cloned()
    });
    assert_eq!(attached["creation_type"], "Attached");
    let group = ctl.ebbctl(&["group", "describe", "batch", "-o", "json"]);
    let group: serde_json::Value = serde_json::from_slice(&group.stdout).unwrap();
    assert_eq!(group["desired_capacity"], 2, "{group}");
    // Detached, it leaves the group but keeps running.
    let out = ctl.ebbctl(&["instance", "detach", "--group", "batch", "host-7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = ctl.ebbctl(&["instance", "list", "--group", "batch", "-o", "json"]);
    assert!(!stdout(&list).contains("host-7"), "{}", stdout(&list));
    assert!(
        agent.try_wait().unwrap().is_none(),
        "detach must not stop the host's agent"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Rules, alarms and tasks through `ebbctl`, and `activity describe` saying why.
#[test]
fn rules_alarms_and_tasks_through_ebbctl() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/autoscaled.toml");
    // The example's workload needs python3; the plan is the same with sleep.
    let text = std::fs::read_to_string(&example).unwrap().replace(
        r#"["python3", "-m", "http.server", "0"]"#,
        r#"["sleep", "infinity"]"#,
    );
    let file = sb.path().join("autoscaled.toml");
    std::fs::write(&file, text).unwrap();
    let file = file.display().to_string();
    let out = ctl.ebbctl(&["apply", "-f", &file]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let again = ctl.ebbctl(&["apply", "-f", &file]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), "no changes");

    // The target-tracking rule made its two alarms.
    let alarms = ctl.ebbctl(&["alarm", "list", "--group", "api", "-o", "json"]);
    let alarms: serde_json::Value = serde_json::from_slice(&alarms.stdout).unwrap();
    let names: Vec<_> = alarms
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["cpu-50-in", "cpu-50-out"]);
    let tasks = ctl.ebbctl(&["task", "list", "--group", "api", "-o", "json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&tasks.stdout).unwrap();
    assert!(
        tasks
            .as_array()
            .unwrap()
            .iter()
            .all(|t| !t["next_run"].as_str().unwrap().is_empty()),
        "{tasks}"
    );

    // A manual rule run, refused and then done, each explained.
    let out = ctl.ebbctl(&[
        "rule",
        "create",
        "--group",
        "api",
        "add-2",
        "--simple",
        "--adjustment-type",
        "QuantityChangeInCapacity",
        "--adjustment-value",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ctl.ebbctl(&["group", "suspend", "api", "ScaleOut"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let refused = ctl.ebbctl(&["rule", "execute", "add-2", "--group", "api", "-o", "json"]);
    assert!(refused.status.success(), "{}", stderr(&refused));
    let refused: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(refused["status"], "Rejected", "{refused}");
    assert_eq!(
        refused["error"],
        "the ScaleOut process of the group is suspended"
    );
    let why = ctl.ebbctl(&["activity", "describe", refused["id"].as_str().unwrap()]);
    let why = stdout(&why);
    assert!(
        why.contains("why:") && why.contains("adding 2 to 1 gives 3"),
        "{why}"
    );
    assert!(
        ctl.ebbctl(&["group", "resume", "api", "ScaleOut"])
            .status
            .success()
    );
    let done = ctl.ebbctl(&["rule", "execute", "add-2", "--group", "api", "-o", "json"]);
    let done: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(done["status"], "InProgress", "{done}");
    assert!(
        done["cause"].as_str().unwrap().ends_with("from 1 to 3"),
        "{done}"
    );

    // Bad input names its field.
    let out = ctl.ebbctl(&[
        "alarm",
        "create",
        "--group",
        "api",
        "x1",
        "--metric",
        "CpuUtilization",
        "--statistic",
        "Average",
        "--period",
        "7",
        "--comparison",
        ">",
        "--threshold",
        "80",
        "--action",
        "add-2",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("period"), "{}", stderr(&out));
    let out = ctl.ebbctl(&[
        "task",
        "create",
        "--group",
        "api",
        "t1",
        "--launch-time",
        "2030-01-01T00:00:00Z",
        "--recurrence",
        "cron:61 * * * *",
        "--rule",
        "add-2",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("minute: 61 is outside 0-59"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn configurations_are_copied_from_an_instance_modified_and_refused_when_bad() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let file = sb.path().join("batch.toml");
    std::fs::write(&file, GROUP).unwrap();
    let applied = ctl.ebbctl(&["apply", "-f", &file.display().to_string()]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let id = eventually("an InService instance", DEADLINE * 2, || {
        let out = ctl.ebbctl(&["instance", "list", "--group", "batch", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let first = list
            .as_array()?
            .iter()
            .find(|i| i["lifecycle_state"] == "InService")?;
        first["id"].as_str().map(str::to_owned)
    });
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = ctl.ebbctl(&all);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // The process provider's own name for it: its instance dir.
    let inst = json(&["instance", "describe", &id]);
    assert!(
        inst["provider_id"]
            .as_str()
            .is_some_and(|p| p.ends_with(&id)),
        "{inst}"
    );
    let table = stdout(&ctl.ebbctl(&["instance", "describe", &id]));
    assert!(table.contains("provider_id:"), "{table}");

    let copied = json(&[
        "config",
        "create",
        "--group",
        "batch",
        "batch-v2",
        "--from-instance",
        &id,
        "--env",
        "EXTRA=1",
    ]);
    assert_eq!(copied["command"], serde_json::json!(["sleep", "infinity"]));
    assert_eq!(copied["env"]["MODE"], "batch");
    assert_eq!(copied["env"]["EXTRA"], "1");
    assert_eq!(copied["active"], false);

    let modified = json(&[
        "config",
        "modify",
        "batch-v2",
        "--group",
        "batch",
        "--user-data",
        "hello",
        "--tag",
        "team=core",
    ]);
    assert_eq!(modified["user_data"], "hello");
    assert_eq!(modified["tags"]["team"], "core");
    assert_eq!(modified["env"]["EXTRA"], "1", "untouched fields stay");

    let refused = |args: &[&str], says: &str| {
        let out = ctl.ebbctl(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    };
    refused(
        &["config", "modify", "batch-v2", "--group", "batch"],
        "nothing to change",
    );
    refused(
        &[
            "config",
            "modify",
            "batch-v2",
            "--group",
            "batch",
            "--instance-type",
            "exec",
        ],
        "exec: instance_type = \"exec\" needs exec settings",
    );
    refused(
        &[
            "config",
            "modify",
            "batch-v2",
            "--group",
            "batch",
            "--instance-type",
            "exec",
            "--exec-program",
            "launch.sh",
        ],
        "exec.program: `launch.sh` is not an absolute path",
    );
    refused(
        &[
            "config",
            "create",
            "--group",
            "batch",
            "vm",
            "--instance-type",
            "microvm",
        ],
        "microvm",
    );
    refused(
        &[
            "config",
            "create",
            "--group",
            "batch",
            "ghost",
            "--from-instance",
            "i-nope",
        ],
        "instance `i-nope` does not exist",
    );
    // Nothing refused was stored.
    let now = json(&["config", "describe", "batch-v2", "--group", "batch"]);
    assert_eq!(now, modified);
    let all = json(&["config", "list", "--group", "batch"]);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
}
