//! Alarms: what an event-triggered task watches, how one period's answers
//! become one point, and the OK / ALARM / INSUFFICIENT_DATA machine.
//!
//! Each period the caller builds a `PeriodInput` (one value per in-service
//! instance that answered, each instance's samples averaged within the
//! period), turns it into a `PeriodPoint` with `period_point`, and feeds the
//! point to `evaluate` with the alarm's previous `AlarmEval`. The state is:
//! - INSUFFICIENT_DATA when the latest point is missing and `missing_data`
//!   is `missing` (the default). A new alarm starts here too.
//! - ALARM when the last `evaluation_count` points all breach, a missing point
//!   counting as breaching under `breaching` and as not breaching under
//!   `not_breaching`.
//! - OK otherwise: the latest point is data, and it or one of the points
//!   before it does not breach (a streak shorter than `evaluation_count` is
//!   OK). A missing point under `missing` breaks a streak.
//! - Under `ignore` a missing period is not evaluated at all: the state and
//!   history stay as they were, and no actions run.
//!
//! Actions run on every evaluated period that ends in ALARM: on entering it
//! and again each period it stays there; cooldown and warmup decide whether
//! capacity moves.
//!
//! Incomplete data and scale-in: a period is complete when every in-service
//! instance answered (`data_complete`). Before an alarm's action lowers the
//! capacity, the engine asks `scale_in_allowed(spec, data_complete(input))`
//! and, when it says no, records the refusal instead of scaling in. Only an
//! operator who chose `missing_data = breaching` (a silent instance counts
//! towards this alarm firing) allows a scale-in on incomplete data; a silent
//! instance may be the busiest one, so everyone else keeps the fleet.
//! Scale-outs are never held back for incomplete data.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::cooldown::warming;
use super::num;
use crate::model::{Instance, Invalid, LifecycleState};

/// ESS: three consecutive breaching periods by default.
pub const DEFAULT_EVALUATION_COUNT: u32 = 3;
/// Longer than 100 periods is not an alarm but a report.
pub const MAX_EVALUATION_COUNT: u32 = 100;
/// The periods ESS offers, in seconds (ebb adds 1 s, its fastest sampling).
pub const PERIODS_SECS: &[u32] = &[1, 5, 15, 60, 120, 300, 900];
/// A custom metric's name: long enough for a Prometheus name, short enough to show.
pub const MAX_CUSTOM_METRIC_LEN: usize = 128;

/// What an alarm watches: a built-in agent metric (ESS names) or a custom one.
/// Stored as its name; any name that is not built in is custom.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Metric {
    CpuUtilization,
    MemoryUtilization,
    LoadAverage,
    IntranetRx,
    IntranetTx,
    TcpConnection,
    Custom(String),
}

impl Metric {
    pub const BUILT_IN: &'static [Metric] = &[
        Metric::CpuUtilization,
        Metric::MemoryUtilization,
        Metric::LoadAverage,
        Metric::IntranetRx,
        Metric::IntranetTx,
        Metric::TcpConnection,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Metric::CpuUtilization => "CpuUtilization",
            Metric::MemoryUtilization => "MemoryUtilization",
            Metric::LoadAverage => "LoadAverage",
            Metric::IntranetRx => "IntranetRx",
            Metric::IntranetTx => "IntranetTx",
            Metric::TcpConnection => "TcpConnection",
            Metric::Custom(name) => name,
        }
    }

    /// A percentage, so 0–100.
    pub fn is_percent(&self) -> bool {
        matches!(self, Metric::CpuUtilization | Metric::MemoryUtilization)
    }

    /// Checks a custom metric's name; built-in metrics are always valid.
    pub fn check(&self, field: &str, errors: &mut Invalid) {
        let Metric::Custom(name) = self else { return };
        if name.is_empty() {
            errors.push(field, "a custom metric needs a name");
        } else if name.len() > MAX_CUSTOM_METRIC_LEN {
            errors.push(
                field,
                format!("a custom metric name is at most {MAX_CUSTOM_METRIC_LEN} characters"),
            );
        } else if !custom_name_chars(name) {
            errors.push(
                field,
                format!(
                    "custom metric `{name}` may use only letters, digits, '_', '.', ':' and '-'"
                ),
            );
        }
    }

    /// Whether `name` can name a custom metric: not empty, at most
    /// [`MAX_CUSTOM_METRIC_LEN`], of the allowed characters, not built in.
    pub fn is_custom_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_CUSTOM_METRIC_LEN
            && custom_name_chars(name)
            && !Metric::BUILT_IN.iter().any(|m| m.as_str() == name)
    }
}

