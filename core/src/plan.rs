//! The reconcile loop's decisions, as plain functions of what it read: the
//! next step for each instance, whether the group's capacity must move and
//! how, and when the activity doing it is done. The engine reads, asks
//! here, writes the step, then acts.

use crate::decide::capacity;
use crate::model::attachments::AttachPhase;
use crate::model::hooks::Transition;
use crate::model::{CreationType, GroupState, Instance, LifecycleState, ScalingGroup, Trigger};

/// A Pending record the provider does not know after this long is a launch
/// the controller never got to start (it crashed in between).
pub const UNKNOWN_PENDING_GRACE_MS: i64 = 10_000;

/// What the reconcile loop knows of one instance beyond its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceFacts {
    /// The provider's word on an instance ebb created: alive, gone (its
    /// processes exited), or unknown to it.
    pub provider: Option<bool>,
    /// Its agent's stream is up.
    pub connected: bool,
}

/// The next step for one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStep {
    /// Nothing to do now.
    Hold,
    /// Removing: release it if ebb created it, then drop the record.
    Finish,
    /// Removing:Wait: advance its SCALE_IN hook waits; when they are
    /// decided, or `gone` (its processes exited, nothing left to drain),
    /// it becomes Removing and is finished.
    AdvanceRemovalWaits { gone: bool },
    /// Its processes are gone: forget it, and launch a replacement.
    Vanished,
    /// Pending:Wait: advance its SCALE_OUT hook waits.
    AdvanceLaunchWaits,
    /// Pending and its agent connected: into its SCALE_OUT hooks' waits if
    /// the group has any, else into service.
    Connected { hooks: bool },
    /// Pending, never connected within the launch timeout of its launch
    /// returning (of its record's creation, if that was never recorded):
    /// release it.
    LaunchTimedOut,
    /// Pending and registering on the group's attachments: into service
    /// once every target confirms it, or the registration times out.
    AdvanceRegistration,
    /// Removing, and still draining from or leaving the group's load
    /// balancers: finished once that is done, at once when `gone`.
    AdvanceDrain { gone: bool },
}

/// The next step for `inst` of `group`.
pub fn instance_step(
    group: &ScalingGroup,
    inst: &Instance,
    facts: InstanceFacts,
    launch_timeout_ms: i64,
    now_ms: i64,
) -> InstanceStep {
    let ours = inst.creation_type == CreationType::AutoCreated;
    match inst.lifecycle_state {
        LifecycleState::RemovingWait => InstanceStep::AdvanceRemovalWaits {
            gone: ours && facts.provider == Some(false),
        },
        LifecycleState::Removing if inst.attach_phase.is_some() => InstanceStep::AdvanceDrain {
            gone: ours && facts.provider == Some(false),
        },
        LifecycleState::Removing => InstanceStep::Finish,
        _ if ours && vanished(inst, facts, now_ms) => InstanceStep::Vanished,
        LifecycleState::PendingWait => InstanceStep::AdvanceLaunchWaits,
        LifecycleState::Pending
            if matches!(inst.attach_phase, Some(AttachPhase::Registering { .. })) =>
        {
            InstanceStep::AdvanceRegistration
        }
        LifecycleState::Pending if facts.connected => InstanceStep::Connected {
            hooks: group.hooks_for(Transition::ScaleOut).next().is_some(),
        },
        LifecycleState::Pending
            if ours
                && now_ms - inst.launched_at_ms.unwrap_or(inst.created_at_ms)
                    > launch_timeout_ms =>
        {
            InstanceStep::LaunchTimedOut
        }
        _ => InstanceStep::Hold,
    }
}

/// Whether an instance ebb created is gone: the provider says its processes
/// exited, or does not know it (a Pending one gets a grace: its launch may
/// not have started yet).
fn vanished(inst: &Instance, facts: InstanceFacts, now_ms: i64) -> bool {
    match facts.provider {
        Some(alive) => !alive,
        None => {
            inst.lifecycle_state != LifecycleState::Pending
                || now_ms - inst.created_at_ms > UNKNOWN_PENDING_GRACE_MS
        }
    }
}

/// How the group's capacity must move now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapacityStep {
    /// It holds its desired capacity, or may not act now.
    Hold,
    /// Launch this many.
    Launch(u32),
    /// Remove this many (the removal policies pick which).
    Remove(u32),
}

/// Whether and how far to move the group's capacity. `running` says an
/// activity is in progress (a disabled group finishes it); `backing_off`
/// that launches failed and the loop waits before trying again.
pub fn capacity_step(
    group: &ScalingGroup,
    instances: &[Instance],
    running: bool,
    backing_off: bool,
) -> CapacityStep {
    let count = capacity(instances);
    let acting = group.state != GroupState::Inactive || running;
    if !acting || backing_off {
        return CapacityStep::Hold;
    }
    match count.cmp(&group.desired_capacity) {
        std::cmp::Ordering::Less => CapacityStep::Launch(group.desired_capacity - count),
        std::cmp::Ordering::Greater => CapacityStep::Remove(count - group.desired_capacity),
        std::cmp::Ordering::Equal => CapacityStep::Hold,
    }
}

/// The trigger and cause of an activity the loop starts by itself to
/// converge: after health replacements (`notes` say why), or to bounds.
pub fn convergence_cause(group: &ScalingGroup, count: u32, notes: &[String]) -> (Trigger, String) {
    let desired = group.desired_capacity;
    if notes.is_empty() {
        (
            Trigger::Bounds,
            format!(
                "the group holds {count} instances but its desired capacity is {desired}, changing the Total Capacity from {count} to {desired}"
            ),
        )
    } else {
        (
            Trigger::Health,
            format!(
                "{}; launching replacements to hold the Total Capacity at {desired}",
                notes.join("; ")
            ),
        )
    }
}

/// Whether the activity converging `group` is done: the group holds its
/// desired capacity (or is stuck above it with nothing removable), with
/// nothing still launching or leaving.
pub fn activity_done(group: &ScalingGroup, instances: &[Instance]) -> bool {
    let count = capacity(instances);
    let launching = instances.iter().any(|i| {
        matches!(
            i.lifecycle_state,
            LifecycleState::Pending | LifecycleState::PendingWait
        ) && i.creation_type == CreationType::AutoCreated
    });
    let removing = instances.iter().any(|i| !i.counts());
    let stuck = count > group.desired_capacity && !instances.iter().any(Instance::removable);
    (count == group.desired_capacity || stuck) && !launching && !removing
}

#[cfg(test)]
mod tests;
