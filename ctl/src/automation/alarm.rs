//! `alarm`: alarms that watch a metric and run rules.

use ebb_proto::v1 as pb;

use crate::cli::AlarmCmd;
use crate::conn::Admin;
use crate::error::{Error, Result};
use crate::lookup::{group_names, rule_names};
use crate::output::{Output, done, print_json};
use crate::view::{self, AlarmView};

/// Usage problems of `alarm` that need no connection.
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

async fn find_alarm(admin: &mut Admin, group: &str, alarm: &str) -> Result<pb::Alarm> {
    admin
        .describe_alarms(pb::DescribeAlarmsRequest {
            scaling_group: group.to_owned(),
            state: String::new(),
            ..Default::default()
        })
        .await?
        .alarms
        .into_iter()
        .find(|a| a.id == alarm || a.name == alarm)
        .ok_or_else(|| Error::Server(format!("alarm `{alarm}` does not exist in group {group}")))
}

pub async fn alarm(admin: &mut Admin, cmd: AlarmCmd, out: Output) -> Result<()> {
    let (verb, alarm) = match cmd {
        AlarmCmd::List { group, state } => {
            let r = admin
                .describe_alarms(pb::DescribeAlarmsRequest {
                    scaling_group: group.unwrap_or_default(),
                    state: state.unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
            let views: Vec<AlarmView> = r.alarms.iter().map(AlarmView::from).collect();
            return match out {
                Output::Json => print_json(&views),
                Output::Table | Output::Wide => {
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
                Output::Table | Output::Wide => {
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
                    name: c.name.into_string(),
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
