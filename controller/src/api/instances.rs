//! Instances: describe, attach, detach, remove, protect, mark unhealthy,
//! standby.

use crate::api::common::{Page, filter, find_group, group_filter, invalid, now_ms, time_key};
use crate::engine::capacity::{reject_if_suspended, rejection};
use crate::engine::{Engine, activity};
use crate::store::{Detached, Write};
use ebb_core::decide::capacity;
use ebb_core::model::Activity;
use ebb_core::model::{
    CreationType, GroupState, HealthStatus, Instance, Invalid, LifecycleState, ScalingGroup,
    Trigger,
};
use ebb_proto::v1 as pb;
use tonic::Status;
use tracing::info;

pub(crate) fn instance_view(engine: &Engine, i: &Instance) -> pb::Instance {
    let fleet = &engine.fleet;
    let (connected, cpu, mem, hostname) = fleet
        .with_agent(&i.id, |a| {
            let p = a.ring.back().filter(|_| a.connected);
            (
                a.connected,
                p.and_then(|p| p.cpu_utilization()),
                p.and_then(|p| p.memory_utilization()),
                a.hello.hostname.clone(),
            )
        })
        .unwrap_or((false, None, None, String::new()));
    pb::Instance {
        id: i.id.clone(),
        scaling_group_id: i.group_id.clone(),
        scaling_configuration_id: i.configuration_id.clone().unwrap_or_default(),
        lifecycle_state: i.lifecycle_state.to_string(),
        health_status: i.health_status.to_string(),
        creation_type: i.creation_type.to_string(),
        address: i.address.clone().unwrap_or_default(),
        created_at_ms: i.created_at_ms,
        in_service_at_ms: i.in_service_at_ms.unwrap_or_default(),
        agent_connected: connected,
        cpu_utilization: cpu,
        memory_utilization: mem,
        hostname,
        attachments: super::attachments::instance_view(engine, i),
        provider_id: i.provider_id.clone().unwrap_or_default(),
        provider_address: i.provider_address.clone().unwrap_or_default(),
    }
}

/// The most instances one call names: each is a write of the call's one
/// commit, which must fit etcd's default `--max-txn-ops` (128). ESS allows
/// 20 to 1000 per call, depending on the call.
pub const MAX_INSTANCE_IDS: usize = 100;

/// Refuses an empty or too long `instance_ids`.
fn check_count(ids: &[String]) -> Result<(), Status> {
    if ids.is_empty() {
        return Err(invalid(Invalid::one(
            "instance_ids",
            "name at least one instance",
        )));
    }
    if ids.len() > MAX_INSTANCE_IDS {
        return Err(invalid(Invalid::one(
            "instance_ids",
            format!(
                "lists {} instances; at most {MAX_INSTANCE_IDS} per call",
                ids.len()
            ),
        )));
    }
    Ok(())
}

/// Instances of `group` named in `ids`, every unknown id reported.
fn instances_of(
    engine: &Engine,
    group: &ScalingGroup,
    ids: &[String],
) -> Result<Vec<Instance>, Status> {
    check_count(ids)?;
    let all = engine.store.list_instances(Some(&group.id))?;
    let mut errors = Invalid::default();
    let mut found = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        match all.iter().find(|i| &i.id == id) {
            Some(i) => found.push(i.clone()),
            None => errors.push(
                format!("instance_ids[{n}]"),
                format!("`{id}` is not in group {}", group.name),
            ),
        }
    }
    errors.into_result().map_err(invalid)?;
    Ok(found)
}

