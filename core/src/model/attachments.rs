//! Attachments (DESIGN §4): a group's instances as the servers of HAProxy
//! backends and as the allowed addresses of PostgreSQL allow-lists, each
//! driven by the target agent on that host. Here: what an attachment is,
//! its validation, the phases an instance passes through on its way in and
//! out, and which members each target must hold. No I/O.

use serde::{Deserialize, Serialize};

use super::{HealthStatus, Instance, Invalid, LifecycleState, ScalingGroup};

/// ESS: a leaving instance drains for this long by default.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u32 = 30;
/// An hour of draining is already more than any request should take.
pub const MAX_DRAIN_TIMEOUT_SECS: u32 = 3_600;
/// HAProxy's default server weight and its maximum.
pub const DEFAULT_WEIGHT: u32 = 1;
pub const MAX_WEIGHT: u32 = 256;
/// ESS allows 5 load balancers and 5 database instances per group.
pub const MAX_LOAD_BALANCERS: usize = 5;
pub const MAX_DB_INSTANCES: usize = 5;
/// A pg_hba line's method when the attachment names none.
pub const DEFAULT_AUTH_METHOD: &str = "scram-sha-256";
/// The pg_hba methods an allow-list may use: those PostgreSQL 15 takes on
/// a `host` line without options (`peer` is for `local` lines only). The
/// target agent checks against the same list.
pub const AUTH_METHODS: &[&str] = &[
    "trust",
    "reject",
    "scram-sha-256",
    "md5",
    "password",
    "gss",
    "sspi",
    "ident",
    "ldap",
    "radius",
    "cert",
    "pam",
    "bsd",
];

/// An HAProxy backend whose servers are the group's instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    /// The target agent's name (`spiffe://<td>/target/<name>`).
    pub target: String,
    pub backend: String,
    /// The port each instance serves on.
    pub port: u16,
    pub weight: u32,
    pub drain_timeout_secs: u32,
    /// Detached: sent with no members until the target reports them gone
    /// (or the detach times out), then dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detaching_since_ms: Option<i64>,
}

/// A PostgreSQL allow-list: `host <database> <user> <address> <method>`
/// for each member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbInstance {
    pub target: String,
    pub database: String,
    pub user: String,
    pub auth_method: String,
}

impl LoadBalancer {
    /// The id the target agent knows it by: stable across versions.
    pub fn attachment_id(&self, group_id: &str) -> String {
        format!("{group_id}/{}", self.backend)
    }

    pub fn same(&self, target: &str, backend: &str) -> bool {
        self.target == target && self.backend == backend
    }

    pub fn is_detaching(&self) -> bool {
        self.detaching_since_ms.is_some()
    }
}

impl DbInstance {
    pub fn attachment_id(&self, group_id: &str) -> String {
        format!("{group_id}/{}/{}", self.database, self.user)
    }

    pub fn same(&self, target: &str, database: &str, user: &str) -> bool {
        self.target == target && self.database == database && self.user == user
    }

    /// `<database>/<user>`, as `instance describe` names it.
    pub fn name(&self) -> String {
        format!("{}/{}", self.database, self.user)
    }
}

/// A load balancer as an attach request gives it; `None` takes the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadBalancerSpec {
    pub target: String,
    pub backend: String,
    pub port: u32,
    pub weight: Option<u32>,
    pub drain_timeout_secs: Option<u32>,
}

/// A database allow-list as an attach request gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbInstanceSpec {
    pub target: String,
    pub database: String,
    pub user: String,
    pub auth_method: Option<String>,
}

/// A target's name: as the certificate's (letters, digits, `-`, `_`, `.`).
fn check_target(field: &str, name: &str, errors: &mut Invalid) {
    if name.is_empty() {
        errors.push(field, "is required: the target agent's name");
    } else if name.len() > 64 {
        errors.push(field, "must be at most 64 characters");
    } else if name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errors.push(
            field,
            format!("`{name}` may use only letters, digits, '-', '_' and '.'"),
        );
    }
}

