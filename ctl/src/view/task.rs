//! Scheduled tasks: recurrence and action in words, the list and the
//! describe block.

use ebb_proto::v1 as pb;
use serde::Serialize;

use super::text::{
    GroupNames, RuleNames, Table, fields, group_name, named, non_empty, or_dash, yes_no,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    pub id: String,
    pub scaling_group_id: String,
    pub name: String,
    pub launch_time: String,
    pub recurrence_type: String,
    pub recurrence_value: String,
    pub time_zone: String,
    pub recurrence_end_time: Option<String>,
    pub launch_expiration_secs: u32,
    pub enabled: bool,
    pub scaling_rule_id: Option<String>,
    pub min_size: Option<u32>,
    pub max_size: Option<u32>,
    pub desired_capacity: Option<u32>,
    pub next_run: Option<String>,
    pub last_run: Option<String>,
    pub last_result: Option<String>,
}

impl From<&pb::ScheduledTask> for TaskView {
    fn from(t: &pb::ScheduledTask) -> Self {
        Self {
            id: t.id.clone(),
            scaling_group_id: t.scaling_group_id.clone(),
            name: t.name.clone(),
            launch_time: t.launch_time.clone(),
            recurrence_type: t.recurrence_type.clone(),
            recurrence_value: t.recurrence_value.clone(),
            time_zone: t.time_zone.clone(),
            recurrence_end_time: non_empty(&t.recurrence_end_time),
            launch_expiration_secs: t.launch_expiration_secs,
            enabled: t.enabled,
            scaling_rule_id: non_empty(&t.scaling_rule_id),
            min_size: t.min_size,
            max_size: t.max_size,
            desired_capacity: t.desired_capacity,
            next_run: non_empty(&t.next_run),
            last_run: non_empty(&t.last_run),
            last_result: non_empty(&t.last_result),
        }
    }
}

/// `once`, `daily:1`, `weekly:1,5`, `monthly:1-7`, `cron:"0 8 * * *"`, with
/// the time zone when it is not UTC.
pub fn recurrence(t: &TaskView) -> String {
    let r = match t.recurrence_type.as_str() {
        "" | "None" => "once".to_owned(),
        "Cron" => format!("cron:\"{}\"", t.recurrence_value),
        other => format!("{}:{}", other.to_ascii_lowercase(), t.recurrence_value),
    };
    match t.time_zone.as_str() {
        "" | "UTC" => r,
        tz => format!("{r} {tz}"),
    }
}

/// `rule add-2`, or `min 2, desired 3`.
pub fn task_action(t: &TaskView, rules: &RuleNames) -> String {
    if let Some(id) = &t.scaling_rule_id {
        return format!("rule {}", rules.get(id).unwrap_or(id));
    }
    let parts: Vec<String> = [
        ("min", t.min_size),
        ("max", t.max_size),
        ("desired", t.desired_capacity),
    ]
    .iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
    .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

pub fn tasks_table(tasks: &[TaskView], groups: &GroupNames, rules: &RuleNames) -> String {
    let mut t = Table::new(&[
        "NAME",
        "GROUP",
        "NEXT RUN",
        "RECURRENCE",
        "ACTION",
        "ENABLED",
        "LAST RESULT",
    ]);
    for task in tasks {
        t.row(vec![
            task.name.clone(),
            group_name(groups, &task.scaling_group_id),
            or_dash(task.next_run.as_deref()),
            recurrence(task),
            task_action(task, rules),
            yes_no(task.enabled),
            or_dash(task.last_result.as_deref()),
        ]);
    }
    t.render()
}

pub fn task_fields(t: &TaskView, groups: &GroupNames, rules: &RuleNames) -> String {
    fields(&[
        ("id", t.id.clone()),
        ("scaling_group", named(groups, &t.scaling_group_id)),
        ("name", t.name.clone()),
        ("launch_time", t.launch_time.clone()),
        ("recurrence", recurrence(t)),
        ("time_zone", or_dash(Some(&t.time_zone))),
        (
            "recurrence_end_time",
            or_dash(t.recurrence_end_time.as_deref()),
        ),
        (
            "launch_expiration_secs",
            t.launch_expiration_secs.to_string(),
        ),
        ("action", task_action(t, rules)),
        ("enabled", t.enabled.to_string()),
        ("next_run", or_dash(t.next_run.as_deref())),
        ("last_run", or_dash(t.last_run.as_deref())),
        ("last_result", or_dash(t.last_result.as_deref())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_list_shows_recurrence_and_action() {
        let t = |name: &str, kind: &str, value: &str, rule: &str, min: Option<u32>| {
            TaskView::from(&pb::ScheduledTask {
                id: format!("ast-{name}"),
                scaling_group_id: "asg-1".into(),
                name: name.into(),
                recurrence_type: kind.into(),
                recurrence_value: value.into(),
                time_zone: if kind == "Daily" {
                    "Europe/Berlin"
                } else {
                    "UTC"
                }
                .into(),
                scaling_rule_id: rule.into(),
                min_size: min,
                enabled: true,
                next_run: "2025-01-07T07:00:00Z".into(),
                last_result: if rule.is_empty() {
                    "asa-9".into()
                } else {
                    String::new()
                },
                ..Default::default()
            })
        };
        let tasks = [
            t("morning", "Daily", "1", "", Some(2)),
            t("weekdays", "Cron", "0 8 * * 1-5", "asr-1", None),
        ];
        let rules = RuleNames::from([("asr-1".to_owned(), "add-2".to_owned())]);
        assert_eq!(
            tasks_table(&tasks, &GroupNames::new(), &rules),
            "NAME      GROUP  NEXT RUN              RECURRENCE             ACTION      ENABLED  LAST RESULT\n\
             morning   asg-1  2025-01-07T07:00:00Z  daily:1 Europe/Berlin  min 2       yes      asa-9\n\
             weekdays  asg-1  2025-01-07T07:00:00Z  cron:\"0 8 * * 1-5\"     rule add-2  yes      -\n"
        );
    }
}
