//! `ebb-certs`: make a CA and issue ebb certificates from the command line.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ebb_certs::{Ca, Issued};

#[derive(Parser)]
#[command(
    version,
    about = "ebb's PKI: make a CA, issue server, agent and admin certificates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new CA: DIR/ca.crt and DIR/ca.key (0600).
    Ca {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = ebb_certs::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
    /// Issue a certificate signed by the CA in --ca-dir.
    Issue {
        #[command(subcommand)]
        kind: IssueKind,
        /// Folder holding ca.crt and ca.key.
        #[arg(long, global = true, default_value = "./ebb-data/pki")]
        ca_dir: PathBuf,
        /// Folder to write NAME.crt, NAME.key and a copy of ca.crt into.
        #[arg(long, global = true, default_value = ".")]
        out_dir: PathBuf,
        /// Replace files that already exist.
        #[arg(long, global = true)]
        force: bool,
    },
    /// Print the subject, identity and validity of a PEM certificate.
    Show { file: PathBuf },
}

#[derive(Subcommand)]
enum IssueKind {
    /// An agent cert for one instance (spiffe://<td>/instance/<id>).
    Agent {
        #[arg(long)]
        id: String,
        #[arg(long, default_value_t = 7)]
        days: u64,
    },
    /// An admin cert (spiffe://<td>/admin/<name>).
    Admin {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
    /// A controller server cert for these DNS names and IPs.
    Server {
        #[arg(long = "dns", default_value = "localhost")]
        dns: Vec<String>,
        #[arg(long = "ip", default_value = "127.0.0.1")]
        ips: Vec<IpAddr>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebb-certs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ca { dir, trust_domain } => {
            let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
            refuse_overwrite(&[&crt, &key], false)?;
            let ca = Ca::generate(&trust_domain, ebb_certs::CA_VALIDITY)?;
            ca.to_issued().write(&crt, &key)?;
            println!("wrote {} and {}", crt.display(), key.display());
        }
        Command::Issue {
            kind,
            ca_dir,
            out_dir,
            force,
        } => {
            let ca = Ca::load(&ca_dir.join("ca.crt"), &ca_dir.join("ca.key"))
                .with_context(|| format!("loading the CA from {}", ca_dir.display()))?;
            let (name, issued): (&str, Issued) = match kind {
                IssueKind::Agent { id, days } => ("agent", ca.issue_agent(&id, days_to(days)?)?),
                IssueKind::Admin { name, days } => {
                    ("admin", ca.issue_admin(&name, days_to(days)?)?)
                }
                IssueKind::Server { dns, ips } => ("server", ca.issue_server(&dns, &ips)?),
            };
            let crt = out_dir.join(format!("{name}.crt"));
            let key = out_dir.join(format!("{name}.key"));
            refuse_overwrite(&[&crt, &key], force)?;
            issued.write(&crt, &key)?;
            let ca_copy = out_dir.join("ca.crt");
            if ca_copy != ca_dir.join("ca.crt") {
                ebb_certs::write_atomic(&ca_copy, ca.cert_pem().as_bytes(), 0o644)?;
            }
            println!(
                "wrote {}, {} and {}",
                crt.display(),
                key.display(),
                ca_copy.display()
            );
        }
        Command::Show { file } => {
            for der in ebb_certs::load_certs(&file)? {
                let info = ebb_certs::describe(&der)?;
                println!("subject:    {}", info.subject);
                match &info.identity {
                    Some(id) => println!("identity:   {id}"),
                    None => println!("identity:   (none)"),
                }
                println!("ca:         {}", info.is_ca);
                println!("not before: {}", info.not_before);
                println!("not after:  {}", info.not_after);
            }
        }
    }
    Ok(())
}

fn days_to(days: u64) -> anyhow::Result<Duration> {
    if days == 0 || days > 3650 {
        bail!("--days must be between 1 and 3650, got {days}");
    }
    Ok(Duration::from_secs(days * 86_400))
}

fn refuse_overwrite(paths: &[&Path], force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    for p in paths {
        if p.exists() {
            bail!("{} already exists; pass --force to replace it", p.display());
        }
    }
    Ok(())
}
