//! The plan for the file's rules, alarms and scheduled tasks: each is
//! created or modified by name, and references to rules are checked.

use ebb_core::rules::RuleKind;
use ebb_proto::v1 as pb;

use super::diff::{differs, same_instant, show_list, show_num, show_opt_num, show_str};
use super::file::{ApplyFile, TaskDecl};
use super::step::{Change, State, Step};
use crate::automation::definition_json;

/// The rule a reference names: a rule of the file, or of the group (by
/// name or id). Returns its name.
fn rule_ref(file: &ApplyFile, rules: &[pb::ScalingRule], r: &str) -> Option<String> {
    if file.rules.iter().any(|x| x.name == r) {
        return Some(r.to_owned());
    }
    rules
        .iter()
        .find(|x| x.name == r || x.id == r)
        .map(|x| x.name.clone())
}

/// `apply --prune`: the group's scheduled tasks, alarms and rules the file
/// does not name, to delete (in that order, so nothing is deleted while
/// something left references it). An alarm a target-tracking rule owns
/// goes with its rule, so it is never listed by itself.
pub fn prune(file: &ApplyFile, state: &State) -> Vec<Step> {
    let group = &file.group.name;
    let mut steps = Vec::new();
    for t in &state.tasks {
        if !file.tasks.iter().any(|x| x.name == t.name) {
            steps.push(Step::DeleteTask {
                group: group.clone(),
                task: t.name.clone(),
            });
        }
    }
    for a in &state.alarms {
        if a.owner_rule_id.is_empty() && !file.alarms.iter().any(|x| x.name == a.name) {
            steps.push(Step::DeleteAlarm {
                group: group.clone(),
                alarm: a.name.clone(),
            });
        }
    }
    // A rule the file's alarms or tasks still run stays, declared or not.
    let referenced = |r: &pb::ScalingRule| {
        let names = |x: &String| *x == r.name || *x == r.id;
        file.alarms
            .iter()
            .any(|a| a.alarm_actions.iter().any(names))
            || file
                .tasks
                .iter()
                .any(|t| t.scaling_rule.as_ref().is_some_and(names))
    };
    for r in &state.rules {
        if !file.rules.iter().any(|x| x.name == r.name) && !referenced(r) {
            steps.push(Step::DeleteRule {
                group: group.clone(),
                rule: r.name.clone(),
            });
        }
    }
    steps
}

