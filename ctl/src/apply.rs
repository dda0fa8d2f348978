//! `apply -f FILE.toml`: one group and its configuration, declared, with
//! optional `[[rule]]`, `[[alarm]]` and `[[task]]` sections. The file is
//! parsed and validated with the domain's own rules, then compared with
//! what the controller has; `plan` (pure) lists the calls that close the
//! gap, and `run` makes them, one printed line per change. Nothing the file
//! does not mention is ever deleted.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use ebb_core::model;
use ebb_core::rules::{AlarmSpec, Comparison, MissingData, RuleKind, Statistic};
use ebb_core::schedule;
use ebb_proto::v1 as pb;
use serde::Deserialize;

use crate::conn::Admin;
use crate::convert::{check_of, check_pb, metric_of, metric_pb};
use crate::error::{Error, Result};
use crate::output::{Output, print_json};

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

/// One field that differs: its name and both values, for the printed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub field: &'static str,
    pub from: String,
    pub to: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} → {}", self.field, self.from, self.to)
    }
}

/// One call `apply` makes. Groups and configurations are named, not by id:
/// the API accepts either and a group being created has no id yet.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreateGroup(pb::CreateScalingGroupRequest),
    ModifyGroup {
        changes: Vec<Change>,
        request: pb::ModifyScalingGroupRequest,
    },
    CreateConfig(pb::CreateScalingConfigurationRequest),
    ModifyConfig {
        name: String,
        changes: Vec<Change>,
        request: pb::ModifyScalingConfigurationRequest,
    },
    /// Make the configuration (by name) the group's active one.
    Activate {
        group: String,
        configuration: String,
    },
    CreateRule(pb::CreateScalingRuleRequest),
    ModifyRule {
        changes: Vec<Change>,
        request: pb::ModifyScalingRuleRequest,
    },
    CreateAlarm(pb::CreateAlarmRequest),
    ModifyAlarm {
        changes: Vec<Change>,
        request: pb::ModifyAlarmRequest,
    },
    /// Enable (true) or disable an alarm, by name.
    SetAlarmEnabled {
        group: String,
        alarm: String,
        enabled: bool,
    },
    CreateTask(pb::CreateScheduledTaskRequest),
    ModifyTask {
        changes: Vec<Change>,
        request: pb::ModifyScheduledTaskRequest,
    },
    Enable {
        group: String,
    },
    Disable {
        group: String,
    },
}

