//! The scaling engine: the operations that change a group's capacity (each
//! recorded as a scaling activity, written before anything is acted on) and
//! the reconcile loop that converges every group to its desired capacity,
//! one stored step at a time, so a controller that restarts mid-activity
//! finishes the job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ebb_certs::Ca;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::denylist::DenyList;
use crate::fleet::Fleet;
use crate::provider::{LaunchRequest, Provider};
use crate::store::{Store, StoreError};
use ebb_core::decide::GroupSnapshot;
use ebb_core::guard::GuardMemory;
use ebb_core::model::{Activity, ActivityStatus, Instance, ScalingGroup};
use ebb_core::rules::cooldown_start;
use tracing::info;

use crate::store::Write;

pub mod activity;
pub mod alarms;
pub mod attachments;
pub mod capacity;
pub mod certs;
pub mod health;
pub mod hooks;
pub mod limits;
pub mod loops;
pub mod notify;
pub mod predictive;
pub mod reconcile;
pub mod rules;
pub mod schedules;

#[cfg(test)]
mod tests;

/// A launched instance whose agent has not said hello by then is released
/// and replaced (AWS's default warm-up is 300 s; a local process is quick).
pub const DEFAULT_LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Completed activities of each status read to find the cooldown's start:
/// the latest to end is among the latest to start (activities overlap only
/// when a new one supersedes a running one, which then ends first).
const COMPLETED_LOOKBACK: usize = 5;

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
    /// A cap on the number of objects (`[limits]`) would be passed.
    #[error("{0}")]
    Exhausted(String),
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

/// How many activities each group keeps, and for how long. The group's
/// InProgress activity and its latest completed ones (the cooldown starts
/// at their end) are kept whatever their age.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub keep_per_group: usize,
    pub max_age: Duration,
}

/// A thousand a group: weeks of history at one activity an hour, and a
/// bounded store however busy a group is.
pub const DEFAULT_KEEP_PER_GROUP: usize = 1000;
/// Thirty days: long enough to look back over a month's incidents.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often old activities are pruned: often enough that nothing grows
/// much past its bound, seldom enough to cost nothing.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_per_group: DEFAULT_KEEP_PER_GROUP,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// Provider work a pass decided on, carried out once it lets go of the
/// engine lock.
enum Io {
    /// Release an instance marked Removing; its record goes once that succeeded.
    Remove(String),
    /// Release an instance whose record is already gone (vanished,
    /// abandoned, never connected, an orphan); the orphan sweep retries.
    Release(String),
    /// Launch an instance whose Pending record is written.
    Launch {
        request: Box<LaunchRequest>,
        activity_id: String,
    },
}

/// Where launched agents must connect.
#[derive(Debug, Clone)]
pub struct LaunchSettings {
    pub controller: String,
    pub server_name: String,
    pub timeout: Duration,
}

/// The engine shared by the admin API and the reconcile loop.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub provider: Arc<dyn Provider>,
    pub fleet: Arc<Fleet>,
    pub clock: Arc<dyn Clock>,
    /// Revoked identities, shared with the Connect and admin checks.
    pub deny: Arc<DenyList>,
    ca: Arc<Ca>,
    certs: certs::CertSettings,
    /// The server certificate served and rotated live, when serving.
    server_cert: Option<Arc<certs::ServerCert>>,
    launch: LaunchSettings,
    /// Serialises every read-modify-write of the store: admin calls and
    /// reconcile steps never interleave.
    pub ops: Mutex<()>,
    /// Per-group memory of failures, for back-off (not needed after a restart).
    failures: std::sync::Mutex<HashMap<String, (u32, i64)>>,
    /// Per group: when each instance was found unhealthy, and when the
    /// replacements of the guard's current interval were let through.
    health_memory: std::sync::Mutex<HashMap<String, GuardMemory>>,
    health: HealthSettings,
    /// Caps on the number of objects the admin API may create.
    pub limits: limits::Limits,
    /// How long activities are kept.
    pub retention: Retention,
    /// When activities were last pruned (clock ms).
    last_prune_ms: std::sync::atomic::AtomicI64,
    /// When this controller started, or last began to lead: agents get
    /// `reconnect_grace` from then before a missing one is judged.
    started_at_ms: std::sync::atomic::AtomicI64,
    wake: tokio::sync::Notify,
    /// Provider work the reconcile pass under way decided on.
    deferred: std::sync::Mutex<Vec<Io>>,
    /// When each control loop last finished a pass, for `/healthz`.
    pub passes: Passes,
    /// Rollups written, forecasts made and the floors they set.
    pub predictive: predictive::PredictiveState,
    /// How webhook notifications are sent.
    pub webhooks: notify::Webhooks,
}

