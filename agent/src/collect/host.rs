//! Host facts sent in the agent's Hello: name, addresses, CPUs, memory, boot time.

use std::collections::BTreeSet;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::HostFacts;
use super::memory::meminfo_kb;

/// Reads the host facts sent in Hello.
///
/// Addresses are the host's IPv4 addresses from `net/fib_trie` and its global
/// IPv6 addresses from `net/if_inet6`, without loopback or link-local ones; a
/// missing file yields no addresses of that family.
pub fn host_facts(proc_root: &Path) -> io::Result<HostFacts> {
    let hostname = read(proc_root, "sys/kernel/hostname")?.trim().to_owned();

    let stat_path = proc_root.join("stat");
    let stat = read(proc_root, "stat")?;
    let cpu_count = stat
        .lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    let cpu_count = u32::try_from(cpu_count).map_err(|_| invalid(&stat_path, "too many cpus"))?;
    let boot_time_unix = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| invalid(&stat_path, "no btime line"))?;

    let meminfo_path = proc_root.join("meminfo");
    let memory_total_bytes = meminfo_kb(&read(proc_root, "meminfo")?, "MemTotal")
        .and_then(|kb| kb.checked_mul(1024))
        .ok_or_else(|| invalid(&meminfo_path, "no MemTotal line"))?;

    let mut addresses = BTreeSet::new();
    if let Some(trie) = read_optional(proc_root, "net/fib_trie")? {
        addresses.extend(local_ipv4(&trie).into_iter().map(IpAddr::V4));
    }
    if let Some(inet6) = read_optional(proc_root, "net/if_inet6")? {
        addresses.extend(global_ipv6(&inet6).into_iter().map(IpAddr::V6));
    }

    Ok(HostFacts {
        hostname,
        addresses: addresses.into_iter().collect(),
        cpu_count,
        memory_total_bytes,
        boot_time_unix,
    })
}

/// The host's own IPv4 addresses: in the kernel's routing trie, a leaf
/// `|-- A.B.C.D` followed by a `/32 host LOCAL` line is an address of the host.
fn local_ipv4(trie: &str) -> BTreeSet<Ipv4Addr> {
    let mut addresses = BTreeSet::new();
    let mut leaf = None;
    for line in trie.lines() {
        let line = line.trim();
        if let Some(address) = line.strip_prefix("|-- ") {
            leaf = address.trim().parse::<Ipv4Addr>().ok();
        } else if line.starts_with('/') {
            if let Some(address) = leaf
                && line.starts_with("/32 host LOCAL")
                && !address.is_loopback()
            {
                addresses.insert(address);
            }
        } else {
            // A `+--` prefix node or a table name ("Main:", "Local:") ends the leaf.
            leaf = None;
        }
    }
    addresses
}

/// The host's IPv6 addresses from `if_inet6` ("<32 hex digits> <ifindex> ..."),
/// without loopback and link-local (fe80::/10) ones.
fn global_ipv6(inet6: &str) -> BTreeSet<Ipv6Addr> {
    inet6
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|hex| hex.len() == 32)
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(Ipv6Addr::from)
        .filter(|address| !address.is_loopback() && (address.segments()[0] & 0xffc0) != 0xfe80)
        .collect()
}

fn read(root: &Path, rel: &str) -> io::Result<String> {
    let path = root.join(rel);
    std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))
}

fn read_optional(root: &Path, rel: &str) -> io::Result<Option<String>> {
    match read(root, rel) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{fixture, temp_root};

    #[test]
    fn facts_from_fixture() {
        let facts = host_facts(&fixture("proc-basic")).unwrap();
        let addresses: Vec<IpAddr> = [
            "10.0.0.5",
            "172.17.0.1",
            "192.0.2.2",
            "2001:db8::5",
            "fd00::2",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(
            facts,
            HostFacts {
                hostname: "web-1".to_owned(),
                addresses,
                cpu_count: 2,
                memory_total_bytes: 16384000 * 1024,
                boot_time_unix: 1795833255,
            }
        );
    }

    #[test]
    fn fib_trie_takes_only_host_local_leaves() {
        let trie = std::fs::read_to_string(fixture("proc-basic").join("net/fib_trie")).unwrap();
        let found: Vec<String> = local_ipv4(&trie).iter().map(|a| a.to_string()).collect();
        // Network, broadcast and loopback leaves are left out; the Local table repeats Main.
        assert_eq!(found, ["10.0.0.5", "172.17.0.1", "192.0.2.2"]);
    }

    #[test]
    fn if_inet6_skips_loopback_and_link_local() {
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\n\
                     fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n\
                     febf0000000000000000000000000001 04 40 20 80     eth0\n\
                     fec00000000000000000000000000001 04 40 00 80     eth0\n\
                     20010db8000000000000000000000005 04 40 00 00     eth0\n";
        let found: Vec<String> = global_ipv6(inet6).iter().map(|a| a.to_string()).collect();
        assert_eq!(found, ["2001:db8::5", "fec0::1"]);
    }

    #[test]
    fn missing_address_files_yield_no_addresses() {
        let root = temp_root(&[
            ("sys/kernel/hostname", "bare\n"),
            (
                "stat",
                "cpu  1 2 3 4\ncpu0 1 2 3 4\ncpu1 1 2 3 4\ncpu2 1 2 3 4\nbtime 42\n",
            ),
            ("meminfo", "MemTotal: 2 kB\n"),
        ]);
        let facts = host_facts(root.path()).unwrap();
        assert_eq!(
            facts,
            HostFacts {
                hostname: "bare".to_owned(),
                addresses: vec![],
                cpu_count: 3,
                memory_total_bytes: 2048,
                boot_time_unix: 42,
            }
        );
    }

    #[test]
    fn missing_btime_names_the_file() {
        let root = temp_root(&[
            ("sys/kernel/hostname", "bare\n"),
            ("stat", "cpu  1 2 3 4\n"),
            ("meminfo", "MemTotal: 2 kB\n"),
        ]);
        let error = host_facts(root.path()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
        assert_eq!(
            error.to_string(),
            format!("{}: no btime line", root.path().join("stat").display())
        );
    }

    #[test]
    fn missing_hostname_names_the_file() {
        let root = temp_root(&[]);
        let error = host_facts(root.path()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotFound);
        let path = root.path().join("sys/kernel/hostname");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn real_host() {
        let facts = host_facts(Path::new("/proc")).unwrap();
        assert!(!facts.hostname.is_empty());
        assert!(facts.cpu_count >= 1);
        assert!(facts.memory_total_bytes > 0);
        assert!(facts.boot_time_unix > 0);
    }
}
