//! Webhook notifications, end to end: a real HTTPS receiver with a CA of
//! the test's own gets each notification type, signed; a dead webhook
//! never blocks scaling and ends as a counted dead letter; notifications
//! pending when the controller is SIGKILLed are delivered after it
//! restarts, each once.

use std::collections::HashMap;
use std::time::Duration;

use ebb_certs::Ca;
use ebb_proto::v1 as pb;
use ebb_tests::{
    Admin, ControllerProc, DEADLINE, Sandbox, WebhookReceiver, admin_call, eventually,
};

const SECRET: &str = "a-receivers-secret-of-32-bytes!!";

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

/// Group `hooks`, never enabled: each change of its desired capacity is
/// refused, and each refusal is one SCALE_REJECT.
fn inactive_group(admin: &mut Admin) {
    admin_call!(
        *admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: "hooks".into(),
            min_size: 0,
            max_size: 9,
            ..Default::default()
        }
    )
    .unwrap();
}

/// `receiver` told of `hooks`' SCALE_REJECTs, signed with `secret` unless
/// it is empty.
fn notify_rejections(admin: &mut Admin, receiver: &WebhookReceiver, secret: &str) {
    admin_call!(
        *admin,
        create_notification_configuration,
        pb::NotificationConfiguration {
            scaling_group: "hooks".into(),
            notification_url: receiver.url.clone(),
            notification_types: vec!["SCALE_REJECT".into()],
            secret: secret.into(),
            ..Default::default()
        }
    )
    .unwrap();
}

#[test]
fn every_notification_type_reaches_a_real_https_webhook_signed() {
    let sb = Sandbox::new();
    // The receiver's CA is the test's own, trusted through [webhooks] ca_file.
    let ca = Ca::generate("receivers.test", Duration::from_secs(3600)).unwrap();
    let ca_file = sb.path().join("receivers-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let server = ca
        .issue_server(&["localhost".to_owned()], &["127.0.0.1".parse().unwrap()])
        .unwrap();
    let receiver = WebhookReceiver::start_tls(&server);
    let ctl = ControllerProc::start_with(
        sb.path(),
        1000,
        &format!(
            "[webhooks]\nca_file = \"{}\"\nattempts = 3\n",
            ca_file.display()
        ),
    )
    .unwrap();
    let mut admin = Admin::local(&ctl);
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
            notification_url: "ftp://example.com/".into(),
            notification_types: vec!["SCALE_SIDEWAYS".into()],
            ..Default::default()
        }
    )
    .unwrap_err();
    assert!(
        err.message().contains("notification_url:")
            && err.message().contains("notification_types[0]:"),
        "{}",
        err.message()
    );
    for (field, bad) in [
        (
            "secret",
            pb::NotificationConfiguration {
                secret: "short".into(),
                ..Default::default()
            },
        ),
        (
            "timeout_ms",
            pb::NotificationConfiguration {
                timeout_ms: 99,
                ..Default::default()
            },
        ),
        (
            "notification_url",
            pb::NotificationConfiguration {
                notification_url: format!("{}\r\nX-Injected: 1", receiver.url),
                ..Default::default()
            },
        ),
    ] {
        let err = admin_call!(
            admin,
            create_notification_configuration,
            pb::NotificationConfiguration {
                scaling_group: "hooks".into(),
                notification_url: bad.notification_url.clone(),
                ..bad
            }
        )
        .unwrap_err();
        assert!(
            err.message().contains(&format!("{field}:")),
            "{}",
            err.message()
        );
    }
    let made = admin_call!(
        admin,
        create_notification_configuration,
        pb::NotificationConfiguration {
            scaling_group: "hooks".into(),
            notification_url: receiver.url.clone(),
            secret: SECRET.into(),
            ..Default::default()
        }
    )
    .unwrap();
    assert!(made.signed && made.secret.is_empty(), "{made:?}");
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
            ..Default::default()
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

    // Every type arrived over TLS, each POST signed with the target's
    // secret (and with nothing else), naming its event and delivery.
    // SCALE_IN_ERROR is the one type this test cannot cause: the process
    // provider's release of `sleep` does not fail. Its mapping is pinned by
    // notify's events_by_direction_and_status, and its delivery is the
    // same path as these.
    let taken = receiver.taken();
    for event in [
        "SCALE_OUT_START",
        "SCALE_OUT_SUCCESS",
        "SCALE_OUT_ERROR",
        "SCALE_IN_START",
        "SCALE_IN_SUCCESS",
        "SCALE_REJECT",
    ] {
        assert!(
            taken.iter().any(|p| p.body["event"] == event),
            "{event} missing"
        );
    }
    for post in &taken {
        assert!(post.signed_with(SECRET), "{:?}", post.headers);
        assert!(!post.signed_with("another-secret-of-enough-bytes"));
        assert_eq!(post.headers["x-ebb-event"], post.body["event"]);
        assert!(
            post.headers["x-ebb-delivery"]
                .starts_with(post.body["activity"]["id"].as_str().unwrap())
        );
    }

    // The dead webhook: three attempts, then a dead letter, counted.
    ctl.wait_metric("ebb_notifications_failed_total", |v| v >= 1.0);
    ctl.wait_metric("ebb_notifications_dead_letters", |v| v >= 1.0);
    assert!(
        ctl.metric("ebb_notifications_sent_total").unwrap() >= 7.0,
        "{:?}",
        receiver.events()
    );
    let list = admin_call!(
        admin,
        describe_notification_configurations,
        pb::DescribeNotificationConfigurationsRequest {
            scaling_group: "hooks".into(),
            ..Default::default()
        }
    )
    .unwrap();
    assert_eq!(list.notification_configurations.len(), 2);
    let dead_letters: HashMap<&str, u64> = list
        .notification_configurations
        .iter()
        .map(|n| (n.notification_url.as_str(), n.dead_letters))
        .collect();
    assert_eq!(dead_letters[format!("http://{dead}/gone").as_str()], 1);
    assert_eq!(dead_letters[receiver.url.as_str()], 0);
    // Listed by URL (the order pages follow).
    let urls: Vec<&str> = list
        .notification_configurations
        .iter()
        .map(|n| n.notification_url.as_str())
        .collect();
    let mut sorted = urls.clone();
    sorted.sort_unstable();
    assert_eq!(urls, sorted);
    let all = list
        .notification_configurations
        .iter()
        .find(|n| n.notification_url == receiver.url)
        .unwrap();
    assert_eq!(all.notification_types.len(), 7, "all types when none named");
}

