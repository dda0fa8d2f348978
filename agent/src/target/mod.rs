//! Target mode: the agent on a load balancer's or database's host. The
//! controller sends the whole desired state (every attachment with its
//! complete member list); a task converges the local HAProxy and/or
//! PostgreSQL to it, reports what it applied, and looks again every second,
//! reporting again whenever what it sees changes.
//!
//! - `haproxy`: servers through HAProxy's runtime API.
//! - `postgres`: ebb's block of `pg_hba.conf`, then a reload.
//! - `pgwire`: the few messages of PostgreSQL's protocol the reload needs.

pub mod haproxy;
pub mod pgwire;
pub mod postgres;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use ebb_proto::v1::{AttachmentReport, TargetKind, TargetReport, TargetState};
use tokio::sync::watch;
use tracing::warn;

use crate::config::TargetConfig;

/// How often the target looks at what it drives without being asked: a
/// check going UP or a drained server's last session ending reaches the
/// controller within this.
pub const OBSERVE_EVERY: Duration = Duration::from_secs(1);

/// A target agent's converging task, as the stream sees it.
pub struct Target {
    /// The name its certificate carries.
    pub name: String,
    pub drives: Vec<TargetKind>,
    states: watch::Sender<Option<TargetState>>,
    reports: watch::Receiver<Option<TargetReport>>,
}

impl Target {
    /// Starts the task. Nothing is touched until the first state arrives.
    pub fn spawn(name: String, config: &TargetConfig) -> std::io::Result<Self> {
        let mut drives = Vec::new();
        let haproxy = match &config.haproxy {
            Some(h) => {
                drives.push(TargetKind::Haproxy);
                Some(
                    haproxy::Haproxy::new(h.socket.clone(), h.check, &config.state_dir).map_err(
                        |e| {
                            std::io::Error::new(
                                e.kind(),
                                format!("target.state_dir: {}: {e}", config.state_dir.display()),
                            )
                        },
                    )?,
                )
            }
            None => None,
        };
        let postgres = config.postgres.clone().map(|p| {
            drives.push(TargetKind::Postgres);
            postgres::Postgres::new(p)
        });
        let (states, states_rx) = watch::channel(None);
        let (reports_tx, reports) = watch::channel(None);
        tokio::spawn(run(Drivers { haproxy, postgres }, states_rx, reports_tx));
        Ok(Self {
            name,
            drives,
            states,
            reports,
        })
    }

    /// Hands over a new desired state; one being applied is given up for it.
    pub fn apply(&self, state: TargetState) {
        self.states.send_replace(Some(state));
    }

    /// The reports to send, each once; the latest only when several pile up.
    pub fn reports(&self) -> watch::Receiver<Option<TargetReport>> {
        let mut r = self.reports.clone();
        r.mark_unchanged();
        r
    }
}

/// What this target's agent.toml lets it drive.
pub struct Drivers {
    pub haproxy: Option<haproxy::Haproxy>,
    pub postgres: Option<postgres::Postgres>,
}

impl Drivers {
    /// One pass over everything in `state`.
    pub async fn converge(
        &mut self,
        state: &TargetState,
        superseded: &(dyn Fn() -> bool + Sync),
    ) -> TargetReport {
        let mut attachments = Vec::new();
        match &mut self.haproxy {
            Some(h) => attachments.extend(h.converge(&state.load_balancers, superseded).await),
            None => attachments.extend(state.load_balancers.iter().map(|lb| {
                not_driven(
                    &lb.attachment_id,
                    "HAProxy ([target.haproxy] is not in its agent.toml)",
                )
            })),
        }
        match &mut self.postgres {
            Some(p) => attachments.extend(p.converge(&state.allow_lists).await),
            None => attachments.extend(state.allow_lists.iter().map(|l| {
                not_driven(
                    &l.attachment_id,
                    "PostgreSQL ([target.postgres] is not in its agent.toml)",
                )
            })),
        }
        TargetReport {
            version: state.version,
            attachments,
        }
    }
}

fn not_driven(attachment_id: &str, what: &str) -> AttachmentReport {
    AttachmentReport {
        attachment_id: attachment_id.to_owned(),
        error: format!("this target does not drive {what}"),
        members: Vec::new(),
    }
}

async fn run(
    mut drivers: Drivers,
    mut states: watch::Receiver<Option<TargetState>>,
    reports: watch::Sender<Option<TargetReport>>,
) {
    let mut tick = tokio::time::interval(OBSERVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<TargetReport> = None;
    loop {
        let asked = tokio::select! {
            changed = states.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
            _ = tick.tick() => false,
        };
        let Some(state) = states.borrow_and_update().clone() else {
            continue;
        };
        let superseded = || states.has_changed().unwrap_or(true);
        let report = drivers.converge(&state, &superseded).await;
        if superseded() {
            continue;
        }
        // Every state asked for is answered, even when nothing changed.
        if asked || last.as_ref() != Some(&report) {
            for a in report.attachments.iter().filter(|a| !a.error.is_empty()) {
                warn!(attachment = %a.attachment_id, version = report.version, "{}", a.error);
            }
            reports.send_replace(Some(report.clone()));
            last = Some(report);
        }
    }
}

/// A backend, server or instance name that is safe inside a runtime
/// command and a pg_hba.conf comment.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// An attachment id: names joined by `/`.
pub(crate) fn is_attachment_id(s: &str) -> bool {
    s.len() <= 512 && s.split('/').all(is_name)
}

/// Replaces `path` with `contents` so a reader sees the old file or the
/// new one, never a mix: a temporary file beside it with the same owner
/// and mode, flushed to disk, renamed over it, the directory flushed too.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let tmp = dir.join(format!(".{}.ebb-tmp", name.to_string_lossy()));
    let existing = std::fs::metadata(path).ok();
    let mode = existing.as_ref().map_or(0o644, |m| m.mode() & 0o7777);
    let _ = std::fs::remove_file(&tmp);
    let write = || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        if let Some(m) = &existing {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
            // The umask may have narrowed the mode at creation.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        }
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_keeps_owner_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("pg_hba.conf");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn names_cannot_carry_separators() {
        assert!(is_name("i-0a1b") && is_attachment_id("g-1/web"));
        for bad in ["", "a b", "a/b", "a;b", "a\nb", "a#b"] {
            assert!(!is_name(bad), "{bad:?}");
        }
        assert!(!is_attachment_id("g-1//web") && !is_attachment_id("g 1/web"));
    }
}
