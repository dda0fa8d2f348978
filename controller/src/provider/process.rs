//! The process provider: each instance is a local process tree — the real
//! agent plus the configuration's workload, one process group — living in
//! `<base_dir>/<instance_id>/`.
//!
//! The directory is the whole truth. `instance.json`, written once the
//! processes run, names the group and each process by pid *and* start time,
//! so a provider started later (after a controller restart) describes and
//! releases the same instances, and a pid reused by a stranger is never
//! signalled. A directory without `instance.json` is a launch that died
//! half-way. The `Child` handles kept in memory only reap our own children.
//!
//! With a [`Network`] (`provider.network = "namespace"`), each instance also
//! gets a network namespace and an address of its own (see `netns`), named
//! in `network.json` before the namespace is made.

use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::sync::OwnedMutexGuard;
use tokio::time::{Instant, sleep};
use tracing::{debug, info, warn};

use super::agent_config;
pub use super::agent_config::AgentHooks;
use super::isolation::{self, INSTANCE_PATH, Users};
use super::netns::{self, Attachment, Network};
use super::{LaunchRequest, Launched, Provider, ProviderError, ProviderInstance, Result};
use ebb_core::model::ScalingConfiguration;

const PROC: &str = "/proc";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const RECORD: &str = "instance.json";
const AGENT_CONFIG: &str = "agent.toml";
/// A namespaced instance's namespace, veth and address (`netns::Attachment`).
const NETWORK: &str = "network.json";
/// The instance's own directory inside its dir: its certificates and key,
/// the working directory and HOME of its processes. With isolation on it
/// belongs to the instance's uid; the rest of the dir stays the
/// controller's, so an instance can neither rewrite its record nor its
/// agent's config.
const HOST_DIR: &str = "host";
/// Where an isolated instance's agent binary is linked, so that instance
/// users can run it wherever the controller's own copy lives.
const AGENT_LINK: &str = ".agent/ebb-agent";
/// Often enough that a release does not dawdle, rarely enough to cost nothing.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// SIGKILL cannot be ignored; longer than this means a process stuck in the kernel.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long a launch waits for its agent's command line to show (it takes
/// microseconds on an idle host; a very busy one can take far longer).
const EXEC_DEADLINE: Duration = Duration::from_secs(10);
/// How often a launch looks while it waits.
const EXEC_POLL: Duration = Duration::from_millis(2);
/// Instance ids become directory names; keep them short and plain.
const MAX_ID_LEN: usize = 128;

/// Runs each instance as a local process group under `base_dir`.
pub struct ProcessProvider {
    base_dir: PathBuf,
    agent_bin: PathBuf,
    release_timeout: Duration,
    /// The `[hooks]` written into every launched agent's config.
    hooks: AgentHooks,
    /// Serialises launch and release of one id; other ids proceed.
    locks: IdLocks,
    /// Ids whose launch is under way: their dir exists before `instance.json`
    /// does, and must not look like an interrupted launch meanwhile.
    launching: Mutex<HashSet<String>>,
    /// With isolation on, the uids instances run as.
    users: Option<Arc<Users>>,
    /// With `network = "namespace"`, the bridge instances get addresses on.
    network: Option<Arc<Network>>,
}

/// What `instance.json` holds: enough to find and verify the processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct InstanceRecord {
    instance_id: String,
    group_id: String,
    /// The process group: the agent's pid, as it leads the group.
    pgid: i32,
    /// The session the group belongs to (the launching controller's).
    session: i32,
    /// Start times count from boot; after a reboot they mean nothing.
    boot_id: Option<String>,
    agent: ProcessRecord,
    workload: Option<ProcessRecord>,
    agent_bin: PathBuf,
    started_at_ms: u64,
    /// The uid the instance runs as; none when isolation was off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
}

/// A pid plus its start time (clock ticks since boot), which a reused pid lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ProcessRecord {
    pub(super) pid: i32,
    pub(super) start_time: u64,
}

impl ProcessProvider {
    /// `base_dir` is `<data_dir>/instances`; `agent_bin` the `ebb-agent` to run.
    pub fn new(base_dir: PathBuf, agent_bin: PathBuf, release_timeout: Duration) -> Self {
        Self::with_hooks(base_dir, agent_bin, release_timeout, AgentHooks::default())
    }

    /// As `new`, with the `[hooks]` every launched agent is given.
    pub fn with_hooks(
        base_dir: PathBuf,
        agent_bin: PathBuf,
        release_timeout: Duration,
        hooks: AgentHooks,
    ) -> Self {
        // Liveness compares the agent's argv with `<dir>/agent.toml`, so the
        // path must not depend on the cwd of whichever controller asks.
        let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
        Self {
            base_dir,
            agent_bin,
            release_timeout,
            hooks,
            locks: IdLocks::default(),
            launching: Mutex::new(HashSet::new()),
            users: None,
            network: None,
        }
    }

