//! Webhook notifications, end to end: a real HTTP receiver in the test gets
//! each notification type; a dead webhook never blocks scaling.

use ebb_proto::v1 as pb;
use ebb_tests::{Admin, ControllerProc, Sandbox, WebhookReceiver, admin_call};

fn modify_desired(admin: &mut Admin, n: u32) -> Result<pb::ScalingGroup, tonic::Status> {
    admin_call!(
        *admin,
        modify_scaling_group,
        pb::ModifyScalingGroupRequest {
            scaling_group: "hooks".into(),
            desired_capacity: Some(n),
            ..Default::default()
        }
    )
}

#[test]
fn every_notification_type_reaches_a_real_webhook() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    let receiver = WebhookReceiver::start();
    admin_call!(
        admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: "hooks".into(),
            min_size: 0,
            max_size: 3,
            sampling_interval_secs: Some(1),
            ..Default::default()
        }
    )
    .unwrap();
    let config = admin_call!(
        admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: "hooks".into(),
            name: "v1".into(),
            command: vec!["sleep".into(), "infinity".into()],
            ..Default::default()
        }
    )
    .unwrap();
    // Bad input first: named fields, nothing stored.
    let err = admin_call!(
        admin,
        create_notification_configuration,
        pb::NotificationConfiguration {
            scaling_group: "hooks".into(),
            notification_url: "https://example.com/".into(),
            notification_types: vec!["SCALE_SIDEWAYS".into()],
        }
    )
    .unwrap_err();
    assert!(
        err.message().contains("notification_url:")
            && err.message().contains("notification_types[0]:"),
        "{}",
        err.message()
    );
    admin_call!(
        admin,
        create_notification_configuration,
        pb::NotificationConfiguration {
            scaling_group: "hooks".into(),
            notification_url: receiver.url.clone(),
            notification_types: vec![]
        }
    )
    .unwrap();
    // A webhook nobody listens on: retried, given up on, counted; never in the way.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    admin_call!(
        admin,
        create_notification_configuration,
        pb::NotificationConfiguration {
            scaling_group: "hooks".into(),
            notification_url: format!("http://{dead}/gone"),
            notification_types: vec!["SCALE_OUT_START".into()],
        }
    )
    .unwrap();
    admin_call!(
        admin,
        enable_scaling_group,
        pb::EnableScalingGroupRequest {
            scaling_group: "hooks".into(),
            ..Default::default()
        }
    )
    .unwrap();
    modify_desired(&mut admin, 2).unwrap();
    let start = receiver.wait_for("SCALE_OUT_START");
    assert_eq!(start["scaling_group_name"], "hooks");
    assert_eq!(start["activity"]["capacity_to"], 2);
    let done = receiver.wait_for("SCALE_OUT_SUCCESS");
    assert_eq!(done["activity"]["status"], "Successful");

    modify_desired(&mut admin, 0).unwrap();
    receiver.wait_for("SCALE_IN_START");
    receiver.wait_for("SCALE_IN_SUCCESS");

    // A launch that cannot work: three failures end the activity as Failed.
    admin_call!(
        admin,
        modify_scaling_configuration,
        pb::ModifyScalingConfigurationRequest {
            scaling_configuration_id: config.id.clone(),
            set_command: true,
            command: vec!["/nonexistent/workload".into()],
            ..Default::default()
        }
    )
    .unwrap();
    modify_desired(&mut admin, 1).unwrap();
    let error = receiver.wait_for("SCALE_OUT_ERROR");
    assert_eq!(error["activity"]["status"], "Failed");

    admin_call!(
        admin,
        disable_scaling_group,
        pb::DisableScalingGroupRequest {
            scaling_group: "hooks".into()
        }
    )
    .unwrap();
    assert!(modify_desired(&mut admin, 0).is_err());
    let reject = receiver.wait_for("SCALE_REJECT");
    assert!(
        reject["activity"]["error"]
            .as_str()
            .unwrap()
            .contains("not active"),
        "{reject}"
    );

    ctl.wait_metric("ebb_notifications_failed_total", |v| v >= 1.0);
    assert!(
        ctl.metric("ebb_notifications_sent_total").unwrap() >= 7.0,
        "{:?}",
        receiver.events()
    );
    let list = admin_call!(
        admin,
        describe_notification_configurations,
        pb::DescribeNotificationConfigurationsRequest {
            scaling_group: "hooks".into()
        }
    )
    .unwrap();
    assert_eq!(list.notification_configurations.len(), 2);
    assert_eq!(
        list.notification_configurations[0].notification_types.len(),
        7,
        "all types when none named"
    );
}
