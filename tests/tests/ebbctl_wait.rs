//! ebbctl's `--wait`, `--watch` and `apply --prune` against a real
//! controller launching real instances: a waited-for command returns once
//! its activity ended (and the group has its instances in service), exits
//! 1 with the cause when the activity failed or was rejected; a watched
//! list is listed again; a pruned apply deletes only what the file no
//! longer names, and only when asked.

use ebb_tests::{ControllerProc, Sandbox};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs ebbctl and insists it succeeded; its stdout.
fn ok(ctl: &ControllerProc, args: &[&str]) -> String {
    let out = ctl.ebbctl(args);
    assert!(
        out.status.success(),
        "ebbctl {args:?} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The group's instances as `instance list -o json` has them.
fn in_service(ctl: &ControllerProc, group: &str) -> usize {
    let list: serde_json::Value = serde_json::from_str(&ok(
        ctl,
        &["instance", "list", "--group", group, "-o", "json"],
    ))
    .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|i| i["lifecycle_state"] == "InService")
        .count()
}

/// The outcome lines of `scale` or `rule execute` (the rest says why).
fn outcomes(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("activity ")).collect()
}

/// Generous: a launch on a busy 2-core machine can take a while.
const WAIT: &str = "300";

#[test]
fn wait_returns_when_the_activity_ends_and_fails_with_its_cause() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    ok(
        &ctl,
        &[
            "group",
            "create",
            "web",
            "--min",
            "0",
            "--max",
            "4",
            "--desired",
            "2",
        ],
    );
    ok(
        &ctl,
        &[
            "config", "create", "v1", "--group", "web", "--", "sleep", "infinity",
        ],
    );

    // enable --wait returns once both instances are in service.
    let enabled = ok(
        &ctl,
        &[
            "group",
            "enable",
            "web",
            "--config",
            "v1",
            "--wait",
            "--wait-timeout",
            WAIT,
        ],
    );
    assert!(enabled.contains("enabled group web"), "{enabled}");
    let last = enabled.lines().last().unwrap_or("");
    assert!(
        last.starts_with("group web settled: Active, 2 of 2 in service after 1 activity (asa-")
            && last.ends_with(" Successful)"),
        "{enabled}"
    );
    assert_eq!(in_service(&ctl, "web"), 2);

    // scale --wait prints the activity as it started and as it ended.
    let scaled = ok(
        &ctl,
        &[
            "scale",
            "--group",
            "web",
            "--adjustment-type",
            "QuantityChangeInCapacity",
            "--adjustment-value",
            "1",
            "--wait",
            "--wait-timeout",
            WAIT,
        ],
    );
    let lines = outcomes(&scaled);
    assert_eq!(lines.len(), 2, "{scaled}");
    assert!(lines[0].contains(" InProgress: capacity 2 → 3"), "{scaled}");
    assert!(lines[1].contains(" Successful: capacity 2 → 3"), "{scaled}");
    // As JSON, only the ended activity.
    let json = ok(
        &ctl,
        &[
            "scale",
            "--group",
            "web",
            "--adjustment-type",
            "QuantityChangeInCapacity",
            "--adjustment-value",
            "-1",
            "--wait",
            "--wait-timeout",
            WAIT,
            "-o",
            "json",
        ],
    );
    let a: serde_json::Value = serde_json::from_str(&json).expect(&json);
    assert_eq!(a["status"], "Successful", "{json}");
    assert_eq!(
        (a["capacity_from"].as_u64(), a["capacity_to"].as_u64()),
        (Some(3), Some(2))
    );

    // rule execute --wait likewise.
    ok(
        &ctl,
        &[
            "rule",
            "create",
            "add-one",
            "--group",
            "web",
            "--simple",
            "--adjustment-type",
            "QuantityChangeInCapacity",
            "--adjustment-value",
            "1",
            "--cooldown",
            "0",
        ],
    );
    let executed = ok(
        &ctl,
        &[
            "rule",
            "execute",
            "add-one",
            "--group",
            "web",
            "--wait",
            "--wait-timeout",
            WAIT,
        ],
    );
    assert!(
        outcomes(&executed)
            .last()
            .is_some_and(|l| l.contains(" Successful: capacity 2 → 3")),
        "{executed}"
    );
    assert_eq!(in_service(&ctl, "web"), 3);

    // --watch lists again until --watch-count; piped, listings are apart.
    let watched = ok(
        &ctl,
        &[
            "activity",
            "list",
            "--group",
            "web",
            "--watch",
            "--interval",
            "1",
            "--watch-count",
            "2",
        ],
    );
    assert_eq!(watched.matches("ID ").count(), 2, "{watched}");
    assert_eq!(watched.split("\n\n").count(), 2, "{watched}");
    let wide = ok(&ctl, &["instance", "list", "--group", "web", "-o", "wide"]);
    let header = wide.lines().next().unwrap_or("");
    assert!(
        header.contains("ADDRESS") && header.contains("CONFIG") && wide.contains("asc-"),
        "{wide}"
    );

    // A rejected activity: exit 0 without --wait (it is an answer), 1 with it.
    ok(&ctl, &["group", "disable", "web"]);
    let scale = [
        "scale",
        "--group",
        "web",
        "--adjustment-type",
        "QuantityChangeInCapacity",
        "--adjustment-value",
        "1",
    ];
    let plain = ctl.ebbctl(&scale);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(
        stdout(&plain).starts_with("rejected: "),
        "{}",
        stdout(&plain)
    );
    let waited = ctl.ebbctl(&[&scale[..], &["--wait"]].concat());
    assert_eq!(waited.status.code(), Some(1), "{}", stdout(&waited));
    let err = stderr(&waited);
    assert!(
        err.starts_with("ebbctl: activity asa-") && err.contains(" Rejected: "),
        "{err}"
    );
    assert!(err.contains("not active"), "{err}");

    // A launch that cannot work: the activity fails, and enable --wait
    // exits 1 with its cause.
    ok(
        &ctl,
        &["group", "create", "broken", "--min", "1", "--max", "1"],
    );
    ok(
        &ctl,
        &[
            "config",
            "create",
            "v1",
            "--group",
            "broken",
            "--",
            "/nonexistent/workload",
        ],
    );
    let failed = ctl.ebbctl(&[
        "group",
        "enable",
        "broken",
        "--config",
        "v1",
        "--wait",
        "--wait-timeout",
        WAIT,
    ]);
    assert_eq!(failed.status.code(), Some(1), "{}", stdout(&failed));
    let err = stderr(&failed);
    assert!(
        err.starts_with("ebbctl: activity asa-") && err.contains(" Failed: "),
        "{err}"
    );

    // Bad values are refused before anything is sent.
    for (args, want) in [
        (
            &[
                "scale",
                "--group",
                "web",
                "--adjustment-type",
                "TotalCapacity",
                "--adjustment-value",
                "1",
                "--wait-timeout",
                "5",
            ][..],
            "--wait",
        ),
        (
            &["group", "enable", "web", "--wait", "--wait-timeout", "0"],
            "--wait-timeout",
        ),
        (&["activity", "list", "--interval", "2"], "--watch"),
        (
            &["instance", "list", "--watch", "--interval", "0"],
            "--interval",
        ),
        (
            &["activity", "list", "--watch", "--watch-count", "0"],
            "--watch-count",
        ),
    ] {
        let out = ctl.ebbctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}

