//! `apply -f FILE.toml`: one group and its configuration, declared. The file
//! is parsed and validated with the domain's own rules, then compared with
//! what the controller has; `plan` (pure) lists the calls that close the
//! gap, and `run` makes them, one printed line per change.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use ebb_controller::model;
use ebb_proto::v1 as pb;
use serde::Deserialize;

use crate::cli::Output;
use crate::conn::Admin;
use crate::error::{Error, Result};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyFile {
    pub group: GroupDecl,
    pub configuration: ConfigDecl,
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
            (l.starts_with('[') && !l.starts_with("[[")).then(|| l.trim_matches(['[', ']']).trim())
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
    problems
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

/// The calls that make the controller match the file. `group` is the group
/// named in the file, if it exists; `configurations` are that group's.
pub fn plan(
    file: &ApplyFile,
    group: Option<&pb::ScalingGroup>,
    configurations: &[pb::ScalingConfiguration],
) -> Result<Vec<Step>, String> {
    let g = &file.group;
    let c = &file.configuration;
    let mut steps = Vec::new();
    let state = match group {
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
    let is_active = state == model::GroupState::Active.as_str();
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
    };
    Some(Step::ModifyConfig {
        name: c.name.clone(),
        changes,
        request,
    })
}

/// Reads the current state, plans, and makes the calls in order.
pub async fn run(admin: &mut Admin, file: &ApplyFile, dry_run: bool, out: Output) -> Result<()> {
    let group = admin.find_group(&file.group.name).await?;
    let configurations = match &group {
        Some(g) => {
            admin
                .describe_scaling_configurations(pb::DescribeScalingConfigurationsRequest {
                    scaling_group: g.id.clone(),
                })
                .await?
                .scaling_configurations
        }
        None => Vec::new(),
    };
    let steps = plan(file, group.as_ref(), &configurations).map_err(Error::Server)?;
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
        Output::Json => crate::commands::print_json(&serde_json::json!({
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

    const EXAMPLE: &str = include_str!("../../../../docs/examples/web.toml");

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
    fn from_nothing_creates_activates_and_enables() {
        let f = file();
        let steps = plan(&f, None, &[]).unwrap();
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
        assert_eq!(plan(&f, Some(&g), &c).unwrap(), []);
    }

    #[test]
    fn a_changed_field_is_exactly_that_modify() {
        let f = file();
        let (mut g, c) = applied(&f);
        g.desired_capacity = 4;
        let steps = plan(&f, Some(&g), &c).unwrap();
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
        assert_eq!(plan(&f, Some(&g), &c).unwrap(), []);
    }

    #[test]
    fn a_changed_configuration_is_modified_in_place() {
        let f = file();
        let (g, mut c) = applied(&f);
        c[0].command = vec!["sleep".into(), "1".into()];
        c[0].env.insert("EXTRA".into(), "1".into());
        let steps = plan(&f, Some(&g), &c).unwrap();
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
            lines(&plan(&f, Some(&g), &c).unwrap()),
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
            lines(&plan(&f, Some(&g), &c).unwrap()),
            ["made web-v1 the active configuration of group web"]
        );
    }

    #[test]
    fn enabled_decides_enable_and_disable() {
        let mut f = file();
        let (mut g, c) = applied(&f);
        g.state = "Inactive".into();
        assert_eq!(
            lines(&plan(&f, Some(&g), &c).unwrap()),
            ["enabled group web"]
        );
        f.group.enabled = false;
        assert_eq!(plan(&f, Some(&g), &c).unwrap(), []);
        g.state = "Active".into();
        assert_eq!(
            lines(&plan(&f, Some(&g), &c).unwrap()),
            ["disabled group web"]
        );
    }

    #[test]
    fn a_group_being_deleted_is_refused() {
        let f = file();
        let (mut g, c) = applied(&f);
        g.state = "Deleting".into();
        assert!(
            plan(&f, Some(&g), &c)
                .unwrap_err()
                .contains("being deleted")
        );
    }

    #[test]
    fn dry_run_lines_are_in_the_present_tense() {
        let steps = plan(&file(), None, &[]).unwrap();
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
}
