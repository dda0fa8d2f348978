//! `token`: join tokens, with which a host joins a group by itself
//! (`ebb-agent join`).

use clap::{Args, Subcommand};

#[derive(Debug, Clone, Subcommand)]
#[command(
    after_help = "Examples:\n  ebbctl token create --group web --ttl 30m --uses 5\n  ebbctl token list"
)]
pub enum TokenCmd {
    /// Create a join token for a group, or for a target (a load balancer's or database's host);
    /// prints it (once) and the `ebb-agent join` command that uses it
    #[command(after_help = "Examples:\n  ebbctl token create --group web\n  \
                            ebbctl token create --group web --ttl 2d --uses 20\n  ebbctl token create --target lb1")]
    Create(TokenCreate),
    /// List join tokens (never their secrets)
    #[command(after_help = "Examples:\n  ebbctl token list\n  ebbctl token list --group web")]
    List {
        /// Only the tokens that attach hosts to this group (name or id)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Revoke a join token: no host can join with it any more
    #[command(after_help = "Examples:\n  ebbctl token revoke k3x9qa")]
    Revoke {
        /// The token's id (the part before the dot)
        id: String,
    },
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("scope").required(true).args(["group", "target"]))]
pub struct TokenCreate {
    /// The group a host joining with the token is attached to
    #[arg(long)]
    pub group: Option<String>,
    /// The target a host joining with the token becomes (spiffe://<domain>/target/NAME)
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// How long the token is valid: 90s, 30m, 1h, 2d (at most 7d)
    #[arg(long, value_name = "DURATION", default_value = "1h",
          value_parser = super::parse::ttl_secs)]
    pub ttl: u64,
    /// How many hosts may join with it (1 to 1000)
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub uses: u32,
}
