//! Lifecycle hooks: a group's hooks as stored, and the pure arithmetic of
//! an instance waiting on them (deadlines, heartbeats, default results,
//! which result wins).

use serde::{Deserialize, Serialize};

use super::{Invalid, check_name};

/// ESS's bounds for a hook's heartbeat timeout.
pub const MIN_HEARTBEAT_TIMEOUT_SECS: u32 = 30;
pub const MAX_HEARTBEAT_TIMEOUT_SECS: u32 = 21_600;
/// ESS's default: ten minutes, then the default result.
pub const DEFAULT_HEARTBEAT_TIMEOUT_SECS: u32 = 600;
/// ESS allows six hooks per group.
pub const MAX_HOOKS_PER_GROUP: usize = 6;
/// A script's argv: enough for a command with its options, no more.
const MAX_SCRIPT_ARGS: usize = 64;
const MAX_SCRIPT_BYTES: usize = 4096;

string_enum!(
    /// The move a hook holds an instance in.
    Transition { ScaleOut = "SCALE_OUT", ScaleIn = "SCALE_IN" }
);

string_enum!(
    /// What happens when a hook is done: go on, or give the instance up.
    LifecycleResult { Continue = "CONTINUE", Abandon = "ABANDON" }
);

/// A lifecycle hook of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleHook {
    pub id: String,
    pub name: String,
    pub transition: Transition,
    pub heartbeat_timeout_secs: u32,
    pub default_result: LifecycleResult,
    /// Told of each action by a JSON POST.
    pub webhook: Option<String>,
    /// The HMAC-SHA256 key of the webhook's `X-Ebb-Signature`; unsigned
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Run by the instance's agent; its exit status completes the action.
    pub script: Vec<String>,
    pub created_at_ms: i64,
}

/// A create request's fields, strings as they came.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookSpec {
    pub name: String,
    pub transition: String,
    pub heartbeat_timeout_secs: Option<u32>,
    /// Empty: CONTINUE.
    pub default_result: String,
    /// Empty: none.
    pub webhook: String,
    /// Empty: the webhook's POSTs are unsigned.
    pub secret: String,
    pub script: Vec<String>,
}

