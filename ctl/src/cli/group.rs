//! `group`, `config` and `notification`: groups, their configurations and
//! webhooks.

use clap::{Args, Subcommand};

use super::NewName;
use super::parse::{cooldown, health_check_types, key_value, processes, removal_policies};

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl group create web --min 1 --max 10\n  ebbctl group list -o wide"
)]
pub enum GroupCmd {
    /// List every scaling group
    #[command(
        after_help = "Examples:\n  ebbctl group list\n  ebbctl group list -o wide\n  ebbctl group list -o json"
    )]
    List,
    /// Show one group's every field
    #[command(after_help = "Examples:\n  ebbctl group describe web")]
    Describe {
        /// The group's name or id
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
    },
    /// Create a group (Inactive until enabled)
    #[command(
        after_help = "Examples:\n  ebbctl group create web --min 1 --max 10\n  \
                      ebbctl group create batch --min 0 --max 50 --desired 2 --cooldown 60 \
                      --removal-policy NewestInstance"
    )]
    Create(GroupCreate),
    /// Change some of a group's fields
    #[command(after_help = "Examples:\n  ebbctl group modify web --max 20\n  \
                      ebbctl group modify web --active-config web-v2 --desired 4")]
    Modify(GroupModify),
    /// Enable a group: it starts converging to its desired capacity
    #[command(
        after_help = "Examples:\n  ebbctl group enable web --config web-v1\n  \
                      ebbctl group enable web --wait   # until its first activity ends"
    )]
    Enable {
        /// The group's name or id
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
        /// The configuration to make active first
        #[arg(long, value_name = "NAME_OR_ID")]
        config: Option<String>,
        #[command(flatten)]
        once: super::Once,
        #[command(flatten)]
        wait: super::Wait,
    },
    /// Disable a group: running activities finish, new ones are rejected
    #[command(after_help = "Examples:\n  ebbctl group disable web")]
    Disable {
        /// The group's name or id
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
    },
    /// Delete a group (it must have no instances unless --force)
    #[command(
        after_help = "Examples:\n  ebbctl group delete web\n  ebbctl group delete web --force"
    )]
    Delete {
        /// The group's name or id
        #[arg(value_name = "NAME_OR_ID")]
        group: String,
        /// Disable it, remove its instances, then delete it
        #[arg(long)]
        force: bool,
    },
    /// Stop some of a group's automatic processes
    #[command(after_help = "Examples:\n  ebbctl group suspend web ScaleIn AlarmNotification")]
    Suspend(GroupProcesses),
    /// Restart suspended processes
    #[command(after_help = "Examples:\n  ebbctl group resume web ScaleIn AlarmNotification")]
    Resume(GroupProcesses),
}

