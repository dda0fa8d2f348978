//! `client_token`: an admin call that starts an activity, retried with
//! the same token within 24 h (after a time-out, say), gets the first
//! call's answer and starts nothing more. The same token on a different
//! request is refused: it names another call.

use ebb_core::model::Invalid;
use prost::Message;
use ring::digest::{SHA256, digest};
use tokio::sync::Mutex;
use tonic::Status;

use crate::api::common::invalid;
use crate::engine::Engine;
use crate::engine::activity::CLIENT_TOKEN_TTL_MS;
use crate::store::{ClientToken, Write};

/// The longest token, as ESS's ClientToken.
pub const MAX_TOKEN_LEN: usize = 64;

/// Calls with a token run one at a time, so a retry that arrives while the
/// first is still running waits for its answer instead of starting again.
#[derive(Debug, Default)]
pub struct Tokens(Mutex<()>);

/// Why `token` cannot be used, if it cannot.
fn check(token: &str) -> Result<(), Status> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid(Invalid::one(
            "client_token",
            format!("is {} characters; at most {MAX_TOKEN_LEN}", token.len()),
        )));
    }
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(invalid(Invalid::one(
            "client_token",
            format!(
                "has {}; use printable ASCII without spaces",
                c.escape_debug()
            ),
        )));
    }
    Ok(())
}

/// Runs `call` once per token: `request` is the call's request with its
/// token cleared (what the token must keep naming).
pub async fn once<Req, Resp, F>(
    engine: &Engine,
    tokens: &Tokens,
    method: &str,
    token: String,
    request: &Req,
    call: F,
) -> Result<Resp, Status>
where
    Req: Message,
    Resp: Message + Default,
    F: Future<Output = Result<Resp, Status>>,
{
    if token.is_empty() {
        return call.await;
    }
    check(&token)?;
    let _one = tokens.0.lock().await;
    let mut hashed = method.as_bytes().to_vec();
    hashed.push(0);
    hashed.extend(request.encode_to_vec());
    let fingerprint = ebb_certs::hex(digest(&SHA256, &hashed).as_ref());
    let now = engine.clock.now_ms();
    if let Some(seen) = engine.store.get_client_token(&token)?
        && now - seen.created_at_ms < CLIENT_TOKEN_TTL_MS
    {
        if seen.fingerprint != fingerprint {
            return Err(invalid(Invalid::one(
                "client_token",
                format!(
                    "`{token}` was used for another request ({}) within 24 h; \
                     a retry must repeat the request exactly, a new request needs a new token",
                    seen.method
                ),
            )));
        }
        let bytes = ebb_certs::from_hex(&seen.response_hex).ok_or_else(|| {
            Status::internal(format!(
                "client_token `{token}`: its stored answer is corrupt"
            ))
        })?;
        return Resp::decode(bytes.as_slice()).map_err(|e| {
            Status::internal(format!("client_token `{token}`: its stored answer: {e}"))
        });
    }
    // Only a success is kept: a refused call may be retried with its token.
    let answer = call.await?;
    engine
        .store
        .commit(vec![Write::PutClientToken(ClientToken {
            token,
            method: method.to_owned(),
            fingerprint,
            response_hex: ebb_certs::hex(&answer.encode_to_vec()),
            created_at_ms: now,
        })])?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_short_printable_ascii() {
        assert!(check("retry-2026-11-29T12:00:00Z#1").is_ok());
        assert!(check(&"x".repeat(64)).is_ok());
        let long = check(&"x".repeat(65)).unwrap_err();
        assert!(
            long.message().starts_with("client_token: is 65"),
            "{long:?}"
        );
        let space = check("a b").unwrap_err();
        assert!(space.message().contains("printable ASCII"), "{space:?}");
        assert!(check("é").is_err());
    }
}
