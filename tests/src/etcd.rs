//! A real etcd cluster for the tests: Debian's `etcd-server` (`/usr/bin/etcd`),
//! one process per member on loopback ports, each with its data in the
//! test's sandbox. Members can be killed, stopped (SIGSTOP), continued
//! and restarted on their data, as a failing host would be.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{Proc, eventually};

/// Where Debian's `etcd-server` puts the server.
pub const ETCD: &str = "/usr/bin/etcd";

/// What is missing for a real etcd here, if anything (a missing package
/// is named in the failure, never skipped; `.ci/run` installs both).
pub fn missing() -> Option<String> {
    if !Path::new(ETCD).exists() {
        return Some(format!(
            "this test needs {ETCD}: the etcd-server package (apt-get install etcd-server etcd-client; .ci/run installs it)"
        ));
    }
    if !Path::new("/usr/bin/etcdctl").exists() {
        return Some(
            "this test needs etcdctl: the etcd-client package (apt-get install etcd-client; .ci/run installs it)".into(),
        );
    }
    None
}

/// One member: its ports and, while it runs, its process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub dir: PathBuf,
    proc: Option<Proc>,
}

impl Member {
    /// `http://127.0.0.1:PORT` (https with TLS), what a client dials.
    fn endpoint_of(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn running(&self) -> bool {
        self.proc.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }
}

/// A cluster of members started together.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    initial_cluster: String,
    /// With client TLS: the files etcd serves and checks clients with.
    pub tls: Option<EtcdTlsFiles>,
}

/// Client TLS of a test cluster: a CA of its own signed the members'
/// server certificate (for 127.0.0.1) and one client certificate; etcd
/// refuses clients without a certificate from that CA
/// (`--client-cert-auth`).
pub struct EtcdTlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdTlsFiles {
    fn make(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca = ebb_certs::Ca::generate("etcd.test", Duration::from_secs(86_400))?;
        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        let server = ca.issue_server_for(
            &["localhost".to_owned()],
            &["127.0.0.1".parse()?],
            Duration::from_secs(86_400),
        )?;
        let client = ca.issue_admin("etcd-client", Duration::from_secs(86_400))?;
        Ok(Self {
            ca: write("ca.crt", ca.cert_pem())?,
            server_cert: write("server.crt", &server.cert_pem)?,
            server_key: write("server.key", &server.key_pem)?,
            client_cert: write("client.crt", &client.cert_pem)?,
            client_key: write("client.key", &client.key_pem)?,
        })
    }
}

impl EtcdCluster {
    /// Starts `n` members under `dir` and waits until the cluster answers.
    pub fn start(dir: &Path, n: usize) -> anyhow::Result<Self> {
        Self::start_as(dir, n, false)
    }

    /// As `start`, with client TLS and client certificates required
    /// (`tls` holds the files a client needs).
    pub fn start_tls(dir: &Path, n: usize) -> anyhow::Result<Self> {
        Self::start_as(dir, n, true)
    }

    fn start_as(dir: &Path, n: usize, tls: bool) -> anyhow::Result<Self> {
        if let Some(why) = missing() {
            bail!(why);
        }
        let tls = if tls {
            Some(EtcdTlsFiles::make(&dir.join("etcd-tls"))?)
        } else {
            None
        };
        let ports: Vec<u16> = crate::free_addrs(2 * n).iter().map(|a| a.port()).collect();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                dir: dir.join(format!("etcd-m{i}")),
                proc: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            members,
            initial_cluster,
            tls,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy();
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &self.members[i];
        std::fs::create_dir_all(&m.dir)?;
        let client = m.endpoint_of(self.tls.is_some());
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(ETCD);
        cmd.args([
            "--name",
            &m.name,
            "--data-dir",
            &m.dir.join("data").display().to_string(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &self.initial_cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "ebb-test",
            // Loopback: elect quickly, as a LAN cluster tuned for it would.
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "1000",
            "--log-level",
            "warn",
        ]);
        if let Some(tls) = &self.tls {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key);
        }
        // Debian's etcd refuses to start on some architectures without it;
        // harmless on amd64.
        cmd.env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        let log = m.dir.join("etcd.log");
        let proc = Proc::spawn(cmd, log).with_context(|| format!("starting etcd {}", m.name))?;
        self.members[i].proc = Some(proc);
        Ok(())
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.endpoint_of(self.tls.is_some()))
            .collect()
    }

    /// etcdctl's TLS flags for this cluster.
    fn etcdctl_tls(&self) -> Vec<String> {
        match &self.tls {
            Some(t) => vec![
                format!("--cacert={}", t.ca.display()),
                format!("--cert={}", t.client_cert.display()),
                format!("--key={}", t.client_key.display()),
            ],
            None => vec![],
        }
    }

    /// `--etcd-endpoints` / `store.etcd.endpoints` form: comma-separated.
    pub fn endpoints_csv(&self) -> String {
        self.endpoints().join(",")
    }

    /// Waits until a majority of members answer `etcdctl endpoint health`.
    pub fn wait_healthy(&self) {
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.running())
            .map(|m| m.endpoint_of(self.tls.is_some()))
            .collect();
        let tls = self.etcdctl_tls();
        eventually("etcd cluster healthy", Duration::from_secs(60), || {
            let healthy = running
                .iter()
                .filter(|e| {
                    Command::new("etcdctl")
                        .env("ETCDCTL_API", "3")
                        .args(["--endpoints", e, "--command-timeout=2s"])
                        .args(&tls)
                        .args(["endpoint", "health"])
                        .output()
                        .is_ok_and(|o| o.status.success())
                })
                .count();
            (healthy * 2 > self.members.len()).then_some(())
        });
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Starts member `i` again on its data, as a rebooted host would.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)
    }

    /// `etcdctl` against the cluster: its stdout, or the error with stderr.
    pub fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints_csv(), "--command-timeout=5s"])
            .args(self.etcdctl_tls())
            .args(args)
            .output()
            .context("running etcdctl (Debian's etcd-client)")?;
        if !out.status.success() {
            bail!(
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
