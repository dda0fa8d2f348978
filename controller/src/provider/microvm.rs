//! The microvm provider (`instance_type = "microvm"`): each instance is a
//! QEMU `-M microvm` virtual machine booting the kernel and initramfs that
//! `packaging/microvm/build.sh` makes, with a tap device on the bridge of
//! `provider.network = "namespace"` and an address from the same pool as
//! the namespaced process instances.
//!
//! QEMU gets the initramfs with a second newc archive appended (archives
//! concatenate): the instance's `agent.toml` (written as the process
//! provider writes it), its certificates, its workload's environment and
//! argv, and, when the workload's program is an absolute host path, that
//! program and the libraries `ldd` names, at the same paths.
//!
//! `<base_dir>/<id>/vm.json` names the tap and address before either is
//! made, and QEMU's pid and start time as soon as it is spawned (in a
//! process group of its own, so it outlives a controller restart; its
//! `-pidfile` names it too). A restarted controller re-adopts the VMs it finds
//! there; a release stops QEMU, removes the tap, frees the address and
//! the dir.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, DirBuilder};
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::time::{Instant, sleep};
use tracing::{info, warn};

use super::agent_config::{self, AgentHooks, Tls};
use super::netns::Network;
use super::process::{
    IdLocks, Launching, ProcessRecord, boot_id, check_id, instance_dirs, process_matches,
    read_stat, via_bridge,
};
use super::{LaunchRequest, Launched, Provider, ProviderError, ProviderInstance, Result};
use ebb_core::model::{MicrovmSettings, ScalingConfiguration};

const RECORD: &str = "vm.json";
const INITRD: &str = "initrd.cpio";
const PIDFILE: &str = "qemu.pid";
const QEMU_LOG: &str = "qemu.log";
const CONSOLE: &str = "console.log";
const KVM: &str = "/dev/kvm";
/// Where Debian's qemu-system-x86 puts it, and elsewhere.
const QEMU_PATHS: &[&str] = &[
    "/usr/bin/qemu-system-x86_64",
    "/usr/local/bin/qemu-system-x86_64",
    "/bin/qemu-system-x86_64",
];
/// QEMU opens its tap once its devices are made: seconds, even on a busy host.
const START_DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// SIGKILL cannot be ignored; longer than this means a process stuck in the kernel.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Where packaging/microvm/build.sh's output is installed by default.
pub const DEFAULT_KERNEL: &str = "/usr/lib/ebb/microvm/vmlinuz";
pub const DEFAULT_INITRAMFS: &str = "/usr/lib/ebb/microvm/initramfs.cpio";

/// How QEMU runs the VMs: `kvm` (hardware virtualisation, the default)
/// or `tcg` (emulation: no /dev/kvm needed, many times slower).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    #[default]
    Kvm,
    Tcg,
}

/// The host side of the provider: what it boots and how.
#[derive(Debug, Clone)]
pub struct MicrovmHost {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: Accel,
}

/// Runs each instance as a QEMU microVM under `base_dir`.
pub struct MicrovmProvider {
    base_dir: PathBuf,
    host: MicrovmHost,
    qemu: Option<PathBuf>,
    network: Option<Arc<Network>>,
    release_timeout: Duration,
    hooks: AgentHooks,
    /// Under TCG, the TSC rate the guest is told (see `tsc_khz`).
    tsc_khz: u64,
    /// Why this host cannot run VMs; None when it can.
    unavailable: Option<String>,
    locks: IdLocks,
    launching: Mutex<HashSet<String>>,
}

/// What `vm.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct VmRecord {
    instance_id: String,
    group_id: String,
    tap: String,
    address: Ipv4Addr,
    mac: String,
    /// Start times count from boot; after a reboot they mean nothing.
    boot_id: Option<String>,
    /// None until QEMU runs.
    qemu: Option<ProcessRecord>,
    started_at_ms: u64,
}

