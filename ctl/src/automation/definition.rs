//! A rule's definition built from `rule create` and `rule modify` flags,
//! or given as JSON, checked with the domain's rules; the server takes
//! exactly the JSON of `ebb_core::rules::RuleKind`.

use ebb_core::rules::target::DEFAULT_STABILIZATION_SECS;
use ebb_core::rules::{AdjustmentType, AlarmPeriod, Metric, RuleKind, ScalingRule, StepAdjustment};

use crate::cli::RuleDef;

/// The three kinds a rule can be built as from flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Simple,
    Step,
    TargetTracking,
}

impl Kind {
    fn of(k: &RuleKind) -> Option<Kind> {
        match k {
            RuleKind::Simple { .. } => Some(Kind::Simple),
            RuleKind::Step { .. } => Some(Kind::Step),
            RuleKind::TargetTracking { .. } => Some(Kind::TargetTracking),
            RuleKind::Predictive { .. } => None,
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Kind::Simple => "--simple",
            Kind::Step => "--step",
            Kind::TargetTracking => "--target-tracking",
        }
    }
}

/// Every problem with a definition, the domain's own checks, as one line.
pub fn validate_kind(kind: &RuleKind) -> Result<(), String> {
    let rule = ScalingRule {
        id: String::new(),
        group_id: String::new(),
        name: "rule".to_owned(),
        kind: kind.clone(),
    };
    rule.validate().map_err(|e| e.to_string())
}

/// A definition given as JSON, checked.
pub fn parse_definition(json: &str) -> Result<RuleKind, String> {
    let kind: RuleKind =
        serde_json::from_str(json).map_err(|e| format!("not a rule definition: {e}"))?;
    validate_kind(&kind)?;
    Ok(kind)
}

