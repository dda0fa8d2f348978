//! The reconcile loop: each pass looks at every group's desired capacity
//! and what exists, and takes the next step, writing it before acting.

use super::{Engine, EngineError, Io, activity, attachments, hooks};
use crate::id::new_id;
use crate::provider::{LaunchRequest, ProviderInstance};
use crate::store::Write;
use ebb_core::decide::capacity;
use ebb_core::model::hooks::{Transition, Verdict};
use ebb_core::model::removal::{Candidate, pick_for_removal};
use ebb_core::model::{
    Activity, ActivityStatus, CreationType, GroupState, HealthCheckType, HealthStatus, Instance,
    LifecycleState, Process, ScalingGroup,
};
use ebb_core::plan::{self, CapacityStep, InstanceFacts, InstanceStep};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often every group is looked at even when nothing woke the loop.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// Samples averaged for `LeastBusy`.
const LEAST_BUSY_SAMPLES: usize = crate::fleet::ALWAYS_KEPT;

/// What the provider reported this pass, by instance id.
type Described = HashMap<String, ProviderInstance>;

/// What one piece of provider work came to: a launch's result, or a
/// release's (None).
type Outcome = crate::provider::Result<Option<crate::provider::Launched>>;

/// After this many failed launches, an activity fails instead of retrying.
const MAX_LAUNCH_FAILURES: u32 = 3;

/// Instances a pass marks for removal: they are written with the activity
/// in one commit, which must fit etcd's default `--max-txn-ops` (128). A
/// larger scale-in takes a pass (a second) per hundred.
pub const MAX_REMOVALS_PER_PASS: u32 = 100;

/// Back-off after a failed activity before the loop tries again.
const FAILURE_BACKOFF_MS: i64 = 30_000;

impl Engine {
    fn defer(&self, io: Io) {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(io);
    }

