//! Capacity changes asked for by hand (ModifyScalingGroup, Enable, bounds).

use crate::engine::{Engine, EngineError, activity};
use crate::store::Write;
use ebb_core::decide::capacity;
use ebb_core::model::{GroupState, ScalingGroup, Trigger};
use tracing::info;

/// Writes `group` with a new desired capacity and the activity that
/// moves it there (superseding a running one), or a Rejected activity
/// when the group is not Active. Returns the activity id, or None when
/// capacity does not change.
pub(crate) fn change_capacity(
    engine: &Engine,
    mut group: ScalingGroup,
    old: &ScalingGroup,
    trigger: Trigger,
    what: &str,
) -> Result<(ScalingGroup, Option<String>), EngineError> {
    let now = engine.clock.now_ms();
    let store = &engine.store;
    let current = capacity(&store.list_instances(Some(&group.id))?);
    let moves = group.desired_capacity != old.desired_capacity;
    if !moves {
        store.commit(vec![Write::UpdateGroup(group.clone())])?;
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
            store.commit(vec![Write::UpdateGroup(group.clone())])?;
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
        store.commit(vec![Write::PutActivity(act.clone())])?;
        info!(group = %group.name, activity = %act.id, "rejected: {reason}");
        return Err(EngineError::Refused(format!(
            "{reason}; the change was rejected (activity {})",
            act.id
        )));
    }
    let act = activity::start(&group, current, group.desired_capacity, trigger, cause, now);
    let mut writes = vec![Write::UpdateGroup(group.clone())];
    if let Some(mut prev) = engine.running_activity(&group.id)? {
        activity::supersede(&mut prev, &act.id, now);
        writes.push(Write::PutActivity(prev));
    }
    writes.push(Write::PutActivity(act.clone()));
    store.commit(writes)?;
    info!(group = %group.name, activity = %act.id, "{}", act.cause);
    group.desired_capacity = act.capacity_to;
    engine.wake();
    Ok((group, Some(act.id)))
}
