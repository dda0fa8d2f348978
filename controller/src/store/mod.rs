//! The store: everything the controller decides is written here before it
//! acts. One trait, one conformance suite, one module per backend (SQLite by
//! default; etcd for more than one controller).
//!
//! Groups own their configurations, instances, activities, scaling rules,
//! alarms and scheduled tasks; deleting a group deletes them.
//!
//! Writes go through [`Store::commit`], all or nothing, so "raise desired and
//! record the activity" can never be half done.

use ebb_core::model::tasks::{AlarmTask, ScheduledTask};
use ebb_core::model::{Activity, ActivityStatus, Instance, ScalingConfiguration, ScalingGroup};
use ebb_core::rules::ScalingRule;
use ebb_core::rules::predict::MinuteRollup;

pub mod etcd;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule would break (a group name, a configuration name in its group).
    #[error("{0}")]
    Conflict(String),
    /// A write refers to something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The backend failed (I/O, locking, the database itself).
    #[error("store: {0}")]
    Backend(String),
    /// The write was fenced off: another controller leads now (etcd only).
    #[error("this controller no longer leads: {0}")]
    Fenced(String),
    /// A stored record could not be read back.
    #[error("store: corrupt record {key}: {message}")]
    Corrupt { key: String, message: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One change in a [`Store::commit`]. Deleting a record that does not
/// exist is a no-op, so a retried step converges. Listings break ties by id
/// (ascending; descending for activities).
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Insert a new group; Conflict if its id or name is taken.
    CreateGroup(ScalingGroup),
    /// Replace an existing group; NotFound if absent, Conflict on a taken name.
    UpdateGroup(ScalingGroup),
    /// Remove a group with its configurations, instances and activities.
    DeleteGroup(String),
    /// Insert or replace; Conflict if another configuration of the same
    /// group has the name; NotFound if the group does not exist.
    PutConfiguration(ScalingConfiguration),
    DeleteConfiguration(String),
    /// Insert or replace; NotFound if the group does not exist.
    PutInstance(Instance),
    DeleteInstance(String),
    /// Insert or replace; NotFound if the group does not exist.
    PutActivity(Activity),
    /// Insert or replace; Conflict if another rule of the group has the
    /// name; NotFound if the group does not exist.
    PutRule(ScalingRule),
    DeleteRule(String),
    /// As rules: unique name per group.
    PutAlarm(AlarmTask),
    DeleteAlarm(String),
    /// As rules: unique name per group.
    PutTask(ScheduledTask),
    DeleteTask(String),
    /// Insert or replace. Not tied to a group: a detached instance
    /// outlives the group it left.
    PutDetached(Detached),
    /// Insert or replace; NotFound if the group does not exist. Deleting
    /// the group deletes its tokens.
    PutJoinToken(JoinToken),
    DeleteJoinToken(String),
    /// Insert, or keep the entry already there: a revocation is never
    /// changed or undone.
    PutRevoked(Revoked),
    /// Records an issued certificate (replacing one with the same serial),
    /// and forgets that identity's certificates that expired before
    /// `issued_at_ms`, and anyone's that expired [`CERT_RETENTION_MS`]
    /// before it: the registry holds what is live, not a history.
    PutCertificate(CertRecord),
    /// Insert or replace a group's finished minute (by group and minute);
    /// NotFound if the group does not exist. Deleting the group deletes them.
    PutRollup(MinuteRollup),
    /// Insert, or keep the entry already there (whatever its state): an
    /// event enqueued twice is delivered once. Not tied to a group: a
    /// deleted group's last notifications still go out.
    EnqueueDelivery(Delivery),
    /// Insert or replace (an attempt's outcome).
    PutDelivery(Delivery),
    /// Forget one (a pending delivery whose target was deleted); a no-op
    /// when it is not there.
    DeleteDelivery(String),
    /// Insert or replace (an expired token used again).
    PutClientToken(ClientToken),
}

/// A `client_token` an admin call carried, and the answer it got: a retry
/// with the same token gets the same answer and starts nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientToken {
    pub token: String,
    /// The call (`scale_with_adjustment`).
    pub method: String,
    /// Lowercase hex SHA-256 of the call and its request without the token:
    /// the same token on another request is refused.
    pub fingerprint: String,
    /// The answer, protobuf-encoded, in lowercase hex.
    pub response_hex: String,
    pub created_at_ms: i64,
}

