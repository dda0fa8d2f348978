//! `cert`: certificates.
//!
//! - `cert issue --id`: an agent certificate for a hand-managed host, from
//!   the local controller's CA, with the agent.toml that uses it. Offline:
//!   it reads the CA key from the data dir and calls nothing.
//! - `cert issue --admin` and `--target`: an admin certificate, or a load
//!   balancer's or database's target agent certificate with the agent.toml
//!   that uses it; the key is made here and only a signing request goes to
//!   the controller.
//! - `cert list`, `cert rotate-server`: the registry of issued
//!   certificates, and the server certificate's rotation on demand.
//! - `cert revoke`, `cert revoked`: the controller's deny-list.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ebb_core::local::PkiPaths;
use serde::Serialize;

use ebb_proto::v1 as pb;

use crate::cli::{CertIssue, CertRevoke, Global};
use crate::conn::{self, Admin};
use crate::error::{Error, Result};
use crate::output::{Output, done, print_json};
use crate::view::{Table, rfc3339};

/// An agent cert from `cert issue --id` lives a week unless told otherwise.
const DEFAULT_AGENT_DAYS: u32 = 7;

/// A deny-list entry, for `-o json`.
#[derive(Debug, Serialize)]
struct RevokedView {
    identity: String,
    revoked_at_ms: i64,
    revoked_by: String,
    reason: String,
}

impl From<pb::RevokedCertificate> for RevokedView {
    fn from(r: pb::RevokedCertificate) -> Self {
        Self {
            identity: r.identity,
            revoked_at_ms: r.revoked_at_ms,
            revoked_by: r.revoked_by,
            reason: r.reason,
        }
    }
}

pub async fn revoke(admin: &mut Admin, args: CertRevoke, out: Output) -> Result<()> {
    let identity = if args.id.starts_with("spiffe://") {
        args.id
    } else if args.admin {
        format!("admin/{}", args.id)
    } else {
        format!("instance/{}", args.id)
    };
    let r: RevokedView = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            identity,
            reason: args.reason,
            force: args.force,
        })
        .await?
        .into();
    let line = format!(
        "revoked {} (since {}, by {})",
        r.identity,
        rfc3339(r.revoked_at_ms),
        r.revoked_by
    );
    done(out, &r, line)
}

