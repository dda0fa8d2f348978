//! The live fleet: every agent that has said hello, its connection state,
//! its pull counters and a bounded ring of its recent samples.

pub mod agent_service;
pub mod outbox;
pub mod targets;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use ebb_core::rules::Metric;
use ebb_proto::v1::{CustomMetric, Hello, Sample};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::clock::Clock;

/// Counts of one event by reason, for the rare events a label explains
/// (refusals, closed streams): a handful of reasons, so a map under a lock.
#[derive(Debug, Default)]
pub struct ByReason(Mutex<BTreeMap<&'static str, u64>>);

impl ByReason {
    pub fn add(&self, reason: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(reason)
            .or_default() += 1;
    }

    pub fn get(&self, reason: &str) -> u64 {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(reason).copied().unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (reason, n) in map.iter() {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
        }
    }
}

/// Counts of one event by a few labels (`group`, `trigger`, `status`...),
/// for events an operator breaks down on a dashboard: a map under a lock.
#[derive(Debug, Default)]
pub struct Labelled(Mutex<BTreeMap<Vec<String>, u64>>);

impl Labelled {
    /// One more of the event with these label values.
    pub fn add(&self, values: &[&str]) {
        let key = values.iter().map(|v| (*v).to_owned()).collect();
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default() += 1;
    }

    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&key).copied().unwrap_or(0)
    }

    /// The counter, its values labelled `labels` in the order `add` got them.
    pub fn render(&self, out: &mut String, name: &str, help: &str, labels: &[&str]) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (values, n) in map.iter() {
            let _ = writeln!(out, "{name}{{{}}} {n}", label_set(labels, values));
        }
    }
}

/// `a="x",b="y"`, each value escaped as the text format asks.
pub fn label_set<S: AsRef<str>>(names: &[&str], values: &[S]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v.as_ref())))
        .collect::<Vec<_>>()
        .join(",")
}

/// A label value in Prometheus' text format: `\`, `"` and newlines escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Why the controller ends an agent's stream before the agent does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A newer stream of the same identity connected.
    Replaced,
    /// The identity was put on the deny-list.
    Revoked,
    /// The instance left its group: removed, detached, released.
    LeftGroup,
    /// The certificate the stream was opened with reached its notAfter.
    Expired,
    /// This controller stopped leading: the agent goes to the new leader.
    SteppedDown,
}

impl CloseReason {
    /// The `reason` label on `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Replaced => "replaced",
            Self::Revoked => "revoked",
            Self::LeftGroup => "left_group",
            Self::Expired => "expired",
            Self::SteppedDown => "stepped_down",
        }
    }

    /// What the log and the agent are told.
    pub fn sentence(self) -> &'static str {
        match self {
            Self::Replaced => "replaced by a newer stream of the same identity",
            Self::Revoked => "its certificate's identity was revoked",
            Self::LeftGroup => "its instance left its group (removed or detached)",
            Self::Expired => "its certificate expired",
            Self::SteppedDown => "this controller no longer leads; connect to the leader",
        }
    }
}

/// What the controller wants of one stream, watched by its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Set when the stream must end now.
    pub close: Option<CloseReason>,
    /// The stream ends at this instant: its certificate's notAfter (None
    /// for sessions without a certificate, in unit tests).
    pub until: Option<SystemTime>,
}

/// Fleet-wide counters, exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub pulls_total: AtomicU64,
    pub pulls_missed_total: AtomicU64,
    pub samples_total: AtomicU64,
    /// Answers that came after the next pull had been sent.
    pub samples_late_total: AtomicU64,
    /// Custom values left out of the ring: not finite, a bad or repeated
    /// name, past [`MAX_CUSTOM_PER_SAMPLE`] or [`MAX_CUSTOM_NAMES`].
    pub custom_values_dropped_total: AtomicU64,
    /// Built-in sample values out of their range (a utilisation outside
    /// 0-100, a negative rate, anything not finite), dropped.
    pub sample_values_dropped_total: AtomicU64,
    /// TLS handshakes or Connect calls refused for identity reasons.
    pub connections_refused_total: AtomicU64,
    /// Connect calls refused after the certificate checked out: unknown
    /// instance, detached, revoked, expired, a bad Hello.
    pub connects_refused: ByReason,
    /// TCP connections dropped before their TLS handshake finished: over
    /// the cap of handshakes in progress, idle, too slow.
    pub handshakes_dropped: ByReason,
    /// Streams the controller ended, by [`CloseReason::label`].
    pub streams_closed: ByReason,
    /// Hook results refused: not for an action sent to the sending instance.
    pub hook_results_dropped_total: AtomicU64,
    /// Target reports sent by an instance's agent: only a target identity
    /// reports on load balancers and databases.
    pub target_reports_dropped_total: AtomicU64,
    /// Agent certificates renewed over their stream, and requests refused.
    pub cert_renewals_total: AtomicU64,
    pub cert_renewals_refused_total: AtomicU64,
    /// Hosts that joined with a token, and joins refused (a bad, expired,
    /// used-up or revoked token, a bad CSR, a full or inactive group).
    pub joins_total: AtomicU64,
    pub joins_refused_total: AtomicU64,
    /// Webhook notifications delivered, and given up on after retries.
    pub notifications_sent_total: AtomicU64,
    pub notifications_failed_total: AtomicU64,
    /// From a Pull queued to its Sample read back, by the stream's task.
    pub pull_round_trip: Histogram,
    /// One pass of alarm evaluation that evaluated at least one alarm.
    pub alarm_evaluation: Histogram,
    /// Reconcile passes over every group, finished.
    pub reconcile_passes_total: AtomicU64,
    /// Scaling activities that ended (or were refused), by group name,
    /// trigger and status.
    pub activities: Labelled,
    /// Scheduled task runs, by group name, task name and result (`ran`,
    /// `rejected`, `expired`).
    pub task_runs: Labelled,
    /// Predictive passes (every predictive rule's forecast and floor), finished.
    pub predictive_passes_total: AtomicU64,
}

