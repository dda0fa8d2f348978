//! Alarm (event-triggered) tasks: create, modify, enable, disable, delete,
//! describe.

use crate::api::common::{
    Page, filter, find_group, find_named, group_filter, invalid, name_key, now_ms,
};
use crate::engine::{Engine, limits};
use crate::id::new_id;
use crate::store::Write;
use ebb_core::model::tasks::AlarmTask;
use ebb_core::model::{Invalid, ScalingGroup, check_name};
use ebb_core::rules::{
    AlarmEval, AlarmSpec, AlarmState, Comparison, Metric, MissingData, Statistic,
};
use ebb_core::time::rfc3339;
use ebb_proto::v1 as pb;
use tonic::Status;
use tracing::info;

/// ESS: an alarm runs at most five rules.
const MAX_ALARM_ACTIONS: usize = 5;

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
    let rules = engine.store.list_rules(Some(&group.id))?;
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

/// A period must hold at least one of the group's samples, or the alarm
/// never has data and never fires.
fn check_period(spec: &AlarmSpec, group: &ScalingGroup, errors: &mut Invalid) {
    let (period, sampling) = (spec.period_secs, group.sampling_interval_secs);
    if period < sampling {
        errors.push(
            "period_secs",
            format!(
                "{period} s is shorter than the group's sampling interval of {sampling} s, \
                 so a period could hold no sample and the alarm never fire; use a period \
                 of at least {sampling} s, or lower the group's sampling_interval_secs first"
            ),
        );
    }
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
            check_period(&spec, &group, &mut errors);
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
        scale_in_window: None,
        created_at_ms: now_ms(engine),
    };
    let have = engine.store.list_alarms(Some(&group.id))?.len();
    let whose = format!("scaling group {}", group.name);
    let names = ("alarms", whose.as_str(), "alarms_per_group");
    limits::check(have, 1, engine.limits.alarms_per_group, names)?;
    engine.store.commit(vec![Write::PutAlarm(alarm.clone())])?;
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
    check_period(&alarm.spec, &group, &mut errors);
    errors.into_result().map_err(invalid)?;
    // A changed condition starts from no data.
    alarm.eval = AlarmEval::default();
    alarm.last_period_end_ms = None;
    alarm.last_rejection = None;
    engine.store.commit(vec![Write::PutAlarm(alarm.clone())])?;
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
        engine.store.commit(vec![Write::PutAlarm(alarm.clone())])?;
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
    engine.store.commit(vec![Write::DeleteAlarm(alarm.id)])?;
    Ok(pb::DeleteAlarmResponse {})
}

pub async fn describe_alarms(
    engine: &Engine,
    req: pb::DescribeAlarmsRequest,
) -> Result<pb::DescribeAlarmsResponse, Status> {
    let group_id = group_filter(engine, &req.scaling_group)?;
    let mut e = Invalid::default();
    let page = Page::read(req.page_size, &req.page_token, &mut e);
    let state: Option<AlarmState> = filter("state", &req.state, &mut e);
    e.into_result().map_err(invalid)?;
    let mut alarms = engine.store.list_alarms(group_id.as_deref())?;
    alarms.retain(|a| state.is_none_or(|s| a.eval.state == s));
    let (alarms, next_page_token) = page.cut(alarms, |a| name_key(&a.name, &a.id));
    Ok(pb::DescribeAlarmsResponse {
        alarms: alarms.iter().map(alarm_view).collect(),
        next_page_token,
    })
}
