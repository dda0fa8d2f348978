//! The domain: scaling groups, scaling configurations, instances and
//! scaling activities, as plain data with validation that reports every
//! problem at once, naming the field. No I/O here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use metrics::{MetricSource, PrometheusSource};
pub use providers::{ExecSettings, MicrovmSettings, ProviderKind};

/// ESS: a group's default cooldown when none is given.
pub const DEFAULT_COOLDOWN_SECS: u32 = 300;
/// ESS bounds the cooldown to a day.
pub const MAX_COOLDOWN_SECS: u32 = 86_400;
/// Agents get a minute to start reporting before health counts (AWS: 300 s).
pub const DEFAULT_HEALTH_CHECK_GRACE_SECS: u32 = 60;
/// Design §8: 5 s sampling by default, 1 s to 300 s allowed.
pub const DEFAULT_SAMPLING_INTERVAL_SECS: u32 = 5;
pub const MAX_SAMPLING_INTERVAL_SECS: u32 = 300;
/// A group larger than this is a typo, not a fleet one controller pulls.
pub const MAX_GROUP_SIZE: u32 = 10_000;
/// ESS names: 2 to 64 characters.
pub const MAX_NAME_LEN: usize = 64;
/// ESS user data limit.
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;
/// ESS allows 20 tags per resource.
pub const MAX_TAGS: usize = 20;

/// One field's problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every problem with a request, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invalid(pub Vec<FieldError>);

impl Invalid {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ok when nothing was pushed.
    pub fn into_result(self) -> Result<(), Invalid> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut i = Self::default();
        i.push(field, message);
        i
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for Invalid {}

/// Checks an ESS-style name: 2–64 characters of letters, digits, `-`, `_`,
/// `.`, starting with a letter or digit.
pub fn check_name(field: &str, name: &str, errors: &mut Invalid) {
    let len = name.chars().count();
    if !(2..=MAX_NAME_LEN).contains(&len) {
        errors.push(
            field,
            format!("must be 2 to {MAX_NAME_LEN} characters, got {len}"),
        );
    } else if !name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        errors.push(field, "must start with a letter or digit");
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errors.push(field, "may use only letters, digits, '-', '_' and '.'");
    }
}

string_enum!(
    /// How instances are picked for removal, in the group's order.
    RemovalPolicy {
        OldestScalingConfiguration = "OldestScalingConfiguration",
        OldestInstance = "OldestInstance",
        NewestInstance = "NewestInstance",
        LeastBusy = "LeastBusy",
    }
);

string_enum!(
    /// Whether the controller judges instance health from the agent.
    HealthCheckType { Agent = "AGENT", None = "NONE" }
);

string_enum!(
    /// A group's lifecycle.
    GroupState { Inactive = "Inactive", Active = "Active", Deleting = "Deleting" }
);

string_enum!(
    /// An instance's lifecycle state (ESS names).
    LifecycleState {
        Pending = "Pending",
        PendingWait = "Pending:Wait",
        InService = "InService",
        Standby = "Standby",
        Protected = "Protected",
        Removing = "Removing",
        RemovingWait = "Removing:Wait",
    }
);

string_enum!(
    /// A group's processes that `SuspendProcesses` can hold (ESS names).
    Process {
        ScaleIn = "ScaleIn",
        ScaleOut = "ScaleOut",
        HealthCheck = "HealthCheck",
        AlarmNotification = "AlarmNotification",
        ScheduledAction = "ScheduledAction",
    }
);

string_enum!(
    HealthStatus { Healthy = "Healthy", Unhealthy = "Unhealthy" }
);

string_enum!(
    /// Whether ebb launched the instance or an operator attached it.
    CreationType { AutoCreated = "AutoCreated", Attached = "Attached" }
);

string_enum!(
    /// What started an activity.
    Trigger {
        Alarm = "alarm",
        Schedule = "schedule",
        Api = "api",
        Health = "health",
        Bounds = "bounds",
        Forecast = "forecast",
    }
);