/// Where a [`Delivery`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up on after every attempt: a dead letter.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Dead]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// One webhook POST in the outbox (docs/notifications.md): written when its
/// event is seen, sent by the notifier, kept a while after it ends so that
/// the same event is never enqueued (and sent) twice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    /// One per event and target (`<source>.<event>.<target hash>`); the
    /// receiver sees it as `X-Ebb-Delivery`.
    pub id: String,
    /// The group whose event it is (which may since have been deleted).
    pub group_id: String,
    pub state: DeliveryState,
    /// Pending: when the next attempt is due. Ended: when it ended.
    pub due_ms: i64,
    pub created_at_ms: i64,
    pub url: String,
    /// `X-Ebb-Event`: a notification type or `LIFECYCLE_ACTION`.
    pub event: String,
    /// The JSON body, exactly as signed and sent.
    pub body: String,
    /// The HMAC key of `X-Ebb-Signature`, copied from the target.
    pub secret: Option<String>,
    pub timeout_ms: u32,
    /// Attempts made so far.
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// How many of one target's deliveries are in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCount {
    pub group_id: String,
    pub url: String,
    pub state: DeliveryState,
    pub count: u64,
}

/// An expired certificate stays listed this long (unless its identity
/// got a new one), so `cert list` shows what lapsed recently, and the
/// registry of a fleet that launches and releases all day stays small.
pub const CERT_RETENTION_MS: i64 = 7 * 86_400_000;

/// A certificate the controller issued, in its registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// Lowercase hex.
    pub serial: String,
    /// The SPIFFE URI, or the server's first DNS name.
    pub identity: String,
    pub kind: CertKind,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    pub issued_at_ms: i64,
}

/// What a certificate in the registry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CertKind {
    Agent,
    Admin,
    Server,
    Ca,
    /// A target agent's: the host of a load balancer or a database.
    Target,
}

impl CertKind {
    pub const ALL: [CertKind; 5] = [
        Self::Agent,
        Self::Admin,
        Self::Server,
        Self::Ca,
        Self::Target,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Admin => "admin",
            Self::Server => "server",
            Self::Ca => "ca",
            Self::Target => "target",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Which activities [`Store::find_activities`] returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityQuery {
    /// One group's, or every group's.
    pub group_id: Option<String>,
    pub status: Option<ActivityStatus>,
    /// Only those started at or after this instant.
    pub since_ms: Option<i64>,
    /// Only those after this `(started_at_ms, id)` in the listing's order:
    /// the last of the previous page.
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

/// An instance `DetachInstances` took out of its group: it keeps running
/// and ebb leaves it alone, so the reconcile loop's sweep of provider
/// instances no record claims must never release it, restarts included.
#[derive(Debug, Clone, PartialEq)]
pub struct Detached {
    pub instance_id: String,
    /// The group it left (which may since have been deleted).
    pub group_id: String,
    pub detached_at_ms: i64,
}

/// An identity on the deny-list (`ebbctl cert revoke`): every certificate
/// naming it is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Revoked {
    /// The SPIFFE URI.
    pub identity: String,
    pub revoked_at_ms: i64,
    /// The admin identity that revoked it.
    pub revoked_by: String,
    pub reason: String,
}

/// What a join token admits a host as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinScope {
    /// A new instance attached to this group.
    Group(String),
    /// This target (a load balancer's or database's host).
    Target(String),
}

/// A join token (`ebbctl token create`): a host that presents its id and
/// secret to `JoinService.Join` is attached to a group as a new instance,
/// or becomes a target. Only the secret's SHA-256 is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinToken {
    pub id: String,
    pub scope: JoinScope,
    /// Lowercase hex SHA-256 of the secret part.
    pub secret_sha256: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub uses_left: u32,
    /// The admin identity that created it.
    pub created_by: String,
    /// Kept after `ebbctl token revoke` so that a refusal can say why.
    pub revoked: bool,
}

