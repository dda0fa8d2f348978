//! The command tree. One subcommand family per resource; the connection and
//! output flags are global so they can go anywhere on the line.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ebb_controller::model::{
    ActivityStatus, HealthCheckType, LifecycleState, MAX_COOLDOWN_SECS, RemovalPolicy,
};

#[derive(Debug, Parser)]
#[command(
    name = "ebbctl",
    version,
    about = "Administer an ebb controller: scaling groups, configurations, instances, activities",
    after_help = "With no connection flags ebbctl uses the controller whose data dir is \
                  --data-dir, $EBB_DATA or ./ebb-data (its endpoints.toml and pki/admin.*)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The controller's data dir [default: $EBB_DATA, else ./ebb-data]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The controller's gRPC address, instead of the data dir's endpoints.toml
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub controller: Option<String>,
    /// The name the controller's certificate must carry
    #[arg(long, global = true, value_name = "NAME")]
    pub server_name: Option<String>,
    /// The CA certificate [default: <data-dir>/pki/ca.crt]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The admin certificate [default: <data-dir>/pki/admin.crt]
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The admin certificate's key [default: <data-dir>/pki/admin.key]
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Output format
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaling groups
    #[command(subcommand)]
    Group(GroupCmd),
    /// Scaling configurations (templates for new instances)
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Instances of scaling groups
    #[command(subcommand)]
    Instance(InstanceCmd),
    /// Scaling activities (every change of capacity)
    #[command(subcommand)]
    Activity(ActivityCmd),
    /// Certificates issued from the local controller's CA
    #[command(subcommand)]
    Cert(CertCmd),
    /// Create or update a group and its configuration from a TOML file
    Apply(ApplyArgs),
}

fn removal_policies() -> PossibleValuesParser {
    PossibleValuesParser::new(RemovalPolicy::ALL.iter().map(|p| p.as_str()))
}

fn health_check_types() -> PossibleValuesParser {
    PossibleValuesParser::new(HealthCheckType::ALL.iter().map(|t| t.as_str()))
}

fn lifecycle_states() -> PossibleValuesParser {
    PossibleValuesParser::new(LifecycleState::ALL.iter().map(|s| s.as_str()))
}

fn activity_statuses() -> PossibleValuesParser {
    PossibleValuesParser::new(ActivityStatus::ALL.iter().map(|s| s.as_str()))
}

fn cooldown(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if v > MAX_COOLDOWN_SECS {
        return Err(format!("must be 0 to {MAX_COOLDOWN_SECS} seconds"));
    }
    Ok(v)
}

