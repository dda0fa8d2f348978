//! `ebbctl`, ebb's admin CLI.
//!
//! Modules, each importing only those listed below it:
//!
//! - `commands`: runs a parsed command; the `group`, `config`, `instance`,
//!   `activity` and `notification` families.
//! - `apply`: `apply -f FILE.toml`, the declarative group, configuration,
//!   rules, alarms and scheduled tasks.
//! - `automation`: the `rule`, `scale`, `alarm` and `task` families.
//! - `hook`: lifecycle hooks and their actions.
//! - `attachment`: the `lb` and `db` families, a group's load balancers and
//!   database allow-lists.
//! - `cert`: `cert issue`, agent certificates for hand-managed hosts and
//!   target hosts;
//!   `cert revoke` and `cert revoked`, the controller's deny-list.
//!   `cert ca-hash`, the CA's pin.
//! - `token`: join tokens, and the `ebb-agent join` command that uses one.
//! - `wait`: `--wait`, following an activity or a group until it settles.
//! - `lookup`: group and rule ids to names, for listings.
//! - `conn`: finding the local controller and connecting over mTLS.
//! - `profile`: the profile file, named connection settings.
//! - `view`: plain serialisable views of the API's messages, tables, times.
//! - `convert`: health checks and metric sources between proto and domain.
//! - `manual`: `completion` and `man`, made from the command tree.
//! - `cli`: the command tree, its flags and their value parsers (clap).
//! - `output`: the output format, and printing JSON or a line.
//! - `error`: one-line errors and the exit codes they map to.
#![forbid(unsafe_code)]

mod apply;
mod attachment;
mod automation;
mod cert;
mod cli;
mod commands;
mod configure;
mod conn;
mod convert;
mod error;
mod hook;
mod lookup;
mod manual;
mod output;
mod profile;
mod token;
mod view;
mod wait;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit 2 through clap, before anything else happens.
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ebbctl: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_ERROR);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebbctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