/// The definition the flags describe. `base` is the rule's current
/// definition (modify): flags left out keep its values when the kind stays.
/// `None` when the flags say nothing about the definition.
pub fn build_definition(
    def: &RuleDef,
    base: Option<&RuleKind>,
) -> Result<Option<RuleKind>, String> {
    if let Some(json) = &def.definition_json {
        return parse_definition(json)
            .map(Some)
            .map_err(|e| format!("--definition-json: {e}"));
    }
    let chosen = if def.simple {
        Some(Kind::Simple)
    } else if !def.steps.is_empty() {
        Some(Kind::Step)
    } else if def.target_tracking {
        Some(Kind::TargetTracking)
    } else {
        None
    };
    let given: [(&str, bool, &[Kind]); 10] = [
        (
            "--adjustment-type",
            def.adjustment_type.is_some(),
            &[Kind::Simple, Kind::Step],
        ),
        (
            "--adjustment-value",
            def.adjustment_value.is_some(),
            &[Kind::Simple],
        ),
        (
            "--min-adjustment-magnitude",
            def.min_adjustment_magnitude.is_some(),
            &[Kind::Simple, Kind::Step],
        ),
        ("--cooldown", def.cooldown.is_some(), &[Kind::Simple]),
        (
            "--warmup",
            def.warmup.is_some(),
            &[Kind::Step, Kind::TargetTracking],
        ),
        ("--metric", def.metric.is_some(), &[Kind::TargetTracking]),
        ("--target", def.target.is_some(), &[Kind::TargetTracking]),
        (
            "--disable-scale-in",
            def.disable_scale_in.is_some(),
            &[Kind::TargetTracking],
        ),
        (
            "--alarm-period",
            def.alarm_period.is_some(),
            &[Kind::TargetTracking],
        ),
        (
            "--scale-in-stabilization",
            def.scale_in_stabilization.is_some(),
            &[Kind::TargetTracking],
        ),
    ];
    let any_field = given.iter().any(|(_, g, _)| *g);
    let base_kind = base.and_then(Kind::of);
    let kind = match (chosen, base_kind) {
        (Some(k), _) => k,
        (None, Some(k)) if any_field => k,
        (None, _) if base.is_some() && !any_field => return Ok(None),
        (None, None) if base.is_some() => {
            return Err(
                "this rule's kind has no flags; give the whole definition with --definition-json"
                    .to_owned(),
            );
        }
        (None, _) => {
            return Err(
                "say which kind of rule: --simple, --step, --target-tracking or --definition-json"
                    .to_owned(),
            );
        }
    };
    for (flag, is_given, kinds) in given {
        if is_given && !kinds.contains(&kind) {
            return Err(format!(
                "{flag} does not apply to a {} rule",
                kind.flag().trim_start_matches("--")
            ));
        }
    }
    // The base's values, when it is the same kind.
    let base = base.filter(|b| Kind::of(b) == Some(kind));
    let adjustment_type = || -> Result<AdjustmentType, String> {
        if let Some(t) = &def.adjustment_type {
            return t.parse::<AdjustmentType>();
        }
        match base {
            Some(
                RuleKind::Simple {
                    adjustment_type, ..
                }
                | RuleKind::Step {
                    adjustment_type, ..
                },
            ) => Ok(*adjustment_type),
            _ => Err(format!("a {} rule needs --adjustment-type", kind.flag())),
        }
    };
    let kind = match kind {
        Kind::Simple => {
            let (value, magnitude, cooldown) = match base {
                Some(RuleKind::Simple {
                    adjustment_value,
                    min_adjustment_magnitude,
                    cooldown_secs,
                    ..
                }) => (
                    Some(*adjustment_value),
                    *min_adjustment_magnitude,
                    *cooldown_secs,
                ),
                _ => (None, None, None),
            };
            RuleKind::Simple {
                adjustment_type: adjustment_type()?,
                adjustment_value: def
                    .adjustment_value
                    .or(value)
                    .ok_or("a --simple rule needs --adjustment-value")?,
                min_adjustment_magnitude: def.min_adjustment_magnitude.or(magnitude),
                cooldown_secs: def.cooldown.or(cooldown),
            }
        }
        Kind::Step => {
            let steps: Vec<StepAdjustment> = def.steps.iter().filter_map(|s| s.0).collect();
            let (base_steps, magnitude, warmup) = match base {
                Some(RuleKind::Step {
                    step_adjustments,
                    min_adjustment_magnitude,
                    estimated_instance_warmup_secs,
                    ..
                }) => (
                    step_adjustments.clone(),
                    *min_adjustment_magnitude,
                    Some(*estimated_instance_warmup_secs),
                ),
                _ => (Vec::new(), None, None),
            };
            let step_adjustments = if steps.is_empty() { base_steps } else { steps };
            if step_adjustments.is_empty() {
                return Err(
                    "a --step rule needs at least one --step LOWER:UPPER:ADJ (e.g. 0:10:1 10::3)"
                        .to_owned(),
                );
            }
            RuleKind::Step {
                adjustment_type: adjustment_type()?,
                step_adjustments,
                min_adjustment_magnitude: def.min_adjustment_magnitude.or(magnitude),
                estimated_instance_warmup_secs: def
                    .warmup
                    .or(warmup)
                    .unwrap_or(ebb_core::rules::DEFAULT_INSTANCE_WARMUP_SECS),
            }
        }
        Kind::TargetTracking => {
            let (metric, target, disable, warmup, period, window) = match base {
                Some(RuleKind::TargetTracking {
                    metric,
                    target_value,
                    disable_scale_in,
                    estimated_instance_warmup_secs,
                    alarm_period,
                    scale_in_stabilization_secs,
                }) => (
                    Some(metric.clone()),
                    Some(*target_value),
                    *disable_scale_in,
                    Some(*estimated_instance_warmup_secs),
                    *alarm_period,
                    *scale_in_stabilization_secs,
                ),
                _ => (
                    None,
                    None,
                    false,
                    None,
                    AlarmPeriod::default(),
                    DEFAULT_STABILIZATION_SECS,
                ),
            };
            let alarm_period = match def.alarm_period.as_deref() {
                None => period,
                Some("Minute") => AlarmPeriod::Minute,
                Some(_) => AlarmPeriod::SamplingInterval,
            };
            RuleKind::TargetTracking {
                metric: def
                    .metric
                    .clone()
                    .map(Metric::from)
                    .or(metric)
                    .ok_or("a --target-tracking rule needs --metric")?,
                target_value: def
                    .target
                    .or(target)
                    .ok_or("a --target-tracking rule needs --target")?,
                disable_scale_in: def.disable_scale_in.unwrap_or(disable),
                estimated_instance_warmup_secs: def
                    .warmup
                    .or(warmup)
                    .unwrap_or(ebb_core::rules::DEFAULT_INSTANCE_WARMUP_SECS),
                alarm_period,
                scale_in_stabilization_secs: def.scale_in_stabilization.unwrap_or(window),
            }
        }
    };
    validate_kind(&kind)?;
    Ok(Some(kind))
}

