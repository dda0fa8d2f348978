//! ebb's PKI: one CA per controller, and the certificates it issues.
//!
//! - [`Identity`]: who a certificate names, as a SPIFFE URI SAN
//!   (`spiffe://<trust-domain>/instance/<id>` or `.../admin/<name>`).
//! - [`Ca`]: makes or loads a CA and issues server, agent and admin certs.
//! - [`Issued`]: a certificate and its key in PEM, written with the key 0600;
//!   [`recover_pair`] finishes or undoes a swap a crash interrupted.
//! - [`Csr`]: a new key and a signing request, made where the key stays;
//!   [`Ca::sign_csr`] signs one for an identity the CA chooses.
//! - [`ca_hash`]: the pin of a CA (`sha256:` of its public key), as
//!   `ebb-agent join --ca-hash` takes it.
//! - [`peer_identity`], [`load_certs`], [`load_key`]: reading certs back.
#![forbid(unsafe_code)]

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// A CA lives ten years: replacing it means re-issuing every cert in the fleet.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Server and admin certs live a year; the controller re-issues its own
/// server cert live when two thirds of it have passed.
pub const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// Admin certs are held by people and tools; a year, like the server's.
pub const ADMIN_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// Agent certs are short-lived: they renew themselves over the stream at two
/// thirds of their life, so a lost host's cert is useless within a day.
pub const AGENT_VALIDITY: Duration = Duration::from_secs(86_400);
/// The largest CSR [`Ca::sign_csr`] reads: an EC P-256 request is ~500
/// bytes in PEM, an RSA-4096 one ~1.7 KiB.
pub const MAX_CSR_LEN: usize = 8 * 1024;
/// The trust domain used when the operator names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "ebb.local";

/// Longest instance id or admin name; keeps URIs and file names sane.
const MAX_NAME_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid certificate: {0}")]
    Parse(String),
    #[error("invalid identity `{value}`: {reason}")]
    Identity { value: String, reason: String },
    #[error("the certificate names no ebb identity (no spiffe:// URI SAN)")]
    NoIdentity,
    #[error("unusable certificate signing request: {0}")]
    Csr(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a certificate's holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// An agent, for the instance it names.
    Instance(String),
    /// An operator or a tool.
    Admin(String),
    /// The host of a load balancer or database whose agent converges it
    /// to the members ebb sends; it can drive nothing else.
    Target(String),
}

/// The identity a certificate carries in its URI SAN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub trust_domain: String,
    pub role: Role,
}

impl Identity {
    pub fn instance(trust_domain: &str, id: &str) -> Result<Self> {
        check_name("instance id", id)?;
        check_trust_domain(trust_domain)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            role: Role::Instance(id.to_owned()),
        })
    }

    pub fn admin(trust_domain: &str, name: &str) -> Result<Self> {
        check_name("admin name", name)?;
        check_trust_domain(trust_domain)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            role: Role::Admin(name.to_owned()),
        })
    }

    /// The host of a load balancer or database that ebb drives
    /// (`spiffe://<td>/target/<name>`).
    pub fn target(trust_domain: &str, name: &str) -> Result<Self> {
        check_name("target name", name)?;
        check_trust_domain(trust_domain)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            role: Role::Target(name.to_owned()),
        })
    }

    /// The SPIFFE URI, e.g. `spiffe://ebb.local/instance/i-1`.
    pub fn uri(&self) -> String {
        match &self.role {
            Role::Instance(id) => format!("spiffe://{}/instance/{id}", self.trust_domain),
            Role::Admin(name) => format!("spiffe://{}/admin/{name}", self.trust_domain),
            Role::Target(name) => format!("spiffe://{}/target/{name}", self.trust_domain),
        }
    }

    /// Parses a SPIFFE URI as written by [`Identity::uri`].
    pub fn parse(uri: &str) -> Result<Self> {
        let bad = |reason: &str| Error::Identity {
            value: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("not a spiffe:// URI"))?;
        let mut parts = rest.splitn(3, '/');
        let (td, kind, name) = match (parts.next(), parts.next(), parts.next()) {
            (Some(td), Some(kind), Some(name)) => (td, kind, name),
            _ => {
                return Err(bad(
                    "expected spiffe://<trust-domain>/<instance|admin|target>/<name>",
                ));
            }
        };
        match kind {
            "instance" => Self::instance(td, name),
            "admin" => Self::admin(td, name),
            "target" => Self::target(td, name),
            _ => Err(bad(
                "the path must start with /instance/, /admin/ or /target/",
            )),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let reason = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("is longer than {MAX_NAME_LEN} characters"))
    } else if !name.chars().all(ok_char) {
        Some("may use only letters, digits, '-', '_' and '.'".to_owned())
    } else if name.starts_with('.') {
        Some("must not start with '.'".to_owned())
    } else {
        None
    };
    match reason {
        Some(r) => Err(Error::Identity {
            value: name.to_owned(),
            reason: format!("{what} {r}"),
        }),
        None => Ok(()),
    }
}

