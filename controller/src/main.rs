//! `ebb-controller`: parse the command line, load the config (exit 64 if it
//! is bad), start, serve until SIGINT/SIGTERM, drain.

use std::path::PathBuf;
use std::process::ExitCode;

mod demo;

use clap::{Parser, Subcommand};
use ebb_controller::config::{Config, StoreBackend};
use ebb_controller::server::Controller;

/// sysexits' EX_USAGE: the configuration is wrong, nothing was started.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    version,
    about = "ebb's controller: pulls agents' metrics and scales groups"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (embedded defaults when no --config is given).
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The store, over `store.backend`: `sqlite` (one controller) or
        /// `etcd` (several, one elected to lead; docs/ha.md).
        #[arg(long, value_enum)]
        store: Option<StoreArg>,
        /// etcd members' client URLs, comma-separated, over
        /// `store.etcd.endpoints` (`http://10.0.0.1:2379,...`).
        #[arg(long, value_delimiter = ',')]
        etcd_endpoints: Vec<String>,
    },
    /// The quickstart: a controller and a scaling group of real local
    /// instances; load makes it scale out, quiet makes it scale in, a killed
    /// instance is replaced. As root with `haproxy` installed, the group sits
    /// behind a real HAProxy and each instance's request count is shown.
    /// Ends by itself and leaves nothing running.
    Demo {
        /// How long the story runs, in seconds (the clean-up comes after).
        #[arg(long, default_value_t = 90)]
        seconds: u64,
        /// Plain timestamped lines instead of a redrawn screen (for logs
        /// and tests; also used when stdout is not a terminal).
        #[arg(long)]
        plain: bool,
        /// What drives the scaling: `cpu` burns every CPU; `metric` raises
        /// a custom metric the instances read from a file (the same story
        /// on a host whose CPU is busy with something else).
        #[arg(long, value_enum, default_value_t = DemoLoad::Cpu)]
        load: DemoLoad,
    },
    /// The demo instances' workload: answers every HTTP request on
    /// 0.0.0.0:$PORT (8080) with $EBB_INSTANCE_ID. Arguments are ignored
    /// (the demo passes its data dir, so its processes can be found).
    #[command(hide = true)]
    DemoWeb {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ignored: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StoreArg {
    Sqlite,
    Etcd,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DemoLoad {
    Cpu,
    Metric,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells its own story on stdout; the controller's log would
    // scroll over it, so only errors show unless EBB_LOG asks for more.
    if let Command::DemoWeb { .. } = cli.command {
        return demo::web();
    }
    init_tracing(match cli.command {
        Command::Demo { .. } | Command::DemoWeb { .. } => "error",
        Command::Serve { .. } => "info",
    });
    match cli.command {
        Command::Serve {
            config,
            store,
            etcd_endpoints,
        } => serve(config, store, etcd_endpoints),
        Command::Demo {
            seconds,
            plain,
            load,
        } => demo(seconds, plain, load),
        Command::DemoWeb { .. } => demo::web(),
    }
}

fn demo(seconds: u64, plain: bool, load: DemoLoad) -> ExitCode {
    if seconds == 0 {
        eprintln!("ebb-controller: --seconds must be at least 1");
        return ExitCode::from(EXIT_CONFIG);
    }
    let data_dir = std::env::temp_dir().join(format!("ebb-demo-{}", std::process::id()));
    let opts = demo::DemoOptions {
        duration: std::time::Duration::from_secs(seconds),
        plain,
        data_dir: data_dir.clone(),
        load: match load {
            DemoLoad::Cpu => demo::Load::Cpu,
            DemoLoad::Metric => demo::Load::Metric,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal();
        demo::run(opts, shutdown).await
    });
    let _ = std::fs::remove_dir_all(&data_dir);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebb-controller demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EBB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn serve(
    config: Option<PathBuf>,
    store: Option<StoreArg>,
    etcd_endpoints: Vec<String>,
) -> ExitCode {
    let mut config = match Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ebb-controller: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The command line's overrides, checked again with the file.
    if store.is_some() || !etcd_endpoints.is_empty() {
        if let Some(store) = store {
            config.store.backend = match store {
                StoreArg::Sqlite => StoreBackend::Sqlite,
                StoreArg::Etcd => StoreBackend::Etcd,
            };
        }
        if !etcd_endpoints.is_empty() {
            config.store.etcd.endpoints = etcd_endpoints;
        }
        if let Err(e) = config.validate(std::path::Path::new("(with --store/--etcd-endpoints)")) {
            eprintln!("ebb-controller: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ebb-controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = shutdown_signal();
        let controller = match Controller::start(config).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ebb-controller: {e}");
                return ExitCode::FAILURE;
            }
        };
        match controller.serve(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ebb-controller: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
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
