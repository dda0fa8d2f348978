//! `cert`: certificates from the local controller's CA.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl cert issue --admin alice --out-dir ./alice\n  ebbctl cert list"
)]
pub enum CertCmd {
    /// Issue an agent certificate for a hand-managed host (--id; offline: uses the CA key in
    /// the data dir), an admin certificate (--admin), or a target certificate for a load
    /// balancer's or database's host (--target; the controller signs a key made here)
    #[command(
        after_help = "Examples:\n  ebbctl cert issue --id host-a --out-dir /etc/ebb\n  \
                      ebbctl cert issue --admin alice --out-dir ./alice --days 90\n  \
                      ebbctl cert issue --target lb1 --out-dir ./lb1"
    )]
    Issue(CertIssue),
    /// Every identity the controller issued a certificate for, soonest expiry first
    #[command(after_help = "Examples:\n  ebbctl cert list\n  ebbctl cert list -o json")]
    List,
    /// Re-issue the controller's server certificate now (e.g. after changing grpc.server_names);
    /// open connections keep the old one
    #[command(after_help = "Examples:\n  ebbctl cert rotate-server")]
    RotateServer,
    /// Revoke an identity: its certificates are refused from now on and its open stream is closed (no undo)
    #[command(
        after_help = "Examples:\n  ebbctl cert revoke i-3f9a0c1b2d4e --reason 'host lost'\n  \
                            ebbctl cert revoke --admin alice --reason 'left the team'"
    )]
    Revoke(CertRevoke),
    /// List the revoked identities
    #[command(after_help = "Examples:\n  ebbctl cert revoked")]
    Revoked,
    /// Print the CA's pin for `ebb-agent join --ca-hash` (sha256 of its public key)
    #[command(after_help = "Examples:\n  ebbctl cert ca-hash")]
    CaHash,
}

#[derive(Debug, Clone, Args)]
pub struct CertRevoke {
    /// An instance id, or with --admin an admin name, or a full spiffe:// URI
    #[arg(value_name = "ID")]
    pub id: String,
    /// ID is an admin name, not an instance id
    #[arg(long)]
    pub admin: bool,
    /// Why, kept with the entry
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
    /// Allow revoking the admin certificate ebbctl is calling with
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("holder").required(true).args(["id", "admin", "target"]))]
pub struct CertIssue {
    /// The instance id an agent certificate names
    #[arg(long)]
    pub id: Option<String>,
    /// The admin name an admin certificate names (spiffe://<domain>/admin/NAME)
    #[arg(long, value_name = "NAME")]
    pub admin: Option<String>,
    /// The target name a target agent's certificate names (spiffe://<domain>/target/NAME)
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// Where to write agent.crt, agent.key and ca.crt (admin.crt, admin.key and ca.crt with --admin)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out_dir: PathBuf,
    /// Validity in days [default: 7 for an agent, 365 for an admin or a target]
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: Option<u32>,
    /// Overwrite existing files in the out dir
    #[arg(long)]
    pub force: bool,
    /// The CA key, when the CA is not the data dir's [default: <data-dir>/pki/ca.key]
    #[arg(long, value_name = "FILE")]
    pub ca_key: Option<PathBuf>,
}
