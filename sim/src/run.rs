//! The replay loop: one simulated second at a time, a policy changes the
//! fleet's size, and the loop scores what the fleet did with the demand.

use serde::Serialize;

use crate::model::{Fleet, ModelParams};
use crate::trace::Trace;

/// A scale-in followed this soon by a scale-out is a flap (the definition).
pub const FLAP_WINDOW_SECS: i64 = 600;
/// The plot's and the JSON series' resolution.
pub const SERIES_STEP_SECS: i64 = 60;

/// Something that resizes the fleet: ebb's own rules or a baseline.
pub trait Policy {
    /// Looks at the fleet and demand at `now` and resizes the fleet if it
    /// decides to; called once per simulated second, in order.
    fn tick(&mut self, now: i64, demand: f64, fleet: &mut Fleet);
}

/// One point of the series (per `SERIES_STEP_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeriesPoint {
    pub t: i64,
    pub demand: f64,
    /// Instances, booting ones included.
    pub capacity: u32,
    pub in_service: u32,
    pub utilisation: f64,
}

/// What a policy did with a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub policy: String,
    pub instance_hours: f64,
    /// Seconds with utilisation at 100 % (demand the fleet could not serve).
    pub overloaded_secs: u64,
    /// Seconds with utilisation above the group's target.
    pub above_target_secs: u64,
    /// Capacity changes (scale-outs plus scale-ins).
    pub activities: u32,
    pub scale_outs: u32,
    pub scale_ins: u32,
    /// Scale-ins followed within 10 minutes by a scale-out.
    pub flaps: u32,
    pub peak_capacity: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<SeriesPoint>,
}

/// Counts activities and flaps from the capacity changes, in time order.
#[derive(Debug, Default, Clone)]
pub struct FlapCounter {
    last_scale_in: Option<i64>,
    pub scale_outs: u32,
    pub scale_ins: u32,
    pub flaps: u32,
}

impl FlapCounter {
    pub fn record(&mut self, t: i64, from: u32, to: u32) {
        if to > from {
            self.scale_outs += 1;
            if let Some(last) = self.last_scale_in.take()
                && t - last <= FLAP_WINDOW_SECS
            {
                self.flaps += 1;
            }
        } else if to < from {
            self.scale_ins += 1;
            self.last_scale_in = Some(t);
        }
    }
}

/// Replays `trace` through `policy`, starting from `initial` instances in service.
pub fn replay(
    name: &str,
    policy: &mut dyn Policy,
    trace: &Trace,
    params: ModelParams,
    initial: u32,
    target: f64,
) -> Outcome {
    let (start, end) = (trace.start(), trace.end());
    let mut fleet = Fleet::new(params, initial, start);
    let mut cursor = trace.cursor();
    let mut flaps = FlapCounter::default();
    let (mut instance_secs, mut overloaded, mut above) = (0u64, 0u64, 0u64);
    let mut peak = fleet.count();
    let mut series = Vec::new();
    for t in start..end {
        let demand = cursor.at(t);
        let before = fleet.count();
        policy.tick(t, demand, &mut fleet);
        let after = fleet.count();
        flaps.record(t, before, after);
        let u = fleet.utilisation(demand, t);
        instance_secs += u64::from(after);
        if demand > 0.0 && u >= 100.0 {
            overloaded += 1;
        }
        if u > target {
            above += 1;
        }
        peak = peak.max(after);
        if (t - start) % SERIES_STEP_SECS == 0 {
            series.push(SeriesPoint {
                t,
                demand,
                capacity: after,
                in_service: fleet.in_service(t),
                utilisation: u,
            });
        }
    }
    Outcome {
        policy: name.to_owned(),
        instance_hours: instance_secs as f64 / 3600.0,
        overloaded_secs: overloaded,
        above_target_secs: above,
        activities: flaps.scale_outs + flaps.scale_ins,
        scale_outs: flaps.scale_outs,
        scale_ins: flaps.scale_ins,
        flaps: flaps.flaps,
        peak_capacity: peak,
        series,
    }
}

/// The instance-hours of the smallest fleet that holds `target` every
/// second, launched instantly (no boot, no warmup, no alarm delay), within
/// [min, max]: the floor no policy can beat at this target.
pub fn ideal_instance_hours(trace: &Trace, capacity: f64, target: f64, min: u32, max: u32) -> f64 {
    let per_instance = capacity * target / 100.0;
    let mut cursor = trace.cursor();
    let secs: f64 = (trace.start()..trace.end())
        .map(|t| {
            let need = (cursor.at(t) / per_instance).ceil().max(0.0) as u32;
            f64::from(need.clamp(min.max(1), max.max(1)))
        })
        .sum();
    secs / 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ideal_fleet_holds_the_target_with_nothing_to_spare() {
        // 150 units/s at 60 % of 100 needs ceil(2.5) = 3 instances; 30 needs
        // 1 but min_size is 2. 100 s each.
        let trace = Trace {
            points: vec![(0, 150.0), (100, 30.0)],
        };
        let h = ideal_instance_hours(&trace, 100.0, 60.0, 2, 10);
        assert!((h - (300.0 + 200.0) / 3600.0).abs() < 1e-9, "{h}");
    }

    #[test]
    fn a_flap_is_a_scale_in_then_a_scale_out_within_ten_minutes() {
        let mut f = FlapCounter::default();
        f.record(0, 2, 4); // out
        f.record(100, 4, 3); // in
        f.record(700, 3, 4); // out 600 s later: a flap
        f.record(800, 4, 2); // in
        f.record(1401, 2, 3); // out 601 s later: not a flap
        f.record(1500, 3, 3); // no change
        f.record(1600, 3, 2); // in
        f.record(1700, 2, 1); // in again: the window counts from the latest
        f.record(2000, 1, 5); // out
        assert_eq!((f.scale_outs, f.scale_ins, f.flaps), (4, 4, 2));
    }

    struct Fixed(Vec<(i64, u32)>);
    impl Policy for Fixed {
        fn tick(&mut self, now: i64, _: f64, fleet: &mut Fleet) {
            if let Some(&(_, n)) = self.0.iter().find(|(t, _)| *t == now) {
                fleet.resize(n, now);
            }
        }
    }

    #[test]
    fn the_scores_count_seconds_and_instance_hours() {
        // 100 s at 150 units with 1 instance of 100 (overloaded), then a
        // second instance booting for 60 s, then 2 serving at 75 %.
        let trace = Trace {
            points: vec![(0, 150.0), (150, 150.0)],
        };
        let params = ModelParams {
            capacity: 100.0,
            boot_secs: 60,
            noise: 0.0,
            seed: 1,
        };
        let mut p = Fixed(vec![(100, 2)]);
        let o = replay("fixed", &mut p, &trace, params, 1, 70.0);
        assert_eq!(o.overloaded_secs, 160);
        assert_eq!(o.above_target_secs, 300);
        assert_eq!((o.activities, o.flaps, o.peak_capacity), (1, 0, 2));
        assert!((o.instance_hours - (100.0 + 2.0 * 200.0) / 3600.0).abs() < 1e-9);
        assert_eq!(o.series.len(), 5);
    }
}