impl MicrovmProvider {
    /// `base_dir` is `<data_dir>/microvms`. The addresses of the VMs
    /// already on disk (a restart's) are noted in `network`'s pool now.
    pub fn new(
        base_dir: PathBuf,
        host: MicrovmHost,
        network: Option<Arc<Network>>,
        release_timeout: Duration,
        hooks: AgentHooks,
    ) -> Self {
        let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
        let qemu = QEMU_PATHS.iter().map(PathBuf::from).find(|p| p.is_file());
        let unavailable = unavailable(&host, qemu.as_deref(), network.is_some());
        if let Some(network) = &network {
            for entry in fs::read_dir(&base_dir).into_iter().flatten().flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                match read_record(&entry.path()) {
                    Ok(Some(record)) => network.addresses.note(&id, record.address),
                    Ok(None) => {}
                    Err(e) => warn!(instance = %id, "{e}"),
                }
            }
        }
        Self {
            base_dir,
            host,
            qemu,
            network,
            release_timeout,
            hooks,
            tsc_khz: tsc_khz(),
            unavailable,
            locks: IdLocks::default(),
            launching: Mutex::new(HashSet::new()),
        }
    }

    /// Why this host cannot run microVMs (one sentence), or None.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    fn instance_dir(&self, id: &str) -> PathBuf {
        self.base_dir.join(id)
    }

    fn is_launching(&self, id: &str) -> bool {
        self.launching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// Makes the VM in `dir`: records tap and address, writes its initrd,
    /// makes the tap, starts QEMU and records it.
    async fn start(
        &self,
        req: &LaunchRequest,
        dir: &Path,
        network: &Network,
        qemu: &Path,
    ) -> Result<Launched, String> {
        let id = &req.instance_id;
        let address = network.addresses.take(id).map_err(|e| e.to_string())?;
        let tap = network.tap_name(id);
        // Locally administered, unique per tap.
        let hex = &tap[tap.len() - 10..];
        let mac = format!(
            "02:{}:{}:{}:{}:{}",
            &hex[0..2],
            &hex[2..4],
            &hex[4..6],
            &hex[6..8],
            &hex[8..10]
        );
        let mut record = VmRecord {
            instance_id: id.clone(),
            group_id: req.group_id.clone(),
            tap: tap.clone(),
            address,
            mac: mac.clone(),
            boot_id: boot_id(),
            qemu: None,
            started_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        write_record(dir, &record)?;

        let (controller, server_name) = via_bridge(&req.controller, &req.server_name, network);
        let config = agent_config::render(
            &req.configuration,
            &controller,
            &server_name,
            &Tls::in_dir("host"),
            &self.hooks,
        )?;
        let data = instance_archive(req, &config, address)?;
        let initrd = dir.join(INITRD);
        let mut base = fs::read(&self.host.initramfs)
            .map_err(|e| format!("cannot read {}: {e}", self.host.initramfs.display()))?;
        base.resize(base.len().next_multiple_of(4), 0);
        base.extend_from_slice(&data);
        ebb_certs::write_atomic(&initrd, &base, 0o600)
            .map_err(|e| format!("cannot write {}: {e}", initrd.display()))?;
        drop(base);

        network.create_tap(&tap).await?;

        let settings = req.configuration.microvm.clone().unwrap_or_default();
        let args = qemu_args(&QemuArgs {
            id,
            dir,
            host: &self.host,
            settings: &settings,
            tap: &tap,
            mac: &mac,
            address: format!("{address}/{}", network.subnet().prefix()),
            gateway: network.gateway(),
            tsc_khz: self.tsc_khz,
        });
        let log = dir.join(QEMU_LOG);
        let stderr =
            fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut child = Command::new(qemu)
            .args(&args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or("QEMU exited at once")?;
        let process = read_stat(pid)
            .map(|stat| ProcessRecord {
                pid,
                start_time: stat.start_time,
            })
            .ok_or("QEMU exited at once")?;
        // Recorded before anything can go wrong, so a release finds it.
        record.qemu = Some(process);
        write_record(dir, &record)?;
        // QEMU has made its devices once it holds the tap: its carrier is up.
        let carrier = Path::new("/sys/class/net").join(&tap).join("carrier");
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let why = fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("QEMU failed ({status}): {}", tail(&why)));
            }
            if fs::read_to_string(&carrier).is_ok_and(|c| c.trim() == "1") {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(format!(
                    "QEMU did not open its network device within {START_DEADLINE:?}; see {}",
                    log.display()
                ));
            }
            sleep(POLL_INTERVAL).await;
        }
        let reaped = id.clone();
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => info!(instance = %reaped, %status, "QEMU exited"),
                Err(e) => warn!(instance = %reaped, "cannot wait for QEMU: {e}"),
            }
        });
        info!(instance = %id, pid = process.pid, %address, %tap, "launched a microVM");
        Ok(Launched {
            provider_id: format!("qemu pid {}", process.pid),
            address: Some(address.to_string()),
        })
    }

    /// Stops QEMU, removes the tap, frees the address and the dir.
    async fn undo(&self, id: &str, dir: &Path) -> Result<(), String> {
        let record = read_record(dir).unwrap_or_else(|e| {
            warn!(instance = id, "{e}");
            None
        });
        let process = record
            .as_ref()
            .and_then(|r| r.qemu)
            .or_else(|| qemu_by_pidfile(dir));
        if let Some(process) = process {
            self.stop(id, process).await?;
        }
        if let Some(network) = &self.network {
            let tap = match &record {
                Some(r) => r.tap.clone(),
                None => network.tap_name(id),
            };
            network.delete_tap(&tap).await?;
            network.addresses.free(id);
        } else if let Some(r) = &record {
            warn!(
                instance = id,
                "tap {} is left behind: provider.network is not \"namespace\" any more; remove it with `ip link del {}`",
                r.tap,
                r.tap
            );
        }
        match fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", dir.display())),
        }
    }

    /// SIGTERM, then SIGKILL after the release timeout.
    async fn stop(&self, id: &str, process: ProcessRecord) -> Result<(), String> {
        let send = |signal| {
            if process_matches(process).is_none() {
                return Ok(());
            }
            match kill(Pid::from_raw(process.pid), signal) {
                Ok(()) | Err(Errno::ESRCH) => Ok(()),
                Err(e) => Err(format!(
                    "cannot send {signal} to QEMU (pid {}): {e}",
                    process.pid
                )),
            }
        };
        send(Signal::SIGTERM)?;
        if wait_gone(process, self.release_timeout).await {
            return Ok(());
        }
        warn!(
            instance = id,
            "QEMU still running {:?} after SIGTERM; sending SIGKILL", self.release_timeout
        );
        send(Signal::SIGKILL)?;
        if wait_gone(process, KILL_GRACE).await {
            return Ok(());
        }
        Err(format!(
            "QEMU (pid {}) survived SIGKILL for {KILL_GRACE:?}",
            process.pid
        ))
    }
}

