//! The mass-failure guard: which unhealthy instances to replace now. An
//! instance is replaced one sampling interval after it was found unhealthy,
//! so failures that come together are seen together; when more than half a
//! group turned unhealthy within the guard's window, the controller suspects
//! its own network and replaces at most a share of the group per window.

use std::collections::HashMap;

/// The guard's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardSettings {
    /// Under a mass failure, at most this share of the group (at least one
    /// instance) is replaced per window.
    pub share: f64,
    pub window_ms: i64,
}

/// What the guard remembers of one group's recent failures (in memory: a
/// restarted controller starts afresh).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GuardMemory {
    /// Instance id → when it was found unhealthy.
    failed_at: HashMap<String, i64>,
    /// When replacements were let through, for the window's budget.
    replaced_at: Vec<i64>,
}

/// The guard's answer for one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardVerdict {
    /// The instances to replace now, in the order given.
    pub replace: Vec<String>,
    /// Why fewer than all were let through, when a mass failure holds
    /// some back and at least one goes.
    pub mass_failure: Option<String>,
}

impl GuardMemory {
    /// Judges the group's `unhealthy` instances (ids, InService and
    /// unhealthy now) for a group of `desired` instances sampled every
    /// `interval_ms`, and remembers what it let through.
    pub fn judge(
        &mut self,
        unhealthy: &[&str],
        desired: u32,
        interval_ms: i64,
        settings: GuardSettings,
        now_ms: i64,
    ) -> GuardVerdict {
        let window = settings.window_ms;
        self.failed_at.retain(|_, at| now_ms - *at < window);
        self.replaced_at.retain(|at| now_ms - *at < window);
        for id in unhealthy {
            self.failed_at.entry((*id).to_owned()).or_insert(now_ms);
        }
        let confirmed: Vec<&str> = unhealthy
            .iter()
            .copied()
            .filter(|id| {
                self.failed_at
                    .get(*id)
                    .is_some_and(|at| now_ms - *at >= interval_ms)
            })
            .collect();
        let mut verdict = GuardVerdict {
            replace: Vec::new(),
            mass_failure: None,
        };
        if confirmed.is_empty() {
            return verdict;
        }
        let size = desired.max(1) as usize;
        let mut allowed = confirmed.len();
        if self.failed_at.len() * 2 > size {
            let budget = ((size as f64) * settings.share).floor().max(1.0) as usize;
            allowed = budget
                .saturating_sub(self.replaced_at.len())
                .min(confirmed.len());
            if allowed > 0 {
                let secs = window / 1000;
                verdict.mass_failure = Some(format!(
                    "mass-failure guard: {} of {size} instances turned unhealthy within {secs} s; replacing at most {budget} per {secs} s (suspect the controller's own network)",
                    self.failed_at.len(),
                ));
            }
        }
        verdict.replace = confirmed
            .into_iter()
            .take(allowed)
            .map(str::to_owned)
            .collect();
        self.replaced_at
            .extend(std::iter::repeat_n(now_ms, verdict.replace.len()));
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;
    const GUARD: GuardSettings = GuardSettings {
        share: 0.25,
        window_ms: 60 * S,
    };

    #[test]
    fn a_lone_failure_is_replaced_one_interval_after_it_was_seen() {
        let mut m = GuardMemory::default();
        let v = m.judge(&["a"], 4, 5 * S, GUARD, 0);
        assert!(v.replace.is_empty(), "not yet confirmed: {v:?}");
        let v = m.judge(&["a"], 4, 5 * S, GUARD, 4 * S);
        assert!(v.replace.is_empty(), "{v:?}");
        let v = m.judge(&["a"], 4, 5 * S, GUARD, 5 * S);
        assert_eq!(v.replace, ["a"]);
        assert_eq!(v.mass_failure, None);
    }

    #[test]
    fn a_mass_failure_is_replaced_a_share_per_window() {
        let mut m = GuardMemory::default();
        // 3 of 4 at once: more than half.
        let all = ["a", "b", "c"];
        assert!(m.judge(&all, 4, S, GUARD, 0).replace.is_empty());
        let v = m.judge(&all, 4, S, GUARD, S);
        assert_eq!(v.replace, ["a"], "a quarter of 4, at least one");
        assert!(
            v.mass_failure
                .as_deref()
                .is_some_and(|w| w.starts_with("mass-failure guard: 3 of 4 instances")),
            "{v:?}"
        );
        // The rest of the window: nothing more goes, and nothing is said.
        for t in [2 * S, 30 * S, 60 * S] {
            let v = m.judge(&["b", "c"], 4, S, GUARD, t);
            assert!(v.replace.is_empty(), "at {t}: {v:?}");
            assert_eq!(v.mass_failure, None);
        }
        // A window on, the failures it holds are two of four, no longer
        // more than half: both go.
        let v = m.judge(&["b", "c"], 4, S, GUARD, 61 * S);
        assert_eq!(v.replace, ["b", "c"]);
        assert_eq!(v.mass_failure, None);
    }

    #[test]
    fn failures_apart_in_time_are_no_mass_failure() {
        let mut m = GuardMemory::default();
        m.judge(&["a"], 4, S, GUARD, 0);
        assert_eq!(m.judge(&["a"], 4, S, GUARD, S).replace, ["a"]);
        // Two more, a window later: the first has left the window.
        m.judge(&["b", "c"], 4, S, GUARD, 70 * S);
        let v = m.judge(&["b", "c"], 4, S, GUARD, 71 * S);
        assert_eq!(v.replace, ["b", "c"]);
        assert_eq!(v.mass_failure, None);
    }
}