string_enum!(
    ActivityStatus {
        InProgress = "InProgress",
        Successful = "Successful",
        Warning = "Warning",
        Failed = "Failed",
        Rejected = "Rejected",
    }
);

/// The default removal order, as in ESS.
pub fn default_removal_policies() -> Vec<RemovalPolicy> {
    vec![
        RemovalPolicy::OldestScalingConfiguration,
        RemovalPolicy::OldestInstance,
    ]
}

/// A scaling group as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingGroup {
    pub id: String,
    pub name: String,
    pub min_size: u32,
    pub max_size: u32,
    pub desired_capacity: u32,
    pub default_cooldown_secs: u32,
    pub removal_policies: Vec<RemovalPolicy>,
    pub health_check_type: HealthCheckType,
    pub health_check_grace_period_secs: u32,
    pub sampling_interval_secs: u32,
    pub deletion_protection: bool,
    pub state: GroupState,
    pub active_configuration_id: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Processes held by `SuspendProcesses`.
    #[serde(default)]
    pub suspended_processes: Vec<Process>,
    /// Webhooks told about the group's activities.
    #[serde(default)]
    pub notifications: Vec<NotificationConfig>,
    /// Hooks holding instances on their way in or out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifecycle_hooks: Vec<hooks::LifecycleHook>,
    /// HAProxy backends whose servers are the group's instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<attachments::LoadBalancer>,
    /// PostgreSQL allow-lists holding the group's instances' addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub db_instances: Vec<attachments::DbInstance>,
}

impl ScalingGroup {
    /// The group's hooks for one transition.
    pub fn hooks_for(&self, t: hooks::Transition) -> impl Iterator<Item = &hooks::LifecycleHook> {
        self.lifecycle_hooks
            .iter()
            .filter(move |h| h.transition == t)
    }
}

string_enum!(
    /// The events a webhook can be told of (ESS names).
    NotificationType {
        ScaleOutStart = "SCALE_OUT_START",
        ScaleOutSuccess = "SCALE_OUT_SUCCESS",
        ScaleOutError = "SCALE_OUT_ERROR",
        ScaleInStart = "SCALE_IN_START",
        ScaleInSuccess = "SCALE_IN_SUCCESS",
        ScaleInError = "SCALE_IN_ERROR",
        ScaleReject = "SCALE_REJECT",
    }
);

/// A webhook and the events it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationConfig {
    /// `http://` or `https://` (see [`crate::url`]); receives a JSON POST per event.
    pub url: String,
    pub types: Vec<NotificationType>,
    /// The HMAC-SHA256 key of `X-Ebb-Signature`; unsigned when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// One attempt's limit, connect to status line.
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u32,
}

/// A webhook attempt's limit when none is given.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u32 = 5_000;
/// The limits of a webhook's timeout.
pub const WEBHOOK_TIMEOUT_MS: std::ops::RangeInclusive<u32> = 100..=60_000;
/// The limits of a webhook secret's length in bytes: shorter is guessable,
/// and HMAC hashes a longer key down anyway.
pub const WEBHOOK_SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;

/// Checks a webhook secret's length, naming `field`.
pub fn check_webhook_secret(field: &str, secret: &str, errors: &mut Invalid) {
    if !WEBHOOK_SECRET_LEN.contains(&secret.len()) {
        errors.push(
            field,
            format!(
                "is {} bytes; give {} to {} (e.g. `openssl rand -hex 32`)",
                secret.len(),
                WEBHOOK_SECRET_LEN.start(),
                WEBHOOK_SECRET_LEN.end()
            ),
        );
    }
}

fn default_webhook_timeout_ms() -> u32 {
    DEFAULT_WEBHOOK_TIMEOUT_MS
}

/// The fields a create or modify may set; `None` keeps (or defaults) a value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSpec {
    pub name: Option<String>,
    pub min_size: Option<u32>,
    pub max_size: Option<u32>,
    pub desired_capacity: Option<u32>,
    pub default_cooldown_secs: Option<u32>,
    pub removal_policies: Option<Vec<String>>,
    pub health_check_type: Option<String>,
    pub health_check_grace_period_secs: Option<u32>,
    pub sampling_interval_secs: Option<u32>,
    pub deletion_protection: Option<bool>,
}

