//! Certificates: the registry of every identity's latest cert, admin certs
//! signed from a caller's CSR, the server cert's rotation on demand, and
//! the deny-list of revoked identities.

use ebb_certs::{Identity, Role};
use ebb_core::model::Invalid;
use ebb_proto::v1 as pb;
use tonic::Status;
use tracing::{info, warn};

use crate::api::Caller;
use crate::api::common::{Page, invalid, now_ms};
use crate::engine::Engine;
use crate::engine::certs::MAX_ADMIN_DAYS;
use crate::fleet::CloseReason;
use crate::store::{CertRecord, Revoked, Write};

fn entry(r: &CertRecord) -> pb::CertificateEntry {
    pb::CertificateEntry {
        identity: r.identity.clone(),
        kind: r.kind.as_str().to_owned(),
        serial: r.serial.clone(),
        not_before_ms: r.not_before_ms,
        not_after_ms: r.not_after_ms,
        issued_at_ms: r.issued_at_ms,
    }
}

pub async fn list_certificates(
    engine: &Engine,
    req: pb::ListCertificatesRequest,
) -> Result<pb::ListCertificatesResponse, Status> {
    let page = Page::of(req.page_size, &req.page_token)?;
    // By identity: an identity's latest certificate changes its expiry at
    // each renewal, so an expiry order would move it between pages.
    let (certificates, next_page_token) =
        page.cut(engine.store.list_certificates()?, |c| c.identity.clone());
    Ok(pb::ListCertificatesResponse {
        certificates: certificates.iter().map(entry).collect(),
        next_page_token,
    })
}

pub async fn issue_certificate(
    engine: &Engine,
    req: pb::IssueCertificateRequest,
) -> Result<pb::IssuedCertificate, Status> {
    let mut errors = Invalid::default();
    let target = match req.kind.as_str() {
        "admin" => false,
        "target" => true,
        other => {
            errors.push(
                "kind",
                format!(
                    "`{other}` cannot be issued here; only admin or target (agents get theirs at launch, by renewal or with ebbctl cert issue)"
                ),
            );
            false
        }
    };
    let identity = if target {
        ebb_certs::Identity::target(engine.trust_domain(), &req.name)
    } else {
        ebb_certs::Identity::admin(engine.trust_domain(), &req.name)
    };
    if let Err(e) = identity {
        errors.push("name", e.to_string());
    }
    if req.days > MAX_ADMIN_DAYS {
        errors.push(
            "days",
            format!("{} is more than {MAX_ADMIN_DAYS}", req.days),
        );
    }
    if req.csr_pem.is_empty() {
        errors.push("csr_pem", "is required");
    }
    errors.into_result().map_err(invalid)?;
    let issued = if target {
        engine.issue_target_certificate(&req.name, &req.csr_pem, req.days)
    } else {
        engine.issue_admin_certificate(&req.name, &req.csr_pem, req.days)
    };
    let (cert_pem, record) = issued.map_err(|e| match e {
        crate::engine::EngineError::Certs(e) => invalid(Invalid::one("csr_pem", e.to_string())),
        other => other.into(),
    })?;
    info!(identity = %record.identity, serial = %record.serial, kind = %req.kind, "issued a certificate");
    Ok(pb::IssuedCertificate {
        cert_pem,
        entry: Some(entry(&record)),
    })
}

pub async fn rotate_server_certificate(
    engine: &Engine,
    _req: pb::RotateServerCertificateRequest,
) -> Result<pb::IssuedCertificate, Status> {
    let (cert_pem, record) = engine.rotate_server_certificate_now("asked for by an admin")?;
    Ok(pb::IssuedCertificate {
        cert_pem,
        entry: Some(entry(&record)),
    })
}

/// A reason longer than this is a paste accident.
const MAX_REASON: usize = 1024;

fn view(r: Revoked) -> pb::RevokedCertificate {
    pb::RevokedCertificate {
        identity: r.identity,
        revoked_at_ms: r.revoked_at_ms,
        revoked_by: r.revoked_by,
        reason: r.reason,
    }
}

/// The identity `key` names: a SPIFFE URI of this trust domain, or
/// `instance/<id>` or `admin/<name>`.
fn identity(engine: &Engine, key: &str) -> Result<Identity, Status> {
    let bad = |why: String| invalid(Invalid::one("identity", why));
    let td = engine.trust_domain();
    let id = if key.starts_with("spiffe://") {
        Identity::parse(key).map_err(|e| bad(e.to_string()))?
    } else if let Some(id) = key.strip_prefix("instance/") {
        Identity::instance(td, id).map_err(|e| bad(e.to_string()))?
    } else if let Some(name) = key.strip_prefix("admin/") {
        Identity::admin(td, name).map_err(|e| bad(e.to_string()))?
    } else {
        return Err(bad(format!(
            "`{key}` is not spiffe://{td}/instance/<id>, spiffe://{td}/admin/<name>, instance/<id> or admin/<name>"
        )));
    };
    if id.trust_domain != td {
        return Err(bad(format!(
            "{id} is of trust domain {}, not this controller's {td}",
            id.trust_domain
        )));
    }
    Ok(id)
}

pub async fn revoke_certificate(
    engine: &Engine,
    caller: Caller,
    req: pb::RevokeCertificateRequest,
) -> Result<pb::RevokedCertificate, Status> {
    let _ops = engine.ops.lock().await;
    let id = identity(engine, &req.identity)?;
    if req.reason.len() > MAX_REASON {
        return Err(invalid(Invalid::one(
            "reason",
            format!(
                "is {} bytes long, at most {MAX_REASON} are allowed",
                req.reason.len()
            ),
        )));
    }
    let uri = id.uri();
    if let Some(existing) = engine
        .store
        .list_revoked()?
        .into_iter()
        .find(|r| r.identity == uri)
    {
        return Ok(view(existing));
    }
    if uri == caller.0.uri() && !req.force {
        return Err(Status::failed_precondition(format!(
            "{uri} is the certificate making this call; revoking it locks this admin out (pass --force to do it anyway)"
        )));
    }
    let record = Revoked {
        identity: uri.clone(),
        revoked_at_ms: now_ms(engine),
        revoked_by: caller.0.uri(),
        reason: req.reason,
    };
    engine
        .store
        .commit(vec![Write::PutRevoked(record.clone())])?;
    engine.deny.insert(uri.clone());
    warn!(identity = %uri, by = %record.revoked_by, reason = %record.reason, "certificate identity revoked");
    match &id.role {
        Role::Instance(instance) => {
            engine.fleet.close(instance, CloseReason::Revoked);
        }
        Role::Target(name) => {
            engine.fleet.targets.close(name);
        }
        Role::Admin(_) => {}
    }
    Ok(view(record))
}

pub async fn describe_revoked_certificates(
    engine: &Engine,
    req: pb::DescribeRevokedCertificatesRequest,
) -> Result<pb::DescribeRevokedCertificatesResponse, Status> {
    let page = Page::of(req.page_size, &req.page_token)?;
    let mut revoked = engine.store.list_revoked()?;
    revoked.retain(|r| r.revoked_at_ms >= req.since_ms);
    let (revoked, next_page_token) = page.cut(revoked, |r| r.identity.clone());
    Ok(pb::DescribeRevokedCertificatesResponse {
        certificates: revoked.into_iter().map(view).collect(),
        next_page_token,
    })
}
