//! Join tokens: create (the secret shown once), list (never the secret),
//! revoke. A token is `<id>.<secret>` as kubeadm's are: six and sixteen
//! characters of `[a-z0-9]`; the store keeps the secret's SHA-256 only.

use crate::api::Caller;
use ebb_core::model::Invalid;
use ebb_proto::v1 as pb;
use ring::rand::{SecureRandom, SystemRandom};
use tonic::Status;
use tracing::info;

use crate::api::common::{Page, find_group, group_filter, invalid, now_ms, required, time_key};
use crate::engine::Engine;
use crate::store::{JoinScope, JoinToken, Write};

/// An hour is enough to run one command on a new host.
pub const DEFAULT_TTL_SECS: u64 = 3_600;
/// A week covers a staged roll-out; longer-lived secrets belong in a vault,
/// not in a token that makes hosts.
pub const MAX_TTL_SECS: u64 = 7 * 86_400;
/// One host per token unless asked: a leaked used token is worthless.
pub const DEFAULT_USES: u32 = 1;
/// No group is allowed more instances than this through one token.
pub const MAX_USES: u32 = 1_000;
/// Live (not expired) tokens at once; each is a standing way in.
pub const MAX_LIVE_TOKENS: usize = 1_000;
/// Expired tokens stay listed this long (so `token list` explains a refused
/// join), then go at the next create.
const KEEP_EXPIRED_MS: i64 = 86_400_000;

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `(id, secret)` of a token as the host presents it; None when it is not
/// shaped like one.
pub(crate) fn split(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b));
    (ok(id, ID_LEN) && ok(secret, SECRET_LEN)).then_some((id, secret))
}

/// Lowercase hex SHA-256 of a secret.
pub(crate) fn hash(secret: &str) -> String {
    ebb_certs::hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

fn random_string(rng: &SystemRandom, len: usize) -> Result<String, Status> {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut byte = [0u8; 1];
        rng.fill(&mut byte)
            .map_err(|_| Status::internal("the system random number generator failed"))?;
        // 252 = 7 * 36: rejecting the rest keeps every character equally likely.
        if byte[0] < 252 {
            out.push(char::from(ALPHABET[usize::from(byte[0] % 36)]));
        }
    }
    Ok(out)
}

pub(crate) fn view(t: &JoinToken) -> pb::JoinToken {
    let (group, target) = match &t.scope {
        JoinScope::Group(g) => (g.clone(), String::new()),
        JoinScope::Target(n) => (String::new(), n.clone()),
    };
    pb::JoinToken {
        id: t.id.clone(),
        scaling_group_id: group,
        target,
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms,
        uses_left: t.uses_left,
        created_by: t.created_by.clone(),
        revoked: t.revoked,
    }
}

