//! CPU utilisation from the aggregate `cpu` line of `<root>/stat`.

use std::path::Path;
use std::time::Instant;

use super::{Collect, Reading, read_proc_file};

/// Cumulative jiffies from one read of the `cpu` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Times {
    total: u64,
    idle: u64,
}

/// Averages CPU utilisation over the time between two collects.
#[derive(Debug, Default)]
pub(super) struct Cpu {
    previous: Option<Times>,
}

impl Collect for Cpu {
    fn collect(&mut self, root: &Path, _now: Instant, into: &mut Reading) -> Result<(), String> {
        let path = root.join("stat");
        let text = read_proc_file(&path)?;
        let times = parse_cpu_line(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        into.cpu_utilization = self
            .previous
            .and_then(|previous| utilization(previous, times));
        self.previous = Some(times);
        Ok(())
    }
}

/// Percent busy between two reads; `None` when no time passed or the
/// counters went backwards (the next read then measures from `current`).
fn utilization(previous: Times, current: Times) -> Option<f64> {
    let total = current.total.checked_sub(previous.total)?;
    let idle = current.idle.checked_sub(previous.idle)?;
    if total == 0 {
        return None;
    }
    let busy = total.saturating_sub(idle);
    Some((100.0 * busy as f64 / total as f64).clamp(0.0, 100.0))
}

fn parse_cpu_line(text: &str) -> Result<Times, String> {
    let line = text
        .lines()
        .find(|line| line.split_whitespace().next() == Some("cpu"))
        .ok_or("no aggregate `cpu` line")?;
    let fields = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad `cpu` line {line:?}: {e}"))?;
    // user nice system idle [iowait irq softirq steal [guest guest_nice]]: older
    // kernels have fewer columns, and guest time is already counted in user and nice.
    if fields.len() < 4 {
        return Err(format!(
            "`cpu` line has {} fields, expected at least 4",
            fields.len()
        ));
    }
    let total = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Ok(Times { total, idle })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{fixture, temp_root, write_files};

    fn stat(user: u64, system: u64, idle: u64, iowait: u64) -> String {
        format!(
            "cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0\ncpu0 {user} 0 {system} {idle} {iowait} 0 0 0 0 0\nbtime 1700000000\n"
        )
    }

    fn read(cpu: &mut Cpu, root: &Path) -> Result<Option<f64>, String> {
        let mut reading = Reading::default();
        cpu.collect(root, Instant::now(), &mut reading)?;
        Ok(reading.cpu_utilization)
    }

    #[test]
    fn parses_the_fixture_and_excludes_guest_time() {
        let text = std::fs::read_to_string(fixture("proc-basic").join("stat")).unwrap();
        let times = parse_cpu_line(&text).unwrap();
        // cpu  92339 0 4896 42154 804 0 59 798 1234 0
        assert_eq!(times.total, 92339 + 4896 + 42154 + 804 + 59 + 798);
        assert_eq!(times.idle, 42154 + 804);
    }

    #[test]
    fn first_read_has_no_window() {
        let root = fixture("proc-basic");
        assert_eq!(read(&mut Cpu::default(), &root), Ok(None));
    }

    #[test]
    fn averages_across_two_reads() {
        let root = temp_root(&[("stat", &stat(1000, 500, 8000, 500))]);
        let mut cpu = Cpu::default();
        assert_eq!(read(&mut cpu, root.path()), Ok(None));
        // +200 user, +50 system, +700 idle, +50 iowait: 250 busy of 1000.
        write_files(root.path(), &[("stat", &stat(1200, 550, 8700, 550))]);
        assert_eq!(read(&mut cpu, root.path()), Ok(Some(25.0)));
        // The next window starts where the last one ended: 1000 busy of 1000.
        write_files(root.path(), &[("stat", &stat(2200, 550, 8700, 550))]);
        assert_eq!(read(&mut cpu, root.path()), Ok(Some(100.0)));
    }

    #[test]
    fn no_elapsed_jiffies_is_no_value() {
        let root = temp_root(&[("stat", &stat(1000, 500, 8000, 500))]);
        let mut cpu = Cpu::default();
        read(&mut cpu, root.path()).unwrap();
        assert_eq!(read(&mut cpu, root.path()), Ok(None));
    }

    #[test]
    fn counters_going_backwards_reset_the_baseline() {
        let root = temp_root(&[("stat", &stat(5000, 500, 8000, 500))]);
        let mut cpu = Cpu::default();
        read(&mut cpu, root.path()).unwrap();
        write_files(root.path(), &[("stat", &stat(100, 100, 700, 100))]);
        assert_eq!(read(&mut cpu, root.path()), Ok(None));
        // Measured from the post-reset read: 100 busy of 200.
        write_files(root.path(), &[("stat", &stat(200, 100, 800, 100))]);
        assert_eq!(read(&mut cpu, root.path()), Ok(Some(50.0)));
    }

    #[test]
    fn missing_file_names_the_path() {
        let root = temp_root(&[]);
        let error = read(&mut Cpu::default(), root.path()).unwrap_err();
        let path = root.path().join("stat");
        assert!(error.contains(&path.display().to_string()), "{error}");
    }

    #[test]
    fn malformed_line_names_the_path() {
        let root = temp_root(&[("stat", "cpu  1 2 x 4\n")]);
        let error = read(&mut Cpu::default(), root.path()).unwrap_err();
        assert!(error.contains("stat"), "{error}");
        assert!(error.contains("bad `cpu` line"), "{error}");
    }
}
