//! Pure helpers for scaling activities: starting one with its cause,
//! recording errors, computing progress, completing it.

use std::future::Future;
use std::sync::atomic::Ordering;

use tracing::info;

use super::{Engine, EngineError, PRUNE_INTERVAL};
use crate::id::new_id;
use ebb_core::model::{Activity, ActivityStatus, Instance, LifecycleState, ScalingGroup, Trigger};

tokio::task_local! {
    /// The admin identity whose API call the current task serves. A task
    /// local rather than an argument of every engine operation: whatever an
    /// admin call starts, however deep in the engine, names its admin, and
    /// the engine's own loops, which never run in that scope, name none.
    static ADMIN: String;
}

/// Runs `f` (one admin call) on behalf of `admin`: every activity it
/// starts records `admin` as `initiated_by`.
pub async fn as_admin<F: Future>(admin: String, f: F) -> F::Output {
    ADMIN.scope(admin, f).await
}

/// The admin the current task acts for, if it serves an admin call.
pub fn current_admin() -> Option<String> {
    ADMIN.try_with(Clone::clone).ok()
}

/// A new InProgress activity moving the group from `from` to `to`.
pub fn start(
    group: &ScalingGroup,
    from: u32,
    to: u32,
    trigger: Trigger,
    cause: String,
    now: i64,
) -> Activity {
    Activity {
        id: new_id("asa"),
        group_id: group.id.clone(),
        cause,
        trigger,
        status: ActivityStatus::InProgress,
        progress: 0,
        capacity_from: from,
        capacity_to: to,
        created_instances: Vec::new(),
        removed_instances: Vec::new(),
        started_at_ms: now,
        ended_at_ms: None,
        error: None,
        details: Vec::new(),
        initiated_by: current_admin(),
    }
}

/// A Rejected activity: recorded, never acted on.
pub fn rejected(
    group: &ScalingGroup,
    from: u32,
    to: u32,
    trigger: Trigger,
    cause: String,
    reason: String,
    now: i64,
) -> Activity {
    let mut a = start(group, from, to, trigger, cause, now);
    a.status = ActivityStatus::Rejected;
    a.progress = 0;
    a.ended_at_ms = Some(now);
    a.error = Some(reason);
    a
}

/// Appends an error; an activity with errors ends as Warning, not Successful.
pub fn note_error(act: &mut Activity, message: &str) {
    act.error = Some(match act.error.take() {
        Some(prev) => format!("{prev}; {message}"),
        None => message.to_owned(),
    });
}

/// Marks the activity finished.
pub fn complete(act: &mut Activity, now: i64) {
    act.status = if act.error.is_some() {
        ActivityStatus::Warning
    } else {
        ActivityStatus::Successful
    };
    act.progress = 100;
    act.ended_at_ms = Some(now);
}

/// Ends a running activity that a newer request replaced.
pub fn supersede(act: &mut Activity, by: &str, now: i64) {
    note_error(act, &format!("superseded by {by} before it finished"));
    act.status = ActivityStatus::Warning;
    act.ended_at_ms = Some(now);
}

/// Share of the activity's work done: launched instances in service, or
/// removed instances gone, over the capacity change it asked for.
pub fn progress(act: &Activity, instances: &[Instance]) -> u8 {
    let wanted = act.capacity_from.abs_diff(act.capacity_to).max(1);
    let done = if act.capacity_to >= act.capacity_from {
        act.created_instances
            .iter()
            .filter(|id| {
                instances
                    .iter()
                    .any(|i| &i.id == *id && i.lifecycle_state == LifecycleState::InService)
            })
            .count()
    } else {
        act.removed_instances
            .iter()
            .filter(|id| !instances.iter().any(|i| &i.id == *id))
            .count()
    };
    ((done as u32 * 100 / wanted).min(99)) as u8
}

/// The cause sentence ESS users know: "…, changing the Total Capacity from A to B".
pub fn cause(what: &str, from: u32, to: u32) -> String {
    format!("{what}, changing the Total Capacity from {from} to {to}")
}

/// How long a `client_token` holds its first answer.
pub const CLIENT_TOKEN_TTL_MS: i64 = 86_400_000;

impl Engine {
    /// Prunes every group's activities to the retention (`[activities]`),
    /// at most once per `PRUNE_INTERVAL` of the clock; returns how many
    /// went. The store spares each group's running and latest completed
    /// activities.
    pub async fn prune_activities(&self) -> Result<usize, EngineError> {
        let now = self.clock.now_ms();
        let interval = i64::try_from(PRUNE_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < interval {
            return Ok(0);
        }
        self.last_prune_ms.store(now, Ordering::Relaxed);
        let max_age = i64::try_from(self.retention.max_age.as_millis()).unwrap_or(i64::MAX);
        let before = now.saturating_sub(max_age);
        let _ops = self.ops.lock().await;
        let mut pruned = 0;
        for group in self.store.list_groups()? {
            let n =
                self.store
                    .prune_activities(&group.id, self.retention.keep_per_group, before)?;
            if n > 0 {
                info!(group = %group.name, pruned = n, "old scaling activities pruned");
            }
            pruned += n;
        }
        let tokens = self
            .store
            .prune_client_tokens(now.saturating_sub(CLIENT_TOKEN_TTL_MS))?;
        if tokens > 0 {
            info!(pruned = tokens, "client tokens past their 24 h pruned");
        }
        let rollups = super::predictive::prune_rollups(self)?;
        if rollups > 0 {
            info!(
                pruned = rollups,
                "per-minute rollups past their 14 days pruned"
            );
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_core::model::{GroupSpec, ScalingGroup};

    fn group() -> ScalingGroup {
        let spec = GroupSpec {
            name: Some("web".into()),
            min_size: Some(0),
            max_size: Some(10),
            ..Default::default()
        };
        ScalingGroup::create("asg-1".into(), &spec, 0).unwrap()
    }

    #[test]
    fn errors_turn_success_into_warning() {
        let mut a = start(&group(), 1, 3, Trigger::Api, cause("x", 1, 3), 5);
        complete(&mut a, 9);
        assert_eq!(
            (a.status, a.progress, a.ended_at_ms),
            (ActivityStatus::Successful, 100, Some(9))
        );
        let mut b = start(&group(), 1, 3, Trigger::Api, "x".into(), 5);
        note_error(&mut b, "first");
        note_error(&mut b, "second");
        complete(&mut b, 9);
        assert_eq!(b.status, ActivityStatus::Warning);
        assert_eq!(b.error.as_deref(), Some("first; second"));
    }

    #[test]
    fn rejected_is_finished_with_its_reason() {
        let a = rejected(
            &group(),
            2,
            4,
            Trigger::Api,
            "y".into(),
            "the scaling group is not active".into(),
            3,
        );
        assert_eq!(a.status, ActivityStatus::Rejected);
        assert_eq!(a.ended_at_ms, Some(3));
        assert_eq!(a.error.as_deref(), Some("the scaling group is not active"));
    }

    #[test]
    fn cause_reads_like_ess() {
        assert_eq!(
            cause("ModifyScalingGroup set the desired capacity to 4", 2, 4),
            "ModifyScalingGroup set the desired capacity to 4, changing the Total Capacity from 2 to 4"
        );
    }
}