/// Moves instances between lifecycle states; each must be in `from`.
fn set_states(
    engine: &Engine,
    req: pb::StandbyRequest,
    from: &[LifecycleState],
    to: LifecycleState,
) -> Result<pb::InstancesResponse, Status> {
    let group = find_group(engine, &req.scaling_group)?;
    let mut instances = instances_of(engine, &group, &req.instance_ids)?;
    let mut errors = Invalid::default();
    for (n, i) in instances.iter().enumerate() {
        if !from.contains(&i.lifecycle_state) && i.lifecycle_state != to {
            let names: Vec<_> = from.iter().map(|s| s.as_str()).collect();
            errors.push(
                format!("instance_ids[{n}]"),
                format!(
                    "{} is {}; it must be {}",
                    i.id,
                    i.lifecycle_state,
                    names.join(" or ")
                ),
            );
        }
    }
    errors.into_result().map_err(invalid)?;
    let writes = instances
        .iter_mut()
        .map(|i| {
            i.lifecycle_state = to;
            Write::PutInstance(i.clone())
        })
        .collect();
    engine.store.commit(writes)?;
    info!(group = %group.name, state = %to, ids = ?req.instance_ids, "instances moved");
    Ok(pb::InstancesResponse {
        instances: instances.iter().map(|i| instance_view(engine, i)).collect(),
        activity_id: String::new(),
    })
}

/// Refuses instances already on their way out, and any named twice: each
/// would lower desired once more for an instance that leaves only once.
/// `instances` are in the order of the request's `instance_ids`.
fn refuse_taken_out(instances: &[Instance]) -> Result<(), Status> {
    let mut errors = Invalid::default();
    for (n, i) in instances.iter().enumerate() {
        if instances[..n].iter().any(|earlier| earlier.id == i.id) {
            errors.push(
                format!("instance_ids[{n}]"),
                format!("`{}` is listed twice", i.id),
            );
        } else if matches!(
            i.lifecycle_state,
            LifecycleState::Removing | LifecycleState::RemovingWait
        ) {
            errors.push(
                format!("instance_ids[{n}]"),
                format!(
                    "{} is {}; it is already being removed",
                    i.id, i.lifecycle_state
                ),
            );
        }
    }
    errors.into_result().map_err(invalid)
}

/// Shared by Detach and Remove: takes instances out of the group,
/// lowering desired unless asked not to.
fn take_out(
    engine: &Engine,
    group_key: &str,
    ids: &[String],
    decrease: Option<bool>,
    release: bool,
) -> Result<pb::InstancesResponse, Status> {
    let group = find_group(engine, group_key)?;
    let instances = instances_of(engine, &group, ids)?;
    refuse_taken_out(&instances)?;
    let decrease = decrease.unwrap_or(true);
    let n = instances.len() as u32;
    let mut updated = group.clone();
    if decrease {
        if group.desired_capacity < group.min_size + n {
            return Err(Status::failed_precondition(format!(
                "removing {n} would take the desired capacity below min_size {} (it is {}); lower min_size first or pass decrease_desired_capacity = false",
                group.min_size, group.desired_capacity
            )));
        }
        updated.desired_capacity -= n;
    }
    let verb = if release {
        "RemoveInstances"
    } else {
        "DetachInstances"
    };
    let now = now_ms(engine);
    let store = &engine.store;
    let current = capacity(&store.list_instances(Some(&group.id))?);
    let what = format!("{verb} took out {}", ids.join(", "));
    if let Some(act) = reject_if_suspended(
        engine,
        &group,
        current,
        updated.desired_capacity,
        current - n,
        Trigger::Api,
        &what,
    )? {
        return Err(rejection(&act).into());
    }
    let mut act = activity::start(
        &group,
        current,
        current - n,
        Trigger::Api,
        activity::cause(&what, current, current - n),
        now,
    );
    act.removed_instances = ids.to_vec();
    let mut writes = vec![Write::UpdateGroup(updated.clone())];
    for mut inst in instances.clone() {
        if release {
            // Through the group's SCALE_IN hooks, as a scale-in would.
            crate::engine::attachments::start_leaving(&group, &mut inst, now);
            inst.activity_id = Some(act.id.clone());
            writes.push(Write::PutInstance(inst));
        } else {
            // Still running, no longer ours: remembered so that the sweep
            // of unclaimed provider instances leaves one ebb created alone,
            // and so that its agent's Connect is refused as detached.
            writes.push(Write::PutDetached(Detached {
                instance_id: inst.id.clone(),
                group_id: group.id.clone(),
                detached_at_ms: now,
            }));
            writes.push(Write::DeleteInstance(inst.id.clone()));
        }
    }
    if !release {
        // Detached instances leave at once; nothing left to wait for
        // unless desired was kept (then the loop launches replacements).
        if decrease {
            activity::complete(&mut act, now);
        }
    }
    let act = engine.begin_activity(&group, act, writes)?;
    if !release {
        for i in &instances {
            engine.fleet.forget(&i.id);
        }
    }
    Ok(pb::InstancesResponse {
        instances: instances.iter().map(|i| instance_view(engine, i)).collect(),
        activity_id: act.id,
    })
}