impl Step {
    /// What the step does, in the past tense once done.
    pub fn line(&self, done: bool) -> String {
        let v = |now: &'static str, past: &'static str| if done { past } else { now };
        let list = |c: &[Change]| {
            c.iter()
                .map(Change::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Step::CreateGroup(r) => format!("{} group {}", v("create", "created"), r.name),
            Step::ModifyGroup { changes, request } => format!(
                "{} group {}: {}",
                v("modify", "modified"),
                request.scaling_group,
                list(changes)
            ),
            Step::CreateConfig(r) => format!(
                "{} configuration {} in group {}",
                v("create", "created"),
                r.name,
                r.scaling_group
            ),
            Step::ModifyConfig { name, changes, .. } => {
                format!(
                    "{} configuration {name}: {}",
                    v("modify", "modified"),
                    list(changes)
                )
            }
            Step::Activate {
                group,
                configuration,
            } => format!(
                "{} {configuration} the active configuration of group {group}",
                v("make", "made")
            ),
            Step::CreateRule(r) => format!(
                "{} rule {} in group {}",
                v("create", "created"),
                r.name,
                r.scaling_group
            ),
            Step::ModifyRule { changes, request } => format!(
                "{} rule {}: {}",
                v("modify", "modified"),
                request.scaling_rule,
                list(changes)
            ),
            Step::CreateAlarm(r) => format!(
                "{} alarm {} in group {}",
                v("create", "created"),
                r.name,
                r.scaling_group
            ),
            Step::ModifyAlarm { changes, request } => format!(
                "{} alarm {}: {}",
                v("modify", "modified"),
                request.alarm,
                list(changes)
            ),
            Step::SetAlarmEnabled { alarm, enabled, .. } => {
                if *enabled {
                    format!("{} alarm {alarm}", v("enable", "enabled"))
                } else {
                    format!("{} alarm {alarm}", v("disable", "disabled"))
                }
            }
            Step::CreateTask(r) => format!(
                "{} scheduled task {} in group {}",
                v("create", "created"),
                r.name,
                r.scaling_group
            ),
            Step::ModifyTask { changes, request } => format!(
                "{} scheduled task {}: {}",
                v("modify", "modified"),
                request.scheduled_task,
                list(changes)
            ),
            Step::Enable { group } => format!("{} group {group}", v("enable", "enabled")),
            Step::Disable { group } => format!("{} group {group}", v("disable", "disabled")),
        }
    }
}

fn show_list(l: &[String]) -> String {
    format!("[{}]", l.join(", "))
}

fn show_map(m: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

fn show_str(s: &str) -> String {
    format!("{s:?}")
}

/// Compares a wanted value (if the file gives one) with the current one.
fn differs<T: PartialEq + Clone>(
    changes: &mut Vec<Change>,
    field: &'static str,
    wanted: Option<&T>,
    current: &T,
    show: impl Fn(&T) -> String,
) -> Option<T> {
    let wanted = wanted.filter(|w| *w != current)?;
    changes.push(Change {
        field,
        from: show(current),
        to: show(wanted),
    });
    Some(wanted.clone())
}

/// What the controller has: the group named in the file, if it exists, and
/// its configurations, rules, alarms and scheduled tasks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub group: Option<pb::ScalingGroup>,
    pub configurations: Vec<pb::ScalingConfiguration>,
    pub rules: Vec<pb::ScalingRule>,
    pub alarms: Vec<pb::Alarm>,
    pub tasks: Vec<pb::ScheduledTask>,
}

/// The calls that make the controller match the file, in order: group,
/// configuration, rules, alarms, tasks, then enable or disable the group.
pub fn plan(file: &ApplyFile, state: &State) -> Result<Vec<Step>, String> {
    let group = state.group.as_ref();
    let configurations = &state.configurations[..];
    let g = &file.group;
    let c = &file.configuration;
    let mut steps = Vec::new();
    let group_state = match group {
        None => {
            steps.push(Step::CreateGroup(pb::CreateScalingGroupRequest {
                name: g.name.clone(),
                min_size: g.min_size,
                max_size: g.max_size,
                desired_capacity: g.desired_capacity,
                default_cooldown_secs: g.default_cooldown_secs,
                removal_policies: g.removal_policies.clone().unwrap_or_default(),
                health_check_type: g.health_check_type.clone(),
                health_check_grace_period_secs: g.health_check_grace_period_secs,
                sampling_interval_secs: g.sampling_interval_secs,
                deletion_protection: g.deletion_protection,
            }));
            model::GroupState::Inactive.as_str().to_owned()
        }
        Some(current) => {
            if current.state == model::GroupState::Deleting.as_str() {
                return Err(format!(
                    "group {} is being deleted; apply again once it is gone",
                    g.name
                ));
            }
            if let Some(step) = modify_group(g, current) {
                steps.push(step);
            }
            current.state.clone()
        }
    };
    let existing = configurations.iter().find(|x| x.name == c.name);
    match existing {
        None => steps.push(Step::CreateConfig(pb::CreateScalingConfigurationRequest {
            scaling_group: g.name.clone(),
            name: c.name.clone(),
            instance_type: c.instance_type.clone(),
            command: c.command.clone(),
            env: c.env.clone().into_iter().collect(),
            tags: c.tags.clone().into_iter().collect(),
            user_data: c.user_data.clone(),
            health_checks: c.health_checks.iter().map(check_pb).collect(),
            metrics: c.metrics.iter().map(metric_pb).collect(),
        })),
        Some(current) => {
            if let Some(step) = modify_config(c, current) {
                steps.push(step);
            }
        }
    }
    let active = match (group, existing) {
        (Some(g), Some(x)) => g.active_scaling_configuration_id == x.id,
        _ => false,
    };
    if !active {
        steps.push(Step::Activate {
            group: g.name.clone(),
            configuration: c.name.clone(),
        });
    }
    plan_automation(file, state, &mut steps)?;
    let is_active = group_state == model::GroupState::Active.as_str();
    if g.enabled && !is_active {
        steps.push(Step::Enable {
            group: g.name.clone(),
        });
    } else if !g.enabled && is_active {
        steps.push(Step::Disable {
            group: g.name.clone(),
        });
    }
    Ok(steps)
}

/// A number as people write it (`80`, `0.5`).
fn show_num(v: &f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

fn show_opt_num(v: &Option<u32>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Two RFC 3339 strings name the same instant (the server may normalise).
fn same_instant(a: &str, b: &str) -> bool {
    match (a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The rule a reference names: a rule of the file, or of the group (by
/// name or id). Returns its name.
fn rule_ref(file: &ApplyFile, rules: &[pb::ScalingRule], r: &str) -> Option<String> {
    if file.rules.iter().any(|x| x.name == r) {
        return Some(r.to_owned());
    }
    rules
        .iter()
        .find(|x| x.name == r || x.id == r)
        .map(|x| x.name.clone())
}

fn plan_automation(file: &ApplyFile, state: &State, steps: &mut Vec<Step>) -> Result<(), String> {
    let group = file.group.name.clone();
    let rule_name = |id: &str| {
        state
            .rules
            .iter()
            .find(|r| r.id == id)
            .map_or_else(|| id.to_owned(), |r| r.name.clone())
    };
    for r in &file.rules {
        let json = crate::automation::definition_json(&r.kind);
        match state.rules.iter().find(|x| x.name == r.name) {
            None => steps.push(Step::CreateRule(pb::CreateScalingRuleRequest {
                scaling_group: group.clone(),
                name: r.name.clone(),
                definition_json: json,
            })),
            Some(current) => {
                let changes = rule_changes(&current.definition_json, &r.kind);
                if !changes.is_empty() {
                    steps.push(Step::ModifyRule {
                        changes,
                        request: pb::ModifyScalingRuleRequest {
                            scaling_rule: r.name.clone(),
                            scaling_group: group.clone(),
                            name: None,
                            definition_json: Some(json),
                        },
                    });
                }
            }
        }
    }
    for a in &file.alarms {
        // Every action must name a rule of the file or of the group.
        let mut wanted = Vec::new();
        for action in &a.alarm_actions {
            wanted.push(rule_ref(file, &state.rules, action).ok_or_else(|| {
                format!(
                    "alarm {}: action `{action}` names no rule in the file or in group {group}",
                    a.name
                )
            })?);
        }
        match state.alarms.iter().find(|x| x.name == a.name) {
            None => steps.push(Step::CreateAlarm(pb::CreateAlarmRequest {
                scaling_group: group.clone(),
                name: a.name.clone(),
                metric: a.metric.clone(),
                statistic: a.statistic.clone(),
                period_secs: a.period_secs,
                comparison_operator: a.comparison_operator.clone(),
                threshold: a.threshold,
                evaluation_count: a.evaluation_count,
                missing_data: a.missing_data.clone(),
                alarm_actions: a.alarm_actions.clone(),
                enabled: Some(a.enabled),
            })),
            Some(current) => {
                let mut changes = Vec::new();
                let mut current_actions: Vec<String> = current
                    .alarm_actions
                    .iter()
                    .map(|id| rule_name(id))
                    .collect();
                current_actions.sort();
                let mut sorted = wanted.clone();
                sorted.sort();
                let actions_differ = sorted != current_actions;
                if actions_differ {
                    changes.push(Change {
                        field: "alarm_actions",
                        from: show_list(&current_actions),
                        to: show_list(&sorted),
                    });
                }
                let request = pb::ModifyAlarmRequest {
                    alarm: a.name.clone(),
                    scaling_group: group.clone(),
                    name: None,
                    metric: differs(
                        &mut changes,
                        "metric",
                        Some(&a.metric),
                        &current.metric,
                        |s| s.clone(),
                    ),
                    statistic: differs(
                        &mut changes,
                        "statistic",
                        Some(&a.statistic),
                        &current.statistic,
                        |s| s.clone(),
                    ),
                    period_secs: differs(
                        &mut changes,
                        "period_secs",
                        Some(&a.period_secs),
                        &current.period_secs,
                        |v| v.to_string(),
                    ),
                    comparison_operator: differs(
                        &mut changes,
                        "comparison_operator",
                        Some(&a.comparison_operator),
                        &current.comparison_operator,
                        |s| s.clone(),
                    ),
                    threshold: differs(
                        &mut changes,
                        "threshold",
                        Some(&a.threshold),
                        &current.threshold,
                        show_num,
                    ),
                    evaluation_count: differs(
                        &mut changes,
                        "evaluation_count",
                        a.evaluation_count.as_ref(),
                        &current.evaluation_count,
                        |v| v.to_string(),
                    ),
                    missing_data: differs(
                        &mut changes,
                        "missing_data",
                        a.missing_data.as_ref(),
                        &current.missing_data,
                        |s| s.clone(),
                    ),
                    alarm_actions: if actions_differ {
                        a.alarm_actions.clone()
                    } else {
                        Vec::new()
                    },
                };
                // Field order in the line follows the request, actions last.
                changes.rotate_left(usize::from(actions_differ));
                if !changes.is_empty() {
                    steps.push(Step::ModifyAlarm { changes, request });
                }
                if current.enabled != a.enabled {
                    steps.push(Step::SetAlarmEnabled {
                        group: group.clone(),
                        alarm: a.name.clone(),
                        enabled: a.enabled,
                    });
                }
            }
        }
    }
    for t in &file.tasks {
        let rule = match &t.scaling_rule {
            Some(r) => Some(rule_ref(file, &state.rules, r).ok_or_else(|| {
                format!(
                    "task {}: scaling_rule `{r}` names no rule in the file or in group {group}",
                    t.name
                )
            })?),
            None => None,
        };
        match state.tasks.iter().find(|x| x.name == t.name) {
            None => steps.push(Step::CreateTask(pb::CreateScheduledTaskRequest {
                scaling_group: group.clone(),
                name: t.name.clone(),
                launch_time: t.launch_time.clone(),
                recurrence_type: t.recurrence_type.clone().unwrap_or_default(),
                recurrence_value: t.recurrence_value.clone().unwrap_or_default(),
                time_zone: t.time_zone.clone().unwrap_or_default(),
                recurrence_end_time: t.recurrence_end_time.clone().unwrap_or_default(),
                launch_expiration_secs: t.launch_expiration_secs,
                enabled: Some(t.enabled),
                scaling_rule: t.scaling_rule.clone().unwrap_or_default(),
                min_size: t.min_size,
                max_size: t.max_size,
                desired_capacity: t.desired_capacity,
            })),
            Some(current) => {
                if let Some(step) = modify_task(t, rule.as_deref(), current, &group, &rule_name) {
                    steps.push(step);
                }
            }
        }
    }
    Ok(())
}

/// The fields of a rule's definition that differ; one `definition_json`
/// change if the current one cannot be read.
fn rule_changes(current_json: &str, wanted: &RuleKind) -> Vec<Change> {
    let Ok(current) = serde_json::from_str::<RuleKind>(current_json) else {
        return vec![Change {
            field: "definition_json",
            from: current_json.to_owned(),
            to: crate::automation::definition_json(wanted),
        }];
    };
    if current == *wanted {
        return Vec::new();
    }
    let (Ok(serde_json::Value::Object(from)), Ok(serde_json::Value::Object(to))) =
        (serde_json::to_value(&current), serde_json::to_value(wanted))
    else {
        return Vec::new();
    };
    // Field names are 'static for `Change`; the definition's are a known set.
    const FIELDS: &[&str] = &[
        "rule_type",
        "adjustment_type",
        "adjustment_value",
        "min_adjustment_magnitude",
        "cooldown_secs",
        "step_adjustments",
        "estimated_instance_warmup_secs",
        "metric",
        "target_value",
        "disable_scale_in",
    ];
    let show = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => "-".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    FIELDS
        .iter()
        .filter(|f| from.get(**f) != to.get(**f))
        .map(|f| Change {
            field: f,
            from: show(from.get(*f)),
            to: show(to.get(*f)),
        })
        .collect()
}

fn modify_task(
    t: &TaskDecl,
    rule: Option<&str>,
    current: &pb::ScheduledTask,
    group: &str,
    rule_name: &dyn Fn(&str) -> String,
) -> Option<Step> {
    let mut changes = Vec::new();
    let mut request = pb::ModifyScheduledTaskRequest {
        scheduled_task: t.name.clone(),
        scaling_group: group.to_owned(),
        ..Default::default()
    };
    if !same_instant(&t.launch_time, &current.launch_time) {
        changes.push(Change {
            field: "launch_time",
            from: current.launch_time.clone(),
            to: t.launch_time.clone(),
        });
        request.launch_time = Some(t.launch_time.clone());
    }
    if let Some(kind) = &t.recurrence_type {
        let norm = |s: &str| {
            if s.is_empty() {
                "None".to_owned()
            } else {
                s.to_owned()
            }
        };
        let value = t.recurrence_value.clone().unwrap_or_default();
        if norm(kind) != norm(&current.recurrence_type) || value != current.recurrence_value {
            changes.push(Change {
                field: "recurrence",
                from: format!(
                    "{} {:?}",
                    norm(&current.recurrence_type),
                    current.recurrence_value
                ),
                to: format!("{} {value:?}", norm(kind)),
            });
            request.recurrence_type = Some(kind.clone());
            request.recurrence_value = Some(value);
        }
    } else if let Some(value) = &t.recurrence_value {
        request.recurrence_value = differs(
            &mut changes,
            "recurrence_value",
            Some(value),
            &current.recurrence_value,
            |s| show_str(s),
        );
    }
    if let Some(tz) = &t.time_zone {
        let norm = |s: &str| {
            if s.is_empty() {
                "UTC".to_owned()
            } else {
                s.to_owned()
            }
        };
        if norm(tz) != norm(&current.time_zone) {
            changes.push(Change {
                field: "time_zone",
                from: norm(&current.time_zone),
                to: tz.clone(),
            });
            request.time_zone = Some(tz.clone());
        }
    }
    if let Some(end) = &t.recurrence_end_time
        && !same_instant(end, &current.recurrence_end_time)
    {
        changes.push(Change {
            field: "recurrence_end_time",
            from: if current.recurrence_end_time.is_empty() {
                "-".to_owned()
            } else {
                current.recurrence_end_time.clone()
            },
            to: end.clone(),
        });
        request.recurrence_end_time = Some(end.clone());
    }
    request.launch_expiration_secs = differs(
        &mut changes,
        "launch_expiration_secs",
        t.launch_expiration_secs.as_ref(),
        &current.launch_expiration_secs,
        |v| v.to_string(),
    );
    request.enabled = differs(
        &mut changes,
        "enabled",
        Some(&t.enabled),
        &current.enabled,
        |b| b.to_string(),
    );
    match rule {
        Some(name) => {
            let current_rule =
                (!current.scaling_rule_id.is_empty()).then(|| rule_name(&current.scaling_rule_id));
            if current_rule.as_deref() != Some(name) {
                changes.push(Change {
                    field: "scaling_rule",
                    from: current_rule.unwrap_or_else(|| "-".to_owned()),
                    to: name.to_owned(),
                });
                request.scaling_rule = Some(name.to_owned());
            }
        }
        None => {
            // Switching from a rule to bounds clears the rule.
            if !current.scaling_rule_id.is_empty() {
                changes.push(Change {
                    field: "scaling_rule",
                    from: rule_name(&current.scaling_rule_id),
                    to: "-".to_owned(),
                });
                request.scaling_rule = Some(String::new());
            }
            for (field, wanted, now, slot) in [
                (
                    "min_size",
                    t.min_size,
                    current.min_size,
                    &mut request.min_size,
                ),
                (
                    "max_size",
                    t.max_size,
                    current.max_size,
                    &mut request.max_size,
                ),
                (
                    "desired_capacity",
                    t.desired_capacity,
                    current.desired_capacity,
                    &mut request.desired_capacity,
                ),
            ] {
                if wanted.is_some() && wanted != now {
                    changes.push(Change {
                        field,
                        from: show_opt_num(&now),
                        to: show_opt_num(&wanted),
                    });
                    *slot = wanted;
                }
            }
        }
    }
    (!changes.is_empty()).then_some(Step::ModifyTask { changes, request })
}

fn modify_group(g: &GroupDecl, current: &pb::ScalingGroup) -> Option<Step> {
    let mut changes = Vec::new();
    let num = |v: &u32| v.to_string();
    let request = pb::ModifyScalingGroupRequest {
        scaling_group: g.name.clone(),
        min_size: differs(
            &mut changes,
            "min_size",
            Some(&g.min_size),
            &current.min_size,
            num,
        ),
        max_size: differs(
            &mut changes,
            "max_size",
            Some(&g.max_size),
            &current.max_size,
            num,
        ),
        desired_capacity: differs(
            &mut changes,
            "desired_capacity",
            g.desired_capacity.as_ref(),
            &current.desired_capacity,
            num,
        ),
        default_cooldown_secs: differs(
            &mut changes,
            "default_cooldown_secs",
            g.default_cooldown_secs.as_ref(),
            &current.default_cooldown_secs,
            num,
        ),
        removal_policies: differs(
            &mut changes,
            "removal_policies",
            g.removal_policies.as_ref(),
            &current.removal_policies,
            |l| show_list(l),
        )
        .unwrap_or_default(),
        health_check_type: differs(
            &mut changes,
            "health_check_type",
            g.health_check_type.as_ref(),
            &current.health_check_type,
            |s| s.clone(),
        ),
        health_check_grace_period_secs: differs(
            &mut changes,
            "health_check_grace_period_secs",
            g.health_check_grace_period_secs.as_ref(),
            &current.health_check_grace_period_secs,
            num,
        ),
        sampling_interval_secs: differs(
            &mut changes,
            "sampling_interval_secs",
            g.sampling_interval_secs.as_ref(),
            &current.sampling_interval_secs,
            num,
        ),
        deletion_protection: differs(
            &mut changes,
            "deletion_protection",
            g.deletion_protection.as_ref(),
            &current.deletion_protection,
            |b| b.to_string(),
        ),
        name: None,
        active_scaling_configuration: None,
    };
    (!changes.is_empty()).then_some(Step::ModifyGroup { changes, request })
}

fn modify_config(c: &ConfigDecl, current: &pb::ScalingConfiguration) -> Option<Step> {
    let mut changes = Vec::new();
    let env: BTreeMap<String, String> = current.env.clone().into_iter().collect();
    let tags: BTreeMap<String, String> = current.tags.clone().into_iter().collect();
    let instance_type = differs(
        &mut changes,
        "instance_type",
        Some(&c.instance_type),
        &current.instance_type,
        |s| show_str(s),
    );
    let command = differs(
        &mut changes,
        "command",
        Some(&c.command),
        &current.command,
        |l| show_list(l),
    );
    let new_env = differs(&mut changes, "env", Some(&c.env), &env, show_map);
    let new_tags = differs(&mut changes, "tags", Some(&c.tags), &tags, show_map);
    let user_data = differs(
        &mut changes,
        "user_data",
        Some(&c.user_data),
        &current.user_data,
        |s| show_str(s),
    );
    let current_checks: Vec<model::LocalCheck> =
        current.health_checks.iter().map(check_of).collect();
    let checks = differs(
        &mut changes,
        "health_checks",
        Some(&c.health_checks),
        &current_checks,
        |l| format!("{} checks", l.len()),
    );
    let current_metrics: Vec<model::MetricSource> = current.metrics.iter().map(metric_of).collect();
    let metrics = differs(
        &mut changes,
        "metrics",
        Some(&c.metrics),
        &current_metrics,
        |l| show_list(&l.iter().map(crate::view::metric_line).collect::<Vec<_>>()),
    );
    if changes.is_empty() {
        return None;
    }
    let request = pb::ModifyScalingConfigurationRequest {
        scaling_configuration_id: current.id.clone(),
        name: None,
        instance_type,
        set_command: command.is_some(),
        command: command.unwrap_or_default(),
        set_env: new_env.is_some(),
        env: new_env.unwrap_or_default().into_iter().collect(),
        set_tags: new_tags.is_some(),
        tags: new_tags.unwrap_or_default().into_iter().collect(),
        user_data,
        set_health_checks: checks.is_some(),
        health_checks: checks.unwrap_or_default().iter().map(check_pb).collect(),
        set_metrics: metrics.is_some(),
        metrics: metrics.unwrap_or_default().iter().map(metric_pb).collect(),
    };
    Some(Step::ModifyConfig {
        name: c.name.clone(),
        changes,
        request,
    })
}

/// Reads the current state, plans, and makes the calls in order.
pub async fn run(admin: &mut Admin, file: &ApplyFile, dry_run: bool, out: Output) -> Result<()> {
    let mut state = State {
        group: admin.find_group(&file.group.name).await?,
        ..State::default()
    };
    // Only what the file declares is read, so a file without rules, alarms
    // or tasks needs nothing of those APIs.
    if let Some(g) = &state.group {
        let id = g.id.clone();
        state.configurations = admin
            .describe_scaling_configurations(pb::DescribeScalingConfigurationsRequest {
                scaling_group: id.clone(),
            })
            .await?
            .scaling_configurations;
        if !(file.rules.is_empty() && file.alarms.is_empty() && file.tasks.is_empty()) {
            state.rules = admin
                .describe_scaling_rules(pb::DescribeScalingRulesRequest {
                    scaling_group: id.clone(),
                })
                .await?
                .scaling_rules;
        }
        if !file.alarms.is_empty() {
            state.alarms = admin
                .describe_alarms(pb::DescribeAlarmsRequest {
                    scaling_group: id.clone(),
                    state: String::new(),
                })
                .await?
                .alarms;
        }
        if !file.tasks.is_empty() {
            state.tasks = admin
                .describe_scheduled_tasks(pb::DescribeScheduledTasksRequest { scaling_group: id })
                .await?
                .scheduled_tasks;
        }
    }
    let steps = plan(file, &state).map_err(Error::Server)?;
    let mut lines = Vec::new();
    for step in &steps {
        if !dry_run {
            execute(admin, step).await?;
        }
        let line = step.line(!dry_run);
        if out == Output::Table {
            println!("{line}");
        }
        lines.push(line);
    }
    match out {
        Output::Json => print_json(&serde_json::json!({
            "dry_run": dry_run,
            "changes": lines,
        })),
        Output::Table => {
            if steps.is_empty() {
                println!("no changes");
            }
            Ok(())
        }
    }
}

async fn execute(admin: &mut Admin, step: &Step) -> Result<()> {
    match step.clone() {
        Step::CreateGroup(r) => drop(admin.create_scaling_group(r).await?),
        Step::ModifyGroup { request, .. } => drop(admin.modify_scaling_group(request).await?),
        Step::CreateConfig(r) => drop(admin.create_scaling_configuration(r).await?),
        Step::ModifyConfig { request, .. } => {
            drop(admin.modify_scaling_configuration(request).await?)
        }
        Step::Activate {
            group,
            configuration,
        } => drop(
            admin
                .modify_scaling_group(pb::ModifyScalingGroupRequest {
                    scaling_group: group,
                    active_scaling_configuration: Some(configuration),
                    ..Default::default()
                })
                .await?,
        ),
        Step::CreateRule(r) => drop(admin.create_scaling_rule(r).await?),
        Step::ModifyRule { request, .. } => drop(admin.modify_scaling_rule(request).await?),
        Step::CreateAlarm(r) => drop(admin.create_alarm(r).await?),
        Step::ModifyAlarm { request, .. } => drop(admin.modify_alarm(request).await?),
        Step::SetAlarmEnabled {
            group,
            alarm,
            enabled,
        } => {
            let r = pb::AlarmRef {
                alarm,
                scaling_group: group,
            };
            if enabled {
                drop(admin.enable_alarm(r).await?)
            } else {
                drop(admin.disable_alarm(r).await?)
            }
        }
        Step::CreateTask(r) => drop(admin.create_scheduled_task(r).await?),
        Step::ModifyTask { request, .. } => drop(admin.modify_scheduled_task(request).await?),
        Step::Enable { group } => drop(
            admin
                .enable_scaling_group(pb::EnableScalingGroupRequest {
                    scaling_group: group,
                    active_scaling_configuration: None,
                })
                .await?,
        ),
        Step::Disable { group } => drop(
            admin
                .disable_scaling_group(pb::DisableScalingGroupRequest {
                    scaling_group: group,
                })
                .await?,
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../docs/examples/web.toml");

    fn file() -> ApplyFile {
        parse("web.toml", EXAMPLE).unwrap()
    }

    /// The state the controller reports after the example was applied.
    fn applied(f: &ApplyFile) -> (pb::ScalingGroup, Vec<pb::ScalingConfiguration>) {
        let g = &f.group;
        let c = &f.configuration;
        let group = pb::ScalingGroup {
            id: "asg-1".into(),
            name: g.name.clone(),
            min_size: g.min_size,
            max_size: g.max_size,
            desired_capacity: g.desired_capacity.unwrap_or(g.min_size),
            default_cooldown_secs: g.default_cooldown_secs.unwrap_or(300),
            removal_policies: g.removal_policies.clone().unwrap_or_default(),
            health_check_type: g.health_check_type.clone().unwrap_or("AGENT".into()),
            health_check_grace_period_secs: g.health_check_grace_period_secs.unwrap_or(60),
            sampling_interval_secs: g.sampling_interval_secs.unwrap_or(5),
            deletion_protection: g.deletion_protection.unwrap_or(false),
            state: "Active".into(),
            active_scaling_configuration_id: "asc-1".into(),
            ..Default::default()
        };
        let config = pb::ScalingConfiguration {
            id: "asc-1".into(),
            scaling_group_id: "asg-1".into(),
            name: c.name.clone(),
            instance_type: c.instance_type.clone(),
            command: c.command.clone(),
            env: c.env.clone().into_iter().collect(),
            tags: c.tags.clone().into_iter().collect(),
            user_data: c.user_data.clone(),
            active: true,
            ..Default::default()
        };
        (group, vec![config])
    }

    fn st(g: &pb::ScalingGroup, c: &[pb::ScalingConfiguration]) -> State {
        State {
            group: Some(g.clone()),
            configurations: c.to_vec(),
            ..State::default()
        }
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| s.line(true)).collect()
    }

    #[test]
    fn the_example_parses() {
        let f = file();
        assert_eq!(f.group.name, "web");
        assert!(f.group.enabled);
        assert!(!f.configuration.command.is_empty());
    }

    #[test]
    fn configuration_health_checks_are_sent_and_compared() {
        let text = format!(
            "{}\n[[configuration.health_checks]]\nname = \"web\"\nhttp = \"http://127.0.0.1:8080/healthz\"\ninterval_ms = 2000\n",
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../docs/examples/web.toml"
            ))
            .unwrap()
        );
        let f = parse("web.toml", &text).unwrap();
        assert_eq!(f.configuration.health_checks.len(), 1);
        let steps = plan(&f, &State::default()).unwrap();
        let Step::CreateConfig(r) = &steps[1] else {
            panic!()
        };
        assert_eq!(r.health_checks[0].http, "http://127.0.0.1:8080/healthz");
        assert_eq!(r.health_checks[0].interval_ms, 2000);
        let bad = text.replace("http = \"http://127.0.0.1:8080/healthz\"", "htp = \"x\"");
        let err = parse("web.toml", &bad).unwrap_err().to_string();
        assert!(err.contains("htp"), "{err}");
    }

    #[test]
    fn configuration_metrics_are_parsed_sent_and_compared() {
        let text = format!(
            r#"{EXAMPLE}
[[configuration.metrics]]
name = "queue_depth"
file = "/run/app/queue-depth"
timeout_ms = 500

[[configuration.metrics]]
name = "rps"
prometheus = {{ url = "http://127.0.0.1:9100/metrics", metric = "http_requests_total", labels = {{ code = "200" }} }}

[[configuration.metrics]]
name = "sessions"
command = ["/usr/local/bin/sessions", "--count"]
"#
        );
        let f = parse("web.toml", &text).unwrap();
        let m = &f.configuration.metrics;
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].file.as_deref(), Some("/run/app/queue-depth"));
        assert_eq!(m[0].timeout_ms, Some(500));
        let p = m[1].prometheus.as_ref().unwrap();
        assert_eq!(p.labels["code"], "200");
        assert_eq!(m[2].command.as_ref().unwrap()[1], "--count");

        let steps = plan(&f, &State::default()).unwrap();
        let Step::CreateConfig(r) = &steps[1] else {
            panic!("{steps:?}")
        };
        assert_eq!(r.metrics.len(), 3);
        assert_eq!(r.metrics[0].file, "/run/app/queue-depth");
        assert_eq!(r.metrics[0].timeout_ms, 500);
        assert_eq!(
            r.metrics[1].prometheus.as_ref().unwrap().metric,
            "http_requests_total"
        );
        assert_eq!(r.metrics[2].timeout_ms, 0, "0: the agent's default");

        // The controller has them: nothing to do.
        let (g, mut c) = applied(&f);
        c[0].metrics = r.metrics.clone();
        assert_eq!(plan(&f, &st(&g, &c)).unwrap(), []);
        // One source changed: the whole list is sent, the change shown.
        c[0].metrics[0].timeout_ms = 0;
        let steps = plan(&f, &st(&g, &c)).unwrap();
        let Step::ModifyConfig { request, .. } = &steps[0] else {
            panic!("{steps:?}")
        };
        assert!(request.set_metrics && !request.set_health_checks);
        assert_eq!(request.metrics, r.metrics);
        assert_eq!(
            lines(&steps),
            [concat!(
                "modified configuration web-v1: metrics ",
                "[queue_depth: file /run/app/queue-depth, ",
                "rps: prometheus http://127.0.0.1:9100/metrics http_requests_total{code=\"200\"}, ",
                "sessions: command /usr/local/bin/sessions --count] → ",
                "[queue_depth: file /run/app/queue-depth (timeout 500 ms), ",
                "rps: prometheus http://127.0.0.1:9100/metrics http_requests_total{code=\"200\"}, ",
                "sessions: command /usr/local/bin/sessions --count]"
            )]
        );
        // Left out of the file: the controller's are removed (the file is the whole template).
        let steps = plan(&file(), &st(&g, &c)).unwrap();
        let Step::ModifyConfig { request, .. } = &steps[0] else {
            panic!("{steps:?}")
        };
        assert!(request.set_metrics && request.metrics.is_empty());
    }

    #[test]
    fn bad_configuration_metrics_are_named() {
        for (table, needle) in [
            (
                "name = \"queue depth\"\nfile = \"/run/q\"",
                "web.toml: configuration.metrics[0].name: `queue depth` may use only letters, digits, '_', '.', ':' and '-'",
            ),
            (
                "name = \"q\"\nfile = \"/run/q\"\ncommand = [\"x\"]",
                "configuration.metrics[0]: set exactly one of `prometheus`, `file` or `command`",
            ),
            (
                "name = \"CpuUtilization\"\nfile = \"/run/q\"",
                "configuration.metrics[0].name: `CpuUtilization` is a built-in metric",
            ),
            (
                "name = \"q\"\nprometheus = { url = \"https://h/m\", metric = \"m\" }",
                "configuration.metrics[0].prometheus.url: bad URL \"https://h/m\": https is not supported",
            ),
            (
                "name = \"q\"\nfile = \"/run/q\"\ntimeout_ms = 0",
                "configuration.metrics[0].timeout_ms: 0 is outside 1..=60000",
            ),
            (
                "name = \"q\"\nfile = \"/run/q\"\ninterval_ms = 5",
                "unknown field `interval_ms`",
            ),
            (
                "name = \"q\"\nprometheus = { url = \"http://h/\" }",
                "missing field `metric`",
            ),
        ] {
            let text = format!("{EXAMPLE}\n[[configuration.metrics]]\n{table}\n");
            let err = parse("web.toml", &text).unwrap_err().to_string();
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }

    #[test]
    fn from_nothing_creates_activates_and_enables() {
        let f = file();
        let steps = plan(&f, &State::default()).unwrap();
        assert_eq!(
            lines(&steps),
            [
                "created group web",
                "created configuration web-v1 in group web",
                "made web-v1 the active configuration of group web",
                "enabled group web",
            ]
        );
        let Step::CreateGroup(r) = &steps[0] else {
            panic!()
        };
        assert_eq!(
            (r.min_size, r.max_size, r.desired_capacity),
            (2, 6, Some(2))
        );
        assert_eq!(
            r.removal_policies,
            ["OldestScalingConfiguration", "OldestInstance"]
        );
        let Step::CreateConfig(r) = &steps[1] else {
            panic!()
        };
        assert_eq!(r.scaling_group, "web");
        assert_eq!(r.command, f.configuration.command);
        assert_eq!(r.env.get("PYTHONUNBUFFERED").map(String::as_str), Some("1"));
    }

    #[test]
    fn equal_state_plans_nothing() {
        let f = file();
        let (g, c) = applied(&f);
        assert_eq!(plan(&f, &st(&g, &c)).unwrap(), []);
    }

    #[test]
    fn a_changed_field_is_exactly_that_modify() {
        let f = file();
        let (mut g, c) = applied(&f);
        g.desired_capacity = 4;
        let steps = plan(&f, &st(&g, &c)).unwrap();
        assert_eq!(
            lines(&steps),
            ["modified group web: desired_capacity 4 → 2"]
        );
        let Step::ModifyGroup { request, .. } = &steps[0] else {
            panic!()
        };
        assert_eq!(
            *request,
            pb::ModifyScalingGroupRequest {
                scaling_group: "web".into(),
                desired_capacity: Some(2),
                ..Default::default()
            }
        );
    }

    #[test]
    fn keys_left_out_of_the_file_are_left_alone() {
        let mut f = file();
        f.group.desired_capacity = None;
        f.group.default_cooldown_secs = None;
        let (mut g, c) = applied(&f);
        g.desired_capacity = 5;
        g.default_cooldown_secs = 60;
        assert_eq!(plan(&f, &st(&g, &c)).unwrap(), []);
    }

    #[test]
    fn a_changed_configuration_is_modified_in_place() {
        let f = file();
        let (g, mut c) = applied(&f);
        c[0].command = vec!["sleep".into(), "1".into()];
        c[0].env.insert("EXTRA".into(), "1".into());
        let steps = plan(&f, &st(&g, &c)).unwrap();
        assert_eq!(steps.len(), 1);
        let Step::ModifyConfig {
            request, changes, ..
        } = &steps[0]
        else {
            panic!()
        };
        assert_eq!(request.scaling_configuration_id, "asc-1");
        assert!(request.set_command && request.set_env && !request.set_tags);
        assert_eq!(request.command, f.configuration.command);
        assert_eq!(request.instance_type, None);
        assert_eq!(request.user_data, None);
        assert_eq!(
            changes.iter().map(|c| c.field).collect::<Vec<_>>(),
            ["command", "env"]
        );
    }

    #[test]
    fn a_new_configuration_name_is_created_and_made_active() {
        let mut f = file();
        f.configuration.name = "web-v2".into();
        let (g, c) = applied(&f.clone());
        let c: Vec<_> = c
            .into_iter()
            .map(|mut x| {
                x.name = "web-v1".into();
                x
            })
            .collect();
        assert_eq!(
            lines(&plan(&f, &st(&g, &c)).unwrap()),
            [
                "created configuration web-v2 in group web",
                "made web-v2 the active configuration of group web",
            ]
        );
    }

    #[test]
    fn an_inactive_configuration_is_activated() {
        let f = file();
        let (mut g, c) = applied(&f);
        g.active_scaling_configuration_id = "asc-other".into();
        assert_eq!(
            lines(&plan(&f, &st(&g, &c)).unwrap()),
            ["made web-v1 the active configuration of group web"]
        );
    }

    #[test]
    fn enabled_decides_enable_and_disable() {
        let mut f = file();
        let (mut g, c) = applied(&f);
        g.state = "Inactive".into();
        assert_eq!(
            lines(&plan(&f, &st(&g, &c)).unwrap()),
            ["enabled group web"]
        );
        f.group.enabled = false;
        assert_eq!(plan(&f, &st(&g, &c)).unwrap(), []);
        g.state = "Active".into();
        assert_eq!(
            lines(&plan(&f, &st(&g, &c)).unwrap()),
            ["disabled group web"]
        );
    }

    #[test]
    fn a_group_being_deleted_is_refused() {
        let f = file();
        let (mut g, c) = applied(&f);
        g.state = "Deleting".into();
        assert!(plan(&f, &st(&g, &c)).unwrap_err().contains("being deleted"));
    }

    #[test]
    fn dry_run_lines_are_in_the_present_tense() {
        let steps = plan(&file(), &State::default()).unwrap();
        assert_eq!(steps[0].line(false), "create group web");
    }

    const MINIMAL: &str = "[group]\nname = \"web\"\nmin_size = 1\nmax_size = 2\n\
                           [configuration]\nname = \"web-v1\"\n";

    #[test]
    fn a_minimal_file_takes_defaults() {
        let f = parse("m.toml", MINIMAL).unwrap();
        assert!(f.group.enabled);
        assert_eq!(f.group.desired_capacity, None);
        assert!(f.configuration.command.is_empty());
    }

    #[test]
    fn an_unknown_key_is_named_with_file_and_line() {
        let text = MINIMAL.replace("max_size = 2", "max_size = 2\nmax_sise = 3");
        let err = parse("web.toml", &text).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(
            msg.starts_with("web.toml:5:1: group.max_sise: unknown field `max_sise`"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_key() {
        let text = MINIMAL.replace("min_size = 1", "min_size = \"one\"");
        let msg = parse("web.toml", &text).unwrap_err().to_string();
        assert!(
            msg.starts_with("web.toml:3:12: group.min_size: invalid type"),
            "{msg}"
        );
        let text = MINIMAL.replace(
            "name = \"web-v1\"",
            "name = \"web-v1\"\nenv = { PORT = 8080 }",
        );
        let msg = parse("web.toml", &text).unwrap_err().to_string();
        assert!(msg.contains("configuration.env: invalid type"), "{msg}");
    }

    #[test]
    fn a_missing_section_or_key_is_named() {
        let msg = parse(
            "web.toml",
            "[group]\nname = \"web\"\nmin_size = 1\nmax_size = 2\n",
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("missing field `configuration`"), "{msg}");
        let msg = parse("web.toml", &MINIMAL.replace("max_size = 2\n", ""))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing field `max_size`"), "{msg}");
    }

    #[test]
    fn domain_validation_reports_every_problem_with_its_key() {
        let text = MINIMAL
            .replace(
                "min_size = 1",
                "min_size = 3\nremoval_policies = [\"Newest\"]",
            )
            .replace(
                "name = \"web-v1\"",
                "name = \"web-v1\"\nenv = { EBB_X = \"1\" }",
            );
        let err = parse("web.toml", &text).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.starts_with("web.toml: "), "{msg}");
        assert!(
            msg.contains("group.removal_policies[0]: unknown value `Newest`"),
            "{msg}"
        );
        assert!(
            msg.contains("group.min_size: 3 is greater than max_size 2"),
            "{msg}"
        );
        assert!(
            msg.contains("configuration.env.EBB_X: EBB_ variables are reserved"),
            "{msg}"
        );
    }

    const AUTOSCALED: &str = include_str!("../../docs/examples/autoscaled.toml");

    fn autoscaled() -> ApplyFile {
        parse("autoscaled.toml", AUTOSCALED).unwrap()
    }

    /// What the controller reports once `autoscaled.toml` is applied: ids,
    /// the rule's owned alarms, times normalised to UTC.
    fn autoscaled_state(f: &ApplyFile) -> State {
        let group = pb::ScalingGroup {
            id: "asg-1".into(),
            name: "api".into(),
            min_size: 1,
            max_size: 8,
            desired_capacity: 3,
            default_cooldown_secs: 300,
            removal_policies: vec!["OldestScalingConfiguration".into(), "OldestInstance".into()],
            health_check_type: "AGENT".into(),
            health_check_grace_period_secs: 60,
            sampling_interval_secs: 5,
            state: "Active".into(),
            active_scaling_configuration_id: "asc-1".into(),
            ..Default::default()
        };
        let c = &f.configuration;
        let config = pb::ScalingConfiguration {
            id: "asc-1".into(),
            scaling_group_id: "asg-1".into(),
            name: c.name.clone(),
            instance_type: c.instance_type.clone(),
            command: c.command.clone(),
            env: c.env.clone().into_iter().collect(),
            tags: c.tags.clone().into_iter().collect(),
            active: true,
            ..Default::default()
        };
        let rule = pb::ScalingRule {
            id: "asr-1".into(),
            scaling_group_id: "asg-1".into(),
            name: "cpu-50".into(),
            rule_type: "TargetTrackingScalingRule".into(),
            // Another key order and spelling of the numbers: compared as definitions.
            definition_json: r#"{"target_value":50,"metric":"CpuUtilization","rule_type":"TargetTrackingScalingRule","estimated_instance_warmup_secs":300,"disable_scale_in":false}"#.into(),
            owned_alarm_ids: vec!["asl-out".into(), "asl-in".into()],
        };
        let owned = |id: &str| pb::Alarm {
            id: id.into(),
            scaling_group_id: "asg-1".into(),
            name: format!("cpu-50-{id}"),
            owner_rule_id: "asr-1".into(),
            ..Default::default()
        };
        let task = |id: &str, name: &str, utc: &str, min: u32| pb::ScheduledTask {
            id: id.into(),
            scaling_group_id: "asg-1".into(),
            name: name.into(),
            launch_time: utc.into(),
            recurrence_type: "Daily".into(),
            recurrence_value: "1".into(),
            time_zone: "Europe/Berlin".into(),
            launch_expiration_secs: 600,
            enabled: true,
            min_size: Some(min),
            next_run: "2025-01-07T07:00:00Z".into(),
            ..Default::default()
        };
        State {
            group: Some(group),
            configurations: vec![config],
            rules: vec![rule],
            alarms: vec![owned("asl-out"), owned("asl-in")],
            tasks: vec![
                task("ast-1", "office-hours", "2025-01-06T07:00:00Z", 2),
                task("ast-2", "night", "2025-01-06T19:00:00Z", 1),
            ],
        }
    }

    #[test]
    fn the_autoscaled_example_parses() {
        let f = autoscaled();
        assert_eq!(f.rules.len(), 1);
        assert_eq!(
            f.rules[0].kind,
            RuleKind::TargetTracking {
                metric: "CpuUtilization".to_owned().into(),
                target_value: 50.0,
                disable_scale_in: false,
                estimated_instance_warmup_secs: 300,
            }
        );
        assert_eq!(f.tasks.len(), 2);
        assert_eq!(f.tasks[0].time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(f.tasks[0].min_size, Some(2));
        assert_eq!(f.tasks[1].min_size, Some(1));
    }

    #[test]
    fn from_nothing_creates_rules_before_tasks_and_enables_last() {
        let f = autoscaled();
        let steps = plan(&f, &State::default()).unwrap();
        assert_eq!(
            lines(&steps),
            [
                "created group api",
                "created configuration api-v1 in group api",
                "made api-v1 the active configuration of group api",
                "created rule cpu-50 in group api",
                "created scheduled task office-hours in group api",
                "created scheduled task night in group api",
                "enabled group api",
            ]
        );
        let Step::CreateRule(r) = &steps[3] else {
            panic!()
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&r.definition_json).unwrap(),
            serde_json::json!({
                "rule_type": "TargetTrackingScalingRule",
                "metric": "CpuUtilization",
                "target_value": 50.0,
                "disable_scale_in": false,
                "estimated_instance_warmup_secs": 300,
            })
        );
        let Step::CreateTask(t) = &steps[4] else {
            panic!()
        };
        assert_eq!(t.launch_time, "2025-01-06T08:00:00+01:00");
        assert_eq!(
            (t.recurrence_type.as_str(), t.recurrence_value.as_str()),
            ("Daily", "1")
        );
        assert_eq!(t.time_zone, "Europe/Berlin");
        assert_eq!((t.min_size, t.enabled), (Some(2), Some(true)));
        assert_eq!(t.scaling_rule, "");
    }

    #[test]
    fn equal_automation_state_plans_nothing() {
        let f = autoscaled();
        assert_eq!(plan(&f, &autoscaled_state(&f)).unwrap(), []);
    }

    #[test]
    fn what_the_file_does_not_mention_is_left_alone() {
        let f = autoscaled();
        let mut state = autoscaled_state(&f);
        state.rules.push(pb::ScalingRule {
            id: "asr-9".into(),
            name: "by-hand".into(),
            definition_json: "{}".into(),
            ..Default::default()
        });
        state.alarms.push(pb::Alarm {
            id: "asl-9".into(),
            name: "by-hand".into(),
            ..Default::default()
        });
        state.tasks.push(pb::ScheduledTask {
            id: "ast-9".into(),
            name: "by-hand".into(),
            ..Default::default()
        });
        assert_eq!(plan(&f, &state).unwrap(), []);
    }

    #[test]
    fn a_changed_rule_field_is_exactly_that_modify() {
        let f = autoscaled();
        let mut state = autoscaled_state(&f);
        state.rules[0].definition_json = state.rules[0]
            .definition_json
            .replace("\"target_value\":50", "\"target_value\":60");
        let steps = plan(&f, &state).unwrap();
        assert_eq!(
            lines(&steps),
            ["modified rule cpu-50: target_value 60.0 → 50.0"]
        );
        let Step::ModifyRule { request, .. } = &steps[0] else {
            panic!()
        };
        assert_eq!(request.scaling_rule, "cpu-50");
        assert_eq!(request.scaling_group, "api");
        assert_eq!(request.name, None);
        let sent: RuleKind =
            serde_json::from_str(request.definition_json.as_deref().unwrap()).unwrap();
        assert_eq!(sent, f.rules[0].kind);
    }

    #[test]
    fn a_changed_task_field_is_exactly_that_modify() {
        let f = autoscaled();
        let mut state = autoscaled_state(&f);
        state.tasks[0].min_size = Some(3);
        let steps = plan(&f, &state).unwrap();
        assert_eq!(
            lines(&steps),
            ["modified scheduled task office-hours: min_size 3 → 2"]
        );
        let Step::ModifyTask { request, .. } = &steps[0] else {
            panic!()
        };
        assert_eq!(
            *request,
            pb::ModifyScheduledTaskRequest {
                scheduled_task: "office-hours".into(),
                scaling_group: "api".into(),
                min_size: Some(2),
                ..Default::default()
            }
        );
        // A different instant is a change; the same instant spelled in UTC is not.
        let mut state = autoscaled_state(&f);
        state.tasks[1].launch_time = "2025-01-06T18:00:00Z".into();
        assert_eq!(
            lines(&plan(&f, &state).unwrap()),
            [
                "modified scheduled task night: launch_time 2025-01-06T18:00:00Z → 2025-01-06T20:00:00+01:00"
            ]
        );
    }

    const WITH_ALARM: &str = "[group]\nname = \"web\"\nmin_size = 1\nmax_size = 4\n\
        [configuration]\nname = \"web-v1\"\n\
        [[rule]]\nname = \"add-1\"\nrule_type = \"SimpleScalingRule\"\n\
        adjustment_type = \"QuantityChangeInCapacity\"\nadjustment_value = 1\ncooldown_secs = 60\n\
        [[alarm]]\nname = \"cpu-high\"\nmetric = \"CpuUtilization\"\nstatistic = \"Average\"\n\
        period_secs = 60\ncomparison_operator = \">\"\nthreshold = 80\nevaluation_count = 3\n\
        alarm_actions = [\"add-1\"]\n\
        [[task]]\nname = \"nightly\"\nlaunch_time = \"2025-01-06T02:00:00Z\"\n\
        recurrence_type = \"Cron\"\nrecurrence_value = \"0 2 * * *\"\nscaling_rule = \"add-1\"\n";

    fn with_alarm_state(f: &ApplyFile) -> State {
        let (group, configurations) = applied(&ApplyFile {
            group: f.group.clone(),
            configuration: f.configuration.clone(),
            rules: vec![],
            alarms: vec![],
            tasks: vec![],
        });
        State {
            group: Some(group),
            configurations,
            rules: vec![pb::ScalingRule {
                id: "asr-1".into(),
                scaling_group_id: "asg-1".into(),
                name: "add-1".into(),
                rule_type: "SimpleScalingRule".into(),
                definition_json: crate::automation::definition_json(&f.rules[0].kind),
                owned_alarm_ids: vec![],
            }],
            alarms: vec![pb::Alarm {
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
                alarm_actions: vec!["asr-1".into()],
                enabled: true,
                state: "OK".into(),
                ..Default::default()
            }],
            tasks: vec![pb::ScheduledTask {
                id: "ast-1".into(),
                scaling_group_id: "asg-1".into(),
                name: "nightly".into(),
                launch_time: "2025-01-06T02:00:00Z".into(),
                recurrence_type: "Cron".into(),
                recurrence_value: "0 2 * * *".into(),
                time_zone: "UTC".into(),
                launch_expiration_secs: 600,
                enabled: true,
                scaling_rule_id: "asr-1".into(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn alarms_come_after_their_rules_and_name_them() {
        let f = parse("w.toml", WITH_ALARM).unwrap();
        let steps = plan(&f, &State::default()).unwrap();
        assert_eq!(
            lines(&steps)[3..],
            [
                "created rule add-1 in group web",
                "created alarm cpu-high in group web",
                "created scheduled task nightly in group web",
                "enabled group web",
            ]
        );
        let Step::CreateAlarm(a) = &steps[4] else {
            panic!()
        };
        assert_eq!(a.alarm_actions, ["add-1"]);
        assert_eq!((a.comparison_operator.as_str(), a.threshold), (">", 80.0));
        assert_eq!(a.missing_data, None);
        let Step::CreateTask(t) = &steps[5] else {
            panic!()
        };
        assert_eq!(t.scaling_rule, "add-1");
    }

    #[test]
    fn alarm_actions_by_id_equal_the_files_names() {
        let f = parse("w.toml", WITH_ALARM).unwrap();
        assert_eq!(plan(&f, &with_alarm_state(&f)).unwrap(), []);
    }

    #[test]
    fn a_changed_alarm_field_is_exactly_that_modify() {
        let f = parse("w.toml", WITH_ALARM).unwrap();
        let mut state = with_alarm_state(&f);
        state.alarms[0].threshold = 85.0;
        let steps = plan(&f, &state).unwrap();
        assert_eq!(
            lines(&steps),
            ["modified alarm cpu-high: threshold 85 → 80"]
        );
        let Step::ModifyAlarm { request, .. } = &steps[0] else {
            panic!()
        };
        assert_eq!(
            *request,
            pb::ModifyAlarmRequest {
                alarm: "cpu-high".into(),
                scaling_group: "web".into(),
                threshold: Some(80.0),
                ..Default::default()
            }
        );
        // Enabled is its own call.
        let mut state = with_alarm_state(&f);
        state.alarms[0].enabled = false;
        assert_eq!(
            lines(&plan(&f, &state).unwrap()),
            ["enabled alarm cpu-high"]
        );
        // Another rule as the action.
        let mut state = with_alarm_state(&f);
        state.rules.push(pb::ScalingRule {
            id: "asr-2".into(),
            name: "add-2".into(),
            ..Default::default()
        });
        state.alarms[0].alarm_actions = vec!["asr-2".into()];
        assert_eq!(
            lines(&plan(&f, &state).unwrap()),
            ["modified alarm cpu-high: alarm_actions [add-2] → [add-1]"]
        );
    }

    #[test]
    fn an_action_naming_no_rule_is_refused() {
        let text = WITH_ALARM.replace("alarm_actions = [\"add-1\"]", "alarm_actions = [\"nope\"]");
        let f = parse("w.toml", &text).unwrap();
        let err = plan(&f, &State::default()).unwrap_err();
        assert!(err.contains("action `nope` names no rule"), "{err}");
    }

    #[test]
    fn bad_rules_alarms_and_tasks_are_named() {
        let text = WITH_ALARM.replace("cooldown_secs = 60", "cooldown_secs = 60\ncooldwn = 1");
        let msg = parse("w.toml", &text).unwrap_err().to_string();
        assert!(msg.contains("rule add-1: unknown field `cooldwn`"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let text = WITH_ALARM
            .replace(
                "comparison_operator = \">\"",
                "comparison_operator = \"=>\"",
            )
            .replace("period_secs = 60", "period_secs = 61")
            .replace(
                "scaling_rule = \"add-1\"",
                "scaling_rule = \"add-1\"\nmin_size = 2",
            )
            .replace("0 2 * * *", "0 25 * * *");
        let err = parse("w.toml", &text).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        for part in [
            "alarm cpu-high.comparison_operator: unknown value `=>`",
            "task nightly.scaling_rule: give scaling_rule or",
            "task nightly.recurrence_value: cron",
        ] {
            assert!(msg.contains(part), "{part} in {msg}");
        }
        let text = WITH_ALARM.replace("adjustment_value = 1", "adjustment_value = 0");
        let msg = parse("w.toml", &text).unwrap_err().to_string();
        assert!(msg.contains("rule add-1.adjustment_value"), "{msg}");
    }
}
