//! Memory utilisation from `<root>/meminfo`.

use std::path::Path;
use std::time::Instant;

use super::{Collect, Reading, read_proc_file};

/// Percent of memory not available to new work: (MemTotal - MemAvailable) / MemTotal.
pub(super) struct Memory;

impl Collect for Memory {
    fn collect(&mut self, root: &Path, _now: Instant, into: &mut Reading) -> Result<(), String> {
        let path = root.join("meminfo");
        let text = read_proc_file(&path)?;
        let field = |key| {
            meminfo_kb(&text, key).ok_or_else(|| format!("{}: no {key} line", path.display()))
        };
        let total = field("MemTotal")?;
        let available = field("MemAvailable")?;
        if total == 0 {
            return Err(format!("{}: MemTotal is 0", path.display()));
        }
        let used = total.saturating_sub(available);
        into.memory_utilization = Some((100.0 * used as f64 / total as f64).clamp(0.0, 100.0));
        Ok(())
    }
}

/// The value of one `Key:   N kB` line of a meminfo file.
pub(super) fn meminfo_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{fixture, temp_root};

    fn read(root: &Path) -> Result<Option<f64>, String> {
        let mut reading = Reading::default();
        Memory.collect(root, Instant::now(), &mut reading)?;
        Ok(reading.memory_utilization)
    }

    #[test]
    fn utilization_from_fixture() {
        // MemTotal 16384000 kB, MemAvailable 12288000 kB.
        assert_eq!(read(&fixture("proc-basic")), Ok(Some(25.0)));
    }

    #[test]
    fn key_must_match_whole_name() {
        let text = "MemTotalish: 5 kB\nMemTotal:    7 kB\n";
        assert_eq!(meminfo_kb(text, "MemTotal"), Some(7));
        assert_eq!(meminfo_kb(text, "MemAvailable"), None);
    }

    #[test]
    fn missing_mem_available_is_an_error_naming_the_file() {
        let root = temp_root(&[("meminfo", "MemTotal: 1000 kB\nMemFree: 500 kB\n")]);
        let error = read(root.path()).unwrap_err();
        let path = root.path().join("meminfo");
        assert_eq!(error, format!("{}: no MemAvailable line", path.display()));
    }

    #[test]
    fn missing_file_names_the_path() {
        let root = temp_root(&[]);
        let error = read(root.path()).unwrap_err();
        assert!(error.starts_with("cannot read "), "{error}");
        assert!(
            error.contains(&root.path().join("meminfo").display().to_string()),
            "{error}"
        );
    }
}