/// An HAProxy proxy name: letters, digits, `-`, `_`, `.`, `:`.
fn check_backend(field: &str, name: &str, errors: &mut Invalid) {
    if name.is_empty() {
        errors.push(field, "is required: the HAProxy backend's name");
    } else if name.len() > 64 {
        errors.push(field, "must be at most 64 characters");
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        errors.push(
            field,
            format!("`{name}` may use only letters, digits, '-', '_', '.' and ':'"),
        );
    }
}

/// A pg_hba database or user: `all`, or a plain identifier (no quoting,
/// so nothing can break out of the line).
fn check_pg_name(field: &str, name: &str, errors: &mut Invalid) {
    if name.is_empty() {
        errors.push(field, "is required (`all` matches every one)");
    } else if name.len() > 63 {
        errors.push(field, "must be at most 63 characters (PostgreSQL's limit)");
    } else if name.starts_with(['+', '@'])
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'))
    {
        errors.push(
            field,
            format!("`{name}` may use only letters, digits, '_', '-', '.' and '$'"),
        );
    }
}

impl LoadBalancerSpec {
    /// The attachment, or every problem, fields prefixed with `field`.
    pub fn build(&self, field: &str, errors: &mut Invalid) -> Option<LoadBalancer> {
        let before = errors.0.len();
        check_target(&format!("{field}.target"), &self.target, errors);
        check_backend(&format!("{field}.backend"), &self.backend, errors);
        if !(1..=65_535).contains(&self.port) {
            errors.push(
                format!("{field}.port"),
                format!("{} is outside 1..=65535", self.port),
            );
        }
        let weight = self.weight.unwrap_or(DEFAULT_WEIGHT);
        if !(1..=MAX_WEIGHT).contains(&weight) {
            errors.push(
                format!("{field}.weight"),
                format!("{weight} is outside 1..={MAX_WEIGHT}"),
            );
        }
        let drain = self
            .drain_timeout_secs
            .unwrap_or(DEFAULT_DRAIN_TIMEOUT_SECS);
        if drain > MAX_DRAIN_TIMEOUT_SECS {
            errors.push(
                format!("{field}.drain_timeout_secs"),
                format!("{drain} is outside 0..={MAX_DRAIN_TIMEOUT_SECS}"),
            );
        }
        (errors.0.len() == before).then(|| LoadBalancer {
            target: self.target.clone(),
            backend: self.backend.clone(),
            port: self.port as u16,
            weight,
            drain_timeout_secs: drain,
            detaching_since_ms: None,
        })
    }
}

impl DbInstanceSpec {
    pub fn build(&self, field: &str, errors: &mut Invalid) -> Option<DbInstance> {
        let before = errors.0.len();
        check_target(&format!("{field}.target"), &self.target, errors);
        check_pg_name(&format!("{field}.database"), &self.database, errors);
        check_pg_name(&format!("{field}.user"), &self.user, errors);
        let method = self
            .auth_method
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| DEFAULT_AUTH_METHOD.to_owned());
        if !AUTH_METHODS.contains(&method.as_str()) {
            errors.push(
                format!("{field}.auth_method"),
                format!(
                    "`{method}` is not a pg_hba host method; use one of {}",
                    AUTH_METHODS.join(", ")
                ),
            );
        }
        (errors.0.len() == before).then(|| DbInstance {
            target: self.target.clone(),
            database: self.database.clone(),
            user: self.user.clone(),
            auth_method: method,
        })
    }
}