/// When each control loop last finished a pass without an error
/// (monotonic; None before the first).
#[derive(Debug, Default)]
pub struct Passes {
    pub reconcile: std::sync::Mutex<Option<std::time::Instant>>,
    pub alarms: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Passes {
    pub fn mark(slot: &std::sync::Mutex<Option<std::time::Instant>>) {
        *slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
    }

    /// How long ago `slot`'s loop last finished a pass.
    pub fn age(slot: &std::sync::Mutex<Option<std::time::Instant>>) -> Option<std::time::Duration> {
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|t| t.elapsed())
    }
}

impl Engine {
    /// An engine on `fleet`'s clock: samples, disconnects and decisions
    /// are all timed by the one clock.
    pub fn new(
        store: Arc<dyn Store>,
        provider: Arc<dyn Provider>,
        fleet: Arc<Fleet>,
        ca: Arc<Ca>,
        launch: LaunchSettings,
    ) -> Self {
        let clock = fleet.clock();
        let started_at_ms = clock.now_ms();
        Self {
            store,
            provider,
            fleet,
            clock,
            deny: Arc::default(),
            ca,
            certs: certs::CertSettings::default(),
            server_cert: None,
            launch,
            ops: Mutex::new(()),
            failures: std::sync::Mutex::new(HashMap::new()),
            health_memory: std::sync::Mutex::new(HashMap::new()),
            health: HealthSettings::default(),
            limits: limits::Limits::default(),
            retention: Retention::default(),
            last_prune_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            started_at_ms: std::sync::atomic::AtomicI64::new(started_at_ms),
            wake: tokio::sync::Notify::new(),
            deferred: std::sync::Mutex::new(Vec::new()),
            passes: Passes::default(),
            predictive: predictive::PredictiveState::default(),
            webhooks: notify::Webhooks::system(),
        }
    }

