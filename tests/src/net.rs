//! A bridge and a subnet of a test's own, for controllers run with
//! `provider.network = "namespace"`; dropped, it removes the bridge and
//! every namespace on it, even when the test failed, so parallel tests and
//! CI runs never meet each other's leftovers.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// Runs `ip ARGS`; its stdout, or a panic with its stderr.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test's own bridge name and /24, not yet made (the controller makes it).
pub struct TestNet {
    pub bridge: String,
    /// `10.x.y.0`, a /24 no interface of the host has an address in.
    pub network: Ipv4Addr,
}

impl TestNet {
    /// Needs root and iproute2: fails saying so otherwise.
    pub fn new() -> Self {
        assert!(
            is_root(),
            "this test needs root (it makes network namespaces and a bridge); run the suite as root, as .ci/run does"
        );
        assert!(
            Command::new("ip").arg("-V").output().is_ok(),
            "this test needs `ip` from the iproute2 package (apt-get install iproute2)"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let bridge = format!("ebt{}x{n}", pid % 100_000);
        // The /24s the host already has addresses in.
        let used: Vec<[u8; 3]> = ip(&["-o", "-4", "addr", "show"])
            .lines()
            .filter_map(|l| {
                let cidr = l.split_whitespace().skip_while(|f| *f != "inet").nth(1)?;
                let addr: Ipv4Addr = cidr.split('/').next()?.parse().ok()?;
                let [a, b, c, _] = addr.octets();
                Some([a, b, c])
            })
            .collect();
        let seed = pid.wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503);
        let network = (0..4096u32)
            .map(|i| {
                let v = seed.wrapping_add(i.wrapping_mul(7919));
                [10, 128 + (v % 120) as u8, ((v / 120) % 256) as u8]
            })
            .find(|p| !used.contains(p))
            .map(|[a, b, c]| Ipv4Addr::new(a, b, c, 0))
            .expect("a free 10.x.y.0/24");
        Self { bridge, network }
    }

    /// `10.x.y.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}/24", self.network)
    }

    /// The bridge's address, `10.x.y.1`.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.network.octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The `[provider]` table of a controller using this bridge.
    pub fn provider_config(&self) -> String {
        format!(
            "[provider]\nnetwork = \"namespace\"\nbridge = \"{}\"\nsubnet = \"{}\"\n",
            self.bridge,
            self.subnet()
        )
    }

    /// The namespace the controller makes for instance `id`.
    pub fn netns(&self, id: &str) -> String {
        format!("{}.{id}", self.bridge)
    }

    /// The instance ids that have a namespace on this bridge.
    pub fn namespaces(&self) -> Vec<String> {
        namespaces_named(&format!("{}.", self.bridge))
    }

    /// The interfaces enslaved to the bridge (the instances' veths).
    pub fn ports(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect()
    }
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for port in self.ports() {
            let _ = Command::new("ip").args(["link", "del", &port]).output();
        }
        for id in self.namespaces() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns(&id)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// The named namespaces starting with `prefix`, less it, sorted.
pub fn namespaces_named(prefix: &str) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix(prefix).map(str::to_owned))
        .collect();
    ids.sort();
    ids
}
