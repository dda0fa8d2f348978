//! Predictive scaling in the engine (leader only, on the alarm loop's tick):
//! each finished minute of every group's samples rolled up into the store,
//! and each predictive rule's forecast (`ebb_core::rules::predict`, made
//! again every hour and at the start of a term) turned into a floor under
//! its group. In `ForecastAndScale` the floor raises desired capacity ahead
//! of a forecast rise, and other rules' scale-ins stop at it
//! (`ebb_core::decide::hold_at_floor`); it never scales in by itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::engine::alarms::{PERIOD_GRACE_MS, metric_of};
use crate::engine::{Engine, EngineError, activity};
use crate::fleet::Point;
use crate::store::Write;
use ebb_core::model::{GroupState, LifecycleState, Process, ScalingGroup, Trigger};
use ebb_core::rules::predict::{
    self, Ask, Forecast, LoadPoint, MetricRollup, MinuteRollup, NoForecast,
};
use ebb_core::rules::{Metric, PredictiveMode, RuleKind, ScalingRule};
use ebb_core::time::rfc3339;
use tracing::info;

const MINUTE_MS: i64 = 60_000;
/// A forecast is made again after an hour: the newest hour of history then
/// counts in it, and a day's worth of forecasts costs 24 reads of 14 days.
pub const FORECAST_REFRESH_MS: i64 = 3_600_000;
/// A floor not renewed by the pass for this long lapses, so a stalled pass
/// cannot hold a group up.
const FLOOR_TTL_MS: i64 = 3 * MINUTE_MS;
/// Rollups written per commit: under etcd's 128 operations a transaction.
const ROLLUP_CHUNK: usize = 100;

/// What the predictive pass remembers between ticks (none of it needed
/// after a restart: the rollups are in the store, forecasts are made again).
#[derive(Debug, Default)]
pub struct PredictiveState {
    /// The end of the last minute rolled up.
    last_rollup_end_ms: AtomicI64,
    /// The minute the predictive pass last ran in.
    last_pass_minute: AtomicI64,
    /// By rule id.
    forecasts: Mutex<HashMap<String, Cached>>,
    /// By group id: the floor in force.
    floors: Mutex<HashMap<String, ActiveFloor>>,
    /// By rule id: the refusal last recorded, so each is recorded once.
    refusals: Mutex<HashMap<String, String>>,
}

#[derive(Debug, Clone)]
struct Cached {
    made_at_ms: i64,
    kind: RuleKind,
    result: Result<Forecast, NoForecast>,
}

/// A predictive rule's floor under its group.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveFloor {
    pub rule: String,
    pub floor: u32,
    pub until_ms: i64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PredictiveState {
    /// The floor in force for the group at `now_ms`, as `(rule, floor)`.
    pub fn floor(&self, group_id: &str, now_ms: i64) -> Option<(String, u32)> {
        lock(&self.floors)
            .get(group_id)
            .filter(|f| f.until_ms > now_ms)
            .map(|f| (f.rule.clone(), f.floor))
    }

    /// A new term: forecasts are made again from the store.
    pub fn forget(&self) {
        lock(&self.forecasts).clear();
        lock(&self.floors).clear();
        self.last_pass_minute.store(0, Ordering::Relaxed);
    }
}

/// The built-in metrics, each rolled up when any instance sent it.
const BUILT_IN: [Metric; 6] = [
    Metric::CpuUtilization,
    Metric::MemoryUtilization,
    Metric::LoadAverage,
    Metric::IntranetRx,
    Metric::IntranetTx,
    Metric::TcpConnection,
];

/// One metric's sums over a minute: per instance (for the group average of
/// instance averages, as an alarm's `Average` takes it) and overall.
#[derive(Default)]
struct Acc {
    instance_means: Vec<f64>,
    max: f64,
    count: u32,
}