    /// Runs each instance in a network namespace of its own on `network`'s
    /// bridge. The addresses of the instances already on disk (a
    /// restart's) are noted now, once, as `isolated` does with uids.
    pub fn namespaced(mut self, network: Arc<Network>) -> Self {
        for entry in fs::read_dir(&self.base_dir).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            match netns::read_attachment(&entry.path().join(NETWORK)) {
                Ok(Some(at)) => network.addresses.note(&id, at.address),
                Ok(None) => {}
                Err(e) => warn!(instance = %id, "{e}"),
            }
        }
        self.network = Some(network);
        self
    }

    /// Gives the instance in `dir` its address and namespace, recorded in
    /// `network.json` first so that a release (after a restart too) finds
    /// and undoes whatever of it was made.
    async fn attach(&self, network: &Network, id: &str, dir: &Path) -> Result<Attachment, String> {
        let address = network.addresses.take(id).map_err(|e| e.to_string())?;
        let (netns, veth) = network.names(id);
        let at = Attachment {
            netns,
            veth,
            address,
        };
        let json =
            serde_json::to_vec_pretty(&at).map_err(|e| format!("cannot render {NETWORK}: {e}"))?;
        ebb_certs::write_atomic(&dir.join(NETWORK), &json, 0o644)
            .map_err(|e| format!("cannot write {NETWORK}: {e}"))?;
        network.create(&at).await?;
        Ok(at)
    }

    /// Undoes `attach` for the instance in `dir`: what its `network.json`
    /// names, else the names its id gives on our bridge; then frees its address.
    async fn detach(&self, id: &str, dir: &Path) -> Result<(), String> {
        let recorded = netns::read_attachment(&dir.join(NETWORK)).unwrap_or_else(|e| {
            warn!(instance = id, "{e}");
            None
        });
        let Some(network) = &self.network else {
            if let Some(at) = recorded {
                warn!(
                    instance = id,
                    "namespace {} is left behind: provider.network is not \"namespace\" any more; remove it with `ip netns del {}`",
                    at.netns,
                    at.netns
                );
            }
            return Ok(());
        };
        let (netns, veth) = match recorded {
            Some(at) => (at.netns, at.veth),
            None => network.names(id),
        };
        network.delete(&netns, &veth).await?;
        network.addresses.free(id);
        Ok(())
    }

    /// Removes this bridge's namespaces that no instance dir claims (left
    /// by a crash between a namespace's making and its record, or by an
    /// instance dir removed by hand).
    async fn remove_orphan_namespaces(&self) {
        let Some(network) = &self.network else {
            return;
        };
        for id in network.namespaces() {
            let launching = self
                .launching
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&id);
            if launching || check_id(&id).is_err() || self.instance_dir(&id).exists() {
                continue;
            }
            let (netns, veth) = network.names(&id);
            match network.delete(&netns, &veth).await {
                Ok(()) => info!(instance = %id, %netns, "removed an orphaned namespace"),
                Err(e) => warn!(instance = %id, "cannot remove orphaned namespace {netns}: {e}"),
            }
        }
    }

    /// Runs each instance as a uid of its own (see `isolation`). The uids
    /// of the instances already on disk (a restart's) are noted now, once:
    /// from then on launches and releases keep the tally.
    pub fn isolated(mut self, users: Users) -> Self {
        self.note_uids(&users);
        self.users = Some(Arc::new(users));
        self
    }

    /// The agent binary instance users can run: with isolation, a hard link
    /// (or, across file systems or when the original is not executable by
    /// others, a copy) inside the base dir, refreshed on every launch so an
    /// upgraded agent is used from then on. Staged under the launching id's
    /// name, which its lock makes unique among concurrent launches.
    fn agent_program(&self, id: &str) -> Result<PathBuf, String> {
        if self.users.is_none() {
            return Ok(self.agent_bin.clone());
        }
        let link = self.base_dir.join(AGENT_LINK);
        let dir = link.parent().expect("AGENT_LINK has a parent");
        DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let staged = dir.join(format!(".ebb-agent.{id}"));
        let _ = fs::remove_file(&staged);
        // A link shares the original's mode, which is not ours to change.
        let linked = fs::hard_link(&self.agent_bin, &staged).is_ok()
            && fs::metadata(&staged).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
        if !linked {
            let _ = fs::remove_file(&staged);
            fs::copy(&self.agent_bin, &staged)
                .and_then(|_| fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)))
                .map_err(|e| {
                    format!(
                        "cannot copy {} to {}: {e}",
                        self.agent_bin.display(),
                        staged.display()
                    )
                })?;
        }
        fs::rename(&staged, &link)
            .map_err(|e| format!("cannot install {}: {e}", link.display()))?;
        Ok(link)
    }

    /// The programs put in front of an instance's own (see `recognisable`).
    fn wrappers(&self) -> Vec<PathBuf> {
        let nsenter = self.network.as_ref().map(|n| n.nsenter().to_owned());
        let setpriv = self.users.as_ref().map(|u| u.setpriv().to_owned());
        nsenter.into_iter().chain(setpriv).collect()
    }

    /// Notes the uids of the instances on disk, so a launch never reuses a
    /// live instance's uid.
    fn note_uids(&self, users: &Users) {
        let Ok(entries) = fs::read_dir(&self.base_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Ok(Some(InstanceRecord { uid: Some(uid), .. })) = read_record(&entry.path()) {
                users.note(&id, uid);
            }
        }
    }

    /// A command for `program` as the instance's uid (or as ours), with a
    /// clean environment: nothing of the controller's is inherited.
    /// In `netns` when given (nsenter and setpriv both exec in place, so
    /// the pid is the program's).
    fn command(
        &self,
        uid: Option<u32>,
        program: impl AsRef<std::ffi::OsStr>,
        host: &Path,
        net: Option<&Attachment>,
    ) -> Command {
        let mut argv = match (&self.network, net) {
            (Some(network), Some(at)) => network.enter(&at.netns),
            _ => Vec::new(),
        };
        match (&self.users, uid) {
            (Some(users), Some(uid)) => argv.extend(users.argv(uid, program)),
            _ => argv.push(program.as_ref().to_owned()),
        }
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
            .env_clear()
            .env("PATH", INSTANCE_PATH)
            .env("HOME", host)
            .env("LANG", "C.UTF-8")
            .current_dir(host);
        command
    }

    fn instance_dir(&self, id: &str) -> PathBuf {
        self.base_dir.join(id)
    }

    /// Creates the instance's files and starts its processes, pushing each
    /// started child onto `children` so a failure can stop them.
    fn start(
        &self,
        req: &LaunchRequest,
        dir: &Path,
        net: Option<&Attachment>,
        children: &mut Vec<Child>,
    ) -> Result<(), String> {
        let write = |name: &str, data: &[u8], mode: u32| {
            ebb_certs::write_atomic(&dir.join(name), data, mode)
                .map_err(|e| format!("cannot write {name}: {e}"))
        };
        let host = dir.join(HOST_DIR);
        DirBuilder::new()
            .mode(0o700)
            .create(&host)
            .map_err(|e| format!("cannot create {}: {e}", host.display()))?;
        let secrets = [
            ("ca.crt", &req.ca_pem),
            ("agent.crt", &req.cert_pem),
            ("agent.key", &req.key_pem),
        ];
        for (name, pem) in secrets {
            write(&format!("{HOST_DIR}/{name}"), pem.as_bytes(), 0o600)?;
        }
        let uid = match &self.users {
            Some(users) => {
                let uid = users.take(&req.instance_id)?;
                for (name, _) in secrets {
                    isolation::give(&host.join(name), uid)?;
                }
                isolation::give(&host, uid)?;
                Some(uid)
            }
            None => None,
        };
        // A namespace's loopback is its own: its agent dials the bridge's
        // address, and still verifies the name the controller's
        // certificate carries.
        let (controller, server_name) = match (&self.network, net) {
            (Some(network), Some(_)) => via_bridge(&req.controller, &req.server_name, network),
            _ => (req.controller.clone(), req.server_name.clone()),
        };
        let config = agent_config::render(
            &req.configuration,
            &controller,
            &server_name,
            &agent_config::Tls::in_dir("host"),
            &self.hooks,
        )?;
        // Readable by the instance (it holds no secret), writable by us alone.
        write(AGENT_CONFIG, config.as_bytes(), 0o644)?;

        let (stdout, stderr) = open_log(&dir.join("agent.log"))?;
        let agent_bin = self.agent_program(&req.instance_id)?;
        let mut agent = self.command(uid, &agent_bin, &host, net);
        agent
            .arg("--config")
            .arg(dir.join(AGENT_CONFIG))
            .env("EBB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let child = agent
            .spawn()
            .map_err(|e| format!("cannot start the agent {}: {e}", agent_bin.display()))?;
        let (agent, agent_stat) = own_child(child, children, "the agent")?;

        let mut workload = None;
        if let Some((program, args)) = req.configuration.command.split_first() {
            let (stdout, stderr) = open_log(&dir.join("workload.log"))?;
            // The workload inherits nothing of the controller's environment:
            // a standard PATH, HOME in its host dir, the configuration's
            // variables and ours.
            let mut command = self.command(uid, program, &host, net);
            if let Some(at) = net {
                command.env("EBB_INSTANCE_ADDRESS", at.address.to_string());
            }
            command
                .args(args)
                .envs(&req.configuration.env)
                .env("EBB_INSTANCE_ID", &req.instance_id)
                .env("EBB_GROUP_ID", &req.group_id)
                .env("EBB_INSTANCE_DIR", &host)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .process_group(agent.pid);
            let child = command
                .spawn()
                .map_err(|e| format!("cannot start the workload `{program}`: {e}"))?;
            workload = Some(own_child(child, children, "the workload")?.0);
        }

        let record = InstanceRecord {
            instance_id: req.instance_id.clone(),
            group_id: req.group_id.clone(),
            pgid: agent.pid,
            session: agent_stat.session,
            boot_id: boot_id(),
            agent,
            workload,
            agent_bin,
            started_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            uid,
        };
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| format!("cannot render {RECORD}: {e}"))?;
        write(RECORD, &json, 0o600)
    }

    /// Whether the instance in `dir` runs: its agent, and its workload if it
    /// has one. A workload that died while the agent lives makes the instance
    /// dead too: the agent would keep reporting a host doing nothing, and
    /// only a replacement brings the workload back. An instance still being
    /// launched counts as alive.
    fn is_alive(&self, id: &str, dir: &Path) -> bool {
        self.launching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
            || recorded_alive(id, dir)
    }

    /// The processes a release targets: the recorded ones, else (an
    /// interrupted launch) the agents found by their command line.
    fn targets(&self, id: &str, dir: &Path) -> Targets {
        match read_record(dir) {
            Ok(Some(record)) => record_targets(&record, dir),
            Ok(None) => agents_by_cmdline(dir),
            Err(e) => {
                warn!(instance = id, "{e}; looking for its agent by command line");
                agents_by_cmdline(dir)
            }
        }
    }

    async fn stop(&self, id: &str, targets: &Targets) -> Result<()> {
        let error = |message| ProviderError::Release {
            instance: id.to_owned(),
            message,
        };
        if targets.is_empty() {
            return Ok(());
        }
        targets.signal(Signal::SIGTERM).map_err(error)?;
        // A stopped (SIGSTOP) process only acts on SIGTERM once continued.
        let _ = targets.signal(Signal::SIGCONT);
        if wait_gone(targets, self.release_timeout).await {
            return Ok(());
        }
        warn!(
            instance = id,
            "still running {:?} after SIGTERM; sending SIGKILL", self.release_timeout
        );
        targets.signal(Signal::SIGKILL).map_err(error)?;
        if wait_gone(targets, KILL_GRACE).await {
            return Ok(());
        }
        Err(error(format!(
            "processes of group(s) {:?} survived SIGKILL for {KILL_GRACE:?}",
            targets.groups
        )))
    }
}