#[tonic::async_trait]
impl Provider for MicrovmProvider {
    fn name(&self) -> &'static str {
        "microvm"
    }

    fn check(&self, configuration: &ScalingConfiguration) -> Result<()> {
        if let Some(why) = &self.unavailable {
            return Err(ProviderError::Unavailable(why.clone()));
        }
        if let Some(program) = configuration.command.first()
            && program.contains('=')
        {
            return Err(ProviderError::Invalid(format!(
                "command: `{program}`: a microVM's workload program cannot contain `=`"
            )));
        }
        Ok(())
    }

    async fn launch(&self, req: LaunchRequest) -> Result<Launched> {
        let id = req.instance_id.clone();
        let fail = |message| ProviderError::Launch {
            instance: id.clone(),
            message,
        };
        check_id(&id).map_err(fail)?;
        self.check(&req.configuration)?;
        let (Some(network), Some(qemu)) = (&self.network, &self.qemu) else {
            return Err(ProviderError::Unavailable(
                "the microvm provider is not set up".into(),
            ));
        };
        let _lock = self.locks.lock(&id).await;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.base_dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", self.base_dir.display())))?;
        let _launching = Launching::enter(&self.launching, &id);
        let dir = self.instance_dir(&id);
        if let Err(e) = DirBuilder::new().mode(0o700).create(&dir) {
            return Err(fail(if e.kind() != ErrorKind::AlreadyExists {
                format!("cannot create {}: {e}", dir.display())
            } else {
                format!(
                    "{} exists: the VM runs or is left from an earlier launch; release it first",
                    dir.display()
                )
            }));
        }
        match self.start(&req, &dir, network, qemu).await {
            Ok(launched) => Ok(launched),
            Err(message) => {
                if let Err(e) = self.undo(&id, &dir).await {
                    warn!(instance = %id, "cannot undo the failed launch: {e}");
                }
                Err(fail(message))
            }
        }
    }

    async fn release(&self, instance_id: &str) -> Result<()> {
        let error = |message| ProviderError::Release {
            instance: instance_id.to_owned(),
            message,
        };
        // Not an id this provider could have made: nothing to do.
        if check_id(instance_id).is_err() {
            return Ok(());
        }
        let _lock = self.locks.lock(instance_id).await;
        let dir = self.instance_dir(instance_id);
        if !dir.exists() {
            return Ok(());
        }
        self.undo(instance_id, &dir).await.map_err(error)?;
        info!(instance = instance_id, "released a microVM");
        Ok(())
    }

    async fn describe(&self) -> Result<Vec<ProviderInstance>> {
        let mut instances = Vec::new();
        for (id, path) in instance_dirs(&self.base_dir)? {
            let record = read_record(&path).unwrap_or_else(|e| {
                warn!(instance = %id, "{e}");
                None
            });
            let running = record.as_ref().is_some_and(|r| {
                r.qemu.is_some_and(|q| process_matches(q).is_some())
                    && match (&r.boot_id, boot_id()) {
                        (Some(then), Some(now)) => *then == now,
                        _ => true,
                    }
            });
            let alive = self.is_launching(&id) || running;
            instances.push(ProviderInstance {
                instance_id: id,
                alive,
                provider_id: record
                    .as_ref()
                    .and_then(|r| r.qemu)
                    .map(|q| format!("qemu pid {}", q.pid)),
                address: record.map(|r| r.address.to_string()),
            });
        }
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(instances)
    }
}

