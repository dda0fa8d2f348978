use super::*;
use crate::model::{CreationType, GroupSpec, HealthStatus, LifecycleState};
use crate::rules::{AdjustmentType, Comparison, Metric, MissingData, Statistic, StepAdjustment};

const NOW: i64 = 1_700_000_000_000;

fn group(min: u32, max: u32) -> ScalingGroup {
    let spec = GroupSpec {
        name: Some("web".into()),
        min_size: Some(min),
        max_size: Some(max),
        ..Default::default()
    };
    let mut g = ScalingGroup::create("asg-1".into(), &spec, 0).unwrap();
    g.state = GroupState::Active;
    g.default_cooldown_secs = 300;
    g
}

fn instance(id: &str, state: LifecycleState, in_service_at_ms: Option<i64>) -> Instance {
    Instance {
        id: id.into(),
        group_id: "asg-1".into(),
        configuration_id: Some("asc-1".into()),
        lifecycle_state: state,
        health_status: HealthStatus::Healthy,
        creation_type: CreationType::AutoCreated,
        address: None,
        created_at_ms: 0,
        in_service_at_ms,
        activity_id: None,
        hook_waits: Vec::new(),
        attach_phase: None,
        provider_id: None,
        provider_address: None,
        launched_at_ms: None,
    }
}

/// `n` warm in-service instances.
fn fleet(n: usize) -> Vec<Instance> {
    (0..n)
        .map(|i| instance(&format!("i-{i}"), LifecycleState::InService, Some(0)))
        .collect()
}

fn add(n: i64) -> RuleKind {
    RuleKind::Simple {
        adjustment_type: AdjustmentType::QuantityChangeInCapacity,
        adjustment_value: n,
        min_adjustment_magnitude: None,
        cooldown_secs: None,
    }
}

fn alarm_spec(missing_data: MissingData) -> AlarmSpec {
    AlarmSpec {
        metric: Metric::CpuUtilization,
        statistic: Statistic::Average,
        period_secs: 5,
        comparison: Comparison::Ge,
        threshold: 80.0,
        evaluation_count: 3,
        missing_data,
    }
}

fn by(trigger: Trigger) -> RuleRun {
    RuleRun {
        trigger,
        what: "test".into(),
        metric_value: None,
        threshold: None,
        alarm: None,
    }
}

/// An alarm run whose period had `answered` of `in_service` answers.
fn by_alarm(answered: usize, in_service: u32) -> RuleRun {
    RuleRun {
        alarm: Some(AlarmRun {
            spec: alarm_spec(MissingData::Missing),
            input: PeriodInput {
                in_service,
                answered: vec![50.0; answered],
            },
            explanation: "cpu ≥ 80".into(),
            window: Stabilisation::Off,
        }),
        ..by(Trigger::Alarm)
    }
}

struct Case {
    name: &'static str,
    kind: RuleKind,
    run: RuleRun,
    group: ScalingGroup,
    running: Option<&'static str>,
    cooldown_start_ms: Option<i64>,
    want_to: u32,
    want: Option<Refusal>,
}

fn case(name: &'static str, kind: RuleKind, run: RuleRun) -> Case {
    Case {
        name,
        kind,
        run,
        group: group(1, 10),
        running: None,
        cooldown_start_ms: None,
        want_to: 0,
        want: None,
    }
}

impl Case {
    fn group(mut self, f: impl FnOnce(&mut ScalingGroup)) -> Self {
        f(&mut self.group);
        self
    }
    fn running(mut self, id: &'static str) -> Self {
        self.running = Some(id);
        self
    }
    fn cooled_at(mut self, ms: i64) -> Self {
        self.cooldown_start_ms = Some(ms);
        self
    }
    fn wants(mut self, to: u32, refusal: Option<Refusal>) -> Self {
        self.want_to = to;
        self.want = refusal;
        self
    }
}

