//! `ebb-sim`: replays a load trace through a group's rules (the file
//! `ebbctl apply` takes), run by ebb-core's own decision code, and through
//! the Kubernetes HPA and AWS target-tracking baselines; reports
//! instance-hours, overload and flapping for each.
//!
//! - `trace`: trace files (CSV, Prometheus `query_range` JSON).
//! - `synth`: synthetic traces (`ebb-sim trace`).
//! - `model`: the fleet: capacity per instance, boot time, utilisation, noise.
//! - `run`: the replay loop and its scores (flaps included).
//! - `ebb`: ebb's policy, through ebb-core.
//! - `hpa`, `aws`: the baselines.
//! - `plot`: the SVG plot.
#![forbid(unsafe_code)]

mod aws;
mod ebb;
mod hpa;
mod model;
mod plot;
mod run;
mod synth;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::model::ModelParams;
use crate::run::{Outcome, Policy, replay};

/// A bad flag, file or trace (sysexits EX_USAGE, as the other binaries).
const EXIT_USAGE: u8 = 64;
/// The model's defaults: the units (100 work units/s per instance)
/// and a minute to boot, about a cloud VM's.
const DEFAULT_CAPACITY: f64 = 100.0;
const DEFAULT_BOOT_SECS: i64 = 60;

#[derive(Parser)]
#[command(
    name = "ebb-sim",
    version,
    about = "Replay load traces through ebb's scaling rules and the HPA and AWS baselines"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay a trace through the file's rules and the baselines.
    Run(RunArgs),
    /// Write a synthetic trace (CSV), deterministic from the seed.
    Trace {
        shape: synth::Shape,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Days, for diurnal (default 1) and weekly (default 14).
        #[arg(long)]
        days: Option<u32>,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The group, rules, alarms and tasks: the file `ebbctl apply -f` takes.
    #[arg(long)]
    file: PathBuf,
    /// Demand over time: CSV `unix_seconds,demand` or a Prometheus query_range JSON export.
    #[arg(long)]
    trace: PathBuf,
    /// Work units per second one instance serves.
    #[arg(long, default_value_t = DEFAULT_CAPACITY)]
    capacity: f64,
    /// Seconds from launch until an instance serves.
    #[arg(long, default_value_t = DEFAULT_BOOT_SECS)]
    boot_secs: i64,
    /// Per-instance noise on the reported utilisation (standard deviation, a fraction).
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instances in service when the replay starts; default: the file's
    /// desired_capacity (else min_size), as a freshly applied group has.
    #[arg(long)]
    start_capacity: Option<u32>,
    /// The baselines' target utilisation (%); default: the file's target-tracking rule's.
    #[arg(long)]
    target: Option<f64>,
    #[arg(long, value_enum, default_value_t = Which::All)]
    policy: Which,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
    /// With `-o json`: include the per-minute series (demand, capacity, utilisation).
    #[arg(long)]
    series: bool,
    /// Write an SVG plot of demand, capacity and utilisation, one panel per policy.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Ebb,
    Hpa,
    Aws,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(args) => run(&args),
        Cmd::Trace {
            shape,
            seed,
            days,
            output,
        } => {
            let t = synth::generate(shape, seed, days);
            std::fs::write(&output, synth::to_csv(&t))
                .map_err(|e| format!("cannot write {}: {e}", output.display()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebb-sim: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(args: &RunArgs) -> Result<(), String> {
    if !(args.capacity.is_finite() && args.capacity > 0.0) {
        return Err(format!("--capacity {} must be above 0", args.capacity));
    }
    if args.boot_secs < 0 {
        return Err(format!("--boot-secs {} must be 0 or more", args.boot_secs));
    }
    if !(args.noise.is_finite() && (0.0..=1.0).contains(&args.noise)) {
        return Err(format!("--noise {} must be within 0..=1", args.noise));
    }
    let file_name = args.file.display().to_string();
    let text =
        std::fs::read_to_string(&args.file).map_err(|e| format!("cannot read {file_name}: {e}"))?;
    let file = ebb_core::apply_file::parse(&file_name, &text)?;
    let trace = trace::load(&args.trace)?;
    let ebb = ebb::Ebb::from_file(&file).map_err(|e| format!("{file_name}: {e}"))?;
    let target = match (args.target, ebb.target()) {
        (Some(t), _) if !(t.is_finite() && t > 0.0 && t <= 100.0) => {
            return Err(format!("--target {t} must be within (0, 100]"));
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => {
            return Err(format!(
                "{file_name} has no TargetTrackingScalingRule; give the baselines' target utilisation with --target"
            ));
        }
    };
    let params = ModelParams {
        capacity: args.capacity,
        boot_secs: args.boot_secs,
        noise: args.noise,
        seed: args.seed,
    };
    let (min, max) = (file.group.min_size, file.group.max_size);
    let initial = match args.start_capacity {
        Some(n) if n < min || n > max => {
            return Err(format!(
                "--start-capacity {n} is outside the group's bounds {min}..={max}"
            ));
        }
        Some(n) => n,
        None => ebb.initial_capacity(),
    };
    let mut policies: Vec<(&str, Box<dyn Policy>)> = Vec::new();
    if matches!(args.policy, Which::Ebb | Which::All) {
        let mut ebb = ebb;
        ebb.start_at(initial);
        policies.push(("ebb", Box::new(ebb)));
    }
    if matches!(args.policy, Which::Hpa | Which::All) {
        policies.push(("hpa", Box::new(hpa::Hpa::new(target, min, max))));
    }
    if matches!(args.policy, Which::Aws | Which::All) {
        policies.push(("aws", Box::new(aws::Aws::new(target, min, max))));
    }
    let mut outcomes: Vec<Outcome> = policies
        .iter_mut()
        .map(|(name, p)| replay(name, p.as_mut(), &trace, params, initial, target))
        .collect();
    let ideal = run::ideal_instance_hours(&trace, args.capacity, target, min, max);
    if let Some(path) = &args.plot {
        let title = args
            .trace
            .file_stem()
            .map_or_else(|| "trace".into(), |s| s.to_string_lossy().into_owned());
        plot::write_svg(path, &title, &outcomes, args.capacity)?;
    }
    match args.output {
        Format::Json => {
            if !args.series {
                for o in &mut outcomes {
                    o.series.clear();
                }
            }
            let doc = json!({
                "file": file_name,
                "trace": args.trace.display().to_string(),
                "start": trace.start(),
                "end": trace.end(),
                "model": {
                    "capacity": args.capacity,
                    "boot_secs": args.boot_secs,
                    "noise": args.noise,
                    "seed": args.seed,
                },
                "target": target,
                "ideal_instance_hours": ideal,
                "results": outcomes,
            });
            let text = serde_json::to_string_pretty(&doc).expect("plain data serialises");
            emit(&format!("{text}\n"));
        }
        Format::Table => emit(&format!(
            "{}(the smallest fleet holding {target} % every second, launched instantly: {ideal:.2} instance-hours)\n",
            table(&outcomes)
        )),
    }
    Ok(())
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn table(outcomes: &[Outcome]) -> String {
    let mut s = format!(
        "{:<8} {:>15} {:>16} {:>19} {:>11} {:>6} {:>14}\n",
        "POLICY",
        "INSTANCE-HOURS",
        "OVERLOADED (S)",
        "ABOVE TARGET (S)",
        "ACTIVITIES",
        "FLAPS",
        "PEAK CAPACITY"
    );
    for o in outcomes {
        s.push_str(&format!(
            "{:<8} {:>15.2} {:>16} {:>19} {:>11} {:>6} {:>14}\n",
            o.policy,
            o.instance_hours,
            o.overloaded_secs,
            o.above_target_secs,
            o.activities,
            o.flaps,
            o.peak_capacity
        ));
    }
    s
}