#[derive(Debug, Clone, Args)]
pub struct GroupProcesses {
    /// The group's name or id
    #[arg(value_name = "NAME_OR_ID")]
    pub group: String,
    /// ScaleIn, ScaleOut, HealthCheck, AlarmNotification, ScheduledAction
    #[arg(value_name = "PROCESS", required = true, value_parser = processes())]
    pub processes: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct GroupCreate {
    #[command(flatten)]
    pub name: NewName,
    /// The fewest instances the group keeps
    #[arg(long, value_name = "N")]
    pub min: u32,
    /// The most instances the group may have
    #[arg(long, value_name = "N")]
    pub max: u32,
    /// The instances it starts converging to [default: --min]
    #[arg(long, value_name = "N")]
    pub desired: Option<u32>,
    /// Default cooldown in seconds [server default: 300]
    #[arg(long, value_name = "SECS", value_parser = cooldown)]
    pub cooldown: Option<u32>,
    /// Up to two, in order [server default: OldestScalingConfiguration, OldestInstance]
    #[arg(long = "removal-policy", value_name = "P", value_parser = removal_policies())]
    pub removal_policies: Vec<String>,
    /// AGENT: the controller checks instances (docs/health.md); NONE: only by hand [server default: AGENT]
    #[arg(long, value_name = "TYPE", value_parser = health_check_types())]
    pub health_check_type: Option<String>,
    /// Health-check grace period in seconds [server default: 60]
    #[arg(long, value_name = "SECS")]
    pub grace_period: Option<u32>,
    /// Seconds between metric pulls, 1 to 300 [server default: 5]
    #[arg(long, value_name = "SECS")]
    pub sampling_interval: Option<u32>,
    /// Refuse `group delete` until this is turned off (group modify --deletion-protection false)
    #[arg(long)]
    pub deletion_protection: bool,
}

#[derive(Debug, Clone, Args)]
pub struct GroupModify {
    /// The group's name or id
    #[arg(value_name = "NAME_OR_ID")]
    pub group: String,
    #[command(flatten)]
    pub once: super::Once,
    /// Rename the group
    #[arg(long, value_name = "NEW")]
    pub name: Option<String>,
    /// The fewest instances the group keeps
    #[arg(long, value_name = "N")]
    pub min: Option<u32>,
    /// The most instances the group may have
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,
    /// The instances it converges to now
    #[arg(long, value_name = "N")]
    pub desired: Option<u32>,
    /// Default cooldown in seconds
    #[arg(long, value_name = "SECS", value_parser = cooldown)]
    pub cooldown: Option<u32>,
    /// Which instances a scale-in removes first; replaces the list (up to two)
    #[arg(long = "removal-policy", value_name = "P", value_parser = removal_policies())]
    pub removal_policies: Vec<String>,
    /// AGENT: the controller checks instances (docs/health.md); NONE: only by hand
    #[arg(long, value_name = "TYPE", value_parser = health_check_types())]
    pub health_check_type: Option<String>,
    /// The configuration new instances are launched from
    #[arg(long, value_name = "NAME_OR_ID")]
    pub active_config: Option<String>,
    /// Seconds between metric pulls, 1 to 300
    #[arg(long, value_name = "SECS")]
    pub sampling_interval: Option<u32>,
    /// Health-check grace period in seconds
    #[arg(long, value_name = "SECS")]
    pub grace_period: Option<u32>,
    /// true refuses `group delete`; false allows it
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

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl config list --group web\n  ebbctl config create web-v1 --group web -- ./serve --port 8080"
)]
pub enum ConfigCmd {
    /// List configurations, of one group or all
    #[command(
        after_help = "Examples:\n  ebbctl config list\n  ebbctl config list --group web -o wide"
    )]
    List {
        /// Only this group's (name or id)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Show one configuration's every field, its metric sources included
    #[command(after_help = "Examples:\n  ebbctl config describe web-v1 --group web")]
    Describe {
        /// The configuration's name or id
        #[arg(value_name = "NAME_OR_ID")]
        config: String,
        /// The group, when a name is used in more than one
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Create a configuration; the workload command follows `--`
    #[command(
        after_help = "Examples:\n  ebbctl config create web-v1 --group web --env PORT=8080 -- ./serve\n  \
                      ebbctl config create web-v2 --group web --from-instance i-3f2a --tag tier=web"
    )]
    Create(ConfigCreate),
    /// Change a configuration's fields; running instances keep theirs
    #[command(after_help = "Examples:\n  ebbctl config modify web-v1 --group web --env PORT=9090")]
    Modify(ConfigModify),
    /// Delete a configuration (not the active one)
    #[command(after_help = "Examples:\n  ebbctl config delete sc-5e1c")]
    Delete {
        /// The configuration's id
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ConfigCreate {
    /// The group (name or id) the configuration belongs to
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[command(flatten)]
    pub name: NewName,
    /// Copy the launch parameters of this instance's configuration; the
    /// other flags override them
    #[arg(long, value_name = "ID")]
    pub from_instance: Option<String>,
    #[command(flatten)]
    pub fields: ConfigFields,
}

#[derive(Debug, Clone, Args)]
pub struct ConfigModify {
    /// The configuration's name or id
    #[arg(value_name = "NAME_OR_ID")]
    pub config: String,
    /// The group, when a name is used in more than one
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// A new name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub fields: ConfigFields,
}

/// A configuration's launch fields; a flag left out keeps what is there
/// (on create: nothing, or what `--from-instance` copied).
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigFields {
    /// `exec` or `microvm` picks that provider; other words are your own
    /// sizing names, launched by the process provider
    #[arg(long, value_name = "T")]
    pub instance_type: Option<String>,
    /// An environment variable of the workload (repeatable; sets that key)
    #[arg(long = "env", value_name = "K=V", value_parser = key_value)]
    pub env: Vec<(String, String)>,
    /// A tag (repeatable; sets that key)
    #[arg(long = "tag", value_name = "K=V", value_parser = key_value)]
    pub tags: Vec<(String, String)>,
    /// Text handed to the instance as is
    #[arg(long, value_name = "S")]
    pub user_data: Option<String>,
    /// instance_type exec: the launch program, an absolute path
    #[arg(long, value_name = "PATH")]
    pub exec_program: Option<String>,
    /// instance_type exec: a parameter passed to the program (repeatable)
    #[arg(long = "exec-param", value_name = "K=V", value_parser = key_value)]
    pub exec_params: Vec<(String, String)>,
    /// instance_type exec: the program's environment (repeatable)
    #[arg(long = "exec-env", value_name = "K=V", value_parser = key_value)]
    pub exec_env: Vec<(String, String)>,
    /// instance_type exec: how long `launch` may run [server default: 120000]
    #[arg(long, value_name = "MS")]
    pub exec_launch_timeout_ms: Option<u64>,
    /// instance_type exec: launch attempts before failing [server default: 3]
    #[arg(long, value_name = "N")]
    pub exec_attempts: Option<u32>,
    /// instance_type microvm: virtual CPUs [server default: 1]
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u32>,
    /// instance_type microvm: memory in MiB [server default: 256]
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<u32>,
    /// The workload: program and arguments, after `--` (replaces the old one)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl notification create http://hooks.local:8080/ebb --group web\n  \
                        ebbctl notification list --group web"
)]
pub enum NotificationCmd {
    /// A group's webhooks
    #[command(after_help = "Examples:\n  ebbctl notification list --group web")]
    List {
        /// The group's name or id
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
    /// Post the group's activities to a webhook (all events unless --event)
    #[command(
        alias = "add",
        after_help = "Examples:\n  ebbctl notification create http://hooks.local:8080/ebb --group web\n  \
                      ebbctl notification create https://pager.example.com/ebb --group web --secret-file /etc/ebb/pager.secret \
                      --event SCALE_OUT_ERROR --event SCALE_IN_ERROR"
    )]
    Create {
        /// The group's name or id
        #[arg(long, value_name = "GROUP")]
        group: String,
        #[command(flatten)]
        url: WebhookUrl,
        /// SCALE_OUT_START, SCALE_OUT_SUCCESS, SCALE_OUT_ERROR, SCALE_IN_START,
        /// SCALE_IN_SUCCESS, SCALE_IN_ERROR, SCALE_REJECT (repeatable)
        #[arg(long = "event", value_name = "TYPE")]
        events: Vec<String>,
        /// Sign each POST with the secret in this file (16 to 256 bytes; a
        /// trailing newline is dropped): X-Ebb-Signature: sha256=<HMAC of the body>
        #[arg(long, value_name = "FILE")]
        secret_file: Option<std::path::PathBuf>,
        /// One attempt's limit in milliseconds, 100 to 60000 [server default: 5000]
        #[arg(long = "timeout", value_name = "MS")]
        timeout_ms: Option<u32>,
    },
    /// Stop posting to a webhook
    #[command(
        alias = "remove",
        after_help = "Examples:\n  ebbctl notification delete http://hooks.local:8080/ebb --group web"
    )]
    Delete {
        /// The group's name or id
        #[arg(long, value_name = "GROUP")]
        group: String,
        #[command(flatten)]
        url: WebhookUrl,
    },
}

/// A webhook's URL: positional, or `--url URL` as before (hidden, kept for
/// one release).
#[derive(Debug, Clone, Args)]
pub struct WebhookUrl {
    /// The webhook's URL (http://host:port/path or https://host:port/path)
    #[arg(
        value_name = "URL",
        required_unless_present = "url_flag",
        conflicts_with = "url_flag"
    )]
    url: Option<String>,
    #[arg(long = "url", value_name = "URL", hide = true)]
    url_flag: Option<String>,
}

impl WebhookUrl {
    pub fn into_string(self) -> String {
        self.url.or(self.url_flag).unwrap_or_default()
    }
}