pub async fn describe_scaling_instances(
    engine: &Engine,
    req: pb::DescribeScalingInstancesRequest,
) -> Result<pb::DescribeScalingInstancesResponse, Status> {
    let group_id = group_filter(engine, &req.scaling_group)?;
    let mut e = Invalid::default();
    let page = Page::read(req.page_size, &req.page_token, &mut e);
    let state: Option<LifecycleState> = filter("lifecycle_state", &req.lifecycle_state, &mut e);
    e.into_result().map_err(invalid)?;
    let mut instances = engine.store.list_instances(group_id.as_deref())?;
    instances.retain(|i| {
        state.is_none_or(|s| i.lifecycle_state == s)
            && (req.instance_ids.is_empty() || req.instance_ids.contains(&i.id))
            && i.created_at_ms >= req.since_ms
    });
    let (instances, next_page_token) = page.cut(instances, |i| time_key(i.created_at_ms, &i.id));
    Ok(pb::DescribeScalingInstancesResponse {
        instances: instances.iter().map(|i| instance_view(engine, i)).collect(),
        next_page_token,
    })
}

pub async fn attach_instances(
    engine: &Engine,
    req: pb::AttachInstancesRequest,
) -> Result<pb::InstancesResponse, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    let what = format!("AttachInstances attached {}", req.instance_ids.join(", "));
    let (instances, act) = attach(engine, &group, &req.instance_ids, &what, Vec::new())?;
    Ok(pb::InstancesResponse {
        instances: instances.iter().map(|i| instance_view(engine, i)).collect(),
        activity_id: act.id,
    })
}

/// Attaches the instances `ids` to `group` (`creation_type = Attached`,
/// desired capacity raised by as many, one completed activity described by
/// `what`), committing `extra` in the same transaction. Refused when the
/// group is not active, an id is bad or taken, max_size would be passed,
/// or scaling out is suspended. The caller holds `engine.ops`.
pub(crate) fn attach(
    engine: &Engine,
    group: &ScalingGroup,
    ids: &[String],
    what: &str,
    extra: Vec<Write>,
) -> Result<(Vec<Instance>, Activity), Status> {
    if group.state != GroupState::Active {
        return Err(Status::failed_precondition(format!(
            "scaling group {} is not active ({}); enable it before attaching instances",
            group.name, group.state
        )));
    }
    check_count(ids)?;
    let store = &engine.store;
    let mut errors = Invalid::default();
    for (n, id) in ids.iter().enumerate() {
        if let Err(e) = ebb_certs::Identity::instance("x", id) {
            errors.push(format!("instance_ids[{n}]"), e.to_string());
        } else if let Some(existing) = store.get_instance(id)? {
            errors.push(
                format!("instance_ids[{n}]"),
                format!("`{id}` already belongs to group {}", existing.group_id),
            );
        } else if ids[..n].contains(id) {
            errors.push(
                format!("instance_ids[{n}]"),
                format!("`{id}` is listed twice"),
            );
        }
    }
    errors.into_result().map_err(invalid)?;
    let n = ids.len() as u32;
    if group.desired_capacity + n > group.max_size {
        return Err(Status::failed_precondition(format!(
            "attaching {n} would take the desired capacity to {}, above max_size {}",
            group.desired_capacity + n,
            group.max_size
        )));
    }
    let now = now_ms(engine);
    let current = capacity(&store.list_instances(Some(&group.id))?);
    let mut updated = group.clone();
    updated.desired_capacity += n;
    if let Some(act) = reject_if_suspended(
        engine,
        group,
        current,
        updated.desired_capacity,
        current + n,
        Trigger::Api,
        what,
    )? {
        return Err(rejection(&act).into());
    }
    let mut act = activity::start(
        group,
        current,
        current + n,
        Trigger::Api,
        activity::cause(what, current, current + n),
        now,
    );
    act.created_instances = ids.to_vec();
    activity::complete(&mut act, now);
    let instances: Vec<Instance> = ids
        .iter()
        .map(|id| Instance {
            id: id.clone(),
            group_id: group.id.clone(),
            configuration_id: None,
            lifecycle_state: LifecycleState::Pending,
            health_status: HealthStatus::Healthy,
            creation_type: CreationType::Attached,
            address: None,
            created_at_ms: now,
            in_service_at_ms: None,
            activity_id: Some(act.id.clone()),
            hook_waits: Vec::new(),
            attach_phase: None,
            provider_id: None,
            provider_address: None,
            launched_at_ms: None,
        })
        .collect();
    let mut writes = vec![Write::UpdateGroup(updated)];
    writes.extend(instances.iter().cloned().map(Write::PutInstance));
    writes.push(Write::PutActivity(act.clone()));
    writes.extend(extra);
    store.commit(writes)?;
    info!(group = %group.name, activity = %act.id, "{}", act.cause);
    engine.wake();
    Ok((instances, act))
}

