//! Scheduled tasks: create, modify, delete, describe.

use crate::api::common::{Page, find_group, find_named, group_filter, invalid, name_key, now_ms};
use crate::api::rules::rule_in;
use crate::engine::schedules::handled_until;
use crate::engine::{Engine, limits};
use crate::id::new_id;
use crate::store::Write;
use ebb_core::model::tasks::{ScheduledTask, TaskAction};
use ebb_core::model::{GroupSpec, Invalid, ScalingGroup, check_name};
use ebb_core::schedule::{DEFAULT_LAUNCH_EXPIRATION_SECS, Due, Recurrence, Schedule};
use ebb_proto::v1 as pb;
use jiff::Timestamp;
use tonic::Status;
use tracing::info;

fn parse_time(field: &str, s: &str, errors: &mut Invalid) -> Option<Timestamp> {
    match s.parse::<Timestamp>() {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(field, format!("`{s}` is not an RFC 3339 time: {e}"));
            None
        }
    }
}

fn parse_recurrence(kind: &str, value: &str, errors: &mut Invalid) -> Option<Recurrence> {
    let bad = |errors: &mut Invalid, why: String| {
        errors.push("recurrence_value", why);
        None
    };
    match kind {
        "" | "None" => Some(Recurrence::None),
        "Daily" => match value.trim().parse::<u32>() {
            Ok(every) => Some(Recurrence::Daily { every }),
            Err(_) => bad(errors, format!("`{value}` is not a number of days")),
        },
        "Weekly" => {
            let days: Result<Vec<u8>, _> =
                value.split(',').map(|d| d.trim().parse::<u8>()).collect();
            match days {
                Ok(days) => Some(Recurrence::Weekly { days }),
                Err(_) => bad(
                    errors,
                    format!("`{value}` is not a list of weekdays like 1,5 (0 = Sunday)"),
                ),
            }
        }
        "Monthly" => match value
            .split_once('-')
            .map(|(a, b)| (a.trim().parse::<u8>(), b.trim().parse::<u8>()))
        {
            Some((Ok(from), Ok(to))) => Some(Recurrence::Monthly { from, to }),
            _ => bad(errors, format!("`{value}` is not a day range like 1-5")),
        },
        "Cron" => Some(Recurrence::Cron {
            expression: value.to_owned(),
        }),
        other => {
            errors.push(
                "recurrence_type",
                format!(
                    "unknown value `{other}`; expected one of None, Daily, Weekly, Monthly, Cron"
                ),
            );
            None
        }
    }
}

/// The action from a request's rule or capacity fields: exactly one kind.
fn parse_action(
    engine: &Engine,
    group: &ScalingGroup,
    rule: &str,
    min: Option<u32>,
    max: Option<u32>,
    desired: Option<u32>,
    errors: &mut Invalid,
) -> Result<Option<TaskAction>, Status> {
    let capacity = min.is_some() || max.is_some() || desired.is_some();
    match (rule.is_empty(), capacity) {
        (false, false) => match rule_in(engine, group, rule) {
            Ok(r) => Ok(Some(TaskAction::Rule { rule_id: r.id })),
            Err(e) if e.code() == tonic::Code::NotFound => {
                errors.push("scaling_rule", e.message().to_owned());
                Ok(None)
            }
            Err(e) => Err(e),
        },
        (true, true) => {
            // Check the values against the group now, as they would apply.
            let spec = GroupSpec {
                min_size: min,
                max_size: max,
                desired_capacity: desired,
                ..Default::default()
            };
            if let Err(e) = group.modified(&spec) {
                for f in e.0 {
                    errors.push(f.field, f.message);
                }
            }
            Ok(Some(TaskAction::Capacity {
                min_size: min,
                max_size: max,
                desired_capacity: desired,
            }))
        }
        (false, true) => {
            errors.push(
                "scaling_rule",
                "give a rule or capacity values (min_size, max_size, desired_capacity), not both",
            );
            Ok(None)
        }
        (true, false) => {
            errors.push(
                "scaling_rule",
                "give a rule to run or capacity values to set",
            );
            Ok(None)
        }
    }
}

fn find_task(engine: &Engine, group_key: &str, key: &str) -> Result<ScheduledTask, Status> {
    let store = &engine.store;
    find_named(
        engine,
        group_key,
        key,
        ("scheduled_task", "scheduled task"),
        |id| store.get_task(id),
        |g| store.list_tasks(Some(g)),
        |t| &t.name,
    )
}

