//! The scaling engine: the operations that change a group's capacity (each
//! recorded as a scaling activity, written before anything is acted on) and
//! the reconcile loop that converges every group to its desired capacity,
//! one stored step at a time, so a controller that restarts mid-activity
//! finishes the job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ebb_certs::Ca;
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

use crate::clock::Clock;
use crate::fleet::Fleet;
use crate::id::new_id;
use crate::provider::{LaunchRequest, Provider};
use crate::store::{Store, StoreError, Write};
use ebb_core::decide::{GroupSnapshot, capacity};
use ebb_core::model::hooks::{Transition, Verdict};
use ebb_core::model::removal::{Candidate, pick_for_removal};
use ebb_core::model::{
    Activity, ActivityStatus, CreationType, GroupState, HealthCheckType, HealthStatus, Instance,
    LifecycleState, Process, ScalingGroup, Trigger,
};
use ebb_core::rules::cooldown_start;

pub mod activity;
pub mod alarms;
pub mod capacity;
pub mod hooks;
pub mod loops;
pub mod notify;
pub mod rules;
pub mod schedules;

#[cfg(test)]
mod tests;

/// How often every group is looked at even when nothing woke the loop.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// A launched instance whose agent has not said hello by then is released
/// and replaced (AWS's default warm-up is 300 s; a local process is quick).
pub const DEFAULT_LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// A Pending record the provider does not know after this long is a launch
/// the controller never got to start (it crashed in between).
const UNKNOWN_PENDING_GRACE_MS: i64 = 10_000;
/// Samples averaged for `LeastBusy`.
const LEAST_BUSY_SAMPLES: usize = crate::fleet::ALWAYS_KEPT;
/// Activities read to find the cooldown's start.
const COOLDOWN_LOOKBACK: usize = 50;
/// After this many failed launches, an activity fails instead of retrying.
const MAX_LAUNCH_FAILURES: u32 = 3;
/// Back-off after a failed activity before the loop tries again.
const FAILURE_BACKOFF_MS: i64 = 30_000;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Certs(#[from] ebb_certs::Error),
    /// The group's state does not allow it; the sentence says why.
    #[error("{0}")]
    Refused(String),
    /// Something the request or a stored record names is gone.
    #[error("{0}")]
    NotFound(String),
}

/// Where launched agents must connect.
#[derive(Debug, Clone)]
pub struct LaunchSettings {
    pub controller: String,
    pub server_name: String,
    pub timeout: Duration,
}

/// How the controller judges and replaces unhealthy instances.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// When more than half a group turns unhealthy at once, at most this
    /// share of it (at least one instance) is replaced per `guard_interval`.
    pub guard_share: f64,
    pub guard_interval: Duration,
    /// After the controller starts, agents get this long to reconnect before
    /// an instance whose agent has not is judged unhealthy.
    pub reconnect_grace: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            guard_share: DEFAULT_GUARD_SHARE,
            guard_interval: DEFAULT_GUARD_INTERVAL,
            reconnect_grace: DEFAULT_RECONNECT_GRACE,
        }
    }
}

/// A quarter of a group per interval: a controller cut off from its hosts
/// replaces a few, notices the replacements are "unhealthy" too, and stops
/// short of destroying a healthy fleet.
pub const DEFAULT_GUARD_SHARE: f64 = 0.25;
/// One guarded round of replacements a minute.
pub const DEFAULT_GUARD_INTERVAL: Duration = Duration::from_secs(60);
/// Agents back off to at most 30 s; a restarted controller waits that long.
pub const DEFAULT_RECONNECT_GRACE: Duration = Duration::from_secs(30);
/// What the engine remembers of a group's recent failures (not needed after
/// a restart: the guard then starts afresh).
#[derive(Debug, Default)]
struct HealthMemory {
    /// Instance id → when it was found unhealthy.
    failed_at: HashMap<String, i64>,
    /// When replacements were let through, for the guard's budget.
    replaced_at: Vec<i64>,
}

/// Pulls unanswered in a row, or local check failures in a row, that make an
/// instance unhealthy (design §8).
pub const UNHEALTHY_AFTER: u32 = 3;