impl ScalingGroup {
    /// A new, Inactive group from a create request; every problem at once.
    pub fn create(id: String, spec: &GroupSpec, now_ms: i64) -> Result<Self, Invalid> {
        let mut errors = Invalid::default();
        let name = spec.name.clone().unwrap_or_default();
        if spec.name.is_none() {
            errors.push("name", "is required");
        }
        let min_size = spec.min_size.unwrap_or_else(|| {
            errors.push("min_size", "is required");
            0
        });
        let max_size = spec.max_size.unwrap_or_else(|| {
            errors.push("max_size", "is required");
            min_size
        });
        let mut group = Self {
            id,
            name,
            min_size,
            max_size,
            desired_capacity: spec.desired_capacity.unwrap_or(min_size),
            default_cooldown_secs: DEFAULT_COOLDOWN_SECS,
            removal_policies: default_removal_policies(),
            health_check_type: HealthCheckType::Agent,
            health_check_grace_period_secs: DEFAULT_HEALTH_CHECK_GRACE_SECS,
            sampling_interval_secs: DEFAULT_SAMPLING_INTERVAL_SECS,
            deletion_protection: false,
            state: GroupState::Inactive,
            active_configuration_id: None,
            created_at_ms: now_ms,
            suspended_processes: Vec::new(),
            notifications: Vec::new(),
            lifecycle_hooks: Vec::new(),
            load_balancers: Vec::new(),
            db_instances: Vec::new(),
        };
        group.apply_optional(spec, &mut errors);
        group.check(&mut errors);
        errors.into_result().map(|()| group)
    }

    /// The group after a modify request, or every problem. A modify that
    /// changes min or max without desired pulls desired into the new bounds
    /// (ESS does the same), which is how bounds move capacity.
    pub fn modified(&self, spec: &GroupSpec) -> Result<Self, Invalid> {
        let mut errors = Invalid::default();
        let mut g = self.clone();
        if let Some(n) = &spec.name {
            g.name = n.clone();
        }
        if let Some(v) = spec.min_size {
            g.min_size = v;
        }
        if let Some(v) = spec.max_size {
            g.max_size = v;
        }
        match spec.desired_capacity {
            Some(d) => g.desired_capacity = d,
            None => {
                g.desired_capacity = g
                    .desired_capacity
                    .clamp(g.min_size, g.max_size.max(g.min_size))
            }
        }
        g.apply_optional(spec, &mut errors);
        g.check(&mut errors);
        errors.into_result().map(|()| g)
    }

    fn apply_optional(&mut self, spec: &GroupSpec, errors: &mut Invalid) {
        if let Some(v) = spec.default_cooldown_secs {
            self.default_cooldown_secs = v;
        }
        if let Some(list) = &spec.removal_policies {
            let mut policies = Vec::new();
            for (i, p) in list.iter().enumerate() {
                match p.parse::<RemovalPolicy>() {
                    Ok(p) if policies.contains(&p) => {
                        errors.push(
                            format!("removal_policies[{i}]"),
                            format!("`{p}` is listed twice"),
                        );
                    }
                    Ok(p) => policies.push(p),
                    Err(e) => errors.push(format!("removal_policies[{i}]"), e),
                }
            }
            if list.len() > 2 {
                errors.push(
                    "removal_policies",
                    format!("at most two policies, got {}", list.len()),
                );
            }
            if list.is_empty() {
                errors.push("removal_policies", "name at least one policy");
            }
            self.removal_policies = policies;
        }
        if let Some(t) = &spec.health_check_type {
            match t.parse() {
                Ok(t) => self.health_check_type = t,
                Err(e) => errors.push("health_check_type", e),
            }
        }
        if let Some(v) = spec.health_check_grace_period_secs {
            self.health_check_grace_period_secs = v;
        }
        if let Some(v) = spec.sampling_interval_secs {
            self.sampling_interval_secs = v;
        }
        if let Some(v) = spec.deletion_protection {
            self.deletion_protection = v;
        }
    }