/// Rolls up the last finished minute of every group with instances in
/// service, if it has not been: one row per group with every metric.
pub async fn roll_up(engine: &Engine) -> Result<usize, EngineError> {
    let now = engine.clock.now_ms();
    let end = (now - PERIOD_GRACE_MS).div_euclid(MINUTE_MS) * MINUTE_MS;
    if engine.predictive.last_rollup_end_ms.load(Ordering::Relaxed) >= end {
        return Ok(0);
    }
    engine
        .predictive
        .last_rollup_end_ms
        .store(end, Ordering::Relaxed);
    let start = end - MINUTE_MS;
    let _ops = engine.ops.lock().await;
    let mut writes = Vec::new();
    for group in engine.store.list_groups()? {
        let in_service: Vec<String> = engine
            .store
            .list_instances(Some(&group.id))?
            .into_iter()
            .filter(|i| i.lifecycle_state == LifecycleState::InService)
            .map(|i| i.id)
            .collect();
        if in_service.is_empty() {
            continue;
        }
        let mut accs: Vec<(String, Acc)> = Vec::new();
        for id in &in_service {
            engine.fleet.with_agent(id, |a| {
                let minute: Vec<&Point> = a
                    .ring
                    .iter()
                    .rev()
                    .skip_while(|p| p.received_at_ms >= end)
                    .take_while(|p| p.received_at_ms >= start)
                    .collect();
                let mut names: Vec<Metric> = BUILT_IN.to_vec();
                for p in &minute {
                    for (name, _) in p.custom_values() {
                        if !names.iter().any(|m| m.as_str() == name) {
                            names.push(Metric::Custom(name.to_owned()));
                        }
                    }
                }
                for m in names {
                    let values: Vec<f64> = minute.iter().filter_map(|p| metric_of(&m, p)).collect();
                    if values.is_empty() {
                        continue;
                    }
                    let slot = match accs.iter().position(|(n, _)| n == m.as_str()) {
                        Some(i) => i,
                        None => {
                            accs.push((m.as_str().to_owned(), Acc::default()));
                            accs.len() - 1
                        }
                    };
                    let acc = &mut accs[slot].1;
                    let n = values.len() as u32;
                    acc.instance_means
                        .push(values.iter().sum::<f64>() / f64::from(n));
                    let top = values.iter().copied().fold(f64::MIN, f64::max);
                    acc.max = if acc.count == 0 {
                        top
                    } else {
                        acc.max.max(top)
                    };
                    acc.count += n;
                }
            });
        }
        if accs.is_empty() {
            continue;
        }
        writes.push(Write::PutRollup(MinuteRollup {
            group_id: group.id.clone(),
            minute_ms: start,
            in_service: in_service.len() as u32,
            metrics: accs
                .into_iter()
                .map(|(metric, a)| MetricRollup {
                    metric,
                    average: a.instance_means.iter().sum::<f64>() / a.instance_means.len() as f64,
                    max: a.max,
                    count: a.count,
                })
                .collect(),
        }));
    }
    let written = writes.len();
    while !writes.is_empty() {
        let rest = writes.split_off(writes.len().min(ROLLUP_CHUNK));
        engine.store.commit(std::mem::replace(&mut writes, rest))?;
    }
    Ok(written)
}

/// Prunes rollups past their retention; rides on the activities' pruning tick.
pub fn prune_rollups(engine: &Engine) -> Result<usize, EngineError> {
    let before = engine.clock.now_ms() - predict::ROLLUP_RETENTION_MS;
    Ok(engine.store.prune_rollups(before)?)
}

/// A group's load history for `metric` over the last 14 days.
pub fn load_history(
    engine: &Engine,
    group_id: &str,
    metric: &Metric,
    now_ms: i64,
) -> Result<Vec<(LoadPoint, u32)>, EngineError> {
    Ok(engine
        .store
        .list_rollups(group_id, now_ms - predict::HISTORY_MS)?
        .iter()
        .filter_map(|r| r.load(metric).map(|p| (p, r.in_service)))
        .collect())
}

