//! `ebbctl lb|db`, `apply`'s attachment sections, `instance describe` and
//! `cert issue --target` against a real controller, through the real
//! ebbctl binary. No target agent runs here, so every attachment shows its
//! target as not connected; what a target does with its state is tested
//! with real HAProxy and PostgreSQL elsewhere.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

use ebb_tests::{Admin, ControllerProc, DEADLINE, Sandbox, eventually};
use serde_json::{Value, json};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs ebbctl, which must succeed.
fn ok(ctl: &ControllerProc, args: &[&str]) -> String {
    ctl.ebbctl_ok(args)
}

/// Runs ebbctl, which must fail with `code`; returns its stderr.
fn refused(ctl: &ControllerProc, args: &[&str], code: i32) -> String {
    let out = ctl.ebbctl(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "ebbctl {args:?}:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

fn json_of(ctl: &ControllerProc, args: &[&str]) -> Value {
    ctl.ebbctl_json(args)
}

fn lbs(ctl: &ControllerProc, group: &str) -> Value {
    json_of(ctl, &["lb", "list", "--group", group])
}

fn dbs(ctl: &ControllerProc, group: &str) -> Value {
    json_of(ctl, &["db", "list", "--group", group])
}

/// A group with no instances: attachments need none.
fn empty_group(ctl: &ControllerProc, name: &str) {
    ok(ctl, &["group", "create", name, "--min", "0", "--max", "2"]);
}

const NOT_CONNECTED: &str = "target agent `lb1` is not connected";

#[test]
fn load_balancers_attach_update_refuse_and_detach() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    empty_group(&ctl, "web");
    assert_eq!(lbs(&ctl, "web"), json!([]));

    let line = ok(
        &ctl,
        &[
            "lb",
            "attach",
            "--group",
            "web",
            "--target",
            "lb1",
            "--backend",
            "web",
            "--port",
            "8080",
        ],
    );
    assert_eq!(
        line.trim(),
        "load balancer lb1/web attached to group web: port 8080, weight 1, drain 30s; \
         target agent lb1 is not connected: it adds the group's servers when it connects"
    );
    let list = lbs(&ctl, "web");
    assert_eq!(
        list,
        json!([{
            "target": "lb1",
            "backend": "web",
            "port": 8080,
            "weight": 1,
            "drain_timeout_secs": 30,
            "target_connected": false,
            "state": "Attached",
            "error": NOT_CONNECTED,
        }]),
        "the defaults are filled in and no target agent is connected"
    );
    let table = ok(&ctl, &["lb", "list", "--group", "web"]);
    let mut rows = table.lines();
    let header: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TARGET",
            "BACKEND",
            "PORT",
            "WEIGHT",
            "DRAIN",
            "STATE",
            "CONNECTED",
            "ERROR"
        ]
    );
    let row: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row[..7],
        ["lb1", "web", "8080", "1", "30s", "Attached", "no"]
    );

    // Attaching it again updates it in place.
    let updated = json_of(
        &ctl,
        &[
            "lb",
            "attach",
            "--group",
            "web",
            "--target",
            "lb1",
            "--backend",
            "web",
            "--port",
            "8081",
            "--weight",
            "5",
            "--drain-timeout",
            "10",
        ],
    );
    assert_eq!(updated, lbs(&ctl, "web"), "json output is the group's list");
    let l = &updated[0];
    assert_eq!(updated.as_array().unwrap().len(), 1, "{updated}");
    assert_eq!(
        (&l["port"], &l["weight"], &l["drain_timeout_secs"]),
        (&json!(8081), &json!(5), &json!(10)),
        "{updated}"
    );

    // Every bad input is refused naming what is wrong, and nothing changes.
    let before = lbs(&ctl, "web");
    fn attach<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["lb", "attach", "--group", "web"];
        args.extend_from_slice(extra);
        args
    }
    let good = ["--target", "lb1", "--backend", "web"];
    for (extra, code, want) in [
        (
            [&good[..], &["--port", "70000"]].concat(),
            2,
            "lb attach: --port: 70000 is outside 1..=65535",
        ),
        (
            [&good[..], &["--port", "80", "--weight", "0"]].concat(),
            2,
            "lb attach: --weight: 0 is outside 1..=256",
        ),
        (
            [&good[..], &["--port", "80", "--drain-timeout", "3601"]].concat(),
            2,
            "lb attach: --drain-timeout: 3601 is outside 0..=3600",
        ),
        (
            vec!["--target", "lb/1", "--backend", "web", "--port", "80"],
            2,
            "lb attach: --target: `lb/1` may use only letters, digits, '-', '_' and '.'",
        ),
        (
            // A backend is one target's in a group.
            vec!["--target", "lb2", "--backend", "web", "--port", "80"],
            1,
            "load_balancers[0].backend: backend `web` is already attached on target `lb1`",
        ),
    ] {
        let err = refused(&ctl, &attach(&extra), code);
        assert!(err.contains(want), "{extra:?}: {want} not in {err}");
    }
    let err = refused(
        &ctl,
        &[
            "lb",
            "attach",
            "--group",
            "nope",
            "--target",
            "lb1",
            "--backend",
            "web",
            "--port",
            "80",
        ],
        1,
    );
    assert!(err.contains("scaling group `nope` does not exist"), "{err}");
    let err = refused(
        &ctl,
        &[
            "lb",
            "detach",
            "--group",
            "web",
            "--target",
            "lb1",
            "--backend",
            "other",
        ],
        1,
    );
    assert!(
        err.contains("lb1/other is not attached to group web"),
        "{err}"
    );
    assert_eq!(lbs(&ctl, "web"), before, "refusals changed nothing");

    // Detaching: Detaching until the target confirms, which it never does
    // here, so the attachment is dropped at the controller's time-out.
    let line = ok(
        &ctl,
        &[
            "lb",
            "detach",
            "--group",
            "web",
            "--target",
            "lb1",
            "--backend",
            "web",
        ],
    );
    assert!(
        line.starts_with("load balancer lb1/web detaching from group web: Detaching until"),
        "{line}"
    );
    let list = lbs(&ctl, "web");
    assert_eq!(list[0]["state"], "Detaching", "{list}");
    assert_eq!(list[0]["target_connected"], false, "{list}");
    eventually(
        "the detached load balancer to be dropped",
        Duration::from_secs(180),
        || (lbs(&ctl, "web") == json!([])).then_some(()),
    );
}