    fn check(&self, errors: &mut Invalid) {
        check_name("name", &self.name, errors);
        if self.max_size > MAX_GROUP_SIZE {
            errors.push(
                "max_size",
                format!("{} is above the limit of {MAX_GROUP_SIZE}", self.max_size),
            );
        }
        if self.min_size > self.max_size {
            errors.push(
                "min_size",
                format!(
                    "{} is greater than max_size {}",
                    self.min_size, self.max_size
                ),
            );
        } else if !(self.min_size..=self.max_size).contains(&self.desired_capacity) {
            errors.push(
                "desired_capacity",
                format!(
                    "{} is outside [min_size, max_size] = [{}, {}]",
                    self.desired_capacity, self.min_size, self.max_size
                ),
            );
        }
        if self.default_cooldown_secs > MAX_COOLDOWN_SECS {
            errors.push(
                "default_cooldown_secs",
                format!(
                    "{} is outside 0..={MAX_COOLDOWN_SECS}",
                    self.default_cooldown_secs
                ),
            );
        }
        if self.health_check_grace_period_secs > 86_400 {
            errors.push(
                "health_check_grace_period_secs",
                format!(
                    "{} is outside 0..=86400",
                    self.health_check_grace_period_secs
                ),
            );
        }
        if !(1..=MAX_SAMPLING_INTERVAL_SECS).contains(&self.sampling_interval_secs) {
            errors.push(
                "sampling_interval_secs",
                format!(
                    "{} is outside 1..={MAX_SAMPLING_INTERVAL_SECS}",
                    self.sampling_interval_secs
                ),
            );
        }
    }
}

/// A template for new instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingConfiguration {
    pub id: String,
    pub group_id: String,
    pub name: String,
    /// Free text for the operator's own sizing vocabulary.
    pub instance_type: String,
    /// The workload the process provider runs next to the agent (argv, no
    /// shell); empty runs the agent alone.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub user_data: String,
    pub created_at_ms: i64,
    /// Local checks the instance's agent runs.
    #[serde(default)]
    pub health_checks: Vec<LocalCheck>,
    /// Custom metric sources the instance's agent reads on every pull.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricSource>,
    /// With `instance_type = "exec"`: the operator's program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<providers::ExecSettings>,
    /// With `instance_type = "microvm"`: the machine's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub microvm: Option<providers::MicrovmSettings>,
}

/// A health check an instance's agent runs on the instance itself, with
/// exactly one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalCheck {
    pub name: String,
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub tcp: Option<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The fields a create or modify of a configuration may set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigurationSpec {
    pub name: Option<String>,
    pub instance_type: Option<String>,
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub tags: Option<BTreeMap<String, String>>,
    pub user_data: Option<String>,
    pub health_checks: Option<Vec<LocalCheck>>,
    pub metrics: Option<Vec<MetricSource>>,
    pub exec: Option<providers::ExecSettings>,
    pub microvm: Option<providers::MicrovmSettings>,
}

impl ScalingConfiguration {
    pub fn create(
        id: String,
        group_id: String,
        spec: &ConfigurationSpec,
        now_ms: i64,
    ) -> Result<Self, Invalid> {
        let mut errors = Invalid::default();
        if spec.name.is_none() {
            errors.push("name", "is required");
        }
        let c = Self {
            id,
            group_id,
            name: spec.name.clone().unwrap_or_default(),
            instance_type: String::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
            tags: BTreeMap::new(),
            user_data: String::new(),
            created_at_ms: now_ms,
            health_checks: Vec::new(),
            metrics: Vec::new(),
            exec: None,
            microvm: None,
        }
        .with(spec);
        c.check(&mut errors);
        errors.into_result().map(|()| c)
    }

    pub fn modified(&self, spec: &ConfigurationSpec) -> Result<Self, Invalid> {
        let mut errors = Invalid::default();
        let c = self.clone().with(spec);
        c.check(&mut errors);
        errors.into_result().map(|()| c)
    }