/// The rule's forecast, from the cache while it is under an hour old and
/// the rule unchanged.
fn forecast_for(
    engine: &Engine,
    rule: &ScalingRule,
    metric: &Metric,
    now_ms: i64,
) -> Result<Result<Forecast, NoForecast>, EngineError> {
    if let Some(c) = lock(&engine.predictive.forecasts).get(&rule.id)
        && c.kind == rule.kind
        && now_ms - c.made_at_ms < FORECAST_REFRESH_MS
        && now_ms >= c.made_at_ms
    {
        return Ok(c.result.clone());
    }
    let history: Vec<LoadPoint> = load_history(engine, &rule.group_id, metric, now_ms)?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let result = predict::forecast(&history, now_ms);
    lock(&engine.predictive.forecasts).insert(
        rule.id.clone(),
        Cached {
            made_at_ms: now_ms,
            kind: rule.kind.clone(),
            result: result.clone(),
        },
    );
    Ok(result)
}

/// The floor a predictive rule's forecast sets on `group` at `now_ms`.
pub fn ask(group: &ScalingGroup, kind: &RuleKind, forecast: &Forecast, now_ms: i64) -> Option<Ask> {
    predict::ask(kind, group.min_size, group.max_size, forecast, now_ms)
}

/// A rule's forecast as the API shows it: made now if none is cached.
pub fn describe(
    engine: &Engine,
    group: &ScalingGroup,
    rule: &ScalingRule,
    now_ms: i64,
) -> Result<(Result<Forecast, NoForecast>, Option<Ask>), EngineError> {
    let RuleKind::Predictive { metric, .. } = &rule.kind else {
        return Err(EngineError::Refused(format!(
            "scaling rule `{}` is not a PredictiveScalingRule; only a predictive rule has a forecast",
            rule.name
        )));
    };
    let forecast = forecast_for(engine, rule, metric, now_ms)?;
    let ask = forecast
        .as_ref()
        .ok()
        .and_then(|f| ask(group, &rule.kind, f, now_ms));
    Ok((forecast, ask))
}