fn task_view(t: &ScheduledTask, now: i64) -> pb::ScheduledTask {
    let (recurrence_type, recurrence_value) = match &t.schedule.recurrence {
        Recurrence::None => ("None".to_owned(), String::new()),
        Recurrence::Daily { every } => ("Daily".to_owned(), every.to_string()),
        Recurrence::Weekly { days } => (
            "Weekly".to_owned(),
            days.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
        ),
        Recurrence::Monthly { from, to } => ("Monthly".to_owned(), format!("{from}-{to}")),
        Recurrence::Cron { expression } => ("Cron".to_owned(), expression.clone()),
    };
    let next = Timestamp::from_millisecond(now).ok().and_then(|now| {
        match t.schedule.due(handled_until(t), now) {
            Due::Run { at, .. } | Due::Expired { at, .. } | Due::Wait(at) => Some(at.to_string()),
            Due::Finished => None,
        }
    });
    let (rule, min, max, desired) = match &t.action {
        TaskAction::Rule { rule_id } => (rule_id.clone(), None, None, None),
        TaskAction::Capacity {
            min_size,
            max_size,
            desired_capacity,
        } => (String::new(), *min_size, *max_size, *desired_capacity),
    };
    pb::ScheduledTask {
        id: t.id.clone(),
        scaling_group_id: t.group_id.clone(),
        name: t.name.clone(),
        launch_time: t.schedule.launch_time.to_string(),
        recurrence_type,
        recurrence_value,
        time_zone: t.schedule.time_zone.clone(),
        recurrence_end_time: t
            .schedule
            .recurrence_end_time
            .map(|e| e.to_string())
            .unwrap_or_default(),
        launch_expiration_secs: t.schedule.launch_expiration_secs,
        enabled: t.enabled,
        scaling_rule_id: rule,
        min_size: min,
        max_size: max,
        desired_capacity: desired,
        next_run: if t.enabled {
            next.unwrap_or_default()
        } else {
            String::new()
        },
        last_run: t.last_occurrence.map(|l| l.to_string()).unwrap_or_default(),
        last_result: t.last_result.clone().unwrap_or_default(),
    }
}

pub async fn create_scheduled_task(
    engine: &Engine,
    req: pb::CreateScheduledTaskRequest,
) -> Result<pb::ScheduledTask, Status> {
    let _ops = engine.ops.lock().await;
    let group = find_group(engine, &req.scaling_group)?;
    let mut errors = Invalid::default();
    check_name("name", &req.name, &mut errors);
    let launch = parse_time("launch_time", &req.launch_time, &mut errors);
    let end = if req.recurrence_end_time.is_empty() {
        None
    } else {
        parse_time("recurrence_end_time", &req.recurrence_end_time, &mut errors)
    };
    let recurrence = parse_recurrence(&req.recurrence_type, &req.recurrence_value, &mut errors);
    let action = parse_action(
        engine,
        &group,
        &req.scaling_rule,
        req.min_size,
        req.max_size,
        req.desired_capacity,
        &mut errors,
    )?;
    let now = now_ms(engine);
    let schedule = match (launch, recurrence) {
        (Some(launch_time), Some(recurrence)) => {
            let s = Schedule {
                launch_time,
                recurrence,
                time_zone: if req.time_zone.is_empty() {
                    "UTC".into()
                } else {
                    req.time_zone.clone()
                },
                recurrence_end_time: end,
                launch_expiration_secs: req
                    .launch_expiration_secs
                    .unwrap_or(DEFAULT_LAUNCH_EXPIRATION_SECS),
            };
            s.validate(&mut errors);
            if s.recurrence == Recurrence::None
                && launch_time.as_millisecond() + i64::from(s.launch_expiration_secs) * 1000 < now
            {
                errors.push(
                    "launch_time",
                    "is in the past, beyond the launch expiration: it would never run",
                );
            }
            Some(s)
        }
        _ => None,
    };
    errors.into_result().map_err(invalid)?;
    let task = ScheduledTask {
        id: new_id("sst"),
        group_id: group.id.clone(),
        name: req.name,
        schedule: schedule.expect("validated"),
        action: action.expect("validated"),
        enabled: req.enabled.unwrap_or(true),
        last_occurrence: None,
        last_result: None,
        created_at_ms: now,
    };
    let have = engine.store.list_tasks(Some(&group.id))?.len();
    let whose = format!("scaling group {}", group.name);
    let names = ("scheduled tasks", whose.as_str(), "tasks_per_group");
    limits::check(have, 1, engine.limits.tasks_per_group, names)?;
    engine.store.commit(vec![Write::PutTask(task.clone())])?;
    info!(group = %group.name, task = %task.name, "scheduled task created");
    Ok(task_view(&task, now))
}

