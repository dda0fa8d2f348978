//! Host metric collectors, and the custom metric sources of agent.toml.
//!
//! Each collector lives in its own file behind the small [`Collect`] trait and
//! reads from a proc root (normally `/proc`, a fixture directory in tests).
//! [`Collectors`] runs the enabled ones for one pull; a failing collector is
//! recorded in the [`Reading`], logged once when it starts failing and once
//! when it recovers, and never stops the others.
//!
//! [`CustomMetrics`] (`custom.rs`, with the Prometheus text format in
//! `prometheus.rs`) reads the `[[metric]]` sources on each pull the same way.

mod cpu;
mod custom;
mod host;
mod load;
mod memory;
mod net;
mod prometheus;
mod tcp;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use custom::{CustomMetrics, CustomReading, MetricSource, Source};
pub use host::host_facts;
pub use prometheus::Query;

/// The kinds of host metric the agent can collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CollectorKind {
    Cpu,
    Memory,
    Load,
    Network,
    Tcp,
}

impl CollectorKind {
    /// Every kind, in the order collectors run.
    pub const ALL: [CollectorKind; 5] = [
        CollectorKind::Cpu,
        CollectorKind::Memory,
        CollectorKind::Load,
        CollectorKind::Network,
        CollectorKind::Tcp,
    ];

    /// The name used in config and logs.
    pub fn name(self) -> &'static str {
        match self {
            CollectorKind::Cpu => "cpu",
            CollectorKind::Memory => "memory",
            CollectorKind::Load => "load",
            CollectorKind::Network => "network",
            CollectorKind::Tcp => "tcp",
        }
    }
}

/// The 1, 5 and 15 minute load averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

/// Receive and transmit rates summed over non-loopback interfaces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetRates {
    pub rx_bytes_per_second: f64,
    pub tx_bytes_per_second: f64,
}

/// TCP sockets (IPv4 and IPv6) other than listeners, and how many are established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounts {
    pub total: u32,
    pub established: u32,
}

/// One pull's worth of host metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Percent of all CPUs busy since the previous collect, 0..=100.
    pub cpu_utilization: Option<f64>,
    /// Percent, (MemTotal - MemAvailable) / MemTotal * 100.
    pub memory_utilization: Option<f64>,
    pub load: Option<LoadAverage>,
    /// Bytes/s since the previous collect, non-loopback interfaces summed.
    pub network: Option<NetRates>,
    pub tcp: Option<TcpCounts>,
    /// Collectors that failed this time, with a readable message naming the file.
    pub errors: Vec<(CollectorKind, String)>,
}

/// Host facts sent in the agent's Hello.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub hostname: String,
    pub addresses: Vec<std::net::IpAddr>,
    pub cpu_count: u32,
    pub memory_total_bytes: u64,
    pub boot_time_unix: i64,
}

/// One collector: reads its files under `root` and fills its field of `into`.
///
/// Rate collectors keep their previous counters in `self`; `now` is the
/// monotonic instant of this collect.
trait Collect: Send {
    fn collect(&mut self, root: &Path, now: Instant, into: &mut Reading) -> Result<(), String>;
}

/// Whether a collector is currently failing, so that a failure is logged once
/// when it starts and once when it ends rather than on every pull.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct FailureLog {
    failing: bool,
}

/// What a collect's outcome changed about a collector's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    StartedFailing,
    Recovered,
    Unchanged,
}

impl FailureLog {
    fn record(&mut self, ok: bool) -> Transition {
        let transition = match (self.failing, ok) {
            (false, false) => Transition::StartedFailing,
            (true, true) => Transition::Recovered,
            _ => Transition::Unchanged,
        };
        self.failing = !ok;
        transition
    }
}

struct Slot {
    kind: CollectorKind,
    collector: Box<dyn Collect>,
    log: FailureLog,
}

/// The agent's collectors and their state between pulls.
pub struct Collectors {
    root: PathBuf,
    slots: Vec<Slot>,
}

impl Collectors {
    /// Collectors reading from `proc_root` (normally `/proc`).
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        let slots = CollectorKind::ALL
            .into_iter()
            .map(|kind| Slot {
                kind,
                collector: new_collector(kind),
                log: FailureLog::default(),
            })
            .collect();
        Collectors {
            root: proc_root.into(),
            slots,
        }
    }

    /// Runs the enabled collectors. `now` is a monotonic instant used for rates.
    ///
    /// A failing collector is recorded in `errors`, logged with a warning once
    /// when it starts failing (and at info once when it recovers), and never
    /// stops the others.
    pub fn collect(&mut self, enabled: &[CollectorKind], now: Instant) -> Reading {
        let mut reading = Reading::default();
        for slot in &mut self.slots {
            if !enabled.contains(&slot.kind) {
                continue;
            }
            let result = slot.collector.collect(&self.root, now, &mut reading);
            let name = slot.kind.name();
            match (slot.log.record(result.is_ok()), &result) {
                (Transition::StartedFailing, Err(error)) => {
                    tracing::warn!(collector = name, %error, "collector failing");
                }
                (Transition::Recovered, _) => {
                    tracing::info!(collector = name, "collector recovered");
                }
                _ => {}
            }
            if let Err(error) = result {
                reading.errors.push((slot.kind, error));
            }
        }
        reading
    }
}