/// Upper bounds of the latency buckets: ten per decade from 100 µs to 10 s,
/// fine enough for a p99 read from the difference of two scrapes.
const BUCKET_BOUNDS_US: [u64; 51] = {
    const STEPS: [u64; 10] = [100, 125, 160, 200, 250, 320, 400, 500, 630, 800];
    let mut out = [0; 51];
    let mut decade = 0;
    let mut scale = 1;
    while decade < 5 {
        let mut i = 0;
        while i < 10 {
            out[decade * 10 + i] = STEPS[i] * scale;
            i += 1;
        }
        decade += 1;
        scale *= 10;
    }
    out[50] = 10_000_000;
    out
};

/// A latency histogram with fixed buckets, recorded without a lock and
/// exported as a Prometheus histogram.
#[derive(Debug)]
pub struct Histogram {
    /// One count per bound, and one for everything above the last.
    counts: [AtomicU64; BUCKET_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKET_BOUNDS_US.partition_point(|&b| b < us);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (bound, count) in BUCKET_BOUNDS_US.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKET_BOUNDS_US.len()].load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = write!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {sum}\n{name}_count {cumulative}\n"
        );
    }
}

/// One sample as kept in the ring: the numbers, without the strings, in 64
/// bytes (an `Option<f64>` per value took 120). An absent value is stored
/// as NaN (a count as `u32::MAX`) and read back as `None`, so an agent that
/// sent NaN is taken as not having the value, which is what an average needs.
/// Custom metrics hang off one thin pointer, `None` for a sample without
/// any (the common case: no allocation); the pull's `seq`, which nothing
/// read back, made room for it.
#[derive(Debug, Clone)]
pub struct Point {
    /// When the controller received it, in ms since the Unix epoch.
    pub received_at_ms: i64,
    /// CPU, memory, load1, rx and tx bytes per second.
    values: [f64; 5],
    /// TCP connections in all, and established.
    tcp: [u32; 2],
    custom: Option<Box<CustomValues>>,
}

/// A sample's custom metrics: each name shared with the agent's other
/// samples (see [`Names`]), each value finite.
#[derive(Debug, Clone)]
struct CustomValues(Box<[(Arc<str>, f64)]>);

/// A sample carries at most this many custom values into the ring: a
/// host's sources are few, and an agent sending more is misconfigured or
/// hostile (DESIGN §3, bounded inputs). The rest are dropped and counted.
pub const MAX_CUSTOM_PER_SAMPLE: usize = 32;

/// An agent's table of custom metric names holds at most this many; twice
/// a sample's worth leaves room for an agent whose sources were renamed.
pub const MAX_CUSTOM_NAMES: usize = 2 * MAX_CUSTOM_PER_SAMPLE;

/// The custom metric names one agent has sent, each stored once: points
/// hold clones of these `Arc`s, so a ring of 60 points with 3 metrics
/// holds 3 strings, not 180. A name no point holds any more is forgotten
/// when room is needed.
#[derive(Debug, Default)]
pub struct Names(Vec<Arc<str>>);

