//! Event-triggered (alarm) tasks and scheduled tasks, as stored.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::rules::{AlarmEval, AlarmSpec, AlarmState, ScaleInWindow};
use crate::schedule::Schedule;

/// Evaluations kept per alarm for `ebbctl alarm describe` and explanations.
pub const ALARM_HISTORY: usize = 50;

/// One evaluation or state change of an alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmRecord {
    /// End of the period evaluated (Unix ms).
    pub at_ms: i64,
    pub state: AlarmState,
    /// The period's statistic, when there was data.
    pub value: Option<f64>,
    pub explanation: String,
}

/// An event-triggered task: watches a metric of a group, runs rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmTask {
    pub id: String,
    pub group_id: String,
    pub name: String,
    pub spec: AlarmSpec,
    /// Rule ids run while the alarm is in ALARM (1–5).
    pub alarm_actions: Vec<String>,
    pub enabled: bool,
    pub eval: AlarmEval,
    /// The target-tracking rule that created it; it is deleted with the rule.
    pub owner_rule_id: Option<String>,
    /// Newest last, at most `ALARM_HISTORY`.
    pub history: Vec<AlarmRecord>,
    /// End of the last period evaluated (Unix ms).
    pub last_period_end_ms: Option<i64>,
    /// The last refusal recorded as an activity, so an alarm that stays in
    /// ALARM through a cooldown records it once, not every period.
    pub last_rejection: Option<String>,
    pub created_at_ms: i64,
    /// A target-tracking rule's scale-in alarm: its recommendations over
    /// the rule's stabilisation window, kept with the alarm so a restart or
    /// a new leader does not start the window again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_window: Option<ScaleInWindow>,
}

impl AlarmTask {
    /// Appends an evaluation, keeping the history bounded.
    pub fn record(&mut self, record: AlarmRecord) {
        self.history.push(record);
        if self.history.len() > ALARM_HISTORY {
            let excess = self.history.len() - ALARM_HISTORY;
            self.history.drain(..excess);
        }
    }
}

/// What a scheduled task does when it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TaskAction {
    /// Runs a scaling rule of the group.
    Rule { rule_id: String },
    /// Sets any of the group's bounds and desired capacity.
    Capacity {
        min_size: Option<u32>,
        max_size: Option<u32>,
        desired_capacity: Option<u32>,
    },
}

/// A scheduled task of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledTask {
    pub id: String,
    pub group_id: String,
    pub name: String,
    pub schedule: Schedule,
    pub action: TaskAction,
    pub enabled: bool,
    /// The occurrence last run or dropped.
    pub last_occurrence: Option<Timestamp>,
    /// What happened to it: the activity id, or why it was dropped.
    pub last_result: Option<String>,
    pub created_at_ms: i64,
}
