//! Instances with addresses of their own (`provider.network = "namespace"`).
//! Each instance gets a network namespace, a veth pair whose host side sits
//! on a bridge the controller makes, and the lowest free address of the
//! bridge's subnet; its agent and workload run inside the namespace, so the
//! workload listens on that address and the agent's Hello reports it.
//!
//! Names are derived from the bridge and the instance id: the namespace is
//! `<bridge>.<id>` (bridge names hold no `.`, so two bridges' prefixes never
//! overlap) and the veth's host side `ebv` and 12 hex digits of a hash of
//! the namespace name (interface names are at most 15 bytes). What an
//! instance got is written to its `network.json` before anything is made,
//! so a restarted controller re-adopts it and a release undoes it.
//!
//! The work is done by iproute2's `ip` and util-linux's `nsenter`, which
//! execs the program in place: the pid the provider records is the program's.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// The interface an instance sees inside its namespace.
const INNER_IF: &str = "eth0";
/// Linux interface names are at most this long (IFNAMSIZ less the NUL).
pub const MAX_IFNAME: usize = 15;
/// The widest subnet: a /16 is 65,533 instances, more than one host runs.
pub const MIN_PREFIX: u8 = 16;
/// The narrowest: a /29 holds the bridge and five instances.
pub const MAX_PREFIX: u8 = 29;

/// An IPv4 subnet, `network/prefix`, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n` with `n` in `MIN_PREFIX..=MAX_PREFIX`; the error
    /// says what is wrong, without naming the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an IPv4 subnet like \"10.88.0.0/24\"");
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix) {
            return Err(format!(
                "`{text}`: the prefix must be /{MIN_PREFIX} to /{MAX_PREFIX}"
            ));
        }
        let subnet = Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        };
        if subnet.network != addr {
            return Err(format!(
                "`{text}` has host bits set; did you mean \"{subnet}\"?"
            ));
        }
        Ok(subnet)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The first host address: the bridge's.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn broadcast(&self) -> u32 {
        u32::from(self.network) | !mask(self.prefix)
    }

    /// The addresses instances may get: every host address but the bridge's.
    fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.network) + 2..self.broadcast()).map(Ipv4Addr::from)
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    fn overlaps(&self, other: &Subnet) -> bool {
        let prefix = self.prefix.min(other.prefix);
        u32::from(self.network) & mask(prefix) == u32::from(other.network) & mask(prefix)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// Whether `name` is a bridge name ebb accepts: 1 to 15 of A-Z a-z 0-9 - _
/// (no `.`, which separates it from the instance id in namespace names).
pub fn check_bridge_name(name: &str) -> Result<(), String> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if name.is_empty() || name.len() > MAX_IFNAME || !plain {
        return Err(format!(
            "`{name}` is not a bridge name (1 to {MAX_IFNAME} of A-Z a-z 0-9 - _)"
        ));
    }
    Ok(())
}

/// Every address of the subnet is taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("all {count} instance addresses of {subnet} are in use; widen provider.subnet")]
pub struct Exhausted {
    pub subnet: Subnet,
    pub count: usize,
}

/// The subnet's addresses, and which instance holds which.
#[derive(Debug)]
pub struct Addresses {
    subnet: Subnet,
    taken: Mutex<HashMap<String, Ipv4Addr>>,
}

impl Addresses {
    pub fn new(subnet: Subnet) -> Self {
        Self {
            subnet,
            taken: Mutex::new(HashMap::new()),
        }
    }

    /// Notes an address in use (an instance found on disk).
    pub fn note(&self, id: &str, addr: Ipv4Addr) {
        self.lock().insert(id.to_owned(), addr);
    }

    /// The lowest free address for `id` (its own if it holds one).
    pub fn take(&self, id: &str) -> Result<Ipv4Addr, Exhausted> {
        let mut taken = self.lock();
        if let Some(&addr) = taken.get(id) {
            return Ok(addr);
        }
        let used: HashSet<Ipv4Addr> = taken.values().copied().collect();
        let addr = self
            .subnet
            .hosts()
            .find(|a| !used.contains(a))
            .ok_or_else(|| Exhausted {
                subnet: self.subnet,
                count: self.subnet.hosts().count(),
            })?;
        taken.insert(id.to_owned(), addr);
        Ok(addr)
    }