impl Names {
    /// The shared copy of `name`, or None when the table is full of names
    /// still in use.
    fn intern(&mut self, name: &str) -> Option<Arc<str>> {
        if let Some(n) = self.0.iter().find(|n| &***n == name) {
            return Some(n.clone());
        }
        if self.0.len() >= MAX_CUSTOM_NAMES {
            // Only the table holds these: no point in the ring uses them.
            self.0.retain(|n| Arc::strong_count(n) > 1);
        }
        if self.0.len() >= MAX_CUSTOM_NAMES {
            return None;
        }
        let n: Arc<str> = Arc::from(name);
        self.0.push(n.clone());
        Some(n)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The values of `custom` the ring keeps, and how many it dropped.
fn custom_values(custom: &[CustomMetric], names: &mut Names) -> (Option<Box<CustomValues>>, u64) {
    if custom.is_empty() {
        return (None, 0);
    }
    let mut kept: Vec<(Arc<str>, f64)> =
        Vec::with_capacity(custom.len().min(MAX_CUSTOM_PER_SAMPLE));
    let mut dropped = 0;
    for m in custom {
        let usable = kept.len() < MAX_CUSTOM_PER_SAMPLE
            && m.value.is_finite()
            && Metric::is_custom_name(&m.name)
            && !kept.iter().any(|(n, _)| **n == *m.name);
        match usable.then(|| names.intern(&m.name)).flatten() {
            Some(name) => kept.push((name, m.value)),
            None => dropped += 1,
        }
    }
    let kept = (!kept.is_empty()).then(|| Box::new(CustomValues(kept.into_boxed_slice())));
    (kept, dropped)
}

const NO_COUNT: u32 = u32::MAX;

/// Every ring keeps at least a minute of samples, so a new alarm's first
/// periods (up to a minute) have their whole history.
const MIN_KEEP_MS: i64 = 60_000;

/// And at least this many samples, whatever their age: the scale-in choice
/// of the least busy instance averages the latest ones.
pub const ALWAYS_KEPT: usize = 12;

fn present(v: f64) -> Option<f64> {
    (!v.is_nan()).then_some(v)
}

fn count(v: u32) -> Option<u32> {
    (v != NO_COUNT).then_some(v)
}

impl Point {
    /// The sample's numbers, and how many of them were out of range and
    /// dropped (kept as absent, never averaged in); its custom metrics are
    /// `custom_values`' job.
    fn from_sample(s: &Sample, received_at_ms: i64) -> (Self, u64) {
        let mut dropped = 0;
        let mut f = |v: Option<f64>, max: f64| match v {
            None => f64::NAN,
            Some(v) if v.is_finite() && (0.0..=max).contains(&v) => v,
            Some(_) => {
                dropped += 1;
                f64::NAN
            }
        };
        let point = Self {
            received_at_ms,
            values: [
                f(s.cpu_utilization, 100.0),
                f(s.memory_utilization, 100.0),
                f(s.load.map(|l| l.one), f64::MAX),
                f(s.network.map(|n| n.rx_bytes_per_second), f64::MAX),
                f(s.network.map(|n| n.tx_bytes_per_second), f64::MAX),
            ],
            tcp: [
                s.tcp.map_or(NO_COUNT, |t| t.total.min(NO_COUNT - 1)),
                s.tcp.map_or(NO_COUNT, |t| t.established.min(NO_COUNT - 1)),
            ],
            custom: None,
        };
        (point, dropped)
    }

    /// The custom metric `name`, if this sample carried it.
    pub fn custom(&self, name: &str) -> Option<f64> {
        let values = &self.custom.as_ref()?.0;
        values.iter().find(|(n, _)| &**n == name).map(|(_, v)| *v)
    }

    /// Every custom metric this sample carried, by name.
    pub fn custom_values(&self) -> impl Iterator<Item = (&str, f64)> {
        self.custom
            .iter()
            .flat_map(|c| c.0.iter().map(|(n, v)| (&**n, *v)))
    }

    /// How many custom values this sample carried into the ring.
    pub fn custom_count(&self) -> usize {
        self.custom.as_ref().map_or(0, |c| c.0.len())
    }

    pub fn cpu_utilization(&self) -> Option<f64> {
        present(self.values[0])
    }

    pub fn memory_utilization(&self) -> Option<f64> {
        present(self.values[1])
    }

    pub fn load1(&self) -> Option<f64> {
        present(self.values[2])
    }

    pub fn rx_bytes_per_second(&self) -> Option<f64> {
        present(self.values[3])
    }

    pub fn tx_bytes_per_second(&self) -> Option<f64> {
        present(self.values[4])
    }

    pub fn tcp_total(&self) -> Option<u32> {
        count(self.tcp[0])
    }

    pub fn tcp_established(&self) -> Option<u32> {
        count(self.tcp[1])
    }
}

/// What the controller knows of one agent.
#[derive(Debug)]
pub struct AgentState {
    pub hello: Hello,
    pub connected: bool,
    /// Increases with each new stream, so a replaced stream's task cannot
    /// mark its successor disconnected.
    pub session: u64,
    /// Unix ms, from the fleet's clock.
    pub connected_at_ms: i64,
    pub disconnected_at_ms: Option<i64>,
    pub disconnect_reason: Option<String>,
    pub pulls: u64,
    pub missed: u64,
    pub consecutive_missed: u32,
    /// The latest sample, without its custom metrics (the ring has them).
    pub latest: Option<Sample>,
    pub ring: VecDeque<Point>,
    /// The custom metric names the ring's points share.
    pub custom_names: Names,
    /// Custom values dropped from this agent's samples, to warn once.
    pub custom_dropped: u64,
    /// Built-in values this agent sent out of range, dropped.
    pub out_of_range: u64,
    /// The open stream's controls (None when it has none).
    control: Option<watch::Sender<Control>>,
}

/// The registry of agents, keyed by instance id.
#[derive(Debug)]
pub struct Fleet {
    /// Receipt, connect and disconnect times: the one clock the engine reads too.
    clock: Arc<dyn Clock>,
    agents: DashMap<String, Arc<Mutex<AgentState>>>,
    pub counters: Counters,
    /// The most samples a ring holds (`fleet.sample_ring`).
    ring_capacity: usize,
    /// How far back the rings keep samples, in ms: set by the alarm loop to
    /// what the longest alarm reads (see [`Fleet::keep_samples_for`]).
    keep_ms: AtomicI64,
    /// Woken on every connect and disconnect, so the reconcile loop reacts
    /// at once instead of at its next tick.
    pub changed: tokio::sync::Notify,
    /// Lifecycle hook scripts to agents and their results back.
    pub lifecycle: outbox::Outbox,
    /// Target agents: the members each must hold, and what each reported.
    pub targets: targets::Targets,
}

/// A handle a stream's task holds for its agent.
#[derive(Debug, Clone)]
pub struct Session {
    pub instance_id: String,
    pub session: u64,
    state: Arc<Mutex<AgentState>>,
    /// Changes when the stream must close or its deadline moves.
    pub control: watch::Receiver<Control>,
}

fn lock(m: &Mutex<AgentState>) -> MutexGuard<'_, AgentState> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fleet {
    pub fn new(ring_capacity: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            agents: DashMap::new(),
            counters: Counters::default(),
            ring_capacity,
            // Up to `sample_ring` samples until the alarm loop says how long.
            keep_ms: AtomicI64::new(i64::MAX),
            changed: tokio::sync::Notify::new(),
            lifecycle: Default::default(),
            targets: targets::Targets::new(u64::try_from(clock.now_ms()).unwrap_or(1)),
            clock,
        }
    }

    /// The clock the fleet stamps samples with, for everything that
    /// compares its own times with theirs.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Registers a connected agent without a deadline (tests).
    pub fn connect(&self, hello: Hello) -> Session {
        self.connect_until(hello, None)
    }