/// Why VMs cannot run here, naming what is missing and how to get it.
fn unavailable(host: &MicrovmHost, qemu: Option<&Path>, bridged: bool) -> Option<String> {
    if host.accel == Accel::Kvm
        && let Err(e) = fs::OpenOptions::new().read(true).write(true).open(KVM)
    {
        return Some(format!(
            "the microvm provider needs KVM, and {KVM} cannot be opened ({e}): run on a host with virtualisation (load kvm_intel or kvm_amd), or set provider.microvm.accel = \"tcg\" to emulate (slowly)"
        ));
    }
    if qemu.is_none() {
        return Some(
            "the microvm provider needs qemu-system-x86_64, which is not installed: install the Debian package qemu-system-x86".into(),
        );
    }
    for (key, path) in [
        ("provider.microvm.kernel", &host.kernel),
        ("provider.microvm.initramfs", &host.initramfs),
    ] {
        if !path.is_file() {
            return Some(format!(
                "the microvm provider needs {key} {}, which does not exist: build it with packaging/microvm/build.sh DIR and point {key} into DIR",
                path.display()
            ));
        }
    }
    if !bridged {
        return Some(
            "the microvm provider needs provider.network = \"namespace\": its VMs join that bridge"
                .into(),
        );
    }
    None
}

struct QemuArgs<'a> {
    id: &'a str,
    dir: &'a Path,
    host: &'a MicrovmHost,
    settings: &'a MicrovmSettings,
    tap: &'a str,
    mac: &'a str,
    address: String,
    gateway: Ipv4Addr,
    tsc_khz: u64,
}

fn qemu_args(a: &QemuArgs<'_>) -> Vec<String> {
    let path = |name: &str| a.dir.join(name).display().to_string();
    let mut args: Vec<String> = vec!["-name".into(), format!("ebb-{}", a.id)];
    args.extend(["-M".into(), "microvm".into()]);
    match a.host.accel {
        Accel::Kvm => args.extend(["-enable-kvm", "-cpu", "host"].map(String::from)),
        Accel::Tcg => args.extend(["-accel", "tcg", "-cpu", "max"].map(String::from)),
    }
    args.extend([
        "-m".into(),
        a.settings.memory_mib().to_string(),
        "-smp".into(),
        a.settings.vcpus().to_string(),
    ]);
    args.extend(
        [
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
        ]
        .map(String::from),
    );
    args.extend(["-pidfile".into(), path(PIDFILE)]);
    args.extend(["-kernel".into(), a.host.kernel.display().to_string()]);
    args.extend(["-initrd".into(), path(INITRD)]);
    args.extend([
        "-append".into(),
        match a.host.accel {
            Accel::Kvm => format!(
                "console=ttyS0 quiet panic=-1 ebb.ip={} ebb.gw={}",
                a.address, a.gateway
            ),
            // An emulated CPU on a busy host fails the kernel's TSC
            // calibration against the PIT, and the boot then hangs: tell it.
            Accel::Tcg => format!(
                "console=ttyS0 quiet panic=-1 tsc_early_khz={} ebb.ip={} ebb.gw={}",
                a.tsc_khz, a.address, a.gateway
            ),
        },
    ]);
    args.extend([
        "-netdev".into(),
        format!("tap,id=net0,ifname={},script=no,downscript=no", a.tap),
        "-device".into(),
        format!("virtio-net-device,netdev=net0,mac={}", a.mac),
        "-device".into(),
        "virtio-rng-device".into(),
        "-serial".into(),
        format!("file:{}", path(CONSOLE)),
    ]);
    args
}

