//! `cert`: certificates from the local controller's CA.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Issue an agent certificate for a hand-managed host (offline: uses the CA key in the data dir)
    Issue(CertIssue),
    /// Print the CA's pin for `ebb-agent join --ca-hash` (sha256 of its public key)
    CaHash,
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