    /// Registers a connected agent whose stream may live until `until`
    /// (its certificate's notAfter); a previous stream of the same
    /// instance is told to close at once.
    pub fn connect_until(&self, hello: Hello, until: Option<SystemTime>) -> Session {
        let id = hello.instance_id.clone();
        let now = self.clock.now_ms();
        let entry = self
            .agents
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(AgentState {
                    hello: hello.clone(),
                    connected: false,
                    session: 0,
                    connected_at_ms: now,
                    disconnected_at_ms: None,
                    disconnect_reason: None,
                    pulls: 0,
                    missed: 0,
                    consecutive_missed: 0,
                    latest: None,
                    ring: VecDeque::new(),
                    custom_names: Names::default(),
                    custom_dropped: 0,
                    out_of_range: 0,
                    control: None,
                }))
            })
            .clone();
        let (control_tx, control) = watch::channel(Control { close: None, until });
        let session = {
            let mut s = lock(&entry);
            if s.connected {
                warn!(instance = %id, "a new stream replaces the agent's previous one");
            }
            if let Some(old) = s.control.replace(control_tx) {
                old.send_modify(|c| c.close = Some(CloseReason::Replaced));
            }
            s.hello = hello;
            s.connected = true;
            s.session += 1;
            s.connected_at_ms = now;
            s.disconnected_at_ms = None;
            s.disconnect_reason = None;
            s.consecutive_missed = 0;
            s.session
        };
        self.changed.notify_one();
        Session {
            instance_id: id,
            session,
            state: entry,
            control,
        }
    }

    /// Tells the instance's open stream, if any, to close at once; true if
    /// there was one.
    pub fn close(&self, id: &str, reason: CloseReason) -> bool {
        self.with_agent(id, |a| match (&a.control, a.connected) {
            (Some(c), true) => {
                c.send_modify(|c| c.close = Some(reason));
                true
            }
            _ => false,
        })
        .unwrap_or(false)
    }

    /// Whether the instance's agent has an open stream.
    pub fn is_connected(&self, id: &str) -> bool {
        self.with_agent(id, |a| a.connected).unwrap_or(false)
    }

    /// The first address the instance's agent reported.
    pub fn address(&self, id: &str) -> Option<String> {
        self.with_agent(id, |a| a.hello.addresses.first().cloned())
            .flatten()
    }

    /// Average CPU over the last `n` samples, if any carried CPU.
    pub fn recent_cpu(&self, id: &str, n: usize) -> Option<f64> {
        self.with_agent(id, |a| {
            let values: Vec<f64> = a
                .ring
                .iter()
                .rev()
                .take(n)
                .filter_map(|p| p.cpu_utilization())
                .collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        })
        .flatten()
    }

    /// Forgets an instance that left for good (released, removed or
    /// detached), closing its open stream at once.
    pub fn forget(&self, id: &str) {
        self.close(id, CloseReason::LeftGroup);
        self.agents.remove(id);
        self.lifecycle.forget(id);
    }

    pub fn connected_count(&self) -> usize {
        self.agents
            .iter()
            .filter(|e| lock(e.value()).connected)
            .count()
    }

    /// A snapshot of one agent's state, for tests and views.
    pub fn with_agent<T>(&self, id: &str, f: impl FnOnce(&AgentState) -> T) -> Option<T> {
        self.agents.get(id).map(|e| f(&lock(e.value())))
    }

    pub fn instance_ids(&self) -> Vec<String> {
        let mut ids: Vec<_> = self.agents.iter().map(|e| e.key().clone()).collect();
        ids.sort();
        ids
    }

    /// Prometheus text exposition of the fleet; with `groups` (each
    /// instance's group name), each connected instance's latest CPU and
    /// memory too, labelled `instance_id` and `group` (`instance` is the
    /// scrape target's, which Prometheus would rename).
    pub fn render_metrics(&self, groups: Option<&HashMap<String, String>>) -> String {
        let c = &self.counters;
        let mut out = String::with_capacity(1024 + self.agents.len() * 160);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        counter(
            "ebb_pulls_total",
            "Pulls sent to agents.",
            c.pulls_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_pulls_missed_total",
            "Pulls not answered before the next pull.",
            c.pulls_missed_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_samples_total",
            "Samples received in time.",
            c.samples_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_samples_late_total",
            "Samples received after the next pull was sent.",
            c.samples_late_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_sample_values_dropped_total",
            "Built-in sample values out of range (utilisation outside 0-100, negative or not finite), dropped.",
            c.sample_values_dropped_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_custom_values_dropped_total",
            "Custom metric values not kept: not finite, a bad or repeated name, or too many.",
            c.custom_values_dropped_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_connections_refused_total",
            "Connections refused: bad or missing certificate, wrong identity.",
            c.connections_refused_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_hook_results_dropped_total",
            "Hook results refused: not for an action sent to the sending instance, or too many pending.",
            c.hook_results_dropped_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_target_reports_dropped_total",
            "Target reports refused: sent on an instance's stream, not a target's.",
            c.target_reports_dropped_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_cert_renewals_total",
            "Agent certificates renewed over their stream.",
            c.cert_renewals_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_cert_renewals_refused_total",
            "Renewal requests refused: unparsable, too big, too soon, or the CA failed.",
            c.cert_renewals_refused_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_joins_total",
            "Hosts that joined with a join token.",
            c.joins_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_joins_refused_total",
            "Join calls refused: a bad, expired, used-up or revoked token, a bad request, a group that cannot take the host.",
            c.joins_refused_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_reconcile_passes_total",
            "Reconcile passes over every group, finished.",
            c.reconcile_passes_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_predictive_passes_total",
            "Predictive passes (every predictive rule's forecast and floor, once a minute of the clock), finished.",
            c.predictive_passes_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_notifications_sent_total",
            "Webhook notifications delivered.",
            c.notifications_sent_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_notifications_failed_total",
            "Webhook notifications given up on after every retry.",
            c.notifications_failed_total.load(Ordering::Relaxed),
        );
        let _ = write!(
            out,
            "# HELP ebb_agents_connected Agents with an open stream.\n# TYPE ebb_agents_connected gauge\nebb_agents_connected {}\n",
            self.connected_count()
        );
        c.connects_refused.render(
            &mut out,
            "ebb_agent_connects_refused_total",
            "Connect calls refused after the certificate checked out, by reason.",
        );
        c.handshakes_dropped.render(
            &mut out,
            "ebb_tls_handshakes_dropped_total",
            "TCP connections dropped before their TLS handshake finished, by reason.",
        );
        c.streams_closed.render(
            &mut out,
            "ebb_agent_streams_closed_total",
            "Agent streams the controller ended, by reason.",
        );
        c.pull_round_trip.render(
            &mut out,
            "ebb_pull_round_trip_seconds",
            "From a Pull queued for an agent to its Sample read back.",
        );
        c.alarm_evaluation.render(
            &mut out,
            "ebb_alarm_evaluation_seconds",
            "One pass over every alarm whose period ended (passes with none due are not counted).",
        );
        let Some(groups) = groups else {
            return out;
        };
        let mut cpu = String::new();
        let mut mem = String::new();
        for id in self.instance_ids() {
            let Some((c, m)) = self.with_agent(&id, |s| {
                let p = s.ring.back().filter(|_| s.connected);
                (
                    p.and_then(|p| p.cpu_utilization()),
                    p.and_then(|p| p.memory_utilization()),
                )
            }) else {
                continue;
            };
            let group = groups.get(&id).map_or("", String::as_str);
            let labels = label_set(&["instance_id", "group"], &[id.as_str(), group]);
            if let Some(v) = c {
                let _ = writeln!(cpu, "ebb_instance_cpu_utilization{{{labels}}} {v}");
            }
            if let Some(v) = m {
                let _ = writeln!(mem, "ebb_instance_memory_utilization{{{labels}}} {v}");
            }
        }
        out.push_str("# HELP ebb_instance_cpu_utilization Latest CPU utilisation of a connected instance, percent.\n# TYPE ebb_instance_cpu_utilization gauge\n");
        out.push_str(&cpu);
        out.push_str("# HELP ebb_instance_memory_utilization Latest memory utilisation of a connected instance, percent.\n# TYPE ebb_instance_memory_utilization gauge\n");
        out.push_str(&mem);
        out
    }
}

