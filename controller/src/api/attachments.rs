//! Attachments: load balancers (HAProxy backends) and database instances
//! (PostgreSQL allow-lists) a group's instances join, ESS's
//! `AttachLoadBalancers` / `AttachDBInstances` and their kin. The engine
//! turns them into each target agent's desired state on its next pass.

use crate::api::common::{find_group, invalid, now_ms};
use crate::engine::Engine;
use crate::store::Write;
use ebb_core::model::attachments::{
    AttachPhase, DbInstance, DbInstanceSpec, LoadBalancer, LoadBalancerSpec,
};
use ebb_core::model::{Instance, ScalingGroup};
use ebb_proto::v1 as pb;
use tonic::Status;
use tracing::info;

fn load_balancer_view(
    engine: &Engine,
    group: &ScalingGroup,
    l: &LoadBalancer,
) -> pb::LoadBalancerAttachment {
    let status = engine
        .fleet
        .targets
        .attachment(&l.target, &l.attachment_id(&group.id));
    pb::LoadBalancerAttachment {
        target: l.target.clone(),
        backend: l.backend.clone(),
        port: u32::from(l.port),
        weight: l.weight,
        drain_timeout_secs: Some(l.drain_timeout_secs),
        target_connected: status.connected,
        state: if l.is_detaching() {
            "Detaching"
        } else {
            "Attached"
        }
        .to_owned(),
        error: status.error,
    }
}

fn db_instance_view(
    engine: &Engine,
    group: &ScalingGroup,
    d: &DbInstance,
) -> pb::DbInstanceAttachment {
    let status = engine
        .fleet
        .targets
        .attachment(&d.target, &d.attachment_id(&group.id));
    pb::DbInstanceAttachment {
        target: d.target.clone(),
        database: d.database.clone(),
        user: d.user.clone(),
        auth_method: d.auth_method.clone(),
        target_connected: status.connected,
        error: status.error,
    }
}

fn load_balancers(engine: &Engine, group: &ScalingGroup) -> pb::LoadBalancerAttachments {
    pb::LoadBalancerAttachments {
        scaling_group_id: group.id.clone(),
        load_balancers: group
            .load_balancers
            .iter()
            .map(|l| load_balancer_view(engine, group, l))
            .collect(),
    }
}

fn db_instances(engine: &Engine, group: &ScalingGroup) -> pb::DbInstanceAttachments {
    pb::DbInstanceAttachments {
        scaling_group_id: group.id.clone(),
        db_instances: group
            .db_instances
            .iter()
            .map(|d| db_instance_view(engine, group, d))
            .collect(),
    }
}

/// Stores the group as changed and wakes the engine to push the targets.
fn save(engine: &Engine, group: &ScalingGroup) -> Result<(), Status> {
    engine
        .store
        .commit(vec![Write::UpdateGroup(group.clone())])?;
    engine.wake();
    Ok(())
}

pub async fn attach_load_balancers(
    engine: &Engine,
    req: pb::AttachLoadBalancersRequest,
) -> Result<pb::LoadBalancerAttachments, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    let specs: Vec<LoadBalancerSpec> = req
        .load_balancers
        .iter()
        .map(|l| LoadBalancerSpec {
            target: l.target.clone(),
            backend: l.backend.clone(),
            port: l.port,
            weight: (l.weight != 0).then_some(l.weight),
            drain_timeout_secs: l.drain_timeout_secs,
        })
        .collect();
    let group = group.with_load_balancers(&specs).map_err(invalid)?;
    save(engine, &group)?;
    for l in &specs {
        info!(group = %group.name, target = %l.target, backend = %l.backend, "load balancer attached");
    }
    Ok(load_balancers(engine, &group))
}

pub async fn detach_load_balancers(
    engine: &Engine,
    req: pb::DetachLoadBalancersRequest,
) -> Result<pb::LoadBalancerAttachments, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    let refs: Vec<(String, String)> = req
        .load_balancers
        .iter()
        .map(|r| (r.target.clone(), r.backend.clone()))
        .collect();
    let group = group
        .without_load_balancers(&refs, now_ms(engine))
        .map_err(invalid)?;
    save(engine, &group)?;
    for (target, backend) in &refs {
        info!(group = %group.name, %target, %backend, "load balancer detaching: its servers are being removed");
    }
    Ok(load_balancers(engine, &group))
}

