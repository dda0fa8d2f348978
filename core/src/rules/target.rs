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
//! Scale-in is stabilised as the HPA's scale-down is: every period of the
//! rule's scale-in alarm records a recommendation, and a scale-in goes no
//! lower than the highest recommendation of the last
//! `scale_in_stabilization_secs` (300 s by default), nor at all until the
//! window has filled. A period's recommendation is the fleet that holds its
//! load at the bottom of the tolerance band, `ceil(C × metric / (target ×
//! 0.9))` (see `track_scale_in`): a scale-in leaves the band's width of
//! headroom over the window's peak, so neither a dip shorter than the
//! window nor the noise around a level load makes it flap.
//!
//! The owned alarms' period is the group's sampling interval (3 periods out,
//! 15 in), so a 5 s group scales out 15 s into a breach; `alarm_period =
//! "Minute"` keeps ESS's and AWS's per-minute alarms.
//!
//! A fleet that carries load needs at least one instance, so target tracking
//! never scales to zero by itself (at zero there would be no metric to scale
//! out on); the result is clamped to [min, max] like every rule's.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::alarm::{AlarmSpec, Comparison, Metric, MissingData, PERIODS_SECS, Statistic};
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
/// The HPA's default scale-down stabilisation window
/// (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 minutes).
pub const DEFAULT_STABILIZATION_SECS: u32 = 300;
/// The HPA's limit for `stabilizationWindowSeconds` (one hour).
pub const MAX_STABILIZATION_SECS: u32 = 3600;

/// The period of a target-tracking rule's two alarms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmPeriod {
    /// The group's sampling interval: ebb's default.
    #[default]
    SamplingInterval,
    /// A minute, ESS's and AWS's period, for their exact numbers.
    Minute,
}

/// The period of a target-tracking rule's alarms in a group sampled every
/// `sampling_interval_secs`: the shortest alarm period that holds a sample
/// (and, for `Minute`, a minute at least).
pub fn owned_alarm_period(sampling_interval_secs: u32, period: AlarmPeriod) -> u32 {
    let floor = match period {
        AlarmPeriod::SamplingInterval => sampling_interval_secs,
        AlarmPeriod::Minute => sampling_interval_secs.max(TARGET_ALARM_PERIOD_SECS),
    };
    PERIODS_SECS
        .iter()
        .copied()
        .find(|p| *p >= floor)
        .unwrap_or(PERIODS_SECS[PERIODS_SECS.len() - 1])
}
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
    /// Below the band, but the scale-in stabilisation window's highest
    /// recommendation is the current capacity or more.
    Stabilised,
    /// Below the band, but the stabilisation window has not filled yet.
    WindowFilling,
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
    /// What the scale-in stabilisation window said, when it was consulted.
    pub window: Stabilisation,
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
            TargetReason::ScaleIn => match self.window {
                Stabilisation::Highest { .. } => {
                    format!(
                        "scale in from {} ({})",
                        self.current,
                        self.window.describe()
                    )
                }
                _ => format!("scale in from {}", self.current),
            },
            TargetReason::WithinTolerance => format!(
                "within the tolerance band [{}, {}]: hold",
                num(self.target * (1.0 - SCALE_IN_TOLERANCE)),
                num(self.target)
            ),
            TargetReason::NoChangeNeeded => format!("{} already: hold", self.current),
            TargetReason::ScaleInDisabled => "scale-in is disabled: hold".into(),
            TargetReason::WarmingUp => "no scale-in while instances warm: hold".into(),
            TargetReason::Stabilised | TargetReason::WindowFilling => {
                format!("{}: hold", self.window.describe())
            }
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
        window: Stabilisation::Off,
    }
}

/// Holds a scale-in `d` to the stabilisation window's highest
/// recommendation `s` (see the module docs), within [min, max].
pub fn stabilise(mut d: TargetDecision, s: Stabilisation, min: u32, max: u32) -> TargetDecision {
    if d.reason != TargetReason::ScaleIn {
        return d;
    }
    d.window = s;
    match s {
        Stabilisation::Off => {}
        Stabilisation::Filling { .. } | Stabilisation::Empty { .. } => {
            d.new_capacity = d.current;
            d.clamped = None;
            d.reason = TargetReason::WindowFilling;
        }
        Stabilisation::Highest { highest, .. } => {
            let floor = highest.max(d.needed);
            let upper = max.max(min);
            let (to, clamped) = if floor > upper {
                (upper, Some(Clamped::Max(upper)))
            } else if floor < min {
                (min, Some(Clamped::Min(min)))
            } else {
                (floor, None)
            };
            if to >= d.current {
                d.new_capacity = d.current;
                d.clamped = None;
                d.reason = TargetReason::Stabilised;
            } else {
                d.new_capacity = to;
                d.clamped = clamped;
            }
        }
    }
    d
}

