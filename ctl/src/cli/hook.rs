//! `hook`: lifecycle hooks and the actions instances wait on.

use clap::builder::PossibleValuesParser;
use clap::{ArgGroup, Args, Subcommand};
use ebb_core::model::hooks::{LifecycleResult, Transition};

#[derive(Debug, Clone, Subcommand)]
pub enum HookCmd {
    /// A group's lifecycle hooks
    List {
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
    /// Hold instances entering (SCALE_OUT) or leaving (SCALE_IN) a group
    /// until the hook is completed or times out. A script after `--` is run
    /// by the instance's agent; its exit status completes the action.
    Create {
        #[arg(long, value_name = "GROUP")]
        group: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = transitions())]
        transition: String,
        /// Seconds (30–21600) before the default result applies [default: 600]
        #[arg(long, value_name = "SECS")]
        heartbeat_timeout: Option<u32>,
        /// The result when nobody completes the action in time [default: CONTINUE]
        #[arg(long, value_parser = results())]
        default_result: Option<String>,
        /// Told of each action by a JSON POST (http://host:port/path)
        #[arg(long, value_name = "URL")]
        webhook: Option<String>,
        /// The script and its arguments, after `--`
        #[arg(last = true, value_name = "SCRIPT")]
        script: Vec<String>,
    },
    /// Delete a hook (waiting instances: launching ones are abandoned,
    /// leaving ones continue)
    Delete {
        #[arg(long, value_name = "GROUP")]
        group: String,
        /// Hook id or name
        #[arg(long)]
        hook: String,
    },
    /// The lifecycle actions a group's instances wait on
    Actions {
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
    /// Decide a waiting action: CONTINUE or ABANDON
    Complete {
        #[command(flatten)]
        action: ActionRef,
        #[arg(long, value_parser = results())]
        result: String,
    },
    /// Restart an action's heartbeat timeout from now
    Heartbeat {
        #[command(flatten)]
        action: ActionRef,
    },
}

/// An action by its token, or by instance and hook.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["token", "instance"])))]
pub struct ActionRef {
    /// The lifecycle action token (from the webhook or `hook actions`)
    #[arg(long)]
    pub token: Option<String>,
    /// The waiting instance (with --hook)
    #[arg(long, requires = "hook", conflicts_with = "token")]
    pub instance: Option<String>,
    /// Hook id or name (with --instance)
    #[arg(long)]
    pub hook: Option<String>,
}

fn transitions() -> PossibleValuesParser {
    PossibleValuesParser::new(Transition::ALL.iter().map(|t| t.as_str()))
}

fn results() -> PossibleValuesParser {
    PossibleValuesParser::new(LifecycleResult::ALL.iter().map(|r| r.as_str()))
}