/// The host's TSC rate in kHz (TCG's guest TSC runs at it), from
/// /proc/cpuinfo's `cpu MHz`; 2 GHz when it says nothing.
fn tsc_khz() -> u64 {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(2_000_000, |mhz| (mhz * 1000.0) as u64)
}

/// The QEMU that wrote `dir`'s pidfile, if it still runs it (its argv
/// names the pidfile, so a reused pid is never taken for it).
fn qemu_by_pidfile(dir: &Path) -> Option<ProcessRecord> {
    let pid: i32 = fs::read_to_string(dir.join(PIDFILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let pidfile = dir.join(PIDFILE);
    let argv = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = argv
        .split(|&b| b == 0)
        .any(|arg| arg == pidfile.as_os_str().as_encoded_bytes());
    let stat = read_stat(pid)?;
    ours.then_some(ProcessRecord {
        pid,
        start_time: stat.start_time,
    })
    .filter(|p| process_matches(*p).is_some())
}

async fn wait_gone(process: ProcessRecord, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if process_matches(process).is_none() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL_INTERVAL).await;
    }
}

fn read_record(dir: &Path) -> Result<Option<VmRecord>, String> {
    let path = dir.join(RECORD);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_record(dir: &Path, record: &VmRecord) -> Result<(), String> {
    let json =
        serde_json::to_vec_pretty(record).map_err(|e| format!("cannot render {RECORD}: {e}"))?;
    ebb_certs::write_atomic(&dir.join(RECORD), &json, 0o600)
        .map_err(|e| format!("cannot write {RECORD}: {e}"))
}

/// The last lines of a program's stderr, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

/// The per-instance archive appended to the initramfs: what `/init`
/// (packaging/microvm/init) reads under `/ebb`.
fn instance_archive(
    req: &LaunchRequest,
    agent_toml: &str,
    address: Ipv4Addr,
) -> Result<Vec<u8>, String> {
    let mut cpio = Newc::default();
    cpio.file("ebb/agent.toml", 0o644, agent_toml.as_bytes());
    cpio.file("ebb/instance_id", 0o644, req.instance_id.as_bytes());
    cpio.file("ebb/host/ca.crt", 0o600, req.ca_pem.as_bytes());
    cpio.file("ebb/host/agent.crt", 0o600, req.cert_pem.as_bytes());
    cpio.file("ebb/host/agent.key", 0o600, req.key_pem.as_bytes());
    if let Some(program) = req.configuration.command.first() {
        // `env -i` reads the variables, then the argv: NUL-separated, no shell.
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), super::isolation::INSTANCE_PATH.into()),
            ("HOME".into(), "/ebb/host".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        env.extend(
            req.configuration
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        env.extend([
            ("EBB_INSTANCE_ID".into(), req.instance_id.clone()),
            ("EBB_GROUP_ID".into(), req.group_id.clone()),
            ("EBB_INSTANCE_DIR".into(), "/ebb/host".into()),
            ("EBB_INSTANCE_ADDRESS".into(), address.to_string()),
        ]);
        let mut workload = Vec::new();
        for (k, v) in env {
            workload.extend_from_slice(format!("{k}={v}").as_bytes());
            workload.push(0);
        }
        for arg in &req.configuration.command {
            workload.extend_from_slice(arg.as_bytes());
            workload.push(0);
        }
        cpio.file("ebb/workload", 0o644, &workload);
        if program.starts_with('/') && Path::new(program).is_file() {
            for path in std::iter::once(PathBuf::from(program)).chain(libraries(program)?) {
                let data =
                    fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let mode = fs::metadata(&path).map_or(0o755, |m| m.permissions().mode() & 0o777);
                let name = path.display().to_string();
                cpio.file(name.trim_start_matches('/'), mode, &data);
            }
        }
    }
    Ok(cpio.finish())
}

/// The shared libraries `ldd` names for `program` (none for a static one).
fn libraries(program: &str) -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("ldd")
        .arg(program)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ldd (libc-bin) on {program}: {e}"))?;
    // "not a dynamic executable" exits 1: a static program needs nothing.
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}

