//! What the benchmarks share: flags, readings from /proc, the fd limit, and
//! printing a latency distribution.
#![allow(dead_code)] // each bench uses its own part of this module

use std::fs;
use std::time::Duration;

use hdrhistogram::Histogram;

/// The value after `--name` on the command line, parsed, or `default`.
/// `cargo bench` adds `--bench` of its own; unknown flags are ignored.
pub fn flag<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: cannot parse `{v}`"))
        })
        .unwrap_or(default)
}

/// Whether `--name` is on the command line.
pub fn switch(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// Clock ticks per second of /proc/<pid>/stat's times (`getconf CLK_TCK`).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// CPU a process has used: utime + stime from /proc/<pid>/stat, and the
/// nanosecond run time from /proc/<pid>/task/*/schedstat (finer; misses
/// threads that have exited).
#[derive(Debug, Clone, Copy)]
pub struct CpuTime {
    pub ticks: u64,
    pub run_ns: u64,
}

impl CpuTime {
    pub fn of(pid: u32) -> Self {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command (which may hold spaces) start at state.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        // utime and stime are fields 14 and 15 of stat; state is field 3.
        let ticks = field(11).unwrap_or(0) + field(12).unwrap_or(0);
        // schedstat is per thread: sum the live threads.
        let run_ns = fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| {
                let s = fs::read_to_string(t.path().join("schedstat")).ok()?;
                s.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum();
        Self { ticks, run_ns }
    }

    /// CPU used since `earlier`, in milliseconds: (from ticks, from schedstat).
    pub fn ms_since(&self, earlier: &Self, hz: u64) -> (f64, f64) {
        (
            (self.ticks - earlier.ticks) as f64 * 1000.0 / hz as f64,
            (self.run_ns - earlier.run_ns) as f64 / 1e6,
        )
    }
}

/// A process's memory from one read of `/proc/<pid>/status`, in kB.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryKb {
    /// VmRSS and VmHWM.
    pub rss: u64,
    pub hwm: u64,
    /// Of VmRSS: RssAnon (heap and stacks) and RssFile (the pages of its
    /// binary and libraries).
    pub anon: u64,
    pub file: u64,
}

pub fn memory_kb(pid: u32) -> MemoryKb {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    MemoryKb {
        rss: get("VmRSS:"),
        hwm: get("VmHWM:"),
        anon: get("RssAnon:"),
        file: get("RssFile:"),
    }
}

/// The host's CPU counters from `/proc/stat`, in clock ticks: all time,
/// busy time (not idle or iowait), and steal (taken by the hypervisor for
/// other guests).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCpu {
    pub total: u64,
    pub busy: u64,
    pub steal: u64,
}

impl HostCpu {
    pub fn now() -> Self {
        let text = fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
            return Self::default();
        };
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest is in user).
        let total: u64 = (0..8).map(at).sum();
        Self {
            total,
            busy: total - at(3) - at(4),
            steal: at(7),
        }
    }

    /// Cores busy (steal included) and the share of time stolen, since `before`.
    pub fn since(&self, before: &Self, hz: f64, wall_secs: f64) -> (f64, f64) {
        let busy = (self.busy - before.busy) as f64 / hz / wall_secs;
        let steal = (self.steal - before.steal) as f64 / (self.total - before.total).max(1) as f64;
        (busy, steal)
    }
}

/// The 1-minute load average, to record how quiet the machine was.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Lifts this process's open-file limit (children inherit it): to 65536
/// when allowed (root), else to the hard limit.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = 65_536;
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    hard
}

/// A histogram of microseconds, 3 significant digits, up to an hour.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

pub fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// "p50 … p99 … max …" of a histogram of microseconds.
pub fn quantiles(h: &Histogram<u64>) -> String {
    format!(
        "n={} p50={} p99={} max={}",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    )
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
