//! The alarm pass: every enabled alarm evaluated at each of its period
//! boundaries from the samples the fleet pulled; a breach runs its rules.

use crate::engine::rules::commit_decision;
use crate::engine::{Engine, EngineError};
use crate::fleet::Point;
use crate::store::Write;
use ebb_core::decide::{AlarmRun, RuleRun, decide};
use ebb_core::model::tasks::{AlarmRecord, AlarmTask};
use ebb_core::model::{Instance, ScalingGroup, Trigger};
use ebb_core::rules::{
    self, AlarmEval, AlarmState, Metric, PeriodInput, PeriodPoint, RuleKind, Stabilisation,
    aggregate, evaluate, owned_alarm_period, period_point, track_scale_in,
};
use tracing::{info, warn};

/// A period is evaluated this long after it ends, so the pull answers that
/// belong to it have arrived.
pub(crate) const PERIOD_GRACE_MS: i64 = 250;

/// How much longer than the longest alarm period the rings keep samples,
/// so a late alarm pass still finds its period's samples.
const RING_SLACK_MS: i64 = 10_000;

/// One value of `metric` from a sample, if it carries it.
pub(crate) fn metric_of(metric: &Metric, p: &Point) -> Option<f64> {
    match metric {
        Metric::CpuUtilization => p.cpu_utilization(),
        Metric::MemoryUtilization => p.memory_utilization(),
        Metric::LoadAverage => p.load1(),
        Metric::IntranetRx => p.rx_bytes_per_second(),
        Metric::IntranetTx => p.tx_bytes_per_second(),
        Metric::TcpConnection => p.tcp_total().map(f64::from),
        Metric::Custom(name) => p.custom(name),
    }
}

/// The period's input: each counted instance's samples in [start, end)
/// averaged (which instances count: `ebb_core::rules::period_input`).
pub(crate) fn period_input(
    engine: &Engine,
    instances: &[Instance],
    alarm: &AlarmTask,
    warmup_secs: Option<u32>,
    start_ms: i64,
    end_ms: i64,
) -> PeriodInput {
    rules::period_input(instances, warmup_secs, end_ms, |inst| {
        // The ring is in arrival order: walk back from the newest sample to
        // the period's start, reading a period's worth, not the whole ring.
        let (sum, n) = engine
            .fleet
            .with_agent(&inst.id, |a| {
                a.ring
                    .iter()
                    .rev()
                    .skip_while(|p| p.received_at_ms >= end_ms)
                    .take_while(|p| p.received_at_ms >= start_ms)
                    .filter_map(|p| metric_of(&alarm.spec.metric, p))
                    .fold((0.0, 0u32), |(sum, n), v| (sum + v, n + 1))
            })
            .unwrap_or_default();
        (n > 0).then(|| sum / f64::from(n))
    })
}

/// Puts every target-tracking rule's alarms on the period its rule and
/// group ask for (`owned_alarm_period`), starting them again from no data
/// where it changes: run at the start of each term, so alarms stored by a
/// build that used per-minute periods move to the sampling interval.
pub async fn align_owned_alarms(engine: &Engine) -> Result<usize, EngineError> {
    let _ops = engine.ops.lock().await;
    let mut writes = Vec::new();
    for mut alarm in engine.store.list_alarms(None)? {
        let Some(rule) = alarm
            .owner_rule_id
            .as_ref()
            .and_then(|id| engine.store.get_rule(id).ok().flatten())
        else {
            continue;
        };
        let RuleKind::TargetTracking { alarm_period, .. } = rule.kind else {
            continue;
        };
        let Some(group) = engine.store.get_group(&alarm.group_id)? else {
            continue;
        };
        let period = owned_alarm_period(group.sampling_interval_secs, alarm_period);
        if alarm.spec.period_secs == period {
            continue;
        }
        info!(group = %group.name, alarm = %alarm.name, "alarm period {} s → {period} s", alarm.spec.period_secs);
        alarm.spec.period_secs = period;
        alarm.eval = AlarmEval::default();
        alarm.last_period_end_ms = None;
        alarm.last_rejection = None;
        alarm.scale_in_window = None;
        writes.push(Write::PutAlarm(alarm));
    }
    let n = writes.len();
    engine.store.commit(writes)?;
    Ok(n)
}

