use super::*;

fn rule(kind: RuleKind) -> ScalingRule {
    ScalingRule {
        id: "asr-1".into(),
        group_id: "asg-1".into(),
        name: "add-2".into(),
        kind,
    }
}

fn simple(adjustment_value: i64, cooldown_secs: Option<u32>) -> RuleKind {
    RuleKind::Simple {
        adjustment_type: AdjustmentType::QuantityChangeInCapacity,
        adjustment_value,
        min_adjustment_magnitude: None,
        cooldown_secs,
    }
}

fn step(steps: Vec<StepAdjustment>) -> RuleKind {
    RuleKind::Step {
        adjustment_type: AdjustmentType::QuantityChangeInCapacity,
        step_adjustments: steps,
        min_adjustment_magnitude: None,
        estimated_instance_warmup_secs: DEFAULT_INSTANCE_WARMUP_SECS,
    }
}

fn tracking(metric: Metric, target_value: f64) -> RuleKind {
    RuleKind::TargetTracking {
        metric,
        target_value,
        disable_scale_in: false,
        estimated_instance_warmup_secs: DEFAULT_INSTANCE_WARMUP_SECS,
        alarm_period: Default::default(),
        scale_in_stabilization_secs: 300,
    }
}

fn s(lower: Option<f64>, upper: Option<f64>, adjustment: i64) -> StepAdjustment {
    StepAdjustment {
        lower_bound: lower,
        upper_bound: upper,
        adjustment,
    }
}

#[test]
fn rule_validation_table() {
    let cases: [(&str, ScalingRule, &[&str]); 17] = [
        ("simple", rule(simple(2, Some(60))), &[]),
        (
            "simple: cooldown above a day",
            rule(simple(2, Some(90_000))),
            &["cooldown_secs: 90000 is outside 0..=86400"],
        ),
        (
            "simple: zero change",
            rule(simple(0, None)),
            &["adjustment_value: a QuantityChangeInCapacity of 0 never changes the capacity"],
        ),
        (
            "bad name",
            ScalingRule {
                name: "x".into(),
                ..rule(simple(1, None))
            },
            &["name: must be 2 to 64 characters, got 1"],
        ),
        (
            "step",
            rule(step(vec![
                s(Some(0.0), Some(10.0), 1),
                s(Some(10.0), None, 3),
            ])),
            &[],
        ),
        (
            "step: overlap and a bad adjustment",
            rule(step(vec![
                s(Some(0.0), Some(10.0), 1),
                s(Some(5.0), None, 20_000),
            ])),
            &[
                "step_adjustments[1].lower_bound: 5 overlaps step 0, which runs to 10",
                "step_adjustments[1].adjustment: 20000 is outside -10000..=10000 for QuantityChangeInCapacity",
            ],
        ),
        (
            "step: a zero step is a valid dead band",
            rule(step(vec![
                s(Some(0.0), Some(10.0), 0),
                s(Some(10.0), None, 1),
            ])),
            &[],
        ),
        (
            "step: magnitude only with percent, warmup bound",
            rule(RuleKind::Step {
                adjustment_type: AdjustmentType::TotalCapacity,
                step_adjustments: vec![s(Some(0.0), None, 4)],
                min_adjustment_magnitude: Some(1),
                estimated_instance_warmup_secs: 100_000,
            }),
            &[
                "min_adjustment_magnitude: applies only to PercentChangeInCapacity, not TotalCapacity",
                "estimated_instance_warmup_secs: 100000 is outside 0..=86400",
            ],
        ),
        (
            "target tracking",
            rule(tracking(Metric::CpuUtilization, 60.0)),
            &[],
        ),
        (
            "target tracking: zero target",
            rule(tracking(Metric::CpuUtilization, 0.0)),
            &["target_value: must be above 0"],
        ),
        (
            "target tracking: NaN target",
            rule(tracking(Metric::LoadAverage, f64::NAN)),
            &["target_value: must be above 0"],
        ),
        (
            "target tracking: a percentage above 100",
            rule(tracking(Metric::MemoryUtilization, 120.0)),
            &[
                "target_value: 120 is above 100, which MemoryUtilization (a percentage) never reaches",
            ],
        ),
        (
            "target tracking: a stabilisation window above an hour",
            rule(RuleKind::TargetTracking {
                metric: Metric::CpuUtilization,
                target_value: 50.0,
                disable_scale_in: false,
                estimated_instance_warmup_secs: 0,
                alarm_period: AlarmPeriod::Minute,
                scale_in_stabilization_secs: 3601,
            }),
            &["scale_in_stabilization_secs: 3601 is outside 0..=3600"],
        ),
        (
            "target tracking: a custom metric may exceed 100",
            rule(tracking(Metric::Custom("queue_depth".into()), 500.0)),
            &[],
        ),
        (
            "predictive: every problem at once",
            rule(RuleKind::predictive(Metric::Custom(String::new()), -1.0)),
            &[
                "metric: a custom metric needs a name",
                "target_value: must be above 0",
            ],
        ),
        (
            "predictive: buffer and lead time out of range",
            rule(RuleKind::Predictive {
                metric: Metric::CpuUtilization,
                target_value: 50.0,
                predictive_scaling_mode: PredictiveMode::ForecastAndScale,
                predictive_value_behavior:
                    PredictiveValueBehavior::PredictiveValueOverrideMaxWithBuffer,
                predictive_value_buffer: Some(101),
                predictive_task_buffer_secs: Some(3_601),
            }),
            &[
                "predictive_value_buffer: 101 is outside 0..=100 (percent)",
                "predictive_task_buffer_secs: 3601 is outside 0..=3600",
            ],
        ),
        (
            "predictive: a buffer without the behaviour that reads it",
            rule(RuleKind::Predictive {
                metric: Metric::CpuUtilization,
                target_value: 50.0,
                predictive_scaling_mode: PredictiveMode::ForecastOnly,
                predictive_value_behavior: PredictiveValueBehavior::PredictiveValueOverrideMax,
                predictive_value_buffer: Some(10),
                predictive_task_buffer_secs: None,
            }),
            &[
                "predictive_value_buffer: applies only with predictive_value_behavior = PredictiveValueOverrideMaxWithBuffer, not PredictiveValueOverrideMax",
            ],
        ),
    ];
    for (name, r, want) in cases {
        let got: Vec<String> = match r.validate() {
            Ok(()) => vec![],
            Err(e) => {
                e.0.iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect()
            }
        };
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn rules_are_stored_with_ess_type_names_and_defaults() {
    let r: ScalingRule = serde_json::from_str(
        r#"{"id":"asr-1","group_id":"asg-1","name":"cpu-60",
            "rule_type":"TargetTrackingScalingRule",
            "metric":"CpuUtilization","target_value":60}"#,
    )
    .unwrap();
    assert_eq!(r.kind, tracking(Metric::CpuUtilization, 60.0));

    let r: ScalingRule = serde_json::from_str(
        r#"{"id":"asr-2","group_id":"asg-1","name":"steps",
            "rule_type":"StepScalingRule","adjustment_type":"PercentChangeInCapacity",
            "step_adjustments":[{"lower_bound":0,"adjustment":50}]}"#,
    )
    .unwrap();
    assert_eq!(
        r.kind,
        RuleKind::Step {
            adjustment_type: AdjustmentType::PercentChangeInCapacity,
            step_adjustments: vec![s(Some(0.0), None, 50)],
            min_adjustment_magnitude: None,
            estimated_instance_warmup_secs: 300,
        }
    );

    for kind in [
        simple(2, Some(60)),
        step(vec![s(None, Some(0.0), -1)]),
        tracking(Metric::Custom("rps".into()), 100.0),
        RuleKind::predictive(Metric::CpuUtilization, 50.0),
    ] {
        let r = rule(kind);
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["rule_type"].as_str().unwrap().ends_with("ScalingRule"));
        let back: ScalingRule = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }
}