fn check_trust_domain(td: &str) -> Result<()> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Identity {
            value: td.to_owned(),
            reason: "a trust domain uses only lowercase letters, digits, '-' and '.'".to_owned(),
        })
    }
}

/// A certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes the cert (0644) and the key (0600) so that a crash at any
    /// point leaves the old pair or the new one, never a new cert with an
    /// old key: both are written beside their targets as `*.new`, then the
    /// key is renamed into place, then the cert. A crash between the two
    /// renames leaves `<cert>.new` alone, which [`recover_pair`] moves in.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        let (cert_new, key_new) = (pending(cert_path), pending(key_path));
        write_atomic(&key_new, self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&cert_new, self.cert_pem.as_bytes(), 0o644)?;
        rename(&key_new, key_path)?;
        rename(&cert_new, cert_path)
    }
}

/// Where [`Issued::write`] stages a file before renaming it into place.
fn pending(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|source| Error::Io {
        path: to.to_owned(),
        source,
    })
}

/// Finishes or undoes a swap by [`Issued::write`] that a crash interrupted:
/// a staged key means neither file was moved yet (both staged files are
/// dropped, the old pair stays); a staged cert alone means the key was
/// moved in already, so the cert follows. Returns whether it changed
/// anything.
pub fn recover_pair(cert_path: &Path, key_path: &Path) -> Result<bool> {
    let (cert_new, key_new) = (pending(cert_path), pending(key_path));
    if key_new.exists() {
        for p in [&key_new, &cert_new] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        path: p.clone(),
                        source,
                    });
                }
            }
        }
        return Ok(true);
    }
    if cert_new.exists() {
        rename(&cert_new, cert_path)?;
        return Ok(true);
    }
    Ok(false)
}

/// A fresh key pair and a signing request for it. The request names
/// nothing the CA will use: the CA decides the identity.
#[derive(Debug, Clone)]
pub struct Csr {
    pub csr_pem: String,
    pub key_pem: String,
}

impl Csr {
    pub fn generate() -> Result<Self> {
        let key = KeyPair::generate()?;
        let csr = CertificateParams::default().serialize_request(&key)?;
        Ok(Self {
            csr_pem: csr.pem()?,
            key_pem: key.serialize_pem(),
        })
    }

    /// The key and the certificate signed for it.
    pub fn into_issued(self, cert_pem: String) -> Issued {
        Issued {
            cert_pem,
            key_pem: self.key_pem,
        }
    }
}

/// Writes `data` to `path` via a temp file in the same directory and a rename.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// What to put in a certificate the CA issues.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// The SPIFFE identity, if any (server certs have none).
    pub identity: Option<Identity>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub server: bool,
    pub client: bool,
}

impl CertSpec {
    fn valid_for(validity: Duration) -> (OffsetDateTime, OffsetDateTime) {
        // Back-date a little so a peer whose clock lags still accepts it:
        // five minutes, or a tenth of a short life, whose renewal at two
        // thirds (counted from notBefore) must not come at once.
        let now = OffsetDateTime::now_utc();
        let back = (validity / 10).min(Duration::from_secs(300));
        (now - back, now + validity)
    }
}

