//! Scaling rules and alarms: the pure decision core. Every function here is
//! a plain function of its inputs and a `now`; no I/O, no clock, no tokio.
//!
//! - `capacity`: adjustment types and the capacity a change gives, clamped to the group's bounds.
//! - `step`: step adjustments, their validation and the step a breach selects.
//! - `target`: target tracking's capacity formula and the two alarms it owns.
//! - `alarm`: alarm specs, per-period aggregation and the OK / ALARM / INSUFFICIENT_DATA machine.
//! - `cooldown`: cooldown and instance-warmup timing.
//! - `predict`: predictive scaling's load forecast and the capacity floor it sets.
//! - here: `ScalingRule`, the stored rule, and its validation.

use serde::{Deserialize, Serialize};

use crate::model::{Instance, Invalid, LifecycleState, MAX_COOLDOWN_SECS, check_name};

pub mod alarm;
pub mod capacity;
pub mod cooldown;
pub mod predict;
pub mod step;
pub mod target;

pub use alarm::{
    AlarmEval, AlarmSpec, AlarmState, Comparison, Evaluation, Metric, MissingData, PeriodInput,
    PeriodPoint, Statistic, aggregate, data_complete, evaluate, period_input, period_point,
    scale_in_allowed,
};
pub use capacity::{AdjustmentType, CapacityOutcome, Clamped, capacity_after, validate_adjustment};
pub use cooldown::{cooldown_remaining, cooldown_start, warming};
pub use predict::{PredictiveMode, PredictiveValueBehavior};
pub use step::{StepAdjustment, matching_step, validate_steps};
pub use target::{
    AlarmPeriod, ScaleInWindow, Stabilisation, TargetDecision, TargetReason, owned_alarm_period,
    stabilise, target_alarms, target_tracking_capacity,
};

/// ESS and AWS: an instance is assumed warm 300 s after it enters service.
pub const DEFAULT_INSTANCE_WARMUP_SECS: u32 = 300;
/// ESS: PredictiveValueBuffer is a percentage, 0 to 100.
pub const MAX_PREDICTIVE_VALUE_BUFFER: u32 = 100;
/// ESS: PredictiveTaskBufferTime is at most 60 minutes.
pub const MAX_PREDICTIVE_TASK_BUFFER_SECS: u32 = 3_600;
/// A warmup longer than a day is a typo; the same bound as the cooldown.
pub const MAX_INSTANCE_WARMUP_SECS: u32 = 86_400;

fn default_warmup() -> u32 {
    DEFAULT_INSTANCE_WARMUP_SECS
}

fn default_stabilization() -> u32 {
    target::DEFAULT_STABILIZATION_SECS
}

/// A scaling rule as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingRule {
    pub id: String,
    pub group_id: String,
    pub name: String,
    #[serde(flatten)]
    pub kind: RuleKind,
}

/// What a rule does; tagged with ESS's `ScalingRuleType` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule_type")]
pub enum RuleKind {
    /// One adjustment, with an optional cooldown overriding the group's.
    #[serde(rename = "SimpleScalingRule")]
    Simple {
        adjustment_type: AdjustmentType,
        adjustment_value: i64,
        #[serde(default)]
        min_adjustment_magnitude: Option<u32>,
        #[serde(default)]
        cooldown_secs: Option<u32>,
    },
    /// An adjustment picked by how far the metric is past the alarm's threshold.
    #[serde(rename = "StepScalingRule")]
    Step {
        adjustment_type: AdjustmentType,
        step_adjustments: Vec<StepAdjustment>,
        #[serde(default)]
        min_adjustment_magnitude: Option<u32>,
        #[serde(default = "default_warmup")]
        estimated_instance_warmup_secs: u32,
    },
    /// Holds a metric at a target; owns two alarms (see `target_alarms`).
    #[serde(rename = "TargetTrackingScalingRule")]
    TargetTracking {
        metric: Metric,
        target_value: f64,
        #[serde(default)]
        disable_scale_in: bool,
        #[serde(default = "default_warmup")]
        estimated_instance_warmup_secs: u32,
        /// The period of the owned alarms: the group's sampling interval, or
        /// ESS's minute.
        #[serde(default)]
        alarm_period: AlarmPeriod,
        /// Scale-in goes no lower than the highest recommendation of this
        /// many seconds (0: no window, ESS's behaviour).
        #[serde(default = "default_stabilization")]
        scale_in_stabilization_secs: u32,
    },
    /// Forecasts the metric's load and holds the group at or above the
    /// capacity the forecast needs (see `predict`); never run by an alarm.
    #[serde(rename = "PredictiveScalingRule")]
    Predictive {
        metric: Metric,
        target_value: f64,
        /// Stored rules from before the modes existed only forecast.
        #[serde(default)]
        predictive_scaling_mode: PredictiveMode,
        #[serde(default)]
        predictive_value_behavior: PredictiveValueBehavior,
        /// Percent above the forecast the max is raised to, with
        /// `PredictiveValueOverrideMaxWithBuffer` only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        predictive_value_buffer: Option<u32>,
        /// How far ahead of a forecast rise the floor rises, in seconds;
        /// unset, the instance warmup (`DEFAULT_INSTANCE_WARMUP_SECS`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        predictive_task_buffer_secs: Option<u32>,
    },
}