/// A newc (SVR4, no CRC) cpio archive, as the kernel unpacks into its
/// initramfs. Parent directories are written before what they hold.
#[derive(Default)]
struct Newc {
    out: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Newc {
    const DIR: u32 = 0o040_000;
    const FILE: u32 = 0o100_000;

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        let mut parent = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if self.dirs.insert(parent.clone()) {
                let dir = parent.clone();
                self.entry(&dir, Self::DIR | 0o755, &[]);
            }
        }
        self.entry(name, Self::FILE | mode, data);
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & Self::DIR == Self::DIR { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        self.out.resize(self.out.len().next_multiple_of(4), 0);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_archives_list_parents_first_and_align() {
        let mut cpio = Newc::default();
        cpio.file("ebb/host/agent.key", 0o600, b"secret");
        cpio.file("ebb/agent.toml", 0o644, b"x");
        let out = cpio.finish();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("ebb\0") < at("ebb/host\0"));
        assert!(at("ebb/host\0") < at("ebb/host/agent.key\0"));
        assert_eq!(text.matches("ebb\0").count(), 1, "each dir once");
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!"));
        // The first header: magic, ino 1, a directory 0755, nlink 2.
        assert!(
            text.starts_with("07070100000001000041ED"),
            "{}",
            &text[..40]
        );
    }

    #[test]
    fn unavailable_names_what_is_missing() {
        let host = MicrovmHost {
            kernel: "/nonexistent/vmlinuz".into(),
            initramfs: "/nonexistent/initramfs.cpio".into(),
            accel: Accel::Tcg,
        };
        let why = unavailable(&host, None, true).unwrap();
        assert!(why.contains("qemu-system-x86"), "{why}");
        let why = unavailable(&host, Some(Path::new("/usr/bin/qemu")), true).unwrap();
        assert!(
            why.contains("provider.microvm.kernel /nonexistent/vmlinuz"),
            "{why}"
        );
        let here = tempfile::TempDir::new().unwrap();
        let (k, i) = (here.path().join("k"), here.path().join("i"));
        fs::write(&k, b"").unwrap();
        fs::write(&i, b"").unwrap();
        let host = MicrovmHost {
            kernel: k,
            initramfs: i,
            accel: Accel::Tcg,
        };
        let why = unavailable(&host, Some(Path::new("/usr/bin/qemu")), false).unwrap();
        assert!(why.contains("provider.network = \"namespace\""), "{why}");
        assert_eq!(unavailable(&host, Some(Path::new("/q")), true), None);
    }
}

#[cfg(test)]
mod conformance_tests {
    use std::io::Write as _;
    use std::process::Command as StdCommand;

    use tempfile::TempDir;

    use super::*;
    use crate::provider::conformance::{self, Subject};

    /// The images and the accelerator that boots them here, as the
    /// end-to-end tests find them (ebb_tests::microvm); Err: why the suite
    /// cannot run.
    fn images() -> Result<MicrovmHost, String> {
        if let Some(why) = ebb_tests::microvm::missing() {
            return Err(why);
        }
        let found = ebb_tests::microvm::images();
        Ok(MicrovmHost {
            kernel: found.kernel.clone(),
            initramfs: found.initramfs.clone(),
            accel: if found.accel == "kvm" {
                Accel::Kvm
            } else {
                Accel::Tcg
            },
        })
    }

    struct Vms {
        tmp: TempDir,
        host: MicrovmHost,
        network: Arc<Network>,
        ca: ebb_certs::Ca,
    }

    impl Vms {
        fn base(&self) -> PathBuf {
            self.tmp.path().join("microvms")
        }
    }

