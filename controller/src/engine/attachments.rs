//! Attachments on the engine's side (DESIGN §4): every pass publishes
//! each target agent's desired members from the store; instances on their
//! way in wait in `Registering` until every target confirms them, and
//! instances on their way out drain, then leave every load balancer,
//! before they are released. Each phase is written to the instance first,
//! so a restarted controller goes on where it stopped.

use std::collections::HashMap;

use ebb_core::model::attachments::{AttachPhase, Membership, allowed, load_balancer_membership};
use ebb_core::model::hooks::Transition;
use ebb_core::model::{Activity, Instance, LifecycleState, ScalingGroup};
use ebb_proto::v1::{AllowList, LoadBalancerMembers, Member, MemberState};
use tracing::{info, warn};

use super::{Engine, EngineError, activity, hooks};
use crate::fleet::targets::{Desired, MemberView};
use crate::store::Write;

/// A target that has not confirmed a new instance by then is noted on the
/// activity (Warning), and the instance goes InService all the same.
pub const REGISTRATION_TIMEOUT_MS: i64 = 60_000;
/// A drained instance waits at most this long for its load balancers to
/// drop its server before it is released anyway.
pub const DEREGISTRATION_TIMEOUT_MS: i64 = 30_000;
/// A detached load balancer whose target never confirms is dropped after this.
pub const DETACH_TIMEOUT_MS: i64 = 60_000;

fn member_state(m: Membership) -> MemberState {
    match m {
        Membership::Ready => MemberState::Ready,
        Membership::Drain => MemberState::Drain,
        Membership::Maint => MemberState::Maint,
    }
}

/// Puts an instance on its way out: into its SCALE_IN hooks' wait or
/// Removing, and draining from the group's load balancers if it was ever
/// on them.
pub fn start_leaving(group: &ScalingGroup, inst: &mut Instance, now: i64) {
    let registered = inst.in_service_at_ms.is_some()
        || matches!(inst.attach_phase, Some(AttachPhase::Registering { .. }));
    if !hooks::enter_wait(group, inst, Transition::ScaleIn, now) {
        inst.lifecycle_state = LifecycleState::Removing;
    }
    inst.attach_phase =
        (group.drains() && registered).then_some(AttachPhase::Draining { since_ms: now });
}

