//! The command tree. One subcommand family per resource, each in its own
//! module with its flags; the connection and output flags are global so
//! they can go anywhere on the line. `parse` holds the value parsers.

mod alarm;
mod attachment;
mod cert;
pub mod group;
mod hook;
mod instance;
mod parse;
mod rule;
mod task;
#[cfg(test)]
mod tests;
mod token;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use alarm::AlarmCmd;
pub use attachment::{DbAttach, DbCmd, DbRef, LbAttach, LbCmd, LbRef};
pub use cert::{CertCmd, CertIssue, CertRevoke};
pub use group::{ConfigCmd, GroupCmd, NotificationCmd};
pub use hook::{ActionRef, HookCmd};
pub use instance::{
    ActivityCmd, InstanceCmd, InstanceHealth, InstanceIds, InstanceIdsDesired, Watch,
};
pub use parse::to_schedule_recurrence;
pub use rule::{RuleCmd, RuleDef, ScaleArgs};
pub use task::{TaskCmd, TaskCreate, TaskModify};
pub use token::TokenCmd;

use crate::output::Output;

#[derive(Debug, Parser)]
#[command(
    name = "ebbctl",
    version,
    about = "Administer an ebb controller: scaling groups, configurations, instances, \
             activities, scaling rules, alarms, scheduled tasks, load balancers and database allow-lists",
    after_help = "Each connection setting comes from its flag, else its EBB_* variable, else the \
                  profile (--profile, $EBB_PROFILE, else `default`) in $XDG_CONFIG_HOME/ebb/ebbctl.toml \
                  (~/.config/ebb/ebbctl.toml), else the local controller whose data dir is \
                  --data-dir, $EBB_DATA or ./ebb-data, else /var/lib/ebb when only the packaged controller runs there (its endpoints.toml and pki/admin.*)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The controller's data dir [default: $EBB_DATA, else ./ebb-data, else /var/lib/ebb if a controller runs there]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The profile in ~/.config/ebb/ebbctl.toml whose settings fill in the connection flags
    /// not given [default: the `default` profile, if the file has one and no --data-dir or $EBB_DATA is given]
    #[arg(long, global = true, value_name = "NAME", env = "EBB_PROFILE")]
    pub profile: Option<String>,
    /// The controller's gRPC address, instead of the data dir's endpoints.toml; several
    /// (repeated, or comma-separated) are tried in order, and a write refused by a
    /// controller that is not the leader is made again at the leader it names
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        env = "EBB_CONTROLLER",
        value_delimiter = ',',
        action = clap::ArgAction::Append
    )]
    pub controller: Vec<String>,
    /// The name the controller's certificate must carry [default: endpoints.toml's, else the host of each --controller]
    #[arg(long, global = true, value_name = "NAME", env = "EBB_SERVER_NAME")]
    pub server_name: Option<String>,
    /// The CA certificate [default: <data-dir>/pki/ca.crt]
    #[arg(long, global = true, value_name = "FILE", env = "EBB_CA")]
    pub ca: Option<PathBuf>,
    /// The admin certificate [default: <data-dir>/pki/admin.crt]
    #[arg(long, global = true, value_name = "FILE", env = "EBB_CERT")]
    pub cert: Option<PathBuf>,
    /// The admin certificate's key [default: <data-dir>/pki/admin.key]
    #[arg(long, global = true, value_name = "FILE", env = "EBB_KEY")]
    pub key: Option<PathBuf>,
    /// Output format
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Scaling groups
    #[command(
        subcommand,
        after_help = "Examples:\n  ebbctl group list\n  ebbctl group create web --min 1 --max 10"
    )]
    Group(GroupCmd),
    /// Scaling configurations (templates for new instances)
    #[command(subcommand, after_help = "Examples:\n  ebbctl config list --group web")]
    Config(ConfigCmd),
    /// Instances of scaling groups
    #[command(
        subcommand,
        after_help = "Examples:\n  ebbctl instance list --group web -o wide --watch"
    )]
    Instance(InstanceCmd),
    /// Scaling activities (every change of capacity)
    #[command(
        subcommand,
        after_help = "Examples:\n  ebbctl activity list --group web --limit 10"
    )]
    Activity(ActivityCmd),
    /// Scaling rules: simple, step and target tracking
    #[command(
        subcommand,
        after_help = "Examples:\n  ebbctl rule list --group web\n  ebbctl rule execute add-two --group web --wait"
    )]
    Rule(RuleCmd),
    /// Change a group's capacity once, without a stored rule
    #[command(
        after_help = "Examples:\n  ebbctl scale --group web --adjustment-type QuantityChangeInCapacity --adjustment-value 2\n  \
                      ebbctl scale --group web --adjustment-type TotalCapacity --adjustment-value 6 --wait"
    )]
    Scale(ScaleArgs),
    /// Alarm (event-triggered) tasks: watch a metric, run rules
    #[command(subcommand, after_help = "Examples:\n  ebbctl alarm list --group web")]
    Alarm(AlarmCmd),
    /// Scheduled tasks: run a rule or set the group's bounds at set times
    #[command(subcommand, after_help = "Examples:\n  ebbctl task list --group web")]
    Task(TaskCmd),
    /// Webhooks told of a group's activities
    #[command(
        subcommand,
        after_help = "Examples:\n  ebbctl notification create http://hooks.local:8080/ebb --group web"
    )]
    Notification(NotificationCmd),
    /// Lifecycle hooks: hold instances on their way in or out
    #[command(
        subcommand,
        after_help = "Examples:\n  ebbctl hook list --group web\n  ebbctl hook delete drain --group web"
    )]
    Hook(HookCmd),
    /// Load balancers: a group's instances as servers of an HAProxy backend
    #[command(subcommand, after_help = "Examples:\n  ebbctl lb list --group web")]
    Lb(LbCmd),
    /// Database allow-lists: a group's instance addresses in PostgreSQL's pg_hba.conf
    #[command(subcommand, after_help = "Examples:\n  ebbctl db list --group web")]
    Db(DbCmd),
    /// Certificates issued from the local controller's CA
    #[command(
        subcommand,
        after_help = "Examples:\n  ebbctl cert list\n  ebbctl cert issue --admin alice --out-dir ./alice"
    )]
    Cert(CertCmd),
    /// Join tokens: hosts that join a group by themselves (ebb-agent join)
    #[command(
        subcommand,
        after_help = "Examples:\n  ebbctl token create --group web"
    )]
    Token(TokenCmd),
    /// Create or update a group, its configuration and its attachments from a TOML file
    #[command(
        after_help = "Examples:\n  ebbctl apply -f web.toml --dry-run\n  ebbctl apply -f web.toml --wait\n  \
                      ebbctl apply -f web.toml --prune   # also delete rules, alarms and tasks the file no longer names"
    )]
    Apply(ApplyArgs),
    /// Print a shell completion script: bash, zsh or fish
    #[command(
        after_help = "Examples:\n  ebbctl completion bash > /etc/bash_completion.d/ebbctl\n  \
                      source <(ebbctl completion bash)\n  \
                      ebbctl completion zsh > \"${fpath[1]}/_ebbctl\"\n  \
                      ebbctl completion fish > ~/.config/fish/completions/ebbctl.fish\n\n\
                      The packages install all three; this is for a hand-installed ebbctl."
    )]
    Completion {
        /// The shell the script is for
        #[arg(value_enum, value_name = "SHELL")]
        shell: Shell,
    },
    /// Write every command's man page (ebbctl.1, ebbctl-group-create.1, ...) into a directory
    #[command(hide = true)]
    Man {
        /// Where to write the pages (made if missing)
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The file describing the group and its configuration
    #[arg(short = 'f', long = "file", value_name = "FILE.toml")]
    pub file: PathBuf,
    /// Print the changes without making them
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete the rules, alarms and scheduled tasks of the file's groups that the file does not name
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub wait: Wait,
}