impl ScalingRule {
    /// Every problem with the rule at once, each naming its field.
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut errors = Invalid::default();
        check_name("name", &self.name, &mut errors);
        self.kind.check(&mut errors);
        errors.into_result()
    }

    /// How long after an activity this rule's alarm actions are held, in
    /// seconds. A simple rule uses its own cooldown or the group's; a step
    /// rule holds for its warmup (ESS and AWS give step rules a warmup, not a
    /// cooldown); target tracking counts warming instances as pending and
    /// holds scale-in while they warm, so it needs no hold; a predictive rule
    /// is never run by an alarm.
    pub fn cooldown_secs(&self, group_default_cooldown_secs: u32) -> u32 {
        match &self.kind {
            RuleKind::Simple { cooldown_secs, .. } => {
                cooldown_secs.unwrap_or(group_default_cooldown_secs)
            }
            RuleKind::Step {
                estimated_instance_warmup_secs,
                ..
            } => *estimated_instance_warmup_secs,
            RuleKind::TargetTracking { .. } | RuleKind::Predictive { .. } => 0,
        }
    }
}

impl RuleKind {
    /// A predictive rule with every optional field at its default.
    pub fn predictive(metric: Metric, target_value: f64) -> Self {
        RuleKind::Predictive {
            metric,
            target_value,
            predictive_scaling_mode: PredictiveMode::default(),
            predictive_value_behavior: PredictiveValueBehavior::default(),
            predictive_value_buffer: None,
            predictive_task_buffer_secs: None,
        }
    }

    /// A predictive rule's lead time: how long before a forecast rise its
    /// floor rises, in seconds. `None` for other kinds.
    pub fn predictive_lead_secs(&self) -> Option<u32> {
        match self {
            RuleKind::Predictive {
                predictive_task_buffer_secs,
                ..
            } => Some(predictive_task_buffer_secs.unwrap_or(DEFAULT_INSTANCE_WARMUP_SECS)),
            _ => None,
        }
    }

    fn check(&self, errors: &mut Invalid) {
        match self {
            RuleKind::Simple {
                adjustment_type,
                adjustment_value,
                min_adjustment_magnitude,
                cooldown_secs,
            } => {
                if let Err(e) = validate_adjustment(
                    *adjustment_type,
                    *adjustment_value,
                    *min_adjustment_magnitude,
                ) {
                    errors.0.extend(e.0);
                }
                if let Some(c) = cooldown_secs
                    && *c > MAX_COOLDOWN_SECS
                {
                    errors.push(
                        "cooldown_secs",
                        format!("{c} is outside 0..={MAX_COOLDOWN_SECS}"),
                    );
                }
            }
            RuleKind::Step {
                adjustment_type,
                step_adjustments,
                min_adjustment_magnitude,
                estimated_instance_warmup_secs,
            } => {
                step::check_steps(step_adjustments, "step_adjustments", errors);
                for (i, s) in step_adjustments.iter().enumerate() {
                    capacity::check_adjustment(
                        &format!("step_adjustments[{i}].adjustment"),
                        *adjustment_type,
                        s.adjustment,
                        errors,
                    );
                }
                capacity::check_min_adjustment_magnitude(
                    "min_adjustment_magnitude",
                    *adjustment_type,
                    *min_adjustment_magnitude,
                    errors,
                );
                check_warmup(*estimated_instance_warmup_secs, errors);
            }
            RuleKind::TargetTracking {
                metric,
                target_value,
                estimated_instance_warmup_secs,
                scale_in_stabilization_secs,
                ..
            } => {
                metric.check("metric", errors);
                check_target_value(metric, *target_value, errors);
                check_warmup(*estimated_instance_warmup_secs, errors);
                if *scale_in_stabilization_secs > target::MAX_STABILIZATION_SECS {
                    errors.push(
                        "scale_in_stabilization_secs",
                        format!(
                            "{scale_in_stabilization_secs} is outside 0..={}",
                            target::MAX_STABILIZATION_SECS
                        ),
                    );
                }
            }
            RuleKind::Predictive {
                metric,
                target_value,
                predictive_value_behavior,
                predictive_value_buffer,
                predictive_task_buffer_secs,
                ..
            } => {
                metric.check("metric", errors);
                check_target_value(metric, *target_value, errors);
                match (predictive_value_behavior, predictive_value_buffer) {
                    (PredictiveValueBehavior::PredictiveValueOverrideMaxWithBuffer, Some(b))
                        if *b > MAX_PREDICTIVE_VALUE_BUFFER =>
                    {
                        errors.push(
                            "predictive_value_buffer",
                            format!("{b} is outside 0..={MAX_PREDICTIVE_VALUE_BUFFER} (percent)"),
                        )
                    }
                    (PredictiveValueBehavior::PredictiveValueOverrideMaxWithBuffer, _) => {}
                    (other, Some(_)) => errors.push(
                        "predictive_value_buffer",
                        format!(
                            "applies only with predictive_value_behavior = \
                             PredictiveValueOverrideMaxWithBuffer, not {other}"
                        ),
                    ),
                    (_, None) => {}
                }
                if let Some(s) = predictive_task_buffer_secs
                    && *s > MAX_PREDICTIVE_TASK_BUFFER_SECS
                {
                    errors.push(
                        "predictive_task_buffer_secs",
                        format!("{s} is outside 0..={MAX_PREDICTIVE_TASK_BUFFER_SECS}"),
                    );
                }
            }
        }
    }
}

