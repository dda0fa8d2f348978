//! The schedule pass: scheduled tasks run when they fall due, retried while
//! an activity blocks them until their launch expiration.

use crate::engine::capacity::reject_if_suspended;
use crate::engine::rules::run_rule;
use crate::engine::{Engine, EngineError, activity};
use crate::store::Write;
use ebb_core::decide::{RuleRun, capacity};
use ebb_core::model::tasks::{ScheduledTask, TaskAction};
use ebb_core::model::{
    Activity, ActivityStatus, GroupSpec, GroupState, Process, ScalingGroup, Trigger,
};
use ebb_core::schedule::Due;
use jiff::Timestamp;
use tracing::{info, warn};

/// The occurrence a task has dealt with. Occurrences from before the task
/// existed (a recurring task whose launch time is long past) never count;
/// those within its launch expiration of its creation do.
pub fn handled_until(task: &ScheduledTask) -> Option<Timestamp> {
    let floor = task.created_at_ms - i64::from(task.schedule.launch_expiration_secs) * 1000 - 1;
    task.last_occurrence.or_else(|| {
        Timestamp::from_millisecond(floor)
            .ok()
            .filter(|f| *f >= task.schedule.launch_time)
    })
}

/// Runs the scheduled tasks that are due; drops and records those missed
/// beyond their launch expiration; retries those blocked.
pub async fn run_due_tasks(engine: &Engine) -> Result<(), EngineError> {
    let now = engine.clock.now_ms();
    let Ok(now_ts) = Timestamp::from_millisecond(now) else {
        return Ok(());
    };
    let _ops = engine.ops.lock().await;
    for mut task in engine.store.list_tasks(None)? {
        if !task.enabled {
            continue;
        }
        let Some(group) = engine.store.get_group(&task.group_id)? else {
            continue;
        };
        match task.schedule.due(handled_until(&task), now_ts) {
            Due::Wait(_) | Due::Finished => continue,
            Due::Expired { at, skipped } => {
                let late = (now - at.as_millisecond()) / 1000;
                let earlier = if skipped > 0 {
                    format!(" (and {skipped} earlier runs)")
                } else {
                    String::new()
                };
                let reason = format!(
                    "scheduled task `{}` missed its run at {at}{earlier} by {late} s, beyond its launch expiration of {} s; dropped",
                    task.name, task.schedule.launch_expiration_secs
                );
                let current = capacity(&engine.store.list_instances(Some(&group.id))?);
                let act = activity::rejected(
                    &group,
                    current,
                    current,
                    Trigger::Schedule,
                    reason.clone(),
                    reason.clone(),
                    now,
                );
                task.last_occurrence = Some(at);
                task.last_result = Some(format!("dropped: {reason} ({})", act.id));
                warn!(group = %group.name, "{reason}");
                let name = task.name.clone();
                engine
                    .store
                    .commit(vec![Write::PutActivity(act), Write::PutTask(task)])?;
                let counts = &engine.fleet.counters.task_runs;
                counts.add(&[&group.name, &name, "expired"]);
            }
            Due::Run { at, skipped } => {
                if skipped > 0 {
                    warn!(group = %group.name, task = %task.name, "{skipped} earlier runs were missed while the controller was down; running the latest, due at {at}");
                }
                let blocked = if group
                    .suspended_processes
                    .contains(&Process::ScheduledAction)
                {
                    Some("the ScheduledAction process is suspended".to_owned())
                } else {
                    engine
                        .running_activity(&group.id)?
                        .map(|a| format!("activity {} is in progress", a.id))
                };
                if let Some(why) = blocked {
                    // Retried every tick until it runs or expires.
                    let note = format!("waiting: {why} (run due at {at})");
                    if task.last_result.as_deref() != Some(note.as_str()) {
                        task.last_result = Some(note);
                        engine.store.commit(vec![Write::PutTask(task)])?;
                    }
                    continue;
                }
                let act = run_task(engine, &group, &task, at, now)?;
                task.last_occurrence = Some(at);
                task.last_result = Some(match &act {
                    Some(a) => format!("{} {}", a.id, a.status),
                    None => "ran: nothing to change".into(),
                });
                let result = match &act {
                    Some(a) if a.status == ActivityStatus::Rejected => "rejected",
                    _ => "ran",
                };
                let name = task.name.clone();
                engine.store.commit(vec![Write::PutTask(task)])?;
                let counts = &engine.fleet.counters.task_runs;
                counts.add(&[&group.name, &name, result]);
            }
        }
    }
    Ok(())
}

fn run_task(
    engine: &Engine,
    group: &ScalingGroup,
    task: &ScheduledTask,
    at: Timestamp,
    now: i64,
) -> Result<Option<Activity>, EngineError> {
    match &task.action {
        TaskAction::Rule { rule_id } => {
            let Some(rule) = engine.store.get_rule(rule_id)? else {
                return Err(EngineError::NotFound(format!(
                    "scheduled task `{}` names rule {rule_id}, which no longer exists",
                    task.name
                )));
            };
            let run = RuleRun {
                trigger: Trigger::Schedule,
                what: format!(
                    "scheduled task `{}` (due {at}) ran rule `{}`",
                    task.name, rule.name
                ),
                metric_value: None,
                threshold: None,
                alarm: None,
            };
            run_rule(engine, group, &rule.kind, &run).map(Some)
        }
        TaskAction::Capacity {
            min_size,
            max_size,
            desired_capacity,
        } => {
            let spec = GroupSpec {
                min_size: *min_size,
                max_size: *max_size,
                desired_capacity: *desired_capacity,
                ..Default::default()
            };
            let updated = match group.modified(&spec) {
                Ok(g) => g,
                Err(e) => {
                    let current = capacity(&engine.store.list_instances(Some(&group.id))?);
                    let reason = format!(
                        "scheduled task `{}` cannot apply its values: {e}",
                        task.name
                    );
                    let act = activity::rejected(
                        group,
                        current,
                        current,
                        Trigger::Schedule,
                        reason.clone(),
                        reason,
                        now,
                    );
                    return engine.record_rejection(group, act).map(Some);
                }
            };
            let mut parts = Vec::new();
            if let Some(v) = min_size {
                parts.push(format!("min_size {v}"));
            }
            if let Some(v) = max_size {
                parts.push(format!("max_size {v}"));
            }
            if let Some(v) = desired_capacity {
                parts.push(format!("desired_capacity {v}"));
            }
            let what = format!(
                "scheduled task `{}` (due {at}) set {}",
                task.name,
                parts.join(", ")
            );
            let current = capacity(&engine.store.list_instances(Some(&group.id))?);
            if let Some(act) = reject_if_suspended(
                engine,
                group,
                current,
                updated.desired_capacity,
                updated.desired_capacity,
                Trigger::Schedule,
                &what,
            )? {
                return Ok(Some(act));
            }
            if updated.desired_capacity == group.desired_capacity
                || group.state != GroupState::Active
            {
                // Bounds only, or a disabled group: stored, nothing to move now.
                engine.store.commit(vec![Write::UpdateGroup(updated)])?;
                info!(group = %group.name, "{what}");
                return Ok(None);
            }
            let mut act = activity::start(
                group,
                current,
                updated.desired_capacity,
                Trigger::Schedule,
                activity::cause(&what, current, updated.desired_capacity),
                now,
            );
            act.details
                .push(format!("schedule: {}", task.schedule.describe()));
            engine
                .begin_activity(group, act, vec![Write::UpdateGroup(updated)])
                .map(Some)
        }
    }
}
