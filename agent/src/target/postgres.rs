//! A local PostgreSQL's `pg_hba.conf`: one block between marker lines holds
//! a `host` line for every member of every allow-list; the rest of the file
//! is never changed. The file is rewritten atomically when the block
//! changes, then PostgreSQL is told to reload it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ebb_proto::v1::{AllowList, AttachmentReport, MemberReport, MemberState};
use tracing::{info, warn};

use super::pgwire::{self, Session};
use super::{is_attachment_id, is_name, write_atomically};
use crate::config::{PgReload, PostgresConfig};
// The auth methods a line may use: the controller's own list.
use ebb_core::model::attachments::AUTH_METHODS as METHODS;

pub const BEGIN: &str = "# BEGIN ebb managed block - written by ebb-agent, do not edit";
pub const END: &str = "# END ebb managed block";

/// One line of the block: who is let in, from where, for which attachment.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    database: String,
    user: String,
    address: IpAddr,
    method: String,
    instance_id: String,
    attachment_id: String,
}

impl Line {
    fn render(&self) -> String {
        let prefix = if self.address.is_ipv4() { 32 } else { 128 };
        format!(
            "host {} {} {}/{prefix} {} # {} {}",
            self.database,
            self.user,
            self.address,
            self.method,
            self.instance_id,
            self.attachment_id
        )
    }

    /// A line as [`Line::render`] wrote it; anything else is not ebb's.
    fn parse(text: &str) -> Option<Self> {
        let f: Vec<&str> = text.split_whitespace().collect();
        let [
            "host",
            database,
            user,
            address,
            method,
            "#",
            instance_id,
            attachment_id,
        ] = f[..]
        else {
            return None;
        };
        let (address, _) = address.split_once('/')?;
        Some(Self {
            database: database.to_owned(),
            user: user.to_owned(),
            address: address.parse().ok()?,
            method: method.to_owned(),
            instance_id: instance_id.to_owned(),
            attachment_id: attachment_id.to_owned(),
        })
    }
}

/// `pg_hba.conf` split around ebb's block.
struct HbaFile {
    before: String,
    lines: Vec<Line>,
    /// The block holds only lines ebb wrote (none edited in by hand).
    clean: bool,
    after: String,
}

impl HbaFile {
    fn parse(text: &str) -> Result<Self, String> {
        let begins = text.lines().filter(|l| l.trim_end() == BEGIN).count();
        let ends = text.lines().filter(|l| l.trim_end() == END).count();
        match (begins, ends) {
            (0, 0) => {
                let mut before = text.to_owned();
                if !before.is_empty() && !before.ends_with('\n') {
                    before.push('\n');
                }
                Ok(Self {
                    before,
                    lines: Vec::new(),
                    clean: true,
                    after: String::new(),
                })
            }
            (1, 1) => {
                let (before, rest) = split_at_line(text, BEGIN);
                if rest.lines().all(|l| l.trim_end() != END) {
                    return Err(format!(
                        "`{END}` comes before `{BEGIN}` (fix the file by hand)"
                    ));
                }
                let (block, after) = split_at_line(rest, END);
                let lines: Vec<Line> = block.lines().filter_map(Line::parse).collect();
                let clean = lines.len() == block.lines().filter(|l| !l.trim().is_empty()).count();
                Ok(Self {
                    before: before.to_owned(),
                    lines,
                    clean,
                    after: after.to_owned(),
                })
            }
            _ => Err(format!(
                "it has {begins} `{BEGIN}` and {ends} `{END}` lines; ebb writes exactly one block (fix the file by hand)"
            )),
        }
    }

    fn render(&self) -> String {
        let mut text = self.before.clone();
        text.push_str(BEGIN);
        text.push('\n');
        for l in &self.lines {
            text.push_str(&l.render());
            text.push('\n');
        }
        text.push_str(END);
        text.push('\n');
        text.push_str(&self.after);
        text
    }
}

/// Splits `text` into what comes before the line equal to `marker` and
/// what comes after it, the line itself dropped. Without it: (`text`, "").
fn split_at_line<'a>(text: &'a str, marker: &str) -> (&'a str, &'a str) {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == marker {
            return (&text[..at], &text[at + line.len()..]);
        }
        at += line.len();
    }
    (text, "")
}

/// A database, user or method: nothing that could end the field, start a
/// comment, quote, or include a file.
fn is_hba_word(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('@')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$' | '+' | ','))
}

