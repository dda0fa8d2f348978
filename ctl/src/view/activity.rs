//! Scaling activities: the list, the describe block with the decision's
//! inputs, and the outcome `rule execute` and `scale` print.

use ebb_proto::v1 as pb;
use serde::Serialize;

use super::text::{
    GroupNames, Table, duration, fields, group_name, list, named, non_empty, non_zero, or_dash,
    rfc3339,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivityView {
    pub id: String,
    pub scaling_group_id: String,
    pub status: String,
    pub progress: u32,
    pub trigger: String,
    pub capacity_from: u32,
    pub capacity_to: u32,
    pub cause: String,
    pub error: Option<String>,
    pub created_instances: Vec<String>,
    pub removed_instances: Vec<String>,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// The inputs of the decision, one line each.
    pub details: Vec<String>,
    /// The admin identity whose call started it; None when the controller did.
    pub initiated_by: Option<String>,
}

impl From<&pb::Activity> for ActivityView {
    fn from(a: &pb::Activity) -> Self {
        Self {
            id: a.id.clone(),
            scaling_group_id: a.scaling_group_id.clone(),
            status: a.status.clone(),
            progress: a.progress,
            trigger: a.trigger.clone(),
            capacity_from: a.capacity_from,
            capacity_to: a.capacity_to,
            cause: a.cause.clone(),
            error: non_empty(&a.error),
            created_instances: a.created_instances.clone(),
            removed_instances: a.removed_instances.clone(),
            started_at_ms: a.started_at_ms,
            ended_at_ms: non_zero(a.ended_at_ms),
            details: a.details.clone(),
            initiated_by: non_empty(&a.initiated_by),
        }
    }
}

/// The admin's name out of its identity (`spiffe://td/admin/alice` →
/// `alice`), or `-` when the controller started the activity.
fn initiator(a: &ActivityView) -> String {
    match &a.initiated_by {
        Some(uri) => uri
            .rsplit_once("/admin/")
            .map_or(uri.as_str(), |(_, n)| n)
            .to_owned(),
        None => "-".to_owned(),
    }
}

/// `activity list`; `wide` (`-o wide`) adds progress, the end and the
/// instances launched and removed, before the cause.
pub fn activities_table(
    activities: &[ActivityView],
    names: &GroupNames,
    now: i64,
    wide: bool,
) -> String {
    let mut headers = vec![
        "ID", "GROUP", "STATUS", "TRIGGER", "BY", "CAPACITY", "STARTED", "DURATION",
    ];
    if wide {
        headers.extend(["PROGRESS", "ENDED", "LAUNCHED", "REMOVED"]);
    }
    headers.push("CAUSE");
    let mut t = Table::new(&headers);
    let ids = |ids: &[String]| {
        if ids.is_empty() {
            "-".to_owned()
        } else {
            ids.join(",")
        }
    };
    for a in activities {
        let mut row = vec![
            a.id.clone(),
            group_name(names, &a.scaling_group_id),
            a.status.clone(),
            a.trigger.clone(),
            initiator(a),
            format!("{}→{}", a.capacity_from, a.capacity_to),
            rfc3339(a.started_at_ms),
            activity_duration(a, now),
        ];
        if wide {
            row.extend([
                format!("{}%", a.progress),
                a.ended_at_ms.map_or_else(|| "-".to_owned(), rfc3339),
                ids(&a.created_instances),
                ids(&a.removed_instances),
            ]);
        }
        row.push(a.cause.clone());
        t.row(row);
    }
    t.render()
}

/// How long it took, or how long it has been running (`12s…`).
fn activity_duration(a: &ActivityView, now: i64) -> String {
    match a.ended_at_ms {
        Some(end) => duration(end - a.started_at_ms),
        None if a.started_at_ms > 0 => format!("{}…", duration(now - a.started_at_ms)),
        None => "-".to_owned(),
    }
}

pub fn activity_fields(a: &ActivityView, names: &GroupNames, now: i64) -> String {
    let group = named(names, &a.scaling_group_id);
    let mut out = fields(&[
        ("id", a.id.clone()),
        ("scaling_group", group),
        ("status", a.status.clone()),
        ("progress", format!("{}%", a.progress)),
        ("trigger", a.trigger.clone()),
        ("initiated_by", or_dash(a.initiated_by.as_deref())),
        (
            "capacity",
            format!("{} → {}", a.capacity_from, a.capacity_to),
        ),
        ("cause", a.cause.clone()),
        ("error", or_dash(a.error.as_deref())),
        ("created_instances", list(&a.created_instances)),
        ("removed_instances", list(&a.removed_instances)),
        ("started_at", rfc3339(a.started_at_ms)),
        (
            "ended_at",
            a.ended_at_ms.map_or_else(|| "-".to_owned(), rfc3339),
        ),
        ("duration", activity_duration(a, now)),
    ]);
    out.push_str(&why(&a.details));
    out
}

/// The decision's inputs under a `why:` heading.
fn why(details: &[String]) -> String {
    if details.is_empty() {
        return "why: (no details recorded)\n".to_owned();
    }
    let mut out = "why:\n".to_owned();
    for d in details {
        out.push_str("  ");
        out.push_str(d);
        out.push('\n');
    }
    out
}

/// What `rule execute` and `scale` print: the outcome in one line, then why.
pub fn activity_outcome(a: &ActivityView) -> String {
    let mut out = if a.status == "Rejected" {
        format!(
            "rejected: {} (activity {})\n",
            a.error.as_deref().unwrap_or(&a.cause),
            a.id
        )
    } else {
        format!(
            "activity {} {}: capacity {} → {}: {} (ebbctl activity describe {})\n",
            a.id, a.status, a.capacity_from, a.capacity_to, a.cause, a.id
        )
    };
    out.push_str(&why(&a.details));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::T0;

    #[test]
    fn activity_table_shows_capacity_change_and_duration() {
        let done = pb::Activity {
            id: "act-1".into(),
            scaling_group_id: "asg-9".into(),
            cause: "a user changed the desired capacity from 2 to 4".into(),
            trigger: "api".into(),
            status: "Successful".into(),
            capacity_from: 2,
            capacity_to: 4,
            started_at_ms: T0,
            ended_at_ms: T0 + 12_000,
            initiated_by: "spiffe://ebb.local/admin/alice".into(),
            ..Default::default()
        };
        let running = pb::Activity {
            id: "act-2".into(),
            status: "InProgress".into(),
            ended_at_ms: 0,
            started_at_ms: T0 + 60_000,
            initiated_by: String::new(),
            ..done.clone()
        };
        let views: Vec<ActivityView> = [done, running].iter().map(ActivityView::from).collect();
        let out = activities_table(&views, &GroupNames::new(), T0 + 65_000, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "ID     GROUP  STATUS      TRIGGER  BY     CAPACITY  STARTED               DURATION  CAUSE"
        );
        assert_eq!(
            lines[1],
            "act-1  asg-9  Successful  api      alice  2→4       2024-05-01T12:00:00Z  12s       \
             a user changed the desired capacity from 2 to 4"
        );
        assert!(
            lines[2].contains("InProgress") && lines[2].contains("5s…") && lines[2].contains(" - "),
            "{}",
            lines[2]
        );
        assert!(
            activity_fields(&views[1], &GroupNames::new(), T0).contains("ended_at:          -\n")
        );
        assert!(
            activity_fields(&views[0], &GroupNames::new(), T0)
                .contains("initiated_by:      spiffe://ebb.local/admin/alice\n")
        );
    }

    #[test]
    fn wide_adds_progress_end_and_instances_before_the_cause() {
        let a = pb::Activity {
            id: "asa-1".into(),
            scaling_group_id: "asg-9".into(),
            cause: "grow".into(),
            trigger: "api".into(),
            status: "Successful".into(),
            progress: 100,
            capacity_from: 0,
            capacity_to: 2,
            started_at_ms: T0,
            ended_at_ms: T0 + 3_000,
            created_instances: vec!["i-1".into(), "i-2".into()],
            ..Default::default()
        };
        let views = [ActivityView::from(&a)];
        let out = activities_table(&views, &GroupNames::new(), T0 + 5_000, true);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0]
                .ends_with("DURATION  PROGRESS  ENDED                 LAUNCHED  REMOVED  CAUSE"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with("3s        100%      2024-05-01T12:00:03Z  i-1,i-2   -        grow"),
            "{}",
            lines[1]
        );
        let narrow = activities_table(&views, &GroupNames::new(), T0 + 5_000, false);
        assert!(
            !narrow.contains("PROGRESS") && !narrow.contains("i-1,i-2"),
            "{narrow}"
        );
    }

    #[test]
    fn activity_describe_says_why() {
        let a = pb::Activity {
            id: "asa-1".into(),
            scaling_group_id: "asg-1".into(),
            status: "Rejected".into(),
            trigger: "alarm".into(),
            capacity_from: 2,
            capacity_to: 2,
            cause: "alarm cpu-high executed rule add-2".into(),
            error: "the group is in its cooldown (120 s left)".into(),
            details: vec![
                "CpuUtilization Average per 60s: 85, 91, 88 (3 of 3 breaching > 80)".into(),
                "cooldown: last activity ended 14:01:00, 300 s → holds until 14:06:00".into(),
            ],
            started_at_ms: T0,
            ended_at_ms: T0,
            ..Default::default()
        };
        let v = ActivityView::from(&a);
        let out = activity_fields(&v, &GroupNames::new(), T0);
        assert!(
            out.ends_with(
                "why:\n  CpuUtilization Average per 60s: 85, 91, 88 (3 of 3 breaching > 80)\n  \
                 cooldown: last activity ended 14:01:00, 300 s → holds until 14:06:00\n"
            ),
            "{out}"
        );
        assert_eq!(
            activity_outcome(&v).lines().next().unwrap(),
            "rejected: the group is in its cooldown (120 s left) (activity asa-1)"
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["details"][0], a.details[0]);
        let none = ActivityView::from(&pb::Activity::default());
        assert!(
            activity_fields(&none, &GroupNames::new(), T0)
                .ends_with("why: (no details recorded)\n")
        );
    }
}