#[test]
fn db_instances_attach_update_refuse_and_detach() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    empty_group(&ctl, "web");
    assert_eq!(dbs(&ctl, "web"), json!([]));

    let line = ok(
        &ctl,
        &[
            "db",
            "attach",
            "--group",
            "web",
            "--target",
            "db1",
            "--database",
            "app",
            "--user",
            "app",
        ],
    );
    assert_eq!(
        line.trim(),
        "database allow-list db1/app/app attached to group web: auth method scram-sha-256; \
         target agent db1 is not connected: it writes the group's lines when it connects"
    );
    assert_eq!(
        dbs(&ctl, "web"),
        json!([{
            "target": "db1",
            "database": "app",
            "user": "app",
            "auth_method": "scram-sha-256",
            "target_connected": false,
            "error": "target agent `db1` is not connected",
        }])
    );
    let table = ok(&ctl, &["db", "list", "--group", "web"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        ["db1", "app", "app", "scram-sha-256", "no"],
        "{table}"
    );

    let updated = json_of(
        &ctl,
        &[
            "db",
            "attach",
            "--group",
            "web",
            "--target",
            "db1",
            "--database",
            "app",
            "--user",
            "app",
            "--auth-method",
            "md5",
        ],
    );
    assert_eq!(updated.as_array().unwrap().len(), 1, "{updated}");
    assert_eq!(updated[0]["auth_method"], "md5", "{updated}");
    assert_eq!(dbs(&ctl, "web"), updated);

    let before = dbs(&ctl, "web");
    let base = [
        "db", "attach", "--group", "web", "--target", "db1", "--user", "app",
    ];
    // A line break in the method would add a pg_hba line of its own.
    let err = refused(
        &ctl,
        &[
            &base[..],
            &[
                "--database",
                "app",
                "--auth-method",
                "trust\nhost all all 0.0.0.0/0 trust",
            ],
        ]
        .concat(),
        2,
    );
    assert!(
        err.contains(
            "db attach: --auth-method: `trust\\nhost all all 0.0.0.0/0 trust` is not a pg_hba host method"
        ),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    let err = refused(&ctl, &[&base[..], &["--database", "a b"]].concat(), 2);
    assert!(
        err.contains("db attach: --database: `a b` may use only"),
        "{err}"
    );
    let err = refused(
        &ctl,
        &[
            "db",
            "attach",
            "--group",
            "web",
            "--target",
            "db 1",
            "--database",
            "app",
            "--user",
            "app",
        ],
        2,
    );
    assert!(
        err.contains("db attach: --target: `db 1` may use only"),
        "{err}"
    );
    let err = refused(
        &ctl,
        &[
            "db",
            "attach",
            "--group",
            "nope",
            "--target",
            "db1",
            "--database",
            "app",
            "--user",
            "app",
        ],
        1,
    );
    assert!(err.contains("scaling group `nope` does not exist"), "{err}");
    let err = refused(
        &ctl,
        &[
            "db",
            "detach",
            "--group",
            "web",
            "--target",
            "db1",
            "--database",
            "app",
            "--user",
            "other",
        ],
        1,
    );
    assert!(
        err.contains("db1/app/other is not attached to group web"),
        "{err}"
    );
    assert_eq!(dbs(&ctl, "web"), before, "refusals changed nothing");

    let line = ok(
        &ctl,
        &[
            "db",
            "detach",
            "--group",
            "web",
            "--target",
            "db1",
            "--database",
            "app",
            "--user",
            "app",
        ],
    );
    assert!(
        line.starts_with("database allow-list db1/app/app detached from group web"),
        "{line}"
    );
    assert_eq!(dbs(&ctl, "web"), json!([]));
}

const FILE: &str = r#"
[group]
name = "web"
min_size = 0
max_size = 2

[configuration]
name = "web-v1"
command = ["sleep", "infinity"]

[[load_balancer]]
target = "lb1"
backend = "web"
port = 8080

[[db_instance]]
group = "web"
target = "db1"
database = "app"
user = "app"
"#;

fn apply(ctl: &ControllerProc, sb: &Sandbox, name: &str, text: &str) -> Output {
    let path = sb.path().join(name);
    std::fs::write(&path, text).unwrap();
    ctl.ebbctl(&["apply", "-f", &path.display().to_string()])
}

#[test]
fn apply_attaches_both_kinds_once_and_a_bad_file_changes_nothing() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();

    let first = apply(&ctl, &sb, "web.toml", FILE);
    assert!(first.status.success(), "{}", stderr(&first));
    let lines: Vec<String> = stdout(&first).lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            "created group web",
            "created configuration web-v1 in group web",
            "made web-v1 the active configuration of group web",
            "attached load balancer lb1/web to group web: port 8080, weight 1, drain 30s",
            "attached database allow-list db1/app/app to group web: auth method scram-sha-256",
            "enabled group web",
        ]
    );
    let lb = lbs(&ctl, "web");
    assert_eq!(
        lb,
        json!([{
            "target": "lb1", "backend": "web", "port": 8080, "weight": 1,
            "drain_timeout_secs": 30, "target_connected": false, "state": "Attached",
            "error": NOT_CONNECTED,
        }])
    );
    let db = dbs(&ctl, "web");
    assert_eq!(db[0]["auth_method"], "scram-sha-256", "{db}");
    assert_eq!(db.as_array().unwrap().len(), 1, "{db}");

    let again = apply(&ctl, &sb, "web.toml", FILE);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), "no changes");
    assert_eq!((lbs(&ctl, "web"), dbs(&ctl, "web")), (lb, db));

    // A changed field is attached again in place, and only it.
    let changed = FILE.replace("port = 8080", "port = 8081");
    let out = apply(&ctl, &sb, "web.toml", &changed);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "modified load balancer lb1/web in group web: port 8080 → 8081"
    );
    assert_eq!(lbs(&ctl, "web")[0]["port"], 8081);
    assert_eq!(lbs(&ctl, "web").as_array().unwrap().len(), 1);
    let out = apply(&ctl, &sb, "web.toml", &changed);
    assert_eq!(stdout(&out).trim(), "no changes");

    // A bad file is refused whole, naming each bad key; nothing is applied,
    // not even the good change to the group in it.
    let group_before = json_of(&ctl, &["group", "describe", "web"]);
    let (lb_before, db_before) = (lbs(&ctl, "web"), dbs(&ctl, "web"));
    let bad = changed
        .replace("max_size = 2", "max_size = 3")
        .replace("port = 8081", "port = 70000\nweight = 0")
        .replace(
            "user = \"app\"",
            "user = \"app\"\nauth_method = \"trust\\nhost all all 0.0.0.0/0 trust\"",
        );
    let out = apply(&ctl, &sb, "bad.toml", &bad);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    for want in [
        "bad.toml: ",
        "load_balancer[0].port: 70000 is outside 1..=65535",
        "load_balancer[0].weight: 0 is outside 1..=256",
        "db_instance[0].auth_method: `trust\\nhost all all 0.0.0.0/0 trust` is not a pg_hba host method",
    ] {
        assert!(err.contains(want), "{want} not in {err}");
    }
    let typo = changed.replace("port = 8081", "port = 8081\ndrain_timeout = 5");
    let out = apply(&ctl, &sb, "typo.toml", &typo);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("load_balancer[0].drain_timeout: unknown field `drain_timeout`"),
        "{}",
        stderr(&out)
    );
    let other = changed.replace("group = \"web\"", "group = \"api\"");
    let out = apply(&ctl, &sb, "other.toml", &other);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("db_instance[0].group: `api` is not this file's group `web`"),
        "{}",
        stderr(&out)
    );
    // A conflict with what the group has is found before any call.
    let conflict = changed
        .replace("max_size = 2", "max_size = 3")
        .replace("target = \"lb1\"", "target = \"lb2\"");
    let out = apply(&ctl, &sb, "conflict.toml", &conflict);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(
            "load_balancer[0].backend: backend `web` is attached to group web on target `lb1`"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "nothing was done");
    assert_eq!(json_of(&ctl, &["group", "describe", "web"]), group_before);
    assert_eq!((lbs(&ctl, "web"), dbs(&ctl, "web")), (lb_before, db_before));
}

