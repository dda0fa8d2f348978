//! `JoinService.Join`: the one call a client without a certificate may
//! make. A host presents a join token and a CSR; the controller checks the
//! token, mints an instance id, signs the CSR's key for it, and attaches the
//! instance to the token's group as AttachInstances does, consuming one use
//! of the token in the same commit. Every refusal is logged with the peer
//! and the token id, and counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_core::model::Invalid;
use ebb_proto::v1 as pb;
use ebb_proto::v1::join_service_server::JoinService;
use tonic::{Code, Request, Response, Status};
use tracing::{info, warn};

use crate::api::common::{invalid, now_ms};
use crate::api::{instances, tokens};
use crate::engine::Engine;
use crate::store::{JoinScope, Write};

/// The largest Join request: a CSR ([`ebb_certs::MAX_CSR_LEN`]), a token
/// and a host name.
pub const MAX_JOIN_MESSAGE: usize = 16 * 1024;
/// Longest host name a joining host may report (DNS's limit).
const MAX_HOSTNAME_LEN: usize = 253;
/// Refused joins a peer address may make per [`FAILURE_WINDOW`] before
/// its calls are refused unread: guessing secrets stays hopeless, and an
/// operator's typos are not punished for long.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at once: a flood from many addresses costs a
/// bounded map (beyond it, new addresses are not throttled).
const MAX_REMEMBERED: usize = 10_000;
/// What a host sees for an unknown token and for a wrong secret alike, so
/// that nobody can learn which token ids exist.
const NOT_A_TOKEN: &str =
    "join token refused: no such token, or a wrong secret (ebbctl token list shows the valid ones)";

/// The join service.
pub struct JoinApi {
    engine: Arc<Engine>,
    /// Per peer address: refusals in the current window, and when it began.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl JoinApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn throttled(&self, ip: IpAddr) -> bool {
        let mut map = self.failures();
        map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        map.get(&ip).is_some_and(|(n, _)| *n >= MAX_FAILURES)
    }

    fn failed(&self, ip: IpAddr) {
        let mut map = self.failures();
        if map.len() >= MAX_REMEMBERED && !map.contains_key(&ip) {
            return;
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        entry.0 += 1;
    }
}

/// A refusal: what the host is told, and what the log says besides.
struct Refused {
    status: Status,
    detail: Option<String>,
}

impl From<Status> for Refused {
    fn from(status: Status) -> Self {
        Self {
            status,
            detail: None,
        }
    }
}

#[tonic::async_trait]
impl JoinService for JoinApi {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let addr = request.remote_addr();
        let peer = addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let counters = &self.engine.fleet.counters;
        if let Some(a) = addr
            && self.throttled(a.ip())
        {
            counters.joins_refused_total.fetch_add(1, Ordering::Relaxed);
            warn!(
                peer,
                "refused join: too many refused joins from this address"
            );
            return Err(Status::resource_exhausted(format!(
                "too many refused joins from this address; wait {} s",
                FAILURE_WINDOW.as_secs()
            )));
        }
        let req = request.into_inner();
        let token_id = tokens::split(&req.token).map_or("(malformed)", |(id, _)| id);
        let token_id = token_id.to_owned();
        match join(&self.engine, req).await {
            Ok(resp) => {
                counters.joins_total.fetch_add(1, Ordering::Relaxed);
                if resp.target_name.is_empty() {
                    info!(
                        peer,
                        "host joined with token {token_id} as instance {}", resp.instance_id
                    );
                } else {
                    info!(
                        peer,
                        "host joined with token {token_id} as target {}", resp.target_name
                    );
                }
                Ok(Response::new(resp))
            }
            Err(Refused { status, detail }) => {
                counters.joins_refused_total.fetch_add(1, Ordering::Relaxed);
                if let Some(a) = addr
                    && status.code() != Code::Internal
                {
                    self.failed(a.ip());
                }
                let why = detail.unwrap_or_else(|| status.message().to_owned());
                warn!(peer, "refused join with token {token_id}: {why}");
                Err(status)
            }
        }
    }
}

