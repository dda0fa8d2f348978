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
    pub suspended_processes: Vec<String>,
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
            suspended_processes: g.suspended_processes.clone(),
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
    /// Custom metric sources, with agent.toml's `[[metric]]` keys.
    pub metrics: Vec<ebb_core::model::MetricSource>,
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
            metrics: c.metrics.iter().map(crate::convert::metric_of).collect(),
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
    /// The inputs of the decision, one line each.
    pub details: Vec<String>,
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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    pub id: String,
    pub scaling_group_id: String,
    pub name: String,
    pub rule_type: String,
    /// Verbatim, as the API carries it.
    pub definition_json: String,
    pub owned_alarm_ids: Vec<String>,
}

impl From<&pb::ScalingRule> for RuleView {
    fn from(r: &pb::ScalingRule) -> Self {
        Self {
            id: r.id.clone(),
            scaling_group_id: r.scaling_group_id.clone(),
            name: r.name.clone(),
            rule_type: r.rule_type.clone(),
            definition_json: r.definition_json.clone(),
            owned_alarm_ids: r.owned_alarm_ids.clone(),
        }
    }
}

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

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn non_zero(ms: i64) -> Option<i64> {
    (ms != 0).then_some(ms)
}

/// Group ids to names, for tables that show a group column.
pub type GroupNames = HashMap<String, String>;
/// Rule ids to names, for alarms' actions and tasks' rules.
pub type RuleNames = HashMap<String, String>;

fn group_name(names: &GroupNames, id: &str) -> String {
    names.get(id).cloned().unwrap_or_else(|| id.to_owned())
}

/// `name (id)` when the name is known, else the id.
fn named(names: &HashMap<String, String>, id: &str) -> String {
    match names.get(id) {
        Some(name) => format!("{name} ({id})"),
        None => id.to_owned(),
    }
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

pub fn or_dash(s: Option<&str>) -> String {
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
        ("suspended_processes", list(&g.suspended_processes)),
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
        (
            "metrics",
            metric_lines(&c.metrics, "scaling_group_id: ".len()),
        ),
        ("created_at", rfc3339(c.created_at_ms)),
    ])
}

/// One line per source, the lines after the first indented by `indent` to
/// line up in a `key: value` block.
fn metric_lines(metrics: &[ebb_core::model::MetricSource], indent: usize) -> String {
    if metrics.is_empty() {
        return "-".to_owned();
    }
    metrics
        .iter()
        .map(metric_line)
        .collect::<Vec<_>>()
        .join(&format!("\n{:indent$}", ""))
}

