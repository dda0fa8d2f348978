//! Target tracking: hold a metric's group average at a target.
//!
//! C is the number of in-service instances whose values make the average
//! (warming instances are left out of it) and P the instances still warming.
//! The fleet that holds the target is `needed = ceil(C × metric / target)`,
//! the smallest fleet whose average would be at or below the target; ebb
//! uses it in both directions (ESS rounds down on scale-in, which can
//! undershoot and flap). The current capacity is C + P, so a warming
//! instance is never launched twice:
//! - above the target: grow to `needed` when it exceeds C + P, else hold;
//! - below target × (1 − 0.1): shrink to `needed` when it is below C + P,
//!   unless scale-in is disabled or any instance is still warming (the
//!   average of the warm ones does not yet show the load the warming ones
//!   will take, so shrinking on it could undershoot);
//! - in between (the tolerance band) hold.
//!
//! A fleet that carries load needs at least one instance, so target tracking
//! never scales to zero by itself (at zero there would be no metric to scale
//! out on); the result is clamped to [min, max] like every rule's.

use serde::{Deserialize, Serialize};

use super::alarm::{AlarmSpec, Comparison, Metric, MissingData, Statistic};
use super::capacity::Clamped;
use super::num;

/// ESS and HPA: no scale-in until the metric is 10 % below the target.
pub const SCALE_IN_TOLERANCE: f64 = 0.1;
/// ESS: scale out after 3 consecutive periods above the target.
pub const SCALE_OUT_PERIODS: u32 = 3;
/// ESS: scale in after 15 consecutive periods below the tolerance band.
pub const SCALE_IN_PERIODS: u32 = 15;
/// ESS and AWS evaluate target tracking alarms per minute.
pub const TARGET_ALARM_PERIOD_SECS: u32 = 60;
/// A C·m/t that lands a hair above an integer only through floating-point
/// error (4 × 0.3 / 0.1) should not cost a whole extra instance.
const ROUNDING_SLACK: f64 = 1e-9;

/// Why target tracking chose what it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetReason {
    ScaleOut,
    ScaleIn,
    /// The metric is within [target × 0.9, target].
    WithinTolerance,
    /// The capacity (warming instances included) already is what is needed.
    NoChangeNeeded,
    ScaleInDisabled,
    /// Below the band, but instances are still warming.
    WarmingUp,
    /// No instance contributes a value (or the value is not a number).
    NoMetric,
    /// The target is not a positive number; validation should have caught it.
    InvalidTarget,
}

/// What target tracking decided, with its inputs for the explain view.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetDecision {
    pub in_service: u32,
    pub warming: u32,
    pub metric: f64,
    pub target: f64,
    /// `ceil(C × metric / target)`, at least 1; 0 when there was no metric.
    pub needed: u32,
    /// C + P.
    pub current: u32,
    pub new_capacity: u32,
    pub reason: TargetReason,
    pub clamped: Option<Clamped>,
}

impl TargetDecision {
    /// One sentence for the explain view.
    pub fn describe(&self) -> String {
        let inputs = format!(
            "{} in service at {} against a target of {}",
            self.in_service,
            num(self.metric),
            num(self.target)
        );
        let need = format!(
            "need ceil({} × {} / {}) = {}",
            self.in_service,
            num(self.metric.max(0.0)),
            num(self.target),
            self.needed
        );
        let warming = if self.warming == 0 {
            String::new()
        } else {
            format!(" ({} more warming)", self.warming)
        };
        let what = match self.reason {
            TargetReason::ScaleOut => format!("scale out from {}", self.current),
            TargetReason::ScaleIn => format!("scale in from {}", self.current),
            TargetReason::WithinTolerance => format!(
                "within the tolerance band [{}, {}]: hold",
                num(self.target * (1.0 - SCALE_IN_TOLERANCE)),
                num(self.target)
            ),
            TargetReason::NoChangeNeeded => format!("{} already: hold", self.current),
            TargetReason::ScaleInDisabled => "scale-in is disabled: hold".into(),
            TargetReason::WarmingUp => "no scale-in while instances warm: hold".into(),
            TargetReason::NoMetric => "no instance reports the metric: hold".into(),
            TargetReason::InvalidTarget => "the target is not a positive number: hold".into(),
        };
        let head = match self.reason {
            TargetReason::NoMetric | TargetReason::InvalidTarget => format!("{inputs}{warming}"),
            _ => format!("{inputs}{warming} {need}"),
        };
        let end = match self.clamped {
            None => format!("{}", self.new_capacity),
            Some(Clamped::Max(m)) => format!("{} (held to max_size {m})", self.new_capacity),
            Some(Clamped::Min(m)) => format!("{} (held to min_size {m})", self.new_capacity),
        };
        format!("{head}; {what}; capacity {end}")
    }
}

