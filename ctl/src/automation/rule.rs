//! `rule` and `scale`: scaling rules, and changes of capacity that start
//! an activity.

use std::time::Duration;

use ebb_core::model::ActivityStatus;
use ebb_core::rules::RuleKind;
use ebb_proto::v1 as pb;

use super::definition::{build_definition, definition_json, parse_definition};
use crate::cli::{RuleCmd, ScaleArgs, Wait};
use crate::conn::Admin;
use crate::error::{Error, Result};
use crate::lookup::group_names;
use crate::output::{Output, done, print_json};
use crate::view::{self, ActivityView, RuleView};

/// Usage problems of `rule` that need no connection.
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
                && d.disable_scale_in.is_none()
                && d.alarm_period.is_none()
                && d.scale_in_stabilization.is_none();
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

async fn find_rule(admin: &mut Admin, group: &str, rule: &str) -> Result<pb::ScalingRule> {
    admin
        .describe_scaling_rules(pb::DescribeScalingRulesRequest {
            scaling_group: group.to_owned(),
            ..Default::default()
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

/// An activity an execute or scale started, or refused; either is a
/// normal outcome of a request that succeeded. With `--wait` it is
/// followed until it ends, and a failed or rejected one is the error.
async fn activity_outcome(
    admin: &mut Admin,
    r: pb::ScalingActivityResponse,
    out: Output,
    wait: Wait,
) -> Result<()> {
    let mut a = r
        .activity
        .ok_or_else(|| Error::Server("the controller returned no activity".to_owned()))?;
    if wait.wait && a.status == ActivityStatus::InProgress.as_str() {
        if out != Output::Json {
            print!("{}", view::activity_outcome(&ActivityView::from(&a)));
        }
        a = crate::wait::activity(admin, &a.id, Duration::from_secs(wait.wait_timeout)).await?;
    }
    let v = ActivityView::from(&a);
    match out {
        Output::Json => print_json(&v)?,
        Output::Table | Output::Wide => print!("{}", view::activity_outcome(&v)),
    }
    if wait.wait {
        crate::wait::succeeded(&a)?;
    }
    Ok(())
}

pub async fn rule(admin: &mut Admin, cmd: RuleCmd, out: Output) -> Result<()> {
    match cmd {
        RuleCmd::List { group } => {
            let r = admin
                .describe_scaling_rules(pb::DescribeScalingRulesRequest {
                    scaling_group: group,
                    ..Default::default()
                })
                .await?;
            let views: Vec<RuleView> = r.scaling_rules.iter().map(RuleView::from).collect();
            match out {
                Output::Json => print_json(&views),
                Output::Table | Output::Wide => {
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
                Output::Table | Output::Wide => {
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
                    name: c.name.into_string(),
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
                || d.disable_scale_in.is_some()
                || d.alarm_period.is_some()
                || d.scale_in_stabilization.is_some();
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
                    client_token: e.once.token(),
                })
                .await?;
            activity_outcome(admin, r, out, e.wait).await
        }
        RuleCmd::Forecast(f) => {
            let r = admin
                .describe_forecast(pb::DescribeForecastRequest {
                    scaling_rule: f.rule,
                    scaling_group: f.group,
                    bucket_secs: f.bucket,
                })
                .await?;
            let v = view::ForecastView::from(&r);
            match out {
                Output::Json => print_json(&v),
                Output::Table | Output::Wide => {
                    print!("{}", view::forecast_text(&v));
                    Ok(())
                }
            }
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
            client_token: s.once.token(),
        })
        .await?;
    activity_outcome(admin, r, out, s.wait).await
}
