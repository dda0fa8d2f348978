//! Running a plan: read what the controller has, plan, and make the calls
//! in order, one printed line per change.

use ebb_proto::v1 as pb;

use super::file::ApplyFile;
use super::plan::plan;
use super::step::{State, Step};
use crate::conn::Admin;
use crate::error::{Error, Result};
use crate::output::{Output, print_json};

/// Reads the current state, plans, and makes the calls in order.
/// With `prune`, the group's rules, alarms and tasks the file does not
/// name are deleted last (and listed in the plan).
pub async fn run(
    admin: &mut Admin,
    file: &ApplyFile,
    dry_run: bool,
    prune: bool,
    out: Output,
) -> Result<()> {
    let mut state = State {
        group: admin.find_group(&file.group.name).await?,
        ..State::default()
    };
    // Only what the file declares is read, so a file without rules, alarms
    // or tasks needs nothing of those APIs.
    if let Some(g) = &state.group {
        let id = g.id.clone();
        state.configurations = admin
            .describe_scaling_configurations(pb::DescribeScalingConfigurationsRequest {
                scaling_group: id.clone(),
                ..Default::default()
            })
            .await?
            .scaling_configurations;
        if prune || !(file.rules.is_empty() && file.alarms.is_empty() && file.tasks.is_empty()) {
            state.rules = admin
                .describe_scaling_rules(pb::DescribeScalingRulesRequest {
                    scaling_group: id.clone(),
                    ..Default::default()
                })
                .await?
                .scaling_rules;
        }
        if prune || !file.alarms.is_empty() {
            state.alarms = admin
                .describe_alarms(pb::DescribeAlarmsRequest {
                    scaling_group: id.clone(),
                    state: String::new(),
                    ..Default::default()
                })
                .await?
                .alarms;
        }
        if prune || !file.tasks.is_empty() {
            state.tasks = admin
                .describe_scheduled_tasks(pb::DescribeScheduledTasksRequest {
                    scaling_group: id.clone(),
                    ..Default::default()
                })
                .await?
                .scheduled_tasks;
        }
        if !file.load_balancers.is_empty() {
            state.load_balancers = admin
                .describe_load_balancers(pb::DescribeLoadBalancersRequest {
                    scaling_group: id.clone(),
                })
                .await?
                .load_balancers;
        }
        if !file.db_instances.is_empty() {
            state.db_instances = admin
                .describe_db_instances(pb::DescribeDbInstancesRequest { scaling_group: id })
                .await?
                .db_instances;
        }
    }
    let mut steps = plan(file, &state).map_err(Error::Server)?;
    if prune {
        steps.extend(super::plan_automation::prune(file, &state));
    }
    let mut lines = Vec::new();
    for step in &steps {
        if !dry_run {
            execute(admin, step).await?;
        }
        let line = step.line(!dry_run);
        if out != Output::Json {
            println!("{line}");
        }
        lines.push(line);
    }
    match out {
        Output::Json => print_json(&serde_json::json!({
            "dry_run": dry_run,
            "changes": lines,
        })),
        Output::Table | Output::Wide => {
            if steps.is_empty() {
                println!("no changes");
            }
            Ok(())
        }
    }
}

async fn execute(admin: &mut Admin, step: &Step) -> Result<()> {
    match step.clone() {
        Step::CreateGroup(r) => drop(admin.create_scaling_group(r).await?),
        Step::ModifyGroup { request, .. } => drop(admin.modify_scaling_group(request).await?),
        Step::CreateConfig(r) => drop(admin.create_scaling_configuration(r).await?),
        Step::ModifyConfig { request, .. } => {
            drop(admin.modify_scaling_configuration(request).await?)
        }
        Step::Activate {
            group,
            configuration,
        } => drop(
            admin
                .modify_scaling_group(pb::ModifyScalingGroupRequest {
                    scaling_group: group,
                    active_scaling_configuration: Some(configuration),
                    ..Default::default()
                })
                .await?,
        ),
        Step::CreateRule(r) => drop(admin.create_scaling_rule(r).await?),
        Step::ModifyRule { request, .. } => drop(admin.modify_scaling_rule(request).await?),
        Step::CreateAlarm(r) => drop(admin.create_alarm(r).await?),
        Step::ModifyAlarm { request, .. } => drop(admin.modify_alarm(request).await?),
        Step::SetAlarmEnabled {
            group,
            alarm,
            enabled,
        } => {
            let r = pb::AlarmRef {
                alarm,
                scaling_group: group,
            };
            if enabled {
                drop(admin.enable_alarm(r).await?)
            } else {
                drop(admin.disable_alarm(r).await?)
            }
        }
        Step::CreateTask(r) => drop(admin.create_scheduled_task(r).await?),
        Step::ModifyTask { request, .. } => drop(admin.modify_scheduled_task(request).await?),
        Step::AttachLoadBalancer { request, .. } => {
            drop(admin.attach_load_balancers(request).await?)
        }
        Step::AttachDbInstance { request, .. } => drop(admin.attach_db_instances(request).await?),
        Step::Enable { group } => drop(
            admin
                .enable_scaling_group(pb::EnableScalingGroupRequest {
                    client_token: String::new(),
                    scaling_group: group,
                    active_scaling_configuration: None,
                })
                .await?,
        ),
        Step::Disable { group } => drop(
            admin
                .disable_scaling_group(pb::DisableScalingGroupRequest {
                    scaling_group: group,
                })
                .await?,
        ),
        Step::DeleteRule { group, rule } => drop(
            admin
                .delete_scaling_rule(pb::DeleteScalingRuleRequest {
                    scaling_rule: rule,
                    scaling_group: group,
                })
                .await?,
        ),
        Step::DeleteAlarm { group, alarm } => drop(
            admin
                .delete_alarm(pb::AlarmRef {
                    alarm,
                    scaling_group: group,
                })
                .await?,
        ),
        Step::DeleteTask { group, task } => drop(
            admin
                .delete_scheduled_task(pb::ScheduledTaskRef {
                    scheduled_task: task,
                    scaling_group: group,
                })
                .await?,
        ),
    }
    Ok(())
}
