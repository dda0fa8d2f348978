//! AWS EC2 Auto Scaling target tracking on the simulated fleet.
//!
//! Sources: the EC2 Auto Scaling User Guide, "Target tracking scaling
//! policies for Amazon EC2 Auto Scaling"
//! (docs.aws.amazon.com/autoscaling/ec2/userguide/as-scaling-target-tracking.html:
//! its example is a web application on two instances held at 50 % CPU,
//! scaling out above and in below), "Set the default instance warmup"
//! (.../ec2-auto-scaling-default-instance-warmup.html), and the Application
//! Auto Scaling guide, "How target tracking scaling works"
//! (docs.aws.amazon.com/autoscaling/application/userguide/target-tracking-scaling-policy-overview.html):
//! the service "creates and manages the CloudWatch alarms that invoke the
//! scaling policy and calculates the scaling adjustment based on the metric
//! and the target value", adding capacity "more aggressive[ly]" than it
//! removes it. AWS does not publish the adjustment's formula; it is taken
//! here as `ceil(C × metric / target)`, the smallest fleet at or under the
//! target. The alarms' conditions (3 × 1 min above the target, 15 × 1 min
//! below 90 % of it) are what the created `TargetTracking-…-AlarmHigh/Low`
//! alarms show in CloudWatch, and the and DESIGN §8's anchor; the
//! written guides found for this work do not state them.

use crate::model::Fleet;
use crate::run::Policy;

/// EC2 detailed monitoring: one datapoint per instance per minute.
pub const PERIOD_SECS: i64 = 60;
/// The high alarm (`TargetTracking-…-AlarmHigh-…`): metric > target for
/// 3 datapoints within 3 minutes.
pub const SCALE_OUT_PERIODS: u32 = 3;
/// The low alarm (`TargetTracking-…-AlarmLow-…`): metric < 90 % of the
/// target for 15 datapoints within 15 minutes.
pub const SCALE_IN_PERIODS: u32 = 15;
pub const SCALE_IN_THRESHOLD: f64 = 0.9;
/// Default instance warmup, 300 s: a warming instance's metrics are not
/// aggregated, it counts towards the capacity a scale-out is measured
/// against, and no scale-in happens while any instance warms.
pub const WARMUP_SECS: i64 = 300;
/// How often the simulator reads each instance within a period (its
/// one-minute datapoint is the average of these).
const READ_EVERY_SECS: i64 = 10;

/// What one alarm period decides; pure, so the documented arithmetic is tested alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub high_streak: u32,
    pub low_streak: u32,
    /// The capacity to set, if it changes.
    pub to: Option<u32>,
}

/// One minute: `metric` is the warm instances' average (None without data),
/// `warm` their count, `total` the capacity (warming and booting included).
#[allow(clippy::too_many_arguments)]
pub fn period(
    high_streak: u32,
    low_streak: u32,
    metric: Option<f64>,
    warm: u32,
    total: u32,
    target: f64,
    min: u32,
    max: u32,
) -> Step {
    let Some(m) = metric else {
        // INSUFFICIENT_DATA: neither alarm stays in ALARM.
        return Step {
            high_streak: 0,
            low_streak: 0,
            to: None,
        };
    };
    let high = if m > target { high_streak + 1 } else { 0 };
    let low = if m < target * SCALE_IN_THRESHOLD {
        low_streak + 1
    } else {
        0
    };
    let needed = ((f64::from(warm) * m / target).ceil() as u32)
        .max(min.max(1))
        .min(max);
    // An alarm in ALARM invokes the policy every minute it stays there.
    let scale_out = high >= SCALE_OUT_PERIODS && needed > total;
    let scale_in = low >= SCALE_IN_PERIODS && warm == total && needed < total;
    let to = (scale_out || scale_in).then_some(needed);
    Step {
        high_streak: high,
        low_streak: low,
        to,
    }
}

/// The policy's state between minutes.
pub struct Aws {
    target: f64,
    min: u32,
    max: u32,
    high_streak: u32,
    low_streak: u32,
    /// Per instance: (sum, reads) this minute.
    reads: std::collections::HashMap<u64, (f64, u32)>,
}

impl Aws {
    pub fn new(target: f64, min: u32, max: u32) -> Self {
        Aws {
            target,
            min,
            max,
            high_streak: 0,
            low_streak: 0,
            reads: Default::default(),
        }
    }
}

