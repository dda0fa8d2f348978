//! Scaling rules, alarm tasks, scheduled tasks and suspended processes: the
//! admin operations on them, the execution of a rule (every run becomes an
//! activity, or a Rejected one saying which rule blocked it), and the two
//! loops that run them — alarms evaluated at every period boundary from the
//! samples the fleet pulled, scheduled tasks when they fall due.

use std::sync::Arc;
use std::time::Duration;

use ebb_proto::v1 as pb;
use jiff::Timestamp;
use tokio::sync::watch;
use tonic::Status;
use tracing::{info, warn};

use crate::admin::{activity_view, invalid, store_status};
use crate::engine::{Engine, activity};
use crate::fleet::Point;
use crate::id::new_id;
use crate::store::{StoreError, Write};
use ebb_core::decide::{AlarmRun, Decision, RuleRun, capacity, decide};
use ebb_core::model::tasks::{AlarmRecord, AlarmTask, ScheduledTask, TaskAction};
use ebb_core::model::{
    Activity, GroupSpec, GroupState, Instance, Invalid, LifecycleState, NotificationConfig,
    NotificationType, Process, ScalingGroup, Trigger, check_name,
};
use ebb_core::rules::{
    AdjustmentType, AlarmEval, AlarmSpec, AlarmState, Comparison, Metric, MissingData, PeriodInput,
    PeriodPoint, RuleKind, ScalingRule, Statistic, aggregate, evaluate, period_point,
    target_alarms, warming,
};
use ebb_core::schedule::{DEFAULT_LAUNCH_EXPIRATION_SECS, Due, Recurrence, Schedule};

/// A period is evaluated this long after it ends, so the pull answers that
/// belong to it have arrived.
const PERIOD_GRACE_MS: i64 = 250;
/// How much longer than the longest alarm period the rings keep samples,
/// so a late alarm pass still finds its period's samples.
const RING_SLACK_MS: i64 = 10_000;
/// How often the alarm and schedule loops look at the clock.
const LOOP_TICK: Duration = Duration::from_millis(200);
/// ESS: an alarm runs at most five rules.
const MAX_ALARM_ACTIONS: usize = 5;

fn now_ms(engine: &Engine) -> i64 {
    engine.clock.now_ms()
}

fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

// ---- lookups -------------------------------------------------------------

pub(crate) fn find_group(engine: &Engine, key: &str) -> Result<ScalingGroup, Status> {
    if key.is_empty() {
        return Err(invalid(Invalid::one("scaling_group", "is required")));
    }
    let store = &engine.store;
    match store.get_group(key).map_err(store_status)? {
        Some(g) => Ok(g),
        None => store
            .find_group_by_name(key)
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("scaling group `{key}` does not exist"))),
    }
}

/// A rule by id, or by name within `group_key`.
fn find_rule(
    engine: &Engine,
    group_key: &str,
    key: &str,
) -> Result<(ScalingGroup, ScalingRule), Status> {
    if key.is_empty() {
        return Err(invalid(Invalid::one("scaling_rule", "is required")));
    }
    if let Some(rule) = engine.store.get_rule(key).map_err(store_status)? {
        let group = find_group(engine, &rule.group_id)?;
        return Ok((group, rule));
    }
    let group = find_group(engine, group_key)?;
    let rule = rule_in(engine, &group, key)?;
    Ok((group, rule))
}

fn rule_in(engine: &Engine, group: &ScalingGroup, key: &str) -> Result<ScalingRule, Status> {
    engine
        .store
        .list_rules(Some(&group.id))
        .map_err(store_status)?
        .into_iter()
        .find(|r| r.id == key || r.name == key)
        .ok_or_else(|| {
            Status::not_found(format!(
                "scaling rule `{key}` does not exist in group {}",
                group.name
            ))
        })
}

/// A group-scoped record by id, or by name within `group_key`; `field`
/// names the request field, `what` the kind in messages.
fn find_named<T>(
    engine: &Engine,
    group_key: &str,
    key: &str,
    (field, what): (&str, &str),
    get: impl Fn(&str) -> Result<Option<T>, StoreError>,
    list: impl Fn(&str) -> Result<Vec<T>, StoreError>,
    name: impl Fn(&T) -> &str,
) -> Result<T, Status> {
    if key.is_empty() {
        return Err(invalid(Invalid::one(field, "is required")));
    }
    if let Some(found) = get(key).map_err(store_status)? {
        return Ok(found);
    }
    let group = find_group(engine, group_key)?;
    list(&group.id)
        .map_err(store_status)?
        .into_iter()
        .find(|r| name(r) == key)
        .ok_or_else(|| {
            Status::not_found(format!(
                "{what} `{key}` does not exist in group {}",
                group.name
            ))
        })
}

fn find_alarm(engine: &Engine, group_key: &str, key: &str) -> Result<AlarmTask, Status> {
    let store = &engine.store;
    find_named(
        engine,
        group_key,
        key,
        ("alarm", "alarm"),
        |id| store.get_alarm(id),
        |g| store.list_alarms(Some(g)),
        |a| &a.name,
    )
}

fn find_task(engine: &Engine, group_key: &str, key: &str) -> Result<ScheduledTask, Status> {
    let store = &engine.store;
    find_named(
        engine,
        group_key,
        key,
        ("scheduled_task", "scheduled task"),
        |id| store.get_task(id),
        |g| store.list_tasks(Some(g)),
        |t| &t.name,
    )
}

// ---- views ---------------------------------------------------------------

fn rule_view(engine: &Engine, r: &ScalingRule) -> pb::ScalingRule {
    let owned = engine
        .store
        .list_alarms(Some(&r.group_id))
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.owner_rule_id.as_deref() == Some(&r.id))
        .map(|a| a.id)
        .collect();
    pb::ScalingRule {
        id: r.id.clone(),
        scaling_group_id: r.group_id.clone(),
        name: r.name.clone(),
        rule_type: rule_type(&r.kind).to_owned(),
        definition_json: serde_json::to_string(&r.kind).unwrap_or_default(),
        owned_alarm_ids: owned,
    }
}

fn rule_type(kind: &RuleKind) -> &'static str {
    match kind {
        RuleKind::Simple { .. } => "SimpleScalingRule",
        RuleKind::Step { .. } => "StepScalingRule",
        RuleKind::TargetTracking { .. } => "TargetTrackingScalingRule",
        RuleKind::Predictive { .. } => "PredictiveScalingRule",
    }
}

fn alarm_view(a: &AlarmTask) -> pb::Alarm {
    pb::Alarm {
        id: a.id.clone(),
        scaling_group_id: a.group_id.clone(),
        name: a.name.clone(),
        metric: a.spec.metric.to_string(),
        statistic: a.spec.statistic.to_string(),
        period_secs: a.spec.period_secs,
        comparison_operator: a.spec.comparison.to_string(),
        threshold: a.spec.threshold,
        evaluation_count: a.spec.evaluation_count,
        missing_data: a.spec.missing_data.to_string(),
        alarm_actions: a.alarm_actions.clone(),
        enabled: a.enabled,
        state: a.eval.state.to_string(),
        state_since_ms: a.eval.since_ms.unwrap_or_default(),
        owner_rule_id: a.owner_rule_id.clone().unwrap_or_default(),
        history: a
            .history
            .iter()
            .map(|h| format!("{} {} {}", rfc3339(h.at_ms), h.state, h.explanation))
            .collect(),
    }
}

