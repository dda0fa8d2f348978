//! Pure helpers for scaling activities: starting one with its cause,
//! recording errors, computing progress, completing it.

use crate::id::new_id;
use ebb_core::model::{Activity, ActivityStatus, Instance, LifecycleState, ScalingGroup, Trigger};

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
