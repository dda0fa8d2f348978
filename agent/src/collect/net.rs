//! Network receive and transmit rates from `<root>/net/dev`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use super::{Collect, NetRates, Reading, read_proc_file};

/// Cumulative byte counters of one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    rx: u64,
    tx: u64,
}

/// Averages byte rates, summed over non-loopback interfaces, between two collects.
#[derive(Debug, Default)]
pub(super) struct Net {
    previous: Option<(Instant, HashMap<String, Counters>)>,
}

impl Collect for Net {
    fn collect(&mut self, root: &Path, now: Instant, into: &mut Reading) -> Result<(), String> {
        let path = root.join("net/dev");
        let text = read_proc_file(&path)?;
        let current = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        match self.previous.take() {
            // The same instant twice has no window; keep the older baseline.
            Some((then, previous)) if now <= then => {
                self.previous = Some((then, previous));
            }
            Some((then, previous)) => {
                into.network = Some(rates(&previous, &current, (now - then).as_secs_f64()));
                self.previous = Some((now, current));
            }
            None => self.previous = Some((now, current)),
        }
        Ok(())
    }
}

/// Rates over interfaces present in both reads. A counter that went backwards
/// (a driver reset, an interface recreated) counts as no traffic rather than
/// as a huge or negative rate.
fn rates(
    previous: &HashMap<String, Counters>,
    current: &HashMap<String, Counters>,
    seconds: f64,
) -> NetRates {
    let (mut rx, mut tx) = (0u64, 0u64);
    for (name, now) in current {
        if let Some(before) = previous.get(name) {
            rx = rx.saturating_add(now.rx.saturating_sub(before.rx));
            tx = tx.saturating_add(now.tx.saturating_sub(before.tx));
        }
    }
    NetRates {
        rx_bytes_per_second: rx as f64 / seconds,
        tx_bytes_per_second: tx as f64 / seconds,
    }
}

fn parse(text: &str) -> Result<HashMap<String, Counters>, String> {
    let mut interfaces = HashMap::new();
    // Two header lines ("Inter-|   Receive ..." and " face |bytes ...").
    for line in text.lines().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        // Large counters run into the colon ("eth0:123456"), so split on it first.
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| format!("no ':' in line {line:?}"))?;
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |index: usize| -> Result<u64, String> {
            fields
                .get(index)
                .and_then(|field| field.parse().ok())
                .ok_or_else(|| format!("bad counters for interface {name}: {line:?}"))
        };
        let counters = Counters {
            rx: field(0)?,
            tx: field(8)?,
        };
        interfaces.insert(name.to_owned(), counters);
    }
    Ok(interfaces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{fixture, temp_root, write_files};
    use std::time::Duration;

    const HEADER: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

    fn dev(lines: &[(&str, u64, u64)]) -> String {
        let mut text = HEADER.to_owned();
        for (name, rx, tx) in lines {
            text.push_str(&format!(
                "{name:>6}: {rx:>8}    3294    0    0    0     0          0         0 {tx:>8}    2379    0    0    0     0       0          0\n"
            ));
        }
        text
    }

    fn read(net: &mut Net, root: &Path, now: Instant) -> Result<Option<NetRates>, String> {
        let mut reading = Reading::default();
        net.collect(root, now, &mut reading)?;
        Ok(reading.network)
    }

    #[test]
    fn parses_fixture_skipping_loopback_and_handles_numbers_touching_the_colon() {
        let text = std::fs::read_to_string(fixture("proc-basic").join("net/dev")).unwrap();
        let interfaces = parse(&text).unwrap();
        let mut names: Vec<_> = interfaces.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["docker0", "eth0", "eth1"]);
        assert_eq!(
            interfaces["eth0"],
            Counters {
                rx: 54024568,
                tx: 289436
            }
        );
        assert_eq!(
            interfaces["eth1"],
            Counters {
                rx: 123456789012,
                tx: 98765432109
            }
        );
    }

    #[test]
    fn first_read_has_no_window() {
        let mut net = Net::default();
        assert_eq!(
            read(&mut net, &fixture("proc-basic"), Instant::now()),
            Ok(None)
        );
    }

    #[test]
    fn rate_across_two_reads() {
        let root = temp_root(&[("net/dev", &dev(&[("lo", 0, 0), ("eth0", 1000, 500)]))]);
        let mut net = Net::default();
        let start = Instant::now();
        assert_eq!(read(&mut net, root.path(), start), Ok(None));
        write_files(
            root.path(),
            &[(
                "net/dev",
                &dev(&[
                    ("lo", 1_000_000, 1_000_000),
                    ("eth0", 5000, 2500),
                    ("eth1", 7, 7),
                ]),
            )],
        );
        let rates = read(&mut net, root.path(), start + Duration::from_secs(2)).unwrap();
        // eth1 was not there before, lo never counts: 4000 rx and 2000 tx over 2 s.
        assert_eq!(
            rates,
            Some(NetRates {
                rx_bytes_per_second: 2000.0,
                tx_bytes_per_second: 1000.0
            })
        );
    }

    #[test]
    fn counter_reset_counts_as_no_traffic() {
        let root = temp_root(&[(
            "net/dev",
            &dev(&[("eth0", 90_000, 90_000), ("eth1", 100, 100)]),
        )]);
        let mut net = Net::default();
        let start = Instant::now();
        read(&mut net, root.path(), start).unwrap();
        write_files(
            root.path(),
            &[("net/dev", &dev(&[("eth0", 10, 20), ("eth1", 600, 1100)]))],
        );
        let rates = read(&mut net, root.path(), start + Duration::from_millis(500)).unwrap();
        assert_eq!(
            rates,
            Some(NetRates {
                rx_bytes_per_second: 1000.0,
                tx_bytes_per_second: 2000.0
            })
        );
        // The reset values are the new baseline.
        write_files(
            root.path(),
            &[("net/dev", &dev(&[("eth0", 110, 20), ("eth1", 600, 1100)]))],
        );
        let rates = read(&mut net, root.path(), start + Duration::from_millis(1500)).unwrap();
        assert_eq!(
            rates,
            Some(NetRates {
                rx_bytes_per_second: 100.0,
                tx_bytes_per_second: 0.0
            })
        );
    }

    #[test]
    fn same_instant_twice_has_no_window() {
        let root = temp_root(&[("net/dev", &dev(&[("eth0", 1000, 500)]))]);
        let mut net = Net::default();
        let now = Instant::now();
        read(&mut net, root.path(), now).unwrap();
        assert_eq!(read(&mut net, root.path(), now), Ok(None));
    }

    #[test]
    fn missing_file_names_the_path() {
        let root = temp_root(&[]);
        let error = read(&mut Net::default(), root.path(), Instant::now()).unwrap_err();
        assert!(
            error.contains(&root.path().join("net/dev").display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn truncated_line_is_an_error_naming_the_file() {
        let root = temp_root(&[("net/dev", &format!("{HEADER}  eth0: 1 2 3\n"))]);
        let error = read(&mut Net::default(), root.path(), Instant::now()).unwrap_err();
        assert!(error.contains("net/dev"), "{error}");
        assert!(error.contains("bad counters for interface eth0"), "{error}");
    }
}