/// Five notifications pending (their receiver answering 503) when the
/// controller is SIGKILLed: after a restart, with the receiver back, each
/// is delivered, and each once.
#[test]
fn pending_notifications_survive_a_sigkill_and_arrive_once() {
    let sb = Sandbox::new();
    let receiver = WebhookReceiver::start();
    receiver.answer(503);
    let ctl = ControllerProc::start_with(sb.path(), 1000, "[webhooks]\nattempts = 100\n").unwrap();
    let mut admin = Admin::local(&ctl);
    inactive_group(&mut admin);
    notify_rejections(&mut admin, &receiver, SECRET);
    // The group is not enabled: each change of desired is refused, and
    // each refusal is one notification.
    for n in 1..=5 {
        assert!(modify_desired(&mut admin, n).is_err());
    }
    ctl.wait_metric("ebb_notifications_pending", |v| v == 5.0);
    eventually("five deliveries to be tried and refused", DEADLINE, || {
        let ids: std::collections::HashSet<String> = receiver
            .posts()
            .iter()
            .map(|p| p.headers["x-ebb-delivery"].clone())
            .collect();
        (ids.len() == 5).then_some(())
    });
    assert!(receiver.taken().is_empty());

    ctl.kill();
    receiver.answer(204);
    let ctl = ControllerProc::start_with(sb.path(), 1000, "[webhooks]\nattempts = 100\n").unwrap();
    let taken = eventually("the five to arrive after the restart", DEADLINE * 2, || {
        let taken = receiver.taken();
        (taken.len() >= 5).then_some(taken)
    });
    ctl.wait_metric("ebb_notifications_pending", |v| v == 0.0);
    // Let a duplicate show itself, if there were one.
    std::thread::sleep(Duration::from_secs(2));
    let taken_again = receiver.taken();
    assert_eq!(
        taken_again.len(),
        5,
        "{:?}",
        taken_again
            .iter()
            .map(|p| &p.headers["x-ebb-delivery"])
            .collect::<Vec<_>>()
    );
    let mut per_delivery: HashMap<String, usize> = HashMap::new();
    for post in &taken {
        assert!(post.signed_with(SECRET));
        assert_eq!(post.body["event"], "SCALE_REJECT");
        *per_delivery
            .entry(post.headers["x-ebb-delivery"].clone())
            .or_default() += 1;
    }
    assert_eq!(per_delivery.len(), 5, "{per_delivery:?}");
    assert!(per_delivery.values().all(|&n| n == 1), "{per_delivery:?}");
    assert_eq!(ctl.metric("ebb_notifications_dead_letters"), Some(0.0));
}

/// Deleting a target stops what was still pending for it: its receiver
/// hears nothing more, nothing is counted a dead letter, and another
/// target's notifications are untouched.
#[test]
fn a_deleted_targets_pending_notifications_are_dropped() {
    let sb = Sandbox::new();
    let failing = WebhookReceiver::start();
    failing.answer(503);
    let working = WebhookReceiver::start();
    let ctl = ControllerProc::start_with(sb.path(), 1000, "[webhooks]\nattempts = 100\n").unwrap();
    let mut admin = Admin::local(&ctl);
    inactive_group(&mut admin);
    for receiver in [&failing, &working] {
        notify_rejections(&mut admin, receiver, "");
    }
    for n in 1..=3 {
        assert!(modify_desired(&mut admin, n).is_err());
    }
    // The working target has its three; the failing one's three wait.
    eventually("three deliveries to the working target", DEADLINE, || {
        (working.taken().len() == 3).then_some(())
    });
    ctl.wait_metric("ebb_notifications_pending", |v| v == 3.0);
    eventually("the failing target to be tried", DEADLINE, || {
        (!failing.posts().is_empty()).then_some(())
    });

    ctl.ebbctl_ok(&["notification", "delete", &failing.url, "--group", "hooks"]);
    // Dropped at the delete, not at their next attempt (which is up to
    // minutes away after a few failures).
    ctl.wait_log("dropped 3 pending notifications of a deleted target");
    ctl.wait_metric("ebb_notifications_pending", |v| v == 0.0);
    let tried = failing.posts().len();
    // Past the next back-off (1 s, 2 s, 4 s, ...) of every one of them.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        failing.posts().len(),
        tried,
        "a deleted target was tried again"
    );
    assert_eq!(ctl.metric("ebb_notifications_dead_letters"), Some(0.0));
    assert_eq!(working.taken().len(), 3);
}
