//! Whether and how far a rule run moves a group's capacity: a plain function
//! of the rule, why it runs, a snapshot of the group and `now`. The engine
//! reads the snapshot, calls [`decide`] and writes what it returns; the
//! simulator calls the same function.
//!
//! The rejection order (DESIGN §4), first match wins:
//! 1. the rule cannot run with what it was given (no step covers the value,
//!    no metric value for a step or target-tracking rule, a predictive rule);
//! 2. the group is not Active;
//! 3. the process the direction needs (`ScaleOut`/`ScaleIn`) is suspended;
//! 4. an alarm ran it and `AlarmNotification` is suspended;
//! 5. an alarm ran it and another activity is in progress;
//! 6. an alarm ran it and the cooldown holds;
//! 7. the capacity would not change;
//! 8. an alarm's scale-in on incomplete data (unless `missing_data = breaching`).

use std::cmp::Ordering;
use std::fmt;

use crate::model::{GroupState, Instance, Process, ScalingGroup, Trigger};
use crate::rules::{
    AlarmSpec, Clamped, PeriodInput, RuleKind, ScalingRule, Stabilisation, TrackedFleet,
    capacity_after, cooldown_remaining, data_complete, matching_step, scale_in_allowed, stabilise,
    target_tracking_capacity,
};
use crate::time::rfc3339;

/// What the engine read of a group for one decision.
#[derive(Debug, Clone, Copy)]
pub struct GroupSnapshot<'a> {
    pub group: &'a ScalingGroup,
    pub instances: &'a [Instance],
    /// The id of the group's activity in progress, if any.
    pub running_activity: Option<&'a str>,
    /// When the cooldown started: the end of the latest activity that
    /// completed (`cooldown_start` of the recent activities).
    pub cooldown_start_ms: Option<i64>,
}

impl GroupSnapshot<'_> {
    /// Instances that count towards the group's capacity.
    pub fn capacity(&self) -> u32 {
        capacity(self.instances)
    }
}

/// Instances that count towards a group's capacity.
pub fn capacity(instances: &[Instance]) -> u32 {
    instances.iter().filter(|i| i.counts()).count() as u32
}

/// Why and how a rule runs.
#[derive(Debug, Clone)]
pub struct RuleRun {
    pub trigger: Trigger,
    /// The start of the cause sentence, e.g. "alarm `cpu-high` executed rule `add-2`".
    pub what: String,
    /// The metric value that breached (the alarm's statistic for the period).
    pub metric_value: Option<f64>,
    /// The threshold a step rule's bounds are relative to.
    pub threshold: Option<f64>,
    pub alarm: Option<AlarmRun>,
}

/// The alarm that ran a rule, and the period it judged.
#[derive(Debug, Clone)]
pub struct AlarmRun {
    pub spec: AlarmSpec,
    pub input: PeriodInput,
    pub explanation: String,
    /// A target-tracking rule's scale-in stabilisation window, read when
    /// its scale-in alarm ran it; `Off` for every other alarm.
    pub window: Stabilisation,
}

/// Why a run must not change capacity. `Display` gives the sentence users
/// see in the activity's `error` and `ebbctl`.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    NoStep {
        value: f64,
        threshold: f64,
    },
    StepNeedsMetric,
    TargetNeedsMetric,
    PredictiveNotRun,
    NotActive {
        group: String,
        state: GroupState,
    },
    Suspended(Process),
    ActivityRunning(String),
    Cooldown {
        until_ms: i64,
        secs: u32,
        last_end_ms: i64,
    },
    NoChange {
        current: u32,
    },
    IncompleteData {
        answered: usize,
        in_service: u32,
    },
    /// A predictive rule's floor stops the scale-in where it is.
    ForecastFloor {
        rule: String,
        floor: u32,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoStep { value, threshold } => write!(
                f,
                "no step of the rule covers the metric value {value:.2} against threshold {threshold:.2}"
            ),
            Refusal::StepNeedsMetric => f.write_str("a step rule needs a metric value and a threshold"),
            Refusal::TargetNeedsMetric => f.write_str(
                "target tracking runs from its alarms' metric; there is no metric value to act on",
            ),
            Refusal::PredictiveNotRun => f.write_str(
                "a predictive rule is not run directly: it sets the group's floor from its forecast \
                 every minute (see `ebbctl rule forecast`)",
            ),
            Refusal::ForecastFloor { rule, floor } => write!(
                f,
                "the predictive rule `{rule}` holds the group at or above {floor} (its forecast floor)"
            ),
            Refusal::NotActive { group, state } => {
                write!(f, "the scaling group {group} is not active ({state})")
            }
            Refusal::Suspended(p) => write!(f, "the {p} process of the group is suspended"),
            Refusal::ActivityRunning(id) => write!(f, "an activity is in progress ({id})"),
            Refusal::Cooldown {
                until_ms,
                secs,
                last_end_ms,
            } => write!(
                f,
                "the cooldown holds until {} ({secs} s after the last activity ended at {})",
                rfc3339(*until_ms),
                rfc3339(*last_end_ms)
            ),
            Refusal::NoChange { current } => {
                write!(f, "the total capacity will not change (it is {current})")
            }
            Refusal::IncompleteData {
                answered,
                in_service,
            } => write!(
                f,
                "a scale-in is never taken on incomplete data: {answered} of {in_service} in-service instances answered"
            ),
        }
    }
}

