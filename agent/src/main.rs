//! `ebb-agent`: load the config (exit 64 if it is bad), read the host, then
//! keep a stream to the controller until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ebb_agent::collect::{self, Collectors, CustomMetrics};
use ebb_agent::config::{Config, DEFAULT_CONFIG_PATH};
use ebb_agent::conn::{self, Agent};
use ebb_agent::health::HealthChecks;
use ebb_certs::Role;

/// sysexits' EX_USAGE: the configuration is wrong, nothing was started.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    version,
    about = "ebb's host agent: reports metrics and health to the controller"
)]
struct Cli {
    #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("EBB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ebb-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // One thread: the agent's work is a few reads per pull.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebb-agent: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let ca = std::fs::read(&config.tls.ca)
        .with_context(|| format!("cannot read {}", config.tls.ca.display()))?;
    // A renewal a crash interrupted is finished (or undone) before reading.
    ebb_certs::recover_pair(&config.tls.cert, &config.tls.key)?;
    let leaf = ebb_certs::load_certs(&config.tls.cert)?;
    let identity = ebb_certs::peer_identity(&leaf[0]).with_context(|| {
        format!(
            "{}: not an ebb agent certificate",
            config.tls.cert.display()
        )
    })?;
    let Role::Instance(instance_id) = identity.role else {
        anyhow::bail!(
            "{}: {identity} is an admin certificate; an agent needs an instance certificate (ebbctl cert issue)",
            config.tls.cert.display()
        );
    };
    ebb_certs::load_key(&config.tls.key)?;
    let tls = conn::TlsFiles {
        controller: config.controller.clone(),
        server_name: config.server_name(),
        ca_pem: ca,
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
    };
    let (endpoint, validity) = tls.load()?;
    let facts = collect::host_facts(&config.proc_root)
        .with_context(|| format!("reading host facts from {}", config.proc_root.display()))?;
    let checks = config.health_checks();
    let agent = Agent {
        endpoint,
        tls,
        validity,
        instance_id: instance_id.clone(),
        facts,
        collectors: Collectors::new(&config.proc_root),
        custom: CustomMetrics::new(config.custom_metrics()),
        check_names: checks.iter().map(|c| c.name.clone()).collect(),
        checks: HealthChecks::spawn(checks),
        max_backoff: config.max_backoff(),
        hooks: std::sync::Arc::new(config.hooks.clone()),
    };
    tracing::info!(instance = %instance_id, controller = %config.controller, "ebb-agent starting");
    agent.run(shutdown).await;
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now (a signal that arrives
/// before the first poll must not kill the process) and resolves on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