#[tonic::async_trait]
impl Provider for ProcessProvider {
    fn name(&self) -> &'static str {
        "process"
    }

    /// The model refuses these too; a provider asked directly must as well.
    fn check(&self, configuration: &ScalingConfiguration) -> Result<()> {
        if configuration.command.first().is_some_and(|p| p.is_empty()) {
            return Err(ProviderError::Invalid(
                "command[0]: must name a program (the process provider runs it)".to_owned(),
            ));
        }
        Ok(())
    }

    async fn launch(&self, req: LaunchRequest) -> Result<Launched> {
        self.check(&req.configuration)?;
        let id = req.instance_id.clone();
        let fail = |message| ProviderError::Launch {
            instance: id.clone(),
            message,
        };
        check_id(&id).map_err(fail)?;
        let _lock = self.locks.lock(&id).await;
        let dir = self.instance_dir(&id);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.base_dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", self.base_dir.display())))?;
        // Under the id's lock, nothing else is launching it: a dir that
        // exists is a running or a leftover instance, never to be doubled.
        let _launching = Launching::enter(&self.launching, &id);
        if self.users.is_some() {
            // Instance users must reach their own dirs under ours.
            fs::set_permissions(&self.base_dir, fs::Permissions::from_mode(0o711))
                .map_err(|e| fail(format!("cannot open up {}: {e}", self.base_dir.display())))?;
            if let Some((path, mode)) = isolation::untraversable(&self.base_dir) {
                return Err(fail(format!(
                    "instance users cannot reach {}: {} has mode {mode:04o}; give it o+x (chmod o+x) or move the data dir",
                    self.base_dir.display(),
                    path.display()
                )));
            }
        }
        let dir_mode = if self.users.is_some() { 0o711 } else { 0o700 };
        if let Err(e) = DirBuilder::new().mode(dir_mode).create(&dir) {
            return Err(fail(if e.kind() != ErrorKind::AlreadyExists {
                format!("cannot create {}: {e}", dir.display())
            } else if recorded_alive(&id, &dir) {
                "it is already running".to_owned()
            } else {
                format!(
                    "{} is left from an earlier launch; release it first",
                    dir.display()
                )
            }));
        }
        let mut children = Vec::new();
        let net = match &self.network {
            Some(network) => self.attach(network, &id, &dir).await.map(Some),
            None => Ok(None),
        };
        let started = match net {
            Ok(net) => match self.start(&req, &dir, net.as_ref(), &mut children) {
                Ok(()) => recognisable(&dir, &self.wrappers())
                    .await
                    .map(|()| net.map(|n| n.address.to_string())),
                Err(message) => Err(message),
            },
            Err(message) => Err(message),
        };
        match started {
            Ok(address) => {
                let pids: Vec<_> = children.iter().filter_map(Child::id).collect();
                info!(instance = %id, ?pids, dir = %dir.display(), "launched");
                for child in children {
                    tokio::spawn(reap(id.clone(), child));
                }
                Ok(Launched {
                    provider_id: dir.display().to_string(),
                    address,
                })
            }
            Err(message) => {
                abort(children).await;
                if let Some(users) = &self.users {
                    users.free(&id);
                }
                if let Err(e) = self.detach(&id, &dir).await {
                    warn!(instance = %id, "cannot undo the failed launch's network: {e}");
                }
                if let Err(e) = fs::remove_dir_all(&dir) {
                    warn!(instance = %id, "cannot remove {} after a failed launch: {e}", dir.display());
                }
                Err(fail(message))
            }
        }
    }

    async fn release(&self, instance_id: &str) -> Result<()> {
        check_id(instance_id).map_err(|message| ProviderError::Release {
            instance: instance_id.to_owned(),
            message,
        })?;
        let _lock = self.locks.lock(instance_id).await;
        let dir = self.instance_dir(instance_id);
        if !dir.exists() {
            return Ok(());
        }
        let targets = self.targets(instance_id, &dir);
        self.stop(instance_id, &targets).await?;
        // Before the dir, which names what to remove.
        self.detach(instance_id, &dir)
            .await
            .map_err(|message| ProviderError::Release {
                instance: instance_id.to_owned(),
                message,
            })?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ProviderError::Release {
                    instance: instance_id.to_owned(),
                    message: format!("cannot remove {}: {e}", dir.display()),
                });
            }
        }
        if let Some(users) = &self.users {
            users.free(instance_id);
        }
        info!(instance = instance_id, "released");
        Ok(())
    }

    async fn describe(&self) -> Result<Vec<ProviderInstance>> {
        self.remove_orphan_namespaces().await;
        let mut instances = Vec::new();
        for (id, path) in instance_dirs(&self.base_dir)? {
            let alive = self.is_alive(&id, &path);
            let address = netns::read_attachment(&path.join(NETWORK))
                .ok()
                .flatten()
                .map(|a| a.address.to_string());
            instances.push(ProviderInstance {
                instance_id: id,
                alive,
                provider_id: Some(path.display().to_string()),
                address,
            });
        }
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(instances)
    }
}

/// Waits until the instance just started in `dir` is recognisably alive
/// (`recorded_alive`). `spawn` returns as soon as the child is inside
/// `execve`, a moment before its new command line shows in /proc; on a busy
/// host that moment is long enough for a `describe` to judge the instance
/// dead and a release to miss its agent. While this waits, the launch is
/// still under way, and `describe` counts it alive.
///
/// It also waits until the agent and the workload run their own programs,
/// not one of the `wrappers` (nsenter, setpriv) that exec them: a program
/// that cannot be started is then a process that exited, found now.
async fn recognisable(dir: &Path, wrappers: &[PathBuf]) -> std::result::Result<(), String> {
    let deadline = tokio::time::Instant::now() + EXEC_DEADLINE;
    // Runs a program of its own: a command line, and not a wrapper's. An
    // empty one is a process on its way out (its memory already gone while
    // its state still reads running), never yet a success.
    let own = |pid: i32| {
        fs::read(format!("{PROC}/{pid}/cmdline")).is_ok_and(|argv| {
            let first = argv.split(|&b| b == 0).next().unwrap_or_default();
            !first.is_empty() && !wrappers.iter().any(|w| w.as_os_str().as_bytes() == first)
        })
    };
    loop {
        let record = read_record(dir)?.ok_or("no instance record after the launch")?;
        if agent_matches(&record, dir)
            && own(record.agent.pid)
            && record
                .workload
                .is_none_or(|w| process_matches(w).is_some() && own(w.pid))
        {
            return Ok(());
        }
        if process_matches(record.agent).is_none() {
            return Err("the agent exited at once; see agent.log".into());
        }
        // Behind nsenter or setpriv, a workload that cannot be started is
        // a process that exits at once, saying why in its log.
        if record
            .workload
            .is_some_and(|w| process_matches(w).is_none())
        {
            let log = fs::read_to_string(dir.join("workload.log")).unwrap_or_default();
            let why = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(format!("the workload exited at once: {why}"));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the agent and workload did not show their command lines within {EXEC_DEADLINE:?}"
            ));
        }
        tokio::time::sleep(EXEC_POLL).await;
    }
}

/// The controller address and server name for an agent in a namespace:
/// the bridge's address with the controller's port, and the name TLS
/// verifies (the original host when no name was given).
pub(super) fn via_bridge(
    controller: &str,
    server_name: &str,
    network: &Network,
) -> (String, String) {
    let (host, port) = controller.rsplit_once(':').unwrap_or((controller, "7440"));
    let server_name = if server_name.is_empty() {
        host.trim_start_matches('[').trim_end_matches(']')
    } else {
        server_name
    };
    (
        format!("{}:{port}", network.gateway()),
        server_name.to_owned(),
    )
}

