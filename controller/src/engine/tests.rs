//! Alarm → rule → activity flows on a hand-driven clock: an in-memory store,
//! samples fed into the fleet at chosen instants, a provider stand-in that
//! only records (launches and releases are the reconcile loop's business,
//! tested end to end elsewhere).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use ebb_proto::v1 as pb;

use super::alarms::{PERIOD_GRACE_MS, evaluate_alarms, period_input};
use super::schedules::run_due_tasks;
use super::{Engine, activity};
use crate::api::alarms::create_alarm;
use crate::api::rules::{create_scaling_rule, owned_alarms};
use crate::api::tasks::create_scheduled_task;
use crate::clock::{Clock, ManualClock};
use crate::engine::LaunchSettings;
use crate::fleet::Fleet;
use crate::provider::fake::FakeProvider;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, Write};
use ebb_core::decide::{RuleRun, decide};
use ebb_core::model::ActivityStatus;
use ebb_core::model::tasks::AlarmTask;
use ebb_core::model::{
    Activity, GroupSpec, GroupState, Instance, LifecycleState, Process, Trigger,
};
use ebb_core::model::{CreationType, HealthStatus, ScalingGroup};
use ebb_core::rules::{
    AdjustmentType, AlarmEval, AlarmSpec, AlarmState, Comparison, Metric, MissingData, RuleKind,
    ScalingRule, Statistic,
};

/// Records what it is asked; every instance it knows is alive.
/// 2026-01-01T00:00:00Z, a period boundary for every period.
const T0: i64 = 1_767_225_600_000;

struct Harness {
    engine: Engine,
    clock: ManualClock,
    group: ScalingGroup,
    provider: Arc<FakeProvider>,
}

impl Harness {
    /// An Active group of `n` InService instances (in service since long ago).
    async fn new(min: u32, max: u32, n: u32) -> Self {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let clock = ManualClock::new(T0);
        let ca = Arc::new(ebb_certs::Ca::generate("ebb.local", ebb_certs::CA_VALIDITY).unwrap());
        let provider = Arc::new(FakeProvider::new());
        let engine = Engine::new(
            store.clone(),
            provider.clone(),
            Arc::new(Fleet::new(1000, Arc::new(clock.clone()))),
            ca,
            LaunchSettings {
                controller: "127.0.0.1:1".into(),
                server_name: "localhost".into(),
                timeout: Duration::from_secs(60),
            },
        );
        let spec = GroupSpec {
            name: Some("web".into()),
            min_size: Some(min),
            max_size: Some(max),
            desired_capacity: Some(n),
            sampling_interval_secs: Some(1),
            ..Default::default()
        };
        let mut group = ScalingGroup::create("asg-1".into(), &spec, T0 - 3_600_000).unwrap();
        group.state = GroupState::Active;
        store
            .commit(vec![Write::CreateGroup(group.clone())])
            .unwrap();
        let h = Self {
            engine,
            clock,
            group,
            provider,
        };
        for i in 0..n {
            h.add_instance(&format!("i-{i}"), T0 - 3_600_000);
        }
        h
    }