fn task_view(t: &ScheduledTask, now: i64) -> pb::ScheduledTask {
    let (recurrence_type, recurrence_value) = match &t.schedule.recurrence {
        Recurrence::None => ("None".to_owned(), String::new()),
        Recurrence::Daily { every } => ("Daily".to_owned(), every.to_string()),
        Recurrence::Weekly { days } => (
            "Weekly".to_owned(),
            days.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
        ),
        Recurrence::Monthly { from, to } => ("Monthly".to_owned(), format!("{from}-{to}")),
        Recurrence::Cron { expression } => ("Cron".to_owned(), expression.clone()),
    };
    let next = Timestamp::from_millisecond(now).ok().and_then(|now| {
        match t.schedule.due(handled_until(t), now) {
            Due::Run { at, .. } | Due::Expired { at, .. } | Due::Wait(at) => Some(at.to_string()),
            Due::Finished => None,
        }
    });
    let (rule, min, max, desired) = match &t.action {
        TaskAction::Rule { rule_id } => (rule_id.clone(), None, None, None),
        TaskAction::Capacity {
            min_size,
            max_size,
            desired_capacity,
        } => (String::new(), *min_size, *max_size, *desired_capacity),
    };
    pb::ScheduledTask {
        id: t.id.clone(),
        scaling_group_id: t.group_id.clone(),
        name: t.name.clone(),
        launch_time: t.schedule.launch_time.to_string(),
        recurrence_type,
        recurrence_value,
        time_zone: t.schedule.time_zone.clone(),
        recurrence_end_time: t
            .schedule
            .recurrence_end_time
            .map(|e| e.to_string())
            .unwrap_or_default(),
        launch_expiration_secs: t.schedule.launch_expiration_secs,
        enabled: t.enabled,
        scaling_rule_id: rule,
        min_size: min,
        max_size: max,
        desired_capacity: desired,
        next_run: if t.enabled {
            next.unwrap_or_default()
        } else {
            String::new()
        },
        last_run: t.last_occurrence.map(|l| l.to_string()).unwrap_or_default(),
        last_result: t.last_result.clone().unwrap_or_default(),
    }
}

// ---- scaling rules -------------------------------------------------------

fn parse_definition(json: &str) -> Result<RuleKind, Status> {
    if json.trim().is_empty() {
        return Err(invalid(Invalid::one("definition_json", "is required")));
    }
    serde_json::from_str(json).map_err(|e| invalid(Invalid::one("definition_json", e.to_string())))
}

/// The two alarms a target-tracking rule owns.
fn owned_alarms(rule: &ScalingRule, now: i64) -> Vec<AlarmTask> {
    let RuleKind::TargetTracking {
        metric,
        target_value,
        ..
    } = &rule.kind
    else {
        return Vec::new();
    };
    let (out, inn) = target_alarms(metric, *target_value);
    [("out", out), ("in", inn)]
        .into_iter()
        .map(|(suffix, spec)| AlarmTask {
            id: new_id("alm"),
            group_id: rule.group_id.clone(),
            name: format!("{}-{suffix}", rule.name),
            spec,
            alarm_actions: vec![rule.id.clone()],
            enabled: true,
            eval: AlarmEval::default(),
            owner_rule_id: Some(rule.id.clone()),
            history: Vec::new(),
            last_period_end_ms: None,
            last_rejection: None,
            created_at_ms: now,
        })
        .collect()
}

pub async fn create_scaling_rule(
    engine: &Engine,
    req: pb::CreateScalingRuleRequest,
) -> Result<pb::ScalingRule, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    let rule = ScalingRule {
        id: new_id("asr"),
        group_id: group.id.clone(),
        name: req.name,
        kind: parse_definition(&req.definition_json)?,
    };
    rule.validate().map_err(invalid)?;
    let mut writes = vec![Write::PutRule(rule.clone())];
    writes.extend(
        owned_alarms(&rule, now_ms(engine))
            .into_iter()
            .map(Write::PutAlarm),
    );
    engine.store.commit(writes).map_err(store_status)?;
    info!(group = %group.name, rule = %rule.name, "scaling rule created");
    Ok(rule_view(engine, &rule))
}

pub async fn modify_scaling_rule(
    engine: &Engine,
    req: pb::ModifyScalingRuleRequest,
) -> Result<pb::ScalingRule, Status> {
    let _ops = engine.ops.lock().await;
    let (_, old) = find_rule(engine, &req.scaling_group, &req.scaling_rule)?;
    let mut rule = old.clone();
    if let Some(n) = req.name {
        rule.name = n;
    }
    if let Some(d) = req.definition_json {
        rule.kind = parse_definition(&d)?;
    }
    rule.validate().map_err(invalid)?;
    let mut writes = vec![Write::PutRule(rule.clone())];
    if rule.kind != old.kind || rule.name != old.name {
        // Owned alarms follow the rule: replaced, keeping nothing stale.
        for a in engine
            .store
            .list_alarms(Some(&rule.group_id))
            .map_err(store_status)?
        {
            if a.owner_rule_id.as_deref() == Some(&rule.id) {
                writes.push(Write::DeleteAlarm(a.id));
            }
        }
        writes.extend(
            owned_alarms(&rule, now_ms(engine))
                .into_iter()
                .map(Write::PutAlarm),
        );
    }
    engine.store.commit(writes).map_err(store_status)?;
    Ok(rule_view(engine, &rule))
}

pub async fn delete_scaling_rule(
    engine: &Engine,
    req: pb::DeleteScalingRuleRequest,
) -> Result<pb::DeleteScalingRuleResponse, Status> {
    let _ops = engine.ops.lock().await;
    let (group, rule) = find_rule(engine, &req.scaling_group, &req.scaling_rule)?;
    let store = &engine.store;
    let mut users = Vec::new();
    let mut writes = Vec::new();
    for a in store.list_alarms(Some(&group.id)).map_err(store_status)? {
        if a.owner_rule_id.as_deref() == Some(&rule.id) {
            writes.push(Write::DeleteAlarm(a.id));
        } else if a.alarm_actions.contains(&rule.id) {
            users.push(format!("alarm `{}`", a.name));
        }
    }
    for t in store.list_tasks(Some(&group.id)).map_err(store_status)? {
        if matches!(&t.action, TaskAction::Rule { rule_id } if *rule_id == rule.id) {
            users.push(format!("scheduled task `{}`", t.name));
        }
    }
    if !users.is_empty() {
        return Err(Status::failed_precondition(format!(
            "scaling rule `{}` is used by {}; change or delete them first",
            rule.name,
            users.join(", ")
        )));
    }
    writes.push(Write::DeleteRule(rule.id.clone()));
    store.commit(writes).map_err(store_status)?;
    Ok(pb::DeleteScalingRuleResponse {})
}