/// The capacity target tracking wants; see the module docs.
pub fn target_tracking_capacity(
    current_in_service: u32,
    pending_warming: u32,
    metric_avg: f64,
    target: f64,
    disable_scale_in: bool,
    min: u32,
    max: u32,
) -> TargetDecision {
    let current = current_in_service.saturating_add(pending_warming);
    let (desired, needed, reason) = decide(
        current_in_service,
        pending_warming,
        metric_avg,
        target,
        disable_scale_in,
    );
    let upper = max.max(min);
    let (new_capacity, clamped) = if desired > upper {
        (upper, Some(Clamped::Max(upper)))
    } else if desired < min {
        (min, Some(Clamped::Min(min)))
    } else {
        (desired, None)
    };
    TargetDecision {
        in_service: current_in_service,
        warming: pending_warming,
        metric: metric_avg,
        target,
        needed,
        current,
        new_capacity,
        reason,
        clamped,
    }
}

/// (desired capacity before clamping, needed, reason).
fn decide(
    c: u32,
    p: u32,
    metric: f64,
    target: f64,
    disable_scale_in: bool,
) -> (u32, u32, TargetReason) {
    let current = c.saturating_add(p);
    if !(target.is_finite() && target > 0.0) {
        return (current, 0, TargetReason::InvalidTarget);
    }
    if c == 0 || !metric.is_finite() {
        return (current, 0, TargetReason::NoMetric);
    }
    let m = metric.max(0.0);
    let exact = f64::from(c) * m / target;
    // `as` saturates, so an absurd metric asks for u32::MAX and is clamped.
    let needed = ((exact * (1.0 - ROUNDING_SLACK)).ceil() as u32).max(1);
    if m > target {
        if needed > current {
            (needed, needed, TargetReason::ScaleOut)
        } else {
            (current, needed, TargetReason::NoChangeNeeded)
        }
    } else if m < target * (1.0 - SCALE_IN_TOLERANCE) {
        if disable_scale_in {
            (current, needed, TargetReason::ScaleInDisabled)
        } else if p > 0 {
            (current, needed, TargetReason::WarmingUp)
        } else if needed < current {
            (needed, needed, TargetReason::ScaleIn)
        } else {
            (current, needed, TargetReason::NoChangeNeeded)
        }
    } else {
        (current, needed, TargetReason::WithinTolerance)
    }
}