fn new_collector(kind: CollectorKind) -> Box<dyn Collect> {
    match kind {
        CollectorKind::Cpu => Box::<cpu::Cpu>::default(),
        CollectorKind::Memory => Box::new(memory::Memory),
        CollectorKind::Load => Box::new(load::Load),
        CollectorKind::Network => Box::<net::Net>::default(),
        CollectorKind::Tcp => Box::new(tcp::Tcp),
    }
}

/// Reads a whole proc file, with an error message that names it. Proc files
/// report size 0, so std would start with tiny reads; one buffer sized for
/// the largest file we read (net/dev on a busy host) keeps it to a read or two.
fn read_proc_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::with_capacity(16 * 1024);
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fixture proc root under `agent/tests/fixtures/`.
    pub(crate) fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// Writes `files` (relative path, contents) into a fresh temporary proc root.
    pub(crate) fn temp_root(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        write_files(dir.path(), files);
        dir
    }

    pub(crate) fn write_files(root: &Path, files: &[(&str, &str)]) {
        for (rel, contents) in files {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, contents).expect("write fixture");
        }
    }

    #[test]
    fn kind_names() {
        let names: Vec<_> = CollectorKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["cpu", "memory", "load", "network", "tcp"]);
    }

    #[test]
    fn failing_twice_logs_once_and_recovery_logs_once() {
        let mut log = FailureLog::default();
        assert_eq!(log.record(true), Transition::Unchanged);
        assert_eq!(log.record(false), Transition::StartedFailing);
        assert_eq!(log.record(false), Transition::Unchanged);
        assert_eq!(log.record(false), Transition::Unchanged);
        assert_eq!(log.record(true), Transition::Recovered);
        assert_eq!(log.record(true), Transition::Unchanged);
        assert_eq!(log.record(false), Transition::StartedFailing);
    }

    #[test]
    fn fixture_root_collects_everything_but_rates_on_first_pull() {
        let mut collectors = Collectors::new(fixture("proc-basic"));
        let reading = collectors.collect(&CollectorKind::ALL, Instant::now());
        assert!(reading.errors.is_empty(), "{:?}", reading.errors);
        assert_eq!(reading.cpu_utilization, None);
        assert_eq!(reading.network, None);
        assert!(reading.memory_utilization.is_some());
        assert!(reading.load.is_some());
        assert!(reading.tcp.is_some());
    }

    #[test]
    fn only_enabled_collectors_run() {
        let mut collectors = Collectors::new(fixture("proc-basic"));
        let reading = collectors.collect(&[CollectorKind::Load], Instant::now());
        assert!(reading.load.is_some());
        assert_eq!(reading.memory_utilization, None);
        assert_eq!(reading.tcp, None);
    }

    #[test]
    fn a_failing_collector_does_not_stop_the_others_and_its_state_is_kept() {
        let root = temp_root(&[("loadavg", "0.50 0.40 0.30 1/100 42\n")]);
        let mut collectors = Collectors::new(root.path());
        let enabled = [CollectorKind::Memory, CollectorKind::Load];
        for _ in 0..2 {
            let reading = collectors.collect(&enabled, Instant::now());
            assert_eq!(reading.errors.len(), 1);
            assert_eq!(reading.errors[0].0, CollectorKind::Memory);
            assert!(reading.load.is_some());
        }
        let memory = &collectors.slots[1];
        assert_eq!(memory.kind, CollectorKind::Memory);
        assert!(memory.log.failing);

        write_files(
            root.path(),
            &[("meminfo", "MemTotal: 1000 kB\nMemAvailable: 250 kB\n")],
        );
        let reading = collectors.collect(&enabled, Instant::now());
        assert!(reading.errors.is_empty());
        assert_eq!(reading.memory_utilization, Some(75.0));
        assert!(!collectors.slots[1].log.failing);
    }

    #[test]
    fn real_host_twice() {
        let mut collectors = Collectors::new("/proc");
        let start = Instant::now();
        let first = collectors.collect(&CollectorKind::ALL, start);
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        // The kernel's counters tick in jiffies; wait until a window has some in it.
        let second = loop {
            std::thread::sleep(Duration::from_millis(50));
            let reading = collectors.collect(&CollectorKind::ALL, Instant::now());
            if reading.cpu_utilization.is_some() || start.elapsed() > Duration::from_secs(5) {
                break reading;
            }
        };
        assert!(second.errors.is_empty(), "{:?}", second.errors);
        let cpu = second.cpu_utilization.expect("cpu after two reads");
        assert!((0.0..=100.0).contains(&cpu), "cpu {cpu}");
        let memory = second.memory_utilization.expect("memory");
        assert!(memory > 0.0 && memory <= 100.0, "memory {memory}");
        let net = second.network.expect("network after two reads");
        assert!(net.rx_bytes_per_second >= 0.0 && net.tx_bytes_per_second >= 0.0);
        assert!(second.load.is_some());
        assert!(second.tcp.is_some());
    }
}