#[test]
fn instance_describe_shows_where_an_instance_stands_on_each_attachment() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let file = FILE.replace("min_size = 0", "min_size = 1");
    let out = apply(&ctl, &sb, "web.toml", &file);
    assert!(out.status.success(), "{}", stderr(&out));

    // Its agent connects, and it waits on targets that are not there.
    let (id, described) = eventually("an instance registering", DEADLINE * 2, || {
        let list = json_of(&ctl, &["instance", "list", "--group", "web"]);
        let id = list.as_array()?.first()?["id"].as_str()?.to_owned();
        let d = json_of(&ctl, &["instance", "describe", &id]);
        (d["attachments"][0]["state"] == "registering").then_some((id, d))
    });
    assert_eq!(described["lifecycle_state"], "Pending", "{described}");
    let a = described["attachments"].as_array().unwrap();
    assert_eq!(a.len(), 2, "{described}");
    assert_eq!(
        (&a[0]["kind"], &a[0]["target"], &a[0]["name"]),
        (&json!("load_balancer"), &json!("lb1"), &json!("web"))
    );
    assert_eq!(
        (
            &a[1]["kind"],
            &a[1]["target"],
            &a[1]["name"],
            &a[1]["state"]
        ),
        (
            &json!("db_instance"),
            &json!("db1"),
            &json!("app/app"),
            &json!("registering")
        )
    );
    for x in a {
        assert!(x["since_ms"].as_i64().is_some_and(|s| s > 0), "{x}");
        let error = x["error"].as_str().unwrap_or_default();
        assert!(error.contains("not connected"), "{x}");
    }
    let text = ok(&ctl, &["instance", "describe", &id]);
    let first: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(first, ["id:", id.as_str()], "{text}");
    assert!(text.contains("\nattachments:\n  KIND "), "{text}");
    let lb_row = text
        .lines()
        .find(|l| l.trim_start().starts_with("load_balancer"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = lb_row.split_whitespace().collect();
    assert_eq!(
        cells[..4],
        ["load_balancer", "lb1", "web", "registering"],
        "{text}"
    );

    // No target confirms: it goes InService at the time-out, and the
    // activity says which did not confirm.
    let described = eventually("the instance InService", Duration::from_secs(180), || {
        let d = json_of(&ctl, &["instance", "describe", &id]);
        (d["lifecycle_state"] == "InService").then_some(d)
    });
    let states: Vec<&str> = described["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(states, ["not registered", "not allowed"], "{described}");
    let activities = json_of(&ctl, &["activity", "list", "--group", "web"]);
    let warning = activities
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["status"] == "Warning")
        .unwrap_or_else(|| panic!("no Warning activity: {activities}"));
    let detail = json_of(
        &ctl,
        &["activity", "describe", warning["id"].as_str().unwrap()],
    );
    assert!(detail.to_string().contains("lb1/web"), "{detail}");

    let err = refused(&ctl, &["instance", "describe", "i-nope"], 1);
    assert!(err.contains("instance `i-nope` does not exist"), "{err}");
}

#[test]
fn a_target_certificate_from_ebbctl_names_the_target_and_is_no_admin() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let dir = sb.path().join("lb1-tls");
    let out = ok(
        &ctl,
        &[
            "cert",
            "issue",
            "--target",
            "lb1",
            "--out-dir",
            &dir.display().to_string(),
        ],
    );
    let cert = std::fs::read_to_string(dir.join("agent.crt")).unwrap();
    let key = std::fs::read_to_string(dir.join("agent.key")).unwrap();
    let info = ebb_certs::describe_pem(&cert).unwrap();
    assert_eq!(
        info.identity.map(|i| i.uri()).as_deref(),
        Some("spiffe://ebb.local/target/lb1")
    );
    assert!(!info.is_ca);
    assert!(ebb_certs::key_matches(&cert, &key).unwrap());
    let mode = std::fs::metadata(dir.join("agent.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read(dir.join("ca.crt")).unwrap(),
        std::fs::read(ctl.pki_dir().join("ca.crt")).unwrap()
    );
    // The agent.toml lines that use them.
    let absolute = std::path::absolute(&dir).unwrap();
    let toml_text = out.split_once("\n\n").map(|(_, t)| t).unwrap_or("");
    assert!(
        toml_text.starts_with("# agent.toml for target lb1\n"),
        "{out}"
    );
    for line in [
        "[tls]".to_owned(),
        format!("ca = \"{}\"", absolute.join("ca.crt").display()),
        format!("cert = \"{}\"", absolute.join("agent.crt").display()),
        format!("key = \"{}\"", absolute.join("agent.key").display()),
        format!("controller = \"{}\"", ctl.grpc),
        "# [target.haproxy]".to_owned(),
    ] {
        assert!(
            toml_text.lines().any(|l| l == line),
            "{line} not in:\n{out}"
        );
    }
    // Issued again only with --force.
    let err = refused(
        &ctl,
        &[
            "cert",
            "issue",
            "--target",
            "lb1",
            "--out-dir",
            &dir.display().to_string(),
        ],
        1,
    );
    assert!(err.contains("already exist; use --force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("agent.crt")).unwrap(),
        cert
    );

    // The registry lists it as a target's.
    let list = json_of(&ctl, &["cert", "list"]);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["identity"] == "spiffe://ebb.local/target/lb1")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(entry["kind"], "target");
    assert_eq!(entry["serial"], info.serial);
    let table = ok(&ctl, &["cert", "list"]);
    let row = table
        .lines()
        .find(|l| l.contains("spiffe://ebb.local/target/lb1"))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(row.split_whitespace().nth(1), Some("target"), "{table}");

    // A bad name is the controller's to refuse; nothing is written.
    let bad_dir = sb.path().join("bad");
    let err = refused(
        &ctl,
        &[
            "cert",
            "issue",
            "--target",
            "lb 1",
            "--out-dir",
            &bad_dir.display().to_string(),
        ],
        1,
    );
    assert!(err.contains("name"), "{err}");
    assert!(!bad_dir.join("agent.key").exists());

    // A target's certificate is no admin's: refused, naming the identity.
    let err = refused(
        &ctl,
        &[
            "--cert",
            &dir.join("agent.crt").display().to_string(),
            "--key",
            &dir.join("agent.key").display().to_string(),
            "group",
            "list",
        ],
        1,
    );
    assert!(
        err.contains(
            "spiffe://ebb.local/target/lb1 is a target agent's certificate; the admin API needs an admin certificate"
        ),
        "{err}"
    );
    let mut as_target = Admin::with_identity(&ctl, &cert, &key);
    let status = ebb_tests::admin_call!(
        as_target,
        describe_scaling_groups,
        ebb_proto::v1::DescribeScalingGroupsRequest::default()
    )
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("spiffe://ebb.local/target/lb1"),
        "{status:?}"
    );
}

