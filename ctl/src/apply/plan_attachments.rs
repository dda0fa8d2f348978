//! The plan for the file's `[[load_balancer]]` and `[[db_instance]]`
//! sections: each is attached when the group lacks it (or it is
//! detaching), or attached again with its new settings when one differs.
//! Conflicts with what the group already has are found here, before any
//! call is made.

use ebb_core::model::attachments::{
    DEFAULT_AUTH_METHOD, DEFAULT_DRAIN_TIMEOUT_SECS, DEFAULT_WEIGHT, MAX_DB_INSTANCES,
    MAX_LOAD_BALANCERS,
};
use ebb_proto::v1 as pb;

use super::diff::differs;
use super::file::ApplyFile;
use super::step::{State, Step};

pub(super) fn plan_attachments(
    file: &ApplyFile,
    state: &State,
    steps: &mut Vec<Step>,
) -> Result<(), String> {
    let group = &file.group.name;
    let num = |v: &u32| v.to_string();
    let mut added = 0;
    for (i, l) in file.load_balancers.iter().enumerate() {
        let current = state.load_balancers.iter().find(|c| c.backend == l.backend);
        if let Some(c) = current.filter(|c| c.target != l.target) {
            return Err(format!(
                "load_balancer[{i}].backend: backend `{}` is attached to group {group} on target `{}`; \
                 a group names each backend once (ebbctl lb detach it first)",
                l.backend, c.target
            ));
        }
        let weight = l.weight.unwrap_or(DEFAULT_WEIGHT);
        let drain = l.drain_timeout_secs.unwrap_or(DEFAULT_DRAIN_TIMEOUT_SECS);
        let request = pb::AttachLoadBalancersRequest {
            scaling_group: group.clone(),
            load_balancers: vec![pb::LoadBalancerAttachment {
                target: l.target.clone(),
                backend: l.backend.clone(),
                port: l.port,
                weight,
                drain_timeout_secs: Some(drain),
                ..Default::default()
            }],
        };
        let Some(c) = current else {
            added += 1;
            steps.push(Step::AttachLoadBalancer {
                again: false,
                changes: Vec::new(),
                request,
            });
            continue;
        };
        let mut changes = Vec::new();
        differs(&mut changes, "port", Some(&l.port), &c.port, num);
        differs(&mut changes, "weight", Some(&weight), &c.weight, num);
        let current_drain = c.drain_timeout_secs.unwrap_or(DEFAULT_DRAIN_TIMEOUT_SECS);
        differs(
            &mut changes,
            "drain_timeout_secs",
            Some(&drain),
            &current_drain,
            num,
        );
        let again = c.state == "Detaching";
        if again || !changes.is_empty() {
            steps.push(Step::AttachLoadBalancer {
                again,
                changes,
                request,
            });
        }
    }
    let total = state.load_balancers.len() + added;
    if total > MAX_LOAD_BALANCERS {
        return Err(format!(
            "load_balancer: group {group} would have {total} load balancers; it takes at most {MAX_LOAD_BALANCERS}"
        ));
    }
    let mut added = 0;
    for d in &file.db_instances {
        let method = d
            .auth_method
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| DEFAULT_AUTH_METHOD.to_owned());
        let request = pb::AttachDbInstancesRequest {
            scaling_group: group.clone(),
            db_instances: vec![pb::DbInstanceAttachment {
                target: d.target.clone(),
                database: d.database.clone(),
                user: d.user.clone(),
                auth_method: method.clone(),
                ..Default::default()
            }],
        };
        let current = state
            .db_instances
            .iter()
            .find(|c| c.target == d.target && c.database == d.database && c.user == d.user);
        let Some(c) = current else {
            added += 1;
            steps.push(Step::AttachDbInstance {
                changes: Vec::new(),
                request,
            });
            continue;
        };
        let mut changes = Vec::new();
        differs(
            &mut changes,
            "auth_method",
            Some(&method),
            &c.auth_method,
            |s| s.clone(),
        );
        if !changes.is_empty() {
            steps.push(Step::AttachDbInstance { changes, request });
        }
    }
    let total = state.db_instances.len() + added;
    if total > MAX_DB_INSTANCES {
        return Err(format!(
            "db_instance: group {group} would have {total} database instances; it takes at most {MAX_DB_INSTANCES}"
        ));
    }
    Ok(())
}
