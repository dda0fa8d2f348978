//! The `exec` provider end to end (DESIGN §5): a real controller launches
//! instances through the netns example program (docs/examples/providers/
//! netns.py), each a network namespace on the controller's bridge running
//! the real agent and `ebb-test-web`; small wrappers of it stand for
//! scripts that hang, fail, or are slow to answer.
//!
//! Needs root (as `.ci/run` is), iproute2, util-linux (nsenter) and python3.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ebb_proto::v1 as pb;
use ebb_tests::net::TestNet;
use ebb_tests::{
    Admin, ControllerProc, DEADLINE, Sandbox, WEB_GROUP, activities, admin_call, bin, eventually,
    instances, set_desired, web_get,
};

fn netns_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/examples/providers/netns.py")
        .canonicalize()
        .expect("docs/examples/providers/netns.py")
}

/// `provider.exec_programs` (the last line of a `[provider]` table): the
/// netns example, and the wrappers a test writes in its sandbox.
fn exec_programs(sb: &Sandbox) -> String {
    format!(
        "exec_programs = [\"{}\", \"{}/\"]\n",
        netns_py().display(),
        sb.path().display()
    )
}

/// A controller on a test bridge, and the netns program's state.
struct Exec {
    ctl: ControllerProc,
    admin: Admin,
    sb: Sandbox,
    /// Dropped before the bridge: removes the program's namespaces.
    _namespaces: Namespaces,
    net: TestNet,
}

/// Removes the namespaces netns.py made on `bridge` (`x<bridge>.<id>`),
/// and whatever runs in them, even when a test failed.
struct Namespaces(String);

impl Namespaces {
    fn ids(&self) -> Vec<String> {
        ebb_tests::net::namespaces_named(&format!("x{}.", self.0))
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for id in self.ids() {
            let netns = format!("x{}.{id}", self.0);
            let pids = Command::new("ip")
                .args(["netns", "pids", &netns])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        }
    }
}

impl Exec {
    fn start() -> Self {
        assert!(
            Command::new("python3").arg("-V").output().is_ok(),
            "this test needs python3 (apt-get install python3): the netns example is a python3 program"
        );
        assert!(
            Command::new("nsenter").arg("-V").output().is_ok(),
            "this test needs nsenter (apt-get install util-linux)"
        );
        let net = TestNet::new();
        let sb = Sandbox::new();
        let config = net.provider_config() + &exec_programs(&sb);
        let ctl = ControllerProc::start_with(sb.path(), 1000, &config).unwrap();
        let admin = Admin::local(&ctl);
        Self {
            ctl,
            admin,
            _namespaces: Namespaces(net.bridge.clone()),
            net,
            sb,
        }
    }

    fn state(&self) -> PathBuf {
        self.sb.path().join("netns")
    }

    fn marks(&self) -> PathBuf {
        self.sb.path().to_owned()
    }