#[test]
fn predictive_rules_stored_before_the_modes_load_with_defaults() {
    let r: ScalingRule = serde_json::from_str(
        r#"{"id":"asr-3","group_id":"asg-1","name":"forecast",
            "rule_type":"PredictiveScalingRule",
            "metric":"CpuUtilization","target_value":50}"#,
    )
    .unwrap();
    assert_eq!(r.kind, RuleKind::predictive(Metric::CpuUtilization, 50.0));
    assert_eq!(r.kind.predictive_lead_secs(), Some(300));
    let bad = serde_json::from_str::<ScalingRule>(
        r#"{"id":"asr-3","group_id":"asg-1","name":"forecast",
            "rule_type":"PredictiveScalingRule","metric":"CpuUtilization",
            "target_value":50,"predictive_scaling_mode":"PredictOnly"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("PredictOnly"), "{bad}");
}

#[test]
fn which_cooldown_holds_a_rule() {
    let cases = [
        ("simple, own cooldown", simple(1, Some(60)), 60),
        ("simple, group default", simple(1, None), 300),
        (
            "step holds for its warmup",
            step(vec![s(Some(0.0), None, 1)]),
            300,
        ),
        (
            "target tracking counts warming instances instead",
            tracking(Metric::CpuUtilization, 60.0),
            0,
        ),
    ];
    for (name, kind, want) in cases {
        assert_eq!(rule(kind).cooldown_secs(300), want, "{name}");
    }
}

#[test]
fn number_formatting_for_explanations() {
    let cases = [
        (80.0, "80"),
        (81.25, "81.25"),
        (0.1 + 0.2, "0.3"),
        (-0.0001, "0"),
        (-2.5, "-2.5"),
        (1e6, "1000000"),
    ];
    for (v, want) in cases {
        assert_eq!(num(v), want);
    }
}

#[test]
fn target_tracking_fields_default_and_refuse_unknown_values() {
    // A rule stored before the fields existed reads with ebb's defaults.
    let old: RuleKind = serde_json::from_str(
        r#"{"rule_type":"TargetTrackingScalingRule","metric":"CpuUtilization","target_value":50}"#,
    )
    .unwrap();
    let RuleKind::TargetTracking {
        alarm_period,
        scale_in_stabilization_secs,
        ..
    } = old
    else {
        panic!("{old:?}")
    };
    assert_eq!(
        (alarm_period, scale_in_stabilization_secs),
        (AlarmPeriod::SamplingInterval, 300)
    );
    let err = serde_json::from_str::<RuleKind>(
        r#"{"rule_type":"TargetTrackingScalingRule","metric":"CpuUtilization","target_value":50,"alarm_period":"Hourly"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("unknown variant `Hourly`, expected `SamplingInterval` or `Minute`"),
        "{err}"
    );
}
