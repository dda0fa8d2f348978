//! The file `ebbctl apply -f` and `ebb-sim run --file` read: its sections
//! as serde types, parsed with errors that name the file, line and key, and
//! validated with the domain's own rules so a bad file fails before anything
//! is called (or simulated). Parsing only: the callers read the file.

use std::collections::BTreeMap;

use crate::model;
use crate::rules::{AlarmSpec, Comparison, MissingData, RuleKind, Statistic};
use crate::schedule;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyFile {
    pub group: GroupDecl,
    pub configuration: ConfigDecl,
    /// `[[rule]]`, applied before the alarms and tasks that name them.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleDecl>,
    #[serde(default, rename = "alarm")]
    pub alarms: Vec<AlarmDecl>,
    #[serde(default, rename = "task")]
    pub tasks: Vec<TaskDecl>,
    /// `[[load_balancer]]` and `[[db_instance]]`, attached after the rest.
    #[serde(default, rename = "load_balancer")]
    pub load_balancers: Vec<LoadBalancerDecl>,
    #[serde(default, rename = "db_instance")]
    pub db_instances: Vec<DbInstanceDecl>,
}

/// `[[load_balancer]]`: the group's instances as servers of an HAProxy
/// backend on a target agent. The whole attachment: a key left out takes
/// its default (weight 1, drain 30 s), as `lb attach` does. Numbers are
/// taken wide so a bad one is refused with its range.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerDecl {
    /// The file's group; may be left out.
    pub group: Option<String>,
    pub target: String,
    pub backend: String,
    pub port: u32,
    pub weight: Option<u32>,
    pub drain_timeout_secs: Option<u32>,
}

impl LoadBalancerDecl {
    pub fn spec(&self) -> model::attachments::LoadBalancerSpec {
        model::attachments::LoadBalancerSpec {
            target: self.target.clone(),
            backend: self.backend.clone(),
            port: self.port,
            weight: self.weight,
            drain_timeout_secs: self.drain_timeout_secs,
        }
    }
}

/// `[[db_instance]]`: the group's instance addresses on a PostgreSQL
/// allow-list on a target agent (`auth_method` left out: scram-sha-256).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbInstanceDecl {
    /// The file's group; may be left out.
    pub group: Option<String>,
    pub target: String,
    pub database: String,
    pub user: String,
    pub auth_method: Option<String>,
}

impl DbInstanceDecl {
    pub fn spec(&self) -> model::attachments::DbInstanceSpec {
        model::attachments::DbInstanceSpec {
            target: self.target.clone(),
            database: self.database.clone(),
            user: self.user.clone(),
            auth_method: self.auth_method.clone(),
        }
    }
}

/// `[[rule]]`: a name and the rule's definition, flattened (`rule_type =
/// "SimpleScalingRule"`, `adjustment_type`, ...): the whole definition, so a
/// key left out takes the rule's default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "toml::Table")]
pub struct RuleDecl {
    pub name: String,
    pub kind: RuleKind,
}

impl TryFrom<toml::Table> for RuleDecl {
    type Error = String;

    fn try_from(mut table: toml::Table) -> Result<Self, String> {
        let name = match table.remove("name") {
            Some(toml::Value::String(s)) => s,
            Some(other) => {
                return Err(format!("name: expected a string, got {}", other.type_str()));
            }
            None => return Err("missing field `name`".to_owned()),
        };
        let keys: Vec<String> = table.keys().cloned().collect();
        let value = serde_json::to_value(&table).map_err(|e| format!("rule {name}: {e}"))?;
        let kind: RuleKind =
            serde_json::from_value(value).map_err(|e| format!("rule {name}: {e}"))?;
        // The definition's fields are its serialised keys: anything else is a typo.
        let known = serde_json::to_value(&kind).unwrap_or_default();
        for k in keys {
            if known.get(&k).is_none() {
                return Err(format!(
                    "rule {name}: unknown field `{k}` for a {}",
                    kind_name(&kind)
                ));
            }
        }
        Ok(RuleDecl { name, kind })
    }
}

fn kind_name(kind: &RuleKind) -> &'static str {
    match kind {
        RuleKind::Simple { .. } => "SimpleScalingRule",
        RuleKind::Step { .. } => "StepScalingRule",
        RuleKind::TargetTracking { .. } => "TargetTrackingScalingRule",
        RuleKind::Predictive { .. } => "PredictiveScalingRule",
    }
}

