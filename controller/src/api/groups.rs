//! Scaling groups: create, modify, delete, describe, enable, disable, and
//! their suspended processes.

use crate::api::common::{Page, find_group, invalid, name_key, now_ms};
use crate::api::configurations::find_configuration;
use crate::engine::capacity::change_capacity;
use crate::engine::{Engine, activity, limits};
use crate::id::new_id;
use crate::store::Write;
use ebb_core::decide::capacity;
use ebb_core::model::tasks::AlarmTask;
use ebb_core::model::{
    GroupSpec, GroupState, Instance, Invalid, LifecycleState, Process, ScalingGroup, Trigger,
};
use ebb_core::rules::{AlarmEval, AlarmPeriod, RuleKind, owned_alarm_period};
use ebb_proto::v1 as pb;
use tonic::Status;
use tracing::info;

/// A group as the API shows it, with its instance counts.
pub fn group_view_of(g: &ScalingGroup, instances: &[Instance]) -> pb::ScalingGroup {
    let count_state = |s| instances.iter().filter(|i| i.lifecycle_state == s).count() as u32;
    pb::ScalingGroup {
        id: g.id.clone(),
        name: g.name.clone(),
        min_size: g.min_size,
        max_size: g.max_size,
        desired_capacity: g.desired_capacity,
        default_cooldown_secs: g.default_cooldown_secs,
        removal_policies: g.removal_policies.iter().map(|p| p.to_string()).collect(),
        health_check_type: g.health_check_type.to_string(),
        health_check_grace_period_secs: g.health_check_grace_period_secs,
        sampling_interval_secs: g.sampling_interval_secs,
        deletion_protection: g.deletion_protection,
        state: g.state.to_string(),
        active_scaling_configuration_id: g.active_configuration_id.clone().unwrap_or_default(),
        created_at_ms: g.created_at_ms,
        total_capacity: capacity(instances),
        in_service: count_state(LifecycleState::InService),
        pending: count_state(LifecycleState::Pending),
        suspended_processes: g
            .suspended_processes
            .iter()
            .map(|p| p.to_string())
            .collect(),
    }
}

fn group_spec_from_create(r: &pb::CreateScalingGroupRequest) -> GroupSpec {
    GroupSpec {
        name: Some(r.name.clone()),
        min_size: Some(r.min_size),
        max_size: Some(r.max_size),
        desired_capacity: r.desired_capacity,
        default_cooldown_secs: r.default_cooldown_secs,
        removal_policies: (!r.removal_policies.is_empty()).then(|| r.removal_policies.clone()),
        health_check_type: r.health_check_type.clone(),
        health_check_grace_period_secs: r.health_check_grace_period_secs,
        sampling_interval_secs: r.sampling_interval_secs,
        deletion_protection: r.deletion_protection,
    }
}

fn group_spec_from_modify(r: &pb::ModifyScalingGroupRequest) -> GroupSpec {
    GroupSpec {
        name: r.name.clone(),
        min_size: r.min_size,
        max_size: r.max_size,
        desired_capacity: r.desired_capacity,
        default_cooldown_secs: r.default_cooldown_secs,
        removal_policies: (!r.removal_policies.is_empty()).then(|| r.removal_policies.clone()),
        health_check_type: r.health_check_type.clone(),
        health_check_grace_period_secs: r.health_check_grace_period_secs,
        sampling_interval_secs: r.sampling_interval_secs,
        deletion_protection: r.deletion_protection,
    }
}

pub(crate) fn group_view(engine: &Engine, g: &ScalingGroup) -> Result<pb::ScalingGroup, Status> {
    let instances = engine.store.list_instances(Some(&g.id))?;
    Ok(group_view_of(g, &instances))
}

pub async fn create_scaling_group(
    engine: &Engine,
    req: pb::CreateScalingGroupRequest,
) -> Result<pb::ScalingGroup, Status> {
    let _ops = engine.ops.lock().await;
    let group = ScalingGroup::create(new_id("asg"), &group_spec_from_create(&req), now_ms(engine))
        .map_err(invalid)?;
    let limits = &engine.limits;
    let have = engine.store.list_groups()?.len();
    limits::check(
        have,
        1,
        limits.groups,
        ("scaling groups", "the controller", "groups"),
    )?;
    engine
        .store
        .commit(vec![Write::CreateGroup(group.clone())])?;
    info!(group = %group.name, id = %group.id, "scaling group created");
    group_view(engine, &group)
}

