//! Lifecycle hooks: the admin operations (create, delete, describe hooks;
//! describe, complete and heartbeat actions) and the outbox through which
//! the engine hands hook scripts to agents and gets their results back.

use dashmap::DashMap;
use ebb_proto::v1 as pb;
use ebb_proto::v1::controller_message::Body as ControllerBody;
use tonic::Status;
use tracing::{info, warn};

use crate::admin::{invalid, store_status};
use crate::agent_service::{Outbound, message};
use crate::automation::find_group;
use crate::engine::Engine;
use crate::id::new_id;
use crate::store::Write;
use ebb_core::model::hooks::{HookSpec, HookWait, LifecycleHook, LifecycleResult, Transition};
use ebb_core::model::{Instance, Invalid, LifecycleState, ScalingGroup};

/// Script results kept for the engine to pick up; more means results nobody
/// is waiting for any more (their actions were decided another way).
const MAX_PENDING_RESULTS: usize = 4096;

/// The way to each connected agent's stream, and the hook results that came
/// back on them.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Instance id → (stream's session number, its outbound queue).
    agents: DashMap<String, (u64, Outbound)>,
    /// Lifecycle action token → the agent's answer.
    results: DashMap<String, pb::HookResult>,
}

impl Outbox {
    /// A stream opened: hook scripts for the instance go to it.
    pub fn open(&self, instance: &str, session: u64, tx: Outbound) {
        self.agents.insert(instance.to_owned(), (session, tx));
    }

    /// A stream ended; a newer stream of the same instance stays.
    pub fn close(&self, instance: &str, session: u64) {
        self.agents.remove_if(instance, |_, (s, _)| *s == session);
    }

    /// Hands a script to the instance's agent; false when it has no stream
    /// or its queue is full (the engine tries again on its next pass).
    pub fn send(&self, instance: &str, run: pb::RunHook) -> bool {
        let Some(entry) = self.agents.get(instance) else {
            return false;
        };
        entry
            .1
            .try_send(message(ControllerBody::RunHook(run)))
            .is_ok()
    }

    /// An agent's answer arrived.
    pub fn finished(&self, result: pb::HookResult) {
        if self.results.len() >= MAX_PENDING_RESULTS {
            warn!(
                "dropping {} hook results nobody collected",
                self.results.len()
            );
            self.results.clear();
        }
        self.results.insert(result.token.clone(), result);
    }

    /// The answer for `token`, once.
    pub fn take(&self, token: &str) -> Option<pb::HookResult> {
        self.results.remove(token).map(|(_, r)| r)
    }
}

/// The result a script's answer stands for, and the sentence that says so.
pub fn script_verdict(r: &pb::HookResult) -> (LifecycleResult, String) {
    let tail = r
        .output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(" (last output: {})", l.trim()))
        .unwrap_or_default();
    match r.exit_code {
        Some(0) => (
            LifecycleResult::Continue,
            format!("the script exited 0 after {} ms{tail}", r.duration_ms),
        ),
        Some(code) => (
            LifecycleResult::Abandon,
            format!("the script exited {code} after {} ms{tail}", r.duration_ms),
        ),
        None => (
            LifecycleResult::Abandon,
            format!("the script did not finish: {}{tail}", r.error),
        ),
    }
}

// ---- views -------------------------------------------------------------

fn hook_view(group: &ScalingGroup, h: &LifecycleHook) -> pb::LifecycleHook {
    pb::LifecycleHook {
        id: h.id.clone(),
        scaling_group_id: group.id.clone(),
        name: h.name.clone(),
        transition: h.transition.to_string(),
        heartbeat_timeout_secs: h.heartbeat_timeout_secs,
        default_result: h.default_result.to_string(),
        notification_url: h.webhook.clone().unwrap_or_default(),
        script: h.script.clone(),
        created_at_ms: h.created_at_ms,
    }
}

fn action_view(inst: &Instance, w: &HookWait) -> pb::LifecycleAction {
    pb::LifecycleAction {
        lifecycle_action_token: w.token.clone(),
        instance_id: inst.id.clone(),
        scaling_group_id: inst.group_id.clone(),
        hook_id: w.hook_id.clone(),
        hook_name: w.hook_name.clone(),
        transition: w.transition.to_string(),
        started_at_ms: w.started_at_ms,
        deadline_ms: w.deadline_ms,
        result: w.result.map(|r| r.to_string()).unwrap_or_default(),
        outcome: w.outcome.clone().unwrap_or_default(),
    }
}

fn hook_in<'a>(group: &'a ScalingGroup, key: &str) -> Result<&'a LifecycleHook, Status> {
    if key.is_empty() {
        return Err(invalid(Invalid::one("hook", "is required")));
    }
    group
        .lifecycle_hooks
        .iter()
        .find(|h| h.id == key || h.name == key)
        .ok_or_else(|| {
            Status::not_found(format!(
                "scaling group {} has no lifecycle hook `{key}`",
                group.name
            ))
        })
}

