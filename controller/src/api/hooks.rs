//! Lifecycle hooks and their actions: create, delete, describe, complete,
//! heartbeat.

use crate::api::common::{Page, find_group, invalid, time_key};
use crate::engine::Engine;
use crate::id::new_id;
use crate::store::Write;
use ebb_core::model::hooks::{HookSpec, HookWait, LifecycleHook, LifecycleResult, Transition};
use ebb_core::model::{Instance, Invalid, LifecycleState, ScalingGroup};
use ebb_proto::v1 as pb;
use tonic::Status;
use tracing::info;

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
        signed: h.secret.is_some(),
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
        engine.store.list_instances(None)?
    } else {
        let inst = engine.store.get_instance(&r.instance_id)?.ok_or_else(|| {
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
        secret: req.secret,
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
        .commit(vec![Write::UpdateGroup(group.clone())])?;
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
    for mut inst in engine.store.list_instances(Some(&group.id))? {
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
    engine.store.commit(writes)?;
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

pub async fn describe_lifecycle_actions(
    engine: &Engine,
    req: pb::DescribeLifecycleActionsRequest,
) -> Result<pb::DescribeLifecycleActionsResponse, Status> {
    let group = find_group(engine, &req.scaling_group)?;
    let page = Page::of(req.page_size, &req.page_token)?;
    let instances = engine.store.list_instances(Some(&group.id))?;
    let actions: Vec<pb::LifecycleAction> = instances
        .iter()
        .filter(|i| waiting(i))
        .flat_map(|i| i.hook_waits.iter().map(move |w| action_view(i, w)))
        .collect();
    let (lifecycle_actions, next_page_token) = page.cut(actions, |a| {
        time_key(a.started_at_ms, &a.lifecycle_action_token)
    });
    Ok(pb::DescribeLifecycleActionsResponse {
        lifecycle_actions,
        next_page_token,
    })
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
    engine.store.commit(vec![Write::PutInstance(inst)])?;
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
    engine.store.commit(vec![Write::PutInstance(inst)])?;
    Ok(view)
}
