//! The command tree. One subcommand family per resource; the connection and
//! output flags are global so they can go anywhere on the line.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use ebb_core::model::{
    ActivityStatus, HealthCheckType, LifecycleState, MAX_COOLDOWN_SECS, RemovalPolicy,
};
use ebb_core::rules::{AdjustmentType, AlarmState, Comparison, MissingData, Statistic};

use crate::automation::{Recurrence, StepArg};

#[derive(Debug, Parser)]
#[command(
    name = "ebbctl",
    version,
    about = "Administer an ebb controller: scaling groups, configurations, instances, \
             activities, scaling rules, alarms and scheduled tasks",
    after_help = "With no connection flags ebbctl uses the controller whose data dir is \
                  --data-dir, $EBB_DATA or ./ebb-data, else /var/lib/ebb when only the packaged controller runs there (its endpoints.toml and pki/admin.*)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The controller's data dir [default: $EBB_DATA, else ./ebb-data, else /var/lib/ebb if a controller runs there]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The controller's gRPC address, instead of the data dir's endpoints.toml
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub controller: Option<String>,
    /// The name the controller's certificate must carry
    #[arg(long, global = true, value_name = "NAME")]
    pub server_name: Option<String>,
    /// The CA certificate [default: <data-dir>/pki/ca.crt]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The admin certificate [default: <data-dir>/pki/admin.crt]
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The admin certificate's key [default: <data-dir>/pki/admin.key]
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Output format
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaling groups
    #[command(subcommand)]
    Group(GroupCmd),
    /// Scaling configurations (templates for new instances)
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Instances of scaling groups
    #[command(subcommand)]
    Instance(InstanceCmd),
    /// Scaling activities (every change of capacity)
    #[command(subcommand)]
    Activity(ActivityCmd),
    /// Scaling rules: simple, step and target tracking
    #[command(subcommand)]
    Rule(RuleCmd),
    /// Change a group's capacity once, without a stored rule
    Scale(ScaleArgs),
    /// Alarm (event-triggered) tasks: watch a metric, run rules
    #[command(subcommand)]
    Alarm(AlarmCmd),
    /// Scheduled tasks: run a rule or set the group's bounds at set times
    #[command(subcommand)]
    Task(TaskCmd),
    /// Webhooks told of a group's activities
    #[command(subcommand)]
    Notification(NotificationCmd),
    /// Lifecycle hooks: hold instances on their way in or out
    #[command(subcommand)]
    Hook(crate::hook::HookCmd),
    /// Certificates issued from the local controller's CA
    #[command(subcommand)]
    Cert(CertCmd),
    /// Create or update a group and its configuration from a TOML file
    Apply(ApplyArgs),
}

#[derive(Debug, Subcommand)]
pub enum NotificationCmd {
    /// A group's webhooks
    List {
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
    /// Post the group's activities to a webhook (all events unless --event)
    Add {
        #[arg(long, value_name = "GROUP")]
        group: String,
        #[arg(long, value_name = "URL")]
        url: String,
        /// SCALE_OUT_START, SCALE_OUT_SUCCESS, SCALE_OUT_ERROR, SCALE_IN_START,
        /// SCALE_IN_SUCCESS, SCALE_IN_ERROR, SCALE_REJECT
        #[arg(long = "event", value_name = "TYPE")]
        events: Vec<String>,
    },
    /// Stop posting to a webhook
    Remove {
        #[arg(long, value_name = "GROUP")]
        group: String,
        #[arg(long, value_name = "URL")]
        url: String,
    },
}

fn removal_policies() -> PossibleValuesParser {
    PossibleValuesParser::new(RemovalPolicy::ALL.iter().map(|p| p.as_str()))
}

fn health_check_types() -> PossibleValuesParser {
    PossibleValuesParser::new(HealthCheckType::ALL.iter().map(|t| t.as_str()))
}

fn lifecycle_states() -> PossibleValuesParser {
    PossibleValuesParser::new(LifecycleState::ALL.iter().map(|s| s.as_str()))
}

fn activity_statuses() -> PossibleValuesParser {
    PossibleValuesParser::new(ActivityStatus::ALL.iter().map(|s| s.as_str()))
}

/// The processes `group suspend` and `group resume` take.
pub const PROCESSES: &[&str] = &[
    "ScaleIn",
    "ScaleOut",
    "HealthCheck",
    "AlarmNotification",
    "ScheduledAction",
];

fn processes() -> PossibleValuesParser {
    PossibleValuesParser::new(PROCESSES)
}

fn adjustment_types() -> PossibleValuesParser {
    PossibleValuesParser::new(AdjustmentType::ALL.iter().map(|t| t.as_str()))
}

fn statistics() -> PossibleValuesParser {
    PossibleValuesParser::new(Statistic::ALL.iter().map(|s| s.as_str()))
}

fn comparisons() -> PossibleValuesParser {
    PossibleValuesParser::new(Comparison::ALL.iter().map(|c| c.as_str()))
}

fn missing_data_modes() -> PossibleValuesParser {
    PossibleValuesParser::new(MissingData::ALL.iter().map(|m| m.as_str()))
}

fn alarm_states() -> PossibleValuesParser {
    PossibleValuesParser::new(AlarmState::ALL.iter().map(|s| s.as_str()))
}

fn period(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    let periods = ebb_core::rules::alarm::PERIODS_SECS;
    if !periods.contains(&v) {
        let list: Vec<String> = periods.iter().map(u32::to_string).collect();
        return Err(format!("must be one of {} seconds", list.join(", ")));
    }
    Ok(v)
}

/// An RFC 3339 instant, kept as given (the server parses it too).
fn rfc3339(s: &str) -> Result<String, String> {
    s.parse::<jiff::Timestamp>()
        .map(|_| s.to_owned())
        .map_err(|e| format!("expected an RFC 3339 time such as 2025-01-06T08:00:00+01:00: {e}"))
}

/// An RFC 3339 instant as Unix milliseconds.
fn rfc3339_ms(s: &str) -> Result<i64, String> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("expected an RFC 3339 time such as 2025-01-06T08:00:00Z: {e}"))
}

