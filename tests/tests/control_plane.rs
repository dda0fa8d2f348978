//! The control plane, end to end: real controller, real agents launched by
//! the process provider, the admin API over mTLS.

use ebb_proto::v1 as pb;
use ebb_tests::{
    Admin, ControllerProc, DEADLINE, Sandbox, activities, admin_call, eventually, instances,
};
use tonic_types::StatusExt;

const INTERVAL_MS: u64 = 1000;

fn create_group(admin: &mut Admin, name: &str, min: u32, max: u32) -> pb::ScalingGroup {
    let group = admin_call!(
        *admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: name.into(),
            min_size: min,
            max_size: max,
            sampling_interval_secs: Some(1),
            removal_policies: vec!["NewestInstance".into()],
            ..Default::default()
        }
    )
    .expect("create group");
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
    .expect("create configuration");
    group
}

fn enable(admin: &mut Admin, name: &str) {
    admin_call!(
        *admin,
        enable_scaling_group,
        pb::EnableScalingGroupRequest {
            scaling_group: name.into(),
            ..Default::default()
        }
    )
    .expect("enable");
}

/// Waits until the group has exactly `n` instances, all InService with a
/// connected agent, and no activity still running.
fn wait_in_service(admin: &mut Admin, group: &str, n: usize) -> Vec<pb::Instance> {
    eventually(
        &format!("{n} InService instances in {group}"),
        DEADLINE * 2,
        || {
            let list = instances(admin, group);
            let ready = list.len() == n
                && list
                    .iter()
                    .all(|i| i.lifecycle_state == "InService" && i.agent_connected);
            let idle = activities(admin, group)
                .iter()
                .all(|a| a.status != "InProgress");
            (ready && idle).then_some(list)
        },
    )
}

fn modify(
    admin: &mut Admin,
    req: pb::ModifyScalingGroupRequest,
) -> Result<pb::ScalingGroup, tonic::Status> {
    admin_call!(*admin, modify_scaling_group, req)
}