/// Whether the processes `instance.json` names run (see `is_alive`).
fn recorded_alive(id: &str, dir: &Path) -> bool {
    let record = match read_record(dir) {
        Ok(Some(record)) => record,
        Ok(None) => return false,
        Err(e) => {
            warn!(instance = id, "{e}");
            return false;
        }
    };
    same_boot(&record)
        && agent_matches(&record, dir)
        && record.workload.is_none_or(|w| process_matches(w).is_some())
}

/// Ids name directories: no separators, no `.`/`..`, nothing exotic.
/// The instance dirs under `base` (named by a valid id), as (id, path);
/// none when `base` does not exist yet.
pub(super) fn instance_dirs(base: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(base) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ProviderError::Other(format!(
                "cannot list {}: {e}",
                base.display()
            )));
        }
    };
    Ok(entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| {
            let id = entry.file_name().into_string().ok()?;
            check_id(&id).is_ok().then(|| (id, entry.path()))
        })
        .collect())
}

pub(super) fn check_id(id: &str) -> Result<(), String> {
    let plain = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    // A leading '.' is the provider's own (`.agent`), never an instance's.
    if id.is_empty() || id.len() > MAX_ID_LEN || id.starts_with('.') || !plain {
        return Err(format!(
            "`{id}` is not a valid instance id (1 to {MAX_ID_LEN} of A-Z a-z 0-9 - _ .)"
        ));
    }
    Ok(())
}

/// Two handles on one append-only log, for stdout and stderr.
fn open_log(path: &Path) -> Result<(File, File), String> {
    let error = |e| format!("cannot open {}: {e}", path.display());
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    let copy = file.try_clone().map_err(error)?;
    Ok((file, copy))
}

/// Keeps a just spawned child and notes who it is. Its stat is readable even
/// if it already exited: nothing reaps it before `reap` runs.
fn own_child(
    child: Child,
    children: &mut Vec<Child>,
    what: &str,
) -> Result<(ProcessRecord, ProcStat), String> {
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    children.push(child);
    let pid = pid.ok_or_else(|| format!("{what} exited at once"))?;
    let stat = read_stat(pid).ok_or_else(|| format!("{what} (pid {pid}) exited at once"))?;
    let process = ProcessRecord {
        pid,
        start_time: stat.start_time,
    };
    Ok((process, stat))
}

/// Waits for one of our children so it never lingers as a zombie.
async fn reap(id: String, mut child: Child) {
    let pid = child.id();
    match child.wait().await {
        Ok(status) => debug!(instance = %id, ?pid, %status, "process exited"),
        Err(e) => warn!(instance = %id, ?pid, "cannot wait for process: {e}"),
    }
}

/// Stops what a failed launch started. They are our unreaped children, so
/// their pids cannot have been reused: no ownership check is needed.
async fn abort(children: Vec<Child>) {
    if let Some(pgid) = children.first().and_then(Child::id) {
        let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
    }
    for mut child in children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

fn read_record(dir: &Path) -> Result<Option<InstanceRecord>, String> {
    let path = dir.join(RECORD);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The fields of `/proc/<pid>/stat` the provider needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcStat {
    state: char,
    pgrp: i32,
    session: i32,
    pub(super) start_time: u64,
}

impl ProcStat {
    /// Zombies (`Z`) and dying tasks (`X`) run nothing.
    fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

pub(super) fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("{PROC}/{pid}/stat")).ok()?)
}

/// Parses a stat line; the command name may hold spaces and parentheses, so
/// fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub(super) fn boot_id() -> Option<String> {
    fs::read_to_string(BOOT_ID)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// After a reboot every process of the record is gone, whatever now holds its pids.
fn same_boot(record: &InstanceRecord) -> bool {
    match (&record.boot_id, boot_id()) {
        (Some(then), Some(now)) => *then == now,
        _ => true,
    }
}

/// The process, if it still runs and is the one recorded (same start time).
pub(super) fn process_matches(process: ProcessRecord) -> Option<ProcStat> {
    read_stat(process.pid).filter(|s| s.running() && s.start_time == process.start_time)
}

/// Whether `pid`'s argv holds `<dir>/agent.toml`, i.e. it is this instance's agent.
fn runs_agent_of(pid: i32, dir: &Path) -> bool {
    let config = dir.join(AGENT_CONFIG);
    fs::read(format!("{PROC}/{pid}/cmdline")).is_ok_and(|argv| {
        argv.split(|&b| b == 0)
            .any(|arg| arg == config.as_os_str().as_bytes())
    })
}

fn agent_matches(record: &InstanceRecord, dir: &Path) -> bool {
    process_matches(record.agent).is_some() && runs_agent_of(record.agent.pid, dir)
}

/// Every pid in `/proc`, with its stat.
fn processes() -> Vec<(i32, ProcStat)> {
    let Ok(entries) = fs::read_dir(PROC) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect()
}

/// Process groups and single processes to signal, already checked to be ours.
#[derive(Debug, Default)]
struct Targets {
    groups: Vec<i32>,
    pids: Vec<ProcessRecord>,
}

impl Targets {
    fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.pids.is_empty()
    }

    fn signal(&self, signal: Signal) -> Result<(), String> {
        let sent = |result: nix::Result<()>, what: String| match result {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(format!("cannot send {signal} to {what}: {e}")),
        };
        for &pgid in &self.groups {
            sent(
                killpg(Pid::from_raw(pgid), signal),
                format!("process group {pgid}"),
            )?;
        }
        for &process in &self.pids {
            if process_matches(process).is_some() {
                sent(
                    kill(Pid::from_raw(process.pid), signal),
                    format!("pid {}", process.pid),
                )?;
            }
        }
        Ok(())
    }

    /// Whether nothing of the targets runs any more (zombies count as gone).
    fn gone(&self) -> bool {
        let groups_empty = self.groups.is_empty()
            || !processes()
                .iter()
                .any(|(_, s)| s.running() && self.groups.contains(&s.pgrp));
        groups_empty && self.pids.iter().all(|&p| process_matches(p).is_none())
    }
}

async fn wait_gone(targets: &Targets, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if targets.gone() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL_INTERVAL).await;
    }
}

/// What of a recorded instance may be signalled: its group if
/// `group_is_ours`, and the workload by pid in case it left the group.
fn record_targets(record: &InstanceRecord, dir: &Path) -> Targets {
    let mut targets = Targets::default();
    if !same_boot(record) {
        return targets;
    }
    if group_is_ours(record, dir) {
        targets.groups.push(record.pgid);
    }
    // The workload by pid too, whatever its group: it is ours while its
    // start time matches, and a release must never leave it behind.
    if let Some(workload) = record.workload.filter(|&w| process_matches(w).is_some()) {
        targets.pids.push(workload);
    }
    targets
}

/// Whether the process group `record.pgid` is still the one the launch made.
/// A pid is not handed out again while a group of that number has members.
fn group_is_ours(record: &InstanceRecord, dir: &Path) -> bool {
    let leader = record.agent.pid;
    match read_stat(leader) {
        // The leader's pid is taken (maybe by its zombie): the group is ours
        // only if the taker is our agent, else the number was reused after
        // our group emptied.
        Some(s) => {
            s.start_time == record.agent.start_time && (!s.running() || runs_agent_of(leader, dir))
        }
        // The leader is gone, members may survive (the workload, a health
        // check's child). Members of the launch's session are taken as ours:
        // a stranger would need a group that reused the number and already
        // lost its own leader.
        None => processes()
            .iter()
            .any(|(_, s)| s.running() && s.pgrp == record.pgid && s.session == record.session),
    }
}

/// For a launch that died before writing `instance.json`: the groups led by
/// processes whose argv names this instance's `agent.toml`. A workload whose
/// agent died too cannot be told from a stranger and is left alone.
fn agents_by_cmdline(dir: &Path) -> Targets {
    let groups = processes()
        .into_iter()
        .filter(|(pid, s)| s.running() && s.pgrp == *pid && runs_agent_of(*pid, dir))
        .map(|(pid, _)| pid)
        .collect();
    Targets {
        groups,
        pids: Vec::new(),
    }
}

