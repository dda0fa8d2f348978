//! `ebbctl hook`: lifecycle hooks and the actions instances wait on.

use ebb_proto::v1 as pb;
use serde::Serialize;

use crate::cli::{ActionRef, HookCmd};
use crate::conn::Admin;
use crate::error::Result;
use crate::output::{Output, print_json};
use crate::view::{Table, command_line, duration, now_ms, or_dash};

/// An action by its token, or by instance and hook, as the API names it.
fn action_ref(a: &ActionRef) -> pb::LifecycleActionRef {
    pb::LifecycleActionRef {
        lifecycle_action_token: a.token.clone().unwrap_or_default(),
        instance_id: a.instance.clone().unwrap_or_default(),
        hook: a.hook.clone().unwrap_or_default(),
    }
}

#[derive(Serialize)]
struct HookView {
    id: String,
    scaling_group_id: String,
    name: String,
    transition: String,
    heartbeat_timeout_secs: u32,
    default_result: String,
    notification_url: String,
    /// Whether its POSTs are signed (the secret is never shown).
    signed: bool,
    script: Vec<String>,
}

impl From<pb::LifecycleHook> for HookView {
    fn from(h: pb::LifecycleHook) -> Self {
        Self {
            id: h.id,
            scaling_group_id: h.scaling_group_id,
            name: h.name,
            transition: h.transition,
            heartbeat_timeout_secs: h.heartbeat_timeout_secs,
            default_result: h.default_result,
            notification_url: h.notification_url,
            signed: h.signed,
            script: h.script,
        }
    }
}

#[derive(Serialize)]
struct ActionView {
    lifecycle_action_token: String,
    instance_id: String,
    hook_name: String,
    transition: String,
    started_at_ms: i64,
    deadline_ms: i64,
    result: String,
    outcome: String,
}

impl From<pb::LifecycleAction> for ActionView {
    fn from(a: pb::LifecycleAction) -> Self {
        Self {
            lifecycle_action_token: a.lifecycle_action_token,
            instance_id: a.instance_id,
            hook_name: a.hook_name,
            transition: a.transition,
            started_at_ms: a.started_at_ms,
            deadline_ms: a.deadline_ms,
            result: a.result,
            outcome: a.outcome,
        }
    }
}

fn action_line(a: &ActionView) -> String {
    if a.result.is_empty() {
        format!(
            "{} waits on {} ({}); default result in {} (token {}){}",
            a.instance_id,
            a.hook_name,
            a.transition,
            duration(a.deadline_ms - now_ms()),
            a.lifecycle_action_token,
            // A note while it waits: the agent refused the script.
            if a.outcome.is_empty() {
                String::new()
            } else {
                format!("; {}", a.outcome)
            }
        )
    } else {
        format!(
            "{} on {}: {} ({})",
            a.instance_id, a.hook_name, a.result, a.outcome
        )
    }
}

fn show_action(a: pb::LifecycleAction, out: Output) -> Result<()> {
    let view = ActionView::from(a);
    if out == Output::Json {
        return print_json(&view);
    }
    println!("{}", action_line(&view));
    Ok(())
}

pub async fn run(admin: &mut Admin, cmd: HookCmd, out: Output) -> Result<()> {
    match cmd {
        HookCmd::List { group } => {
            let hooks: Vec<HookView> = admin
                .describe_lifecycle_hooks(pb::DescribeLifecycleHooksRequest {
                    scaling_group: group,
                })
                .await?
                .lifecycle_hooks
                .into_iter()
                .map(HookView::from)
                .collect();
            if out == Output::Json {
                return print_json(&hooks);
            }
            let mut t = Table::new(&[
                "NAME",
                "TRANSITION",
                "TIMEOUT",
                "DEFAULT",
                "WEBHOOK",
                "SCRIPT",
            ]);
            for h in &hooks {
                t.row(vec![
                    h.name.clone(),
                    h.transition.clone(),
                    format!("{}s", h.heartbeat_timeout_secs),
                    h.default_result.clone(),
                    if h.signed {
                        format!("{} (signed)", h.notification_url)
                    } else {
                        or_dash(Some(&h.notification_url))
                    },
                    if h.script.is_empty() {
                        "-".into()
                    } else {
                        command_line(&h.script)
                    },
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        HookCmd::Create {
            group,
            name,
            transition,
            heartbeat_timeout,
            default_result,
            webhook,
            secret_file,
            script,
        } => {
            let secret = secret_file
                .as_deref()
                .map(crate::commands::read_secret)
                .transpose()?;
            let h = admin
                .create_lifecycle_hook(pb::CreateLifecycleHookRequest {
                    scaling_group: group,
                    name: name.into_string(),
                    transition,
                    heartbeat_timeout_secs: heartbeat_timeout,
                    default_result: default_result.unwrap_or_default(),
                    notification_url: webhook.unwrap_or_default(),
                    secret: secret.unwrap_or_default(),
                    script,
                })
                .await?;
            if out == Output::Json {
                return print_json(&HookView::from(h));
            }
            println!(
                "lifecycle hook {} ({}) created: {} waits up to {} s, then {}",
                h.name, h.id, h.transition, h.heartbeat_timeout_secs, h.default_result
            );
            Ok(())
        }
        HookCmd::Delete { group, hook } => {
            let hook = hook.into_string();
            admin
                .delete_lifecycle_hook(pb::LifecycleHookRef {
                    scaling_group: group,
                    hook: hook.clone(),
                })
                .await?;
            println!("lifecycle hook {hook} deleted");
            Ok(())
        }
        HookCmd::Actions { group } => {
            let actions: Vec<ActionView> = admin
                .describe_lifecycle_actions(pb::DescribeLifecycleActionsRequest {
                    scaling_group: group,
                    ..Default::default()
                })
                .await?
                .lifecycle_actions
                .into_iter()
                .map(ActionView::from)
                .collect();
            if out == Output::Json {
                return print_json(&actions);
            }
            for a in &actions {
                println!("{}", action_line(a));
            }
            Ok(())
        }
        HookCmd::Complete { action, result } => {
            let a = admin
                .complete_lifecycle_action(pb::CompleteLifecycleActionRequest {
                    action: Some(action_ref(&action)),
                    result,
                })
                .await?;
            show_action(a, out)
        }
        HookCmd::Heartbeat { action } => {
            let a = admin
                .record_lifecycle_action_heartbeat(action_ref(&action))
                .await?;
            show_action(a, out)
        }
    }
}