pub async fn modify_scaling_group(
    engine: &Engine,
    req: pb::ModifyScalingGroupRequest,
) -> Result<pb::ScalingGroup, Status> {
    let _ops = engine.ops.lock().await;
    let old = find_group(engine, &req.scaling_group)?;
    if old.state == GroupState::Deleting {
        return Err(Status::failed_precondition(format!(
            "scaling group {} is being deleted",
            old.name
        )));
    }
    let mut new = old
        .modified(&group_spec_from_modify(&req))
        .map_err(invalid)?;
    if let Some(key) = &req.active_scaling_configuration {
        new.active_configuration_id = Some(find_configuration(engine, &old, key)?.id);
    }
    let (trigger, what) = match req.desired_capacity {
        Some(d) => (
            Trigger::Api,
            format!("ModifyScalingGroup set the desired capacity to {d}"),
        ),
        None => {
            let mut parts = Vec::new();
            if new.min_size != old.min_size {
                parts.push(format!("min_size {} → {}", old.min_size, new.min_size));
            }
            if new.max_size != old.max_size {
                parts.push(format!("max_size {} → {}", old.max_size, new.max_size));
            }
            (
                Trigger::Bounds,
                format!(
                    "ModifyScalingGroup changed the bounds ({})",
                    parts.join(", ")
                ),
            )
        }
    };
    let alarms = if new.sampling_interval_secs == old.sampling_interval_secs {
        Vec::new()
    } else {
        alarms_for_sampling(engine, &new)?
    };
    let (group, _) = change_capacity(engine, new, &old, trigger, &what, alarms)?;
    group_view(engine, &group)
}

/// What `group`'s new sampling interval means for its alarms: refused when
/// an alarm's period would be shorter (a period could then hold no sample
/// and the alarm never fire); the alarms of target-tracking rules follow
/// it (see `owned_alarm_period`), starting again from no data.
fn alarms_for_sampling(engine: &Engine, group: &ScalingGroup) -> Result<Vec<Write>, Status> {
    let sampling = group.sampling_interval_secs;
    let alarms = engine.store.list_alarms(Some(&group.id))?;
    let (owned, plain): (Vec<AlarmTask>, Vec<AlarmTask>) =
        alarms.into_iter().partition(|a| a.owner_rule_id.is_some());
    let short: Vec<&AlarmTask> = plain
        .iter()
        .filter(|a| a.spec.period_secs < sampling)
        .collect();
    if let Some(shortest) = short.iter().map(|a| a.spec.period_secs).min() {
        let names: Vec<String> = short
            .iter()
            .map(|a| format!("alarm `{}` ({} s)", a.name, a.spec.period_secs))
            .collect();
        return Err(Status::failed_precondition(format!(
            "sampling_interval_secs: {sampling} s is longer than the period of {}, which could then never fire; lengthen or delete those alarms first, or keep the sampling interval at most {shortest} s",
            names.join(", ")
        )));
    }
    let rules = engine.store.list_rules(Some(&group.id))?;
    let period_of = |a: &AlarmTask| {
        let kind = rules
            .iter()
            .find(|r| a.owner_rule_id.as_deref() == Some(r.id.as_str()))
            .map(|r| &r.kind);
        let alarm_period = match kind {
            Some(RuleKind::TargetTracking { alarm_period, .. }) => *alarm_period,
            _ => AlarmPeriod::default(),
        };
        owned_alarm_period(sampling, alarm_period)
    };
    Ok(owned
        .into_iter()
        .filter_map(|mut a| {
            let period = period_of(&a);
            (a.spec.period_secs != period).then(|| {
                a.spec.period_secs = period;
                a.eval = AlarmEval::default();
                a.last_period_end_ms = None;
                a.last_rejection = None;
                a.scale_in_window = None;
                Write::PutAlarm(a)
            })
        })
        .collect())
}

pub async fn delete_scaling_group(
    engine: &Engine,
    req: pb::DeleteScalingGroupRequest,
) -> Result<pb::DeleteScalingGroupResponse, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    if group.deletion_protection {
        return Err(Status::failed_precondition(format!(
            "scaling group {} has deletion protection; turn it off first",
            group.name
        )));
    }
    let store = &engine.store;
    let instances = store.list_instances(Some(&group.id))?;
    let running = engine.running_activity(&group.id)?;
    if instances.is_empty() && running.is_none() {
        store.commit(vec![Write::DeleteGroup(group.id.clone())])?;
        info!(group = %group.name, "scaling group deleted");
        return Ok(pb::DeleteScalingGroupResponse {
            deleted: true,
            activity_id: String::new(),
        });
    }
    if !req.force {
        return Err(Status::failed_precondition(format!(
            "scaling group {} has {} instances{}; remove them, or delete with force to remove them all",
            group.name,
            instances.len(),
            if running.is_some() {
                " and a running activity"
            } else {
                ""
            }
        )));
    }
    let now = now_ms(engine);
    let current = capacity(&instances);
    let mut deleting = group.clone();
    deleting.state = GroupState::Deleting;
    deleting.min_size = 0;
    deleting.desired_capacity = 0;
    let act = activity::start(
        &group,
        current,
        0,
        Trigger::Api,
        activity::cause(
            "DeleteScalingGroup with force removes every instance",
            current,
            0,
        ),
        now,
    );
    let mut writes = vec![Write::UpdateGroup(deleting)];
    // Protected and Standby instances go too: the operator forced it.
    for mut i in instances.into_iter().filter(|i| {
        matches!(
            i.lifecycle_state,
            LifecycleState::Protected | LifecycleState::Standby
        )
    }) {
        i.lifecycle_state = LifecycleState::InService;
        writes.push(Write::PutInstance(i));
    }
    let act = engine.begin_activity(&group, act, writes)?;
    info!(group = %group.name, activity = %act.id, "forced delete under way");
    Ok(pb::DeleteScalingGroupResponse {
        deleted: false,
        activity_id: act.id,
    })
}