/// One async mutex per instance id, dropped once nobody holds or awaits it.
#[derive(Default)]
pub(super) struct IdLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

pub(super) struct IdGuard<'a> {
    locks: &'a IdLocks,
    id: String,
    _guard: OwnedMutexGuard<()>,
}

impl IdLocks {
    pub(super) async fn lock(&self, id: &str) -> IdGuard<'_> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(id.to_owned()).or_default().clone()
        };
        IdGuard {
            locks: self,
            id: id.to_owned(),
            _guard: lock.lock_owned().await,
        }
    }
}

impl Drop for IdGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.0.lock().unwrap_or_else(|e| e.into_inner());
        // Two references: the map's and our guard's; any waiter holds a third.
        if map.get(&self.id).is_some_and(|l| Arc::strong_count(l) == 2) {
            map.remove(&self.id);
        }
    }
}

/// Marks an id as launching for as long as it lives.
pub(super) struct Launching<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl<'a> Launching<'a> {
    pub(super) fn enter(set: &'a Mutex<HashSet<String>>, id: &str) -> Self {
        set.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned());
        Self {
            set,
            id: id.to_owned(),
        }
    }
}

impl Drop for Launching<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use tempfile::TempDir;

    use super::*;
    use ebb_core::model::MetricSource;

    const PATIENCE: Duration = Duration::from_secs(10);

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// A provider over a temp dir, whose drop kills whatever its tests started.
    struct Env {
        tmp: TempDir,
        provider: ProcessProvider,
        agent_bin: PathBuf,
    }

    impl Env {
        fn new(agent: &str, release_timeout: Duration) -> Self {
            let tmp = TempDir::new().unwrap();
            let agent_bin = fixture(agent);
            let provider = ProcessProvider::new(
                tmp.path().join("instances"),
                agent_bin.clone(),
                release_timeout,
            );
            Self {
                tmp,
                provider,
                agent_bin,
            }
        }

        fn plain() -> Self {
            Self::new("fake-agent.sh", PATIENCE)
        }

        /// A second provider on the same dir: the controller after a restart.
        fn restarted(&self) -> ProcessProvider {
            ProcessProvider::new(self.base(), self.agent_bin.clone(), PATIENCE)
        }

        fn base(&self) -> PathBuf {
            self.tmp.path().join("instances")
        }

        fn dir(&self, id: &str) -> PathBuf {
            self.base().join(id)
        }

        fn record(&self, id: &str) -> InstanceRecord {
            read_record(&self.dir(id)).unwrap().expect("instance.json")
        }

        async fn alive(&self, id: &str) -> Option<bool> {
            let all = self.provider.describe().await.unwrap();
            all.into_iter()
                .find(|i| i.instance_id == id)
                .map(|i| i.alive)
        }
    }

    impl Drop for Env {
        fn drop(&mut self) {
            let needle = self.tmp.path().as_os_str().as_bytes();
            for (pid, stat) in processes() {
                let ours = fs::read(format!("{PROC}/{pid}/cmdline"))
                    .is_ok_and(|argv| argv.windows(needle.len()).any(|w| w == needle));
                if ours && stat.pgrp == pid {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            for entry in fs::read_dir(self.base()).into_iter().flatten().flatten() {
                if let Ok(Some(record)) = read_record(&entry.path())
                    && group_is_ours(&record, &entry.path())
                {
                    let _ = killpg(Pid::from_raw(record.pgid), Signal::SIGKILL);
                }
            }
        }
    }

    fn request(id: &str, command: &[&str]) -> LaunchRequest {
        let mut r = crate::provider::conformance::request(id, "");
        r.group_id = "g-1".to_owned();
        r.configuration.id = "c-1".to_owned();
        r.configuration.group_id = "g-1".to_owned();
        r.configuration.name = "web".to_owned();
        r.configuration.command = command.iter().map(|s| s.to_string()).collect();
        r.configuration.env = BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]);
        r
    }

    async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Gone from /proc: exited *and* reaped, no zombie left.
    fn vanished(pid: i32) -> bool {
        !Path::new(&format!("{PROC}/{pid}")).exists()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn launch_writes_private_certs_and_an_agent_config() {
        let env = Env::plain();
        env.provider.launch(request("i-1", &[])).await.unwrap();
        let dir = env.dir("i-1");
        assert_eq!(mode(&dir), 0o700);
        for (name, content) in [
            ("ca.crt", "CA PEM"),
            ("agent.crt", "CERT PEM"),
            ("agent.key", "KEY PEM"),
        ] {
            let path = dir.join(HOST_DIR).join(name);
            assert_eq!(fs::read_to_string(&path).unwrap(), content, "{name}");
            assert_eq!(mode(&path), 0o600, "{name}");
        }
        assert_eq!(mode(&dir.join(HOST_DIR)), 0o700);
        assert!(dir.join("agent.log").exists());
        // The agent may read its config, not change it.
        assert_eq!(mode(&dir.join(AGENT_CONFIG)), 0o644);

        // The keys and shapes ebb-agent's `Config` (deny_unknown_fields) takes.
        let config: toml::Table =
            toml::from_str(&fs::read_to_string(dir.join("agent.toml")).unwrap()).unwrap();
        let keys: Vec<_> = config.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["controller", "hooks", "reconnect", "server_name", "tls"]
        );
        // No hook scripts unless the controller's config allows them.
        let hooks = config["hooks"].as_table().unwrap();
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks["allow_scripts"].as_bool(), Some(false));
        assert_eq!(config["controller"].as_str(), Some("127.0.0.1:7440"));
        assert_eq!(config["server_name"].as_str(), Some("ebb-controller"));
        let tls = config["tls"].as_table().unwrap();
        assert_eq!(tls.len(), 3);
        assert_eq!(tls["ca"].as_str(), Some("host/ca.crt"));
        assert_eq!(tls["cert"].as_str(), Some("host/agent.crt"));
        assert_eq!(tls["key"].as_str(), Some("host/agent.key"));
        let reconnect = config["reconnect"].as_table().unwrap();
        assert_eq!(reconnect.len(), 1);
        assert_eq!(reconnect["max_backoff_ms"].as_integer(), Some(2_000));

        let record = env.record("i-1");
        assert_eq!(
            (record.instance_id.as_str(), record.group_id.as_str()),
            ("i-1", "g-1")
        );
        assert_eq!(record.pgid, record.agent.pid);
        assert_eq!(record.workload, None);
        assert_eq!(record.agent_bin, env.agent_bin);
        let argv = fs::read(format!("{PROC}/{}/cmdline", record.agent.pid)).unwrap();
        let argv: Vec<&[u8]> = argv.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
        assert_eq!(
            argv[argv.len() - 2..],
            [
                b"--config".as_slice(),
                dir.join("agent.toml").as_os_str().as_bytes()
            ]
        );

        // No server name: the agent derives it from `controller`.
        let mut bare = request("i-2", &[]);
        bare.server_name.clear();
        env.provider.launch(bare).await.unwrap();
        let config: toml::Table =
            toml::from_str(&fs::read_to_string(env.dir("i-2").join("agent.toml")).unwrap())
                .unwrap();
        assert!(!config.contains_key("server_name"));

        env.provider.release("i-1").await.unwrap();
        env.provider.release("i-2").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn launch_writes_metric_sources_as_metric_tables() {
        use ebb_core::model::PrometheusSource;
        let env = Env::plain();
        let mut req = request("i-1", &[]);
        req.configuration.metrics = vec![
            MetricSource {
                name: "rps".into(),
                prometheus: Some(PrometheusSource {
                    url: "http://127.0.0.1:9100/metrics".into(),
                    metric: "http_requests_total".into(),
                    labels: [("path".to_owned(), "/a \"b\"\n".to_owned())].into(),
                }),
                file: None,
                command: None,
                timeout_ms: Some(750),
            },
            MetricSource {
                name: "depth".into(),
                prometheus: None,
                file: Some("/tmp/queue depth ü\"s".into()),
                command: None,
                timeout_ms: None,
            },
            MetricSource {
                name: "sessions".into(),
                prometheus: None,
                file: None,
                command: Some(vec!["sh".into(), "-c".into(), "echo 'it''s' \"3\"".into()]),
                timeout_ms: None,
            },
        ];
        env.provider.launch(req).await.unwrap();
        let text = fs::read_to_string(env.dir("i-1").join("agent.toml")).unwrap();
        let config: toml::Table = toml::from_str(&text).unwrap();
        let metrics = config["metric"].as_array().unwrap();
        assert_eq!(metrics.len(), 3, "{text}");
        let rps = metrics[0].as_table().unwrap();
        let keys: Vec<_> = rps.keys().map(String::as_str).collect();
        assert_eq!(keys, ["name", "prometheus", "timeout_ms"], "{text}");
        assert_eq!(rps["timeout_ms"].as_integer(), Some(750));
        let p = rps["prometheus"].as_table().unwrap();
        assert_eq!(p["url"].as_str(), Some("http://127.0.0.1:9100/metrics"));
        assert_eq!(p["metric"].as_str(), Some("http_requests_total"));
        assert_eq!(p["labels"]["path"].as_str(), Some("/a \"b\"\n"));
        let depth = metrics[1].as_table().unwrap();
        let keys: Vec<_> = depth.keys().map(String::as_str).collect();
        assert_eq!(keys, ["file", "name"], "{text}");
        assert_eq!(depth["file"].as_str(), Some("/tmp/queue depth ü\"s"));
        let argv: Vec<_> = metrics[2]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(argv, ["sh", "-c", "echo 'it''s' \"3\""]);

        // No sources, no `metric` key (the first test checks every key).
        env.provider.launch(request("i-2", &[])).await.unwrap();
        let text = fs::read_to_string(env.dir("i-2").join("agent.toml")).unwrap();
        assert!(!text.contains("metric"), "{text}");
        env.provider.release("i-1").await.unwrap();
        env.provider.release("i-2").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn describe_lists_launched_instances_as_alive() {
        let env = Env::plain();
        assert_eq!(env.provider.describe().await.unwrap(), []);
        env.provider.launch(request("i-b", &[])).await.unwrap();
        env.provider
            .launch(request("i-a", &["sleep", "1000"]))
            .await
            .unwrap();
        let alive = |id: &str| ProviderInstance {
            instance_id: id.to_owned(),
            alive: true,
            provider_id: Some(env.dir(id).display().to_string()),
            address: None,
        };
        assert_eq!(
            env.provider.describe().await.unwrap(),
            [alive("i-a"), alive("i-b")]
        );
        env.provider.release("i-a").await.unwrap();
        env.provider.release("i-b").await.unwrap();
        assert_eq!(env.provider.describe().await.unwrap(), []);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workload_runs_in_the_agents_group_with_its_env() {
        let env = Env::plain();
        let script = "env > env.txt.tmp && mv env.txt.tmp env.txt && exec sleep 1000";
        env.provider
            .launch(request("i-1", &["/bin/sh", "-c", script]))
            .await
            .unwrap();
        let dir = env.dir("i-1");
        let record = env.record("i-1");
        let workload = record.workload.expect("a workload pid");
        assert_eq!(read_stat(workload.pid).unwrap().pgrp, record.pgid);
        let host = dir.join(HOST_DIR);
        eventually("the workload's env.txt", async || {
            host.join("env.txt").exists()
        })
        .await;
        let vars = fs::read_to_string(host.join("env.txt")).unwrap();
        for var in [
            "GREETING=hello".to_owned(),
            "EBB_INSTANCE_ID=i-1".to_owned(),
            "EBB_GROUP_ID=g-1".to_owned(),
            format!("EBB_INSTANCE_DIR={}", host.display()),
            format!("PWD={}", host.display()),
            format!("HOME={}", host.display()),
            format!("PATH={INSTANCE_PATH}"),
        ] {
            assert!(
                vars.lines().any(|l| l == var),
                "{var} missing from:\n{vars}"
            );
        }
        // Nothing of the controller's own environment (cargo's variables
        // are in the test's) is inherited.
        assert!(
            !vars.lines().any(|l| l.starts_with("CARGO")),
            "the controller's environment leaked:\n{vars}"
        );
        assert!(dir.join("workload.log").exists());
        assert_eq!(env.alive("i-1").await, Some(true));

        env.provider.release("i-1").await.unwrap();
        assert!(!dir.exists());
        eventually("both processes reaped", async || {
            vanished(record.agent.pid) && vanished(workload.pid)
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn release_stops_the_processes_and_removes_the_dir() {
        let env = Env::plain();
        env.provider
            .launch(request("i-1", &["sleep", "1000"]))
            .await
            .unwrap();
        let record = env.record("i-1");
        let started = Instant::now();
        env.provider.release("i-1").await.unwrap();
        assert!(
            started.elapsed() < PATIENCE / 2,
            "SIGTERM was enough: {:?}",
            started.elapsed()
        );
        assert!(!env.dir("i-1").exists());
        let workload = record.workload.unwrap();
        eventually("both processes reaped", async || {
            vanished(record.agent.pid) && vanished(workload.pid)
        })
        .await;
        assert_eq!(env.provider.describe().await.unwrap(), []);
        env.provider.release("i-1").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_ignoring_sigterm_is_killed_after_the_timeout() {
        let timeout = Duration::from_millis(300);
        let env = Env::new("stubborn-agent.sh", timeout);
        env.provider.launch(request("i-1", &[])).await.unwrap();
        let dir = env.dir("i-1");
        eventually("the agent to ignore SIGTERM", async || {
            dir.join("trapped").exists()
        })
        .await;
        let pid = env.record("i-1").agent.pid;
        let started = Instant::now();
        env.provider.release("i-1").await.unwrap();
        assert!(
            started.elapsed() >= timeout,
            "released after {:?}",
            started.elapsed()
        );
        assert!(!dir.exists());
        eventually("the agent reaped", async || vanished(pid)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_agent_killed_from_outside_is_dead_reaped_and_releasable() {
        let env = Env::plain();
        env.provider.launch(request("i-1", &[])).await.unwrap();
        let pid = env.record("i-1").agent.pid;
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        eventually("the killed agent reaped, not a zombie", async || {
            vanished(pid)
        })
        .await;
        assert_eq!(env.alive("i-1").await, Some(false));
        env.provider.release("i-1").await.unwrap();
        assert!(!env.dir("i-1").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_workload_makes_the_instance_dead() {
        let env = Env::plain();
        env.provider
            .launch(request("i-1", &["sleep", "1000"]))
            .await
            .unwrap();
        let record = env.record("i-1");
        let workload = record.workload.unwrap();
        kill(Pid::from_raw(workload.pid), Signal::SIGKILL).unwrap();
        eventually("describe to see the workload gone", async || {
            env.alive("i-1").await == Some(false)
        })
        .await;
        assert!(
            process_matches(record.agent).is_some(),
            "the agent itself still runs"
        );
        env.provider.release("i-1").await.unwrap();
        eventually("the agent reaped", async || vanished(record.agent.pid)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_provider_readopts_running_instances() {
        let env = Env::plain();
        env.provider.launch(request("i-1", &[])).await.unwrap();
        env.provider
            .launch(request("i-2", &["sleep", "1000"]))
            .await
            .unwrap();
        let records = [env.record("i-1"), env.record("i-2")];

        let restarted = env.restarted();
        let described = restarted.describe().await.unwrap();
        assert_eq!(described.len(), 2);
        assert!(described.iter().all(|i| i.alive), "{described:?}");
        restarted.release("i-1").await.unwrap();
        restarted.release("i-2").await.unwrap();
        assert_eq!(restarted.describe().await.unwrap(), []);
        let pids: Vec<i32> = records
            .iter()
            .flat_map(|r| [Some(r.agent), r.workload])
            .flatten()
            .map(|p| p.pid)
            .collect();
        assert_eq!(pids.len(), 3);
        eventually("every process gone", async || {
            pids.iter().all(|&p| vanished(p))
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_launch_is_dead_and_release_cleans_it_up() {
        let env = Env::plain();
        // A controller that died after spawning the agent, before instance.json.
        let dir = env.dir("i-1");
        fs::create_dir_all(&dir).unwrap();
        let mut agent = Command::new(&env.agent_bin)
            .arg("--config")
            .arg(dir.join("agent.toml"))
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = agent.id().unwrap() as i32;
        tokio::spawn(async move { agent.wait().await });
        // One that died even before.
        fs::create_dir_all(env.dir("i-2")).unwrap();

        let dead = |id: &str| ProviderInstance {
            instance_id: id.to_owned(),
            alive: false,
            provider_id: Some(env.dir(id).display().to_string()),
            address: None,
        };
        assert_eq!(
            env.provider.describe().await.unwrap(),
            [dead("i-1"), dead("i-2")]
        );
        env.provider.release("i-1").await.unwrap();
        env.provider.release("i-2").await.unwrap();
        assert_eq!(env.provider.describe().await.unwrap(), []);
        eventually("the orphaned agent stopped", async || vanished(pid)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn launching_an_existing_id_fails_and_changes_nothing() {
        let env = Env::plain();
        env.provider.launch(request("i-1", &[])).await.unwrap();
        let before = env.record("i-1");
        let err = env.provider.launch(request("i-1", &[])).await.unwrap_err();
        assert!(err.to_string().contains("already running"), "{err}");
        assert_eq!(env.record("i-1"), before);
        assert_eq!(env.alive("i-1").await, Some(true));

        fs::create_dir_all(env.dir("i-2")).unwrap();
        let err = env.provider.launch(request("i-2", &[])).await.unwrap_err();
        assert!(err.to_string().contains("release it first"), "{err}");
        assert!(env.dir("i-2").exists());
        env.provider.release("i-1").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn release_of_an_unknown_id_succeeds_and_bad_ids_are_refused() {
        let env = Env::plain();
        env.provider.release("i-never").await.unwrap();
        for id in ["", ".", "..", "../x", "a/b", "i 1"] {
            assert!(env.provider.release(id).await.is_err(), "release `{id}`");
            let err = env.provider.launch(request(id, &[])).await.unwrap_err();
            assert!(err.to_string().contains("not a valid instance id"), "{err}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_launch_stops_what_it_started_and_removes_the_dir() {
        let env = Env::plain();
        let missing =
            ProcessProvider::new(env.base(), env.tmp.path().join("no-such-agent"), PATIENCE);
        let err = missing.launch(request("i-1", &[])).await.unwrap_err();
        assert!(err.to_string().contains("cannot start the agent"), "{err}");
        assert!(!env.dir("i-1").exists());

        let err = env
            .provider
            .launch(request("i-2", &["/no/such/workload"]))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot start the workload `/no/such/workload`"),
            "{err}"
        );
        assert!(!env.dir("i-2").exists());
        let dir = env.dir("i-2");
        eventually("the agent of the failed launch gone", async || {
            agents_by_cmdline(&dir).is_empty()
        })
        .await;
        assert_eq!(env.provider.describe().await.unwrap(), []);
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line =
            "4242 (we (ird) S) R 1 4240 4200 0 -1 4194560 1 0 0 0 3 4 0 0 20 0 1 0 987654 1 2 3";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                state: 'R',
                pgrp: 4240,
                session: 4200,
                start_time: 987654,
            }
        );
        assert!(stat.running());
        assert!(!parse_stat("4242 (x) Z 1").is_some_and(|s| s.running()));
    }

    /// Isolated launches (root only, as CI runs): concurrent ones each get
    /// their own uid and a host dir only that uid owns, share one staged
    /// agent binary, and release their uids for the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn isolated_concurrent_launches_get_their_own_uids() {
        use std::os::unix::fs::MetadataExt;
        let root = fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
        assert!(
            root,
            "this test needs root (as .ci/run runs): it switches users"
        );
        let tmp = TempDir::new().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
        let setpriv = isolation::find_setpriv().unwrap();
        let provider = Arc::new(
            ProcessProvider::new(
                tmp.path().join("instances"),
                fixture("fake-agent.sh"),
                PATIENCE,
            )
            .isolated(Users::new(300_000, 8, setpriv)),
        );
        let ids = ["i-1", "i-2", "i-3", "i-4"];
        let launches: Vec<_> = ids
            .iter()
            .map(|id| {
                let (p, req) = (provider.clone(), request(id, &["sleep", "1000"]));
                tokio::spawn(async move { p.launch(req).await })
            })
            .collect();
        for launch in launches {
            launch.await.unwrap().unwrap();
        }
        let mut uids = HashSet::new();
        for id in ids {
            let dir = tmp.path().join("instances").join(id);
            let record = read_record(&dir).unwrap().unwrap();
            let uid = record.uid.expect("an isolated record names its uid");
            assert!((300_000..300_008).contains(&uid), "{uid}");
            assert_eq!(fs::metadata(dir.join(HOST_DIR)).unwrap().uid(), uid);
            assert_eq!(fs::metadata(dir.join(RECORD)).unwrap().uid(), 0);
            let agent = fs::metadata(format!("{PROC}/{}", record.agent.pid)).unwrap();
            assert_eq!(agent.uid(), uid, "{id}'s agent runs as its uid");
            uids.insert(uid);
        }
        assert_eq!(uids.len(), ids.len(), "one uid per instance");
        for id in ids {
            provider.release(id).await.unwrap();
        }
        // Released uids are free again: the next launch takes the lowest.
        provider.launch(request("i-5", &[])).await.unwrap();
        let record = read_record(&tmp.path().join("instances/i-5"))
            .unwrap()
            .unwrap();
        assert_eq!(record.uid, Some(300_000));
        provider.release("i-5").await.unwrap();
    }

    /// A bridge of the test's own, removed with its namespaces when dropped.
    struct TestBridge(Arc<Network>);

    impl TestBridge {
        /// Makes a bridge on a free /29 (five instance addresses).
        async fn new() -> Self {
            assert!(
                netns::is_root(),
                "this test needs root (as .ci/run runs): it makes network namespaces"
            );
            let bridge = format!("ebu{}", std::process::id() % 1_000_000);
            Self(Arc::new(netns::test_network(&bridge, 29).await))
        }

        /// The same bridge as a restarted controller sets it up.
        async fn again(&self) -> Arc<Network> {
            let subnet = netns::Subnet::parse(&format!(
                "{}/29",
                Ipv4Addr::from(u32::from(self.0.gateway()) - 1)
            ))
            .unwrap();
            Arc::new(Network::setup(self.0.bridge(), subnet).await.unwrap())
        }

        fn host(&self, last: u32) -> Ipv4Addr {
            Ipv4Addr::from(u32::from(self.0.gateway()) - 1 + last)
        }
    }

    impl Drop for TestBridge {
        fn drop(&mut self) {
            let ip = |args: &[&str]| std::process::Command::new("ip").args(args).output();
            for id in self.0.namespaces() {
                let (netns, veth) = self.0.names(&id);
                let _ = ip(&["link", "del", &veth]);
                let _ = ip(&["netns", "del", &netns]);
            }
            let _ = ip(&["link", "del", self.0.bridge()]);
        }
    }

    use std::net::Ipv4Addr;

    /// Namespaced launches (root only, as CI runs): each instance runs in
    /// its own namespace with the lowest free address, recorded and given
    /// to its workload; a failed launch and a release remove the namespace
    /// and free the address; a restarted provider keeps the taken ones; a
    /// full subnet is a clear error that leaves nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn namespaced_launches_get_the_lowest_free_address_and_give_it_back() {
        let bridge = TestBridge::new().await;
        let env = Env::plain();
        let provider = ProcessProvider::new(env.base(), env.agent_bin.clone(), PATIENCE)
            .namespaced(bridge.0.clone());
        let script = "env > env.txt.tmp && mv env.txt.tmp env.txt && exec sleep 1000";
        provider
            .launch(request("i-1", &["/bin/sh", "-c", script]))
            .await
            .unwrap();
        let dir = env.dir("i-1");
        let at = netns::read_attachment(&dir.join(NETWORK)).unwrap().unwrap();
        assert_eq!(at.address, bridge.host(2), "the lowest instance address");
        let (netns_name, _) = bridge.0.names("i-1");
        assert_eq!(at.netns, netns_name);
        // Agent and workload run in the instance's namespace, not ours.
        let record = env.record("i-1");
        let ns_of = |pid: i32| fs::read_link(format!("{PROC}/{pid}/ns/net")).unwrap();
        let named = {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(format!("/run/netns/{netns_name}"))
                .unwrap()
                .ino()
        };
        // (nsenter's pid is the program's; it may not have entered yet.)
        for pid in [record.agent.pid, record.workload.unwrap().pid] {
            let inside = PathBuf::from(format!("net:[{named}]"));
            eventually(&format!("pid {pid} in {netns_name}"), async || {
                ns_of(pid) == inside
            })
            .await;
        }
        assert_ne!(ns_of(std::process::id() as i32), ns_of(record.agent.pid));
        let host = dir.join(HOST_DIR);
        eventually("the workload's env.txt", async || {
            host.join("env.txt").exists()
        })
        .await;
        let vars = fs::read_to_string(host.join("env.txt")).unwrap();
        let want = format!("EBB_INSTANCE_ADDRESS={}", bridge.host(2));
        assert!(vars.lines().any(|l| l == want), "{want} in:\n{vars}");
        let config = fs::read_to_string(dir.join(AGENT_CONFIG)).unwrap();
        let dial = format!("controller = \"{}:7440\"", bridge.0.gateway());
        assert!(config.contains(&dial), "{dial} in:\n{config}");
        assert!(
            config.contains("server_name = \"ebb-controller\""),
            "{config}"
        );

        // A launch whose workload cannot start leaves no namespace, and
        // its address goes to the next.
        let err = provider
            .launch(request("i-2", &["/no/such/workload"]))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "the workload exited at once: nsenter: failed to execute /no/such/workload"
            ),
            "{err}"
        );
        assert!(!env.dir("i-2").exists());
        assert!(
            !Path::new("/run/netns")
                .join(bridge.0.names("i-2").0)
                .exists()
        );
        provider.launch(request("i-3", &[])).await.unwrap();
        let address = |id: &str| {
            netns::read_attachment(&env.dir(id).join(NETWORK))
                .unwrap()
                .unwrap()
                .address
        };
        assert_eq!(address("i-3"), bridge.host(3));

        // After a restart the taken addresses stay taken.
        let restarted = ProcessProvider::new(env.base(), env.agent_bin.clone(), PATIENCE)
            .namespaced(bridge.again().await);
        for (id, last) in [("i-4", 4), ("i-5", 5), ("i-6", 6)] {
            restarted.launch(request(id, &[])).await.unwrap();
            assert_eq!(address(id), bridge.host(last), "{id}");
        }
        let err = restarted.launch(request("i-7", &[])).await.unwrap_err();
        assert!(
            err.to_string().contains("all 5 instance addresses")
                && err.to_string().contains("widen provider.subnet"),
            "{err}"
        );
        assert!(!env.dir("i-7").exists());
        assert!(
            !Path::new("/run/netns")
                .join(bridge.0.names("i-7").0)
                .exists()
        );

        // A release removes the namespace and veth and frees the address.
        restarted.release("i-1").await.unwrap();
        let (gone, veth) = bridge.0.names("i-1");
        assert!(!Path::new("/run/netns").join(gone).exists());
        assert!(!Path::new("/sys/class/net").join(veth).exists());
        restarted.launch(request("i-8", &[])).await.unwrap();
        assert_eq!(
            address("i-8"),
            bridge.host(2),
            "the freed address is reused"
        );
        for id in ["i-3", "i-4", "i-5", "i-6", "i-8"] {
            restarted.release(id).await.unwrap();
        }
        assert_eq!(bridge.0.namespaces(), Vec::<String>::new());
    }
}

#[cfg(test)]
mod conformance_tests {
    use std::io::Write as _;

    use tempfile::TempDir;

    use super::*;
    use crate::provider::conformance::{self, Subject};

    const PATIENCE: Duration = Duration::from_secs(30);

    fn fake_agent() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-agent.sh")
    }

    /// The process provider over a temp dir, plain or on a bridge of its own.
    struct Local {
        tmp: TempDir,
        network: Option<Arc<Network>>,
    }

    impl Local {
        fn base(&self) -> PathBuf {
            self.tmp.path().join("instances")
        }
    }

    #[tonic::async_trait]
    impl Subject for Local {
        async fn provider(&self) -> Arc<dyn Provider> {
            let p = ProcessProvider::new(self.base(), fake_agent(), PATIENCE);
            Arc::new(match &self.network {
                Some(n) => p.namespaced(n.clone()),
                None => p,
            })
        }
        fn request(&self, id: &str) -> LaunchRequest {
            let mut r = conformance::request(id, "");
            r.configuration.command = vec!["/bin/sleep".into(), "1000".into()];
            r
        }
        fn half_made(&self, id: &str) -> LaunchRequest {
            // The agent starts (and a namespace is made), then the workload
            // cannot.
            let mut r = conformance::request(id, "");
            r.configuration.command = vec!["/no/such/workload".into()];
            r
        }
        fn invalid(&self, id: &str) -> Option<LaunchRequest> {
            let mut r = conformance::request(id, "");
            r.configuration.command = vec![String::new(), "x".into()];
            Some(r)
        }
        async fn kill(&self, id: &str) {
            let record = read_record(&self.base().join(id)).unwrap().unwrap();
            killpg(Pid::from_raw(record.pgid), Signal::SIGKILL).unwrap();
        }
        async fn leftovers(&self, id: &str) -> Vec<String> {
            let dir = self.base().join(id);
            let mut left = Vec::new();
            if dir.exists() {
                left.push(format!("dir {}", dir.display()));
            }
            let needle = dir.as_os_str().as_bytes();
            for (pid, _) in processes() {
                let argv = fs::read(format!("{PROC}/{pid}/cmdline")).unwrap_or_default();
                // `needle` then a separator: not a longer id's dir.
                let ours = argv.windows(needle.len() + 1).any(|w| {
                    &w[..needle.len()] == needle
                        && (w[needle.len()] == b'/' || w[needle.len()] == 0)
                });
                if ours {
                    left.push(format!("process {pid}"));
                }
            }
            if let Some(network) = &self.network {
                let (netns, veth) = network.names(id);
                if Path::new("/run/netns").join(&netns).exists() {
                    left.push(format!("namespace {netns}"));
                }
                if Path::new("/sys/class/net").join(&veth).exists() {
                    left.push(format!("veth {veth}"));
                }
            }
            left
        }
        fn has_addresses(&self) -> bool {
            self.network.is_some()
        }
    }

    impl Drop for Local {
        fn drop(&mut self) {
            for entry in fs::read_dir(self.base()).into_iter().flatten().flatten() {
                if let Ok(Some(record)) = read_record(&entry.path())
                    && group_is_ours(&record, &entry.path())
                {
                    let _ = killpg(Pid::from_raw(record.pgid), Signal::SIGKILL);
                }
            }
            if let Some(network) = &self.network {
                let ip = |args: &[&str]| std::process::Command::new("ip").args(args).output();
                for id in network.namespaces() {
                    let (netns, veth) = network.names(&id);
                    let _ = ip(&["link", "del", &veth]);
                    let _ = ip(&["netns", "del", &netns]);
                }
                let _ = ip(&["link", "del", network.bridge()]);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_process_provider_passes_the_conformance_suite() {
        let local = Local {
            tmp: TempDir::new().unwrap(),
            network: None,
        };
        conformance::run_all(&local).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_namespaced_process_provider_passes_the_conformance_suite() {
        if !netns::is_root() {
            let _ = writeln!(
                std::io::stderr(),
                "\nNOT RUN: provider::process::conformance_tests::the_namespaced_process_provider_passes_the_conformance_suite: needs root to make network namespaces"
            );
            return;
        }
        let bridge = format!("ebc{}", std::process::id() % 1_000_000);
        let local = Local {
            tmp: TempDir::new().unwrap(),
            network: Some(Arc::new(netns::test_network(&bridge, 28).await)),
        };
        conformance::run_all(&local).await;
    }
}
