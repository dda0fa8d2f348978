//! The engine's side of lifecycle hooks: putting an instance into
//! `Pending:Wait` / `Removing:Wait`, telling the hook's webhook and the
//! instance's agent, collecting script results and judging the waits.

use ebb_proto::v1 as pb;
use serde_json::json;
use tracing::{info, warn};

use super::{Engine, EngineError, notify};
use crate::id::new_id;
use crate::store::Write;
use ebb_core::model::hooks::{
    self, LifecycleResult, MAX_HEARTBEAT_TIMEOUT_SECS, Transition, Verdict,
};
use ebb_core::model::{Activity, Instance, LifecycleState, ScalingGroup};

/// Puts an instance on its way in (`SCALE_OUT`) or out (`SCALE_IN`) into
/// the wait state when the group has hooks for that transition (leaving
/// instances only if they were ever in service). Returns whether it now
/// waits; the engine's next pass tells the hooks.
pub fn enter_wait(
    group: &ScalingGroup,
    inst: &mut Instance,
    transition: Transition,
    now: i64,
) -> bool {
    // An instance that never went into service has nothing to drain.
    if transition == Transition::ScaleIn && inst.in_service_at_ms.is_none() {
        return false;
    }
    let waits = hooks::begin(&group.lifecycle_hooks, transition, now, || new_id("lat"));
    if waits.is_empty() {
        return false;
    }
    inst.lifecycle_state = match transition {
        Transition::ScaleOut => LifecycleState::PendingWait,
        Transition::ScaleIn => LifecycleState::RemovingWait,
    };
    inst.hook_waits = waits;
    true
}

