//! The plan (pure): what the controller has against what the file
//! declares, as the calls that close the gap. The group and its
//! configuration are here; rules, alarms and tasks in `plan_automation`;
//! load balancers and database allow-lists in `plan_attachments`.

use std::collections::BTreeMap;

use ebb_core::model;
use ebb_proto::v1 as pb;

use super::diff::{differs, show_list, show_map, show_str};
use super::file::{ApplyFile, ConfigDecl, GroupDecl};
use super::plan_attachments::plan_attachments;
use super::plan_automation::plan_automation;
use super::step::{State, Step};
use crate::convert::{check_of, check_pb, metric_of, metric_pb};

/// The calls that make the controller match the file, in order: group,
/// configuration, rules, alarms, tasks, attachments, then enable or disable
/// the group.
pub fn plan(file: &ApplyFile, state: &State) -> Result<Vec<Step>, String> {
    let group = state.group.as_ref();
    let configurations = &state.configurations[..];
    let g = &file.group;
    let c = &file.configuration;
    let mut steps = Vec::new();
    let group_state = match group {
        None => {
            steps.push(Step::CreateGroup(pb::CreateScalingGroupRequest {
                name: g.name.clone(),
                min_size: g.min_size,
                max_size: g.max_size,
                desired_capacity: g.desired_capacity,
                default_cooldown_secs: g.default_cooldown_secs,
                removal_policies: g.removal_policies.clone().unwrap_or_default(),
                health_check_type: g.health_check_type.clone(),
                health_check_grace_period_secs: g.health_check_grace_period_secs,
                sampling_interval_secs: g.sampling_interval_secs,
                deletion_protection: g.deletion_protection,
            }));
            model::GroupState::Inactive.as_str().to_owned()
        }
        Some(current) => {
            if current.state == model::GroupState::Deleting.as_str() {
                return Err(format!(
                    "group {} is being deleted; apply again once it is gone",
                    g.name
                ));
            }
            if let Some(step) = modify_group(g, current) {
                steps.push(step);
            }
            current.state.clone()
        }
    };
    let existing = configurations.iter().find(|x| x.name == c.name);
    match existing {
        None => steps.push(Step::CreateConfig(pb::CreateScalingConfigurationRequest {
            scaling_group: g.name.clone(),
            name: c.name.clone(),
            instance_type: c.instance_type.clone(),
            command: c.command.clone(),
            env: c.env.clone().into_iter().collect(),
            tags: c.tags.clone().into_iter().collect(),
            user_data: c.user_data.clone(),
            health_checks: c.health_checks.iter().map(check_pb).collect(),
            metrics: c.metrics.iter().map(metric_pb).collect(),
            exec: c.exec.as_ref().map(Into::into),
            microvm: c.microvm.as_ref().map(Into::into),
        })),
        Some(current) => {
            if let Some(step) = modify_config(c, current) {
                steps.push(step);
            }
        }
    }
    let active = match (group, existing) {
        (Some(g), Some(x)) => g.active_scaling_configuration_id == x.id,
        _ => false,
    };
    if !active {
        steps.push(Step::Activate {
            group: g.name.clone(),
            configuration: c.name.clone(),
        });
    }
    plan_automation(file, state, &mut steps)?;
    // Before enabling, so the first instances register on them.
    plan_attachments(file, state, &mut steps)?;
    let is_active = group_state == model::GroupState::Active.as_str();
    if g.enabled && !is_active {
        steps.push(Step::Enable {
            group: g.name.clone(),
        });
    } else if !g.enabled && is_active {
        steps.push(Step::Disable {
            group: g.name.clone(),
        });
    }
    Ok(steps)
}

