//! `group`, `config` and `notification`: groups, their configurations and
//! webhooks.

use clap::{Args, Subcommand};

use super::parse::{cooldown, health_check_types, key_value, processes, removal_policies};

#[derive(Debug, Clone, Subcommand)]
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
    /// Stop some of a group's automatic processes
    Suspend(GroupProcesses),
    /// Restart suspended processes
    Resume(GroupProcesses),
}

#[derive(Debug, Clone, Args)]
pub struct GroupProcesses {
    #[arg(value_name = "NAME_OR_ID")]
    pub group: String,
    /// ScaleIn, ScaleOut, HealthCheck, AlarmNotification, ScheduledAction
    #[arg(value_name = "PROCESS", required = true, value_parser = processes())]
    pub processes: Vec<String>,
}

#[derive(Debug, Clone, Args)]
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

#[derive(Debug, Clone, Args)]
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

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCmd {
    /// List configurations, of one group or all
    List {
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Show one configuration's every field, its metric sources included
    Describe {
        #[arg(value_name = "NAME_OR_ID")]
        config: String,
        /// The group, when a name is used in more than one
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Create a configuration; the workload command follows `--`
    Create(ConfigCreate),
    /// Change a configuration's fields; running instances keep theirs
    Modify(ConfigModify),
    /// Delete a configuration (not the active one)
    Delete {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ConfigCreate {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[arg(long)]
    pub name: String,
    /// Copy the launch parameters of this instance's configuration; the
    /// other flags override them
    #[arg(long, value_name = "ID")]
    pub from_instance: Option<String>,
    #[command(flatten)]
    pub fields: ConfigFields,
}

#[derive(Debug, Clone, Args)]
pub struct ConfigModify {
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
pub enum NotificationCmd {
    /// A group's webhooks
    List {
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
    /// Post the group's activities to a webhook (all events unless --event)
    Add {
        #[arg(long, value_name = "GROUP")]
        group: String,
        #[arg(long, value_name = "URL")]
        url: String,
        /// SCALE_OUT_START, SCALE_OUT_SUCCESS, SCALE_OUT_ERROR, SCALE_IN_START,
        /// SCALE_IN_SUCCESS, SCALE_IN_ERROR, SCALE_REJECT
        #[arg(long = "event", value_name = "TYPE")]
        events: Vec<String>,
    },
    /// Stop posting to a webhook
    Remove {
        #[arg(long, value_name = "GROUP")]
        group: String,
        #[arg(long, value_name = "URL")]
        url: String,
    },
}