pub async fn revoked(admin: &mut Admin, out: Output) -> Result<()> {
    let list: Vec<RevokedView> = admin
        .describe_revoked_certificates(pb::DescribeRevokedCertificatesRequest::default())
        .await?
        .certificates
        .into_iter()
        .map(RevokedView::from)
        .collect();
    match out {
        Output::Json => print_json(&list),
        Output::Table | Output::Wide => {
            let mut t = Table::new(&["IDENTITY", "REVOKED", "BY", "REASON"]);
            for r in list {
                t.row(vec![
                    r.identity,
                    rfc3339(r.revoked_at_ms),
                    r.revoked_by,
                    r.reason,
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
    }
}

/// What was written, for `-o json`.
#[derive(Debug, Serialize)]
struct IssuedView {
    instance_id: String,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    not_after_ms: i64,
    agent_toml: String,
}

pub fn issue(args: &CertIssue, global: &Global, data_dir: &Path, out: Output) -> Result<()> {
    let id = args.id.clone().unwrap_or_default();
    let days = args.days.unwrap_or(DEFAULT_AGENT_DAYS);
    if days > 365 {
        return Err(Error::Usage(format!(
            "--days {days}: an agent certificate lives at most 365 days (it renews itself over its stream)"
        )));
    }
    let pki = PkiPaths::new(data_dir);
    let ca_crt = global.ca.clone().unwrap_or_else(|| pki.ca().0);
    let ca_key = args.ca_key.clone().unwrap_or_else(|| pki.ca().1);
    for (path, flag) in [(&ca_crt, "--ca"), (&ca_key, "--ca-key")] {
        if let Err(e) = std::fs::metadata(path) {
            let hint = format!(
                "run cert issue on the controller's host, or give --data-dir, or {flag} for an operator CA"
            );
            return Err(Error::read(path, &e, &hint));
        }
    }
    let ca = ebb_certs::Ca::load(&ca_crt, &ca_key).map_err(|e| Error::Local(e.to_string()))?;

    let dir = &args.out_dir;
    let (crt, key, ca_out) = (
        dir.join("agent.crt"),
        dir.join("agent.key"),
        dir.join("ca.crt"),
    );
    refuse_overwrite([&crt, &key, &ca_out], args.force)?;
    let validity = Duration::from_secs(u64::from(days) * 86_400);
    let issued = ca
        .issue_agent(&id, validity)
        .map_err(|e| Error::Local(e.to_string()))?;
    let write_failed = |e: ebb_certs::Error| Error::Local(format!("cannot write: {e}"));
    issued.write(&crt, &key).map_err(write_failed)?;
    ebb_certs::write_atomic(&ca_out, ca.cert_pem().as_bytes(), 0o644).map_err(write_failed)?;

    let (controller, server_name, note) = controller_for_agents(global, data_dir)?;
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let view = IssuedView {
        instance_id: id.clone(),
        agent_toml: agent_toml(
            &id,
            &controller,
            server_name.as_deref(),
            note.as_deref(),
            [&absolute(&ca_out), &absolute(&crt), &absolute(&key)],
        ),
        cert: crt,
        key,
        ca: ca_out,
        not_after_ms: crate::view::now_ms() + i64::from(days) * 86_400_000,
    };
    match out {
        Output::Json => print_json(&view),
        Output::Table | Output::Wide => {
            println!(
                "wrote {}, {} (mode 0600) and {} for instance {}, valid until {}",
                view.cert.display(),
                view.key.display(),
                view.ca.display(),
                view.instance_id,
                crate::view::rfc3339(view.not_after_ms)
            );
            println!();
            print!("{}", view.agent_toml);
            Ok(())
        }
    }
}

/// Refuses to overwrite any of `paths` unless `force`.
fn refuse_overwrite<const N: usize>(paths: [&PathBuf; N], force: bool) -> Result<()> {
    let existing: Vec<String> = paths
        .into_iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if existing.is_empty() || force {
        return Ok(());
    }
    Err(Error::Local(format!(
        "{} already {}; use --force to overwrite, or another --out-dir",
        existing.join(", "),
        if existing.len() == 1 {
            "exists"
        } else {
            "exist"
        }
    )))
}

/// What `cert issue --admin` or `--target` wrote, for `-o json`.
#[derive(Debug, Serialize)]
struct SignedView {
    identity: String,
    serial: String,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    not_after_ms: i64,
    /// With --target: the agent.toml lines that use the files.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_toml: Option<String>,
}

/// `cert issue --admin NAME` or `--target NAME`: a key made here, a CSR
/// signed by the controller, the pair written with the key 0600. A target's
/// pair is named as an agent's (agent.crt, agent.key): it is an ebb-agent's.
pub async fn issue_signed(
    admin: &mut Admin,
    args: &CertIssue,
    global: &Global,
    data_dir: &Path,
    out: Output,
) -> Result<()> {
    let (kind, name, stem) = match (&args.admin, &args.target) {
        (Some(name), _) => ("admin", name.clone(), "admin"),
        (None, Some(name)) => ("target", name.clone(), "agent"),
        (None, None) => return Err(Error::Usage("cert issue: give --admin or --target".into())),
    };
    let dir = &args.out_dir;
    let (crt, key, ca_out) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
        dir.join("ca.crt"),
    );
    refuse_overwrite([&crt, &key, &ca_out], args.force)?;
    let csr = ebb_certs::Csr::generate().map_err(|e| Error::Local(e.to_string()))?;
    let answer = admin
        .issue_certificate(pb::IssueCertificateRequest {
            kind: kind.into(),
            name: name.clone(),
            csr_pem: csr.csr_pem.clone(),
            days: args.days.unwrap_or(0),
        })
        .await?;
    let entry = answer.entry.unwrap_or_default();
    let write_failed = |e: ebb_certs::Error| Error::Local(format!("cannot write: {e}"));
    csr.into_issued(answer.cert_pem)
        .write(&crt, &key)
        .map_err(write_failed)?;
    let ca_in = global
        .ca
        .clone()
        .unwrap_or_else(|| PkiPaths::new(data_dir).file("ca.crt"));
    let ca_pem = std::fs::read(&ca_in)
        .map_err(|e| Error::read(&ca_in, &e, "give --ca, the controller's CA certificate"))?;
    ebb_certs::write_atomic(&ca_out, &ca_pem, 0o644).map_err(write_failed)?;
    let agent_toml = if kind == "target" {
        let (controller, server_name, note) = controller_for_agents(global, data_dir)?;
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        Some(target_toml(
            &name,
            &controller,
            server_name.as_deref(),
            note.as_deref(),
            [&absolute(&ca_out), &absolute(&crt), &absolute(&key)],
        ))
    } else {
        None
    };
    let view = SignedView {
        identity: entry.identity,
        serial: entry.serial,
        cert: crt,
        key,
        ca: ca_out,
        not_after_ms: entry.not_after_ms,
        agent_toml,
    };
    match out {
        Output::Json => print_json(&view),
        Output::Table | Output::Wide => {
            let wrote = format!(
                "wrote {}, {} (mode 0600) and {} for {}, valid until {}",
                view.cert.display(),
                view.key.display(),
                view.ca.display(),
                view.identity,
                rfc3339(view.not_after_ms),
            );
            match &view.agent_toml {
                Some(toml) => {
                    println!("{wrote}");
                    println!();
                    print!("{toml}");
                }
                None => println!(
                    "{wrote}; use them with ebbctl --cert {} --key {} --ca {}",
                    view.cert.display(),
                    view.key.display(),
                    view.ca.display(),
                ),
            }
            Ok(())
        }
    }
}

/// `cert ca-hash`: the pin `ebb-agent join --ca-hash` takes, from the CA
/// certificate alone (no key needed).
pub fn ca_hash(global: &Global, data_dir: &Path, out: Output) -> Result<()> {
    let ca_crt = global
        .ca
        .clone()
        .unwrap_or_else(|| PkiPaths::new(data_dir).ca().0);
    let pem = std::fs::read_to_string(&ca_crt).map_err(|e| {
        Error::read(
            &ca_crt,
            &e,
            "run it on the controller's host, or give --data-dir or --ca",
        )
    })?;
    let hash = ebb_certs::ca_hash_pem(&pem)
        .map_err(|e| Error::Local(format!("{}: {e}", ca_crt.display())))?;
    match out {
        Output::Json => print_json(&serde_json::json!({ "ca_hash": hash })),
        Output::Table | Output::Wide => {
            println!("{hash}");
            Ok(())
        }
    }
}

/// One registry entry, for `-o json`.
#[derive(Debug, Serialize)]
struct CertView {
    identity: String,
    kind: String,
    serial: String,
    not_before_ms: i64,
    not_after_ms: i64,
    issued_at_ms: i64,
}

impl From<pb::CertificateEntry> for CertView {
    fn from(e: pb::CertificateEntry) -> Self {
        Self {
            identity: e.identity,
            kind: e.kind,
            serial: e.serial,
            not_before_ms: e.not_before_ms,
            not_after_ms: e.not_after_ms,
            issued_at_ms: e.issued_at_ms,
        }
    }
}

/// `cert list`: each identity's latest certificate, soonest expiry first.
pub async fn list(admin: &mut Admin, out: Output) -> Result<()> {
    let mut certs: Vec<CertView> = admin
        .list_certificates(pb::ListCertificatesRequest::default())
        .await?
        .certificates
        .into_iter()
        .map(CertView::from)
        .collect();
    // The controller pages by identity; every page is here.
    certs.sort_by(|a, b| (a.not_after_ms, &a.identity).cmp(&(b.not_after_ms, &b.identity)));
    match out {
        Output::Json => print_json(&certs),
        Output::Table | Output::Wide => {
            let mut table = Table::new(&["EXPIRES", "KIND", "IDENTITY", "SERIAL"]);
            for c in &certs {
                table.row(vec![
                    rfc3339(c.not_after_ms),
                    c.kind.clone(),
                    c.identity.clone(),
                    c.serial.clone(),
                ]);
            }
            print!("{}", table.render());
            Ok(())
        }
    }
}

/// `cert rotate-server`: a new server certificate, served from now on.
pub async fn rotate_server(admin: &mut Admin, out: Output) -> Result<()> {
    let answer = admin
        .rotate_server_certificate(pb::RotateServerCertificateRequest {})
        .await?;
    let view = CertView::from(answer.entry.unwrap_or_default());
    let line = format!(
        "the controller now serves server certificate {} for {}, valid until {}",
        view.serial,
        view.identity,
        rfc3339(view.not_after_ms)
    );
    crate::output::done(out, &view, line)
}

/// The addresses and server name an agent should use, and a note when the
/// controller is only reachable from this host. Several `--controller`s
/// without `--server-name` give no name: the agent then checks each
/// controller against the host it dials.
pub(crate) fn controller_for_agents(
    global: &Global,
    data_dir: &Path,
) -> Result<(Vec<String>, Option<String>, Option<String>)> {
    match global.controller.as_slice() {
        [] => {}
        [addr] => {
            let name = global
                .server_name
                .clone()
                .unwrap_or_else(|| conn::host_of(addr).to_owned());
            return Ok((vec![addr.clone()], Some(name), None));
        }
        several => return Ok((several.to_vec(), global.server_name.clone(), None)),
    }
    match conn::read_endpoints(data_dir)? {
        Some(e) => {
            let name = global.server_name.clone().unwrap_or(e.server_name);
            let note = if e.grpc.ip().is_loopback() {
                Some(format!(
                    "the controller listens on {} only: for agents on other hosts set grpc.listen \
                     (e.g. \"0.0.0.0:{}\") and grpc.server_names in controller.toml, then use that name here",
                    e.grpc,
                    e.grpc.port()
                ))
            } else if e.grpc.ip().is_unspecified() {
                Some(format!(
                    "replace {} with a name of the controller this host can reach (one of grpc.server_names)",
                    e.grpc.ip()
                ))
            } else {
                None
            };
            Ok((vec![e.grpc.to_string()], Some(name), note))
        }
        None => Ok((
            vec![ebb_core::local::DEFAULT_GRPC_LISTEN.to_owned()],
            Some(ebb_core::local::DEFAULT_SERVER_NAME.to_owned()),
            Some(format!(
                "{} not found (controller not running?): check the address",
                data_dir.join(ebb_core::local::ENDPOINTS_FILE).display()
            )),
        )),
    }
}

/// A ready-to-use agent.toml for instance `id` naming the written files.
fn agent_toml(
    id: &str,
    controller: &[String],
    server_name: Option<&str>,
    note: Option<&str>,
    files: [&Path; 3],
) -> String {
    // Off unless the host says so: name the switch where it is read.
    let tail = "\n# Lifecycle hook scripts: off by default; when on, only executables\n\
         # inside `dir` run (docs/lifecycle-hooks.md).\n\
         # [hooks]\n# allow_scripts = true\n# dir = \"/etc/ebb/hooks.d\"\n";
    toml_for(
        &format!("instance {id}"),
        controller,
        server_name,
        note,
        files,
        tail,
    )
}

/// A target agent's agent.toml naming the written files; what it may
/// drive is the operator's to say (docs/targets.md).
fn target_toml(
    name: &str,
    controller: &[String],
    server_name: Option<&str>,
    note: Option<&str>,
    files: [&Path; 3],
) -> String {
    // The agent refuses a target certificate without [target]: say what goes there.
    let tail = "\n# What this target may drive, and nothing else (docs/targets.md): one or both of\n\
         # [target.haproxy]\n# socket = \"/run/haproxy/admin.sock\"\n\
         # [target.postgres]\n# hba_file = \"/etc/postgresql/15/main/pg_hba.conf\"\n# reload = \"sql\"\n";
    toml_for(
        &format!("target {name}"),
        controller,
        server_name,
        note,
        files,
        tail,
    )
}

/// agent.toml for `who`: the controller, the written files, then `tail`.
fn toml_for(
    who: &str,
    controller: &[String],
    server_name: Option<&str>,
    note: Option<&str>,
    [ca, cert, key]: [&Path; 3],
    tail: &str,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let p = |p: &Path| q(&p.display().to_string());
    let mut s = format!("# agent.toml for {who}\n");
    if let Some(note) = note {
        s.push_str(&format!("# note: {note}\n"));
    }
    match controller {
        [one] => s.push_str(&format!("controller = {}\n", q(one))),
        several => {
            let list: Vec<String> = several.iter().map(|a| q(a)).collect();
            s.push_str(&format!("controller = [{}]\n", list.join(", ")));
        }
    }
    if let Some(name) = server_name {
        s.push_str(&format!("server_name = {}\n", q(name)));
    }
    s.push_str(&format!(
        "\n[tls]\nca = {}\ncert = {}\nkey = {}\n",
        p(ca),
        p(cert),
        p(key)
    ));
    s.push_str(tail);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn global(data_dir: &Path) -> Global {
        Global {
            data_dir: Some(data_dir.to_owned()),
            profile: None,
            controller: Vec::new(),
            server_name: None,
            ca: None,
            cert: None,
            key: None,
            output: Output::Json,
        }
    }

    fn args(out: &Path, force: bool) -> CertIssue {
        CertIssue {
            id: Some("host-7".into()),
            admin: None,
            target: None,
            out_dir: out.to_owned(),
            days: None,
            force,
            ca_key: None,
        }
    }

    fn data_dir_with_ca() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ca = ebb_certs::Ca::generate("ebb.local", ebb_certs::CA_VALIDITY).unwrap();
        let (crt, key) = PkiPaths::new(dir.path()).ca();
        ca.to_issued().write(&crt, &key).unwrap();
        std::fs::write(
            dir.path().join("endpoints.toml"),
            "grpc = \"127.0.0.1:7440\"\nhttp = \"127.0.0.1:9440\"\nserver_name = \"localhost\"\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn issues_an_agent_cert_for_the_instance_and_refuses_to_overwrite() {
        let data = data_dir_with_ca();
        let out = tempfile::tempdir().unwrap();
        issue(
            &args(out.path(), false),
            &global(data.path()),
            data.path(),
            Output::Json,
        )
        .unwrap();

        let cert = ebb_certs::load_certs(&out.path().join("agent.crt")).unwrap();
        let identity = ebb_certs::peer_identity(&cert[0]).unwrap();
        assert_eq!(identity.uri(), "spiffe://ebb.local/instance/host-7");
        let mode = std::fs::metadata(out.path().join("agent.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(out.path().join("ca.crt").exists());

        let err = issue(
            &args(out.path(), false),
            &global(data.path()),
            data.path(),
            Output::Json,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("agent.crt") && err.contains("already exist; use --force"),
            "{err}"
        );
        issue(
            &args(out.path(), true),
            &global(data.path()),
            data.path(),
            Output::Json,
        )
        .unwrap();
    }

    #[test]
    fn an_agent_cert_lives_at_most_a_year() {
        let data = data_dir_with_ca();
        let out = tempfile::tempdir().unwrap();
        let mut long = args(out.path(), false);
        long.days = Some(400);
        let err = issue(&long, &global(data.path()), data.path(), Output::Json)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--days 400: an agent certificate lives at most 365 days"),
            "{err}"
        );
        assert!(!out.path().join("agent.key").exists(), "nothing written");
    }

    #[test]
    fn without_the_ca_key_it_says_where_it_looked() {
        let data = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = issue(
            &args(out.path(), false),
            &global(data.path()),
            data.path(),
            Output::Json,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("cannot read ") && err.contains("pki/ca.crt: it does not exist"),
            "{err}"
        );
    }

    #[test]
    fn the_agent_toml_parses_and_notes_a_loopback_controller() {
        let data = data_dir_with_ca();
        let (addrs, name, note) = controller_for_agents(&global(data.path()), data.path()).unwrap();
        assert_eq!(
            (addrs.as_slice(), name.as_deref()),
            (["127.0.0.1:7440".to_owned()].as_slice(), Some("localhost"))
        );
        assert!(note.unwrap().contains("listens on 127.0.0.1:7440 only"));
        let text = agent_toml(
            "host-7",
            &addrs,
            name.as_deref(),
            Some("n"),
            [
                Path::new("/t/ca.crt"),
                Path::new("/t/agent.crt"),
                Path::new("/t/agent.key"),
            ],
        );
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["controller"].as_str(), Some("127.0.0.1:7440"));
        assert_eq!(v["server_name"].as_str(), Some("localhost"));
        assert_eq!(v["tls"]["key"].as_str(), Some("/t/agent.key"));
    }

    #[test]
    fn several_controllers_make_a_list_and_a_name_only_when_given() {
        let data = data_dir_with_ca();
        let several = Global {
            controller: vec!["10.0.0.1:7440".into(), "10.0.0.2:7440".into()],
            ..global(data.path())
        };
        let (addrs, name, note) = controller_for_agents(&several, data.path()).unwrap();
        assert_eq!((addrs.len(), name, note), (2, None, None));
        let files = [
            Path::new("/t/ca.crt"),
            Path::new("/t/agent.crt"),
            Path::new("/t/agent.key"),
        ];
        let v: toml::Table = toml::from_str(&agent_toml("h", &addrs, None, None, files)).unwrap();
        let list: Vec<&str> = v["controller"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(list, ["10.0.0.1:7440", "10.0.0.2:7440"]);
        // Each controller is then checked against its own address.
        assert!(v.get("server_name").is_none());
        let named = Global {
            server_name: Some("ebb-controller".into()),
            ..several
        };
        let (_, name, _) = controller_for_agents(&named, data.path()).unwrap();
        assert_eq!(name.as_deref(), Some("ebb-controller"));
    }

    #[test]
    fn the_target_toml_parses_and_says_what_goes_in_target() {
        let text = target_toml(
            "lb1",
            &["10.0.0.1:7440".to_owned()],
            Some("ctl.example"),
            None,
            [
                Path::new("/etc/ebb/tls/ca.crt"),
                Path::new("/etc/ebb/tls/agent.crt"),
                Path::new("/etc/ebb/tls/agent.key"),
            ],
        );
        assert!(text.starts_with("# agent.toml for target lb1\n"), "{text}");
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["controller"].as_str(), Some("10.0.0.1:7440"));
        assert_eq!(v["tls"]["cert"].as_str(), Some("/etc/ebb/tls/agent.crt"));
        assert!(v.get("target").is_none(), "left for the operator to fill");
        // Uncommented, the example is the agent's [target] tables.
        let filled: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| r.starts_with(['[', 's', 'h', 'r']))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let v: toml::Table = toml::from_str(&filled).unwrap();
        assert_eq!(
            v["target"]["haproxy"]["socket"].as_str(),
            Some("/run/haproxy/admin.sock")
        );
        assert_eq!(v["target"]["postgres"]["reload"].as_str(), Some("sql"));
    }
}