/// DESIGN §4's rejection order, one row per rung: each row satisfies every
/// rung below the one it expects, so a reordering fails here.
#[test]
fn rejection_order() {
    let inactive = |g: &mut ScalingGroup| g.state = GroupState::Inactive;
    let suspend = |p: Process| move |g: &mut ScalingGroup| g.suspended_processes.push(p);
    let step = RuleKind::Step {
        adjustment_type: AdjustmentType::QuantityChangeInCapacity,
        step_adjustments: vec![StepAdjustment {
            lower_bound: Some(0.0),
            upper_bound: Some(10.0),
            adjustment: 1,
        }],
        min_adjustment_magnitude: None,
        estimated_instance_warmup_secs: 300,
    };
    let recent_end = NOW - 60_000;
    let cases = [
        case("a step rule with no metric", step.clone(), by(Trigger::Api))
            .group(inactive)
            .wants(4, Some(Refusal::StepNeedsMetric)),
        case(
            "a step rule whose steps miss the value",
            step.clone(),
            RuleRun {
                metric_value: Some(95.0),
                threshold: Some(80.0),
                ..by(Trigger::Api)
            },
        )
        .group(inactive)
        .wants(
            4,
            Some(Refusal::NoStep {
                value: 95.0,
                threshold: 80.0,
            }),
        ),
        case("an inactive group", add(1), by_alarm(4, 4))
            .group(inactive)
            .group(suspend(Process::ScaleOut))
            .running("asa-1")
            .wants(
                5,
                Some(Refusal::NotActive {
                    group: "web".into(),
                    state: GroupState::Inactive,
                }),
            ),
        case("ScaleOut suspended", add(1), by(Trigger::Api))
            .group(suspend(Process::ScaleOut))
            .wants(5, Some(Refusal::Suspended(Process::ScaleOut))),
        case("ScaleIn suspended", add(-1), by(Trigger::Schedule))
            .group(suspend(Process::ScaleIn))
            .wants(3, Some(Refusal::Suspended(Process::ScaleIn))),
        case(
            "ScaleIn suspended does not hold a scale-out",
            add(1),
            by(Trigger::Api),
        )
        .group(suspend(Process::ScaleIn))
        .wants(5, None),
        case("AlarmNotification suspended", add(1), by_alarm(4, 4))
            .group(suspend(Process::AlarmNotification))
            .running("asa-1")
            .wants(5, Some(Refusal::Suspended(Process::AlarmNotification))),
        case(
            "AlarmNotification does not hold the API",
            add(1),
            by(Trigger::Api),
        )
        .group(suspend(Process::AlarmNotification))
        .wants(5, None),
        case("an alarm while an activity runs", add(1), by_alarm(4, 4))
            .running("asa-1")
            .cooled_at(recent_end)
            .wants(5, Some(Refusal::ActivityRunning("asa-1".into()))),
        case("the API while an activity runs", add(1), by(Trigger::Api))
            .running("asa-1")
            .wants(5, None),
        case("an alarm in the cooldown", add(0), by_alarm(4, 4))
            .cooled_at(recent_end)
            .wants(
                4,
                Some(Refusal::Cooldown {
                    until_ms: recent_end + 300_000,
                    secs: 300,
                    last_end_ms: recent_end,
                }),
            ),
        case(
            "a schedule ignores the cooldown",
            add(1),
            by(Trigger::Schedule),
        )
        .cooled_at(recent_end)
        .wants(5, None),
        case("an alarm after the cooldown", add(1), by_alarm(4, 4))
            .cooled_at(NOW - 301_000)
            .wants(5, None),
        case("no change", add(0), by_alarm(1, 4)).wants(4, Some(Refusal::NoChange { current: 4 })),
        case("no change at max", add(3), by(Trigger::Api))
            .group(|g| g.max_size = 4)
            .wants(4, Some(Refusal::NoChange { current: 4 })),
        case(
            "an alarm's scale-in on incomplete data",
            add(-1),
            by_alarm(3, 4),
        )
        .wants(
            3,
            Some(Refusal::IncompleteData {
                answered: 3,
                in_service: 4,
            }),
        ),
        case(
            "an alarm's scale-out on incomplete data",
            add(1),
            by_alarm(3, 4),
        )
        .wants(5, None),
        case(
            "an alarm's scale-in on complete data",
            add(-1),
            by_alarm(4, 4),
        )
        .wants(3, None),
        case(
            "a predictive rule",
            RuleKind::predictive(Metric::CpuUtilization, 50.0),
            by(Trigger::Api),
        )
        .wants(4, Some(Refusal::PredictiveNotRun)),
        case(
            "target tracking with no metric",
            RuleKind::TargetTracking {
                metric: Metric::CpuUtilization,
                target_value: 50.0,
                disable_scale_in: false,
                estimated_instance_warmup_secs: 0,
                alarm_period: Default::default(),
                scale_in_stabilization_secs: 300,
            },
            by(Trigger::Api),
        )
        .wants(4, Some(Refusal::TargetNeedsMetric)),
    ];
    let instances = fleet(4);
    for c in cases {
        let snap = GroupSnapshot {
            group: &c.group,
            instances: &instances,
            running_activity: c.running,
            cooldown_start_ms: c.cooldown_start_ms,
        };
        let d = decide(&c.kind, &c.run, &snap, NOW);
        assert_eq!(d.from, 4, "{}", c.name);
        assert_eq!(d.to, c.want_to, "{}", c.name);
        assert_eq!(d.refusal, c.want, "{}", c.name);
    }
}