/// Letters, digits, '_', '.', ':' and '-': a Prometheus name fits, and so
/// does a dotted one.
fn custom_name_chars(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

impl From<String> for Metric {
    fn from(s: String) -> Self {
        Metric::BUILT_IN
            .iter()
            .find(|m| m.as_str() == s)
            .cloned()
            .unwrap_or(Metric::Custom(s))
    }
}

impl From<Metric> for String {
    fn from(m: Metric) -> Self {
        match m {
            Metric::Custom(name) => name,
            other => other.as_str().to_string(),
        }
    }
}

impl FromStr for Metric {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Metric::from(s.to_string()))
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

string_enum!(
    /// How the group's per-instance values become one value.
    Statistic {
        Average = "Average",
        Minimum = "Minimum",
        Maximum = "Maximum",
        P50 = "p50",
        P90 = "p90",
        P99 = "p99",
    }
);

string_enum!(
    /// How the value is compared with the threshold; true means breaching.
    Comparison { Ge = ">=", Le = "<=", Gt = ">", Lt = "<" }
);

impl Comparison {
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Ge => value >= threshold,
            Comparison::Le => value <= threshold,
            Comparison::Gt => value > threshold,
            Comparison::Lt => value < threshold,
        }
    }
}

string_enum!(
    /// How a period without enough data is treated.
    MissingData {
        Missing = "missing",
        Breaching = "breaching",
        NotBreaching = "not_breaching",
        Ignore = "ignore",
    }
);

string_enum!(
    AlarmState { Ok = "OK", Alarm = "ALARM", InsufficientData = "INSUFFICIENT_DATA" }
);

fn default_evaluation_count() -> u32 {
    DEFAULT_EVALUATION_COUNT
}

fn default_missing_data() -> MissingData {
    MissingData::Missing
}

/// What an alarm watches and when it breaches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmSpec {
    pub metric: Metric,
    pub statistic: Statistic,
    pub period_secs: u32,
    pub comparison: Comparison,
    pub threshold: f64,
    #[serde(default = "default_evaluation_count")]
    pub evaluation_count: u32,
    #[serde(default = "default_missing_data")]
    pub missing_data: MissingData,
}

impl AlarmSpec {
    /// Every problem at once, each naming its field.
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut errors = Invalid::default();
        self.check("", &mut errors);
        errors.into_result()
    }

    /// As `validate`, with field names after `prefix` (e.g. `alarm.`).
    pub fn check(&self, prefix: &str, errors: &mut Invalid) {
        self.metric.check(&format!("{prefix}metric"), errors);
        if !PERIODS_SECS.contains(&self.period_secs) {
            let list: Vec<String> = PERIODS_SECS.iter().map(u32::to_string).collect();
            errors.push(
                format!("{prefix}period_secs"),
                format!("{} is not one of {}", self.period_secs, list.join(", ")),
            );
        }
        if !self.threshold.is_finite() {
            errors.push(format!("{prefix}threshold"), "must be a finite number");
        }
        if !(1..=MAX_EVALUATION_COUNT).contains(&self.evaluation_count) {
            errors.push(
                format!("{prefix}evaluation_count"),
                format!(
                    "{} is outside 1..={MAX_EVALUATION_COUNT}",
                    self.evaluation_count
                ),
            );
        }
    }

    /// "CpuUtilization Average > 80", for explanations.
    pub fn condition(&self) -> String {
        format!(
            "{} {} {} {}",
            self.metric,
            self.statistic,
            self.comparison,
            num(self.threshold)
        )
    }
}