impl LifecycleHook {
    /// A new hook, `id`, for a group that has `existing`; every problem at once.
    pub fn create(
        id: String,
        spec: &HookSpec,
        existing: &[LifecycleHook],
        now_ms: i64,
    ) -> Result<Self, Invalid> {
        let mut errors = Invalid::default();
        check_name("name", &spec.name, &mut errors);
        if existing.iter().any(|h| h.name == spec.name) {
            errors.push(
                "name",
                format!("the group already has a hook named `{}`", spec.name),
            );
        }
        if existing.len() >= MAX_HOOKS_PER_GROUP {
            errors.push(
                "name",
                format!("a group has at most {MAX_HOOKS_PER_GROUP} lifecycle hooks"),
            );
        }
        let transition = spec.transition.parse::<Transition>().unwrap_or_else(|e| {
            errors.push("transition", e);
            Transition::ScaleIn
        });
        let heartbeat_timeout_secs = spec
            .heartbeat_timeout_secs
            .unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT_SECS);
        if !(MIN_HEARTBEAT_TIMEOUT_SECS..=MAX_HEARTBEAT_TIMEOUT_SECS)
            .contains(&heartbeat_timeout_secs)
        {
            errors.push(
                "heartbeat_timeout_secs",
                format!(
                    "must be {MIN_HEARTBEAT_TIMEOUT_SECS} to {MAX_HEARTBEAT_TIMEOUT_SECS} seconds, got {heartbeat_timeout_secs}"
                ),
            );
        }
        let default_result = if spec.default_result.is_empty() {
            LifecycleResult::Continue
        } else {
            spec.default_result.parse().unwrap_or_else(|e| {
                errors.push("default_result", e);
                LifecycleResult::Continue
            })
        };
        let webhook = (!spec.webhook.is_empty()).then(|| spec.webhook.clone());
        if let Some(url) = &webhook
            && let Err(e) = crate::url::parse_url(url)
        {
            errors.push("notification_url", e);
        }
        let secret = (!spec.secret.is_empty()).then(|| spec.secret.clone());
        if let Some(secret) = &secret {
            super::check_webhook_secret("secret", secret, &mut errors);
            if webhook.is_none() {
                errors.push(
                    "secret",
                    "signs the webhook's POSTs; give notification_url too",
                );
            }
        }
        if spec.script.len() > MAX_SCRIPT_ARGS {
            errors.push(
                "script",
                format!(
                    "has {} arguments; at most {MAX_SCRIPT_ARGS}",
                    spec.script.len()
                ),
            );
        }
        if spec.script.iter().map(String::len).sum::<usize>() > MAX_SCRIPT_BYTES {
            errors.push("script", format!("is longer than {MAX_SCRIPT_BYTES} bytes"));
        }
        if spec.script.first().is_some_and(|p| p.trim().is_empty()) {
            errors.push("script", "the program (first argument) is empty");
        }
        errors.into_result()?;
        Ok(Self {
            id,
            name: spec.name.clone(),
            transition,
            heartbeat_timeout_secs,
            default_result,
            webhook,
            secret,
            script: spec.script.clone(),
            created_at_ms: now_ms,
        })
    }

    /// A new wait of an instance on this hook, starting now; `token` names
    /// it in `CompleteLifecycleAction`.
    pub fn wait(&self, token: String, now_ms: i64) -> HookWait {
        HookWait {
            token,
            hook_id: self.id.clone(),
            hook_name: self.name.clone(),
            transition: self.transition,
            heartbeat_timeout_secs: self.heartbeat_timeout_secs,
            default_result: self.default_result,
            started_at_ms: now_ms,
            deadline_ms: now_ms + i64::from(self.heartbeat_timeout_secs) * 1000,
            result: None,
            outcome: None,
            script_sent: self.script.is_empty(),
            webhook_sent: self.webhook.is_none(),
        }
    }
}

/// An instance waiting on one hook (a "lifecycle action"), stored with the
/// instance so a restarted controller goes on waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookWait {
    /// The lifecycle action token: names this wait in the API.
    pub token: String,
    pub hook_id: String,
    pub hook_name: String,
    pub transition: Transition,
    pub heartbeat_timeout_secs: u32,
    pub default_result: LifecycleResult,
    pub started_at_ms: i64,
    /// The default result applies at this time unless completed or extended.
    pub deadline_ms: i64,
    pub result: Option<LifecycleResult>,
    /// How the result came about, one sentence.
    pub outcome: Option<String>,
    /// Whether the hook's script has been handed to the agent (true when
    /// the hook has none).
    pub script_sent: bool,
    /// Whether the webhook has been handed to the sender (true when none).
    #[serde(default)]
    pub webhook_sent: bool,
}

impl HookWait {
    pub fn is_open(&self) -> bool {
        self.result.is_none()
    }

    /// Decides the wait, unless it already is.
    pub fn decide(&mut self, result: LifecycleResult, outcome: String) -> bool {
        if !self.is_open() {
            return false;
        }
        self.result = Some(result);
        self.outcome = Some(outcome);
        true
    }

    /// Restarts the heartbeat timeout from now.
    pub fn heartbeat(&mut self, now_ms: i64) {
        self.deadline_ms = now_ms + i64::from(self.heartbeat_timeout_secs) * 1000;
    }
}

/// Waits on every hook of `transition`, starting now, each with a token
/// from `token`; empty when the group has none.
pub fn begin(
    hooks: &[LifecycleHook],
    transition: Transition,
    now_ms: i64,
    mut token: impl FnMut() -> String,
) -> Vec<HookWait> {
    hooks
        .iter()
        .filter(|h| h.transition == transition)
        .map(|h| h.wait(token(), now_ms))
        .collect()
}