#[test]
fn refusals_read_as_sentences() {
    let table = [
        (
            Refusal::NotActive {
                group: "web".into(),
                state: GroupState::Inactive,
            },
            "the scaling group web is not active (Inactive)",
        ),
        (
            Refusal::Suspended(Process::ScaleIn),
            "the ScaleIn process of the group is suspended",
        ),
        (
            Refusal::ActivityRunning("asa-1".into()),
            "an activity is in progress (asa-1)",
        ),
        (
            Refusal::NoChange { current: 3 },
            "the total capacity will not change (it is 3)",
        ),
        (
            Refusal::Cooldown {
                until_ms: 300_000,
                secs: 300,
                last_end_ms: 0,
            },
            "the cooldown holds until 1970-01-01T00:05:00Z (300 s after the last activity ended at 1970-01-01T00:00:00Z)",
        ),
        (
            Refusal::IncompleteData {
                answered: 1,
                in_service: 3,
            },
            "a scale-in is never taken on incomplete data: 1 of 3 in-service instances answered",
        ),
    ];
    for (refusal, want) in table {
        assert_eq!(refusal.to_string(), want);
    }
}

fn target(value: f64) -> RuleKind {
    RuleKind::TargetTracking {
        metric: Metric::CpuUtilization,
        target_value: value,
        disable_scale_in: false,
        estimated_instance_warmup_secs: 300,
        alarm_period: Default::default(),
        scale_in_stabilization_secs: 300,
    }
}

fn tracked(metric: f64) -> RuleRun {
    RuleRun {
        metric_value: Some(metric),
        ..by_alarm(2, 2)
    }
}

/// Standby and Protected instances stay outside the metric, and the group's
/// bounds hold for the whole group: the others get what the bounds leave.
#[test]
fn target_tracking_adds_back_held_instances_inside_the_bounds() {
    let mut instances = fleet(2);
    instances.push(instance("standby", LifecycleState::Standby, Some(0)));
    instances.push(instance("protected", LifecycleState::Protected, Some(0)));
    let g = group(1, 5);
    let snap = GroupSnapshot {
        group: &g,
        instances: &instances,
        running_activity: None,
        cooldown_start_ms: None,
    };
    // 2 instances at 200 % of target want 4; with 2 held that is 6, over max 5.
    let d = decide(&target(50.0), &tracked(100.0), &snap, NOW);
    assert_eq!((d.from, d.to), (4, 5), "{:?}", d.details);
    assert!(
        d.details.iter().any(|l| l.contains("held to max_size 5")),
        "{:?}",
        d.details
    );
    // Below target: the two serving instances shrink to one, plus the held two.
    let d = decide(&target(50.0), &tracked(10.0), &snap, NOW);
    assert_eq!((d.from, d.to), (4, 3), "{:?}", d.details);
    // A min of 4 keeps the two serving instances: 2 + 2 held.
    let g = group(4, 5);
    let snap = GroupSnapshot { group: &g, ..snap };
    let d = decide(&target(50.0), &tracked(10.0), &snap, NOW);
    assert_eq!(d.to, 4, "{:?}", d.details);
    assert_eq!(d.refusal, Some(Refusal::NoChange { current: 4 }));
}