/// `[[alarm]]`. A key left out is left as the controller has it (on create,
/// the default applies); `alarm_actions` name rules (of the file or the group).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmDecl {
    pub name: String,
    pub metric: String,
    pub statistic: String,
    pub period_secs: u32,
    pub comparison_operator: String,
    pub threshold: f64,
    pub evaluation_count: Option<u32>,
    pub missing_data: Option<String>,
    pub alarm_actions: Vec<String>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

/// `[[task]]`: when, and either `scaling_rule` or any of the bounds. A key
/// left out is left as the controller has it (on create, the default).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDecl {
    pub name: String,
    pub launch_time: String,
    pub recurrence_type: Option<String>,
    pub recurrence_value: Option<String>,
    pub time_zone: Option<String>,
    pub recurrence_end_time: Option<String>,
    pub launch_expiration_secs: Option<u32>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    pub scaling_rule: Option<String>,
    pub min_size: Option<u32>,
    pub max_size: Option<u32>,
    pub desired_capacity: Option<u32>,
}

/// `[group]`. A key left out is left as the controller has it (so a scaler's
/// `desired_capacity` is not reset by every apply); on create the
/// controller's default applies.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDecl {
    pub name: String,
    pub min_size: u32,
    pub max_size: u32,
    pub desired_capacity: Option<u32>,
    pub default_cooldown_secs: Option<u32>,
    pub removal_policies: Option<Vec<String>>,
    pub health_check_type: Option<String>,
    pub health_check_grace_period_secs: Option<u32>,
    pub sampling_interval_secs: Option<u32>,
    pub deletion_protection: Option<bool>,
    /// Enable after applying (the default), or disable.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

impl GroupDecl {
    /// The group the section declares, as the model validates it.
    pub fn spec(&self) -> model::GroupSpec {
        model::GroupSpec {
            name: Some(self.name.clone()),
            min_size: Some(self.min_size),
            max_size: Some(self.max_size),
            desired_capacity: self.desired_capacity,
            default_cooldown_secs: self.default_cooldown_secs,
            removal_policies: self.removal_policies.clone(),
            health_check_type: self.health_check_type.clone(),
            health_check_grace_period_secs: self.health_check_grace_period_secs,
            sampling_interval_secs: self.sampling_interval_secs,
            deletion_protection: self.deletion_protection,
        }
    }
}

/// `[configuration]`: the whole template; a key left out means empty.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDecl {
    pub name: String,
    #[serde(default)]
    pub instance_type: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub user_data: String,
    /// Checks the instances' agents run locally: `[[configuration.health_checks]]`.
    #[serde(default)]
    pub health_checks: Vec<model::LocalCheck>,
    /// Custom metric sources the instances' agents read on every pull:
    /// `[[configuration.metrics]]`, the keys of agent.toml's `[[metric]]`.
    #[serde(default)]
    pub metrics: Vec<model::MetricSource>,
    /// With `instance_type = "exec"`: `[configuration.exec]`, the operator's
    /// launch program (docs/providers.md).
    #[serde(default)]
    pub exec: Option<model::ExecSettings>,
    /// With `instance_type = "microvm"`: `[configuration.microvm]`, the size.
    #[serde(default)]
    pub microvm: Option<model::MicrovmSettings>,
}

/// Parses and validates; every error is one line naming the file and the key.
pub fn parse(name: &str, text: &str) -> Result<ApplyFile, String> {
    let file: ApplyFile = toml::from_str(text).map_err(|e| toml_error(name, text, &e))?;
    let problems = validate(&file);
    if problems.is_empty() {
        Ok(file)
    } else {
        Err(format!("{name}: {}", problems.join("; ")))
    }
}