pub async fn describe_scaling_rules(
    engine: &Engine,
    req: pb::DescribeScalingRulesRequest,
) -> Result<pb::DescribeScalingRulesResponse, Status> {
    let group_id = if req.scaling_group.is_empty() {
        None
    } else {
        Some(find_group(engine, &req.scaling_group)?.id)
    };
    let rules = engine
        .store
        .list_rules(group_id.as_deref())
        .map_err(store_status)?;
    Ok(pb::DescribeScalingRulesResponse {
        scaling_rules: rules.iter().map(|r| rule_view(engine, r)).collect(),
    })
}

pub async fn execute_scaling_rule(
    engine: &Engine,
    req: pb::ExecuteScalingRuleRequest,
) -> Result<pb::ScalingActivityResponse, Status> {
    let _ops = engine.ops.lock().await;
    let (group, rule) = find_rule(engine, &req.scaling_group, &req.scaling_rule)?;
    if let RuleKind::Step { .. } = rule.kind
        && (req.metric_value.is_none() || req.breach_threshold.is_none())
    {
        let mut e = Invalid::default();
        if req.metric_value.is_none() {
            e.push(
                "metric_value",
                "a step rule needs the metric value to pick a step",
            );
        }
        if req.breach_threshold.is_none() {
            e.push(
                "breach_threshold",
                "a step rule needs the threshold its steps are relative to",
            );
        }
        return Err(invalid(e));
    }
    let run = RuleRun {
        trigger: Trigger::Api,
        what: format!("ExecuteScalingRule ran rule `{}`", rule.name),
        metric_value: req.metric_value,
        threshold: req.breach_threshold,
        alarm: None,
    };
    let act = run_rule(engine, &group, &rule.kind, &run)?;
    Ok(pb::ScalingActivityResponse {
        activity: Some(activity_view(&act)),
    })
}

pub async fn scale_with_adjustment(
    engine: &Engine,
    req: pb::ScaleWithAdjustmentRequest,
) -> Result<pb::ScalingActivityResponse, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    let adjustment_type: AdjustmentType = req
        .adjustment_type
        .parse()
        .map_err(|e: String| invalid(Invalid::one("adjustment_type", e)))?;
    ebb_core::rules::validate_adjustment(
        adjustment_type,
        req.adjustment_value,
        req.min_adjustment_magnitude,
    )
    .map_err(invalid)?;
    let kind = RuleKind::Simple {
        adjustment_type,
        adjustment_value: req.adjustment_value,
        min_adjustment_magnitude: req.min_adjustment_magnitude,
        cooldown_secs: None,
    };
    let run = RuleRun {
        trigger: Trigger::Api,
        what: format!(
            "ScaleWithAdjustment ({adjustment_type} {})",
            req.adjustment_value
        ),
        metric_value: None,
        threshold: None,
        alarm: None,
    };
    let act = run_rule(engine, &group, &kind, &run)?;
    Ok(pb::ScalingActivityResponse {
        activity: Some(activity_view(&act)),
    })
}

// ---- running a rule ------------------------------------------------------

/// Runs a rule: records a Rejected activity, or raises/lowers desired and
/// starts the activity the reconcile loop carries out.
fn run_rule(
    engine: &Engine,
    group: &ScalingGroup,
    kind: &RuleKind,
    run: &RuleRun,
) -> Result<Activity, Status> {
    let now = now_ms(engine);
    let snap = engine.snapshot(group).map_err(store_status)?;
    let d = decide(kind, run, &snap.view(group), now);
    commit_decision(engine, group, d, run, snap.running, now)
}

/// Writes a decision: a Rejected activity, or the new desired capacity and
/// the activity that carries it out (superseding `running`, if any).
fn commit_decision(
    engine: &Engine,
    group: &ScalingGroup,
    d: Decision,
    run: &RuleRun,
    running: Option<Activity>,
    now: i64,
) -> Result<Activity, Status> {
    let cause = activity::cause(&run.what, d.from, d.to);
    let store = &engine.store;
    if let Some(refusal) = d.refusal {
        let reason = refusal.to_string();
        let mut act =
            activity::rejected(group, d.from, d.to, run.trigger, cause, reason.clone(), now);
        act.details = d.details;
        act.details.push(format!("blocked: {reason}"));
        store
            .commit(vec![Write::PutActivity(act.clone())])
            .map_err(store_status)?;
        info!(group = %group.name, activity = %act.id, "rejected: {reason}");
        return Ok(act);
    }
    let mut updated = group.clone();
    updated.desired_capacity = d.to;
    let mut act = activity::start(group, d.from, d.to, run.trigger, cause, now);
    act.details = d.details;
    let mut writes = vec![Write::UpdateGroup(updated)];
    if let Some(mut prev) = running {
        activity::supersede(&mut prev, &act.id, now);
        writes.push(Write::PutActivity(prev));
    }
    writes.push(Write::PutActivity(act.clone()));
    store.commit(writes).map_err(store_status)?;
    info!(group = %group.name, activity = %act.id, "{}", act.cause);
    engine.wake();
    Ok(act)
}

// ---- alarms --------------------------------------------------------------

fn parse_field<T: std::str::FromStr<Err = String>>(
    field: &str,
    value: &str,
    errors: &mut Invalid,
) -> Option<T> {
    match value.parse() {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(field, e);
            None
        }
    }
}

/// Resolves 1–5 rule ids or names of the group.
fn resolve_actions(
    engine: &Engine,
    group: &ScalingGroup,
    keys: &[String],
    errors: &mut Invalid,
) -> Result<Vec<String>, Status> {
    if keys.is_empty() || keys.len() > MAX_ALARM_ACTIONS {
        errors.push(
            "alarm_actions",
            format!(
                "name 1 to {MAX_ALARM_ACTIONS} scaling rules, got {}",
                keys.len()
            ),
        );
    }
    let rules = engine
        .store
        .list_rules(Some(&group.id))
        .map_err(store_status)?;
    let mut ids = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match rules.iter().find(|r| &r.id == key || &r.name == key) {
            Some(r) => ids.push(r.id.clone()),
            None => errors.push(
                format!("alarm_actions[{i}]"),
                format!("no scaling rule `{key}` in group {}", group.name),
            ),
        }
    }
    Ok(ids)
}

