//! Step adjustments: bounds are relative to the triggering alarm's threshold
//! (d = metric − threshold). At or above the threshold (d ≥ 0) a step's lower
//! bound is inclusive and its upper bound exclusive; below it (d < 0) the
//! reverse; a missing bound is infinite.
//!
//! Validation follows AWS step scaling, tightened so a breach always finds a
//! step: every step has at least one bound and lower < upper; at most one
//! step lacks a lower bound and at most one lacks an upper bound; sorted by
//! lower bound, each step starts exactly where the previous ends (no gaps,
//! no overlaps); and together they reach the threshold and run away from it
//! to infinity, so the covered range is [0, +∞), (−∞, 0] or (−∞, +∞): the
//! lowest step's lower bound is 0 or unset, the highest step's upper bound
//! is 0 or unset. Steps above the threshold suit a `>`/`>=` alarm, steps
//! below it a `<`/`<=` alarm; a rule may carry both.

use serde::{Deserialize, Serialize};

use super::num;
use crate::model::Invalid;

/// ESS allows up to 20 step adjustments per rule (as does AWS).
pub const MAX_STEPS: usize = 20;

/// One step: when d falls between the bounds, apply `adjustment` (read
/// according to the rule's adjustment type).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepAdjustment {
    #[serde(default)]
    pub lower_bound: Option<f64>,
    #[serde(default)]
    pub upper_bound: Option<f64>,
    pub adjustment: i64,
}

impl StepAdjustment {
    fn contains_above(&self, d: f64) -> bool {
        self.lower_bound.is_none_or(|l| d >= l) && self.upper_bound.is_none_or(|u| d < u)
    }

    fn contains_below(&self, d: f64) -> bool {
        self.lower_bound.is_none_or(|l| d > l) && self.upper_bound.is_none_or(|u| d <= u)
    }
}

/// The step a metric value selects, if any. At exactly the threshold the
/// above-threshold rule is tried first; when no step starts at 0, the
/// below-threshold rule is tried, so a `<=` alarm whose steps all lie below
/// the threshold still finds its step (0 is that step's inclusive upper
/// bound). A non-finite difference selects nothing.
pub fn matching_step(
    steps: &[StepAdjustment],
    metric_value: f64,
    threshold: f64,
) -> Option<&StepAdjustment> {
    let d = metric_value - threshold;
    if !d.is_finite() {
        return None;
    }
    if d >= 0.0 {
        let found = steps.iter().find(|s| s.contains_above(d));
        if found.is_some() || d > 0.0 {
            return found;
        }
    }
    steps.iter().find(|s| s.contains_below(d))
}

/// Every problem with a rule's steps at once; `field` names the list (e.g.
/// `step_adjustments`), and messages name the step by its index as given.
pub fn validate_steps(steps: &[StepAdjustment], field: &str) -> Result<(), Invalid> {
    let mut errors = Invalid::default();
    check_steps(steps, field, &mut errors);
    errors.into_result()
}

