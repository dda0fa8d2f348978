//! Certificates: the registry of every identity's latest cert, admin certs
//! signed from a caller's CSR, and the server cert's rotation on demand.

use ebb_core::model::Invalid;
use ebb_proto::v1 as pb;
use tonic::Status;
use tracing::info;

use crate::api::common::invalid;
use crate::engine::Engine;
use crate::engine::certs::MAX_ADMIN_DAYS;
use crate::store::CertRecord;

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
    _req: pb::ListCertificatesRequest,
) -> Result<pb::ListCertificatesResponse, Status> {
    Ok(pb::ListCertificatesResponse {
        certificates: engine
            .store
            .list_certificates()?
            .iter()
            .map(entry)
            .collect(),
    })
}

pub async fn issue_certificate(
    engine: &Engine,
    req: pb::IssueCertificateRequest,
) -> Result<pb::IssuedCertificate, Status> {
    let mut errors = Invalid::default();
    if req.kind != "admin" {
        errors.push(
            "kind",
            format!(
                "`{}` cannot be issued here; only admin (agents get theirs at launch, by renewal or with ebbctl cert issue)",
                req.kind
            ),
        );
    }
    if let Err(e) = ebb_certs::Identity::admin(engine.trust_domain(), &req.name) {
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
    let (cert_pem, record) = engine
        .issue_admin_certificate(&req.name, &req.csr_pem, req.days)
        .map_err(|e| match e {
            crate::engine::EngineError::Certs(e) => invalid(Invalid::one("csr_pem", e.to_string())),
            other => other.into(),
        })?;
    info!(identity = %record.identity, serial = %record.serial, "issued an admin certificate");
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
