//! TCP connection counts from the kernel's counters: `<root>/net/snmp`
//! (`Tcp: CurrEstab`) and `<root>/net/sockstat` / `sockstat6` (`inuse`, `tw`).
//!
//! Why counters and not `/proc/net/tcp`: reading the socket tables walks
//! the whole TCP hash, whose size scales with RAM, on every read; on a 24 GiB
//! host that cost about 5 ms of CPU per pull, more than everything else the
//! agent does together. The counters cost a few microseconds.
//!
//! - `established`: `CurrEstab`, connections in ESTABLISHED or CLOSE-WAIT
//!   (RFC 1213's definition), IPv4 and IPv6 together.
//! - `total`: every TCP socket in use, IPv4 (`TCP: inuse`) plus IPv6
//!   (`TCP6: inuse`), plus TIME-WAIT (`tw`); listening sockets are included.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Instant;

use super::{Collect, Reading, TcpCounts, read_proc_file};

/// Counts TCP connections from kernel counters.
pub(super) struct Tcp;

impl Collect for Tcp {
    fn collect(&mut self, root: &Path, _now: Instant, into: &mut Reading) -> Result<(), String> {
        let snmp = root.join("net/snmp");
        let established =
            curr_estab(&read_proc_file(&snmp)?).map_err(|e| format!("{}: {e}", snmp.display()))?;
        let sockstat = root.join("net/sockstat");
        let text = read_proc_file(&sockstat)?;
        let field = |name| {
            sockstat_field(&text, "TCP:", name).map_err(|e| format!("{}: {e}", sockstat.display()))
        };
        let mut total = field("inuse")? + field("tw")?;
        let v6 = root.join("net/sockstat6");
        // sockstat6 is absent when the kernel has IPv6 disabled.
        match std::fs::read_to_string(&v6) {
            Ok(text) => {
                total += sockstat_field(&text, "TCP6:", "inuse")
                    .map_err(|e| format!("{}: {e}", v6.display()))?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", v6.display())),
        }
        into.tcp = Some(TcpCounts { total, established });
        Ok(())
    }
}

/// `CurrEstab` from the two `Tcp:` lines (names, then values) of net/snmp.
fn curr_estab(text: &str) -> Result<u32, String> {
    let mut lines = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return Err("no Tcp: lines".into());
    };
    let index = names
        .split_whitespace()
        .position(|n| n == "CurrEstab")
        .ok_or("no CurrEstab column")?;
    values
        .split_whitespace()
        .nth(index)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no CurrEstab value".to_owned())
}

/// The number after `name` on the line starting with `prefix`.
fn sockstat_field(text: &str, prefix: &str, name: &str) -> Result<u32, String> {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .ok_or_else(|| format!("no {prefix} line"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == name {
            return words
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no number after {prefix} {name}"));
        }
    }
    Err(format!("no {name} on the {prefix} line"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{fixture, temp_root};

    fn read(root: &Path) -> Result<Option<TcpCounts>, String> {
        let mut reading = Reading::default();
        Tcp.collect(root, Instant::now(), &mut reading)?;
        Ok(reading.tcp)
    }

    fn fixture_file(rel: &str) -> String {
        std::fs::read_to_string(fixture("proc-basic").join(rel)).unwrap()
    }

    #[test]
    fn counts_ipv4_ipv6_and_time_wait() {
        // sockstat: inuse 5, tw 3; sockstat6: inuse 2; snmp: CurrEstab 4.
        assert_eq!(
            read(&fixture("proc-basic")),
            Ok(Some(TcpCounts {
                total: 10,
                established: 4
            }))
        );
    }

    #[test]
    fn missing_sockstat6_is_fine() {
        let root = temp_root(&[
            ("net/snmp", &fixture_file("net/snmp")),
            ("net/sockstat", &fixture_file("net/sockstat")),
        ]);
        assert_eq!(
            read(root.path()),
            Ok(Some(TcpCounts {
                total: 8,
                established: 4
            }))
        );
    }

    #[test]
    fn missing_snmp_is_an_error_naming_the_path() {
        let root = temp_root(&[("net/sockstat", &fixture_file("net/sockstat"))]);
        let error = read(root.path()).unwrap_err();
        assert!(
            error.contains(&root.path().join("net/snmp").display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn garbled_files_are_errors_naming_the_file() {
        let root = temp_root(&[
            ("net/snmp", "Tcp: RtoAlgorithm CurrEstab\nTcp: 1 x\n"),
            ("net/sockstat", &fixture_file("net/sockstat")),
        ]);
        let error = read(root.path()).unwrap_err();
        assert!(error.contains("net/snmp: no CurrEstab value"), "{error}");
        let root = temp_root(&[
            ("net/snmp", &fixture_file("net/snmp")),
            ("net/sockstat", "TCP: inuse 3 orphan 0\n"),
        ]);
        let error = read(root.path()).unwrap_err();
        assert!(
            error.contains("net/sockstat: no tw on the TCP: line"),
            "{error}"
        );
    }
}