async fn join(engine: &Engine, req: pb::JoinRequest) -> Result<pb::JoinResponse, Refused> {
    let mut errors = Invalid::default();
    let parts = tokens::split(&req.token);
    if parts.is_none() {
        errors.push(
            "token",
            "is not a join token: expected `<6 characters>.<16 characters>` of a-z and 0-9, as `ebbctl token create` prints it",
        );
    }
    if req.hostname.len() > MAX_HOSTNAME_LEN {
        errors.push(
            "hostname",
            format!("is longer than {MAX_HOSTNAME_LEN} characters"),
        );
    }
    if req.csr_pem.is_empty() {
        errors.push("csr_pem", "is required");
    }
    errors.into_result().map_err(invalid)?;
    let (id, secret) = parts.expect("checked above");
    let _ops = engine.ops.lock().await;
    let store = &engine.store;
    let refuse = |code: fn(String) -> Status, told: String, detail: &str| Refused {
        status: code(told),
        detail: Some(detail.to_owned()),
    };
    let Some(mut token) = store.get_join_token(id).map_err(Status::from)? else {
        return Err(refuse(
            Status::permission_denied,
            NOT_A_TOKEN.into(),
            "no token with this id",
        ));
    };
    if !same(&token.secret_sha256, &tokens::hash(secret)) {
        return Err(refuse(
            Status::permission_denied,
            NOT_A_TOKEN.into(),
            "wrong secret",
        ));
    }
    let now = now_ms(engine);
    if token.revoked {
        return Err(refuse(
            Status::permission_denied,
            format!("join token {id} was revoked; ask for a new one (ebbctl token create)"),
            "the token was revoked",
        ));
    }
    if token.expires_at_ms <= now {
        let at = jiff::Timestamp::from_millisecond(token.expires_at_ms)
            .map_or_else(|_| token.expires_at_ms.to_string(), |t| t.to_string());
        return Err(refuse(
            Status::permission_denied,
            format!("join token {id} expired at {at}; ask for a new one (ebbctl token create)"),
            "the token has expired",
        ));
    }
    if token.uses_left == 0 {
        return Err(refuse(
            Status::permission_denied,
            format!(
                "join token {id} has been used up; ask for a new one (ebbctl token create --uses N for several hosts)"
            ),
            "the token has no uses left",
        ));
    }
    let group_id = match &token.scope {
        JoinScope::Group(g) => g.clone(),
        JoinScope::Target(name) => {
            let name = name.clone();
            let cert_pem = engine
                .sign_target_csr(&name, &req.csr_pem)
                .map_err(|e| match e {
                    crate::engine::EngineError::Certs(e) => {
                        invalid(Invalid::one("csr_pem", e.to_string()))
                    }
                    other => Status::from(other),
                })?;
            token.uses_left -= 1;
            store
                .commit(vec![Write::PutJoinToken(token)])
                .map_err(Status::from)?;
            return Ok(pb::JoinResponse {
                cert_pem,
                ca_pem: engine.ca().cert_pem().to_owned(),
                controller_server_name: engine.server_name().to_owned(),
                target_name: name,
                ..Default::default()
            });
        }
    };
    let group = store
        .get_group(&group_id)
        .map_err(Status::from)?
        .ok_or_else(|| Status::not_found(format!("the group of join token {id} is gone")))?;
    let instance_id = crate::id::new_id("i");
    // Signed (with the configured agent lifetime, and recorded in the
    // registry) before anything else is written: a bad CSR costs the token
    // nothing.
    let cert_pem = engine
        .sign_agent_csr(&instance_id, &req.csr_pem)
        .map_err(|e| match e {
            crate::engine::EngineError::Certs(e) => invalid(Invalid::one("csr_pem", e.to_string())),
            other => Status::from(other),
        })?;
    token.uses_left -= 1;
    let host = if req.hostname.is_empty() {
        String::new()
    } else {
        format!(" (host {})", req.hostname)
    };
    let what = format!("Join attached {instance_id}{host} with token {id}");
    instances::attach(
        engine,
        &group,
        std::slice::from_ref(&instance_id),
        &what,
        vec![Write::PutJoinToken(token)],
    )?;
    Ok(pb::JoinResponse {
        cert_pem,
        ca_pem: engine.ca().cert_pem().to_owned(),
        instance_id,
        controller_server_name: engine.server_name().to_owned(),
        scaling_group_id: group.id,
        scaling_group_name: group.name,
        target_name: String::new(),
    })
}

/// Compares two hashes without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}