/// How target tracking sees a group's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackedFleet {
    /// In service and past the warmup: their values make the metric.
    pub warm: u32,
    /// Launching or warming: capacity the metric does not show yet.
    pub pending: u32,
    /// Standby and Protected: capacity outside the metric, never removed.
    pub held: u32,
}

impl TrackedFleet {
    pub fn of(instances: &[Instance], warmup_secs: u32, now_ms: i64) -> Self {
        let current = instances.iter().filter(|i| i.counts()).count() as u32;
        let warm = instances
            .iter()
            .filter(|i| i.lifecycle_state == LifecycleState::InService)
            .filter(|i| !warming(i.in_service_at_ms, warmup_secs, now_ms))
            .count() as u32;
        let held = instances
            .iter()
            .filter(|i| {
                matches!(
                    i.lifecycle_state,
                    LifecycleState::Standby | LifecycleState::Protected
                )
            })
            .count() as u32;
        TrackedFleet {
            warm,
            pending: current.saturating_sub(warm).saturating_sub(held),
            held,
        }
    }
}

/// Records a period of `spec`, when it is the scale-in alarm of the
/// target-tracking rule `owner`, in the rule's stabilisation `window`, and
/// says what the window allows at the period's end; `Off` for every other
/// alarm. The controller and the simulator both call it per period.
///
/// A period's recommendation is the smallest fleet that holds its load at
/// the bottom of the tolerance band (`target × 0.9`), so a scale-in leaves
/// the band's width of headroom over the window's peak, and only a load
/// 10 % above that peak scales out again (in the simulator, landing on
/// the target itself flapped on every noisy trace). While instances launch
/// or warm it is the capacity the group has: their share of the load is not
/// in the metric yet, and scale-in waits for them anyway, so the window
/// must not remember a fleet too small for the load they carry.
pub fn track_scale_in(
    owner: Option<&RuleKind>,
    spec: &AlarmSpec,
    window: &mut Option<ScaleInWindow>,
    (start_ms, end_ms): (i64, i64),
    input: &PeriodInput,
    instances: &[Instance],
) -> Stabilisation {
    let Some(RuleKind::TargetTracking {
        target_value,
        scale_in_stabilization_secs: secs,
        estimated_instance_warmup_secs: warmup,
        ..
    }) = owner
    else {
        return Stabilisation::Off;
    };
    if spec.comparison != Comparison::Lt {
        return Stabilisation::Off;
    }
    let fleet = TrackedFleet::of(instances, *warmup, end_ms);
    let needed = match period_point(input, spec) {
        PeriodPoint::Missing => None,
        _ if fleet.pending > 0 => Some(fleet.warm + fleet.pending),
        PeriodPoint::Breaching(v) | PeriodPoint::NotBreaching(v) => {
            let floor = *target_value * (1.0 - target::SCALE_IN_TOLERANCE);
            target::needed(input.in_service, v, floor)
        }
    };
    let w = window.get_or_insert_with(ScaleInWindow::default);
    w.record(start_ms, end_ms, needed, *secs);
    w.stabilisation(end_ms, *secs)
}

fn check_target_value(metric: &Metric, target: f64, errors: &mut Invalid) {
    if !target.is_finite() || target <= 0.0 {
        errors.push("target_value", "must be above 0");
    } else if metric.is_percent() && target > 100.0 {
        errors.push(
            "target_value",
            format!(
                "{} is above 100, which {metric} (a percentage) never reaches",
                num(target)
            ),
        );
    }
}

fn check_warmup(secs: u32, errors: &mut Invalid) {
    if secs > MAX_INSTANCE_WARMUP_SECS {
        errors.push(
            "estimated_instance_warmup_secs",
            format!("{secs} is outside 0..={MAX_INSTANCE_WARMUP_SECS}"),
        );
    }
}

/// A metric value for people: at most three decimals, no trailing zeros.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

#[cfg(test)]
mod tests;
