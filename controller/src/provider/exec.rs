//! The exec provider: each instance is whatever an operator's program makes
//! of it (a cloud VM, a libvirt domain, a container, a namespace). The
//! program is called as `PROGRAM launch|release|list` with JSON on stdin and
//! JSON on stdout; the contract is in docs/providers.md.
//!
//! Safety: every step runs in a process group of its own and is killed
//! (the whole group) at its time-out; a failed launch attempt is released
//! before the next; one id never has two launches at once (a lock per id);
//! and the intent — the id, its program, env and params, and whether it is
//! launching, launched or releasing — is written to `<dir>/<id>.json`
//! *before* the program runs. A restarted controller thus knows which
//! programs to `list`, reports a launch a dead controller left under way as
//! alive while its script still runs, and never launches an id twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tracing::{info, warn};

use super::agent_config::{self, AgentHooks};
use super::process::{IdLocks, check_id};
use super::{LaunchRequest, Launched, Provider, ProviderError, ProviderInstance, Result};
use ebb_core::model::{ExecSettings, ScalingConfiguration};

/// The programs' PATH: the standard one, nothing of the controller's.
const PROGRAM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How much of a failed step's stderr goes into the error (its tail).
const STDERR_TAIL: usize = 2048;
/// A step's stdout is JSON of a few lines; more than this is a mistake.
const STDOUT_MAX: usize = 1 << 20;
/// After a step exits, how long its pipes may stay open (a child it left
/// behind holding them) before ebb stops reading.
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// The first retry waits this long, each next one twice as long...
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// ...up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Exit codes that mean "do not retry": the request or the configuration
/// is wrong (sysexits EX_USAGE, EX_DATAERR, EX_CONFIG).
const PERMANENT_EXITS: [i32; 3] = [64, 65, 78];
/// Where the programs a controller used are kept, so their `list` keeps
/// running (and finds orphans) after the last intent is gone.
const PROGRAMS: &str = ".programs.json";

/// Launches through operator programs; keeps its intents in `dir`.
pub struct ExecProvider {
    dir: PathBuf,
    /// `ebb:controller`: the tag this controller's instances carry.
    controller_tag: String,
    hooks: AgentHooks,
    /// `provider.exec_programs`: the programs configurations may name.
    allowed: Vec<PathBuf>,
    locks: IdLocks,
    first_backoff: Duration,
    /// Ids whose launch runs in this process now.
    in_flight: Mutex<HashSet<String>>,
    /// Instances the last `list`s reported that have no intent (orphans):
    /// which program releases them.
    listed: Mutex<HashMap<String, (Program, Option<String>)>>,
    /// The last `list` failure of each program, logged once until it changes.
    list_errors: Mutex<HashMap<String, String>>,
}

/// A program and the environment and time-outs it runs with: what `list`
/// and `release` need, kept in the intent and in `.programs.json`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Program {
    program: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    list_timeout_ms: u64,
    release_timeout_ms: u64,
}

impl Program {
    fn of(settings: &ExecSettings) -> Self {
        Self {
            program: settings.program.clone(),
            env: settings.env.clone(),
            list_timeout_ms: settings.list_timeout().as_millis() as u64,
            release_timeout_ms: settings.release_timeout().as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    Launching,
    Launched,
    Releasing,
}

/// `<dir>/<id>.json`: written before each step, so a restart knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Intent {
    instance_id: String,
    group_id: String,
    #[serde(flatten)]
    program: Program,
    #[serde(default)]
    params: BTreeMap<String, String>,
    state: Phase,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    address: Option<String>,
    /// The step's process (pid, start time) while one runs: a launch a dead
    /// controller left under way is alive while it runs.
    #[serde(default)]
    script: Option<(i32, u64)>,
}

/// What `launch` prints.
#[derive(Deserialize)]
struct LaunchOutput {
    provider_id: String,
    #[serde(default)]
    address: Option<String>,
}

/// What `list` prints.
#[derive(Deserialize)]
struct ListOutput {
    instances: Vec<Listed>,
}

#[derive(Deserialize)]
struct Listed {
    instance_id: String,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    address: Option<String>,
    alive: bool,
}

/// How one run of a program failed.
enum StepError {
    /// Killed at its time-out.
    TimedOut { after_ms: u64, stderr: String },
    /// Exited non-zero (code None: by a signal).
    Exit { code: Option<i32>, stderr: String },
    /// Could not be run, or printed what is not the contract's JSON.
    Broken(String),
}

impl StepError {
    fn retryable(&self) -> bool {
        !matches!(self, Self::Exit { code: Some(c), .. } if PERMANENT_EXITS.contains(c))
    }

