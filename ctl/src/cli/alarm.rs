//! `alarm`: alarm (event-triggered) tasks.

use clap::{Args, Subcommand};

use super::NewName;
use super::parse::{alarm_states, comparisons, missing_data_modes, period, statistics};

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl alarm list --state ALARM\n  ebbctl alarm disable cpu-high --group web"
)]
pub enum AlarmCmd {
    /// List alarms, of one group or all
    #[command(
        after_help = "Examples:\n  ebbctl alarm list\n  ebbctl alarm list --group web --state ALARM -o wide"
    )]
    List {
        /// Only this group's (name or id)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// OK, ALARM or INSUFFICIENT_DATA
        #[arg(long, value_name = "S", value_parser = alarm_states())]
        state: Option<String>,
    },
    /// Show one alarm's every field and its recent evaluations
    #[command(after_help = "Examples:\n  ebbctl alarm describe cpu-high --group web")]
    Describe(AlarmRef),
    /// Create an alarm
    #[command(
        after_help = "Examples:\n  ebbctl alarm create cpu-high --group web --metric CpuUtilization \
                      --statistic Average --period 60 --comparison '>' --threshold 80 --action add-two"
    )]
    Create(AlarmCreate),
    /// Change some of an alarm's fields
    #[command(
        after_help = "Examples:\n  ebbctl alarm modify cpu-high --group web --threshold 70 --evaluation-count 2"
    )]
    Modify(AlarmModify),
    /// Enable an alarm: it is evaluated and runs its actions
    #[command(after_help = "Examples:\n  ebbctl alarm enable cpu-high --group web")]
    Enable(AlarmRef),
    /// Disable an alarm: it is no longer evaluated
    #[command(after_help = "Examples:\n  ebbctl alarm disable cpu-high --group web")]
    Disable(AlarmRef),
    /// Delete an alarm
    #[command(after_help = "Examples:\n  ebbctl alarm delete cpu-high --group web")]
    Delete(AlarmRef),
}

#[derive(Debug, Clone, Args)]
pub struct AlarmRef {
    /// The alarm's name or id
    #[arg(value_name = "NAME_OR_ID")]
    pub alarm: String,
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
}

#[derive(Debug, Clone, Args)]
pub struct AlarmCreate {
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[command(flatten)]
    pub name: NewName,
    /// CpuUtilization, MemoryUtilization, LoadAverage, IntranetRx, IntranetTx,
    /// TcpConnection or a custom metric
    #[arg(long, value_name = "M")]
    pub metric: String,
    /// How a period's samples are summed up
    #[arg(long, value_name = "S", value_parser = statistics())]
    pub statistic: String,
    /// Seconds per evaluation: 1, 5, 15, 60, 120, 300 or 900
    #[arg(long, value_name = "SECS", value_parser = period)]
    pub period: u32,
    /// How the statistic is compared with the threshold: >, >=, < or <= (quote it: '>')
    #[arg(long, value_name = "OP", value_parser = comparisons())]
    pub comparison: String,
    /// The value the statistic is compared with
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub threshold: f64,
    /// Consecutive breaching periods before ALARM [server default: 3]
    #[arg(long, value_name = "N")]
    pub evaluation_count: Option<u32>,
    /// How a period without data counts [server default: missing]
    #[arg(long, value_name = "MODE", value_parser = missing_data_modes())]
    pub missing_data: Option<String>,
    /// A rule (name or id) to run in ALARM; 1 to 5
    #[arg(long = "action", value_name = "RULE", required = true)]
    pub actions: Vec<String>,
    /// Create it disabled
    #[arg(long)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AlarmModify {
    /// The alarm's name or id
    #[arg(value_name = "NAME_OR_ID")]
    pub alarm: String,
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// Rename the alarm
    #[arg(long, value_name = "NEW")]
    pub name: Option<String>,
    /// The metric watched
    #[arg(long, value_name = "M")]
    pub metric: Option<String>,
    /// How a period's samples are summed up
    #[arg(long, value_name = "S", value_parser = statistics())]
    pub statistic: Option<String>,
    /// Seconds per evaluation: 1, 5, 15, 60, 120, 300 or 900
    #[arg(long, value_name = "SECS", value_parser = period)]
    pub period: Option<u32>,
    /// How the statistic is compared with the threshold: >, >=, < or <= (quote it: '>')
    #[arg(long, value_name = "OP", value_parser = comparisons())]
    pub comparison: Option<String>,
    /// The value the statistic is compared with
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    /// Consecutive breaching periods before ALARM
    #[arg(long, value_name = "N")]
    pub evaluation_count: Option<u32>,
    /// How a period without data counts
    #[arg(long, value_name = "MODE", value_parser = missing_data_modes())]
    pub missing_data: Option<String>,
    /// Replaces the actions (repeatable)
    #[arg(long = "action", value_name = "RULE")]
    pub actions: Vec<String>,
}

impl AlarmModify {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.metric.is_none()
            && self.statistic.is_none()
            && self.period.is_none()
            && self.comparison.is_none()
            && self.threshold.is_none()
            && self.evaluation_count.is_none()
            && self.missing_data.is_none()
            && self.actions.is_empty()
    }
}
