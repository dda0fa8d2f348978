//! Scaling on a custom metric end to end, independent of the host's CPU:
//! a configuration's `file` metric source, written by the process provider
//! into each instance's agent.toml, read by real agents on every pull; an
//! alarm on that metric scales the group out when the test writes a high
//! value and back in when it writes a low one. Also: the admin API refuses
//! bad metric sources, naming each problem, and `ebbctl` shows good ones.

use std::path::Path;

use ebb_proto::v1 as pb;
use ebb_tests::{
    Admin, ControllerProc, DEADLINE, Sandbox, activities, admin_call, eventually, instances,
};

const GROUP: &str = "queue";

/// The group, its configuration with one file metric (`{DEPTH}`), the two
/// rules and the two alarms on that metric.
const FILE: &str = r#"
[group]
name = "queue"
min_size = 1
max_size = 2
sampling_interval_secs = 1

[configuration]
name = "queue-v1"

[[configuration.metrics]]
name = "queue_depth"
file = "{DEPTH}"

[[rule]]
name = "add-1"
rule_type = "SimpleScalingRule"
adjustment_type = "QuantityChangeInCapacity"
adjustment_value = 1
cooldown_secs = 0

[[rule]]
name = "remove-1"
rule_type = "SimpleScalingRule"
adjustment_type = "QuantityChangeInCapacity"
adjustment_value = -1
cooldown_secs = 0

[[alarm]]
name = "queue-high"
metric = "queue_depth"
statistic = "Average"
period_secs = 1
comparison_operator = ">="
threshold = 100
evaluation_count = 2
alarm_actions = ["add-1"]

[[alarm]]
name = "queue-low"
metric = "queue_depth"
statistic = "Average"
period_secs = 1
comparison_operator = "<="
threshold = 10
evaluation_count = 2
alarm_actions = ["remove-1"]
"#;

/// Replaces the file whole, so an agent never reads half a number.
fn write_depth(path: &Path, value: u32) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{value}\n")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn in_service(admin: &mut Admin) -> usize {
    instances(admin, GROUP)
        .iter()
        .filter(|i| i.lifecycle_state == "InService")
        .count()
}

fn alarm(admin: &mut Admin, name: &str) -> pb::Alarm {
    admin_call!(
        *admin,
        describe_alarms,
        pb::DescribeAlarmsRequest {
            scaling_group: GROUP.into(),
            ..Default::default()
        }
    )
    .unwrap()
    .alarms
    .into_iter()
    .find(|a| a.name == name)
    .unwrap()
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_file_metric_scales_out_and_back_in() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    let depth = sb.path().join("queue-depth");
    write_depth(&depth, 0);
    let file = sb.path().join("queue.toml");
    std::fs::write(&file, FILE.replace("{DEPTH}", &depth.display().to_string())).unwrap();
    let applied = ctl.ebbctl(&["apply", "-f", &file.display().to_string()]);
    assert!(applied.status.success(), "{}", output(&applied));

    eventually("one instance in service", DEADLINE * 2, || {
        (in_service(&mut admin) == 1).then_some(())
    });
    // The value reaches the alarm: a depth of 0 is a real zero, below 10.
    eventually("queue-low to see the depth of 0", DEADLINE * 2, || {
        (alarm(&mut admin, "queue-low").state == "ALARM").then_some(())
    });

    write_depth(&depth, 500);
    let out = eventually("the scale-out", DEADLINE * 2, || {
        activities(&mut admin, GROUP).into_iter().find(|a| {
            a.trigger == "alarm"
                && a.status != "Rejected"
                && (a.capacity_from, a.capacity_to) == (1, 2)
        })
    });
    assert!(
        out.cause
            .starts_with("alarm `queue-high` executed rule `add-1`"),
        "{}",
        out.cause
    );
    assert!(
        out.details
            .iter()
            .any(|d| d.contains("queue_depth Average >= 100")),
        "{:?}",
        out.details
    );
    assert!(
        out.details.iter().any(|d| d.contains("500 (breaching)")),
        "{:?}",
        out.details
    );
    eventually("two instances in service", DEADLINE * 2, || {
        (in_service(&mut admin) == 2).then_some(())
    });

    write_depth(&depth, 3);
    let back = eventually("the scale-in", DEADLINE * 2, || {
        activities(&mut admin, GROUP).into_iter().find(|a| {
            a.trigger == "alarm"
                && a.status != "Rejected"
                && (a.capacity_from, a.capacity_to) == (2, 1)
        })
    });
    assert!(
        back.cause
            .starts_with("alarm `queue-low` executed rule `remove-1`"),
        "{}",
        back.cause
    );
    eventually("one instance again", DEADLINE * 2, || {
        (in_service(&mut admin) == 1).then_some(())
    });
    let high = alarm(&mut admin, "queue-high");
    assert!(
        high.history.iter().any(|h| h.contains("ALARM")),
        "{:?}",
        high.history
    );

    let described = ctl.ebbctl(&["config", "describe", "queue-v1"]);
    assert!(described.status.success(), "{}", output(&described));
    assert!(
        output(&described).contains(&format!("queue_depth: file {}", depth.display())),
        "{}",
        output(&described)
    );
}