    fn into_error(self, instance: &str, step: &'static str, program: &str) -> ProviderError {
        let instance = instance.to_owned();
        match self {
            Self::TimedOut { after_ms, stderr } => ProviderError::TimedOut {
                instance,
                step,
                after_ms,
                message: if stderr.is_empty() {
                    format!("`{program} {step}` was killed (its whole process group)")
                } else {
                    format!(
                        "`{program} {step}` was killed (its whole process group); its stderr: {stderr}"
                    )
                },
            },
            Self::Exit { code, stderr } => {
                let status = code.map_or("was killed by a signal".to_owned(), |c| {
                    format!("exited with status {c}")
                });
                let message = if stderr.is_empty() {
                    format!("`{program} {step}` {status}")
                } else {
                    format!("`{program} {step}` {status}: {stderr}")
                };
                if step == "release" {
                    ProviderError::Release { instance, message }
                } else {
                    ProviderError::Launch { instance, message }
                }
            }
            Self::Broken(message) => {
                let message = format!("`{program} {step}`: {message}");
                if step == "release" {
                    ProviderError::Release { instance, message }
                } else {
                    ProviderError::Launch { instance, message }
                }
            }
        }
    }
}

impl ExecProvider {
    /// `dir` is `<data_dir>/exec`; `controller_tag` names this controller
    /// (cluster) on what its programs make.
    /// Configurations may name the programs `allowed` lists (a path, or a
    /// directory ending in `/`).
    pub fn new(
        dir: PathBuf,
        controller_tag: String,
        hooks: AgentHooks,
        allowed: Vec<PathBuf>,
    ) -> Self {
        Self {
            dir,
            controller_tag,
            hooks,
            allowed,
            locks: IdLocks::default(),
            first_backoff: FIRST_BACKOFF,
            in_flight: Mutex::new(HashSet::new()),
            listed: Mutex::new(HashMap::new()),
            list_errors: Mutex::new(HashMap::new()),
        }
    }

    /// Waits `first` before the first retry (tests shorten it).
    pub fn with_backoff(mut self, first: Duration) -> Self {
        self.first_backoff = first;
        self
    }

    fn tag(&self) -> serde_json::Value {
        json!({ "ebb:controller": self.controller_tag })
    }

