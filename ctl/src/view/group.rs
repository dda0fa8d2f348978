//! Scaling groups: the view, the list and the describe block.

use ebb_proto::v1 as pb;
use serde::Serialize;

use super::text::{Table, age, fields, list, non_empty, or_dash, rfc3339};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    pub state: String,
    pub min_size: u32,
    pub max_size: u32,
    pub desired_capacity: u32,
    pub total_capacity: u32,
    pub in_service: u32,
    pub pending: u32,
    pub default_cooldown_secs: u32,
    pub removal_policies: Vec<String>,
    pub health_check_type: String,
    pub health_check_grace_period_secs: u32,
    pub sampling_interval_secs: u32,
    pub deletion_protection: bool,
    pub active_scaling_configuration_id: Option<String>,
    pub created_at_ms: i64,
    pub suspended_processes: Vec<String>,
}

impl From<&pb::ScalingGroup> for GroupView {
    fn from(g: &pb::ScalingGroup) -> Self {
        Self {
            id: g.id.clone(),
            name: g.name.clone(),
            state: g.state.clone(),
            min_size: g.min_size,
            max_size: g.max_size,
            desired_capacity: g.desired_capacity,
            total_capacity: g.total_capacity,
            in_service: g.in_service,
            pending: g.pending,
            default_cooldown_secs: g.default_cooldown_secs,
            removal_policies: g.removal_policies.clone(),
            health_check_type: g.health_check_type.clone(),
            health_check_grace_period_secs: g.health_check_grace_period_secs,
            sampling_interval_secs: g.sampling_interval_secs,
            deletion_protection: g.deletion_protection,
            active_scaling_configuration_id: non_empty(&g.active_scaling_configuration_id),
            created_at_ms: g.created_at_ms,
            suspended_processes: g.suspended_processes.clone(),
        }
    }
}

pub fn groups_table(groups: &[GroupView], now: i64) -> String {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "STATE",
        "MIN",
        "MAX",
        "DESIRED",
        "TOTAL",
        "IN-SERVICE",
        "PENDING",
        "CONFIG",
        "AGE",
    ]);
    for g in groups {
        t.row(vec![
            g.id.clone(),
            g.name.clone(),
            g.state.clone(),
            g.min_size.to_string(),
            g.max_size.to_string(),
            g.desired_capacity.to_string(),
            g.total_capacity.to_string(),
            g.in_service.to_string(),
            g.pending.to_string(),
            or_dash(g.active_scaling_configuration_id.as_deref()),
            age(now, g.created_at_ms),
        ]);
    }
    t.render()
}

pub fn group_fields(g: &GroupView) -> String {
    fields(&[
        ("id", g.id.clone()),
        ("name", g.name.clone()),
        ("state", g.state.clone()),
        ("min_size", g.min_size.to_string()),
        ("max_size", g.max_size.to_string()),
        ("desired_capacity", g.desired_capacity.to_string()),
        ("total_capacity", g.total_capacity.to_string()),
        ("in_service", g.in_service.to_string()),
        ("pending", g.pending.to_string()),
        ("default_cooldown_secs", g.default_cooldown_secs.to_string()),
        ("removal_policies", list(&g.removal_policies)),
        ("health_check_type", g.health_check_type.clone()),
        (
            "health_check_grace_period_secs",
            g.health_check_grace_period_secs.to_string(),
        ),
        (
            "sampling_interval_secs",
            g.sampling_interval_secs.to_string(),
        ),
        ("deletion_protection", g.deletion_protection.to_string()),
        (
            "active_scaling_configuration_id",
            or_dash(g.active_scaling_configuration_id.as_deref()),
        ),
        ("suspended_processes", list(&g.suspended_processes)),
        ("created_at", rfc3339(g.created_at_ms)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_describe_shows_suspended_processes() {
        let g = pb::ScalingGroup {
            suspended_processes: vec!["ScaleIn".into(), "AlarmNotification".into()],
            ..Default::default()
        };
        assert!(
            group_fields(&GroupView::from(&g))
                .contains("suspended_processes:             ScaleIn, AlarmNotification\n")
        );
    }
}