impl Session {
    /// False once a newer stream of the same instance has taken over.
    pub fn is_current(&self) -> bool {
        lock(&self.state).session == self.session
    }

    /// Lets the stream live until `until` (a renewed certificate's
    /// notAfter); no effect once a newer stream took over.
    pub fn extend_until(&self, until: SystemTime) {
        let s = lock(&self.state);
        if s.session == self.session
            && let Some(c) = &s.control
        {
            c.send_modify(|c| c.until = Some(until));
        }
    }

    /// Records that pull `seq` was sent.
    pub fn pulled(&self, fleet: &Fleet) {
        fleet.counters.pulls_total.fetch_add(1, Ordering::Relaxed);
        lock(&self.state).pulls += 1;
    }

    /// Records that pull `seq` went unanswered until the next one was due.
    pub fn missed(&self, fleet: &Fleet, seq: u64) {
        fleet
            .counters
            .pulls_missed_total
            .fetch_add(1, Ordering::Relaxed);
        let mut s = lock(&self.state);
        s.missed += 1;
        s.consecutive_missed += 1;
        if s.consecutive_missed == 1 {
            warn!(instance = %self.instance_id, seq, "agent did not answer a pull before the next one was due");
        }
    }

    /// Records a sample that answered the outstanding pull.
    pub fn sampled(&self, fleet: &Fleet, sample: Sample) {
        self.sampled_at(fleet, sample, fleet.clock.now_ms());
    }

    /// As `sampled`, received at a given time (tests drive the clock).
    pub fn sampled_at(&self, fleet: &Fleet, mut sample: Sample, received_at_ms: i64) {
        fleet.counters.samples_total.fetch_add(1, Ordering::Relaxed);
        let mut s = lock(&self.state);
        if s.consecutive_missed > 0 {
            info!(instance = %self.instance_id, missed = s.consecutive_missed, "agent answers pulls again");
        }
        s.consecutive_missed = 0;
        let (mut point, out_of_range) = Point::from_sample(&sample, received_at_ms);
        if out_of_range > 0 {
            fleet
                .counters
                .sample_values_dropped_total
                .fetch_add(out_of_range, Ordering::Relaxed);
            if s.out_of_range == 0 {
                warn!(instance = %self.instance_id, dropped = out_of_range, "sample values out of range dropped (utilisations 0-100, rates and loads >= 0, all finite); see ebb_sample_values_dropped_total");
            }
            s.out_of_range += out_of_range;
        }
        let custom = std::mem::take(&mut sample.custom);
        let (values, dropped) = custom_values(&custom, &mut s.custom_names);
        point.custom = values;
        if dropped > 0 {
            fleet
                .counters
                .custom_values_dropped_total
                .fetch_add(dropped, Ordering::Relaxed);
            if s.custom_dropped == 0 {
                warn!(instance = %self.instance_id, dropped, "custom metric values dropped: not finite, a bad or repeated name, or more than {MAX_CUSTOM_PER_SAMPLE}; see ebb_custom_values_dropped_total");
            } else {
                debug!(instance = %self.instance_id, dropped, "custom metric values dropped");
            }
            s.custom_dropped += dropped;
        }
        let cutoff = point.received_at_ms - fleet.keep_ms.load(Ordering::Relaxed);
        while s.ring.len() >= fleet.ring_capacity
            || (s.ring.len() >= ALWAYS_KEPT
                && s.ring.front().is_some_and(|p| p.received_at_ms < cutoff))
        {
            s.ring.pop_front();
        }
        s.ring.push_back(point);
        // A ring that once held a long window gives the memory back when
        // the window shrinks (its alarm deleted).
        if s.ring.capacity() > 64 && s.ring.capacity() > 4 * s.ring.len() {
            let keep = 2 * s.ring.len();
            s.ring.shrink_to(keep);
        }
        s.latest = Some(sample);
    }

    /// Marks the agent disconnected unless a newer stream took over.
    pub fn disconnected(&self, fleet: &Fleet, reason: &str) {
        let mut s = lock(&self.state);
        if s.session != self.session {
            return;
        }
        s.connected = false;
        s.control = None;
        s.disconnected_at_ms = Some(fleet.clock.now_ms());
        s.disconnect_reason = Some(reason.to_owned());
        drop(s);
        fleet.changed.notify_one();
        info!(instance = %self.instance_id, reason, "agent disconnected");
    }
}