fn cooldown(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if v > MAX_COOLDOWN_SECS {
        return Err(format!("must be 0 to {MAX_COOLDOWN_SECS} seconds"));
    }
    Ok(v)
}

/// `KEY=VALUE`, for `--env` and `--tag`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// List every scaling group
    List,
    /// Show one group's every field
    Describe {
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
    },
    /// Create a group (Inactive until enabled)
    Create(GroupCreate),
    /// Change some of a group's fields
    Modify(GroupModify),
    /// Enable a group: it starts converging to its desired capacity
    Enable {
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
        /// The configuration to make active first
        #[arg(long, value_name = "NAME_OR_ID")]
        config: Option<String>,
    },
    /// Disable a group: running activities finish, new ones are rejected
    Disable {
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
    },
    /// Delete a group (it must have no instances unless --force)
    Delete {
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
        /// Disable it, remove its instances, then delete it
        #[arg(long)]
        force: bool,
    },
    /// Stop some of a group's automatic processes
    Suspend(GroupProcesses),
    /// Restart suspended processes
    Resume(GroupProcesses),
}

#[derive(Debug, Args)]
pub struct GroupProcesses {
    #[arg(value_name = "NAME_OR_ID")]
    pub group: String,
    /// ScaleIn, ScaleOut, HealthCheck, AlarmNotification, ScheduledAction
    #[arg(value_name = "PROCESS", required = true, value_parser = processes())]
    pub processes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GroupCreate {
    #[arg(long)]
    pub name: String,
    #[arg(long, value_name = "N")]
    pub min: u32,
    #[arg(long, value_name = "N")]
    pub max: u32,
    /// [default: --min]
    #[arg(long, value_name = "N")]
    pub desired: Option<u32>,
    /// Default cooldown in seconds [server default: 300]
    #[arg(long, value_name = "SECS", value_parser = cooldown)]
    pub cooldown: Option<u32>,
    /// Up to two, in order [server default: OldestScalingConfiguration, OldestInstance]
    #[arg(long = "removal-policy", value_name = "P", value_parser = removal_policies())]
    pub removal_policies: Vec<String>,
    #[arg(long, value_name = "TYPE", value_parser = health_check_types())]
    pub health_check_type: Option<String>,
    /// Health-check grace period in seconds [server default: 60]
    #[arg(long, value_name = "SECS")]
    pub grace_period: Option<u32>,
    /// Seconds between metric pulls, 1 to 300 [server default: 5]
    #[arg(long, value_name = "SECS")]
    pub sampling_interval: Option<u32>,
    #[arg(long)]
    pub deletion_protection: bool,
}

#[derive(Debug, Args)]
pub struct GroupModify {
    #[arg(value_name = "NAME_OR_ID")]
    pub group: String,
    /// Rename the group
    #[arg(long, value_name = "NEW")]
    pub name: Option<String>,
    #[arg(long, value_name = "N")]
    pub min: Option<u32>,
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,
    #[arg(long, value_name = "N")]
    pub desired: Option<u32>,
    #[arg(long, value_name = "SECS", value_parser = cooldown)]
    pub cooldown: Option<u32>,
    /// Replaces the list
    #[arg(long = "removal-policy", value_name = "P", value_parser = removal_policies())]
    pub removal_policies: Vec<String>,
    #[arg(long, value_name = "TYPE", value_parser = health_check_types())]
    pub health_check_type: Option<String>,
    /// The configuration new instances are launched from
    #[arg(long, value_name = "NAME_OR_ID")]
    pub active_config: Option<String>,
    #[arg(long, value_name = "SECS")]
    pub sampling_interval: Option<u32>,
    #[arg(long, value_name = "SECS")]
    pub grace_period: Option<u32>,
    #[arg(long, value_name = "BOOL")]
    pub deletion_protection: Option<bool>,
}

impl GroupModify {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.min.is_none()
            && self.max.is_none()
            && self.desired.is_none()
            && self.cooldown.is_none()
            && self.removal_policies.is_empty()
            && self.health_check_type.is_none()
            && self.active_config.is_none()
            && self.sampling_interval.is_none()
            && self.grace_period.is_none()
            && self.deletion_protection.is_none()
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// List configurations, of one group or all
    List {
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Show one configuration's every field, its metric sources included
    Describe {
        #[arg(value_name = "NAME_OR_ID")]
        config: String,
        /// The group, when a name is used in more than one
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Create a configuration; the workload command follows `--`
    Create(ConfigCreate),
    /// Delete a configuration (not the active one)
    Delete {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ConfigCreate {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[arg(long)]
    pub name: String,
    #[arg(long, value_name = "T", default_value = "")]
    pub instance_type: String,
    /// An environment variable of the workload (repeatable)
    #[arg(long = "env", value_name = "K=V", value_parser = key_value)]
    pub env: Vec<(String, String)>,
    /// A tag (repeatable)
    #[arg(long = "tag", value_name = "K=V", value_parser = key_value)]
    pub tags: Vec<(String, String)>,
    #[arg(long, value_name = "S", default_value = "")]
    pub user_data: String,
    /// The workload: program and arguments, after `--` (none runs the agent alone)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum InstanceCmd {
    /// List instances
    List {
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        #[arg(long, value_name = "S", value_parser = lifecycle_states())]
        state: Option<String>,
    },
    /// Attach hand-managed hosts (their agents hold certs for these ids)
    Attach(InstanceIds),
    /// Take instances out of the group, leaving them running
    Detach(InstanceIdsDesired),
    /// Remove instances from the group, releasing those ebb created
    Remove(InstanceIdsDesired),
    /// Never remove these instances in a scale-in or health replacement
    Protect(InstanceIds),
    /// Undo `protect`
    Unprotect(InstanceIds),
    /// Take instances out of service (and of load balancers), keeping them
    Standby(InstanceIds),
    /// Put standby instances back in service
    ExitStandby(InstanceIds),
    /// Mark instances Healthy or Unhealthy by hand (Unhealthy ones are replaced)
    SetHealth(InstanceHealth),
}

#[derive(Debug, Args)]
pub struct InstanceHealth {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// Healthy or Unhealthy
    #[arg(long, value_name = "STATUS")]
    pub status: String,
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InstanceIds {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InstanceIdsDesired {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// Keep the desired capacity (the group launches replacements)
    #[arg(long)]
    pub keep_desired: bool,
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ActivityCmd {
    /// List activities, newest first
    List {
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// At most this many, fetched page by page [default: 50, or all with --since]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        #[arg(long, value_name = "S", value_parser = activity_statuses())]
        status: Option<String>,
        /// Only activities started at or after this time (filtered by the controller)
        #[arg(long, value_name = "RFC3339", value_parser = rfc3339_ms)]
        since: Option<i64>,
    },
    /// Show one activity's every field
    Describe {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RuleCmd {
    /// List a group's scaling rules
    List {
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
    /// Show one rule's every field
    Describe(RuleRef),
    /// Create a rule: --simple, --step, --target-tracking or --definition-json
    Create(RuleCreate),
    /// Change a rule: the flags given replace those fields of its definition
    Modify(RuleModify),
    /// Delete a rule (a target-tracking rule takes its alarms with it)
    Delete(RuleRef),
    /// Run a rule now; prints the activity, or why it was rejected
    Execute(RuleExecute),
}

#[derive(Debug, Args)]
pub struct RuleRef {
    #[arg(value_name = "NAME_OR_ID")]
    pub rule: String,
    #[arg(long, value_name = "GROUP")]
    pub group: String,
}

#[derive(Debug, Args)]
pub struct RuleCreate {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub def: RuleDef,
}

#[derive(Debug, Args)]
pub struct RuleModify {
    #[arg(value_name = "NAME_OR_ID")]
    pub rule: String,
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// Rename the rule
    #[arg(long, value_name = "NEW")]
    pub name: Option<String>,
    #[command(flatten)]
    pub def: RuleDef,
}

/// A rule's definition as flags; built into the definition JSON here.
#[derive(Debug, Clone, Default, Args)]
#[command(group(
    ArgGroup::new("kind")
        .args(["simple", "steps", "target_tracking", "definition_json"])
        .multiple(false)
))]
pub struct RuleDef {
    /// A simple rule: one adjustment
    #[arg(long)]
    pub simple: bool,
    /// A step rule; with a value, one step (repeatable). LOWER and UPPER are
    /// relative to the alarm's threshold, empty for unbounded: 0:10:1, 10::3.
    /// Negative bounds need the = form: --step=-10:0:-1
    #[arg(
        long = "step",
        value_name = "LOWER:UPPER:ADJ",
        num_args = 0..=1,
        default_missing_value = "",
        action = clap::ArgAction::Append,
        value_parser = crate::automation::parse_step_arg
    )]
    pub steps: Vec<StepArg>,
    /// A target-tracking rule: holds --metric at --target
    #[arg(long)]
    pub target_tracking: bool,
    /// The whole definition as JSON ({"rule_type": "SimpleScalingRule", ...})
    #[arg(long, value_name = "JSON", conflicts_with_all = [
        "adjustment_type", "adjustment_value", "min_adjustment_magnitude", "cooldown",
        "warmup", "metric", "target", "disable_scale_in",
    ])]
    pub definition_json: Option<String>,
    /// Simple and step rules
    #[arg(long, value_name = "T", value_parser = adjustment_types())]
    pub adjustment_type: Option<String>,
    /// Simple rules: the change (negative removes)
    #[arg(long, value_name = "V", allow_negative_numbers = true)]
    pub adjustment_value: Option<i64>,
    /// Simple and step rules, PercentChangeInCapacity only
    #[arg(long, value_name = "N")]
    pub min_adjustment_magnitude: Option<u32>,
    /// Simple rules: overrides the group's default cooldown
    #[arg(long, value_name = "SECS", value_parser = cooldown)]
    pub cooldown: Option<u32>,
    /// Step and target-tracking rules: estimated instance warmup [default: 300]
    #[arg(long, value_name = "SECS")]
    pub warmup: Option<u32>,
    /// Target-tracking rules: CpuUtilization, MemoryUtilization, LoadAverage,
    /// IntranetRx, IntranetTx, TcpConnection or a custom metric
    #[arg(long, value_name = "M")]
    pub metric: Option<String>,
    /// Target-tracking rules: the value to hold the metric at
    #[arg(long, value_name = "V")]
    pub target: Option<f64>,
    /// Target-tracking rules: never scale in (--disable-scale-in false undoes it)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub disable_scale_in: Option<bool>,
}

#[derive(Debug, Args)]
pub struct RuleExecute {
    #[arg(value_name = "NAME_OR_ID")]
    pub rule: String,
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// A step rule's metric value
    #[arg(
        long,
        value_name = "X",
        allow_negative_numbers = true,
        requires = "threshold"
    )]
    pub metric_value: Option<f64>,
    /// A step rule's breach threshold
    #[arg(
        long,
        value_name = "Y",
        allow_negative_numbers = true,
        requires = "metric_value"
    )]
    pub threshold: Option<f64>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[arg(long, value_name = "T", value_parser = adjustment_types())]
    pub adjustment_type: String,
    /// The change (negative removes), or the total for TotalCapacity
    #[arg(long, value_name = "V", allow_negative_numbers = true)]
    pub adjustment_value: i64,
    /// PercentChangeInCapacity: change at least this many instances
    #[arg(long, value_name = "N")]
    pub min_adjustment_magnitude: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum AlarmCmd {
    /// List alarms, of one group or all
    List {
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// OK, ALARM or INSUFFICIENT_DATA
        #[arg(long, value_name = "S", value_parser = alarm_states())]
        state: Option<String>,
    },
    /// Show one alarm's every field and its recent evaluations
    Describe(AlarmRef),
    /// Create an alarm
    Create(AlarmCreate),
    /// Change some of an alarm's fields
    Modify(AlarmModify),
    /// Enable an alarm: it is evaluated and runs its actions
    Enable(AlarmRef),
    /// Disable an alarm: it is no longer evaluated
    Disable(AlarmRef),
    /// Delete an alarm
    Delete(AlarmRef),
}