    /// Runs the reconcile loop until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last_error: Option<String> = None;
        loop {
            match self.reconcile_all().await {
                Ok(()) => {
                    if last_error.take().is_some() {
                        info!("reconcile loop recovered");
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(&text) {
                        warn!("reconcile failed: {text}");
                    }
                    last_error = Some(text);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
                _ = self.wake.notified() => {}
                _ = self.fleet.changed.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One pass over every group, and over provider instances no group owns.
    pub async fn reconcile_all(&self) -> Result<(), EngineError> {
        let described = match self.provider.describe().await {
            Ok(list) => list
                .into_iter()
                .map(|p| (p.instance_id.clone(), p))
                .collect::<Described>(),
            Err(e) => {
                warn!("provider describe failed: {e}");
                return Ok(());
            }
        };
        {
            let _guard = self.ops.lock().await;
            let groups = self.store.list_groups()?;
            for group in groups {
                if let Err(e) = self.reconcile_group(group, &described) {
                    warn!("reconcile: {e}");
                }
            }
            self.release_orphans(&described)?;
            self.publish_targets(self.clock.now_ms())?;
        }
        self.carry_out().await?;
        self.fleet
            .counters
            .reconcile_passes_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        super::Passes::mark(&self.passes.reconcile);
        Ok(())
    }

    /// Does the provider work the pass decided on, without the engine lock
    /// (a release waits for the workload to stop, up to its SIGTERM grace;
    /// admin calls must not wait for that), then records what came of it
    /// under the lock. A pass that changed something is followed at once.
    ///
    /// Each activity's launches run one after another (after a failed one,
    /// the rest are not tried); different activities and releases run side
    /// by side, so a slow provider step of one group does not hold another.
    async fn carry_out(&self) -> Result<(), EngineError> {
        let work = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        if work.is_empty() {
            return Ok(());
        }
        let mut lanes: Vec<Vec<Io>> = Vec::new();
        let mut lane_of: HashMap<String, usize> = HashMap::new();
        for io in work {
            match &io {
                Io::Launch { activity_id, .. } => match lane_of.get(activity_id) {
                    Some(&i) => lanes[i].push(io),
                    None => {
                        lane_of.insert(activity_id.clone(), lanes.len());
                        lanes.push(vec![io]);
                    }
                },
                Io::Remove(_) | Io::Release(_) => lanes.push(vec![io]),
            }
        }
        let done: Vec<(Io, Option<Outcome>)> =
            futures_util::future::join_all(lanes.into_iter().map(|lane| self.run_lane(lane)))
                .await
                .into_iter()
                .flatten()
                .collect();
        let _guard = self.ops.lock().await;
        let now = self.clock.now_ms();
        let mut changed = false;
        for (io, result) in done {
            changed |= self.settle(io, result, now)?;
        }
        if changed {
            self.wake();
        }
        Ok(())
    }

    /// Runs one lane of provider work in order; after a failed launch, the
    /// rest of the lane is not tried (None).
    async fn run_lane(&self, lane: Vec<Io>) -> Vec<(Io, Option<Outcome>)> {
        let mut done = Vec::with_capacity(lane.len());
        let mut failed = false;
        for io in lane {
            let result = match &io {
                Io::Remove(id) | Io::Release(id) => {
                    Some(self.provider.release(id).await.map(|()| None))
                }
                Io::Launch { .. } if failed => None,
                Io::Launch { request, .. } => {
                    let r = self.provider.launch((**request).clone()).await;
                    failed = r.is_err();
                    Some(r.map(Some))
                }
            };
            done.push((io, result));
        }
        done
    }

    /// Records the outcome of one piece of provider work (None: not tried,
    /// an earlier launch of its activity failed). True when it changed state.
    fn settle(&self, io: Io, result: Option<Outcome>, now: i64) -> Result<bool, EngineError> {
        match (io, result) {
            (Io::Remove(id), Some(Ok(_))) => {
                if self.store.get_instance(&id)?.is_some() {
                    self.store.commit(vec![Write::DeleteInstance(id.clone())])?;
                }
                self.fleet.forget(&id);
                info!(instance = %id, "instance removed");
                Ok(true)
            }
            (Io::Remove(id), Some(Err(e))) => {
                warn!(instance = %id, "release failed, will retry: {e}");
                Ok(false)
            }
            (Io::Release(id), Some(Err(e))) => {
                warn!(instance = %id, "release failed: {e}");
                Ok(false)
            }
            (Io::Release(_), _) | (Io::Remove(_), None) => Ok(false),
            (Io::Launch { request, .. }, Some(Ok(launched))) => {
                info!(group = %request.group_id, instance = %request.instance_id, "launched");
                // What the provider calls it, kept beside the record (a
                // record released meanwhile is not brought back).
                if let Some(launched) = launched
                    && let Some(mut inst) = self.store.get_instance(&request.instance_id)?
                {
                    inst.provider_id = Some(launched.provider_id);
                    inst.provider_address = launched.address;
                    inst.launched_at_ms = Some(now);
                    self.store.commit(vec![Write::PutInstance(inst)])?;
                }
                Ok(true)
            }
            (
                Io::Launch {
                    request,
                    activity_id,
                },
                result,
            ) => {
                let mut writes = vec![Write::DeleteInstance(request.instance_id.clone())];
                let act = self.store.get_activity(&activity_id)?;
                if let Some(Err(e)) = &result {
                    warn!(group = %request.group_id, "{e}");
                }
                match (act, result) {
                    (Some(mut act), Some(Err(e))) => {
                        activity::note_error(&mut act, &e.to_string());
                        writes.push(Write::PutActivity(act.clone()));
                        self.store.commit(writes)?;
                        if self.count_failure(&request.group_id, now) >= MAX_LAUNCH_FAILURES
                            && let Some(group) = self.store.get_group(&request.group_id)?
                        {
                            self.fail(&group, &mut act, now)?;
                        }
                    }
                    _ => self.store.commit(writes)?,
                }
                Ok(true)
            }
        }
    }

    /// Releases provider instances that no stored instance claims: left by a
    /// crash between a release and the record's deletion. Detached instances
    /// are not ebb's any more and are never released.
    fn release_orphans(&self, described: &Described) -> Result<(), EngineError> {
        if described.is_empty() {
            return Ok(());
        }
        let known: std::collections::HashSet<String> = self
            .store
            .list_instances(None)?
            .into_iter()
            .map(|i| i.id)
            .chain(
                self.store
                    .list_detached()?
                    .into_iter()
                    .map(|d| d.instance_id),
            )
            .collect();
        // This pass may have forgotten an instance already, and queued its
        // release: that one is not an orphan.
        let queued: std::collections::HashSet<String> = self
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|io| match io {
                Io::Release(id) | Io::Remove(id) => Some(id.clone()),
                Io::Launch { .. } => None,
            })
            .collect();
        for id in described
            .keys()
            .filter(|id| !known.contains(*id) && !queued.contains(*id))
        {
            warn!(instance = %id, "releasing an instance no group owns");
            self.defer(Io::Release(id.clone()));
        }
        Ok(())
    }

    fn reconcile_group(
        &self,
        group: ScalingGroup,
        described: &Described,
    ) -> Result<(), EngineError> {
        let now = self.clock.now_ms();
        let mut running = self.running_activity(&group.id)?;
        let mut notes = Vec::new();
        for inst in self.store.list_instances(Some(&group.id))? {
            self.maintain_instance(&group, inst, described, now, &mut notes, running.as_mut())?;
        }
        if group.health_check_type == HealthCheckType::Agent
            && !group.suspended_processes.contains(&Process::HealthCheck)
        {
            self.check_health(&group, now, &mut notes, running.as_mut())?;
        }
        let instances = self.store.list_instances(Some(&group.id))?;
        let count = capacity(&instances);
        let step = plan::capacity_step(
            &group,
            &instances,
            running.is_some(),
            self.backing_off(&group.id, now),
        );
        if step != CapacityStep::Hold {
            let mut act = match running.take() {
                Some(a) => a,
                None => {
                    let (trigger, cause) = plan::convergence_cause(&group, count, &notes);
                    let a =
                        activity::start(&group, count, group.desired_capacity, trigger, cause, now);
                    self.store.commit(vec![Write::PutActivity(a.clone())])?;
                    info!(group = %group.name, activity = %a.id, "{}", a.cause);
                    a
                }
            };
            match step {
                CapacityStep::Launch(n) => self.scale_out(&group, &mut act, n, now)?,
                CapacityStep::Remove(n) => self.scale_in(
                    &group,
                    &mut act,
                    &instances,
                    n.min(MAX_REMOVALS_PER_PASS),
                    now,
                )?,
                CapacityStep::Hold => {}
            }
            running = Some(act);
        }
        if let Some(act) = running {
            self.progress(&group, act, now)?;
        }
        if group.state == GroupState::Deleting
            && self.store.list_instances(Some(&group.id))?.is_empty()
        {
            self.store
                .commit(vec![Write::DeleteGroup(group.id.clone())])?;
            info!(group = %group.name, "scaling group deleted");
        }
        Ok(())
    }

    /// Takes one instance's next step (`ebb_core::plan::instance_step`):
    /// Removing → released and forgotten; vanished → forgotten; Pending →
    /// InService once its agent says hello, or released after the launch
    /// timeout; hook waits advanced.
    fn maintain_instance(
        &self,
        group: &ScalingGroup,
        mut inst: Instance,
        described: &Described,
        now: i64,
        notes: &mut Vec<String>,
        running: Option<&mut Activity>,
    ) -> Result<(), EngineError> {
        let seen = described.get(&inst.id);
        // A launch whose result was never recorded (the controller died
        // in between) is known by the provider's word instead.
        if let Some(seen) = seen
            && inst.provider_id.is_none()
            && seen.provider_id.is_some()
        {
            inst.provider_id = seen.provider_id.clone();
            inst.provider_address = seen.address.clone();
            self.store.commit(vec![Write::PutInstance(inst.clone())])?;
        }
        let facts = InstanceFacts {
            provider: seen.map(|p| p.alive),
            connected: self.fleet.is_connected(&inst.id),
        };
        let timeout_ms = self.launch.timeout.as_millis() as i64;
        match plan::instance_step(group, &inst, facts, timeout_ms, now) {
            InstanceStep::Hold => {}
            InstanceStep::AdvanceRemovalWaits { gone } => {
                let mut running = running;
                // It drains from its load balancers while its hooks run.
                if !gone {
                    self.advance_drain(group, &mut inst, now, running.as_deref_mut())?;
                }
                let verdict = self.advance_waits(group, &mut inst, now, running)?;
                if verdict == Verdict::Waiting && !gone {
                    return Ok(());
                }
                inst.lifecycle_state = LifecycleState::Removing;
                if gone {
                    // Nothing left to drain.
                    inst.attach_phase = None;
                }
                self.store.commit(vec![Write::PutInstance(inst.clone())])?;
                if inst.attach_phase.is_none() {
                    self.finish_removal(&inst)?;
                }
            }
            InstanceStep::AdvanceDrain { gone } => {
                if gone {
                    inst.attach_phase = None;
                    self.store.commit(vec![Write::PutInstance(inst.clone())])?;
                }
                if self.advance_drain(group, &mut inst, now, running)? {
                    self.finish_removal(&inst)?;
                }
            }
            InstanceStep::AdvanceRegistration => {
                self.advance_registration(group, inst, now, running)?;
            }
            InstanceStep::Finish => self.finish_removal(&inst)?,
            InstanceStep::Vanished => {
                warn!(group = %group.name, instance = %inst.id, "instance vanished: its processes are gone");
                notes.push(format!(
                    "instance {} vanished (its processes are gone)",
                    inst.id
                ));
                self.forget(&inst)?;
            }
            InstanceStep::AdvanceLaunchWaits => {
                match self.advance_waits(group, &mut inst, now, running)? {
                    Verdict::Waiting => {}
                    Verdict::Continue => self.enter_service(group, inst, now)?,
                    Verdict::Abandon => {
                        self.count_failure(&group.id, now);
                        self.forget(&inst)?;
                        info!(group = %group.name, instance = %inst.id, "instance abandoned by a lifecycle hook; released");
                    }
                }
            }
            InstanceStep::Connected { hooks } => {
                inst.address = self.fleet.address(&inst.id);
                if hooks && hooks::enter_wait(group, &mut inst, Transition::ScaleOut, now) {
                    self.store.commit(vec![Write::PutInstance(inst.clone())])?;
                    info!(group = %group.name, instance = %inst.id, "instance waits on its SCALE_OUT lifecycle hooks");
                    self.advance_waits(group, &mut inst, now, running)?;
                } else {
                    self.enter_service(group, inst, now)?;
                }
            }
            InstanceStep::LaunchTimedOut => {
                let why = format!(
                    "instance {} did not connect within {}s; released",
                    inst.id,
                    self.launch.timeout.as_secs()
                );
                warn!(group = %group.name, "{why}");
                if let Some(act) = running {
                    activity::note_error(act, &why);
                    self.store.commit(vec![Write::PutActivity(act.clone())])?;
                }
                self.count_failure(&group.id, now);
                self.forget(&inst)?;
            }
        }
        Ok(())
    }

    /// Drops an instance's record now and releases what is left of it
    /// (only instances ebb created are ever released; a failed release
    /// is the orphan sweep's to retry).
    fn forget(&self, inst: &Instance) -> Result<(), EngineError> {
        if inst.creation_type == CreationType::AutoCreated {
            self.defer(Io::Release(inst.id.clone()));
        }
        self.store
            .commit(vec![Write::DeleteInstance(inst.id.clone())])?;
        self.fleet.forget(&inst.id);
        Ok(())
    }

    pub(super) fn put_in_service(
        &self,
        group: &ScalingGroup,
        mut inst: Instance,
        now: i64,
    ) -> Result<(), EngineError> {
        inst.lifecycle_state = LifecycleState::InService;
        inst.in_service_at_ms = Some(now);
        inst.hook_waits.clear();
        inst.attach_phase = None;
        if inst.address.is_none() {
            inst.address = self.fleet.address(&inst.id);
        }
        self.store.commit(vec![Write::PutInstance(inst.clone())])?;
        info!(group = %group.name, instance = %inst.id, "instance in service");
        Ok(())
    }

    pub(super) fn finish_removal(&self, inst: &Instance) -> Result<(), EngineError> {
        if inst.creation_type == CreationType::AutoCreated {
            self.defer(Io::Remove(inst.id.clone()));
            return Ok(());
        }
        self.store
            .commit(vec![Write::DeleteInstance(inst.id.clone())])?;
        self.fleet.forget(&inst.id);
        info!(instance = %inst.id, "instance removed");
        Ok(())
    }

    fn scale_out(
        &self,
        group: &ScalingGroup,
        act: &mut Activity,
        n: u32,
        now: i64,
    ) -> Result<(), EngineError> {
        let Some(config_id) = group.active_configuration_id.clone() else {
            activity::note_error(act, "the group has no active scaling configuration");
            return self.fail(group, act, now);
        };
        let Some(configuration) = self.store.get_configuration(&config_id)? else {
            activity::note_error(
                act,
                &format!("scaling configuration {config_id} no longer exists"),
            );
            return self.fail(group, act, now);
        };
        for _ in 0..n {
            let id = new_id("i");
            let inst = Instance {
                id: id.clone(),
                group_id: group.id.clone(),
                configuration_id: Some(configuration.id.clone()),
                lifecycle_state: LifecycleState::Pending,
                health_status: HealthStatus::Healthy,
                creation_type: CreationType::AutoCreated,
                address: None,
                created_at_ms: now,
                in_service_at_ms: None,
                activity_id: Some(act.id.clone()),
                hook_waits: Vec::new(),
                attach_phase: None,
                provider_id: None,
                provider_address: None,
                launched_at_ms: None,
            };
            act.created_instances.push(id.clone());
            // Written before launching: a crash now leaves a Pending record
            // the next pass resolves, never an untracked process.
            self.store.commit(vec![
                Write::PutInstance(inst),
                Write::PutActivity(act.clone()),
            ])?;
            let issued = self.issue_agent_certificate(&id)?;
            let request = LaunchRequest {
                instance_id: id.clone(),
                group_id: group.id.clone(),
                configuration: configuration.clone(),
                controller: self.launch.controller.clone(),
                server_name: self.launch.server_name.clone(),
                ca_pem: self.ca.cert_pem().to_owned(),
                cert_pem: issued.cert_pem,
                key_pem: issued.key_pem,
                sampling_interval_secs: group.sampling_interval_secs,
            };
            self.defer(Io::Launch {
                request: Box::new(request),
                activity_id: act.id.clone(),
            });
        }
        Ok(())
    }

    fn scale_in(
        &self,
        group: &ScalingGroup,
        act: &mut Activity,
        instances: &[Instance],
        n: u32,
        now: i64,
    ) -> Result<(), EngineError> {
        let configs: HashMap<String, i64> = self
            .store
            .list_configurations(Some(&group.id))?
            .into_iter()
            .map(|c| (c.id, c.created_at_ms))
            .collect();
        let candidates: Vec<Candidate<'_>> = instances
            .iter()
            .map(|i| Candidate {
                instance: i,
                configuration_created_at_ms: i
                    .configuration_id
                    .as_ref()
                    .and_then(|c| configs.get(c).copied()),
                recent_cpu: self.fleet.recent_cpu(&i.id, LEAST_BUSY_SAMPLES),
            })
            .collect();
        let victims = pick_for_removal(&candidates, &group.removal_policies, n as usize);
        if victims.len() < n as usize {
            activity::note_error(
                act,
                &format!(
                    "only {} of {n} instances could be removed: the others are Protected or in Standby",
                    victims.len()
                ),
            );
        }
        let mut writes = Vec::new();
        for id in &victims {
            if let Some(mut inst) = instances.iter().find(|i| &i.id == id).cloned() {
                attachments::start_leaving(group, &mut inst, now);
                inst.activity_id = Some(act.id.clone());
                act.removed_instances.push(id.clone());
                writes.push(Write::PutInstance(inst));
            }
        }
        writes.push(Write::PutActivity(act.clone()));
        // Marked Removing (or Removing:Wait) first; the release itself
        // happens now or on a later step (and again after a restart, until
        // it succeeds).
        self.store.commit(writes)?;
        for id in victims {
            let Some(mut inst) = self.store.get_instance(&id)? else {
                continue;
            };
            if inst.lifecycle_state == LifecycleState::RemovingWait {
                self.advance_drain(group, &mut inst, now, Some(&mut *act))?;
                self.advance_waits(group, &mut inst, now, Some(&mut *act))?;
            } else if self.advance_drain(group, &mut inst, now, Some(&mut *act))? {
                self.finish_removal(&inst)?;
            }
        }
        Ok(())
    }

    /// Updates a running activity's progress and completes it once the
    /// group holds its desired capacity with nothing still launching.
    fn progress(
        &self,
        group: &ScalingGroup,
        mut act: Activity,
        now: i64,
    ) -> Result<(), EngineError> {
        let instances = self.store.list_instances(Some(&group.id))?;
        let before = (act.progress, act.status);
        if plan::activity_done(group, &instances) {
            activity::complete(&mut act, now);
            self.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&group.id);
            info!(group = %group.name, activity = %act.id, status = %act.status, "activity finished");
        } else {
            act.progress = activity::progress(&act, &instances);
        }
        if (act.progress, act.status) != before {
            self.store.commit(vec![Write::PutActivity(act)])?;
        }
        Ok(())
    }

    fn fail(&self, group: &ScalingGroup, act: &mut Activity, now: i64) -> Result<(), EngineError> {
        act.status = ActivityStatus::Failed;
        act.ended_at_ms = Some(now);
        self.store.commit(vec![Write::PutActivity(act.clone())])?;
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group.id.clone(), (MAX_LAUNCH_FAILURES, now));
        warn!(group = %group.name, activity = %act.id, "activity failed: {}", act.error.clone().unwrap_or_default());
        Ok(())
    }

    pub(super) fn count_failure(&self, group_id: &str, now: i64) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let e = f.entry(group_id.to_owned()).or_insert((0, now));
        e.0 += 1;
        e.1 = now;
        e.0
    }

