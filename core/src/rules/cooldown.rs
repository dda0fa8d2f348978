//! Cooldown and warmup timing.
//!
//! The cooldown starts when an activity completes, Successful or Warning
//! (partly done: capacity did move); a Failed or Rejected activity starts
//! none, and one still InProgress blocks alarm actions by itself. The caller
//! passes the end time of the last such activity (see `cooldown_start`).
//! Manual, scheduled and bounds changes ignore the cooldown; that choice is
//! the engine's, not this module's.

use std::time::Duration;

use crate::model::{Activity, ActivityStatus};

/// When the group's cooldown started: the latest end among its Successful
/// and Warning activities.
pub fn cooldown_start(activities: &[Activity]) -> Option<i64> {
    activities
        .iter()
        .filter(|a| {
            matches!(
                a.status,
                ActivityStatus::Successful | ActivityStatus::Warning
            )
        })
        .filter_map(|a| a.ended_at_ms)
        .max()
}

/// How long the cooldown still holds; None when it does not. If the clock
/// stepped back past the activity's end, the wait is capped at one full
/// cooldown rather than growing by the step.
pub fn cooldown_remaining(
    last_activity_end_ms: Option<i64>,
    cooldown_secs: u32,
    now_ms: i64,
) -> Option<Duration> {
    let end = last_activity_end_ms?;
    let cooldown_ms = i64::from(cooldown_secs) * 1000;
    let remaining = end
        .saturating_add(cooldown_ms)
        .saturating_sub(now_ms)
        .min(cooldown_ms);
    u64::try_from(remaining)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

/// Whether an instance is still warming: it has not entered service yet
/// (None), or entered less than `warmup_secs` ago. Warming instances are
/// left out of the group's metric and counted as pending capacity.
pub fn warming(instance_in_service_at_ms: Option<i64>, warmup_secs: u32, now_ms: i64) -> bool {
    match instance_in_service_at_ms {
        None => true,
        Some(at) => now_ms < at.saturating_add(i64::from(warmup_secs) * 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Trigger;

    const S: i64 = 1000;

    #[test]
    fn cooldown_remaining_table() {
        let secs = |s: u64| Some(Duration::from_secs(s));
        type Case = (&'static str, Option<i64>, u32, i64, Option<Duration>);
        let cases: [Case; 9] = [
            ("no activity yet", None, 300, 1_000 * S, None),
            ("just ended", Some(1_000 * S), 300, 1_000 * S, secs(300)),
            ("half way", Some(1_000 * S), 300, 1_150 * S, secs(150)),
            (
                "one ms left",
                Some(1_000 * S),
                300,
                1_300 * S - 1,
                Some(Duration::from_millis(1)),
            ),
            (
                "over exactly at the end",
                Some(1_000 * S),
                300,
                1_300 * S,
                None,
            ),
            ("long over", Some(1_000 * S), 300, 9_000 * S, None),
            ("zero cooldown", Some(1_000 * S), 0, 1_000 * S, None),
            (
                "clock stepped back: capped at one cooldown",
                Some(1_000 * S),
                300,
                500 * S,
                secs(300),
            ),
            ("a day", Some(0), 86_400, 3_600 * S, secs(82_800)),
        ];
        for (name, end, cooldown, now, want) in cases {
            assert_eq!(cooldown_remaining(end, cooldown, now), want, "{name}");
        }
    }

    #[test]
    fn warming_table() {
        let cases: [(&str, Option<i64>, u32, i64, bool); 6] = [
            ("not in service yet", None, 300, 0, true),
            ("just in service", Some(100 * S), 300, 100 * S, true),
            ("one ms short", Some(100 * S), 300, 400 * S - 1, true),
            (
                "warm at exactly the warmup",
                Some(100 * S),
                300,
                400 * S,
                false,
            ),
            ("long warm", Some(100 * S), 300, 4_000 * S, false),
            ("no warmup", Some(100 * S), 0, 100 * S, false),
        ];
        for (name, at, warmup, now, want) in cases {
            assert_eq!(warming(at, warmup, now), want, "{name}");
        }
    }

    #[test]
    fn only_completed_activities_start_a_cooldown() {
        let activity = |status, ended_at_ms| Activity {
            id: "asa-1".into(),
            group_id: "asg-1".into(),
            cause: String::new(),
            trigger: Trigger::Alarm,
            status,
            progress: 100,
            capacity_from: 1,
            capacity_to: 2,
            created_instances: vec![],
            removed_instances: vec![],
            started_at_ms: 0,
            ended_at_ms,
            error: None,
            details: Vec::new(),
            initiated_by: None,
        };
        let cases: [(&str, Vec<Activity>, Option<i64>); 5] = [
            ("none", vec![], None),
            (
                "successful",
                vec![activity(ActivityStatus::Successful, Some(10))],
                Some(10),
            ),
            (
                "warning counts",
                vec![activity(ActivityStatus::Warning, Some(20))],
                Some(20),
            ),
            (
                "failed and rejected start none",
                vec![
                    activity(ActivityStatus::Successful, Some(10)),
                    activity(ActivityStatus::Failed, Some(30)),
                    activity(ActivityStatus::Rejected, Some(40)),
                ],
                Some(10),
            ),
            (
                "in progress has no end",
                vec![activity(ActivityStatus::InProgress, None)],
                None,
            ),
        ];
        for (name, activities, want) in cases {
            assert_eq!(cooldown_start(&activities), want, "{name}");
        }
    }
}
