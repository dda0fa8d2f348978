//! The subcommands that call the admin API, one function per family.

use ebb_proto::v1 as pb;
use serde::Serialize;

use std::io::{IsTerminal, Write};
use std::path::Path;

use crate::cli::{
    ActivityCmd, Cli, Command, ConfigCmd, Global, GroupCmd, InstanceCmd, InstanceIds,
    InstanceIdsDesired, Watch,
};
use crate::configure;
use crate::conn::{self, Admin};
use crate::error::{Error, Result};
use crate::lookup::group_names;
use crate::output::{Output, done, json_text, print_json};
use crate::view::{self, ActivityView, ConfigView, GroupView, InstanceView, now_ms};

pub async fn run(cli: Cli) -> Result<()> {
    let data_dir = conn::global_data_dir(&cli.global);
    check(&cli.command)?;
    // Completions and man pages need no connection, nor a readable profile.
    let profile = match cli.command {
        Command::Completion { .. } | Command::Man { .. } => None,
        _ => conn::load_profile(&cli.global)?,
    };
    let global = conn::with_profile(cli.global, profile);
    let dial = Dial {
        global: &global,
        data_dir: &data_dir,
        leader: None,
    };
    match attempt(&dial, cli.command.clone()).await {
        // A controller that is not the leader refused a write, so nothing
        // was done: the whole command runs again at the leader, once.
        Err(Error::NotLeader { leader, .. }) => {
            let dial = Dial {
                leader: Some(leader),
                ..dial
            };
            attempt(&dial, cli.command).await
        }
        done => done,
    }
}

/// How to reach the controller: as the flags or the data dir say, or at
/// the leader a controller named.
struct Dial<'a> {
    global: &'a Global,
    data_dir: &'a Path,
    leader: Option<String>,
}

impl Dial<'_> {
    async fn connect(&self) -> Result<Admin> {
        let target = conn::resolve(self.global, self.data_dir)?;
        match &self.leader {
            Some(leader) => conn::connect(&target.at(leader)).await,
            None => conn::connect(&target).await,
        }
    }
}