fn seconds(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl Engine {
    /// Computes every target's desired state from the groups and their
    /// instances and hands it to the targets' streams; drops detached load
    /// balancers their target has emptied (or that timed out).
    pub(super) fn publish_targets(&self, now: i64) -> Result<(), EngineError> {
        let mut all: HashMap<String, Desired> = HashMap::new();
        for mut group in self.store.list_groups()? {
            if group.load_balancers.is_empty() && group.db_instances.is_empty() {
                continue;
            }
            let before = group.load_balancers.len();
            group.load_balancers.retain(|l| {
                let Some(since) = l.detaching_since_ms else {
                    return true;
                };
                let id = l.attachment_id(&group.id);
                if self.fleet.targets.emptied(&l.target, &id) {
                    info!(group = %group.name, target = %l.target, backend = %l.backend, "load balancer detached: its target removed every server");
                    return false;
                }
                if now - since > DETACH_TIMEOUT_MS {
                    warn!(group = %group.name, target = %l.target, backend = %l.backend, "load balancer detached without its target's confirmation; it converges when its agent reconnects");
                    return false;
                }
                true
            });
            if group.load_balancers.len() != before {
                self.store.commit(vec![Write::UpdateGroup(group.clone())])?;
            }
            let instances = self.store.list_instances(Some(&group.id))?;
            for lb in &group.load_balancers {
                let members = if lb.is_detaching() {
                    Vec::new()
                } else {
                    instances
                        .iter()
                        .filter_map(|i| {
                            let m = load_balancer_membership(i, self.agent_lost(&i.id, now))?;
                            Some(Member {
                                instance_id: i.id.clone(),
                                address: i.address.clone()?,
                                port: u32::from(lb.port),
                                weight: lb.weight,
                                state: member_state(m) as i32,
                            })
                        })
                        .collect()
                };
                all.entry(lb.target.clone())
                    .or_default()
                    .load_balancers
                    .push(LoadBalancerMembers {
                        attachment_id: lb.attachment_id(&group.id),
                        backend: lb.backend.clone(),
                        members,
                    });
            }
            for db in &group.db_instances {
                let members = instances
                    .iter()
                    .filter(|i| allowed(i))
                    .filter_map(|i| {
                        Some(Member {
                            instance_id: i.id.clone(),
                            address: i.address.clone()?,
                            ..Default::default()
                        })
                    })
                    .collect();
                all.entry(db.target.clone())
                    .or_default()
                    .allow_lists
                    .push(AllowList {
                        attachment_id: db.attachment_id(&group.id),
                        database: db.database.clone(),
                        user: db.user.clone(),
                        auth_method: db.auth_method.clone(),
                        members,
                    });
            }
        }
        self.fleet.targets.set_desired(all);
        Ok(())
    }

    /// Whether an instance's agent is known to be gone: its stream dropped,
    /// or it has not connected within the reconnect grace of this
    /// controller's start (a restart is not a mass failure, and must not
    /// take every server out of its load balancer).
    fn agent_lost(&self, id: &str, now: i64) -> bool {
        match self.fleet.with_agent(id, |a| a.connected) {
            Some(connected) => !connected,
            None => now - self.started_at_ms() > self.health.reconnect_grace.as_millis() as i64,
        }
    }

    /// Every attachment of the group and what its target says of `inst`,
    /// named `<target>/<backend>` or `<target>/<database>/<user>`.
    pub(crate) fn attachment_views(
        &self,
        group: &ScalingGroup,
        inst: &Instance,
    ) -> Vec<(String, MemberView, bool)> {
        let lbs = group.active_load_balancers().map(|l| {
            (
                format!("{}/{}", l.target, l.backend),
                self.fleet
                    .targets
                    .member(&l.target, &l.attachment_id(&group.id), &inst.id),
                true,
            )
        });
        let dbs = group.db_instances.iter().map(|d| {
            (
                format!("{}/{}", d.target, d.name()),
                self.fleet
                    .targets
                    .member(&d.target, &d.attachment_id(&group.id), &inst.id),
                false,
            )
        });
        lbs.chain(dbs).collect()
    }

    /// Where an instance is headed once it may serve: registering on the
    /// group's attachments, or straight into service.
    pub(super) fn enter_service(
        &self,
        group: &ScalingGroup,
        mut inst: Instance,
        now: i64,
    ) -> Result<(), EngineError> {
        if !group.has_attachments() {
            return self.put_in_service(group, inst, now);
        }
        if inst.address.is_none() {
            inst.address = self.fleet.address(&inst.id);
        }
        // Out of Pending:Wait, if its SCALE_OUT hooks held it there.
        inst.lifecycle_state = LifecycleState::Pending;
        inst.hook_waits.clear();
        inst.attach_phase = Some(AttachPhase::Registering { since_ms: now });
        self.store.commit(vec![Write::PutInstance(inst.clone())])?;
        info!(group = %group.name, instance = %inst.id, address = ?inst.address, "instance registering on the group's load balancers and allow-lists");
        self.wake();
        Ok(())
    }

    /// One step of a registering instance: InService once every
    /// attachment's target holds it (a load balancer's server ready, and
    /// UP if the backend checks), or after the registration timeout with
    /// the activity noting which did not confirm and why.
    pub(super) fn advance_registration(
        &self,
        group: &ScalingGroup,
        inst: Instance,
        now: i64,
        running: Option<&mut Activity>,
    ) -> Result<(), EngineError> {
        let since = inst.attach_phase.map_or(now, AttachPhase::since_ms);
        let waiting: Vec<String> = self
            .attachment_views(group, &inst)
            .into_iter()
            .filter(|(_, v, lb)| !registered(v, *lb))
            .map(|(name, v, _)| format!("{name} ({})", v.why_not()))
            .collect();
        if waiting.is_empty() {
            let line = format!(
                "instance {} registered on every attachment in {}",
                inst.id,
                seconds(now - since)
            );
            self.note(&inst, running, &line, false, now)?;
            return self.put_in_service(group, inst, now);
        }
        if now - since < REGISTRATION_TIMEOUT_MS {
            return Ok(());
        }
        let line = format!(
            "instance {} went InService without the confirmation of {} within {}",
            inst.id,
            waiting.join(", "),
            seconds(REGISTRATION_TIMEOUT_MS)
        );
        warn!(group = %group.name, "{line}");
        self.note(&inst, running, &line, true, now)?;
        self.put_in_service(group, inst, now)
    }

    /// One step of a leaving instance's drain: Draining until its load
    /// balancers report no sessions on it (or its drain timeout), then
    /// Deregistering until they dropped it (or a timeout). Returns whether
    /// it is done and may be released; each change is written.
    pub(super) fn advance_drain(
        &self,
        group: &ScalingGroup,
        inst: &mut Instance,
        now: i64,
        running: Option<&mut Activity>,
    ) -> Result<bool, EngineError> {
        let views = || {
            self.attachment_views(group, inst)
                .into_iter()
                .filter(|(_, _, lb)| *lb)
                .collect::<Vec<_>>()
        };
        let next = match inst.attach_phase {
            None => return Ok(true),
            Some(AttachPhase::Registering { .. }) => Some(AttachPhase::Draining { since_ms: now }),
            Some(AttachPhase::Draining { since_ms: since }) => {
                let idle = views().iter().all(|(_, v, _)| drained(v));
                let timed_out = now - since >= group.drain_timeout_ms();
                if !idle && !timed_out {
                    return Ok(false);
                }
                let why = if idle {
                    "no sessions left"
                } else {
                    "drain timeout"
                };
                let line = format!(
                    "instance {} drained in {} ({why}); deregistering",
                    inst.id,
                    seconds(now - since)
                );
                info!(group = %group.name, "{line}");
                self.note(inst, running, &line, false, now)?;
                Some(AttachPhase::Deregistering { since_ms: now })
            }
            Some(AttachPhase::Deregistering { since_ms: since }) => {
                let left: Vec<String> = views()
                    .into_iter()
                    .filter(|(_, v, _)| !deregistered(v))
                    .map(|(name, v, _)| format!("{name} ({})", v.why_not()))
                    .collect();
                if left.is_empty() {
                    let line = format!(
                        "instance {} deregistered in {}",
                        inst.id,
                        seconds(now - since)
                    );
                    self.note(inst, running, &line, false, now)?;
                } else if now - since >= DEREGISTRATION_TIMEOUT_MS {
                    let line = format!(
                        "instance {} released while still on {}",
                        inst.id,
                        left.join(", ")
                    );
                    warn!(group = %group.name, "{line}");
                    self.note(inst, running, &line, true, now)?;
                } else {
                    return Ok(false);
                }
                None
            }
        };
        inst.attach_phase = next;
        self.store.commit(vec![Write::PutInstance(inst.clone())])?;
        self.wake();
        Ok(next.is_none())
    }

    /// Adds a line to the activity that moves `inst` (the running one when
    /// it is that), as an error (the activity ends as Warning) or a detail.
    fn note(
        &self,
        inst: &Instance,
        running: Option<&mut Activity>,
        line: &str,
        error: bool,
        now: i64,
    ) -> Result<(), EngineError> {
        let at = jiff::Timestamp::from_millisecond(now)
            .map_or_else(|_| now.to_string(), |t| t.strftime("%H:%M:%S").to_string());
        let stamped = format!("{at}: {line}");
        let record = |act: &mut Activity| {
            if error {
                activity::note_error(act, line);
            }
            act.details.push(stamped.clone());
        };
        match (running, &inst.activity_id) {
            (Some(act), Some(id)) if &act.id == id => {
                record(act);
                self.store.commit(vec![Write::PutActivity(act.clone())])?;
            }
            (_, Some(id)) => {
                if let Some(mut act) = self.store.get_activity(id)? {
                    record(&mut act);
                    self.store.commit(vec![Write::PutActivity(act)])?;
                }
            }
            (_, None) => {}
        }
        Ok(())
    }
}

/// A target holds the member as a server taking traffic (UP, when its
/// backend checks), or its allow-list holds the address.
fn registered(v: &MemberView, load_balancer: bool) -> bool {
    v.connected
        && v.attachment_error.is_empty()
        && v.member.as_ref().is_some_and(|m| {
            m.error.is_empty()
                && (!load_balancer || (m.state == MemberState::Ready as i32 && m.up != Some(false)))
        })
}

/// The load balancer drains the server and reports no sessions on it, or
/// holds no such server at all.
fn drained(v: &MemberView) -> bool {
    v.connected
        && v.caught_up
        && v.member
            .as_ref()
            .is_none_or(|m| m.state == MemberState::Drain as i32 && m.current_sessions == 0)
}

/// The load balancer no longer holds the server; a target that is not
/// connected drops it when it reconnects (its state no longer has it).
fn deregistered(v: &MemberView) -> bool {
    !v.connected || (v.caught_up && v.member.is_none())
}