pub(super) fn plan_automation(
    file: &ApplyFile,
    state: &State,
    steps: &mut Vec<Step>,
) -> Result<(), String> {
    let group = file.group.name.clone();
    let rule_name = |id: &str| {
        state
            .rules
            .iter()
            .find(|r| r.id == id)
            .map_or_else(|| id.to_owned(), |r| r.name.clone())
    };
    for r in &file.rules {
        let json = definition_json(&r.kind);
        match state.rules.iter().find(|x| x.name == r.name) {
            None => steps.push(Step::CreateRule(pb::CreateScalingRuleRequest {
                scaling_group: group.clone(),
                name: r.name.clone(),
                definition_json: json,
            })),
            Some(current) => {
                let changes = rule_changes(&current.definition_json, &r.kind);
                if !changes.is_empty() {
                    steps.push(Step::ModifyRule {
                        changes,
                        request: pb::ModifyScalingRuleRequest {
                            scaling_rule: r.name.clone(),
                            scaling_group: group.clone(),
                            name: None,
                            definition_json: Some(json),
                        },
                    });
                }
            }
        }
    }
    for a in &file.alarms {
        // Every action must name a rule of the file or of the group.
        let mut wanted = Vec::new();
        for action in &a.alarm_actions {
            wanted.push(rule_ref(file, &state.rules, action).ok_or_else(|| {
                format!(
                    "alarm {}: action `{action}` names no rule in the file or in group {group}",
                    a.name
                )
            })?);
        }
        match state.alarms.iter().find(|x| x.name == a.name) {
            None => steps.push(Step::CreateAlarm(pb::CreateAlarmRequest {
                scaling_group: group.clone(),
                name: a.name.clone(),
                metric: a.metric.clone(),
                statistic: a.statistic.clone(),
                period_secs: a.period_secs,
                comparison_operator: a.comparison_operator.clone(),
                threshold: a.threshold,
                evaluation_count: a.evaluation_count,
                missing_data: a.missing_data.clone(),
                alarm_actions: a.alarm_actions.clone(),
                enabled: Some(a.enabled),
            })),
            Some(current) => {
                let mut changes = Vec::new();
                let mut current_actions: Vec<String> = current
                    .alarm_actions
                    .iter()
                    .map(|id| rule_name(id))
                    .collect();
                current_actions.sort();
                let mut sorted = wanted.clone();
                sorted.sort();
                let actions_differ = sorted != current_actions;
                if actions_differ {
                    changes.push(Change {
                        field: "alarm_actions",
                        from: show_list(&current_actions),
                        to: show_list(&sorted),
                    });
                }
                let request = pb::ModifyAlarmRequest {
                    alarm: a.name.clone(),
                    scaling_group: group.clone(),
                    name: None,
                    metric: differs(
                        &mut changes,
                        "metric",
                        Some(&a.metric),
                        &current.metric,
                        |s| s.clone(),
                    ),
                    statistic: differs(
                        &mut changes,
                        "statistic",
                        Some(&a.statistic),
                        &current.statistic,
                        |s| s.clone(),
                    ),
                    period_secs: differs(
                        &mut changes,
                        "period_secs",
                        Some(&a.period_secs),
                        &current.period_secs,
                        |v| v.to_string(),
                    ),
                    comparison_operator: differs(
                        &mut changes,
                        "comparison_operator",
                        Some(&a.comparison_operator),
                        &current.comparison_operator,
                        |s| s.clone(),
                    ),
                    threshold: differs(
                        &mut changes,
                        "threshold",
                        Some(&a.threshold),
                        &current.threshold,
                        show_num,
                    ),
                    evaluation_count: differs(
                        &mut changes,
                        "evaluation_count",
                        a.evaluation_count.as_ref(),
                        &current.evaluation_count,
                        |v| v.to_string(),
                    ),
                    missing_data: differs(
                        &mut changes,
                        "missing_data",
                        a.missing_data.as_ref(),
                        &current.missing_data,
                        |s| s.clone(),
                    ),
                    alarm_actions: if actions_differ {
                        a.alarm_actions.clone()
                    } else {
                        Vec::new()
                    },
                };
                // Field order in the line follows the request, actions last.
                changes.rotate_left(usize::from(actions_differ));
                if !changes.is_empty() {
                    steps.push(Step::ModifyAlarm { changes, request });
                }
                if current.enabled != a.enabled {
                    steps.push(Step::SetAlarmEnabled {
                        group: group.clone(),
                        alarm: a.name.clone(),
                        enabled: a.enabled,
                    });
                }
            }
        }
    }
    for t in &file.tasks {
        let rule = match &t.scaling_rule {
            Some(r) => Some(rule_ref(file, &state.rules, r).ok_or_else(|| {
                format!(
                    "task {}: scaling_rule `{r}` names no rule in the file or in group {group}",
                    t.name
                )
            })?),
            None => None,
        };
        match state.tasks.iter().find(|x| x.name == t.name) {
            None => steps.push(Step::CreateTask(pb::CreateScheduledTaskRequest {
                scaling_group: group.clone(),
                name: t.name.clone(),
                launch_time: t.launch_time.clone(),
                recurrence_type: t.recurrence_type.clone().unwrap_or_default(),
                recurrence_value: t.recurrence_value.clone().unwrap_or_default(),
                time_zone: t.time_zone.clone().unwrap_or_default(),
                recurrence_end_time: t.recurrence_end_time.clone().unwrap_or_default(),
                launch_expiration_secs: t.launch_expiration_secs,
                enabled: Some(t.enabled),
                scaling_rule: t.scaling_rule.clone().unwrap_or_default(),
                min_size: t.min_size,
                max_size: t.max_size,
                desired_capacity: t.desired_capacity,
            })),
            Some(current) => {
                if let Some(step) = modify_task(t, rule.as_deref(), current, &group, &rule_name) {
                    steps.push(step);
                }
            }
        }
    }
    Ok(())
}

/// The fields of a rule's definition that differ; one `definition_json`
/// change if the current one cannot be read.
fn rule_changes(current_json: &str, wanted: &RuleKind) -> Vec<Change> {
    let Ok(current) = serde_json::from_str::<RuleKind>(current_json) else {
        return vec![Change {
            field: "definition_json",
            from: current_json.to_owned(),
            to: definition_json(wanted),
        }];
    };
    if current == *wanted {
        return Vec::new();
    }
    let (Ok(serde_json::Value::Object(from)), Ok(serde_json::Value::Object(to))) =
        (serde_json::to_value(&current), serde_json::to_value(wanted))
    else {
        return Vec::new();
    };
    // Field names are 'static for `Change`; the definition's are a known set.
    const FIELDS: &[&str] = &[
        "rule_type",
        "adjustment_type",
        "adjustment_value",
        "min_adjustment_magnitude",
        "cooldown_secs",
        "step_adjustments",
        "estimated_instance_warmup_secs",
        "metric",
        "target_value",
        "disable_scale_in",
        "alarm_period",
        "scale_in_stabilization_secs",
    ];
    let show = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => "-".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    FIELDS
        .iter()
        .filter(|f| from.get(**f) != to.get(**f))
        .map(|f| Change {
            field: f,
            from: show(from.get(*f)),
            to: show(to.get(*f)),
        })
        .collect()
}

