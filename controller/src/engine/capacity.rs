//! Capacity changes asked for by hand (ModifyScalingGroup, Enable, bounds),
//! and the check every change of desired capacity makes against a suspended
//! `ScaleOut` or `ScaleIn`.

use std::cmp::Ordering;

use crate::engine::{Engine, EngineError, activity};
use crate::store::Write;
use ebb_core::decide::{Refusal, capacity};
use ebb_core::model::{Activity, GroupState, Process, ScalingGroup, Trigger};

/// The suspended process a change of desired capacity from `old_desired`
/// to `new_desired` needs, with the group holding `current` instances: a
/// scale-out takes the group above both where it is and where it was
/// heading, a scale-in below both. A change that only shortens a move
/// already under way (2 instances heading for 5, now for 4) needs neither.
pub(crate) fn suspended_for(
    group: &ScalingGroup,
    current: u32,
    old_desired: u32,
    new_desired: u32,
) -> Option<Process> {
    let process = match (new_desired.cmp(&current), new_desired.cmp(&old_desired)) {
        (Ordering::Greater, Ordering::Greater) => Process::ScaleOut,
        (Ordering::Less, Ordering::Less) => Process::ScaleIn,
        _ => return None,
    };
    group
        .suspended_processes
        .contains(&process)
        .then_some(process)
}

/// When setting `group`'s desired capacity to `new_desired` needs a
/// suspended process (see [`suspended_for`]), records the Rejected activity
/// (from `current` instances to `to`), with the sentence `decide` gives a
/// rule run, and returns it.
pub(crate) fn reject_if_suspended(
    engine: &Engine,
    group: &ScalingGroup,
    current: u32,
    new_desired: u32,
    to: u32,
    trigger: Trigger,
    what: &str,
) -> Result<Option<Activity>, EngineError> {
    let Some(process) = suspended_for(group, current, group.desired_capacity, new_desired) else {
        return Ok(None);
    };
    let act = activity::rejected(
        group,
        current,
        to,
        trigger,
        activity::cause(what, current, to),
        Refusal::Suspended(process).to_string(),
        engine.clock.now_ms(),
    );
    engine.record_rejection(group, act).map(Some)
}

/// What the caller of a rejected change is told.
pub(crate) fn rejection(act: &Activity) -> EngineError {
    EngineError::Refused(format!(
        "{}; the change was rejected (activity {})",
        act.error.as_deref().unwrap_or("refused"),
        act.id
    ))
}

/// Writes `group` with a new desired capacity and the activity that
/// moves it there (superseding a running one), or a Rejected activity
/// when the group is not Active or the direction's process is suspended.
/// `extra` is written with the group, or not at all. Returns the activity
/// id, or None when capacity does not change.
pub(crate) fn change_capacity(
    engine: &Engine,
    mut group: ScalingGroup,
    old: &ScalingGroup,
    trigger: Trigger,
    what: &str,
    extra: Vec<Write>,
) -> Result<(ScalingGroup, Option<String>), EngineError> {
    let now = engine.clock.now_ms();
    let store = &engine.store;
    let current = capacity(&store.list_instances(Some(&group.id))?);
    let moves = group.desired_capacity != old.desired_capacity;
    let mut writes = vec![Write::UpdateGroup(group.clone())];
    writes.extend(extra);
    if !moves {
        store.commit(writes)?;
        return Ok((group, None));
    }
    let cause = activity::cause(what, current, group.desired_capacity);
    if group.state != GroupState::Active {
        // Disabled groups keep bounds changes but never move capacity.
        if trigger == Trigger::Bounds {
            // Still a change of desired: the suspended process holds it
            // too, or enabling the group would carry it out.
            if let Some(act) = reject_if_suspended(
                engine,
                old,
                current,
                group.desired_capacity,
                group.desired_capacity,
                trigger,
                what,
            )? {
                return Err(rejection(&act));
            }
            store.commit(writes)?;
            return Ok((group, None));
        }
        let refusal = Refusal::NotActive {
            group: group.name.clone(),
            state: group.state,
        };
        let act = activity::rejected(
            &group,
            current,
            group.desired_capacity,
            trigger,
            cause,
            refusal.to_string(),
            now,
        );
        let act = engine.record_rejection(&group, act)?;
        return Err(rejection(&act));
    }
    if let Some(act) = reject_if_suspended(
        engine,
        old,
        current,
        group.desired_capacity,
        group.desired_capacity,
        trigger,
        what,
    )? {
        return Err(rejection(&act));
    }
    let act = activity::start(&group, current, group.desired_capacity, trigger, cause, now);
    let act = engine.begin_activity(&group, act, writes)?;
    group.desired_capacity = act.capacity_to;
    Ok((group, Some(act.id)))
}