    fn intent_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn ensure_dir(&self) -> Result<(), String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))
    }

    fn write_intent(&self, intent: &Intent) -> Result<(), String> {
        self.ensure_dir()?;
        let json = serde_json::to_vec_pretty(intent)
            .map_err(|e| format!("cannot render the intent: {e}"))?;
        ebb_certs::write_atomic(&self.intent_path(&intent.instance_id), &json, 0o600).map_err(|e| {
            format!(
                "cannot write {}: {e}",
                self.intent_path(&intent.instance_id).display()
            )
        })
    }

    fn read_intent(&self, id: &str) -> Result<Option<Intent>, String> {
        let path = self.intent_path(id);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is not an intent: {e}", path.display())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    fn remove_intent(&self, id: &str) -> Result<(), String> {
        match fs::remove_file(self.intent_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!(
                "cannot remove {}: {e}",
                self.intent_path(id).display()
            )),
        }
    }

    fn intents(&self) -> Vec<Intent> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut all = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if check_id(id).is_err() {
                continue;
            }
            match self.read_intent(id) {
                Ok(Some(intent)) => all.push(intent),
                Ok(None) => {}
                Err(e) => warn!(instance = id, "{e}"),
            }
        }
        all
    }

    /// The programs this controller ever launched through (see PROGRAMS).
    fn known_programs(&self) -> Vec<Program> {
        fs::read(self.dir.join(PROGRAMS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn remember_program(&self, program: &Program) -> Result<(), String> {
        let mut all = self.known_programs();
        if all.contains(program) {
            return Ok(());
        }
        all.push(program.clone());
        self.ensure_dir()?;
        let json = serde_json::to_vec_pretty(&all).map_err(|e| e.to_string())?;
        ebb_certs::write_atomic(&self.dir.join(PROGRAMS), &json, 0o600)
            .map_err(|e| format!("cannot write {PROGRAMS}: {e}"))
    }

    /// Runs `program verb` with `input` on stdin; its stdout parsed as `T`.
    async fn run<T: for<'de> Deserialize<'de>>(
        &self,
        program: &Program,
        verb: &'static str,
        input: &serde_json::Value,
        instance: Option<&str>,
        timeout: Duration,
        on_spawn: impl FnOnce(i32),
    ) -> Result<T, StepError> {
        let mut command = Command::new(&program.program);
        command
            .arg(verb)
            .env_clear()
            .env("PATH", PROGRAM_PATH)
            .env("LANG", "C.UTF-8")
            .envs(&program.env)
            .env("EBB_STEP", verb)
            .env("EBB_CONTROLLER_TAG", &self.controller_tag)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(id) = instance {
            command.env("EBB_INSTANCE_ID", id);
        }
        let mut child = command
            .spawn()
            .map_err(|e| StepError::Broken(format!("cannot run it: {e}")))?;
        let pid = child.id().map_or(0, |p| p as i32);
        on_spawn(pid);
        let body = serde_json::to_vec(input).expect("JSON values render");
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        // A program that does not read its stdin must not block us.
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
        let out_reader = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = (&mut stdout)
                .take(STDOUT_MAX as u64 + 1)
                .read_to_end(&mut buf)
                .await;
            buf
        });
        let err_reader = tokio::spawn(async move {
            let mut tail = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match stderr.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        tail.extend_from_slice(&chunk[..n]);
                        if tail.len() > 2 * STDERR_TAIL {
                            tail.drain(..tail.len() - STDERR_TAIL);
                        }
                    }
                }
            }
            tail
        });
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Some(status),
            Err(_) => {
                // The whole group: whatever the program started goes too.
                if pid > 0 {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = child.wait().await;
                None
            }
        };
        writer.abort();
        let stderr = tokio::time::timeout(PIPE_GRACE, err_reader)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let stderr = tail_text(&stderr);
        let Some(status) = status else {
            return Err(StepError::TimedOut {
                after_ms: timeout.as_millis() as u64,
                stderr,
            });
        };
        let status = status.map_err(|e| StepError::Broken(format!("cannot wait for it: {e}")))?;
        if !status.success() {
            return Err(StepError::Exit {
                code: status.code(),
                stderr,
            });
        }
        let Ok(Ok(stdout)) = tokio::time::timeout(PIPE_GRACE, out_reader).await else {
            return Err(StepError::Broken(
                "exited, but something it started keeps its stdout open; start background processes with their output redirected".to_owned(),
            ));
        };
        if stdout.len() > STDOUT_MAX {
            return Err(StepError::Broken(format!(
                "printed more than {STDOUT_MAX} bytes on stdout"
            )));
        }
        serde_json::from_slice(&stdout).map_err(|e| {
            StepError::Broken(format!(
                "printed `{}`, not the JSON the contract asks for: {e}",
                tail_text(&stdout)
            ))
        })
    }

    /// Runs `release` for `id`; the intent stays.
    async fn release_step(
        &self,
        id: &str,
        program: &Program,
        provider_id: Option<&str>,
    ) -> Result<()> {
        let input = json!({ "instance_id": id, "provider_id": provider_id });
        let timeout = Duration::from_millis(program.release_timeout_ms);
        self.run::<serde_json::Value>(program, "release", &input, Some(id), timeout, |_| {})
            .await
            .map(|_| ())
            .or_else(|e| match e {
                // `release` need print nothing.
                StepError::Broken(m) if m.contains("not the JSON") => Ok(()),
                e => Err(e.into_error(id, "release", &program.program)),
            })
    }

    /// Runs `release` for `id`; the intent is removed once it succeeded.
    async fn release_with(
        &self,
        id: &str,
        program: &Program,
        provider_id: Option<&str>,
    ) -> Result<()> {
        self.release_step(id, program, provider_id).await?;
        self.remove_intent(id)
            .map_err(|message| ProviderError::Release {
                instance: id.to_owned(),
                message,
            })?;
        self.listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    fn launch_input(
        &self,
        req: &LaunchRequest,
        settings: &ExecSettings,
        attempt: u32,
    ) -> Result<serde_json::Value> {
        let c = &req.configuration;
        let agent_toml = agent_config::render(
            c,
            &req.controller,
            &req.server_name,
            &agent_config::Tls::in_dir(""),
            &self.hooks,
        )
        .map_err(|message| ProviderError::Launch {
            instance: req.instance_id.clone(),
            message,
        })?;
        Ok(json!({
            "instance_id": req.instance_id,
            "group_id": req.group_id,
            "attempt": attempt,
            "configuration": {
                "id": c.id,
                "name": c.name,
                "instance_type": c.instance_type,
                "command": c.command,
                "env": c.env,
                "tags": c.tags,
                "user_data": c.user_data,
                "params": settings.params,
            },
            "agent": {
                "controller": req.controller,
                "server_name": req.server_name,
                "ca_pem": req.ca_pem,
                "cert_pem": req.cert_pem,
                "key_pem": req.key_pem,
                "agent_toml": agent_toml,
            },
            "tag": {
                "ebb:instance": req.instance_id,
                "ebb:group": req.group_id,
                "ebb:controller": self.controller_tag,
            },
        }))
    }

    /// Lists what `program` knows with our tag; None when `list` failed.
    async fn list(&self, program: &Program) -> Option<Vec<Listed>> {
        let input = json!({ "tag": self.tag() });
        let timeout = Duration::from_millis(program.list_timeout_ms);
        match self
            .run::<ListOutput>(program, "list", &input, None, timeout, |_| {})
            .await
        {
            Ok(out) => {
                let mut errors = self.list_errors.lock().unwrap_or_else(|e| e.into_inner());
                if errors.remove(&program.program).is_some() {
                    info!(program = %program.program, "list works again");
                }
                Some(out.instances)
            }
            Err(e) => {
                let text = match e {
                    StepError::TimedOut { after_ms, stderr } => format!(
                        "`{} list` timed out after {after_ms} ms and was killed: {stderr}",
                        program.program
                    ),
                    StepError::Exit { code, stderr } => {
                        format!("`{} list` exited with {code:?}: {stderr}", program.program)
                    }
                    StepError::Broken(m) => format!("`{} list`: {m}", program.program),
                };
                let mut errors = self.list_errors.lock().unwrap_or_else(|e| e.into_inner());
                if errors.get(&program.program) != Some(&text) {
                    warn!("{text}; its instances are taken to be alive until it succeeds");
                    errors.insert(program.program.clone(), text);
                }
                None
            }
        }
    }
}

/// The `ebb:controller` tag of a controller whose CA is `ca_pem`: the
/// same for every controller of one cluster, different for another.
pub fn controller_tag(ca_pem: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes());
    format!("ebb-{}", ebb_certs::hex(&digest.as_ref()[..8]))
}

fn tail_text(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL);
    let text = String::from_utf8_lossy(&bytes[start..]);
    text.trim().to_owned()
}

/// Whether `pid` still runs the process that started at `start` (ticks).
fn still_running((pid, start): (i32, u64)) -> bool {
    pid > 0 && start_time(pid) == Some(start)
}

fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // Field 22 (starttime); `rest` starts at field 3.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn settings_of(configuration: &ScalingConfiguration) -> Result<&ExecSettings> {
    configuration.exec.as_ref().ok_or_else(|| {
        ProviderError::Invalid(
            "exec: instance_type = \"exec\" needs exec settings (at least exec.program)".to_owned(),
        )
    })
}

#[tonic::async_trait]
impl Provider for ExecProvider {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn check(&self, configuration: &ScalingConfiguration) -> Result<()> {
        let settings = settings_of(configuration)?;
        let program = Path::new(&settings.program);
        if !program.is_absolute() {
            return Err(ProviderError::Invalid(format!(
                "exec.program: `{}` is not an absolute path",
                settings.program
            )));
        }
        if program
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(ProviderError::Invalid(format!(
                "exec.program: `{}` contains `..`",
                settings.program
            )));
        }
        let allowed = self.allowed.iter().any(|a| {
            if a.as_os_str().as_encoded_bytes().ends_with(b"/") {
                program.starts_with(a) && program != a.as_path()
            } else {
                program == a.as_path()
            }
        });
        if !allowed {
            let listed: Vec<_> = self
                .allowed
                .iter()
                .map(|a| a.display().to_string())
                .collect();
            return Err(ProviderError::Unavailable(format!(
                "exec.program: {} is not among this controller's provider.exec_programs ({}); \
                 the host's owner adds it (or its directory, ending in /) to controller.toml",
                settings.program,
                listed.join(", ")
            )));
        }
        use std::os::unix::fs::PermissionsExt;
        match fs::metadata(program) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(_) => Err(ProviderError::Unavailable(format!(
                "exec.program: {} is not an executable file on this host (chmod +x it)",
                settings.program
            ))),
            Err(e) => Err(ProviderError::Unavailable(format!(
                "exec.program: {} cannot be run on this host: {e}",
                settings.program
            ))),
        }
    }

    async fn launch(&self, req: LaunchRequest) -> Result<Launched> {
        let id = req.instance_id.clone();
        let fail = |message: String| ProviderError::Launch {
            instance: id.clone(),
            message,
        };
        self.check(&req.configuration)?;
        let settings = settings_of(&req.configuration)?.clone();
        check_id(&id).map_err(fail)?;
        let _lock = self.locks.lock(&id).await;
        if let Some(old) = self.read_intent(&id).map_err(fail)? {
            return Err(fail(match old.script {
                Some(s) if still_running(s) => format!(
                    "an earlier launch of it still runs (pid {}); it is not launched twice",
                    s.0
                ),
                _ => "it was launched before; release it first".to_owned(),
            }));
        }
        let program = Program::of(&settings);
        self.remember_program(&program).map_err(fail)?;
        let mut intent = Intent {
            instance_id: id.clone(),
            group_id: req.group_id.clone(),
            program: program.clone(),
            params: settings.params.clone(),
            state: Phase::Launching,
            provider_id: None,
            address: None,
            script: None,
        };
        self.write_intent(&intent).map_err(fail)?;
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        let result = self.attempts(&req, &settings, &program, &mut intent).await;
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        result
    }

    async fn release(&self, instance_id: &str) -> Result<()> {
        if check_id(instance_id).is_err() {
            // Not an id this provider could have launched.
            return Ok(());
        }
        let _lock = self.locks.lock(instance_id).await;
        let intent = self
            .read_intent(instance_id)
            .map_err(|message| ProviderError::Release {
                instance: instance_id.to_owned(),
                message,
            })?;
        let (program, provider_id) = match intent {
            Some(mut intent) => {
                intent.state = Phase::Releasing;
                intent.script = None;
                self.write_intent(&intent)
                    .map_err(|message| ProviderError::Release {
                        instance: instance_id.to_owned(),
                        message,
                    })?;
                (intent.program, intent.provider_id)
            }
            None => {
                let listed = self
                    .listed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(instance_id)
                    .cloned();
                match listed {
                    Some(found) => found,
                    None => return Ok(()),
                }
            }
        };
        self.release_with(instance_id, &program, provider_id.as_deref())
            .await?;
        info!(instance = instance_id, program = %program.program, "released");
        Ok(())
    }

    async fn describe(&self) -> Result<Vec<ProviderInstance>> {
        let intents = self.intents();
        let mut programs = self.known_programs();
        for intent in &intents {
            if !programs.contains(&intent.program) {
                programs.push(intent.program.clone());
            }
        }
        let mut listed: BTreeMap<String, ProviderInstance> = BTreeMap::new();
        let mut failed: Vec<&Program> = Vec::new();
        let mut orphans = HashMap::new();
        let with_intent: HashMap<&str, &Intent> = intents
            .iter()
            .map(|i| (i.instance_id.as_str(), i))
            .collect();
        for program in &programs {
            match self.list(program).await {
                Some(found) => {
                    for l in found {
                        if check_id(&l.instance_id).is_err() {
                            continue;
                        }
                        if !with_intent.contains_key(l.instance_id.as_str()) {
                            orphans.insert(
                                l.instance_id.clone(),
                                (program.clone(), l.provider_id.clone()),
                            );
                        }
                        let entry =
                            listed
                                .entry(l.instance_id.clone())
                                .or_insert(ProviderInstance {
                                    instance_id: l.instance_id,
                                    alive: false,
                                    provider_id: None,
                                    address: None,
                                });
                        entry.alive |= l.alive;
                        entry.provider_id = entry.provider_id.take().or(l.provider_id);
                        entry.address = entry.address.take().or(l.address);
                    }
                }
                None => failed.push(program),
            }
        }
        *self.listed.lock().unwrap_or_else(|e| e.into_inner()) = orphans;
        let in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for intent in &intents {
            let id = &intent.instance_id;
            let running = in_flight.contains(id) || intent.script.is_some_and(still_running);
            let unknown = failed.contains(&&intent.program);
            let entry = listed.entry(id.clone()).or_insert(ProviderInstance {
                instance_id: id.clone(),
                alive: false,
                provider_id: None,
                address: None,
            });
            // A launch under way, or one whose program could not be asked.
            if (intent.state == Phase::Launching && running)
                || (unknown && intent.state != Phase::Releasing)
            {
                entry.alive = true;
            }
            if entry.provider_id.is_none() {
                entry.provider_id = intent.provider_id.clone();
            }
            if entry.address.is_none() {
                entry.address = intent.address.clone();
            }
        }
        Ok(listed.into_values().collect())
    }
}