/// The shells `ebbctl completion` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `--wait`: follow the activity a command starts until it ends.
#[derive(Debug, Clone, Copy, Args)]
pub struct Wait {
    /// Wait until the activity this starts ends; exit 1 with its cause if it failed or was rejected
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up (exit 1) after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 600, requires = "wait",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub wait_timeout: u64,
}

/// `--client-token`: for a call that starts an activity, so that a retry
/// (after a time-out, say) starts nothing new.
#[derive(Debug, Clone, Default, Args)]
pub struct Once {
    /// Run once per token: a retry with the same token within 24 h gets the
    /// first answer and starts nothing (up to 64 printable ASCII characters)
    #[arg(long, value_name = "TOKEN")]
    pub client_token: Option<String>,
}

impl Once {
    /// The token as the API carries it: empty for none.
    pub fn token(self) -> String {
        self.client_token.unwrap_or_default()
    }
}

/// A new object's name: positional, or `--name NAME` as before (hidden,
/// kept for one release so scripts keep working).
#[derive(Debug, Clone, Args)]
pub struct NewName {
    /// The new object's name
    #[arg(
        value_name = "NAME",
        required_unless_present = "name_flag",
        conflicts_with = "name_flag"
    )]
    name: Option<String>,
    #[arg(long = "name", value_name = "NAME", hide = true)]
    name_flag: Option<String>,
}

impl NewName {
    pub fn into_string(self) -> String {
        self.name.or(self.name_flag).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        self.name
            .as_deref()
            .or(self.name_flag.as_deref())
            .unwrap_or_default()
    }
}