pub async fn create_join_token(
    engine: &Engine,
    caller: Caller,
    req: pb::CreateJoinTokenRequest,
) -> Result<pb::CreateJoinTokenResponse, Status> {
    let by = caller.0.uri();
    let _ops = engine.ops.lock().await;
    let mut errors = Invalid::default();
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        errors.push(
            "ttl_secs",
            format!("{ttl} is outside 1..={MAX_TTL_SECS} (7 days)"),
        );
    }
    let uses = req.uses.unwrap_or(DEFAULT_USES);
    if !(1..=MAX_USES).contains(&uses) {
        errors.push("uses", format!("{uses} is outside 1..={MAX_USES}"));
    }
    let scoped = match (req.scaling_group.is_empty(), req.target.is_empty()) {
        (false, false) => {
            errors.push(
                "target",
                "a token is for a group or for a target, not both: give scaling_group or target",
            );
            None
        }
        (true, true) => {
            errors.push(
                "scaling_group",
                "is required (or target, for a load balancer's or database's host)",
            );
            None
        }
        (true, false) => {
            if let Err(e) = ebb_certs::Identity::target(engine.trust_domain(), &req.target) {
                errors.push("target", e.to_string());
            }
            Some(JoinScope::Target(req.target.clone()))
        }
        (false, true) => None,
    };
    errors.into_result().map_err(invalid)?;
    let (scope, what) = match scoped {
        Some(scope) => (scope, format!("target {}", req.target)),
        None => {
            let group = find_group(engine, &req.scaling_group)?;
            (
                JoinScope::Group(group.id.clone()),
                format!("group {}", group.name),
            )
        }
    };
    let now = now_ms(engine);
    let store = &engine.store;
    let all = store.list_join_tokens()?;
    let live = all.iter().filter(|t| t.expires_at_ms > now).count();
    if live >= MAX_LIVE_TOKENS {
        return Err(Status::resource_exhausted(format!(
            "{live} join tokens are still valid, the most allowed is {MAX_LIVE_TOKENS}; revoke some or let them expire"
        )));
    }
    let rng = SystemRandom::new();
    let (mut id, secret) = (
        random_string(&rng, ID_LEN)?,
        random_string(&rng, SECRET_LEN)?,
    );
    while all.iter().any(|t| t.id == id) {
        id = random_string(&rng, ID_LEN)?;
    }
    let token = JoinToken {
        id: id.clone(),
        scope,
        secret_sha256: hash(&secret),
        created_at_ms: now,
        expires_at_ms: now.saturating_add(i64::try_from(ttl * 1_000).unwrap_or(i64::MAX)),
        uses_left: uses,
        created_by: by.clone(),
        revoked: false,
    };
    let mut writes: Vec<Write> = all
        .iter()
        .filter(|t| t.expires_at_ms + KEEP_EXPIRED_MS < now)
        .map(|t| Write::DeleteJoinToken(t.id.clone()))
        .collect();
    writes.push(Write::PutJoinToken(token.clone()));
    store.commit(writes)?;
    info!(token = %id, for_ = %what, ttl_secs = ttl, uses, %by, "join token created");
    Ok(pb::CreateJoinTokenResponse {
        token: format!("{id}.{secret}"),
        info: Some(view(&token)),
        ca_hash: ebb_certs::ca_hash_pem(engine.ca().cert_pem())
            .map_err(|e| Status::internal(e.to_string()))?,
    })
}

pub async fn list_join_tokens(
    engine: &Engine,
    req: pb::ListJoinTokensRequest,
) -> Result<pb::ListJoinTokensResponse, Status> {
    let group_id = group_filter(engine, &req.scaling_group)?;
    let page = Page::of(req.page_size, &req.page_token)?;
    let mut tokens = engine.store.list_join_tokens()?;
    if let Some(group_id) = group_id {
        tokens.retain(|t| matches!(&t.scope, JoinScope::Group(g) if *g == group_id));
    }
    let (tokens, next_page_token) = page.cut(tokens, |t| time_key(t.created_at_ms, &t.id));
    Ok(pb::ListJoinTokensResponse {
        tokens: tokens.iter().map(view).collect(),
        next_page_token,
    })
}

pub async fn revoke_join_token(
    engine: &Engine,
    caller: Caller,
    req: pb::RevokeJoinTokenRequest,
) -> Result<pb::JoinToken, Status> {
    let by = caller.0.uri();
    let _ops = engine.ops.lock().await;
    required("id", &req.id)?;
    // `ebbctl token revoke` takes the id or the whole token.
    let id = req.id.split('.').next().unwrap_or_default();
    let mut token = engine
        .store
        .get_join_token(id)?
        .ok_or_else(|| Status::not_found(format!("join token `{id}` does not exist")))?;
    if !token.revoked {
        token.revoked = true;
        engine
            .store
            .commit(vec![Write::PutJoinToken(token.clone())])?;
        info!(token = %id, %by, "join token revoked");
    }
    Ok(view(&token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_shaped_like_kubeadms() {
        let rng = SystemRandom::new();
        let token = format!(
            "{}.{}",
            random_string(&rng, ID_LEN).unwrap(),
            random_string(&rng, SECRET_LEN).unwrap()
        );
        assert_eq!(split(&token).map(|(id, _)| id.len()), Some(6), "{token}");
        for bad in [
            "",
            "abcdef",
            "abcdef.",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef0",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdefg",
            "abcdef.0123456789abcde-",
        ] {
            assert_eq!(split(bad), None, "{bad}");
        }
        assert_eq!(
            split("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(hash("x").len(), 64);
        assert_ne!(hash("x"), hash("y"));
    }
}
