//! `task`: scheduled tasks, their schedule checked before it is sent.

use ebb_core::schedule;
use ebb_proto::v1 as pb;

use crate::cli::{TaskCmd, TaskCreate, TaskModify, to_schedule_recurrence};
use crate::conn::Admin;
use crate::error::{Error, Result};
use crate::lookup::{group_names, rule_names};
use crate::output::{Output, done, print_json};
use crate::view::{self, TaskView};

/// Usage problems of `task` that need no connection.
pub fn check_task(cmd: &TaskCmd) -> Result<()> {
    match cmd {
        TaskCmd::Modify(m) if m.is_empty() => Err(Error::Usage(
            "task modify: nothing to change; give at least one flag (see ebbctl task modify --help)"
                .to_owned(),
        )),
        TaskCmd::Create(c) => check_schedule(c).map_err(|e| Error::Usage(format!("task create: {e}"))),
        _ => Ok(()),
    }
}

/// The domain's schedule checks on `task create`'s flags.
fn check_schedule(c: &TaskCreate) -> Result<(), String> {
    let recurrence = c.when.recurrence.clone().unwrap_or_default();
    let schedule = schedule::Schedule {
        launch_time: c
            .launch_time
            .parse()
            .map_err(|e| format!("--launch-time: {e}"))?,
        recurrence: to_schedule_recurrence(
            &recurrence.recurrence_type,
            &recurrence.recurrence_value,
        )?,
        time_zone: c.when.time_zone.clone().unwrap_or_else(|| "UTC".to_owned()),
        recurrence_end_time: match &c.when.end_time {
            Some(t) => Some(t.parse().map_err(|e| format!("--end-time: {e}"))?),
            None => None,
        },
        launch_expiration_secs: c
            .when
            .expiration
            .unwrap_or(schedule::DEFAULT_LAUNCH_EXPIRATION_SECS),
    };
    let mut errors = ebb_core::model::Invalid::default();
    schedule.validate(&mut errors);
    errors.into_result().map_err(|e| e.to_string())
}

async fn find_task(admin: &mut Admin, group: &str, task: &str) -> Result<pb::ScheduledTask> {
    admin
        .describe_scheduled_tasks(pb::DescribeScheduledTasksRequest {
            scaling_group: group.to_owned(),
            ..Default::default()
        })
        .await?
        .scheduled_tasks
        .into_iter()
        .find(|t| t.id == task || t.name == task)
        .ok_or_else(|| {
            Error::Server(format!(
                "scheduled task `{task}` does not exist in group {group}"
            ))
        })
}

fn create_task_request(c: TaskCreate) -> pb::CreateScheduledTaskRequest {
    let r = c.when.recurrence.unwrap_or_default();
    pb::CreateScheduledTaskRequest {
        scaling_group: c.group,
        name: c.name.into_string(),
        launch_time: c.launch_time,
        recurrence_type: r.recurrence_type,
        recurrence_value: r.recurrence_value,
        time_zone: c.when.time_zone.unwrap_or_default(),
        recurrence_end_time: c.when.end_time.unwrap_or_default(),
        launch_expiration_secs: c.when.expiration,
        enabled: c.disabled.then_some(false),
        scaling_rule: c.rule.unwrap_or_default(),
        min_size: c.min,
        max_size: c.max,
        desired_capacity: c.desired,
    }
}

fn modify_task_request(m: TaskModify) -> pb::ModifyScheduledTaskRequest {
    let (recurrence_type, recurrence_value) = match m.when.recurrence {
        Some(r) => (Some(r.recurrence_type), Some(r.recurrence_value)),
        None => (None, None),
    };
    pb::ModifyScheduledTaskRequest {
        scheduled_task: m.task,
        scaling_group: m.group,
        enabled: None,
        launch_time: m.launch_time,
        recurrence_type,
        recurrence_value,
        time_zone: m.when.time_zone,
        recurrence_end_time: m.when.end_time,
        launch_expiration_secs: m.when.expiration,
        scaling_rule: m.rule,
        min_size: m.min,
        max_size: m.max,
        desired_capacity: m.desired,
    }
}

