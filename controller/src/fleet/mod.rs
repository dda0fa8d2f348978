//! The live fleet: every agent that has said hello, its connection state,
//! its pull counters and a bounded ring of its recent samples.

pub mod agent_service;
pub mod outbox;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use ebb_proto::v1::{Hello, Sample};
use tracing::{info, warn};

/// Fleet-wide counters, exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub pulls_total: AtomicU64,
    pub pulls_missed_total: AtomicU64,
    pub samples_total: AtomicU64,
    /// Answers that came after the next pull had been sent.
    pub samples_late_total: AtomicU64,
    /// TLS handshakes or Connect calls refused for identity reasons.
    pub connections_refused_total: AtomicU64,
    /// Webhook notifications delivered, and given up on after retries.
    pub notifications_sent_total: AtomicU64,
    pub notifications_failed_total: AtomicU64,
    /// From a Pull queued to its Sample read back, by the stream's task.
    pub pull_round_trip: Histogram,
    /// One pass of alarm evaluation that evaluated at least one alarm.
    pub alarm_evaluation: Histogram,
    /// Reconcile passes over every group, finished.
    pub reconcile_passes_total: AtomicU64,
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
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub seq: u64,
    /// When the controller received it, in ms since the Unix epoch.
    pub received_at_ms: i64,
    /// CPU, memory, load1, rx and tx bytes per second.
    values: [f64; 5],
    /// TCP connections in all, and established.
    tcp: [u32; 2],
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
    fn from_sample(s: &Sample, received_at: SystemTime) -> Self {
        let f = |v: Option<f64>| v.unwrap_or(f64::NAN);
        Self {
            seq: s.seq,
            received_at_ms: received_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            values: [
                f(s.cpu_utilization),
                f(s.memory_utilization),
                f(s.load.map(|l| l.one)),
                f(s.network.map(|n| n.rx_bytes_per_second)),
                f(s.network.map(|n| n.tx_bytes_per_second)),
            ],
            tcp: [
                s.tcp.map_or(NO_COUNT, |t| t.total.min(NO_COUNT - 1)),
                s.tcp.map_or(NO_COUNT, |t| t.established.min(NO_COUNT - 1)),
            ],
        }
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
    pub connected_at: SystemTime,
    pub disconnected_at: Option<SystemTime>,
    pub disconnect_reason: Option<String>,
    pub pulls: u64,
    pub missed: u64,
    pub consecutive_missed: u32,
    pub latest: Option<Sample>,
    pub ring: VecDeque<Point>,
}

/// The registry of agents, keyed by instance id.
#[derive(Debug)]
pub struct Fleet {
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
}

/// A handle a stream's task holds for its agent.
#[derive(Debug, Clone)]
pub struct Session {
    pub instance_id: String,
    pub session: u64,
    state: Arc<Mutex<AgentState>>,
}

