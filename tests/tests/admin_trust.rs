//! What the admin API records and bounds, end to end: the admin identity
//! (from the caller's certificate) on the activities its calls start and in
//! the controller's log, and caps on the number of objects.

use ebb_proto::v1 as pb;
use ebb_tests::{
    Admin, ControllerProc, DEADLINE, Sandbox, activities, admin_call, enabled_group, eventually,
    instances,
};

/// An enabled group of at most 2 `sleep infinity` instances, none yet.
fn group(admin: &mut Admin, name: &str) {
    enabled_group(
        admin,
        pb::CreateScalingGroupRequest {
            name: name.into(),
            min_size: 0,
            max_size: 2,
            desired_capacity: Some(0),
            ..Default::default()
        },
    );
}

fn set_desired(admin: &mut Admin, group: &str, n: u32) -> Result<pb::ScalingGroup, tonic::Status> {
    admin_call!(
        *admin,
        modify_scaling_group,
        pb::ModifyScalingGroupRequest {
            scaling_group: group.into(),
            desired_capacity: Some(n),
            ..Default::default()
        }
    )
}

#[test]
fn the_admin_identity_appears_on_activities_and_in_the_log() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut local = Admin::local(&ctl);
    group(&mut local, "web");
    // A second operator, with a certificate of their own from the same CA.
    let alice = ctl
        .ca()
        .issue_admin("alice", ebb_certs::ADMIN_VALIDITY)
        .unwrap();
    let mut alice = Admin::with_identity(&ctl, &alice.cert_pem, &alice.key_pem);
    set_desired(&mut alice, "web", 1).unwrap();
    let uri = "spiffe://ebb.local/admin/alice";

    let act = activities(&mut local, "web")
        .into_iter()
        .find(|a| a.capacity_to == 1)
        .expect("the scale-out activity");
    assert_eq!(act.initiated_by, uri, "{act:?}");
    // The instance it launched exists, so its agent is a known one.
    eventually("the instance launched", DEADLINE, || {
        (instances(&mut local, "web").len() == 1).then_some(())
    });

    let list = ctl.ebbctl(&["activity", "list", "--group", "web"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let text = String::from_utf8_lossy(&list.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&act.id))
        .unwrap_or_else(|| panic!("{} not in:\n{text}", act.id));
    assert!(line.contains(" alice "), "{text}");
    let described = ctl.ebbctl(&["-o", "json", "activity", "describe", &act.id]);
    assert!(
        described.status.success(),
        "{}",
        String::from_utf8_lossy(&described.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    assert_eq!(json["initiated_by"], uri, "{json}");

    // A refused call is logged with its admin too, and changes nothing.
    let err = set_desired(&mut alice, "web", 7).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let log = eventually("alice's calls in the controller log", DEADLINE, || {
        let log = ctl.proc.log_text();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains(uri) && l.contains("modify_scaling_group"))
            .map(str::to_owned)
            .collect();
        (lines.len() >= 2).then_some(lines)
    });
    assert!(log[0].contains("admin call"), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.contains("admin call refused") && l.contains("InvalidArgument")),
        "{log:?}"
    );
    // The local admin's own calls name it, not alice.
    assert!(
        ctl.proc
            .log_text()
            .lines()
            .any(|l| l.contains("create_scaling_group")
                && l.contains("spiffe://ebb.local/admin/")
                && !l.contains(uri)),
        "{}",
        ctl.proc.log_text()
    );
    assert_eq!(
        activities(&mut local, "web").len(),
        1,
        "the refused call stored nothing"
    );
}

#[test]
fn the_object_past_a_cap_is_refused_naming_it_and_nothing_is_stored() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start_with(
        sb.path(),
        1000,
        "[limits]\ngroups = 2\nrules_per_group = 1\nnotifications_per_group = 1\n",
    )
    .unwrap();
    let mut admin = Admin::local(&ctl);
    let create = |admin: &mut Admin, name: &str| {
        admin_call!(
            *admin,
            create_scaling_group,
            pb::CreateScalingGroupRequest {
                name: name.into(),
                min_size: 0,
                max_size: 2,
                ..Default::default()
            }
        )
    };
    create(&mut admin, "ga").unwrap();
    create(&mut admin, "gb").unwrap();
    let err = create(&mut admin, "gc").unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.message(),
        "the controller already has 2 scaling groups, and limits.groups allows 2: \
         delete one, or raise limits.groups in controller.toml"
    );
    let groups = admin_call!(
        admin,
        describe_scaling_groups,
        pb::DescribeScalingGroupsRequest::default()
    )
    .unwrap()
    .scaling_groups;
    assert_eq!(
        groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["ga", "gb"]
    );

    let rule = |admin: &mut Admin, name: &str| {
        admin_call!(
            *admin,
            create_scaling_rule,
            pb::CreateScalingRuleRequest {
                scaling_group: "ga".into(),
                name: name.into(),
                definition_json: r#"{"rule_type":"SimpleScalingRule","adjustment_type":"QuantityChangeInCapacity","adjustment_value":1}"#.into(),
            }
        )
    };
    rule(&mut admin, "up").unwrap();
    let err = rule(&mut admin, "up-more").unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().starts_with(
            "scaling group ga already has 1 scaling rules, and limits.rules_per_group allows 1"
        ),
        "{}",
        err.message()
    );
    let rules = admin_call!(
        admin,
        describe_scaling_rules,
        pb::DescribeScalingRulesRequest {
            scaling_group: "ga".into(),
            ..Default::default()
        }
    )
    .unwrap()
    .scaling_rules;
    assert_eq!(rules.len(), 1);

    let notify = |admin: &mut Admin, url: &str| {
        admin_call!(
            *admin,
            create_notification_configuration,
            pb::NotificationConfiguration {
                scaling_group: "ga".into(),
                notification_url: url.into(),
                ..Default::default()
            }
        )
    };
    notify(&mut admin, "http://127.0.0.1:1/a").unwrap();
    let err = notify(&mut admin, "http://127.0.0.1:1/b").unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("limits.notifications_per_group allows 1"),
        "{}",
        err.message()
    );
    let targets = admin_call!(
        admin,
        describe_notification_configurations,
        pb::DescribeNotificationConfigurationsRequest {
            scaling_group: "ga".into(),
            ..Default::default()
        }
    )
    .unwrap();
    assert_eq!(targets.notification_configurations.len(), 1, "{targets:?}");

    // ebbctl shows the same sentence and fails.
    let out = ctl.ebbctl(&["group", "create", "gd", "--min", "0", "--max", "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("limits.groups allows 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