/// What running a rule would do, before anything is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub from: u32,
    pub to: u32,
    /// The inputs and arithmetic, one line each, for the activity's details.
    pub details: Vec<String>,
    /// Why it must not happen, if it must not.
    pub refusal: Option<Refusal>,
}

/// Decides a rule's run against the group as the snapshot shows it.
pub fn decide(kind: &RuleKind, run: &RuleRun, snap: &GroupSnapshot, now_ms: i64) -> Decision {
    let current = snap.capacity();
    let mut details = Vec::new();
    if let Some(a) = &run.alarm {
        details.push(format!("alarm: {}", a.explanation));
        details.push(format!(
            "period data: {} of {} in-service instances answered: [{}]",
            a.input.answered.len(),
            a.input.in_service,
            a.input
                .answered
                .iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let target = rule_target(kind, run, snap, current, now_ms, &mut details);
    let to = *target.as_ref().unwrap_or(&current);
    let refusal = match target {
        Err(r) => Some(r),
        Ok(to) => refusal(kind, run, snap, current, to, now_ms),
    };
    Decision {
        from: current,
        to,
        details,
        refusal,
    }
}

/// A predictive rule's floor (`(rule name, floor)`) under a decision: a
/// scale-in stops at the floor, and one the floor stops where it is is
/// refused. A scale-out, a refused decision, or no floor pass through.
pub fn hold_at_floor(mut d: Decision, floor: Option<(&str, u32)>) -> Decision {
    let Some((rule, floor)) = floor else {
        return d;
    };
    if d.refusal.is_some() || d.to >= d.from || d.to >= floor {
        return d;
    }
    let held = floor.min(d.from);
    d.details.push(format!(
        "forecast floor: the predictive rule `{rule}` holds the group at or above {floor}: \
         {} instead of {}",
        held, d.to
    ));
    if held == d.from {
        d.refusal = Some(Refusal::ForecastFloor {
            rule: rule.to_owned(),
            floor,
        });
    }
    d.to = held;
    d
}

/// The capacity the rule asks for, or why it cannot say.
fn rule_target(
    kind: &RuleKind,
    run: &RuleRun,
    snap: &GroupSnapshot,
    current: u32,
    now_ms: i64,
    details: &mut Vec<String>,
) -> Result<u32, Refusal> {
    let group = snap.group;
    match kind {
        RuleKind::Simple {
            adjustment_type,
            adjustment_value,
            min_adjustment_magnitude,
            ..
        } => {
            let o = capacity_after(
                *adjustment_type,
                *adjustment_value,
                *min_adjustment_magnitude,
                current,
                group.min_size,
                group.max_size,
            );
            details.push(format!("rule: {}", o.describe()));
            Ok(o.target)
        }
        RuleKind::Step {
            adjustment_type,
            step_adjustments,
            min_adjustment_magnitude,
            ..
        } => {
            let (Some(value), Some(threshold)) = (run.metric_value, run.threshold) else {
                return Err(Refusal::StepNeedsMetric);
            };
            let step = matching_step(step_adjustments, value, threshold)
                .ok_or(Refusal::NoStep { value, threshold })?;
            details.push(format!(
                "step: metric {value:.2} is {:+.2} from the threshold {threshold:.2}; step [{}, {}) adjusts {:+}",
                value - threshold,
                step.lower_bound.map_or("-inf".into(), |b| format!("{b}")),
                step.upper_bound.map_or("+inf".into(), |b| format!("{b}")),
                step.adjustment
            ));
            let o = capacity_after(
                *adjustment_type,
                step.adjustment,
                *min_adjustment_magnitude,
                current,
                group.min_size,
                group.max_size,
            );
            details.push(format!("rule: {}", o.describe()));
            Ok(o.target)
        }
        RuleKind::TargetTracking {
            target_value,
            disable_scale_in,
            estimated_instance_warmup_secs,
            ..
        } => {
            let metric = run.metric_value.ok_or(Refusal::TargetNeedsMetric)?;
            // Standby and Protected instances count in the capacity but not
            // in the metric: the fleet the metric describes is the warm one
            // plus the pending, and they are added back after its answer.
            let TrackedFleet {
                warm,
                pending,
                held,
            } = TrackedFleet::of(snap.instances, *estimated_instance_warmup_secs, now_ms);
            // The bounds hold for the whole group, held instances included:
            // clamp the others to what the bounds leave them.
            let (min, max) = (
                group.min_size.saturating_sub(held),
                group.max_size.saturating_sub(held),
            );
            let d = target_tracking_capacity(
                warm,
                pending,
                metric,
                *target_value,
                *disable_scale_in,
                min,
                max,
            );
            let window = run.alarm.as_ref().map_or(Stabilisation::Off, |a| a.window);
            let mut d = stabilise(d, window, min, max);
            d.new_capacity += held;
            d.clamped = d.clamped.map(|c| match c {
                Clamped::Max(_) => Clamped::Max(group.max_size),
                Clamped::Min(_) => Clamped::Min(group.min_size),
            });
            details.push(format!("target tracking: {}", d.describe()));
            if held > 0 {
                details.push(format!(
                    "target tracking: {held} Standby or Protected instance(s) serve outside the metric and stay"
                ));
            }
            Ok(d.new_capacity)
        }
        RuleKind::Predictive { .. } => Err(Refusal::PredictiveNotRun),
    }
}

/// The group-level refusals, in DESIGN §4's order.
fn refusal(
    kind: &RuleKind,
    run: &RuleRun,
    snap: &GroupSnapshot,
    current: u32,
    to: u32,
    now_ms: i64,
) -> Option<Refusal> {
    let group = snap.group;
    let by_alarm = run.trigger == Trigger::Alarm;
    let direction = match to.cmp(&current) {
        Ordering::Greater => Some(Process::ScaleOut),
        Ordering::Less => Some(Process::ScaleIn),
        Ordering::Equal => None,
    };
    if group.state != GroupState::Active {
        return Some(Refusal::NotActive {
            group: group.name.clone(),
            state: group.state,
        });
    }
    if let Some(p) = direction.filter(|p| group.suspended_processes.contains(p)) {
        return Some(Refusal::Suspended(p));
    }
    if by_alarm
        && group
            .suspended_processes
            .contains(&Process::AlarmNotification)
    {
        return Some(Refusal::Suspended(Process::AlarmNotification));
    }
    if by_alarm && let Some(id) = snap.running_activity {
        return Some(Refusal::ActivityRunning(id.to_owned()));
    }
    if by_alarm && let Some(held) = cooldown_hold(kind, snap, now_ms) {
        return Some(held);
    }
    if to == current {
        return Some(Refusal::NoChange { current });
    }
    if by_alarm
        && direction == Some(Process::ScaleIn)
        && let Some(a) = &run.alarm
        && !scale_in_allowed(&a.spec, data_complete(&a.input))
    {
        return Some(Refusal::IncompleteData {
            answered: a.input.answered.len(),
            in_service: a.input.in_service,
        });
    }
    None
}

/// The cooldown still holding the group for an alarm-run rule.
fn cooldown_hold(kind: &RuleKind, snap: &GroupSnapshot, now_ms: i64) -> Option<Refusal> {
    let rule = ScalingRule {
        id: String::new(),
        group_id: snap.group.id.clone(),
        name: String::new(),
        kind: kind.clone(),
    };
    let secs = rule.cooldown_secs(snap.group.default_cooldown_secs);
    let start = snap.cooldown_start_ms;
    cooldown_remaining(start, secs, now_ms).map(|left| Refusal::Cooldown {
        until_ms: now_ms + left.as_millis() as i64,
        secs,
        last_end_ms: start.unwrap_or(now_ms),
    })
}

#[cfg(test)]
mod tests;