/// `FILE:LINE:COL: section.key: message`, from toml's error and the text.
fn toml_error(name: &str, text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let Some(span) = e.span() else {
        return format!("{name}: {message}");
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    // The table the line is in: the last header above it; an array of
    // tables (`[[x]]`) with its index, counted from the headers before it.
    let headers: Vec<&str> = text
        .lines()
        .take(line_no)
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .collect();
    let section = headers.last().map(|last| {
        let name = last.trim_matches(['[', ']']).trim();
        if last.starts_with("[[") {
            let n = headers
                .iter()
                .filter(|h| h.starts_with("[[") && h.trim_matches(['[', ']']).trim() == name)
                .count();
            format!("{name}[{}]", n - 1)
        } else {
            name.to_owned()
        }
    });
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match (section, key) {
        (Some(s), Some(k)) => format!("{name}:{line_no}:{col}: {s}.{k}: {message}"),
        (None, Some(k)) => format!("{name}:{line_no}:{col}: {k}: {message}"),
        _ => format!("{name}:{line_no}:{col}: {message}"),
    }
}

/// The domain's validation, so the file fails here and not half-applied.
fn validate(file: &ApplyFile) -> Vec<String> {
    let g = &file.group;
    let spec = g.spec();
    let mut problems = Vec::new();
    if let Err(invalid) = model::ScalingGroup::create(String::new(), &spec, 0) {
        problems.extend(
            invalid
                .0
                .iter()
                .map(|e| format!("group.{}: {}", e.field, e.message)),
        );
    }
    let c = &file.configuration;
    let spec = model::ConfigurationSpec {
        name: Some(c.name.clone()),
        instance_type: Some(c.instance_type.clone()),
        command: Some(c.command.clone()),
        env: Some(c.env.clone()),
        tags: Some(c.tags.clone()),
        user_data: Some(c.user_data.clone()),
        health_checks: Some(c.health_checks.clone()),
        metrics: Some(c.metrics.clone()),
        exec: c.exec.clone(),
        microvm: c.microvm.clone(),
    };
    if let Err(invalid) =
        model::ScalingConfiguration::create(String::new(), String::new(), &spec, 0)
    {
        problems.extend(
            invalid
                .0
                .iter()
                .map(|e| format!("configuration.{}: {}", e.field, e.message)),
        );
    }
    validate_automation(file, &mut problems);
    validate_attachments(file, &mut problems);
    problems
}

/// Each attachment with the domain's checks, named by its place in the
/// file (`load_balancer[0].port: 70000 is outside 1..=65535`).
fn validate_attachments(file: &ApplyFile, problems: &mut Vec<String>) {
    use model::attachments::{MAX_DB_INSTANCES, MAX_LOAD_BALANCERS};
    let group = &file.group.name;
    let other_group = |field: &str, g: &Option<String>, errors: &mut model::Invalid| {
        if let Some(g) = g.as_ref().filter(|g| *g != group) {
            errors.push(
                format!("{field}.group"),
                format!("`{g}` is not this file's group `{group}` (a file declares one group; leave group out)"),
            );
        }
    };
    let mut errors = model::Invalid::default();
    for (i, l) in file.load_balancers.iter().enumerate() {
        let field = format!("load_balancer[{i}]");
        other_group(&field, &l.group, &mut errors);
        l.spec().build(&field, &mut errors);
        if let Some(j) = file.load_balancers[..i]
            .iter()
            .position(|o| o.backend == l.backend)
        {
            errors.push(
                format!("{field}.backend"),
                format!(
                    "backend `{}` is already load_balancer[{j}]; a group names each backend once",
                    l.backend
                ),
            );
        }
    }
    if file.load_balancers.len() > MAX_LOAD_BALANCERS {
        errors.push(
            "load_balancer",
            format!(
                "a group takes at most {MAX_LOAD_BALANCERS} load balancers; the file has {}",
                file.load_balancers.len()
            ),
        );
    }
    for (i, d) in file.db_instances.iter().enumerate() {
        let field = format!("db_instance[{i}]");
        other_group(&field, &d.group, &mut errors);
        d.spec().build(&field, &mut errors);
        if let Some(j) = file.db_instances[..i]
            .iter()
            .position(|o| o.target == d.target && o.database == d.database && o.user == d.user)
        {
            errors.push(
                field,
                format!(
                    "{}/{}/{} is already db_instance[{j}]",
                    d.target, d.database, d.user
                ),
            );
        }
    }
    if file.db_instances.len() > MAX_DB_INSTANCES {
        errors.push(
            "db_instance",
            format!(
                "a group takes at most {MAX_DB_INSTANCES} database instances; the file has {}",
                file.db_instances.len()
            ),
        );
    }
    problems.extend(
        errors
            .0
            .iter()
            .map(|e| format!("{}: {}", e.field, one_line(&e.message))),
    );
}

fn duplicates<'a>(kind: &str, names: impl Iterator<Item = &'a str>, problems: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            problems.push(format!("{kind} {n}: the name is given twice"));
        }
    }
}

