//! `ebb-controller demo`: the quickstart. A controller on embedded defaults
//! in a scratch data dir, one real `ebb-agent` on this host, and a live view
//! of the samples it sends. Half-way through, the demo burns one CPU so the
//! numbers visibly move.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::Command;

use crate::config::Config;
use crate::fleet::Fleet;
use crate::server::Controller;

/// The instance id of the demo's agent.
const DEMO_INSTANCE: &str = "demo-1";

pub struct DemoOptions {
    /// Total run time.
    pub duration: Duration,
    /// Timestamped lines instead of a redrawn screen.
    pub plain: bool,
    /// Where the demo's data dir goes (removed at the end unless kept).
    pub data_dir: PathBuf,
}

pub async fn run(opts: DemoOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let agent_bin = crate::provider::find_agent_binary(None)?;
    let config = Config {
        data_dir: opts.data_dir.clone(),
        fleet: crate::config::FleetConfig {
            sampling_interval_ms: 1000,
            ..Default::default()
        },
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
    let agent_dir = opts.data_dir.join("demo-agent");
    write_agent_files(&controller, &agent_dir, grpc)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(controller.serve(async {
        let _ = stop_rx.await;
    }));
    let mut agent = Command::new(&agent_bin)
        .arg("--config")
        .arg(agent_dir.join("agent.toml"))
        .env("EBB_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", agent_bin.display()))?;
    println!(
        "ebb demo: controller on {grpc} (metrics: http://{http}/metrics), agent {DEMO_INSTANCE} from {}",
        agent_bin.display()
    );
    println!(
        "Sampling every second for {:?}; press Ctrl-C to stop early.",
        opts.duration
    );
    let result = watch(&fleet, &opts, shutdown).await;
    // Stop the agent first so the controller sees a clean close.
    if let Some(pid) = agent.id() {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), agent.wait()).await;
    let _ = agent.kill().await;
    let _ = stop_tx.send(());
    let _ = server.await;
    result
}

fn write_agent_files(
    controller: &Controller,
    dir: &Path,
    grpc: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let ca = controller.ca();
    ca.issue_agent(DEMO_INSTANCE, ebb_certs::AGENT_VALIDITY)?
        .write(&dir.join("agent.crt"), &dir.join("agent.key"))?;
    std::fs::write(dir.join("ca.crt"), ca.cert_pem())?;
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "controller = \"{grpc}\"\nserver_name = \"localhost\"\n[tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n"
        ),
    )?;
    Ok(())
}

async fn watch(
    fleet: &Fleet,
    opts: &DemoOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let start = Instant::now();
    let burn_from = opts.duration / 3;
    let burn_until = opts.duration * 2 / 3;
    let mut burner: Option<std::thread::JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_seq = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => break,
        }
        let elapsed = start.elapsed();
        if elapsed >= opts.duration {
            break;
        }
        if burner.is_none() && elapsed >= burn_from {
            let until = start + burn_until;
            println!(
                "{} burning one CPU until t={}s to show the numbers move",
                stamp(elapsed),
                burn_until.as_secs()
            );
            burner = Some(std::thread::spawn(move || burn(until)));
        }
        let Some(line) = fleet.with_agent(DEMO_INSTANCE, |a| {
            let p = a.ring.back()?;
            if p.seq == last_seq {
                return None;
            }
            Some((p.seq, render(a.connected, p, a.missed)))
        }) else {
            if !opts.plain {
                println!("{} waiting for {DEMO_INSTANCE} to connect…", stamp(elapsed));
            }
            continue;
        };
        if let Some((seq, text)) = line {
            last_seq = seq;
            println!("{} {text}", stamp(elapsed));
        }
        let _ = std::io::stdout().flush();
    }
    if let Some(b) = burner {
        let _ = b.join();
    }
    println!(
        "{} demo over: {} samples received",
        stamp(start.elapsed()),
        fleet
            .counters
            .samples_total
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

fn stamp(elapsed: Duration) -> String {
    format!("[t={:>3}s]", elapsed.as_secs())
}

fn render(connected: bool, p: &crate::fleet::Point, missed: u64) -> String {
    let pct = |v: Option<f64>| v.map_or_else(|| "   -  ".to_owned(), |v| format!("{v:5.1}%"));
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let rate =
        |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.1} KiB/s", v / 1024.0));
    format!(
        "{DEMO_INSTANCE} {} seq={:<4} cpu={} mem={} load1={} rx={} tx={} tcp={} missed={missed}",
        if connected { "up  " } else { "DOWN" },
        p.seq,
        pct(p.cpu_utilization),
        pct(p.memory_utilization),
        num(p.load1),
        rate(p.rx_bytes_per_second),
        rate(p.tx_bytes_per_second),
        p.tcp_total
            .map_or_else(|| "-".to_owned(), |t| t.to_string()),
    )
}

/// Spins one core until `until`.
fn burn(until: Instant) {
    let mut x: u64 = 1;
    while Instant::now() < until {
        for _ in 0..100_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
    }
}