    pub fn free(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ipv4Addr>> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an instance was given, as its `network.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub netns: String,
    pub veth: String,
    pub address: Ipv4Addr,
}

/// The bridge, its subnet, and the tools that make namespaces on it.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    subnet: Subnet,
    ip: PathBuf,
    nsenter: PathBuf,
    pub addresses: Addresses,
}

impl Network {
    /// Checks that this controller can make namespaces (root, `ip`,
    /// `nsenter`), then makes the bridge with the subnet's first address,
    /// or reuses it if it exists with that address.
    pub async fn setup(bridge: &str, subnet: Subnet) -> Result<Self, String> {
        check_bridge_name(bridge).map_err(|e| format!("provider.bridge: {e}"))?;
        if !is_root() {
            return Err(
                "the controller must run as root to make network namespaces; run it as root or set provider.network = \"host\""
                    .into(),
            );
        }
        let ip = find_tool(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"])
            .ok_or("`ip` (iproute2) is not installed; install iproute2")?;
        let nsenter = find_tool(&["/usr/bin/nsenter", "/bin/nsenter", "/usr/sbin/nsenter"])
            .ok_or("`nsenter` (util-linux) is not installed; install util-linux")?;
        let network = Self {
            bridge: bridge.to_owned(),
            subnet,
            ip,
            nsenter,
            addresses: Addresses::new(subnet),
        };
        network.make_bridge().await?;
        Ok(network)
    }

    async fn make_bridge(&self) -> Result<(), String> {
        let (bridge, gateway) = (&self.bridge, self.subnet.gateway());
        let mine = format!("{gateway}/{}", self.subnet.prefix);
        // Another interface in (or around) the subnet would take its routes.
        for (dev, addr, net) in self.ipv4_addresses().await? {
            if dev != *bridge && net.overlaps(&self.subnet) {
                return Err(format!(
                    "provider.subnet: {} overlaps {addr}/{} on {dev}; choose another subnet",
                    self.subnet,
                    net.prefix()
                ));
            }
        }
        let sys = Path::new("/sys/class/net").join(bridge);
        if !sys.exists() {
            self.ip(&["link", "add", bridge, "type", "bridge"]).await?;
            self.ip(&["addr", "add", &mine, "dev", bridge]).await?;
        } else {
            if !sys.join("bridge").exists() {
                return Err(format!(
                    "provider.bridge: {bridge} exists and is not a bridge; choose another name"
                ));
            }
            let own: Vec<String> = self
                .ipv4_addresses()
                .await?
                .into_iter()
                .filter(|(dev, ..)| dev == bridge)
                .map(|(_, addr, net)| format!("{addr}/{}", net.prefix()))
                .collect();
            if own.is_empty() {
                self.ip(&["addr", "add", &mine, "dev", bridge]).await?;
            } else if own != [mine.clone()] {
                return Err(format!(
                    "provider.bridge: {bridge} exists with {}, not {mine} (the first address of provider.subnet); \
                     remove it (`ip link del {bridge}`) or choose another bridge or subnet",
                    own.join(", ")
                ));
            }
        }
        self.ip(&["link", "set", bridge, "up"]).await?;
        Ok(())
    }

    /// Every IPv4 address on the host: (device, address, its subnet).
    async fn ipv4_addresses(&self) -> Result<Vec<(String, Ipv4Addr, Subnet)>, String> {
        let text = self.ip(&["-o", "-4", "addr", "show"]).await?;
        let mut found = Vec::new();
        for line in text.lines() {
            // "5: ebb0    inet 10.88.0.1/24 brd 10.88.0.255 scope global ebb0\ ..."
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(dev), Some(cidr)) = (
                fields.get(1),
                fields
                    .iter()
                    .position(|f| *f == "inet")
                    .and_then(|i| fields.get(i + 1)),
            ) else {
                continue;
            };
            let Some((addr, prefix)) = cidr.split_once('/') else {
                continue;
            };
            let (Ok(addr), Ok(prefix)) = (addr.parse::<Ipv4Addr>(), prefix.parse::<u8>()) else {
                continue;
            };
            let net = Subnet {
                network: Ipv4Addr::from(u32::from(addr) & mask(prefix.min(32))),
                prefix: prefix.min(32),
            };
            found.push((dev.split('@').next().unwrap_or(dev).to_owned(), addr, net));
        }
        Ok(found)
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The bridge's address: where namespaced agents reach the controller.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }

    /// The names an instance's namespace and veth get.
    pub fn names(&self, id: &str) -> (String, String) {
        let netns = format!("{}.{id}", self.bridge);
        let veth = format!("ebv{:012x}", fnv1a(netns.as_bytes()) & 0xffff_ffff_ffff);
        (netns, veth)
    }

    /// Makes the instance's namespace: its veth on the bridge, `address`
    /// on `eth0` inside, `lo` up, and a default route via the bridge.
    pub async fn create(&self, at: &Attachment) -> Result<(), String> {
        let gateway = self.gateway().to_string();
        let address = format!("{}/{}", at.address, self.subnet.prefix);
        let host = [
            vec!["netns", "add", &at.netns],
            vec![
                "link", "add", &at.veth, "type", "veth", "peer", "name", INNER_IF, "netns",
                &at.netns,
            ],
            vec!["link", "set", &at.veth, "master", &self.bridge, "up"],
        ];
        self.batch(None, &host).await?;
        let inside = [
            vec!["addr", "add", &address, "dev", INNER_IF],
            vec!["link", "set", INNER_IF, "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "default", "via", &gateway],
        ];
        self.batch(Some(&at.netns), &inside).await
    }

    /// Removes an instance's veth and namespace; what is already gone is fine.
    pub async fn delete(&self, netns: &str, veth: &str) -> Result<(), String> {
        // Deleting the veth takes its peer with it at once; a namespace's
        // own devices go only when the kernel gets round to it.
        let link = Path::new("/sys/class/net").join(veth);
        if link.exists()
            && let Err(e) = self.ip(&["link", "del", veth]).await
            && link.exists()
        {
            return Err(e);
        }
        if netns_path(netns).exists() {
            self.ip(&["netns", "del", netns]).await?;
        }
        Ok(())
    }

    /// The name of an instance's tap device (a microVM's network card on
    /// the bridge): `ebm` and 12 hex digits of a hash of bridge and id.
    pub fn tap_name(&self, id: &str) -> String {
        let key = format!("{}.{id}", self.bridge);
        format!("ebm{:012x}", fnv1a(key.as_bytes()) & 0xffff_ffff_ffff)
    }

    /// Makes a tap device on the bridge, up.
    pub async fn create_tap(&self, tap: &str) -> Result<(), String> {
        let commands = [
            vec!["tuntap", "add", "dev", tap, "mode", "tap"],
            vec!["link", "set", tap, "master", &self.bridge, "up"],
        ];
        self.batch(None, &commands).await
    }

    /// Removes a tap device; one already gone is fine.
    pub async fn delete_tap(&self, tap: &str) -> Result<(), String> {
        let link = Path::new("/sys/class/net").join(tap);
        if link.exists()
            && let Err(e) = self.ip(&["link", "del", tap]).await
            && link.exists()
        {
            return Err(e);
        }
        Ok(())
    }

    /// The bridge's subnet.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The namespaces of this bridge on the host, by instance id.
    pub fn namespaces(&self) -> Vec<String> {
        let prefix = format!("{}.", self.bridge);
        let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    /// The `nsenter` that `enter` puts in front of a command.
    pub fn nsenter(&self) -> &Path {
        &self.nsenter
    }

    /// The argv that runs the rest of a command inside `netns`.
    pub fn enter(&self, netns: &str) -> Vec<OsString> {
        let mut net = OsString::from("--net=");
        net.push(netns_path(netns));
        vec![self.nsenter.clone().into(), net, "--".into()]
    }

    async fn ip(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.ip)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.ip.display()))?;
        if !out.status.success() {
            return Err(format!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `commands` with one `ip -batch`, inside `netns` if given; it
    /// stops at the first that fails.
    async fn batch(&self, netns: Option<&str>, commands: &[Vec<&str>]) -> Result<(), String> {
        let mut command = Command::new(&self.ip);
        if let Some(netns) = netns {
            command.args(["-n", netns]);
        }
        let mut child = command
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.ip.display()))?;
        let script: String = commands.iter().map(|c| c.join(" ") + "\n").collect();
        let mut stdin = child.stdin.take().expect("piped stdin");
        let written = stdin.write_all(script.as_bytes()).await;
        drop(stdin);
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.ip.display()))?;
        if let Err(e) = written {
            return Err(format!("cannot write to {}: {e}", self.ip.display()));
        }
        if !out.status.success() {
            return Err(format!(
                "`ip{} -batch` failed: {}",
                netns.map(|n| format!(" -n {n}")).unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }
}

fn netns_path(netns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(netns)
}

/// FNV-1a, 64 bits: a hash that is the same in every build, so a veth's
/// name can be derived again by a later controller.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn find_tool(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// Reads an instance dir's `network.json`; None when it has none.
pub fn read_attachment(path: &Path) -> Result<Option<Attachment>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// A bridge of a test's own on a free subnet of `prefix` bits (24 to 29)
/// in 10.64.0.0/10, picked from the process id. The tests of one process
/// run side by side: each picks and makes its bridge while it holds a
/// lock, so two never take overlapping subnets between one's check and its
/// making (which failed them now and then).
#[cfg(test)]
pub(crate) async fn test_network(bridge: &str, prefix: u8) -> Network {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ONE_AT_A_TIME.lock().await;
    assert!((24..=29).contains(&prefix), "prefix {prefix}");
    let size = 1u32 << (32 - prefix);
    for n in 0..2048u32 {
        let v = std::process::id().wrapping_add(n.wrapping_mul(7919));
        let last = size * (v % (256 / size));
        let subnet = format!("10.{}.{}.{last}/{prefix}", 64 + v % 60, (v / 60) % 256);
        match Network::setup(bridge, Subnet::parse(&subnet).expect("a subnet")).await {
            Ok(network) => return network,
            Err(e) if e.contains("overlaps") => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no free /{prefix} in 10.64.0.0/10");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_parse_and_name_their_addresses() {
        let s = Subnet::parse("10.88.0.0/24").unwrap();
        assert_eq!(s.to_string(), "10.88.0.0/24");
        assert_eq!(s.gateway(), addr("10.88.0.1"));
        let hosts: Vec<_> = s.hosts().collect();
        assert_eq!(hosts.len(), 253, "not the network, bridge or broadcast");
        assert_eq!(hosts.first(), Some(&addr("10.88.0.2")));
        assert_eq!(hosts.last(), Some(&addr("10.88.0.254")));
        assert!(s.contains(addr("10.88.0.77")) && !s.contains(addr("10.88.1.1")));
        let narrow = Subnet::parse("192.168.7.8/29").unwrap();
        assert_eq!(narrow.hosts().count(), 5);
        assert!(Subnet::parse("10.88.0.0/16").unwrap().overlaps(&s));
        assert!(s.overlaps(&Subnet::parse("10.88.0.128/25").unwrap()));
        assert!(!Subnet::parse("10.89.0.0/24").unwrap().overlaps(&s));

        for (bad, why) in [
            ("10.88.0.0", "not an IPv4 subnet"),
            ("10.88.0.0/x", "not an IPv4 subnet"),
            ("fd00::/64", "not an IPv4 subnet"),
            ("10.88.0.0/8", "/16 to /29"),
            ("10.88.0.0/30", "/16 to /29"),
            ("10.88.0.5/24", "did you mean \"10.88.0.0/24\""),
        ] {
            let err = Subnet::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn addresses_are_taken_lowest_first_freed_and_run_out() {
        let pool = Addresses::new(Subnet::parse("10.9.0.0/29").unwrap());
        pool.note("old", addr("10.9.0.3"));
        assert_eq!(pool.take("a"), Ok(addr("10.9.0.2")));
        assert_eq!(
            pool.take("a"),
            Ok(addr("10.9.0.2")),
            "an id keeps its address"
        );
        assert_eq!(pool.take("b"), Ok(addr("10.9.0.4")));
        assert_eq!(pool.take("c"), Ok(addr("10.9.0.5")));
        assert_eq!(pool.take("d"), Ok(addr("10.9.0.6")));
        let full = pool.take("e").unwrap_err();
        assert_eq!(
            full,
            Exhausted {
                subnet: Subnet::parse("10.9.0.0/29").unwrap(),
                count: 5
            }
        );
        assert!(full.to_string().contains("widen provider.subnet"), "{full}");
        pool.free("old");
        assert_eq!(
            pool.take("e"),
            Ok(addr("10.9.0.3")),
            "a freed address is reused"
        );
        pool.free("b");
        pool.free("a");
        assert_eq!(
            pool.take("f"),
            Ok(addr("10.9.0.2")),
            "the lowest free first"
        );
    }

    #[test]
    fn bridge_names_are_checked_and_instance_names_fit() {
        for good in ["ebb0", "br-ebb_1", "abcdefghijklmno"] {
            check_bridge_name(good).unwrap();
        }
        for bad in ["", "abcdefghijklmnop", "ebb.0", "eb b", "eb/0", "ebb:0"] {
            assert!(check_bridge_name(bad).is_err(), "`{bad}`");
        }
        let network = Network {
            bridge: "abcdefghijklmno".into(),
            subnet: Subnet::parse("10.88.0.0/24").unwrap(),
            ip: "ip".into(),
            nsenter: "nsenter".into(),
            addresses: Addresses::new(Subnet::parse("10.88.0.0/24").unwrap()),
        };
        let (netns, veth) = network.names("i-0123456789ab");
        assert_eq!(netns, "abcdefghijklmno.i-0123456789ab");
        assert_eq!(veth.len(), MAX_IFNAME, "{veth}");
        assert_eq!(
            network.names("i-0123456789ab").1,
            veth,
            "derived again alike"
        );
        assert_ne!(network.names("i-0123456789ac").1, veth);
    }
}