    #[tonic::async_trait]
    impl Subject for Vms {
        async fn provider(&self) -> Arc<dyn Provider> {
            Arc::new(MicrovmProvider::new(
                self.base(),
                self.host.clone(),
                Some(self.network.clone()),
                Duration::from_secs(10),
                AgentHooks::default(),
            ))
        }
        fn request(&self, id: &str) -> LaunchRequest {
            // Real certificates: the agent is the VM's init, and one that
            // cannot load them exits, and the VM with it.
            let issued = self.ca.issue_agent(id, Duration::from_secs(3600)).unwrap();
            let mut r = conformance::request(id, "microvm");
            r.ca_pem = self.ca.cert_pem().to_owned();
            r.cert_pem = issued.cert_pem;
            r.key_pem = issued.key_pem;
            r.configuration.command = vec!["/bin/sleep".into(), "1000".into()];
            r
        }
        fn half_made(&self, id: &str) -> LaunchRequest {
            // Record, address and initrd are made, then the tap cannot be:
            // a link of its name is in the way. (QEMU refusing a size is
            // no test: it may open the tap, and the launch succeed, before
            // it fails to allocate the memory.)
            let tap = self.network.tap_name(id);
            let made = StdCommand::new("ip")
                .args(["link", "add", &tap, "type", "bridge"])
                .status()
                .expect("run ip");
            assert!(made.success(), "ip link add {tap} type bridge");
            self.request(id)
        }
        fn invalid(&self, id: &str) -> Option<LaunchRequest> {
            let mut r = self.request(id);
            r.configuration.command = vec!["/bin/a=b".into()];
            Some(r)
        }
        async fn kill(&self, id: &str) {
            let record = read_record(&self.base().join(id)).unwrap().unwrap();
            kill(Pid::from_raw(record.qemu.unwrap().pid), Signal::SIGKILL).unwrap();
        }
        async fn leftovers(&self, id: &str) -> Vec<String> {
            let dir = self.base().join(id);
            let mut left = Vec::new();
            if dir.exists() {
                left.push(format!("dir {}", dir.display()));
            }
            let tap = self.network.tap_name(id);
            if Path::new("/sys/class/net").join(&tap).exists() {
                left.push(format!("tap {tap}"));
            }
            let pidfile = dir.join(PIDFILE);
            for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let argv = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let running = read_stat(pid).is_some_and(|s| {
                    process_matches(ProcessRecord {
                        pid,
                        start_time: s.start_time,
                    })
                    .is_some()
                });
                if running
                    && argv
                        .split(|&b| b == 0)
                        .any(|a| a == pidfile.as_os_str().as_encoded_bytes())
                {
                    left.push(format!("QEMU {pid}"));
                }
            }
            left
        }
        fn has_addresses(&self) -> bool {
            true
        }
    }

    impl Drop for Vms {
        fn drop(&mut self) {
            for entry in fs::read_dir(self.base()).into_iter().flatten().flatten() {
                if let Ok(Some(VmRecord { qemu: Some(q), .. })) = read_record(&entry.path())
                    && process_matches(q).is_some()
                {
                    let _ = kill(Pid::from_raw(q.pid), Signal::SIGKILL);
                }
            }
            let ip = |args: &[&str]| StdCommand::new("ip").args(args).output();
            let out = ip(&["-o", "link", "show", "master", self.network.bridge()]);
            for line in out
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .lines()
            {
                if let Some(port) = line.split(": ").nth(1) {
                    let _ = ip(&["link", "del", port.split('@').next().unwrap_or(port)]);
                }
            }
            let _ = ip(&["link", "del", self.network.bridge()]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_microvm_provider_passes_the_conformance_suite() {
        const TEST: &str = "provider::microvm::conformance_tests::the_microvm_provider_passes_the_conformance_suite";
        let host = match images() {
            Ok(host) => host,
            Err(why) => {
                let _ = writeln!(std::io::stderr(), "\nNOT RUN: {TEST}: {why}");
                return;
            }
        };
        if host.accel == Accel::Tcg {
            let _ = writeln!(
                std::io::stderr(),
                "\nNOTE: {TEST}: KVM cannot boot a stock kernel here; the VMs run under TCG"
            );
        }
        let bridge = format!("ebv{}", std::process::id() % 1_000_000);
        let network = Arc::new(crate::provider::netns::test_network(&bridge, 24).await);
        let vms = Vms {
            tmp: TempDir::new().unwrap(),
            host,
            network,
            ca: ebb_certs::Ca::generate("ebb.local", Duration::from_secs(3600)).unwrap(),
        };
        conformance::run_all(&vms).await;
    }
}
