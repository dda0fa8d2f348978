//! The `rule`, `scale`, `alarm` and `task` families, and the pure pieces
//! they share with `apply`: step and recurrence flags, and the rule
//! definition JSON built from flags (the server takes exactly the JSON of
//! `ebb_core::rules::RuleKind`).

use ebb_core::rules::{AdjustmentType, Metric, RuleKind, ScalingRule, StepAdjustment};
use ebb_core::schedule;
use ebb_proto::v1 as pb;

use crate::cli::{
    AlarmCmd, RuleCmd, RuleDef, ScaleArgs, TaskCmd, TaskCreate, TaskModify, to_schedule_recurrence,
};
use crate::conn::Admin;
use crate::error::{Error, Result};
use crate::lookup::{group_names, rule_names};
use crate::output::{Output, done, print_json};
use crate::view::{self, ActivityView, AlarmView, RuleView, TaskView};

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
    let given: [(&str, bool, &[Kind]); 8] = [
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
            let (metric, target, disable, warmup) = match base {
                Some(RuleKind::TargetTracking {
                    metric,
                    target_value,
                    disable_scale_in,
                    estimated_instance_warmup_secs,
                }) => (
                    Some(metric.clone()),
                    Some(*target_value),
                    *disable_scale_in,
                    Some(*estimated_instance_warmup_secs),
                ),
                _ => (None, None, false, None),
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

/// Usage problems of these families that need no connection.
pub fn check_rule(cmd: &RuleCmd) -> Result<()> {
    match cmd {
        RuleCmd::Create(c) => {
            build_definition(&c.def, None)
                .map_err(|e| Error::Usage(format!("rule create: {e}")))?;
        }
        RuleCmd::Modify(m) => {
            if let Some(json) = &m.def.definition_json {
                parse_definition(json)
                    .map_err(|e| Error::Usage(format!("rule modify: --definition-json: {e}")))?;
            }
            let d = &m.def;
            let empty = m.name.is_none()
                && !d.simple
                && d.steps.is_empty()
                && !d.target_tracking
                && d.definition_json.is_none()
                && d.adjustment_type.is_none()
                && d.adjustment_value.is_none()
                && d.min_adjustment_magnitude.is_none()
                && d.cooldown.is_none()
                && d.warmup.is_none()
                && d.metric.is_none()
                && d.target.is_none()
                && d.disable_scale_in.is_none();
            if empty {
                return Err(Error::Usage(
                    "rule modify: nothing to change; give at least one flag (see ebbctl rule modify --help)"
                        .to_owned(),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

pub fn check_alarm(cmd: &AlarmCmd) -> Result<()> {
    match cmd {
        AlarmCmd::Create(c) if c.actions.len() > 5 => Err(Error::Usage(format!(
            "alarm create: at most 5 --action rules, got {}",
            c.actions.len()
        ))),
        AlarmCmd::Modify(m) if m.is_empty() => Err(Error::Usage(
            "alarm modify: nothing to change; give at least one flag (see ebbctl alarm modify --help)"
                .to_owned(),
        )),
        AlarmCmd::Modify(m) if m.actions.len() > 5 => Err(Error::Usage(format!(
            "alarm modify: at most 5 --action rules, got {}",
            m.actions.len()
        ))),
        _ => Ok(()),
    }
}

pub fn check_task(cmd: &TaskCmd) -> Result<()> {
    match cmd {
        TaskCmd::Modify(m) if m.is_empty() => Err(Error::Usage(
            "task modify: nothing to change; give at least one flag (see ebbctl task modify --help)"
                .to_owned(),
        )),
        TaskCmd::Create(c) => check_schedule(c).map_err(|e| Error::Usage(format!("task create: {e}"))),
        _ => Ok(()),
    }
}

/// The domain's schedule checks on `task create`'s flags.
fn check_schedule(c: &TaskCreate) -> Result<(), String> {
    let recurrence = c.when.recurrence.clone().unwrap_or_default();
    let schedule = schedule::Schedule {
        launch_time: c
            .launch_time
            .parse()
            .map_err(|e| format!("--launch-time: {e}"))?,
        recurrence: to_schedule_recurrence(
            &recurrence.recurrence_type,
            &recurrence.recurrence_value,
        )?,
        time_zone: c.when.time_zone.clone().unwrap_or_else(|| "UTC".to_owned()),
        recurrence_end_time: match &c.when.end_time {
            Some(t) => Some(t.parse().map_err(|e| format!("--end-time: {e}"))?),
            None => None,
        },
        launch_expiration_secs: c
            .when
            .expiration
            .unwrap_or(schedule::DEFAULT_LAUNCH_EXPIRATION_SECS),
    };
    let mut errors = ebb_core::model::Invalid::default();
    schedule.validate(&mut errors);
    errors.into_result().map_err(|e| e.to_string())
}

async fn find_rule(admin: &mut Admin, group: &str, rule: &str) -> Result<pb::ScalingRule> {
    admin
        .describe_scaling_rules(pb::DescribeScalingRulesRequest {
            scaling_group: group.to_owned(),
        })
        .await?
        .scaling_rules
        .into_iter()
        .find(|r| r.id == rule || r.name == rule)
        .ok_or_else(|| {
            Error::Server(format!(
                "scaling rule `{rule}` does not exist in group {group}"
            ))
        })
}

async fn find_alarm(admin: &mut Admin, group: &str, alarm: &str) -> Result<pb::Alarm> {
    admin
        .describe_alarms(pb::DescribeAlarmsRequest {
            scaling_group: group.to_owned(),
            state: String::new(),
        })
        .await?
        .alarms
        .into_iter()
        .find(|a| a.id == alarm || a.name == alarm)
        .ok_or_else(|| Error::Server(format!("alarm `{alarm}` does not exist in group {group}")))
}

async fn find_task(admin: &mut Admin, group: &str, task: &str) -> Result<pb::ScheduledTask> {
    admin
        .describe_scheduled_tasks(pb::DescribeScheduledTasksRequest {
            scaling_group: group.to_owned(),
        })
        .await?
        .scheduled_tasks
        .into_iter()
        .find(|t| t.id == task || t.name == task)
        .ok_or_else(|| {
            Error::Server(format!(
                "scheduled task `{task}` does not exist in group {group}"
            ))
        })
}

/// An activity an execute or scale started, or refused; either is a
/// normal outcome of a request that succeeded.
fn activity_outcome(r: pb::ScalingActivityResponse, out: Output) -> Result<()> {
    let a = r
        .activity
        .ok_or_else(|| Error::Server("the controller returned no activity".to_owned()))?;
    let v = ActivityView::from(&a);
    match out {
        Output::Json => print_json(&v),
        Output::Table => {
            print!("{}", view::activity_outcome(&v));
            Ok(())
        }
    }
}

pub async fn rule(admin: &mut Admin, cmd: RuleCmd, out: Output) -> Result<()> {
    match cmd {
        RuleCmd::List { group } => {
            let r = admin
                .describe_scaling_rules(pb::DescribeScalingRulesRequest {
                    scaling_group: group,
                })
                .await?;
            let views: Vec<RuleView> = r.scaling_rules.iter().map(RuleView::from).collect();
            match out {
                Output::Json => print_json(&views),
                Output::Table => {
                    print!("{}", view::rules_table(&views));
                    Ok(())
                }
            }
        }
        RuleCmd::Describe(r) => {
            let rule = find_rule(admin, &r.group, &r.rule).await?;
            let v = RuleView::from(&rule);
            match out {
                Output::Json => print_json(&v),
                Output::Table => {
                    let names = group_names(admin).await;
                    print!("{}", view::rule_fields(&v, &names));
                    Ok(())
                }
            }
        }
        RuleCmd::Create(c) => {
            let kind = build_definition(&c.def, None)
                .map_err(|e| Error::Usage(format!("rule create: {e}")))?
                .ok_or_else(|| Error::Usage("rule create: no definition".to_owned()))?;
            let group = c.group.clone();
            let rule = admin
                .create_scaling_rule(pb::CreateScalingRuleRequest {
                    scaling_group: c.group,
                    name: c.name,
                    definition_json: definition_json(&kind),
                })
                .await?;
            let v = RuleView::from(&rule);
            let mut line = format!(
                "created rule {} ({}) in group {group}: {}",
                v.name,
                v.id,
                view::rule_summary(&v)
            );
            if !v.owned_alarm_ids.is_empty() {
                line.push_str(&format!(
                    "\nit owns alarms {} (ebbctl alarm list --group {group})",
                    v.owned_alarm_ids.join(", ")
                ));
            }
            done(out, &v, line)
        }
        RuleCmd::Modify(m) => {
            let d = &m.def;
            let touches_definition = d.definition_json.is_some()
                || d.simple
                || !d.steps.is_empty()
                || d.target_tracking
                || d.adjustment_type.is_some()
                || d.adjustment_value.is_some()
                || d.min_adjustment_magnitude.is_some()
                || d.cooldown.is_some()
                || d.warmup.is_some()
                || d.metric.is_some()
                || d.target.is_some()
                || d.disable_scale_in.is_some();
            let kind = if touches_definition {
                let current = find_rule(admin, &m.group, &m.rule).await?;
                let base = serde_json::from_str::<RuleKind>(&current.definition_json).ok();
                build_definition(d, base.as_ref())
                    .map_err(|e| Error::Usage(format!("rule modify: {e}")))?
            } else {
                None
            };
            let rule = admin
                .modify_scaling_rule(pb::ModifyScalingRuleRequest {
                    scaling_rule: m.rule,
                    scaling_group: m.group,
                    name: m.name,
                    definition_json: kind.as_ref().map(definition_json),
                })
                .await?;
            let v = RuleView::from(&rule);
            let line = format!(
                "modified rule {} ({}): {}",
                v.name,
                v.id,
                view::rule_summary(&v)
            );
            done(out, &v, line)
        }
        RuleCmd::Delete(r) => {
            admin
                .delete_scaling_rule(pb::DeleteScalingRuleRequest {
                    scaling_rule: r.rule.clone(),
                    scaling_group: r.group.clone(),
                })
                .await?;
            done(
                out,
                &serde_json::json!({ "deleted": r.rule }),
                format!("deleted rule {} from group {}", r.rule, r.group),
            )
        }
        RuleCmd::Execute(e) => {
            let r = admin
                .execute_scaling_rule(pb::ExecuteScalingRuleRequest {
                    scaling_rule: e.rule,
                    scaling_group: e.group,
                    metric_value: e.metric_value,
                    breach_threshold: e.threshold,
                })
                .await?;
            activity_outcome(r, out)
        }
    }
}

pub async fn scale(admin: &mut Admin, s: ScaleArgs, out: Output) -> Result<()> {
    let r = admin
        .scale_with_adjustment(pb::ScaleWithAdjustmentRequest {
            scaling_group: s.group,
            adjustment_type: s.adjustment_type,
            adjustment_value: s.adjustment_value,
            min_adjustment_magnitude: s.min_adjustment_magnitude,
        })
        .await?;
    activity_outcome(r, out)
}

pub async fn alarm(admin: &mut Admin, cmd: AlarmCmd, out: Output) -> Result<()> {
    let (verb, alarm) = match cmd {
        AlarmCmd::List { group, state } => {
            let r = admin
                .describe_alarms(pb::DescribeAlarmsRequest {
                    scaling_group: group.unwrap_or_default(),
                    state: state.unwrap_or_default(),
                })
                .await?;
            let views: Vec<AlarmView> = r.alarms.iter().map(AlarmView::from).collect();
            return match out {
                Output::Json => print_json(&views),
                Output::Table => {
                    let groups = group_names(admin).await;
                    let rules =
                        rule_names(admin, views.iter().map(|a| a.scaling_group_id.clone())).await;
                    print!("{}", view::alarms_table(&views, &groups, &rules));
                    Ok(())
                }
            };
        }
        AlarmCmd::Describe(r) => {
            let a = find_alarm(admin, &r.group, &r.alarm).await?;
            let v = AlarmView::from(&a);
            return match out {
                Output::Json => print_json(&v),
                Output::Table => {
                    let groups = group_names(admin).await;
                    let rules = rule_names(admin, [v.scaling_group_id.clone()]).await;
                    print!("{}", view::alarm_fields(&v, &groups, &rules));
                    Ok(())
                }
            };
        }
        AlarmCmd::Create(c) => (
            "created",
            admin
                .create_alarm(pb::CreateAlarmRequest {
                    scaling_group: c.group,
                    name: c.name,
                    metric: c.metric,
                    statistic: c.statistic,
                    period_secs: c.period,
                    comparison_operator: c.comparison,
                    threshold: c.threshold,
                    evaluation_count: c.evaluation_count,
                    missing_data: c.missing_data,
                    alarm_actions: c.actions,
                    enabled: c.disabled.then_some(false),
                })
                .await?,
        ),
        AlarmCmd::Modify(m) => (
            "modified",
            admin
                .modify_alarm(pb::ModifyAlarmRequest {
                    alarm: m.alarm,
                    scaling_group: m.group,
                    name: m.name,
                    metric: m.metric,
                    statistic: m.statistic,
                    period_secs: m.period,
                    comparison_operator: m.comparison,
                    threshold: m.threshold,
                    evaluation_count: m.evaluation_count,
                    missing_data: m.missing_data,
                    alarm_actions: m.actions,
                })
                .await?,
        ),
        AlarmCmd::Enable(r) => (
            "enabled",
            admin
                .enable_alarm(pb::AlarmRef {
                    alarm: r.alarm,
                    scaling_group: r.group,
                })
                .await?,
        ),
        AlarmCmd::Disable(r) => (
            "disabled",
            admin
                .disable_alarm(pb::AlarmRef {
                    alarm: r.alarm,
                    scaling_group: r.group,
                })
                .await?,
        ),
        AlarmCmd::Delete(r) => {
            admin
                .delete_alarm(pb::AlarmRef {
                    alarm: r.alarm.clone(),
                    scaling_group: r.group.clone(),
                })
                .await?;
            return done(
                out,
                &serde_json::json!({ "deleted": r.alarm }),
                format!("deleted alarm {} from group {}", r.alarm, r.group),
            );
        }
    };
    let v = AlarmView::from(&alarm);
    let line = format!(
        "{verb} alarm {} ({}): {}, {}",
        v.name,
        v.id,
        view::alarm_condition(&v),
        if v.enabled { "enabled" } else { "disabled" }
    );
    done(out, &v, line)
}

fn create_task_request(c: TaskCreate) -> pb::CreateScheduledTaskRequest {
    let r = c.when.recurrence.unwrap_or_default();
    pb::CreateScheduledTaskRequest {
        scaling_group: c.group,
        name: c.name,
        launch_time: c.launch_time,
        recurrence_type: r.recurrence_type,
        recurrence_value: r.recurrence_value,
        time_zone: c.when.time_zone.unwrap_or_default(),
        recurrence_end_time: c.when.end_time.unwrap_or_default(),
        launch_expiration_secs: c.when.expiration,
        enabled: c.disabled.then_some(false),
        scaling_rule: c.rule.unwrap_or_default(),
        min_size: c.min,
        max_size: c.max,
        desired_capacity: c.desired,
    }
}

fn modify_task_request(m: TaskModify) -> pb::ModifyScheduledTaskRequest {
    let (recurrence_type, recurrence_value) = match m.when.recurrence {
        Some(r) => (Some(r.recurrence_type), Some(r.recurrence_value)),
        None => (None, None),
    };
    pb::ModifyScheduledTaskRequest {
        scheduled_task: m.task,
        scaling_group: m.group,
        enabled: None,
        launch_time: m.launch_time,
        recurrence_type,
        recurrence_value,
        time_zone: m.when.time_zone,
        recurrence_end_time: m.when.end_time,
        launch_expiration_secs: m.when.expiration,
        scaling_rule: m.rule,
        min_size: m.min,
        max_size: m.max,
        desired_capacity: m.desired,
    }
}

pub async fn task(admin: &mut Admin, cmd: TaskCmd, out: Output) -> Result<()> {
    let (verb, task) = match cmd {
        TaskCmd::List { group } => {
            let r = admin
                .describe_scheduled_tasks(pb::DescribeScheduledTasksRequest {
                    scaling_group: group.unwrap_or_default(),
                })
                .await?;
            let views: Vec<TaskView> = r.scheduled_tasks.iter().map(TaskView::from).collect();
            return match out {
                Output::Json => print_json(&views),
                Output::Table => {
                    let groups = group_names(admin).await;
                    let rules =
                        rule_names(admin, views.iter().map(|t| t.scaling_group_id.clone())).await;
                    print!("{}", view::tasks_table(&views, &groups, &rules));
                    Ok(())
                }
            };
        }
        TaskCmd::Describe(r) => {
            let t = find_task(admin, &r.group, &r.task).await?;
            let v = TaskView::from(&t);
            return match out {
                Output::Json => print_json(&v),
                Output::Table => {
                    let groups = group_names(admin).await;
                    let rules = rule_names(admin, [v.scaling_group_id.clone()]).await;
                    print!("{}", view::task_fields(&v, &groups, &rules));
                    Ok(())
                }
            };
        }
        TaskCmd::Create(c) => (
            "created",
            admin.create_scheduled_task(create_task_request(c)).await?,
        ),
        TaskCmd::Modify(m) => (
            "modified",
            admin.modify_scheduled_task(modify_task_request(m)).await?,
        ),
        TaskCmd::Enable(r) => (
            "enabled",
            admin
                .modify_scheduled_task(pb::ModifyScheduledTaskRequest {
                    scheduled_task: r.task,
                    scaling_group: r.group,
                    enabled: Some(true),
                    ..Default::default()
                })
                .await?,
        ),
        TaskCmd::Disable(r) => (
            "disabled",
            admin
                .modify_scheduled_task(pb::ModifyScheduledTaskRequest {
                    scheduled_task: r.task,
                    scaling_group: r.group,
                    enabled: Some(false),
                    ..Default::default()
                })
                .await?,
        ),
        TaskCmd::Delete(r) => {
            admin
                .delete_scheduled_task(pb::ScheduledTaskRef {
                    scheduled_task: r.task.clone(),
                    scaling_group: r.group.clone(),
                })
                .await?;
            return done(
                out,
                &serde_json::json!({ "deleted": r.task }),
                format!("deleted scheduled task {} from group {}", r.task, r.group),
            );
        }
    };
    let v = TaskView::from(&task);
    let line = format!(
        "{verb} scheduled task {} ({}): {}, next run {}",
        v.name,
        v.id,
        view::recurrence(&v),
        v.next_run.as_deref().unwrap_or("-")
    );
    done(out, &v, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
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

    #[test]
    fn task_create_checks_the_schedule_before_sending() {
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "ebbctl",
                "task",
                "create",
                "--group",
                "web",
                "--name",
                "morning",
                "--launch-time",
                "2025-01-06T08:00:00+01:00",
            ];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        let cli = parse(&[
            "--recurrence",
            "daily:1",
            "--time-zone",
            "Europe/Berlin",
            "--min",
            "2",
        ])
        .unwrap();
        let Command::Task(cmd) = cli.command else {
            panic!()
        };
        check_task(&cmd).unwrap();
        let TaskCmd::Create(c) = cmd else { panic!() };
        let req = create_task_request(c);
        assert_eq!(
            (req.recurrence_type.as_str(), req.recurrence_value.as_str()),
            ("Daily", "1")
        );
        assert_eq!(req.min_size, Some(2));
        assert_eq!(req.scaling_rule, "");
        // An action is required, and a rule excludes the bounds.
        assert_eq!(parse(&[]).unwrap_err().exit_code(), 2);
        assert_eq!(
            parse(&["--rule", "add-2", "--min", "1"])
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(
            parse(&["--launch-time", "tomorrow", "--min", "1"])
                .unwrap_err()
                .exit_code(),
            2
        );
        // A bad time zone is caught by the domain's check.
        let cli = parse(&["--time-zone", "Mars/Olympus", "--min", "1"]).unwrap();
        let Command::Task(cmd) = cli.command else {
            panic!()
        };
        let err = check_task(&cmd).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("time_zone"), "{err}");
    }
}