#[test]
fn a_group_launches_scales_and_is_disabled() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    create_group(&mut admin, "web", 2, 6);
    enable(&mut admin, "web");
    let two = wait_in_service(&mut admin, "web", 2);
    assert!(two.iter().all(|i| i.creation_type == "AutoCreated"));
    // Real agents report real numbers.
    eventually("CPU from both agents", DEADLINE, || {
        let list = instances(&mut admin, "web");
        list.iter()
            .all(|i| i.cpu_utilization.is_some())
            .then_some(())
    });

    modify(
        &mut admin,
        pb::ModifyScalingGroupRequest {
            scaling_group: "web".into(),
            desired_capacity: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    let four = wait_in_service(&mut admin, "web", 4);
    assert_eq!(
        ctl.instance_processes().len(),
        4 * 2,
        "an agent and a workload each:\n{:?}\n{}",
        ctl.instance_processes(),
        ctl.proc.log_text()
    );

    // Lower max to 1 (and min with it): NewestInstance keeps the oldest.
    let oldest = four
        .iter()
        .min_by_key(|i| (i.created_at_ms, i.id.clone()))
        .unwrap()
        .id
        .clone();
    modify(
        &mut admin,
        pb::ModifyScalingGroupRequest {
            scaling_group: "web".into(),
            min_size: Some(1),
            max_size: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let one = wait_in_service(&mut admin, "web", 1);
    let first_launched: Vec<_> = four
        .iter()
        .filter(|i| i.created_at_ms == four.iter().map(|i| i.created_at_ms).min().unwrap())
        .map(|i| i.id.clone())
        .collect();
    assert!(
        first_launched.contains(&one[0].id),
        "kept {} but the first launched were {first_launched:?} (oldest by id {oldest})",
        one[0].id
    );
    eventually("released processes to exit", DEADLINE, || {
        (ctl.instance_processes().len() == 2).then_some(())
    });

    let acts = activities(&mut admin, "web");
    let statuses: Vec<_> = acts
        .iter()
        .map(|a| (a.capacity_from, a.capacity_to, a.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            (4, 1, "Successful"),
            (2, 4, "Successful"),
            (0, 2, "Successful")
        ],
        "{acts:#?}"
    );
    assert!(
        acts[0]
            .cause
            .contains("changing the Total Capacity from 4 to 1"),
        "{}",
        acts[0].cause
    );
    assert_eq!(acts[0].trigger, "bounds");
    assert_eq!(acts[1].trigger, "api");

    admin_call!(
        admin,
        disable_scaling_group,
        pb::DisableScalingGroupRequest {
            scaling_group: "web".into()
        }
    )
    .unwrap();
    let err = modify(
        &mut admin,
        pb::ModifyScalingGroupRequest {
            scaling_group: "web".into(),
            max_size: Some(3),
            desired_capacity: Some(3),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("is not active"), "{}", err.message());
    let acts = activities(&mut admin, "web");
    assert_eq!(acts[0].status, "Rejected");
    assert!(acts[0].error.contains("not active"), "{:?}", acts[0]);
    assert_eq!(instances(&mut admin, "web").len(), 1);
}

#[test]
fn bad_input_is_rejected_field_by_field_and_nothing_changes() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    create_group(&mut admin, "api", 0, 3);
    let before = admin_call!(
        admin,
        describe_scaling_groups,
        pb::DescribeScalingGroupsRequest::default()
    )
    .unwrap();

    let err = admin_call!(
        admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: "x".into(),
            min_size: 5,
            max_size: 2,
            default_cooldown_secs: Some(90_000),
            removal_policies: vec![
                "Random".into(),
                "OldestInstance".into(),
                "NewestInstance".into()
            ],
            ..Default::default()
        }
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for field in [
        "name:",
        "min_size: 5 is greater than max_size 2",
        "default_cooldown_secs:",
        "removal_policies[0]:",
        "removal_policies: at most two",
    ] {
        assert!(
            err.message().contains(field),
            "missing `{field}` in {}",
            err.message()
        );
    }
    // The same fields as a google.rpc.BadRequest, for programs: one
    // violation per bad field, and the text is those violations, in order.
    let details = err.get_error_details();
    let violations = &details
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations;
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "removal_policies[0]",
            "removal_policies",
            "name",
            "min_size",
            "default_cooldown_secs"
        ]
    );
    let text: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect();
    assert_eq!(err.message(), text.join("; "));
    let dup = admin_call!(
        admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: "api".into(),
            min_size: 0,
            max_size: 1,
            ..Default::default()
        }
    )
    .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    assert!(
        dup.message().contains("`api` already exists"),
        "{}",
        dup.message()
    );
    let err = modify(
        &mut admin,
        pb::ModifyScalingGroupRequest {
            scaling_group: "api".into(),
            desired_capacity: Some(9),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        err.message()
            .contains("desired_capacity: 9 is outside [min_size, max_size] = [0, 3]"),
        "{}",
        err.message()
    );
    let err = modify(
        &mut admin,
        pb::ModifyScalingGroupRequest {
            scaling_group: "nope".into(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = admin_call!(
        admin,
        delete_scaling_group,
        pb::DeleteScalingGroupRequest {
            scaling_group: String::new(),
            force: false
        }
    )
    .unwrap_err();
    assert!(
        err.message().contains("scaling_group: is required"),
        "{}",
        err.message()
    );
    let err = admin_call!(
        admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: "api".into(),
            name: "v2".into(),
            command: vec![String::new()],
            env: [("EBB_X".to_string(), "1".to_string())].into(),
            ..Default::default()
        }
    )
    .unwrap_err();
    assert!(
        err.message().contains("command[0]: must name a program"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("env.EBB_X"), "{}", err.message());

    let after = admin_call!(
        admin,
        describe_scaling_groups,
        pb::DescribeScalingGroupsRequest::default()
    )
    .unwrap();
    assert_eq!(before, after, "a rejected request changed stored state");
    let configs = admin_call!(
        admin,
        describe_scaling_configurations,
        pb::DescribeScalingConfigurationsRequest {
            scaling_group: "api".into(),
            ..Default::default()
        }
    )
    .unwrap();
    assert_eq!(configs.scaling_configurations.len(), 1);
}

#[test]
fn an_agent_certificate_cannot_call_the_admin_api() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), INTERVAL_MS).unwrap();
    let agent = ctl
        .ca()
        .issue_agent("sneaky", ebb_certs::AGENT_VALIDITY)
        .unwrap();
    let mut admin = Admin::with_identity(&ctl, &agent.cert_pem, &agent.key_pem);
    let err = admin_call!(
        admin,
        describe_scaling_groups,
        pb::DescribeScalingGroupsRequest::default()
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("is an agent certificate"),
        "{}",
        err.message()
    );
    eventually("the refusal in the log", DEADLINE, || {
        ctl.proc
            .log_text()
            .contains("refused admin call")
            .then_some(())
    });
}

#[test]
fn a_killed_instance_is_noticed_and_replaced() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    create_group(&mut admin, "jobs", 2, 3);
    enable(&mut admin, "jobs");
    let before = wait_in_service(&mut admin, "jobs", 2);
    let victim = &before[0].id;
    let status = std::process::Command::new("pkill")
        .args(["-KILL", "-f", &format!("instances/{victim}/")])
        .status()
        .unwrap();
    assert!(status.success());
    let after = eventually("a replacement", DEADLINE * 2, || {
        let list = wait_in_service(&mut admin, "jobs", 2);
        (!list.iter().any(|i| &i.id == victim)).then_some(list)
    });
    assert_eq!(after.len(), 2);
    let acts = activities(&mut admin, "jobs");
    let heal = acts
        .iter()
        .find(|a| a.cause.contains(victim.as_str()))
        .expect("an activity naming the vanished instance");
    assert_eq!(heal.trigger, "health");
    assert_eq!(heal.status, "Successful");
    eventually("only live instances' processes", DEADLINE, || {
        (ctl.instance_processes().len() == 4).then_some(())
    });
}