    /// A wrapper of netns.py whose `launch` runs `body` (sh) instead.
    fn wrapper(&self, name: &str, body: &str) -> PathBuf {
        let path = self.sb.path().join(name);
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = launch ]; then\n{body}\nfi\nexec \"$NETNS_PY\" \"$@\"\n"
        );
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Creates and enables `web` (max 5) launching through `program`.
    fn group(&mut self, program: &Path, desired: u32, tune: impl FnOnce(&mut pb::ExecSettings)) {
        let mut exec = pb::ExecSettings {
            program: program.display().to_string(),
            env: BTreeMap::from([
                ("NETNS_BRIDGE".into(), self.net.bridge.clone()),
                ("NETNS_STATE".into(), self.state().display().to_string()),
                ("NETNS_AGENT".into(), bin("ebb-agent").display().to_string()),
                ("NETNS_PY".into(), netns_py().display().to_string()),
                ("MARKS".into(), self.marks().display().to_string()),
            ])
            .into_iter()
            .collect(),
            ..Default::default()
        };
        tune(&mut exec);
        admin_call!(
            self.admin,
            create_scaling_group,
            pb::CreateScalingGroupRequest {
                name: WEB_GROUP.into(),
                min_size: 0,
                max_size: 5,
                desired_capacity: Some(desired),
                sampling_interval_secs: Some(1),
                health_check_grace_period_secs: Some(1),
                ..Default::default()
            }
        )
        .expect("create the group");
        admin_call!(
            self.admin,
            create_scaling_configuration,
            pb::CreateScalingConfigurationRequest {
                scaling_group: WEB_GROUP.into(),
                name: "v1".into(),
                instance_type: "exec".into(),
                command: vec![
                    bin("ebb-test-web").display().to_string(),
                    self.sb.path().display().to_string(),
                ],
                exec: Some(exec),
                ..Default::default()
            }
        )
        .expect("create the configuration");
        admin_call!(
            self.admin,
            enable_scaling_group,
            pb::EnableScalingGroupRequest {
                scaling_group: WEB_GROUP.into(),
                ..Default::default()
            }
        )
        .expect("enable the group");
    }

    /// The instance dirs netns.py keeps.
    fn made(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(self.state())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }

    /// Waits until exactly `n` instances are InService with a connected
    /// agent and a provider address; id -> (provider id, address).
    fn serving(&mut self, n: usize) -> BTreeMap<String, (String, Ipv4Addr)> {
        let admin = &mut self.admin;
        eventually(
            &format!("{n} exec instances InService"),
            DEADLINE * 4,
            || {
                let all = instances(admin, WEB_GROUP);
                let ready: BTreeMap<_, _> = all
                    .iter()
                    .filter(|i| i.lifecycle_state == "InService" && i.agent_connected)
                    .filter_map(|i| {
                        Some((
                            i.id.clone(),
                            (i.provider_id.clone(), i.provider_address.parse().ok()?),
                        ))
                    })
                    .collect();
                (all.len() == n && ready.len() == n).then_some(ready)
            },
        )
    }
}

fn gone(pid: &str) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

#[test]
fn a_group_of_exec_instances_scales_out_and_in() {
    let mut t = Exec::start();
    t.group(&netns_py(), 2, |_| {});
    let two = t.serving(2);
    for (id, (provider_id, addr)) in &two {
        assert_eq!(provider_id, &format!("x{}.{id}", t.net.bridge));
        let body = eventually(&format!("{id} to answer on {addr}"), DEADLINE, || {
            web_get(*addr)
        });
        assert_eq!(&body, id, "{addr} is served by its own instance");
    }
    assert_eq!(t.made(), two.keys().cloned().collect::<Vec<_>>());
    assert_eq!(t._namespaces.ids(), t.made());

    set_desired(&mut t.admin, 3);
    let three = t.serving(3);
    assert!(two.keys().all(|id| three.contains_key(id)));
    assert_eq!(t.made().len(), 3);

    set_desired(&mut t.admin, 1);
    let one = t.serving(1);
    eventually(
        "the released instances' namespaces and dirs gone",
        DEADLINE,
        || {
            (t.made() == one.keys().cloned().collect::<Vec<_>>() && t._namespaces.ids() == t.made())
                .then_some(())
        },
    );
    let (id, (_, addr)) = one.iter().next().unwrap();
    assert_eq!(web_get(*addr).as_deref(), Some(id.as_str()));
}

#[test]
fn a_launch_hanging_past_its_timeout_is_killed_with_its_children_and_the_activity_says_so() {
    let mut t = Exec::start();
    let hang = t.wrapper(
        "hang",
        "sleep 1000 &\necho $! >> \"$MARKS/children\"\necho 'waiting for the cloud' >&2\nsleep 1000",
    );
    t.group(&hang, 1, |e| {
        e.launch_timeout_ms = Some(2000);
        e.attempts = Some(1);
    });
    let admin = &mut t.admin;
    let error = eventually("an activity reporting the time-out", DEADLINE * 2, || {
        activities(admin, WEB_GROUP)
            .into_iter()
            .map(|a| a.error)
            .find(|e| e.contains("timed out"))
    });
    assert!(
        error.contains("launch of ") && error.contains("timed out after 2000 ms and was killed"),
        "{error}"
    );
    assert!(
        error.contains("waiting for the cloud"),
        "the script's stderr: {error}"
    );
    // The child the script started went with it: its whole group was killed.
    let children = fs::read_to_string(t.marks().join("children")).unwrap();
    let first = children.lines().next().unwrap().to_owned();
    eventually("the hanging script's child gone", DEADLINE, || {
        gone(&first).then_some(())
    });
    set_desired(&mut t.admin, 0);
}