/// The engine shared by the admin API and the reconcile loop.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub provider: Arc<dyn Provider>,
    pub fleet: Arc<Fleet>,
    pub clock: Arc<dyn Clock>,
    ca: Arc<Ca>,
    launch: LaunchSettings,
    /// Serialises every read-modify-write of the store: admin calls and
    /// reconcile steps never interleave.
    pub ops: Mutex<()>,
    /// Per-group memory of failures, for back-off (not needed after a restart).
    failures: std::sync::Mutex<HashMap<String, (u32, i64)>>,
    /// Per group: when each instance was found unhealthy, and when the
    /// replacements of the guard's current interval were let through.
    health_memory: std::sync::Mutex<HashMap<String, HealthMemory>>,
    health: HealthSettings,
    started_at_ms: i64,
    wake: tokio::sync::Notify,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        provider: Arc<dyn Provider>,
        fleet: Arc<Fleet>,
        clock: Arc<dyn Clock>,
        ca: Arc<Ca>,
        launch: LaunchSettings,
    ) -> Self {
        let started_at_ms = clock.now_ms();
        Self {
            store,
            provider,
            fleet,
            clock,
            ca,
            launch,
            ops: Mutex::new(()),
            failures: std::sync::Mutex::new(HashMap::new()),
            health_memory: std::sync::Mutex::new(HashMap::new()),
            health: HealthSettings::default(),
            started_at_ms,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Replaces the health settings.
    pub fn with_health(mut self, health: HealthSettings) -> Self {
        self.health = health;
        self
    }

    /// Asks the loop to look at every group now.
    pub fn wake(&self) {
        self.wake.notify_one();
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
            Ok(list) => list.into_iter().map(|p| (p.instance_id, p.alive)).collect(),
            Err(e) => {
                warn!("provider describe failed: {e}");
                return Ok(());
            }
        };
        let _guard = self.ops.lock().await;
        let groups = self.store.list_groups()?;
        for group in groups {
            if let Err(e) = self.reconcile_group(group, &described).await {
                warn!("reconcile: {e}");
            }
        }
        self.release_orphans(&described).await?;
        Ok(())
    }

    /// Releases provider instances that no stored instance claims: left by a
    /// crash between a release and the record's deletion. Detached instances
    /// are not ebb's any more and are never released.
    async fn release_orphans(&self, described: &HashMap<String, bool>) -> Result<(), EngineError> {
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
        for id in described.keys().filter(|id| !known.contains(*id)) {
            warn!(instance = %id, "releasing an instance no group owns");
            if let Err(e) = self.provider.release(id).await {
                warn!(instance = %id, "release failed: {e}");
            }
        }
        Ok(())
    }

    async fn reconcile_group(
        &self,
        group: ScalingGroup,
        described: &HashMap<String, bool>,
    ) -> Result<(), EngineError> {
        let now = self.clock.now_ms();
        let mut running = self.running_activity(&group.id)?;
        let mut notes = Vec::new();
        for inst in self.store.list_instances(Some(&group.id))? {
            self.maintain_instance(&group, inst, described, now, &mut notes, running.as_mut())
                .await?;
        }
        if group.health_check_type == HealthCheckType::Agent
            && !group.suspended_processes.contains(&Process::HealthCheck)
        {
            self.check_health(&group, now, &mut notes, running.as_mut())
                .await?;
        }
        let instances = self.store.list_instances(Some(&group.id))?;
        let count = capacity(&instances);
        let acting = group.state != GroupState::Inactive || running.is_some();
        if count != group.desired_capacity && acting && !self.backing_off(&group.id, now) {
            let mut act = match running.take() {
                Some(a) => a,
                None => {
                    let cause = if notes.is_empty() {
                        format!(
                            "the group holds {count} instances but its desired capacity is {}, changing the Total Capacity from {count} to {}",
                            group.desired_capacity, group.desired_capacity
                        )
                    } else {
                        format!(
                            "{}; launching replacements to hold the Total Capacity at {}",
                            notes.join("; "),
                            group.desired_capacity
                        )
                    };
                    let trigger = if notes.is_empty() {
                        Trigger::Bounds
                    } else {
                        Trigger::Health
                    };
                    let a =
                        activity::start(&group, count, group.desired_capacity, trigger, cause, now);
                    self.store.commit(vec![Write::PutActivity(a.clone())])?;
                    info!(group = %group.name, activity = %a.id, "{}", a.cause);
                    a
                }
            };
            if count < group.desired_capacity {
                self.scale_out(&group, &mut act, group.desired_capacity - count, now)
                    .await?;
            } else {
                self.scale_in(
                    &group,
                    &mut act,
                    &instances,
                    count - group.desired_capacity,
                    now,
                )
                .await?;
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

    /// Advances one instance's lifecycle: Removing → released and forgotten;
    /// vanished → forgotten; Pending → InService once its agent says hello,
    /// or released after the launch timeout.
    async fn maintain_instance(
        &self,
        group: &ScalingGroup,
        mut inst: Instance,
        described: &HashMap<String, bool>,
        now: i64,
        notes: &mut Vec<String>,
        running: Option<&mut Activity>,
    ) -> Result<(), EngineError> {
        let ours = inst.creation_type == CreationType::AutoCreated;
        if inst.lifecycle_state == LifecycleState::RemovingWait {
            // An instance whose processes are gone has nothing left to drain.
            let gone = ours && described.get(&inst.id) == Some(&false);
            let verdict = self.advance_waits(group, &mut inst, now, running)?;
            if verdict == Verdict::Waiting && !gone {
                return Ok(());
            }
            inst.lifecycle_state = LifecycleState::Removing;
            self.store.commit(vec![Write::PutInstance(inst.clone())])?;
            return self.finish_removal(&inst).await;
        }
        if inst.lifecycle_state == LifecycleState::Removing {
            return self.finish_removal(&inst).await;
        }
        if ours {
            let vanished = match described.get(&inst.id) {
                Some(alive) => !alive,
                None => {
                    inst.lifecycle_state != LifecycleState::Pending
                        || now - inst.created_at_ms > UNKNOWN_PENDING_GRACE_MS
                }
            };
            if vanished {
                warn!(group = %group.name, instance = %inst.id, "instance vanished: its processes are gone");
                notes.push(format!(
                    "instance {} vanished (its processes are gone)",
                    inst.id
                ));
                let _ = self.provider.release(&inst.id).await;
                self.store
                    .commit(vec![Write::DeleteInstance(inst.id.clone())])?;
                self.fleet.forget(&inst.id);
                return Ok(());
            }
        }
        if inst.lifecycle_state == LifecycleState::PendingWait {
            match self.advance_waits(group, &mut inst, now, running)? {
                Verdict::Waiting => {}
                Verdict::Continue => self.put_in_service(group, inst, now)?,
                Verdict::Abandon => {
                    self.count_failure(&group.id, now);
                    if ours {
                        let _ = self.provider.release(&inst.id).await;
                    }
                    self.store
                        .commit(vec![Write::DeleteInstance(inst.id.clone())])?;
                    self.fleet.forget(&inst.id);
                    info!(group = %group.name, instance = %inst.id, "instance abandoned by a lifecycle hook; released");
                }
            }
            return Ok(());
        }
        if inst.lifecycle_state == LifecycleState::Pending {
            if self.fleet.is_connected(&inst.id) {
                inst.address = self.fleet.address(&inst.id);
                if hooks::enter_wait(group, &mut inst, Transition::ScaleOut, now) {
                    self.store.commit(vec![Write::PutInstance(inst.clone())])?;
                    info!(group = %group.name, instance = %inst.id, "instance waits on its SCALE_OUT lifecycle hooks");
                    self.advance_waits(group, &mut inst, now, running)?;
                } else {
                    self.put_in_service(group, inst, now)?;
                }
            } else if ours && now - inst.created_at_ms > self.launch.timeout.as_millis() as i64 {
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
                let _ = self.provider.release(&inst.id).await;
                self.store
                    .commit(vec![Write::DeleteInstance(inst.id.clone())])?;
                self.fleet.forget(&inst.id);
            }
        }
        Ok(())
    }

    fn put_in_service(
        &self,
        group: &ScalingGroup,
        mut inst: Instance,
        now: i64,
    ) -> Result<(), EngineError> {
        inst.lifecycle_state = LifecycleState::InService;
        inst.in_service_at_ms = Some(now);
        inst.hook_waits.clear();
        if inst.address.is_none() {
            inst.address = self.fleet.address(&inst.id);
        }
        self.store.commit(vec![Write::PutInstance(inst.clone())])?;
        info!(group = %group.name, instance = %inst.id, "instance in service");
        Ok(())
    }

    /// Why an InService instance is unhealthy, if it is.
    fn health_problem(&self, inst: &Instance, interval_ms: i64, now: i64) -> Option<String> {
        let seen = self.fleet.with_agent(&inst.id, |a| {
            let failing = a.latest.as_ref().and_then(|s| {
                s.health
                    .iter()
                    .find(|c| !c.healthy && c.consecutive_failures >= UNHEALTHY_AFTER)
                    .map(|c| {
                        format!(
                            "local check `{}` failed {} times in a row: {}",
                            c.name, c.consecutive_failures, c.message
                        )
                    })
            });
            let gone_for = a
                .disconnected_at
                .and_then(|at| at.elapsed().ok())
                .map(|d| d.as_millis() as i64);
            (
                a.connected,
                gone_for,
                a.disconnect_reason.clone(),
                a.consecutive_missed,
                failing,
            )
        });
        match seen {
            None => (now - self.started_at_ms > self.health.reconnect_grace.as_millis() as i64)
                .then(|| "its agent has not connected since the controller started".to_owned()),
            Some((false, gone_for, reason, _, _))
                if gone_for.unwrap_or(i64::MAX) >= interval_ms =>
            {
                Some(format!(
                    "its agent's stream is gone ({})",
                    reason.unwrap_or_else(|| "closed".into())
                ))
            }
            Some((true, _, _, missed, _)) if missed >= UNHEALTHY_AFTER => {
                Some(format!("{missed} pulls in a row went unanswered"))
            }
            Some((_, _, _, _, Some(failing))) => Some(failing),
            _ => None,
        }
    }

    /// Marks InService instances past their grace period unhealthy when
    /// they are, and takes unhealthy ones out for replacement — all of them,
    /// unless more than half the group failed at once: then at most the
    /// guard's share per interval, since the likelier cause is the
    /// controller's own network.
    async fn check_health(
        &self,
        group: &ScalingGroup,
        now: i64,
        notes: &mut Vec<String>,
        running: Option<&mut Activity>,
    ) -> Result<(), EngineError> {
        let grace_ms = i64::from(group.health_check_grace_period_secs) * 1000;
        let interval_ms = i64::from(group.sampling_interval_secs) * 1000;
        let mut reasons = HashMap::new();
        for mut inst in self.store.list_instances(Some(&group.id))? {
            if inst.lifecycle_state != LifecycleState::InService
                || inst.in_service_at_ms.is_none_or(|at| now - at < grace_ms)
            {
                continue;
            }
            if let Some(reason) = self.health_problem(&inst, interval_ms, now) {
                if inst.health_status == HealthStatus::Healthy {
                    warn!(group = %group.name, instance = %inst.id, "instance unhealthy: {reason}");
                    inst.health_status = HealthStatus::Unhealthy;
                    self.store.commit(vec![Write::PutInstance(inst.clone())])?;
                }
                reasons.insert(inst.id.clone(), reason);
            }
        }
        let instances = self.store.list_instances(Some(&group.id))?;
        // Protected and Standby instances are never replaced.
        let unhealthy: Vec<&Instance> = instances
            .iter()
            .filter(|i| {
                i.lifecycle_state == LifecycleState::InService
                    && i.health_status == HealthStatus::Unhealthy
            })
            .collect();
        let victims = self.guarded_victims(group, unhealthy, interval_ms, now, notes, running)?;
        for inst in victims {
            let reason = reasons
                .get(&inst.id)
                .cloned()
                .unwrap_or_else(|| "marked unhealthy".into());
            notes.push(format!("instance {} is unhealthy: {reason}", inst.id));
            let mut gone = inst;
            gone.lifecycle_state = LifecycleState::Removing;
            self.store.commit(vec![Write::PutInstance(gone.clone())])?;
            self.finish_removal(&gone).await?;
        }
        Ok(())
    }

    /// The unhealthy instances to replace now: each one sampling interval
    /// after it was found unhealthy (so failures that come together are seen
    /// together), and, when more than half the group failed within the
    /// guard's interval, no more than the guard's share per interval.
    fn guarded_victims(
        &self,
        group: &ScalingGroup,
        unhealthy: Vec<&Instance>,
        interval_ms: i64,
        now: i64,
        notes: &mut Vec<String>,
        running: Option<&mut Activity>,
    ) -> Result<Vec<Instance>, EngineError> {
        let window = self.health.guard_interval.as_millis() as i64;
        let mut memory = self.health_memory.lock().unwrap_or_else(|p| p.into_inner());
        let mem = memory.entry(group.id.clone()).or_default();
        mem.failed_at.retain(|_, at| now - *at < window);
        mem.replaced_at.retain(|at| now - *at < window);
        for i in &unhealthy {
            mem.failed_at.entry(i.id.clone()).or_insert(now);
        }
        // An instance is replaced one sampling interval after it was found
        // unhealthy, so failures that come together are seen together.
        let confirmed: Vec<&Instance> = unhealthy
            .into_iter()
            .filter(|i| {
                mem.failed_at
                    .get(&i.id)
                    .is_some_and(|at| now - *at >= interval_ms)
            })
            .collect();
        if confirmed.is_empty() {
            return Ok(Vec::new());
        }
        let size = group.desired_capacity.max(1) as usize;
        let mut allowed = confirmed.len();
        if mem.failed_at.len() * 2 > size {
            let budget = ((size as f64) * self.health.guard_share).floor().max(1.0) as usize;
            allowed = budget
                .saturating_sub(mem.replaced_at.len())
                .min(confirmed.len());
            let why = format!(
                "mass-failure guard: {} of {size} instances turned unhealthy within {} s; replacing at most {budget} per {} s (suspect the controller's own network)",
                mem.failed_at.len(),
                self.health.guard_interval.as_secs(),
                self.health.guard_interval.as_secs()
            );
            if allowed > 0 {
                warn!(group = %group.name, "{why}");
                notes.push(why.clone());
                if let Some(act) = running {
                    activity::note_error(act, &why);
                    self.store.commit(vec![Write::PutActivity(act.clone())])?;
                }
            }
        }
        let victims: Vec<Instance> = confirmed.into_iter().take(allowed).cloned().collect();
        mem.replaced_at
            .extend(std::iter::repeat_n(now, victims.len()));
        Ok(victims)
    }

    async fn finish_removal(&self, inst: &Instance) -> Result<(), EngineError> {
        if inst.creation_type == CreationType::AutoCreated
            && let Err(e) = self.provider.release(&inst.id).await
        {
            warn!(instance = %inst.id, "release failed, will retry: {e}");
            return Ok(());
        }
        self.store
            .commit(vec![Write::DeleteInstance(inst.id.clone())])?;
        self.fleet.forget(&inst.id);
        info!(instance = %inst.id, "instance removed");
        Ok(())
    }

    async fn scale_out(
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
            };
            act.created_instances.push(id.clone());
            // Written before launching: a crash now leaves a Pending record
            // the next pass resolves, never an untracked process.
            self.store.commit(vec![
                Write::PutInstance(inst),
                Write::PutActivity(act.clone()),
            ])?;
            let issued = self.ca.issue_agent(&id, ebb_certs::AGENT_VALIDITY)?;
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
            match self.provider.launch(request).await {
                Ok(()) => info!(group = %group.name, instance = %id, "launched"),
                Err(e) => {
                    warn!(group = %group.name, "{e}");
                    activity::note_error(act, &e.to_string());
                    self.store.commit(vec![
                        Write::DeleteInstance(id),
                        Write::PutActivity(act.clone()),
                    ])?;
                    if self.count_failure(&group.id, now) >= MAX_LAUNCH_FAILURES {
                        return self.fail(group, act, now);
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn scale_in(
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
                if !hooks::enter_wait(group, &mut inst, Transition::ScaleIn, now) {
                    inst.lifecycle_state = LifecycleState::Removing;
                }
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
                self.advance_waits(group, &mut inst, now, Some(&mut *act))?;
            } else {
                self.finish_removal(&inst).await?;
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
        let count = capacity(&instances);
        let launching = instances.iter().any(|i| {
            matches!(
                i.lifecycle_state,
                LifecycleState::Pending | LifecycleState::PendingWait
            ) && i.creation_type == CreationType::AutoCreated
        });
        let removing = instances.iter().any(|i| !i.counts());
        let stuck = count > group.desired_capacity && !instances.iter().any(Instance::removable);
        let before = (act.progress, act.status);
        if (count == group.desired_capacity || stuck) && !launching && !removing {
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

    fn count_failure(&self, group_id: &str, now: i64) -> u32 {
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

    /// What a rule decision reads of `group`.
    pub fn snapshot(&self, group: &ScalingGroup) -> Result<Snapshot, StoreError> {
        let recent = self
            .store
            .list_activities(Some(&group.id), COOLDOWN_LOOKBACK)?;
        Ok(Snapshot {
            instances: self.store.list_instances(Some(&group.id))?,
            running: self.running_activity(&group.id)?,
            cooldown_start_ms: cooldown_start(&recent),
        })
    }

    /// The group's InProgress activity, if any (the newest, should there
    /// be more), however many activities ended since it started.
    pub fn running_activity(&self, group_id: &str) -> Result<Option<Activity>, StoreError> {
        let query = crate::store::ActivityQuery {
            group_id: Some(group_id.to_owned()),
            status: Some(ActivityStatus::InProgress),
            limit: 1,
            ..Default::default()
        };
        Ok(self.store.find_activities(&query)?.pop())
    }
}

/// What `decide` needs of a group, read from the store in one place.
pub struct Snapshot {
    pub instances: Vec<Instance>,
    /// The activity in progress, if any (a new one supersedes it).
    pub running: Option<Activity>,
    pub cooldown_start_ms: Option<i64>,
}

impl Snapshot {
    /// The borrowed view `decide` takes.
    pub fn view<'a>(&'a self, group: &'a ScalingGroup) -> GroupSnapshot<'a> {
        GroupSnapshot {
            group,
            instances: &self.instances,
            running_activity: self.running.as_ref().map(|a| a.id.as_str()),
            cooldown_start_ms: self.cooldown_start_ms,
        }
    }
}
