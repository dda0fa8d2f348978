//! TCP connection counts from `<root>/net/tcp` and `<root>/net/tcp6`.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Instant;

use super::{Collect, Reading, TcpCounts, read_proc_file};

const ESTABLISHED: u8 = 0x01;
const LISTEN: u8 = 0x0A;

/// Counts IPv4 and IPv6 sockets other than listeners.
pub(super) struct Tcp;

impl Collect for Tcp {
    fn collect(&mut self, root: &Path, _now: Instant, into: &mut Reading) -> Result<(), String> {
        let v4 = root.join("net/tcp");
        let mut counts =
            count(&read_proc_file(&v4)?).map_err(|e| format!("{}: {e}", v4.display()))?;
        let v6 = root.join("net/tcp6");
        // tcp6 is absent when the kernel has IPv6 disabled.
        match std::fs::read_to_string(&v6) {
            Ok(text) => {
                let more = count(&text).map_err(|e| format!("{}: {e}", v6.display()))?;
                counts.total += more.total;
                counts.established += more.established;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", v6.display())),
        }
        into.tcp = Some(counts);
        Ok(())
    }
}

fn count(text: &str) -> Result<TcpCounts, String> {
    let mut counts = TcpCounts {
        total: 0,
        established: 0,
    };
    // The first line is the column header ("sl local_address rem_address st ...").
    for line in text.lines().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let state = line
            .split_whitespace()
            .nth(3)
            .and_then(|st| u8::from_str_radix(st, 16).ok())
            .ok_or_else(|| format!("no socket state in line {:?}", line.trim()))?;
        match state {
            LISTEN => {}
            ESTABLISHED => {
                counts.total += 1;
                counts.established += 1;
            }
            _ => counts.total += 1,
        }
    }
    Ok(counts)
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

    #[test]
    fn counts_ipv4_and_ipv6_excluding_listeners() {
        // tcp: 2 LISTEN, 2 ESTABLISHED, 1 TIME_WAIT; tcp6: 1 LISTEN, 1 ESTABLISHED, 1 CLOSE_WAIT.
        assert_eq!(
            read(&fixture("proc-basic")),
            Ok(Some(TcpCounts {
                total: 5,
                established: 3
            }))
        );
    }

    #[test]
    fn missing_tcp6_is_fine() {
        let v4 = std::fs::read_to_string(fixture("proc-basic").join("net/tcp")).unwrap();
        let root = temp_root(&[("net/tcp", &v4)]);
        assert_eq!(
            read(root.path()),
            Ok(Some(TcpCounts {
                total: 3,
                established: 2
            }))
        );
    }

    #[test]
    fn missing_tcp_is_an_error_naming_the_path() {
        let v6 = std::fs::read_to_string(fixture("proc-basic").join("net/tcp6")).unwrap();
        let root = temp_root(&[("net/tcp6", &v6)]);
        let error = read(root.path()).unwrap_err();
        assert!(
            error.contains(&root.path().join("net/tcp").display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn header_only_is_zero() {
        let root = temp_root(&[(
            "net/tcp",
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
        )]);
        assert_eq!(
            read(root.path()),
            Ok(Some(TcpCounts {
                total: 0,
                established: 0
            }))
        );
    }

    #[test]
    fn garbled_line_is_an_error_naming_the_file() {
        let root = temp_root(&[("net/tcp", "  sl  local_address\n   0: zz\n")]);
        let error = read(root.path()).unwrap_err();
        assert!(error.contains("net/tcp: no socket state"), "{error}");
    }
}