// ---- hooks ---------------------------------------------------------------

pub async fn create_lifecycle_hook(
    engine: &Engine,
    req: pb::CreateLifecycleHookRequest,
) -> Result<pb::LifecycleHook, Status> {
    let _ops = engine.ops.lock().await;
    let mut group = find_group(engine, &req.scaling_group)?;
    let spec = HookSpec {
        name: req.name,
        transition: req.transition,
        heartbeat_timeout_secs: req.heartbeat_timeout_secs,
        default_result: req.default_result,
        webhook: req.notification_url,
        script: req.script,
    };
    let hook = LifecycleHook::create(
        new_id("ash"),
        &spec,
        &group.lifecycle_hooks,
        engine.clock.now_ms(),
    )
    .map_err(invalid)?;
    group.lifecycle_hooks.push(hook.clone());
    engine
        .store
        .commit(vec![Write::UpdateGroup(group.clone())])
        .map_err(store_status)?;
    info!(group = %group.name, hook = %hook.name, transition = %hook.transition, "lifecycle hook created");
    Ok(hook_view(&group, &hook))
}

/// Deletes a hook. Instances waiting on it are let go as AWS does: a
/// launching instance is abandoned, a leaving one continues.
pub async fn delete_lifecycle_hook(
    engine: &Engine,
    req: pb::LifecycleHookRef,
) -> Result<pb::DeleteLifecycleHookResponse, Status> {
    let _ops = engine.ops.lock().await;
    let mut group = find_group(engine, &req.scaling_group)?;
    let hook = hook_in(&group, &req.hook)?.clone();
    group.lifecycle_hooks.retain(|h| h.id != hook.id);
    let mut writes = vec![Write::UpdateGroup(group.clone())];
    for mut inst in engine
        .store
        .list_instances(Some(&group.id))
        .map_err(store_status)?
    {
        let result = match hook.transition {
            Transition::ScaleOut => LifecycleResult::Abandon,
            Transition::ScaleIn => LifecycleResult::Continue,
        };
        let mut changed = false;
        for w in inst.hook_waits.iter_mut().filter(|w| w.hook_id == hook.id) {
            changed |= w.decide(result, format!("the hook was deleted; {result}"));
        }
        if changed {
            writes.push(Write::PutInstance(inst));
        }
    }
    engine.store.commit(writes).map_err(store_status)?;
    engine.wake();
    info!(group = %group.name, hook = %hook.name, "lifecycle hook deleted");
    Ok(pb::DeleteLifecycleHookResponse {})
}

pub async fn describe_lifecycle_hooks(
    engine: &Engine,
    req: pb::DescribeLifecycleHooksRequest,
) -> Result<pb::DescribeLifecycleHooksResponse, Status> {
    let group = find_group(engine, &req.scaling_group)?;
    Ok(pb::DescribeLifecycleHooksResponse {
        lifecycle_hooks: group
            .lifecycle_hooks
            .iter()
            .map(|h| hook_view(&group, h))
            .collect(),
    })
}

// ---- actions ---------------------------------------------------------------

pub async fn describe_lifecycle_actions(
    engine: &Engine,
    req: pb::DescribeLifecycleActionsRequest,
) -> Result<pb::DescribeLifecycleActionsResponse, Status> {
    let group = find_group(engine, &req.scaling_group)?;
    let instances = engine
        .store
        .list_instances(Some(&group.id))
        .map_err(store_status)?;
    Ok(pb::DescribeLifecycleActionsResponse {
        lifecycle_actions: instances
            .iter()
            .filter(|i| waiting(i))
            .flat_map(|i| i.hook_waits.iter().map(move |w| action_view(i, w)))
            .collect(),
    })
}

fn waiting(i: &Instance) -> bool {
    matches!(
        i.lifecycle_state,
        LifecycleState::PendingWait | LifecycleState::RemovingWait
    )
}

/// The waiting instance and the index of its wait that `r` names.
fn find_action(engine: &Engine, r: &pb::LifecycleActionRef) -> Result<(Instance, usize), Status> {
    let token = r.lifecycle_action_token.as_str();
    if token.is_empty() && (r.instance_id.is_empty() || r.hook.is_empty()) {
        let mut errors = Invalid::default();
        errors.push(
            "lifecycle_action_token",
            "is required unless instance_id and hook are given",
        );
        if !r.instance_id.is_empty() {
            errors.push("hook", "is required with instance_id");
        }
        return Err(invalid(errors));
    }
    let candidates = if r.instance_id.is_empty() {
        engine.store.list_instances(None).map_err(store_status)?
    } else {
        let inst = engine
            .store
            .get_instance(&r.instance_id)
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!("instance `{}` does not exist", r.instance_id))
            })?;
        vec![inst]
    };
    for inst in candidates.into_iter().filter(waiting) {
        let found = inst.hook_waits.iter().position(|w| {
            (token.is_empty() || w.token == token)
                && (r.hook.is_empty() || w.hook_id == r.hook || w.hook_name == r.hook)
        });
        if let Some(i) = found {
            return Ok((inst, i));
        }
    }
    Err(Status::not_found(if token.is_empty() {
        format!(
            "instance {} is not waiting on a lifecycle hook `{}`",
            r.instance_id, r.hook
        )
    } else {
        format!("no instance is waiting on lifecycle action `{token}`")
    }))
}