/// The JSON the server stores: `RuleKind` tagged with `rule_type`.
pub fn definition_json(kind: &RuleKind) -> String {
    serde_json::to_string(kind).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, RuleCmd};
    use clap::Parser;

    fn def(args: &[&str]) -> RuleDef {
        let mut argv = vec!["ebbctl", "rule", "create", "--group", "web", "--name", "r1"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Rule(RuleCmd::Create(c)) = cli.command else {
            panic!("parsed {:?}", cli.command)
        };
        c.def
    }

    fn json(args: &[&str]) -> serde_json::Value {
        let kind = build_definition(&def(args), None).unwrap().unwrap();
        serde_json::from_str(&definition_json(&kind)).unwrap()
    }

    #[test]
    fn a_simple_rule_is_the_servers_json() {
        assert_eq!(
            json(&[
                "--simple",
                "--adjustment-type",
                "QuantityChangeInCapacity",
                "--adjustment-value",
                "2",
                "--cooldown",
                "60",
            ]),
            serde_json::json!({
                "rule_type": "SimpleScalingRule",
                "adjustment_type": "QuantityChangeInCapacity",
                "adjustment_value": 2,
                "min_adjustment_magnitude": null,
                "cooldown_secs": 60,
            })
        );
        // A negative value is a value, not a flag.
        let j = json(&[
            "--simple",
            "--adjustment-type",
            "QuantityChangeInCapacity",
            "--adjustment-value",
            "-1",
        ]);
        assert_eq!(j["adjustment_value"], -1);
    }

    #[test]
    fn a_step_rule_takes_bare_and_valued_step_flags() {
        let j = json(&[
            "--step",
            "--adjustment-type",
            "QuantityChangeInCapacity",
            "--step",
            "0:10:1",
            "--step",
            "10::3",
            "--warmup",
            "120",
        ]);
        assert_eq!(j["rule_type"], "StepScalingRule");
        assert_eq!(
            j["step_adjustments"],
            serde_json::json!([
                {"lower_bound": 0.0, "upper_bound": 10.0, "adjustment": 1},
                {"lower_bound": 10.0, "upper_bound": null, "adjustment": 3},
            ])
        );
        assert_eq!(j["estimated_instance_warmup_secs"], 120);
        // Negative bounds through the = form.
        let j = json(&[
            "--adjustment-type",
            "QuantityChangeInCapacity",
            "--step=-10:0:-1",
            "--step=:-10:-2",
        ]);
        assert_eq!(j["step_adjustments"][1]["adjustment"], -2);
        // A bare --step alone has no steps.
        let err = build_definition(
            &def(&["--step", "--adjustment-type", "QuantityChangeInCapacity"]),
            None,
        )
        .unwrap_err();
        assert!(err.contains("at least one --step"), "{err}");
    }

    #[test]
    fn a_gap_between_steps_is_the_domains_error() {
        let err = build_definition(
            &def(&[
                "--adjustment-type",
                "QuantityChangeInCapacity",
                "--step",
                "0:10:1",
                "--step",
                "20::3",
            ]),
            None,
        )
        .unwrap_err();
        assert!(err.contains("step_adjustments"), "{err}");
    }

    #[test]
    fn a_target_tracking_rule_takes_its_alarm_period_and_window() {
        let tt = [
            "--target-tracking",
            "--metric",
            "CpuUtilization",
            "--target",
            "50",
        ];
        let j = json(
            &[
                &tt[..],
                &["--alarm-period", "Minute", "--scale-in-stabilization", "0"],
            ]
            .concat(),
        );
        assert_eq!(
            (&j["alarm_period"], &j["scale_in_stabilization_secs"]),
            (&serde_json::json!("Minute"), &serde_json::json!(0))
        );
        let err = build_definition(
            &def(&[&tt[..], &["--scale-in-stabilization", "4000"]].concat()),
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("scale_in_stabilization_secs: 4000 is outside 0..=3600"),
            "{err}"
        );
        let mut argv = vec!["ebbctl", "rule", "create", "--group", "web", "--name", "r1"];
        argv.extend_from_slice(&tt);
        argv.extend_from_slice(&["--alarm-period", "Hourly"]);
        let err = Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(
            err.contains("invalid value 'Hourly' for '--alarm-period <P>'"),
            "{err}"
        );
        // Only target tracking has them.
        let err = build_definition(
            &def(&[
                "--simple",
                "--adjustment-value",
                "1",
                "--alarm-period",
                "Minute",
            ]),
            None,
        )
        .unwrap_err();
        assert!(err.contains("--alarm-period"), "{err}");
    }

    #[test]
    fn a_target_tracking_rule_defaults_its_warmup() {
        let j = json(&[
            "--target-tracking",
            "--metric",
            "CpuUtilization",
            "--target",
            "50",
            "--disable-scale-in",
        ]);
        assert_eq!(
            j,
            serde_json::json!({
                "rule_type": "TargetTrackingScalingRule",
                "metric": "CpuUtilization",
                "target_value": 50.0,
                "disable_scale_in": true,
                "estimated_instance_warmup_secs": 300,
                "alarm_period": "SamplingInterval",
                "scale_in_stabilization_secs": 300,
            })
        );
        let err = build_definition(
            &def(&[
                "--target-tracking",
                "--metric",
                "CpuUtilization",
                "--target",
                "150",
            ]),
            None,
        )
        .unwrap_err();
        assert!(err.contains("target_value"), "{err}");
    }

    #[test]
    fn definition_json_is_checked_and_passed_through() {
        let j = json(&[
            "--definition-json",
            r#"{"rule_type":"SimpleScalingRule","adjustment_type":"TotalCapacity","adjustment_value":4}"#,
        ]);
        assert_eq!(j["adjustment_value"], 4);
        let err = build_definition(
            &def(&["--definition-json", r#"{"rule_type":"Nope"}"#]),
            None,
        )
        .unwrap_err();
        assert!(
            err.starts_with("--definition-json: not a rule definition"),
            "{err}"
        );
    }

    #[test]
    fn missing_kind_fields_and_foreign_flags_are_named() {
        let err = build_definition(&def(&["--adjustment-value", "1"]), None).unwrap_err();
        assert!(err.contains("say which kind"), "{err}");
        let err = build_definition(
            &def(&["--simple", "--adjustment-type", "TotalCapacity"]),
            None,
        )
        .unwrap_err();
        assert!(err.contains("--adjustment-value"), "{err}");
        let err = build_definition(
            &def(&[
                "--target-tracking",
                "--metric",
                "CpuUtilization",
                "--target",
                "50",
                "--cooldown",
                "5",
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(err, "--cooldown does not apply to a target-tracking rule");
    }

    #[test]
    fn kinds_are_exclusive_usage_errors() {
        for args in [
            &["--simple", "--target-tracking"][..],
            &["--simple", "--step", "0::1"],
            &["--definition-json", "{}", "--metric", "X"],
        ] {
            let mut argv = vec!["ebbctl", "rule", "create", "--group", "g", "--name", "r"];
            argv.extend_from_slice(args);
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn modify_merges_the_flags_into_the_current_definition() {
        let base = RuleKind::Simple {
            adjustment_type: AdjustmentType::QuantityChangeInCapacity,
            adjustment_value: 2,
            min_adjustment_magnitude: None,
            cooldown_secs: Some(60),
        };
        let d = RuleDef {
            adjustment_value: Some(3),
            ..Default::default()
        };
        assert_eq!(
            build_definition(&d, Some(&base)).unwrap(),
            Some(RuleKind::Simple {
                adjustment_type: AdjustmentType::QuantityChangeInCapacity,
                adjustment_value: 3,
                min_adjustment_magnitude: None,
                cooldown_secs: Some(60),
            })
        );
        // Only a rename: no definition.
        assert_eq!(
            build_definition(&RuleDef::default(), Some(&base)).unwrap(),
            None
        );
        // A change of kind needs that kind's fields.
        let d = RuleDef {
            target_tracking: true,
            metric: Some("CpuUtilization".into()),
            ..Default::default()
        };
        assert!(
            build_definition(&d, Some(&base))
                .unwrap_err()
                .contains("--target")
        );
    }
}