/// A certificate authority that can issue ebb certificates.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Makes a new CA for `trust_domain`.
    pub fn generate(trust_domain: &str, validity: Duration) -> Result<Self> {
        check_trust_domain(trust_domain)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("ebb CA ({trust_domain})"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // The CA records its trust domain so a reloaded CA knows it.
        params.subject_alt_names =
            vec![SanType::URI(format!("spiffe://{trust_domain}").try_into()?)];
        (params.not_before, params.not_after) = CertSpec::valid_for(validity);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
            key_pem,
            trust_domain: trust_domain.to_owned(),
        })
    }

    /// Loads a CA from its PEM cert and key files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let cert_pem = read_to_string(cert_path)?;
        let key_pem = read_to_string(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::Pem {
            path: key_path.to_owned(),
            message: format!("not a usable private key: {e}"),
        })?;
        let der = first_cert(cert_path, &cert_pem)?;
        let trust_domain = ca_trust_domain(&der).map_err(|e| Error::Pem {
            path: cert_path.to_owned(),
            message: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| Error::Pem {
            path: cert_path.to_owned(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
        Ok(Self {
            cert_pem,
            key_pem,
            trust_domain,
            issuer,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's own cert and key, for saving.
    pub fn to_issued(&self) -> Issued {
        Issued {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }

    /// A server certificate for the controller, valid for these names.
    pub fn issue_server(&self, dns_names: &[String], ips: &[IpAddr]) -> Result<Issued> {
        self.issue_server_for(dns_names, ips, SERVER_VALIDITY)
    }

    /// A server certificate living `validity`.
    pub fn issue_server_for(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        validity: Duration,
    ) -> Result<Issued> {
        let (not_before, not_after) = CertSpec::valid_for(validity);
        self.issue(&CertSpec {
            identity: None,
            dns_names: dns_names.to_vec(),
            ips: ips.to_vec(),
            not_before,
            not_after,
            server: true,
            client: false,
        })
    }

    /// An agent certificate for one instance.
    pub fn issue_agent(&self, instance_id: &str, validity: Duration) -> Result<Issued> {
        self.issue_client(
            Identity::instance(&self.trust_domain, instance_id)?,
            validity,
        )
    }

    /// A target agent's certificate: the host of a load balancer or a
    /// database that ebb drives.
    pub fn issue_target(&self, name: &str, validity: Duration) -> Result<Issued> {
        self.issue_client(Identity::target(&self.trust_domain, name)?, validity)
    }

    /// An admin certificate for an operator or a tool.
    pub fn issue_admin(&self, name: &str, validity: Duration) -> Result<Issued> {
        self.issue_client(Identity::admin(&self.trust_domain, name)?, validity)
    }

    /// A client certificate (key made here) for `identity`.
    fn issue_client(&self, identity: Identity, validity: Duration) -> Result<Issued> {
        let (not_before, not_after) = CertSpec::valid_for(validity);
        self.issue(&CertSpec {
            identity: Some(identity),
            dns_names: vec![],
            ips: vec![],
            not_before,
            not_after,
            server: false,
            client: true,
        })
    }

    /// Signs `csr_pem` as a client certificate for `identity`, living
    /// `validity`. Only the request's public key is used (its signature
    /// proves the requester holds the key); whatever names or extensions it
    /// asks for are ignored.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        validity: Duration,
    ) -> Result<String> {
        if csr_pem.len() > MAX_CSR_LEN {
            return Err(Error::Csr(format!(
                "{} bytes, more than the {MAX_CSR_LEN} allowed",
                csr_pem.len()
            )));
        }
        if identity.trust_domain != self.trust_domain {
            return Err(Error::Identity {
                value: identity.uri(),
                reason: format!("this CA issues for trust domain {}", self.trust_domain),
            });
        }
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::Csr(e.to_string()))?;
        let (not_before, not_after) = CertSpec::valid_for(validity);
        let params = Self::params(&CertSpec {
            identity: Some(identity.clone()),
            dns_names: vec![],
            ips: vec![],
            not_before,
            not_after,
            server: false,
            client: true,
        })?;
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }

    /// Issues a certificate exactly as `spec` says (tests use it for
    /// expired certs).
    pub fn issue(&self, spec: &CertSpec) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let cert = Self::params(spec)?.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn params(spec: &CertSpec) -> Result<CertificateParams> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let cn = match &spec.identity {
            Some(id) => id.uri(),
            None => spec
                .dns_names
                .first()
                .cloned()
                .unwrap_or_else(|| "ebb-controller".to_owned()),
        };
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if let Some(id) = &spec.identity {
            params
                .subject_alt_names
                .push(SanType::URI(id.uri().try_into()?));
        }
        for name in &spec.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.clone().try_into()?));
        }
        for ip in &spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        Ok(params)
    }
}

fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn first_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| Error::Pem {
            path: path.to_owned(),
            message: "no PEM certificate found".to_owned(),
        })?
        .map_err(|e| Error::Pem {
            path: path.to_owned(),
            message: format!("bad PEM: {e}"),
        })
}

/// Loads every certificate in a PEM file; an empty file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_to_string(path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| Error::Pem {
        path: path.to_owned(),
        message: format!("bad PEM: {e}"),
    })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            path: path.to_owned(),
            message: "no PEM certificate found".to_owned(),
        });
    }
    Ok(certs)
}

/// Loads the private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read_to_string(path)?;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::Pem {
        path: path.to_owned(),
        message: format!("no usable PEM private key: {e}"),
    })
}

/// What [`describe`] finds in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub identity: Option<Identity>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    /// DNS names in the subject alternative names (server certs).
    pub dns_names: Vec<String>,
    /// The serial number in lowercase hex.
    pub serial: String,
}

/// Reads the subject, identity and validity of a DER certificate.
pub fn describe(der: &[u8]) -> Result<CertInfo> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::Parse(e.to_string()))?;
    let validity = cert.validity();
    let dns_names = general_names(&cert)?
        .into_iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_owned()),
            _ => None,
        })
        .collect();
    let identity = match spiffe_uris(&cert)?.first() {
        Some(uri) if uri.matches('/').count() > 2 => Some(Identity::parse(uri)?),
        _ => None,
    };
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        identity,
        not_before: validity.not_before.to_datetime(),
        not_after: validity.not_after.to_datetime(),
        is_ca: cert.is_ca(),
        dns_names,
        serial: hex(cert.raw_serial()),
    })
}

/// [`describe`] of the first certificate in a PEM text.
pub fn describe_pem(pem: &str) -> Result<CertInfo> {
    describe(&first_cert(Path::new("(certificate)"), pem)?)
}

/// Whether the first certificate in `cert_pem` is for the key in `key_pem`.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> Result<bool> {
    use rcgen::PublicKeyData;
    let der = first_cert(Path::new("(certificate)"), cert_pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| Error::Parse(e.to_string()))?;
    let key = KeyPair::from_pem(key_pem)?;
    Ok(cert.public_key().raw == key.subject_public_key_info().as_slice())
}

/// Lowercase hex of `bytes` (serials, digests, keys).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex text (either case); None if it is not one.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The pin of a CA as kubeadm writes it: `sha256:` and the lowercase hex
/// SHA-256 of the certificate's DER SubjectPublicKeyInfo. It names the
/// key, so it survives the CA certificate being re-issued for the same key.
pub fn ca_hash(der: &[u8]) -> Result<String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::Parse(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    Ok(format!("sha256:{}", hex(digest.as_ref())))
}

/// [`ca_hash`] of the first certificate in a PEM text.
pub fn ca_hash_pem(pem: &str) -> Result<String> {
    ca_hash(&first_cert(Path::new("(certificate)"), pem)?)
}

/// The identity of a peer from its (already verified) leaf certificate.
pub fn peer_identity(der: &[u8]) -> Result<Identity> {
    describe(der)?.identity.ok_or(Error::NoIdentity)
}

fn general_names<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<GeneralName<'a>>> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::Parse(e.to_string()))?;
    Ok(san
        .map(|ext| ext.value.general_names.clone())
        .unwrap_or_default())
}

fn spiffe_uris(cert: &X509Certificate<'_>) -> Result<Vec<String>> {
    Ok(general_names(cert)?
        .into_iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with("spiffe://") => Some(u.to_owned()),
            _ => None,
        })
        .collect())
}

