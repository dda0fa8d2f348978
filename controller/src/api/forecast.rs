//! `DescribeForecast`: a predictive rule's history and forecast, bucket by
//! bucket, and the floor it sets now (`engine::predictive`).

use std::collections::BTreeMap;

use crate::api::common::{invalid, now_ms};
use crate::api::rules::find_rule;
use crate::engine::{Engine, predictive};
use ebb_core::model::Invalid;
use ebb_core::rules::RuleKind;
use ebb_core::rules::predict::{self, BUCKET_MS};
use ebb_proto::v1 as pb;
use tonic::Status;

/// Hourly rows unless asked otherwise: 96 rows for the 4 days shown.
const DEFAULT_BUCKET_SECS: u32 = 3_600;
/// Buckets are whole forecast buckets, at most a day.
const MAX_BUCKET_SECS: u32 = 86_400;
/// History shown before now: as far back as the forecast reaches ahead.
const SHOWN_HISTORY_MS: i64 = predict::HORIZON_MS;

#[derive(Default)]
struct Bucket {
    history: Vec<f64>,
    in_service: Option<u32>,
    forecast: Vec<f64>,
}

pub async fn describe_forecast(
    engine: &Engine,
    req: pb::DescribeForecastRequest,
) -> Result<pb::DescribeForecastResponse, Status> {
    let bucket_secs = match req.bucket_secs {
        0 => DEFAULT_BUCKET_SECS,
        s if s % 300 == 0 && s <= MAX_BUCKET_SECS => s,
        s => {
            return Err(invalid(Invalid::one(
                "bucket_secs",
                format!("{s} is not a multiple of 300 up to {MAX_BUCKET_SECS} (or 0 for 3600)"),
            )));
        }
    };
    let _ops = engine.ops.lock().await;
    let (group, rule) = find_rule(engine, &req.scaling_group, &req.scaling_rule)?;
    let RuleKind::Predictive {
        metric,
        target_value,
        predictive_scaling_mode,
        ..
    } = &rule.kind
    else {
        return Err(Status::failed_precondition(format!(
            "scaling rule `{}` is a {}; only a PredictiveScalingRule has a forecast",
            rule.name,
            crate::api::rules::rule_type(&rule.kind)
        )));
    };
    let now = now_ms(engine);
    let (forecast, ask) = predictive::describe(engine, &group, &rule, now)?;
    let width = i64::from(bucket_secs) * 1000;
    let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
    for (p, in_service) in predictive::load_history(engine, &group.id, metric, now)? {
        if p.minute_ms < now - SHOWN_HISTORY_MS {
            continue;
        }
        let b = buckets.entry(p.minute_ms.div_euclid(width)).or_default();
        b.history.push(p.load);
        b.in_service = Some(b.in_service.unwrap_or(0).max(in_service));
    }
    let mut resp = pb::DescribeForecastResponse {
        scaling_rule_id: rule.id.clone(),
        scaling_group_id: group.id.clone(),
        metric: metric.to_string(),
        target_value: *target_value,
        mode: predictive_scaling_mode.to_string(),
        lead_secs: rule.kind.predictive_lead_secs().unwrap_or_default(),
        now_ms: now,
        max_size: group.max_size,
        ..Default::default()
    };
    match &forecast {
        Ok(f) => {
            for (i, load) in f.load.iter().enumerate() {
                let at = f.start_ms + i as i64 * BUCKET_MS;
                buckets
                    .entry(at.div_euclid(width))
                    .or_default()
                    .forecast
                    .push(*load);
            }
            resp.method = f.method.to_string();
            resp.history_minutes = f.history_minutes as u32;
        }
        Err(no) => resp.refusal = no.to_string(),
    }
    if let Some(a) = ask {
        resp.floor = Some(a.floor.floor);
        resp.max_size = a.floor.max_size;
        resp.peak_load = a.peak_load;
        resp.forecast_capacity = a.floor.forecast_capacity;
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    resp.buckets = buckets
        .into_iter()
        .map(|(b, v)| pb::ForecastBucket {
            start_ms: b * width,
            history_load: mean(&v.history),
            history_in_service: v.in_service,
            forecast_load: mean(&v.forecast),
            forecast_capacity: (!v.forecast.is_empty()).then(|| {
                let peak = v.forecast.iter().copied().fold(0.0, f64::max);
                predict::capacity_for_load(peak, *target_value)
            }),
        })
        .collect();
    Ok(resp)
}
