//! The file `apply` reads: its sections as serde types, parsed with errors
//! that name the file, line and key, and validated with the domain's own
//! rules so a bad file fails before anything is called.

use std::collections::BTreeMap;
use std::path::Path;

use ebb_core::model;
use ebb_core::rules::{AlarmSpec, Comparison, MissingData, RuleKind, Statistic};
use ebb_core::schedule;
use serde::Deserialize;

use crate::error::{Error, Result};

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
}

pub fn load(path: &Path) -> Result<ApplyFile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, &e, ""))?;
    parse(&path.display().to_string(), &text)
}

/// Parses and validates; every error is one line naming the file and the key.
pub fn parse(name: &str, text: &str) -> Result<ApplyFile> {
    let file: ApplyFile =
        toml::from_str(text).map_err(|e| Error::Usage(toml_error(name, text, &e)))?;
    let problems = validate(&file);
    if problems.is_empty() {
        Ok(file)
    } else {
        Err(Error::Usage(format!("{name}: {}", problems.join("; "))))
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
    // The table the line is in: the last header above it.
    let section = text
        .lines()
        .take(line_no)
        .filter_map(|l| {
            let l = l.trim();
            l.starts_with('[')
                .then(|| l.trim_matches(['[', ']']).trim())
        })
        .last();
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
    let spec = model::GroupSpec {
        name: Some(g.name.clone()),
        min_size: Some(g.min_size),
        max_size: Some(g.max_size),
        desired_capacity: g.desired_capacity,
        default_cooldown_secs: g.default_cooldown_secs,
        removal_policies: g.removal_policies.clone(),
        health_check_type: g.health_check_type.clone(),
        health_check_grace_period_secs: g.health_check_grace_period_secs,
        sampling_interval_secs: g.sampling_interval_secs,
        deletion_protection: g.deletion_protection,
    };
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
    problems
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
        let rule = ebb_core::rules::ScalingRule {
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
                    .unwrap_or(ebb_core::rules::alarm::DEFAULT_EVALUATION_COUNT),
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
        let recurrence = crate::cli::to_schedule_recurrence(
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
