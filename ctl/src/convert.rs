//! Health checks and metric sources between the API's messages and the
//! domain's types: the API carries "not set" as empty strings and zeros.

use ebb_core::model;
use ebb_proto::v1 as pb;

/// A local health check as the API carries it: empty and 0 mean "not set".
pub fn check_pb(c: &model::LocalCheck) -> pb::LocalHealthCheck {
    pb::LocalHealthCheck {
        name: c.name.clone(),
        http: c.http.clone().unwrap_or_default(),
        tcp: c.tcp.clone().unwrap_or_default(),
        command: c.command.clone().unwrap_or_default(),
        interval_ms: c.interval_ms.unwrap_or_default() as u32,
        timeout_ms: c.timeout_ms.unwrap_or_default() as u32,
    }
}

/// The domain's local health check from the API's.
pub fn check_of(c: &pb::LocalHealthCheck) -> model::LocalCheck {
    let text = |s: &String| (!s.is_empty()).then(|| s.clone());
    model::LocalCheck {
        name: c.name.clone(),
        http: text(&c.http),
        tcp: text(&c.tcp),
        command: (!c.command.is_empty()).then(|| c.command.clone()),
        interval_ms: (c.interval_ms > 0).then_some(u64::from(c.interval_ms)),
        timeout_ms: (c.timeout_ms > 0).then_some(u64::from(c.timeout_ms)),
    }
}

/// A custom metric source as the API carries it: empty and 0 mean "not set".
pub fn metric_pb(m: &model::MetricSource) -> pb::MetricSource {
    pb::MetricSource {
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
    }
}

/// The domain's custom metric source from the API's.
pub fn metric_of(m: &pb::MetricSource) -> model::MetricSource {
    model::MetricSource {
        name: m.name.clone(),
        prometheus: m.prometheus.as_ref().map(|p| model::PrometheusSource {
            url: p.url.clone(),
            metric: p.metric.clone(),
            labels: p.labels.clone().into_iter().collect(),
        }),
        file: (!m.file.is_empty()).then(|| m.file.clone()),
        command: (!m.command.is_empty()).then(|| m.command.clone()),
        timeout_ms: (m.timeout_ms > 0).then_some(u64::from(m.timeout_ms)),
    }
}