pub async fn modify_scheduled_task(
    engine: &Engine,
    req: pb::ModifyScheduledTaskRequest,
) -> Result<pb::ScheduledTask, Status> {
    let _ops = engine.ops.lock().await;
    let mut task = find_task(engine, &req.scaling_group, &req.scheduled_task)?;
    let group = find_group(engine, &task.group_id)?;
    let mut errors = Invalid::default();
    if let Some(e) = req.enabled {
        task.enabled = e;
    }
    if let Some(t) = req
        .launch_time
        .as_deref()
        .and_then(|t| parse_time("launch_time", t, &mut errors))
    {
        task.schedule.launch_time = t;
    }
    if let Some(end) = &req.recurrence_end_time {
        task.schedule.recurrence_end_time = if end.is_empty() {
            None
        } else {
            parse_time("recurrence_end_time", end, &mut errors)
        };
    }
    if req.recurrence_type.is_some() || req.recurrence_value.is_some() {
        let (kind, value) = match &task.schedule.recurrence {
            Recurrence::None => ("None".to_owned(), String::new()),
            Recurrence::Daily { every } => ("Daily".to_owned(), every.to_string()),
            Recurrence::Weekly { days } => (
                "Weekly".to_owned(),
                days.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
            ),
            Recurrence::Monthly { from, to } => ("Monthly".to_owned(), format!("{from}-{to}")),
            Recurrence::Cron { expression } => ("Cron".to_owned(), expression.clone()),
        };
        let kind = req.recurrence_type.clone().unwrap_or(kind);
        let value = req.recurrence_value.clone().unwrap_or(value);
        if let Some(r) = parse_recurrence(&kind, &value, &mut errors) {
            task.schedule.recurrence = r;
        }
    }
    if let Some(tz) = &req.time_zone {
        task.schedule.time_zone = tz.clone();
    }
    if let Some(x) = req.launch_expiration_secs {
        task.schedule.launch_expiration_secs = x;
    }
    let action_given = req.scaling_rule.is_some()
        || req.min_size.is_some()
        || req.max_size.is_some()
        || req.desired_capacity.is_some();
    if action_given
        && let Some(a) = parse_action(
            engine,
            &group,
            req.scaling_rule.as_deref().unwrap_or(""),
            req.min_size,
            req.max_size,
            req.desired_capacity,
            &mut errors,
        )?
    {
        task.action = a;
    }
    task.schedule.validate(&mut errors);
    errors.into_result().map_err(invalid)?;
    engine.store.commit(vec![Write::PutTask(task.clone())])?;
    Ok(task_view(&task, now_ms(engine)))
}

pub async fn delete_scheduled_task(
    engine: &Engine,
    req: pb::ScheduledTaskRef,
) -> Result<pb::DeleteScheduledTaskResponse, Status> {
    let _ops = engine.ops.lock().await;
    let task = find_task(engine, &req.scaling_group, &req.scheduled_task)?;
    engine.store.commit(vec![Write::DeleteTask(task.id)])?;
    Ok(pb::DeleteScheduledTaskResponse {})
}

pub async fn describe_scheduled_tasks(
    engine: &Engine,
    req: pb::DescribeScheduledTasksRequest,
) -> Result<pb::DescribeScheduledTasksResponse, Status> {
    let group_id = group_filter(engine, &req.scaling_group)?;
    let page = Page::of(req.page_size, &req.page_token)?;
    let now = now_ms(engine);
    let tasks = engine.store.list_tasks(group_id.as_deref())?;
    let (tasks, next_page_token) = page.cut(tasks, |t| name_key(&t.name, &t.id));
    Ok(pb::DescribeScheduledTasksResponse {
        scheduled_tasks: tasks.iter().map(|t| task_view(t, now)).collect(),
        next_page_token,
    })
}