    fn with(mut self, spec: &ConfigurationSpec) -> Self {
        if let Some(v) = &spec.name {
            self.name = v.clone();
        }
        if let Some(v) = &spec.instance_type {
            self.instance_type = v.clone();
        }
        if let Some(v) = &spec.command {
            self.command = v.clone();
        }
        if let Some(v) = &spec.env {
            self.env = v.clone();
        }
        if let Some(v) = &spec.tags {
            self.tags = v.clone();
        }
        if let Some(v) = &spec.user_data {
            self.user_data = v.clone();
        }
        if let Some(v) = &spec.health_checks {
            self.health_checks = v.clone();
        }
        if let Some(v) = &spec.metrics {
            self.metrics = v.clone();
        }
        if let Some(v) = &spec.exec {
            self.exec = Some(v.clone());
        }
        if let Some(v) = &spec.microvm {
            self.microvm = Some(v.clone());
        }
        // Settings of a provider the configuration no longer names go with it.
        let kind = self.provider_kind();
        if kind != ProviderKind::Exec && spec.exec.is_none() {
            self.exec = None;
        }
        if kind != ProviderKind::Microvm && spec.microvm.is_none() {
            self.microvm = None;
        }
        self
    }

    /// The provider that launches this configuration's instances.
    pub fn provider_kind(&self) -> ProviderKind {
        ProviderKind::of(&self.instance_type)
    }

    fn check(&self, errors: &mut Invalid) {
        check_name("name", &self.name, errors);
        if self.instance_type.len() > 64 {
            errors.push("instance_type", "must be at most 64 characters");
        }
        if self.command.first().is_some_and(|p| p.is_empty()) {
            errors.push("command[0]", "must name a program");
        }
        check_env_names("env", &self.env, errors);
        if self.tags.len() > MAX_TAGS {
            errors.push(
                "tags",
                format!("at most {MAX_TAGS} tags, got {}", self.tags.len()),
            );
        }
        for (k, v) in &self.tags {
            if k.is_empty() || k.len() > 128 {
                errors.push(format!("tags.{k}"), "a tag key is 1 to 128 characters");
            }
            if v.len() > 128 {
                errors.push(format!("tags.{k}"), "a tag value is at most 128 characters");
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.health_checks.iter().enumerate() {
            let at = format!("health_checks[{i}]");
            check_name(&format!("{at}.name"), &c.name, errors);
            if !names.insert(c.name.as_str()) {
                errors.push(
                    format!("{at}.name"),
                    format!("`{}` is used by another check", c.name),
                );
            }
            let probes = [c.http.is_some(), c.tcp.is_some(), c.command.is_some()];
            if probes.iter().filter(|p| **p).count() != 1 {
                errors.push(at.clone(), "set exactly one of http, tcp, command");
            }
            if c.http.as_ref().is_some_and(|u| !u.starts_with("http://")) {
                errors.push(
                    format!("{at}.http"),
                    "must be a plain http:// URL on the instance",
                );
            }
            if c.command
                .as_ref()
                .is_some_and(|a| a.first().is_none_or(String::is_empty))
            {
                errors.push(format!("{at}.command"), "must name a program");
            }
            let interval = c.interval_ms.unwrap_or(5_000);
            if interval < 100 {
                errors.push(
                    format!("{at}.interval_ms"),
                    format!("{interval} is below 100"),
                );
            }
            if c.timeout_ms.is_some_and(|t| t == 0 || t > interval) {
                errors.push(
                    format!("{at}.timeout_ms"),
                    "must be above 0 and at most interval_ms",
                );
            }
        }
        metrics::check_metric_sources(&self.metrics, errors);
        self.check_provider(errors);
        if self.user_data.len() > MAX_USER_DATA_BYTES {
            errors.push(
                "user_data",
                format!(
                    "{} bytes is above the limit of {MAX_USER_DATA_BYTES}",
                    self.user_data.len()
                ),
            );
        }
    }
}

/// Checks environment variable names: valid, and not `EBB_*` (ebb's own).
pub(crate) fn check_env_names(field: &str, env: &BTreeMap<String, String>, errors: &mut Invalid) {
    for key in env.keys() {
        let ok = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            errors.push(
                format!("{field}.{key}"),
                "is not a valid environment variable name",
            );
        } else if key.starts_with("EBB_") {
            errors.push(
                format!("{field}.{key}"),
                "EBB_ variables are reserved for ebb",
            );
        }
    }
}

impl ScalingConfiguration {
    /// The provider settings match the provider `instance_type` names.
    fn check_provider(&self, errors: &mut Invalid) {
        let kind = self.provider_kind();
        match (&self.exec, kind) {
            (None, ProviderKind::Exec) => errors.push(
                "exec",
                "instance_type = \"exec\" needs exec settings (at least exec.program)",
            ),
            (Some(exec), ProviderKind::Exec) => exec.check(errors),
            (Some(_), _) => errors.push(
                "exec",
                format!(
                    "is set, but instance_type is `{}`; set instance_type = \"exec\"",
                    self.instance_type
                ),
            ),
            (None, _) => {}
        }
        match (&self.microvm, kind) {
            (Some(vm), ProviderKind::Microvm) => vm.check(errors),
            (Some(_), _) => errors.push(
                "microvm",
                format!(
                    "is set, but instance_type is `{}`; set instance_type = \"microvm\"",
                    self.instance_type
                ),
            ),
            (None, _) => {}
        }
    }
}

/// An instance of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub group_id: String,
    /// The configuration it was launched from; None for attached instances.
    pub configuration_id: Option<String>,
    pub lifecycle_state: LifecycleState,
    pub health_status: HealthStatus,
    pub creation_type: CreationType,
    /// The host address the agent reported, once it has.
    pub address: Option<String>,
    pub created_at_ms: i64,
    /// When it became InService.
    pub in_service_at_ms: Option<i64>,
    /// The activity that launched or is removing it.
    pub activity_id: Option<String>,
    /// The lifecycle hooks it waits on in Pending:Wait or Removing:Wait.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hook_waits: Vec<hooks::HookWait>,
    /// Its registration on, or its drain from, the group's attachments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_phase: Option<attachments::AttachPhase>,
    /// What its provider calls it (a QEMU pid, a cloud instance id), and
    /// the address the provider gave it, once the launch said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_address: Option<String>,
    /// When its provider's launch returned: the launch time-out counts
    /// from here (a slow provider step is not the agent's time to connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_at_ms: Option<i64>,
}

