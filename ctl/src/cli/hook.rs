//! `hook`: lifecycle hooks and the actions instances wait on.

use clap::builder::PossibleValuesParser;
use clap::{ArgGroup, Args, Subcommand};

use super::NewName;
use ebb_core::model::hooks::{LifecycleResult, Transition};

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl hook create drain --group web --transition SCALE_IN -- /usr/local/bin/drain\n  \
                        ebbctl hook actions --group web"
)]
pub enum HookCmd {
    /// A group's lifecycle hooks
    #[command(after_help = "Examples:\n  ebbctl hook list --group web")]
    List {
        /// The group's name or id
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
    /// Hold instances entering (SCALE_OUT) or leaving (SCALE_IN) a group
    /// until the hook is completed or times out. A script after `--` is run
    /// by the instance's agent; its exit status completes the action.
    #[command(
        after_help = "Examples:\n  ebbctl hook create warm --group web --transition SCALE_OUT --heartbeat-timeout 120 \
                      -- /usr/local/bin/warm-cache\n  \
                      ebbctl hook create drain --group web --transition SCALE_IN --default-result CONTINUE \
                      --webhook http://ops.local:8080/drain"
    )]
    Create {
        /// The group's name or id
        #[arg(long, value_name = "GROUP")]
        group: String,
        #[command(flatten)]
        name: NewName,
        /// SCALE_OUT holds launching instances, SCALE_IN leaving ones
        #[arg(long, value_parser = transitions())]
        transition: String,
        /// Seconds (30–21600) before the default result applies [default: 600]
        #[arg(long, value_name = "SECS")]
        heartbeat_timeout: Option<u32>,
        /// The result when nobody completes the action in time [default: CONTINUE]
        #[arg(long, value_parser = results())]
        default_result: Option<String>,
        /// Told of each action by a JSON POST (http:// or https://)
        #[arg(long, value_name = "URL")]
        webhook: Option<String>,
        /// Sign each POST to --webhook with the secret in this file (16 to 256
        /// bytes; a trailing newline is dropped): X-Ebb-Signature: sha256=<HMAC of the body>
        #[arg(long, value_name = "FILE", requires = "webhook")]
        secret_file: Option<std::path::PathBuf>,
        /// The script and its arguments, after `--`
        #[arg(last = true, value_name = "SCRIPT")]
        script: Vec<String>,
    },
    /// Delete a hook (waiting instances: launching ones are abandoned,
    /// leaving ones continue)
    #[command(after_help = "Examples:\n  ebbctl hook delete drain --group web")]
    Delete {
        /// The group's name or id
        #[arg(long, value_name = "GROUP")]
        group: String,
        #[command(flatten)]
        hook: HookName,
    },
    /// The lifecycle actions a group's instances wait on
    #[command(after_help = "Examples:\n  ebbctl hook actions --group web")]
    Actions {
        /// The group's name or id
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
    /// Decide a waiting action: CONTINUE or ABANDON
    #[command(
        after_help = "Examples:\n  ebbctl hook complete --token 6f0c... --result CONTINUE\n  \
                      ebbctl hook complete --instance i-3f2a --hook drain --result ABANDON"
    )]
    Complete {
        #[command(flatten)]
        action: ActionRef,
        /// CONTINUE lets the instance go on; ABANDON gives up on a launching one
        #[arg(long, value_parser = results())]
        result: String,
    },
    /// Restart an action's heartbeat timeout from now
    #[command(after_help = "Examples:\n  ebbctl hook heartbeat --instance i-3f2a --hook drain")]
    Heartbeat {
        #[command(flatten)]
        action: ActionRef,
    },
}

/// A hook by id or name: positional, or `--hook` as before (hidden, kept
/// for one release).
#[derive(Debug, Clone, Args)]
pub struct HookName {
    /// The hook's name or id
    #[arg(
        value_name = "NAME_OR_ID",
        required_unless_present = "hook_flag",
        conflicts_with = "hook_flag"
    )]
    hook: Option<String>,
    #[arg(long = "hook", value_name = "NAME_OR_ID", hide = true)]
    hook_flag: Option<String>,
}

impl HookName {
    pub fn into_string(self) -> String {
        self.hook.or(self.hook_flag).unwrap_or_default()
    }
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