/// One statistic over the group's values. Non-finite values are left out;
/// None when no value remains. Percentiles are exact nearest-rank (the
/// smallest value with at least p % of the values at or below it). A group
/// has at most 10 000 instances, one value each, so sorting is cheap; an
/// HDR histogram would quantise (at 3 significant figures a p90 of exactly
/// 90.000, scaled ×1000, reads back as 90.047 and breaches `> 90`), needs
/// megabytes per evaluation at 5 figures, and cannot hold negative custom
/// metrics.
pub fn aggregate(values: &[f64], statistic: Statistic) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let percentile = |p: usize, v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let rank = (p * v.len()).div_ceil(100).clamp(1, v.len());
        v[rank - 1]
    };
    Some(match statistic {
        Statistic::Average => v.iter().sum::<f64>() / v.len() as f64,
        Statistic::Minimum => v.iter().copied().fold(f64::INFINITY, f64::min),
        Statistic::Maximum => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Statistic::P50 => percentile(50, &mut v),
        Statistic::P90 => percentile(90, &mut v),
        Statistic::P99 => percentile(99, &mut v),
    })
}

/// One period of a group's answers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PeriodInput {
    /// In-service instances that count in the metric (not Standby, not
    /// Protected, not warming) during the period.
    pub in_service: u32,
    /// One value per instance that answered: its samples averaged over the period.
    pub answered: Vec<f64>,
}

impl PeriodInput {
    fn answered_count(&self) -> usize {
        self.answered.iter().filter(|v| v.is_finite()).count()
    }
}

/// A period's input from the group's instances: those in service and, for
/// a target-tracking rule's alarms (`warmup_secs`), past their warmup at
/// the period's end count; `mean_of` gives an instance's samples in the
/// period averaged, or None when it sent none. The controller reads its
/// sample rings through `mean_of`, the simulator its own.
pub fn period_input<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
    warmup_secs: Option<u32>,
    end_ms: i64,
    mut mean_of: impl FnMut(&Instance) -> Option<f64>,
) -> PeriodInput {
    let mut input = PeriodInput::default();
    for inst in instances {
        if inst.lifecycle_state != LifecycleState::InService
            || warmup_secs.is_some_and(|w| warming(inst.in_service_at_ms, w, end_ms))
        {
            continue;
        }
        input.in_service += 1;
        if let Some(v) = mean_of(inst) {
            input.answered.push(v);
        }
    }
    input
}

/// A period reduced to one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PeriodPoint {
    Breaching(f64),
    NotBreaching(f64),
    /// No in-service instance, or fewer than half of them answered.
    Missing,
}

/// The point a period gives. Missing when no instance is in service or fewer
/// than half answered (exactly half is enough); a non-finite answer counts
/// as no answer.
pub fn period_point(input: &PeriodInput, spec: &AlarmSpec) -> PeriodPoint {
    let answered = input.answered_count();
    if input.in_service == 0 || answered * 2 < input.in_service as usize {
        return PeriodPoint::Missing;
    }
    match aggregate(&input.answered, spec.statistic) {
        None => PeriodPoint::Missing,
        Some(v) if spec.comparison.breaches(v, spec.threshold) => PeriodPoint::Breaching(v),
        Some(v) => PeriodPoint::NotBreaching(v),
    }
}

/// Every in-service instance answered in the period.
pub fn data_complete(input: &PeriodInput) -> bool {
    input.in_service > 0 && input.answered_count() >= input.in_service as usize
}

/// Whether an action of this alarm may lower the capacity after a period
/// whose data was (in)complete: always on complete data, and on incomplete
/// data only when `missing_data` is `breaching`.
pub fn scale_in_allowed(spec: &AlarmSpec, data_complete: bool) -> bool {
    data_complete || spec.missing_data == MissingData::Breaching
}

/// An alarm's evaluation state, as stored between periods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEval {
    pub state: AlarmState,
    /// When the alarm entered `state` (Unix ms); None for a new alarm.
    pub since_ms: Option<i64>,
    /// The latest points, oldest first, at most `evaluation_count` of them.
    pub history: VecDeque<PeriodPoint>,
}

