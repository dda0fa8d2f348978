//! Running a rule: read the group's snapshot, `decide`, and write what it
//! decided (a Rejected activity, or the new desired capacity and its activity).

use crate::engine::{Engine, EngineError, activity};
use crate::store::Write;
use ebb_core::decide::{Decision, RuleRun, decide, hold_at_floor};
use ebb_core::model::{Activity, ScalingGroup};
use ebb_core::rules::RuleKind;

/// Runs a rule: records a Rejected activity, or raises/lowers desired and
/// starts the activity the reconcile loop carries out.
pub(crate) fn run_rule(
    engine: &Engine,
    group: &ScalingGroup,
    kind: &RuleKind,
    run: &RuleRun,
) -> Result<Activity, EngineError> {
    let now = engine.clock.now_ms();
    let snap = engine.snapshot(group)?;
    let d = decide(kind, run, &snap.view(group), now);
    commit_decision(engine, group, d, run, now)
}

/// Writes a decision: a Rejected activity, or the new desired capacity and
/// the activity that carries it out.
pub(crate) fn commit_decision(
    engine: &Engine,
    group: &ScalingGroup,
    d: Decision,
    run: &RuleRun,
    now: i64,
) -> Result<Activity, EngineError> {
    let floor = engine.predictive.floor(&group.id, now);
    let d = hold_at_floor(d, floor.as_ref().map(|(rule, f)| (rule.as_str(), *f)));
    let cause = activity::cause(&run.what, d.from, d.to);
    if let Some(refusal) = d.refusal {
        let reason = refusal.to_string();
        let mut act =
            activity::rejected(group, d.from, d.to, run.trigger, cause, reason.clone(), now);
        act.details = d.details;
        act.details.push(format!("blocked: {reason}"));
        return engine.record_rejection(group, act);
    }
    let mut updated = group.clone();
    updated.desired_capacity = d.to;
    let mut act = activity::start(group, d.from, d.to, run.trigger, cause, now);
    act.details = d.details;
    engine.begin_activity(group, act, vec![Write::UpdateGroup(updated)])
}
