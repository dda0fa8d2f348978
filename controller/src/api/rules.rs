//! Scaling rules: create, modify, delete, describe, execute, and one-off
//! adjustments.

use crate::api::common::{
    Page, activity_view, find_group, group_filter, invalid, name_key, now_ms,
};
use crate::engine::rules::run_rule;
use crate::engine::{Engine, limits};
use crate::id::new_id;
use crate::store::Write;
use ebb_core::decide::RuleRun;
use ebb_core::model::tasks::{AlarmTask, TaskAction};
use ebb_core::model::{Invalid, ScalingGroup, Trigger};
use ebb_core::rules::{
    AdjustmentType, AlarmEval, RuleKind, ScalingRule, owned_alarm_period, target_alarms,
};
use ebb_proto::v1 as pb;
use tonic::Status;
use tracing::info;

/// A rule by id, or by name within `group_key`.
pub(crate) fn find_rule(
    engine: &Engine,
    group_key: &str,
    key: &str,
) -> Result<(ScalingGroup, ScalingRule), Status> {
    if key.is_empty() {
        return Err(invalid(Invalid::one("scaling_rule", "is required")));
    }
    if let Some(rule) = engine.store.get_rule(key)? {
        let group = find_group(engine, &rule.group_id)?;
        return Ok((group, rule));
    }
    let group = find_group(engine, group_key)?;
    let rule = rule_in(engine, &group, key)?;
    Ok((group, rule))
}

pub(crate) fn rule_in(
    engine: &Engine,
    group: &ScalingGroup,
    key: &str,
) -> Result<ScalingRule, Status> {
    engine
        .store
        .list_rules(Some(&group.id))?
        .into_iter()
        .find(|r| r.id == key || r.name == key)
        .ok_or_else(|| {
            Status::not_found(format!(
                "scaling rule `{key}` does not exist in group {}",
                group.name
            ))
        })
}

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

pub(crate) fn rule_type(kind: &RuleKind) -> &'static str {
    match kind {
        RuleKind::Simple { .. } => "SimpleScalingRule",
        RuleKind::Step { .. } => "StepScalingRule",
        RuleKind::TargetTracking { .. } => "TargetTrackingScalingRule",
        RuleKind::Predictive { .. } => "PredictiveScalingRule",
    }
}

fn parse_definition(json: &str) -> Result<RuleKind, Status> {
    if json.trim().is_empty() {
        return Err(invalid(Invalid::one("definition_json", "is required")));
    }
    serde_json::from_str(json).map_err(|e| invalid(Invalid::one("definition_json", e.to_string())))
}

/// The two alarms a target-tracking rule owns, in a group sampled every
/// `sampling_interval_secs`.
pub(crate) fn owned_alarms(
    rule: &ScalingRule,
    sampling_interval_secs: u32,
    now: i64,
) -> Vec<AlarmTask> {
    let RuleKind::TargetTracking {
        metric,
        target_value,
        alarm_period,
        ..
    } = &rule.kind
    else {
        return Vec::new();
    };
    let period = owned_alarm_period(sampling_interval_secs, *alarm_period);
    let (out, inn) = target_alarms(metric, *target_value, period);
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
            scale_in_window: None,
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
    let owned = owned_alarms(&rule, group.sampling_interval_secs, now_ms(engine));
    let whose = format!("scaling group {}", group.name);
    let (limits, store) = (&engine.limits, &engine.store);
    let have = store.list_rules(Some(&group.id))?.len();
    limits::check(
        have,
        1,
        limits.rules_per_group,
        ("scaling rules", &whose, "rules_per_group"),
    )?;
    let alarms = store.list_alarms(Some(&group.id))?.len();
    let names = ("alarms", whose.as_str(), "alarms_per_group");
    limits::check(alarms, owned.len(), limits.alarms_per_group, names)?;
    let mut writes = vec![Write::PutRule(rule.clone())];
    writes.extend(owned.into_iter().map(Write::PutAlarm));
    engine.store.commit(writes)?;
    info!(group = %group.name, rule = %rule.name, "scaling rule created");
    Ok(rule_view(engine, &rule))
}

pub async fn modify_scaling_rule(
    engine: &Engine,
    req: pb::ModifyScalingRuleRequest,
) -> Result<pb::ScalingRule, Status> {
    let _ops = engine.ops.lock().await;
    let (group, old) = find_rule(engine, &req.scaling_group, &req.scaling_rule)?;
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
        for a in engine.store.list_alarms(Some(&rule.group_id))? {
            if a.owner_rule_id.as_deref() == Some(&rule.id) {
                writes.push(Write::DeleteAlarm(a.id));
            }
        }
        writes.extend(
            owned_alarms(&rule, group.sampling_interval_secs, now_ms(engine))
                .into_iter()
                .map(Write::PutAlarm),
        );
    }
    engine.store.commit(writes)?;
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
    for a in store.list_alarms(Some(&group.id))? {
        if a.owner_rule_id.as_deref() == Some(&rule.id) {
            writes.push(Write::DeleteAlarm(a.id));
        } else if a.alarm_actions.contains(&rule.id) {
            users.push(format!("alarm `{}`", a.name));
        }
    }
    for t in store.list_tasks(Some(&group.id))? {
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
    store.commit(writes)?;
    Ok(pb::DeleteScalingRuleResponse {})
}

pub async fn describe_scaling_rules(
    engine: &Engine,
    req: pb::DescribeScalingRulesRequest,
) -> Result<pb::DescribeScalingRulesResponse, Status> {
    let group_id = group_filter(engine, &req.scaling_group)?;
    let page = Page::of(req.page_size, &req.page_token)?;
    let rules = engine.store.list_rules(group_id.as_deref())?;
    let (rules, next_page_token) = page.cut(rules, |r| name_key(&r.name, &r.id));
    Ok(pb::DescribeScalingRulesResponse {
        scaling_rules: rules.iter().map(|r| rule_view(engine, r)).collect(),
        next_page_token,
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
