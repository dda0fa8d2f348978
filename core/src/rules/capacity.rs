//! Capacity arithmetic: with C the current capacity and V a rule's value,
//! `QuantityChangeInCapacity` gives C + V, `PercentChangeInCapacity` gives
//! C + round(C·V/100) (half away from zero) and then at least
//! `min_adjustment_magnitude` in the direction of V, `TotalCapacity` gives V;
//! the result is clamped to [min, max], so never below 0.

use serde::{Deserialize, Serialize};

use crate::model::{Invalid, MAX_GROUP_SIZE};

string_enum!(
    /// How a rule's value changes the capacity (ESS names).
    AdjustmentType {
        QuantityChangeInCapacity = "QuantityChangeInCapacity",
        PercentChangeInCapacity = "PercentChangeInCapacity",
        TotalCapacity = "TotalCapacity",
    }
);

/// A change larger than the largest group is a typo.
pub const MAX_QUANTITY_CHANGE: i64 = MAX_GROUP_SIZE as i64;
/// Removing more than all instances means nothing more than removing all.
pub const MIN_PERCENT_CHANGE: i64 = -100;
/// ESS's upper bound: a hundredfold growth in one step.
pub const MAX_PERCENT_CHANGE: i64 = 10_000;
/// A total beyond the largest group could never be reached.
pub const MAX_TOTAL_CAPACITY: i64 = MAX_GROUP_SIZE as i64;
/// The floor on a percent change's size cannot exceed the largest group.
pub const MAX_MIN_ADJUSTMENT_MAGNITUDE: u32 = MAX_GROUP_SIZE;

/// Which bound held the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Clamped {
    /// The raw target was above `max_size` (the value).
    Max(u32),
    /// The raw target was below `min_size` (the value).
    Min(u32),
}

/// What a change does to the capacity, with enough detail to explain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityOutcome {
    pub adjustment_type: AdjustmentType,
    pub value: i64,
    pub current: u32,
    /// Percent only: the rounded change that `min_adjustment_magnitude` raised.
    pub rounded_change: Option<i64>,
    /// The target before clamping; may be negative or above max.
    pub raw: i64,
    /// The target within [min, max].
    pub target: u32,
    pub clamped: Option<Clamped>,
}

impl CapacityOutcome {
    /// Instances added (positive) or removed (negative).
    pub fn change(&self) -> i64 {
        i64::from(self.target) - i64::from(self.current)
    }

    /// One sentence for the explain view, e.g. "adding 3 to 2 gives 5, held
    /// to max_size 3: adds 1".
    pub fn describe(&self) -> String {
        let v = self.value;
        let c = self.current;
        let head = match self.adjustment_type {
            AdjustmentType::QuantityChangeInCapacity if v >= 0 => format!("adding {v} to {c}"),
            AdjustmentType::QuantityChangeInCapacity => {
                format!("removing {} from {c}", v.unsigned_abs())
            }
            AdjustmentType::PercentChangeInCapacity => {
                let delta = self.raw - i64::from(c);
                match self.rounded_change {
                    Some(r) => format!(
                        "{v:+}% of {c} rounds to {r:+}, raised to the minimum adjustment {delta:+},"
                    ),
                    None => format!("{v:+}% of {c} is {delta:+},"),
                }
            }
            AdjustmentType::TotalCapacity => format!("setting the total capacity to {v}"),
        };
        let tail = match self.clamped {
            None => format!("gives {}", self.target),
            Some(Clamped::Max(m)) => format!("gives {}, held to max_size {m}", self.raw),
            Some(Clamped::Min(m)) => format!("gives {}, held to min_size {m}", self.raw),
        };
        let change = match self.change() {
            0 => "no change".to_string(),
            n if n > 0 => format!("adds {n}"),
            n => format!("removes {}", n.unsigned_abs()),
        };
        format!("{head} {tail}: {change}")
    }
}