pub async fn create_alarm(
    engine: &Engine,
    req: pb::CreateAlarmRequest,
) -> Result<pb::Alarm, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    let mut errors = Invalid::default();
    check_name("name", &req.name, &mut errors);
    let metric = Some(Metric::from(req.metric.clone()));
    let statistic = parse_field::<Statistic>("statistic", &req.statistic, &mut errors);
    let comparison =
        parse_field::<Comparison>("comparison_operator", &req.comparison_operator, &mut errors);
    let missing = req
        .missing_data
        .as_deref()
        .map_or(Some(MissingData::Missing), |m| {
            parse_field::<MissingData>("missing_data", m, &mut errors)
        });
    let actions = resolve_actions(engine, &group, &req.alarm_actions, &mut errors)?;
    let spec = match (metric, statistic, comparison, missing) {
        (Some(metric), Some(statistic), Some(comparison), Some(missing_data)) => {
            let spec = AlarmSpec {
                metric,
                statistic,
                period_secs: req.period_secs,
                comparison,
                threshold: req.threshold,
                evaluation_count: req
                    .evaluation_count
                    .unwrap_or(ebb_core::rules::alarm::DEFAULT_EVALUATION_COUNT),
                missing_data,
            };
            spec.check("", &mut errors);
            Some(spec)
        }
        _ => None,
    };
    errors.into_result().map_err(invalid)?;
    let alarm = AlarmTask {
        id: new_id("alm"),
        group_id: group.id.clone(),
        name: req.name,
        spec: spec.expect("validated"),
        alarm_actions: actions,
        enabled: req.enabled.unwrap_or(true),
        eval: AlarmEval::default(),
        owner_rule_id: None,
        history: Vec::new(),
        last_period_end_ms: None,
        last_rejection: None,
        created_at_ms: now_ms(engine),
    };
    engine
        .store
        .commit(vec![Write::PutAlarm(alarm.clone())])
        .map_err(store_status)?;
    info!(group = %group.name, alarm = %alarm.name, "alarm created: {}", alarm.spec.condition());
    Ok(alarm_view(&alarm))
}

fn refuse_owned(a: &AlarmTask) -> Result<(), Status> {
    match &a.owner_rule_id {
        Some(rule) => Err(Status::failed_precondition(format!(
            "alarm `{}` belongs to target-tracking rule {rule}; change the rule instead",
            a.name
        ))),
        None => Ok(()),
    }
}

pub async fn modify_alarm(
    engine: &Engine,
    req: pb::ModifyAlarmRequest,
) -> Result<pb::Alarm, Status> {
    let _ops = engine.ops.lock().await;
    let mut alarm = find_alarm(engine, &req.scaling_group, &req.alarm)?;
    refuse_owned(&alarm)?;
    let group = find_group(engine, &alarm.group_id)?;
    let mut errors = Invalid::default();
    if let Some(n) = req.name {
        check_name("name", &n, &mut errors);
        alarm.name = n;
    }
    if let Some(v) = req.metric.map(Metric::from) {
        alarm.spec.metric = v;
    }
    if let Some(v) = req
        .statistic
        .and_then(|m| parse_field("statistic", &m, &mut errors))
    {
        alarm.spec.statistic = v;
    }
    if let Some(v) = req
        .comparison_operator
        .and_then(|m| parse_field("comparison_operator", &m, &mut errors))
    {
        alarm.spec.comparison = v;
    }
    if let Some(v) = req
        .missing_data
        .and_then(|m| parse_field("missing_data", &m, &mut errors))
    {
        alarm.spec.missing_data = v;
    }
    if let Some(v) = req.period_secs {
        alarm.spec.period_secs = v;
    }
    if let Some(v) = req.threshold {
        alarm.spec.threshold = v;
    }
    if let Some(v) = req.evaluation_count {
        alarm.spec.evaluation_count = v;
    }
    if !req.alarm_actions.is_empty() {
        alarm.alarm_actions = resolve_actions(engine, &group, &req.alarm_actions, &mut errors)?;
    }
    alarm.spec.check("", &mut errors);
    errors.into_result().map_err(invalid)?;
    // A changed condition starts from no data.
    alarm.eval = AlarmEval::default();
    alarm.last_period_end_ms = None;
    alarm.last_rejection = None;
    engine
        .store
        .commit(vec![Write::PutAlarm(alarm.clone())])
        .map_err(store_status)?;
    Ok(alarm_view(&alarm))
}

async fn set_alarm_enabled(
    engine: &Engine,
    req: pb::AlarmRef,
    enabled: bool,
) -> Result<pb::Alarm, Status> {
    let _ops = engine.ops.lock().await;
    let mut alarm = find_alarm(engine, &req.scaling_group, &req.alarm)?;
    if alarm.enabled != enabled {
        alarm.enabled = enabled;
        alarm.eval = AlarmEval::default();
        alarm.last_period_end_ms = None;
        alarm.last_rejection = None;
        engine
            .store
            .commit(vec![Write::PutAlarm(alarm.clone())])
            .map_err(store_status)?;
        info!(alarm = %alarm.name, enabled, "alarm {}", if enabled { "enabled" } else { "disabled" });
    }
    Ok(alarm_view(&alarm))
}

pub async fn enable_alarm(engine: &Engine, req: pb::AlarmRef) -> Result<pb::Alarm, Status> {
    set_alarm_enabled(engine, req, true).await
}

pub async fn disable_alarm(engine: &Engine, req: pb::AlarmRef) -> Result<pb::Alarm, Status> {
    set_alarm_enabled(engine, req, false).await
}

pub async fn delete_alarm(
    engine: &Engine,
    req: pb::AlarmRef,
) -> Result<pb::DeleteAlarmResponse, Status> {
    let _ops = engine.ops.lock().await;
    let alarm = find_alarm(engine, &req.scaling_group, &req.alarm)?;
    refuse_owned(&alarm)?;
    engine
        .store
        .commit(vec![Write::DeleteAlarm(alarm.id)])
        .map_err(store_status)?;
    Ok(pb::DeleteAlarmResponse {})
}

pub async fn describe_alarms(
    engine: &Engine,
    req: pb::DescribeAlarmsRequest,
) -> Result<pb::DescribeAlarmsResponse, Status> {
    let group_id = if req.scaling_group.is_empty() {
        None
    } else {
        Some(find_group(engine, &req.scaling_group)?.id)
    };
    let state = if req.state.is_empty() {
        None
    } else {
        Some(
            req.state
                .parse::<AlarmState>()
                .map_err(|e| invalid(Invalid::one("state", e)))?,
        )
    };
    let alarms = engine
        .store
        .list_alarms(group_id.as_deref())
        .map_err(store_status)?;
    Ok(pb::DescribeAlarmsResponse {
        alarms: alarms
            .iter()
            .filter(|a| state.is_none_or(|s| a.eval.state == s))
            .map(alarm_view)
            .collect(),
    })
}

/// One value of `metric` from a sample, if it carries it.
fn metric_of(metric: &Metric, p: &Point) -> Option<f64> {
    match metric {
        Metric::CpuUtilization => p.cpu_utilization(),
        Metric::MemoryUtilization => p.memory_utilization(),
        Metric::LoadAverage => p.load1(),
        Metric::IntranetRx => p.rx_bytes_per_second(),
        Metric::IntranetTx => p.tx_bytes_per_second(),
        Metric::TcpConnection => p.tcp_total().map(f64::from),
        Metric::Custom(name) => p.custom(name),
    }
}

