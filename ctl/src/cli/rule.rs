//! `rule` and `scale`: scaling rules as flags, and one-off adjustments.

use clap::{ArgGroup, Args, Subcommand};

use super::parse::{StepArg, adjustment_types, cooldown, parse_step_arg};
use super::{NewName, Wait};

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl rule create add-two --group web --simple --adjustment-type QuantityChangeInCapacity \
                        --adjustment-value 2\n  ebbctl rule execute add-two --group web --wait"
)]
pub enum RuleCmd {
    /// List a group's scaling rules
    #[command(
        after_help = "Examples:\n  ebbctl rule list --group web\n  ebbctl rule list --group web -o wide"
    )]
    List {
        /// The group's name or id
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
    /// Show one rule's every field
    #[command(after_help = "Examples:\n  ebbctl rule describe add-two --group web")]
    Describe(RuleRef),
    /// Create a rule: --simple, --step, --target-tracking or --definition-json
    #[command(
        after_help = "Examples:\n  ebbctl rule create add-two --group web --simple \
                      --adjustment-type QuantityChangeInCapacity --adjustment-value 2\n  \
                      ebbctl rule create steps --group web --step 0:10:1 --step 10::3 \
                      --adjustment-type QuantityChangeInCapacity\n  \
                      ebbctl rule create cpu50 --group web --target-tracking --metric CpuUtilization --target 50"
    )]
    Create(RuleCreate),
    /// Change a rule: the flags given replace those fields of its definition
    #[command(
        after_help = "Examples:\n  ebbctl rule modify cpu50 --group web --target 60\n  \
                            ebbctl rule modify add-two --group web --adjustment-value 3"
    )]
    Modify(RuleModify),
    /// Delete a rule (a target-tracking rule takes its alarms with it)
    #[command(after_help = "Examples:\n  ebbctl rule delete add-two --group web")]
    Delete(RuleRef),
    /// Run a rule now; prints the activity, or why it was rejected
    #[command(
        after_help = "Examples:\n  ebbctl rule execute add-two --group web\n  \
                      ebbctl rule execute add-two --group web --wait\n  \
                      ebbctl rule execute steps --group web --metric-value 85 --threshold 70"
    )]
    Execute(RuleExecute),
    /// A predictive rule's forecast beside the group's history, and its floor now
    #[command(
        after_help = "Examples:\n  ebbctl rule forecast forecast --group web\n  \
                      ebbctl rule forecast forecast --group web --bucket 900 -o json"
    )]
    Forecast(RuleForecast),
}

#[derive(Debug, Clone, Args)]
pub struct RuleForecast {
    /// The predictive rule's name or id
    #[arg(value_name = "NAME_OR_ID")]
    pub rule: String,
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// One row per this many seconds (a multiple of 300, at most 86400)
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub bucket: u32,
}

#[derive(Debug, Clone, Args)]
pub struct RuleRef {
    /// The rule's name or id
    #[arg(value_name = "NAME_OR_ID")]
    pub rule: String,
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
}

#[derive(Debug, Clone, Args)]
pub struct RuleCreate {
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[command(flatten)]
    pub name: NewName,
    #[command(flatten)]
    pub def: RuleDef,
}

#[derive(Debug, Clone, Args)]
pub struct RuleModify {
    /// The rule's name or id
    #[arg(value_name = "NAME_OR_ID")]
    pub rule: String,
    /// The group's name or id
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
        value_parser = parse_step_arg
    )]
    pub steps: Vec<StepArg>,
    /// A target-tracking rule: holds --metric at --target
    #[arg(long)]
    pub target_tracking: bool,
    /// The whole definition as JSON ({"rule_type": "SimpleScalingRule", ...})
    #[arg(long, value_name = "JSON", conflicts_with_all = [
        "adjustment_type", "adjustment_value", "min_adjustment_magnitude", "cooldown",
        "warmup", "metric", "target", "disable_scale_in", "alarm_period",
        "scale_in_stabilization",
    ])]
    pub definition_json: Option<String>,
    /// Simple and step rules: how --adjustment-value (or a step's ADJ) is read
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
    /// Target-tracking rules: the owned alarms' period, SamplingInterval
    /// (the group's) or Minute (ESS's and AWS's) [default: SamplingInterval]
    #[arg(long, value_name = "P", value_parser = ["SamplingInterval", "Minute"])]
    pub alarm_period: Option<String>,
    /// Target-tracking rules: scale in no lower than the highest
    /// recommendation of this many seconds, 0-3600 (0: none) [default: 300]
    #[arg(long, value_name = "SECS")]
    pub scale_in_stabilization: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct RuleExecute {
    /// The rule's name or id
    #[arg(value_name = "NAME_OR_ID")]
    pub rule: String,
    /// The group's name or id
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
    #[command(flatten)]
    pub once: super::Once,
    #[command(flatten)]
    pub wait: Wait,
}

#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// How --adjustment-value is read
    #[arg(long, value_name = "T", value_parser = adjustment_types())]
    pub adjustment_type: String,
    /// The change (negative removes), or the total for TotalCapacity
    #[arg(long, value_name = "V", allow_negative_numbers = true)]
    pub adjustment_value: i64,
    /// PercentChangeInCapacity: change at least this many instances
    #[arg(long, value_name = "N")]
    pub min_adjustment_magnitude: Option<u32>,
    #[command(flatten)]
    pub once: super::Once,
    #[command(flatten)]
    pub wait: Wait,
}