/// `queue_depth: file /run/app/depth (timeout 500 ms)`.
pub fn metric_line(m: &ebb_core::model::MetricSource) -> String {
    let source = match (&m.prometheus, &m.file, &m.command) {
        (Some(p), _, _) => {
            let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            if labels.is_empty() {
                format!("prometheus {} {}", p.url, p.metric)
            } else {
                format!("prometheus {} {}{{{}}}", p.url, p.metric, labels.join(","))
            }
        }
        (None, Some(f), _) => format!("file {}", command_line(std::slice::from_ref(f))),
        (None, None, Some(argv)) => format!("command {}", command_line(argv)),
        (None, None, None) => "no source".to_owned(),
    };
    match m.timeout_ms {
        Some(t) => format!("{}: {source} (timeout {t} ms)", m.name),
        None => format!("{}: {source}", m.name),
    }
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
    let group = named(names, &a.scaling_group_id);
    let mut out = fields(&[
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

/// A value as people write it: `80`, `0.5`, `-2`.
fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// `+2`, `-1`, `+20%`, `=5`: an adjustment in its type's terms.
fn adjustment(adjustment_type: &str, v: i64) -> String {
    match adjustment_type {
        "PercentChangeInCapacity" => format!("{v:+}%"),
        "TotalCapacity" => format!("={v}"),
        _ => format!("{v:+}"),
    }
}

fn bound(b: Option<f64>, infinite: &str) -> String {
    b.map_or_else(|| infinite.to_owned(), num)
}

/// `[0, 10) +1; [10, ∞) +3`
fn steps_line(adjustment_type: &str, steps: &[ebb_core::rules::StepAdjustment]) -> String {
    steps
        .iter()
        .map(|s| {
            format!(
                "[{}, {}) {}",
                bound(s.lower_bound, "-∞"),
                bound(s.upper_bound, "∞"),
                adjustment(adjustment_type, s.adjustment)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A rule's definition in one line; the raw JSON if it does not parse.
pub fn rule_summary(r: &RuleView) -> String {
    use ebb_core::rules::RuleKind;
    let Ok(kind) = serde_json::from_str::<RuleKind>(&r.definition_json) else {
        return r.definition_json.clone();
    };
    let magnitude = |m: &Option<u32>| m.map(|m| format!(", at least {m}")).unwrap_or_default();
    match kind {
        RuleKind::Simple {
            adjustment_type,
            adjustment_value,
            min_adjustment_magnitude,
            cooldown_secs,
        } => format!(
            "{}{}{}",
            adjustment(adjustment_type.as_str(), adjustment_value),
            magnitude(&min_adjustment_magnitude),
            cooldown_secs
                .map(|c| format!(", cooldown {c}s"))
                .unwrap_or_default()
        ),
        RuleKind::Step {
            adjustment_type,
            step_adjustments,
            min_adjustment_magnitude,
            estimated_instance_warmup_secs,
        } => format!(
            "{}{}, warmup {estimated_instance_warmup_secs}s",
            steps_line(adjustment_type.as_str(), &step_adjustments),
            magnitude(&min_adjustment_magnitude)
        ),
        RuleKind::TargetTracking {
            metric,
            target_value,
            disable_scale_in,
            estimated_instance_warmup_secs,
        } => format!(
            "{metric} at {}, warmup {estimated_instance_warmup_secs}s{}",
            num(target_value),
            if disable_scale_in {
                ", no scale-in"
            } else {
                ""
            }
        ),
        RuleKind::Predictive {
            metric,
            target_value,
        } => format!("{metric} at {} (forecast)", num(target_value)),
    }
}

fn short_rule_type(t: &str) -> String {
    t.strip_suffix("ScalingRule").unwrap_or(t).to_owned()
}

pub fn rules_table(rules: &[RuleView]) -> String {
    let mut t = Table::new(&["ID", "NAME", "TYPE", "DEFINITION", "ALARMS"]);
    for r in rules {
        t.row(vec![
            r.id.clone(),
            r.name.clone(),
            short_rule_type(&r.rule_type),
            rule_summary(r),
            list(&r.owned_alarm_ids),
        ]);
    }
    t.render()
}

pub fn rule_fields(r: &RuleView, groups: &GroupNames) -> String {
    let mut pairs: Vec<(String, String)> = vec![
        ("id".into(), r.id.clone()),
        ("scaling_group".into(), named(groups, &r.scaling_group_id)),
        ("name".into(), r.name.clone()),
        ("rule_type".into(), r.rule_type.clone()),
    ];
    // The definition's own fields, one line each.
    match serde_json::from_str::<serde_json::Value>(&r.definition_json) {
        Ok(serde_json::Value::Object(map)) => {
            let adjustment_type = map
                .get("adjustment_type")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned();
            for (k, v) in map {
                if k == "rule_type" {
                    continue;
                }
                let shown = match (k.as_str(), &v) {
                    ("step_adjustments", _) => {
                        serde_json::from_value::<Vec<ebb_core::rules::StepAdjustment>>(v.clone())
                            .map_or_else(|_| v.to_string(), |s| steps_line(&adjustment_type, &s))
                    }
                    (_, serde_json::Value::Null) => "-".to_owned(),
                    (_, serde_json::Value::String(s)) => s.clone(),
                    _ => v.to_string(),
                };
                pairs.push((k, shown));
            }
        }
        _ => pairs.push(("definition_json".into(), r.definition_json.clone())),
    }
    pairs.push(("owned_alarm_ids".into(), list(&r.owned_alarm_ids)));
    let borrowed: Vec<(&str, String)> =
        pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    fields(&borrowed)
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

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
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
    fn config_fields_show_each_metric_source_on_its_own_line() {
        let c = pb::ScalingConfiguration {
            id: "asc-1".into(),
            scaling_group_id: "asg-1".into(),
            name: "web-v1".into(),
            metrics: vec![
                pb::MetricSource {
                    name: "queue_depth".into(),
                    file: "/run/app/queue depth".into(),
                    timeout_ms: 500,
                    ..Default::default()
                },
                pb::MetricSource {
                    name: "rps".into(),
                    prometheus: Some(pb::PrometheusSource {
                        url: "http://127.0.0.1:9100/metrics".into(),
                        metric: "http_requests_total".into(),
                        labels: [("code".to_owned(), "200".to_owned())].into(),
                    }),
                    ..Default::default()
                },
                pb::MetricSource {
                    name: "sessions".into(),
                    command: vec!["/usr/local/bin/sessions".into(), "--count".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let v = ConfigView::from(&c);
        let text = config_fields(&v);
        assert!(
            text.contains(concat!(
                "metrics:          queue_depth: file '/run/app/queue depth' (timeout 500 ms)\n",
                "                  rps: prometheus http://127.0.0.1:9100/metrics http_requests_total{code=\"200\"}\n",
                "                  sessions: command /usr/local/bin/sessions --count\n",
            )),
            "{text}"
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["metrics"][0]["file"], "/run/app/queue depth");
        assert_eq!(json["metrics"][0]["timeout_ms"], 500);
        assert_eq!(json["metrics"][1]["prometheus"]["labels"]["code"], "200");
        let none = config_fields(&ConfigView::from(&pb::ScalingConfiguration::default()));
        assert!(none.contains("metrics:          -\n"), "{none}");
    }

    #[test]
    fn commands_are_quoted_only_where_needed() {
        let argv: Vec<String> = ["python3", "-m", "http.server", "0", "a b"]
            .map(String::from)
            .into();
        assert_eq!(command_line(&argv), "python3 -m http.server 0 'a b'");
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

    #[test]
    fn rules_read_in_one_line() {
        let r = |json: &str| {
            rule_summary(&RuleView::from(&pb::ScalingRule {
                definition_json: json.into(),
                ..Default::default()
            }))
        };
        assert_eq!(
            r(
                r#"{"rule_type":"SimpleScalingRule","adjustment_type":"QuantityChangeInCapacity","adjustment_value":2,"cooldown_secs":60}"#
            ),
            "+2, cooldown 60s"
        );
        assert_eq!(
            r(
                r#"{"rule_type":"StepScalingRule","adjustment_type":"PercentChangeInCapacity","step_adjustments":[{"lower_bound":0,"upper_bound":10,"adjustment":10},{"lower_bound":10,"adjustment":30}]}"#
            ),
            "[0, 10) +10%; [10, ∞) +30%, warmup 300s"
        );
        assert_eq!(
            r(
                r#"{"rule_type":"TargetTrackingScalingRule","metric":"CpuUtilization","target_value":50,"disable_scale_in":true}"#
            ),
            "CpuUtilization at 50, warmup 300s, no scale-in"
        );
        assert_eq!(r("not json"), "not json");
    }

    #[test]
    fn group_describe_shows_suspended_processes() {
        let g = pb::ScalingGroup {
            suspended_processes: vec!["ScaleIn".into(), "AlarmNotification".into()],
            ..Default::default()
        };
        assert!(
            group_fields(&GroupView::from(&g))
                .contains("suspended_processes:             ScaleIn, AlarmNotification\n")
        );
    }
}
