//! Several real controllers on a real three-member etcd cluster, for the
//! high-availability tests and the failover benchmark.
//!
//! Each controller has its own data dir and ports; they share the etcd
//! store, the sealing key of the CA kept there, and the process
//! provider's instances dir (so the leader after a failover finds its
//! predecessor's instances, as a cloud provider's would be found).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::etcd::EtcdCluster;
use crate::{Admin, ControllerProc, DEADLINE, eventually, http_status};

/// The leader's lease in these tests: the default.
pub const LEASE_TTL_SECS: u64 = 3;

/// A sealing key for the CA in the store (any 32 bytes do for a test).
const SECRET_KEY: &str = "5d1f0e6c2b7a49388a1e2f4c6d8b0a1c3e5f7091a2b3c4d5e6f708192a3b4c5d";

pub struct HaCluster {
    pub etcd: EtcdCluster,
    pub controllers: Vec<Option<ControllerProc>>,
    pub grpc: Vec<SocketAddr>,
    pub http: Vec<SocketAddr>,
    pub dirs: Vec<PathBuf>,
    /// The process provider's instances, shared by every controller.
    pub instances_dir: PathBuf,
    key_file: PathBuf,
    sampling_interval_ms: u64,
    /// Appended to every controller's config.
    extra: String,
}

impl HaCluster {
    /// A three-member etcd cluster and `n` controllers on it, started one
    /// after the other; returns once one of them leads.
    pub fn start(dir: &Path, n: usize, sampling_interval_ms: u64) -> anyhow::Result<Self> {
        Self::start_with(dir, n, sampling_interval_ms, "")
    }

    /// As `start`, with `extra` appended to each controller's config
    /// (whole tables other than [store], [ha] and [provider]).
    pub fn start_with(
        dir: &Path,
        n: usize,
        sampling_interval_ms: u64,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let etcd = EtcdCluster::start(&dir.join("etcd"), 3)?;
        let addrs = crate::free_addrs(2 * n);
        let key_file = dir.join("store.key");
        fs::write(&key_file, SECRET_KEY)?;
        let instances_dir = dir.join("instances");
        fs::create_dir_all(&instances_dir)?;
        let mut cluster = Self {
            etcd,
            controllers: (0..n).map(|_| None).collect(),
            grpc: addrs[..n].to_vec(),
            http: addrs[n..].to_vec(),
            dirs: (0..n)
                .map(|i| dir.join(format!("controller-{i}")))
                .collect(),
            instances_dir,
            key_file,
            sampling_interval_ms,
            extra: extra.to_owned(),
        };
        for i in 0..n {
            cluster.start_controller(i)?;
        }
        cluster.wait_leader(None);
        Ok(cluster)
    }

    /// Starts (or restarts, on its old ports and data) controller `i`.
    pub fn start_controller(&mut self, i: usize) -> anyhow::Result<()> {
        fs::create_dir_all(&self.dirs[i])?;
        let quoted = |v: &[String]| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let controllers: Vec<String> = self.grpc.iter().map(ToString::to_string).collect();
        let config = format!(
            "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [{}]\n\
             [ha]\nlease_ttl_secs = {LEASE_TTL_SECS}\nadvertise = \"{}\"\ncontrollers = [{}]\nsecret_key_file = \"{}\"\n\
             [provider]\ninstances_dir = \"{}\"\n{}",
            quoted(&self.etcd.endpoints()),
            self.grpc[i],
            quoted(&controllers),
            self.key_file.display(),
            self.instances_dir.display(),
            self.extra,
        );
        let ctl = ControllerProc::start_configured(
            &self.dirs[i],
            self.sampling_interval_ms,
            self.grpc[i],
            self.http[i],
            &config,
        )
        .with_context(|| format!("starting controller {i}"))?;
        self.controllers[i] = Some(ctl);
        Ok(())
    }

    pub fn controller(&self, i: usize) -> &ControllerProc {
        self.controllers[i].as_ref().expect("controller running")
    }

    /// SIGKILLs controller `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut ctl) = self.controllers[i].take() {
            let _ = ctl.proc.child.kill();
            let _ = ctl.proc.child.wait();
        }
    }

    /// `/healthz` of controller `i`: its status code and body, None when
    /// it does not answer.
    pub fn health(&self, i: usize) -> Option<(u16, String)> {
        http_status(self.http[i], "/healthz").ok()
    }

    /// The controllers that say they lead.
    pub fn leaders(&self) -> Vec<usize> {
        (0..self.controllers.len())
            .filter(|&i| self.controllers[i].is_some())
            .filter(|&i| {
                self.health(i)
                    .is_some_and(|(code, body)| code == 200 && body.starts_with("ok: leader"))
            })
            .collect()
    }

    /// Waits until exactly one running controller (other than `not`) leads.
    pub fn wait_leader(&self, not: Option<usize>) -> usize {
        eventually("one controller to lead", DEADLINE, || {
            match self.leaders().as_slice() {
                [one] if Some(*one) != not => Some(*one),
                _ => None,
            }
        })
    }

    /// An admin client of controller `i`, with its own local admin cert
    /// (issued by the shared CA, so good on any controller).
    pub fn admin(&self, i: usize) -> Admin {
        Admin::local(self.controller(i))
    }

    /// The instances' live agents, as "pid cmdline" lines.
    pub fn instance_processes(&self) -> Vec<String> {
        let marker = self.instances_dir.display().to_string();
        crate::live_processes()
            .into_iter()
            .filter(|p| {
                let agent = p
                    .cmdline
                    .split_whitespace()
                    .next()
                    .is_some_and(|exe| exe.ends_with("ebb-agent"));
                agent && (p.cwd.starts_with(&marker) || p.cmdline.contains(&marker))
            })
            .map(|p| format!("{} {}", p.pid, p.cmdline.trim()))
            .collect()
    }
}

/// A failed test shows what each controller said last.
impl Drop for HaCluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, dir) in self.dirs.iter().enumerate() {
            let log = fs::read_to_string(dir.join("controller.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!(
                "\n--- controller {i} ({}), last lines:\n{tail}",
                self.grpc[i]
            );
        }
    }
}