/// The lines an allow-list asks for, or why it cannot be applied (with the
/// members at fault).
fn wanted(list: &AllowList) -> Result<Vec<Line>, (String, HashMap<String, String>)> {
    let mut problems = Vec::new();
    if !is_attachment_id(&list.attachment_id) {
        problems.push(format!("{:?} is not an attachment id", list.attachment_id));
    }
    for (what, v) in [("database", &list.database), ("user", &list.user)] {
        if !is_hba_word(v) {
            problems.push(format!(
                "{what} {v:?} is not a pg_hba.conf name (letters, digits, '_', '-', '.', '$', '+', ',')"
            ));
        }
    }
    if !METHODS.contains(&list.auth_method.as_str()) {
        problems.push(format!(
            "auth method {:?} is not one of {}",
            list.auth_method,
            METHODS.join(", ")
        ));
    }
    let mut members = HashMap::new();
    let mut lines = Vec::new();
    for m in &list.members {
        if !is_name(&m.instance_id) {
            members.insert(
                m.instance_id.clone(),
                format!("{:?} is not an instance id", m.instance_id),
            );
            continue;
        }
        match m.address.parse::<IpAddr>() {
            Ok(address) => lines.push(Line {
                database: list.database.clone(),
                user: list.user.clone(),
                address,
                method: list.auth_method.clone(),
                instance_id: m.instance_id.clone(),
                attachment_id: list.attachment_id.clone(),
            }),
            Err(_) => {
                members.insert(
                    m.instance_id.clone(),
                    format!("{:?} is not an IP address", m.address),
                );
            }
        }
    }
    if !members.is_empty() {
        let mut names: Vec<_> = members.keys().cloned().collect();
        names.sort();
        problems.push(format!("members with bad entries: {}", names.join(", ")));
    }
    if problems.is_empty() {
        Ok(lines)
    } else {
        Err((
            format!(
                "not applied, the lines it had are kept: {}",
                problems.join("; ")
            ),
            members,
        ))
    }
}

/// The pg_hba.conf ebb writes, and how it reloads PostgreSQL.
pub struct Postgres {
    config: PostgresConfig,
    /// The file changed but PostgreSQL has not reloaded it yet.
    reload_pending: bool,
    /// What PostgreSQL said about the file at the last reload.
    file_errors: String,
}

impl Postgres {
    pub fn new(config: PostgresConfig) -> Self {
        Self {
            config,
            // Whatever a previous run wrote may not have been reloaded.
            reload_pending: true,
            file_errors: String::new(),
        }
    }

    pub fn hba_file(&self) -> &PathBuf {
        &self.config.hba_file
    }