fn modify_group(g: &GroupDecl, current: &pb::ScalingGroup) -> Option<Step> {
    let mut changes = Vec::new();
    let num = |v: &u32| v.to_string();
    let request = pb::ModifyScalingGroupRequest {
        client_token: String::new(),
        scaling_group: g.name.clone(),
        min_size: differs(
            &mut changes,
            "min_size",
            Some(&g.min_size),
            &current.min_size,
            num,
        ),
        max_size: differs(
            &mut changes,
            "max_size",
            Some(&g.max_size),
            &current.max_size,
            num,
        ),
        desired_capacity: differs(
            &mut changes,
            "desired_capacity",
            g.desired_capacity.as_ref(),
            &current.desired_capacity,
            num,
        ),
        default_cooldown_secs: differs(
            &mut changes,
            "default_cooldown_secs",
            g.default_cooldown_secs.as_ref(),
            &current.default_cooldown_secs,
            num,
        ),
        removal_policies: differs(
            &mut changes,
            "removal_policies",
            g.removal_policies.as_ref(),
            &current.removal_policies,
            |l| show_list(l),
        )
        .unwrap_or_default(),
        health_check_type: differs(
            &mut changes,
            "health_check_type",
            g.health_check_type.as_ref(),
            &current.health_check_type,
            |s| s.clone(),
        ),
        health_check_grace_period_secs: differs(
            &mut changes,
            "health_check_grace_period_secs",
            g.health_check_grace_period_secs.as_ref(),
            &current.health_check_grace_period_secs,
            num,
        ),
        sampling_interval_secs: differs(
            &mut changes,
            "sampling_interval_secs",
            g.sampling_interval_secs.as_ref(),
            &current.sampling_interval_secs,
            num,
        ),
        deletion_protection: differs(
            &mut changes,
            "deletion_protection",
            g.deletion_protection.as_ref(),
            &current.deletion_protection,
            |b| b.to_string(),
        ),
        name: None,
        active_scaling_configuration: None,
    };
    (!changes.is_empty()).then_some(Step::ModifyGroup { changes, request })
}

fn modify_config(c: &ConfigDecl, current: &pb::ScalingConfiguration) -> Option<Step> {
    let mut changes = Vec::new();
    let env: BTreeMap<String, String> = current.env.clone().into_iter().collect();
    let tags: BTreeMap<String, String> = current.tags.clone().into_iter().collect();
    let instance_type = differs(
        &mut changes,
        "instance_type",
        Some(&c.instance_type),
        &current.instance_type,
        |s| show_str(s),
    );
    let command = differs(
        &mut changes,
        "command",
        Some(&c.command),
        &current.command,
        |l| show_list(l),
    );
    let new_env = differs(&mut changes, "env", Some(&c.env), &env, show_map);
    let new_tags = differs(&mut changes, "tags", Some(&c.tags), &tags, show_map);
    let user_data = differs(
        &mut changes,
        "user_data",
        Some(&c.user_data),
        &current.user_data,
        |s| show_str(s),
    );
    let current_checks: Vec<model::LocalCheck> =
        current.health_checks.iter().map(check_of).collect();
    let checks = differs(
        &mut changes,
        "health_checks",
        Some(&c.health_checks),
        &current_checks,
        |l| format!("{} checks", l.len()),
    );
    let current_metrics: Vec<model::MetricSource> = current.metrics.iter().map(metric_of).collect();
    let metrics = differs(
        &mut changes,
        "metrics",
        Some(&c.metrics),
        &current_metrics,
        |l| show_list(&l.iter().map(crate::view::metric_line).collect::<Vec<_>>()),
    );
    let current_exec = current.exec.as_ref().map(model::ExecSettings::from);
    let exec = differs(&mut changes, "exec", Some(&c.exec), &current_exec, |e| {
        e.as_ref().map_or("-".to_owned(), |e| e.program.clone())
    });
    let current_vm = current.microvm.as_ref().map(model::MicrovmSettings::from);
    let microvm = differs(
        &mut changes,
        "microvm",
        Some(&c.microvm),
        &current_vm,
        |m| {
            m.as_ref().map_or("-".to_owned(), |m| {
                format!("{} vCPU, {} MiB", m.vcpus(), m.memory_mib())
            })
        },
    );
    if changes.is_empty() {
        return None;
    }
    let request = pb::ModifyScalingConfigurationRequest {
        scaling_configuration_id: current.id.clone(),
        name: None,
        instance_type,
        set_command: command.is_some(),
        command: command.unwrap_or_default(),
        set_env: new_env.is_some(),
        env: new_env.unwrap_or_default().into_iter().collect(),
        set_tags: new_tags.is_some(),
        tags: new_tags.unwrap_or_default().into_iter().collect(),
        user_data,
        set_health_checks: checks.is_some(),
        health_checks: checks.unwrap_or_default().iter().map(check_pb).collect(),
        set_metrics: metrics.is_some(),
        metrics: metrics.unwrap_or_default().iter().map(metric_pb).collect(),
        exec: exec.flatten().as_ref().map(Into::into),
        microvm: microvm.flatten().as_ref().map(Into::into),
    };
    Some(Step::ModifyConfig {
        name: c.name.clone(),
        changes,
        request,
    })
}