    fn backing_off(&self, group_id: &str, now: i64) -> bool {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        matches!(f.get(group_id), Some((n, at)) if *n >= MAX_LAUNCH_FAILURES && now - at < FAILURE_BACKOFF_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::engine::LaunchSettings;
    use crate::fleet::Fleet;
    use crate::provider::Provider;
    use crate::provider::fake::FakeProvider;
    use crate::store::Store;
    use crate::store::conformance::instance;
    use crate::store::sqlite::SqliteStore;
    use ebb_core::model::GroupSpec;

    /// An InService instance of `group_id`, in service since the epoch.
    fn in_service(id: &str, group_id: &str) -> Instance {
        Instance {
            lifecycle_state: LifecycleState::InService,
            in_service_at_ms: Some(0),
            ..instance(id, group_id, 0)
        }
    }

    /// An engine on an in-memory store with `provider`, and a group (not
    /// yet stored) for the test's instances.
    fn engine_on(provider: Arc<dyn Provider>) -> (Arc<dyn Store>, Arc<Engine>, ScalingGroup) {
        engine_with(Arc::new(SqliteStore::open_in_memory().unwrap()), provider)
    }

    /// As [`engine_on`], on `store`.
    fn engine_with(
        store: Arc<dyn Store>,
        provider: Arc<dyn Provider>,
    ) -> (Arc<dyn Store>, Arc<Engine>, ScalingGroup) {
        let ca = Arc::new(ebb_certs::Ca::generate("ebb.local", ebb_certs::CA_VALIDITY).unwrap());
        let engine = Arc::new(Engine::new(
            store.clone(),
            provider,
            Arc::new(Fleet::new(100, Arc::new(ManualClock::new(1_000_000)))),
            ca,
            LaunchSettings {
                controller: "127.0.0.1:1".into(),
                server_name: "localhost".into(),
                timeout: Duration::from_secs(60),
            },
        ));
        let spec = GroupSpec {
            name: Some("web".into()),
            min_size: Some(0),
            max_size: Some(2),
            ..Default::default()
        };
        let group = ScalingGroup::create("asg-1".into(), &spec, 0).unwrap();
        (store, engine, group)
    }

    #[tokio::test]
    async fn a_slow_release_does_not_hold_the_engine_lock() {
        let provider = Arc::new(FakeProvider::new());
        let gate = provider.hold_releases();
        let (store, engine, group) = engine_on(provider.clone());
        let leaving = Instance {
            lifecycle_state: LifecycleState::Removing,
            ..in_service("i-leaving", &group.id)
        };
        provider.insert(&leaving.id, true);
        store
            .commit(vec![Write::CreateGroup(group), Write::PutInstance(leaving)])
            .unwrap();

        let pass = tokio::spawn({
            let engine = engine.clone();
            async move { engine.reconcile_all().await }
        });
        gate.releasing.notified().await;
        // The release is under way and waiting: the lock is free for the
        // admin API, and the record stays until the release succeeded.
        assert!(
            engine.ops.try_lock().is_ok(),
            "the pass holds the engine lock across a release"
        );
        assert!(store.get_instance("i-leaving").unwrap().is_some());
        gate.let_go.notify_one();
        pass.await.unwrap().unwrap();
        assert!(store.get_instance("i-leaving").unwrap().is_none());
        assert!(provider.ids().is_empty());
    }

    #[tokio::test]
    async fn a_vanished_instance_is_released_once_and_not_taken_for_an_orphan() {
        let provider = Arc::new(FakeProvider::new());
        let (store, engine, group) = engine_on(provider.clone());
        let gone = in_service("i-gone", &group.id);
        provider.insert(&gone.id, false);
        store
            .commit(vec![Write::CreateGroup(group), Write::PutInstance(gone)])
            .unwrap();
        engine.reconcile_all().await.unwrap();
        assert!(store.get_instance("i-gone").unwrap().is_none());
        assert_eq!(provider.released(), ["i-gone"]);
    }

    #[tokio::test]
    async fn the_providers_name_for_an_instance_is_recorded_from_its_launch_or_its_description() {
        let provider = Arc::new(FakeProvider::with_addresses());
        let (store, engine, mut group) = engine_on(provider.clone());
        let config = ebb_core::model::ScalingConfiguration::create(
            "asc-1".into(),
            group.id.clone(),
            &ebb_core::model::ConfigurationSpec {
                name: Some("v1".into()),
                ..Default::default()
            },
            0,
        )
        .unwrap();
        group.active_configuration_id = Some(config.id.clone());
        group.desired_capacity = 2;
        group.state = ebb_core::model::GroupState::Active;
        // One launched before a crash: the record is Pending with no name,
        // and the provider knows it.
        let crashed = Instance {
            configuration_id: Some(config.id.clone()),
            ..instance("i-crashed", &group.id, 1_000_000)
        };
        provider.insert_named(&crashed.id, "vm-before-the-crash", Some("10.0.0.5"));
        store
            .commit(vec![
                Write::CreateGroup(group),
                Write::PutConfiguration(config),
                Write::PutInstance(crashed),
            ])
            .unwrap();

        engine.reconcile_all().await.unwrap();
        let adopted = store.get_instance("i-crashed").unwrap().unwrap();
        assert_eq!(adopted.provider_id.as_deref(), Some("vm-before-the-crash"));
        assert_eq!(adopted.provider_address.as_deref(), Some("10.0.0.5"));
        // Not launched again: one more for the desired 2, named by its launch.
        let launched = provider.launched();
        assert_eq!(launched.len(), 1, "{launched:?}");
        let new = store.get_instance(&launched[0]).unwrap().unwrap();
        let described = provider.describe().await.unwrap();
        let named = described
            .iter()
            .find(|i| i.instance_id == launched[0])
            .unwrap();
        assert!(new.provider_id.is_some());
        assert_eq!(new.provider_id, named.provider_id);
        assert!(new.provider_address.is_some());
        assert_eq!(new.provider_address, named.address);
        // Its launch time-out counts from here, not from its record.
        assert!(new.launched_at_ms.is_some());
        assert_eq!(adopted.launched_at_ms, None);
    }

    /// A scale-in of 250 on etcd, whose transactions hold at most 128
    /// operations: each pass marks at most a hundred, and the group gets
    /// there in three, with one activity.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scale_in_larger_than_an_etcd_transaction_takes_a_pass_per_hundred() {
        let provider = Arc::new(FakeProvider::new());
        let (store, engine, mut group) = engine_with(
            Arc::new(crate::store::etcd::tests::fresh_store()),
            provider.clone(),
        );
        group.max_size = 250;
        group.desired_capacity = 0;
        group.state = GroupState::Active;
        store
            .commit(vec![Write::CreateGroup(group.clone())])
            .unwrap();
        let ids: Vec<String> = (0..250).map(|i| format!("i-{i:03}")).collect();
        for batch in ids.chunks(100) {
            let writes = batch
                .iter()
                .map(|id| {
                    provider.insert(id, true);
                    Write::PutInstance(in_service(id, &group.id))
                })
                .collect();
            store.commit(writes).unwrap();
        }
        let mut left = Vec::new();
        for _ in 0..3 {
            engine.reconcile_all().await.unwrap();
            left.push(store.list_instances(Some(&group.id)).unwrap().len());
        }
        assert_eq!(left, [150, 50, 0]);
        assert!(provider.ids().is_empty());
        let activities = store.list_activities(Some(&group.id), 10).unwrap();
        assert_eq!(activities.len(), 1);
        assert_eq!(activities[0].removed_instances.len(), 250);
    }
}