pub async fn complete_lifecycle_action(
    engine: &Engine,
    req: pb::CompleteLifecycleActionRequest,
) -> Result<pb::LifecycleAction, Status> {
    let _ops = engine.ops.lock().await;
    let result = req
        .result
        .parse::<LifecycleResult>()
        .map_err(|e| invalid(Invalid::one("result", e)))?;
    let r = req
        .action
        .ok_or_else(|| invalid(Invalid::one("action", "is required")))?;
    let (mut inst, i) = find_action(engine, &r)?;
    let wait = &mut inst.hook_waits[i];
    if !wait.decide(result, format!("completed through the API: {result}")) {
        return Err(Status::failed_precondition(format!(
            "lifecycle action {} was already decided: {}",
            wait.token,
            wait.outcome.clone().unwrap_or_default()
        )));
    }
    let view = action_view(&inst, &inst.hook_waits[i]);
    info!(instance = %inst.id, hook = %view.hook_name, %result, "lifecycle action completed");
    engine
        .store
        .commit(vec![Write::PutInstance(inst)])
        .map_err(store_status)?;
    engine.wake();
    Ok(view)
}

pub async fn record_lifecycle_action_heartbeat(
    engine: &Engine,
    r: pb::LifecycleActionRef,
) -> Result<pb::LifecycleAction, Status> {
    let _ops = engine.ops.lock().await;
    let (mut inst, i) = find_action(engine, &r)?;
    let wait = &mut inst.hook_waits[i];
    if !wait.is_open() {
        return Err(Status::failed_precondition(format!(
            "lifecycle action {} was already decided: {}",
            wait.token,
            wait.outcome.clone().unwrap_or_default()
        )));
    }
    wait.heartbeat(engine.clock.now_ms());
    let view = action_view(&inst, &inst.hook_waits[i]);
    info!(instance = %inst.id, hook = %view.hook_name, deadline_ms = view.deadline_ms, "lifecycle action heartbeat");
    engine
        .store
        .commit(vec![Write::PutInstance(inst)])
        .map_err(store_status)?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    fn answer(exit_code: Option<i32>, error: &str, output: &str) -> pb::HookResult {
        pb::HookResult {
            token: "lat-1".into(),
            exit_code,
            error: error.into(),
            output: output.into(),
            duration_ms: 12,
        }
    }

    #[test]
    fn exit_zero_continues_anything_else_abandons() {
        let (r, why) = script_verdict(&answer(Some(0), "", "draining\ndone\n\n"));
        assert_eq!(r, LifecycleResult::Continue);
        assert_eq!(why, "the script exited 0 after 12 ms (last output: done)");
        let (r, why) = script_verdict(&answer(Some(3), "", ""));
        assert_eq!(r, LifecycleResult::Abandon);
        assert_eq!(why, "the script exited 3 after 12 ms");
        let (r, why) = script_verdict(&answer(None, "hook scripts are disabled in agent.toml", ""));
        assert_eq!(r, LifecycleResult::Abandon);
        assert_eq!(
            why,
            "the script did not finish: hook scripts are disabled in agent.toml"
        );
    }

    #[test]
    fn results_are_taken_once_and_a_closed_stream_gets_nothing() {
        let outbox = Outbox::default();
        outbox.finished(answer(Some(0), "", ""));
        assert!(outbox.take("lat-1").is_some());
        assert!(outbox.take("lat-1").is_none());

        let (tx, mut rx) = mpsc::channel(1);
        outbox.open("i-1", 1, tx.clone());
        let run = pb::RunHook {
            token: "lat-2".into(),
            ..Default::default()
        };
        assert!(outbox.send("i-1", run.clone()));
        assert!(rx.try_recv().is_ok());
        // A replaced stream's close does not remove its successor.
        outbox.open("i-1", 2, tx);
        outbox.close("i-1", 1);
        assert!(outbox.send("i-1", run.clone()));
        outbox.close("i-1", 2);
        assert!(!outbox.send("i-1", run));
        assert!(!outbox.send("i-2", pb::RunHook::default()));
    }
}