fn source(name: &str) -> pb::MetricSource {
    pb::MetricSource {
        name: name.into(),
        ..Default::default()
    }
}

#[test]
fn the_admin_api_refuses_bad_metric_sources_and_keeps_good_ones() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    admin_call!(
        admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: GROUP.into(),
            min_size: 0,
            max_size: 1,
            ..Default::default()
        }
    )
    .unwrap();
    let bad = vec![
        pb::MetricSource {
            file: "/run/q".into(),
            ..source("queue depth")
        },
        pb::MetricSource {
            prometheus: Some(pb::PrometheusSource {
                url: "https://127.0.0.1/metrics".into(),
                metric: "2xx-total".into(),
                ..Default::default()
            }),
            timeout_ms: 60_001,
            ..source("rps")
        },
        pb::MetricSource {
            file: "/run/q".into(),
            command: vec!["/bin/echo".into()],
            ..source("rps")
        },
    ];
    let err = admin_call!(
        admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: GROUP.into(),
            name: "v1".into(),
            metrics: bad.clone(),
            ..Default::default()
        }
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for needle in [
        "metrics[0].name: `queue depth` may use only letters, digits, '_', '.', ':' and '-'",
        "metrics[1].timeout_ms: 60001 is outside 1..=60000",
        "metrics[1].prometheus.url: bad URL \"https://127.0.0.1/metrics\": https is not supported",
        "metrics[1].prometheus.metric: \"2xx-total\" is not a Prometheus metric name",
        "metrics[2].name: `rps` is already metrics[1]'s name",
        "metrics[2]: set exactly one of `prometheus`, `file` or `command`",
    ] {
        assert!(
            err.message().contains(needle),
            "missing `{needle}` in: {}",
            err.message()
        );
    }

    let good = vec![
        pb::MetricSource {
            file: "queue-depth".into(),
            timeout_ms: 500,
            ..source("queue_depth")
        },
        pb::MetricSource {
            prometheus: Some(pb::PrometheusSource {
                url: "http://127.0.0.1:9100/metrics".into(),
                metric: "http_requests_total".into(),
                labels: [("code".to_owned(), "200".to_owned())].into(),
            }),
            ..source("rps")
        },
    ];
    let created = admin_call!(
        admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: GROUP.into(),
            name: "v1".into(),
            metrics: good.clone(),
            ..Default::default()
        }
    )
    .unwrap();
    assert_eq!(created.metrics, good);
    let described = |admin: &mut Admin| {
        admin_call!(
            *admin,
            describe_scaling_configurations,
            pb::DescribeScalingConfigurationsRequest {
                scaling_group: GROUP.into(),
                ..Default::default()
            }
        )
        .unwrap()
        .scaling_configurations
        .remove(0)
        .metrics
    };
    assert_eq!(described(&mut admin), good);

    // A modify that does not set them leaves them; a bad one changes nothing.
    let modify =
        |metrics: Vec<pb::MetricSource>, set_metrics: bool| pb::ModifyScalingConfigurationRequest {
            scaling_configuration_id: created.id.clone(),
            instance_type: Some("small".into()),
            metrics,
            set_metrics,
            ..Default::default()
        };
    admin_call!(
        admin,
        modify_scaling_configuration,
        modify(Vec::new(), false)
    )
    .unwrap();
    assert_eq!(described(&mut admin), good);
    let err = admin_call!(admin, modify_scaling_configuration, modify(bad, true)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(described(&mut admin), good);
    let cleared = admin_call!(
        admin,
        modify_scaling_configuration,
        modify(Vec::new(), true)
    )
    .unwrap();
    assert!(cleared.metrics.is_empty());
    assert!(described(&mut admin).is_empty());
}
