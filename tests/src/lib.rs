//! Helpers for ebb's end-to-end tests: real binaries on ephemeral ports with
//! certificates from ebb's own PKI.
//!
//! - [`ControllerProc`]: an `ebb-controller serve` in a temp data dir;
//!   [`ControllerProc::attach`] puts instances in a group, which an agent
//!   needs before it may connect.
//! - [`AgentProc`]: an `ebb-agent` with a freshly issued instance cert.
//! - [`eventually`]: poll with a deadline instead of sleeping.
//! - [`WebhookReceiver`]: a real HTTP or HTTPS server collecting webhook POSTs.
//! - [`instances`], [`activities`]: a group's, from the admin API.
//! - [`Burn`]: every core busy until dropped, as real load would.
//! - [`RawStream`]: an `AgentService.Connect` stream the test holds open.
//! - [`raw_connect`]: open `AgentService.Connect` with any cert, as a
//!   misbehaving or hostile client would.
//! - [`net::TestNet`]: a bridge and subnet of a test's own for namespaced
//!   instances, removed with every namespace on it when dropped.
//! - `ebb-test-web` (src/bin): the tests' HTTP workload, answering its
//!   instance id.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ebb_certs::{Ca, Issued};

pub mod etcd;
pub mod ha;
pub mod microvm;
pub mod net;
pub mod peers;

/// One `GET /` of the test web workload (`ebb-test-web`) on an instance's
/// own address: its body (the instance's id) on a 200, else None.
pub fn web_get(addr: std::net::Ipv4Addr) -> Option<String> {
    peers::http_get(std::net::SocketAddr::from((addr, WEB_PORT)))
}

/// Reports a test that cannot run on this host (no /dev/kvm, say): one line
/// `NOT RUN: <test>: <reason>` on a line of its own, written past the test
/// harness's capture so it shows in every run; `.ci/run` counts these and
/// never as passes. The test returns after calling it.
pub fn not_run(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\nNOT RUN: {test}: {reason}");
}

/// Generous: the tests must pass on a slow, busy two-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// `target/<profile>` of the running test or benchmark.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

/// Path of a workspace binary, built by `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (it builds every binary)",
        path.display()
    );
    path
}

/// Polls `f` until it returns Some, or panics after `deadline` naming `what`.
pub fn eventually<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A temp dir whose processes die with it: on drop, everything whose command
/// line names the dir is SIGKILLed (instances run in their own process
/// groups and outlive a killed controller by design).
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // A controller running as root runs each instance as a uid of its
        // own, which must pass through here to reach its dir.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
            .expect("chmod the sandbox");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// Kills what the test left running in the sandbox: processes that name