/// Where an instance's waits stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Waiting,
    Continue,
    Abandon,
}

/// Applies default results to waits past their deadline, then judges them
/// together: any ABANDON abandons (the other hooks no longer matter), all
/// CONTINUE continues, otherwise the instance goes on waiting. Returns the
/// verdict and the outcomes decided by this call.
pub fn judge(waits: &mut [HookWait], now_ms: i64) -> (Verdict, Vec<String>) {
    let mut decided = Vec::new();
    for w in waits
        .iter_mut()
        .filter(|w| w.is_open() && now_ms >= w.deadline_ms)
    {
        let outcome = format!(
            "no completion within the heartbeat timeout of {} s; default result {}",
            w.heartbeat_timeout_secs, w.default_result
        );
        w.decide(w.default_result, outcome.clone());
        decided.push(format!("lifecycle hook {}: {outcome}", w.hook_name));
    }
    let verdict = if waits
        .iter()
        .any(|w| w.result == Some(LifecycleResult::Abandon))
    {
        Verdict::Abandon
    } else if waits.iter().all(|w| !w.is_open()) {
        Verdict::Continue
    } else {
        Verdict::Waiting
    };
    (verdict, decided)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, transition: &str) -> HookSpec {
        HookSpec {
            name: name.into(),
            transition: transition.into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_ess() {
        let h = LifecycleHook::create("ash-1".into(), &spec("drain", "SCALE_IN"), &[], 7).unwrap();
        assert_eq!(h.transition, Transition::ScaleIn);
        assert_eq!(h.heartbeat_timeout_secs, 600);
        assert_eq!(h.default_result, LifecycleResult::Continue);
        assert_eq!((h.webhook, h.script.len()), (None, 0));
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = HookSpec {
            name: "x".into(),
            transition: "SCALE_SIDEWAYS".into(),
            heartbeat_timeout_secs: Some(29),
            default_result: "MAYBE".into(),
            webhook: "ftp://example.com/".into(),
            secret: "short".into(),
            script: vec![" ".into()],
        };
        let err = LifecycleHook::create("ash-1".into(), &bad, &[], 0).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "transition",
                "heartbeat_timeout_secs",
                "default_result",
                "notification_url",
                "secret",
                "script"
            ]
        );
        assert!(
            err.to_string()
                .contains("secret: is 5 bytes; give 16 to 256")
        );
        let long = HookSpec {
            heartbeat_timeout_secs: Some(21_601),
            ..spec("drain", "SCALE_OUT")
        };
        let err = LifecycleHook::create("ash-1".into(), &long, &[], 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("must be 30 to 21600 seconds, got 21601"),
            "{err}"
        );
    }

    #[test]
    fn a_secret_signs_the_webhook_and_needs_one() {
        let secret = "a-hook-secret-of-32-bytes-length";
        let alone = HookSpec {
            secret: secret.into(),
            ..spec("drain", "SCALE_IN")
        };
        let err = LifecycleHook::create("ash-1".into(), &alone, &[], 0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "secret: signs the webhook's POSTs; give notification_url too"
        );
        let signed = HookSpec {
            webhook: "https://hooks.example.com/drain".into(),
            ..alone
        };
        let h = LifecycleHook::create("ash-1".into(), &signed, &[], 0).unwrap();
        assert_eq!(h.secret.as_deref(), Some(secret));
        let unsigned = LifecycleHook::create("ash-1".into(), &spec("drain", "SCALE_IN"), &[], 0);
        assert_eq!(unsigned.unwrap().secret, None);
    }

    #[test]
    fn names_are_unique_and_hooks_are_bounded() {
        let first =
            LifecycleHook::create("ash-1".into(), &spec("drain", "SCALE_IN"), &[], 0).unwrap();
        let err = LifecycleHook::create(
            "ash-1".into(),
            &spec("drain", "SCALE_OUT"),
            std::slice::from_ref(&first),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("already has a hook named `drain`"), "{err}");
        let six = vec![first; MAX_HOOKS_PER_GROUP];
        let err = LifecycleHook::create("ash-1".into(), &spec("other", "SCALE_IN"), &six, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 6 lifecycle hooks"), "{err}");
    }

    fn hook(timeout: u32, default: &str) -> LifecycleHook {
        let s = HookSpec {
            heartbeat_timeout_secs: Some(timeout),
            default_result: default.into(),
            script: vec!["true".into()],
            ..spec("drain", "SCALE_IN")
        };
        LifecycleHook::create("ash-1".into(), &s, &[], 0).unwrap()
    }

    #[test]
    fn a_wait_times_out_to_its_default_result() {
        let mut waits = vec![hook(30, "ABANDON").wait("lat-1".into(), 1_000)];
        assert!(!waits[0].script_sent, "a hook with a script has it to send");
        assert_eq!(judge(&mut waits, 30_999).0, Verdict::Waiting);
        let (verdict, decided) = judge(&mut waits, 31_000);
        assert_eq!(verdict, Verdict::Abandon);
        assert_eq!(
            decided,
            [
                "lifecycle hook drain: no completion within the heartbeat timeout of 30 s; default result ABANDON"
            ]
        );
        // Decided once: judging again changes nothing and reports nothing.
        assert_eq!(judge(&mut waits, 90_000), (Verdict::Abandon, vec![]));
    }

    #[test]
    fn a_heartbeat_restarts_the_timeout() {
        let mut waits = vec![hook(30, "CONTINUE").wait("lat-1".into(), 0)];
        waits[0].heartbeat(20_000);
        assert_eq!(waits[0].deadline_ms, 50_000);
        assert_eq!(judge(&mut waits, 45_000).0, Verdict::Waiting);
        assert_eq!(judge(&mut waits, 50_000).0, Verdict::Continue);
    }

    #[test]
    fn all_must_continue_and_one_abandon_decides() {
        let mut waits = vec![
            hook(30, "CONTINUE").wait("lat-1".into(), 0),
            hook(60, "CONTINUE").wait("lat-2".into(), 0),
        ];
        assert!(waits[0].decide(LifecycleResult::Continue, "by the API".into()));
        assert!(!waits[0].decide(LifecycleResult::Abandon, "too late".into()));
        assert_eq!(judge(&mut waits, 1_000).0, Verdict::Waiting);
        waits[1].decide(LifecycleResult::Continue, "script exited 0".into());
        assert_eq!(judge(&mut waits, 1_000).0, Verdict::Continue);

        let mut waits = vec![
            hook(30, "CONTINUE").wait("lat-1".into(), 0),
            hook(60, "CONTINUE").wait("lat-2".into(), 0),
        ];
        waits[1].decide(LifecycleResult::Abandon, "script exited 1".into());
        assert_eq!(judge(&mut waits, 1_000).0, Verdict::Abandon);
    }

    #[test]
    fn waits_begin_for_the_transition_only() {
        let out =
            LifecycleHook::create("ash-1".into(), &spec("warm", "SCALE_OUT"), &[], 0).unwrap();
        let hooks = [out, hook(30, "CONTINUE")];
        let waits = begin(&hooks, Transition::ScaleIn, 5, || "lat-1".into());
        assert_eq!(waits.len(), 1);
        assert_eq!(
            (waits[0].hook_name.as_str(), waits[0].deadline_ms),
            ("drain", 30_005)
        );
        assert!(waits[0].webhook_sent, "no webhook: nothing to send");
        assert!(begin(&[], Transition::ScaleOut, 5, || unreachable!()).is_empty());
    }

    #[test]
    fn no_waits_means_continue() {
        assert_eq!(judge(&mut [], 0), (Verdict::Continue, vec![]));
    }
}