pub async fn describe_load_balancers(
    engine: &Engine,
    req: pb::DescribeLoadBalancersRequest,
) -> Result<pb::LoadBalancerAttachments, Status> {
    let group = find_group(engine, &req.scaling_group)?;
    Ok(load_balancers(engine, &group))
}

pub async fn attach_db_instances(
    engine: &Engine,
    req: pb::AttachDbInstancesRequest,
) -> Result<pb::DbInstanceAttachments, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    let specs: Vec<DbInstanceSpec> = req
        .db_instances
        .iter()
        .map(|d| DbInstanceSpec {
            target: d.target.clone(),
            database: d.database.clone(),
            user: d.user.clone(),
            auth_method: Some(d.auth_method.clone()),
        })
        .collect();
    let group = group.with_db_instances(&specs).map_err(invalid)?;
    save(engine, &group)?;
    for d in &specs {
        info!(group = %group.name, target = %d.target, database = %d.database, user = %d.user, "database instance attached");
    }
    Ok(db_instances(engine, &group))
}

pub async fn detach_db_instances(
    engine: &Engine,
    req: pb::DetachDbInstancesRequest,
) -> Result<pb::DbInstanceAttachments, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    let refs: Vec<(String, String, String)> = req
        .db_instances
        .iter()
        .map(|r| (r.target.clone(), r.database.clone(), r.user.clone()))
        .collect();
    let group = group.without_db_instances(&refs).map_err(invalid)?;
    save(engine, &group)?;
    for (target, database, user) in &refs {
        info!(group = %group.name, %target, %database, %user, "database instance detached: its allow-list lines are being removed");
    }
    Ok(db_instances(engine, &group))
}

pub async fn describe_db_instances(
    engine: &Engine,
    req: pb::DescribeDbInstancesRequest,
) -> Result<pb::DbInstanceAttachments, Status> {
    let group = find_group(engine, &req.scaling_group)?;
    Ok(db_instances(engine, &group))
}

/// Where `inst` stands on each attachment of its group, for `instance
/// describe`: its phase, and what each target last reported of it.
pub(crate) fn instance_view(engine: &Engine, inst: &Instance) -> Vec<pb::InstanceAttachment> {
    let Ok(Some(group)) = engine.store.get_group(&inst.group_id) else {
        return Vec::new();
    };
    engine
        .attachment_views(&group, inst)
        .into_iter()
        .map(|(name, view, lb)| {
            let held = view.member.as_ref();
            let state = match (inst.attach_phase, lb) {
                (Some(AttachPhase::Draining { .. }), true) => "draining",
                (Some(AttachPhase::Deregistering { .. }), true) => "deregistering",
                (Some(AttachPhase::Registering { .. }), _) if held.is_none() => "registering",
                (_, true) => match held.map(|m| m.state()) {
                    Some(pb::MemberState::Ready) => "registered",
                    Some(pb::MemberState::Drain) => "draining",
                    Some(pb::MemberState::Maint) => "maint",
                    _ => "not registered",
                },
                (_, false) if held.is_some() => "allowed",
                (_, false) => "not allowed",
            };
            let error = match held {
                Some(m) if !m.error.is_empty() => m.error.clone(),
                _ if !view.connected || !view.attachment_error.is_empty() => view.why_not(),
                _ => String::new(),
            };
            let (target, rest) = name.split_once('/').unwrap_or((name.as_str(), ""));
            pb::InstanceAttachment {
                kind: if lb { "load_balancer" } else { "db_instance" }.to_owned(),
                target: target.to_owned(),
                name: rest.to_owned(),
                state: state.to_owned(),
                since_ms: inst.attach_phase.map_or(0, AttachPhase::since_ms),
                error,
            }
        })
        .collect()
}