impl Default for AlarmEval {
    /// A new alarm: no data yet.
    fn default() -> Self {
        Self {
            state: AlarmState::InsufficientData,
            since_ms: None,
            history: VecDeque::new(),
        }
    }
}

/// The result of one period's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub new: AlarmEval,
    /// (from, to) when the state changed.
    pub transition: Option<(AlarmState, AlarmState)>,
    /// The alarm's actions should run this period.
    pub fire_actions: bool,
    /// The values per period, the condition and the outcome, for the explain view.
    pub explanation: String,
}

fn counts_as_breaching(point: PeriodPoint, missing_data: MissingData) -> bool {
    match point {
        PeriodPoint::Breaching(_) => true,
        PeriodPoint::NotBreaching(_) => false,
        PeriodPoint::Missing => missing_data == MissingData::Breaching,
    }
}

fn describe_point(point: PeriodPoint, missing_data: MissingData) -> String {
    match point {
        PeriodPoint::Breaching(v) => format!("{} (breaching)", num(v)),
        PeriodPoint::NotBreaching(v) => format!("{} (not breaching)", num(v)),
        PeriodPoint::Missing => match missing_data {
            MissingData::Missing => "missing".into(),
            MissingData::Breaching => "missing (counts as breaching)".into(),
            MissingData::NotBreaching => "missing (counts as not breaching)".into(),
            MissingData::Ignore => "missing (ignored)".into(),
        },
    }
}

