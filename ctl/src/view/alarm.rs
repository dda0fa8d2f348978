//! Alarms: the condition in one line, the list and the describe block.

use ebb_proto::v1 as pb;
use serde::Serialize;

use super::text::{
    GroupNames, RuleNames, Table, fields, group_name, list, named, non_empty, non_zero, num,
    rfc3339, yes_no,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmView {
    pub id: String,
    pub scaling_group_id: String,
    pub name: String,
    pub metric: String,
    pub statistic: String,
    pub period_secs: u32,
    pub comparison_operator: String,
    pub threshold: f64,
    pub evaluation_count: u32,
    pub missing_data: String,
    pub alarm_actions: Vec<String>,
    pub enabled: bool,
    pub state: String,
    pub state_since_ms: Option<i64>,
    pub owner_rule_id: Option<String>,
    pub history: Vec<String>,
}

impl From<&pb::Alarm> for AlarmView {
    fn from(a: &pb::Alarm) -> Self {
        Self {
            id: a.id.clone(),
            scaling_group_id: a.scaling_group_id.clone(),
            name: a.name.clone(),
            metric: a.metric.clone(),
            statistic: a.statistic.clone(),
            period_secs: a.period_secs,
            comparison_operator: a.comparison_operator.clone(),
            threshold: a.threshold,
            evaluation_count: a.evaluation_count,
            missing_data: a.missing_data.clone(),
            alarm_actions: a.alarm_actions.clone(),
            enabled: a.enabled,
            state: a.state.clone(),
            state_since_ms: non_zero(a.state_since_ms),
            owner_rule_id: non_empty(&a.owner_rule_id),
            history: a.history.clone(),
        }
    }
}

/// `CpuUtilization Average > 80 for 3×60s`
pub fn alarm_condition(a: &AlarmView) -> String {
    format!(
        "{} {} {} {} for {}×{}s",
        a.metric,
        a.statistic,
        a.comparison_operator,
        num(a.threshold),
        a.evaluation_count,
        a.period_secs
    )
}

fn names_of(names: &RuleNames, ids: &[String]) -> String {
    let shown: Vec<String> = ids
        .iter()
        .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
        .collect();
    list(&shown)
}

pub fn alarms_table(alarms: &[AlarmView], groups: &GroupNames, rules: &RuleNames) -> String {
    let mut t = Table::new(&["NAME", "GROUP", "STATE", "CONDITION", "ACTIONS", "ENABLED"]);
    for a in alarms {
        t.row(vec![
            a.name.clone(),
            group_name(groups, &a.scaling_group_id),
            a.state.clone(),
            alarm_condition(a),
            names_of(rules, &a.alarm_actions),
            yes_no(a.enabled),
        ]);
    }
    t.render()
}

pub fn alarm_fields(a: &AlarmView, groups: &GroupNames, rules: &RuleNames) -> String {
    let actions: Vec<String> = a.alarm_actions.iter().map(|id| named(rules, id)).collect();
    let mut out = fields(&[
        ("id", a.id.clone()),
        ("scaling_group", named(groups, &a.scaling_group_id)),
        ("name", a.name.clone()),
        ("condition", alarm_condition(a)),
        ("metric", a.metric.clone()),
        ("statistic", a.statistic.clone()),
        ("period_secs", a.period_secs.to_string()),
        ("comparison_operator", a.comparison_operator.clone()),
        ("threshold", num(a.threshold)),
        ("evaluation_count", a.evaluation_count.to_string()),
        ("missing_data", a.missing_data.clone()),
        ("alarm_actions", list(&actions)),
        ("enabled", a.enabled.to_string()),
        ("state", a.state.clone()),
        (
            "state_since",
            a.state_since_ms.map_or_else(|| "-".to_owned(), rfc3339),
        ),
        (
            "owner_rule",
            a.owner_rule_id
                .as_deref()
                .map_or_else(|| "-".to_owned(), |id| named(rules, id)),
        ),
    ]);
    if a.history.is_empty() {
        out.push_str("history: -\n");
    } else {
        out.push_str("history:\n");
        for h in &a.history {
            out.push_str("  ");
            out.push_str(h);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_list_shows_the_condition_and_rule_names() {
        let a = pb::Alarm {
            id: "asl-1".into(),
            scaling_group_id: "asg-1".into(),
            name: "cpu-high".into(),
            metric: "CpuUtilization".into(),
            statistic: "Average".into(),
            period_secs: 60,
            comparison_operator: ">".into(),
            threshold: 80.0,
            evaluation_count: 3,
            missing_data: "missing".into(),
            alarm_actions: vec!["asr-1".into(), "asr-gone".into()],
            enabled: true,
            state: "ALARM".into(),
            history: vec!["2024-05-01T12:00:00Z ALARM 91 3 of 3 periods > 80".into()],
            ..Default::default()
        };
        let v = AlarmView::from(&a);
        let groups = GroupNames::from([("asg-1".to_owned(), "web".to_owned())]);
        let rules = RuleNames::from([("asr-1".to_owned(), "add-2".to_owned())]);
        assert_eq!(
            alarms_table(std::slice::from_ref(&v), &groups, &rules),
            "NAME      GROUP  STATE  CONDITION                              ACTIONS          ENABLED\n\
             cpu-high  web    ALARM  CpuUtilization Average > 80 for 3×60s  add-2, asr-gone  yes\n"
        );
        let out = alarm_fields(&v, &groups, &rules);
        assert!(
            out.contains("alarm_actions:       add-2 (asr-1), asr-gone\n"),
            "{out}"
        );
        assert!(
            out.ends_with("history:\n  2024-05-01T12:00:00Z ALARM 91 3 of 3 periods > 80\n"),
            "{out}"
        );
    }
}