impl ExecProvider {
    /// Tries the launch up to `attempts` times, releasing a failed attempt
    /// before the next; a launch that fails for good is released too.
    async fn attempts(
        &self,
        req: &LaunchRequest,
        settings: &ExecSettings,
        program: &Program,
        intent: &mut Intent,
    ) -> Result<Launched> {
        let id = &req.instance_id;
        let attempts = settings.attempts().max(1);
        let mut backoff = self.first_backoff;
        let mut attempt = 1;
        let error = loop {
            let input = self.launch_input(req, settings, attempt)?;
            // The script's pid goes into the intent as soon as it runs: a
            // controller restarted meanwhile counts the launch as alive
            // while the script lives (a crash before this write leaves it
            // to `list` to tell).
            let record_script = |pid: i32| {
                intent.script = start_time(pid).map(|t| (pid, t));
                if let Err(message) = self.write_intent(intent) {
                    warn!(instance = %id, "{message}");
                }
            };
            let outcome = self
                .run::<LaunchOutput>(
                    program,
                    "launch",
                    &input,
                    Some(id),
                    settings.launch_timeout(),
                    record_script,
                )
                .await;
            match outcome {
                Ok(out) if !out.provider_id.is_empty() => {
                    intent.state = Phase::Launched;
                    intent.provider_id = Some(out.provider_id.clone());
                    intent.address = out.address.clone();
                    intent.script = None;
                    if let Err(message) = self.write_intent(intent) {
                        warn!(instance = %id, "{message}");
                    }
                    info!(instance = %id, provider_id = %out.provider_id, attempt, "launched");
                    return Ok(Launched {
                        provider_id: out.provider_id,
                        address: out.address,
                    });
                }
                Ok(_) => {
                    break StepError::Broken("printed an empty provider_id".to_owned()).into_error(
                        id,
                        "launch",
                        &program.program,
                    );
                }
                Err(e) => {
                    let retry = e.retryable() && attempt < attempts;
                    let error = e.into_error(id, "launch", &program.program);
                    if !retry {
                        break error;
                    }
                    warn!(instance = %id, attempt, "{error}; releasing it and retrying in {backoff:?}");
                    // Undo what the attempt made before the next one.
                    // (The intent stays, still launching: the launch goes on.)
                    if let Err(e) = self.release_step(id, program, None).await {
                        break ProviderError::Launch {
                            instance: id.clone(),
                            message: format!(
                                "{error}; not retried, as releasing the failed attempt failed: {e}"
                            ),
                        };
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
            }
        };
        // What the last attempt made goes; if that fails the intent stays
        // (releasing), describe lists it and the orphan sweep retries.
        if let Err(e) = self.release_with(id, program, None).await {
            warn!(instance = %id, "cannot release the failed launch: {e}");
        }
        Err(match error {
            ProviderError::Launch { instance, message } if attempt > 1 => ProviderError::Launch {
                instance,
                message: format!("{message} (attempt {attempt} of {attempts})"),
            },
            ProviderError::TimedOut {
                instance,
                step,
                after_ms,
                message,
            } if attempt > 1 => ProviderError::TimedOut {
                instance,
                step,
                after_ms,
                message: format!("{message} (attempt {attempt} of {attempts})"),
            },
            e => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use tempfile::TempDir;

    use super::*;
    use crate::provider::conformance::{self, Subject};
    use crate::provider::netns::{self, Network};

    fn netns_py() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/examples/providers/netns.py")
            .canonicalize()
            .expect("docs/examples/providers/netns.py")
    }

    /// `provider.exec_programs` allowing every file under `tmp`.
    fn within(tmp: &TempDir) -> PathBuf {
        PathBuf::from(format!("{}/", tmp.path().display()))
    }

    fn fake_agent() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-agent.sh")
    }

    /// The exec provider running the netns example on a bridge of its own.
    struct Netns {
        tmp: TempDir,
        network: Network,
    }

    impl Netns {
        /// None (after a NOT RUN line) when not root.
        async fn new(test: &str) -> Option<Self> {
            if !netns::is_root() {
                let _ = writeln!(
                    std::io::stderr(),
                    "\nNOT RUN: provider::exec::tests::{test}: needs root to make network namespaces"
                );
                return None;
            }
            assert!(
                std::process::Command::new("python3")
                    .arg("-V")
                    .output()
                    .is_ok(),
                "this test needs python3 (apt-get install python3): the netns example is a python3 program"
            );
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let bridge = format!("ebe{}x{n}", std::process::id() % 100_000);
            Some(Self {
                tmp: TempDir::new().unwrap(),
                network: crate::provider::netns::test_network(&bridge, 28).await,
            })
        }

        fn state(&self) -> PathBuf {
            self.tmp.path().join("netns")
        }

        fn settings(&self, program: &Path) -> ExecSettings {
            ExecSettings {
                program: program.display().to_string(),
                env: BTreeMap::from([
                    ("NETNS_BRIDGE".into(), self.network.bridge().into()),
                    ("NETNS_STATE".into(), self.state().display().to_string()),
                    ("NETNS_AGENT".into(), fake_agent().display().to_string()),
                    ("NETNS_PY".into(), netns_py().display().to_string()),
                    ("MARKS".into(), self.tmp.path().display().to_string()),
                ]),
                attempts: Some(1),
                ..Default::default()
            }
        }

        /// A request launched through `program` (netns.py or a wrapper of it).
        fn request_with(&self, id: &str, program: &Path) -> LaunchRequest {
            let mut r = conformance::request(id, "exec");
            r.configuration.command = vec!["/bin/sleep".into(), "1000".into()];
            r.configuration.exec = Some(self.settings(program));
            r
        }

        /// A wrapper of netns.py whose `launch` runs `body` (sh).
        fn wrapper(&self, name: &str, body: &str) -> PathBuf {
            let path = self.tmp.path().join(name);
            let script = format!(
                "#!/bin/sh\nif [ \"$1\" = launch ]; then\n{body}\nfi\nexec \"$NETNS_PY\" \"$@\"\n"
            );
            fs::write(&path, script).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            path
        }

        fn exec_dir(&self) -> PathBuf {
            self.tmp.path().join("exec")
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            for entry in fs::read_dir(self.state()).into_iter().flatten().flatten() {
                let pids: serde_json::Value = serde_json::from_slice(
                    &fs::read(entry.path().join("pids.json")).unwrap_or_default(),
                )
                .unwrap_or_default();
                if let Some(pid) = pids["agent"][0].as_i64() {
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
                let id = entry.file_name().to_string_lossy().into_owned();
                let netns = format!("x{}.{id}", self.network.bridge());
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &netns])
                    .output();
            }
            let _ = std::process::Command::new("ip")
                .args(["link", "del", self.network.bridge()])
                .output();
        }
    }

    #[tonic::async_trait]
    impl Subject for Netns {
        async fn provider(&self) -> Arc<dyn Provider> {
            Arc::new(
                ExecProvider::new(
                    self.exec_dir(),
                    "ebb-test".into(),
                    AgentHooks::default(),
                    vec![netns_py(), within(&self.tmp)],
                )
                .with_backoff(Duration::from_millis(10)),
            )
        }
        fn request(&self, id: &str) -> LaunchRequest {
            self.request_with(id, &netns_py())
        }
        fn half_made(&self, id: &str) -> LaunchRequest {
            let wrapper = self.wrapper(
                "made-then-failed",
                "\"$NETNS_PY\" launch >/dev/null || exit 1\necho 'made it, then failed' >&2\nexit 1",
            );
            self.request_with(id, &wrapper)
        }
        fn invalid(&self, id: &str) -> Option<LaunchRequest> {
            let mut r = self.request(id);
            r.configuration.exec = None;
            Some(r)
        }
        async fn kill(&self, id: &str) {
            let pids: serde_json::Value =
                serde_json::from_slice(&fs::read(self.state().join(id).join("pids.json")).unwrap())
                    .unwrap();
            let pid = pids["agent"][0].as_i64().unwrap() as i32;
            killpg(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        }
        async fn leftovers(&self, id: &str) -> Vec<String> {
            let mut left = Vec::new();
            let dir = self.state().join(id);
            if dir.exists() {
                left.push(format!("dir {}", dir.display()));
            }
            let intent = self.exec_dir().join(format!("{id}.json"));
            if intent.exists() {
                left.push(format!("intent {}", intent.display()));
            }
            let netns = format!("x{}.{id}", self.network.bridge());
            if Path::new("/run/netns").join(&netns).exists() {
                left.push(format!("namespace {netns}"));
            }
            let needle = format!("{}/", dir.display());
            for entry in fs::read_dir("/proc").unwrap().flatten() {
                let argv = fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&argv).contains(&needle) {
                    left.push(format!("process {}", entry.file_name().to_string_lossy()));
                }
            }
            left
        }
        fn has_addresses(&self) -> bool {
            true
        }
        async fn typed_failures(&self, provider: &dyn Provider) {
            // A launch past its time-out is killed with its whole process
            // group (a child it started too), and says so.
            let hang = self.wrapper(
                "hang",
                "sleep 1000 &\necho $! > \"$MARKS/hang-child\"\necho 'hanging' >&2\nsleep 1000",
            );
            let mut r = self.request_with("typed-hang", &hang);
            r.configuration.exec.as_mut().unwrap().launch_timeout_ms = Some(1000);
            match provider.launch(r).await {
                Err(ProviderError::TimedOut {
                    step: "launch",
                    after_ms: 1000,
                    message,
                    ..
                }) => assert!(message.contains("hanging"), "{message}"),
                other => panic!("a hanging launch: {other:?}"),
            }
            let child: i32 = fs::read_to_string(self.tmp.path().join("hang-child"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            // Gone, or a zombie of nobody's (its parent was killed too).
            while start_time(child).is_some()
                && !fs::read_to_string(format!("/proc/{child}/stat"))
                    .unwrap_or_default()
                    .contains(") Z")
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the hanging launch's child {child} lives on"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }

            // Permanent exits are not retried; their stderr is the message.
            let permanent = self.wrapper(
                "permanent",
                "echo x >> \"$MARKS/permanent-runs\"\necho 'bad params: no such image' >&2\nexit 78",
            );
            let mut r = self.request_with("typed-permanent", &permanent);
            r.configuration.exec.as_mut().unwrap().attempts = Some(3);
            match provider.launch(r).await {
                Err(ProviderError::Launch { message, .. }) => assert!(
                    message.contains("exited with status 78: bad params: no such image"),
                    "{message}"
                ),
                other => panic!("a permanent failure: {other:?}"),
            }
            let runs = fs::read_to_string(self.tmp.path().join("permanent-runs")).unwrap();
            assert_eq!(runs.lines().count(), 1, "exit 78 was retried");
            assert!(self.leftovers("typed-hang").await.is_empty());
            assert!(self.leftovers("typed-permanent").await.is_empty());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exec_with_the_netns_example_passes_the_conformance_suite() {
        let Some(subject) =
            Netns::new("exec_with_the_netns_example_passes_the_conformance_suite").await
        else {
            return;
        };
        conformance::run_all(&subject).await;
    }

    /// Fails twice (each time after making its namespace), then succeeds:
    /// one instance exists, the failed attempts were released.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_attempts_are_released_and_retried_into_one_instance() {
        let Some(subject) =
            Netns::new("failed_attempts_are_released_and_retried_into_one_instance").await
        else {
            return;
        };
        let flaky = subject.wrapper(
            "flaky",
            "echo x >> \"$MARKS/flaky-runs\"\nif [ $(wc -l < \"$MARKS/flaky-runs\") -le 2 ]; then \"$NETNS_PY\" launch >/dev/null; echo 'quota exceeded' >&2; exit 1; fi",
        );
        let provider = subject.provider().await;
        let mut r = subject.request_with("i-flaky", &flaky);
        r.configuration.exec.as_mut().unwrap().attempts = Some(3);
        let launched = provider.launch(r).await.unwrap();
        let runs = fs::read_to_string(subject.tmp.path().join("flaky-runs")).unwrap();
        assert_eq!(runs.lines().count(), 3);
        let dirs: Vec<_> = fs::read_dir(subject.state())
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(dirs, ["i-flaky"]);
        assert_eq!(
            launched.provider_id,
            format!("x{}.i-flaky", subject.network.bridge())
        );
        let all = provider.describe().await.unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(all[0].alive);
        provider.release("i-flaky").await.unwrap();
        assert!(subject.leftovers("i-flaky").await.is_empty());
    }

    /// A program keeping each instance as a file in `$STATE` (no root).
    const FILES: &str = r#"#!/bin/sh
cat > /dev/null
case "$1" in
launch)
  echo x >> "$STATE/runs"
  # What ebb wrote before running this.
  [ -z "$EXEC_DIR" ] || cp "$EXEC_DIR/$EBB_INSTANCE_ID.json" "$STATE/intent-seen"
  sleep "${SLOW:-0}"
  touch "$STATE/$EBB_INSTANCE_ID"; echo "{\"provider_id\": \"f-$EBB_INSTANCE_ID\"}" ;;
release) rm -f "$STATE/$EBB_INSTANCE_ID" ;;
list)
  if [ -e "$STATE/broken" ]; then echo 'API throttled' >&2; exit 1; fi
  printf '{"instances": ['; sep=
  for f in "$STATE"/i-*; do
    [ -e "$f" ] || continue; i=$(basename "$f")
    printf '%s{"instance_id": "%s", "provider_id": "f-%s", "alive": true}' "$sep" "$i" "$i"; sep=,
  done
  echo ']}' ;;
esac
"#;

    /// `list` drives liveness and orphans; while it fails, what was
    /// launched is taken to be alive (a flaky API never replaces a fleet).
    #[tokio::test]
    async fn list_drives_liveness_and_orphans_and_a_failing_list_keeps_instances() {
        let tmp = TempDir::new().unwrap();
        let program = tmp.path().join("files.sh");
        fs::write(&program, FILES).unwrap();
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        let state = tmp.path().join("state");
        fs::create_dir(&state).unwrap();
        let provider = ExecProvider::new(
            tmp.path().join("exec"),
            "t".into(),
            AgentHooks::default(),
            vec![within(&tmp)],
        );
        let mut r = conformance::request("i-1", "exec");
        r.configuration.exec = Some(ExecSettings {
            program: program.display().to_string(),
            env: BTreeMap::from([("STATE".into(), state.display().to_string())]),
            ..Default::default()
        });
        let launched = provider.launch(r).await.unwrap();
        assert_eq!(launched.provider_id, "f-i-1");
        let alive = |all: Vec<ProviderInstance>| -> Vec<(String, bool)> {
            all.into_iter().map(|i| (i.instance_id, i.alive)).collect()
        };
        assert_eq!(
            alive(provider.describe().await.unwrap()),
            [("i-1".into(), true)]
        );

        // Gone from outside while `list` fails: still taken to be alive.
        fs::write(state.join("broken"), "").unwrap();
        fs::remove_file(state.join("i-1")).unwrap();
        assert_eq!(
            alive(provider.describe().await.unwrap()),
            [("i-1".into(), true)]
        );
        // `list` works again: it is dead.
        fs::remove_file(state.join("broken")).unwrap();
        assert_eq!(
            alive(provider.describe().await.unwrap()),
            [("i-1".into(), false)]
        );
        provider.release("i-1").await.unwrap();
        assert_eq!(alive(provider.describe().await.unwrap()), []);

        // One `list` knows and no intent claims (a record lost in a crash):
        // described, and released through the program that listed it, by
        // a provider restarted since (it knows the program from disk).
        fs::write(state.join("i-orphan"), "").unwrap();
        let restarted = ExecProvider::new(
            tmp.path().join("exec"),
            "t".into(),
            AgentHooks::default(),
            vec![within(&tmp)],
        );
        assert_eq!(
            alive(restarted.describe().await.unwrap()),
            [("i-orphan".into(), true)]
        );
        restarted.release("i-orphan").await.unwrap();
        assert!(!state.join("i-orphan").exists());
        assert_eq!(alive(restarted.describe().await.unwrap()), []);
    }

    /// Two launches of one id at once: the program runs once, the intent
    /// (launching, with its program) is on disk before it runs, and the
    /// second launch is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_id_is_never_launched_twice_and_its_intent_is_written_first() {
        let tmp = TempDir::new().unwrap();
        let program = tmp.path().join("files.sh");
        fs::write(&program, FILES).unwrap();
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        let state = tmp.path().join("state");
        fs::create_dir(&state).unwrap();
        let exec_dir = tmp.path().join("exec");
        let provider = Arc::new(ExecProvider::new(
            exec_dir.clone(),
            "t".into(),
            AgentHooks::default(),
            vec![within(&tmp)],
        ));
        let mut r = conformance::request("i-1", "exec");
        r.configuration.exec = Some(ExecSettings {
            program: program.display().to_string(),
            env: BTreeMap::from([
                ("STATE".into(), state.display().to_string()),
                ("EXEC_DIR".into(), exec_dir.display().to_string()),
                ("SLOW".into(), "1".into()),
            ]),
            ..Default::default()
        });
        let both = [r.clone(), r].map(|r| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.launch(r).await })
        });
        let mut results = Vec::new();
        for handle in both {
            results.push(handle.await.unwrap());
        }
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{results:?}");
        let refused = results.into_iter().find_map(|r| r.err()).unwrap();
        assert!(refused.to_string().contains("launched before"), "{refused}");
        let runs = fs::read_to_string(state.join("runs")).unwrap();
        assert_eq!(runs.lines().count(), 1, "the program ran once");
        let seen: serde_json::Value =
            serde_json::from_slice(&fs::read(state.join("intent-seen")).unwrap()).unwrap();
        assert_eq!(seen["state"], "launching", "{seen}");
        assert_eq!(seen["program"], program.display().to_string());
        assert_eq!(seen["instance_id"], "i-1");
        provider.release("i-1").await.unwrap();
        assert!(!exec_dir.join("i-1.json").exists());
    }

    #[test]
    fn check_names_the_key() {
        let p = ExecProvider::new(
            PathBuf::from("/nonexistent"),
            "t".into(),
            AgentHooks::default(),
            vec![PathBuf::from("/no/such/"), PathBuf::from("/bin/true")],
        );
        let mut c = conformance::request("i-1", "exec").configuration;
        let msg = |r: Result<()>| r.unwrap_err().to_string();
        assert!(
            msg(p.check(&c)).starts_with("exec: "),
            "{}",
            msg(p.check(&c))
        );
        c.exec = Some(ExecSettings {
            program: "launch.sh".into(),
            ..Default::default()
        });
        assert!(
            matches!(p.check(&c), Err(ProviderError::Invalid(m)) if m.starts_with("exec.program: `launch.sh` is not an absolute path"))
        );
        c.exec.as_mut().unwrap().program = "/no/such/program".into();
        assert!(
            matches!(p.check(&c), Err(ProviderError::Unavailable(m)) if m.starts_with("exec.program: /no/such/program cannot be run"))
        );
        // Only what provider.exec_programs lists: a file, or under a dir.
        c.exec.as_mut().unwrap().program = "/bin/sh".into();
        assert!(
            matches!(p.check(&c), Err(ProviderError::Unavailable(m)) if m.starts_with("exec.program: /bin/sh is not among this controller's provider.exec_programs (/no/such/, /bin/true)"))
        );
        c.exec.as_mut().unwrap().program = "/no/such/../../bin/sh".into();
        assert!(
            matches!(p.check(&c), Err(ProviderError::Invalid(m)) if m.contains("contains `..`"))
        );
        c.exec.as_mut().unwrap().program = "/bin/true".into();
        p.check(&c).unwrap();
    }
}