/// it (agents, controllers) and those working in it (the instances'
/// workloads, whose command lines do not name it).
impl Drop for Sandbox {
    fn drop(&mut self) {
        let dir = self.dir.path().display().to_string();
        let _ = Command::new("pkill").args(["-KILL", "-f", &dir]).status();
        let inside = format!("{dir}/");
        for p in live_processes() {
            if p.cwd == dir || p.cwd.starts_with(&inside) {
                let _ = Command::new("kill").args(["-KILL", &p.pid]).status();
            }
        }
    }
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        cmd.stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null());
        cmd.env("EBB_LOG", "info");
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Self { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal with kill(1) (no unsafe code in the tests either).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the process to exit, up to `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        eventually("process exit", deadline, || {
            self.child.try_wait().expect("try_wait")
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loopback addresses with free ports (bound together, so distinct; a
/// test's processes then listen on them).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("bound"))
        .collect()
}

/// GET `path` from `addr`: the status code and body, whatever the code.
pub fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("HTTP response")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("HTTP status")?;
    Ok((code, body.to_owned()))
}

/// A live (not zombie) process, as /proc shows it.
pub struct LiveProcess {
    pub pid: String,
    /// Its working directory.
    pub cwd: String,
    /// Its arguments joined by spaces.
    pub cmdline: String,
}

/// Every live process on the host (zombies have exited; they only wait to
/// be reaped).
pub fn live_processes() -> Vec<LiveProcess> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            continue;
        }
        let cwd = fs::read_link(entry.path().join("cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let cmdline = fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        found.push(LiveProcess { pid, cwd, cmdline });
    }
    found
}

/// A running `ebb-controller serve` in its own temp data dir.
pub struct ControllerProc {
    pub proc: Proc,
    pub dir: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub sampling_interval_ms: u64,
}

impl ControllerProc {
    /// Starts a controller in `dir` on ephemeral ports.
    pub fn start(dir: &Path, sampling_interval_ms: u64) -> anyhow::Result<Self> {
        Self::start_on(
            dir,
            sampling_interval_ms,
            "127.0.0.1:0".parse()?,
            "127.0.0.1:0".parse()?,
        )
    }

    /// Starts a controller on ephemeral ports with `extra` appended to its
    /// controller.toml (whole tables, e.g. `[provider]` or `[limits]`).
    pub fn start_with(dir: &Path, sampling_interval_ms: u64, extra: &str) -> anyhow::Result<Self> {
        let any = "127.0.0.1:0".parse()?;
        Self::start_configured(dir, sampling_interval_ms, any, any, extra)
    }

    /// Starts a controller on given addresses (a restart reuses the old ones).
    pub fn start_on(
        dir: &Path,
        sampling_interval_ms: u64,
        grpc: SocketAddr,
        http: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_configured(dir, sampling_interval_ms, grpc, http, "")
    }

    /// As `start_on`, with `extra` appended to controller.toml (whole
    /// tables, e.g. "[tls]\nagent_cert_lifetime_secs = 30\n").
    pub fn start_configured(
        dir: &Path,
        sampling_interval_ms: u64,
        grpc: SocketAddr,
        http: SocketAddr,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let data = dir.join("ebb-data");
        let config = dir.join("controller.toml");
        fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[grpc]\nlisten = \"{grpc}\"\n[http]\nlisten = \"{http}\"\n[fleet]\nsampling_interval_ms = {sampling_interval_ms}\n{extra}",
                data.display()
            ),
        )?;
        let endpoints = data.join("endpoints.toml");
        let _ = fs::remove_file(&endpoints);
        let mut cmd = Command::new(bin("ebb-controller"));
        cmd.arg("serve").arg("--config").arg(&config);
        let mut proc = Proc::spawn(cmd, dir.join("controller.log"))?;
        let text = eventually("the controller to write endpoints.toml", DEADLINE, || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("controller exited with {status}:\n{}", proc.log_text());
            }
            fs::read_to_string(&endpoints).ok()
        });
        let addr = |key: &str| -> anyhow::Result<SocketAddr> {
            let line = text
                .lines()
                .find(|l| l.starts_with(key))
                .with_context(|| format!("{key} in endpoints.toml"))?;
            Ok(line.split('"').nth(1).context("quoted address")?.parse()?)
        };
        Ok(Self {
            grpc: addr("grpc")?,
            http: addr("http")?,
            proc,
            dir: dir.to_owned(),
            sampling_interval_ms,
        })
    }

    /// SIGKILLs the controller and waits for it to go. Returns its gRPC and
    /// HTTP addresses, for a restart on the same ports (its instances'
    /// agents come back to them).
    pub fn kill(self) -> (SocketAddr, SocketAddr) {
        let (grpc, http) = (self.grpc, self.http);
        let mut proc = self.proc;
        proc.signal("KILL");
        proc.wait_exit(DEADLINE);
        (grpc, http)
    }

    /// Waits until the controller's log holds `line`.
    pub fn wait_log(&self, line: &str) {
        eventually(
            &format!("`{line}` in the controller's log"),
            DEADLINE,
            || self.proc.log_text().contains(line).then_some(()),
        );
    }

    /// Runs `ebbctl --data-dir <this controller's data dir> ARGS`, without
    /// the caller's `EBB_*` connection settings (they would beat the data dir).
    pub fn ebbctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(bin("ebbctl"));
        for var in [
            "EBB_CONTROLLER",
            "EBB_SERVER_NAME",
            "EBB_CA",
            "EBB_CERT",
            "EBB_KEY",
            "EBB_PROFILE",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("--data-dir")
            .arg(self.dir.join("ebb-data"))
            .args(args)
            .output()
            .expect("run ebbctl")
    }

    /// Runs ebbctl, which must succeed; its stdout.
    pub fn ebbctl_ok(&self, args: &[&str]) -> String {
        let out = self.ebbctl(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ebbctl {args:?} failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs `ebbctl -o json ARGS`, which must succeed; its output.
    pub fn ebbctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let text = self.ebbctl_ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Live processes of this controller's instances: those whose command
    /// line or working directory is under its instances dir, as
    /// "pid cwd cmdline" lines.
    pub fn instance_processes(&self) -> Vec<String> {
        let marker = self
            .dir
            .join("ebb-data")
            .join("instances")
            .display()
            .to_string();
        live_processes()
            .into_iter()
            .filter(|p| p.cwd.starts_with(&marker) || p.cmdline.contains(&marker))
            .map(|p| format!("{} {}/ {}", p.pid, p.cwd, p.cmdline))
            .collect()
    }

    /// Attaches `ids` to `group`, creating and enabling it first if it
    /// does not exist (min 0, max 10,000, no health checks, this
    /// controller's sampling interval): the controller refuses the stream
    /// of an instance that is in no group.
    pub fn attach(&self, group: &str, ids: &[&str]) {
        use ebb_proto::v1 as pb;
        let mut admin = Admin::local(self);
        let secs = u32::try_from(self.sampling_interval_ms.div_ceil(1000).max(1)).unwrap_or(300);
        let created = admin_call!(
            admin,
            create_scaling_group,
            pb::CreateScalingGroupRequest {
                name: group.into(),
                min_size: 0,
                max_size: 10_000,
                sampling_interval_secs: Some(secs),
                health_check_type: Some("NONE".into()),
                ..Default::default()
            }
        );
        match created {
            Ok(_) => {
                admin_call!(
                    admin,
                    create_scaling_configuration,
                    pb::CreateScalingConfigurationRequest {
                        scaling_group: group.into(),
                        name: "v1".into(),
                        command: vec!["sleep".into(), "infinity".into()],
                        ..Default::default()
                    }
                )
                .expect("create the group's configuration");
                admin_call!(
                    admin,
                    enable_scaling_group,
                    pb::EnableScalingGroupRequest {
                        scaling_group: group.into(),
                        ..Default::default()
                    }
                )
                .expect("enable the group");
            }
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => panic!("create group {group}: {status}"),
        }
        // Well under the admin API's 4 MiB a request.
        for chunk in ids.chunks(2000) {
            admin_call!(
                admin,
                attach_instances,
                pb::AttachInstancesRequest {
                    client_token: String::new(),
                    scaling_group: group.into(),
                    instance_ids: chunk.iter().map(|id| (*id).to_owned()).collect(),
                }
            )
            .unwrap_or_else(|status| panic!("attach {chunk:?} to {group}: {status}"));
        }
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("ebb-data").join("pki")
    }

    pub fn ca(&self) -> Ca {
        let pki = self.pki_dir();
        Ca::load(&pki.join("ca.crt"), &pki.join("ca.key")).expect("controller CA")
    }

    /// GET a path from the HTTP endpoint; the body on 200.
    pub fn http_get(&self, path: &str) -> anyhow::Result<String> {
        match http_status(self.http, path)? {
            (200, body) => Ok(body),
            (code, _) => bail!("{path}: HTTP {code}"),
        }
    }

    /// One metric's value from `/metrics` (name with labels, exactly).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let body = self.http_get("/metrics").ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits until the controller has finished `n` more passes of `counter`
    /// (e.g. `ebb_reconcile_passes_total`, `ebb_alarm_evaluation_seconds_count`):
    /// how a test sees that something had every chance to happen, however
    /// slow the host, instead of sleeping a guessed while.
    pub fn wait_passes(&self, counter: &str, n: u32) {
        let from = self.wait_metric(counter, |_| true);
        self.wait_metric(counter, |v| v >= from + f64::from(n));
    }

    /// Waits until `series` satisfies `pred` and returns its value.
    pub fn wait_metric(&self, series: &str, pred: impl Fn(f64) -> bool) -> f64 {
        eventually(
            &format!("{series} to reach the expected value"),
            DEADLINE,
            || self.metric(series).filter(|v| pred(*v)),
        )
    }
}

/// A running `ebb-agent` for one instance.
pub struct AgentProc {
    pub proc: Proc,
    pub id: String,
    pub dir: PathBuf,
}

impl AgentProc {
    /// Issues `id` a cert from the controller's CA and starts an agent.
    pub fn start(ctl: &ControllerProc, id: &str, extra_config: &str) -> anyhow::Result<Self> {
        let issued = ctl.ca().issue_agent(id, ebb_certs::AGENT_VALIDITY)?;
        Self::start_as(ctl, &format!("agent-{id}"), id, &issued, extra_config)
    }

    /// Issues target `name` a cert from the controller's CA and starts a
    /// target agent; `extra_config` holds its `[target]` tables.
    pub fn start_target(
        ctl: &ControllerProc,
        name: &str,
        extra_config: &str,
    ) -> anyhow::Result<Self> {
        let issued = ctl.ca().issue_target(name, ebb_certs::AGENT_VALIDITY)?;
        Self::start_as(ctl, &format!("target-{name}"), name, &issued, extra_config)
    }

    /// Starts the agent again in its dir, with its config and certs (after
    /// it was killed).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(bin("ebb-agent"));
        cmd.arg("--config").arg(self.dir.join("agent.toml"));
        self.proc = Proc::spawn(cmd, self.dir.join("agent.log"))?;
        Ok(())
    }

    fn start_as(
        ctl: &ControllerProc,
        dir_name: &str,
        id: &str,
        issued: &Issued,
        extra_config: &str,
    ) -> anyhow::Result<Self> {
        let dir = ctl.dir.join(dir_name);
        fs::create_dir_all(&dir)?;
        issued.write(&dir.join("agent.crt"), &dir.join("agent.key"))?;
        fs::copy(ctl.pki_dir().join("ca.crt"), dir.join("ca.crt"))?;
        let config = dir.join("agent.toml");
        fs::write(
            &config,
            format!(
                "controller = \"{}\"\nserver_name = \"localhost\"\n[reconnect]\nmax_backoff_ms = 1000\n[tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n{extra_config}",
                ctl.grpc
            ),
        )?;
        let mut cmd = Command::new(bin("ebb-agent"));
        cmd.arg("--config").arg(&config);
        let proc = Proc::spawn(cmd, dir.join("agent.log"))?;
        Ok(Self {
            proc,
            id: id.to_owned(),
            dir,
        })
    }
}

/// Writes a cert and key into `dir` and returns their paths.
pub fn write_pair(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    issued.write(&crt, &key).expect("write cert");
    (crt, key)
}

/// A blocking admin client over mTLS with any certificate, for tests.
pub struct Admin {
    pub rt: tokio::runtime::Runtime,
    pub client: ebb_proto::v1::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
    /// The mTLS channel, for other services (health, reflection).
    pub channel: tonic::transport::Channel,
}

impl Admin {
    /// Connects as the controller's local admin.
    pub fn local(ctl: &ControllerProc) -> Self {
        let pki = ctl.pki_dir();
        let cert = fs::read_to_string(pki.join("admin.crt")).expect("admin.crt");
        let key = fs::read_to_string(pki.join("admin.key")).expect("admin.key");
        Self::with_identity(ctl, &cert, &key)
    }

    /// Connects presenting `cert` and `key`.
    pub fn with_identity(ctl: &ControllerProc, cert: &str, key: &str) -> Self {
        use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
        // One worker keeps the connection driven between calls (answering
        // the server's HTTP/2 keepalive pings while a test sleeps); a
        // current-thread runtime would leave it idle and the server would
        // drop it.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let ca = fs::read_to_string(ctl.pki_dir().join("ca.crt")).expect("ca.crt");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key))
            .domain_name("localhost");
        let channel = rt
            .block_on(
                Channel::from_shared(format!("https://{}", ctl.grpc))
                    .expect("uri")
                    .tls_config(tls)
                    .expect("tls")
                    .connect(),
            )
            .expect("connect to the controller");
        Self {
            rt,
            client: ebb_proto::v1::admin_service_client::AdminServiceClient::new(channel.clone()),
            channel,
        }
    }
}

/// Runs one admin RPC and waits for it:
/// `admin_call!(admin, describe_scaling_groups, req)`.
#[macro_export]
macro_rules! admin_call {
    ($admin:expr, $method:ident, $req:expr) => {{
        let a: &mut $crate::Admin = &mut $admin;
        a.rt.block_on(a.client.$method($req))
            .map(tonic::Response::into_inner)
    }};
}

/// One POST a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names lowercased.
    pub headers: std::collections::HashMap<String, String>,
    /// The body's bytes exactly as sent (what a signature covers).
    pub raw: Vec<u8>,
    pub body: serde_json::Value,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    /// Whether it carries `X-Ebb-Signature: sha256=<HMAC-SHA256(secret,
    /// body)>`, checked as a receiver would: over the raw body, in constant
    /// time.
    pub fn signed_with(&self, secret: &str) -> bool {
        let Some(hex) = self
            .headers
            .get("x-ebb-signature")
            .and_then(|v| v.strip_prefix("sha256="))
        else {
            return false;
        };
        let Some(tag) = ebb_certs::from_hex(hex) else {
            return false;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        ring::hmac::verify(&key, &self.raw, &tag).is_ok()
    }
}

/// A real HTTP or HTTPS server on loopback that collects the POSTs sent
/// to it, as a webhook receiver would. It answers 204, or the status
/// [`WebhookReceiver::answer`] set (a 503 while "down").
pub struct WebhookReceiver {
    pub url: String,
    posts: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl WebhookReceiver {
    /// Plain HTTP.
    pub fn start() -> Self {
        Self::serve(None)
    }

    /// HTTPS with `issued` (a server certificate for `localhost`), at
    /// `https://localhost:PORT/hook`.
    pub fn start_tls(issued: &Issued) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = write_pair(dir.path(), "receiver", issued);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                ebb_certs::load_certs(&crt).unwrap(),
                ebb_certs::load_key(&key).unwrap(),
            )
            .unwrap();
        Self::serve(Some(std::sync::Arc::new(config)))
    }

    fn serve(tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}/hook"),
            None => format!("http://127.0.0.1:{port}/hook"),
        };
        let posts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(204));
        let (sink, answer) = (posts.clone(), status.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let status = answer.load(std::sync::atomic::Ordering::SeqCst);
                let got = match &tls {
                    Some(config) => {
                        let Ok(server) = rustls::ServerConnection::new(config.clone()) else {
                            continue;
                        };
                        exchange(rustls::StreamOwned::new(server, conn), status)
                    }
                    None => exchange(conn, status),
                };
                if let Some(got) = got {
                    sink.lock().unwrap().push(got);
                }
            }
        });
        Self { url, posts, status }
    }

    /// Answers every later POST with `status`.
    pub fn answer(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every POST so far, answered well or not.
    pub fn posts(&self) -> Vec<Received> {
        self.posts.lock().unwrap().clone()
    }

    /// The `event` field of every body taken (answered 2xx) so far.
    pub fn events(&self) -> Vec<String> {
        self.taken()
            .iter()
            .map(|p| p.body["event"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// The POSTs answered 2xx so far.
    pub fn taken(&self) -> Vec<Received> {
        self.posts()
            .into_iter()
            .filter(|p| (200..300).contains(&p.status))
            .collect()
    }

    /// The first POST taken whose `event` is `event`, waiting for it.
    pub fn wait_post(&self, event: &str) -> Received {
        eventually(&format!("a {event} notification"), DEADLINE * 2, || {
            self.taken().into_iter().find(|p| p.body["event"] == event)
        })
    }

    /// The body of the first POST taken whose `event` is `event`, waiting.
    pub fn wait_for(&self, event: &str) -> serde_json::Value {
        self.wait_post(event).body
    }
}

/// Reads one HTTP/1.1 request from `conn` and answers `status`.
fn exchange(conn: impl Read + Write, status: u16) -> Option<Received> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(conn);
    let mut headers = std::collections::HashMap::new();
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut raw = vec![0; length];
    reader.read_exact(&mut raw).ok()?;
    let body = serde_json::from_slice(&raw).ok()?;
    let reason = if (200..300).contains(&status) {
        "OK"
    } else {
        "Unavailable"
    };
    let conn = reader.get_mut();
    let _ = conn.write_all(
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let _ = conn.flush();
    Some(Received {
        headers,
        raw,
        body,
        status,
    })
}

/// A group's instances.
/// Creates `group`, gives it a configuration `v1` whose workload is
/// `sleep infinity`, and enables it: an active group of launched instances
/// that do nothing.
pub fn enabled_group(admin: &mut Admin, group: ebb_proto::v1::CreateScalingGroupRequest) {
    use ebb_proto::v1 as pb;
    let name = group.name.clone();
    admin_call!(*admin, create_scaling_group, group).expect("create the group");
    admin_call!(
        *admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: name.clone(),
            name: "v1".into(),
            command: vec!["sleep".into(), "infinity".into()],
            ..Default::default()
        }
    )
    .expect("create the configuration");
    admin_call!(
        *admin,
        enable_scaling_group,
        pb::EnableScalingGroupRequest {
            scaling_group: name,
            ..Default::default()
        }
    )
    .expect("enable the group");
}

pub fn instances(admin: &mut Admin, group: &str) -> Vec<ebb_proto::v1::Instance> {
    admin_call!(
        *admin,
        describe_scaling_instances,
        ebb_proto::v1::DescribeScalingInstancesRequest {
            scaling_group: group.into(),
            ..Default::default()
        }
    )
    .unwrap()
    .instances
}

/// A group's activities, newest first.
pub fn activities(admin: &mut Admin, group: &str) -> Vec<ebb_proto::v1::Activity> {
    admin_call!(
        *admin,
        describe_scaling_activities,
        ebb_proto::v1::DescribeScalingActivitiesRequest {
            scaling_group: group.into(),
            ..Default::default()
        }
    )
    .unwrap()
    .activities
}

/// Every core busy until dropped, as real load would: one busy shell loop
/// a core, killed on drop.
pub struct Burn(Vec<std::process::Child>);

impl Burn {
    pub fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Burn(
            (0..cores)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("start a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Burn {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a raw `Connect` got back.
#[derive(Debug)]
pub enum RawOutcome {
    /// The controller answered with a Welcome.
    Welcomed,
    /// Refused: the gRPC status or transport error, as text.
    Refused(String),
}

/// Opens `AgentService.Connect` to `grpc` trusting `ca_pem`, presenting
/// `identity` (cert, key PEM) if any, and sending a Hello for `hello_id`.
pub fn raw_connect(
    grpc: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    hello_id: &str,
) -> RawOutcome {
    raw_connect_with(
        grpc,
        ca_pem,
        identity,
        ebb_proto::v1::Hello {
            protocol_version: ebb_proto::v1::ProtocolVersion::ProtocolVersion1 as i32,
            instance_id: hello_id.to_owned(),
            ..Default::default()
        },
    )
}

/// As `raw_connect`, with the whole `Hello` to send.
pub fn raw_connect_with(
    grpc: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    hello: ebb_proto::v1::Hello,
) -> RawOutcome {
    use ebb_proto::v1::AgentMessage;
    use ebb_proto::v1::agent_message::Body;
    use ebb_proto::v1::agent_service_client::AgentServiceClient;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name("localhost");
        if let Some((crt, key)) = identity {
            tls = tls.identity(Identity::from_pem(crt, key));
        }
        let channel = match Channel::from_shared(format!("https://{grpc}"))
            .expect("uri")
            .tls_config(tls)
            .expect("tls config")
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
        {
            Ok(c) => c,
            Err(e) => return RawOutcome::Refused(format!("{e:?}")),
        };
        let hello = AgentMessage {
            body: Some(Body::Hello(hello)),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(hello).await.expect("queue hello");
        let mut client = AgentServiceClient::new(channel);
        let call = client.connect(tokio_stream::wrappers::ReceiverStream::new(rx));
        match tokio::time::timeout(Duration::from_secs(20), call).await {
            Err(_) => RawOutcome::Refused("timed out".into()),
            Ok(Err(status)) => {
                RawOutcome::Refused(format!("{:?}: {}", status.code(), status.message()))
            }
            Ok(Ok(resp)) => match resp.into_inner().message().await {
                Ok(Some(_)) => RawOutcome::Welcomed,
                Ok(None) => RawOutcome::Refused("stream ended".into()),
                Err(status) => {
                    RawOutcome::Refused(format!("{:?}: {}", status.code(), status.message()))
                }
            },
        }
    })
}

/// How a [`RawStream`] went on.
#[derive(Debug)]
pub enum Next {
    Message(Box<ebb_proto::v1::ControllerMessage>),
    /// The controller ended the stream: "ok" for a clean end, else the
    /// status or transport error as text.
    Ended(String),
    /// Nothing came within the wait.
    Nothing,
}

/// An `AgentService.Connect` stream held open by the test, as an agent
/// that says hello and then answers only what the test sends.
pub struct RawStream {
    rt: tokio::runtime::Runtime,
    tx: tokio::sync::mpsc::Sender<ebb_proto::v1::AgentMessage>,
    inbound: tonic::Streaming<ebb_proto::v1::ControllerMessage>,
}

impl RawStream {
    /// Connects presenting `identity` (cert, key PEM) and sends `hello`;
    /// the refusal as text if the controller does not welcome it.
    pub fn open(
        grpc: SocketAddr,
        ca_pem: &str,
        identity: (&str, &str),
        hello: ebb_proto::v1::Hello,
    ) -> Result<Self, String> {
        use ebb_proto::v1::agent_message::Body;
        use ebb_proto::v1::agent_service_client::AgentServiceClient;
        use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
        // A worker drives the connection between calls, answering the
        // controller's keepalive pings while the test waits.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(identity.0, identity.1))
            .domain_name("localhost");
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let inbound = rt.block_on(async {
            let channel = Channel::from_shared(format!("https://{grpc}"))
                .expect("uri")
                .tls_config(tls)
                .expect("tls config")
                .connect_timeout(Duration::from_secs(10))
                .connect()
                .await
                .map_err(|e| format!("{e:?}"))?;
            tx.send(ebb_proto::v1::AgentMessage {
                body: Some(Body::Hello(hello)),
            })
            .await
            .expect("queue hello");
            let mut client = AgentServiceClient::new(channel);
            let call = client.connect(tokio_stream::wrappers::ReceiverStream::new(rx));
            match tokio::time::timeout(DEADLINE, call).await {
                Err(_) => Err("timed out".to_owned()),
                Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                Ok(Ok(resp)) => Ok(resp.into_inner()),
            }
        })?;
        let mut stream = Self { rt, tx, inbound };
        match stream.next(DEADLINE) {
            Next::Message(m)
                if matches!(
                    m.body,
                    Some(ebb_proto::v1::controller_message::Body::Welcome(_))
                ) =>
            {
                Ok(stream)
            }
            other => Err(format!("no Welcome: {other:?}")),
        }
    }

    /// The next message from the controller, waiting up to `within`.
    pub fn next(&mut self, within: Duration) -> Next {
        let inbound = &mut self.inbound;
        self.rt.block_on(async {
            match tokio::time::timeout(within, inbound.message()).await {
                Err(_) => Next::Nothing,
                Ok(Ok(Some(m))) => Next::Message(Box::new(m)),
                Ok(Ok(None)) => Next::Ended("ok".to_owned()),
                Ok(Err(status)) => {
                    Next::Ended(format!("{:?}: {}", status.code(), status.message()))
                }
            }
        })
    }

    /// Reads until the controller ends the stream, up to `within`; the
    /// messages read, or None if it was still open.
    pub fn until_end(&mut self, within: Duration) -> Option<Vec<ebb_proto::v1::ControllerMessage>> {
        let start = Instant::now();
        let mut seen = Vec::new();
        while let Some(left) = within.checked_sub(start.elapsed()) {
            match self.next(left) {
                Next::Message(m) => seen.push(*m),
                Next::Ended(_) => return Some(seen),
                Next::Nothing => return None,
            }
        }
        None
    }

    /// Sends a message on the stream.
    pub fn send(&self, body: ebb_proto::v1::agent_message::Body) {
        self.rt
            .block_on(
                self.tx
                    .send(ebb_proto::v1::AgentMessage { body: Some(body) }),
            )
            .expect("the stream's sender");
    }
}

/// A channel to the controller's gRPC port that presents no client
/// certificate (what `JoinService.Join` is for).
pub async fn certless(ctl: &ControllerProc, ca_pem: &str) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    Channel::from_shared(format!("https://{}", ctl.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a cert-less client finishes the handshake")
}

/// The group `web_group` makes.
pub const WEB_GROUP: &str = "web";
/// The port `ebb-test-web` listens on.
pub const WEB_PORT: u16 = 8080;

/// Creates and enables the group `web` (max 5, 1 s sampling and health
/// grace) with `ebb-test-web` as its workload, `desired` strong.
pub fn web_group(admin: &mut Admin, sb: &Sandbox, desired: u32) {
    admin_call!(
        *admin,
        create_scaling_group,
        ebb_proto::v1::CreateScalingGroupRequest {
            name: WEB_GROUP.into(),
            min_size: 0,
            max_size: 5,
            desired_capacity: Some(desired),
            sampling_interval_secs: Some(1),
            health_check_grace_period_secs: Some(1),
            ..Default::default()
        }
    )
    .expect("create the group");
    admin_call!(
        *admin,
        create_scaling_configuration,
        ebb_proto::v1::CreateScalingConfigurationRequest {
            scaling_group: WEB_GROUP.into(),
            name: "v1".into(),
            command: vec![
                bin("ebb-test-web").display().to_string(),
                // Ignored by the server; lets the sandbox's clean-up find it.
                sb.path().display().to_string(),
            ],
            ..Default::default()
        }
    )
    .expect("create the configuration");
    admin_call!(
        *admin,
        enable_scaling_group,
        ebb_proto::v1::EnableScalingGroupRequest {
            scaling_group: WEB_GROUP.into(),
            ..Default::default()
        }
    )
    .expect("enable the group");
}

/// Sets the desired capacity of the `web` group.
pub fn set_desired(admin: &mut Admin, n: u32) {
    admin_call!(
        *admin,
        modify_scaling_group,
        ebb_proto::v1::ModifyScalingGroupRequest {
            scaling_group: WEB_GROUP.into(),
            desired_capacity: Some(n),
            ..Default::default()
        }
    )
    .expect("set the desired capacity");
}

/// A Hello for `id`, as a current agent sends it.
pub fn hello(id: &str) -> ebb_proto::v1::Hello {
    ebb_proto::v1::Hello {
        protocol_version: ebb_proto::v1::ProtocolVersion::ProtocolVersion1 as i32,
        instance_id: id.to_owned(),
        hostname: format!("{id}.test"),
        ..Default::default()
    }
}