/// `KEY=VALUE`, for `--env` and `--tag`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// List every scaling group
    List,
    /// Show one group's every field
    Describe {
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
    },
    /// Create a group (Inactive until enabled)
    Create(GroupCreate),
    /// Change some of a group's fields
    Modify(GroupModify),
    /// Enable a group: it starts converging to its desired capacity
    Enable {
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
        /// The configuration to make active first
        #[arg(long, value_name = "NAME_OR_ID")]
        config: Option<String>,
    },
    /// Disable a group: running activities finish, new ones are rejected
    Disable {
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
    },
    /// Delete a group (it must have no instances unless --force)
    Delete {
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
        /// Disable it, remove its instances, then delete it
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct GroupCreate {
    #[arg(long)]
    pub name: String,
    #[arg(long, value_name = "N")]
    pub min: u32,
    #[arg(long, value_name = "N")]
    pub max: u32,
    /// [default: --min]
    #[arg(long, value_name = "N")]
    pub desired: Option<u32>,
    /// Default cooldown in seconds [server default: 300]
    #[arg(long, value_name = "SECS", value_parser = cooldown)]
    pub cooldown: Option<u32>,
    /// Up to two, in order [server default: OldestScalingConfiguration, OldestInstance]
    #[arg(long = "removal-policy", value_name = "P", value_parser = removal_policies())]
    pub removal_policies: Vec<String>,
    #[arg(long, value_name = "TYPE", value_parser = health_check_types())]
    pub health_check_type: Option<String>,
    /// Health-check grace period in seconds [server default: 60]
    #[arg(long, value_name = "SECS")]
    pub grace_period: Option<u32>,
    /// Seconds between metric pulls, 1 to 300 [server default: 5]
    #[arg(long, value_name = "SECS")]
    pub sampling_interval: Option<u32>,
    #[arg(long)]
    pub deletion_protection: bool,
}

#[derive(Debug, Args)]
pub struct GroupModify {
    #[arg(value_name = "NAME_OR_ID")]
    pub group: String,
    /// Rename the group
    #[arg(long, value_name = "NEW")]
    pub name: Option<String>,
    #[arg(long, value_name = "N")]
    pub min: Option<u32>,
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,
    #[arg(long, value_name = "N")]
    pub desired: Option<u32>,
    #[arg(long, value_name = "SECS", value_parser = cooldown)]
    pub cooldown: Option<u32>,
    /// Replaces the list
    #[arg(long = "removal-policy", value_name = "P", value_parser = removal_policies())]
    pub removal_policies: Vec<String>,
    #[arg(long, value_name = "TYPE", value_parser = health_check_types())]
    pub health_check_type: Option<String>,
    /// The configuration new instances are launched from
    #[arg(long, value_name = "NAME_OR_ID")]
    pub active_config: Option<String>,
    #[arg(long, value_name = "SECS")]
    pub sampling_interval: Option<u32>,
    #[arg(long, value_name = "SECS")]
    pub grace_period: Option<u32>,
    #[arg(long, value_name = "BOOL")]
    pub deletion_protection: Option<bool>,
}

impl GroupModify {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.min.is_none()
            && self.max.is_none()
            && self.desired.is_none()
            && self.cooldown.is_none()
            && self.removal_policies.is_empty()
            && self.health_check_type.is_none()
            && self.active_config.is_none()
            && self.sampling_interval.is_none()
            && self.grace_period.is_none()
            && self.deletion_protection.is_none()
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// List configurations, of one group or all
    List {
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Create a configuration; the workload command follows `--`
    Create(ConfigCreate),
    /// Delete a configuration (not the active one)
    Delete {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ConfigCreate {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[arg(long)]
    pub name: String,
    #[arg(long, value_name = "T", default_value = "")]
    pub instance_type: String,
    /// An environment variable of the workload (repeatable)
    #[arg(long = "env", value_name = "K=V", value_parser = key_value)]
    pub env: Vec<(String, String)>,
    /// A tag (repeatable)
    #[arg(long = "tag", value_name = "K=V", value_parser = key_value)]
    pub tags: Vec<(String, String)>,
    #[arg(long, value_name = "S", default_value = "")]
    pub user_data: String,
    /// The workload: program and arguments, after `--` (none runs the agent alone)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum InstanceCmd {
    /// List instances
    List {
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        #[arg(long, value_name = "S", value_parser = lifecycle_states())]
        state: Option<String>,
    },
    /// Attach hand-managed hosts (their agents hold certs for these ids)
    Attach(InstanceIds),
    /// Take instances out of the group, leaving them running
    Detach(InstanceIdsDesired),
    /// Remove instances from the group, releasing those ebb created
    Remove(InstanceIdsDesired),
    /// Never remove these instances in a scale-in or health replacement
    Protect(InstanceIds),
    /// Undo `protect`
    Unprotect(InstanceIds),
    /// Take instances out of service (and of load balancers), keeping them
    Standby(InstanceIds),
    /// Put standby instances back in service
    ExitStandby(InstanceIds),
}

#[derive(Debug, Args)]
pub struct InstanceIds {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InstanceIdsDesired {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// Keep the desired capacity (the group launches replacements)
    #[arg(long)]
    pub keep_desired: bool,
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ActivityCmd {
    /// List activities, newest first
    List {
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// At most this many [server default: 50]
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        #[arg(long, value_name = "S", value_parser = activity_statuses())]
        status: Option<String>,
    },
    /// Show one activity's every field
    Describe {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Issue an agent certificate for a hand-managed host (offline: uses the CA key in the data dir)
    Issue(CertIssue),
}

#[derive(Debug, Args)]
pub struct CertIssue {
    /// The instance id the certificate names
    #[arg(long)]
    pub id: String,
    /// Where to write agent.crt, agent.key and ca.crt
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out_dir: PathBuf,
    /// Validity in days
    #[arg(long, value_name = "N", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=365))]
    pub days: u32,
    /// Overwrite existing files in the out dir
    #[arg(long)]
    pub force: bool,
    /// The CA key, when the CA is not the data dir's [default: <data-dir>/pki/ca.key]
    #[arg(long, value_name = "FILE")]
    pub ca_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The file describing the group and its configuration
    #[arg(short = 'f', long = "file", value_name = "FILE.toml")]
    pub file: PathBuf,
    /// Print the changes without making them
    #[arg(long)]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_create_takes_the_command_after_the_separator() {
        let cli = Cli::parse_from([
            "ebbctl",
            "config",
            "create",
            "--group",
            "web",
            "--name",
            "web-v1",
            "--env",
            "PORT=8080",
            "--",
            "python3",
            "-m",
            "http.server",
            "0",
        ]);
        let Command::Config(ConfigCmd::Create(c)) = cli.command else {
            panic!("parsed {:?}", cli.command)
        };
        assert_eq!(c.command, ["python3", "-m", "http.server", "0"]);
        assert_eq!(c.env, [("PORT".to_owned(), "8080".to_owned())]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["ebbctl", "group", "create", "--name", "w", "--min", "1"][..],
            &[
                "ebbctl",
                "group",
                "create",
                "--name",
                "w",
                "--min",
                "1",
                "--max",
                "2",
                "--removal-policy",
                "Oldest",
            ],
            &["ebbctl", "instance", "list", "--state", "Running"],
            &[
                "ebbctl", "config", "create", "--group", "g", "--name", "n", "--env", "NOEQUALS",
            ],
            &["ebbctl", "-o", "yaml", "group", "list"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::parse_from(["ebbctl", "group", "list", "-o", "json", "--data-dir", "/d"]);
        assert_eq!(cli.global.output, Output::Json);
        assert_eq!(cli.global.data_dir, Some(PathBuf::from("/d")));
    }
}