#[derive(Debug, Args)]
pub struct AlarmRef {
    #[arg(value_name = "NAME_OR_ID")]
    pub alarm: String,
    #[arg(long, value_name = "GROUP")]
    pub group: String,
}

#[derive(Debug, Args)]
pub struct AlarmCreate {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[arg(long)]
    pub name: String,
    /// CpuUtilization, MemoryUtilization, LoadAverage, IntranetRx, IntranetTx,
    /// TcpConnection or a custom metric
    #[arg(long, value_name = "M")]
    pub metric: String,
    #[arg(long, value_name = "S", value_parser = statistics())]
    pub statistic: String,
    /// Seconds per evaluation: 1, 5, 15, 60, 120, 300 or 900
    #[arg(long, value_name = "SECS", value_parser = period)]
    pub period: u32,
    /// How the statistic is compared with the threshold (quote it: '>')
    #[arg(long, value_name = "OP", value_parser = comparisons())]
    pub comparison: String,
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

#[derive(Debug, Args)]
pub struct AlarmModify {
    #[arg(value_name = "NAME_OR_ID")]
    pub alarm: String,
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// Rename the alarm
    #[arg(long, value_name = "NEW")]
    pub name: Option<String>,
    #[arg(long, value_name = "M")]
    pub metric: Option<String>,
    #[arg(long, value_name = "S", value_parser = statistics())]
    pub statistic: Option<String>,
    #[arg(long, value_name = "SECS", value_parser = period)]
    pub period: Option<u32>,
    #[arg(long, value_name = "OP", value_parser = comparisons())]
    pub comparison: Option<String>,
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    #[arg(long, value_name = "N")]
    pub evaluation_count: Option<u32>,
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

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// List scheduled tasks, of one group or all
    List {
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Show one task's every field
    Describe(TaskRef),
    /// Create a task: run a rule (--rule), or set --min/--max/--desired
    Create(TaskCreate),
    /// Change some of a task's fields
    Modify(TaskModify),
    /// Delete a task
    Delete(TaskRef),
    /// Enable a task
    Enable(TaskRef),
    /// Disable a task: it does not run until enabled
    Disable(TaskRef),
}

#[derive(Debug, Args)]
pub struct TaskRef {
    #[arg(value_name = "NAME_OR_ID")]
    pub task: String,
    #[arg(long, value_name = "GROUP")]
    pub group: String,
}

/// When a task runs, shared by create and modify.
#[derive(Debug, Clone, Default, Args)]
pub struct TaskWhen {
    /// How it repeats: once, daily:N, weekly:1,5 (0 = Sunday), monthly:A-B,
    /// or cron:"m h dom mon dow"
    #[arg(long, value_name = "R", value_parser = crate::automation::parse_recurrence)]
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

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("action").args(["rule", "min", "max", "desired"]).required(true).multiple(true)
))]
pub struct TaskCreate {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[arg(long)]
    pub name: String,
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

#[derive(Debug, Args)]
pub struct TaskModify {
    #[arg(value_name = "NAME_OR_ID")]
    pub task: String,
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339)]
    pub launch_time: Option<String>,
    #[command(flatten)]
    pub when: TaskWhen,
    #[arg(long, value_name = "RULE", conflicts_with_all = ["min", "max", "desired"])]
    pub rule: Option<String>,
    #[arg(long, value_name = "N")]
    pub min: Option<u32>,
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,
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

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Issue an agent certificate for a hand-managed host (offline: uses the CA key in the data dir)
    Issue(CertIssue),
}

