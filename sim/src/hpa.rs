//! The Kubernetes HorizontalPodAutoscaler (autoscaling/v2, default
//! behaviour) on the simulated fleet, following kubernetes/kubernetes
//! `pkg/controller/podautoscaler/replica_calculator.go`
//! (`GetResourceReplicas`, `calcPlainMetricReplicas`) and `horizontal.go`
//! (`stabilizeRecommendationWithBehaviors`,
//! `convertDesiredReplicasWithBehaviorRate`). A booting instance is a
//! Pending pod (unready, no metric); an in-service one a ready pod.

use std::collections::VecDeque;

use crate::model::Fleet;
use crate::run::Policy;

/// kube-controller-manager `--horizontal-pod-autoscaler-sync-period`, default 15 s.
pub const SYNC_PERIOD_SECS: i64 = 15;
/// `--horizontal-pod-autoscaler-tolerance`, default 0.1.
pub const TOLERANCE: f64 = 0.1;
/// Default `behavior.scaleDown.stabilizationWindowSeconds` (300); scale-up's is 0.
pub const SCALE_DOWN_STABILISATION_SECS: i64 = 300;
/// Default scale-up policies (`selectPolicy: Max`): `Percent 100` and
/// `Pods 4`, each per `periodSeconds: 15`.
pub const SCALE_UP_PERCENT: f64 = 100.0;
pub const SCALE_UP_PODS: u32 = 4;
pub const SCALE_UP_PERIOD_SECS: i64 = 15;
/// Default scale-down policy: `Percent 100` per 15 s (no rate limit in effect).
pub const SCALE_DOWN_PERCENT: f64 = 100.0;
pub const SCALE_DOWN_PERIOD_SECS: i64 = 15;

/// `GetResourceReplicas` for one resource metric: each ready pod's
/// utilisation (% of its request), the pods not ready, the target
/// utilisation. Unready pods count as 0 % when scaling up and are left out
/// when scaling down; a rebalance that reverses the direction or lands in
/// the tolerance keeps the current count.
pub fn replica_count(current: u32, ready: &[f64], unready: u32, target: f64) -> u32 {
    if ready.is_empty() {
        return current; // "did not receive metrics for any ready pods"
    }
    let ready_count = ready.len() as f64;
    let usage_ratio = ready.iter().sum::<f64>() / ready_count / target;
    if unready == 0 {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return current;
        }
        return (usage_ratio * ready_count).ceil() as u32;
    }
    // Only a scale-up rebalances the unready pods (at 0 % usage); on a
    // scale-down they are ignored.
    let (sum, n) = if usage_ratio > 1.0 {
        (ready.iter().sum::<f64>(), ready_count + f64::from(unready))
    } else {
        (ready.iter().sum::<f64>(), ready_count)
    };
    let new_ratio = sum / n / target;
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return current;
    }
    let new = (new_ratio * n).ceil() as u32;
    if (new_ratio < 1.0 && new > current) || (new_ratio > 1.0 && new < current) {
        return current;
    }
    new
}

/// The HPA's state between syncs: recent recommendations and scale events.
pub struct Hpa {
    target: f64,
    min: u32,
    max: u32,
    recommendations: VecDeque<(i64, u32)>,
    /// (time, replicas added (+) or removed (−)).
    events: VecDeque<(i64, i64)>,
}

