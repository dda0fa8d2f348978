//! Health: when an InService instance is unhealthy, and the guard that
//! stops a controller cut off from its hosts from replacing a healthy fleet.

use super::{Engine, EngineError, activity};
use crate::store::Write;
use ebb_core::guard::GuardSettings;
use ebb_core::model::{Activity, HealthStatus, Instance, LifecycleState, ScalingGroup};
use std::collections::HashMap;
use tracing::warn;

/// Pulls unanswered in a row, or local check failures in a row, that make an
/// instance unhealthy (design §8).
pub const UNHEALTHY_AFTER: u32 = 3;

impl Engine {
    /// Why an InService instance is unhealthy, if it is.
    fn health_problem(&self, inst: &Instance, interval_ms: i64, now: i64) -> Option<String> {
        let seen = self.fleet.with_agent(&inst.id, |a| {
            let failing = a.latest.as_ref().and_then(|s| {
                s.health
                    .iter()
                    .find(|c| !c.healthy && c.consecutive_failures >= UNHEALTHY_AFTER)
                    .map(|c| {
                        format!(
                            "local check `{}` failed {} times in a row: {}",
                            c.name, c.consecutive_failures, c.message
                        )
                    })
            });
            let gone_for = a.disconnected_at_ms.map(|at| now - at);
            (
                a.connected,
                gone_for,
                a.disconnect_reason.clone(),
                a.consecutive_missed,
                failing,
            )
        });
        match seen {
            None => (now - self.started_at_ms() > self.health.reconnect_grace.as_millis() as i64)
                .then(|| "its agent has not connected since the controller started".to_owned()),
            Some((false, gone_for, reason, _, _))
                if gone_for.unwrap_or(i64::MAX) >= interval_ms =>
            {
                Some(format!(
                    "its agent's stream is gone ({})",
                    reason.unwrap_or_else(|| "closed".into())
                ))
            }
            Some((true, _, _, missed, _)) if missed >= UNHEALTHY_AFTER => {
                Some(format!("{missed} pulls in a row went unanswered"))
            }
            Some((_, _, _, _, Some(failing))) => Some(failing),
            _ => None,
        }
    }

    /// Marks InService instances past their grace period unhealthy when
    /// they are, and takes unhealthy ones out for replacement — all of them,
    /// unless more than half the group failed at once: then at most the
    /// guard's share per interval, since the likelier cause is the
    /// controller's own network.
    pub(super) fn check_health(
        &self,
        group: &ScalingGroup,
        now: i64,
        notes: &mut Vec<String>,
        running: Option<&mut Activity>,
    ) -> Result<(), EngineError> {
        let grace_ms = i64::from(group.health_check_grace_period_secs) * 1000;
        let interval_ms = i64::from(group.sampling_interval_secs) * 1000;
        let mut reasons = HashMap::new();
        for mut inst in self.store.list_instances(Some(&group.id))? {
            if inst.lifecycle_state != LifecycleState::InService
                || inst.in_service_at_ms.is_none_or(|at| now - at < grace_ms)
            {
                continue;
            }
            if let Some(reason) = self.health_problem(&inst, interval_ms, now) {
                if inst.health_status == HealthStatus::Healthy {
                    warn!(group = %group.name, instance = %inst.id, "instance unhealthy: {reason}");
                    inst.health_status = HealthStatus::Unhealthy;
                    self.store.commit(vec![Write::PutInstance(inst.clone())])?;
                }
                reasons.insert(inst.id.clone(), reason);
            }
        }
        let instances = self.store.list_instances(Some(&group.id))?;
        // Protected and Standby instances are never replaced.
        let unhealthy: Vec<&Instance> = instances
            .iter()
            .filter(|i| {
                i.lifecycle_state == LifecycleState::InService
                    && i.health_status == HealthStatus::Unhealthy
            })
            .collect();
        let victims = self.guarded_victims(group, unhealthy, interval_ms, now, notes, running)?;
        for inst in victims {
            let reason = reasons
                .get(&inst.id)
                .cloned()
                .unwrap_or_else(|| "marked unhealthy".into());
            notes.push(format!("instance {} is unhealthy: {reason}", inst.id));
            let mut gone = inst;
            gone.lifecycle_state = LifecycleState::Removing;
            self.store.commit(vec![Write::PutInstance(gone.clone())])?;
            self.finish_removal(&gone)?;
        }
        Ok(())
    }

    /// The unhealthy instances to replace now: each one sampling interval
    /// after it was found unhealthy (so failures that come together are seen
    /// together), and, when more than half the group failed within the
    /// guard's interval, no more than the guard's share per interval.
    fn guarded_victims(
        &self,
        group: &ScalingGroup,
        unhealthy: Vec<&Instance>,
        interval_ms: i64,
        now: i64,
        notes: &mut Vec<String>,
        running: Option<&mut Activity>,
    ) -> Result<Vec<Instance>, EngineError> {
        let settings = GuardSettings {
            share: self.health.guard_share,
            window_ms: self.health.guard_interval.as_millis() as i64,
        };
        let ids: Vec<&str> = unhealthy.iter().map(|i| i.id.as_str()).collect();
        let verdict = self
            .health_memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(group.id.clone())
            .or_default()
            .judge(&ids, group.desired_capacity, interval_ms, settings, now);
        if let Some(why) = verdict.mass_failure {
            warn!(group = %group.name, "{why}");
            notes.push(why.clone());
            if let Some(act) = running {
                activity::note_error(act, &why);
                self.store.commit(vec![Write::PutActivity(act.clone())])?;
            }
        }
        let victims = unhealthy
            .into_iter()
            .filter(|i| verdict.replace.contains(&i.id))
            .cloned()
            .collect();
        Ok(victims)
    }
}