/// The capacity a change gives. `min_adjustment_magnitude` only applies to
/// `PercentChangeInCapacity` with V ≠ 0 and is ignored otherwise (validation
/// rejects it elsewhere). A group whose min is above its max (never valid)
/// is held at min, as a modify does.
pub fn capacity_after(
    adjustment_type: AdjustmentType,
    value: i64,
    min_adjustment_magnitude: Option<u32>,
    current: u32,
    min: u32,
    max: u32,
) -> CapacityOutcome {
    let c = i64::from(current);
    let mut rounded_change = None;
    let raw = match adjustment_type {
        AdjustmentType::QuantityChangeInCapacity => c.saturating_add(value),
        AdjustmentType::PercentChangeInCapacity => {
            let mut delta = percent_of(c, value);
            if let Some(m) = min_adjustment_magnitude
                && value != 0
                && delta.abs() < i64::from(m)
            {
                rounded_change = Some(delta);
                delta = value.signum() * i64::from(m);
            }
            c.saturating_add(delta)
        }
        AdjustmentType::TotalCapacity => value,
    };
    let upper = max.max(min);
    let (target, clamped) = if raw > i64::from(upper) {
        (upper, Some(Clamped::Max(upper)))
    } else if raw < i64::from(min) {
        (min, Some(Clamped::Min(min)))
    } else {
        (u32::try_from(raw).unwrap_or(min), None)
    };
    CapacityOutcome {
        adjustment_type,
        value,
        current,
        rounded_change,
        raw,
        target,
        clamped,
    }
}

