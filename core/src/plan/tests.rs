use super::*;
use crate::model::hooks::{HookSpec, LifecycleHook};
use crate::model::{GroupSpec, HealthStatus};

const NOW: i64 = 1_700_000_000_000;
const TIMEOUT: i64 = 60_000;

fn group(desired: u32) -> ScalingGroup {
    let spec = GroupSpec {
        name: Some("web".into()),
        min_size: Some(0),
        max_size: Some(10),
        desired_capacity: Some(desired),
        ..Default::default()
    };
    let mut g = ScalingGroup::create("asg-1".into(), &spec, 0).unwrap();
    g.state = GroupState::Active;
    g
}

fn with_scale_out_hook(mut g: ScalingGroup) -> ScalingGroup {
    let spec = HookSpec {
        name: "warm".into(),
        transition: "SCALE_OUT".into(),
        ..Default::default()
    };
    g.lifecycle_hooks
        .push(LifecycleHook::create("ash-1".into(), &spec, &[], 0).unwrap());
    g
}

fn inst(id: &str, state: LifecycleState, creation: CreationType, created_ago_ms: i64) -> Instance {
    Instance {
        id: id.into(),
        group_id: "asg-1".into(),
        configuration_id: None,
        lifecycle_state: state,
        health_status: HealthStatus::Healthy,
        creation_type: creation,
        address: None,
        created_at_ms: NOW - created_ago_ms,
        in_service_at_ms: None,
        activity_id: None,
        hook_waits: Vec::new(),
        attach_phase: None,
        provider_id: None,
        provider_address: None,
        launched_at_ms: None,
    }
}

fn facts(provider: Option<bool>, connected: bool) -> InstanceFacts {
    InstanceFacts {
        provider,
        connected,
    }
}

#[test]
fn each_instance_gets_its_next_step() {
    use CreationType::{Attached, AutoCreated};
    use InstanceStep::*;
    use LifecycleState::*;
    let alive = facts(Some(true), true);
    let gone = facts(Some(false), false);
    let unknown = facts(None, false);
    let cases = [
        ("in service, alive", InService, AutoCreated, 0, alive, Hold),
        (
            "in service, processes gone",
            InService,
            AutoCreated,
            0,
            gone,
            Vanished,
        ),
        (
            "in service, unknown to the provider",
            InService,
            AutoCreated,
            0,
            unknown,
            Vanished,
        ),
        (
            "attached: the provider's word does not count",
            InService,
            Attached,
            0,
            gone,
            Hold,
        ),
        ("standby, gone", Standby, AutoCreated, 0, gone, Vanished),
        ("removing", Removing, AutoCreated, 0, alive, Finish),
        (
            "removing, already gone",
            Removing,
            AutoCreated,
            0,
            gone,
            Finish,
        ),
        ("removing attached", Removing, Attached, 0, alive, Finish),
        (
            "draining",
            RemovingWait,
            AutoCreated,
            0,
            alive,
            AdvanceRemovalWaits { gone: false },
        ),
        (
            "draining, gone",
            RemovingWait,
            AutoCreated,
            0,
            gone,
            AdvanceRemovalWaits { gone: true },
        ),
        (
            "draining attached",
            RemovingWait,
            Attached,
            0,
            gone,
            AdvanceRemovalWaits { gone: false },
        ),
        (
            "pending, launching, not yet known",
            Pending,
            AutoCreated,
            1_000,
            unknown,
            Hold,
        ),
        (
            "pending, never started",
            Pending,
            AutoCreated,
            UNKNOWN_PENDING_GRACE_MS + 1,
            unknown,
            Vanished,
        ),
        (
            "pending, not connected yet",
            Pending,
            AutoCreated,
            1_000,
            facts(Some(true), false),
            Hold,
        ),
        (
            "pending, connected",
            Pending,
            AutoCreated,
            1_000,
            alive,
            Connected { hooks: false },
        ),
        (
            "pending, never connected",
            Pending,
            AutoCreated,
            TIMEOUT + 1,
            facts(Some(true), false),
            LaunchTimedOut,
        ),
        (
            "pending attached never times out",
            Pending,
            Attached,
            TIMEOUT + 1,
            facts(None, false),
            Hold,
        ),
        (
            "waiting on hooks",
            PendingWait,
            AutoCreated,
            0,
            alive,
            AdvanceLaunchWaits,
        ),
        (
            "waiting on hooks, gone",
            PendingWait,
            AutoCreated,
            0,
            gone,
            Vanished,
        ),
    ];
    let g = group(1);
    for (name, state, creation, ago, facts, want) in cases {
        let i = inst("i-1", state, creation, ago);
        assert_eq!(instance_step(&g, &i, facts, TIMEOUT, NOW), want, "{name}");
    }
    // The launch time-out counts from the provider's launch returning: a
    // slow launch (an exec script retrying) is not the agent's time.
    let mut slow = inst("i-1", Pending, AutoCreated, 3 * TIMEOUT);
    slow.launched_at_ms = Some(NOW - 1_000);
    let waiting = facts(Some(true), false);
    assert_eq!(instance_step(&g, &slow, waiting, TIMEOUT, NOW), Hold);
    slow.launched_at_ms = Some(NOW - TIMEOUT - 1);
    assert_eq!(
        instance_step(&g, &slow, waiting, TIMEOUT, NOW),
        LaunchTimedOut
    );
    // A connected instance goes through the group's SCALE_OUT hooks.
    let hooked = with_scale_out_hook(group(1));
    let i = inst("i-1", Pending, AutoCreated, 1_000);
    assert_eq!(
        instance_step(&hooked, &i, alive, TIMEOUT, NOW),
        Connected { hooks: true }
    );
}

