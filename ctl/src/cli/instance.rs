//! `instance` and `activity`: a group's instances and its changes of
//! capacity.

use clap::{Args, Subcommand};

use super::parse::{activity_statuses, lifecycle_states, rfc3339_ms};

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl instance list --group web -o wide\n  ebbctl instance protect --group web i-3f2a"
)]
pub enum InstanceCmd {
    /// List instances
    #[command(
        after_help = "Examples:\n  ebbctl instance list\n  ebbctl instance list --group web --state InService -o wide\n  \
                      ebbctl instance list --group web --watch"
    )]
    List {
        /// Only this group's (name or id)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// Only instances in this lifecycle state
        #[arg(long, value_name = "S", value_parser = lifecycle_states())]
        state: Option<String>,
        /// Only instances created at or after this time (filtered by the controller)
        #[arg(long, value_name = "RFC3339", value_parser = rfc3339_ms)]
        since: Option<i64>,
        #[command(flatten)]
        watch: Watch,
    },
    /// Show one instance's every field, and where it stands on each of its
    /// group's load balancers and database allow-lists
    #[command(after_help = "Examples:\n  ebbctl instance describe i-3f2a")]
    Describe {
        /// The instance's id
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Attach hand-managed hosts (their agents hold certs for these ids)
    #[command(after_help = "Examples:\n  ebbctl instance attach --group web host-a host-b")]
    Attach {
        #[command(flatten)]
        instances: InstanceIds,
        #[command(flatten)]
        once: super::Once,
    },
    /// Take instances out of the group, leaving them running
    #[command(
        after_help = "Examples:\n  ebbctl instance detach --group web i-3f2a\n  \
                            ebbctl instance detach --group web --keep-desired i-3f2a"
    )]
    Detach(InstanceIdsDesired),
    /// Remove instances from the group, releasing those ebb created
    #[command(after_help = "Examples:\n  ebbctl instance remove --group web i-3f2a i-7b10")]
    Remove(InstanceIdsDesired),
    /// Never remove these instances in a scale-in or health replacement
    #[command(after_help = "Examples:\n  ebbctl instance protect --group web i-3f2a")]
    Protect(InstanceIds),
    /// Undo `protect`
    #[command(after_help = "Examples:\n  ebbctl instance unprotect --group web i-3f2a")]
    Unprotect(InstanceIds),
    /// Take instances out of service (and of load balancers), keeping them
    #[command(after_help = "Examples:\n  ebbctl instance standby --group web i-3f2a")]
    Standby(InstanceIds),
    /// Put standby instances back in service
    #[command(after_help = "Examples:\n  ebbctl instance exit-standby --group web i-3f2a")]
    ExitStandby(InstanceIds),
    /// Mark instances Healthy or Unhealthy by hand (Unhealthy ones are replaced)
    #[command(
        after_help = "Examples:\n  ebbctl instance set-health --group web --status Unhealthy i-3f2a"
    )]
    SetHealth(InstanceHealth),
}

/// `--watch`: list again on an interval until interrupted.
#[derive(Debug, Clone, Copy, Args)]
pub struct Watch {
    /// Clear the screen and list again every --interval seconds, until Ctrl-C
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// With --watch: seconds between listings
    #[arg(long, value_name = "SECS", default_value_t = 2, requires = "watch",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// With --watch: stop after this many listings [default: until Ctrl-C]
    #[arg(long, value_name = "N", requires = "watch",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub watch_count: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct InstanceHealth {
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// Healthy or Unhealthy
    #[arg(long, value_name = "STATUS")]
    pub status: String,
    /// The instances' ids
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct InstanceIds {
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// The instances' ids
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct InstanceIdsDesired {
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    #[command(flatten)]
    pub once: super::Once,
    /// Keep the desired capacity (the group launches replacements)
    #[arg(long)]
    pub keep_desired: bool,
    /// The instances' ids
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl activity list --group web\n  ebbctl activity describe act-19ab"
)]
pub enum ActivityCmd {
    /// List activities, newest first
    #[command(
        after_help = "Examples:\n  ebbctl activity list --group web --limit 10\n  \
                      ebbctl activity list --status Failed --since 2026-01-01T00:00:00Z -o wide\n  \
                      ebbctl activity list --group web --watch"
    )]
    List {
        /// Only this group's (name or id)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// At most this many, fetched page by page [default: 50, or all with --since]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Only activities with this status
        #[arg(long, value_name = "S", value_parser = activity_statuses())]
        status: Option<String>,
        /// Only activities started at or after this time (filtered by the controller)
        #[arg(long, value_name = "RFC3339", value_parser = rfc3339_ms)]
        since: Option<i64>,
        #[command(flatten)]
        watch: Watch,
    },
    /// Show one activity's every field
    #[command(after_help = "Examples:\n  ebbctl activity describe act-19ab")]
    Describe {
        /// The activity's id
        #[arg(value_name = "ID")]
        id: String,
    },
}