/// The controller's persistent state. Implementations are cheap to call from
/// async code (local, sub-millisecond writes) and safe to share.
pub trait Store: Send + Sync + 'static {
    /// Applies every write or none.
    fn commit(&self, writes: Vec<Write>) -> Result<()>;

    /// Whether the store answers and takes writes now, for `/healthz`: by
    /// default a read (a backend whose writes fail shows it otherwise).
    fn probe(&self) -> Result<()> {
        self.list_groups().map(|_| ())
    }

    fn get_group(&self, id: &str) -> Result<Option<ScalingGroup>>;
    fn find_group_by_name(&self, name: &str) -> Result<Option<ScalingGroup>>;
    /// All groups, by name.
    fn list_groups(&self) -> Result<Vec<ScalingGroup>>;

    fn get_configuration(&self, id: &str) -> Result<Option<ScalingConfiguration>>;
    /// A group's configurations (all when None), oldest first.
    fn list_configurations(&self, group_id: Option<&str>) -> Result<Vec<ScalingConfiguration>>;

    fn get_instance(&self, id: &str) -> Result<Option<Instance>>;
    /// A group's instances (all when None), oldest first.
    fn list_instances(&self, group_id: Option<&str>) -> Result<Vec<Instance>>;

    fn get_activity(&self, id: &str) -> Result<Option<Activity>>;
    /// A group's activities (all when None), newest first, at most `limit`.
    fn list_activities(&self, group_id: Option<&str>, limit: usize) -> Result<Vec<Activity>>;
    /// The activities `query` selects, newest first (ties by id, descending),
    /// at most `query.limit`: the filters apply before the limit.
    fn find_activities(&self, query: &ActivityQuery) -> Result<Vec<Activity>>;
    /// Deletes the group's activities that are not among its newest `keep`
    /// or that started before `before_ms`, except any InProgress one and
    /// the newest Successful and newest Warning one (a cooldown starts at
    /// the end of the latest completed activity). Returns how many went.
    fn prune_activities(&self, group_id: &str, keep: usize, before_ms: i64) -> Result<usize>;

    fn get_rule(&self, id: &str) -> Result<Option<ScalingRule>>;
    /// A group's rules (all when None), by name.
    fn list_rules(&self, group_id: Option<&str>) -> Result<Vec<ScalingRule>>;

    fn get_alarm(&self, id: &str) -> Result<Option<AlarmTask>>;
    /// A group's alarms (all when None), by name.
    fn list_alarms(&self, group_id: Option<&str>) -> Result<Vec<AlarmTask>>;

    fn get_task(&self, id: &str) -> Result<Option<ScheduledTask>>;
    /// A group's scheduled tasks (all when None), by name.
    fn list_tasks(&self, group_id: Option<&str>) -> Result<Vec<ScheduledTask>>;

    /// Every detached instance, by id.
    fn list_detached(&self) -> Result<Vec<Detached>>;
    /// One detached instance (read at each refused Connect, so no listing).
    fn get_detached(&self, id: &str) -> Result<Option<Detached>>;

    /// The deny-list, by identity.
    fn list_revoked(&self) -> Result<Vec<Revoked>>;

    /// Each identity's latest certificate (the one that expires last; of
    /// two that expire together, the later issued), soonest expiry first,
    /// ties by identity.
    fn list_certificates(&self) -> Result<Vec<CertRecord>>;

    fn get_join_token(&self, id: &str) -> Result<Option<JoinToken>>;
    /// Every join token, oldest first (ties by id).
    fn list_join_tokens(&self) -> Result<Vec<JoinToken>>;

    /// A group's per-minute rollups from `since_ms` on, oldest first.
    fn list_rollups(&self, group_id: &str, since_ms: i64) -> Result<Vec<MinuteRollup>>;
    /// Deletes every group's rollups of minutes before `before_ms`.
    /// Returns how many went.
    fn prune_rollups(&self, before_ms: i64) -> Result<usize>;

    /// Up to `limit` deliveries in `state` due at or before `due_by_ms`,
    /// soonest first (ties by id).
    fn list_deliveries(
        &self,
        state: DeliveryState,
        due_by_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>>;
    /// Deliveries by group, target and state (zero counts left out), by
    /// group, URL and state.
    fn count_deliveries(&self) -> Result<Vec<DeliveryCount>>;
    /// Deletes the deliveries in `state` that ended (or, pending, are due)
    /// before `before_ms`. Returns how many went.
    fn prune_deliveries(&self, state: DeliveryState, before_ms: i64) -> Result<usize>;

    fn get_client_token(&self, token: &str) -> Result<Option<ClientToken>>;
    /// Deletes the tokens recorded before `before_ms`. Returns how many went.
    fn prune_client_tokens(&self, before_ms: i64) -> Result<usize>;
}