    /// Makes the block hold exactly the lines of `lists`; an allow-list
    /// that cannot be applied keeps the lines it had. Reports what the
    /// file holds afterwards.
    pub async fn converge(&mut self, lists: &[AllowList]) -> Vec<AttachmentReport> {
        let path = self.config.hba_file.clone();
        let failed = |error: String| {
            lists
                .iter()
                .map(|l| AttachmentReport {
                    attachment_id: l.attachment_id.clone(),
                    error: error.clone(),
                    members: Vec::new(),
                })
                .collect()
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => return failed(format!("cannot read {}: {e}", path.display())),
        };
        let mut file = match HbaFile::parse(&text) {
            Ok(f) => f,
            Err(e) => return failed(format!("{}: {e}", path.display())),
        };
        let mut errors: HashMap<String, (String, HashMap<String, String>)> = HashMap::new();
        let mut lines = Vec::new();
        for list in lists {
            match wanted(list) {
                Ok(l) => lines.extend(l),
                Err(e) => {
                    warn!(attachment = %list.attachment_id, "allow-list refused: {}", e.0);
                    lines.extend(
                        file.lines
                            .iter()
                            .filter(|l| l.attachment_id == list.attachment_id)
                            .cloned(),
                    );
                    errors.insert(list.attachment_id.clone(), e);
                }
            }
        }
        let mut file_error = String::new();
        // A line edited into the block by hand is not ebb's: it goes too.
        if lines != file.lines || !file.clean {
            file.lines = lines;
            match write_atomically(&path, file.render().as_bytes()) {
                Ok(()) => {
                    info!(file = %path.display(), lines = file.lines.len(), "rewrote ebb's block of pg_hba.conf");
                    self.reload_pending = true;
                }
                Err(e) => {
                    file_error = format!("cannot write {}: {e}", path.display());
                    // What is on disk is what the report must show.
                    file = HbaFile::parse(&text).expect("parsed above");
                }
            }
        }
        if self.reload_pending {
            match self.reload().await {
                Ok(file_errors) => {
                    self.reload_pending = false;
                    self.file_errors = file_errors;
                }
                Err(e) => {
                    warn!("PostgreSQL not reloaded: {e}");
                    file_error = join(&file_error, &e);
                }
            }
        }
        let file_error = join(&file_error, &self.file_errors);
        lists
            .iter()
            .map(|list| {
                let (own, mut member_errors) =
                    errors.remove(&list.attachment_id).unwrap_or_default();
                let mut members: Vec<MemberReport> = file
                    .lines
                    .iter()
                    .filter(|l| l.attachment_id == list.attachment_id)
                    .map(|l| MemberReport {
                        instance_id: l.instance_id.clone(),
                        state: MemberState::Ready as i32,
                        up: None,
                        current_sessions: 0,
                        error: member_errors.remove(&l.instance_id).unwrap_or_default(),
                    })
                    .collect();
                members.extend(member_errors.into_iter().map(|(instance_id, error)| {
                    MemberReport {
                        instance_id,
                        state: MemberState::Unspecified as i32,
                        up: None,
                        current_sessions: 0,
                        error,
                    }
                }));
                AttachmentReport {
                    attachment_id: list.attachment_id.clone(),
                    error: join(&own, &file_error),
                    members,
                }
            })
            .collect()
    }