/// The period's input: each counted instance's samples in [start, end) averaged.
fn period_input(
    engine: &Engine,
    group: &ScalingGroup,
    alarm: &AlarmTask,
    warmup_secs: Option<u32>,
    start_ms: i64,
    end_ms: i64,
) -> Result<PeriodInput, Status> {
    let instances = engine
        .store
        .list_instances(Some(&group.id))
        .map_err(store_status)?;
    let counted: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.lifecycle_state == LifecycleState::InService)
        .filter(|i| warmup_secs.is_none_or(|w| !warming(i.in_service_at_ms, w, end_ms)))
        .collect();
    let mut answered = Vec::new();
    for inst in &counted {
        // The ring is in arrival order: walk back from the newest sample to
        // the period's start, reading a period's worth, not the whole ring.
        let (sum, n) = engine
            .fleet
            .with_agent(&inst.id, |a| {
                a.ring
                    .iter()
                    .rev()
                    .skip_while(|p| p.received_at_ms >= end_ms)
                    .take_while(|p| p.received_at_ms >= start_ms)
                    .filter_map(|p| metric_of(&alarm.spec.metric, p))
                    .fold((0.0, 0u32), |(sum, n), v| (sum + v, n + 1))
            })
            .unwrap_or_default();
        if n > 0 {
            answered.push(sum / f64::from(n));
        }
    }
    Ok(PeriodInput {
        in_service: counted.len() as u32,
        answered,
    })
}

/// Evaluates every alarm whose period has ended, and runs its actions.
pub async fn evaluate_alarms(engine: &Engine) -> Result<(), Status> {
    let now = now_ms(engine);
    let _ops = engine.ops.lock().await;
    let started = tokio::time::Instant::now();
    let mut evaluated = 0;
    let mut unsaved = Vec::new();
    let alarms = engine.store.list_alarms(None).map_err(store_status)?;
    // The rings keep what the longest alarm reads, disabled ones included
    // (enabling one should find its history).
    let longest_ms = alarms
        .iter()
        .map(|a| i64::from(a.spec.period_secs) * 1000)
        .max()
        .unwrap_or(0);
    engine
        .fleet
        .keep_samples_for(longest_ms + PERIOD_GRACE_MS + RING_SLACK_MS);
    for mut alarm in alarms {
        if !alarm.enabled {
            continue;
        }
        let p = i64::from(alarm.spec.period_secs) * 1000;
        let latest_end = (now - PERIOD_GRACE_MS).div_euclid(p) * p;
        // Never replay a backlog (a stopped controller, a stalled loop): the
        // next period evaluated is the latest one that has ended.
        let end = match alarm.last_period_end_ms {
            Some(last) if last + p >= latest_end => last + p,
            _ => latest_end,
        };
        if end > latest_end || alarm.last_period_end_ms == Some(end) {
            continue;
        }
        let Some(group) = engine
            .store
            .get_group(&alarm.group_id)
            .map_err(store_status)?
        else {
            continue;
        };
        let owner = alarm
            .owner_rule_id
            .as_ref()
            .and_then(|id| engine.store.get_rule(id).ok().flatten());
        let warmup = owner.as_ref().and_then(|r| match r.kind {
            RuleKind::TargetTracking {
                estimated_instance_warmup_secs,
                ..
            } => Some(estimated_instance_warmup_secs),
            _ => None,
        });
        let input = period_input(engine, &group, &alarm, warmup, end - p, end)?;
        let point = period_point(&input, &alarm.spec);
        let eval = evaluate(&alarm.eval, point, &alarm.spec, now);
        if let Some((from, to)) = eval.transition {
            info!(group = %group.name, alarm = %alarm.name, "alarm {from} → {to}: {}", eval.explanation);
        }
        let value = match point {
            PeriodPoint::Breaching(v) | PeriodPoint::NotBreaching(v) => Some(v),
            PeriodPoint::Missing => None,
        };
        alarm.eval = eval.new.clone();
        alarm.last_period_end_ms = Some(end);
        alarm.record(AlarmRecord {
            at_ms: end,
            state: eval.new.state,
            value,
            explanation: eval.explanation.clone(),
        });
        if eval.fire_actions {
            fire(
                engine,
                &group,
                &mut alarm,
                &input,
                value,
                &eval.explanation,
                now,
            )?;
            // Its state is stored right after its actions, so a restart
            // cannot run them again for the same period.
            unsaved.push(Write::PutAlarm(alarm));
            engine
                .store
                .commit(std::mem::take(&mut unsaved))
                .map_err(store_status)?;
        } else {
            if eval.new.state != AlarmState::Alarm {
                alarm.last_rejection = None;
            }
            unsaved.push(Write::PutAlarm(alarm));
        }
        evaluated += 1;
    }
    // The alarms that ran nothing, in one transaction rather than one each
    // (at 200 alarms a second, most of the pass's time was commits).
    engine.store.commit(unsaved).map_err(store_status)?;
    if evaluated > 0 {
        let took = started.elapsed();
        engine.fleet.counters.alarm_evaluation.record(took);
    }
    Ok(())
}

/// Runs an alarm's rules. A refusal is recorded as a Rejected activity once
/// per distinct reason while the alarm stays in ALARM.
fn fire(
    engine: &Engine,
    group: &ScalingGroup,
    alarm: &mut AlarmTask,
    input: &PeriodInput,
    value: Option<f64>,
    explanation: &str,
    now: i64,
) -> Result<(), Status> {
    for rule_id in alarm.alarm_actions.clone() {
        let Some(rule) = engine.store.get_rule(&rule_id).map_err(store_status)? else {
            warn!(alarm = %alarm.name, rule = %rule_id, "alarm action names a rule that no longer exists");
            continue;
        };
        let group = engine
            .store
            .get_group(&group.id)
            .map_err(store_status)?
            .unwrap_or_else(|| group.clone());
        let run = RuleRun {
            trigger: Trigger::Alarm,
            what: format!("alarm `{}` executed rule `{}`", alarm.name, rule.name),
            metric_value: value.or_else(|| aggregate(&input.answered, alarm.spec.statistic)),
            threshold: Some(alarm.spec.threshold),
            alarm: Some(AlarmRun {
                spec: alarm.spec.clone(),
                input: input.clone(),
                explanation: explanation.to_owned(),
            }),
        };
        let snap = engine.snapshot(&group).map_err(store_status)?;
        let d = decide(&rule.kind, &run, &snap.view(&group), now);
        // One Rejected activity per distinct reason while the alarm holds.
        let reason = d.refusal.as_ref().map(ToString::to_string);
        if reason.is_some() && alarm.last_rejection == reason {
            continue;
        }
        alarm.last_rejection = reason;
        commit_decision(engine, &group, d, &run, snap.running, now)?;
    }
    Ok(())
}

// ---- scheduled tasks -----------------------------------------------------

fn parse_time(field: &str, s: &str, errors: &mut Invalid) -> Option<Timestamp> {
    match s.parse::<Timestamp>() {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(field, format!("`{s}` is not an RFC 3339 time: {e}"));
            None
        }
    }
}

