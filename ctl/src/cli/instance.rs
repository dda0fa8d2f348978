//! `instance` and `activity`: a group's instances and its changes of
//! capacity.

use clap::{Args, Subcommand};

use super::parse::{activity_statuses, lifecycle_states, rfc3339_ms};

#[derive(Debug, Clone, Subcommand)]
pub enum InstanceCmd {
    /// List instances
    List {
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        #[arg(long, value_name = "S", value_parser = lifecycle_states())]
        state: Option<String>,
    },
    /// Show one instance's every field, and where it stands on each of its
    /// group's load balancers and database allow-lists
    Describe {
        #[arg(value_name = "ID")]
        id: String,
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
    /// Mark instances Healthy or Unhealthy by hand (Unhealthy ones are replaced)
    SetHealth(InstanceHealth),
}

#[derive(Debug, Clone, Args)]
pub struct InstanceHealth {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// Healthy or Unhealthy
    #[arg(long, value_name = "STATUS")]
    pub status: String,
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct InstanceIds {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct InstanceIdsDesired {
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// Keep the desired capacity (the group launches replacements)
    #[arg(long)]
    pub keep_desired: bool,
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ActivityCmd {
    /// List activities, newest first
    List {
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// At most this many, fetched page by page [default: 50, or all with --since]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        #[arg(long, value_name = "S", value_parser = activity_statuses())]
        status: Option<String>,
        /// Only activities started at or after this time (filtered by the controller)
        #[arg(long, value_name = "RFC3339", value_parser = rfc3339_ms)]
        since: Option<i64>,
    },
    /// Show one activity's every field
    Describe {
        #[arg(value_name = "ID")]
        id: String,
    },
}
