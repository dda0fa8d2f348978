//! `lb` and `db`: a group's load balancers (HAProxy backends) and database
//! allow-lists (PostgreSQL `pg_hba.conf`), each driven by a target agent.

use clap::{Args, Subcommand};

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl lb attach --group web --target lb1 --backend web --port 8080\n  ebbctl lb list --group web"
)]
pub enum LbCmd {
    /// Make the group's instances servers of an HAProxy backend on a target
    /// (attaching one already attached updates its settings)
    #[command(
        after_help = "Examples:\n  ebbctl lb attach --group web --target lb1 --backend web --port 8080\n  \
                            ebbctl lb attach --group web --target lb1 --backend web --port 8080 --weight 10 --drain-timeout 60"
    )]
    Attach(LbAttach),
    /// Take the group's servers out of the backend (the attachment shows
    /// Detaching until its target confirms)
    #[command(after_help = "Examples:\n  ebbctl lb detach --group web --target lb1 --backend web")]
    Detach(LbRef),
    /// A group's load balancers, with their targets' state
    #[command(after_help = "Examples:\n  ebbctl lb list --group web")]
    List {
        /// The group's name or id
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
}

/// Numbers are taken wide and checked with the controller's own rules, so
/// `--port 70000` is refused with the range, not a type error.
#[derive(Debug, Clone, Args)]
pub struct LbAttach {
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// The target agent's name (its certificate: spiffe://<td>/target/NAME)
    #[arg(long, value_name = "NAME")]
    pub target: String,
    /// The HAProxy backend the servers are added to
    #[arg(long, value_name = "NAME")]
    pub backend: String,
    /// The port each instance serves on (1–65535)
    #[arg(long, value_name = "PORT")]
    pub port: u32,
    /// The servers' weight, 1–256 [default: 1]
    #[arg(long, value_name = "W")]
    pub weight: Option<u32>,
    /// Seconds a leaving instance drains before it is deregistered, 0–3600 [default: 30]
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct LbRef {
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// The target agent's name
    #[arg(long, value_name = "NAME")]
    pub target: String,
    /// The HAProxy backend
    #[arg(long, value_name = "NAME")]
    pub backend: String,
}

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl db attach --group web --target pg1 --database app --user app\n  ebbctl db list --group web"
)]
pub enum DbCmd {
    /// Put the group's instance addresses on a PostgreSQL allow-list on a
    /// target (attaching one already attached updates its auth method)
    #[command(
        after_help = "Examples:\n  ebbctl db attach --group web --target pg1 --database app --user app\n  \
                            ebbctl db attach --group web --target pg1 --database all --user app --auth-method md5"
    )]
    Attach(DbAttach),
    /// Remove the group's lines from the allow-list
    #[command(
        after_help = "Examples:\n  ebbctl db detach --group web --target pg1 --database app --user app"
    )]
    Detach(DbRef),
    /// A group's database allow-lists, with their targets' state
    #[command(after_help = "Examples:\n  ebbctl db list --group web")]
    List {
        /// The group's name or id
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DbAttach {
    #[command(flatten)]
    pub which: DbRef,
    /// The pg_hba method of the lines [default: scram-sha-256]
    #[arg(long, value_name = "METHOD")]
    pub auth_method: Option<String>,
}

/// An allow-list by its target, database and user.
#[derive(Debug, Clone, Args)]
pub struct DbRef {
    /// The group's name or id
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// The target agent's name (its certificate: spiffe://<td>/target/NAME)
    #[arg(long, value_name = "NAME")]
    pub target: String,
    /// The database of the pg_hba lines (`all` matches every one)
    #[arg(long, value_name = "NAME")]
    pub database: String,
    /// The user of the pg_hba lines (`all` matches every one)
    #[arg(long, value_name = "NAME")]
    pub user: String,
}
