//! Scaling rules: a definition in one line, the list and the describe block.

use ebb_proto::v1 as pb;
use serde::Serialize;

use super::text::{GroupNames, Table, fields, list, named, num};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    pub id: String,
    pub scaling_group_id: String,
    pub name: String,
    pub rule_type: String,
    /// Verbatim, as the API carries it.
    pub definition_json: String,
    pub owned_alarm_ids: Vec<String>,
}

impl From<&pb::ScalingRule> for RuleView {
    fn from(r: &pb::ScalingRule) -> Self {
        Self {
            id: r.id.clone(),
            scaling_group_id: r.scaling_group_id.clone(),
            name: r.name.clone(),
            rule_type: r.rule_type.clone(),
            definition_json: r.definition_json.clone(),
            owned_alarm_ids: r.owned_alarm_ids.clone(),
        }
    }
}

/// `+2`, `-1`, `+20%`, `=5`: an adjustment in its type's terms.
fn adjustment(adjustment_type: &str, v: i64) -> String {
    match adjustment_type {
        "PercentChangeInCapacity" => format!("{v:+}%"),
        "TotalCapacity" => format!("={v}"),
        _ => format!("{v:+}"),
    }
}

fn bound(b: Option<f64>, infinite: &str) -> String {
    b.map_or_else(|| infinite.to_owned(), num)
}

/// `[0, 10) +1; [10, ∞) +3`
fn steps_line(adjustment_type: &str, steps: &[ebb_core::rules::StepAdjustment]) -> String {
    steps
        .iter()
        .map(|s| {
            format!(
                "[{}, {}) {}",
                bound(s.lower_bound, "-∞"),
                bound(s.upper_bound, "∞"),
                adjustment(adjustment_type, s.adjustment)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A rule's definition in one line; the raw JSON if it does not parse.
pub fn rule_summary(r: &RuleView) -> String {
    use ebb_core::rules::{AlarmPeriod, RuleKind};
    let Ok(kind) = serde_json::from_str::<RuleKind>(&r.definition_json) else {
        return r.definition_json.clone();
    };
    let magnitude = |m: &Option<u32>| m.map(|m| format!(", at least {m}")).unwrap_or_default();
    match kind {
        RuleKind::Simple {
            adjustment_type,
            adjustment_value,
            min_adjustment_magnitude,
            cooldown_secs,
        } => format!(
            "{}{}{}",
            adjustment(adjustment_type.as_str(), adjustment_value),
            magnitude(&min_adjustment_magnitude),
            cooldown_secs
                .map(|c| format!(", cooldown {c}s"))
                .unwrap_or_default()
        ),
        RuleKind::Step {
            adjustment_type,
            step_adjustments,
            min_adjustment_magnitude,
            estimated_instance_warmup_secs,
        } => format!(
            "{}{}, warmup {estimated_instance_warmup_secs}s",
            steps_line(adjustment_type.as_str(), &step_adjustments),
            magnitude(&min_adjustment_magnitude)
        ),
        RuleKind::TargetTracking {
            metric,
            target_value,
            disable_scale_in,
            estimated_instance_warmup_secs,
            alarm_period,
            scale_in_stabilization_secs,
        } => format!(
            "{metric} at {}, warmup {estimated_instance_warmup_secs}s{}{}",
            num(target_value),
            if disable_scale_in {
                ", no scale-in".to_owned()
            } else {
                format!(", scale-in window {scale_in_stabilization_secs}s")
            },
            match alarm_period {
                AlarmPeriod::SamplingInterval => "",
                AlarmPeriod::Minute => ", per-minute alarms",
            }
        ),
        RuleKind::Predictive {
            metric,
            target_value,
            predictive_scaling_mode,
            predictive_value_behavior,
            predictive_value_buffer,
            predictive_task_buffer_secs,
        } => {
            let lead = predictive_task_buffer_secs
                .unwrap_or(ebb_core::rules::DEFAULT_INSTANCE_WARMUP_SECS);
            let buffer = predictive_value_buffer.map_or(String::new(), |b| format!(" +{b}%"));
            format!(
                "{metric} at {}, {predictive_scaling_mode}, lead {lead}s, {predictive_value_behavior}{buffer}",
                num(target_value)
            )
        }
    }
}

fn short_rule_type(t: &str) -> String {
    t.strip_suffix("ScalingRule").unwrap_or(t).to_owned()
}

pub fn rules_table(rules: &[RuleView]) -> String {
    let mut t = Table::new(&["ID", "NAME", "TYPE", "DEFINITION", "ALARMS"]);
    for r in rules {
        t.row(vec![
            r.id.clone(),
            r.name.clone(),
            short_rule_type(&r.rule_type),
            rule_summary(r),
            list(&r.owned_alarm_ids),
        ]);
    }
    t.render()
}

pub fn rule_fields(r: &RuleView, groups: &GroupNames) -> String {
    let mut pairs: Vec<(String, String)> = vec![
        ("id".into(), r.id.clone()),
        ("scaling_group".into(), named(groups, &r.scaling_group_id)),
        ("name".into(), r.name.clone()),
        ("rule_type".into(), r.rule_type.clone()),
    ];
    // The definition's own fields, one line each.
    match serde_json::from_str::<serde_json::Value>(&r.definition_json) {
        Ok(serde_json::Value::Object(map)) => {
            let adjustment_type = map
                .get("adjustment_type")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned();
            for (k, v) in map {
                if k == "rule_type" {
                    continue;
                }
                let shown = match (k.as_str(), &v) {
                    ("step_adjustments", _) => {
                        serde_json::from_value::<Vec<ebb_core::rules::StepAdjustment>>(v.clone())
                            .map_or_else(|_| v.to_string(), |s| steps_line(&adjustment_type, &s))
                    }
                    (_, serde_json::Value::Null) => "-".to_owned(),
                    (_, serde_json::Value::String(s)) => s.clone(),
                    _ => v.to_string(),
                };
                pairs.push((k, shown));
            }
        }
        _ => pairs.push(("definition_json".into(), r.definition_json.clone())),
    }
    pairs.push(("owned_alarm_ids".into(), list(&r.owned_alarm_ids)));
    let borrowed: Vec<(&str, String)> =
        pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    fields(&borrowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_in_one_line() {
        let r = |json: &str| {
            rule_summary(&RuleView::from(&pb::ScalingRule {
                definition_json: json.into(),
                ..Default::default()
            }))
        };
        assert_eq!(
            r(
                r#"{"rule_type":"SimpleScalingRule","adjustment_type":"QuantityChangeInCapacity","adjustment_value":2,"cooldown_secs":60}"#
            ),
            "+2, cooldown 60s"
        );
        assert_eq!(
            r(
                r#"{"rule_type":"StepScalingRule","adjustment_type":"PercentChangeInCapacity","step_adjustments":[{"lower_bound":0,"upper_bound":10,"adjustment":10},{"lower_bound":10,"adjustment":30}]}"#
            ),
            "[0, 10) +10%; [10, ∞) +30%, warmup 300s"
        );
        assert_eq!(
            r(
                r#"{"rule_type":"TargetTrackingScalingRule","metric":"CpuUtilization","target_value":50,"disable_scale_in":true}"#
            ),
            "CpuUtilization at 50, warmup 300s, no scale-in"
        );
        assert_eq!(r("not json"), "not json");
    }
}