impl ScalingGroup {
    /// The group with `specs` attached (an existing one, same target and
    /// backend, takes the new settings; a detaching one is attached again),
    /// or every problem. Nothing changes on an error.
    pub fn with_load_balancers(&self, specs: &[LoadBalancerSpec]) -> Result<Self, Invalid> {
        let mut errors = Invalid::default();
        if specs.is_empty() {
            errors.push("load_balancers", "name at least one load balancer");
        }
        let mut g = self.clone();
        for (i, spec) in specs.iter().enumerate() {
            let field = format!("load_balancers[{i}]");
            let Some(lb) = spec.build(&field, &mut errors) else {
                continue;
            };
            if specs[..i]
                .iter()
                .any(|s| s.target == lb.target && s.backend == lb.backend)
            {
                errors.push(
                    field,
                    format!("{}/{} is listed twice", lb.target, lb.backend),
                );
                continue;
            }
            // One backend is one group's: two groups' servers in one
            // backend would each delete the other's.
            match g.load_balancers.iter_mut().find(|l| l.backend == lb.backend) {
                Some(existing) if existing.target == lb.target => *existing = lb,
                Some(existing) => errors.push(
                    format!("{field}.backend"),
                    format!(
                        "backend `{}` is already attached on target `{}`; a group names each backend once",
                        lb.backend, existing.target
                    ),
                ),
                None => g.load_balancers.push(lb),
            }
        }
        if g.load_balancers.len() > MAX_LOAD_BALANCERS {
            errors.push(
                "load_balancers",
                format!(
                    "a group takes at most {MAX_LOAD_BALANCERS} load balancers; it would have {}",
                    g.load_balancers.len()
                ),
            );
        }
        errors.into_result().map(|()| g)
    }

    /// The group with the named load balancers detaching, or every problem
    /// (one not attached is named).
    pub fn without_load_balancers(
        &self,
        refs: &[(String, String)],
        now_ms: i64,
    ) -> Result<Self, Invalid> {
        let mut errors = Invalid::default();
        if refs.is_empty() {
            errors.push("load_balancers", "name at least one load balancer");
        }
        let mut g = self.clone();
        for (i, (target, backend)) in refs.iter().enumerate() {
            match g
                .load_balancers
                .iter_mut()
                .find(|l| l.same(target, backend))
            {
                Some(lb) => {
                    lb.detaching_since_ms.get_or_insert(now_ms);
                }
                None => errors.push(
                    format!("load_balancers[{i}]"),
                    format!("{target}/{backend} is not attached to group {}", self.name),
                ),
            }
        }
        errors.into_result().map(|()| g)
    }

    pub fn with_db_instances(&self, specs: &[DbInstanceSpec]) -> Result<Self, Invalid> {
        let mut errors = Invalid::default();
        if specs.is_empty() {
            errors.push("db_instances", "name at least one database instance");
        }
        let mut g = self.clone();
        for (i, spec) in specs.iter().enumerate() {
            let field = format!("db_instances[{i}]");
            let Some(db) = spec.build(&field, &mut errors) else {
                continue;
            };
            if specs[..i]
                .iter()
                .any(|s| s.target == db.target && s.database == db.database && s.user == db.user)
            {
                errors.push(
                    field,
                    format!("{}/{} is listed twice", db.target, db.name()),
                );
                continue;
            }
            match g
                .db_instances
                .iter_mut()
                .find(|d| d.same(&db.target, &db.database, &db.user))
            {
                Some(existing) => *existing = db,
                None => g.db_instances.push(db),
            }
        }
        if g.db_instances.len() > MAX_DB_INSTANCES {
            errors.push(
                "db_instances",
                format!(
                    "a group takes at most {MAX_DB_INSTANCES} database instances; it would have {}",
                    g.db_instances.len()
                ),
            );
        }
        errors.into_result().map(|()| g)
    }

    /// The group without the named allow-lists (`(target, database, user)`).
    pub fn without_db_instances(&self, refs: &[(String, String, String)]) -> Result<Self, Invalid> {
        let mut errors = Invalid::default();
        if refs.is_empty() {
            errors.push("db_instances", "name at least one database instance");
        }
        let mut g = self.clone();
        for (i, (target, database, user)) in refs.iter().enumerate() {
            let before = g.db_instances.len();
            g.db_instances.retain(|d| !d.same(target, database, user));
            if g.db_instances.len() == before {
                errors.push(
                    format!("db_instances[{i}]"),
                    format!(
                        "{target}/{database}/{user} is not attached to group {}",
                        self.name
                    ),
                );
            }
        }
        errors.into_result().map(|()| g)
    }

