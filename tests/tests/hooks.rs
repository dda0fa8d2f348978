//! Lifecycle hooks, end to end: real agents launched by the process
//! provider run hook scripts on "their" instances; a real HTTP server in the
//! test receives hook webhooks; actions are completed, extended and left to
//! time out through the admin API and `ebbctl`.

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
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "drain", 2, Vec::new());
    all_in_service(&mut admin, "drain", 2);
    // The script waits for a file the test creates: a drain that takes as
    // long as the test says.
    let gate = sb.path().join("drained");
    let script = format!(
        "while [ ! -e {gate}-$EBB_INSTANCE_ID ]; do sleep 0.1; done; echo drained $EBB_INSTANCE_ID for $EBB_LIFECYCLE_HOOK",
        gate = gate.display()
    );
    admin_call!(
        admin,
        create_lifecycle_hook,
        pb::CreateLifecycleHookRequest {
            script: vec!["sh".into(), "-c".into(), script],
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
            ..hook("warm", "warm-cache", "SCALE_OUT")
        }],
    );
    // The webhook names the action; the instance waits in Pending:Wait.
    let told = receiver.wait_for("LIFECYCLE_ACTION");
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
        "--name",
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
