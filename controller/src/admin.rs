//! `ebb.v1.AdminService`: the ESS-named operations on groups,
//! configurations, instances and activities. Admin certificates only.
//!
//! Every change is validated in full first (all bad fields in one
//! INVALID_ARGUMENT), then written to the store together with the activity
//! it starts, then the reconcile loop is woken to act on it.

use std::sync::Arc;

use ebb_certs::Role;
use ebb_proto::v1 as pb;
use ebb_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::engine::{Engine, activity};
use crate::id::new_id;
use crate::store::{StoreError, Write};
use ebb_core::decide::capacity;
use ebb_core::model::hooks::Transition;
use ebb_core::model::{
    Activity, ActivityStatus, ConfigurationSpec, CreationType, GroupSpec, GroupState, HealthStatus,
    Instance, Invalid, LifecycleState, LocalCheck, ScalingConfiguration, ScalingGroup, Trigger,
};

/// Activities returned when the caller names no limit.
const DEFAULT_ACTIVITY_LIMIT: usize = 50;
/// The most a caller may ask for at once.
const MAX_ACTIVITY_LIMIT: usize = 1000;

/// The admin gRPC service.
#[derive(Clone)]
pub struct AdminApi {
    engine: Arc<Engine>,
}

impl AdminApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

/// Refuses any caller whose certificate is not an admin certificate of
/// `trust_domain`; logs each refusal.
pub fn admin_only(
    trust_domain: String,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let refuse = |why: String| {
            warn!(peer, "refused admin call: {why}");
            Status::permission_denied(why)
        };
        let certs = req
            .peer_certs()
            .ok_or_else(|| refuse("no client certificate".into()))?;
        let leaf = certs
            .first()
            .ok_or_else(|| refuse("no client certificate".into()))?;
        let id = ebb_certs::peer_identity(leaf)
            .map_err(|e| refuse(format!("unusable certificate: {e}")))?;
        if id.trust_domain != trust_domain {
            return Err(refuse(format!(
                "certificate {id} is not of trust domain {trust_domain}"
            )));
        }
        match id.role {
            Role::Admin(_) => Ok(req),
            Role::Instance(_) => Err(refuse(format!(
                "{id} is an agent certificate; the admin API needs an admin certificate"
            ))),
        }
    }
}

/// Every bad field, as one INVALID_ARGUMENT.
pub(crate) fn invalid(e: Invalid) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A store error as the status a caller can act on.
pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Conflict(m) => Status::already_exists(m),
        StoreError::NotFound(m) => Status::not_found(m),
        other => Status::internal(other.to_string()),
    }
}

impl From<crate::engine::EngineError> for Status {
    fn from(e: crate::engine::EngineError) -> Self {
        Status::internal(e.to_string())
    }
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(invalid(Invalid::one(field, "is required")))
    } else {
        Ok(())
    }
}

impl AdminApi {
    fn now(&self) -> i64 {
        self.engine.clock.now_ms()
    }

    /// A group by id or name.
    fn group(&self, key: &str) -> Result<ScalingGroup, Status> {
        required("scaling_group", key)?;
        let store = &self.engine.store;
        let found = match store.get_group(key).map_err(store_status)? {
            Some(g) => Some(g),
            None => store.find_group_by_name(key).map_err(store_status)?,
        };
        found.ok_or_else(|| Status::not_found(format!("scaling group `{key}` does not exist")))
    }