fn lock(m: &Mutex<AgentState>) -> MutexGuard<'_, AgentState> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fleet {
    pub fn new(ring_capacity: usize) -> Self {
        Self {
            agents: DashMap::new(),
            counters: Counters::default(),
            ring_capacity,
            // Up to `sample_ring` samples until the alarm loop says how long.
            keep_ms: AtomicI64::new(i64::MAX),
            changed: tokio::sync::Notify::new(),
            lifecycle: Default::default(),
        }
    }

    /// Registers a connected agent; a previous stream of the same instance
    /// is superseded (its task ends at its next step).
    pub fn connect(&self, hello: Hello) -> Session {
        let id = hello.instance_id.clone();
        let now = SystemTime::now();
        let entry = self
            .agents
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(AgentState {
                    hello: hello.clone(),
                    connected: false,
                    session: 0,
                    connected_at: now,
                    disconnected_at: None,
                    disconnect_reason: None,
                    pulls: 0,
                    missed: 0,
                    consecutive_missed: 0,
                    latest: None,
                    ring: VecDeque::new(),
                }))
            })
            .clone();
        let session = {
            let mut s = lock(&entry);
            if s.connected {
                warn!(instance = %id, "a new stream replaces the agent's previous one");
            }
            s.hello = hello;
            s.connected = true;
            s.session += 1;
            s.connected_at = now;
            s.disconnected_at = None;
            s.disconnect_reason = None;
            s.consecutive_missed = 0;
            s.session
        };
        self.changed.notify_one();
        Session {
            instance_id: id,
            session,
            state: entry,
        }
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

    /// Forgets an instance that left for good (released or detached).
    pub fn forget(&self, id: &str) {
        self.agents.remove_if(id, |_, v| !lock(v).connected);
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

    /// Prometheus text exposition of the fleet.
    pub fn render_metrics(&self) -> String {
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
            "ebb_connections_refused_total",
            "Connections refused: bad or missing certificate, wrong identity.",
            c.connections_refused_total.load(Ordering::Relaxed),
        );
        counter(
            "ebb_reconcile_passes_total",
            "Reconcile passes over every group, finished.",
            c.reconcile_passes_total.load(Ordering::Relaxed),
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
            if let Some(v) = c {
                let _ = writeln!(cpu, "ebb_instance_cpu_utilization{{instance=\"{id}\"}} {v}");
            }
            if let Some(v) = m {
                let _ = writeln!(
                    mem,
                    "ebb_instance_memory_utilization{{instance=\"{id}\"}} {v}"
                );
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
        self.sampled_at(fleet, sample, SystemTime::now());
    }

    /// As `sampled`, received at a given time (tests drive the clock).
    pub fn sampled_at(&self, fleet: &Fleet, sample: Sample, received_at: SystemTime) {
        fleet.counters.samples_total.fetch_add(1, Ordering::Relaxed);
        let mut s = lock(&self.state);
        if s.consecutive_missed > 0 {
            info!(instance = %self.instance_id, missed = s.consecutive_missed, "agent answers pulls again");
        }
        s.consecutive_missed = 0;
        let point = Point::from_sample(&sample, received_at);
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
        s.disconnected_at = Some(SystemTime::now());
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
        let fleet = Fleet::new(3);
        let s = fleet.connect(hello("i-1"));
        for seq in 1..=5 {
            s.sampled(&fleet, sample(seq, seq as f64));
        }
        let seqs = fleet
            .with_agent("i-1", |a| a.ring.iter().map(|p| p.seq).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(fleet.counters.samples_total.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn rings_keep_what_the_alarms_read_and_no_more() {
        let fleet = Fleet::new(1000);
        let s = fleet.connect(hello("i-1"));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
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
        let p = Point::from_sample(&full, SystemTime::UNIX_EPOCH + Duration::from_millis(1500));
        assert_eq!(p.received_at_ms, 1500);
        assert_eq!(
            (p.cpu_utilization(), p.memory_utilization(), p.load1()),
            (Some(12.5), Some(40.0), Some(0.5))
        );
        assert_eq!((p.tcp_total(), p.tcp_established()), (Some(7), Some(3)));
        assert_eq!(p.rx_bytes_per_second(), None);
        let nan = Point::from_sample(&sample(2, f64::NAN), SystemTime::now());
        assert_eq!(nan.cpu_utilization(), None);
        assert_eq!(std::mem::size_of::<Point>(), 64);
    }

    #[test]
    fn missed_pulls_count_until_an_answer() {
        let fleet = Fleet::new(10);
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
        let fleet = Fleet::new(10);
        let old = fleet.connect(hello("i-1"));
        let new = fleet.connect(hello("i-1"));
        assert!(!old.is_current() && new.is_current());
        old.disconnected(&fleet, "old stream ended");
        assert_eq!(fleet.connected_count(), 1);
        new.disconnected(&fleet, "gone");
        assert_eq!(fleet.connected_count(), 0);
    }

    #[test]
    fn metrics_show_counters_and_latest_values_of_connected_agents() {
        let fleet = Fleet::new(10);
        let a = fleet.connect(hello("i-a"));
        a.pulled(&fleet);
        a.sampled(&fleet, sample(1, 12.5));
        let b = fleet.connect(hello("i-b"));
        b.sampled(&fleet, sample(1, 99.0));
        b.disconnected(&fleet, "test");
        let text = fleet.render_metrics();
        assert!(text.contains("ebb_agents_connected 1\n"), "{text}");
        assert!(text.contains("ebb_pulls_total 1\n"), "{text}");
        assert!(text.contains("ebb_samples_total 2\n"), "{text}");
        assert!(
            text.contains("ebb_instance_cpu_utilization{instance=\"i-a\"} 12.5\n"),
            "{text}"
        );
        assert!(
            text.contains("ebb_instance_memory_utilization{instance=\"i-a\"} 40\n"),
            "{text}"
        );
        assert!(!text.contains("instance=\"i-b\""), "{text}");
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
}