pub async fn describe_scaling_groups(
    engine: &Engine,
    req: pb::DescribeScalingGroupsRequest,
) -> Result<pb::DescribeScalingGroupsResponse, Status> {
    let page = Page::of(req.page_size, &req.page_token)?;
    let groups = if req.scaling_groups.is_empty() {
        engine.store.list_groups()?
    } else {
        let mut found = Vec::new();
        for key in &req.scaling_groups {
            found.push(find_group(engine, key)?);
        }
        found
    };
    let (groups, next_page_token) = page.cut(groups, |g| name_key(&g.name, &g.id));
    let views: Result<Vec<_>, _> = groups.iter().map(|g| group_view(engine, g)).collect();
    Ok(pb::DescribeScalingGroupsResponse {
        scaling_groups: views?,
        next_page_token,
    })
}

pub async fn enable_scaling_group(
    engine: &Engine,
    req: pb::EnableScalingGroupRequest,
) -> Result<pb::ScalingGroup, Status> {
    let _ops = engine.ops.lock().await;
    let old = find_group(engine, &req.scaling_group)?;
    if old.state == GroupState::Deleting {
        return Err(Status::failed_precondition(format!(
            "scaling group {} is being deleted",
            old.name
        )));
    }
    let mut group = old.clone();
    if let Some(key) = &req.active_scaling_configuration {
        group.active_configuration_id = Some(find_configuration(engine, &old, key)?.id);
    }
    if group.active_configuration_id.is_none() {
        let configs = engine.store.list_configurations(Some(&group.id))?;
        match configs.as_slice() {
            [only] => group.active_configuration_id = Some(only.id.clone()),
            [] => {
                return Err(Status::failed_precondition(format!(
                    "scaling group {} has no scaling configuration; create one before enabling it",
                    group.name
                )));
            }
            _ => {
                return Err(Status::failed_precondition(format!(
                    "scaling group {} has several scaling configurations; name the one to make active",
                    group.name
                )));
            }
        }
    }
    if old.state == GroupState::Active
        && old.active_configuration_id == group.active_configuration_id
    {
        return group_view(engine, &old);
    }
    group.state = GroupState::Active;
    let now = now_ms(engine);
    let store = &engine.store;
    let current = capacity(&store.list_instances(Some(&group.id))?);
    let writes = vec![Write::UpdateGroup(group.clone())];
    if current != group.desired_capacity && engine.running_activity(&group.id)?.is_none() {
        let act = activity::start(
            &group,
            current,
            group.desired_capacity,
            Trigger::Api,
            activity::cause(
                &format!("the scaling group {} was enabled", group.name),
                current,
                group.desired_capacity,
            ),
            now,
        );
        engine.begin_activity(&group, act, writes)?;
    } else {
        store.commit(writes)?;
        engine.wake();
    }
    info!(group = %group.name, "scaling group enabled");
    group_view(engine, &group)
}

pub async fn disable_scaling_group(
    engine: &Engine,
    req: pb::DisableScalingGroupRequest,
) -> Result<pb::ScalingGroup, Status> {
    let _ops = engine.ops.lock().await;
    let mut group = find_group(engine, &req.scaling_group)?;
    if group.state == GroupState::Deleting {
        return Err(Status::failed_precondition(format!(
            "scaling group {} is being deleted",
            group.name
        )));
    }
    if group.state == GroupState::Active {
        group.state = GroupState::Inactive;
        engine
            .store
            .commit(vec![Write::UpdateGroup(group.clone())])?;
        info!(group = %group.name, "scaling group disabled");
    }
    group_view(engine, &group)
}

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
        .commit(vec![Write::UpdateGroup(group.clone())])?;
    info!(group = %group.name, suspended = ?group.suspended_processes, "processes {}", if suspend { "suspended" } else { "resumed" });
    let instances = engine.store.list_instances(Some(&group.id))?;
    Ok(group_view_of(&group, &instances))
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
