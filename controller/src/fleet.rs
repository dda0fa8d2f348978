//! The live fleet: every agent that has said hello, its connection state,
//! its pull counters and a bounded ring of its recent samples.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// One sample as kept in the ring: the numbers, without the strings.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub seq: u64,
    /// When the controller received it.
    pub received_at: SystemTime,
    pub cpu_utilization: Option<f64>,
    pub memory_utilization: Option<f64>,
    pub load1: Option<f64>,
    pub rx_bytes_per_second: Option<f64>,
    pub tx_bytes_per_second: Option<f64>,
    pub tcp_total: Option<u32>,
    pub tcp_established: Option<u32>,
}

impl Point {
    fn from_sample(s: &Sample, received_at: SystemTime) -> Self {
        Self {
            seq: s.seq,
            received_at,
            cpu_utilization: s.cpu_utilization,
            memory_utilization: s.memory_utilization,
            load1: s.load.map(|l| l.one),
            rx_bytes_per_second: s.network.map(|n| n.rx_bytes_per_second),
            tx_bytes_per_second: s.network.map(|n| n.tx_bytes_per_second),
            tcp_total: s.tcp.map(|t| t.total),
            tcp_established: s.tcp.map(|t| t.established),
        }
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
    ring_capacity: usize,
    /// Woken on every connect and disconnect, so the reconcile loop reacts
    /// at once instead of at its next tick.
    pub changed: tokio::sync::Notify,
    /// Lifecycle hook scripts to agents and their results back.
    pub lifecycle: crate::lifecycle::Outbox,
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
                    ring: VecDeque::with_capacity(self.ring_capacity),
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
                .filter_map(|p| p.cpu_utilization)
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
                    p.and_then(|p| p.cpu_utilization),
                    p.and_then(|p| p.memory_utilization),
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
    pub fn sampled(&self, fleet: &Fleet, sample: Sample, capacity: usize) {
        self.sampled_at(fleet, sample, capacity, SystemTime::now());
    }

    /// As `sampled`, received at a given time (tests drive the clock).
    pub fn sampled_at(
        &self,
        fleet: &Fleet,
        sample: Sample,
        capacity: usize,
        received_at: SystemTime,
    ) {
        fleet.counters.samples_total.fetch_add(1, Ordering::Relaxed);
        let mut s = lock(&self.state);
        if s.consecutive_missed > 0 {
            info!(instance = %self.instance_id, missed = s.consecutive_missed, "agent answers pulls again");
        }
        s.consecutive_missed = 0;
        if s.ring.len() == capacity {
            s.ring.pop_front();
        }
        s.ring.push_back(Point::from_sample(&sample, received_at));
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
    pub fn ring_capacity(&self) -> usize {
        self.ring_capacity
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
            s.sampled(&fleet, sample(seq, seq as f64), fleet.ring_capacity());
        }
        let seqs = fleet
            .with_agent("i-1", |a| a.ring.iter().map(|p| p.seq).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(fleet.counters.samples_total.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn missed_pulls_count_until_an_answer() {
        let fleet = Fleet::new(10);
        let s = fleet.connect(hello("i-1"));
        s.missed(&fleet, 1);
        s.missed(&fleet, 2);
        assert_eq!(fleet.with_agent("i-1", |a| a.consecutive_missed), Some(2));
        s.sampled(&fleet, sample(3, 1.0), 10);
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
        a.sampled(&fleet, sample(1, 12.5), 10);
        let b = fleet.connect(hello("i-b"));
        b.sampled(&fleet, sample(1, 99.0), 10);
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