    /// A configuration of `group` by id or name.
    fn configuration(
        &self,
        group: &ScalingGroup,
        key: &str,
    ) -> Result<ScalingConfiguration, Status> {
        self.engine
            .store
            .list_configurations(Some(&group.id))
            .map_err(store_status)?
            .into_iter()
            .find(|c| c.id == key || c.name == key)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "scaling configuration `{key}` does not exist in group {}",
                    group.name
                ))
            })
    }

    fn group_view(&self, g: &ScalingGroup) -> Result<pb::ScalingGroup, Status> {
        let instances = self
            .engine
            .store
            .list_instances(Some(&g.id))
            .map_err(store_status)?;
        Ok(group_view_of(g, &instances))
    }

    fn instance_view(&self, i: &Instance) -> pb::Instance {
        let fleet = &self.engine.fleet;
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
        }
    }

    fn config_view(
        &self,
        c: &ScalingConfiguration,
        group: Option<&ScalingGroup>,
    ) -> pb::ScalingConfiguration {
        let active = group.is_some_and(|g| g.active_configuration_id.as_deref() == Some(&c.id));
        pb::ScalingConfiguration {
            id: c.id.clone(),
            scaling_group_id: c.group_id.clone(),
            name: c.name.clone(),
            instance_type: c.instance_type.clone(),
            command: c.command.clone(),
            env: c.env.clone().into_iter().collect(),
            tags: c.tags.clone().into_iter().collect(),
            user_data: c.user_data.clone(),
            created_at_ms: c.created_at_ms,
            active,
            health_checks: c.health_checks.iter().map(check_view).collect(),
            metrics: crate::metric_sources::view(&c.metrics),
        }
    }

    /// Writes `group` with a new desired capacity and the activity that
    /// moves it there (superseding a running one), or a Rejected activity
    /// when the group is not Active. Returns the activity id, or None when
    /// capacity does not change.
    fn change_capacity(
        &self,
        mut group: ScalingGroup,
        old: &ScalingGroup,
        trigger: Trigger,
        what: &str,
    ) -> Result<(ScalingGroup, Option<String>), Status> {
        let now = self.now();
        let store = &self.engine.store;
        let current = capacity(
            &store
                .list_instances(Some(&group.id))
                .map_err(store_status)?,
        );
        let moves = group.desired_capacity != old.desired_capacity;
        if !moves {
            store
                .commit(vec![Write::UpdateGroup(group.clone())])
                .map_err(store_status)?;
            return Ok((group, None));
        }
        let cause = activity::cause(what, current, group.desired_capacity);
        if group.state != GroupState::Active {
            // Disabled groups keep bounds changes but never move capacity.
            let reason = format!(
                "the scaling group {} is not active ({})",
                group.name, group.state
            );
            if trigger == Trigger::Bounds {
                store
                    .commit(vec![Write::UpdateGroup(group.clone())])
                    .map_err(store_status)?;
                return Ok((group, None));
            }
            let act = activity::rejected(
                &group,
                current,
                group.desired_capacity,
                trigger,
                cause,
                reason.clone(),
                now,
            );
            store
                .commit(vec![Write::PutActivity(act.clone())])
                .map_err(store_status)?;
            info!(group = %group.name, activity = %act.id, "rejected: {reason}");
            return Err(Status::failed_precondition(format!(
                "{reason}; the change was rejected (activity {})",
                act.id
            )));
        }
        let act = activity::start(&group, current, group.desired_capacity, trigger, cause, now);
        let mut writes = vec![Write::UpdateGroup(group.clone())];
        if let Some(mut prev) = self
            .engine
            .running_activity(&group.id)
            .map_err(store_status)?
        {
            activity::supersede(&mut prev, &act.id, now);
            writes.push(Write::PutActivity(prev));
        }
        writes.push(Write::PutActivity(act.clone()));
        store.commit(writes).map_err(store_status)?;
        info!(group = %group.name, activity = %act.id, "{}", act.cause);
        group.desired_capacity = act.capacity_to;
        self.engine.wake();
        Ok((group, Some(act.id)))
    }

    /// Instances of `group` named in `ids`, every unknown id reported.
    fn instances_of(&self, group: &ScalingGroup, ids: &[String]) -> Result<Vec<Instance>, Status> {
        if ids.is_empty() {
            return Err(invalid(Invalid::one(
                "instance_ids",
                "name at least one instance",
            )));
        }
        let all = self
            .engine
            .store
            .list_instances(Some(&group.id))
            .map_err(store_status)?;
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
        &self,
        req: pb::StandbyRequest,
        from: &[LifecycleState],
        to: LifecycleState,
    ) -> Result<Response<pb::InstancesResponse>, Status> {
        let group = self.group(&req.scaling_group)?;
        let mut instances = self.instances_of(&group, &req.instance_ids)?;
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
        self.engine.store.commit(writes).map_err(store_status)?;
        info!(group = %group.name, state = %to, ids = ?req.instance_ids, "instances moved");
        Ok(Response::new(pb::InstancesResponse {
            instances: instances.iter().map(|i| self.instance_view(i)).collect(),
            activity_id: String::new(),
        }))
    }

    /// Shared by Detach and Remove: takes instances out of the group,
    /// lowering desired unless asked not to.
    fn take_out(
        &self,
        group_key: &str,
        ids: &[String],
        decrease: Option<bool>,
        release: bool,
    ) -> Result<Response<pb::InstancesResponse>, Status> {
        let group = self.group(group_key)?;
        let instances = self.instances_of(&group, ids)?;
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
        let now = self.now();
        let store = &self.engine.store;
        let current = capacity(
            &store
                .list_instances(Some(&group.id))
                .map_err(store_status)?,
        );
        let mut act = activity::start(
            &group,
            current,
            current - n,
            Trigger::Api,
            activity::cause(
                &format!("{verb} took out {}", ids.join(", ")),
                current,
                current - n,
            ),
            now,
        );
        act.removed_instances = ids.to_vec();
        let mut writes = vec![Write::UpdateGroup(updated.clone())];
        if let Some(mut prev) = self
            .engine
            .running_activity(&group.id)
            .map_err(store_status)?
        {
            activity::supersede(&mut prev, &act.id, now);
            writes.push(Write::PutActivity(prev));
        }
        for mut inst in instances.clone() {
            if release {
                // Through the group's SCALE_IN hooks, as a scale-in would.
                if !crate::engine::hooks::enter_wait(&group, &mut inst, Transition::ScaleIn, now) {
                    inst.lifecycle_state = LifecycleState::Removing;
                }
                inst.activity_id = Some(act.id.clone());
                writes.push(Write::PutInstance(inst));
            } else {
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
        writes.push(Write::PutActivity(act.clone()));
        store.commit(writes).map_err(store_status)?;
        if !release {
            for i in &instances {
                self.engine.fleet.forget(&i.id);
            }
        }
        info!(group = %group.name, activity = %act.id, "{}", act.cause);
        self.engine.wake();
        Ok(Response::new(pb::InstancesResponse {
            instances: instances.iter().map(|i| self.instance_view(i)).collect(),
            activity_id: act.id,
        }))
    }
}

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

/// An activity as the API shows it.
pub(crate) fn activity_view(a: &Activity) -> pb::Activity {
    pb::Activity {
        id: a.id.clone(),
        scaling_group_id: a.group_id.clone(),
        cause: a.cause.clone(),
        trigger: a.trigger.to_string(),
        status: a.status.to_string(),
        progress: u32::from(a.progress),
        capacity_from: a.capacity_from,
        capacity_to: a.capacity_to,
        created_instances: a.created_instances.clone(),
        removed_instances: a.removed_instances.clone(),
        started_at_ms: a.started_at_ms,
        ended_at_ms: a.ended_at_ms.unwrap_or_default(),
        error: a.error.clone().unwrap_or_default(),
        details: a.details.clone(),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_scaling_group(
        &self,
        request: Request<pb::CreateScalingGroupRequest>,
    ) -> Result<Response<pb::ScalingGroup>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        let group = ScalingGroup::create(new_id("asg"), &group_spec_from_create(&req), self.now())
            .map_err(invalid)?;
        self.engine
            .store
            .commit(vec![Write::CreateGroup(group.clone())])
            .map_err(store_status)?;
        info!(group = %group.name, id = %group.id, "scaling group created");
        Ok(Response::new(self.group_view(&group)?))
    }

    async fn modify_scaling_group(
        &self,
        request: Request<pb::ModifyScalingGroupRequest>,
    ) -> Result<Response<pb::ScalingGroup>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        let old = self.group(&req.scaling_group)?;
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
            new.active_configuration_id = Some(self.configuration(&old, key)?.id);
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
        let (group, _) = self.change_capacity(new, &old, trigger, &what)?;
        Ok(Response::new(self.group_view(&group)?))
    }

    async fn delete_scaling_group(
        &self,
        request: Request<pb::DeleteScalingGroupRequest>,
    ) -> Result<Response<pb::DeleteScalingGroupResponse>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        let group = self.group(&req.scaling_group)?;
        if group.deletion_protection {
            return Err(Status::failed_precondition(format!(
                "scaling group {} has deletion protection; turn it off first",
                group.name
            )));
        }
        let store = &self.engine.store;
        let instances = store
            .list_instances(Some(&group.id))
            .map_err(store_status)?;
        let running = self
            .engine
            .running_activity(&group.id)
            .map_err(store_status)?;
        if instances.is_empty() && running.is_none() {
            store
                .commit(vec![Write::DeleteGroup(group.id.clone())])
                .map_err(store_status)?;
            info!(group = %group.name, "scaling group deleted");
            return Ok(Response::new(pb::DeleteScalingGroupResponse {
                deleted: true,
                activity_id: String::new(),
            }));
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
        let now = self.now();
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
        if let Some(mut prev) = running {
            activity::supersede(&mut prev, &act.id, now);
            writes.push(Write::PutActivity(prev));
        }
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
        writes.push(Write::PutActivity(act.clone()));
        store.commit(writes).map_err(store_status)?;
        info!(group = %group.name, activity = %act.id, "forced delete under way");
        self.engine.wake();
        Ok(Response::new(pb::DeleteScalingGroupResponse {
            deleted: false,
            activity_id: act.id,
        }))
    }

    async fn describe_scaling_groups(
        &self,
        request: Request<pb::DescribeScalingGroupsRequest>,
    ) -> Result<Response<pb::DescribeScalingGroupsResponse>, Status> {
        let req = request.into_inner();
        let groups = if req.scaling_groups.is_empty() {
            self.engine.store.list_groups().map_err(store_status)?
        } else {
            let mut found = Vec::new();
            for key in &req.scaling_groups {
                found.push(self.group(key)?);
            }
            found
        };
        let views: Result<Vec<_>, _> = groups.iter().map(|g| self.group_view(g)).collect();
        Ok(Response::new(pb::DescribeScalingGroupsResponse {
            scaling_groups: views?,
        }))
    }

    async fn enable_scaling_group(
        &self,
        request: Request<pb::EnableScalingGroupRequest>,
    ) -> Result<Response<pb::ScalingGroup>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        let old = self.group(&req.scaling_group)?;
        if old.state == GroupState::Deleting {
            return Err(Status::failed_precondition(format!(
                "scaling group {} is being deleted",
                old.name
            )));
        }
        let mut group = old.clone();
        if let Some(key) = &req.active_scaling_configuration {
            group.active_configuration_id = Some(self.configuration(&old, key)?.id);
        }
        if group.active_configuration_id.is_none() {
            let configs = self
                .engine
                .store
                .list_configurations(Some(&group.id))
                .map_err(store_status)?;
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
            return Ok(Response::new(self.group_view(&old)?));
        }
        group.state = GroupState::Active;
        let now = self.now();
        let store = &self.engine.store;
        let current = capacity(
            &store
                .list_instances(Some(&group.id))
                .map_err(store_status)?,
        );
        let mut writes = vec![Write::UpdateGroup(group.clone())];
        if current != group.desired_capacity
            && self
                .engine
                .running_activity(&group.id)
                .map_err(store_status)?
                .is_none()
        {
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
            info!(group = %group.name, activity = %act.id, "{}", act.cause);
            writes.push(Write::PutActivity(act));
        }
        store.commit(writes).map_err(store_status)?;
        info!(group = %group.name, "scaling group enabled");
        self.engine.wake();
        Ok(Response::new(self.group_view(&group)?))
    }

    async fn disable_scaling_group(
        &self,
        request: Request<pb::DisableScalingGroupRequest>,
    ) -> Result<Response<pb::ScalingGroup>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        let mut group = self.group(&req.scaling_group)?;
        if group.state == GroupState::Deleting {
            return Err(Status::failed_precondition(format!(
                "scaling group {} is being deleted",
                group.name
            )));
        }
        if group.state == GroupState::Active {
            group.state = GroupState::Inactive;
            self.engine
                .store
                .commit(vec![Write::UpdateGroup(group.clone())])
                .map_err(store_status)?;
            info!(group = %group.name, "scaling group disabled");
        }
        Ok(Response::new(self.group_view(&group)?))
    }

    async fn create_scaling_configuration(
        &self,
        request: Request<pb::CreateScalingConfigurationRequest>,
    ) -> Result<Response<pb::ScalingConfiguration>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        let mut group = self.group(&req.scaling_group)?;
        let spec = ConfigurationSpec {
            name: Some(req.name),
            instance_type: Some(req.instance_type),
            command: Some(req.command),
            env: Some(req.env.into_iter().collect()),
            tags: Some(req.tags.into_iter().collect()),
            user_data: Some(req.user_data),
            health_checks: Some(req.health_checks.iter().map(check_of).collect()),
            metrics: Some(crate::metric_sources::of(&req.metrics)),
        };
        let config =
            ScalingConfiguration::create(new_id("asc"), group.id.clone(), &spec, self.now())
                .map_err(invalid)?;
        let mut writes = vec![Write::PutConfiguration(config.clone())];
        // A group's first configuration becomes its active one.
        if group.active_configuration_id.is_none() {
            group.active_configuration_id = Some(config.id.clone());
            writes.push(Write::UpdateGroup(group.clone()));
        }
        let existing = self
            .engine
            .store
            .list_configurations(Some(&group.id))
            .map_err(store_status)?;
        if existing.iter().any(|c| c.name == config.name) {
            return Err(Status::already_exists(format!(
                "scaling configuration `{}` already exists in group {}",
                config.name, group.name
            )));
        }
        self.engine.store.commit(writes).map_err(store_status)?;
        info!(group = %group.name, configuration = %config.name, "scaling configuration created");
        Ok(Response::new(self.config_view(&config, Some(&group))))
    }

    async fn modify_scaling_configuration(
        &self,
        request: Request<pb::ModifyScalingConfigurationRequest>,
    ) -> Result<Response<pb::ScalingConfiguration>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        required("scaling_configuration_id", &req.scaling_configuration_id)?;
        let store = &self.engine.store;
        let old = store
            .get_configuration(&req.scaling_configuration_id)
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "scaling configuration {} does not exist",
                    req.scaling_configuration_id
                ))
            })?;
        let spec = ConfigurationSpec {
            name: req.name,
            instance_type: req.instance_type,
            command: req.set_command.then_some(req.command),
            env: req.set_env.then(|| req.env.into_iter().collect()),
            tags: req.set_tags.then(|| req.tags.into_iter().collect()),
            user_data: req.user_data,
            health_checks: req
                .set_health_checks
                .then(|| req.health_checks.iter().map(check_of).collect()),
            metrics: req
                .set_metrics
                .then(|| crate::metric_sources::of(&req.metrics)),
        };
        let config = old.modified(&spec).map_err(invalid)?;
        store
            .commit(vec![Write::PutConfiguration(config.clone())])
            .map_err(store_status)?;
        let group = store.get_group(&config.group_id).map_err(store_status)?;
        info!(configuration = %config.name, "scaling configuration modified; running instances are left alone");
        Ok(Response::new(self.config_view(&config, group.as_ref())))
    }

    async fn delete_scaling_configuration(
        &self,
        request: Request<pb::DeleteScalingConfigurationRequest>,
    ) -> Result<Response<pb::DeleteScalingConfigurationResponse>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        required("scaling_configuration_id", &req.scaling_configuration_id)?;
        let store = &self.engine.store;
        let config = store
            .get_configuration(&req.scaling_configuration_id)
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "scaling configuration {} does not exist",
                    req.scaling_configuration_id
                ))
            })?;
        if let Some(group) = store.get_group(&config.group_id).map_err(store_status)? {
            if group.active_configuration_id.as_deref() == Some(&config.id)
                && group.state == GroupState::Active
            {
                return Err(Status::failed_precondition(format!(
                    "scaling configuration {} is the active one of enabled group {}; make another active or disable the group first",
                    config.name, group.name
                )));
            }
            let mut writes = vec![Write::DeleteConfiguration(config.id.clone())];
            if group.active_configuration_id.as_deref() == Some(&config.id) {
                let mut g = group.clone();
                g.active_configuration_id = None;
                writes.insert(0, Write::UpdateGroup(g));
            }
            store.commit(writes).map_err(store_status)?;
        } else {
            store
                .commit(vec![Write::DeleteConfiguration(config.id.clone())])
                .map_err(store_status)?;
        }
        Ok(Response::new(pb::DeleteScalingConfigurationResponse {}))
    }

    async fn describe_scaling_configurations(
        &self,
        request: Request<pb::DescribeScalingConfigurationsRequest>,
    ) -> Result<Response<pb::DescribeScalingConfigurationsResponse>, Status> {
        let req = request.into_inner();
        let store = &self.engine.store;
        let (configs, groups) = if req.scaling_group.is_empty() {
            (
                store.list_configurations(None).map_err(store_status)?,
                store.list_groups().map_err(store_status)?,
            )
        } else {
            let g = self.group(&req.scaling_group)?;
            (
                store
                    .list_configurations(Some(&g.id))
                    .map_err(store_status)?,
                vec![g],
            )
        };
        let views = configs
            .iter()
            .map(|c| self.config_view(c, groups.iter().find(|g| g.id == c.group_id)))
            .collect();
        Ok(Response::new(pb::DescribeScalingConfigurationsResponse {
            scaling_configurations: views,
        }))
    }

    async fn describe_scaling_instances(
        &self,
        request: Request<pb::DescribeScalingInstancesRequest>,
    ) -> Result<Response<pb::DescribeScalingInstancesResponse>, Status> {
        let req = request.into_inner();
        let group_id = if req.scaling_group.is_empty() {
            None
        } else {
            Some(self.group(&req.scaling_group)?.id)
        };
        let state = if req.lifecycle_state.is_empty() {
            None
        } else {
            Some(
                req.lifecycle_state
                    .parse::<LifecycleState>()
                    .map_err(|e| invalid(Invalid::one("lifecycle_state", e)))?,
            )
        };
        let instances = self
            .engine
            .store
            .list_instances(group_id.as_deref())
            .map_err(store_status)?;
        let views = instances
            .iter()
            .filter(|i| state.is_none_or(|s| i.lifecycle_state == s))
            .filter(|i| req.instance_ids.is_empty() || req.instance_ids.contains(&i.id))
            .map(|i| self.instance_view(i))
            .collect();
        Ok(Response::new(pb::DescribeScalingInstancesResponse {
            instances: views,
        }))
    }

    async fn attach_instances(
        &self,
        request: Request<pb::AttachInstancesRequest>,
    ) -> Result<Response<pb::InstancesResponse>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        let group = self.group(&req.scaling_group)?;
        if group.state != GroupState::Active {
            return Err(Status::failed_precondition(format!(
                "scaling group {} is not active ({}); enable it before attaching instances",
                group.name, group.state
            )));
        }
        if req.instance_ids.is_empty() {
            return Err(invalid(Invalid::one(
                "instance_ids",
                "name at least one instance",
            )));
        }
        let store = &self.engine.store;
        let mut errors = Invalid::default();
        for (n, id) in req.instance_ids.iter().enumerate() {
            if let Err(e) = ebb_certs::Identity::instance("x", id) {
                errors.push(format!("instance_ids[{n}]"), e.to_string());
            } else if let Some(existing) = store.get_instance(id).map_err(store_status)? {
                errors.push(
                    format!("instance_ids[{n}]"),
                    format!("`{id}` already belongs to group {}", existing.group_id),
                );
            } else if req.instance_ids[..n].contains(id) {
                errors.push(
                    format!("instance_ids[{n}]"),
                    format!("`{id}` is listed twice"),
                );
            }
        }
        errors.into_result().map_err(invalid)?;
        let n = req.instance_ids.len() as u32;
        if group.desired_capacity + n > group.max_size {
            return Err(Status::failed_precondition(format!(
                "attaching {n} would take the desired capacity to {}, above max_size {}",
                group.desired_capacity + n,
                group.max_size
            )));
        }
        let now = self.now();
        let current = capacity(
            &store
                .list_instances(Some(&group.id))
                .map_err(store_status)?,
        );
        let mut updated = group.clone();
        updated.desired_capacity += n;
        let mut act = activity::start(
            &group,
            current,
            current + n,
            Trigger::Api,
            activity::cause(
                &format!("AttachInstances attached {}", req.instance_ids.join(", ")),
                current,
                current + n,
            ),
            now,
        );
        act.created_instances = req.instance_ids.clone();
        activity::complete(&mut act, now);
        let instances: Vec<Instance> = req
            .instance_ids
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
            })
            .collect();
        let mut writes = vec![Write::UpdateGroup(updated)];
        writes.extend(instances.iter().cloned().map(Write::PutInstance));
        writes.push(Write::PutActivity(act.clone()));
        store.commit(writes).map_err(store_status)?;
        info!(group = %group.name, activity = %act.id, "{}", act.cause);
        self.engine.wake();
        Ok(Response::new(pb::InstancesResponse {
            instances: instances.iter().map(|i| self.instance_view(i)).collect(),
            activity_id: act.id,
        }))
    }

    async fn detach_instances(
        &self,
        request: Request<pb::DetachInstancesRequest>,
    ) -> Result<Response<pb::InstancesResponse>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        self.take_out(
            &req.scaling_group,
            &req.instance_ids,
            req.decrease_desired_capacity,
            false,
        )
    }

    async fn remove_instances(
        &self,
        request: Request<pb::RemoveInstancesRequest>,
    ) -> Result<Response<pb::InstancesResponse>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        self.take_out(
            &req.scaling_group,
            &req.instance_ids,
            req.decrease_desired_capacity,
            true,
        )
    }

    async fn set_instances_protection(
        &self,
        request: Request<pb::SetInstancesProtectionRequest>,
    ) -> Result<Response<pb::InstancesResponse>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        let standby = pb::StandbyRequest {
            scaling_group: req.scaling_group,
            instance_ids: req.instance_ids,
        };
        if req.protected {
            self.set_states(
                standby,
                &[LifecycleState::InService],
                LifecycleState::Protected,
            )
        } else {
            self.set_states(
                standby,
                &[LifecycleState::Protected],
                LifecycleState::InService,
            )
        }
    }

    async fn set_instance_health(
        &self,
        request: Request<pb::SetInstanceHealthRequest>,
    ) -> Result<Response<pb::InstancesResponse>, Status> {
        let req = request.into_inner();
        let _ops = self.engine.ops.lock().await;
        let group = self.group(&req.scaling_group)?;
        let status: HealthStatus = req
            .health_status
            .parse()
            .map_err(|e: String| invalid(Invalid::one("health_status", e)))?;
        let mut instances = self.instances_of(&group, &req.instance_ids)?;
        let writes = instances
            .iter_mut()
            .map(|i| {
                i.health_status = status;
                Write::PutInstance(i.clone())
            })
            .collect();
        self.engine.store.commit(writes).map_err(store_status)?;
        info!(group = %group.name, ids = ?req.instance_ids, "marked {status} by hand");
        self.engine.wake();
        Ok(Response::new(pb::InstancesResponse {
            instances: instances.iter().map(|i| self.instance_view(i)).collect(),
            activity_id: String::new(),
        }))
    }

    async fn enter_standby(
        &self,
        request: Request<pb::StandbyRequest>,
    ) -> Result<Response<pb::InstancesResponse>, Status> {
        let _ops = self.engine.ops.lock().await;
        self.set_states(
            request.into_inner(),
            &[LifecycleState::InService],
            LifecycleState::Standby,
        )
    }

    async fn exit_standby(
        &self,
        request: Request<pb::StandbyRequest>,
    ) -> Result<Response<pb::InstancesResponse>, Status> {
        let _ops = self.engine.ops.lock().await;
        self.set_states(
            request.into_inner(),
            &[LifecycleState::Standby],
            LifecycleState::InService,
        )
    }

    async fn describe_scaling_activities(
        &self,
        request: Request<pb::DescribeScalingActivitiesRequest>,
    ) -> Result<Response<pb::DescribeScalingActivitiesResponse>, Status> {
        let req = request.into_inner();
        let store = &self.engine.store;
        let group_id = if req.scaling_group.is_empty() {
            None
        } else {
            Some(self.group(&req.scaling_group)?.id)
        };
        let status = if req.status.is_empty() {
            None
        } else {
            Some(
                req.status
                    .parse::<ActivityStatus>()
                    .map_err(|e| invalid(Invalid::one("status", e)))?,
            )
        };
        let limit = match req.limit as usize {
            0 => DEFAULT_ACTIVITY_LIMIT,
            n if n > MAX_ACTIVITY_LIMIT => {
                return Err(invalid(Invalid::one(
                    "limit",
                    format!("{n} is above {MAX_ACTIVITY_LIMIT}"),
                )));
            }
            n => n,
        };
        let activities = if req.activity_ids.is_empty() {
            store
                .list_activities(group_id.as_deref(), limit)
                .map_err(store_status)?
        } else {
            let mut found = Vec::new();
            for id in &req.activity_ids {
                found.push(
                    store
                        .get_activity(id)
                        .map_err(store_status)?
                        .ok_or_else(|| {
                            Status::not_found(format!("scaling activity {id} does not exist"))
                        })?,
                );
            }
            found
        };
        let views = activities
            .iter()
            .filter(|a| status.is_none_or(|s| a.status == s))
            .map(activity_view)
            .collect();
        Ok(Response::new(pb::DescribeScalingActivitiesResponse {
            activities: views,
        }))
    }

    async fn create_scaling_rule(
        &self,
        request: Request<pb::CreateScalingRuleRequest>,
    ) -> Result<Response<pb::ScalingRule>, Status> {
        crate::automation::create_scaling_rule(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn modify_scaling_rule(
        &self,
        request: Request<pb::ModifyScalingRuleRequest>,
    ) -> Result<Response<pb::ScalingRule>, Status> {
        crate::automation::modify_scaling_rule(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_scaling_rule(
        &self,
        request: Request<pb::DeleteScalingRuleRequest>,
    ) -> Result<Response<pb::DeleteScalingRuleResponse>, Status> {
        crate::automation::delete_scaling_rule(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn describe_scaling_rules(
        &self,
        request: Request<pb::DescribeScalingRulesRequest>,
    ) -> Result<Response<pb::DescribeScalingRulesResponse>, Status> {
        crate::automation::describe_scaling_rules(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn execute_scaling_rule(
        &self,
        request: Request<pb::ExecuteScalingRuleRequest>,
    ) -> Result<Response<pb::ScalingActivityResponse>, Status> {
        crate::automation::execute_scaling_rule(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn scale_with_adjustment(
        &self,
        request: Request<pb::ScaleWithAdjustmentRequest>,
    ) -> Result<Response<pb::ScalingActivityResponse>, Status> {
        crate::automation::scale_with_adjustment(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_alarm(
        &self,
        request: Request<pb::CreateAlarmRequest>,
    ) -> Result<Response<pb::Alarm>, Status> {
        crate::automation::create_alarm(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn modify_alarm(
        &self,
        request: Request<pb::ModifyAlarmRequest>,
    ) -> Result<Response<pb::Alarm>, Status> {
        crate::automation::modify_alarm(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn enable_alarm(
        &self,
        request: Request<pb::AlarmRef>,
    ) -> Result<Response<pb::Alarm>, Status> {
        crate::automation::enable_alarm(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn disable_alarm(
        &self,
        request: Request<pb::AlarmRef>,
    ) -> Result<Response<pb::Alarm>, Status> {
        crate::automation::disable_alarm(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_alarm(
        &self,
        request: Request<pb::AlarmRef>,
    ) -> Result<Response<pb::DeleteAlarmResponse>, Status> {
        crate::automation::delete_alarm(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn describe_alarms(
        &self,
        request: Request<pb::DescribeAlarmsRequest>,
    ) -> Result<Response<pb::DescribeAlarmsResponse>, Status> {
        crate::automation::describe_alarms(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_scheduled_task(
        &self,
        request: Request<pb::CreateScheduledTaskRequest>,
    ) -> Result<Response<pb::ScheduledTask>, Status> {
        crate::automation::create_scheduled_task(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn modify_scheduled_task(
        &self,
        request: Request<pb::ModifyScheduledTaskRequest>,
    ) -> Result<Response<pb::ScheduledTask>, Status> {
        crate::automation::modify_scheduled_task(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_scheduled_task(
        &self,
        request: Request<pb::ScheduledTaskRef>,
    ) -> Result<Response<pb::DeleteScheduledTaskResponse>, Status> {
        crate::automation::delete_scheduled_task(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn describe_scheduled_tasks(
        &self,
        request: Request<pb::DescribeScheduledTasksRequest>,
    ) -> Result<Response<pb::DescribeScheduledTasksResponse>, Status> {
        crate::automation::describe_scheduled_tasks(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn suspend_processes(
        &self,
        request: Request<pb::ProcessesRequest>,
    ) -> Result<Response<pb::ScalingGroup>, Status> {
        crate::automation::suspend_processes(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn resume_processes(
        &self,
        request: Request<pb::ProcessesRequest>,
    ) -> Result<Response<pb::ScalingGroup>, Status> {
        crate::automation::resume_processes(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_notification_configuration(
        &self,
        request: Request<pb::NotificationConfiguration>,
    ) -> Result<Response<pb::NotificationConfiguration>, Status> {
        crate::automation::create_notification_configuration(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_notification_configuration(
        &self,
        request: Request<pb::NotificationConfiguration>,
    ) -> Result<Response<pb::DeleteNotificationConfigurationResponse>, Status> {
        crate::automation::delete_notification_configuration(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_lifecycle_hook(
        &self,
        request: Request<pb::CreateLifecycleHookRequest>,
    ) -> Result<Response<pb::LifecycleHook>, Status> {
        crate::lifecycle::create_lifecycle_hook(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_lifecycle_hook(
        &self,
        request: Request<pb::LifecycleHookRef>,
    ) -> Result<Response<pb::DeleteLifecycleHookResponse>, Status> {
        crate::lifecycle::delete_lifecycle_hook(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn describe_lifecycle_hooks(
        &self,
        request: Request<pb::DescribeLifecycleHooksRequest>,
    ) -> Result<Response<pb::DescribeLifecycleHooksResponse>, Status> {
        crate::lifecycle::describe_lifecycle_hooks(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn describe_lifecycle_actions(
        &self,
        request: Request<pb::DescribeLifecycleActionsRequest>,
    ) -> Result<Response<pb::DescribeLifecycleActionsResponse>, Status> {
        crate::lifecycle::describe_lifecycle_actions(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn complete_lifecycle_action(
        &self,
        request: Request<pb::CompleteLifecycleActionRequest>,
    ) -> Result<Response<pb::LifecycleAction>, Status> {
        crate::lifecycle::complete_lifecycle_action(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn record_lifecycle_action_heartbeat(
        &self,
        request: Request<pb::LifecycleActionRef>,
    ) -> Result<Response<pb::LifecycleAction>, Status> {
        crate::lifecycle::record_lifecycle_action_heartbeat(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn describe_notification_configurations(
        &self,
        request: Request<pb::DescribeNotificationConfigurationsRequest>,
    ) -> Result<Response<pb::DescribeNotificationConfigurationsResponse>, Status> {
        crate::automation::describe_notification_configurations(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// A local health check as the API carries it: empty and 0 mean "not set".
fn check_view(c: &LocalCheck) -> pb::LocalHealthCheck {
    pb::LocalHealthCheck {
        name: c.name.clone(),
        http: c.http.clone().unwrap_or_default(),
        tcp: c.tcp.clone().unwrap_or_default(),
        command: c.command.clone().unwrap_or_default(),
        interval_ms: c.interval_ms.unwrap_or_default() as u32,
        timeout_ms: c.timeout_ms.unwrap_or_default() as u32,
    }
}

fn check_of(c: &pb::LocalHealthCheck) -> LocalCheck {
    let text = |s: &String| (!s.is_empty()).then(|| s.clone());
    LocalCheck {
        name: c.name.clone(),
        http: text(&c.http),
        tcp: text(&c.tcp),
        command: (!c.command.is_empty()).then(|| c.command.clone()),
        interval_ms: (c.interval_ms > 0).then_some(u64::from(c.interval_ms)),
        timeout_ms: (c.timeout_ms > 0).then_some(u64::from(c.timeout_ms)),
    }
}
