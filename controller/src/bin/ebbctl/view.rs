//! What ebbctl prints: plain views of the API's messages (prost messages do
//! not derive `Serialize`), aligned tables, `key: value` blocks and times.
//! Field names match the proto's so JSON output is stable.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use ebb_proto::v1 as pb;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    pub state: String,
    pub min_size: u32,
    pub max_size: u32,
    pub desired_capacity: u32,
    pub total_capacity: u32,
    pub in_service: u32,
    pub pending: u32,
    pub default_cooldown_secs: u32,
    pub removal_policies: Vec<String>,
    pub health_check_type: String,
    pub health_check_grace_period_secs: u32,
    pub sampling_interval_secs: u32,
    pub deletion_protection: bool,
    pub active_scaling_configuration_id: Option<String>,
    pub created_at_ms: i64,
}

impl From<&pb::ScalingGroup> for GroupView {
    fn from(g: &pb::ScalingGroup) -> Self {
        Self {
            id: g.id.clone(),
            name: g.name.clone(),
            state: g.state.clone(),
            min_size: g.min_size,
            max_size: g.max_size,
            desired_capacity: g.desired_capacity,
            total_capacity: g.total_capacity,
            in_service: g.in_service,
            pending: g.pending,
            default_cooldown_secs: g.default_cooldown_secs,
            removal_policies: g.removal_policies.clone(),
            health_check_type: g.health_check_type.clone(),
            health_check_grace_period_secs: g.health_check_grace_period_secs,
            sampling_interval_secs: g.sampling_interval_secs,
            deletion_protection: g.deletion_protection,
            active_scaling_configuration_id: non_empty(&g.active_scaling_configuration_id),
            created_at_ms: g.created_at_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigView {
    pub id: String,
    pub scaling_group_id: String,
    pub name: String,
    pub active: bool,
    pub instance_type: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub user_data: String,
    pub created_at_ms: i64,
}

impl From<&pb::ScalingConfiguration> for ConfigView {
    fn from(c: &pb::ScalingConfiguration) -> Self {
        Self {
            id: c.id.clone(),
            scaling_group_id: c.scaling_group_id.clone(),
            name: c.name.clone(),
            active: c.active,
            instance_type: c.instance_type.clone(),
            command: c.command.clone(),
            env: c.env.clone().into_iter().collect(),
            tags: c.tags.clone().into_iter().collect(),
            user_data: c.user_data.clone(),
            created_at_ms: c.created_at_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub scaling_group_id: String,
    pub scaling_configuration_id: Option<String>,
    pub lifecycle_state: String,
    pub health_status: String,
    pub creation_type: String,
    pub address: Option<String>,
    pub hostname: Option<String>,
    pub agent_connected: bool,
    pub cpu_utilization: Option<f64>,
    pub memory_utilization: Option<f64>,
    pub created_at_ms: i64,
    pub in_service_at_ms: Option<i64>,
}

impl From<&pb::Instance> for InstanceView {
    fn from(i: &pb::Instance) -> Self {
        Self {
            id: i.id.clone(),
            scaling_group_id: i.scaling_group_id.clone(),
            scaling_configuration_id: non_empty(&i.scaling_configuration_id),
            lifecycle_state: i.lifecycle_state.clone(),
            health_status: i.health_status.clone(),
            creation_type: i.creation_type.clone(),
            address: non_empty(&i.address),
            hostname: non_empty(&i.hostname),
            agent_connected: i.agent_connected,
            cpu_utilization: i.cpu_utilization,
            memory_utilization: i.memory_utilization,
            created_at_ms: i.created_at_ms,
            in_service_at_ms: non_zero(i.in_service_at_ms),
        }
    }
}

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
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn non_zero(ms: i64) -> Option<i64> {
    (ms != 0).then_some(ms)
}

/// Group ids to names, for tables that show a group column.
pub type GroupNames = HashMap<String, String>;

fn group_name(names: &GroupNames, id: &str) -> String {
    names.get(id).cloned().unwrap_or_else(|| id.to_owned())
}

/// Columns padded to their widest cell, two spaces apart.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let headers = self.headers.iter().map(|h| h.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{:<w$} {v}", format!("{k}:")).trim_end().to_owned() + "\n")
        .collect()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Unix milliseconds as RFC 3339 UTC to the second; `-` for unset.
pub fn rfc3339(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_owned();
    }
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "-".to_owned(),
    }
}

/// A span the way `kubectl` shows ages: `45s`, `12m`, `5h`, `3d`.
pub fn age(now_ms: i64, since_ms: i64) -> String {
    if since_ms <= 0 {
        return "-".to_owned();
    }
    let secs = (now_ms - since_ms).max(0) / 1000;
    match secs {
        0..120 => format!("{secs}s"),
        120..7_200 => format!("{}m", secs / 60),
        7_200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// How long something took: `850ms`, `12s`, `3m4s`, `1h2m`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let secs = ms / 1000;
    match secs {
        0 => format!("{ms}ms"),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_owned()
}

/// A command line as a person would type it.
pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn map_line(m: &BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "-".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn groups_table(groups: &[GroupView], now: i64) -> String {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "STATE",
        "MIN",
        "MAX",
        "DESIRED",
        "TOTAL",
        "IN-SERVICE",
        "PENDING",
        "CONFIG",
        "AGE",
    ]);
    for g in groups {
        t.row(vec![
            g.id.clone(),
            g.name.clone(),
            g.state.clone(),
            g.min_size.to_string(),
            g.max_size.to_string(),
            g.desired_capacity.to_string(),
            g.total_capacity.to_string(),
            g.in_service.to_string(),
            g.pending.to_string(),
            or_dash(g.active_scaling_configuration_id.as_deref()),
            age(now, g.created_at_ms),
        ]);
    }
    t.render()
}

pub fn group_fields(g: &GroupView) -> String {
    fields(&[
        ("id", g.id.clone()),
        ("name", g.name.clone()),
        ("state", g.state.clone()),
        ("min_size", g.min_size.to_string()),
        ("max_size", g.max_size.to_string()),
        ("desired_capacity", g.desired_capacity.to_string()),
        ("total_capacity", g.total_capacity.to_string()),
        ("in_service", g.in_service.to_string()),
        ("pending", g.pending.to_string()),
        ("default_cooldown_secs", g.default_cooldown_secs.to_string()),
        ("removal_policies", list(&g.removal_policies)),
        ("health_check_type", g.health_check_type.clone()),
        (
            "health_check_grace_period_secs",
            g.health_check_grace_period_secs.to_string(),
        ),
        (
            "sampling_interval_secs",
            g.sampling_interval_secs.to_string(),
        ),
        ("deletion_protection", g.deletion_protection.to_string()),
        (
            "active_scaling_configuration_id",
            or_dash(g.active_scaling_configuration_id.as_deref()),
        ),
        ("created_at", rfc3339(g.created_at_ms)),
    ])
}

pub fn configs_table(configs: &[ConfigView], names: &GroupNames, now: i64) -> String {
    let mut t = Table::new(&["ID", "GROUP", "NAME", "ACTIVE", "TYPE", "COMMAND", "AGE"]);
    for c in configs {
        t.row(vec![
            c.id.clone(),
            group_name(names, &c.scaling_group_id),
            c.name.clone(),
            if c.active { "yes" } else { "no" }.to_owned(),
            or_dash(Some(&c.instance_type)),
            or_dash(Some(&command_line(&c.command))),
            age(now, c.created_at_ms),
        ]);
    }
    t.render()
}

pub fn config_fields(c: &ConfigView) -> String {
    fields(&[
        ("id", c.id.clone()),
        ("scaling_group_id", c.scaling_group_id.clone()),
        ("name", c.name.clone()),
        ("active", c.active.to_string()),
        ("instance_type", or_dash(Some(&c.instance_type))),
        ("command", or_dash(Some(&command_line(&c.command)))),
        ("env", map_line(&c.env)),
        ("tags", map_line(&c.tags)),
        ("user_data", or_dash(Some(&c.user_data))),
        ("created_at", rfc3339(c.created_at_ms)),
    ])
}

pub fn instances_table(instances: &[InstanceView], names: &GroupNames, now: i64) -> String {
    let mut t = Table::new(&[
        "ID", "GROUP", "STATE", "HEALTH", "TYPE", "AGENT", "CPU%", "MEM%", "AGE",
    ]);
    for i in instances {
        t.row(vec![
            i.id.clone(),
            group_name(names, &i.scaling_group_id),
            i.lifecycle_state.clone(),
            i.health_status.clone(),
            i.creation_type.clone(),
            if i.agent_connected { "up" } else { "down" }.to_owned(),
            percent(i.cpu_utilization),
            percent(i.memory_utilization),
            age(now, i.created_at_ms),
        ]);
    }
    t.render()
}

pub fn activities_table(activities: &[ActivityView], names: &GroupNames, now: i64) -> String {
    let mut t = Table::new(&[
        "ID", "GROUP", "STATUS", "TRIGGER", "CAPACITY", "STARTED", "DURATION", "CAUSE",
    ]);
    for a in activities {
        t.row(vec![
            a.id.clone(),
            group_name(names, &a.scaling_group_id),
            a.status.clone(),
            a.trigger.clone(),
            format!("{}→{}", a.capacity_from, a.capacity_to),
            rfc3339(a.started_at_ms),
            activity_duration(a, now),
            a.cause.clone(),
        ]);
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
    let group = match names.get(&a.scaling_group_id) {
        Some(name) => format!("{name} ({})", a.scaling_group_id),
        None => a.scaling_group_id.clone(),
    };
    fields(&[
        ("id", a.id.clone()),
        ("scaling_group", group),
        ("status", a.status.clone()),
        ("progress", format!("{}%", a.progress)),
        ("trigger", a.trigger.clone()),
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
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-05-01T12:00:00Z
    const T0: i64 = 1_714_564_800_000;

    #[test]
    fn times_are_rfc3339_utc_and_short_ages() {
        assert_eq!(rfc3339(T0), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339(0), "-");
        assert_eq!(age(T0 + 45_000, T0), "45s");
        assert_eq!(age(T0 + 600_000, T0), "10m");
        assert_eq!(age(T0 + 5 * 3_600_000, T0), "5h");
        assert_eq!(age(T0 + 3 * 86_400_000, T0), "3d");
        assert_eq!(age(T0, 0), "-");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_400), "12s");
        assert_eq!(duration(184_000), "3m4s");
        assert_eq!(duration(3_720_000), "1h2m");
    }

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let mut t = Table::new(&["ID", "NAME", "X"]);
        t.row(vec!["a".into(), "longer-name".into(), "".into()]);
        t.row(vec!["bbbb".into(), "n".into(), "z".into()]);
        assert_eq!(
            t.render(),
            "ID    NAME         X\n\
             a     longer-name\n\
             bbbb  n            z\n"
        );
    }

    fn instance(id: &str, cpu: Option<f64>, up: bool) -> pb::Instance {
        pb::Instance {
            id: id.into(),
            scaling_group_id: "asg-1".into(),
            lifecycle_state: "InService".into(),
            health_status: "Healthy".into(),
            creation_type: "AutoCreated".into(),
            created_at_ms: T0,
            agent_connected: up,
            cpu_utilization: cpu,
            memory_utilization: cpu.map(|c| c / 2.0),
            ..Default::default()
        }
    }

    #[test]
    fn instance_table_shows_group_names_agent_and_load() {
        let names = GroupNames::from([("asg-1".to_owned(), "web".to_owned())]);
        let views: Vec<InstanceView> = [
            instance("i-1", Some(42.4), true),
            instance("i-22", None, false),
        ]
        .iter()
        .map(InstanceView::from)
        .collect();
        assert_eq!(
            instances_table(&views, &names, T0 + 90_000),
            "ID    GROUP  STATE      HEALTH   TYPE         AGENT  CPU%  MEM%  AGE\n\
             i-1   web    InService  Healthy  AutoCreated  up     42    21    90s\n\
             i-22  web    InService  Healthy  AutoCreated  down   -     -     90s\n"
        );
    }

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
            ..Default::default()
        };
        let running = pb::Activity {
            id: "act-2".into(),
            status: "InProgress".into(),
            ended_at_ms: 0,
            started_at_ms: T0 + 60_000,
            ..done.clone()
        };
        let views: Vec<ActivityView> = [done, running].iter().map(ActivityView::from).collect();
        let out = activities_table(&views, &GroupNames::new(), T0 + 65_000);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "ID     GROUP  STATUS      TRIGGER  CAPACITY  STARTED               DURATION  CAUSE"
        );
        assert_eq!(
            lines[1],
            "act-1  asg-9  Successful  api      2→4       2024-05-01T12:00:00Z  12s       \
             a user changed the desired capacity from 2 to 4"
        );
        assert!(
            lines[2].contains("InProgress") && lines[2].contains("5s…"),
            "{}",
            lines[2]
        );
        assert!(
            activity_fields(&views[1], &GroupNames::new(), T0).contains("ended_at:          -\n")
        );
    }

    #[test]
    fn json_views_use_the_proto_field_names() {
        let v = InstanceView::from(&instance("i-1", Some(10.0), true));
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["lifecycle_state"], "InService");
        assert_eq!(json["cpu_utilization"], 10.0);
        assert_eq!(json["scaling_configuration_id"], serde_json::Value::Null);
        assert_eq!(json["in_service_at_ms"], serde_json::Value::Null);
    }

    #[test]
    fn commands_are_quoted_only_where_needed() {
        let argv: Vec<String> = ["python3", "-m", "http.server", "0", "a b"]
            .map(String::from)
            .into();
        assert_eq!(command_line(&argv), "python3 -m http.server 0 'a b'");
    }
}
