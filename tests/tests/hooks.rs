//! Lifecycle hooks, end to end: real agents launched by the process
//! provider run hook scripts on "their" instances when their config allows
//! it, from their hooks directory only; a real HTTP server in the test
//! receives hook webhooks; actions are completed, extended and left to time
//! out through the admin API and `ebbctl`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ebb_proto::v1 as pb;
use ebb_tests::{
    Admin, ControllerProc, DEADLINE, Sandbox, WebhookReceiver, activities, admin_call, eventually,
    instances,
};

/// A group of `desired` instances (max 3) running `sleep infinity`, 1 s
/// sampling; `hooks` are created before the group is enabled, so even the
/// first launches go through them.
fn group(admin: &mut Admin, name: &str, desired: u32, hooks: Vec<pb::CreateLifecycleHookRequest>) {
    admin_call!(
        *admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: name.into(),
            min_size: 0,
            max_size: 3,
            desired_capacity: Some(desired),
            sampling_interval_secs: Some(1),
            health_check_grace_period_secs: Some(1),
            ..Default::default()
        }
    )
    .unwrap();
    admin_call!(
        *admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: name.into(),
            name: "v1".into(),
            command: vec!["sleep".into(), "infinity".into()],
            ..Default::default()
        }
    )
    .unwrap();
    for hook in hooks {
        admin_call!(*admin, create_lifecycle_hook, hook).unwrap();
    }
    admin_call!(
        *admin,
        enable_scaling_group,
        pb::EnableScalingGroupRequest {
            scaling_group: name.into(),
            ..Default::default()
        }
    )
    .unwrap();
}

fn set_desired(admin: &mut Admin, group: &str, n: u32) {
    admin_call!(
        *admin,
        modify_scaling_group,
        pb::ModifyScalingGroupRequest {
            scaling_group: group.into(),
            desired_capacity: Some(n),
            ..Default::default()
        }
    )
    .unwrap();
}

fn actions(admin: &mut Admin, group: &str) -> Vec<pb::LifecycleAction> {
    admin_call!(
        *admin,
        describe_lifecycle_actions,
        pb::DescribeLifecycleActionsRequest {
            scaling_group: group.into(),
            ..Default::default()
        }
    )
    .unwrap()
    .lifecycle_actions
}

fn in_state(admin: &mut Admin, group: &str, state: &str) -> Vec<pb::Instance> {
    instances(admin, group)
        .into_iter()
        .filter(|i| i.lifecycle_state == state)
        .collect()
}

fn all_in_service(admin: &mut Admin, group: &str, n: usize) -> Vec<pb::Instance> {
    eventually(&format!("{n} instances in service"), DEADLINE * 2, || {
        let list = instances(admin, group);
        (list.len() == n
            && list
                .iter()
                .all(|i| i.lifecycle_state == "InService" && i.agent_connected))
        .then_some(list)
    })
}