impl Fleet {
    /// Keeps `ms` of samples in every ring from now on (never less than a
    /// minute, never more than `sample_ring` samples). The alarm loop sets it
    /// to its longest alarm's period and a margin, so a ring holds what the
    /// alarms read and not a fixed count: at 1 s sampling with 1 s alarms,
    /// a minute of 64-byte points instead of 180 preallocated ones.
    pub fn keep_samples_for(&self, ms: i64) {
        self.keep_ms.store(ms.max(MIN_KEEP_MS), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn hello(id: &str) -> Hello {
        Hello {
            instance_id: id.into(),
            ..Default::default()
        }
    }

    fn sample(seq: u64, cpu: f64) -> Sample {
        Sample {
            seq,
            cpu_utilization: Some(cpu),
            memory_utilization: Some(40.0),
            ..Default::default()
        }
    }

    #[test]
    fn ring_is_bounded_and_keeps_the_newest() {
        let fleet = Fleet::new(3, Arc::new(SystemClock));
        let s = fleet.connect(hello("i-1"));
        for seq in 1..=5 {
            s.sampled(&fleet, sample(seq, seq as f64));
        }
        let cpus = fleet
            .with_agent("i-1", |a| {
                a.ring
                    .iter()
                    .map(|p| p.cpu_utilization().unwrap())
                    .collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(cpus, [3.0, 4.0, 5.0]);
        assert_eq!(fleet.counters.samples_total.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn rings_keep_what_the_alarms_read_and_no_more() {
        let fleet = Fleet::new(1000, Arc::new(SystemClock));
        let s = fleet.connect(hello("i-1"));
        let t0: i64 = 1_700_000_000_000;
        let at = |secs: u64| t0 + secs as i64 * 1000;
        let span = |fleet: &Fleet| {
            fleet
                .with_agent("i-1", |a| {
                    let first = a.ring.front().unwrap().received_at_ms;
                    let last = a.ring.back().unwrap().received_at_ms;
                    (a.ring.len(), (last - first) / 1000)
                })
                .unwrap()
        };
        // Before the alarm loop says how long: up to `sample_ring`.
        for i in 0..300 {
            s.sampled_at(&fleet, sample(i, 1.0), at(i));
        }
        assert_eq!(span(&fleet), (300, 299));
        // Told 10 s: still a minute, the floor.
        fleet.keep_samples_for(10_000);
        for i in 300..400 {
            s.sampled_at(&fleet, sample(i, 1.0), at(i));
        }
        assert_eq!(span(&fleet), (61, 60));
        let capacity = fleet.with_agent("i-1", |a| a.ring.capacity()).unwrap();
        assert!(capacity <= 4 * 61, "capacity {capacity} was not given back");
        // A 900 s alarm and its margin.
        fleet.keep_samples_for(910_250);
        for i in 400..1400 {
            s.sampled_at(&fleet, sample(i, 1.0), at(i));
        }
        assert_eq!(span(&fleet), (911, 910));
        // Sparse samples: the latest 12 are kept whatever their age.
        fleet.keep_samples_for(0);
        for i in 0..20 {
            s.sampled_at(&fleet, sample(2000 + i, 1.0), at(2000 + i * 3600));
        }
        assert_eq!(span(&fleet).0, ALWAYS_KEPT);
    }

    #[test]
    fn absent_and_nan_values_read_back_as_none() {
        let mut full = sample(1, 12.5);
        full.load = Some(ebb_proto::v1::LoadAverage {
            one: 0.5,
            ..Default::default()
        });
        full.tcp = Some(ebb_proto::v1::TcpConnections {
            total: 7,
            established: 3,
        });
        let p = Point::from_sample(&full, 1500).0;
        assert_eq!(p.received_at_ms, 1500);
        assert_eq!(
            (p.cpu_utilization(), p.memory_utilization(), p.load1()),
            (Some(12.5), Some(40.0), Some(0.5))
        );
        assert_eq!((p.tcp_total(), p.tcp_established()), (Some(7), Some(3)));
        assert_eq!(p.rx_bytes_per_second(), None);
        let nan = Point::from_sample(&sample(2, f64::NAN), 0).0;
        assert_eq!(nan.cpu_utilization(), None);
        assert_eq!(std::mem::size_of::<Point>(), 64);
    }

    fn custom(pairs: &[(&str, f64)]) -> Vec<CustomMetric> {
        pairs
            .iter()
            .map(|(name, value)| CustomMetric {
                name: (*name).into(),
                value: *value,
            })
            .collect()
    }

    fn with_custom(seq: u64, pairs: &[(&str, f64)]) -> Sample {
        Sample {
            custom: custom(pairs),
            ..sample(seq, 10.0)
        }
    }

    fn dropped(fleet: &Fleet) -> u64 {
        fleet
            .counters
            .custom_values_dropped_total
            .load(Ordering::Relaxed)
    }

    #[test]
    fn custom_values_read_back_by_name_and_absent_ones_as_none() {
        let fleet = Fleet::new(10, Arc::new(SystemClock));
        let s = fleet.connect(hello("i-1"));
        s.sampled(
            &fleet,
            with_custom(1, &[("queue_depth", 4.5), ("rps", 0.0)]),
        );
        s.sampled(&fleet, with_custom(2, &[("rps", 12.0)]));
        s.sampled(&fleet, sample(3, 1.0));
        let read = |name: &str| {
            fleet
                .with_agent("i-1", |a| {
                    a.ring.iter().map(|p| p.custom(name)).collect::<Vec<_>>()
                })
                .unwrap()
        };
        assert_eq!(read("queue_depth"), [Some(4.5), None, None]);
        // A real zero is a value; a sample without the metric has none.
        assert_eq!(read("rps"), [Some(0.0), Some(12.0), None]);
        assert_eq!(read("nothing"), [None, None, None]);
        // The built-in numbers are untouched, and the strings are not kept
        // twice: the latest sample is stored without them.
        fleet
            .with_agent("i-1", |a| {
                assert_eq!(a.ring[0].cpu_utilization(), Some(10.0));
                assert_eq!(a.ring[2].custom_count(), 0);
                assert!(
                    a.ring[2].custom.is_none(),
                    "no custom values, no allocation"
                );
            })
            .unwrap();
        s.sampled(&fleet, with_custom(4, &[("rps", 1.0)]));
        let latest = fleet.with_agent("i-1", |a| a.latest.clone()).unwrap();
        assert!(latest.unwrap().custom.is_empty());
        assert_eq!(dropped(&fleet), 0);
    }

    #[test]
    fn custom_names_are_stored_once_per_agent() {
        let fleet = Fleet::new(100, Arc::new(SystemClock));
        let s = fleet.connect(hello("i-1"));
        for seq in 0..50 {
            s.sampled(
                &fleet,
                with_custom(seq, &[("queue_depth", seq as f64), ("rps", 1.0)]),
            );
        }
        fleet
            .with_agent("i-1", |a| {
                assert_eq!(a.custom_names.len(), 2);
                let name = |p: &Point| p.custom.as_ref().unwrap().0[0].0.clone();
                let (first, last) = (name(&a.ring[0]), name(&a.ring[49]));
                assert!(Arc::ptr_eq(&first, &last), "each point owns its name");
                assert_eq!(a.ring[49].custom("queue_depth"), Some(49.0));
            })
            .unwrap();
    }

    #[test]
    fn bad_and_excess_custom_values_are_dropped_and_counted() {
        let fleet = Fleet::new(10, Arc::new(SystemClock));
        let s = fleet.connect(hello("i-1"));
        let long = "m".repeat(129);
        s.sampled(
            &fleet,
            with_custom(
                1,
                &[
                    ("ok", 1.0),
                    ("nan", f64::NAN),
                    ("inf", f64::INFINITY),
                    ("neg_inf", f64::NEG_INFINITY),
                    ("", 1.0),
                    ("queue depth", 1.0),
                    (&long, 1.0),
                    ("CpuUtilization", 99.0),
                    ("ok", 2.0),
                ],
            ),
        );
        let p = fleet.with_agent("i-1", |a| a.ring[0].clone()).unwrap();
        assert_eq!(p.custom_count(), 1);
        assert_eq!(p.custom("ok"), Some(1.0), "the first of a repeated name");
        assert_eq!((p.custom("nan"), p.custom("inf")), (None, None));
        assert_eq!(
            p.cpu_utilization(),
            Some(10.0),
            "a custom name cannot shadow CPU"
        );
        assert_eq!(dropped(&fleet), 8);

        let many: Vec<(String, f64)> = (0..40).map(|i| (format!("m{i}"), i as f64)).collect();
        let many: Vec<(&str, f64)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        s.sampled(&fleet, with_custom(2, &many));
        let p = fleet.with_agent("i-1", |a| a.ring[1].clone()).unwrap();
        assert_eq!(p.custom_count(), MAX_CUSTOM_PER_SAMPLE);
        assert_eq!(p.custom("m31"), Some(31.0));
        assert_eq!(p.custom("m32"), None);
        assert_eq!(dropped(&fleet), 8 + 8);
        let text = fleet.render_metrics(None);
        assert!(
            text.contains("ebb_custom_values_dropped_total 16\n"),
            "{text}"
        );
    }

    #[test]
    fn an_agent_cycling_through_names_cannot_grow_its_name_table() {
        // A short ring: names of samples that left it are forgotten.
        let fleet = Fleet::new(ALWAYS_KEPT, Arc::new(SystemClock));
        let s = fleet.connect(hello("i-1"));
        for seq in 0..1000 {
            let name = format!("m{seq}");
            s.sampled(&fleet, with_custom(seq, &[(&name, 1.0)]));
        }
        let (names, newest) = fleet
            .with_agent("i-1", |a| {
                (a.custom_names.len(), a.ring.back().unwrap().custom("m999"))
            })
            .unwrap();
        assert!(names <= MAX_CUSTOM_NAMES, "{names} names");
        assert_eq!(newest, Some(1.0));
        assert_eq!(dropped(&fleet), 0);

        // A long ring still holding every name: new ones are refused, old
        // ones keep working.
        let fleet = Fleet::new(1000, Arc::new(SystemClock));
        let s = fleet.connect(hello("i-1"));
        for seq in 0..100 {
            let name = format!("m{seq}");
            s.sampled(&fleet, with_custom(seq, &[(&name, 1.0), ("steady", 2.0)]));
        }
        let (names, last) = fleet
            .with_agent("i-1", |a| {
                let p = a.ring.back().unwrap();
                (a.custom_names.len(), (p.custom("m99"), p.custom("steady")))
            })
            .unwrap();
        assert_eq!(names, MAX_CUSTOM_NAMES);
        assert_eq!(last, (None, Some(2.0)));
        assert_eq!(dropped(&fleet), 100 - (MAX_CUSTOM_NAMES as u64 - 1));
    }

    #[test]
    fn missed_pulls_count_until_an_answer() {
        let fleet = Fleet::new(10, Arc::new(SystemClock));
        let s = fleet.connect(hello("i-1"));
        s.missed(&fleet, 1);
        s.missed(&fleet, 2);
        assert_eq!(fleet.with_agent("i-1", |a| a.consecutive_missed), Some(2));
        s.sampled(&fleet, sample(3, 1.0));
        assert_eq!(
            fleet.with_agent("i-1", |a| (a.consecutive_missed, a.missed)),
            Some((0, 2))
        );
    }

    #[test]
    fn a_replaced_stream_cannot_disconnect_its_successor() {
        let fleet = Fleet::new(10, Arc::new(SystemClock));
        let old = fleet.connect(hello("i-1"));
        let new = fleet.connect(hello("i-1"));
        assert!(!old.is_current() && new.is_current());
        old.disconnected(&fleet, "old stream ended");
        assert_eq!(fleet.connected_count(), 1);
        new.disconnected(&fleet, "gone");
        assert_eq!(fleet.connected_count(), 0);
    }

    #[test]
    fn the_controller_closes_streams_by_telling_their_tasks() {
        let fleet = Fleet::new(10, Arc::new(SystemClock));
        let until = SystemTime::now() + Duration::from_secs(60);
        let mut old = fleet.connect_until(hello("i-1"), Some(until));
        assert_eq!(old.control.borrow_and_update().until, Some(until));
        // A newer stream: the older one is told at once (and its sender
        // dropped, which its task reads as replaced too).
        let mut new = fleet.connect_until(hello("i-1"), Some(until));
        assert_eq!(
            old.control.borrow_and_update().close,
            Some(CloseReason::Replaced)
        );
        // A renewal moves the current stream's deadline, not the old one's.
        let later = until + Duration::from_secs(3600);
        old.extend_until(later);
        assert!(!new.control.has_changed().unwrap());
        new.extend_until(later);
        assert_eq!(new.control.borrow_and_update().until, Some(later));
        // Revoked: told, and the agent stays known until its task ends.
        assert!(fleet.close("i-1", CloseReason::Revoked));
        assert_eq!(
            new.control.borrow_and_update().close,
            Some(CloseReason::Revoked)
        );
        new.disconnected(&fleet, "closed");
        assert!(!fleet.close("i-1", CloseReason::Revoked), "no stream left");
        // An instance that left its group is forgotten even while connected.
        let mut s = fleet.connect(hello("i-2"));
        fleet.forget("i-2");
        assert_eq!(
            s.control.borrow_and_update().close,
            Some(CloseReason::LeftGroup)
        );
        assert_eq!(fleet.connected_count(), 0);
        assert!(fleet.with_agent("i-2", |_| ()).is_none());
    }

    #[test]
    fn metrics_show_counters_and_latest_values_of_connected_agents() {
        let fleet = Fleet::new(10, Arc::new(SystemClock));
        let a = fleet.connect(hello("i-a"));
        a.pulled(&fleet);
        a.sampled(&fleet, sample(1, 12.5));
        let b = fleet.connect(hello("i-b"));
        b.sampled(&fleet, sample(1, 99.0));
        b.disconnected(&fleet, "test");
        let groups = HashMap::from([("i-a".to_owned(), "web \"blue\"".to_owned())]);
        let text = fleet.render_metrics(Some(&groups));
        assert!(text.contains("ebb_agents_connected 1\n"), "{text}");
        assert!(text.contains("ebb_pulls_total 1\n"), "{text}");
        assert!(text.contains("ebb_samples_total 2\n"), "{text}");
        assert!(
            text.contains(
                "ebb_instance_cpu_utilization{instance_id=\"i-a\",group=\"web \\\"blue\\\"\"} 12.5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ebb_instance_memory_utilization{instance_id=\"i-a\",group=\"web \\\"blue\\\"\"} 40\n"
            ),
            "{text}"
        );
        assert!(!text.contains("instance_id=\"i-b\""), "{text}");
        assert!(!text.contains("instance=\""), "{text}");
        // Turned off, none at all.
        let text = fleet.render_metrics(None);
        assert!(!text.contains("ebb_instance_cpu_utilization"), "{text}");
    }

    #[test]
    fn histograms_count_each_value_in_the_first_bucket_that_holds_it() {
        let h = Histogram::default();
        h.record(Duration::from_micros(90));
        h.record(Duration::from_micros(100));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60));
        let mut text = String::new();
        h.render(&mut text, "t", "test");
        assert!(text.contains("t_bucket{le=\"0.0001\"} 2\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"0.0025\"} 2\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"0.0032\"} 3\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"10\"} 3\n"), "{text}");
        assert!(
            text.contains("t_bucket{le=\"+Inf\"} 4\nt_sum 60.00319\nt_count 4\n"),
            "{text}"
        );
    }

    /// DESIGN §3: every sample value has a valid range; out of range is
    /// dropped and counted, never averaged in.
    #[test]
    fn out_of_range_values_are_dropped_and_counted() {
        let fleet = Fleet::new(10, Arc::new(SystemClock));
        let s = fleet.connect(hello("i-1"));
        let rogue = Sample {
            cpu_utilization: Some(1e308),
            memory_utilization: Some(-5.0),
            load: Some(ebb_proto::v1::LoadAverage {
                one: f64::NAN,
                five: 0.0,
                fifteen: 0.0,
            }),
            network: Some(ebb_proto::v1::NetworkRates {
                rx_bytes_per_second: f64::INFINITY,
                tx_bytes_per_second: 10.0,
            }),
            ..Default::default()
        };
        s.sampled_at(&fleet, rogue, 1_000);
        let p = fleet
            .with_agent("i-1", |a| a.ring.back().unwrap().clone())
            .unwrap();
        assert_eq!(p.cpu_utilization(), None);
        assert_eq!(p.memory_utilization(), None);
        assert_eq!(p.load1(), None);
        assert_eq!(p.rx_bytes_per_second(), None);
        assert_eq!(p.tx_bytes_per_second(), Some(10.0), "the valid value stays");
        assert_eq!(
            fleet
                .counters
                .sample_values_dropped_total
                .load(Ordering::Relaxed),
            4
        );
        // The edges are valid; an absent value is not a dropped one.
        s.sampled_at(
            &fleet,
            Sample {
                cpu_utilization: Some(100.0),
                memory_utilization: Some(0.0),
                ..Default::default()
            },
            2_000,
        );
        let p = fleet
            .with_agent("i-1", |a| a.ring.back().unwrap().clone())
            .unwrap();
        assert_eq!(
            (p.cpu_utilization(), p.memory_utilization()),
            (Some(100.0), Some(0.0))
        );
        let text = fleet.render_metrics(None);
        assert!(
            text.contains("ebb_sample_values_dropped_total 4\n"),
            "{text}"
        );
        assert!(!text.contains("inf"), "{text}");
    }
}