fn push_invalid(prefix: &str, errors: model::Invalid, problems: &mut Vec<String>) {
    problems.extend(
        errors
            .0
            .iter()
            .map(|e| format!("{prefix}.{}: {}", e.field, e.message)),
    );
}

/// Rules, alarms and tasks, with the domain's checks.
fn validate_automation(file: &ApplyFile, problems: &mut Vec<String>) {
    duplicates("rule", file.rules.iter().map(|r| r.name.as_str()), problems);
    duplicates(
        "alarm",
        file.alarms.iter().map(|a| a.name.as_str()),
        problems,
    );
    duplicates("task", file.tasks.iter().map(|t| t.name.as_str()), problems);
    for r in &file.rules {
        let rule = crate::rules::ScalingRule {
            id: String::new(),
            group_id: String::new(),
            name: r.name.clone(),
            kind: r.kind.clone(),
        };
        if let Err(e) = rule.validate() {
            push_invalid(&format!("rule {}", r.name), e, problems);
        }
    }
    for a in &file.alarms {
        let prefix = format!("alarm {}", a.name);
        let mut errors = model::Invalid::default();
        model::check_name("name", &a.name, &mut errors);
        let parsed = (
            a.statistic.parse::<Statistic>(),
            a.comparison_operator.parse::<Comparison>(),
            a.missing_data
                .as_deref()
                .map_or(Ok(MissingData::Missing), str::parse::<MissingData>),
        );
        match parsed {
            (Ok(statistic), Ok(comparison), Ok(missing_data)) => AlarmSpec {
                metric: a.metric.clone().into(),
                statistic,
                period_secs: a.period_secs,
                comparison,
                threshold: a.threshold,
                evaluation_count: a
                    .evaluation_count
                    .unwrap_or(crate::rules::alarm::DEFAULT_EVALUATION_COUNT),
                missing_data,
            }
            .check("", &mut errors),
            (s, c, m) => {
                for (field, e) in [
                    ("statistic", s.err()),
                    ("comparison_operator", c.err()),
                    ("missing_data", m.err()),
                ] {
                    if let Some(e) = e {
                        errors.push(field, e);
                    }
                }
            }
        }
        if !(1..=5).contains(&a.alarm_actions.len()) {
            errors.push(
                "alarm_actions",
                format!("name 1 to 5 rules, got {}", a.alarm_actions.len()),
            );
        }
        push_invalid(&prefix, errors, problems);
    }
    for t in &file.tasks {
        let prefix = format!("task {}", t.name);
        let mut errors = model::Invalid::default();
        model::check_name("name", &t.name, &mut errors);
        let launch_time = t.launch_time.parse::<jiff::Timestamp>();
        if let Err(e) = &launch_time {
            errors.push("launch_time", format!("not an RFC 3339 time: {e}"));
        }
        let end = t
            .recurrence_end_time
            .as_deref()
            .map(str::parse::<jiff::Timestamp>);
        if let Some(Err(e)) = &end {
            errors.push("recurrence_end_time", format!("not an RFC 3339 time: {e}"));
        }
        let recurrence = schedule::Recurrence::parse(
            t.recurrence_type.as_deref().unwrap_or("None"),
            t.recurrence_value.as_deref().unwrap_or(""),
        );
        if let Err(e) = &recurrence {
            errors.push("recurrence_value", e.clone());
        }
        if let (Ok(launch_time), Ok(recurrence)) = (launch_time, recurrence) {
            schedule::Schedule {
                launch_time,
                recurrence,
                time_zone: t.time_zone.clone().unwrap_or_else(|| "UTC".to_owned()),
                recurrence_end_time: end.and_then(Result::ok),
                launch_expiration_secs: t
                    .launch_expiration_secs
                    .unwrap_or(schedule::DEFAULT_LAUNCH_EXPIRATION_SECS),
            }
            .validate(&mut errors);
        }
        let bounds = t.min_size.is_some() || t.max_size.is_some() || t.desired_capacity.is_some();
        match (&t.scaling_rule, bounds) {
            (Some(_), true) => errors.push(
                "scaling_rule",
                "give scaling_rule or min_size/max_size/desired_capacity, not both",
            ),
            (None, false) => errors.push(
                "scaling_rule",
                "give scaling_rule, or any of min_size, max_size, desired_capacity",
            ),
            _ => {}
        }
        push_invalid(&prefix, errors, problems);
    }
}

/// Control characters escaped, so a message stays on its line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