fn parse_recurrence(kind: &str, value: &str, errors: &mut Invalid) -> Option<Recurrence> {
    let bad = |errors: &mut Invalid, why: String| {
        errors.push("recurrence_value", why);
        None
    };
    match kind {
        "" | "None" => Some(Recurrence::None),
        "Daily" => match value.trim().parse::<u32>() {
            Ok(every) => Some(Recurrence::Daily { every }),
            Err(_) => bad(errors, format!("`{value}` is not a number of days")),
        },
        "Weekly" => {
            let days: Result<Vec<u8>, _> =
                value.split(',').map(|d| d.trim().parse::<u8>()).collect();
            match days {
                Ok(days) => Some(Recurrence::Weekly { days }),
                Err(_) => bad(
                    errors,
                    format!("`{value}` is not a list of weekdays like 1,5 (0 = Sunday)"),
                ),
            }
        }
        "Monthly" => match value
            .split_once('-')
            .map(|(a, b)| (a.trim().parse::<u8>(), b.trim().parse::<u8>()))
        {
            Some((Ok(from), Ok(to))) => Some(Recurrence::Monthly { from, to }),
            _ => bad(errors, format!("`{value}` is not a day range like 1-5")),
        },
        "Cron" => Some(Recurrence::Cron {
            expression: value.to_owned(),
        }),
        other => {
            errors.push(
                "recurrence_type",
                format!(
                    "unknown value `{other}`; expected one of None, Daily, Weekly, Monthly, Cron"
                ),
            );
            None
        }
    }
}

/// The action from a request's rule or capacity fields: exactly one kind.
fn parse_action(
    engine: &Engine,
    group: &ScalingGroup,
    rule: &str,
    min: Option<u32>,
    max: Option<u32>,
    desired: Option<u32>,
    errors: &mut Invalid,
) -> Result<Option<TaskAction>, Status> {
    let capacity = min.is_some() || max.is_some() || desired.is_some();
    match (rule.is_empty(), capacity) {
        (false, false) => match rule_in(engine, group, rule) {
            Ok(r) => Ok(Some(TaskAction::Rule { rule_id: r.id })),
            Err(e) if e.code() == tonic::Code::NotFound => {
                errors.push("scaling_rule", e.message().to_owned());
                Ok(None)
            }
            Err(e) => Err(e),
        },
        (true, true) => {
            // Check the values against the group now, as they would apply.
            let spec = GroupSpec {
                min_size: min,
                max_size: max,
                desired_capacity: desired,
                ..Default::default()
            };
            if let Err(e) = group.modified(&spec) {
                for f in e.0 {
                    errors.push(f.field, f.message);
                }
            }
            Ok(Some(TaskAction::Capacity {
                min_size: min,
                max_size: max,
                desired_capacity: desired,
            }))
        }
        (false, true) => {
            errors.push(
                "scaling_rule",
                "give a rule or capacity values (min_size, max_size, desired_capacity), not both",
            );
            Ok(None)
        }
        (true, false) => {
            errors.push(
                "scaling_rule",
                "give a rule to run or capacity values to set",
            );
            Ok(None)
        }
    }
}

pub async fn create_scheduled_task(
    engine: &Engine,
    req: pb::CreateScheduledTaskRequest,
) -> Result<pb::ScheduledTask, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    let mut errors = Invalid::default();
    check_name("name", &req.name, &mut errors);
    let launch = parse_time("launch_time", &req.launch_time, &mut errors);
    let end = if req.recurrence_end_time.is_empty() {
        None
    } else {
        parse_time("recurrence_end_time", &req.recurrence_end_time, &mut errors)
    };
    let recurrence = parse_recurrence(&req.recurrence_type, &req.recurrence_value, &mut errors);
    let action = parse_action(
        engine,
        &group,
        &req.scaling_rule,
        req.min_size,
        req.max_size,
        req.desired_capacity,
        &mut errors,
    )?;
    let now = now_ms(engine);
    let schedule = match (launch, recurrence) {
        (Some(launch_time), Some(recurrence)) => {
            let s = Schedule {
                launch_time,
                recurrence,
                time_zone: if req.time_zone.is_empty() {
                    "UTC".into()
                } else {
                    req.time_zone.clone()
                },
                recurrence_end_time: end,
                launch_expiration_secs: req
                    .launch_expiration_secs
                    .unwrap_or(DEFAULT_LAUNCH_EXPIRATION_SECS),
            };
            s.validate(&mut errors);
            if s.recurrence == Recurrence::None
                && launch_time.as_millisecond() + i64::from(s.launch_expiration_secs) * 1000 < now
            {
                errors.push(
                    "launch_time",
                    "is in the past, beyond the launch expiration: it would never run",
                );
            }
            Some(s)
        }
        _ => None,
    };
    errors.into_result().map_err(invalid)?;
    let task = ScheduledTask {
        id: new_id("sst"),
        group_id: group.id.clone(),
        name: req.name,
        schedule: schedule.expect("validated"),
        action: action.expect("validated"),
        enabled: req.enabled.unwrap_or(true),
        last_occurrence: None,
        last_result: None,
        created_at_ms: now,
    };
    engine
        .store
        .commit(vec![Write::PutTask(task.clone())])
        .map_err(store_status)?;
    info!(group = %group.name, task = %task.name, "scheduled task created");
    Ok(task_view(&task, now))
}

pub async fn modify_scheduled_task(
    engine: &Engine,
    req: pb::ModifyScheduledTaskRequest,
) -> Result<pb::ScheduledTask, Status> {
    let _ops = engine.ops.lock().await;
    let mut task = find_task(engine, &req.scaling_group, &req.scheduled_task)?;
    let group = find_group(engine, &task.group_id)?;
    let mut errors = Invalid::default();
    if let Some(e) = req.enabled {
        task.enabled = e;
    }
    if let Some(t) = req
        .launch_time
        .as_deref()
        .and_then(|t| parse_time("launch_time", t, &mut errors))
    {
        task.schedule.launch_time = t;
    }
    if let Some(end) = &req.recurrence_end_time {
        task.schedule.recurrence_end_time = if end.is_empty() {
            None
        } else {
            parse_time("recurrence_end_time", end, &mut errors)
        };
    }
    if req.recurrence_type.is_some() || req.recurrence_value.is_some() {
        let (kind, value) = match &task.schedule.recurrence {
            Recurrence::None => ("None".to_owned(), String::new()),
            Recurrence::Daily { every } => ("Daily".to_owned(), every.to_string()),
            Recurrence::Weekly { days } => (
                "Weekly".to_owned(),
                days.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
            ),
            Recurrence::Monthly { from, to } => ("Monthly".to_owned(), format!("{from}-{to}")),
            Recurrence::Cron { expression } => ("Cron".to_owned(), expression.clone()),
        };
        let kind = req.recurrence_type.clone().unwrap_or(kind);
        let value = req.recurrence_value.clone().unwrap_or(value);
        if let Some(r) = parse_recurrence(&kind, &value, &mut errors) {
            task.schedule.recurrence = r;
        }
    }
    if let Some(tz) = &req.time_zone {
        task.schedule.time_zone = tz.clone();
    }
    if let Some(x) = req.launch_expiration_secs {
        task.schedule.launch_expiration_secs = x;
    }
    let action_given = req.scaling_rule.is_some()
        || req.min_size.is_some()
        || req.max_size.is_some()
        || req.desired_capacity.is_some();
    if action_given
        && let Some(a) = parse_action(
            engine,
            &group,
            req.scaling_rule.as_deref().unwrap_or(""),
            req.min_size,
            req.max_size,
            req.desired_capacity,
            &mut errors,
        )?
    {
        task.action = a;
    }
    task.schedule.validate(&mut errors);
    errors.into_result().map_err(invalid)?;
    engine
        .store
        .commit(vec![Write::PutTask(task.clone())])
        .map_err(store_status)?;
    Ok(task_view(&task, now_ms(engine)))
}

