//! A scaling configuration's custom metric sources as the admin API
//! carries them, to and from the model's: empty and 0 mean "not set".

use ebb_core::model::{MetricSource, PrometheusSource};
use ebb_proto::v1 as pb;

/// The API's form of `sources`.
pub fn view(sources: &[MetricSource]) -> Vec<pb::MetricSource> {
    sources
        .iter()
        .map(|m| pb::MetricSource {
            name: m.name.clone(),
            prometheus: m.prometheus.as_ref().map(|p| pb::PrometheusSource {
                url: p.url.clone(),
                metric: p.metric.clone(),
                labels: p.labels.clone().into_iter().collect(),
            }),
            file: m.file.clone().unwrap_or_default(),
            command: m.command.clone().unwrap_or_default(),
            timeout_ms: m
                .timeout_ms
                .map_or(0, |t| u32::try_from(t).unwrap_or(u32::MAX)),
        })
        .collect()
}

/// The model's form of a request's sources; the model validates them.
pub fn of(sources: &[pb::MetricSource]) -> Vec<MetricSource> {
    sources
        .iter()
        .map(|m| MetricSource {
            name: m.name.clone(),
            prometheus: m.prometheus.as_ref().map(|p| PrometheusSource {
                url: p.url.clone(),
                metric: p.metric.clone(),
                labels: p.labels.clone().into_iter().collect(),
            }),
            file: (!m.file.is_empty()).then(|| m.file.clone()),
            command: (!m.command.is_empty()).then(|| m.command.clone()),
            timeout_ms: (m.timeout_ms > 0).then_some(u64::from(m.timeout_ms)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_survive_the_round_trip() {
        let sources = vec![
            MetricSource {
                name: "rps".into(),
                prometheus: Some(PrometheusSource {
                    url: "http://127.0.0.1:9100/metrics".into(),
                    metric: "http_requests_total".into(),
                    labels: [("code".to_owned(), "200".to_owned())].into(),
                }),
                file: None,
                command: None,
                timeout_ms: Some(750),
            },
            MetricSource {
                name: "depth".into(),
                prometheus: None,
                file: Some("depth".into()),
                command: None,
                timeout_ms: None,
            },
            MetricSource {
                name: "sessions".into(),
                prometheus: None,
                file: None,
                command: Some(vec!["/bin/echo".into(), "3".into()]),
                timeout_ms: None,
            },
        ];
        assert_eq!(of(&view(&sources)), sources);
    }
}