impl Engine {
    /// One step of a waiting instance: hands out what is not yet sent,
    /// takes in script results, applies timeouts, and says where it stands.
    /// Every decision is written to the instance and noted on the activity.
    pub(super) fn advance_waits(
        &self,
        group: &ScalingGroup,
        inst: &mut Instance,
        now: i64,
        running: Option<&mut Activity>,
    ) -> Result<Verdict, EngineError> {
        let mut changed = false;
        let mut notes = Vec::new();
        for w in inst.hook_waits.iter_mut().filter(|w| w.is_open()) {
            let Some(hook) = group.lifecycle_hooks.iter().find(|h| h.id == w.hook_id) else {
                continue;
            };
            if !w.webhook_sent
                && let Some(url) = &hook.webhook
            {
                let body = json!({
                    "event": notify::LIFECYCLE_EVENT,
                    "lifecycle_action_token": w.token,
                    "lifecycle_hook_id": hook.id,
                    "lifecycle_hook_name": hook.name,
                    "lifecycle_transition": hook.transition.to_string(),
                    "instance_id": inst.id,
                    "scaling_group_id": group.id,
                    "scaling_group_name": group.name,
                    "default_result": hook.default_result.to_string(),
                    "heartbeat_timeout_secs": hook.heartbeat_timeout_secs,
                    "deadline_ms": w.deadline_ms,
                });
                // Signed when the hook has a secret; the default timeout.
                let target = ebb_core::model::NotificationConfig {
                    url: url.clone(),
                    types: Vec::new(),
                    secret: hook.secret.clone(),
                    timeout_ms: ebb_core::model::DEFAULT_WEBHOOK_TIMEOUT_MS,
                };
                let entry = notify::delivery(
                    &w.token,
                    &group.id,
                    notify::LIFECYCLE_EVENT,
                    &target,
                    body.to_string(),
                );
                self.store.commit(vec![Write::EnqueueDelivery(entry)])?;
                w.webhook_sent = true;
                changed = true;
            }
            if !w.script_sent {
                let run = pb::RunHook {
                    token: w.token.clone(),
                    hook_name: hook.name.clone(),
                    transition: hook.transition.to_string(),
                    command: hook.script.clone(),
                    // The action's own deadline moves with heartbeats; the
                    // agent only stops a script nobody could still wait for.
                    timeout_ms: u64::from(MAX_HEARTBEAT_TIMEOUT_SECS) * 1000,
                    env: [
                        ("EBB_LIFECYCLE_ACTION_TOKEN", w.token.clone()),
                        ("EBB_LIFECYCLE_HOOK", hook.name.clone()),
                        ("EBB_LIFECYCLE_TRANSITION", hook.transition.to_string()),
                        ("EBB_INSTANCE_ID", inst.id.clone()),
                        ("EBB_SCALING_GROUP_ID", group.id.clone()),
                        ("EBB_SCALING_GROUP", group.name.clone()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                };
                if self.fleet.lifecycle.send(&inst.id, run) {
                    info!(instance = %inst.id, hook = %hook.name, "hook script handed to the agent");
                    w.script_sent = true;
                    changed = true;
                }
            } else if let Some(answer) = self.fleet.lifecycle.take(&w.token) {
                // The host did not allow the script: the action is not the
                // script's to decide, it waits for the API or its timeout
                // as a hook without a script would, the reason in view.
                if answer.refused {
                    let why = format!("the agent refused the script: {}", answer.error);
                    warn!(group = %group.name, instance = %inst.id, hook = %w.hook_name, "{why}");
                    notes.push(format!(
                        "lifecycle hook {} on {}: {why}; waiting for the API or the heartbeat timeout (default {})",
                        w.hook_name, inst.id, w.default_result
                    ));
                    w.outcome = Some(why);
                    changed = true;
                    continue;
                }
                let (result, why) = script_verdict(&answer);
                w.decide(result, why.clone());
                notes.push(format!(
                    "lifecycle hook {} on {}: {why}; {result}",
                    w.hook_name, inst.id
                ));
                changed = true;
            }
        }
        let (verdict, timed_out) = hooks::judge(&mut inst.hook_waits, now);
        notes.extend(
            timed_out
                .into_iter()
                .map(|t| format!("{t} (instance {})", inst.id)),
        );
        changed |= !notes.is_empty();
        if verdict != Verdict::Waiting {
            for w in &inst.hook_waits {
                // Decided earlier (by the API): say so on the activity too.
                if let Some(outcome) = &w.outcome
                    && !notes.iter().any(|n| n.contains(outcome.as_str()))
                {
                    notes.push(format!(
                        "lifecycle hook {} on {}: {outcome}",
                        w.hook_name, inst.id
                    ));
                }
            }
            // A result nobody will collect any more.
            for w in &inst.hook_waits {
                self.fleet.lifecycle.discard(&w.token);
            }
        }
        for n in &notes {
            info!(group = %group.name, "{n}");
        }
        if let Some(act) = running
            && inst.activity_id.as_deref() == Some(act.id.as_str())
            && !notes.is_empty()
        {
            act.details.extend(notes);
            // Abandoning a leaving instance still removes it; abandoning an
            // arriving one releases it, which the activity must not hide.
            if verdict == Verdict::Abandon && inst.lifecycle_state == LifecycleState::PendingWait {
                super::activity::note_error(
                    act,
                    &format!(
                        "instance {} was abandoned by a lifecycle hook and released",
                        inst.id
                    ),
                );
            }
            self.store.commit(vec![Write::PutActivity(act.clone())])?;
        }
        if changed && verdict == Verdict::Waiting {
            self.store.commit(vec![Write::PutInstance(inst.clone())])?;
        }
        if verdict == Verdict::Abandon {
            warn!(group = %group.name, instance = %inst.id, "lifecycle hook result ABANDON");
        }
        Ok(verdict)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(exit_code: Option<i32>, error: &str, output: &str) -> pb::HookResult {
        pb::HookResult {
            token: "lat-1".into(),
            exit_code,
            error: error.into(),
            output: output.into(),
            duration_ms: 12,
            refused: false,
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
}
