//! What ebbctl prints: plain views of the API's messages (prost messages do
//! not derive `Serialize`), aligned tables, `key: value` blocks and times.
//! Field names match the proto's so JSON output is stable. One module per
//! resource family; `text` holds what they share.

mod activity;
mod alarm;
mod attachment;
mod config;
mod forecast;
mod group;
mod instance;
mod rule;
mod task;
mod text;

pub use activity::{ActivityView, activities_table, activity_fields, activity_outcome};
pub use alarm::{AlarmView, alarm_condition, alarm_fields, alarms_table};
pub use attachment::{DbInstanceView, LoadBalancerView, db_instances_table, load_balancers_table};
pub use config::{ConfigView, config_fields, configs_table, metric_line};
pub use forecast::{ForecastView, forecast_text};
pub use group::{GroupView, group_fields, groups_table};
pub use instance::{InstanceView, instance_fields, instances_table};
pub use rule::{RuleView, rule_fields, rule_summary, rules_table};
pub use task::{TaskView, recurrence, task_fields, tasks_table};
pub use text::{
    GroupNames, RuleNames, Table, command_line, duration, now_ms, one_line, or_dash, rfc3339,
};

/// 2024-05-01T12:00:00Z, "now" in the tests.
#[cfg(test)]
const T0: i64 = 1_714_564_800_000;