    /// Has PostgreSQL read the file again; with `sql`, returns what it
    /// finds wrong in the file (empty when nothing).
    async fn reload(&self) -> Result<String, String> {
        match self.config.reload {
            PgReload::Signal => {
                let dir = self
                    .config
                    .data_dir
                    .as_ref()
                    .expect("validated: signal has a data_dir");
                let pid_file = dir.join("postmaster.pid");
                let text = std::fs::read_to_string(&pid_file)
                    .map_err(|e| format!("cannot read {}: {e}", pid_file.display()))?;
                let pid: i32 = text
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse().ok())
                    .filter(|p| *p > 1)
                    .ok_or_else(|| {
                        format!(
                            "{}: no postmaster pid on its first line",
                            pid_file.display()
                        )
                    })?;
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGHUP,
                )
                .map_err(|e| {
                    format!(
                        "cannot send SIGHUP to the postmaster (pid {pid} from {}): {e}",
                        pid_file.display()
                    )
                })?;
                info!(pid, "sent SIGHUP to the postmaster");
                Ok(String::new())
            }
            PgReload::Sql => {
                let socket = self.config.socket_path();
                let user = &self.config.user;
                let talk = async {
                    let mut s = Session::connect_unix(&socket, user).await?;
                    let asked_at = s.query("SELECT clock_timestamp()::text").await?;
                    let asked_at = asked_at
                        .first()
                        .and_then(|r| r.first().cloned().flatten())
                        .ok_or("PostgreSQL gave no clock_timestamp()")?;
                    s.query("SELECT pg_reload_conf()").await?;
                    let rows = s
                        .query("SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL ORDER BY line_number")
                        .await?;
                    s.close().await;
                    // pg_reload_conf() only signals the postmaster, which
                    // reloads when it gets to it; until then new
                    // connections still meet the old rules (a removed
                    // address let in). A new session's pg_conf_load_time()
                    // is the postmaster's (it reloads the files and pg_hba
                    // together, between two forks), so the reload is done
                    // once a new session's is later than the request.
                    let check = format!(
                        "SELECT pg_conf_load_time() > '{}'::timestamptz",
                        asked_at.replace('\'', "")
                    );
                    loop {
                        let mut s = Session::connect_unix(&socket, user).await?;
                        let done = s.query(&check).await?;
                        s.close().await;
                        if done
                            .first()
                            .and_then(|r| r.first().cloned().flatten())
                            .as_deref()
                            == Some("t")
                        {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    Ok::<_, String>(rows)
                };
                let rows = tokio::time::timeout(pgwire::TIMEOUT, talk)
                    .await
                    .map_err(|_| {
                        format!(
                            "PostgreSQL at {} did not answer in {:?}",
                            socket.display(),
                            pgwire::TIMEOUT
                        )
                    })??;
                info!("PostgreSQL reloaded its configuration");
                Ok(rows
                    .iter()
                    .map(|r| {
                        format!(
                            "{} line {}: {}",
                            self.config.hba_file.display(),
                            r.first().cloned().flatten().unwrap_or_default(),
                            r.get(1).cloned().flatten().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "))
            }
        }
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}; {b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, addr: &str) -> Line {
        Line {
            database: "app".into(),
            user: "web".into(),
            address: addr.parse().unwrap(),
            method: "scram-sha-256".into(),
            instance_id: id.into(),
            attachment_id: "g-1/app/web".into(),
        }
    }

    #[test]
    fn a_block_is_appended_then_replaced_in_place() {
        let original = "local all all peer\nhost all all 127.0.0.1/32 md5";
        let mut f = HbaFile::parse(original).unwrap();
        f.lines = vec![line("i-1", "10.0.0.5"), line("i-2", "fd00::7")];
        let once = f.render();
        assert_eq!(
            once,
            format!(
                "local all all peer\nhost all all 127.0.0.1/32 md5\n{BEGIN}\nhost app web 10.0.0.5/32 scram-sha-256 # i-1 g-1/app/web\nhost app web fd00::7/128 scram-sha-256 # i-2 g-1/app/web\n{END}\n"
            )
        );
        let edited = format!("{once}host all all ::1/128 md5\n");
        let mut f = HbaFile::parse(&edited).unwrap();
        assert_eq!(f.lines, [line("i-1", "10.0.0.5"), line("i-2", "fd00::7")]);
        f.lines.remove(0);
        assert_eq!(
            f.render(),
            format!(
                "local all all peer\nhost all all 127.0.0.1/32 md5\n{BEGIN}\nhost app web fd00::7/128 scram-sha-256 # i-2 g-1/app/web\n{END}\nhost all all ::1/128 md5\n"
            )
        );
    }

    #[test]
    fn a_line_edited_into_the_block_makes_it_unclean() {
        let ours = line("i-1", "10.0.0.5").render();
        let f = HbaFile::parse(&format!("{BEGIN}\n{ours}\n\n{END}\n")).unwrap();
        assert!(f.clean);
        let f = HbaFile::parse(&format!(
            "{BEGIN}\n{ours}\nhost all all 0.0.0.0/0 trust\n{END}\n"
        ))
        .unwrap();
        assert!(!f.clean);
        assert_eq!(f.lines, [line("i-1", "10.0.0.5")]);
    }

    #[test]
    fn broken_markers_are_refused() {
        for text in [
            format!("{BEGIN}\n"),
            format!("{END}\n{BEGIN}\n"),
            format!("{BEGIN}\n{END}\n{BEGIN}\n{END}\n"),
        ] {
            assert!(HbaFile::parse(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn nothing_that_could_inject_a_line_is_accepted() {
        let ok = AllowList {
            attachment_id: "g-1/app/web".into(),
            database: "app".into(),
            user: "web".into(),
            auth_method: "md5".into(),
            members: vec![ebb_proto::v1::Member {
                instance_id: "i-1".into(),
                address: "10.0.0.5".into(),
                ..Default::default()
            }],
        };
        assert_eq!(wanted(&ok).unwrap().len(), 1);
        for bad in [
            AllowList {
                database: "app all\nhost all".into(),
                ..ok.clone()
            },
            AllowList {
                user: "\"web\"".into(),
                ..ok.clone()
            },
            AllowList {
                user: "@users".into(),
                ..ok.clone()
            },
            AllowList {
                auth_method: "peer".into(),
                ..ok.clone()
            },
            AllowList {
                auth_method: "md5 #".into(),
                ..ok.clone()
            },
            AllowList {
                attachment_id: "g 1".into(),
                ..ok.clone()
            },
        ] {
            let (err, _) = wanted(&bad).unwrap_err();
            assert!(err.starts_with("not applied"), "{err}");
        }
        let mut bad_member = ok.clone();
        bad_member.members[0].address = "10.0.0.5/0".into();
        let (err, members) = wanted(&bad_member).unwrap_err();
        assert!(err.contains("i-1"), "{err}");
        assert!(members["i-1"].contains("not an IP address"), "{members:?}");
    }
}