/// Feeds one period's point to an alarm.
pub fn evaluate(prev: &AlarmEval, point: PeriodPoint, spec: &AlarmSpec, now_ms: i64) -> Evaluation {
    let n = spec.evaluation_count.max(1) as usize;
    let condition = format!(
        "{} for {n} consecutive {} s period{}",
        spec.condition(),
        spec.period_secs,
        if n == 1 { "" } else { "s" }
    );

    if point == PeriodPoint::Missing && spec.missing_data == MissingData::Ignore {
        return Evaluation {
            new: prev.clone(),
            transition: None,
            fire_actions: false,
            explanation: format!(
                "{condition}: this period had no data and missing_data is ignore, so the alarm stays {} and runs no actions",
                prev.state
            ),
        };
    }

    let mut history = prev.history.clone();
    history.push_back(point);
    while history.len() > n {
        history.pop_front();
    }
    let state = if point == PeriodPoint::Missing && spec.missing_data == MissingData::Missing {
        AlarmState::InsufficientData
    } else if history.len() == n
        && history
            .iter()
            .all(|p| counts_as_breaching(*p, spec.missing_data))
    {
        AlarmState::Alarm
    } else {
        AlarmState::Ok
    };
    let transition = (state != prev.state).then_some((prev.state, state));
    let fire_actions = state == AlarmState::Alarm;

    let points: Vec<String> = history
        .iter()
        .map(|p| describe_point(*p, spec.missing_data))
        .collect();
    let outcome = match transition {
        Some((from, to)) => format!("{to} (was {from})"),
        None => format!("stays {state}"),
    };
    let actions = if fire_actions {
        "actions run"
    } else {
        "no actions"
    };
    let explanation = format!(
        "{condition}; last {} of {n}: {} → {outcome}; {actions}",
        history.len(),
        points.join(", ")
    );

    Evaluation {
        new: AlarmEval {
            state,
            since_ms: if transition.is_some() {
                Some(now_ms)
            } else {
                prev.since_ms
            },
            history,
        },
        transition,
        fire_actions,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::AlarmState::{Alarm, InsufficientData as Insufficient, Ok as Fine};
    use super::*;

    fn spec(comparison: Comparison, threshold: f64) -> AlarmSpec {
        AlarmSpec {
            metric: Metric::CpuUtilization,
            statistic: Statistic::Average,
            period_secs: 60,
            comparison,
            threshold,
            evaluation_count: DEFAULT_EVALUATION_COUNT,
            missing_data: MissingData::Missing,
        }
    }

    #[test]
    fn aggregate_table() {
        let one_to = |n: u32| (1..=n).map(f64::from).collect::<Vec<_>>();
        let cases: [(&str, Vec<f64>, Statistic, Option<f64>); 14] = [
            ("empty", vec![], Statistic::Average, None),
            ("only NaN", vec![f64::NAN], Statistic::Maximum, None),
            (
                "average",
                vec![10.0, 20.0, 60.0],
                Statistic::Average,
                Some(30.0),
            ),
            (
                "average skips NaN",
                vec![10.0, f64::NAN, 20.0],
                Statistic::Average,
                Some(15.0),
            ),
            (
                "minimum",
                vec![3.0, -1.0, 2.0],
                Statistic::Minimum,
                Some(-1.0),
            ),
            (
                "maximum",
                vec![3.0, -1.0, 2.0],
                Statistic::Maximum,
                Some(3.0),
            ),
            (
                "p50 of 4 is the 2nd",
                vec![4.0, 1.0, 3.0, 2.0],
                Statistic::P50,
                Some(2.0),
            ),
            (
                "p50 of 3 is the middle",
                vec![3.0, 1.0, 2.0],
                Statistic::P50,
                Some(2.0),
            ),
            ("p90 of 1..=10", one_to(10), Statistic::P90, Some(9.0)),
            (
                "p90 of 1..=11 rounds the rank up",
                one_to(11),
                Statistic::P90,
                Some(10.0),
            ),
            ("p99 of 1..=100", one_to(100), Statistic::P99, Some(99.0)),
            (
                "p99 of 1..=10 is the max",
                one_to(10),
                Statistic::P99,
                Some(10.0),
            ),
            ("p99 of one value", vec![5.5], Statistic::P99, Some(5.5)),
            ("p50 of one value", vec![0.25], Statistic::P50, Some(0.25)),
        ];
        for (name, values, stat, want) in cases {
            assert_eq!(aggregate(&values, stat), want, "{name}");
        }
    }

    #[test]
    fn period_point_table() {
        use PeriodPoint::{Breaching as B, Missing as M, NotBreaching as N};
        let input = |in_service, answered: &[f64]| PeriodInput {
            in_service,
            answered: answered.to_vec(),
        };
        let cases: [(&str, PeriodInput, Comparison, f64, PeriodPoint, bool); 13] = [
            (
                "nothing in service",
                input(0, &[]),
                Comparison::Gt,
                80.0,
                M,
                false,
            ),
            (
                "stray answers, nothing in service",
                input(0, &[90.0]),
                Comparison::Gt,
                80.0,
                M,
                false,
            ),
            (
                "1 of 4 answered",
                input(4, &[90.0]),
                Comparison::Gt,
                80.0,
                M,
                false,
            ),
            (
                "1 of 3 answered",
                input(3, &[90.0]),
                Comparison::Gt,
                80.0,
                M,
                false,
            ),
            (
                "half answered is enough",
                input(4, &[90.0, 70.0]),
                Comparison::Gt,
                79.0,
                B(80.0),
                false,
            ),
            (
                "NaN is no answer",
                input(2, &[f64::NAN]),
                Comparison::Gt,
                80.0,
                M,
                false,
            ),
            (
                "all answered, breaching",
                input(2, &[90.0, 80.0]),
                Comparison::Gt,
                80.0,
                B(85.0),
                true,
            ),
            (
                "> at the threshold",
                input(1, &[80.0]),
                Comparison::Gt,
                80.0,
                N(80.0),
                true,
            ),
            (
                ">= at the threshold",
                input(1, &[80.0]),
                Comparison::Ge,
                80.0,
                B(80.0),
                true,
            ),
            (
                "< at the threshold",
                input(1, &[20.0]),
                Comparison::Lt,
                20.0,
                N(20.0),
                true,
            ),
            (
                "<= at the threshold",
                input(1, &[20.0]),
                Comparison::Le,
                20.0,
                B(20.0),
                true,
            ),
            (
                "< below",
                input(1, &[10.0]),
                Comparison::Lt,
                20.0,
                B(10.0),
                true,
            ),
            (
                "3 of 4 answered: a point, not complete",
                input(4, &[1.0, 2.0, 3.0]),
                Comparison::Lt,
                20.0,
                B(2.0),
                false,
            ),
        ];
        for (name, input, cmp, threshold, want, complete) in cases {
            assert_eq!(period_point(&input, &spec(cmp, threshold)), want, "{name}");
            assert_eq!(data_complete(&input), complete, "{name}: complete");
        }
    }

    #[test]
    fn scale_in_on_incomplete_data_only_when_missing_data_is_breaching() {
        let cases = [
            (MissingData::Missing, true, true),
            (MissingData::Missing, false, false),
            (MissingData::NotBreaching, false, false),
            (MissingData::Ignore, false, false),
            (MissingData::Breaching, false, true),
            (MissingData::Breaching, true, true),
        ];
        for (missing_data, complete, allowed) in cases {
            let s = AlarmSpec {
                missing_data,
                ..spec(Comparison::Lt, 20.0)
            };
            assert_eq!(
                scale_in_allowed(&s, complete),
                allowed,
                "{missing_data}, complete: {complete}"
            );
        }
    }

    /// Runs `points` through a fresh alarm; returns (state, fired) per period.
    fn run(s: &AlarmSpec, points: &str) -> Vec<(AlarmState, bool)> {
        let mut eval = AlarmEval::default();
        let mut out = Vec::new();
        for (i, c) in points.chars().enumerate() {
            let p = match c {
                'B' => PeriodPoint::Breaching(90.0),
                'N' => PeriodPoint::NotBreaching(10.0),
                'M' => PeriodPoint::Missing,
                _ => unreachable!("B, N or M"),
            };
            let e = evaluate(&eval, p, s, i as i64 * 60_000);
            assert!(e.new.history.len() <= s.evaluation_count as usize);
            assert_eq!(
                e.transition.is_some(),
                e.new.state != eval.state,
                "a transition is reported exactly when the state changes"
            );
            out.push((e.new.state, e.fire_actions));
            eval = e.new;
        }
        out
    }

    #[test]
    fn evaluation_table() {
        const A: (AlarmState, bool) = (Alarm, true);
        const O: (AlarmState, bool) = (Fine, false);
        const I: (AlarmState, bool) = (Insufficient, false);
        type Case = (
            &'static str,
            MissingData,
            u32,
            &'static str,
            &'static [(AlarmState, bool)],
        );
        let cases: [Case; 13] = [
            (
                "three breaches alarm",
                MissingData::Missing,
                3,
                "BBB",
                &[O, O, A],
            ),
            (
                "actions repeat while in ALARM",
                MissingData::Missing,
                3,
                "BBBBB",
                &[O, O, A, A, A],
            ),
            (
                "one good period ends it",
                MissingData::Missing,
                3,
                "BBBN",
                &[O, O, A, O],
            ),
            (
                "a good period resets the streak",
                MissingData::Missing,
                3,
                "BBNBB",
                &[O, O, O, O, O],
            ),
            (
                "missing: no data is INSUFFICIENT_DATA",
                MissingData::Missing,
                3,
                "BBM",
                &[O, O, I],
            ),
            (
                "missing: it breaks the streak",
                MissingData::Missing,
                3,
                "BBMBBB",
                &[O, O, I, O, O, A],
            ),
            (
                "missing: ALARM to INSUFFICIENT_DATA",
                MissingData::Missing,
                3,
                "BBBM",
                &[O, O, A, I],
            ),
            (
                "breaching: counts towards ALARM",
                MissingData::Breaching,
                3,
                "BBM",
                &[O, O, A],
            ),
            (
                "breaching: all missing alarms",
                MissingData::Breaching,
                3,
                "MMM",
                &[O, O, A],
            ),
            (
                "not_breaching: never alarms on a gap",
                MissingData::NotBreaching,
                3,
                "BBMB",
                &[O, O, O, O],
            ),
            (
                "ignore: keeps state, keeps the streak",
                MissingData::Ignore,
                3,
                "BBMB",
                &[O, O, O, A],
            ),
            (
                "ignore: stays in ALARM without actions",
                MissingData::Ignore,
                3,
                "BBBMB",
                &[O, O, A, (Alarm, false), A],
            ),
            (
                "evaluation_count 1",
                MissingData::Missing,
                1,
                "NBN",
                &[O, A, O],
            ),
        ];
        for (name, missing_data, evaluation_count, points, want) in cases {
            let s = AlarmSpec {
                missing_data,
                evaluation_count,
                ..spec(Comparison::Gt, 80.0)
            };
            assert_eq!(run(&s, points), want, "{name}");
        }
    }

    #[test]
    fn a_new_alarm_waits_for_data_and_records_transitions() {
        let s = spec(Comparison::Gt, 80.0);
        let fresh = AlarmEval::default();
        assert_eq!(fresh.state, Insufficient);

        let e = evaluate(&fresh, PeriodPoint::Missing, &s, 1_000);
        assert_eq!(e.transition, None);
        assert_eq!(e.new.since_ms, None);

        let e = evaluate(&e.new, PeriodPoint::NotBreaching(50.0), &s, 2_000);
        assert_eq!(e.transition, Some((Insufficient, Fine)));
        assert_eq!(e.new.since_ms, Some(2_000));

        let e = evaluate(&e.new, PeriodPoint::NotBreaching(55.0), &s, 3_000);
        assert_eq!(e.transition, None);
        assert_eq!(
            e.new.since_ms,
            Some(2_000),
            "since only moves on a transition"
        );
    }

    #[test]
    fn ignore_leaves_the_stored_state_untouched() {
        let s = AlarmSpec {
            missing_data: MissingData::Ignore,
            ..spec(Comparison::Gt, 80.0)
        };
        let prev = AlarmEval {
            state: Alarm,
            since_ms: Some(5),
            history: [PeriodPoint::Breaching(90.0); 3].into(),
        };
        let e = evaluate(&prev, PeriodPoint::Missing, &s, 10);
        assert_eq!(e.new, prev);
        assert!(!e.fire_actions);
        assert_eq!(
            e.explanation,
            "CpuUtilization Average > 80 for 3 consecutive 60 s periods: this period had no data and missing_data is ignore, so the alarm stays ALARM and runs no actions"
        );
    }

    #[test]
    fn a_shorter_evaluation_count_trims_history() {
        let prev = AlarmEval {
            state: Fine,
            since_ms: None,
            history: [PeriodPoint::NotBreaching(1.0); 5].into(),
        };
        let s = spec(Comparison::Gt, 80.0);
        let e = evaluate(&prev, PeriodPoint::Breaching(90.0), &s, 0);
        assert_eq!(e.new.history.len(), 3);
        assert_eq!(e.new.history.back(), Some(&PeriodPoint::Breaching(90.0)));
    }

    #[test]
    fn explanations_list_values_and_the_comparison() {
        let s = AlarmSpec {
            missing_data: MissingData::Breaching,
            ..spec(Comparison::Ge, 80.0)
        };
        let mut eval = AlarmEval::default();
        let mut last = String::new();
        for p in [
            PeriodPoint::Breaching(81.25),
            PeriodPoint::Missing,
            PeriodPoint::Breaching(90.0),
        ] {
            let e = evaluate(&eval, p, &s, 0);
            eval = e.new;
            last = e.explanation;
        }
        assert_eq!(
            last,
            "CpuUtilization Average >= 80 for 3 consecutive 60 s periods; last 3 of 3: 81.25 (breaching), missing (counts as breaching), 90 (breaching) → ALARM (was OK); actions run"
        );

        let e = evaluate(&eval, PeriodPoint::NotBreaching(79.9), &s, 0);
        assert_eq!(
            e.explanation,
            "CpuUtilization Average >= 80 for 3 consecutive 60 s periods; last 3 of 3: missing (counts as breaching), 90 (breaching), 79.9 (not breaching) → OK (was ALARM); no actions"
        );
    }

    #[test]
    fn spec_validation_table() {
        let base = spec(Comparison::Gt, 80.0);
        let with = |f: fn(&mut AlarmSpec)| {
            let mut s = base.clone();
            f(&mut s);
            s
        };
        let cases: [(&str, AlarmSpec, &[&str]); 10] = [
            ("valid", base.clone(), &[]),
            ("the longest period", with(|s| s.period_secs = 900), &[]),
            (
                "period not listed",
                with(|s| s.period_secs = 30),
                &["period_secs"],
            ),
            ("period 0", with(|s| s.period_secs = 0), &["period_secs"]),
            (
                "evaluation_count 0",
                with(|s| s.evaluation_count = 0),
                &["evaluation_count"],
            ),
            (
                "evaluation_count 101",
                with(|s| s.evaluation_count = 101),
                &["evaluation_count"],
            ),
            (
                "NaN threshold",
                with(|s| s.threshold = f64::NAN),
                &["threshold"],
            ),
            (
                "empty custom metric",
                with(|s| s.metric = Metric::Custom(String::new())),
                &["metric"],
            ),
            (
                "custom metric with a space",
                with(|s| s.metric = Metric::Custom("queue depth".into())),
                &["metric"],
            ),
            (
                "every problem at once",
                with(|s| {
                    s.metric = Metric::Custom(String::new());
                    s.period_secs = 2;
                    s.threshold = f64::INFINITY;
                    s.evaluation_count = 0;
                }),
                &["metric", "period_secs", "threshold", "evaluation_count"],
            ),
        ];
        for (name, s, want) in cases {
            let got: Vec<String> = match s.validate() {
                Ok(()) => vec![],
                Err(e) => e.0.into_iter().map(|f| f.field).collect(),
            };
            assert_eq!(got, want, "{name}");
        }
        for &p in PERIODS_SECS {
            let mut s = base.clone();
            s.period_secs = p;
            assert!(s.validate().is_ok(), "period {p}");
        }
        let e = with(|s| s.period_secs = 30).validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "period_secs: 30 is not one of 1, 5, 15, 60, 120, 300, 900"
        );
    }

    #[test]
    fn names_on_the_wire() {
        let cases = [
            (serde_json::to_string(&Statistic::P50).unwrap(), "\"p50\""),
            (
                serde_json::to_string(&Statistic::Average).unwrap(),
                "\"Average\"",
            ),
            (serde_json::to_string(&Comparison::Ge).unwrap(), "\">=\""),
            (serde_json::to_string(&Comparison::Lt).unwrap(), "\"<\""),
            (
                serde_json::to_string(&MissingData::NotBreaching).unwrap(),
                "\"not_breaching\"",
            ),
            (
                serde_json::to_string(&AlarmState::InsufficientData).unwrap(),
                "\"INSUFFICIENT_DATA\"",
            ),
            (serde_json::to_string(&AlarmState::Ok).unwrap(), "\"OK\""),
            (
                serde_json::to_string(&Metric::IntranetRx).unwrap(),
                "\"IntranetRx\"",
            ),
            (
                serde_json::to_string(&Metric::Custom("queue_depth".into())).unwrap(),
                "\"queue_depth\"",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        assert_eq!(
            "TcpConnection".parse::<Metric>().unwrap(),
            Metric::TcpConnection
        );
        assert_eq!(
            "queue_depth".parse::<Metric>().unwrap(),
            Metric::Custom("queue_depth".into())
        );
        assert_eq!(">=".parse::<Comparison>().unwrap(), Comparison::Ge);
        assert!("=>".parse::<Comparison>().is_err());
    }

    #[test]
    fn a_stored_spec_takes_the_defaults() {
        let s: AlarmSpec = serde_json::from_str(
            r#"{"metric":"CpuUtilization","statistic":"p90","period_secs":60,"comparison":">","threshold":80}"#,
        )
        .unwrap();
        assert_eq!(s.evaluation_count, 3);
        assert_eq!(s.missing_data, MissingData::Missing);
        assert_eq!(s.statistic, Statistic::P90);
        let eval = AlarmEval::default();
        let round: AlarmEval =
            serde_json::from_str(&serde_json::to_string(&eval).unwrap()).unwrap();
        assert_eq!(round, eval);
    }
}
