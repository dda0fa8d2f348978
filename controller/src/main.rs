//! `ebb-controller`: parse the command line, load the config (exit 64 if it
//! is bad), start, serve until SIGINT/SIGTERM, drain.

use std::path::PathBuf;
use std::process::ExitCode;

mod demo;

use clap::{Parser, Subcommand};
use ebb_controller::config::{Config, LogFormat, StoreBackend};
use ebb_controller::server::Controller;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

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
    /// SIGHUP reads `log.level` from the config file again.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// `text` or `json` (one object a line), over `log.format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Check a configuration (with the same overrides `serve` takes) and
    /// say what it sets; exits 64, naming every bad key, if it is wrong.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
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

/// Where the configuration comes from, and the command line's overrides.
#[derive(clap::Args)]
struct ConfigArgs {
    /// controller.toml (docs/configuration.md); the embedded defaults
    /// without it.
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
}

impl ConfigArgs {
    /// The configuration, checked with the overrides; Err is printed.
    fn load(&self) -> Result<Config, String> {
        let mut config = Config::load(self.config.as_deref()).map_err(|e| e.to_string())?;
        if self.store.is_none() && self.etcd_endpoints.is_empty() {
            return Ok(config);
        }
        if let Some(store) = self.store {
            config.store.backend = match store {
                StoreArg::Sqlite => StoreBackend::Sqlite,
                StoreArg::Etcd => StoreBackend::Etcd,
            };
        }
        if !self.etcd_endpoints.is_empty() {
            config.store.etcd.endpoints = self.etcd_endpoints.clone();
        }
        config
            .validate(std::path::Path::new("(with --store/--etcd-endpoints)"))
            .map_err(|e| e.to_string())?;
        Ok(config)
    }
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
    match cli.command {
        Command::Serve { config, log_format } => serve(&config, log_format),
        Command::CheckConfig { config } => check_config(&config),
        Command::Demo {
            seconds,
            plain,
            load,
        } => {
            init_logging("error", LogFormat::Text);
            demo(seconds, plain, load)
        }
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

/// The log's filter, reloadable (`SIGHUP`).
type LogLevel = reload::Handle<EnvFilter, Registry>;

/// Logs to stderr at `EBB_LOG`'s filter, else `level`.
fn init_logging(level: &str, format: LogFormat) -> LogLevel {
    let filter = EnvFilter::try_from_env("EBB_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    handle
}

fn check_config(args: &ConfigArgs) -> ExitCode {
    let config = match args.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ebb-controller: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let source = args
        .config
        .as_deref()
        .map_or("(defaults)".into(), |p| p.display().to_string());
    let store = match config.store.backend {
        StoreBackend::Sqlite => format!("sqlite ({})", config.data_dir.join("ebb.db").display()),
        StoreBackend::Etcd => format!(
            "etcd {} under `{}`",
            config.store.etcd.endpoints.join(","),
            config.store.etcd.prefix
        ),
    };
    println!("{source}: ok");
    println!("  data_dir      {}", config.data_dir.display());
    println!("  store         {store}");
    println!("  grpc.listen   {}", config.grpc.listen);
    println!("  http.listen   {}", config.http.listen);
    println!(
        "  log           {} ({:?})",
        config.log.level, config.log.format
    );
    ExitCode::SUCCESS
}

fn serve(args: &ConfigArgs, log_format: Option<LogFormat>) -> ExitCode {
    let config = match args.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ebb-controller: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log_level = init_logging(&config.log.level, log_format.unwrap_or(config.log.format));
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
        tokio::spawn(reload_on_hangup(args.config.clone(), log_level));
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

/// On each SIGHUP, reads the config file again and applies its `log.level`;
/// a file that no longer loads keeps the level there was, and says why.
/// Nothing else is reloaded: the rest needs a restart.
async fn reload_on_hangup(path: Option<PathBuf>, level: LogLevel) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot handle SIGHUP: the log level cannot be reloaded");
        return;
    };
    while hangup.recv().await.is_some() {
        let Some(path) = &path else {
            tracing::warn!("SIGHUP: no --config file to read the log level from");
            continue;
        };
        let config = match Config::load(Some(path)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("SIGHUP: the log level stays as it was: {e}");
                continue;
            }
        };
        match level.reload(EnvFilter::new(&config.log.level)) {
            Ok(()) => tracing::warn!(level = %config.log.level, "SIGHUP: log level reloaded"),
            Err(e) => tracing::error!("SIGHUP: cannot reload the log level: {e}"),
        }
    }
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
