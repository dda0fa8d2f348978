//! The proof that CPU works end to end: real agents read the host's CPU, a
//! real burn makes a CpuUtilization alarm scale the group out. It holds on
//! a busy host too (a busy host only breaches sooner); what a host's own
//! load cannot give, a scale-in on low CPU, is proven with a metric the
//! test controls (`custom_scaling.rs`).

use std::time::Instant;

use ebb_proto::v1 as pb;
use ebb_tests::{Admin, Burn, ControllerProc, DEADLINE, Sandbox, admin_call, eventually};

fn rule(admin: &mut Admin, name: &str, value: i64) {
    admin_call!(
        *admin,
        create_scaling_rule,
        pb::CreateScalingRuleRequest {
            scaling_group: "cpu".into(),
            name: name.into(),
            definition_json: format!(
                r#"{{"rule_type":"SimpleScalingRule","adjustment_type":"QuantityChangeInCapacity","adjustment_value":{value},"cooldown_secs":0}}"#
            ),
        }
    )
    .expect("create rule");
}

fn alarm(admin: &mut Admin, name: &str, comparison: &str, threshold: f64, action: &str) {
    admin_call!(
        *admin,
        create_alarm,
        pb::CreateAlarmRequest {
            scaling_group: "cpu".into(),
            name: name.into(),
            metric: "CpuUtilization".into(),
            statistic: "Average".into(),
            period_secs: 1,
            comparison_operator: comparison.into(),
            threshold,
            evaluation_count: Some(3),
            alarm_actions: vec![action.into()],
            ..Default::default()
        }
    )
    .expect("create alarm");
}

fn in_service(admin: &mut Admin) -> usize {
    admin_call!(
        *admin,
        describe_scaling_instances,
        pb::DescribeScalingInstancesRequest {
            scaling_group: "cpu".into(),
            lifecycle_state: "InService".into(),
            ..Default::default()
        }
    )
    .map(|r| r.instances.len())
    .unwrap_or(0)
}

fn activities(admin: &mut Admin) -> Vec<pb::Activity> {
    admin_call!(
        *admin,
        describe_scaling_activities,
        pb::DescribeScalingActivitiesRequest {
            scaling_group: "cpu".into(),
            ..Default::default()
        }
    )
    .expect("activities")
    .activities
}

#[test]
fn a_cpu_burn_scales_the_group_out() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    admin_call!(
        admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: "cpu".into(),
            min_size: 1,
            max_size: 2,
            sampling_interval_secs: Some(1),
            ..Default::default()
        }
    )
    .unwrap();
    admin_call!(
        admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: "cpu".into(),
            name: "v1".into(),
            ..Default::default()
        }
    )
    .unwrap();
    admin_call!(
        admin,
        enable_scaling_group,
        pb::EnableScalingGroupRequest {
            scaling_group: "cpu".into(),
            ..Default::default()
        }
    )
    .unwrap();
    eventually("one instance in service", DEADLINE, || {
        (in_service(&mut admin) == 1).then_some(())
    });
    rule(&mut admin, "add-1", 1);
    alarm(&mut admin, "cpu-high", ">=", 80.0, "add-1");

    let burn = Burn::start();
    let started = Instant::now();
    let out = eventually("the scale-out decision", DEADLINE * 2, || {
        activities(&mut admin)
            .into_iter()
            .find(|a| a.trigger == "alarm" && a.capacity_to == 2 && a.status != "Rejected")
    });
    let reaction = started.elapsed();
    eprintln!(
        "reaction: CPU burn started → scale-out decision in {} ms",
        reaction.as_millis()
    );
    assert!(
        out.cause
            .starts_with("alarm `cpu-high` executed rule `add-1`"),
        "{}",
        out.cause
    );
    assert!(
        out.cause
            .ends_with("changing the Total Capacity from 1 to 2"),
        "{}",
        out.cause
    );
    assert!(
        out.details
            .iter()
            .any(|d| d.contains("CpuUtilization Average >= 80")),
        "{:?}",
        out.details
    );
    assert!(
        out.details.iter().any(|d| d.starts_with("rule: ")),
        "{:?}",
        out.details
    );
    eventually("two instances in service", DEADLINE, || {
        (in_service(&mut admin) == 2).then_some(())
    });
    // At max_size, the alarm keeps firing: the refusal is recorded once.
    eventually("a refusal at max", DEADLINE, || {
        activities(&mut admin)
            .into_iter()
            .find(|a| a.status == "Rejected" && a.error.contains("will not change"))
    });
    // Three more alarm periods in ALARM, each a chance to record it again.
    ctl.wait_passes("ebb_alarm_evaluation_seconds_count", 3);
    let refusals = activities(&mut admin)
        .iter()
        .filter(|a| a.status == "Rejected" && a.error.contains("will not change"))
        .count();
    assert_eq!(
        refusals, 1,
        "an alarm that stays in ALARM records the same refusal once"
    );

    // The alarm read the burn: every answer of the breaching period is
    // the host's CPU, near full.
    let answers = out
        .details
        .iter()
        .find_map(|d| {
            d.split_once("answered: [")
                .map(|(_, v)| v.trim_end_matches(']').to_owned())
        })
        .unwrap_or_else(|| panic!("no period data in {:?}", out.details));
    let values: Vec<f64> = answers.split(", ").map(|v| v.parse().unwrap()).collect();
    assert!(
        !values.is_empty() && values.iter().all(|v| (80.0..=100.0).contains(v)),
        "{values:?}"
    );
    drop(burn);

    let alarms = admin_call!(
        admin,
        describe_alarms,
        pb::DescribeAlarmsRequest {
            scaling_group: "cpu".into(),
            ..Default::default()
        }
    )
    .unwrap()
    .alarms;
    let high = alarms.iter().find(|a| a.name == "cpu-high").unwrap();
    assert!(
        high.history.iter().any(|h| h.contains("ALARM")),
        "{:?}",
        high.history
    );
}