const FULL: &str = r#"
[group]
name = "api"
min_size = 0
max_size = 3

[configuration]
name = "api-v1"
command = ["sleep", "infinity"]

[[rule]]
name = "add-1"
rule_type = "SimpleScalingRule"
adjustment_type = "QuantityChangeInCapacity"
adjustment_value = 1

[[rule]]
name = "remove-1"
rule_type = "SimpleScalingRule"
adjustment_type = "QuantityChangeInCapacity"
adjustment_value = -1

[[alarm]]
name = "cpu-high"
metric = "CpuUtilization"
statistic = "Average"
period_secs = 60
comparison_operator = ">"
threshold = 80
alarm_actions = ["add-1"]

[[task]]
name = "nightly"
launch_time = "2030-01-06T02:00:00Z"
recurrence_type = "Cron"
recurrence_value = "0 2 * * *"
scaling_rule = "remove-1"
"#;

/// FULL without `remove-1`, the alarm and the task.
fn trimmed() -> String {
    let rules_end = FULL.find("[[rule]]\nname = \"remove-1\"").unwrap();
    FULL[..rules_end].to_owned()
}

fn names(ctl: &ControllerProc, family: &str) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&ok(ctl, &[family, "list", "--group", "api", "-o", "json"])).unwrap();
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn apply_prune_deletes_only_what_the_file_no_longer_names_and_only_when_asked() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let file = sb.path().join("api.toml");
    std::fs::write(&file, FULL).unwrap();
    let file = file.display().to_string();
    // --wait on an apply that launches nothing settles at once.
    let first = ok(&ctl, &["apply", "-f", &file, "--prune", "--wait"]);
    assert!(first.contains("created rule remove-1"), "{first}");
    assert!(!first.contains("pruned"), "{first}");
    assert!(
        first
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("group api settled: Active, 0 of 0"),
        "{first}"
    );
    assert_eq!(names(&ctl, "rule"), ["add-1", "remove-1"]);

    std::fs::write(sb.path().join("api.toml"), trimmed()).unwrap();
    // Without --prune nothing the file no longer names is touched.
    assert_eq!(ok(&ctl, &["apply", "-f", &file]).trim(), "no changes");
    // The dry run lists what would go, and deletes nothing.
    let plan = ok(&ctl, &["apply", "-f", &file, "--prune", "--dry-run"]);
    assert_eq!(
        plan.lines().collect::<Vec<_>>(),
        [
            "delete scheduled task nightly from group api (pruned)",
            "delete alarm cpu-high from group api (pruned)",
            "delete rule remove-1 from group api (pruned)",
        ]
    );
    assert_eq!(names(&ctl, "rule"), ["add-1", "remove-1"]);
    assert_eq!(names(&ctl, "alarm"), ["cpu-high"]);
    assert_eq!(names(&ctl, "task"), ["nightly"]);

    let pruned = ok(&ctl, &["apply", "-f", &file, "--prune"]);
    assert_eq!(
        pruned.lines().collect::<Vec<_>>(),
        [
            "deleted scheduled task nightly from group api (pruned)",
            "deleted alarm cpu-high from group api (pruned)",
            "deleted rule remove-1 from group api (pruned)",
        ]
    );
    assert_eq!(names(&ctl, "rule"), ["add-1"]);
    assert!(names(&ctl, "alarm").is_empty());
    assert!(names(&ctl, "task").is_empty());
    assert_eq!(
        ok(&ctl, &["apply", "-f", &file, "--prune"]).trim(),
        "no changes"
    );
}