    /// When agents began to get their grace to reconnect.
    pub(crate) fn started_at_ms(&self) -> i64 {
        self.started_at_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Begins a term of leadership taken over from another controller (HA):
    /// the agents get a fresh `reconnect_grace` to come over before any is
    /// judged unhealthy, so a failover never looks like a mass failure;
    /// the back-off and health memories of this process start empty; and
    /// every alarm starts again in INSUFFICIENT_DATA, so nothing scales in
    /// on the partial samples of the first periods. An activity the old
    /// leader left InProgress is finished by the reconcile loop, as after a
    /// restart.
    pub async fn begin_term(&self) -> Result<(), EngineError> {
        use ebb_core::model::tasks::AlarmRecord;
        use ebb_core::rules::{AlarmEval, AlarmState};
        let _ops = self.ops.lock().await;
        let now = self.clock.now_ms();
        self.started_at_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.health_memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.predictive.forget();
        let mut writes = Vec::new();
        for mut alarm in self.store.list_alarms(None)? {
            if alarm.eval.state == AlarmState::InsufficientData && alarm.eval.history.is_empty() {
                continue;
            }
            alarm.eval = AlarmEval {
                state: AlarmState::InsufficientData,
                since_ms: Some(now),
                history: Default::default(),
            };
            alarm.record(AlarmRecord {
                at_ms: now,
                state: AlarmState::InsufficientData,
                value: None,
                explanation: "a new leader took over: evaluation starts again from fresh samples"
                    .into(),
            });
            writes.push(Write::PutAlarm(alarm));
        }
        if !writes.is_empty() {
            info!(
                alarms = writes.len(),
                "took over: alarms start again in INSUFFICIENT_DATA"
            );
            self.store.commit(writes)?;
        }
        Ok(())
    }

    /// Shares the deny-list the Connect and admin checks read.
    pub fn with_deny_list(mut self, deny: Arc<DenyList>) -> Self {
        self.deny = deny;
        self
    }

    /// The trust domain of the CA this engine issues from.
    pub fn trust_domain(&self) -> &str {
        self.ca.trust_domain()
    }

    /// Replaces the health settings.
    pub fn with_health(mut self, health: HealthSettings) -> Self {
        self.health = health;
        self
    }

    /// Replaces the caps on object counts.
    pub fn with_webhooks(mut self, webhooks: notify::Webhooks) -> Self {
        self.webhooks = webhooks;
        self
    }

    pub fn with_limits(mut self, limits: limits::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces how long activities are kept.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Replaces the certificate settings.
    pub fn with_certs(mut self, certs: certs::CertSettings) -> Self {
        self.certs = certs;
        self
    }

    /// Serves and rotates `server`.
    pub fn with_server_cert(mut self, server: Arc<certs::ServerCert>) -> Self {
        self.server_cert = Some(server);
        self
    }

    /// The CA agent certificates are issued from.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The name launched and joining agents check the server certificate for.
    pub fn server_name(&self) -> &str {
        &self.launch.server_name
    }

    /// Asks the loop to look at every group now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Starts `act`, the one way an activity starts: supersedes the group's
    /// activity in progress, commits both with `writes` (the group's new
    /// desired capacity, instances on their way out...) in one
    /// transaction, and wakes the reconcile loop to carry it out.
    pub fn begin_activity(
        &self,
        group: &ScalingGroup,
        act: Activity,
        mut writes: Vec<Write>,
    ) -> Result<Activity, EngineError> {
        let now = self.clock.now_ms();
        if let Some(mut prev) = self.running_activity(&group.id)? {
            activity::supersede(&mut prev, &act.id, now);
            writes.push(Write::PutActivity(prev));
        }
        writes.push(Write::PutActivity(act.clone()));
        self.store.commit(writes)?;
        info!(group = %group.name, activity = %act.id, "{}", act.cause);
        self.wake();
        Ok(act)
    }

    /// Records a Rejected activity: a refusal is part of the group's story.
    pub fn record_rejection(
        &self,
        group: &ScalingGroup,
        act: Activity,
    ) -> Result<Activity, EngineError> {
        self.store.commit(vec![Write::PutActivity(act.clone())])?;
        info!(group = %group.name, activity = %act.id, "rejected: {}", act.error.as_deref().unwrap_or_default());
        Ok(act)
    }

    /// What a rule decision reads of `group`.
    pub fn snapshot(&self, group: &ScalingGroup) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            instances: self.store.list_instances(Some(&group.id))?,
            running: self.running_activity(&group.id)?,
            cooldown_start_ms: self.cooldown_start(&group.id)?,
        })
    }

    /// When the group's cooldown started: the end of its latest completed
    /// (Successful or Warning) activity, however many were rejected since.
    fn cooldown_start(&self, group_id: &str) -> Result<Option<i64>, StoreError> {
        let mut completed = Vec::new();
        for status in [ActivityStatus::Successful, ActivityStatus::Warning] {
            completed.extend(self.store.find_activities(&crate::store::ActivityQuery {
                group_id: Some(group_id.to_owned()),
                status: Some(status),
                limit: COMPLETED_LOOKBACK,
                ..Default::default()
            })?);
        }
        Ok(cooldown_start(&completed))
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