/// `ceil(C × metric / target)`, at least 1: the smallest fleet of warm
/// instances whose average would hold the target; None without an instance,
/// a metric or a positive target.
pub fn needed(in_service: u32, metric: f64, target: f64) -> Option<u32> {
    if !(target.is_finite() && target > 0.0) || in_service == 0 || !metric.is_finite() {
        return None;
    }
    let exact = f64::from(in_service) * metric.max(0.0) / target;
    // `as` saturates, so an absurd metric asks for u32::MAX and is clamped.
    Some(((exact * (1.0 - ROUNDING_SLACK)).ceil() as u32).max(1))
}

/// What the scale-in stabilisation window allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stabilisation {
    /// No window (a run by hand or a schedule, or a window of 0 s).
    Off,
    /// Scale in no lower than `highest`.
    Highest { highest: u32, window_secs: u32 },
    /// The window has `have_secs` of its `window_secs` so far: no scale-in.
    Filling { have_secs: u32, window_secs: u32 },
    /// No period of the window had a metric: no scale-in.
    Empty { window_secs: u32 },
}

impl Stabilisation {
    fn describe(&self) -> String {
        match self {
            Stabilisation::Off => "no stabilisation window".into(),
            Stabilisation::Highest {
                highest,
                window_secs,
            } => format!("the highest recommendation of the last {window_secs} s is {highest}"),
            Stabilisation::Filling {
                have_secs,
                window_secs,
            } => format!(
                "the scale-in stabilisation window has {have_secs} s of its {window_secs} s so far"
            ),
            Stabilisation::Empty { window_secs } => {
                format!("no period of the last {window_secs} s had a metric")
            }
        }
    }
}

/// The recommendations (`needed`) of a target-tracking rule's scale-in
/// alarm over its stabilisation window, kept as a sliding-window maximum:
/// each entry is higher than every later one, so it holds at most one entry
/// per distinct recommendation however short the periods are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleInWindow {
    /// The start of the first period recorded (Unix ms).
    pub since_ms: Option<i64>,
    /// (period end in Unix ms, recommendation), recommendations falling.
    pub peaks: VecDeque<(i64, u32)>,
}

impl ScaleInWindow {
    /// Records the period [start_ms, end_ms) and its recommendation (None
    /// when it had no metric), forgetting what left the window.
    pub fn record(&mut self, start_ms: i64, end_ms: i64, needed: Option<u32>, window_secs: u32) {
        self.since_ms.get_or_insert(start_ms);
        if let Some(n) = needed {
            while self.peaks.back().is_some_and(|&(_, v)| v <= n) {
                self.peaks.pop_back();
            }
            self.peaks.push_back((end_ms, n));
        }
        let from = end_ms - i64::from(window_secs) * 1000;
        while self.peaks.front().is_some_and(|&(t, _)| t <= from) {
            self.peaks.pop_front();
        }
    }

