//! `rule forecast`: a predictive rule's history beside its forecast, one
//! row per bucket (hourly by default), and the floor it sets now.

use ebb_proto::v1 as pb;
use serde::Serialize;

use super::text::{Table, fields, num, rfc3339};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastBucketView {
    pub start_ms: i64,
    pub start: String,
    pub history_load: Option<f64>,
    pub history_in_service: Option<u32>,
    pub forecast_load: Option<f64>,
    pub forecast_capacity: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastView {
    pub scaling_rule_id: String,
    pub scaling_group_id: String,
    pub metric: String,
    pub target_value: f64,
    pub mode: String,
    pub refusal: Option<String>,
    pub method: Option<String>,
    pub history_minutes: u32,
    pub lead_secs: u32,
    pub now_ms: i64,
    pub floor: Option<u32>,
    pub max_size: u32,
    pub peak_load: f64,
    pub forecast_capacity: u32,
    pub buckets: Vec<ForecastBucketView>,
}

impl From<&pb::DescribeForecastResponse> for ForecastView {
    fn from(r: &pb::DescribeForecastResponse) -> Self {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            scaling_rule_id: r.scaling_rule_id.clone(),
            scaling_group_id: r.scaling_group_id.clone(),
            metric: r.metric.clone(),
            target_value: r.target_value,
            mode: r.mode.clone(),
            refusal: some(&r.refusal),
            method: some(&r.method),
            history_minutes: r.history_minutes,
            lead_secs: r.lead_secs,
            now_ms: r.now_ms,
            floor: r.floor,
            max_size: r.max_size,
            peak_load: r.peak_load,
            forecast_capacity: r.forecast_capacity,
            buckets: r
                .buckets
                .iter()
                .map(|b| ForecastBucketView {
                    start_ms: b.start_ms,
                    start: rfc3339(b.start_ms),
                    history_load: b.history_load,
                    history_in_service: b.history_in_service,
                    forecast_load: b.forecast_load,
                    forecast_capacity: b.forecast_capacity,
                })
                .collect(),
        }
    }
}

fn dash<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

/// The summary block, then the buckets side by side.
pub fn forecast_text(v: &ForecastView) -> String {
    let what = if v.mode == "ForecastAndScale" {
        "acted on: desired capacity is raised to it"
    } else {
        "shown only (ForecastOnly)"
    };
    let floor = match (&v.refusal, v.floor) {
        (Some(why), _) => format!("none: {why}"),
        (None, Some(f)) => format!(
            "{f} ({what}): the highest load forecast over the next {}s is {}, ceil({} / {}) = {}, max {}",
            v.lead_secs,
            num(v.peak_load),
            num(v.peak_load),
            num(v.target_value),
            v.forecast_capacity,
            v.max_size
        ),
        (None, None) => "none".to_owned(),
    };
    let method = match &v.method {
        Some(m) => format!("{m}, from {} minutes of history", v.history_minutes),
        None => "-".to_owned(),
    };
    let mut out = fields(&[
        ("rule", v.scaling_rule_id.clone()),
        ("metric", format!("{} at {}", v.metric, num(v.target_value))),
        ("mode", v.mode.clone()),
        ("method", method),
        ("lead time", format!("{}s", v.lead_secs)),
        ("now", rfc3339(v.now_ms)),
        ("floor now", floor),
    ]);
    out.push('\n');
    let mut t = Table::new(&[
        "TIME",
        "LOAD",
        "IN SERVICE",
        "FORECAST LOAD",
        "FORECAST CAPACITY",
    ]);
    for b in &v.buckets {
        t.row(vec![
            b.start.clone(),
            dash(b.history_load, |l| format!("{l:.1}")),
            dash(b.history_in_service, |n| n.to_string()),
            dash(b.forecast_load, |l| format!("{l:.1}")),
            dash(b.forecast_capacity, |n| n.to_string()),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::T0;

    #[test]
    fn history_and_forecast_side_by_side_with_the_floor() {
        let r = pb::DescribeForecastResponse {
            scaling_rule_id: "asr-1".into(),
            scaling_group_id: "asg-1".into(),
            metric: "CpuUtilization".into(),
            target_value: 50.0,
            mode: "ForecastAndScale".into(),
            method: "daily seasonal-naive".into(),
            history_minutes: 2880,
            lead_secs: 600,
            now_ms: T0,
            floor: Some(8),
            max_size: 10,
            peak_load: 400.0,
            forecast_capacity: 8,
            buckets: vec![
                pb::ForecastBucket {
                    start_ms: T0 - 3_600_000,
                    history_load: Some(100.0),
                    history_in_service: Some(2),
                    ..Default::default()
                },
                pb::ForecastBucket {
                    start_ms: T0,
                    forecast_load: Some(400.0),
                    forecast_capacity: Some(8),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = forecast_text(&ForecastView::from(&r));
        assert!(
            text.contains(
                "floor now: 8 (acted on: desired capacity is raised to it): the highest load \
                 forecast over the next 600s is 400, ceil(400 / 50) = 8, max 10"
            ),
            "{text}"
        );
        assert!(
            text.contains("method:    daily seasonal-naive, from 2880 minutes"),
            "{text}"
        );
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("TIME"))
            .collect();
        assert_eq!(
            rows,
            [
                "TIME                  LOAD   IN SERVICE  FORECAST LOAD  FORECAST CAPACITY",
                "2024-05-01T11:00:00Z  100.0  2           -              -",
                "2024-05-01T12:00:00Z  -      -           400.0          8",
            ]
        );
    }
}
