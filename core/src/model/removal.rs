//! Choosing instances for a scale-in: never Protected or Standby, unhealthy
//! first, then the group's removal policies in order, the next breaking
//! ties, and finally the instance id so the choice is repeatable.

use std::cmp::Ordering;

use super::{HealthStatus, Instance, RemovalPolicy};

/// What the choice needs to know about one instance.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub instance: &'a Instance,
    /// Creation time of the instance's scaling configuration; None for an
    /// attached instance, which counts as the oldest (as AWS does).
    pub configuration_created_at_ms: Option<i64>,
    /// Recent average CPU, for `LeastBusy`; None (no samples yet) counts as idle.
    pub recent_cpu: Option<f64>,
}

/// The ids of up to `n` instances to remove, in removal order.
pub fn pick_for_removal(
    candidates: &[Candidate<'_>],
    policies: &[RemovalPolicy],
    n: usize,
) -> Vec<String> {
    let mut pool: Vec<&Candidate<'_>> = candidates
        .iter()
        .filter(|c| c.instance.removable())
        .collect();
    pool.sort_by(|a, b| compare(a, b, policies));
    pool.into_iter()
        .take(n)
        .map(|c| c.instance.id.clone())
        .collect()
}

fn compare(a: &Candidate<'_>, b: &Candidate<'_>, policies: &[RemovalPolicy]) -> Ordering {
    let unhealthy = |c: &Candidate<'_>| c.instance.health_status == HealthStatus::Unhealthy;
    // true sorts first: reverse the natural false < true.
    unhealthy(b)
        .cmp(&unhealthy(a))
        .then_with(|| {
            policies
                .iter()
                .map(|p| by_policy(*p, a, b))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        })
        .then_with(|| a.instance.id.cmp(&b.instance.id))
}

fn by_policy(policy: RemovalPolicy, a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    match policy {
        RemovalPolicy::OldestScalingConfiguration => {
            let key = |c: &Candidate<'_>| c.configuration_created_at_ms.unwrap_or(i64::MIN);
            key(a).cmp(&key(b))
        }
        RemovalPolicy::OldestInstance => a.instance.created_at_ms.cmp(&b.instance.created_at_ms),
        RemovalPolicy::NewestInstance => b.instance.created_at_ms.cmp(&a.instance.created_at_ms),
        RemovalPolicy::LeastBusy => {
            let key = |c: &Candidate<'_>| c.recent_cpu.unwrap_or(0.0);
            key(a).total_cmp(&key(b))
        }
    }
}
