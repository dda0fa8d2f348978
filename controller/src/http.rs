//! The plain HTTP side: `/healthz`, `/readyz` and `/metrics` (Prometheus
//! text).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use ebb_core::model::LifecycleState;
use ebb_core::rules::AlarmState;
use tokio::net::TcpListener;

use crate::engine::{Engine, Passes};
use crate::fleet::label_set;
use crate::ha::{Leadership, Role};
use crate::store::DeliveryState;

/// A leading controller whose loop has not finished a pass for this long is
/// stuck (a reconcile pass waits for slow provider launches, so generous).
pub const STUCK_AFTER: Duration = Duration::from_secs(120);

#[derive(Clone)]
struct Served {
    engine: Arc<Engine>,
    leadership: Arc<Leadership>,
    instance_metrics: bool,
}

pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    leadership: Arc<Leadership>,
    instance_metrics: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Served {
            engine,
            leadership,
            instance_metrics,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// What is wrong with this controller now, if anything: a store that does
/// not take a write, a leader's control loop that has not finished a pass
/// for `STUCK_AFTER`, or (with etcd) no way to tell whether it leads.
fn trouble(served: &Served) -> Option<String> {
    if let Role::Stalled(why) = served.leadership.role() {
        return Some(format!("not acting: {why}"));
    }
    if let Err(e) = served.engine.store.probe() {
        return Some(format!("not ok: the store does not take writes: {e}"));
    }
    if served.leadership.is_leader() {
        let passes = &served.engine.passes;
        // Counted from whichever is later: this term's start or the pass.
        let led_for = served.leadership.in_role_for();
        for (name, slot) in [
            ("reconcile", &passes.reconcile),
            ("alarm and schedule", &passes.alarms),
        ] {
            let age = Passes::age(slot).map_or(led_for, |a| a.min(led_for));
            if age > STUCK_AFTER {
                return Some(format!(
                    "not ok: the {name} loop has not finished a pass for {} s",
                    age.as_secs()
                ));
            }
        }
    }
    None
}

/// Liveness: `ok` (with the role when there are several controllers) while
/// the controller can do its job, else 503 with what is wrong.
async fn healthz(State(served): State<Served>) -> impl IntoResponse {
    if let Some(why) = trouble(&served) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    }
    if !served.leadership.is_elected() {
        return (StatusCode::OK, "ok\n".to_owned());
    }
    let role = match served.leadership.role() {
        Role::Leader => "leader".to_owned(),
        Role::Follower { leader } => format!(
            "follower; the leader is at {}",
            leader.as_deref().unwrap_or("(unknown)")
        ),
        Role::Starting | Role::Stalled(_) => "starting; no leader known yet".to_owned(),
    };
    (StatusCode::OK, format!("ok: {role}\n"))
}

/// Readiness: healthy, and either leading or following a known leader (so
/// a call sent here is served or redirected); 503 while starting.
async fn readyz(State(served): State<Served>) -> impl IntoResponse {
    if let Some(why) = trouble(&served) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        );
    }
    match served.leadership.role() {
        Role::Leader => (StatusCode::OK, "ready: leader\n".to_owned()),
        Role::Follower {
            leader: Some(leader),
        } => (StatusCode::OK, format!("ready: follower of {leader}\n")),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known yet\n".to_owned(),
        ),
    }
}

