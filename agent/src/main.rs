//! `ebb-agent`: load the config (exit 64 if it is bad), read the host, then
//! keep a stream to the controller until SIGTERM. `ebb-agent join` first
//! gets the host's certificate with a join token, then does the same.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ebb_agent::collect::{self, Collectors, CustomMetrics};
use ebb_agent::config::{Config, DEFAULT_CONFIG_PATH};
use ebb_agent::conn::{self, Agent};
use ebb_agent::follow::Rotation;
use ebb_agent::health::HealthChecks;
use ebb_agent::join::{JoinArgs, JoinError};
use ebb_agent::target::Target;
use ebb_certs::Role;

/// sysexits' EX_USAGE: the configuration is wrong, nothing was started.
const EXIT_CONFIG: u8 = 64;
/// sysexits' EX_UNAVAILABLE: `join` could not reach the controller.
const EXIT_UNREACHABLE: u8 = 69;
/// sysexits' EX_NOPERM: `join` was refused (a bad token, or not the pinned CA).
const EXIT_REFUSED: u8 = 77;

#[derive(Parser)]
#[command(
    version,
    about = "ebb's host agent: reports metrics and health to the controller"
)]
struct Cli {
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Join a scaling group with a join token (ebbctl token create), write
    /// this host's certificate, key and CA where the config says, then run
    Join(JoinCli),
}

#[derive(Args)]
struct JoinCli {
    /// The controller's gRPC address, host:port
    #[arg(long, value_name = "HOST:PORT")]
    controller: String,
    /// The join token, as `ebbctl token create` printed it
    #[arg(long)]
    token: String,
    /// The controller's CA pinned by hash, sha256:HEX (`ebbctl cert ca-hash`)
    #[arg(long, value_name = "sha256:HEX")]
    ca_hash: String,
    /// The name the controller's certificate carries [default: the host of --controller]
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Join again even though this host has a certificate (it gets a new identity)
    #[arg(long)]
    force: bool,
    /// Exit after joining instead of running (when a service manager runs the agent)
    #[arg(long)]
    no_run: bool,
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
    // One thread: the agent's work is a few reads per pull.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    if let Some(Command::Join(j)) = cli.command {
        let args = JoinArgs {
            controller: j.controller,
            token: j.token,
            ca_hash: j.ca_hash,
            config: cli.config.clone(),
            server_name: j.server_name,
            force: j.force,
        };
        match runtime.block_on(ebb_agent::join::join(&args)) {
            Ok(joined) => {
                let who = if joined.target.is_empty() {
                    format!("instance {} of group {}", joined.instance_id, joined.group)
                } else {
                    format!(
                        "target {} (its agent.toml needs a [target] section saying what it drives)",
                        joined.target
                    )
                };
                let at = joined.leader.as_ref().map_or_else(String::new, |leader| {
                    format!(
                        " at the leader, {leader} ({} is not the leader)",
                        args.controller
                    )
                });
                eprintln!(
                    "ebb-agent: joined as {who}{at}; wrote {}, {} (mode 0600) and {}",
                    joined.cert.display(),
                    joined.key.display(),
                    joined.ca.display()
                );
                if j.no_run {
                    return ExitCode::SUCCESS;
                }
            }
            Err(e) => {
                eprintln!("ebb-agent join: {e}");
                return ExitCode::from(match e {
                    JoinError::Usage(_) => EXIT_CONFIG,
                    JoinError::Refused(_) => EXIT_REFUSED,
                    JoinError::Unreachable(_) => EXIT_UNREACHABLE,
                });
            }
        }
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ebb-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
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
    let cert = config.tls.cert.display();
    let target = match (&identity.role, &config.target) {
        (Role::Admin(_), _) => anyhow::bail!(
            "{cert}: {identity} is an admin certificate; an agent needs an instance certificate (ebbctl cert issue) or a target certificate (ebbctl cert issue --target NAME)"
        ),
        (Role::Instance(id), Some(_)) => anyhow::bail!(
            "agent.toml has a [target] section, but {cert} is instance {id}'s certificate: a target's agent needs a target certificate (ebbctl cert issue --target NAME)"
        ),
        (Role::Target(name), None) => anyhow::bail!(
            "{cert} is target {name}'s certificate, but agent.toml has no [target] section saying what it may drive ([target.haproxy] socket, or [target.postgres] hba_file)"
        ),
        (Role::Instance(_), None) => None,
        (Role::Target(name), Some(t)) => Some(Target::spawn(name.clone(), t)?),
    };
    ebb_certs::load_key(&config.tls.key)?;
    let tls = conn::TlsFiles {
        server_name: config.server_name.clone(),
        ca_pem: ca,
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
    };
    let credentials = tls.load()?;
    // A CA or key TLS cannot use is a start-up error, not a retried dial.
    for addr in &config.controller {
        tls.endpoint(&credentials, addr).context("TLS setup")?;
    }
    let facts = collect::host_facts(&config.proc_root)
        .with_context(|| format!("reading host facts from {}", config.proc_root.display()))?;
    let checks = config.health_checks();
    let agent = Agent {
        controllers: Rotation::new(config.controller.clone()),
        tls,
        credentials,
        role: identity.role.clone(),
        target,
        facts,
        collectors: Collectors::new(&config.proc_root),
        custom: CustomMetrics::new(config.custom_metrics()),
        check_names: checks.iter().map(|c| c.name.clone()).collect(),
        checks: HealthChecks::spawn(checks),
        max_backoff: config.max_backoff(),
        hooks: std::sync::Arc::new(config.hooks.clone()),
    };
    let controllers = config.controller.join(", ");
    tracing::info!(identity = %identity, controller = %controllers, "ebb-agent starting");
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
