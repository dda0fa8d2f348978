//! Capacity changes asked for by hand (ModifyScalingGroup, Enable, bounds).

use crate::api::common::{now_ms, store_status};
use crate::engine::{Engine, activity};
use crate::store::Write;
use ebb_core::decide::capacity;
use ebb_core::model::{GroupState, ScalingGroup, Trigger};
use tonic::Status;
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
) -> Result<(ScalingGroup, Option<String>), Status> {
    let now = now_ms(engine);
    let store = &engine.store;
    let current = capacity(
        &store
            .list_instances(Some(&group.id))
            .map_err(store_status)?,
    );
    let moves = group.desired_capacity != old.desired_capacity;
    if !moves {
        store
            .commit(vec![Write::UpdateGroup(group.clone())])
            .map_err(store_status)?;
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
            store
                .commit(vec![Write::UpdateGroup(group.clone())])
                .map_err(store_status)?;
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
        store
            .commit(vec![Write::PutActivity(act.clone())])
            .map_err(store_status)?;
        info!(group = %group.name, activity = %act.id, "rejected: {reason}");
        return Err(Status::failed_precondition(format!(
            "{reason}; the change was rejected (activity {})",
            act.id
        )));
    }
    let act = activity::start(&group, current, group.desired_capacity, trigger, cause, now);
    let mut writes = vec![Write::UpdateGroup(group.clone())];
    if let Some(mut prev) = engine.running_activity(&group.id).map_err(store_status)? {
        activity::supersede(&mut prev, &act.id, now);
        writes.push(Write::PutActivity(prev));
    }
    writes.push(Write::PutActivity(act.clone()));
    store.commit(writes).map_err(store_status)?;
    info!(group = %group.name, activity = %act.id, "{}", act.cause);
    group.desired_capacity = act.capacity_to;
    engine.wake();
    Ok((group, Some(act.id)))
}
