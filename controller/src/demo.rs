//! `ebb-controller demo`: the quickstart. A controller on embedded defaults
//! in a scratch data dir; `ebbctl apply` of a small group whose instances are
//! real agents launched by the process provider, with CPU alarms and rules;
//! then a story: load rises and the alarms scale the group out, load falls
//! and they scale it in, an instance is killed and replaced, and a forced
//! delete releases everything. A line a second shows the group and each
//! activity as it starts and ends.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::Config;
use crate::fleet::Fleet;
use crate::model::ActivityStatus;
use crate::server::Controller;
use crate::store::Store;

/// The group the demo applies.
const DEMO_GROUP: &str = "demo";
/// The apply file, as an operator would write it.
const DEMO_FILE: &str = r#"[group]
name = "demo"
min_size = 1
max_size = 3
desired_capacity = 1
sampling_interval_secs = 1
health_check_grace_period_secs = 1
removal_policies = ["NewestInstance"]

[configuration]
name = "demo-v1"
command = ["sleep", "infinity"]

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
name = "cpu-high"
metric = "CpuUtilization"
statistic = "Average"
period_secs = 1
comparison_operator = ">="
threshold = 70.0
evaluation_count = 3
alarm_actions = ["add-1"]

[[alarm]]
name = "cpu-low"
metric = "CpuUtilization"
statistic = "Average"
period_secs = 1
comparison_operator = "<="
threshold = 40.0
evaluation_count = 4
alarm_actions = ["remove-1"]
"#;
/// How long the final forced delete may take before the demo gives up.
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(30);

pub struct DemoOptions {
    /// Total run time of the story (the teardown comes after).
    pub duration: Duration,
    /// Timestamped lines only (the default view is the same lines; kept so
    /// scripts can ask for it explicitly).
    pub plain: bool,
    /// The scratch data dir; the caller removes it.
    pub data_dir: PathBuf,
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
    crate::provider::find_agent_binary(None)?;
    let config = Config {
        data_dir: opts.data_dir.clone(),
        grpc: crate::config::GrpcConfig {
            listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        },
        http: crate::config::HttpConfig {
            listen: "127.0.0.1:0".parse()?,
        },
        ..Default::default()
    };
    let controller = Controller::start(config).await?;
    let (grpc, http) = (controller.grpc_addr(), controller.http_addr());
    let fleet = controller.fleet();
    let store = controller.store();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(controller.serve(async {
        let _ = stop_rx.await;
    }));
    let file = opts.data_dir.join("demo.toml");
    std::fs::write(&file, DEMO_FILE)?;
    let demo = Demo {
        ebbctl,
        data_dir: opts.data_dir.clone(),
        start: Instant::now(),
        fleet,
        store,
        seen: std::sync::Mutex::new(HashMap::new()),
    };
    demo.say(&format!(
        "controller on {grpc} (metrics: http://{http}/metrics); data dir {}",
        opts.data_dir.display()
    ));
    let result = demo.story(&file, opts.duration, shutdown).await;
    demo.teardown().await;
    let _ = stop_tx.send(());
    let _ = server.await;
    demo.say("demo over: every instance released");
    result
}

struct Demo {
    ebbctl: PathBuf,
    data_dir: PathBuf,
    start: Instant,
    fleet: Arc<Fleet>,
    store: Arc<dyn Store>,
    /// Activity id → last status printed.
    seen: std::sync::Mutex<HashMap<String, ActivityStatus>>,
}

impl Demo {
    fn say(&self, line: &str) {
        println!("[t={:>3}s] {line}", self.start.elapsed().as_secs());
        let _ = std::io::stdout().flush();
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
        let mut burner: Option<Burner> = None;
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
                self.say("load: burning every CPU; the cpu-high alarm (>= 70 % for 3 s) will scale the group out");
                burner = Some(Burner::start());
            }
            if elapsed >= burn_to && burner.take().is_some() {
                self.say(
                    "load gone: the cpu-low alarm (<= 40 % for 4 s) will scale the group back in",
                );
            }
            if !killed && elapsed >= kill_at {
                killed = true;
                self.kill_one()?;
            }
            self.show()?;
        }
        Ok(())
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

    /// One line for the group, one per new or changed activity.
    fn show(&self) -> anyhow::Result<()> {
        let Some(group) = self.store.find_group_by_name(DEMO_GROUP)? else {
            return Ok(());
        };
        let instances = self.store.list_instances(Some(&group.id))?;
        let mut parts = Vec::new();
        for i in &instances {
            let cpu = self
                .fleet
                .with_agent(&i.id, |a| a.ring.back().and_then(|p| p.cpu_utilization))
                .flatten()
                .map_or_else(|| "  -  ".to_owned(), |c| format!("{c:4.1}%"));
            parts.push(format!("{} {} cpu {cpu}", i.id, i.lifecycle_state));
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

    /// Deletes the group with force and waits for every instance to go.
    async fn teardown(&self) {
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

/// Burns every core until dropped.
struct Burner {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Burner {
    fn start() -> Self {
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

impl Drop for Burner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
