//! Attachments: a group's load balancers and database allow-lists, and
//! where one instance stands on each.

use ebb_core::model::attachments::DEFAULT_DRAIN_TIMEOUT_SECS;
use ebb_proto::v1 as pb;
use serde::Serialize;

use super::text::{Table, age, non_empty, non_zero, one_line, or_dash, yes_no};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadBalancerView {
    pub target: String,
    pub backend: String,
    pub port: u32,
    pub weight: u32,
    pub drain_timeout_secs: u32,
    /// Whether the target agent's stream is open now.
    pub target_connected: bool,
    /// Attached, or Detaching while the target removes its servers.
    pub state: String,
    pub error: Option<String>,
}

impl From<&pb::LoadBalancerAttachment> for LoadBalancerView {
    fn from(l: &pb::LoadBalancerAttachment) -> Self {
        Self {
            target: l.target.clone(),
            backend: l.backend.clone(),
            port: l.port,
            weight: l.weight,
            drain_timeout_secs: l.drain_timeout_secs.unwrap_or(DEFAULT_DRAIN_TIMEOUT_SECS),
            target_connected: l.target_connected,
            state: l.state.clone(),
            error: non_empty(&l.error),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DbInstanceView {
    pub target: String,
    pub database: String,
    pub user: String,
    pub auth_method: String,
    pub target_connected: bool,
    pub error: Option<String>,
}

impl From<&pb::DbInstanceAttachment> for DbInstanceView {
    fn from(d: &pb::DbInstanceAttachment) -> Self {
        Self {
            target: d.target.clone(),
            database: d.database.clone(),
            user: d.user.clone(),
            auth_method: d.auth_method.clone(),
            target_connected: d.target_connected,
            error: non_empty(&d.error),
        }
    }
}

/// One attachment as an instance sees it (`instance describe`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceAttachmentView {
    /// load_balancer or db_instance.
    pub kind: String,
    pub target: String,
    /// The backend, or `<database>/<user>`.
    pub name: String,
    pub state: String,
    /// When the instance entered its current phase (registering, draining,
    /// deregistering).
    pub since_ms: Option<i64>,
    pub error: Option<String>,
}

impl From<&pb::InstanceAttachment> for InstanceAttachmentView {
    fn from(a: &pb::InstanceAttachment) -> Self {
        Self {
            kind: a.kind.clone(),
            target: a.target.clone(),
            name: a.name.clone(),
            state: a.state.clone(),
            since_ms: non_zero(a.since_ms),
            error: non_empty(&a.error),
        }
    }
}

pub fn load_balancers_table(list: &[LoadBalancerView]) -> String {
    let mut t = Table::new(&[
        "TARGET",
        "BACKEND",
        "PORT",
        "WEIGHT",
        "DRAIN",
        "STATE",
        "CONNECTED",
        "ERROR",
    ]);
    for l in list {
        t.row(vec![
            l.target.clone(),
            l.backend.clone(),
            l.port.to_string(),
            l.weight.to_string(),
            format!("{}s", l.drain_timeout_secs),
            l.state.clone(),
            yes_no(l.target_connected),
            one_line(&or_dash(l.error.as_deref())),
        ]);
    }
    t.render()
}

pub fn db_instances_table(list: &[DbInstanceView]) -> String {
    let mut t = Table::new(&["TARGET", "DATABASE", "USER", "AUTH", "CONNECTED", "ERROR"]);
    for d in list {
        t.row(vec![
            d.target.clone(),
            d.database.clone(),
            d.user.clone(),
            d.auth_method.clone(),
            yes_no(d.target_connected),
            one_line(&or_dash(d.error.as_deref())),
        ]);
    }
    t.render()
}

/// An instance's attachments under an `attachments:` heading, as a table
/// indented under it; SINCE is how long it has been in its phase.
pub fn instance_attachments(list: &[InstanceAttachmentView], now: i64) -> String {
    if list.is_empty() {
        return "attachments: none\n".to_owned();
    }
    let mut t = Table::new(&["KIND", "TARGET", "NAME", "STATE", "SINCE", "ERROR"]);
    for a in list {
        t.row(vec![
            a.kind.clone(),
            a.target.clone(),
            a.name.clone(),
            a.state.clone(),
            a.since_ms.map_or_else(|| "-".to_owned(), |s| age(now, s)),
            one_line(&or_dash(a.error.as_deref())),
        ]);
    }
    let mut out = "attachments:\n".to_owned();
    for line in t.render().lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::T0;

    #[test]
    fn load_balancer_list_shows_drain_state_and_the_targets_error() {
        let l = pb::LoadBalancerAttachment {
            target: "lb1".into(),
            backend: "web".into(),
            port: 8080,
            weight: 1,
            drain_timeout_secs: Some(30),
            target_connected: false,
            state: "Attached".into(),
            error: "target agent `lb1` is not connected".into(),
        };
        let v = LoadBalancerView::from(&l);
        assert_eq!(
            load_balancers_table(std::slice::from_ref(&v)),
            "TARGET  BACKEND  PORT  WEIGHT  DRAIN  STATE     CONNECTED  ERROR\n\
             lb1     web      8080  1       30s    Attached  no         target agent `lb1` is not connected\n"
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["drain_timeout_secs"], 30);
        assert_eq!(json["target_connected"], false);
        let ok = LoadBalancerView::from(&pb::LoadBalancerAttachment {
            error: String::new(),
            ..l
        });
        assert_eq!(
            serde_json::to_value(&ok).unwrap()["error"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn an_error_with_a_newline_stays_on_its_row() {
        let d = DbInstanceView {
            target: "db1".into(),
            database: "app".into(),
            user: "app".into(),
            auth_method: "scram-sha-256".into(),
            target_connected: true,
            error: Some("reload failed:\nFATAL".into()),
        };
        assert_eq!(
            db_instances_table(&[d]),
            "TARGET  DATABASE  USER  AUTH           CONNECTED  ERROR\n\
             db1     app       app   scram-sha-256  yes        reload failed:\\nFATAL\n"
        );
    }

    #[test]
    fn an_instances_attachments_show_their_phase_and_age() {
        let list: Vec<InstanceAttachmentView> = [
            pb::InstanceAttachment {
                kind: "load_balancer".into(),
                target: "lb1".into(),
                name: "web".into(),
                state: "draining".into(),
                since_ms: T0,
                error: String::new(),
            },
            pb::InstanceAttachment {
                kind: "db_instance".into(),
                target: "db1".into(),
                name: "app/app".into(),
                state: "allowed".into(),
                since_ms: 0,
                error: String::new(),
            },
        ]
        .iter()
        .map(InstanceAttachmentView::from)
        .collect();
        assert_eq!(
            instance_attachments(&list, T0 + 12_000),
            "attachments:\n  \
             KIND           TARGET  NAME     STATE     SINCE  ERROR\n  \
             load_balancer  lb1     web      draining  12s    -\n  \
             db_instance    db1     app/app  allowed   -      -\n"
        );
        assert_eq!(instance_attachments(&[], T0), "attachments: none\n");
    }
}
