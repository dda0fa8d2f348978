//! Instances: the view and the list.

use ebb_proto::v1 as pb;
use serde::Serialize;

use super::attachment::{InstanceAttachmentView, instance_attachments};
use super::text::{
    GroupNames, Table, age, fields, group_name, named, non_empty, non_zero, or_dash, percent,
    rfc3339,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub scaling_group_id: String,
    pub scaling_configuration_id: Option<String>,
    pub lifecycle_state: String,
    pub health_status: String,
    pub creation_type: String,
    pub address: Option<String>,
    pub hostname: Option<String>,
    /// What its provider calls it (a QEMU pid, a cloud instance id) and the
    /// address the provider gave it.
    pub provider_id: Option<String>,
    pub provider_address: Option<String>,
    pub agent_connected: bool,
    pub cpu_utilization: Option<f64>,
    pub memory_utilization: Option<f64>,
    pub created_at_ms: i64,
    pub in_service_at_ms: Option<i64>,
    /// Where it stands on each of its group's load balancers and allow-lists.
    pub attachments: Vec<InstanceAttachmentView>,
}

impl From<&pb::Instance> for InstanceView {
    fn from(i: &pb::Instance) -> Self {
        Self {
            id: i.id.clone(),
            scaling_group_id: i.scaling_group_id.clone(),
            scaling_configuration_id: non_empty(&i.scaling_configuration_id),
            lifecycle_state: i.lifecycle_state.clone(),
            health_status: i.health_status.clone(),
            creation_type: i.creation_type.clone(),
            address: non_empty(&i.address),
            hostname: non_empty(&i.hostname),
            provider_id: non_empty(&i.provider_id),
            provider_address: non_empty(&i.provider_address),
            agent_connected: i.agent_connected,
            cpu_utilization: i.cpu_utilization,
            memory_utilization: i.memory_utilization,
            created_at_ms: i.created_at_ms,
            in_service_at_ms: non_zero(i.in_service_at_ms),
            attachments: i
                .attachments
                .iter()
                .map(InstanceAttachmentView::from)
                .collect(),
        }
    }
}

/// `instance list`; `wide` (`-o wide`) adds where each runs and what it was launched from.
pub fn instances_table(
    instances: &[InstanceView],
    names: &GroupNames,
    now: i64,
    wide: bool,
) -> String {
    let mut headers = vec![
        "ID", "GROUP", "STATE", "HEALTH", "TYPE", "AGENT", "CPU%", "MEM%", "AGE",
    ];
    if wide {
        headers.extend(["ADDRESS", "HOSTNAME", "CONFIG", "PROVIDER-ID"]);
    }
    let mut t = Table::new(&headers);
    for i in instances {
        let mut row = vec![
            i.id.clone(),
            group_name(names, &i.scaling_group_id),
            i.lifecycle_state.clone(),
            i.health_status.clone(),
            i.creation_type.clone(),
            if i.agent_connected { "up" } else { "down" }.to_owned(),
            percent(i.cpu_utilization),
            percent(i.memory_utilization),
            age(now, i.created_at_ms),
        ];
        if wide {
            row.extend([
                or_dash(i.address.as_deref()),
                or_dash(i.hostname.as_deref()),
                or_dash(i.scaling_configuration_id.as_deref()),
                or_dash(i.provider_id.as_deref()),
            ]);
        }
        t.row(row);
    }
    t.render()
}

/// `instance describe`: every field, then its attachments.
pub fn instance_fields(i: &InstanceView, names: &GroupNames, now: i64) -> String {
    let mut out = fields(&[
        ("id", i.id.clone()),
        ("scaling_group", named(names, &i.scaling_group_id)),
        (
            "scaling_configuration_id",
            or_dash(i.scaling_configuration_id.as_deref()),
        ),
        ("lifecycle_state", i.lifecycle_state.clone()),
        ("health_status", i.health_status.clone()),
        ("creation_type", i.creation_type.clone()),
        ("address", or_dash(i.address.as_deref())),
        ("hostname", or_dash(i.hostname.as_deref())),
        ("provider_id", or_dash(i.provider_id.as_deref())),
        ("provider_address", or_dash(i.provider_address.as_deref())),
        (
            "agent",
            if i.agent_connected { "up" } else { "down" }.to_owned(),
        ),
        ("cpu_utilization", percent(i.cpu_utilization)),
        ("memory_utilization", percent(i.memory_utilization)),
        ("created_at", rfc3339(i.created_at_ms)),
        (
            "in_service_at",
            i.in_service_at_ms.map_or_else(|| "-".to_owned(), rfc3339),
        ),
    ]);
    out.push_str(&instance_attachments(&i.attachments, now));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::T0;

    fn instance(id: &str, cpu: Option<f64>, up: bool) -> pb::Instance {
        pb::Instance {
            id: id.into(),
            scaling_group_id: "asg-1".into(),
            lifecycle_state: "InService".into(),
            health_status: "Healthy".into(),
            creation_type: "AutoCreated".into(),
            created_at_ms: T0,
            agent_connected: up,
            cpu_utilization: cpu,
            memory_utilization: cpu.map(|c| c / 2.0),
            ..Default::default()
        }
    }

    #[test]
    fn instance_table_shows_group_names_agent_and_load() {
        let names = GroupNames::from([("asg-1".to_owned(), "web".to_owned())]);
        let views: Vec<InstanceView> = [
            instance("i-1", Some(42.4), true),
            instance("i-22", None, false),
        ]
        .iter()
        .map(InstanceView::from)
        .collect();
        assert_eq!(
            instances_table(&views, &names, T0 + 90_000, false),
            "ID    GROUP  STATE      HEALTH   TYPE         AGENT  CPU%  MEM%  AGE\n\
             i-1   web    InService  Healthy  AutoCreated  up     42    21    90s\n\
             i-22  web    InService  Healthy  AutoCreated  down   -     -     90s\n"
        );
    }

    #[test]
    fn json_views_use_the_proto_field_names() {
        let v = InstanceView::from(&instance("i-1", Some(10.0), true));
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["lifecycle_state"], "InService");
        assert_eq!(json["cpu_utilization"], 10.0);
        assert_eq!(json["scaling_configuration_id"], serde_json::Value::Null);
        assert_eq!(json["in_service_at_ms"], serde_json::Value::Null);
    }
}