#[test]
fn a_controller_killed_mid_scale_out_converges_after_restart() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    create_group(&mut admin, "burst", 0, 8);
    enable(&mut admin, "burst");
    modify(
        &mut admin,
        pb::ModifyScalingGroupRequest {
            scaling_group: "burst".into(),
            desired_capacity: Some(6),
            ..Default::default()
        },
    )
    .unwrap();
    // Kill it as soon as the first instance exists: the rest are mid-flight.
    eventually("the first launch", DEADLINE, || {
        (!ctl.instance_processes().is_empty()).then_some(())
    });
    drop(admin);
    let (grpc, http) = ctl.kill();
    let ctl = ControllerProc::start_on(sb.path(), INTERVAL_MS, grpc, http).unwrap();
    let mut admin = Admin::local(&ctl);
    let list = wait_in_service(&mut admin, "burst", 6);
    let mut ids: Vec<_> = list.iter().map(|i| i.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    // One agent and one workload per stored instance: no orphans, no duplicates.
    eventually("exactly the stored instances' processes", DEADLINE, || {
        let procs = ctl.instance_processes();
        let ok = procs.len() == 12
            && ids.iter().all(|id| {
                procs
                    .iter()
                    .filter(|p| p.contains(&format!("instances/{id}/")))
                    .count()
                    == 2
            });
        ok.then_some(())
    });
    let acts = activities(&mut admin, "burst");
    assert!(acts.iter().all(|a| a.status != "InProgress"), "{acts:#?}");
    assert!(
        acts.iter()
            .any(|a| a.capacity_to == 6 && a.status == "Successful"),
        "{acts:#?}"
    );
}