async fn attempt(dial: &Dial<'_>, command: Command) -> Result<()> {
    let (global, data_dir) = (dial.global, dial.data_dir);
    let out = global.output;
    match command {
        Command::Cert(crate::cli::CertCmd::Issue(args))
            if args.admin.is_some() || args.target.is_some() =>
        {
            let mut admin = dial.connect().await?;
            crate::cert::issue_signed(&mut admin, &args, global, data_dir, out).await
        }
        Command::Cert(crate::cli::CertCmd::Issue(args)) => {
            crate::cert::issue(&args, global, data_dir, out)
        }
        Command::Cert(crate::cli::CertCmd::Revoke(args)) => {
            crate::cert::revoke(&mut dial.connect().await?, args, out).await
        }
        Command::Cert(crate::cli::CertCmd::Revoked) => {
            crate::cert::revoked(&mut dial.connect().await?, out).await
        }
        Command::Cert(crate::cli::CertCmd::List) => {
            crate::cert::list(&mut dial.connect().await?, out).await
        }
        Command::Cert(crate::cli::CertCmd::RotateServer) => {
            crate::cert::rotate_server(&mut dial.connect().await?, out).await
        }
        Command::Cert(crate::cli::CertCmd::CaHash) => crate::cert::ca_hash(global, data_dir, out),
        Command::Token(cmd) => {
            let mut admin = dial.connect().await?;
            crate::token::run(&mut admin, cmd, global, data_dir, out).await
        }
        Command::Apply(args) => {
            // A bad file is reported before any connection is tried.
            let file = crate::apply::load(&args.file)?;
            let mut admin = dial.connect().await?;
            let wait = args.wait.wait && !args.dry_run;
            let known = match admin.find_group(&file.group.name).await? {
                Some(g) if wait => crate::wait::known_activities(&mut admin, &g.id).await?,
                _ => Default::default(),
            };
            crate::apply::run(&mut admin, &file, args.dry_run, args.prune, out).await?;
            if !wait {
                return Ok(());
            }
            let timeout = std::time::Duration::from_secs(args.wait.wait_timeout);
            let settled = crate::wait::group(&mut admin, &file.group.name, &known, timeout).await?;
            if out != Output::Json {
                println!("{}", crate::wait::settled_line(&settled));
            }
            Ok(())
        }
        Command::Group(cmd) => group(&mut dial.connect().await?, cmd, out).await,
        Command::Config(cmd) => config(&mut dial.connect().await?, cmd, out).await,
        Command::Instance(cmd) => instance(&mut dial.connect().await?, cmd, out).await,
        Command::Activity(cmd) => activity(&mut dial.connect().await?, cmd, out).await,
        Command::Rule(cmd) => crate::automation::rule(&mut dial.connect().await?, cmd, out).await,
        Command::Notification(cmd) => notification(&mut dial.connect().await?, cmd, out).await,
        Command::Hook(cmd) => crate::hook::run(&mut dial.connect().await?, cmd, out).await,
        Command::Lb(cmd) => crate::attachment::lb(&mut dial.connect().await?, cmd, out).await,
        Command::Db(cmd) => crate::attachment::db(&mut dial.connect().await?, cmd, out).await,
        Command::Scale(args) => {
            crate::automation::scale(&mut dial.connect().await?, args, out).await
        }
        Command::Alarm(cmd) => crate::automation::alarm(&mut dial.connect().await?, cmd, out).await,
        Command::Task(cmd) => crate::automation::task(&mut dial.connect().await?, cmd, out).await,
        Command::Completion { shell } => {
            crate::manual::completion(shell, &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => crate::manual::man_pages(&dir),
    }
}

/// Usage problems clap cannot see, caught before any connection is tried.
fn check(command: &Command) -> Result<()> {
    match command {
        Command::Group(GroupCmd::Modify(m)) if m.is_empty() => Err(Error::Usage(
            "group modify: nothing to change; give at least one flag (see ebbctl group modify --help)"
                .to_owned(),
        )),
        Command::Rule(cmd) => crate::automation::check_rule(cmd),
        Command::Alarm(cmd) => crate::automation::check_alarm(cmd),
        Command::Task(cmd) => crate::automation::check_task(cmd),
        Command::Lb(cmd) => crate::attachment::check_lb(cmd),
        Command::Db(cmd) => crate::attachment::check_db(cmd),
        _ => Ok(()),
    }
}

#[derive(Serialize)]
struct NotificationView {
    scaling_group: String,
    notification_url: String,
    notification_types: Vec<String>,
    timeout_ms: u32,
    signed: bool,
    dead_letters: u64,
}

/// A secret from a file, without the trailing newline an editor or
/// `echo` leaves.
pub(crate) fn read_secret(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("--secret-file {}: {e}", path.display())))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

async fn notification(
    admin: &mut crate::conn::Admin,
    cmd: crate::cli::NotificationCmd,
    out: Output,
) -> Result<()> {
    use crate::cli::NotificationCmd;
    match cmd {
        NotificationCmd::List { group } => {
            let list = admin
                .describe_notification_configurations(
                    pb::DescribeNotificationConfigurationsRequest {
                        scaling_group: group,
                        ..Default::default()
                    },
                )
                .await?
                .notification_configurations;
            let views: Vec<NotificationView> = list
                .into_iter()
                .map(|n| NotificationView {
                    scaling_group: n.scaling_group,
                    notification_url: n.notification_url,
                    notification_types: n.notification_types,
                    timeout_ms: n.timeout_ms,
                    signed: n.signed,
                    dead_letters: n.dead_letters,
                })
                .collect();
            match out {
                Output::Json => print_json(&views),
                Output::Table | Output::Wide => {
                    for v in &views {
                        let signed = if v.signed { "signed" } else { "unsigned" };
                        println!(
                            "{}  {}  {signed}  timeout {} ms  {} dead letters",
                            v.notification_url,
                            v.notification_types.join(","),
                            v.timeout_ms,
                            v.dead_letters
                        );
                    }
                    Ok(())
                }
            }
        }
        NotificationCmd::Create {
            group,
            url,
            events,
            secret_file,
            timeout_ms,
        } => {
            let url = url.into_string();
            let secret = secret_file.as_deref().map(read_secret).transpose()?;
            let n = admin
                .create_notification_configuration(pb::NotificationConfiguration {
                    scaling_group: group,
                    notification_url: url,
                    notification_types: events,
                    secret: secret.unwrap_or_default(),
                    timeout_ms: timeout_ms.unwrap_or(0),
                    ..Default::default()
                })
                .await?;
            println!(
                "notifying {} of {}{}",
                n.notification_url,
                n.notification_types.join(", "),
                if n.signed { " (signed)" } else { "" }
            );
            Ok(())
        }
        NotificationCmd::Delete { group, url } => {
            let url = url.into_string();
            admin
                .delete_notification_configuration(pb::NotificationConfiguration {
                    scaling_group: group,
                    notification_url: url.clone(),
                    ..Default::default()
                })
                .await?;
            println!("no longer notifying {url}");
            Ok(())
        }
    }
}

async fn group(admin: &mut Admin, cmd: GroupCmd, out: Output) -> Result<()> {
    match cmd {
        GroupCmd::List => {
            let groups = admin
                .describe_scaling_groups(pb::DescribeScalingGroupsRequest::default())
                .await?;
            let views: Vec<GroupView> = groups.scaling_groups.iter().map(GroupView::from).collect();
            match out {
                Output::Json => print_json(&views),
                Output::Table | Output::Wide => {
                    print!("{}", view::groups_table(&views, now_ms()));
                    Ok(())
                }
            }
        }
        GroupCmd::Describe { group } => {
            let g = admin
                .find_group(&group)
                .await?
                .ok_or_else(|| Error::Server(format!("scaling group `{group}` does not exist")))?;
            let v = GroupView::from(&g);
            match out {
                Output::Json => print_json(&v),
                Output::Table | Output::Wide => {
                    print!("{}", view::group_fields(&v));
                    Ok(())
                }
            }
        }
        GroupCmd::Create(c) => {
            let g = admin
                .create_scaling_group(pb::CreateScalingGroupRequest {
                    name: c.name.into_string(),
                    min_size: c.min,
                    max_size: c.max,
                    desired_capacity: c.desired,
                    default_cooldown_secs: c.cooldown,
                    removal_policies: c.removal_policies,
                    health_check_type: c.health_check_type,
                    health_check_grace_period_secs: c.grace_period,
                    sampling_interval_secs: c.sampling_interval,
                    deletion_protection: c.deletion_protection.then_some(true),
                })
                .await?;
            let line = format!(
                "created group {} ({}): {}, min {}, max {}, desired {}",
                g.name, g.id, g.state, g.min_size, g.max_size, g.desired_capacity
            );
            done(out, &GroupView::from(&g), line)
        }
        GroupCmd::Modify(m) => {
            let g = admin
                .modify_scaling_group(pb::ModifyScalingGroupRequest {
                    client_token: m.once.token(),
                    scaling_group: m.group,
                    name: m.name,
                    min_size: m.min,
                    max_size: m.max,
                    desired_capacity: m.desired,
                    default_cooldown_secs: m.cooldown,
                    removal_policies: m.removal_policies,
                    health_check_type: m.health_check_type,
                    health_check_grace_period_secs: m.grace_period,
                    sampling_interval_secs: m.sampling_interval,
                    deletion_protection: m.deletion_protection,
                    active_scaling_configuration: m.active_config,
                })
                .await?;
            let line = format!(
                "modified group {} ({}): {}, min {}, max {}, desired {}",
                g.name, g.id, g.state, g.min_size, g.max_size, g.desired_capacity
            );
            done(out, &GroupView::from(&g), line)
        }
        GroupCmd::Enable {
            group,
            config,
            once,
            wait,
        } => {
            let known = if wait.wait {
                crate::wait::known_activities(admin, &group).await?
            } else {
                Default::default()
            };
            let g = admin
                .enable_scaling_group(pb::EnableScalingGroupRequest {
                    client_token: once.token(),
                    scaling_group: group,
                    active_scaling_configuration: config,
                })
                .await?;
            let line = format!("enabled group {} ({}): {}", g.name, g.id, g.state);
            if !wait.wait {
                return done(out, &GroupView::from(&g), line);
            }
            if out != Output::Json {
                println!("{line}");
            }
            let timeout = std::time::Duration::from_secs(wait.wait_timeout);
            let settled = crate::wait::group(admin, &g.id, &known, timeout).await?;
            done(
                out,
                &GroupView::from(&settled.group),
                crate::wait::settled_line(&settled),
            )
        }
        GroupCmd::Disable { group } => {
            let g = admin
                .disable_scaling_group(pb::DisableScalingGroupRequest {
                    scaling_group: group,
                })
                .await?;
            let line = format!("disabled group {} ({}): {}", g.name, g.id, g.state);
            done(out, &GroupView::from(&g), line)
        }
        GroupCmd::Delete { group, force } => {
            let r = admin
                .delete_scaling_group(pb::DeleteScalingGroupRequest {
                    scaling_group: group.clone(),
                    force,
                })
                .await?;
            #[derive(Serialize)]
            struct Deleted {
                deleted: bool,
                activity_id: Option<String>,
            }
            let activity_id = (!r.activity_id.is_empty()).then(|| r.activity_id.clone());
            let line = if r.deleted {
                format!("deleted group {group}")
            } else {
                format!(
                    "deleting group {group}: activity {} is removing its instances (ebbctl activity describe {})",
                    r.activity_id, r.activity_id
                )
            };
            done(
                out,
                &Deleted {
                    deleted: r.deleted,
                    activity_id,
                },
                line,
            )
        }
        GroupCmd::Suspend(p) => {
            let asked = p.processes.join(", ");
            let g = admin
                .suspend_processes(pb::ProcessesRequest {
                    scaling_group: p.group,
                    processes: p.processes,
                })
                .await?;
            let line = format!(
                "suspended {asked} in group {}; suspended now: {}",
                g.name,
                suspended(&g)
            );
            done(out, &GroupView::from(&g), line)
        }
        GroupCmd::Resume(p) => {
            let asked = p.processes.join(", ");
            let g = admin
                .resume_processes(pb::ProcessesRequest {
                    scaling_group: p.group,
                    processes: p.processes,
                })
                .await?;
            let line = format!(
                "resumed {asked} in group {}; suspended now: {}",
                g.name,
                suspended(&g)
            );
            done(out, &GroupView::from(&g), line)
        }
    }
}

fn suspended(g: &pb::ScalingGroup) -> String {
    if g.suspended_processes.is_empty() {
        "none".to_owned()
    } else {
        g.suspended_processes.join(", ")
    }
}

/// The configuration named `key` (an id, or a name used once) among `all`.
fn pick_config<'a>(
    all: &'a [pb::ScalingConfiguration],
    key: &str,
) -> Result<&'a pb::ScalingConfiguration> {
    if let Some(c) = all.iter().find(|c| c.id == key) {
        return Ok(c);
    }
    let named: Vec<_> = all.iter().filter(|c| c.name == key).collect();
    match named[..] {
        [c] => Ok(c),
        [] => Err(Error::Server(format!(
            "scaling configuration `{key}` does not exist"
        ))),
        _ => Err(Error::Usage(format!(
            "{} groups have a configuration named `{key}`: add --group GROUP, or use its id",
            named.len()
        ))),
    }
}