#[test]
fn capacity_moves_towards_desired_when_the_group_may_act() {
    use CapacityStep::*;
    let two: Vec<Instance> = (0..2)
        .map(|n| {
            inst(
                &format!("i-{n}"),
                LifecycleState::InService,
                CreationType::AutoCreated,
                0,
            )
        })
        .collect();
    let inactive = |mut g: ScalingGroup| {
        g.state = GroupState::Inactive;
        g
    };
    let cases = [
        ("holds", group(2), false, false, Hold),
        ("short", group(5), false, false, Launch(3)),
        ("over", group(1), false, false, Remove(1)),
        (
            "backing off after failed launches",
            group(5),
            false,
            true,
            Hold,
        ),
        (
            "inactive: nothing moves",
            inactive(group(5)),
            false,
            false,
            Hold,
        ),
        (
            "inactive finishes its running activity",
            inactive(group(5)),
            true,
            false,
            Launch(3),
        ),
    ];
    for (name, g, running, backing_off, want) in cases {
        assert_eq!(
            capacity_step(&g, &two, running, backing_off),
            want,
            "{name}"
        );
    }
    // Instances on their way out do not count.
    let mut leaving = two.clone();
    leaving[1].lifecycle_state = LifecycleState::Removing;
    assert_eq!(capacity_step(&group(2), &leaving, false, false), Launch(1));
}

#[test]
fn an_activity_is_done_when_nothing_launches_or_leaves() {
    use CreationType::*;
    use LifecycleState::*;
    let g = group(2);
    let at = |states: &[(LifecycleState, CreationType)]| -> Vec<Instance> {
        states
            .iter()
            .enumerate()
            .map(|(n, (s, c))| inst(&format!("i-{n}"), *s, *c, 0))
            .collect()
    };
    assert!(activity_done(
        &g,
        &at(&[(InService, AutoCreated), (InService, Attached)])
    ));
    assert!(
        !activity_done(&g, &at(&[(InService, AutoCreated)])),
        "one short"
    );
    assert!(
        !activity_done(&g, &at(&[(InService, AutoCreated), (Pending, AutoCreated)])),
        "still launching"
    );
    assert!(
        !activity_done(
            &g,
            &at(&[
                (InService, AutoCreated),
                (InService, AutoCreated),
                (Removing, AutoCreated)
            ])
        ),
        "still leaving"
    );
    // Above desired with nothing removable (Standby, Protected): stuck, done.
    assert!(activity_done(
        &g,
        &at(&[
            (Standby, AutoCreated),
            (Protected, AutoCreated),
            (Standby, AutoCreated)
        ])
    ));
}

#[test]
fn a_convergence_says_why_it_started() {
    let g = group(3);
    assert_eq!(
        convergence_cause(&g, 1, &[]),
        (
            Trigger::Bounds,
            "the group holds 1 instances but its desired capacity is 3, changing the Total Capacity from 1 to 3".into()
        )
    );
    let (trigger, cause) = convergence_cause(&g, 2, &["instance i-1 vanished".into()]);
    assert_eq!(trigger, Trigger::Health);
    assert_eq!(
        cause,
        "instance i-1 vanished; launching replacements to hold the Total Capacity at 3"
    );
}

#[test]
fn attachment_phases_take_their_own_steps() {
    use CreationType::AutoCreated;
    use LifecycleState::*;
    let g = group(1);
    let mut registering = inst("i-1", Pending, AutoCreated, 1_000);
    registering.attach_phase = Some(AttachPhase::Registering { since_ms: NOW });
    // Registering, connected or not: the registration decides.
    for connected in [true, false] {
        assert_eq!(
            instance_step(&g, &registering, facts(Some(true), connected), TIMEOUT, NOW),
            InstanceStep::AdvanceRegistration
        );
    }
    // Its processes gone: replaced like any vanished instance.
    assert_eq!(
        instance_step(&g, &registering, facts(Some(false), false), TIMEOUT, NOW),
        InstanceStep::Vanished
    );
    let mut draining = inst("i-2", Removing, AutoCreated, 1_000);
    draining.attach_phase = Some(AttachPhase::Draining { since_ms: NOW });
    assert_eq!(
        instance_step(&g, &draining, facts(Some(true), true), TIMEOUT, NOW),
        InstanceStep::AdvanceDrain { gone: false }
    );
    assert_eq!(
        instance_step(&g, &draining, facts(Some(false), false), TIMEOUT, NOW),
        InstanceStep::AdvanceDrain { gone: true }
    );
    draining.attach_phase = None;
    assert_eq!(
        instance_step(&g, &draining, facts(Some(true), true), TIMEOUT, NOW),
        InstanceStep::Finish
    );
}
