//! Reaction latency with real agents launched by the process provider:
//!
//! - CPU: from the start of a burn of every core to the scale-out decision
//!   (1 s sampling, 1 s period, evaluation count 3): the burn's start, by
//!   this process's clock, to the alarm activity's `started_at_ms`, by the
//!   controller's (one machine, one clock).
//! - Kill: from SIGKILL of an attached host's agent to its instance first
//!   seen Unhealthy, polling DescribeScalingInstances every 10 ms (the mark
//!   stays at least a sampling interval before the replacement).
//!
//! `cargo build --release --workspace --bins && cargo bench -p ebb-tests
//! --bench reaction -- [--trials 20] [--cpu-only] [--smoke]`

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{flag, load_average, switch};
use ebb_proto::v1 as pb;
use ebb_tests::{
    Admin, AgentProc, Burn, ControllerProc, DEADLINE, Sandbox, admin_call, eventually,
};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn group(admin: &mut Admin, name: &str, min: u32, max: u32) {
    admin_call!(
        *admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: name.into(),
            min_size: min,
            max_size: max,
            sampling_interval_secs: Some(1),
            health_check_grace_period_secs: Some(1),
            ..Default::default()
        }
    )
    .expect("create group");
    admin_call!(
        *admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: name.into(),
            name: "v1".into(),
            command: vec!["sleep".into(), "infinity".into()],
            ..Default::default()
        }
    )
    .expect("create configuration");
    admin_call!(
        *admin,
        enable_scaling_group,
        pb::EnableScalingGroupRequest {
            scaling_group: name.into(),
            ..Default::default()
        }
    )
    .expect("enable group");
}

fn instances(admin: &mut Admin, group: &str) -> Vec<pb::Instance> {
    admin_call!(
        *admin,
        describe_scaling_instances,
        pb::DescribeScalingInstancesRequest {
            scaling_group: group.into(),
            ..Default::default()
        }
    )
    .map(|r| r.instances)
    .unwrap_or_default()
}

/// Waits for exactly `n` instances, all in service, connected and healthy.
fn ready(admin: &mut Admin, group: &str, n: usize) -> Vec<pb::Instance> {
    eventually(
        &format!("{n} healthy instances in {group}"),
        DEADLINE * 2,
        || {
            let list = instances(admin, group);
            (list.len() == n
                && list.iter().all(|i| {
                    i.lifecycle_state == "InService"
                        && i.agent_connected
                        && i.health_status == "Healthy"
                }))
            .then_some(list)
        },
    )
}

fn activities(admin: &mut Admin, group: &str) -> Vec<pb::Activity> {
    admin_call!(
        *admin,
        describe_scaling_activities,
        pb::DescribeScalingActivitiesRequest {
            scaling_group: group.into(),
            ..Default::default()
        }
    )
    .map(|r| r.activities)
    .unwrap_or_default()
}

fn alarm_state(admin: &mut Admin, group: &str, name: &str) -> String {
    admin_call!(
        *admin,
        describe_alarms,
        pb::DescribeAlarmsRequest {
            scaling_group: group.into(),
            ..Default::default()
        }
    )
    .ok()
    .and_then(|r| r.alarms.into_iter().find(|a| a.name == name))
    .map(|a| a.state)
    .unwrap_or_default()
}

/// Runs the `remove-1` rule by hand.
fn scale_in(admin: &mut Admin) {
    admin_call!(
        *admin,
        execute_scaling_rule,
        pb::ExecuteScalingRuleRequest {
            scaling_rule: "remove-1".into(),
            scaling_group: "cpu".into(),
            ..Default::default()
        }
    )
    .expect("scale in");
}

fn summary(what: &str, ms: &[i64]) -> String {
    let mut sorted = ms.to_vec();
    sorted.sort_unstable();
    let median = if sorted.is_empty() {
        0
    } else {
        sorted[sorted.len() / 2]
    };
    format!(
        "| {what} | {} | {median} | {} | {} | {:?} |",
        sorted.len(),
        sorted.first().unwrap_or(&0),
        sorted.last().unwrap_or(&0),
        ms
    )
}