/// The configuration instance `id` was launched from (ESS's "existing
/// instance as the configuration source").
async fn instance_configuration(admin: &mut Admin, id: &str) -> Result<pb::ScalingConfiguration> {
    let r = admin
        .describe_scaling_instances(pb::DescribeScalingInstancesRequest {
            instance_ids: vec![id.to_owned()],
            ..Default::default()
        })
        .await?;
    let inst = r
        .instances
        .iter()
        .find(|i| i.id == id)
        .ok_or_else(|| Error::Server(format!("instance `{id}` does not exist")))?;
    if inst.scaling_configuration_id.is_empty() {
        return Err(Error::Usage(format!(
            "--from-instance: instance {id} was attached, not launched from a configuration; there is nothing to copy"
        )));
    }
    let r = admin
        .describe_scaling_configurations(pb::DescribeScalingConfigurationsRequest {
            scaling_group: inst.scaling_group_id.clone(),
            ..Default::default()
        })
        .await?;
    r.scaling_configurations
        .into_iter()
        .find(|c| c.id == inst.scaling_configuration_id)
        .ok_or_else(|| {
            Error::Server(format!(
                "--from-instance: instance {id}'s configuration {} no longer exists",
                inst.scaling_configuration_id
            ))
        })
}

async fn config(admin: &mut Admin, cmd: ConfigCmd, out: Output) -> Result<()> {
    match cmd {
        ConfigCmd::List { group } => {
            let r = admin
                .describe_scaling_configurations(pb::DescribeScalingConfigurationsRequest {
                    scaling_group: group.unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
            let views: Vec<ConfigView> = r
                .scaling_configurations
                .iter()
                .map(ConfigView::from)
                .collect();
            match out {
                Output::Json => print_json(&views),
                Output::Table | Output::Wide => {
                    let names = group_names(admin).await;
                    print!("{}", view::configs_table(&views, &names, now_ms()));
                    Ok(())
                }
            }
        }
        ConfigCmd::Describe { config, group } => {
            let r = admin
                .describe_scaling_configurations(pb::DescribeScalingConfigurationsRequest {
                    scaling_group: group.unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
            let c = pick_config(&r.scaling_configurations, &config)?;
            let v = ConfigView::from(c);
            match out {
                Output::Json => print_json(&v),
                Output::Table | Output::Wide => {
                    print!("{}", view::config_fields(&v));
                    Ok(())
                }
            }
        }
        ConfigCmd::Create(c) => {
            let base = match &c.from_instance {
                Some(id) => instance_configuration(admin, id).await?,
                None => pb::ScalingConfiguration::default(),
            };
            let wanted = configure::overlay(&base, &c.fields);
            let created = admin
                .create_scaling_configuration(configure::create_request(
                    &c.group,
                    c.name.as_str(),
                    &wanted,
                ))
                .await?;
            let v = ConfigView::from(&created);
            match out {
                Output::Json => print_json(&v),
                Output::Table | Output::Wide => {
                    let from = c
                        .from_instance
                        .map(|id| format!(", from instance {id}'s configuration {}", base.name))
                        .unwrap_or_default();
                    println!(
                        "created configuration {} ({}) in group {}{from}",
                        v.name, v.id, c.group
                    );
                    print!("{}", view::config_fields(&v));
                    Ok(())
                }
            }
        }
        ConfigCmd::Modify(m) => {
            let r = admin
                .describe_scaling_configurations(pb::DescribeScalingConfigurationsRequest {
                    scaling_group: m.group.unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
            let current = pick_config(&r.scaling_configurations, &m.config)?;
            let mut wanted = configure::overlay(current, &m.fields);
            if let Some(name) = m.name {
                wanted.name = name;
            }
            let Some(request) = configure::modify_request(current, &wanted) else {
                return Err(Error::Usage(format!(
                    "nothing to change in configuration {}: give a flag with a new value",
                    current.name
                )));
            };
            let modified = admin.modify_scaling_configuration(request).await?;
            let v = ConfigView::from(&modified);
            match out {
                Output::Json => print_json(&v),
                Output::Table | Output::Wide => {
                    println!(
                        "modified configuration {} ({}); running instances keep what they were launched with",
                        v.name, v.id
                    );
                    print!("{}", view::config_fields(&v));
                    Ok(())
                }
            }
        }
        ConfigCmd::Delete { id } => {
            admin
                .delete_scaling_configuration(pb::DeleteScalingConfigurationRequest {
                    scaling_configuration_id: id.clone(),
                })
                .await?;
            done(
                out,
                &serde_json::json!({ "deleted": id }),
                format!("deleted configuration {id}"),
            )
        }
    }
}

async fn instance(admin: &mut Admin, cmd: InstanceCmd, out: Output) -> Result<()> {
    let (verb, response) = match cmd {
        InstanceCmd::List {
            group,
            state,
            since,
            watch,
        } => {
            let request = pb::DescribeScalingInstancesRequest {
                scaling_group: group.unwrap_or_default(),
                lifecycle_state: state.unwrap_or_default(),
                since_ms: since.unwrap_or_default(),
                ..Default::default()
            };
            return watching(watch, async || {
                let r = admin.describe_scaling_instances(request.clone()).await?;
                let views: Vec<InstanceView> = r.instances.iter().map(InstanceView::from).collect();
                match out {
                    Output::Json => json_text(&views),
                    Output::Table | Output::Wide => {
                        let names = group_names(admin).await;
                        Ok(view::instances_table(
                            &views,
                            &names,
                            now_ms(),
                            out == Output::Wide,
                        ))
                    }
                }
            })
            .await;
        }
        InstanceCmd::Describe { id } => {
            let r = admin
                .describe_scaling_instances(pb::DescribeScalingInstancesRequest {
                    instance_ids: vec![id.clone()],
                    ..Default::default()
                })
                .await?;
            let i = r
                .instances
                .iter()
                .find(|i| i.id == id)
                .ok_or_else(|| Error::Server(format!("instance `{id}` does not exist")))?;
            let v = InstanceView::from(i);
            return match out {
                Output::Json => print_json(&v),
                Output::Table | Output::Wide => {
                    let names = group_names(admin).await;
                    print!("{}", view::instance_fields(&v, &names, now_ms()));
                    Ok(())
                }
            };
        }
        InstanceCmd::Attach {
            instances: InstanceIds { group, ids },
            once,
        } => (
            "attached",
            admin
                .attach_instances(pb::AttachInstancesRequest {
                    client_token: once.token(),
                    scaling_group: group,
                    instance_ids: ids,
                })
                .await?,
        ),
        InstanceCmd::Detach(InstanceIdsDesired {
            group,
            once,
            keep_desired,
            ids,
        }) => (
            "detached",
            admin
                .detach_instances(pb::DetachInstancesRequest {
                    client_token: once.token(),
                    scaling_group: group,
                    instance_ids: ids,
                    decrease_desired_capacity: Some(!keep_desired),
                })
                .await?,
        ),
        InstanceCmd::Remove(InstanceIdsDesired {
            group,
            once,
            keep_desired,
            ids,
        }) => (
            "removing",
            admin
                .remove_instances(pb::RemoveInstancesRequest {
                    client_token: once.token(),
                    scaling_group: group,
                    instance_ids: ids,
                    decrease_desired_capacity: Some(!keep_desired),
                })
                .await?,
        ),
        InstanceCmd::Protect(InstanceIds { group, ids }) => (
            "protected",
            admin
                .set_instances_protection(pb::SetInstancesProtectionRequest {
                    scaling_group: group,
                    instance_ids: ids,
                    protected: true,
                })
                .await?,
        ),
        InstanceCmd::Unprotect(InstanceIds { group, ids }) => (
            "unprotected",
            admin
                .set_instances_protection(pb::SetInstancesProtectionRequest {
                    scaling_group: group,
                    instance_ids: ids,
                    protected: false,
                })
                .await?,
        ),
        InstanceCmd::Standby(InstanceIds { group, ids }) => (
            "put in standby",
            admin
                .enter_standby(pb::StandbyRequest {
                    scaling_group: group,
                    instance_ids: ids,
                })
                .await?,
        ),
        InstanceCmd::SetHealth(crate::cli::InstanceHealth { group, status, ids }) => (
            "marked",
            admin
                .set_instance_health(pb::SetInstanceHealthRequest {
                    scaling_group: group,
                    instance_ids: ids,
                    health_status: status,
                })
                .await?,
        ),
        InstanceCmd::ExitStandby(InstanceIds { group, ids }) => (
            "returned to service",
            admin
                .exit_standby(pb::StandbyRequest {
                    scaling_group: group,
                    instance_ids: ids,
                })
                .await?,
        ),
    };
    instances_changed(verb, &response, out)
}

fn instances_changed(verb: &str, r: &pb::InstancesResponse, out: Output) -> Result<()> {
    #[derive(Serialize)]
    struct Changed {
        instances: Vec<InstanceView>,
        activity_id: Option<String>,
    }
    let changed = Changed {
        instances: r.instances.iter().map(InstanceView::from).collect(),
        activity_id: (!r.activity_id.is_empty()).then(|| r.activity_id.clone()),
    };
    match out {
        Output::Json => print_json(&changed),
        Output::Table | Output::Wide => {
            for i in &changed.instances {
                println!("{verb} {} ({})", i.id, i.lifecycle_state);
            }
            if let Some(a) = &changed.activity_id {
                println!("activity {a} changes the capacity (ebbctl activity describe {a})");
            }
            Ok(())
        }
    }
}

/// The most activities one request asks for (the server's maximum).
const ACTIVITY_PAGE: u32 = 1000;
/// How many activities `activity list` shows without `--limit` or `--since`.
const DEFAULT_ACTIVITY_LIST: u32 = 50;

async fn activity(admin: &mut Admin, cmd: ActivityCmd, out: Output) -> Result<()> {
    match cmd {
        ActivityCmd::List {
            group,
            limit,
            status,
            since,
            watch,
        } => {
            // --since alone lists everything since then.
            let wanted = match (limit, since) {
                (Some(n), _) => Some(n),
                (None, Some(_)) => None,
                (None, None) => Some(DEFAULT_ACTIVITY_LIST),
            };
            watching(watch, async || {
                let views = list_activities(admin, &group, &status, since, wanted).await?;
                match out {
                    Output::Json => json_text(&views),
                    Output::Table | Output::Wide => {
                        let names = group_names(admin).await;
                        Ok(view::activities_table(
                            &views,
                            &names,
                            now_ms(),
                            out == Output::Wide,
                        ))
                    }
                }
            })
            .await
        }
        ActivityCmd::Describe { id } => {
            let r = admin
                .describe_scaling_activities(pb::DescribeScalingActivitiesRequest {
                    activity_ids: vec![id.clone()],
                    ..Default::default()
                })
                .await?;
            let a = r
                .activities
                .iter()
                .find(|a| a.id == id)
                .ok_or_else(|| Error::Server(format!("activity `{id}` does not exist")))?;
            let v = ActivityView::from(a);
            match out {
                Output::Json => print_json(&v),
                Output::Table | Output::Wide => {
                    let names = group_names(admin).await;
                    print!("{}", view::activity_fields(&v, &names, now_ms()));
                    Ok(())
                }
            }
        }
    }
}

/// Activities newest first, page by page, at most `wanted` (all when `None`).
async fn list_activities(
    admin: &mut Admin,
    group: &Option<String>,
    status: &Option<String>,
    since: Option<i64>,
    wanted: Option<u32>,
) -> Result<Vec<ActivityView>> {
    let mut views: Vec<ActivityView> = Vec::new();
    let mut page_token = String::new();
    loop {
        let left = wanted.map_or(ACTIVITY_PAGE, |n| n.saturating_sub(views.len() as u32));
        if left == 0 {
            break;
        }
        let page_size = left.min(ACTIVITY_PAGE);
        let r = admin
            .describe_scaling_activities(pb::DescribeScalingActivitiesRequest {
                scaling_group: group.clone().unwrap_or_default(),
                // `limit` too, for a controller that predates paging.
                limit: page_size,
                page_size,
                status: status.clone().unwrap_or_default(),
                since_ms: since.unwrap_or_default(),
                page_token,
                activity_ids: vec![],
            })
            .await?;
        views.extend(r.activities.iter().map(ActivityView::from));
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    Ok(views)
}

/// A listing printed once, or with `--watch` again every interval until
/// Ctrl-C or `--watch-count` listings; on a terminal each replaces the last.
async fn watching(watch: Watch, mut render: impl AsyncFnMut() -> Result<String>) -> Result<()> {
    if !watch.watch {
        print!("{}", render().await?);
        return Ok(());
    }
    let terminal = std::io::stdout().is_terminal();
    let mut shown = 0;
    loop {
        let text = render().await?;
        if terminal {
            // Clear the screen and go home, as watch(1) does.
            print!("\x1b[2J\x1b[H");
        } else if shown > 0 {
            println!();
        }
        print!("{text}");
        // A pipe reader sees each listing as it comes.
        let _ = std::io::stdout().flush();
        shown += 1;
        if watch.watch_count.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(watch.interval)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Following the leader, against stand-in controllers over real mTLS:
    //! each refuses every admin call, a follower naming the leader (as
    //! `ebb_proto::redirect` says), a leader in its own words, and records
    //! the calls it got.

    use std::convert::Infallible;
    use std::future::{Ready, ready};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use clap::Parser;
    use ebb_proto::redirect::not_leader;
    use tonic::body::Body;
    use tonic::codegen::{Service, http};
    use tonic::server::NamedService;
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

    use super::*;

    const ENABLE: &str = "/ebb.v1.AdminService/EnableScalingGroup";

    #[derive(Clone)]
    struct Stand {
        /// `Some`: a follower naming this leader.
        leader: Option<String>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl NamedService for Stand {
        const NAME: &'static str = "ebb.v1.AdminService";
    }

    impl Service<http::Request<Body>> for Stand {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            self.calls
                .lock()
                .unwrap()
                .push(request.uri().path().to_owned());
            let status = match &self.leader {
                Some(leader) => not_leader(Some(leader)),
                None => tonic::Status::failed_precondition("refused by the leader itself"),
            };
            ready(Ok(status.into_http()))
        }
    }

    /// Serves a stand-in on a fresh loopback port: its address and calls.
    async fn stand(ca: &ebb_certs::Ca, leader: Option<&str>) -> (String, Arc<Mutex<Vec<String>>>) {
        let server = ca
            .issue_server(&[], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&server.cert_pem, &server.key_pem))
            .client_ca_root(Certificate::from_pem(ca.cert_pem()));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let svc = Stand {
            leader: leader.map(str::to_owned),
            calls: calls.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_routes(tonic::service::Routes::new(svc))
                .serve_with_incoming(incoming)
                .await
        });
        (addr, calls)
    }

    /// A port nothing listens on (it was free a moment ago).
    fn closed() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    async fn ebbctl(dir: &Path, args: &[&str]) -> Result<()> {
        let mut argv = vec!["ebbctl", "--data-dir", dir.to_str().unwrap()];
        argv.extend(args);
        run(Cli::try_parse_from(argv).unwrap()).await
    }

    fn calls(c: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        c.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_write_a_follower_refuses_runs_again_at_the_leader_it_names() {
        let (dir, ca) = crate::conn::tests::test_data_dir();
        let (leader, at_leader) = stand(&ca, None).await;
        let (follower, at_follower) = stand(&ca, Some(&leader)).await;
        let dead = closed();
        // The dead one is skipped, the follower answers, the leader is not listed.
        let list = format!("{dead},{follower}");
        let err = ebbctl(
            dir.path(),
            &["--controller", &list, "group", "enable", "web"],
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "refused by the leader itself");
        assert_eq!(calls(&at_follower), [ENABLE]);
        assert_eq!(calls(&at_leader), [ENABLE]);
    }

    #[tokio::test]
    async fn a_redirect_is_followed_once() {
        let (dir, ca) = crate::conn::tests::test_data_dir();
        let (third, at_third) = stand(&ca, None).await;
        let (second, at_second) = stand(&ca, Some(&third)).await;
        let (first, _) = stand(&ca, Some(&second)).await;
        // Repeated flags are a list as well as a comma-separated one.
        let err = ebbctl(
            dir.path(),
            &[
                "--controller",
                &first,
                "--controller",
                &third,
                "group",
                "enable",
                "web",
            ],
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("not the leader; the leader is at {third}")
        );
        assert_eq!(err.exit_code(), 1);
        assert_eq!(calls(&at_second), [ENABLE]);
        assert!(calls(&at_third).is_empty());
    }

    #[tokio::test]
    async fn when_no_controller_answers_each_is_named() {
        let (dir, _) = crate::conn::tests::test_data_dir();
        let (a, b) = (closed(), closed());
        let list = format!("{a},{b}");
        let err = ebbctl(dir.path(), &["--controller", &list, "group", "list"])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach any of the controllers: {a}: connection refused; {b}: connection refused"
            )
        );
        assert_eq!(err.exit_code(), 1);
        // A malformed entry is a usage error before anything is dialled.
        let err = ebbctl(
            dir.path(),
            &[
                "--controller",
                &format!("{a},not an address"),
                "group",
                "list",
            ],
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`not an address` is not a controller address; expected host:port"
        );
        assert_eq!(err.exit_code(), 2);
    }
}
