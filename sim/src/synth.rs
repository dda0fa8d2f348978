//! Synthetic traces, deterministic from a seed: the shapes the issue asks
//! for, in work units per second, for a fleet of instances serving 100
//! units each (`--capacity 100`, the default).

use std::f64::consts::TAU;

use crate::model::gaussian;
use crate::trace::Trace;

/// 2026-01-01T00:00:00Z, a Thursday: every generated trace starts here.
pub const START: i64 = 1_767_225_600;
const DAY: i64 = 86_400;

/// The shapes `ebb-sim trace` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// A day (or `--days`) of sine between 200 and 1800 units/s, trough
    /// at 04:00 UTC, with 5 % noise; one point a minute.
    Diurnal,
    /// Two hours at 400 units/s; at 1 h demand rises ×5 within 60 s and
    /// decays back over 10 minutes; 2 % noise, one point per 10 s.
    Spike,
    /// Four hours of level steps every 40 minutes (300, 900, 1500, 900,
    /// 300, 1200 units/s); 2 % noise, one point a minute.
    Step,
    /// Two weeks (or `--days`): the diurnal sine, with weekends at half the
    /// weekday swing; 5 % noise, one point per 5 minutes.
    Weekly,
}

fn noisy(rng: &mut fastrand::Rng, v: f64, frac: f64) -> f64 {
    (v * (1.0 + frac * gaussian(rng))).max(0.0)
}

fn diurnal(t: i64, swing: f64) -> f64 {
    let phase = ((t - START).rem_euclid(DAY) as f64) / DAY as f64;
    // cos has its trough at phase 0.5 when shifted: trough at 04:00.
    1000.0 - swing * (TAU * (phase - 4.0 / 24.0)).cos()
}

/// The trace of `shape` for `seed`; `days` for the diurnal and weekly ones.
pub fn generate(shape: Shape, seed: u64, days: Option<u32>) -> Trace {
    let mut rng = fastrand::Rng::with_seed(seed);
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let points = match shape {
        Shape::Diurnal => {
            let days = i64::from(days.unwrap_or(1));
            (0..days * DAY / 60)
                .map(|k| {
                    let t = START + k * 60;
                    (t, round(noisy(&mut rng, diurnal(t, 800.0), 0.05)))
                })
                .collect()
        }
        Shape::Spike => (0..2 * 3600 / 10)
            .map(|k| {
                let s = k * 10;
                let base = 400.0;
                let v = match s - 3600 {
                    d if d < 0 => base,
                    d if d < 60 => base * (1.0 + 4.0 * d as f64 / 60.0),
                    d if d < 660 => base * (1.0 + 4.0 * (1.0 - (d - 60) as f64 / 600.0)),
                    _ => base,
                };
                (START + s, round(noisy(&mut rng, v, 0.02)))
            })
            .collect(),
        Shape::Step => {
            let levels = [300.0, 900.0, 1500.0, 900.0, 300.0, 1200.0];
            (0..4 * 60)
                .map(|k| {
                    let v = levels[(k / 40) as usize];
                    (START + k * 60, round(noisy(&mut rng, v, 0.02)))
                })
                .collect()
        }
        Shape::Weekly => {
            let days = i64::from(days.unwrap_or(14));
            (0..days * DAY / 300)
                .map(|k| {
                    let t = START + k * 300;
                    let weekday = jiff::Timestamp::from_second(t)
                        .map(|ts| ts.to_zoned_datetime(jiff::tz::TimeZone::UTC).weekday())
                        .map_or(1, |w| w.to_sunday_zero_offset());
                    let swing = if weekday == 0 || weekday == 6 {
                        400.0
                    } else {
                        800.0
                    };
                    (t, round(noisy(&mut rng, diurnal(t, swing), 0.05)))
                })
                .collect()
        }
    };
    Trace { points }
}

/// The CSV `ebb-sim run --trace` reads.
pub fn to_csv(trace: &Trace) -> String {
    let mut s = String::from("unix_seconds,demand\n");
    for (t, d) in &trace.points {
        s.push_str(&format!("{t},{d}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::parse_csv;

    #[test]
    fn traces_are_deterministic_from_the_seed_and_read_back() {
        for shape in [Shape::Diurnal, Shape::Spike, Shape::Step, Shape::Weekly] {
            let a = generate(shape, 7, None);
            assert_eq!(a, generate(shape, 7, None), "{shape:?}");
            assert_ne!(a, generate(shape, 8, None), "{shape:?}");
            assert_eq!(parse_csv("g.csv", &to_csv(&a)).unwrap(), a, "{shape:?}");
        }
    }

    #[test]
    fn the_shapes_are_what_they_say() {
        let avg = |t: &Trace, from: i64, to: i64| {
            let v: Vec<f64> = t
                .points
                .iter()
                .filter(|(s, _)| (START + from..START + to).contains(s))
                .map(|p| p.1)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let d = generate(Shape::Diurnal, 1, None);
        assert_eq!(d.points.len(), 1440);
        assert!(avg(&d, 4 * 3600 - 600, 4 * 3600 + 600) < 300.0);
        assert!(avg(&d, 16 * 3600 - 600, 16 * 3600 + 600) > 1650.0);
        let s = generate(Shape::Spike, 1, None);
        assert!((avg(&s, 0, 3600) - 400.0).abs() < 10.0);
        assert!(avg(&s, 3660, 3680) > 1900.0); // ×5 at 60 s
        assert!(avg(&s, 4300, 7200) < 420.0); // back after 10 min
        let w = generate(Shape::Weekly, 1, None);
        assert_eq!(w.points.len(), 14 * 288);
        // Saturday 2026-01-03 peaks lower than Friday 2026-01-02.
        let fri = avg(&w, DAY + 15 * 3600, DAY + 17 * 3600);
        let sat = avg(&w, 2 * DAY + 15 * 3600, 2 * DAY + 17 * 3600);
        assert!(fri > 1650.0 && sat < 1450.0, "{fri} {sat}");
    }
}