#[test]
fn a_launch_failing_twice_then_succeeding_makes_exactly_one_instance() {
    let mut t = Exec::start();
    // The first two attempts make their namespace, then fail.
    let flaky = t.wrapper(
        "flaky",
        "echo x >> \"$MARKS/runs\"\nif [ $(wc -l < \"$MARKS/runs\") -le 2 ]; then\n\"$NETNS_PY\" launch >/dev/null\necho 'quota exceeded, try again' >&2\nexit 1\nfi",
    );
    t.group(&flaky, 1, |e| e.attempts = Some(3));
    let one = t.serving(1);
    let runs = fs::read_to_string(t.marks().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 3, "three attempts");
    assert_eq!(t.made(), one.keys().cloned().collect::<Vec<_>>());
    assert_eq!(t._namespaces.ids(), t.made(), "one namespace");
    let admin = &mut t.admin;
    let launched: Vec<String> = activities(admin, WEB_GROUP)
        .into_iter()
        .flat_map(|a| a.created_instances)
        .collect();
    assert_eq!(launched, one.keys().cloned().collect::<Vec<_>>());
}

#[test]
fn a_controller_killed_between_launch_and_its_record_converges_without_a_duplicate() {
    let mut t = Exec::start();
    // The instance is made, then the script takes its time to answer.
    let slow = t.wrapper(
        "slow",
        "\"$NETNS_PY\" launch > \"$MARKS/answer\" || exit 1\necho \"$EBB_INSTANCE_ID\" > \"$MARKS/made\"\nsleep 3\ncat \"$MARKS/answer\"\nexit 0",
    );
    t.group(&slow, 1, |_| {});
    let made = t.marks().join("made");
    let id = eventually("the script to have made the instance", DEADLINE * 2, || {
        fs::read_to_string(&made).ok()
    });
    let id = id.trim().to_owned();
    t.ctl.proc.signal("KILL");
    t.ctl.proc.wait_exit(DEADLINE);
    let (grpc, http) = (t.ctl.grpc, t.ctl.http);
    let config = t.net.provider_config() + &exec_programs(&t.sb);
    t.ctl = ControllerProc::start_configured(t.sb.path(), 1000, grpc, http, &config).unwrap();
    t.admin = Admin::local(&t.ctl);
    let one = t.serving(1);
    assert_eq!(one.keys().collect::<Vec<_>>(), [&id], "the same instance");
    t.ctl.wait_passes("ebb_reconcile_passes_total", 5);
    assert_eq!(
        t.made(),
        std::slice::from_ref(&id),
        "no second instance was made"
    );
    assert_eq!(t._namespaces.ids(), [id]);
}

/// A configuration whose program this host cannot run is refused when it
/// is made, naming the key (no root needed).
#[test]
fn an_exec_configuration_whose_program_cannot_run_is_refused_naming_the_key() {
    let sb = Sandbox::new();
    let config = format!("[provider]\n{}", exec_programs(&sb));
    let ctl = ControllerProc::start_with(sb.path(), 1000, &config).unwrap();
    let mut admin = Admin::local(&ctl);
    admin_call!(
        admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: WEB_GROUP.into(),
            min_size: 0,
            max_size: 1,
            ..Default::default()
        }
    )
    .expect("create the group");
    let create = |admin: &mut Admin, program: &str| {
        admin_call!(
            *admin,
            create_scaling_configuration,
            pb::CreateScalingConfigurationRequest {
                scaling_group: WEB_GROUP.into(),
                name: "v1".into(),
                instance_type: "exec".into(),
                exec: Some(pb::ExecSettings {
                    program: program.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        )
    };
    let missing = sb.path().join("no-such-program");
    let err = create(&mut admin, &missing.display().to_string()).unwrap_err();
    assert!(
        err.message().contains("exec.program")
            && err.message().contains("cannot be run on this host"),
        "{err:?}"
    );
    let not_executable = sb.path().join("not-executable");
    fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let err = create(&mut admin, &not_executable.display().to_string()).unwrap_err();
    assert!(
        err.message().contains("exec.program") && err.message().contains("chmod +x"),
        "{err:?}"
    );
    // Only the programs controller.toml lists: /bin/sh is executable, but
    // an admin may not pick it.
    let err = create(&mut admin, "/bin/sh").unwrap_err();
    assert!(
        err.message().contains(
            "exec.program: /bin/sh is not among this controller's provider.exec_programs"
        ),
        "{err:?}"
    );
    create(&mut admin, &netns_py().display().to_string()).expect("an executable program");
}
