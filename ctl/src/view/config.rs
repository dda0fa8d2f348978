//! Scaling configurations, their metric sources included.

use std::collections::BTreeMap;

use ebb_proto::v1 as pb;
use serde::Serialize;

use super::text::{
    GroupNames, Table, age, command_line, fields, group_name, map_line, or_dash, rfc3339,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigView {
    pub id: String,
    pub scaling_group_id: String,
    pub name: String,
    pub active: bool,
    pub instance_type: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub user_data: String,
    pub created_at_ms: i64,
    /// Custom metric sources, with agent.toml's `[[metric]]` keys.
    pub metrics: Vec<ebb_core::model::MetricSource>,
    /// instance_type exec / microvm: the provider's settings, with the
    /// apply file's keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<ebb_core::model::ExecSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub microvm: Option<ebb_core::model::MicrovmSettings>,
}

impl From<&pb::ScalingConfiguration> for ConfigView {
    fn from(c: &pb::ScalingConfiguration) -> Self {
        Self {
            id: c.id.clone(),
            scaling_group_id: c.scaling_group_id.clone(),
            name: c.name.clone(),
            active: c.active,
            instance_type: c.instance_type.clone(),
            command: c.command.clone(),
            env: c.env.clone().into_iter().collect(),
            tags: c.tags.clone().into_iter().collect(),
            user_data: c.user_data.clone(),
            created_at_ms: c.created_at_ms,
            metrics: c.metrics.iter().map(crate::convert::metric_of).collect(),
            exec: c.exec.as_ref().map(Into::into),
            microvm: c.microvm.as_ref().map(Into::into),
        }
    }
}

pub fn configs_table(configs: &[ConfigView], names: &GroupNames, now: i64) -> String {
    let mut t = Table::new(&["ID", "GROUP", "NAME", "ACTIVE", "TYPE", "COMMAND", "AGE"]);
    for c in configs {
        t.row(vec![
            c.id.clone(),
            group_name(names, &c.scaling_group_id),
            c.name.clone(),
            if c.active { "yes" } else { "no" }.to_owned(),
            or_dash(Some(&c.instance_type)),
            or_dash(Some(&command_line(&c.command))),
            age(now, c.created_at_ms),
        ]);
    }
    t.render()
}

pub fn config_fields(c: &ConfigView) -> String {
    let mut pairs = vec![
        ("id", c.id.clone()),
        ("scaling_group_id", c.scaling_group_id.clone()),
        ("name", c.name.clone()),
        ("active", c.active.to_string()),
        ("instance_type", or_dash(Some(&c.instance_type))),
        ("command", or_dash(Some(&command_line(&c.command)))),
        ("env", map_line(&c.env)),
        ("tags", map_line(&c.tags)),
        ("user_data", or_dash(Some(&c.user_data))),
        (
            "metrics",
            metric_lines(&c.metrics, "scaling_group_id: ".len()),
        ),
        ("created_at", rfc3339(c.created_at_ms)),
    ];
    if let Some(e) = &c.exec {
        pairs.push(("exec.program", e.program.clone()));
        pairs.push(("exec.params", map_line(&e.params)));
        pairs.push(("exec.env", map_line(&e.env)));
        pairs.push((
            "exec.timeouts",
            format!(
                "launch {} ms, release {} ms, list {} ms",
                e.launch_timeout().as_millis(),
                e.release_timeout().as_millis(),
                e.list_timeout().as_millis()
            ),
        ));
        pairs.push(("exec.attempts", e.attempts().to_string()));
    }
    if let Some(m) = &c.microvm {
        pairs.push((
            "microvm",
            format!("{} vCPU, {} MiB", m.vcpus(), m.memory_mib()),
        ));
    }
    fields(&pairs)
}

/// One line per source, the lines after the first indented by `indent` to
/// line up in a `key: value` block.
fn metric_lines(metrics: &[ebb_core::model::MetricSource], indent: usize) -> String {
    if metrics.is_empty() {
        return "-".to_owned();
    }
    metrics
        .iter()
        .map(metric_line)
        .collect::<Vec<_>>()
        .join(&format!("\n{:indent$}", ""))
}

/// `queue_depth: file /run/app/depth (timeout 500 ms)`.
pub fn metric_line(m: &ebb_core::model::MetricSource) -> String {
    let source = match (&m.prometheus, &m.file, &m.command) {
        (Some(p), _, _) => {
            let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            if labels.is_empty() {
                format!("prometheus {} {}", p.url, p.metric)
            } else {
                format!("prometheus {} {}{{{}}}", p.url, p.metric, labels.join(","))
            }
        }
        (None, Some(f), _) => format!("file {}", command_line(std::slice::from_ref(f))),
        (None, None, Some(argv)) => format!("command {}", command_line(argv)),
        (None, None, None) => "no source".to_owned(),
    };
    match m.timeout_ms {
        Some(t) => format!("{}: {source} (timeout {t} ms)", m.name),
        None => format!("{}: {source}", m.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fields_show_each_metric_source_on_its_own_line() {
        let c = pb::ScalingConfiguration {
            id: "asc-1".into(),
            scaling_group_id: "asg-1".into(),
            name: "web-v1".into(),
            metrics: vec![
                pb::MetricSource {
                    name: "queue_depth".into(),
                    file: "/run/app/queue depth".into(),
                    timeout_ms: 500,
                    ..Default::default()
                },
                pb::MetricSource {
                    name: "rps".into(),
                    prometheus: Some(pb::PrometheusSource {
                        url: "http://127.0.0.1:9100/metrics".into(),
                        metric: "http_requests_total".into(),
                        labels: [("code".to_owned(), "200".to_owned())].into(),
                    }),
                    ..Default::default()
                },
                pb::MetricSource {
                    name: "sessions".into(),
                    command: vec!["/usr/local/bin/sessions".into(), "--count".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let v = ConfigView::from(&c);
        let text = config_fields(&v);
        assert!(
            text.contains(concat!(
                "metrics:          queue_depth: file '/run/app/queue depth' (timeout 500 ms)\n",
                "                  rps: prometheus http://127.0.0.1:9100/metrics http_requests_total{code=\"200\"}\n",
                "                  sessions: command /usr/local/bin/sessions --count\n",
            )),
            "{text}"
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["metrics"][0]["file"], "/run/app/queue depth");
        assert_eq!(json["metrics"][0]["timeout_ms"], 500);
        assert_eq!(json["metrics"][1]["prometheus"]["labels"]["code"], "200");
        let none = config_fields(&ConfigView::from(&pb::ScalingConfiguration::default()));
        assert!(none.contains("metrics:          -\n"), "{none}");
    }
}