    /// What the window allows at `now_ms`.
    pub fn stabilisation(&self, now_ms: i64, window_secs: u32) -> Stabilisation {
        if window_secs == 0 {
            return Stabilisation::Off;
        }
        let have_ms = self.since_ms.map_or(0, |s| (now_ms - s).max(0));
        if have_ms < i64::from(window_secs) * 1000 {
            let have_secs = u32::try_from(have_ms / 1000).unwrap_or(u32::MAX);
            return Stabilisation::Filling {
                have_secs,
                window_secs,
            };
        }
        let from = now_ms - i64::from(window_secs) * 1000;
        match self.peaks.iter().find(|(t, _)| *t > from) {
            Some(&(_, highest)) => Stabilisation::Highest {
                highest,
                window_secs,
            },
            None => Stabilisation::Empty { window_secs },
        }
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
    let Some(needed) = needed(c, metric, target) else {
        return (current, 0, TargetReason::NoMetric);
    };
    let m = metric.max(0.0);
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
/// watch the group average every `period_secs` (see `owned_alarm_period`)
/// and wait for data (`missing`).
pub fn target_alarms(metric: &Metric, target: f64, period_secs: u32) -> (AlarmSpec, AlarmSpec) {
    let alarm = |comparison, threshold, evaluation_count| AlarmSpec {
        metric: metric.clone(),
        statistic: Statistic::Average,
        period_secs,
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
    fn the_window_keeps_the_highest_recommendation_it_still_holds() {
        let mut w = ScaleInWindow::default();
        let s = |secs: i64| secs * 1000;
        // Recommendations per 5 s period from 0 s: 8, 6, 9, 3, then 3s.
        for (k, n) in [8, 6, 9, 3].into_iter().enumerate() {
            let end = s(5 * (k as i64 + 1));
            w.record(end - s(5), end, Some(n), 60);
        }
        // A falling run: only the peaks stay.
        assert_eq!(w.peaks, [(s(15), 9), (s(20), 3)]);
        assert_eq!(
            w.stabilisation(s(20), 60),
            Stabilisation::Filling {
                have_secs: 20,
                window_secs: 60
            }
        );
        for k in 5..=14 {
            w.record(s(5 * k - 5), s(5 * k), Some(3), 60);
        }
        // The 9 ended at 15 s: it is in the window until 75 s.
        assert_eq!(
            w.stabilisation(s(70), 60),
            Stabilisation::Highest {
                highest: 9,
                window_secs: 60
            }
        );
        for k in 15..=20 {
            w.record(s(5 * k - 5), s(5 * k), Some(3), 60);
        }
        assert_eq!(
            w.stabilisation(s(100), 60),
            Stabilisation::Highest {
                highest: 3,
                window_secs: 60
            }
        );
        // A period without a metric records nothing; a whole window of them
        // leaves nothing to scale in on.
        let mut quiet = w.clone();
        for k in 21..=40 {
            quiet.record(s(5 * k - 5), s(5 * k), None, 60);
        }
        assert_eq!(
            quiet.stabilisation(s(200), 60),
            Stabilisation::Empty { window_secs: 60 }
        );
        // A window of 0 s is no window.
        assert_eq!(w.stabilisation(s(100), 0), Stabilisation::Off);
        // However short the periods, it holds one entry per distinct value.
        let mut busy = ScaleInWindow::default();
        for k in 0..10_000i64 {
            busy.record(k * 1000, (k + 1) * 1000, Some(10 - (k % 10) as u32), 3600);
        }
        assert!(busy.peaks.len() <= 10, "{}", busy.peaks.len());
    }

    #[test]
    fn stabilise_holds_a_scale_in_to_the_window() {
        let highest = |highest| Stabilisation::Highest {
            highest,
            window_secs: 300,
        };
        // 10 at 20 for 50 need 4.
        let d = || target_tracking_capacity(10, 0, 20.0, 50.0, false, 1, 20);
        assert_eq!(d().new_capacity, 4);
        let to = |s| {
            let d = stabilise(d(), s, 1, 20);
            (d.new_capacity, d.reason)
        };
        assert_eq!(to(Stabilisation::Off), (4, ScaleIn));
        assert_eq!(to(highest(7)), (7, ScaleIn));
        assert_eq!(
            to(highest(2)),
            (4, ScaleIn),
            "never below what is needed now"
        );
        assert_eq!(to(highest(10)), (10, Stabilised));
        assert_eq!(
            to(highest(12)),
            (10, Stabilised),
            "a hold, never a scale-out"
        );
        assert_eq!(
            to(Stabilisation::Filling {
                have_secs: 30,
                window_secs: 300
            }),
            (10, WindowFilling)
        );
        assert_eq!(
            to(Stabilisation::Empty { window_secs: 300 }),
            (10, WindowFilling)
        );
        // The bounds still hold.
        let bounded = stabilise(d(), highest(2), 6, 20);
        assert_eq!(
            (bounded.new_capacity, bounded.clamped),
            (6, Some(Clamped::Min(6)))
        );
        // A scale-out ignores the window.
        let out = target_tracking_capacity(4, 0, 75.0, 50.0, false, 1, 20);
        assert_eq!(stabilise(out, highest(2), 1, 20), out);
        // And the explain view says what held it.
        assert_eq!(
            stabilise(d(), highest(7), 1, 20).describe(),
            "10 in service at 20 against a target of 50 need ceil(10 × 20 / 50) = 4; scale in from 10 (the highest recommendation of the last 300 s is 7); capacity 7"
        );
        assert_eq!(
            stabilise(d(), highest(10), 1, 20).describe(),
            "10 in service at 20 against a target of 50 need ceil(10 × 20 / 50) = 4; the highest recommendation of the last 300 s is 10: hold; capacity 10"
        );
    }

    #[test]
    fn the_owned_alarms_period_follows_the_sampling_interval() {
        use AlarmPeriod::{Minute, SamplingInterval};
        let cases = [
            (1, SamplingInterval, 1),
            (5, SamplingInterval, 5),
            (10, SamplingInterval, 15),
            (60, SamplingInterval, 60),
            (100, SamplingInterval, 120),
            (1, Minute, 60),
            (5, Minute, 60),
            (100, Minute, 120),
            (900, Minute, 900),
        ];
        for (sampling, period, want) in cases {
            assert_eq!(
                owned_alarm_period(sampling, period),
                want,
                "{sampling} s, {period:?}"
            );
        }
    }

    #[test]
    fn the_two_owned_alarms() {
        let (out, inn) = target_alarms(&Metric::CpuUtilization, 60.0, 5);
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
            assert_eq!(a.period_secs, 5);
            assert_eq!(a.missing_data, MissingData::Missing);
            a.validate().unwrap();
        }
    }
}
