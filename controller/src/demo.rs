//! `ebb-controller demo`: the quickstart. A controller on embedded defaults
//! in a scratch data dir; `ebbctl apply` of a small group whose instances are
//! real agents launched by the process provider, with CPU alarms and rules;
//! then a story: load rises and the alarms scale the group out, load falls
//! and they scale it in, an instance is killed and replaced, and a forced
//! delete releases everything. On a terminal the screen is redrawn every
//! second: instances with state, health and CPU, the alarms, the latest
//! activities and the story so far. With `--plain` (or when stdout is not a
//! terminal) the same story is printed as timestamped lines.
//!
//! When `haproxy` is on PATH and the demo runs as root, the group also sits
//! behind a real HAProxy (`lb`): the instances get namespaces and addresses
//! of their own on a bridge of the demo's, serve their id over HTTP, and a
//! steady request loop through HAProxy counts who answers. Otherwise the
//! demo says why not, once, at the start.

mod lb;

pub use lb::web;

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use ebb_controller::config::Config;
use ebb_controller::fleet::Fleet;
use ebb_controller::server::Controller;
use ebb_controller::store::Store;
use ebb_core::model::ActivityStatus;

/// The group the demo applies.
const DEMO_GROUP: &str = "demo";
/// The apply file, as an operator would write it: the group, and the
/// alarms' metric and the configuration's metric source for `load`.
/// With `web`, the demo's own workload (`ebb-controller demo-web`) serves
/// each instance's id and the group is attached to the demo's HAProxy.
fn demo_file(load: &Load, data_dir: &Path, web: Option<&Path>) -> String {
    let (metric, source) = match load {
        Load::Cpu => ("CpuUtilization".to_owned(), String::new()),
        Load::Metric => (
            LOAD_METRIC.to_owned(),
            format!(
                "\n[[configuration.metrics]]\nname = \"{LOAD_METRIC}\"\nfile = {}\n",
                toml_string(&data_dir.join(LOAD_FILE).display().to_string())
            ),
        ),
    };
    let name = load.alarm_prefix();
    let (command, balancer) = match web {
        None => (r#"["sleep", "infinity"]"#.to_owned(), String::new()),
        Some(exe) => (
            // The data dir is ignored by demo-web; it lets anyone (the
            // demo's test) find the processes the demo started.
            format!(
                "[{}, \"demo-web\", {}]",
                toml_string(&exe.display().to_string()),
                toml_string(&data_dir.display().to_string())
            ),
            format!(
                "\n[[load_balancer]]\ntarget = \"{}\"\nbackend = \"{}\"\nport = {}\ndrain_timeout_secs = {}\n",
                lb::TARGET,
                lb::BACKEND,
                lb::WEB_PORT,
                lb::DRAIN_SECS
            ),
        ),
    };
    format!(
        r#"[group]
name = "demo"
min_size = 1
max_size = 3
desired_capacity = 1
sampling_interval_secs = 1
health_check_grace_period_secs = 1
removal_policies = ["NewestInstance"]

[configuration]
name = "demo-v1"
command = {command}
{source}{balancer}
[[rule]]
name = "add-1"
rule_type = "SimpleScalingRule"
adjustment_type = "QuantityChangeInCapacity"
adjustment_value = 1
cooldown_secs = 3

[[rule]]
name = "remove-1"
rule_type = "SimpleScalingRule"
adjustment_type = "QuantityChangeInCapacity"
adjustment_value = -1
cooldown_secs = 3

[[alarm]]
name = "{name}-high"
metric = "{metric}"
statistic = "Average"
period_secs = 1
comparison_operator = ">="
threshold = 70.0
evaluation_count = 3
alarm_actions = ["add-1"]

[[alarm]]
name = "{name}-low"
metric = "{metric}"
statistic = "Average"
period_secs = 1
comparison_operator = "<="
threshold = 40.0
evaluation_count = 4
alarm_actions = ["remove-1"]
"#
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The custom metric the demo's instances read in `--load metric`.
const LOAD_METRIC: &str = "demo_load";
/// The file, in the demo's data dir, that every instance's agent reads it from.
const LOAD_FILE: &str = "load";
/// What the demo writes there while "loaded", and after.
const HIGH_LOAD: &str = "90";
const LOW_LOAD: &str = "10";

/// What drives the demo's scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Every CPU burned: what the quickstart shows.
    Cpu,
    /// A custom metric read from a file the demo writes: the same story on
    /// a host whose CPU is busy with something else (the demo's own test).
    Metric,
}

impl Load {
    fn alarm_prefix(self) -> &'static str {
        match self {
            Load::Cpu => "cpu",
            Load::Metric => "load",
        }
    }

    /// The column the screen shows each instance's reading under.
    fn column(self) -> &'static str {
        match self {
            Load::Cpu => "CPU",
            Load::Metric => "LOAD",
        }
    }
}