/// Instances still warming count as pending: they do not dilute the metric.
#[test]
fn target_tracking_counts_warming_instances_as_pending() {
    let mut instances = fleet(2);
    instances.push(instance(
        "new",
        LifecycleState::InService,
        Some(NOW - 10_000),
    ));
    instances.push(instance("booting", LifecycleState::Pending, None));
    let g = group(1, 10);
    let snap = GroupSnapshot {
        group: &g,
        instances: &instances,
        running_activity: None,
        cooldown_start_ms: None,
    };
    // 2 warm at 100 % of a 50 % target need 4, and 4 exist: hold.
    let d = decide(&target(50.0), &tracked(100.0), &snap, NOW);
    assert_eq!((d.from, d.to), (4, 4), "{:?}", d.details);
    // At 150 % they need 6.
    let d = decide(&target(50.0), &tracked(150.0), &snap, NOW);
    assert_eq!(d.to, 6, "{:?}", d.details);
}

#[test]
fn alarm_runs_explain_their_period() {
    let g = group(1, 10);
    let instances = fleet(2);
    let snap = GroupSnapshot {
        group: &g,
        instances: &instances,
        running_activity: None,
        cooldown_start_ms: None,
    };
    let d = decide(&add(1), &by_alarm(2, 2), &snap, NOW);
    assert_eq!(
        d.details,
        [
            "alarm: cpu ≥ 80",
            "period data: 2 of 2 in-service instances answered: [50.00, 50.00]",
            "rule: adding 1 to 2 gives 3: adds 1",
        ]
    );
}

#[test]
fn a_period_counts_in_service_instances_past_their_warmup() {
    use crate::rules::period_input;
    let end = 1_000_000;
    let instances = [
        instance("warm", LifecycleState::InService, Some(0)),
        instance("warming", LifecycleState::InService, Some(end - 100_000)),
        instance("booting", LifecycleState::Pending, None),
        instance("standby", LifecycleState::Standby, Some(0)),
        instance("silent", LifecycleState::InService, Some(0)),
    ];
    let mean = |i: &Instance| match i.id.as_str() {
        "silent" => None,
        "warm" => Some(70.0),
        _ => Some(10.0),
    };
    // A target-tracking alarm (300 s warmup) leaves the warming one out.
    let tt = period_input(&instances, Some(300), end, mean);
    assert_eq!((tt.in_service, tt.answered), (2, vec![70.0]));
    // Any other alarm counts it.
    let other = period_input(&instances, None, end, mean);
    assert_eq!((other.in_service, other.answered), (3, vec![70.0, 10.0]));
}

#[test]
fn a_forecast_floor_holds_scale_ins_only() {
    let d = |from, to| Decision {
        from,
        to,
        details: vec![],
        refusal: None,
    };
    let floor = Some(("forecast", 6));
    // A scale-in past the floor stops at it.
    let held = hold_at_floor(d(8, 4), floor);
    assert_eq!((held.to, held.refusal), (6, None));
    assert!(held.details[0].contains("holds the group at or above 6: 6 instead of 4"));
    // One the floor stops where it is is refused, naming the rule.
    let refused = hold_at_floor(d(6, 4), floor);
    assert_eq!(refused.to, 6);
    assert_eq!(
        refused.refusal.unwrap().to_string(),
        "the predictive rule `forecast` holds the group at or above 6 (its forecast floor)"
    );
    // Scale-outs, scale-ins above the floor, and no floor pass through.
    assert_eq!(hold_at_floor(d(4, 5), floor), d(4, 5));
    assert_eq!(hold_at_floor(d(9, 7), floor), d(9, 7));
    assert_eq!(hold_at_floor(d(8, 4), None), d(8, 4));
}