#[derive(Debug, Args)]
pub struct CertIssue {
    /// The instance id the certificate names
    #[arg(long)]
    pub id: String,
    /// Where to write agent.crt, agent.key and ca.crt
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out_dir: PathBuf,
    /// Validity in days
    #[arg(long, value_name = "N", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=365))]
    pub days: u32,
    /// Overwrite existing files in the out dir
    #[arg(long)]
    pub force: bool,
    /// The CA key, when the CA is not the data dir's [default: <data-dir>/pki/ca.key]
    #[arg(long, value_name = "FILE")]
    pub ca_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The file describing the group and its configuration
    #[arg(short = 'f', long = "file", value_name = "FILE.toml")]
    pub file: PathBuf,
    /// Print the changes without making them
    #[arg(long)]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_create_takes_the_command_after_the_separator() {
        let cli = Cli::parse_from([
            "ebbctl",
            "config",
            "create",
            "--group",
            "web",
            "--name",
            "web-v1",
            "--env",
            "PORT=8080",
            "--",
            "python3",
            "-m",
            "http.server",
            "0",
        ]);
        let Command::Config(ConfigCmd::Create(c)) = cli.command else {
            panic!("parsed {:?}", cli.command)
        };
        assert_eq!(c.command, ["python3", "-m", "http.server", "0"]);
        assert_eq!(c.env, [("PORT".to_owned(), "8080".to_owned())]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["ebbctl", "group", "create", "--name", "w", "--min", "1"][..],
            &[
                "ebbctl",
                "group",
                "create",
                "--name",
                "w",
                "--min",
                "1",
                "--max",
                "2",
                "--removal-policy",
                "Oldest",
            ],
            &["ebbctl", "instance", "list", "--state", "Running"],
            &[
                "ebbctl", "config", "create", "--group", "g", "--name", "n", "--env", "NOEQUALS",
            ],
            &["ebbctl", "-o", "yaml", "group", "list"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::parse_from(["ebbctl", "group", "list", "-o", "json", "--data-dir", "/d"]);
        assert_eq!(cli.global.output, Output::Json);
        assert_eq!(cli.global.data_dir, Some(PathBuf::from("/d")));
    }

    #[test]
    fn suspend_takes_known_processes_and_since_an_rfc3339_time() {
        let cli = Cli::parse_from(["ebbctl", "group", "suspend", "web", "ScaleIn", "ScaleOut"]);
        let Command::Group(GroupCmd::Suspend(p)) = cli.command else {
            panic!("parsed {:?}", cli.command)
        };
        assert_eq!(
            (p.group.as_str(), &p.processes[..]),
            ("web", &["ScaleIn".to_owned(), "ScaleOut".to_owned()][..])
        );
        let cli = Cli::parse_from([
            "ebbctl",
            "activity",
            "list",
            "--since",
            "2024-05-01T14:00:00Z",
        ]);
        let Command::Activity(ActivityCmd::List { since, .. }) = cli.command else {
            panic!()
        };
        assert_eq!(since, Some(1_714_572_000_000));
        for args in [
            &["ebbctl", "group", "suspend", "web", "Launch"][..],
            &["ebbctl", "group", "resume", "web"],
            &["ebbctl", "activity", "list", "--since", "yesterday"],
            &[
                "ebbctl",
                "alarm",
                "create",
                "--group",
                "g",
                "--name",
                "a",
                "--metric",
                "CpuUtilization",
                "--statistic",
                "Average",
                "--period",
                "61",
                "--comparison",
                ">",
                "--threshold",
                "80",
                "--action",
                "r",
            ],
            &[
                "ebbctl",
                "alarm",
                "create",
                "--group",
                "g",
                "--name",
                "a",
                "--metric",
                "CpuUtilization",
                "--statistic",
                "Average",
                "--period",
                "60",
                "--comparison",
                ">",
                "--threshold",
                "80",
            ],
            &[
                "ebbctl",
                "rule",
                "execute",
                "r",
                "--group",
                "g",
                "--metric-value",
                "90",
            ],
            &[
                "ebbctl",
                "task",
                "create",
                "--group",
                "g",
                "--name",
                "t",
                "--launch-time",
                "2025-01-06T08:00:00Z",
                "--recurrence",
                "hourly:1",
                "--min",
                "1",
            ],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn scale_and_thresholds_take_negative_numbers() {
        let cli = Cli::parse_from([
            "ebbctl",
            "scale",
            "--group",
            "web",
            "--adjustment-type",
            "QuantityChangeInCapacity",
            "--adjustment-value",
            "-2",
        ]);
        let Command::Scale(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.adjustment_value, -2);
        let cli = Cli::parse_from([
            "ebbctl",
            "rule",
            "execute",
            "steps",
            "--group",
            "web",
            "--metric-value",
            "-3.5",
            "--threshold",
            "-10",
        ]);
        let Command::Rule(RuleCmd::Execute(e)) = cli.command else {
            panic!()
        };
        assert_eq!((e.metric_value, e.threshold), (Some(-3.5), Some(-10.0)));
    }
}