/// Once a minute: each group's predictive rules forecast, their refusals
/// recorded, and in `ForecastAndScale` their floor set and desired raised
/// to it.
pub async fn predictive_pass(engine: &Engine) -> Result<(), EngineError> {
    let now = engine.clock.now_ms();
    let minute = now.div_euclid(MINUTE_MS);
    if engine.predictive.last_pass_minute.load(Ordering::Relaxed) == minute {
        return Ok(());
    }
    engine
        .predictive
        .last_pass_minute
        .store(minute, Ordering::Relaxed);
    let _ops = engine.ops.lock().await;
    let rules: Vec<ScalingRule> = engine
        .store
        .list_rules(None)?
        .into_iter()
        .filter(|r| matches!(r.kind, RuleKind::Predictive { .. }))
        .collect();
    let mut floors: HashMap<String, ActiveFloor> = HashMap::new();
    for rule in &rules {
        let Some(group) = engine.store.get_group(&rule.group_id)? else {
            continue;
        };
        let RuleKind::Predictive {
            metric,
            predictive_scaling_mode,
            target_value,
            ..
        } = &rule.kind
        else {
            continue;
        };
        let forecast = match forecast_for(engine, rule, metric, now)? {
            Ok(f) => f,
            Err(no) => {
                record_refusal(engine, &group, rule, &no.to_string(), now)?;
                continue;
            }
        };
        lock(&engine.predictive.refusals).remove(&rule.id);
        if *predictive_scaling_mode != PredictiveMode::ForecastAndScale {
            continue;
        }
        let Some(a) = ask(&group, &rule.kind, &forecast, now) else {
            continue;
        };
        // Of two predictive rules on one group, the higher floor holds.
        let entry = floors.entry(group.id.clone()).or_insert(ActiveFloor {
            rule: rule.name.clone(),
            floor: 0,
            until_ms: now + FLOOR_TTL_MS,
        });
        if a.floor.floor > entry.floor {
            entry.rule = rule.name.clone();
            entry.floor = a.floor.floor;
        }
        raise(engine, &group, rule, *target_value, &a, now)?;
    }
    *lock(&engine.predictive.floors) = floors;
    // Forget what deleted rules left behind.
    let live: std::collections::HashSet<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    lock(&engine.predictive.forecasts).retain(|id, _| live.contains(id.as_str()));
    lock(&engine.predictive.refusals).retain(|id, _| live.contains(id.as_str()));
    engine
        .fleet
        .counters
        .predictive_passes_total
        .fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Raises the group's desired capacity (and its max, when the behaviour
/// lets the forecast override it) to the floor, as an activity naming the
/// rule and the forecast.
fn raise(
    engine: &Engine,
    group: &ScalingGroup,
    rule: &ScalingRule,
    target_value: f64,
    a: &Ask,
    now: i64,
) -> Result<(), EngineError> {
    let group = engine
        .store
        .get_group(&group.id)?
        .unwrap_or_else(|| group.clone());
    if group.state != GroupState::Active
        || group.suspended_processes.contains(&Process::ScaleOut)
        || group.desired_capacity >= a.floor.floor
    {
        return Ok(());
    }
    let from = group.desired_capacity;
    let to = a.floor.floor;
    let what = format!(
        "predictive rule `{}` forecast a load of {:.1} by {} (capacity {} at target {})",
        rule.name,
        a.peak_load,
        rfc3339(now + i64::from(a.lead_secs) * 1000),
        a.floor.forecast_capacity,
        target_value
    );
    let mut act = activity::start(
        &group,
        from,
        to,
        Trigger::Forecast,
        activity::cause(&what, from, to),
        now,
    );
    act.details = vec![format!(
        "forecast floor: the highest forecast load over the next {} s is {:.2}; \
         ceil({:.2} / {target_value}) = {}; floor {} within {}..={}",
        a.lead_secs,
        a.peak_load,
        a.peak_load,
        a.floor.forecast_capacity,
        a.floor.floor,
        group.min_size,
        a.floor.max_size
    )];
    let mut updated = group.clone();
    updated.desired_capacity = to;
    if a.floor.max_size > group.max_size {
        act.details.push(format!(
            "max size raised from {} to {} ({} lets the forecast override it)",
            group.max_size,
            a.floor.max_size,
            match &rule.kind {
                RuleKind::Predictive {
                    predictive_value_behavior,
                    ..
                } => predictive_value_behavior.as_str(),
                _ => "",
            }
        ));
        updated.max_size = a.floor.max_size;
    }
    info!(group = %group.name, rule = %rule.name, from, to, "forecast floor raises desired capacity");
    engine.begin_activity(&group, act, vec![Write::UpdateGroup(updated)])?;
    Ok(())
}

/// Records a refusal as a Rejected activity, once per distinct reason.
fn record_refusal(
    engine: &Engine,
    group: &ScalingGroup,
    rule: &ScalingRule,
    reason: &str,
    now: i64,
) -> Result<(), EngineError> {
    let mut seen = lock(&engine.predictive.refusals);
    if seen.get(&rule.id).map(String::as_str) == Some(reason) {
        return Ok(());
    }
    seen.insert(rule.id.clone(), reason.to_owned());
    drop(seen);
    let what = format!("predictive rule `{}` made no forecast", rule.name);
    let capacity = group.desired_capacity;
    let mut act = activity::rejected(
        group,
        capacity,
        capacity,
        Trigger::Forecast,
        activity::cause(&what, capacity, capacity),
        reason.to_owned(),
        now,
    );
    act.details = vec![format!("blocked: {reason}")];
    engine.record_rejection(group, act)?;
    Ok(())
}