/// As `validate_steps`, adding to `errors`.
pub fn check_steps(steps: &[StepAdjustment], field: &str, errors: &mut Invalid) {
    if steps.is_empty() {
        errors.push(field, "at least one step is required");
        return;
    }
    if steps.len() > MAX_STEPS {
        errors.push(
            field,
            format!("at most {MAX_STEPS} steps, got {}", steps.len()),
        );
    }
    let at = |i: usize, bound: &str| format!("{field}[{i}].{bound}");

    // Steps that are well formed on their own take part in the ordering
    // checks; the others would only add confusing follow-on messages.
    let mut ok = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let mut good = true;
        for (name, bound) in [
            ("lower_bound", s.lower_bound),
            ("upper_bound", s.upper_bound),
        ] {
            if bound.is_some_and(|b| !b.is_finite()) {
                errors.push(
                    at(i, name),
                    "must be a finite number; leave it unset for infinity",
                );
                good = false;
            }
        }
        match (s.lower_bound, s.upper_bound) {
            (None, None) => {
                errors.push(
                    format!("{field}[{i}]"),
                    "needs a lower_bound or an upper_bound; a step unbounded on both sides is a simple rule",
                );
                good = false;
            }
            (Some(l), Some(u)) if good && l >= u => {
                errors.push(
                    at(i, "upper_bound"),
                    format!("{} must be greater than lower_bound {}", num(u), num(l)),
                );
                good = false;
            }
            _ => {}
        }
        if good {
            ok.push(i);
        }
    }
    if ok.is_empty() {
        return;
    }

    let open_below: Vec<usize> = ok
        .iter()
        .copied()
        .filter(|&i| steps[i].lower_bound.is_none())
        .collect();
    for &j in open_below.iter().skip(1) {
        errors.push(
            at(j, "lower_bound"),
            format!(
                "only one step may leave lower_bound unset (negative infinity); step {} already does",
                open_below[0]
            ),
        );
    }
    let open_above: Vec<usize> = ok
        .iter()
        .copied()
        .filter(|&i| steps[i].upper_bound.is_none())
        .collect();
    for &j in open_above.iter().skip(1) {
        errors.push(
            at(j, "upper_bound"),
            format!(
                "only one step may leave upper_bound unset (positive infinity); step {} already does",
                open_above[0]
            ),
        );
    }

    let lower = |i: usize| steps[i].lower_bound.unwrap_or(f64::NEG_INFINITY);
    let upper = |i: usize| steps[i].upper_bound.unwrap_or(f64::INFINITY);
    ok.sort_by(|&a, &b| lower(a).total_cmp(&lower(b)).then(a.cmp(&b)));
    for pair in ok.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // A second step with no lower bound was reported above.
        let Some(l) = steps[b].lower_bound else {
            continue;
        };
        match steps[a].upper_bound {
            None => errors.push(
                at(b, "lower_bound"),
                format!("{} overlaps step {a}, which has no upper bound", num(l)),
            ),
            Some(u) if l < u => errors.push(
                at(b, "lower_bound"),
                format!("{} overlaps step {a}, which runs to {}", num(l), num(u)),
            ),
            Some(u) if l > u => errors.push(
                at(b, "lower_bound"),
                format!(
                    "{} leaves a gap after step {a}, which ends at {}: values from {} to {} match no step",
                    num(l),
                    num(u),
                    num(u),
                    num(l)
                ),
            ),
            Some(_) => {}
        }
    }

    let lowest = ok[0];
    match steps[lowest].lower_bound {
        Some(l) if l < 0.0 => errors.push(
            at(lowest, "lower_bound"),
            format!(
                "the lowest step must start at the threshold (0) or have no lower_bound: values below {} match no step",
                num(l)
            ),
        ),
        Some(l) if l > 0.0 => errors.push(
            at(lowest, "lower_bound"),
            format!(
                "the lowest step must start at the threshold (0) or have no lower_bound: values from 0 to {} match no step",
                num(l)
            ),
        ),
        _ => {}
    }
    let highest = ok
        .iter()
        .copied()
        .max_by(|&a, &b| upper(a).total_cmp(&upper(b)).then(b.cmp(&a)))
        .unwrap_or(lowest);
    match steps[highest].upper_bound {
        Some(u) if u > 0.0 => errors.push(
            at(highest, "upper_bound"),
            format!(
                "the highest step must end at the threshold (0) or have no upper_bound: values above {} match no step",
                num(u)
            ),
        ),
        Some(u) if u < 0.0 => errors.push(
            at(highest, "upper_bound"),
            format!(
                "the highest step must end at the threshold (0) or have no upper_bound: values from {} to 0 match no step",
                num(u)
            ),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(lower: Option<f64>, upper: Option<f64>, adjustment: i64) -> StepAdjustment {
        StepAdjustment {
            lower_bound: lower,
            upper_bound: upper,
            adjustment,
        }
    }

    /// A scale-out set for a `>=` alarm: [0,10) +1, [10,20) +2, [20,∞) +3.
    fn above() -> Vec<StepAdjustment> {
        vec![
            s(Some(0.0), Some(10.0), 1),
            s(Some(10.0), Some(20.0), 2),
            s(Some(20.0), None, 3),
        ]
    }

    /// A scale-in set for a `<=` alarm: (−10,0] −1, (−20,−10] −2, (−∞,−20] −3.
    fn below() -> Vec<StepAdjustment> {
        vec![
            s(Some(-10.0), Some(0.0), -1),
            s(Some(-20.0), Some(-10.0), -2),
            s(None, Some(-20.0), -3),
        ]
    }

    fn both() -> Vec<StepAdjustment> {
        vec![
            s(None, Some(-10.0), -2),
            s(Some(-10.0), Some(0.0), -1),
            s(Some(0.0), Some(10.0), 1),
            s(Some(10.0), None, 2),
        ]
    }

    /// One step straddles the threshold.
    fn straddling() -> Vec<StepAdjustment> {
        vec![
            s(None, Some(-5.0), -1),
            s(Some(-5.0), Some(5.0), 0),
            s(Some(5.0), None, 1),
        ]
    }

    #[test]
    fn matching_step_table() {
        type Case = (&'static str, Vec<StepAdjustment>, f64, f64, Option<i64>);
        let cases: [Case; 30] = [
            ("at the threshold: first step", above(), 80.0, 80.0, Some(1)),
            ("just under a bound", above(), 89.9, 80.0, Some(1)),
            ("lower bound inclusive above", above(), 90.0, 80.0, Some(2)),
            ("upper bound exclusive above", above(), 99.99, 80.0, Some(2)),
            ("into the open step", above(), 100.0, 80.0, Some(3)),
            ("far above", above(), 1e9, 80.0, Some(3)),
            ("below the threshold, no step", above(), 79.0, 80.0, None),
            (
                "at the threshold: below steps",
                below(),
                30.0,
                30.0,
                Some(-1),
            ),
            ("just below", below(), 25.0, 30.0, Some(-1)),
            ("upper bound inclusive below", below(), 20.0, 30.0, Some(-2)),
            ("just above a bound below", below(), 20.1, 30.0, Some(-1)),
            ("lower bound exclusive below", below(), 10.0, 30.0, Some(-3)),
            ("into the open step below", below(), 9.0, 30.0, Some(-3)),
            ("far below", below(), -1000.0, 30.0, Some(-3)),
            ("above the threshold, no step", below(), 31.0, 30.0, None),
            ("both: at the threshold", both(), 50.0, 50.0, Some(1)),
            ("both: just below", both(), 49.5, 50.0, Some(-1)),
            (
                "both: -10 is the lower step's",
                both(),
                40.0,
                50.0,
                Some(-2),
            ),
            ("both: +10 is the upper step's", both(), 60.0, 50.0, Some(2)),
            ("both: just under +10", both(), 59.99, 50.0, Some(1)),
            ("both: far above", both(), 500.0, 50.0, Some(2)),
            ("both: far below", both(), -500.0, 50.0, Some(-2)),
            ("straddle: at threshold", straddling(), 50.0, 50.0, Some(0)),
            ("straddle: +5 goes up", straddling(), 55.0, 50.0, Some(1)),
            ("straddle: -5 goes down", straddling(), 45.0, 50.0, Some(-1)),
            ("straddle: -4.9 stays", straddling(), 45.1, 50.0, Some(0)),
            ("NaN metric", above(), f64::NAN, 80.0, None),
            ("infinite metric", above(), f64::INFINITY, 80.0, None),
            ("empty steps", vec![], 90.0, 80.0, None),
            ("negative threshold", above(), -5.0, -10.0, Some(1)),
        ];
        for (name, steps, metric, threshold, want) in cases {
            let got = matching_step(&steps, metric, threshold).map(|s| s.adjustment);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn validate_steps_table() {
        type Case = (
            &'static str,
            Vec<StepAdjustment>,
            &'static [(&'static str, &'static str)],
        );
        let cases: [Case; 20] = [
            ("above", above(), &[]),
            ("below", below(), &[]),
            ("both sides", both(), &[]),
            ("straddling", straddling(), &[]),
            ("one open step above", vec![s(Some(0.0), None, 1)], &[]),
            ("one open step below", vec![s(None, Some(0.0), -1)], &[]),
            (
                "empty",
                vec![],
                &[("step_adjustments", "at least one step is required")],
            ),
            (
                "gap",
                vec![s(Some(0.0), Some(10.0), 1), s(Some(20.0), None, 2)],
                &[(
                    "step_adjustments[1].lower_bound",
                    "20 leaves a gap after step 0, which ends at 10: values from 10 to 20 match no step",
                )],
            ),
            (
                "overlap",
                vec![s(Some(0.0), Some(10.0), 1), s(Some(5.0), None, 2)],
                &[(
                    "step_adjustments[1].lower_bound",
                    "5 overlaps step 0, which runs to 10",
                )],
            ),
            (
                "overlap, given out of order",
                vec![s(Some(10.0), None, 2), s(Some(0.0), Some(15.0), 1)],
                &[(
                    "step_adjustments[0].lower_bound",
                    "10 overlaps step 1, which runs to 15",
                )],
            ),
            (
                "two open upper bounds",
                vec![s(Some(0.0), None, 1), s(Some(5.0), None, 2)],
                &[
                    (
                        "step_adjustments[1].upper_bound",
                        "only one step may leave upper_bound unset (positive infinity); step 0 already does",
                    ),
                    (
                        "step_adjustments[1].lower_bound",
                        "5 overlaps step 0, which has no upper bound",
                    ),
                ],
            ),
            (
                "two open lower bounds",
                vec![s(None, Some(0.0), -1), s(None, Some(-5.0), -2)],
                &[(
                    "step_adjustments[1].lower_bound",
                    "only one step may leave lower_bound unset (negative infinity); step 0 already does",
                )],
            ),
            (
                "unbounded both sides",
                vec![s(None, None, 1)],
                &[(
                    "step_adjustments[0]",
                    "needs a lower_bound or an upper_bound; a step unbounded on both sides is a simple rule",
                )],
            ),
            (
                "lower not below upper",
                vec![
                    s(Some(0.0), Some(10.0), 1),
                    s(Some(10.0), Some(10.0), 2),
                    s(Some(10.0), None, 3),
                ],
                &[(
                    "step_adjustments[1].upper_bound",
                    "10 must be greater than lower_bound 10",
                )],
            ),
            (
                "not finite",
                vec![s(Some(f64::NAN), None, 1)],
                &[(
                    "step_adjustments[0].lower_bound",
                    "must be a finite number; leave it unset for infinity",
                )],
            ),
            (
                "above, not open to infinity",
                vec![s(Some(0.0), Some(10.0), 1)],
                &[(
                    "step_adjustments[0].upper_bound",
                    "the highest step must end at the threshold (0) or have no upper_bound: values above 10 match no step",
                )],
            ),
            (
                "above, not reaching the threshold",
                vec![s(Some(5.0), None, 1)],
                &[(
                    "step_adjustments[0].lower_bound",
                    "the lowest step must start at the threshold (0) or have no lower_bound: values from 0 to 5 match no step",
                )],
            ),
            (
                "below, not open to infinity",
                vec![s(Some(-10.0), Some(0.0), -1)],
                &[(
                    "step_adjustments[0].lower_bound",
                    "the lowest step must start at the threshold (0) or have no lower_bound: values below -10 match no step",
                )],
            ),
            (
                "below, not reaching the threshold",
                vec![s(None, Some(-2.5), -1)],
                &[(
                    "step_adjustments[0].upper_bound",
                    "the highest step must end at the threshold (0) or have no upper_bound: values from -2.5 to 0 match no step",
                )],
            ),
            (
                "every problem at once",
                vec![
                    s(Some(0.0), Some(10.0), 1),
                    s(Some(12.0), Some(20.0), 2),
                    s(None, None, 3),
                ],
                &[
                    (
                        "step_adjustments[2]",
                        "needs a lower_bound or an upper_bound; a step unbounded on both sides is a simple rule",
                    ),
                    (
                        "step_adjustments[1].lower_bound",
                        "12 leaves a gap after step 0, which ends at 10: values from 10 to 12 match no step",
                    ),
                    (
                        "step_adjustments[1].upper_bound",
                        "the highest step must end at the threshold (0) or have no upper_bound: values above 20 match no step",
                    ),
                ],
            ),
        ];
        for (name, steps, want) in cases {
            let got: Vec<(String, String)> = match validate_steps(&steps, "step_adjustments") {
                Ok(()) => vec![],
                Err(e) => e.0.into_iter().map(|f| (f.field, f.message)).collect(),
            };
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(f, m)| (f.to_string(), m.to_string()))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn too_many_steps() {
        let steps: Vec<StepAdjustment> = (0..21)
            .map(|i| {
                let l = f64::from(i);
                s(Some(l), if i == 20 { None } else { Some(l + 1.0) }, 1)
            })
            .collect();
        let e = validate_steps(&steps, "step_adjustments").unwrap_err();
        assert_eq!(e.to_string(), "step_adjustments: at most 20 steps, got 21");
    }

    #[test]
    fn every_valid_set_matches_every_value_on_its_side() {
        for (steps, lo, hi) in [
            (above(), 0.0, 100.0),
            (below(), -100.0, 0.0),
            (both(), -100.0, 100.0),
            (straddling(), -100.0, 100.0),
        ] {
            validate_steps(&steps, "s").unwrap();
            let mut d = lo;
            while d <= hi {
                let hits_above = steps.iter().filter(|s| s.contains_above(d)).count();
                let hits_below = steps.iter().filter(|s| s.contains_below(d)).count();
                // At exactly 0, `matching_step` falls back to the below rule.
                let hits = if d > 0.0 || (d == 0.0 && hits_above > 0) {
                    hits_above
                } else {
                    hits_below
                };
                assert_eq!(hits, 1, "d = {d}: exactly one step matches");
                d += 0.25;
            }
        }
    }

    #[test]
    fn serde_leaves_missing_bounds_unset() {
        let step: StepAdjustment =
            serde_json::from_str(r#"{"lower_bound": 10, "adjustment": 2}"#).unwrap();
        assert_eq!(step, s(Some(10.0), None, 2));
    }
}