/// `<sandbox>/hooks.d` holding `scripts` (name, body after `#!/bin/sh`),
/// each 0755 as an operator would install them.
fn hooks_dir(sandbox: &Path, scripts: &[(&str, &str)]) -> PathBuf {
    let dir = sandbox.join("hooks.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, body) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// A controller whose launched agents run hook scripts from `dir`.
fn controller_allowing_scripts(sandbox: &Path, dir: &Path) -> ControllerProc {
    ControllerProc::start_with(
        sandbox,
        1000,
        &format!(
            "[provider]\nallow_hook_scripts = true\nhooks_dir = \"{}\"\n",
            dir.display()
        ),
    )
    .unwrap()
}

/// A lifecycle hook's webhook secret (16 to 256 bytes).
const HOOK_SECRET: &str = "a-hook-secret-of-32-bytes-length";

fn hook(group: &str, name: &str, transition: &str) -> pb::CreateLifecycleHookRequest {
    pb::CreateLifecycleHookRequest {
        scaling_group: group.into(),
        name: name.into(),
        transition: transition.into(),
        ..Default::default()
    }
}

#[test]
fn a_scale_in_hook_holds_the_instance_until_its_script_finishes() {
    let sb = Sandbox::new();
    // The script waits for a file the test creates: a drain that takes as
    // long as the test says.
    let dir = hooks_dir(
        sb.path(),
        &[(
            "drain",
            "while [ ! -e \"$1-$EBB_INSTANCE_ID\" ]; do sleep 0.1; done\necho drained $EBB_INSTANCE_ID for $EBB_LIFECYCLE_HOOK",
        )],
    );
    let ctl = controller_allowing_scripts(sb.path(), &dir);
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "drain", 2, Vec::new());
    all_in_service(&mut admin, "drain", 2);
    let gate = sb.path().join("drained");
    admin_call!(
        admin,
        create_lifecycle_hook,
        pb::CreateLifecycleHookRequest {
            script: vec!["drain".into(), gate.display().to_string()],
            ..hook("drain", "drain-connections", "SCALE_IN")
        }
    )
    .unwrap();

    set_desired(&mut admin, "drain", 1);
    let leaving = eventually("an instance in Removing:Wait", DEADLINE, || {
        in_state(&mut admin, "drain", "Removing:Wait").pop()
    });
    let waiting = actions(&mut admin, "drain");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(
        (
            waiting[0].instance_id.as_str(),
            waiting[0].hook_name.as_str(),
            waiting[0].result.as_str()
        ),
        (leaving.id.as_str(), "drain-connections", "")
    );
    // Held: while the script runs, the instance and its agent stay, pass
    // after pass.
    ctl.wait_passes("ebb_reconcile_passes_total", 3);
    let still = instances(&mut admin, "drain");
    let held = still
        .iter()
        .find(|i| i.id == leaving.id)
        .expect("still there");
    assert_eq!(held.lifecycle_state, "Removing:Wait");
    assert!(
        held.agent_connected,
        "its agent keeps reporting while it drains"
    );
    let running = activities(&mut admin, "drain");
    assert_eq!(running[0].status, "InProgress", "{:?}", running[0]);

    std::fs::write(format!("{}-{}", gate.display(), leaving.id), "").unwrap();
    eventually("the drained instance removed", DEADLINE, || {
        let list = instances(&mut admin, "drain");
        (list.len() == 1 && list.iter().all(|i| i.id != leaving.id)).then_some(())
    });
    let done = eventually("the scale-in activity finished", DEADLINE, || {
        activities(&mut admin, "drain")
            .into_iter()
            .find(|a| a.status != "InProgress" && a.capacity_to == 1)
    });
    assert_eq!(done.status, "Successful", "{done:?}");
    let details = done.details.join("\n");
    assert!(
        details.contains(&format!(
            "lifecycle hook drain-connections on {}: the script exited 0",
            leaving.id
        )) && details.contains(&format!("drained {} for drain-connections", leaving.id)),
        "{details}"
    );
}

#[test]
fn a_heartbeat_extends_a_hook_that_is_then_completed_through_ebbctl() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    let receiver = WebhookReceiver::start();
    group(
        &mut admin,
        "warm",
        1,
        vec![pb::CreateLifecycleHookRequest {
            heartbeat_timeout_secs: Some(30),
            default_result: "ABANDON".into(),
            notification_url: receiver.url.clone(),
            secret: HOOK_SECRET.into(),
            ..hook("warm", "warm-cache", "SCALE_OUT")
        }],
    );
    // The webhook names the action, signed with the hook's secret; the
    // instance waits in Pending:Wait.
    let post = receiver.wait_post("LIFECYCLE_ACTION");
    assert!(post.signed_with(HOOK_SECRET), "{:?}", post.headers);
    assert!(!post.signed_with("not-the-hooks-secret-at-all"));
    assert_eq!(post.headers["x-ebb-event"], "LIFECYCLE_ACTION");
    let told = post.body;
    // Listed as signed; the secret itself is never shown.
    let listed = ctl.ebbctl_ok(&["-o", "json", "hook", "list", "--group", "warm"]);
    let hooks: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(hooks[0]["signed"], true);
    assert!(!listed.contains(HOOK_SECRET));
    // ebbctl reads a hook's secret from a file, and the controller checks it.
    let short = sb.path().join("short.secret");
    std::fs::write(&short, "too-short\n").unwrap();
    let refused = ctl.ebbctl(&[
        "hook",
        "create",
        "drain",
        "--group",
        "warm",
        "--transition",
        "SCALE_IN",
        "--webhook",
        &receiver.url,
        "--secret-file",
        short.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("secret: is 9 bytes; give 16 to 256"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let token = told["lifecycle_action_token"].as_str().unwrap().to_owned();
    let id = told["instance_id"].as_str().unwrap().to_owned();
    assert_eq!(told["lifecycle_transition"], "SCALE_OUT");
    assert_eq!(told["lifecycle_hook_name"], "warm-cache");
    assert_eq!(told["default_result"], "ABANDON");
    let first = actions(&mut admin, "warm");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].lifecycle_action_token, token);
    let started = first[0].started_at_ms;
    assert_eq!(first[0].deadline_ms, started + 30_000);
    assert_eq!(in_state(&mut admin, "warm", "Pending:Wait")[0].id, id);

    // A heartbeat restarts the 30 s timeout from now (the timing itself,
    // on a hand-driven clock: `a_heartbeat_restarts_the_timeout` in ebb-core).
    let beat = ctl.ebbctl(&[
        "-o",
        "json",
        "hook",
        "heartbeat",
        "--instance",
        &id,
        "--hook",
        "warm-cache",
    ]);
    assert!(
        beat.status.success(),
        "{}",
        String::from_utf8_lossy(&beat.stderr)
    );
    let extended: serde_json::Value = serde_json::from_slice(&beat.stdout).unwrap();
    let deadline = extended["deadline_ms"].as_i64().unwrap();
    assert!(
        deadline > started + 30_000,
        "deadline {deadline} vs start {started}: the heartbeat did not move it"
    );
    let waiting = in_state(&mut admin, "warm", "Pending:Wait");
    assert_eq!(waiting.len(), 1, "still waiting after the heartbeat");
    assert_eq!(waiting[0].id, id);
    assert_eq!(actions(&mut admin, "warm")[0].deadline_ms, deadline);

    let done = ctl.ebbctl(&[
        "hook", "complete", "--token", &token, "--result", "CONTINUE",
    ]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        String::from_utf8_lossy(&done.stdout)
            .contains("CONTINUE (completed through the API: CONTINUE)"),
        "{}",
        String::from_utf8_lossy(&done.stdout)
    );
    let now = all_in_service(&mut admin, "warm", 1);
    assert_eq!(now[0].id, id, "the same instance went into service");
    assert!(actions(&mut admin, "warm").is_empty());
    // Completing it again is refused: nothing waits on that token any more.
    let again = ctl.ebbctl(&["hook", "complete", "--token", &token, "--result", "ABANDON"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(&format!(
            "no instance is waiting on lifecycle action `{token}`"
        )),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn a_timed_out_hook_takes_its_default_result() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    group(
        &mut admin,
        "gate",
        1,
        vec![pb::CreateLifecycleHookRequest {
            heartbeat_timeout_secs: Some(30),
            default_result: "ABANDON".into(),
            ..hook("gate", "register", "SCALE_OUT")
        }],
    );
    let first = eventually("an instance in Pending:Wait", DEADLINE, || {
        in_state(&mut admin, "gate", "Pending:Wait").pop()
    });

    // While it waits: bad requests are refused with every field named, and
    // nothing stored changes.
    let bad = admin_call!(
        admin,
        create_lifecycle_hook,
        pb::CreateLifecycleHookRequest {
            heartbeat_timeout_secs: Some(5),
            default_result: "MAYBE".into(),
            notification_url: "ftp://x".into(),
            secret: "short".into(),
            ..hook("gate", "register", "SCALE_UP")
        }
    )
    .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    for field in [
        "name: the group already has a hook named `register`",
        "transition: unknown value `SCALE_UP`",
        "heartbeat_timeout_secs: must be 30 to 21600 seconds, got 5",
        "default_result: unknown value `MAYBE`",
        "notification_url:",
        "secret: is 5 bytes; give 16 to 256",
    ] {
        assert!(
            bad.message().contains(field),
            "{field} in {}",
            bad.message()
        );
    }
    let wrong = admin_call!(
        admin,
        complete_lifecycle_action,
        pb::CompleteLifecycleActionRequest {
            action: Some(pb::LifecycleActionRef {
                instance_id: first.id.clone(),
                hook: "register".into(),
                ..Default::default()
            }),
            result: "LATER".into(),
        }
    )
    .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
    assert!(
        wrong.message().contains("result: unknown value `LATER`"),
        "{}",
        wrong.message()
    );
    let unnamed = admin_call!(
        admin,
        record_lifecycle_action_heartbeat,
        pb::LifecycleActionRef::default()
    )
    .unwrap_err();
    assert!(
        unnamed
            .message()
            .contains("lifecycle_action_token: is required unless instance_id and hook are given"),
        "{}",
        unnamed.message()
    );
    let usage = ctl.ebbctl(&[
        "hook",
        "create",
        "--group",
        "gate",
        "x1",
        "--transition",
        "SCALE_UP",
    ]);
    assert_eq!(
        usage.status.code(),
        Some(2),
        "clap refuses an unknown transition"
    );
    let hooks = admin_call!(
        admin,
        describe_lifecycle_hooks,
        pb::DescribeLifecycleHooksRequest {
            scaling_group: "gate".into()
        }
    )
    .unwrap()
    .lifecycle_hooks;
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        (
            hooks[0].heartbeat_timeout_secs,
            hooks[0].default_result.as_str()
        ),
        (30, "ABANDON")
    );

    // Nobody completes it: after 30 s ABANDON applies and the instance is
    // released; the activity says why.
    eventually("the waiting instance abandoned", DEADLINE * 2, || {
        (!instances(&mut admin, "gate")
            .iter()
            .any(|i| i.id == first.id))
        .then_some(())
    });
    assert!(
        !ctl.instance_processes()
            .iter()
            .any(|p| p.contains(&first.id)),
        "the abandoned instance's processes are gone"
    );
    let why = activities(&mut admin, "gate")
        .into_iter()
        .flat_map(|a| a.details)
        .find(|d| d.contains(&first.id) && d.contains("heartbeat timeout"))
        .expect("an activity detail naming the timeout");
    assert!(
        why.contains("lifecycle hook register: no completion within the heartbeat timeout of 30 s; default result ABANDON"),
        "{why}"
    );
}

/// Scales "refuse" (2 instances, a SCALE_IN hook running `script`) in to 1
/// and returns the leaving instance and what `ebbctl hook actions` shows
/// for it once its agent has answered.
fn a_refused_scale_in(ctl: &ControllerProc, script: Vec<String>) -> (pb::Instance, String) {
    let mut admin = Admin::local(ctl);
    group(&mut admin, "refuse", 2, Vec::new());
    all_in_service(&mut admin, "refuse", 2);
    admin_call!(
        admin,
        create_lifecycle_hook,
        pb::CreateLifecycleHookRequest {
            script,
            heartbeat_timeout_secs: Some(3600),
            ..hook("refuse", "drain", "SCALE_IN")
        }
    )
    .unwrap();
    set_desired(&mut admin, "refuse", 1);
    let leaving = eventually("an instance in Removing:Wait", DEADLINE, || {
        in_state(&mut admin, "refuse", "Removing:Wait").pop()
    });
    let shown = eventually("the refusal in `ebbctl hook actions`", DEADLINE, || {
        let out = ctl.ebbctl(&["hook", "actions", "--group", "refuse"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("the agent refused the script")
            .then_some(text)
    });
    // Refused is not failed: the action still waits (for the API or its
    // timeout), as it would for a hook without a script.
    let waiting = actions(&mut admin, "refuse");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].result, "", "{waiting:?}");
    assert_eq!(
        in_state(&mut admin, "refuse", "Removing:Wait")[0].id,
        leaving.id
    );
    (leaving, shown)
}

#[test]
fn a_script_outside_the_hooks_directory_is_refused_with_its_reason_shown() {
    let sb = Sandbox::new();
    let dir = hooks_dir(sb.path(), &[("drain", "exit 0")]);
    let ctl = controller_allowing_scripts(sb.path(), &dir);
    let marker = sb.path().join("ran");
    let (leaving, shown) = a_refused_scale_in(
        &ctl,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("touch {}", marker.display()),
        ],
    );
    assert!(
        shown.contains(&format!("{} waits on drain (SCALE_IN)", leaving.id))
            && shown.contains(&format!(
                "the agent refused the script: `/bin/sh` is not inside the hooks directory {}",
                dir.display()
            )),
        "{shown}"
    );
    assert!(!marker.exists(), "the refused script ran");
    let log = std::fs::read_to_string(
        ctl.dir
            .join(format!("ebb-data/instances/{}/agent.log", leaving.id)),
    )
    .unwrap();
    assert!(log.contains("lifecycle hook script refused"), "{log}");

    // The operator decides: completing the action lets the instance go.
    let done = ctl.ebbctl(&[
        "hook",
        "complete",
        "--instance",
        &leaving.id,
        "--hook",
        "drain",
        "--result",
        "CONTINUE",
    ]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let mut admin = Admin::local(&ctl);
    eventually("the leaving instance removed", DEADLINE, || {
        let list = instances(&mut admin, "refuse");
        (list.len() == 1 && list.iter().all(|i| i.id != leaving.id)).then_some(())
    });
    assert!(!marker.exists(), "the refused script ran");
}

#[test]
fn the_default_agent_config_refuses_every_script() {
    let sb = Sandbox::new();
    // A script that would run anywhere, and is even in a hooks directory:
    // the launched agents were not told they may run scripts.
    let dir = hooks_dir(sb.path(), &[("drain", "exit 0")]);
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let (_, shown) = a_refused_scale_in(&ctl, vec![dir.join("drain").display().to_string()]);
    assert!(
        shown.contains(
            "the agent refused the script: hook scripts are disabled in agent.toml ([hooks] allow_scripts = false)"
        ),
        "{shown}"
    );
}