fn main() {
    let smoke = switch("--smoke");
    let trials: usize = flag("--trials", if smoke { 1 } else { 20 });
    println!("load average before: {}", load_average());
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).expect("controller");
    let mut admin = Admin::local(&ctl);

    // SIGKILL of an agent → its instance marked Unhealthy. The agent runs
    // as a host's would, attached to the group: an instance the process
    // provider launched is found gone with its processes and forgotten at
    // once, without an Unhealthy mark.
    let mut kill_ms = Vec::new();
    for trial in (1..=trials).filter(|_| !switch("--cpu-only")) {
        let name = format!("kill-{trial}");
        group(&mut admin, &name, 0, 1);
        let id = format!("host-{trial}");
        // Attached first: the controller refuses an instance in no group.
        admin_call!(
            admin,
            attach_instances,
            pb::AttachInstancesRequest {
                client_token: String::new(),
                scaling_group: name.clone(),
                instance_ids: vec![id.clone()],
            }
        )
        .expect("attach");
        let agent = AgentProc::start(&ctl, &id, "").expect("agent");
        ready(&mut admin, &name, 1);
        // Past the group's health check grace period.
        std::thread::sleep(Duration::from_millis(1500));
        let started = Instant::now();
        agent.proc.signal("KILL");
        let seen = eventually("the killed instance marked Unhealthy", DEADLINE, || {
            let unhealthy = instances(&mut admin, &name)
                .iter()
                .any(|i| i.id == id && i.health_status == "Unhealthy");
            if !unhealthy {
                std::thread::sleep(Duration::from_millis(10));
            }
            unhealthy.then(|| started.elapsed())
        });
        println!("kill trial {trial}: {} ms", seen.as_millis());
        kill_ms.push(seen.as_millis() as i64);
        drop(agent);
        admin_call!(
            admin,
            delete_scaling_group,
            pb::DeleteScalingGroupRequest {
                scaling_group: name,
                force: true,
            }
        )
        .expect("delete the group");
    }

    // A sustained CPU rise → the scale-out decision.
    group(&mut admin, "cpu", 1, 2);
    ready(&mut admin, "cpu", 1);
    for (name, value) in [("add-1", 1), ("remove-1", -1)] {
        admin_call!(
            admin,
            create_scaling_rule,
            pb::CreateScalingRuleRequest {
                scaling_group: "cpu".into(),
                name: name.into(),
                definition_json: format!(
                    r#"{{"rule_type":"SimpleScalingRule","adjustment_type":"QuantityChangeInCapacity","adjustment_value":{value},"cooldown_secs":0}}"#
                ),
            }
        )
        .expect("create rule");
    }
    // One alarm only: the way back to one instance is the rule run by hand,
    // since a low-CPU alarm never fires while another build keeps the
    // shared machine busy.
    admin_call!(
        admin,
        create_alarm,
        pb::CreateAlarmRequest {
            scaling_group: "cpu".into(),
            name: "cpu-high".into(),
            metric: "CpuUtilization".into(),
            statistic: "Average".into(),
            period_secs: 1,
            comparison_operator: ">=".into(),
            threshold: 80.0,
            evaluation_count: Some(3),
            alarm_actions: vec!["add-1".into()],
            ..Default::default()
        }
    )
    .expect("create alarm");
    let mut cpu_ms = Vec::new();
    for trial in 1..=trials {
        // On a shared machine another build can hold the CPU high, and a
        // period that breaches before the burn shortens the measurement:
        // start only after three quiet samples in a row (a smoke run
        // proves only that the benchmark works, and does not wait).
        let mut quiet = 0;
        eventually(
            "host CPU below 50 % for 3 s",
            Duration::from_secs(600),
            || {
                let cpu = instances(&mut admin, "cpu")
                    .first()
                    .and_then(|i| i.cpu_utilization)
                    .unwrap_or(100.0);
                quiet = if cpu < 50.0 { quiet + 1 } else { 0 };
                if !smoke {
                    std::thread::sleep(Duration::from_secs(1));
                }
                (smoke || quiet >= 3).then_some(())
            },
        );
        // Another build may have scaled the group out meanwhile.
        if instances(&mut admin, "cpu").len() > 1 {
            scale_in(&mut admin);
        }
        ready(&mut admin, "cpu", 1);
        eventually("cpu-high OK", DEADLINE, || {
            (alarm_state(&mut admin, "cpu", "cpu-high") == "OK").then_some(())
        });
        let known: Vec<String> = activities(&mut admin, "cpu")
            .into_iter()
            .map(|a| a.id)
            .collect();
        let burn = Burn::start();
        let started_ms = now_ms();
        let out = eventually("the scale-out decision", DEADLINE * 2, || {
            activities(&mut admin, "cpu").into_iter().find(|a| {
                !known.contains(&a.id)
                    && a.trigger == "alarm"
                    && a.capacity_to == 2
                    && a.status != "Rejected"
            })
        });
        drop(burn);
        let took = out.started_at_ms - started_ms;
        println!("cpu trial {trial}: {took} ms ({})", out.cause);
        cpu_ms.push(took);
        // Back to one instance before the next trial.
        ready(&mut admin, "cpu", 2);
        scale_in(&mut admin);
    }
    println!("load average after: {}", load_average());
    println!("\n| reaction | trials | median (ms) | min (ms) | max (ms) | each (ms) |");
    println!("|---|---|---|---|---|---|");
    println!("{}", summary("CPU burn → scale-out decision", &cpu_ms));
    println!(
        "{}",
        summary("SIGKILL of agent → instance Unhealthy", &kill_ms)
    );
}