/// The two alarms a target tracking rule owns: (scale-out, scale-in). Both
/// watch the group average per minute and wait for data (`missing`).
pub fn target_alarms(metric: &Metric, target: f64) -> (AlarmSpec, AlarmSpec) {
    let alarm = |comparison, threshold, evaluation_count| AlarmSpec {
        metric: metric.clone(),
        statistic: Statistic::Average,
        period_secs: TARGET_ALARM_PERIOD_SECS,
        comparison,
        threshold,
        evaluation_count,
        missing_data: MissingData::Missing,
    };
    (
        alarm(Comparison::Gt, target, SCALE_OUT_PERIODS),
        alarm(
            Comparison::Lt,
            target * (1.0 - SCALE_IN_TOLERANCE),
            SCALE_IN_PERIODS,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::TargetReason::*;
    use super::*;

    #[test]
    fn target_tracking_table() {
        struct Case {
            name: &'static str,
            c: u32,
            p: u32,
            m: f64,
            t: f64,
            disable_scale_in: bool,
            bounds: (u32, u32),
            new: u32,
            reason: TargetReason,
        }
        let case = |name, (c, p), m, t, disable_scale_in, bounds, new, reason| Case {
            name,
            c,
            p,
            m,
            t,
            disable_scale_in,
            bounds,
            new,
            reason,
        };
        let cases = [
            case(
                "4 at 75 for 50 need 6",
                (4, 0),
                75.0,
                50.0,
                false,
                (1, 20),
                6,
                ScaleOut,
            ),
            case(
                "just above the target adds one",
                (4, 0),
                50.5,
                50.0,
                false,
                (1, 20),
                5,
                ScaleOut,
            ),
            case(
                "at the target holds",
                (4, 0),
                50.0,
                50.0,
                false,
                (1, 20),
                4,
                WithinTolerance,
            ),
            case(
                "inside the band holds",
                (4, 0),
                46.0,
                50.0,
                false,
                (1, 20),
                4,
                WithinTolerance,
            ),
            case(
                "at the band's edge holds",
                (4, 0),
                45.0,
                50.0,
                false,
                (1, 20),
                4,
                WithinTolerance,
            ),
            case(
                "below the band, ceil keeps 4",
                (4, 0),
                44.0,
                50.0,
                false,
                (1, 20),
                4,
                NoChangeNeeded,
            ),
            case(
                "10 at 30 for 50 need 6",
                (10, 0),
                30.0,
                50.0,
                false,
                (1, 20),
                6,
                ScaleIn,
            ),
            case(
                "10 at 25 for 50: exactly 5",
                (10, 0),
                25.0,
                50.0,
                false,
                (1, 20),
                5,
                ScaleIn,
            ),
            case(
                "scale-in disabled",
                (10, 0),
                30.0,
                50.0,
                true,
                (1, 20),
                10,
                ScaleInDisabled,
            ),
            case(
                "scale-out despite scale-in disabled",
                (4, 0),
                75.0,
                50.0,
                true,
                (1, 20),
                6,
                ScaleOut,
            ),
            case(
                "no scale-in while warming",
                (10, 2),
                30.0,
                50.0,
                false,
                (1, 20),
                12,
                WarmingUp,
            ),
            case(
                "warming instances already cover it",
                (4, 2),
                90.0,
                60.0,
                false,
                (1, 20),
                6,
                NoChangeNeeded,
            ),
            case(
                "warming instances count: launch 2, not 4",
                (4, 2),
                120.0,
                60.0,
                false,
                (1, 20),
                8,
                ScaleOut,
            ),
            case(
                "clamped to max",
                (4, 0),
                200.0,
                50.0,
                false,
                (1, 10),
                10,
                ScaleOut,
            ),
            case(
                "clamped to min",
                (10, 0),
                1.0,
                50.0,
                false,
                (3, 20),
                3,
                ScaleIn,
            ),
            case(
                "idle never goes to zero",
                (5, 0),
                0.0,
                50.0,
                false,
                (0, 20),
                1,
                ScaleIn,
            ),
            case(
                "a negative metric reads as 0",
                (5, 0),
                -3.0,
                50.0,
                false,
                (0, 20),
                1,
                ScaleIn,
            ),
            case(
                "nothing in service",
                (0, 0),
                90.0,
                50.0,
                false,
                (0, 20),
                0,
                NoMetric,
            ),
            case(
                "only warming instances",
                (0, 3),
                90.0,
                50.0,
                false,
                (0, 20),
                3,
                NoMetric,
            ),
            case(
                "NaN metric",
                (4, 0),
                f64::NAN,
                50.0,
                false,
                (1, 20),
                4,
                NoMetric,
            ),
            case(
                "zero target",
                (4, 0),
                75.0,
                0.0,
                false,
                (1, 20),
                4,
                InvalidTarget,
            ),
            case(
                "float noise does not add one",
                (4, 0),
                0.3,
                0.1,
                false,
                (1, 20),
                12,
                ScaleOut,
            ),
            case(
                "a huge metric saturates then clamps",
                (4, 0),
                1e300,
                1.0,
                false,
                (1, 10_000),
                10_000,
                ScaleOut,
            ),
        ];
        for c in cases {
            let d = target_tracking_capacity(
                c.c,
                c.p,
                c.m,
                c.t,
                c.disable_scale_in,
                c.bounds.0,
                c.bounds.1,
            );
            assert_eq!((d.new_capacity, d.reason), (c.new, c.reason), "{}", c.name);
        }
    }

    #[test]
    fn never_undershoots_and_picks_the_smallest_fleet() {
        for t in [20.0, 50.0, 73.3] {
            for c in 1..=40u32 {
                let mut m = 0.0;
                while m <= 300.0 {
                    let d = target_tracking_capacity(c, 0, m, t, false, 0, 10_000);
                    let load = f64::from(c) * m;
                    let avg = |n: u32| load / f64::from(n);
                    match d.reason {
                        ScaleOut | ScaleIn => {
                            let n = d.new_capacity;
                            assert!(
                                avg(n) <= t * (1.0 + 1e-9),
                                "c={c} m={m} t={t}: {n} instances average {} > target",
                                avg(n)
                            );
                            assert!(
                                n == 1 || avg(n - 1) > t * (1.0 - 1e-9),
                                "c={c} m={m} t={t}: {} instances would hold the target too",
                                n - 1
                            );
                            if d.reason == ScaleOut {
                                assert!(n > c);
                            } else {
                                assert!(n < c);
                            }
                        }
                        WithinTolerance => assert!(m <= t && m >= t * 0.9),
                        NoChangeNeeded => assert_eq!(d.new_capacity, c),
                        other => panic!("c={c} m={m} t={t}: unexpected {other:?}"),
                    }
                    m += 0.7;
                }
            }
        }
    }

    #[test]
    fn warming_instances_are_never_launched_twice() {
        // 6 in service at 90 % for a 60 % target need 9; 2 warming count.
        for p in 0..=5u32 {
            let d = target_tracking_capacity(6, p, 90.0, 60.0, false, 0, 100);
            assert_eq!(d.new_capacity, 9.max(6 + p), "{p} warming");
            assert!(d.new_capacity >= 6 + p, "a scale-out never lowers");
        }
    }

    #[test]
    fn describe_shows_the_formula() {
        let d = target_tracking_capacity(4, 0, 75.0, 50.0, false, 1, 20);
        assert_eq!(
            d.describe(),
            "4 in service at 75 against a target of 50 need ceil(4 × 75 / 50) = 6; scale out from 4; capacity 6"
        );
        let d = target_tracking_capacity(4, 2, 120.0, 60.0, false, 1, 7);
        assert_eq!(
            d.describe(),
            "4 in service at 120 against a target of 60 (2 more warming) need ceil(4 × 120 / 60) = 8; scale out from 6; capacity 7 (held to max_size 7)"
        );
        let d = target_tracking_capacity(4, 0, 47.0, 50.0, false, 1, 20);
        assert_eq!(
            d.describe(),
            "4 in service at 47 against a target of 50 need ceil(4 × 47 / 50) = 4; within the tolerance band [45, 50]: hold; capacity 4"
        );
    }

    #[test]
    fn the_two_owned_alarms() {
        let (out, inn) = target_alarms(&Metric::CpuUtilization, 60.0);
        assert_eq!(
            (out.comparison, out.threshold, out.evaluation_count),
            (Comparison::Gt, 60.0, 3)
        );
        assert_eq!(
            (inn.comparison, inn.threshold, inn.evaluation_count),
            (Comparison::Lt, 54.0, 15)
        );
        for a in [&out, &inn] {
            assert_eq!(a.metric, Metric::CpuUtilization);
            assert_eq!(a.statistic, Statistic::Average);
            assert_eq!(a.period_secs, 60);
            assert_eq!(a.missing_data, MissingData::Missing);
            a.validate().unwrap();
        }
    }
}