    fn add_instance(&self, id: &str, in_service_at: i64) {
        let inst = Instance {
            id: id.into(),
            group_id: self.group.id.clone(),
            configuration_id: None,
            lifecycle_state: LifecycleState::InService,
            health_status: HealthStatus::Healthy,
            creation_type: CreationType::Attached,
            address: None,
            created_at_ms: in_service_at,
            in_service_at_ms: Some(in_service_at),
            activity_id: None,
            hook_waits: Vec::new(),
            attach_phase: None,
            provider_id: None,
            provider_address: None,
            launched_at_ms: None,
        };
        self.engine
            .store
            .commit(vec![Write::PutInstance(inst)])
            .unwrap();
        self.engine.fleet.connect(pb::Hello {
            instance_id: id.into(),
            ..Default::default()
        });
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Feeds each listed instance one CPU sample at the current instant.
    fn sample(&self, cpu: &[(&str, f64)]) {
        let at = self.now();
        for (id, value) in cpu {
            let session = self.engine.fleet.connect(pb::Hello {
                instance_id: (*id).into(),
                ..Default::default()
            });
            let sample = pb::Sample {
                cpu_utilization: Some(*value),
                ..Default::default()
            };
            session.sampled_at(&self.engine.fleet, sample, at);
        }
    }

    /// Moves one second on: samples mid-period, then evaluates after the boundary.
    async fn second(&self, cpu: &[(&str, f64)]) {
        self.clock.advance_ms(500);
        self.sample(cpu);
        self.clock.advance_ms(500 + PERIOD_GRACE_MS);
        evaluate_alarms(&self.engine).await.unwrap();
        self.clock.advance_ms(-PERIOD_GRACE_MS);
    }

    /// Every current instance at `cpu`.
    fn all(&self, cpu: f64) -> Vec<(String, f64)> {
        self.engine
            .store
            .list_instances(Some(&self.group.id))
            .unwrap()
            .into_iter()
            .map(|i| (i.id, cpu))
            .collect()
    }

    fn rule(&self, name: &str, kind: RuleKind) -> ScalingRule {
        let rule = ScalingRule {
            id: format!("asr-{name}"),
            group_id: self.group.id.clone(),
            name: name.into(),
            kind,
        };
        let mut writes = vec![Write::PutRule(rule.clone())];
        writes.extend(
            owned_alarms(&rule, self.group.sampling_interval_secs, self.now())
                .into_iter()
                .map(Write::PutAlarm),
        );
        self.engine.store.commit(writes).unwrap();
        rule
    }

    fn alarm(
        &self,
        name: &str,
        comparison: Comparison,
        threshold: f64,
        count: u32,
        rule: &ScalingRule,
    ) {
        let alarm = AlarmTask {
            id: format!("alm-{name}"),
            group_id: self.group.id.clone(),
            name: name.into(),
            spec: AlarmSpec {
                metric: Metric::CpuUtilization,
                statistic: Statistic::Average,
                period_secs: 1,
                comparison,
                threshold,
                evaluation_count: count,
                missing_data: MissingData::Missing,
            },
            alarm_actions: vec![rule.id.clone()],
            enabled: true,
            eval: AlarmEval::default(),
            owner_rule_id: None,
            history: Vec::new(),
            last_period_end_ms: None,
            last_rejection: None,
            scale_in_window: None,
            created_at_ms: self.now(),
        };
        self.engine
            .store
            .commit(vec![Write::PutAlarm(alarm)])
            .unwrap();
    }

    fn activities(&self) -> Vec<Activity> {
        let mut a = self
            .engine
            .store
            .list_activities(Some(&self.group.id), 100)
            .unwrap();
        a.reverse();
        a
    }

    fn desired(&self) -> u32 {
        self.engine
            .store
            .get_group(&self.group.id)
            .unwrap()
            .unwrap()
            .desired_capacity
    }

    /// Plays the reconcile loop's part: the group now holds desired, every
    /// running activity completes now.
    fn converge(&self) {
        let desired = self.desired();
        let now = self.now();
        let have = self
            .engine
            .store
            .list_instances(Some(&self.group.id))
            .unwrap();
        for i in have.len() as u32..desired {
            self.add_instance(&format!("i-new-{now}-{i}"), now);
        }
        for extra in have.iter().skip(desired as usize) {
            self.engine
                .store
                .commit(vec![Write::DeleteInstance(extra.id.clone())])
                .unwrap();
        }
        for mut a in self.activities().into_iter().filter(Activity::is_running) {
            activity::complete(&mut a, now);
            self.engine
                .store
                .commit(vec![Write::PutActivity(a)])
                .unwrap();
        }
    }
}

fn simple(value: i64, cooldown_secs: u32) -> RuleKind {
    RuleKind::Simple {
        adjustment_type: AdjustmentType::QuantityChangeInCapacity,
        adjustment_value: value,
        min_adjustment_magnitude: None,
        cooldown_secs: Some(cooldown_secs),
    }
}

fn busy(n: usize, cpu: f64) -> Vec<(String, f64)> {
    (0..n).map(|i| (format!("i-{i}"), cpu)).collect()
}

fn refs(v: &[(String, f64)]) -> Vec<(&str, f64)> {
    v.iter().map(|(i, c)| (i.as_str(), *c)).collect()
}

#[tokio::test]
async fn an_alarm_fires_after_three_periods_and_the_cooldown_blocks_then_expires() {
    let h = Harness::new(1, 6, 2).await;
    let add = h.rule("add-1", simple(1, 60));
    h.alarm("cpu-high", Comparison::Ge, 80.0, 3, &add);
    let hot = busy(2, 95.0);
    h.second(&refs(&hot)).await;
    h.second(&refs(&hot)).await;
    assert!(
        h.activities().is_empty(),
        "two breaching periods are not enough"
    );
    h.second(&refs(&hot)).await;
    let acts = h.activities();
    assert_eq!(acts.len(), 1);
    assert_eq!(
        acts[0].cause,
        "alarm `cpu-high` executed rule `add-1`, changing the Total Capacity from 2 to 3"
    );
    assert_eq!(acts[0].trigger, Trigger::Alarm);
    assert!(
        acts[0]
            .details
            .iter()
            .any(|d| d.contains("95 (breaching), 95 (breaching), 95 (breaching)")),
        "{:?}",
        acts[0].details
    );
    assert_eq!(h.desired(), 3);

    // While it runs, a firing alarm is refused: an activity is in progress.
    h.second(&refs(&hot)).await;
    let acts = h.activities();
    assert_eq!(acts[1].status, ActivityStatus::Rejected);
    assert!(
        acts[1]
            .error
            .as_deref()
            .unwrap()
            .starts_with("an activity is in progress"),
        "{:?}",
        acts[1]
    );

    // Done; the 60 s cooldown starts now and holds, recorded once.
    h.converge();
    let hot3 = h.all(95.0);
    for _ in 0..10 {
        h.second(&refs(&hot3)).await;
    }
    let rejected: Vec<_> = h
        .activities()
        .into_iter()
        .filter(|a| a.status == ActivityStatus::Rejected)
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:#?}");
    assert!(
        rejected[1]
            .error
            .as_deref()
            .unwrap()
            .starts_with("the cooldown holds until 2026-01-01T00:01:"),
        "{:?}",
        rejected[1].error
    );
    assert_eq!(h.desired(), 3);
    // After it expires, the still-firing alarm scales again.
    for _ in 0..55 {
        h.second(&refs(&hot3)).await;
    }
    let scaled: Vec<_> = h
        .activities()
        .into_iter()
        .filter(|a| a.status != ActivityStatus::Rejected)
        .map(|a| (a.capacity_from, a.capacity_to))
        .collect();
    assert_eq!(scaled, [(2, 3), (3, 4)]);
    assert_eq!(h.desired(), 4);
}

#[tokio::test]
async fn missing_data_never_causes_a_scale_in() {
    let h = Harness::new(1, 6, 4).await;
    let remove = h.rule("remove-1", simple(-1, 0));
    h.alarm("cpu-low", Comparison::Le, 20.0, 3, &remove);
    // One of four answers: not enough data; the alarm waits, nothing runs.
    for _ in 0..5 {
        h.second(&[("i-0", 1.0)]).await;
    }
    let alarm = h.engine.store.get_alarm("alm-cpu-low").unwrap().unwrap();
    assert_eq!(alarm.eval.state, AlarmState::InsufficientData);
    assert!(h.activities().is_empty());
    // Three of four answer low: the alarm fires, but a scale-in on
    // incomplete data is refused, saying so.
    for _ in 0..3 {
        h.second(&[("i-0", 1.0), ("i-1", 1.0), ("i-2", 1.0)]).await;
    }
    let acts = h.activities();
    assert_eq!(acts.len(), 1, "{acts:#?}");
    assert_eq!(acts[0].status, ActivityStatus::Rejected);
    assert_eq!(
        acts[0].error.as_deref(),
        Some("a scale-in is never taken on incomplete data: 3 of 4 in-service instances answered")
    );
    assert_eq!(h.desired(), 4);
    // All four answer: the scale-in happens.
    h.second(&refs(&busy(4, 1.0))).await;
    assert_eq!(h.activities().pop().unwrap().capacity_to, 3);
}

#[tokio::test]
async fn suspended_processes_block_with_their_reason() {
    let h = Harness::new(1, 6, 2).await;
    let add = h.rule("add-1", simple(1, 0));
    h.alarm("cpu-high", Comparison::Ge, 80.0, 1, &add);
    let mut g = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    g.suspended_processes = vec![Process::ScaleOut];
    h.engine.store.commit(vec![Write::UpdateGroup(g)]).unwrap();
    h.second(&refs(&busy(2, 99.0))).await;
    let acts = h.activities();
    assert_eq!(
        acts[0].error.as_deref(),
        Some("the ScaleOut process of the group is suspended")
    );
    assert_eq!(h.desired(), 2);
}

/// Runs a target-tracking group second by second for `secs` under a total
/// load (CPU points spread over the fleet, each instance capped at 100 %)
/// that `load` gives per second; returns the desired capacity per second.
async fn track(h: &Harness, secs: i64, load: impl Fn(i64) -> f64) -> Vec<u32> {
    let mut sizes = Vec::new();
    for t in 0..secs {
        let n = h.desired().max(1);
        let each = (load(t) / f64::from(n)).min(100.0);
        h.second(&refs(&h.all(each))).await;
        h.converge();
        sizes.push(h.desired());
    }
    sizes
}

fn tracking(warmup: u32, window: u32) -> RuleKind {
    RuleKind::TargetTracking {
        metric: Metric::CpuUtilization,
        target_value: 50.0,
        disable_scale_in: false,
        estimated_instance_warmup_secs: warmup,
        alarm_period: Default::default(),
        scale_in_stabilization_secs: window,
    }
}

/// A steady load of 240 "CPU points" spread over the fleet: the target is
/// 50 % per instance, so 5 instances hold it; a scale-in lands at the
/// bottom of the tolerance band (45 %), where ceil(240 / 45) = 6 do.
/// Whatever it starts from, the group settles and stays, without flapping.
#[tokio::test]
async fn target_tracking_converges_without_flapping_on_a_steady_load() {
    for start in [1u32, 2, 9] {
        let h = Harness::new(1, 10, start).await;
        h.rule("cpu-50", tracking(0, 300));
        // The group samples every second, and so do the owned alarms.
        let sizes = track(&h, 900, |_| 240.0).await;
        let settled = &sizes[sizes.len() - 200..];
        let want = if start > 5 { 6 } else { 5 };
        assert!(
            settled.iter().all(|s| *s == want),
            "from {start}: {sizes:?}"
        );
        // Flapping is a change of direction; a saturated CPU (capped at
        // 100 %) may take a few steps up, but never one back.
        let up = sizes.windows(2).any(|w| w[1] > w[0]);
        let down = sizes.windows(2).any(|w| w[1] < w[0]);
        assert!(!(up && down), "from {start}: flapped: {sizes:?}");
        if start < 5 {
            // Three 1 s periods above the target, not three minutes.
            let first_up = sizes.iter().position(|s| *s > start).unwrap();
            assert!(
                first_up <= 5,
                "from {start}: first scale-out at {first_up} s"
            );
        }
    }
}

/// Scale-in goes no lower than the highest recommendation of the last
/// 300 s, and not at all before the window has filled: a 20 s burst keeps
/// the capacity it needed for 300 s, then the group goes to what the
/// quieter load needs. A recommendation holds the load at the bottom of
/// the tolerance band (45 % for a target of 50 %).
#[tokio::test]
async fn scale_in_holds_the_highest_recommendation_of_its_window() {
    let h = Harness::new(1, 10, 7).await;
    h.rule("cpu-50", tracking(0, 300));
    // 240 points on 7 (34 % each) need ceil(240 / 45) = 6; from 400 s,
    // 100 points need 3, with a burst of 200 (5 needed, 40 % each: below
    // the band, no scale-out) over [420, 440).
    let sizes = track(&h, 900, |t| match t {
        ..400 => 240.0,
        420..440 => 200.0,
        _ => 100.0,
    })
    .await;
    // The second at whose end the group first holds `to`, from `from` on.
    let first_change = |from: usize, to: u32| {
        sizes[from..]
            .iter()
            .position(|s| *s == to)
            .map(|i| i + from + 1)
            .unwrap_or_else(|| panic!("never {to}: {sizes:?}"))
    };
    let mut steps: Vec<u32> = sizes.clone();
    steps.dedup();
    assert_eq!(steps, [7, 6, 5, 3], "{sizes:?}");
    // The window (from the first period, at 0 s) fills at 300 s.
    let to6 = first_change(0, 6);
    assert!((300..305).contains(&to6), "to 6 at {to6} s");
    // 6 (40 % each, below the band) stays the highest recommendation
    // until 300 s after 400 s...
    let to5 = first_change(to6, 5);
    assert!((700..705).contains(&to5), "to 5 at {to5} s");
    // ...and the burst's 5 until 300 s after 440 s.
    let to3 = first_change(to5, 3);
    assert!((740..745).contains(&to3), "to 3 at {to3} s");
    // The explain view says why the window held.
    let held = h
        .activities()
        .into_iter()
        .flat_map(|a| a.details)
        .find(|d| d.contains("the highest recommendation of the last 300 s is 6: hold"));
    assert!(held.is_some(), "{:?}", h.activities());
}

#[tokio::test]
async fn warming_instances_are_left_out_of_the_metric() {
    let h = Harness::new(1, 10, 1).await;
    let rule = h.rule(
        "cpu-50",
        RuleKind::TargetTracking {
            metric: Metric::CpuUtilization,
            target_value: 50.0,
            disable_scale_in: false,
            estimated_instance_warmup_secs: 300,
            alarm_period: Default::default(),
            scale_in_stabilization_secs: 300,
        },
    );
    // A second instance has just come into service: warming, idle.
    h.add_instance("i-warm", T0);
    let group = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    let alarm = h
        .engine
        .store
        .list_alarms(Some(&group.id))
        .unwrap()
        .into_iter()
        .find(|a| a.name == "cpu-50-out")
        .unwrap();
    h.clock.advance_ms(30_000);
    h.sample(&[("i-0", 100.0), ("i-warm", 0.0)]);
    h.clock.advance_ms(30_000);
    let instances = h.engine.store.list_instances(Some(&group.id)).unwrap();
    let input = period_input(&h.engine, &instances, &alarm, Some(300), T0, T0 + 60_000);
    // Only the warm instance's 100 % counts, not an average of 50 %.
    assert_eq!(input.in_service, 1);
    assert_eq!(input.answered, vec![100.0]);
    // And the warming one counts as pending: 1 × 100 / 50 = 2 needed, 2 there.
    let run = RuleRun {
        trigger: Trigger::Alarm,
        what: "t".into(),
        metric_value: Some(100.0),
        threshold: Some(50.0),
        alarm: None,
    };
    let snap = h.engine.snapshot(&group).unwrap();
    let d = decide(&rule.kind, &run, &snap.view(&group), h.now());
    assert_eq!((d.from, d.to), (2, 2), "{:?}", d.details);
}

#[tokio::test]
async fn bad_alarm_and_task_requests_name_every_field() {
    let h = Harness::new(1, 3, 1).await;
    h.rule("add-1", simple(1, 0));
    let err = create_alarm(
        &h.engine,
        pb::CreateAlarmRequest {
            scaling_group: "web".into(),
            name: "x".into(),
            metric: "".into(),
            statistic: "Median".into(),
            period_secs: 7,
            comparison_operator: "=>".into(),
            threshold: f64::NAN,
            evaluation_count: Some(0),
            missing_data: Some("zero".into()),
            alarm_actions: vec!["nope".into()],
            enabled: None,
        },
    )
    .await
    .unwrap_err();
    for needle in [
        "name:",
        "statistic:",
        "comparison_operator:",
        "missing_data:",
        "alarm_actions[0]: no scaling rule `nope`",
    ] {
        assert!(
            err.message().contains(needle),
            "missing `{needle}` in {}",
            err.message()
        );
    }
    let err = create_scaling_rule(
        &h.engine,
        pb::CreateScalingRuleRequest {
            scaling_group: "web".into(),
            name: "steps".into(),
            definition_json: r#"{"rule_type":"StepScalingRule","adjustment_type":"QuantityChangeInCapacity","step_adjustments":[{"lower_bound":0,"upper_bound":10,"adjustment":1},{"lower_bound":20,"adjustment":2}]}"#.into(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.message().contains("step_adjustments"),
        "{}",
        err.message()
    );
    let err = create_scheduled_task(
        &h.engine,
        pb::CreateScheduledTaskRequest {
            scaling_group: "web".into(),
            name: "nightly".into(),
            launch_time: "tomorrow".into(),
            recurrence_type: "Cron".into(),
            recurrence_value: "61 * * * *".into(),
            time_zone: "Mars/Olympus".into(),
            scaling_rule: "ghost".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    for needle in [
        "launch_time: `tomorrow` is not an RFC 3339 time",
        "scaling_rule: scaling rule `ghost` does not exist",
    ] {
        assert!(
            err.message().contains(needle),
            "missing `{needle}` in {}",
            err.message()
        );
    }
    // Nothing was stored.
    assert!(h.engine.store.list_alarms(None).unwrap().is_empty());
    assert!(h.engine.store.list_tasks(None).unwrap().is_empty());
    assert_eq!(h.engine.store.list_rules(None).unwrap().len(), 1);
}

#[tokio::test]
async fn a_scheduled_task_waits_for_a_running_activity_and_expires_after_downtime() {
    let h = Harness::new(1, 6, 2).await;
    let task = create_scheduled_task(
        &h.engine,
        pb::CreateScheduledTaskRequest {
            scaling_group: "web".into(),
            name: "morning".into(),
            launch_time: "2026-01-01T00:00:10Z".into(),
            recurrence_type: "Daily".into(),
            recurrence_value: "1".into(),
            desired_capacity: Some(4),
            launch_expiration_secs: Some(60),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(task.next_run, "2026-01-01T00:00:10Z");
    // An activity runs when the task falls due: it waits, then runs.
    let running = activity::start(&h.group, 2, 3, Trigger::Api, "x".into(), h.now());
    h.engine
        .store
        .commit(vec![Write::PutActivity(running)])
        .unwrap();
    h.clock.advance_ms(11_000);
    run_due_tasks(&h.engine).await.unwrap();
    assert_eq!(h.desired(), 2);
    let t = h.engine.store.list_tasks(None).unwrap().pop().unwrap();
    assert!(
        t.last_result.unwrap().starts_with("waiting: activity"),
        "still due"
    );
    h.converge();
    h.clock.advance_ms(20_000);
    run_due_tasks(&h.engine).await.unwrap();
    assert_eq!(h.desired(), 4);
    let act = h.activities().pop().unwrap();
    assert_eq!(act.trigger, Trigger::Schedule);
    assert!(
        act.cause.contains("scheduled task `morning`"),
        "{}",
        act.cause
    );
    // The controller is down through the next day's run and back 2 min late:
    // beyond the 60 s expiration, so it is dropped and recorded.
    h.converge();
    h.clock.advance_ms(86_400_000 + 120_000 - 31_000);
    run_due_tasks(&h.engine).await.unwrap();
    let dropped = h.activities().pop().unwrap();
    assert_eq!(dropped.status, ActivityStatus::Rejected);
    assert!(
        dropped
            .error
            .as_deref()
            .unwrap()
            .contains("missed its run at 2026-01-02T00:00:10Z by 110 s"),
        "{:?}",
        dropped.error
    );
    assert_eq!(h.desired(), 4);
}

#[tokio::test]
async fn a_recurring_task_with_a_past_launch_time_waits_for_its_next_run() {
    let h = Harness::new(1, 6, 2).await;
    let task = create_scheduled_task(
        &h.engine,
        pb::CreateScheduledTaskRequest {
            scaling_group: "web".into(),
            name: "office".into(),
            launch_time: "2025-01-06T08:00:00+01:00".into(),
            recurrence_type: "Daily".into(),
            recurrence_value: "1".into(),
            time_zone: "Europe/Berlin".into(),
            min_size: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // T0 is 2026-01-01T00:00Z: the next 08:00 Berlin is 07:00Z that day.
    assert_eq!(task.next_run, "2026-01-01T07:00:00Z");
    for _ in 0..5 {
        h.clock.advance_ms(200);
        run_due_tasks(&h.engine).await.unwrap();
    }
    assert!(
        h.activities().is_empty(),
        "a year of past occurrences must not be replayed or recorded"
    );
}

/// One second on, as `Harness::second`, each listed instance answering with
/// CPU 50 and the custom metric `queue_depth` at its value, or without it
/// (its source failed) when None.
async fn queue_second(h: &Harness, depths: &[(&str, Option<f64>)]) {
    h.clock.advance_ms(500);
    let at = h.now();
    for (id, depth) in depths {
        let session = h.engine.fleet.connect(pb::Hello {
            instance_id: (*id).into(),
            ..Default::default()
        });
        let sample = pb::Sample {
            cpu_utilization: Some(50.0),
            custom: depth
                .iter()
                .map(|v| pb::CustomMetric {
                    name: "queue_depth".into(),
                    value: *v,
                })
                .collect(),
            ..Default::default()
        };
        session.sampled_at(&h.engine.fleet, sample, at);
    }
    h.clock.advance_ms(500 + PERIOD_GRACE_MS);
    evaluate_alarms(&h.engine).await.unwrap();
    h.clock.advance_ms(-PERIOD_GRACE_MS);
}

async fn queue_alarm(h: &Harness, name: &str, comparison: &str, threshold: f64, rule: &str) {
    create_alarm(
        &h.engine,
        pb::CreateAlarmRequest {
            scaling_group: "web".into(),
            name: name.into(),
            metric: "queue_depth".into(),
            statistic: "Average".into(),
            period_secs: 1,
            comparison_operator: comparison.into(),
            threshold,
            evaluation_count: Some(3),
            alarm_actions: vec![rule.into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

fn alarm_state(h: &Harness, name: &str) -> AlarmState {
    let id = h
        .engine
        .store
        .list_alarms(Some(&h.group.id))
        .unwrap()
        .into_iter()
        .find(|a| a.name == name)
        .unwrap()
        .id;
    h.engine.store.get_alarm(&id).unwrap().unwrap().eval.state
}

#[tokio::test]
async fn an_alarm_on_a_custom_metric_fires_its_rule() {
    let h = Harness::new(1, 6, 2).await;
    h.rule("add-1", simple(1, 0));
    queue_alarm(&h, "queue-high", ">=", 100.0, "add-1").await;
    let deep = [("i-0", Some(150.0)), ("i-1", Some(130.0))];
    queue_second(&h, &deep).await;
    queue_second(&h, &deep).await;
    assert_eq!(alarm_state(&h, "queue-high"), AlarmState::Ok);
    assert!(h.activities().is_empty());
    queue_second(&h, &deep).await;
    assert_eq!(alarm_state(&h, "queue-high"), AlarmState::Alarm);
    let acts = h.activities();
    assert_eq!(acts.len(), 1, "{acts:#?}");
    assert_eq!(
        acts[0].cause,
        "alarm `queue-high` executed rule `add-1`, changing the Total Capacity from 2 to 3"
    );
    assert!(
        acts[0]
            .details
            .iter()
            .any(|d| d.contains("140 (breaching), 140 (breaching), 140 (breaching)")),
        "{:?}",
        acts[0].details
    );
    assert_eq!(h.desired(), 3);
}

#[tokio::test]
async fn missing_custom_values_are_no_data_not_a_zero_that_breaches() {
    let h = Harness::new(1, 6, 2).await;
    h.rule("remove-1", simple(-1, 0));
    queue_alarm(&h, "queue-empty", "<=", 0.0, "remove-1").await;
    // Every source fails: the samples come (CPU 50) without queue_depth.
    // Read as 0 this would breach `<= 0` and scale in; it is no data.
    let failing = [("i-0", None), ("i-1", None)];
    for _ in 0..5 {
        queue_second(&h, &failing).await;
    }
    assert_eq!(alarm_state(&h, "queue-empty"), AlarmState::InsufficientData);
    assert!(h.activities().is_empty(), "{:#?}", h.activities());
    assert_eq!(h.desired(), 2);
    // One of two answering is not enough to scale in on either.
    for _ in 0..3 {
        queue_second(&h, &[("i-0", Some(0.0)), ("i-1", None)]).await;
    }
    assert!(
        h.activities()
            .iter()
            .all(|a| a.status == ActivityStatus::Rejected),
        "{:#?}",
        h.activities()
    );
    assert_eq!(h.desired(), 2);
    // A real zero from both is complete data, and breaches: the scale-in runs.
    queue_second(&h, &[("i-0", Some(0.0)), ("i-1", Some(0.0))]).await;
    assert_eq!(alarm_state(&h, "queue-empty"), AlarmState::Alarm);
    let last = h.activities().pop().unwrap();
    assert_eq!(
        last.cause,
        "alarm `queue-empty` executed rule `remove-1`, changing the Total Capacity from 2 to 1"
    );
    assert_ne!(last.status, ActivityStatus::Rejected, "{last:#?}");
    assert_eq!(h.desired(), 1);
}

/// The provider's instances, sorted.
fn provided(h: &Harness) -> Vec<String> {
    h.provider.ids()
}

#[tokio::test]
async fn a_detached_instance_is_never_released_by_the_orphan_sweep() {
    let h = Harness::new(0, 3, 0).await;
    let inst = Instance {
        id: "i-auto".into(),
        group_id: h.group.id.clone(),
        configuration_id: None,
        lifecycle_state: LifecycleState::InService,
        health_status: HealthStatus::Healthy,
        creation_type: CreationType::AutoCreated,
        address: None,
        created_at_ms: h.now(),
        in_service_at_ms: Some(h.now()),
        activity_id: None,
        hook_waits: Vec::new(),
        attach_phase: None,
        provider_id: None,
        provider_address: None,
        launched_at_ms: None,
    };
    let mut group = h.group.clone();
    group.desired_capacity = 1;
    h.engine
        .store
        .commit(vec![Write::UpdateGroup(group), Write::PutInstance(inst)])
        .unwrap();
    h.provider.insert("i-auto", true);
    h.provider.insert("i-orphan", true);
    crate::api::instances::detach_instances(
        &h.engine,
        pb::DetachInstancesRequest {
            client_token: String::new(),
            scaling_group: "web".into(),
            instance_ids: vec!["i-auto".into()],
            decrease_desired_capacity: None,
        },
    )
    .await
    .unwrap();
    assert!(h.engine.store.get_instance("i-auto").unwrap().is_none());
    // The sweep releases what nothing claims, and leaves the detached one.
    for _ in 0..3 {
        h.engine.reconcile_all().await.unwrap();
    }
    assert_eq!(provided(&h), ["i-auto"]);
    assert_eq!(h.desired(), 0);
}

#[tokio::test]
async fn removing_an_instance_twice_is_refused_and_changes_nothing() {
    use crate::api::instances::{detach_instances, remove_instances};
    let h = Harness::new(0, 3, 3).await;
    let remove = |ids: &[&str]| pb::RemoveInstancesRequest {
        client_token: String::new(),
        scaling_group: "web".into(),
        instance_ids: ids.iter().map(|i| (*i).to_owned()).collect(),
        decrease_desired_capacity: None,
    };
    remove_instances(&h.engine, remove(&["i-0"])).await.unwrap();
    assert_eq!(h.desired(), 2);
    let state = |id: &str| {
        h.engine
            .store
            .get_instance(id)
            .unwrap()
            .unwrap()
            .lifecycle_state
    };
    assert_eq!(state("i-0"), LifecycleState::Removing);
    let mut waiting = h.engine.store.get_instance("i-1").unwrap().unwrap();
    waiting.lifecycle_state = LifecycleState::RemovingWait;
    h.engine
        .store
        .commit(vec![Write::PutInstance(waiting)])
        .unwrap();
    let before = h.activities();

    let err = remove_instances(&h.engine, remove(&["i-2", "i-0"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("instance_ids[1]: i-0 is Removing; it is already being removed"),
        "{}",
        err.message()
    );
    let err = remove_instances(&h.engine, remove(&["i-1"]))
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("instance_ids[0]: i-1 is Removing:Wait; it is already being removed"),
        "{}",
        err.message()
    );
    let err = detach_instances(
        &h.engine,
        pb::DetachInstancesRequest {
            client_token: String::new(),
            scaling_group: "web".into(),
            instance_ids: vec!["i-0".into()],
            decrease_desired_capacity: None,
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.message().contains("instance_ids[0]: i-0 is Removing"),
        "{}",
        err.message()
    );
    // One instance named twice would lower desired twice.
    let err = remove_instances(&h.engine, remove(&["i-2", "i-2"]))
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("instance_ids[1]: `i-2` is listed twice"),
        "{}",
        err.message()
    );
    assert_eq!(h.desired(), 2);
    assert_eq!(state("i-2"), LifecycleState::InService);
    assert_eq!(h.activities(), before);
}

/// Suspends `processes` of the harness's group.
fn suspend(h: &Harness, processes: &[Process]) {
    let mut g = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    g.suspended_processes = processes.to_vec();
    h.engine.store.commit(vec![Write::UpdateGroup(g)]).unwrap();
}

/// The refusal a caller gets, and the Rejected activity it left.
fn assert_rejected(h: &Harness, err: tonic::Status, process: &str, trigger: Trigger) {
    let reason = format!("the {process} process of the group is suspended");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let id = err
        .message()
        .strip_prefix(&format!("{reason}; the change was rejected (activity "))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{}", err.message()));
    let act = h.engine.store.get_activity(id).unwrap().unwrap();
    assert_eq!(act.status, ActivityStatus::Rejected);
    assert_eq!(act.trigger, trigger);
    assert_eq!(act.error.as_deref(), Some(reason.as_str()));
}

#[tokio::test]
async fn suspended_scale_out_refuses_every_manual_way_up() {
    use crate::api::groups::modify_scaling_group;
    use crate::api::instances::attach_instances;
    let h = Harness::new(1, 6, 2).await;
    suspend(&h, &[Process::ScaleOut]);
    let modify = |min: Option<u32>, desired: Option<u32>| pb::ModifyScalingGroupRequest {
        scaling_group: "web".into(),
        min_size: min,
        desired_capacity: desired,
        ..Default::default()
    };
    let err = modify_scaling_group(&h.engine, modify(None, Some(4)))
        .await
        .unwrap_err();
    assert_rejected(&h, err, "ScaleOut", Trigger::Api);
    // Raising min_size above the count would launch: refused too, bounds kept.
    let err = modify_scaling_group(&h.engine, modify(Some(3), None))
        .await
        .unwrap_err();
    assert_rejected(&h, err, "ScaleOut", Trigger::Bounds);
    let err = attach_instances(
        &h.engine,
        pb::AttachInstancesRequest {
            client_token: String::new(),
            scaling_group: "web".into(),
            instance_ids: vec!["h-1".into()],
        },
    )
    .await
    .unwrap_err();
    assert_rejected(&h, err, "ScaleOut", Trigger::Api);
    let g = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    assert_eq!((g.min_size, g.desired_capacity), (1, 2));
    assert!(h.engine.store.get_instance("h-1").unwrap().is_none());
    // A scheduled task that would raise desired is rejected, and says so.
    create_scheduled_task(
        &h.engine,
        pb::CreateScheduledTaskRequest {
            scaling_group: "web".into(),
            name: "morning".into(),
            launch_time: "2026-01-01T00:00:10Z".into(),
            desired_capacity: Some(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    h.clock.advance_ms(11_000);
    run_due_tasks(&h.engine).await.unwrap();
    let last = h.activities().pop().unwrap();
    assert_eq!(
        (last.status, last.trigger, last.error.as_deref()),
        (
            ActivityStatus::Rejected,
            Trigger::Schedule,
            Some("the ScaleOut process of the group is suspended")
        )
    );
    assert!(
        last.cause.contains("scheduled task `morning`"),
        "{}",
        last.cause
    );
    let task = h.engine.store.list_tasks(None).unwrap().pop().unwrap();
    assert_eq!(
        task.last_result.as_deref(),
        Some(format!("{} Rejected", last.id).as_str())
    );
    assert_eq!(h.desired(), 2);
    // The other way is not suspended.
    modify_scaling_group(&h.engine, modify(None, Some(1)))
        .await
        .unwrap();
    assert_eq!(h.desired(), 1);
}

#[tokio::test]
async fn suspended_scale_in_refuses_every_manual_way_down() {
    use crate::api::groups::modify_scaling_group;
    use crate::api::instances::{detach_instances, remove_instances};
    let h = Harness::new(0, 6, 3).await;
    suspend(&h, &[Process::ScaleIn]);
    let err = modify_scaling_group(
        &h.engine,
        pb::ModifyScalingGroupRequest {
            scaling_group: "web".into(),
            desired_capacity: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_rejected(&h, err, "ScaleIn", Trigger::Api);
    // Lowering max_size below the count would remove instances.
    let err = modify_scaling_group(
        &h.engine,
        pb::ModifyScalingGroupRequest {
            scaling_group: "web".into(),
            max_size: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_rejected(&h, err, "ScaleIn", Trigger::Bounds);
    let remove = |decrease| pb::RemoveInstancesRequest {
        client_token: String::new(),
        scaling_group: "web".into(),
        instance_ids: vec!["i-0".into()],
        decrease_desired_capacity: decrease,
    };
    let err = remove_instances(&h.engine, remove(None)).await.unwrap_err();
    assert_rejected(&h, err, "ScaleIn", Trigger::Api);
    let err = detach_instances(
        &h.engine,
        pb::DetachInstancesRequest {
            client_token: String::new(),
            scaling_group: "web".into(),
            instance_ids: vec!["i-1".into()],
            decrease_desired_capacity: Some(true),
        },
    )
    .await
    .unwrap_err();
    assert_rejected(&h, err, "ScaleIn", Trigger::Api);
    let g = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    assert_eq!((g.max_size, g.desired_capacity), (6, 3));
    assert_eq!(
        h.engine.store.list_instances(Some(&g.id)).unwrap().len(),
        3,
        "nothing was taken out"
    );
    assert!(
        h.engine
            .store
            .list_instances(None)
            .unwrap()
            .iter()
            .all(|i| i.lifecycle_state == LifecycleState::InService)
    );
    // Keeping desired is a replacement, not a scale-in.
    remove_instances(&h.engine, remove(Some(false)))
        .await
        .unwrap();
    assert_eq!(h.desired(), 3);
}

#[tokio::test]
async fn a_change_that_only_shortens_a_move_under_way_is_not_refused() {
    use crate::api::groups::modify_scaling_group;
    let h = Harness::new(1, 6, 2).await;
    let set = |d| pb::ModifyScalingGroupRequest {
        scaling_group: "web".into(),
        desired_capacity: Some(d),
        ..Default::default()
    };
    modify_scaling_group(&h.engine, set(5)).await.unwrap();
    suspend(&h, &[Process::ScaleOut]);
    // 2 instances, heading for 5: 4 still launches, but less than before.
    modify_scaling_group(&h.engine, set(4)).await.unwrap();
    assert_eq!(h.desired(), 4);
    let err = modify_scaling_group(&h.engine, set(6)).await.unwrap_err();
    assert_rejected(&h, err, "ScaleOut", Trigger::Api);
    assert_eq!(h.desired(), 4);
}

fn set_sampling(secs: u32) -> pb::ModifyScalingGroupRequest {
    pb::ModifyScalingGroupRequest {
        scaling_group: "web".into(),
        sampling_interval_secs: Some(secs),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_alarm_period_is_never_shorter_than_the_sampling_interval() {
    use crate::api::alarms::modify_alarm;
    use crate::api::groups::modify_scaling_group;
    let h = Harness::new(1, 3, 1).await;
    modify_scaling_group(&h.engine, set_sampling(15))
        .await
        .unwrap();
    h.rule("add-1", simple(1, 0));
    let alarm = |period_secs| pb::CreateAlarmRequest {
        scaling_group: "web".into(),
        name: "cpu-high".into(),
        metric: "CpuUtilization".into(),
        statistic: "Average".into(),
        period_secs,
        comparison_operator: ">=".into(),
        threshold: 80.0,
        evaluation_count: None,
        missing_data: None,
        alarm_actions: vec!["add-1".into()],
        enabled: None,
    };
    let err = create_alarm(&h.engine, alarm(5)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("period_secs: 5 s is shorter than the group's sampling interval of 15 s"),
        "{}",
        err.message()
    );
    assert!(h.engine.store.list_alarms(None).unwrap().is_empty());
    create_alarm(&h.engine, alarm(15)).await.unwrap();
    let err = modify_alarm(
        &h.engine,
        pb::ModifyAlarmRequest {
            scaling_group: "web".into(),
            alarm: "cpu-high".into(),
            period_secs: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("period_secs: 1 s is shorter than the group's sampling interval of 15 s"),
        "{}",
        err.message()
    );
    // Raising the sampling interval past the alarm's period is refused,
    // naming the alarm; nothing changes.
    let err = modify_scaling_group(&h.engine, set_sampling(30))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains(
            "sampling_interval_secs: 30 s is longer than the period of alarm `cpu-high` (15 s)"
        ),
        "{}",
        err.message()
    );
    let group = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    assert_eq!(group.sampling_interval_secs, 15);
    let stored = h.engine.store.list_alarms(None).unwrap();
    assert_eq!(stored[0].spec.period_secs, 15);
    modify_scaling_group(&h.engine, set_sampling(15))
        .await
        .unwrap();
}

/// Alarms stored by a build whose target tracking used per-minute periods
/// move to the sampling interval when a term starts; a rule that asks for
/// ESS's minute keeps it.
#[tokio::test]
async fn a_new_term_moves_old_per_minute_target_alarms_to_the_sampling_interval() {
    use super::alarms::align_owned_alarms;
    let h = Harness::new(1, 3, 1).await;
    h.rule("cpu-50", tracking(0, 300));
    let mut minute = tracking(0, 300);
    if let RuleKind::TargetTracking { alarm_period, .. } = &mut minute {
        *alarm_period = ebb_core::rules::AlarmPeriod::Minute;
    }
    h.rule("cpu-ess", minute);
    let periods = || -> Vec<(String, u32)> {
        let mut p: Vec<(String, u32)> = h
            .engine
            .store
            .list_alarms(None)
            .unwrap()
            .into_iter()
            .map(|a| (a.name, a.spec.period_secs))
            .collect();
        p.sort();
        p
    };
    let old: Vec<Write> = h
        .engine
        .store
        .list_alarms(None)
        .unwrap()
        .into_iter()
        .map(|mut a| {
            a.spec.period_secs = 60;
            Write::PutAlarm(a)
        })
        .collect();
    h.engine.store.commit(old).unwrap();
    assert_eq!(align_owned_alarms(&h.engine).await.unwrap(), 2);
    let want = |p: u32| {
        vec![
            ("cpu-50-in".to_owned(), p),
            ("cpu-50-out".to_owned(), p),
            ("cpu-ess-in".to_owned(), 60),
            ("cpu-ess-out".to_owned(), 60),
        ]
    };
    assert_eq!(periods(), want(1));
    assert_eq!(align_owned_alarms(&h.engine).await.unwrap(), 0, "once only");
}

#[tokio::test]
async fn target_tracking_alarms_follow_the_sampling_interval() {
    use crate::api::groups::modify_scaling_group;
    let h = Harness::new(1, 3, 1).await;
    create_scaling_rule(
        &h.engine,
        pb::CreateScalingRuleRequest {
            scaling_group: "web".into(),
            name: "cpu-50".into(),
            definition_json:
                r#"{"rule_type":"TargetTrackingScalingRule","metric":"CpuUtilization","target_value":50}"#
                    .into(),
        },
    )
    .await
    .unwrap();
    let periods = || -> Vec<u32> {
        h.engine
            .store
            .list_alarms(None)
            .unwrap()
            .iter()
            .map(|a| a.spec.period_secs)
            .collect()
    };
    // The group samples every second: so do the alarms.
    assert_eq!(periods(), [1, 1]);
    // A sampling interval that is no alarm period rounds up to one.
    modify_scaling_group(&h.engine, set_sampling(100))
        .await
        .unwrap();
    assert_eq!(periods(), [120, 120]);
    modify_scaling_group(&h.engine, set_sampling(5))
        .await
        .unwrap();
    assert_eq!(periods(), [5, 5]);
    // ESS's per-minute alarms, on request, and a minute at least.
    create_scaling_rule(
        &h.engine,
        pb::CreateScalingRuleRequest {
            scaling_group: "web".into(),
            name: "load-2".into(),
            definition_json:
                r#"{"rule_type":"TargetTrackingScalingRule","metric":"LoadAverage","target_value":2,"alarm_period":"Minute"}"#
                    .into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(periods(), [5, 5, 60, 60]);
    modify_scaling_group(&h.engine, set_sampling(100))
        .await
        .unwrap();
    assert_eq!(periods(), [120, 120, 120, 120]);
    modify_scaling_group(&h.engine, set_sampling(15))
        .await
        .unwrap();
    assert_eq!(periods(), [15, 15, 60, 60]);
    // A rule made on a slow group starts there.
    modify_scaling_group(&h.engine, set_sampling(300))
        .await
        .unwrap();
    create_scaling_rule(
        &h.engine,
        pb::CreateScalingRuleRequest {
            scaling_group: "web".into(),
            name: "mem-50".into(),
            definition_json:
                r#"{"rule_type":"TargetTrackingScalingRule","metric":"MemoryUtilization","target_value":50}"#
                    .into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(periods(), [300; 6]);
}

#[tokio::test]
async fn a_running_activity_is_found_behind_many_rejected_ones() {
    use crate::api::groups::modify_scaling_group;
    let h = Harness::new(1, 6, 2).await;
    let long = activity::start(&h.group, 2, 3, Trigger::Api, "long".into(), h.now());
    let mut writes = vec![Write::PutActivity(long.clone())];
    for i in 0..25 {
        writes.push(Write::PutActivity(activity::rejected(
            &h.group,
            2,
            3,
            Trigger::Alarm,
            format!("run {i}"),
            "an activity is in progress".into(),
            h.now() + 1000 * (i + 1),
        )));
    }
    h.engine.store.commit(writes).unwrap();
    h.clock.advance_ms(30_000);
    let found = h.engine.running_activity(&h.group.id).unwrap();
    assert_eq!(found.map(|a| a.id), Some(long.id.clone()));
    // A new change supersedes it: never two at once.
    modify_scaling_group(
        &h.engine,
        pb::ModifyScalingGroupRequest {
            scaling_group: "web".into(),
            desired_capacity: Some(4),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let running: Vec<_> = h
        .activities()
        .into_iter()
        .filter(Activity::is_running)
        .collect();
    assert_eq!(running.len(), 1, "{running:#?}");
    assert_eq!(running[0].capacity_to, 4);
    let old = h.engine.store.get_activity(&long.id).unwrap().unwrap();
    assert_eq!(old.status, ActivityStatus::Warning);
}

#[tokio::test]
async fn activities_are_filtered_before_the_limit_and_paged() {
    use crate::api::activities::describe_scaling_activities;
    let h = Harness::new(1, 6, 2).await;
    // 40 activities a second apart: every fourth Successful, the rest Rejected.
    let mut writes = Vec::new();
    for i in 0..40 {
        let mut a = activity::rejected(
            &h.group,
            2,
            3,
            Trigger::Alarm,
            format!("run {i}"),
            "the cooldown holds".into(),
            T0 + 1000 * i,
        );
        if i % 4 == 0 {
            a.status = ActivityStatus::Successful;
            a.error = None;
        }
        writes.push(Write::PutActivity(a));
    }
    h.engine.store.commit(writes).unwrap();
    let describe =
        |req: pb::DescribeScalingActivitiesRequest| describe_scaling_activities(&h.engine, req);
    let causes = |r: &pb::DescribeScalingActivitiesResponse| -> Vec<String> {
        r.activities.iter().map(|a| a.cause.clone()).collect()
    };
    // An old client's `limit`: five Successful ones, though the newest
    // five activities hold only one.
    let r = describe(pb::DescribeScalingActivitiesRequest {
        scaling_group: "web".into(),
        status: "Successful".into(),
        limit: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        causes(&r),
        ["run 36", "run 32", "run 28", "run 24", "run 20"]
    );
    // Pages of 3 since run 10 (T0 + 10 s), followed to the end.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = describe(pb::DescribeScalingActivitiesRequest {
            scaling_group: "web".into(),
            status: "Successful".into(),
            since_ms: T0 + 10_000,
            page_size: 3,
            page_token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(r.activities.len() <= 3);
        seen.extend(causes(&r));
        pages += 1;
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(
        seen,
        [
            "run 36", "run 32", "run 28", "run 24", "run 20", "run 16", "run 12"
        ]
    );
    assert_eq!(pages, 3);
    // Bad paging input names its field.
    let err = describe(pb::DescribeScalingActivitiesRequest {
        page_token: "yesterday".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("page_token: `yesterday` is not"),
        "{}",
        err.message()
    );
    let err = describe(pb::DescribeScalingActivitiesRequest {
        page_size: 10,
        limit: 20,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(
        err.message()
            .contains("page_size: 10 differs from limit 20"),
        "{}",
        err.message()
    );
    let err = describe(pb::DescribeScalingActivitiesRequest {
        page_size: 1001,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(
        err.message().contains("page_size: 1001 is above 1000"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn the_cooldown_holds_behind_many_rejected_activities() {
    let h = Harness::new(1, 6, 2).await;
    let mut done = activity::start(&h.group, 1, 2, Trigger::Api, "done".into(), h.now());
    activity::complete(&mut done, h.now());
    let mut writes = vec![Write::PutActivity(done.clone())];
    // An alarm refused again and again: more refusals than any fixed window.
    for i in 0..60 {
        writes.push(Write::PutActivity(activity::rejected(
            &h.group,
            2,
            3,
            Trigger::Alarm,
            format!("run {i}"),
            "the ScaleOut process of the group is suspended".into(),
            h.now() + 1000 * (i + 1),
        )));
    }
    h.engine.store.commit(writes).unwrap();
    h.clock.advance_ms(120_000);
    let group = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    let snap = h.engine.snapshot(&group).unwrap();
    assert_eq!(
        snap.cooldown_start_ms, done.ended_at_ms,
        "the cooldown starts when the last completed activity ended"
    );
    let run = RuleRun {
        trigger: Trigger::Alarm,
        what: "t".into(),
        metric_value: None,
        threshold: None,
        alarm: None,
    };
    let d = decide(&simple(1, 300), &run, &snap.view(&group), h.now());
    assert!(
        matches!(d.refusal, Some(ebb_core::decide::Refusal::Cooldown { .. })),
        "{:?}",
        d.refusal
    );
}

#[tokio::test]
async fn old_activities_are_pruned_but_not_the_running_one_nor_the_cooldowns_start() {
    let mut h = Harness::new(1, 6, 2).await;
    h.engine.retention = super::Retention {
        keep_per_group: 3,
        max_age: Duration::from_secs(3600),
    };
    let hour = 3_600_000;
    let running = activity::start(
        &h.group,
        2,
        3,
        Trigger::Api,
        "running".into(),
        T0 - 4 * hour,
    );
    let mut older = activity::start(&h.group, 1, 2, Trigger::Api, "older".into(), T0 - 3 * hour);
    activity::complete(&mut older, T0 - 3 * hour + 1000);
    let mut latest = activity::start(&h.group, 2, 2, Trigger::Api, "latest".into(), T0 - 2 * hour);
    activity::complete(&mut latest, T0 - 2 * hour + 1000);
    let mut writes: Vec<Write> = [&running, &older, &latest]
        .into_iter()
        .map(|a| Write::PutActivity(a.clone()))
        .collect();
    // Recent refusals, more than the group keeps.
    let rejected: Vec<Activity> = (0..8)
        .map(|i| {
            activity::rejected(
                &h.group,
                2,
                3,
                Trigger::Alarm,
                format!("run {i}"),
                "the group is in its cooldown".into(),
                T0 - 600_000 + 1000 * i,
            )
        })
        .collect();
    writes.extend(rejected.iter().cloned().map(Write::PutActivity));
    h.engine.store.commit(writes).unwrap();

    assert_eq!(h.engine.prune_activities().await.unwrap(), 6);
    let left: Vec<String> = h
        .engine
        .store
        .list_activities(Some(&h.group.id), 100)
        .unwrap()
        .into_iter()
        .map(|a| a.cause)
        .collect();
    // The newest three by count; the older completed one by age; the
    // running one and the latest completed one kept however old.
    assert_eq!(left, ["run 7", "run 6", "run 5", "latest", "running"]);
    let group = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    let snap = h.engine.snapshot(&group).unwrap();
    assert_eq!(snap.cooldown_start_ms, latest.ended_at_ms);
    assert_eq!(snap.running.map(|a| a.id), Some(running.id.clone()));

    // Once a minute: a newer refusal waits for the next round.
    let newest = activity::rejected(
        &h.group,
        2,
        3,
        Trigger::Alarm,
        "run 8".into(),
        "the group is in its cooldown".into(),
        T0,
    );
    h.engine
        .store
        .commit(vec![Write::PutActivity(newest)])
        .unwrap();
    h.clock.advance_ms(30_000);
    assert_eq!(h.engine.prune_activities().await.unwrap(), 0);
    h.clock.advance_ms(30_000);
    assert_eq!(h.engine.prune_activities().await.unwrap(), 1);
    assert_eq!(
        h.engine
            .store
            .list_activities(Some(&h.group.id), 100)
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn an_activity_names_the_admin_whose_call_started_it() {
    let h = Harness::new(1, 6, 2).await;
    let by_engine = activity::start(&h.group, 2, 3, Trigger::Alarm, "alarm".into(), T0);
    assert_eq!(by_engine.initiated_by, None);
    let alice = "spiffe://ebb.local/admin/alice".to_owned();
    let (started, rejected) = activity::as_admin(alice.clone(), async {
        (
            activity::start(&h.group, 2, 3, Trigger::Api, "api".into(), T0),
            activity::rejected(&h.group, 2, 3, Trigger::Api, "api".into(), "no".into(), T0),
        )
    })
    .await;
    assert_eq!(started.initiated_by.as_deref(), Some(alice.as_str()));
    assert_eq!(rejected.initiated_by.as_deref(), Some(alice.as_str()));
    // Stored and read back with it.
    h.engine
        .store
        .commit(vec![Write::PutActivity(started.clone())])
        .unwrap();
    let back = h.engine.store.get_activity(&started.id).unwrap().unwrap();
    assert_eq!(back.initiated_by, started.initiated_by);
}

/// A target agent at the test's edge: it applies whatever the controller
/// last sent it, at once, and reports each member as held, with the
/// sessions the test sets. The real agents are tested against a real
/// HAProxy and PostgreSQL in agent/ and end to end in tests/.
struct FakeTarget {
    name: String,
    session: u64,
    desired: tokio::sync::watch::Receiver<Arc<pb::TargetState>>,
    sessions: Mutex<std::collections::HashMap<String, u32>>,
}

impl FakeTarget {
    fn connect(engine: &Engine, name: &str) -> Self {
        let (session, desired) = engine.fleet.targets.connect(name);
        Self {
            name: name.into(),
            session,
            desired,
            sessions: Mutex::default(),
        }
    }

    fn state(&self) -> pb::TargetState {
        (**self.desired.borrow()).clone()
    }

    /// The members of its one load balancer (or allow-list), by id and state.
    fn members(&self) -> Vec<(String, pb::MemberState)> {
        let s = self.state();
        let members = s
            .load_balancers
            .first()
            .map(|l| l.members.clone())
            .or_else(|| s.allow_lists.first().map(|a| a.members.clone()))
            .unwrap_or_default();
        members
            .into_iter()
            .map(|m| {
                let state = m.state();
                (m.instance_id, state)
            })
            .collect()
    }

    fn apply(&self, engine: &Engine) {
        let s = self.state();
        let sessions = self.sessions.lock().unwrap();
        let report = |id: &str, members: &[pb::Member]| pb::AttachmentReport {
            attachment_id: id.into(),
            error: String::new(),
            members: members
                .iter()
                .map(|m| pb::MemberReport {
                    instance_id: m.instance_id.clone(),
                    state: m.state,
                    up: None,
                    current_sessions: sessions.get(&m.instance_id).copied().unwrap_or(0),
                    error: String::new(),
                })
                .collect(),
        };
        let attachments = s
            .load_balancers
            .iter()
            .map(|l| report(&l.attachment_id, &l.members))
            .chain(
                s.allow_lists
                    .iter()
                    .map(|a| report(&a.attachment_id, &a.members)),
            )
            .collect();
        assert!(engine.fleet.targets.report(
            &self.name,
            self.session,
            pb::TargetReport {
                version: s.version,
                attachments,
            }
        ));
    }
}

/// An Active group holding one InService instance at 10.0.0.1, attached to
/// load balancer `lb1/web` (drain 30 s) and allow-list `pg1/app/all`, with
/// both targets connected and caught up.
async fn attached_harness() -> (Harness, FakeTarget, FakeTarget) {
    use crate::api::attachments::{attach_db_instances, attach_load_balancers};
    let h = Harness::new(0, 4, 1).await;
    let mut inst = h.engine.store.get_instance("i-0").unwrap().unwrap();
    inst.address = Some("10.0.0.1".into());
    h.engine
        .store
        .commit(vec![Write::PutInstance(inst)])
        .unwrap();
    attach_load_balancers(
        &h.engine,
        pb::AttachLoadBalancersRequest {
            scaling_group: "web".into(),
            load_balancers: vec![pb::LoadBalancerAttachment {
                target: "lb1".into(),
                backend: "web".into(),
                port: 8080,
                ..Default::default()
            }],
        },
    )
    .await
    .unwrap();
    attach_db_instances(
        &h.engine,
        pb::AttachDbInstancesRequest {
            scaling_group: "web".into(),
            db_instances: vec![pb::DbInstanceAttachment {
                target: "pg1".into(),
                database: "app".into(),
                user: "all".into(),
                ..Default::default()
            }],
        },
    )
    .await
    .unwrap();
    let lb = FakeTarget::connect(&h.engine, "lb1");
    let pg = FakeTarget::connect(&h.engine, "pg1");
    h.engine.reconcile_all().await.unwrap();
    lb.apply(&h.engine);
    pg.apply(&h.engine);
    (h, lb, pg)
}

impl Harness {
    /// A new controller on the same store and clock: what a restart leaves.
    fn restarted(&self) -> Engine {
        Engine::new(
            self.engine.store.clone(),
            self.provider.clone(),
            Arc::new(Fleet::new(1000, Arc::new(self.clock.clone()))),
            Arc::new(ebb_certs::Ca::generate("ebb.local", ebb_certs::CA_VALIDITY).unwrap()),
            LaunchSettings {
                controller: "127.0.0.1:1".into(),
                server_name: "localhost".into(),
                timeout: Duration::from_secs(60),
            },
        )
    }
}

/// Sets the group's desired capacity (with a configuration to launch from).
fn set_desired(h: &Harness, n: u32) {
    let mut g = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    let mut writes = Vec::new();
    if g.active_configuration_id.is_none() {
        let spec = ebb_core::model::ConfigurationSpec {
            name: Some("cfg".into()),
            ..Default::default()
        };
        let c =
            ebb_core::model::ScalingConfiguration::create("asc-1".into(), g.id.clone(), &spec, 0)
                .unwrap();
        g.active_configuration_id = Some(c.id.clone());
        writes.push(Write::PutConfiguration(c));
    }
    g.desired_capacity = n;
    writes.push(Write::UpdateGroup(g));
    h.engine.store.commit(writes).unwrap();
}

fn instance(h: &Harness, id: &str) -> Option<Instance> {
    h.engine.store.get_instance(id).unwrap()
}

fn ready(id: &str) -> (String, pb::MemberState) {
    (id.to_owned(), pb::MemberState::Ready)
}

#[tokio::test]
async fn a_new_instance_goes_in_service_only_once_every_target_holds_it() {
    use ebb_core::model::attachments::AttachPhase;
    let (h, lb, pg) = attached_harness().await;
    assert_eq!(lb.members(), [ready("i-0")]);
    set_desired(&h, 2);
    h.engine.reconcile_all().await.unwrap();
    let new = provided(&h).pop().expect("a launch");
    // Launched, not yet connected: on no target.
    h.engine.reconcile_all().await.unwrap();
    assert_eq!(lb.members(), [ready("i-0")]);
    h.engine.fleet.connect(pb::Hello {
        instance_id: new.clone(),
        addresses: vec!["10.0.0.2".into()],
        ..Default::default()
    });
    h.engine.reconcile_all().await.unwrap();
    let inst = instance(&h, &new).unwrap();
    assert_eq!(inst.lifecycle_state, LifecycleState::Pending);
    assert_eq!(inst.address.as_deref(), Some("10.0.0.2"));
    assert!(matches!(
        inst.attach_phase,
        Some(AttachPhase::Registering { .. })
    ));
    // Sent to both targets; neither has applied it: still Pending.
    assert_eq!(lb.members(), [ready("i-0"), ready(&new)]);
    assert_eq!(pg.members().len(), 2);
    h.clock.advance_ms(1_000);
    h.engine.reconcile_all().await.unwrap();
    assert_eq!(
        instance(&h, &new).unwrap().lifecycle_state,
        LifecycleState::Pending
    );
    // The load balancer alone is not enough.
    lb.apply(&h.engine);
    h.engine.reconcile_all().await.unwrap();
    assert_eq!(
        instance(&h, &new).unwrap().lifecycle_state,
        LifecycleState::Pending
    );
    pg.apply(&h.engine);
    h.engine.reconcile_all().await.unwrap();
    let inst = instance(&h, &new).unwrap();
    assert_eq!(inst.lifecycle_state, LifecycleState::InService);
    assert_eq!(inst.attach_phase, None);
    let act = h.activities().pop().unwrap();
    assert_eq!(act.status, ActivityStatus::Successful, "{act:?}");
    assert!(
        act.details
            .iter()
            .any(|d| d.contains(&format!("instance {new} registered on every attachment"))),
        "{:?}",
        act.details
    );
}

#[tokio::test]
async fn a_target_that_never_confirms_makes_the_activity_a_warning_not_a_hang() {
    let (h, _lb, pg) = attached_harness().await;
    set_desired(&h, 2);
    h.engine.reconcile_all().await.unwrap();
    let new = provided(&h).pop().unwrap();
    h.engine.fleet.connect(pb::Hello {
        instance_id: new.clone(),
        addresses: vec!["10.0.0.2".into()],
        ..Default::default()
    });
    h.engine.reconcile_all().await.unwrap();
    pg.apply(&h.engine);
    h.clock
        .advance_ms(super::attachments::REGISTRATION_TIMEOUT_MS - 1_000);
    h.engine.reconcile_all().await.unwrap();
    assert_eq!(
        instance(&h, &new).unwrap().lifecycle_state,
        LifecycleState::Pending
    );
    h.clock.advance_ms(2_000);
    h.engine.reconcile_all().await.unwrap();
    assert_eq!(
        instance(&h, &new).unwrap().lifecycle_state,
        LifecycleState::InService
    );
    let act = h.activities().pop().unwrap();
    assert_eq!(act.status, ActivityStatus::Warning);
    let error = act.error.unwrap_or_default();
    assert!(
        error.contains("lb1/web (the target does not hold it yet)"),
        "{error}"
    );
}

#[tokio::test]
async fn a_leaving_instance_drains_until_idle_then_leaves_before_its_release() {
    use ebb_core::model::attachments::AttachPhase;
    let (h, lb, pg) = attached_harness().await;
    set_desired(&h, 0);
    h.engine.reconcile_all().await.unwrap();
    let inst = instance(&h, "i-0").unwrap();
    assert_eq!(inst.lifecycle_state, LifecycleState::Removing);
    assert!(matches!(
        inst.attach_phase,
        Some(AttachPhase::Draining { .. })
    ));
    assert_eq!(lb.members(), [("i-0".to_owned(), pb::MemberState::Drain)]);
    // Sessions remain: it keeps draining.
    lb.sessions.lock().unwrap().insert("i-0".into(), 3);
    lb.apply(&h.engine);
    h.clock.advance_ms(5_000);
    h.engine.reconcile_all().await.unwrap();
    assert!(matches!(
        instance(&h, "i-0").unwrap().attach_phase,
        Some(AttachPhase::Draining { .. })
    ));
    // Idle: deregistered from the load balancer, still allowed by the
    // database until its record is gone.
    lb.sessions.lock().unwrap().insert("i-0".into(), 0);
    lb.apply(&h.engine);
    h.engine.reconcile_all().await.unwrap();
    assert!(matches!(
        instance(&h, "i-0").unwrap().attach_phase,
        Some(AttachPhase::Deregistering { .. })
    ));
    assert!(lb.members().is_empty());
    assert_eq!(pg.members().len(), 1);
    h.engine.reconcile_all().await.unwrap();
    assert!(
        instance(&h, "i-0").is_some(),
        "released before deregistered"
    );
    lb.apply(&h.engine);
    h.engine.reconcile_all().await.unwrap();
    assert!(instance(&h, "i-0").is_none());
    h.engine.reconcile_all().await.unwrap();
    assert!(pg.members().is_empty());
    let act = h.activities().pop().unwrap();
    assert_eq!(act.status, ActivityStatus::Successful, "{act:?}");
    let details = act.details.join("\n");
    assert!(
        details.contains("instance i-0 drained in 5.0s (no sessions left)"),
        "{details}"
    );
    assert!(
        details.contains("instance i-0 deregistered in"),
        "{details}"
    );
}

#[tokio::test]
async fn a_drain_ends_at_its_timeout_and_goes_on_after_a_controller_restart() {
    use ebb_core::model::attachments::AttachPhase;
    let (h, lb, _pg) = attached_harness().await;
    set_desired(&h, 0);
    h.engine.reconcile_all().await.unwrap();
    lb.sessions.lock().unwrap().insert("i-0".into(), 7);
    lb.apply(&h.engine);
    // A new controller on the same store: no target has connected to it.
    let engine = h.restarted();
    h.clock.advance_ms(29_000);
    engine.reconcile_all().await.unwrap();
    assert!(matches!(
        instance(&h, "i-0").unwrap().attach_phase,
        Some(AttachPhase::Draining { .. })
    ));
    h.clock.advance_ms(1_000);
    engine.reconcile_all().await.unwrap();
    // Drained by the timeout; its target is not connected to this
    // controller, so nothing holds the server here, and the target drops it
    // when it connects (its state no longer has it).
    engine.reconcile_all().await.unwrap();
    assert!(instance(&h, "i-0").is_none());
    let details = h.activities().pop().unwrap().details.join("\n");
    assert!(
        details.contains("drained in 30.0s (drain timeout)"),
        "{details}"
    );
    assert_eq!(details.matches("deregistered").count(), 1, "{details}");
}

#[tokio::test]
async fn standby_lost_and_unhealthy_instances_leave_the_load_balancer_at_once() {
    let (h, lb, pg) = attached_harness().await;
    h.add_instance("i-1", h.now());
    let mut inst = instance(&h, "i-1").unwrap();
    inst.address = Some("10.0.0.2".into());
    h.engine
        .store
        .commit(vec![Write::PutInstance(inst.clone())])
        .unwrap();
    set_desired(&h, 2);
    h.engine.reconcile_all().await.unwrap();
    assert_eq!(lb.members(), [ready("i-0"), ready("i-1")]);
    // Lost: its agent's stream is gone.
    let session = h.engine.fleet.connect(pb::Hello {
        instance_id: "i-1".into(),
        ..Default::default()
    });
    session.disconnected(&h.engine.fleet, "test");
    h.engine.reconcile_all().await.unwrap();
    let maint = ("i-1".to_owned(), pb::MemberState::Maint);
    assert_eq!(lb.members(), [ready("i-0"), maint.clone()]);
    // Back, then Standby.
    h.engine.fleet.connect(pb::Hello {
        instance_id: "i-1".into(),
        ..Default::default()
    });
    h.engine.reconcile_all().await.unwrap();
    assert_eq!(lb.members(), [ready("i-0"), ready("i-1")]);
    inst.lifecycle_state = LifecycleState::Standby;
    h.engine
        .store
        .commit(vec![Write::PutInstance(inst.clone())])
        .unwrap();
    h.engine.reconcile_all().await.unwrap();
    assert_eq!(lb.members(), [ready("i-0"), maint.clone()]);
    // A Standby instance keeps its database access.
    assert_eq!(pg.members().len(), 2);
    inst.lifecycle_state = LifecycleState::InService;
    inst.health_status = HealthStatus::Unhealthy;
    h.engine
        .store
        .commit(vec![Write::PutInstance(inst)])
        .unwrap();
    let mut g = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    g.suspended_processes.push(Process::HealthCheck);
    h.engine.store.commit(vec![Write::UpdateGroup(g)]).unwrap();
    h.engine.reconcile_all().await.unwrap();
    assert_eq!(lb.members(), [ready("i-0"), maint]);
}

#[tokio::test]
async fn a_detached_load_balancer_is_emptied_then_dropped() {
    use crate::api::attachments::{describe_load_balancers, detach_load_balancers};
    let (h, lb, _pg) = attached_harness().await;
    detach_load_balancers(
        &h.engine,
        pb::DetachLoadBalancersRequest {
            scaling_group: "web".into(),
            load_balancers: vec![pb::LoadBalancerRef {
                target: "lb1".into(),
                backend: "web".into(),
            }],
        },
    )
    .await
    .unwrap();
    h.engine.reconcile_all().await.unwrap();
    // Sent with no members until the target confirms.
    let state = lb.state();
    assert_eq!(state.load_balancers.len(), 1);
    assert!(state.load_balancers[0].members.is_empty());
    let listed = describe_load_balancers(
        &h.engine,
        pb::DescribeLoadBalancersRequest {
            scaling_group: "web".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.load_balancers[0].state, "Detaching");
    assert!(listed.load_balancers[0].target_connected);
    lb.apply(&h.engine);
    h.engine.reconcile_all().await.unwrap();
    let g = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    assert!(g.load_balancers.is_empty());
    h.engine.reconcile_all().await.unwrap();
    assert!(lb.state().load_balancers.is_empty());
    // The instance is InService as before, now on no load balancer.
    assert_eq!(
        instance(&h, "i-0").unwrap().lifecycle_state,
        LifecycleState::InService
    );
}

#[tokio::test]
async fn an_instance_held_by_a_scale_out_hook_registers_once_the_hook_continues() {
    use ebb_core::model::attachments::AttachPhase;
    use ebb_core::model::hooks::{HookSpec, LifecycleHook};
    let (h, lb, pg) = attached_harness().await;
    let mut g = h.engine.store.get_group(&h.group.id).unwrap().unwrap();
    let spec = HookSpec {
        name: "hold".into(),
        transition: "SCALE_OUT".into(),
        ..Default::default()
    };
    g.lifecycle_hooks
        .push(LifecycleHook::create("ash-1".into(), &spec, &[], 0).unwrap());
    h.engine.store.commit(vec![Write::UpdateGroup(g)]).unwrap();
    set_desired(&h, 2);
    h.engine.reconcile_all().await.unwrap();
    let new = provided(&h).pop().unwrap();
    h.engine.fleet.connect(pb::Hello {
        instance_id: new.clone(),
        addresses: vec!["10.0.0.2".into()],
        ..Default::default()
    });
    h.engine.reconcile_all().await.unwrap();
    let inst = instance(&h, &new).unwrap();
    assert_eq!(inst.lifecycle_state, LifecycleState::PendingWait);
    // Held by its hook: on no target yet.
    assert_eq!(lb.members(), [ready("i-0")]);
    assert_eq!(pg.members().len(), 1);
    crate::api::hooks::complete_lifecycle_action(
        &h.engine,
        pb::CompleteLifecycleActionRequest {
            action: Some(pb::LifecycleActionRef {
                instance_id: new.clone(),
                hook: "hold".into(),
                ..Default::default()
            }),
            result: "CONTINUE".into(),
        },
    )
    .await
    .unwrap();
    h.engine.reconcile_all().await.unwrap();
    let inst = instance(&h, &new).unwrap();
    assert_eq!(inst.lifecycle_state, LifecycleState::Pending);
    assert!(matches!(
        inst.attach_phase,
        Some(AttachPhase::Registering { .. })
    ));
    assert_eq!(lb.members(), [ready("i-0"), ready(&new)]);
    lb.apply(&h.engine);
    pg.apply(&h.engine);
    h.engine.reconcile_all().await.unwrap();
    assert_eq!(
        instance(&h, &new).unwrap().lifecycle_state,
        LifecycleState::InService
    );
}

#[tokio::test]
async fn a_restarted_controller_keeps_servers_ready_while_agents_reconnect() {
    let (h, _lb, _pg) = attached_harness().await;
    // A new controller on the same store: no agent has reconnected yet.
    let engine = h.restarted();
    let lb = FakeTarget::connect(&engine, "lb1");
    // Connected before the first pass: told nothing yet.
    assert!(!lb.desired.has_changed().unwrap());
    engine.reconcile_all().await.unwrap();
    assert_eq!(lb.members(), [ready("i-0")]);
    // An agent that does not come back within the grace is lost.
    h.clock
        .advance_ms(super::DEFAULT_RECONNECT_GRACE.as_millis() as i64 + 1_000);
    engine.reconcile_all().await.unwrap();
    assert_eq!(lb.members(), [("i-0".to_owned(), pb::MemberState::Maint)]);
}

/// Two days of per-minute history before `T0`: a load of 100 (two
/// instances at 50 % CPU), rising to 400 from 12:00 to 14:00 each day.
fn seed_daily_rise(h: &Harness) {
    use ebb_core::rules::predict::{MetricRollup, MinuteRollup};
    let writes: Vec<Write> = (0..2 * 1440)
        .map(|m| {
            let minute_ms = T0 - 2 * 86_400_000 + m * 60_000;
            let minute_of_day = m % 1440;
            let busy = (720..840).contains(&minute_of_day);
            Write::PutRollup(MinuteRollup {
                group_id: h.group.id.clone(),
                minute_ms,
                in_service: if busy { 8 } else { 2 },
                metrics: vec![MetricRollup {
                    metric: "CpuUtilization".into(),
                    average: 50.0,
                    max: 55.0,
                    count: 120,
                }],
            })
        })
        .collect();
    for chunk in writes.chunks(500) {
        h.engine.store.commit(chunk.to_vec()).unwrap();
    }
}

fn predictive(mode: ebb_core::rules::PredictiveMode, lead_secs: u32) -> RuleKind {
    RuleKind::Predictive {
        metric: Metric::CpuUtilization,
        target_value: 50.0,
        predictive_scaling_mode: mode,
        predictive_value_behavior: Default::default(),
        predictive_value_buffer: None,
        predictive_task_buffer_secs: Some(lead_secs),
    }
}

/// Runs the predictive pass at `T0 + at`.
async fn forecast_pass_at(h: &Harness, at_ms: i64) {
    h.clock.advance_ms(T0 + at_ms - h.now());
    super::predictive::predictive_pass(&h.engine).await.unwrap();
}

const HOUR_MS: i64 = 3_600_000;

#[tokio::test]
async fn each_finished_minute_of_samples_is_rolled_up_once() {
    let h = Harness::new(1, 5, 2).await;
    // Six samples each in the minute [T0, T0 + 60 s): i-0 at 40, i-1 at 60 then 90.
    for s in 0..6 {
        h.clock.advance_ms(if s == 0 { 5_000 } else { 10_000 });
        let late = if s < 3 { 60.0 } else { 90.0 };
        h.sample(&[("i-0", 40.0), ("i-1", late)]);
    }
    h.clock.advance_ms(T0 + 60_000 + PERIOD_GRACE_MS - h.now());
    assert_eq!(super::predictive::roll_up(&h.engine).await.unwrap(), 1);
    // The same minute is not written twice.
    assert_eq!(super::predictive::roll_up(&h.engine).await.unwrap(), 0);
    let rollups = h.engine.store.list_rollups(&h.group.id, 0).unwrap();
    assert_eq!(rollups.len(), 1);
    let r = &rollups[0];
    assert_eq!((r.minute_ms, r.in_service), (T0, 2));
    let cpu = &r.metrics[0];
    assert_eq!(cpu.metric, "CpuUtilization");
    // The group's average of instance averages: (40 + 75) / 2.
    assert_eq!((cpu.average, cpu.max, cpu.count), (57.5, 90.0, 12));
    // Load for the forecast: the average times the instances in service.
    assert_eq!(r.load(&Metric::CpuUtilization).unwrap().load, 115.0);
}

#[tokio::test]
async fn a_forecast_floor_raises_desired_before_the_rise_and_holds_scale_ins() {
    let h = Harness::new(1, 10, 2).await;
    seed_daily_rise(&h);
    h.rule(
        "forecast",
        predictive(ebb_core::rules::PredictiveMode::ForecastAndScale, 600),
    );
    // 11:45: the rise at 12:00 is 15 minutes off, beyond the 10-minute lead.
    forecast_pass_at(&h, 11 * HOUR_MS + 45 * 60_000).await;
    assert_eq!(h.desired(), 2);
    assert!(h.activities().is_empty());
    // 11:51: within the lead; the floor is ceil(400 / 50) = 8.
    forecast_pass_at(&h, 11 * HOUR_MS + 51 * 60_000).await;
    assert_eq!(h.desired(), 8);
    let acts = h.activities();
    assert_eq!(acts.len(), 1);
    let a = &acts[0];
    assert_eq!(a.trigger, Trigger::Forecast);
    assert!(
        a.cause
            .starts_with("predictive rule `forecast` forecast a load of 400.0 by "),
        "{}",
        a.cause
    );
    assert!(
        a.cause.ends_with("changing the Total Capacity from 2 to 8"),
        "{}",
        a.cause
    );
    assert!(
        a.details[0].contains("ceil(400.00 / 50) = 8"),
        "{:?}",
        a.details
    );
    h.converge();
    // A scale-in by another rule stops at the floor, naming the rule.
    let down = h.rule("down", simple(-3, 0));
    let run = RuleRun {
        trigger: Trigger::Api,
        what: "rule `down` executed".into(),
        metric_value: None,
        threshold: None,
        alarm: None,
    };
    let act = super::rules::run_rule(&h.engine, &h.group, &down.kind, &run).unwrap();
    assert_eq!(act.status, ActivityStatus::Rejected);
    assert_eq!(
        act.error.as_deref(),
        Some("the predictive rule `forecast` holds the group at or above 8 (its forecast floor)")
    );
    assert_eq!(h.desired(), 8);
    // 14:30: the forecast has fallen; the floor falls, and the scale-in goes through.
    forecast_pass_at(&h, 14 * HOUR_MS + 30 * 60_000).await;
    assert_eq!(h.desired(), 8, "the floor never scales in by itself");
    let act = super::rules::run_rule(&h.engine, &h.group, &down.kind, &run).unwrap();
    assert_eq!((act.status, h.desired()), (ActivityStatus::InProgress, 5));
}

#[tokio::test]
async fn forecast_only_changes_nothing_and_too_little_history_is_recorded_once() {
    let h = Harness::new(1, 10, 2).await;
    seed_daily_rise(&h);
    h.rule(
        "watch",
        predictive(ebb_core::rules::PredictiveMode::ForecastOnly, 600),
    );
    forecast_pass_at(&h, 11 * HOUR_MS + 55 * 60_000).await;
    forecast_pass_at(&h, 12 * HOUR_MS + 30 * 60_000).await;
    assert_eq!(h.desired(), 2);
    assert!(h.activities().is_empty());

    // A group with 23 hours of history: refused, recorded once.
    let g = Harness::new(1, 10, 2).await;
    use ebb_core::rules::predict::{MetricRollup, MinuteRollup};
    let writes: Vec<Write> = (0..23 * 60)
        .map(|m| {
            Write::PutRollup(MinuteRollup {
                group_id: g.group.id.clone(),
                minute_ms: T0 - 23 * HOUR_MS + m * 60_000,
                in_service: 2,
                metrics: vec![MetricRollup {
                    metric: "CpuUtilization".into(),
                    average: 50.0,
                    max: 50.0,
                    count: 60,
                }],
            })
        })
        .collect();
    g.engine.store.commit(writes).unwrap();
    g.rule(
        "forecast",
        predictive(ebb_core::rules::PredictiveMode::ForecastAndScale, 600),
    );
    forecast_pass_at(&g, 60_000).await;
    forecast_pass_at(&g, 120_000).await;
    let acts = g.activities();
    assert_eq!(acts.len(), 1, "{acts:?}");
    assert_eq!(acts[0].status, ActivityStatus::Rejected);
    assert_eq!(acts[0].trigger, Trigger::Forecast);
    assert_eq!(
        acts[0].error.as_deref(),
        Some(
            "too little history to forecast: 1380 minutes of the group's metric recorded, \
             a forecast needs 1440 (24 h)"
        )
    );
    assert_eq!(g.desired(), 2);
}