#[test]
fn a_join_token_for_a_target_is_created_and_listed_as_the_targets() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let created = json_of(&ctl, &["token", "create", "--target", "lb1", "--uses", "2"]);
    assert_eq!(created["target"], "lb1", "{created}");
    assert_eq!(created["scaling_group_id"], "", "{created}");
    assert_eq!(created["uses_left"], 2, "{created}");
    let token = created["token"].as_str().unwrap();
    let join = created["join_command"].as_str().unwrap();
    assert!(join.contains(&format!("--token {token}")), "{join}");
    let id = created["id"].as_str().unwrap();

    let listed = json_of(&ctl, &["token", "list"]);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(entry["target"], "lb1");
    let table = ok(&ctl, &["token", "list"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..4], ["target", "lb1", "valid"], "{table}");
    let text = ok(&ctl, &["token", "create", "--target", "db1"]);
    assert!(
        text.contains("The host becomes target db1: its agent.toml needs a [target] section"),
        "{text}"
    );

    // A token is for a group or a target; a bad name is the controller's to refuse.
    empty_group(&ctl, "web");
    let err = refused(
        &ctl,
        &["token", "create", "--group", "web", "--target", "lb1"],
        2,
    );
    assert!(err.contains("cannot be used with"), "{err}");
    let err = refused(&ctl, &["token", "create", "--target", "lb 1"], 1);
    assert!(err.contains("target: "), "{err}");
    assert_eq!(
        json_of(&ctl, &["token", "list"]).as_array().unwrap().len(),
        2,
        "the refused ones made no token"
    );
}