/// round(c·v/100), half away from zero, in exact integer arithmetic.
fn percent_of(c: i64, v: i64) -> i64 {
    let n = i128::from(c) * i128::from(v);
    let q = (n.abs() + 50) / 100;
    let q = if n < 0 { -q } else { q };
    i64::try_from(q).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

/// The values an adjustment of this type may take.
pub fn adjustment_range(adjustment_type: AdjustmentType) -> (i64, i64) {
    match adjustment_type {
        AdjustmentType::QuantityChangeInCapacity => (-MAX_QUANTITY_CHANGE, MAX_QUANTITY_CHANGE),
        AdjustmentType::PercentChangeInCapacity => (MIN_PERCENT_CHANGE, MAX_PERCENT_CHANGE),
        AdjustmentType::TotalCapacity => (0, MAX_TOTAL_CAPACITY),
    }
}

/// Checks one adjustment value against its type's range.
pub fn check_adjustment(
    field: &str,
    adjustment_type: AdjustmentType,
    value: i64,
    errors: &mut Invalid,
) {
    let (lo, hi) = adjustment_range(adjustment_type);
    if !(lo..=hi).contains(&value) {
        errors.push(
            field,
            format!("{value} is outside {lo}..={hi} for {adjustment_type}"),
        );
    }
}

/// `min_adjustment_magnitude` is ESS's: only for percent changes, 1 or more.
pub fn check_min_adjustment_magnitude(
    field: &str,
    adjustment_type: AdjustmentType,
    magnitude: Option<u32>,
    errors: &mut Invalid,
) {
    let Some(m) = magnitude else { return };
    if adjustment_type != AdjustmentType::PercentChangeInCapacity {
        errors.push(
            field,
            format!("applies only to PercentChangeInCapacity, not {adjustment_type}"),
        );
    } else if !(1..=MAX_MIN_ADJUSTMENT_MAGNITUDE).contains(&m) {
        errors.push(
            field,
            format!("{m} is outside 1..={MAX_MIN_ADJUSTMENT_MAGNITUDE}"),
        );
    }
}

/// A simple rule's or a one-off adjustment's fields (`adjustment_value`,
/// `min_adjustment_magnitude`), every problem at once. A change of 0 is
/// refused here: it could never move the capacity.
pub fn validate_adjustment(
    adjustment_type: AdjustmentType,
    value: i64,
    min_adjustment_magnitude: Option<u32>,
) -> Result<(), Invalid> {
    let mut errors = Invalid::default();
    check_adjustment("adjustment_value", adjustment_type, value, &mut errors);
    if value == 0 && adjustment_type != AdjustmentType::TotalCapacity {
        errors.push(
            "adjustment_value",
            format!("a {adjustment_type} of 0 never changes the capacity"),
        );
    }
    check_min_adjustment_magnitude(
        "min_adjustment_magnitude",
        adjustment_type,
        min_adjustment_magnitude,
        &mut errors,
    );
    errors.into_result()
}

#[cfg(test)]
mod tests {
    use super::AdjustmentType::{
        PercentChangeInCapacity as Pct, QuantityChangeInCapacity as Qty, TotalCapacity as Total,
    };
    use super::*;

    #[test]
    fn capacity_after_table() {
        struct Case {
            name: &'static str,
            t: AdjustmentType,
            v: i64,
            mag: Option<u32>,
            current: u32,
            min: u32,
            max: u32,
            raw: i64,
            target: u32,
            clamped: Option<Clamped>,
        }
        let case = |name, t, v, mag, current, (min, max), raw, target, clamped| Case {
            name,
            t,
            v,
            mag,
            current,
            min,
            max,
            raw,
            target,
            clamped,
        };
        let cases = [
            case(
                "adding 3 to 2 with max 3 adds 1",
                Qty,
                3,
                None,
                2,
                (0, 3),
                5,
                3,
                Some(Clamped::Max(3)),
            ),
            case(
                "removing 5 from 3 with min 2 gives 2",
                Qty,
                -5,
                None,
                3,
                (2, 10),
                -2,
                2,
                Some(Clamped::Min(2)),
            ),
            case(
                "never below 0",
                Qty,
                -5,
                None,
                3,
                (0, 10),
                -2,
                0,
                Some(Clamped::Min(0)),
            ),
            case("plain add", Qty, 2, None, 2, (0, 10), 4, 4, None),
            case("zero quantity", Qty, 0, None, 5, (0, 10), 5, 5, None),
            case(
                "+50% of 3: 1.5 rounds to 2",
                Pct,
                50,
                None,
                3,
                (0, 10),
                5,
                5,
                None,
            ),
            case(
                "-50% of 3: -1.5 rounds to -2",
                Pct,
                -50,
                None,
                3,
                (0, 10),
                1,
                1,
                None,
            ),
            case(
                "+25% of 2: 0.5 rounds to 1",
                Pct,
                25,
                None,
                2,
                (0, 10),
                3,
                3,
                None,
            ),
            case(
                "-25% of 2: -0.5 rounds to -1",
                Pct,
                -25,
                None,
                2,
                (0, 10),
                1,
                1,
                None,
            ),
            case(
                "+33% of 10: 3.3 rounds to 3",
                Pct,
                33,
                None,
                10,
                (0, 20),
                13,
                13,
                None,
            ),
            case(
                "+35% of 10: 3.5 rounds to 4",
                Pct,
                35,
                None,
                10,
                (0, 20),
                14,
                14,
                None,
            ),
            case("+10% of 4 is +0", Pct, 10, None, 4, (0, 10), 4, 4, None),
            case(
                "+10% of 4 with magnitude 1 is +1",
                Pct,
                10,
                Some(1),
                4,
                (0, 10),
                5,
                5,
                None,
            ),
            case(
                "-10% of 4 with magnitude 1 is -1",
                Pct,
                -10,
                Some(1),
                4,
                (0, 10),
                3,
                3,
                None,
            ),
            case(
                "+10% of 4 with magnitude 3 is +3",
                Pct,
                10,
                Some(3),
                4,
                (0, 10),
                7,
                7,
                None,
            ),
            case(
                "a magnitude below the change is moot",
                Pct,
                50,
                Some(1),
                3,
                (0, 10),
                5,
                5,
                None,
            ),
            case(
                "percent of 0 grows only by magnitude",
                Pct,
                100,
                Some(2),
                0,
                (0, 10),
                2,
                2,
                None,
            ),
            case(
                "0% stays 0% whatever the magnitude",
                Pct,
                0,
                Some(1),
                5,
                (0, 10),
                5,
                5,
                None,
            ),
            case(
                "-100% empties to min",
                Pct,
                -100,
                None,
                7,
                (1, 10),
                0,
                1,
                Some(Clamped::Min(1)),
            ),
            case(
                "+10000% clamps to max",
                Pct,
                10_000,
                None,
                7,
                (1, 10),
                707,
                10,
                Some(Clamped::Max(10)),
            ),
            case(
                "total inside bounds",
                Total,
                5,
                None,
                2,
                (1, 10),
                5,
                5,
                None,
            ),
            case(
                "total above max is clamped",
                Total,
                20,
                None,
                2,
                (1, 10),
                20,
                10,
                Some(Clamped::Max(10)),
            ),
            case(
                "total below min is clamped",
                Total,
                0,
                None,
                2,
                (1, 10),
                0,
                1,
                Some(Clamped::Min(1)),
            ),
            case(
                "magnitude ignored for quantity",
                Qty,
                1,
                Some(5),
                2,
                (0, 10),
                3,
                3,
                None,
            ),
            case(
                "min above max holds at min",
                Qty,
                3,
                None,
                5,
                (4, 3),
                8,
                4,
                Some(Clamped::Max(4)),
            ),
        ];
        for c in cases {
            let o = capacity_after(c.t, c.v, c.mag, c.current, c.min, c.max);
            assert_eq!(
                (o.raw, o.target, o.clamped),
                (c.raw, c.target, c.clamped),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn describe_says_what_happened() {
        let cases = [
            (
                capacity_after(Qty, 3, None, 2, 0, 3),
                "adding 3 to 2 gives 5, held to max_size 3: adds 1",
            ),
            (
                capacity_after(Qty, -5, None, 3, 2, 10),
                "removing 5 from 3 gives -2, held to min_size 2: removes 1",
            ),
            (
                capacity_after(Pct, 50, None, 3, 0, 10),
                "+50% of 3 is +2, gives 5: adds 2",
            ),
            (
                capacity_after(Pct, 10, Some(1), 4, 0, 10),
                "+10% of 4 rounds to +0, raised to the minimum adjustment +1, gives 5: adds 1",
            ),
            (
                capacity_after(Total, 4, None, 4, 0, 10),
                "setting the total capacity to 4 gives 4: no change",
            ),
        ];
        for (o, want) in cases {
            assert_eq!(o.describe(), want);
        }
    }

    #[test]
    fn validate_adjustment_table() {
        type Case = (
            &'static str,
            AdjustmentType,
            i64,
            Option<u32>,
            &'static [&'static str],
        );
        let cases: [Case; 11] = [
            ("quantity ok", Qty, -3, None, &[]),
            (
                "quantity too large",
                Qty,
                10_001,
                None,
                &["adjustment_value"],
            ),
            ("quantity zero", Qty, 0, None, &["adjustment_value"]),
            ("percent ok with magnitude", Pct, 20, Some(1), &[]),
            ("percent below -100", Pct, -101, None, &["adjustment_value"]),
            (
                "percent above 10000",
                Pct,
                10_001,
                None,
                &["adjustment_value"],
            ),
            (
                "percent magnitude 0",
                Pct,
                20,
                Some(0),
                &["min_adjustment_magnitude"],
            ),
            ("total 0 is fine", Total, 0, None, &[]),
            ("total negative", Total, -1, None, &["adjustment_value"]),
            (
                "every problem at once",
                Total,
                -1,
                Some(1),
                &["adjustment_value", "min_adjustment_magnitude"],
            ),
            (
                "magnitude with quantity",
                Qty,
                2,
                Some(1),
                &["min_adjustment_magnitude"],
            ),
        ];
        for (name, t, v, mag, fields) in cases {
            let got: Vec<String> = match validate_adjustment(t, v, mag) {
                Ok(()) => vec![],
                Err(e) => e.0.into_iter().map(|f| f.field).collect(),
            };
            assert_eq!(got, fields, "{name}");
        }
        let e = validate_adjustment(Qty, 2, Some(1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "min_adjustment_magnitude: applies only to PercentChangeInCapacity, not QuantityChangeInCapacity"
        );
        let e = validate_adjustment(Total, 20_000, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "adjustment_value: 20000 is outside 0..=10000 for TotalCapacity"
        );
    }

    #[test]
    fn adjustment_types_use_ess_names() {
        for t in AdjustmentType::ALL {
            let json = serde_json::to_string(t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(t.as_str().parse::<AdjustmentType>().unwrap(), *t);
        }
        assert!("Percent".parse::<AdjustmentType>().is_err());
    }
}