/// Story lines kept on the live screen.
const LIVE_LOG_LINES: usize = 8;
/// Activities shown on the live screen.
const LIVE_ACTIVITIES: usize = 6;
/// How long the final forced delete may take before the demo gives up.
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(30);

pub struct DemoOptions {
    /// Total run time of the story (the teardown comes after).
    pub duration: Duration,
    /// Timestamped lines instead of the redrawn screen (always so when
    /// stdout is not a terminal).
    pub plain: bool,
    /// The scratch data dir; the caller removes it.
    pub data_dir: PathBuf,
    pub load: Load,
}

/// Finds `ebbctl` beside this executable.
fn ebbctl_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating ebb-controller")?;
    let path = exe.with_file_name("ebbctl");
    if !path.exists() {
        bail!(
            "ebbctl not found beside {}; build it with `cargo build --workspace`",
            exe.display()
        );
    }
    Ok(path)
}

pub async fn run(opts: DemoOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let ebbctl = ebbctl_binary()?;
    let agent_bin = ebb_controller::provider::find_agent_binary(None)?;
    let root = ebb_controller::provider::netns::is_root();
    let not_shown = lb::unavailable(lb::on_path("haproxy").as_deref(), root);
    let mut config = Config {
        data_dir: opts.data_dir.clone(),
        grpc: ebb_controller::config::GrpcConfig {
            listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        },
        http: ebb_controller::config::HttpConfig {
            listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        },
        ..Default::default()
    };
    // With HAProxy, instances get addresses of their own on a bridge and
    // subnet of the demo's, removed at its end.
    let network = match not_shown {
        Some(_) => None,
        None => {
            let (bridge, subnet) = lb::pick_network(std::process::id())?;
            config.provider.network = ebb_controller::config::Network::Namespace;
            config.provider.bridge = bridge.clone();
            config.provider.subnet = subnet.clone();
            Some((bridge, subnet))
        }
    };
    let controller = match Controller::start(config).await {
        Ok(c) => c,
        Err(e) => {
            if let Some((bridge, _)) = &network {
                lb::remove_network(bridge);
            }
            return Err(e.into());
        }
    };
    let (grpc, http) = (controller.grpc_addr(), controller.http_addr());
    let fleet = controller.fleet();
    let store = controller.store();
    // The target agent's certificate and the CA it trusts, from the demo
    // controller's CA (in the data dir's pki) while it is at hand.
    let target_cert = match network {
        Some(_) => Some((
            controller
                .ca()
                .issue_target(lb::TARGET, ebb_certs::AGENT_VALIDITY)?,
            controller.ca().cert_pem().to_owned(),
        )),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(controller.serve(async {
        let _ = stop_rx.await;
    }));
    let header = format!(
        "controller on {grpc} (metrics: http://{http}/metrics); data dir {}",
        opts.data_dir.display()
    );
    let load_file = opts.data_dir.join(LOAD_FILE);
    let demo = Demo {
        ebbctl,
        data_dir: opts.data_dir.clone(),
        start: Instant::now(),
        duration: opts.duration,
        fleet,
        store,
        seen: std::sync::Mutex::new(HashMap::new()),
        live: AtomicBool::new(!opts.plain && std::io::stdout().is_terminal()),
        log: std::sync::Mutex::new(VecDeque::new()),
        header: header.clone(),
        load: opts.load,
        load_file,
        lb: std::sync::Mutex::new(None),
        backend: std::sync::Mutex::new(None),
        not_shown,
    };
    demo.say(&header);
    let result = async {
        // ebbctl finds the controller through endpoints.toml, which serve
        // writes as it starts: wait for it rather than race it.
        let endpoints = opts.data_dir.join(ebb_core::local::ENDPOINTS_FILE);
        let ready_by = Instant::now() + Duration::from_secs(10);
        while !endpoints.exists() {
            if Instant::now() > ready_by || server.is_finished() {
                bail!("the controller did not start serving");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let web = match (not_shown, &network) {
            (Some(why), _) => {
                demo.say(why);
                None
            }
            (None, None) => None,
            (None, Some((bridge, subnet))) => {
                let mut balancer = lb::Lb::start_haproxy(&opts.data_dir.join("haproxy"))?;
                demo.say(&format!(
                    "HAProxy: frontend http://{} (backend `{}`, roundrobin, health checks), driven by target agent `{}`; instances on bridge {bridge} ({subnet}), each serving its id on port {}",
                    balancer.frontend,
                    lb::BACKEND,
                    lb::TARGET,
                    lb::WEB_PORT
                ));
                let started = match &target_cert {
                    Some((issued, ca_pem)) => balancer.start_agent(&agent_bin, issued, ca_pem, grpc),
                    None => Ok(()),
                };
                *demo.lb.lock().unwrap_or_else(|p| p.into_inner()) = Some(balancer);
                started?;
                Some(std::env::current_exe().context("locating ebb-controller")?)
            }
        };
        let file = opts.data_dir.join("demo.toml");
        std::fs::write(
            &file,
            demo_file(&opts.load, &opts.data_dir, web.as_deref()),
        )?;
        if opts.load == Load::Metric {
            std::fs::write(&demo.load_file, LOW_LOAD)?;
        }
        demo.story(&file, opts.duration, shutdown).await
    }
    .await;
    // The teardown is told as lines below the last screen.
    demo.live.store(false, Ordering::Relaxed);
    demo.teardown().await;
    let _ = stop_tx.send(());
    let _ = server.await;
    match &network {
        None => demo.say("demo over: every instance released"),
        Some((bridge, _)) => {
            for problem in lb::remove_network(bridge) {
                demo.say(&format!("teardown: {problem}"));
            }
            demo.say(&format!(
                "demo over: every instance released; haproxy, its target agent and bridge {bridge} removed"
            ));
        }
    }
    result
}

struct Demo {
    ebbctl: PathBuf,
    data_dir: PathBuf,
    start: Instant,
    fleet: Arc<Fleet>,
    store: Arc<dyn Store>,
    duration: Duration,
    /// Activity id → last status printed.
    seen: std::sync::Mutex<HashMap<String, ActivityStatus>>,
    /// Redraw a screen (a terminal) rather than print lines.
    live: AtomicBool,
    /// The latest story lines, for the live screen.
    log: std::sync::Mutex<VecDeque<String>>,
    header: String,
    load: Load,
    load_file: PathBuf,
    /// HAProxy and its request loop, when shown.
    lb: std::sync::Mutex<Option<lb::Lb>>,
    /// The backend's servers as last told.
    backend: std::sync::Mutex<Option<Vec<lb::Server>>>,
    /// Why HAProxy is not shown, kept on the live screen.
    not_shown: Option<&'static str>,
}

impl Demo {
    /// Starts the load: every CPU burned, or the metric file raised.
    fn load_on(&self) -> anyhow::Result<Option<Burn>> {
        let name = self.load.alarm_prefix();
        match self.load {
            Load::Cpu => {
                self.say("load: burning every CPU; the cpu-high alarm (>= 70 % for 3 s) will scale the group out");
                Ok(Some(Burn::start()))
            }
            Load::Metric => {
                self.say(&format!(
                    "load: {LOAD_METRIC} = {HIGH_LOAD}; the {name}-high alarm (>= 70 for 3 s) will scale the group out"
                ));
                std::fs::write(&self.load_file, HIGH_LOAD)?;
                Ok(None)
            }
        }
    }

    /// Ends the load.
    fn load_off(&self) -> anyhow::Result<()> {
        let name = self.load.alarm_prefix();
        if self.load == Load::Metric {
            std::fs::write(&self.load_file, LOW_LOAD)?;
        }
        self.say(&format!(
            "load gone: the {name}-low alarm (<= 40 for 4 s) will scale the group back in"
        ));
        Ok(())
    }

    /// An instance's latest reading of what drives the demo.
    fn reading(&self, id: &str) -> (bool, Option<f64>) {
        self.fleet
            .with_agent(id, |a| {
                let p = a.ring.back();
                let v = match self.load {
                    Load::Cpu => p.and_then(|p| p.cpu_utilization()),
                    Load::Metric => p.and_then(|p| p.custom(LOAD_METRIC)),
                };
                (a.connected, v)
            })
            .unwrap_or((false, None))
    }
    fn say(&self, line: &str) {
        let line = format!("[t={:>3}s] {line}", self.start.elapsed().as_secs());
        if self.live.load(Ordering::Relaxed) {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.push_back(line);
            while log.len() > LIVE_LOG_LINES {
                log.pop_front();
            }
        } else {
            // Not println!: a closed stdout (`demo | head`) would panic
            // and skip the teardown, leaving instances running.
            let _ = writeln!(std::io::stdout(), "{line}");
            let _ = std::io::stdout().flush();
        }
    }

    /// Runs an ebbctl command and prints it and its output.
    async fn ebbctl(&self, args: &[&str]) -> anyhow::Result<()> {
        self.say(&format!("$ ebbctl {}", args.join(" ")));
        let out = tokio::process::Command::new(&self.ebbctl)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .await
            .context("running ebbctl")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            self.say(&format!("  {line}"));
        }
        if !out.status.success() {
            bail!(
                "ebbctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    async fn story(
        &self,
        file: &Path,
        duration: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let file = file.display().to_string();
        self.ebbctl(&["apply", "-f", &file]).await?;
        // Load from 15 % to 55 % of the run; a killed instance at 80 %.
        let burn_from = duration * 15 / 100;
        let burn_to = duration * 55 / 100;
        let kill_at = duration * 80 / 100;
        let mut burner: Option<Option<Burn>> = None;
        let mut killed = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut shutdown => break,
            }
            let elapsed = self.start.elapsed();
            if elapsed >= duration {
                break;
            }
            if burner.is_none() && elapsed >= burn_from && elapsed < burn_to {
                burner = Some(self.load_on()?);
            }
            if elapsed >= burn_to && burner.take().is_some() {
                self.load_off()?;
            }
            self.watch_backend();
            self.show()?;
            // After this tick's screen: it shows the group as the crash
            // finds it, and the next one what ebb made of it (a namespaced
            // instance whose agent dies is gone within the tick).
            if !killed && elapsed >= kill_at {
                killed = true;
                self.kill_one()?;
            }
        }
        Ok(())
    }

    /// Tells when HAProxy's backend changes, and starts the request loop
    /// once a server is up in it.
    fn watch_backend(&self) {
        let mut guard = self.lb.lock().unwrap_or_else(|p| p.into_inner());
        let Some(balancer) = guard.as_mut() else {
            return;
        };
        let Some(servers) = balancer.servers() else {
            return;
        };
        let start = !balancer.sending() && servers.iter().any(|s| s.state == "up");
        if start {
            balancer.start_requests();
        }
        drop(guard);
        let mut last = self.backend.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() != Some(&servers) {
            self.say(&format!(
                "haproxy: backend {} now {}",
                lb::BACKEND,
                if servers.is_empty() {
                    "has no servers".to_owned()
                } else {
                    servers
                        .iter()
                        .map(|s| format!("{} {}", s.name, s.state))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
            *last = Some(servers);
        }
        if start {
            self.say(&format!(
                "haproxy: a server is up; sending a request every {} ms through the frontend",
                lb::REQUEST_PAUSE.as_millis()
            ));
        }
    }

    /// The request counts: `N requests, F failed; i-a 12, i-b 30`, once
    /// the loop runs.
    fn requests_line(&self) -> Option<String> {
        let guard = self.lb.lock().unwrap_or_else(|p| p.into_inner());
        let balancer = guard.as_ref()?;
        if !balancer.sending() {
            return Some("no requests yet (waiting for a server to be up)".to_owned());
        }
        let c = &balancer.counts;
        let per: Vec<String> = c
            .per_instance()
            .into_iter()
            .map(|(id, n)| format!("{id} {n}"))
            .collect();
        Some(format!(
            "{} requests, {} failed; answered by {}",
            c.total.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            if per.is_empty() {
                "nobody yet".to_owned()
            } else {
                per.join(", ")
            }
        ))
    }

    /// SIGKILLs the agent of the group's newest instance, as a crash would.
    fn kill_one(&self) -> anyhow::Result<()> {
        let Some(group) = self.store.find_group_by_name(DEMO_GROUP)? else {
            return Ok(());
        };
        let Some(victim) = self.store.list_instances(Some(&group.id))?.pop() else {
            return Ok(());
        };
        self.say(&format!(
            "crash: killing the agent of {} (kill -9); ebb will notice and replace it",
            victim.id
        ));
        let pattern = format!("instances/{}/agent.toml", victim.id);
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-f", &pattern])
            .status();
        Ok(())
    }

    /// The live screen, or one line for the group and one per new or
    /// changed activity.
    fn show(&self) -> anyhow::Result<()> {
        if self.live.load(Ordering::Relaxed) {
            let screen = self.screen()?;
            // Home, draw, clear what the previous screen left below.
            let _ = write!(std::io::stdout(), "\x1b[H{screen}\x1b[J");
            let _ = std::io::stdout().flush();
            return Ok(());
        }
        let Some(group) = self.store.find_group_by_name(DEMO_GROUP)? else {
            return Ok(());
        };
        let instances = self.store.list_instances(Some(&group.id))?;
        let mut parts = Vec::new();
        for i in &instances {
            let (_, value) = self.reading(&i.id);
            let value = value.map_or_else(
                || "  -  ".to_owned(),
                |c| match self.load {
                    Load::Cpu => format!("{c:4.1}%"),
                    Load::Metric => format!("{c:4.1}"),
                },
            );
            parts.push(format!(
                "{} {} {} {value}",
                i.id,
                i.lifecycle_state,
                self.load.column().to_lowercase()
            ));
        }
        self.say(&format!(
            "group {} desired {}: {}",
            group.name,
            group.desired_capacity,
            if parts.is_empty() {
                "no instances".to_owned()
            } else {
                parts.join(" | ")
            }
        ));
        if let Some(line) = self.requests_line() {
            self.say(&format!("haproxy: {line}"));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut activities = self.store.list_activities(Some(&group.id), 10)?;
        activities.reverse();
        for a in activities {
            if seen.get(&a.id) != Some(&a.status) {
                seen.insert(a.id.clone(), a.status);
                let why = a
                    .error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                self.say(&format!("activity {} {}{why}: {}", a.id, a.status, a.cause));
            }
        }
        Ok(())
    }

    /// The whole live screen as text, every line cleared to its end.
    fn screen(&self) -> anyhow::Result<String> {
        let mut out = Vec::new();
        out.push(format!(
            "ebb demo  t={}s of {}s   {}",
            self.start.elapsed().as_secs(),
            self.duration.as_secs(),
            self.header
        ));
        out.push(String::new());
        let Some(group) = self.store.find_group_by_name(DEMO_GROUP)? else {
            out.push("(applying the demo group...)".into());
            return Ok(finish(out));
        };
        out.push(format!(
            "GROUP {}  {}  min {} max {} desired {}",
            group.name, group.state, group.min_size, group.max_size, group.desired_capacity
        ));
        out.push(format!(
            "  {:<16}  {:<13}  {:<9}  {:>6}  AGENT",
            "INSTANCE",
            "STATE",
            "HEALTH",
            self.load.column()
        ));
        for i in self.store.list_instances(Some(&group.id))? {
            let (connected, cpu) = self.reading(&i.id);
            out.push(format!(
                "  {:<16}  {:<13}  {:<9}  {:>6}  {}",
                i.id,
                i.lifecycle_state.to_string(),
                i.health_status.to_string(),
                cpu.map_or_else(
                    || "-".to_owned(),
                    |c| match self.load {
                        Load::Cpu => format!("{c:.1}%"),
                        Load::Metric => format!("{c:.1}"),
                    }
                ),
                if connected { "connected" } else { "-" }
            ));
        }
        if let Some(line) = self.requests_line() {
            out.push(String::new());
            out.push(format!(
                "HAPROXY  {}",
                self.lb
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|b| format!("frontend http://{}  backend {}", b.frontend, lb::BACKEND))
                    .unwrap_or_default()
            ));
            out.push(format!("  {line}"));
            let servers = self
                .backend
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            let counts = self
                .lb
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|b| b.counts.per_instance())
                .unwrap_or_default();
            out.push(format!(
                "  {:<16}  {:<6}  {:>8}",
                "SERVER", "STATE", "REQUESTS"
            ));
            let mut names: Vec<&String> = servers.iter().map(|s| &s.name).collect();
            names.extend(
                counts
                    .keys()
                    .filter(|k| !servers.iter().any(|s| &s.name == *k)),
            );
            for name in names {
                let state = servers
                    .iter()
                    .find(|s| &s.name == name)
                    .map_or("gone", |s| s.state);
                out.push(format!(
                    "  {name:<16}  {state:<6}  {:>8}",
                    counts.get(name).copied().unwrap_or(0)
                ));
            }
        }
        if let Some(why) = self.not_shown {
            out.push(String::new());
            out.push(why.to_owned());
        }
        out.push(String::new());
        out.push("ALARMS".into());
        for a in self.store.list_alarms(Some(&group.id))? {
            let s = &a.spec;
            out.push(format!(
                "  {:<10}  {} {} {} {} for {}x{}s  -> {}",
                a.name,
                s.metric.as_str(),
                s.statistic,
                s.comparison,
                s.threshold,
                s.evaluation_count,
                s.period_secs,
                a.eval.state
            ));
        }
        out.push(String::new());
        out.push("LATEST ACTIVITIES".into());
        for a in self
            .store
            .list_activities(Some(&group.id), LIVE_ACTIVITIES)?
        {
            let at = (a.started_at_ms - self.started_at_ms()).max(0) / 1000;
            let why = a
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            out.push(format!(
                "  [t={at:>3}s] {:<10}  {}{why}",
                a.status.to_string(),
                a.cause
            ));
        }
        out.push(String::new());
        out.push("STORY".into());
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(log.iter().map(|l| format!("  {l}")));
        Ok(finish(out))
    }

    /// When the demo started, as Unix ms (activities carry wall-clock times).
    fn started_at_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        now - self.start.elapsed().as_millis() as i64
    }

    /// Stops the requests, deletes the group with force and waits for every
    /// instance to go (drained and deregistered while HAProxy and its agent
    /// still run), then stops them.
    async fn teardown(&self) {
        let stopped = self
            .lb
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(lb::Lb::stop_requests);
        if stopped.is_some()
            && let Some(line) = self.requests_line()
        {
            self.say(&format!("haproxy: requests stopped: {line}"));
        }
        self.release_all().await;
        if let Some(mut balancer) = self.lb.lock().unwrap_or_else(|p| p.into_inner()).take() {
            balancer.kill();
            self.say("haproxy and its target agent stopped");
        }
    }

    async fn release_all(&self) {
        if let Err(e) = self
            .ebbctl(&["group", "delete", DEMO_GROUP, "--force"])
            .await
        {
            self.say(&format!("teardown: {e:#}"));
        }
        let deadline = Instant::now() + TEARDOWN_DEADLINE;
        while Instant::now() < deadline {
            match self.store.list_instances(None) {
                Ok(list) if list.is_empty() => return,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        self.say("teardown: instances still present after 30s");
    }
}

/// Lines joined, each cleared to its end so a shorter line leaves no rest
/// of the previous screen behind.
fn finish(lines: Vec<String>) -> String {
    lines.into_iter().map(|l| l + "\x1b[K\n").collect()
}

/// Burns every core until dropped: the demo's load.
pub struct Burn {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Burn {
    pub fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 1;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        }
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Burn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