pub async fn delete_scheduled_task(
    engine: &Engine,
    req: pb::ScheduledTaskRef,
) -> Result<pb::DeleteScheduledTaskResponse, Status> {
    let _ops = engine.ops.lock().await;
    let task = find_task(engine, &req.scaling_group, &req.scheduled_task)?;
    engine
        .store
        .commit(vec![Write::DeleteTask(task.id)])
        .map_err(store_status)?;
    Ok(pb::DeleteScheduledTaskResponse {})
}

pub async fn describe_scheduled_tasks(
    engine: &Engine,
    req: pb::DescribeScheduledTasksRequest,
) -> Result<pb::DescribeScheduledTasksResponse, Status> {
    let group_id = if req.scaling_group.is_empty() {
        None
    } else {
        Some(find_group(engine, &req.scaling_group)?.id)
    };
    let now = now_ms(engine);
    let tasks = engine
        .store
        .list_tasks(group_id.as_deref())
        .map_err(store_status)?;
    Ok(pb::DescribeScheduledTasksResponse {
        scheduled_tasks: tasks.iter().map(|t| task_view(t, now)).collect(),
    })
}

/// The occurrence a task has dealt with. Occurrences from before the task
/// existed (a recurring task whose launch time is long past) never count;
/// those within its launch expiration of its creation do.
fn handled_until(task: &ScheduledTask) -> Option<Timestamp> {
    let floor = task.created_at_ms - i64::from(task.schedule.launch_expiration_secs) * 1000 - 1;
    task.last_occurrence.or_else(|| {
        Timestamp::from_millisecond(floor)
            .ok()
            .filter(|f| *f >= task.schedule.launch_time)
    })
}

/// Runs the scheduled tasks that are due; drops and records those missed
/// beyond their launch expiration; retries those blocked.
pub async fn run_due_tasks(engine: &Engine) -> Result<(), Status> {
    let now = now_ms(engine);
    let Ok(now_ts) = Timestamp::from_millisecond(now) else {
        return Ok(());
    };
    let _ops = engine.ops.lock().await;
    for mut task in engine.store.list_tasks(None).map_err(store_status)? {
        if !task.enabled {
            continue;
        }
        let Some(group) = engine
            .store
            .get_group(&task.group_id)
            .map_err(store_status)?
        else {
            continue;
        };
        match task.schedule.due(handled_until(&task), now_ts) {
            Due::Wait(_) | Due::Finished => continue,
            Due::Expired { at, skipped } => {
                let late = (now - at.as_millisecond()) / 1000;
                let earlier = if skipped > 0 {
                    format!(" (and {skipped} earlier runs)")
                } else {
                    String::new()
                };
                let reason = format!(
                    "scheduled task `{}` missed its run at {at}{earlier} by {late} s, beyond its launch expiration of {} s; dropped",
                    task.name, task.schedule.launch_expiration_secs
                );
                let current = capacity(
                    &engine
                        .store
                        .list_instances(Some(&group.id))
                        .map_err(store_status)?,
                );
                let act = activity::rejected(
                    &group,
                    current,
                    current,
                    Trigger::Schedule,
                    reason.clone(),
                    reason.clone(),
                    now,
                );
                task.last_occurrence = Some(at);
                task.last_result = Some(format!("dropped: {reason} ({})", act.id));
                warn!(group = %group.name, "{reason}");
                engine
                    .store
                    .commit(vec![Write::PutActivity(act), Write::PutTask(task)])
                    .map_err(store_status)?;
            }
            Due::Run { at, skipped } => {
                if skipped > 0 {
                    warn!(group = %group.name, task = %task.name, "{skipped} earlier runs were missed while the controller was down; running the latest, due at {at}");
                }
                let blocked = if group
                    .suspended_processes
                    .contains(&Process::ScheduledAction)
                {
                    Some("the ScheduledAction process is suspended".to_owned())
                } else {
                    engine
                        .running_activity(&group.id)
                        .map_err(store_status)?
                        .map(|a| format!("activity {} is in progress", a.id))
                };
                if let Some(why) = blocked {
                    // Retried every tick until it runs or expires.
                    let note = format!("waiting: {why} (run due at {at})");
                    if task.last_result.as_deref() != Some(note.as_str()) {
                        task.last_result = Some(note);
                        engine
                            .store
                            .commit(vec![Write::PutTask(task)])
                            .map_err(store_status)?;
                    }
                    continue;
                }
                let act = run_task(engine, &group, &task, at, now)?;
                task.last_occurrence = Some(at);
                task.last_result = Some(match &act {
                    Some(a) => format!("{} {}", a.id, a.status),
                    None => "ran: nothing to change".into(),
                });
                engine
                    .store
                    .commit(vec![Write::PutTask(task)])
                    .map_err(store_status)?;
            }
        }
    }
    Ok(())
}

fn run_task(
    engine: &Engine,
    group: &ScalingGroup,
    task: &ScheduledTask,
    at: Timestamp,
    now: i64,
) -> Result<Option<Activity>, Status> {
    match &task.action {
        TaskAction::Rule { rule_id } => {
            let Some(rule) = engine.store.get_rule(rule_id).map_err(store_status)? else {
                return Err(Status::not_found(format!(
                    "scheduled task `{}` names rule {rule_id}, which no longer exists",
                    task.name
                )));
            };
            let run = RuleRun {
                trigger: Trigger::Schedule,
                what: format!(
                    "scheduled task `{}` (due {at}) ran rule `{}`",
                    task.name, rule.name
                ),
                metric_value: None,
                threshold: None,
                alarm: None,
            };
            run_rule(engine, group, &rule.kind, &run).map(Some)
        }
        TaskAction::Capacity {
            min_size,
            max_size,
            desired_capacity,
        } => {
            let spec = GroupSpec {
                min_size: *min_size,
                max_size: *max_size,
                desired_capacity: *desired_capacity,
                ..Default::default()
            };
            let updated = match group.modified(&spec) {
                Ok(g) => g,
                Err(e) => {
                    let current = capacity(
                        &engine
                            .store
                            .list_instances(Some(&group.id))
                            .map_err(store_status)?,
                    );
                    let reason = format!(
                        "scheduled task `{}` cannot apply its values: {e}",
                        task.name
                    );
                    let act = activity::rejected(
                        group,
                        current,
                        current,
                        Trigger::Schedule,
                        reason.clone(),
                        reason,
                        now,
                    );
                    engine
                        .store
                        .commit(vec![Write::PutActivity(act.clone())])
                        .map_err(store_status)?;
                    return Ok(Some(act));
                }
            };
            let mut parts = Vec::new();
            if let Some(v) = min_size {
                parts.push(format!("min_size {v}"));
            }
            if let Some(v) = max_size {
                parts.push(format!("max_size {v}"));
            }
            if let Some(v) = desired_capacity {
                parts.push(format!("desired_capacity {v}"));
            }
            let what = format!(
                "scheduled task `{}` (due {at}) set {}",
                task.name,
                parts.join(", ")
            );
            if updated.desired_capacity == group.desired_capacity
                || group.state != GroupState::Active
            {
                // Bounds only, or a disabled group: stored, nothing to move now.
                engine
                    .store
                    .commit(vec![Write::UpdateGroup(updated)])
                    .map_err(store_status)?;
                info!(group = %group.name, "{what}");
                return Ok(None);
            }
            let current = capacity(
                &engine
                    .store
                    .list_instances(Some(&group.id))
                    .map_err(store_status)?,
            );
            let mut act = activity::start(
                group,
                current,
                updated.desired_capacity,
                Trigger::Schedule,
                activity::cause(&what, current, updated.desired_capacity),
                now,
            );
            act.details
                .push(format!("schedule: {}", describe_schedule(&task.schedule)));
            let mut writes = vec![Write::UpdateGroup(updated)];
            if let Some(mut prev) = engine.running_activity(&group.id).map_err(store_status)? {
                activity::supersede(&mut prev, &act.id, now);
                writes.push(Write::PutActivity(prev));
            }
            writes.push(Write::PutActivity(act.clone()));
            engine.store.commit(writes).map_err(store_status)?;
            info!(group = %group.name, activity = %act.id, "{}", act.cause);
            engine.wake();
            Ok(Some(act))
        }
    }
}