impl Policy for Aws {
    fn tick(&mut self, now: i64, demand: f64, fleet: &mut Fleet) {
        if now.rem_euclid(READ_EVERY_SECS) == 0 {
            for (id, _, v) in fleet.samples(demand, now) {
                let e = self.reads.entry(id).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
        if now.rem_euclid(PERIOD_SECS) != 0 {
            return;
        }
        let reads = std::mem::take(&mut self.reads);
        let warm: Vec<f64> = fleet
            .instances
            .iter()
            .filter(|i| i.in_service(now) && now >= i.ready_at + WARMUP_SECS)
            .filter_map(|i| reads.get(&i.id).map(|(s, n)| s / f64::from(*n)))
            .collect();
        let metric = (!warm.is_empty()).then(|| warm.iter().sum::<f64>() / warm.len() as f64);
        let s = period(
            self.high_streak,
            self.low_streak,
            metric,
            warm.len() as u32,
            fleet.count(),
            self.target,
            self.min,
            self.max,
        );
        self.high_streak = s.high_streak;
        self.low_streak = s.low_streak;
        if let Some(to) = s.to {
            fleet.resize(to, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guides_example_two_instances_held_at_fifty_percent() {
        // Two instances, target 50 % CPU. At 90 % for three minutes the
        // group scales out to ceil(2 × 90 / 50) = 4; at 20 % on 4 for
        // fifteen minutes it scales in to ceil(4 × 20 / 50) = 2.
        let mut s = period(0, 0, Some(90.0), 2, 2, 50.0, 1, 10);
        s = period(s.high_streak, s.low_streak, Some(90.0), 2, 2, 50.0, 1, 10);
        s = period(s.high_streak, s.low_streak, Some(90.0), 2, 2, 50.0, 1, 10);
        assert_eq!(s.to, Some(4));
        let mut s = period(0, 13, Some(20.0), 4, 4, 50.0, 1, 10);
        assert_eq!(s.to, None);
        s = period(s.high_streak, s.low_streak, Some(20.0), 4, 4, 50.0, 1, 10);
        assert_eq!(s.to, Some(2));
    }

    #[test]
    fn scale_out_after_three_minutes_above_target() {
        // 10 instances at 75 % against a target of 50 %: the third minute
        // above scales out to ceil(10 × 75 / 50) = 15.
        let mut s = period(0, 0, Some(75.0), 10, 10, 50.0, 1, 100);
        assert_eq!((s.high_streak, s.to), (1, None));
        s = period(
            s.high_streak,
            s.low_streak,
            Some(75.0),
            10,
            10,
            50.0,
            1,
            100,
        );
        assert_eq!(s.to, None);
        s = period(
            s.high_streak,
            s.low_streak,
            Some(75.0),
            10,
            10,
            50.0,
            1,
            100,
        );
        assert_eq!(s.to, Some(15));
        // Still in ALARM a minute later, but the 5 warming instances are
        // already counted: nothing more.
        s = period(
            s.high_streak,
            s.low_streak,
            Some(75.0),
            10,
            15,
            50.0,
            1,
            100,
        );
        assert_eq!((s.high_streak, s.to), (4, None));
        // A minute at the target resets the streak.
        assert_eq!(
            period(2, 0, Some(50.0), 10, 10, 50.0, 1, 100).high_streak,
            0
        );
    }

    #[test]
    fn scale_in_after_fifteen_minutes_below_ninety_percent_of_target() {
        // 10 instances at 30 % against 50 %: below 45 % for 15 minutes
        // scales in to ceil(10 × 30 / 50) = 6, not before.
        let mut s = Step {
            high_streak: 0,
            low_streak: 0,
            to: None,
        };
        for minute in 1..=15 {
            s = period(
                s.high_streak,
                s.low_streak,
                Some(30.0),
                10,
                10,
                50.0,
                1,
                100,
            );
            assert_eq!(s.to, (minute == 15).then_some(6), "minute {minute}");
        }
        // 46 % is inside the band: no scale-in however long it lasts.
        assert_eq!(period(20, 20, Some(46.0), 10, 10, 50.0, 1, 100).to, None);
        // Not while an instance warms, nor below min_size.
        assert_eq!(period(14, 14, Some(30.0), 9, 10, 50.0, 1, 100).to, None);
        assert_eq!(period(14, 14, Some(30.0), 10, 10, 50.0, 8, 100).to, Some(8));
        // No data: INSUFFICIENT_DATA breaks both streaks.
        let s = period(14, 14, None, 0, 10, 50.0, 1, 100);
        assert_eq!((s.high_streak, s.low_streak, s.to), (0, 0, None));
    }
}