fn modify_task(
    t: &TaskDecl,
    rule: Option<&str>,
    current: &pb::ScheduledTask,
    group: &str,
    rule_name: &dyn Fn(&str) -> String,
) -> Option<Step> {
    let mut changes = Vec::new();
    let mut request = pb::ModifyScheduledTaskRequest {
        scheduled_task: t.name.clone(),
        scaling_group: group.to_owned(),
        ..Default::default()
    };
    if !same_instant(&t.launch_time, &current.launch_time) {
        changes.push(Change {
            field: "launch_time",
            from: current.launch_time.clone(),
            to: t.launch_time.clone(),
        });
        request.launch_time = Some(t.launch_time.clone());
    }
    if let Some(kind) = &t.recurrence_type {
        let norm = |s: &str| {
            if s.is_empty() {
                "None".to_owned()
            } else {
                s.to_owned()
            }
        };
        let value = t.recurrence_value.clone().unwrap_or_default();
        if norm(kind) != norm(&current.recurrence_type) || value != current.recurrence_value {
            changes.push(Change {
                field: "recurrence",
                from: format!(
                    "{} {:?}",
                    norm(&current.recurrence_type),
                    current.recurrence_value
                ),
                to: format!("{} {value:?}", norm(kind)),
            });
            request.recurrence_type = Some(kind.clone());
            request.recurrence_value = Some(value);
        }
    } else if let Some(value) = &t.recurrence_value {
        request.recurrence_value = differs(
            &mut changes,
            "recurrence_value",
            Some(value),
            &current.recurrence_value,
            |s| show_str(s),
        );
    }
    if let Some(tz) = &t.time_zone {
        let norm = |s: &str| {
            if s.is_empty() {
                "UTC".to_owned()
            } else {
                s.to_owned()
            }
        };
        if norm(tz) != norm(&current.time_zone) {
            changes.push(Change {
                field: "time_zone",
                from: norm(&current.time_zone),
                to: tz.clone(),
            });
            request.time_zone = Some(tz.clone());
        }
    }
    if let Some(end) = &t.recurrence_end_time
        && !same_instant(end, &current.recurrence_end_time)
    {
        changes.push(Change {
            field: "recurrence_end_time",
            from: if current.recurrence_end_time.is_empty() {
                "-".to_owned()
            } else {
                current.recurrence_end_time.clone()
            },
            to: end.clone(),
        });
        request.recurrence_end_time = Some(end.clone());
    }
    request.launch_expiration_secs = differs(
        &mut changes,
        "launch_expiration_secs",
        t.launch_expiration_secs.as_ref(),
        &current.launch_expiration_secs,
        |v| v.to_string(),
    );
    request.enabled = differs(
        &mut changes,
        "enabled",
        Some(&t.enabled),
        &current.enabled,
        |b| b.to_string(),
    );
    match rule {
        Some(name) => {
            let current_rule =
                (!current.scaling_rule_id.is_empty()).then(|| rule_name(&current.scaling_rule_id));
            if current_rule.as_deref() != Some(name) {
                changes.push(Change {
                    field: "scaling_rule",
                    from: current_rule.unwrap_or_else(|| "-".to_owned()),
                    to: name.to_owned(),
                });
                request.scaling_rule = Some(name.to_owned());
            }
        }
        None => {
            // Switching from a rule to bounds clears the rule.
            if !current.scaling_rule_id.is_empty() {
                changes.push(Change {
                    field: "scaling_rule",
                    from: rule_name(&current.scaling_rule_id),
                    to: "-".to_owned(),
                });
                request.scaling_rule = Some(String::new());
            }
            for (field, wanted, now, slot) in [
                (
                    "min_size",
                    t.min_size,
                    current.min_size,
                    &mut request.min_size,
                ),
                (
                    "max_size",
                    t.max_size,
                    current.max_size,
                    &mut request.max_size,
                ),
                (
                    "desired_capacity",
                    t.desired_capacity,
                    current.desired_capacity,
                    &mut request.desired_capacity,
                ),
            ] {
                if wanted.is_some() && wanted != now {
                    changes.push(Change {
                        field,
                        from: show_opt_num(&now),
                        to: show_opt_num(&wanted),
                    });
                    *slot = wanted;
                }
            }
        }
    }
    (!changes.is_empty()).then_some(Step::ModifyTask { changes, request })
}