pub async fn task(admin: &mut Admin, cmd: TaskCmd, out: Output) -> Result<()> {
    let (verb, task) = match cmd {
        TaskCmd::List { group } => {
            let r = admin
                .describe_scheduled_tasks(pb::DescribeScheduledTasksRequest {
                    scaling_group: group.unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
            let views: Vec<TaskView> = r.scheduled_tasks.iter().map(TaskView::from).collect();
            return match out {
                Output::Json => print_json(&views),
                Output::Table | Output::Wide => {
                    let groups = group_names(admin).await;
                    let rules =
                        rule_names(admin, views.iter().map(|t| t.scaling_group_id.clone())).await;
                    print!("{}", view::tasks_table(&views, &groups, &rules));
                    Ok(())
                }
            };
        }
        TaskCmd::Describe(r) => {
            let t = find_task(admin, &r.group, &r.task).await?;
            let v = TaskView::from(&t);
            return match out {
                Output::Json => print_json(&v),
                Output::Table | Output::Wide => {
                    let groups = group_names(admin).await;
                    let rules = rule_names(admin, [v.scaling_group_id.clone()]).await;
                    print!("{}", view::task_fields(&v, &groups, &rules));
                    Ok(())
                }
            };
        }
        TaskCmd::Create(c) => (
            "created",
            admin.create_scheduled_task(create_task_request(c)).await?,
        ),
        TaskCmd::Modify(m) => (
            "modified",
            admin.modify_scheduled_task(modify_task_request(m)).await?,
        ),
        TaskCmd::Enable(r) => (
            "enabled",
            admin
                .modify_scheduled_task(pb::ModifyScheduledTaskRequest {
                    scheduled_task: r.task,
                    scaling_group: r.group,
                    enabled: Some(true),
                    ..Default::default()
                })
                .await?,
        ),
        TaskCmd::Disable(r) => (
            "disabled",
            admin
                .modify_scheduled_task(pb::ModifyScheduledTaskRequest {
                    scheduled_task: r.task,
                    scaling_group: r.group,
                    enabled: Some(false),
                    ..Default::default()
                })
                .await?,
        ),
        TaskCmd::Delete(r) => {
            admin
                .delete_scheduled_task(pb::ScheduledTaskRef {
                    scheduled_task: r.task.clone(),
                    scaling_group: r.group.clone(),
                })
                .await?;
            return done(
                out,
                &serde_json::json!({ "deleted": r.task }),
                format!("deleted scheduled task {} from group {}", r.task, r.group),
            );
        }
    };
    let v = TaskView::from(&task);
    let line = format!(
        "{verb} scheduled task {} ({}): {}, next run {}",
        v.name,
        v.id,
        view::recurrence(&v),
        v.next_run.as_deref().unwrap_or("-")
    );
    done(out, &v, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn task_create_checks_the_schedule_before_sending() {
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "ebbctl",
                "task",
                "create",
                "--group",
                "web",
                "--name",
                "morning",
                "--launch-time",
                "2025-01-06T08:00:00+01:00",
            ];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        let cli = parse(&[
            "--recurrence",
            "daily:1",
            "--time-zone",
            "Europe/Berlin",
            "--min",
            "2",
        ])
        .unwrap();
        let Command::Task(cmd) = cli.command else {
            panic!()
        };
        check_task(&cmd).unwrap();
        let TaskCmd::Create(c) = cmd else { panic!() };
        let req = create_task_request(c);
        assert_eq!(
            (req.recurrence_type.as_str(), req.recurrence_value.as_str()),
            ("Daily", "1")
        );
        assert_eq!(req.min_size, Some(2));
        assert_eq!(req.scaling_rule, "");
        // An action is required, and a rule excludes the bounds.
        assert_eq!(parse(&[]).unwrap_err().exit_code(), 2);
        assert_eq!(
            parse(&["--rule", "add-2", "--min", "1"])
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(
            parse(&["--launch-time", "tomorrow", "--min", "1"])
                .unwrap_err()
                .exit_code(),
            2
        );
        // A bad time zone is caught by the domain's check.
        let cli = parse(&["--time-zone", "Mars/Olympus", "--min", "1"]).unwrap();
        let Command::Task(cmd) = cli.command else {
            panic!()
        };
        let err = check_task(&cmd).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("time_zone"), "{err}");
    }
}