fn ca_trust_domain(der: &[u8]) -> Result<String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::Parse(e.to_string()))?;
    if !cert.is_ca() {
        return Err(Error::Parse("the certificate is not a CA".to_owned()));
    }
    let uris = spiffe_uris(&cert)?;
    let td = uris
        .iter()
        .find_map(|u| u.strip_prefix("spiffe://"))
        .map(|rest| rest.trim_end_matches('/').to_owned())
        .ok_or_else(|| {
            Error::Parse("the CA certificate names no trust domain (spiffe://<domain> SAN)".into())
        })?;
    check_trust_domain(&td)?;
    Ok(td)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("abc"), None);
    }

    fn der(issued: &Issued) -> CertificateDer<'static> {
        first_cert(Path::new("test"), &issued.cert_pem).unwrap()
    }

    #[test]
    fn identity_round_trips_through_uri() {
        let id = Identity::instance("ebb.local", "i-0abc").unwrap();
        assert_eq!(id.uri(), "spiffe://ebb.local/instance/i-0abc");
        assert_eq!(Identity::parse(&id.uri()).unwrap(), id);
        let admin = Identity::admin("corp.example", "alice").unwrap();
        assert_eq!(Identity::parse(&admin.uri()).unwrap(), admin);
        let target = Identity::target("ebb.local", "lb-1").unwrap();
        assert_eq!(target.uri(), "spiffe://ebb.local/target/lb-1");
        assert_eq!(Identity::parse(&target.uri()).unwrap(), target);
    }

    #[test]
    fn identity_rejects_bad_names() {
        for bad in [
            "http://ebb.local/instance/x",
            "spiffe://ebb.local/instance/",
            "spiffe://ebb.local/host/x",
            "spiffe://ebb.local/instance/a/b",
            "spiffe://EBB/instance/x",
            "spiffe://ebb.local",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad} should be refused");
        }
        let err = Identity::instance("ebb.local", "../etc").unwrap_err();
        assert!(
            err.to_string().contains("instance id may use only"),
            "{err}"
        );
    }

    #[test]
    fn agent_and_admin_certs_carry_their_identity() {
        let ca = Ca::generate("ebb.local", CA_VALIDITY).unwrap();
        let agent = ca.issue_agent("i-1", AGENT_VALIDITY).unwrap();
        assert_eq!(
            peer_identity(&der(&agent)).unwrap(),
            Identity::instance("ebb.local", "i-1").unwrap()
        );
        let info = describe(&der(&agent)).unwrap();
        let lifetime = info.not_after - info.not_before;
        assert!(
            lifetime <= time::Duration::days(8),
            "agent cert lives {lifetime}"
        );
        let admin = ca.issue_admin("ops", ADMIN_VALIDITY).unwrap();
        assert_eq!(
            peer_identity(&der(&admin)).unwrap().role,
            Role::Admin("ops".into())
        );
        let server = ca
            .issue_server(&["localhost".into()], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        assert!(matches!(
            peer_identity(&der(&server)),
            Err(Error::NoIdentity)
        ));
        assert_eq!(describe(&der(&server)).unwrap().dns_names, ["localhost"]);
    }

    #[test]
    fn ca_saved_and_loaded_keeps_trust_domain_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("prod.example", CA_VALIDITY).unwrap();
        let (crt, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        ca.to_issued().write(&crt, &key).unwrap();
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Ca::load(&crt, &key).unwrap();
        assert_eq!(loaded.trust_domain(), "prod.example");
        let agent = loaded.issue_agent("web-1", AGENT_VALIDITY).unwrap();
        assert_eq!(
            peer_identity(&der(&agent)).unwrap().trust_domain,
            "prod.example"
        );
        assert!(describe(&der(&ca.to_issued())).unwrap().is_ca);
    }

    #[test]
    fn a_csr_is_signed_for_the_identity_given_not_the_one_asked_for() {
        let ca = Ca::generate("ebb.local", CA_VALIDITY).unwrap();
        // A request that asks for an admin identity and a DNS name.
        let key = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::new(vec!["controller.example".to_owned()]).unwrap();
        asked.subject_alt_names.push(SanType::URI(
            "spiffe://ebb.local/admin/root".try_into().unwrap(),
        ));
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let stream = Identity::instance("ebb.local", "i-7").unwrap();
        let lifetime = Duration::from_secs(30);
        let cert_pem = ca.sign_csr(&csr, &stream, lifetime).unwrap();
        let info = describe_pem(&cert_pem).unwrap();
        assert_eq!(info.identity, Some(stream));
        assert!(info.dns_names.is_empty(), "{:?}", info.dns_names);
        assert!(!info.is_ca);
        // Back-dated a tenth of its life, then the lifetime asked for.
        let life = info.not_after - info.not_before;
        assert_eq!(life, time::Duration::seconds(3 + 30), "{life}");
        // The cert is for the requester's key, which never left it.
        assert!(key_matches(&cert_pem, &key.serialize_pem()).unwrap());
        let other = KeyPair::generate().unwrap();
        assert!(!key_matches(&cert_pem, &other.serialize_pem()).unwrap());
    }

    #[test]
    fn bad_csrs_are_refused_with_the_reason() {
        let ca = Ca::generate("ebb.local", CA_VALIDITY).unwrap();
        let id = Identity::instance("ebb.local", "i-7").unwrap();
        let err = ca.sign_csr("not a csr", &id, AGENT_VALIDITY).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unusable certificate signing request"),
            "{err}"
        );
        let huge = "A".repeat(MAX_CSR_LEN + 1);
        let err = ca.sign_csr(&huge, &id, AGENT_VALIDITY).unwrap_err();
        assert!(
            err.to_string().contains("more than the 8192 allowed"),
            "{err}"
        );
        // A request whose signature does not match its key: no proof of possession.
        let csr = Csr::generate().unwrap().csr_pem;
        let mut lines: Vec<String> = csr.lines().map(str::to_owned).collect();
        // The second-to-last base64 line holds the signature's bytes.
        let sig = lines.len() - 3;
        let flipped = if lines[sig].starts_with('A') {
            "B"
        } else {
            "A"
        };
        lines[sig].replace_range(0..1, flipped);
        let csr = lines.join("\n");
        let err = ca.sign_csr(&csr, &id, AGENT_VALIDITY).unwrap_err();
        assert!(err.to_string().contains("signing request"), "{err}");
        let foreign = Identity::instance("other.example", "i-7").unwrap();
        let good = Csr::generate().unwrap().csr_pem;
        assert!(ca.sign_csr(&good, &foreign, AGENT_VALIDITY).is_err());
    }

    #[test]
    fn an_interrupted_swap_is_finished_or_undone() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ebb.local", CA_VALIDITY).unwrap();
        let (crt, key) = (dir.path().join("agent.crt"), dir.path().join("agent.key"));
        let old = ca.issue_agent("i-1", AGENT_VALIDITY).unwrap();
        old.write(&crt, &key).unwrap();
        assert!(
            !recover_pair(&crt, &key).unwrap(),
            "a clean pair needs nothing"
        );
        let new = ca.issue_agent("i-1", AGENT_VALIDITY).unwrap();
        let read = |p: &Path| fs::read_to_string(p).unwrap();

        // Crashed before any rename: the old pair stays.
        fs::write(pending(&key), &new.key_pem).unwrap();
        fs::write(pending(&crt), &new.cert_pem).unwrap();
        assert!(recover_pair(&crt, &key).unwrap());
        assert_eq!(
            (read(&crt), read(&key)),
            (old.cert_pem.clone(), old.key_pem.clone())
        );
        assert!(!pending(&crt).exists() && !pending(&key).exists());

        // Crashed after the key's rename: the new cert follows it.
        fs::write(&key, &new.key_pem).unwrap();
        fs::write(pending(&crt), &new.cert_pem).unwrap();
        assert!(recover_pair(&crt, &key).unwrap());
        assert!(key_matches(&read(&crt), &read(&key)).unwrap());
        assert_eq!(read(&crt), new.cert_pem);
    }

    #[test]
    fn the_ca_hash_is_the_sha256_of_its_public_key() {
        let ca = Ca::generate("ebb.local", CA_VALIDITY).unwrap();
        let hash = ca_hash_pem(ca.cert_pem()).unwrap();
        assert!(
            hash.starts_with("sha256:") && hash.len() == 7 + 64,
            "{hash}"
        );
        assert!(
            hash[7..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // The same key re-certified keeps its pin; another CA has another.
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        ca.to_issued().write(&crt, &key).unwrap();
        assert_eq!(
            ca_hash_pem(Ca::load(&crt, &key).unwrap().cert_pem()).unwrap(),
            hash
        );
        let other = Ca::generate("ebb.local", CA_VALIDITY).unwrap();
        assert_ne!(ca_hash_pem(other.cert_pem()).unwrap(), hash);
    }

    #[test]
    fn loading_bad_files_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let crt = dir.path().join("ca.crt");
        fs::write(&crt, "not pem").unwrap();
        let key = dir.path().join("missing.key");
        let err = Ca::load(&crt, &key).err().unwrap().to_string();
        assert!(err.contains("missing.key"), "{err}");
        let err = load_certs(&crt).unwrap_err().to_string();
        assert!(
            err.contains("ca.crt") && err.contains("no PEM certificate"),
            "{err}"
        );
    }
}
