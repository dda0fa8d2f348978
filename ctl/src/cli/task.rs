//! `task`: scheduled tasks and when they run.

use clap::{ArgGroup, Args, Subcommand};

use super::NewName;
use super::parse::{Recurrence, parse_recurrence, rfc3339};

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl task create mornings --group web --launch-time 2026-01-05T08:00:00+01:00 \
                        --recurrence weekly:1,2,3,4,5 --time-zone Europe/Paris --min 4\n  ebbctl task list --group web"
)]
pub enum TaskCmd {
    /// List scheduled tasks, of one group or all
    #[command(after_help = "Examples:\n  ebbctl task list\n  ebbctl task list --group web -o wide")]
    List {
        /// Only this group's (name or id)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Show one task's every field
    #[command(after_help = "Examples:\n  ebbctl task describe mornings --group web")]
    Describe(TaskRef),
    /// Create a task: run a rule (--rule), or set --min/--max/--desired
    #[command(
        after_help = "Examples:\n  ebbctl task create mornings --group web --launch-time 2026-01-05T08:00:00Z \
                      --recurrence daily:1 --min 4 --desired 4\n  \
                      ebbctl task create nightly --group web --launch-time 2026-01-05T23:00:00Z \
                      --recurrence 'cron:0 23 * * *' --rule remove-two"
    )]
    Create(TaskCreate),
    /// Change some of a task's fields
    #[command(after_help = "Examples:\n  ebbctl task modify mornings --group web --desired 6")]
    Modify(TaskModify),
    /// Delete a task
    #[command(after_help = "Examples:\n  ebbctl task delete mornings --group web")]
    Delete(TaskRef),
    /// Enable a task
    #[command(after_help = "Examples:\n  ebbctl task enable mornings --group web")]
    Enable(TaskRef),
    /// Disable a task: it does not run until enabled
    #[command(after_help = "Examples:\n  ebbctl task disable mornings --group web")]
    Disable(TaskRef),
}

#[derive(Debug, Clone, Args)]
pub struct TaskRef {
    /// The task's name or id
    #[arg(value_name = "NAME_OR_ID")]
    pub task: String,
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
}

/// When a task runs, shared by create and modify.
#[derive(Debug, Clone, Default, Args)]
pub struct TaskWhen {
    /// How it repeats: once, daily:N, weekly:1,5 (0 = Sunday), monthly:A-B,
    /// or cron:"m h dom mon dow"
    #[arg(long, value_name = "R", value_parser = parse_recurrence)]
    pub recurrence: Option<Recurrence>,
    /// IANA time zone the times of day are in [server default: UTC]
    #[arg(long, value_name = "TZ")]
    pub time_zone: Option<String>,
    /// No run after this time
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339)]
    pub end_time: Option<String>,
    /// Seconds a blocked or missed run is retried, 0 to 1800 [server default: 600]
    #[arg(long, value_name = "SECS")]
    pub expiration: Option<u32>,
}

#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("action").args(["rule", "min", "max", "desired"]).required(true).multiple(true)
))]
pub struct TaskCreate {
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[command(flatten)]
    pub name: NewName,
    /// The first run; its time of day (in --time-zone) is every run's
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339)]
    pub launch_time: String,
    #[command(flatten)]
    pub when: TaskWhen,
    /// Run this rule (name or id)
    #[arg(long, value_name = "RULE", conflicts_with_all = ["min", "max", "desired"])]
    pub rule: Option<String>,
    /// Set the group's min_size
    #[arg(long, value_name = "N")]
    pub min: Option<u32>,
    /// Set the group's max_size
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,
    /// Set the group's desired_capacity
    #[arg(long, value_name = "N")]
    pub desired: Option<u32>,
    /// Create it disabled
    #[arg(long)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TaskModify {
    /// The task's name or id
    #[arg(value_name = "NAME_OR_ID")]
    pub task: String,
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// The next run; its time of day (in --time-zone) is every run's
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339)]
    pub launch_time: Option<String>,
    #[command(flatten)]
    pub when: TaskWhen,
    /// Run this rule (name or id) instead
    #[arg(long, value_name = "RULE", conflicts_with_all = ["min", "max", "desired"])]
    pub rule: Option<String>,
    /// Set the group's min_size
    #[arg(long, value_name = "N")]
    pub min: Option<u32>,
    /// Set the group's max_size
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,
    /// Set the group's desired_capacity
    #[arg(long, value_name = "N")]
    pub desired: Option<u32>,
}

impl TaskModify {
    pub fn is_empty(&self) -> bool {
        self.launch_time.is_none()
            && self.when.recurrence.is_none()
            && self.when.time_zone.is_none()
            && self.when.end_time.is_none()
            && self.when.expiration.is_none()
            && self.rule.is_none()
            && self.min.is_none()
            && self.max.is_none()
            && self.desired.is_none()
    }
}