impl Instance {
    /// Counts towards the group's capacity (everything not on its way out).
    pub fn counts(&self) -> bool {
        !matches!(
            self.lifecycle_state,
            LifecycleState::Removing | LifecycleState::RemovingWait
        )
    }

    /// May be picked by a scale-in.
    pub fn removable(&self) -> bool {
        matches!(
            self.lifecycle_state,
            LifecycleState::InService | LifecycleState::Pending | LifecycleState::PendingWait
        )
    }
}

/// A change of capacity, stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub id: String,
    pub group_id: String,
    /// A sentence: what happened and why.
    pub cause: String,
    pub trigger: Trigger,
    pub status: ActivityStatus,
    /// 0–100.
    pub progress: u8,
    pub capacity_from: u32,
    pub capacity_to: u32,
    pub created_instances: Vec<String>,
    pub removed_instances: Vec<String>,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// Why it failed or was rejected.
    pub error: Option<String>,
    /// The inputs of the decision, one line each, for `activity describe`.
    #[serde(default)]
    pub details: Vec<String>,
    /// The admin identity (its SPIFFE URI) whose API call started it; None
    /// for what the controller started itself (alarms, schedules, health).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiated_by: Option<String>,
}

impl Activity {
    pub fn is_running(&self) -> bool {
        self.status == ActivityStatus::InProgress
    }
}

pub mod attachments;
pub mod hooks;
pub mod metrics;
pub mod providers;
pub mod removal;
pub mod tasks;

#[cfg(test)]
mod tests;