#[test]
fn instance_operations_refuse_bad_input() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    create_group(&mut admin, "ops", 1, 2);
    // Attaching to a group that is not enabled.
    let err = admin_call!(
        admin,
        attach_instances,
        pb::AttachInstancesRequest {
            client_token: String::new(),
            scaling_group: "ops".into(),
            instance_ids: vec!["host-1".into()]
        }
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("is not active"), "{}", err.message());
    enable(&mut admin, "ops");
    let one = wait_in_service(&mut admin, "ops", 1);
    let err = admin_call!(
        admin,
        attach_instances,
        pb::AttachInstancesRequest {
            client_token: String::new(),
            scaling_group: "ops".into(),
            instance_ids: vec![
                "bad id".into(),
                one[0].id.clone(),
                "h-2".into(),
                "h-2".into()
            ],
        }
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for needle in [
        "instance_ids[0]:",
        "instance_ids[1]: `",
        "already belongs",
        "instance_ids[3]: `h-2` is listed twice",
    ] {
        assert!(
            err.message().contains(needle),
            "missing `{needle}` in {}",
            err.message()
        );
    }
    // More than one call may name (each is a write of its one commit).
    let many: Vec<String> = (0..101).map(|i| format!("h-{i}")).collect();
    let err = admin_call!(
        admin,
        attach_instances,
        pb::AttachInstancesRequest {
            client_token: String::new(),
            scaling_group: "ops".into(),
            instance_ids: many.clone(),
        }
    )
    .unwrap_err();
    assert_eq!(
        err.message(),
        "instance_ids: lists 101 instances; at most 100 per call"
    );
    let err = admin_call!(
        admin,
        remove_instances,
        pb::RemoveInstancesRequest {
            scaling_group: "ops".into(),
            instance_ids: many,
            ..Default::default()
        }
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("instance_ids: lists 101"));
    let err = admin_call!(
        admin,
        attach_instances,
        pb::AttachInstancesRequest {
            client_token: String::new(),
            scaling_group: "ops".into(),
            instance_ids: vec!["h-3".into(), "h-4".into()]
        }
    )
    .unwrap_err();
    assert!(
        err.message().contains("above max_size 2"),
        "{}",
        err.message()
    );
    // Removing below min_size, an unknown instance, protecting a wrong state.
    let err = admin_call!(
        admin,
        remove_instances,
        pb::RemoveInstancesRequest {
            client_token: String::new(),
            scaling_group: "ops".into(),
            instance_ids: vec![one[0].id.clone()],
            decrease_desired_capacity: None
        }
    )
    .unwrap_err();
    assert!(
        err.message().contains("below min_size 1"),
        "{}",
        err.message()
    );
    let err = admin_call!(
        admin,
        enter_standby,
        pb::StandbyRequest {
            scaling_group: "ops".into(),
            instance_ids: vec!["i-nope".into()]
        }
    )
    .unwrap_err();
    assert!(
        err.message()
            .contains("instance_ids[0]: `i-nope` is not in group ops"),
        "{}",
        err.message()
    );
    // Moving to the state an instance is already in is a no-op.
    admin_call!(
        admin,
        exit_standby,
        pb::StandbyRequest {
            scaling_group: "ops".into(),
            instance_ids: vec![one[0].id.clone()]
        }
    )
    .unwrap();
    let err = admin_call!(
        admin,
        describe_scaling_instances,
        pb::DescribeScalingInstancesRequest {
            lifecycle_state: "Sleeping".into(),
            ..Default::default()
        }
    )
    .unwrap_err();
    assert!(
        err.message()
            .contains("lifecycle_state: unknown value `Sleeping`"),
        "{}",
        err.message()
    );
    // Nothing above changed the group.
    assert_eq!(instances(&mut admin, "ops").len(), 1);
    // Protected instances survive a scale-in that wants them.
    admin_call!(
        admin,
        set_instances_protection,
        pb::SetInstancesProtectionRequest {
            scaling_group: "ops".into(),
            instance_ids: vec![one[0].id.clone()],
            protected: true
        }
    )
    .unwrap();
    let err = admin_call!(
        admin,
        enter_standby,
        pb::StandbyRequest {
            scaling_group: "ops".into(),
            instance_ids: vec![one[0].id.clone()]
        }
    )
    .unwrap_err();
    assert!(
        err.message().contains("is Protected; it must be InService"),
        "{}",
        err.message()
    );
    modify(
        &mut admin,
        pb::ModifyScalingGroupRequest {
            scaling_group: "ops".into(),
            min_size: Some(0),
            desired_capacity: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    let act = eventually("the scale-in to end", DEADLINE, || {
        activities(&mut admin, "ops")
            .into_iter()
            .find(|a| a.capacity_to == 0 && a.status != "InProgress")
    });
    assert_eq!(act.status, "Warning", "{act:?}");
    assert!(act.error.contains("Protected or in Standby"), "{act:?}");
    let left = instances(&mut admin, "ops");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].lifecycle_state, "Protected");
}