/// Evaluates every alarm whose period has ended, and runs its actions.
pub async fn evaluate_alarms(engine: &Engine) -> Result<(), EngineError> {
    let now = engine.clock.now_ms();
    let _ops = engine.ops.lock().await;
    let started = tokio::time::Instant::now();
    let mut evaluated = 0;
    let mut unsaved = Vec::new();
    let alarms = engine.store.list_alarms(None)?;
    // The rings keep what the longest alarm reads, disabled ones included
    // (enabling one should find its history).
    let longest_ms = alarms
        .iter()
        .map(|a| i64::from(a.spec.period_secs) * 1000)
        .max()
        .unwrap_or(0)
        // The rollup of the last finished minute reads a minute's samples.
        .max(60_000);
    engine
        .fleet
        .keep_samples_for(longest_ms + PERIOD_GRACE_MS + RING_SLACK_MS);
    for mut alarm in alarms {
        if !alarm.enabled {
            continue;
        }
        let p = i64::from(alarm.spec.period_secs) * 1000;
        let latest_end = (now - PERIOD_GRACE_MS).div_euclid(p) * p;
        // Never replay a backlog (a stopped controller, a stalled loop): the
        // next period evaluated is the latest one that has ended.
        let end = match alarm.last_period_end_ms {
            Some(last) if last + p >= latest_end => last + p,
            _ => latest_end,
        };
        if end > latest_end || alarm.last_period_end_ms == Some(end) {
            continue;
        }
        let Some(group) = engine.store.get_group(&alarm.group_id)? else {
            continue;
        };
        let owner = alarm
            .owner_rule_id
            .as_ref()
            .and_then(|id| engine.store.get_rule(id).ok().flatten());
        let warmup = owner.as_ref().and_then(|r| match r.kind {
            RuleKind::TargetTracking {
                estimated_instance_warmup_secs,
                ..
            } => Some(estimated_instance_warmup_secs),
            _ => None,
        });
        let instances = engine.store.list_instances(Some(&group.id))?;
        let input = period_input(engine, &instances, &alarm, warmup, end - p, end);
        let point = period_point(&input, &alarm.spec);
        let eval = evaluate(&alarm.eval, point, &alarm.spec, now);
        if let Some((from, to)) = eval.transition {
            info!(group = %group.name, alarm = %alarm.name, "alarm {from} → {to}: {}", eval.explanation);
        }
        let value = match point {
            PeriodPoint::Breaching(v) | PeriodPoint::NotBreaching(v) => Some(v),
            PeriodPoint::Missing => None,
        };
        let window = track_scale_in(
            owner.as_ref().map(|r| &r.kind),
            &alarm.spec,
            &mut alarm.scale_in_window,
            (end - p, end),
            &input,
            &instances,
        );
        alarm.eval = eval.new.clone();
        alarm.last_period_end_ms = Some(end);
        alarm.record(AlarmRecord {
            at_ms: end,
            state: eval.new.state,
            value,
            explanation: eval.explanation.clone(),
        });
        if eval.fire_actions {
            let judged = AlarmRun {
                spec: alarm.spec.clone(),
                input,
                explanation: eval.explanation,
                window,
            };
            fire(engine, &group, &mut alarm, &judged, value, now)?;
            // Its state is stored right after its actions, so a restart
            // cannot run them again for the same period.
            unsaved.push(Write::PutAlarm(alarm));
            engine.store.commit(std::mem::take(&mut unsaved))?;
        } else {
            if eval.new.state != AlarmState::Alarm {
                alarm.last_rejection = None;
            }
            unsaved.push(Write::PutAlarm(alarm));
        }
        evaluated += 1;
    }
    // The alarms that ran nothing, in one transaction rather than one each
    // (at 200 alarms a second, most of the pass's time was commits).
    engine.store.commit(unsaved)?;
    if evaluated > 0 {
        let took = started.elapsed();
        engine.fleet.counters.alarm_evaluation.record(took);
    }
    Ok(())
}

/// Runs an alarm's rules. A refusal is recorded as a Rejected activity once
/// per distinct reason while the alarm stays in ALARM.
fn fire(
    engine: &Engine,
    group: &ScalingGroup,
    alarm: &mut AlarmTask,
    judged: &AlarmRun,
    value: Option<f64>,
    now: i64,
) -> Result<(), EngineError> {
    for rule_id in alarm.alarm_actions.clone() {
        let Some(rule) = engine.store.get_rule(&rule_id)? else {
            warn!(alarm = %alarm.name, rule = %rule_id, "alarm action names a rule that no longer exists");
            continue;
        };
        let group = engine
            .store
            .get_group(&group.id)?
            .unwrap_or_else(|| group.clone());
        let run = RuleRun {
            trigger: Trigger::Alarm,
            what: format!("alarm `{}` executed rule `{}`", alarm.name, rule.name),
            metric_value: value.or_else(|| aggregate(&judged.input.answered, alarm.spec.statistic)),
            threshold: Some(alarm.spec.threshold),
            alarm: Some(AlarmRun {
                // The window is its owner's alone.
                window: if alarm.owner_rule_id.as_ref() == Some(&rule.id) {
                    judged.window
                } else {
                    Stabilisation::Off
                },
                ..judged.clone()
            }),
        };
        let snap = engine.snapshot(&group)?;
        let d = decide(&rule.kind, &run, &snap.view(&group), now);
        // One Rejected activity per distinct reason while the alarm holds.
        let reason = d.refusal.as_ref().map(ToString::to_string);
        if reason.is_some() && alarm.last_rejection == reason {
            continue;
        }
        alarm.last_rejection = reason;
        commit_decision(engine, &group, d, &run, now)?;
    }
    Ok(())
}