    /// Load balancers new instances are registered on (not detaching).
    pub fn active_load_balancers(&self) -> impl Iterator<Item = &LoadBalancer> {
        self.load_balancers.iter().filter(|l| !l.is_detaching())
    }

    /// Whether an instance must be registered before it goes InService.
    pub fn has_attachments(&self) -> bool {
        self.active_load_balancers().next().is_some() || !self.db_instances.is_empty()
    }

    /// Whether a leaving instance must drain first.
    pub fn drains(&self) -> bool {
        self.active_load_balancers().next().is_some()
    }

    /// The longest drain of the group's load balancers, in milliseconds.
    pub fn drain_timeout_ms(&self) -> i64 {
        self.active_load_balancers()
            .map(|l| i64::from(l.drain_timeout_secs) * 1000)
            .max()
            .unwrap_or(0)
    }
}

/// Where an instance stands with its group's attachments, on its way in or
/// out; stored, so a restarted controller goes on where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum AttachPhase {
    /// Pending, its agent connected and its hooks done: being added to
    /// every load balancer and allow-list; InService once all confirm (or
    /// the registration times out).
    Registering { since_ms: i64 },
    /// On its way out: no new connections, for up to the drain timeout.
    Draining { since_ms: i64 },
    /// Drained: being taken off every load balancer before its release.
    Deregistering { since_ms: i64 },
}

impl AttachPhase {
    pub fn since_ms(self) -> i64 {
        match self {
            Self::Registering { since_ms }
            | Self::Draining { since_ms }
            | Self::Deregistering { since_ms } => since_ms,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Registering { .. } => "registering",
            Self::Draining { .. } => "draining",
            Self::Deregistering { .. } => "deregistering",
        }
    }
}

/// What a load balancer must do with one instance's server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Takes traffic.
    Ready,
    /// No new connections; the ones it has finish.
    Drain,
    /// No traffic at all: Standby, unhealthy, or its agent is lost.
    Maint,
}

/// The server `inst` must be on its group's load balancers; None: no server.
/// `lost` is whether its agent is known to be gone (its stream dropped, or
/// it never came back after a controller restart's grace).
pub fn load_balancer_membership(inst: &Instance, lost: bool) -> Option<Membership> {
    inst.address.as_ref()?;
    match inst.attach_phase {
        Some(AttachPhase::Registering { .. }) => return Some(Membership::Ready),
        Some(AttachPhase::Draining { .. }) => return Some(Membership::Drain),
        Some(AttachPhase::Deregistering { .. }) => return None,
        None => {}
    }
    match inst.lifecycle_state {
        LifecycleState::InService | LifecycleState::Protected
            if inst.health_status == HealthStatus::Healthy && !lost =>
        {
            Some(Membership::Ready)
        }
        LifecycleState::InService | LifecycleState::Protected | LifecycleState::Standby => {
            Some(Membership::Maint)
        }
        // Not yet registering, or leaving with nothing to drain.
        LifecycleState::Pending
        | LifecycleState::PendingWait
        | LifecycleState::Removing
        | LifecycleState::RemovingWait => None,
    }
}

/// Whether `inst`'s address is on its group's allow-lists: from its
/// registration until its record is gone (after its release).
pub fn allowed(inst: &Instance) -> bool {
    inst.address.is_some()
        && match inst.lifecycle_state {
            LifecycleState::Pending | LifecycleState::PendingWait => {
                matches!(inst.attach_phase, Some(AttachPhase::Registering { .. }))
            }
            _ => true,
        }
}

#[cfg(test)]
mod tests;