async fn metrics(State(served): State<Served>) -> impl IntoResponse {
    let engine = &served.engine;
    let mut text = String::new();
    let groups = group_metrics(engine, &mut text);
    let instances = served.instance_metrics.then_some(&groups);
    text.insert_str(0, &engine.fleet.render_metrics(instances));
    text.push_str(&engine.render_cert_metrics());
    let c = &engine.fleet.counters;
    c.activities.render(
        &mut text,
        "ebb_scaling_activities_total",
        "Scaling activities that ended or were refused, by group, trigger and status (counted by the leader).",
        &["group", "trigger", "status"],
    );
    c.task_runs.render(
        &mut text,
        "ebb_scheduled_task_runs_total",
        "Scheduled task runs by group, task and result: ran, rejected, or expired (missed beyond its launch expiration).",
        &["group", "task", "result"],
    );
    outbox_metrics(engine, &mut text);
    let _ = write!(
        text,
        "# HELP ebb_healthy 1 while /healthz answers 200: the store takes writes, the control loops pass, leadership is known.\n\
         # TYPE ebb_healthy gauge\nebb_healthy {}\n",
        u8::from(trouble(&served).is_none())
    );
    let _ = write!(
        text,
        "# HELP ebb_leader Whether this controller leads (always 1 with the SQLite store).\n\
         # TYPE ebb_leader gauge\nebb_leader {}\n",
        u8::from(served.leadership.is_leader())
    );
    let _ = write!(
        text,
        "# HELP ebb_build_info The running build: version, and the Rust target it was built for.\n\
         # TYPE ebb_build_info gauge\nebb_build_info{{{}}} 1\n",
        label_set(
            &["version", "target"],
            &[env!("CARGO_PKG_VERSION"), std::env::consts::ARCH]
        )
    );
    process_metrics(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The webhook outbox: what waits for its next attempt, and the dead
/// letters kept (a week) after every attempt failed. Left out when the
/// store cannot be read.
fn outbox_metrics(engine: &Engine, out: &mut String) {
    let Ok(counts) = engine.store.count_deliveries() else {
        return;
    };
    let total = |state| -> u64 {
        counts
            .iter()
            .filter(|c| c.state == state)
            .map(|c| c.count)
            .sum()
    };
    let _ = write!(
        out,
        "# HELP ebb_notifications_pending Webhook notifications in the outbox waiting for their next attempt.\n\
         # TYPE ebb_notifications_pending gauge\nebb_notifications_pending {}\n\
         # HELP ebb_notifications_dead_letters Webhook notifications given up on after every attempt, kept 7 days (ebbctl notification list shows them by target).\n\
         # TYPE ebb_notifications_dead_letters gauge\nebb_notifications_dead_letters {}\n",
        total(DeliveryState::Pending),
        total(DeliveryState::Dead)
    );
}

/// Each group's bounds and instances by state, and each alarm's state;
/// returns each instance's group name. A store that cannot be read leaves
/// them out (`/healthz` says why).
fn group_metrics(engine: &Engine, out: &mut String) -> HashMap<String, String> {
    let mut names = HashMap::new();
    let (Ok(groups), Ok(instances), Ok(alarms)) = (
        engine.store.list_groups(),
        engine.store.list_instances(None),
        engine.store.list_alarms(None),
    ) else {
        return names;
    };
    let gauges: [Gauge; 6] = [
        ("desired", "The group's desired capacity.", |c| c.desired),
        ("min", "The group's min_size.", |c| c.min),
        ("max", "The group's max_size.", |c| c.max),
        (
            "in_service",
            "The group's instances in service (InService).",
            |c| c.in_service,
        ),
        (
            "pending",
            "The group's instances on their way in (Pending, Pending:Wait).",
            |c| c.pending,
        ),
        ("standby", "The group's instances in Standby.", |c| {
            c.standby
        }),
    ];
    let mut counts: Vec<(String, Counts)> = Vec::new();
    for g in &groups {
        let mut c = Counts {
            desired: g.desired_capacity,
            min: g.min_size,
            max: g.max_size,
            ..Counts::default()
        };
        for i in instances.iter().filter(|i| i.group_id == g.id) {
            names.insert(i.id.clone(), g.name.clone());
            match i.lifecycle_state {
                LifecycleState::InService => c.in_service += 1,
                LifecycleState::Pending | LifecycleState::PendingWait => c.pending += 1,
                LifecycleState::Standby => c.standby += 1,
                _ => {}
            }
        }
        counts.push((g.name.clone(), c));
    }
    for (suffix, help, get) in gauges {
        let name = format!("ebb_group_{suffix}");
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for (group, c) in &counts {
            let _ = writeln!(
                out,
                "{name}{{{}}} {}",
                label_set(&["group"], &[group]),
                get(c)
            );
        }
    }
    let group_name: HashMap<&str, &str> = groups
        .iter()
        .map(|g| (g.id.as_str(), g.name.as_str()))
        .collect();
    let _ = write!(
        out,
        "# HELP ebb_alarm_state 1 for the state each alarm is in, 0 for the others.\n# TYPE ebb_alarm_state gauge\n"
    );
    for a in &alarms {
        let group = group_name.get(a.group_id.as_str()).copied().unwrap_or("");
        for state in [
            AlarmState::Ok,
            AlarmState::Alarm,
            AlarmState::InsufficientData,
        ] {
            let labels = label_set(
                &["group", "alarm", "state"],
                &[group, a.name.as_str(), &state.to_string()],
            );
            let _ = writeln!(
                out,
                "ebb_alarm_state{{{labels}}} {}",
                u8::from(a.eval.state == state)
            );
        }
    }
    names
}

/// A per-group gauge: its name's suffix, its help, and its value.
type Gauge = (&'static str, &'static str, fn(&Counts) -> u32);

#[derive(Debug, Default)]
struct Counts {
    desired: u32,
    min: u32,
    max: u32,
    in_service: u32,
    pending: u32,
    standby: u32,
}

/// The standard `process_*` metrics, read from `/proc/self` (Linux).
fn process_metrics(out: &mut String) {
    let mut gauge = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        );
    };
    let ticks = 100.0; // USER_HZ on Linux
    let page = 4096.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command (which may hold spaces), from field 3.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        // utime 14, stime 15, starttime 22, vsize 23, rss 24 (1-based).
        if let (Some(u), Some(s)) = (num(11), num(12)) {
            gauge(
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (u + s) / ticks,
            );
        }
        if let Some(v) = num(20) {
            gauge(
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                v,
            );
        }
        if let Some(v) = num(21) {
            gauge(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                v * page,
            );
        }
        if let (Some(start), Some(boot)) = (num(19), boot_time()) {
            gauge(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot + start / ticks,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Some(max) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        })
    {
        gauge(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
}

/// When the host booted, Unix seconds (`btime` in /proc/stat).
fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}