#[test]
fn grpc_health_checking_is_served() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), INTERVAL_MS).unwrap();
    let admin = Admin::local(&ctl);
    let mut health = HealthClient::new(admin.channel.clone());
    for service in [
        "ebb.v1.AdminService",
        "ebb.v1.AgentService",
        "ebb.v1.JoinService",
    ] {
        let resp = admin
            .rt
            .block_on(health.check(HealthCheckRequest {
                service: service.into(),
            }))
            .unwrap()
            .into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "{service}");
    }
    let err = admin
        .rt
        .block_on(health.check(HealthCheckRequest {
            service: "ebb.v1.Nope".into(),
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[test]
fn a_detached_instance_keeps_running_across_reconcile_passes_and_a_restart() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    create_group(&mut admin, "keep", 1, 3);
    enable(&mut admin, "keep");
    let detached = wait_in_service(&mut admin, "keep", 1)[0].id.clone();
    let dir = ctl.dir.join("ebb-data").join("instances").join(&detached);
    let marker = format!("instances/{detached}/");
    let pids_of = |ctl: &ControllerProc| -> Vec<String> {
        let mut pids: Vec<String> = ctl
            .instance_processes()
            .into_iter()
            .filter(|p| p.contains(&marker))
            .filter_map(|p| p.split(' ').next().map(str::to_owned))
            .collect();
        pids.sort();
        pids
    };
    let before = pids_of(&ctl);
    assert_eq!(before.len(), 2, "an agent and a workload");

    // Desired stays at 1: the loop launches a replacement, and every pass
    // after the detach sweeps provider instances no record claims.
    let resp = admin_call!(
        admin,
        detach_instances,
        pb::DetachInstancesRequest {
            client_token: String::new(),
            scaling_group: "keep".into(),
            instance_ids: vec![detached.clone()],
            decrease_desired_capacity: Some(false),
        }
    )
    .unwrap();
    let replacement = wait_in_service(&mut admin, "keep", 1);
    assert_ne!(replacement[0].id, detached);
    let acts = activities(&mut admin, "keep");
    assert!(
        acts.iter()
            .any(|a| a.id == resp.activity_id && a.status == "Successful"),
        "{acts:#?}"
    );
    assert_eq!(pids_of(&ctl), before, "{}", ctl.proc.log_text());
    assert!(dir.exists(), "the detached instance's dir was removed");

    // A restarted controller knows it was detached, not left by a crash.
    drop(admin);
    let (grpc, http) = ctl.kill();
    let ctl = ControllerProc::start_on(sb.path(), INTERVAL_MS, grpc, http).unwrap();
    let mut admin = Admin::local(&ctl);
    modify(
        &mut admin,
        pb::ModifyScalingGroupRequest {
            scaling_group: "keep".into(),
            desired_capacity: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    let two = wait_in_service(&mut admin, "keep", 2);
    assert!(two.iter().all(|i| i.id != detached));
    assert_eq!(pids_of(&ctl), before, "{}", ctl.proc.log_text());
    assert!(dir.exists(), "the detached instance's dir was removed");

    // No longer ebb's: the test cleans it up itself.
    for pid in &before {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid])
            .status();
    }
}

/// `ScaleWithAdjustment` retried with its `client_token` (after a time-out,
/// say) starts one activity, however often it is sent, across a restart
/// and from ebbctl; the token on another request is refused, naming it.
#[test]
fn a_retried_scale_with_one_client_token_makes_one_activity() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    create_group(&mut admin, "once", 0, 5);
    enable(&mut admin, "once");
    let scale = |value: i64, token: &str| pb::ScaleWithAdjustmentRequest {
        scaling_group: "once".into(),
        adjustment_type: "QuantityChangeInCapacity".into(),
        adjustment_value: value,
        client_token: token.into(),
        ..Default::default()
    };
    let first = admin_call!(admin, scale_with_adjustment, scale(1, "retry-7f3a"))
        .unwrap()
        .activity
        .unwrap();
    let again = admin_call!(admin, scale_with_adjustment, scale(1, "retry-7f3a"))
        .unwrap()
        .activity
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(activities(&mut admin, "once").len(), 1);

    // The same token on another request: refused, nothing started.
    let err = admin_call!(admin, scale_with_adjustment, scale(2, "retry-7f3a")).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("client_token: `retry-7f3a` was used for another request"),
        "{}",
        err.message()
    );
    let err = admin_call!(admin, scale_with_adjustment, scale(1, &"x".repeat(65))).unwrap_err();
    assert!(
        err.message().starts_with("client_token: is 65"),
        "{}",
        err.message()
    );
    let err = admin_call!(admin, scale_with_adjustment, scale(1, "two words")).unwrap_err();
    assert!(
        err.message().starts_with("client_token: has"),
        "{}",
        err.message()
    );
    let details = err.get_error_details();
    let violations = &details.bad_request().expect("BadRequest").field_violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "client_token");
    assert_eq!(activities(&mut admin, "once").len(), 1);

    // Kept in the store: a restart does not forget it.
    wait_in_service(&mut admin, "once", 1);
    drop(admin);
    let (grpc, http) = ctl.kill();
    // On the same ports, so the instance's agent comes back to it.
    let ctl = ControllerProc::start_on(sb.path(), INTERVAL_MS, grpc, http).unwrap();
    let mut admin = Admin::local(&ctl);
    let after = admin_call!(admin, scale_with_adjustment, scale(1, "retry-7f3a"))
        .unwrap()
        .activity
        .unwrap();
    assert_eq!(after.id, first.id);
    let out = ctl.ebbctl_ok(&[
        "scale",
        "--group",
        "once",
        "--adjustment-type",
        "QuantityChangeInCapacity",
        "--adjustment-value",
        "1",
        "--client-token",
        "retry-7f3a",
        "-o",
        "json",
    ]);
    assert!(out.contains(&first.id), "{out}");
    assert_eq!(activities(&mut admin, "once").len(), 1);
    let group = admin_call!(
        admin,
        describe_scaling_groups,
        pb::DescribeScalingGroupsRequest::default()
    )
    .unwrap()
    .scaling_groups
    .into_iter()
    .find(|g| g.name == "once")
    .unwrap();
    assert_eq!(group.desired_capacity, 1);
    // A new token is a new request.
    let other = admin_call!(admin, scale_with_adjustment, scale(1, "retry-8b21"))
        .unwrap()
        .activity
        .unwrap();
    assert_ne!(other.id, first.id);

    // `group modify --client-token`, sent twice as a retrying script would:
    // the second is the first's answer, and starts nothing.
    let before = activities(&mut admin, "once").len();
    for _ in 0..2 {
        ctl.ebbctl_ok(&[
            "group",
            "modify",
            "once",
            "--desired",
            "3",
            "--client-token",
            "modify-0c4e",
        ]);
    }
    assert_eq!(activities(&mut admin, "once").len(), before + 1);
}