impl Hpa {
    pub fn new(target: f64, min: u32, max: u32) -> Self {
        // The HPA's minReplicas is at least 1; a max below it would be refused.
        let max = max.max(1);
        Hpa {
            target,
            min: min.clamp(1, max),
            max,
            recommendations: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// `stabilizeRecommendationWithBehaviors`: up window 0 (the newest
    /// recommendation), down window 300 s (the highest of its recommendations).
    fn stabilise(&mut self, now: i64, current: u32, desired: u32) -> u32 {
        self.recommendations
            .retain(|(t, _)| *t > now - SCALE_DOWN_STABILISATION_SECS);
        let up = desired;
        let down = self
            .recommendations
            .iter()
            .map(|(_, r)| *r)
            .fold(desired, u32::max);
        self.recommendations.push_back((now, desired));
        current.max(up).min(down)
    }

    fn change_in_period(&self, now: i64, period: i64, up: bool) -> i64 {
        self.events
            .iter()
            .filter(|(t, _)| *t > now - period)
            .map(|(_, c)| *c)
            .filter(|c| (*c > 0) == up)
            .sum()
    }

    /// `convertDesiredReplicasWithBehaviorRate`: the scale-up policies'
    /// limit (the larger of +100 % and +4 pods over the last 15 s), then
    /// min/max replicas.
    fn rate_limit(&self, now: i64, current: u32, desired: u32) -> u32 {
        if desired > current {
            let start = i64::from(current) - self.change_in_period(now, SCALE_UP_PERIOD_SECS, true);
            let by_pods = start + i64::from(SCALE_UP_PODS);
            let by_percent = (start as f64 * (1.0 + SCALE_UP_PERCENT / 100.0)).ceil() as i64;
            let limit = by_pods.max(by_percent).max(i64::from(current));
            let allowed = (limit.min(i64::from(self.max))) as u32;
            desired.min(allowed)
        } else if desired < current {
            let start =
                i64::from(current) - self.change_in_period(now, SCALE_DOWN_PERIOD_SECS, false);
            let limit = (start as f64 * (1.0 - SCALE_DOWN_PERCENT / 100.0)).floor() as i64;
            let allowed = limit.max(i64::from(self.min)) as u32;
            desired.max(allowed)
        } else {
            desired.clamp(self.min, self.max)
        }
    }

    /// One sync: the recommendation, stabilised and rate-limited.
    pub fn sync(&mut self, now: i64, current: u32, ready: &[f64], unready: u32) -> u32 {
        let desired = replica_count(current, ready, unready, self.target);
        let stable = self.stabilise(now, current, desired);
        let to = self.rate_limit(now, current, stable);
        if to != current {
            self.events
                .push_back((now, i64::from(to) - i64::from(current)));
        }
        self.events
            .retain(|(t, _)| *t > now - SCALE_UP_PERIOD_SECS.max(SCALE_DOWN_PERIOD_SECS));
        to
    }
}

impl Policy for Hpa {
    fn tick(&mut self, now: i64, demand: f64, fleet: &mut Fleet) {
        if now.rem_euclid(SYNC_PERIOD_SECS) != 0 {
            return;
        }
        // metrics-server's latest value per ready pod.
        let ready: Vec<f64> = fleet
            .samples(demand, now)
            .into_iter()
            .map(|s| s.2)
            .collect();
        let to = self.sync(now, fleet.count(), &ready, fleet.pending(now));
        fleet.resize(to, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// replica_calculator_test.go's cases, with requests of 1.0 CPU so a
    /// level of 300m is 30 % utilisation.
    #[test]
    fn replica_calculator_cases() {
        // TestReplicaCalcScaleUp: 3 pods at 300m/500m/700m, target 30 % → 5.
        assert_eq!(replica_count(3, &[30.0, 50.0, 70.0], 0, 30.0), 5);
        // TestReplicaCalcScaleUpUnreadyLessScale: the first pod unready → 4.
        assert_eq!(replica_count(3, &[50.0, 70.0], 1, 30.0), 4);
        // TestReplicaCalcScaleUpUnreadyNoScale: 2 of 3 unready → stays 3.
        assert_eq!(replica_count(3, &[40.0], 2, 30.0), 3);
        // TestReplicaCalcScaleDown: 100/300/500/250/250m, target 50 % → 3.
        assert_eq!(
            replica_count(5, &[10.0, 30.0, 50.0, 25.0, 25.0], 0, 50.0),
            3
        );
        // TestReplicaCalcScaleDownIncludeUnreadyPods: 2 unready → 2.
        assert_eq!(replica_count(5, &[10.0, 30.0, 50.0], 2, 50.0), 2);
        // TestReplicaCalcScaleDownExcludeUnscheduledPods: 4 Pending → 1.
        assert_eq!(replica_count(5, &[10.0], 4, 50.0), 1);
        // TestReplicaCalcTolerance: 1010m/0.9, 1030m/1.0, 1020m/1.1 is
        // 102 % against 100 % → stays 3 (within 10 %).
        assert_eq!(
            replica_count(3, &[1010.0 / 9.0, 103.0, 1020.0 / 11.0], 0, 100.0),
            3
        );
    }

    #[test]
    fn scale_down_waits_for_the_highest_recommendation_of_five_minutes() {
        let mut h = Hpa::new(50.0, 1, 20);
        // 10 pods at 50 %: hold; then at 10 %: recommends 2, but the window holds 10.
        assert_eq!(h.sync(0, 10, &[50.0; 10], 0), 10);
        assert_eq!(h.sync(15, 10, &[10.0; 10], 0), 10);
        assert_eq!(h.sync(285, 10, &[10.0; 10], 0), 10);
        // 300 s after the last recommendation of 10, the highest left is 2.
        assert_eq!(h.sync(300, 10, &[10.0; 10], 0), 2);
    }

    #[test]
    fn scale_up_is_limited_to_double_or_plus_four_per_15_seconds() {
        let mut h = Hpa::new(10.0, 1, 100);
        // 2 pods at 100 % against 10 % want 20: +100 % gives 4, +4 gives 6.
        assert_eq!(h.sync(0, 2, &[100.0; 2], 0), 6);
        // 10 s later the period started at 2 still: no more.
        assert_eq!(h.sync(10, 6, &[100.0; 2], 4), 6);
        // A new period from 6: +100 % gives 12.
        assert_eq!(h.sync(15, 6, &[100.0; 6], 0), 12);
        // max_size caps it.
        let mut h = Hpa::new(10.0, 1, 5);
        assert_eq!(h.sync(0, 2, &[100.0; 2], 0), 5);
    }
}