pub async fn detach_instances(
    engine: &Engine,
    req: pb::DetachInstancesRequest,
) -> Result<pb::InstancesResponse, Status> {
    let _ops = engine.ops.lock().await;
    take_out(
        engine,
        &req.scaling_group,
        &req.instance_ids,
        req.decrease_desired_capacity,
        false,
    )
}

pub async fn remove_instances(
    engine: &Engine,
    req: pb::RemoveInstancesRequest,
) -> Result<pb::InstancesResponse, Status> {
    let _ops = engine.ops.lock().await;
    take_out(
        engine,
        &req.scaling_group,
        &req.instance_ids,
        req.decrease_desired_capacity,
        true,
    )
}

pub async fn set_instances_protection(
    engine: &Engine,
    req: pb::SetInstancesProtectionRequest,
) -> Result<pb::InstancesResponse, Status> {
    let _ops = engine.ops.lock().await;
    let standby = pb::StandbyRequest {
        scaling_group: req.scaling_group,
        instance_ids: req.instance_ids,
    };
    if req.protected {
        set_states(
            engine,
            standby,
            &[LifecycleState::InService],
            LifecycleState::Protected,
        )
    } else {
        set_states(
            engine,
            standby,
            &[LifecycleState::Protected],
            LifecycleState::InService,
        )
    }
}

pub async fn set_instance_health(
    engine: &Engine,
    req: pb::SetInstanceHealthRequest,
) -> Result<pb::InstancesResponse, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    let status: HealthStatus = req
        .health_status
        .parse()
        .map_err(|e: String| invalid(Invalid::one("health_status", e)))?;
    let mut instances = instances_of(engine, &group, &req.instance_ids)?;
    let writes = instances
        .iter_mut()
        .map(|i| {
            i.health_status = status;
            Write::PutInstance(i.clone())
        })
        .collect();
    engine.store.commit(writes)?;
    info!(group = %group.name, ids = ?req.instance_ids, "marked {status} by hand");
    engine.wake();
    Ok(pb::InstancesResponse {
        instances: instances.iter().map(|i| instance_view(engine, i)).collect(),
        activity_id: String::new(),
    })
}

pub async fn enter_standby(
    engine: &Engine,
    req: pb::StandbyRequest,
) -> Result<pb::InstancesResponse, Status> {
    let _ops = engine.ops.lock().await;
    set_states(
        engine,
        req,
        &[LifecycleState::InService],
        LifecycleState::Standby,
    )
}

pub async fn exit_standby(
    engine: &Engine,
    req: pb::StandbyRequest,
) -> Result<pb::InstancesResponse, Status> {
    let _ops = engine.ops.lock().await;
    set_states(
        engine,
        req,
        &[LifecycleState::Standby],
        LifecycleState::InService,
    )
}
