//! `token create | list | revoke`: join tokens. `create` prints the token
//! once, with the `ebb-agent join` command that uses it.

use std::path::Path;

use ebb_proto::v1 as pb;
use serde::Serialize;

use crate::cli::{Global, TokenCmd};
use crate::conn::Admin;
use crate::error::Result;
use crate::lookup::group_names;
use crate::output::{Output, done, print_json};
use crate::view::{Table, now_ms, rfc3339};

#[derive(Debug, Serialize)]
struct TokenView {
    id: String,
    scaling_group_id: String,
    /// Set instead of the group for a target token.
    target: Option<String>,
    created_at_ms: i64,
    expires_at_ms: i64,
    uses_left: u32,
    created_by: String,
    revoked: bool,
}

impl From<pb::JoinToken> for TokenView {
    fn from(t: pb::JoinToken) -> Self {
        Self {
            id: t.id,
            scaling_group_id: t.scaling_group_id,
            target: (!t.target.is_empty()).then_some(t.target),
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms,
            uses_left: t.uses_left,
            created_by: t.created_by,
            revoked: t.revoked,
        }
    }
}

impl TokenView {
    fn state(&self, now: i64) -> &'static str {
        if self.revoked {
            "revoked"
        } else if self.expires_at_ms <= now {
            "expired"
        } else if self.uses_left == 0 {
            "used"
        } else {
            "valid"
        }
    }
}

#[derive(Debug, Serialize)]
struct CreatedView {
    token: String,
    ca_hash: String,
    join_command: String,
    #[serde(flatten)]
    info: TokenView,
}

pub async fn run(
    admin: &mut Admin,
    cmd: TokenCmd,
    global: &Global,
    data_dir: &Path,
    out: Output,
) -> Result<()> {
    match cmd {
        TokenCmd::Create(args) => {
            let created = admin
                .create_join_token(pb::CreateJoinTokenRequest {
                    scaling_group: args.group.unwrap_or_default(),
                    ttl_secs: Some(args.ttl),
                    uses: Some(args.uses),
                    target: args.target.unwrap_or_default(),
                })
                .await?;
            let (controllers, server_name, note) =
                crate::cert::controller_for_agents(global, data_dir)?;
            // Any controller will do: one that is not the leader names it,
            // and the join is made there.
            let controller = &controllers[0];
            let mut join_command = format!(
                "ebb-agent join --controller {controller} --token {} --ca-hash {}",
                created.token, created.ca_hash
            );
            if let Some(name) = server_name
                && name != crate::conn::host_of(controller)
            {
                join_command.push_str(&format!(" --server-name {name}"));
            }
            let view = CreatedView {
                token: created.token,
                ca_hash: created.ca_hash,
                join_command,
                info: created.info.unwrap_or_default().into(),
            };
            match out {
                Output::Json => print_json(&view),
                Output::Table | Output::Wide => {
                    println!("{}", view.token);
                    println!();
                    println!(
                        "Valid until {} for {} host(s). On each host, as root:",
                        rfc3339(view.info.expires_at_ms),
                        view.info.uses_left
                    );
                    println!();
                    println!("  {}", view.join_command);
                    if let Some(target) = &view.info.target {
                        println!();
                        println!(
                            "The host becomes target {target}: its agent.toml needs a [target] section \
                             naming what it may drive (docs/targets.md)."
                        );
                    }
                    if let Some(note) = note {
                        println!();
                        println!("note: {note}");
                    }
                    Ok(())
                }
            }
        }
        TokenCmd::List { group } => {
            let tokens: Vec<TokenView> = admin
                .list_join_tokens(pb::ListJoinTokensRequest {
                    scaling_group: group.unwrap_or_default(),
                    ..Default::default()
                })
                .await?
                .tokens
                .into_iter()
                .map(TokenView::from)
                .collect();
            match out {
                Output::Json => print_json(&tokens),
                Output::Table | Output::Wide => {
                    let names = group_names(admin).await;
                    let now = now_ms();
                    let mut table =
                        Table::new(&["ID", "FOR", "STATE", "EXPIRES", "USES LEFT", "CREATED BY"]);
                    for t in &tokens {
                        table.row(vec![
                            t.id.clone(),
                            match &t.target {
                                Some(target) => format!("target {target}"),
                                None => names
                                    .get(&t.scaling_group_id)
                                    .cloned()
                                    .unwrap_or_else(|| t.scaling_group_id.clone()),
                            },
                            t.state(now).to_owned(),
                            rfc3339(t.expires_at_ms),
                            t.uses_left.to_string(),
                            t.created_by.clone(),
                        ]);
                    }
                    print!("{}", table.render());
                    Ok(())
                }
            }
        }
        TokenCmd::Revoke { id } => {
            let token: TokenView = admin
                .revoke_join_token(pb::RevokeJoinTokenRequest { id })
                .await?
                .into();
            let line = format!("revoked join token {}", token.id);
            done(out, &token, line)
        }
    }
}