fn describe_schedule(s: &Schedule) -> String {
    format!(
        "{:?} from {} in {}, launch expiration {} s",
        s.recurrence, s.launch_time, s.time_zone, s.launch_expiration_secs
    )
}

// ---- notifications ---------------------------------------------------------

fn notification_view(
    group: &ScalingGroup,
    n: &NotificationConfig,
) -> pb::NotificationConfiguration {
    pb::NotificationConfiguration {
        scaling_group: group.id.clone(),
        notification_url: n.url.clone(),
        notification_types: n.types.iter().map(|t| t.to_string()).collect(),
    }
}

pub async fn create_notification_configuration(
    engine: &Engine,
    req: pb::NotificationConfiguration,
) -> Result<pb::NotificationConfiguration, Status> {
    let _ops = engine.ops.lock().await;
    let mut group = find_group(engine, &req.scaling_group)?;
    let mut errors = Invalid::default();
    if let Err(e) = ebb_core::url::parse_url(&req.notification_url) {
        errors.push("notification_url", e);
    }
    let mut types = Vec::new();
    for (i, t) in req.notification_types.iter().enumerate() {
        match t.parse::<NotificationType>() {
            Ok(t) if !types.contains(&t) => types.push(t),
            Ok(_) => errors.push(
                format!("notification_types[{i}]"),
                format!("`{t}` is listed twice"),
            ),
            Err(e) => errors.push(format!("notification_types[{i}]"), e),
        }
    }
    if types.is_empty() && errors.is_empty() {
        types = NotificationType::ALL.to_vec();
    }
    if group
        .notifications
        .iter()
        .any(|n| n.url == req.notification_url)
    {
        errors.push(
            "notification_url",
            "the group already notifies this URL; delete it first to change its types",
        );
    }
    errors.into_result().map_err(invalid)?;
    let config = NotificationConfig {
        url: req.notification_url,
        types,
    };
    group.notifications.push(config.clone());
    engine
        .store
        .commit(vec![Write::UpdateGroup(group.clone())])
        .map_err(store_status)?;
    info!(group = %group.name, url = %config.url, "notification configuration created");
    Ok(notification_view(&group, &config))
}

pub async fn delete_notification_configuration(
    engine: &Engine,
    req: pb::NotificationConfiguration,
) -> Result<pb::DeleteNotificationConfigurationResponse, Status> {
    let _ops = engine.ops.lock().await;
    let mut group = find_group(engine, &req.scaling_group)?;
    let before = group.notifications.len();
    group
        .notifications
        .retain(|n| n.url != req.notification_url);
    if group.notifications.len() == before {
        return Err(Status::not_found(format!(
            "scaling group {} does not notify {}",
            group.name, req.notification_url
        )));
    }
    engine
        .store
        .commit(vec![Write::UpdateGroup(group)])
        .map_err(store_status)?;
    Ok(pb::DeleteNotificationConfigurationResponse {})
}

pub async fn describe_notification_configurations(
    engine: &Engine,
    req: pb::DescribeNotificationConfigurationsRequest,
) -> Result<pb::DescribeNotificationConfigurationsResponse, Status> {
    let group = find_group(engine, &req.scaling_group)?;
    Ok(pb::DescribeNotificationConfigurationsResponse {
        notification_configurations: group
            .notifications
            .iter()
            .map(|n| notification_view(&group, n))
            .collect(),
    })
}

// ---- processes -----------------------------------------------------------

async fn set_processes(
    engine: &Engine,
    req: pb::ProcessesRequest,
    suspend: bool,
) -> Result<pb::ScalingGroup, Status> {
    let _ops = engine.ops.lock().await;
    let mut group = find_group(engine, &req.scaling_group)?;
    let mut errors = Invalid::default();
    if req.processes.is_empty() {
        errors.push("processes", "name at least one of ScaleIn, ScaleOut, HealthCheck, AlarmNotification, ScheduledAction");
    }
    let mut procs = Vec::new();
    for (i, p) in req.processes.iter().enumerate() {
        match p.parse::<Process>() {
            Ok(p) => procs.push(p),
            Err(e) => errors.push(format!("processes[{i}]"), e),
        }
    }
    errors.into_result().map_err(invalid)?;
    for p in procs {
        if suspend && !group.suspended_processes.contains(&p) {
            group.suspended_processes.push(p);
        } else if !suspend {
            group.suspended_processes.retain(|q| *q != p);
        }
    }
    engine
        .store
        .commit(vec![Write::UpdateGroup(group.clone())])
        .map_err(store_status)?;
    info!(group = %group.name, suspended = ?group.suspended_processes, "processes {}", if suspend { "suspended" } else { "resumed" });
    let instances = engine
        .store
        .list_instances(Some(&group.id))
        .map_err(store_status)?;
    Ok(crate::admin::group_view_of(&group, &instances))
}

pub async fn suspend_processes(
    engine: &Engine,
    req: pb::ProcessesRequest,
) -> Result<pb::ScalingGroup, Status> {
    set_processes(engine, req, true).await
}

pub async fn resume_processes(
    engine: &Engine,
    req: pb::ProcessesRequest,
) -> Result<pb::ScalingGroup, Status> {
    set_processes(engine, req, false).await
}

// ---- loops -----------------------------------------------------------------

/// Evaluates alarms and runs due scheduled tasks until shutdown.
pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut last_error: Option<String> = None;
    let mut tick = tokio::time::interval(LOOP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let result = match evaluate_alarms(&engine).await {
            Ok(()) => run_due_tasks(&engine).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => last_error = None,
            Err(e) => {
                let text = e.message().to_owned();
                if last_error.as_deref() != Some(&text) {
                    warn!("alarms and schedules: {text}");
                }
                last_error = Some(text);
            }
        }
    }
}

#[cfg(test)]
mod tests;
