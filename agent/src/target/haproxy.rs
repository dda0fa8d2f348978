//! A local HAProxy through its runtime API (`stats socket ... level admin`):
//! servers named by instance id are added, set to their address, port,
//! weight and state, and deleted when no longer listed. Only servers ebb
//! added (remembered in a file under `state_dir`) are ever changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ebb_proto::v1::{AttachmentReport, LoadBalancerMembers, MemberReport, MemberState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use super::{is_attachment_id, is_name, write_atomically};

/// One runtime command answers in microseconds; a stuck HAProxy is broken.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The remembered servers' file inside `state_dir`.
const STATE_FILE: &str = "haproxy-servers";

/// `srv_admin_state` bits (management guide, `show servers state`).
const ADMF_FMAINT: u32 = 0x01;
const ADMF_IMAINT: u32 = 0x02;
const ADMF_CMAINT: u32 = 0x04;
const ADMF_FDRAIN: u32 = 0x08;
const ADMF_IDRAIN: u32 = 0x10;
const ADMF_RMAINT: u32 = 0x20;
/// `srv_check_state`: a health check is configured for the server.
const CHK_ST_CONFIGURED: u32 = 0x02;
/// `srv_check_state`: ... and administratively enabled.
const CHK_ST_ENABLED: u32 = 0x04;
/// `srv_check_status` while no check has completed (UNKNOWN, INI).
const CHECK_NOT_RUN: [u32; 2] = [0, 1];

/// The runtime API of one HAProxy, and the servers ebb added to it.
pub struct Haproxy {
    socket: PathBuf,
    check: bool,
    managed: Managed,
}

/// What `show servers state` and `show stat` say about one server.
#[derive(Debug, Clone, PartialEq)]
struct Server {
    addr: String,
    port: u16,
    op_state: u32,
    admin_state: u32,
    weight: u32,
    check_status: u32,
    check_state: u32,
    sessions: u32,
}

impl Server {
    fn state(&self) -> MemberState {
        if self.admin_state & (ADMF_FMAINT | ADMF_IMAINT | ADMF_CMAINT | ADMF_RMAINT) != 0 {
            MemberState::Maint
        } else if self.admin_state & (ADMF_FDRAIN | ADMF_IDRAIN) != 0 {
            MemberState::Drain
        } else {
            MemberState::Ready
        }
    }

    /// The check's verdict, when the server runs one and it has spoken.
    fn up(&self) -> Option<bool> {
        (self.check_state & CHK_ST_CONFIGURED != 0)
            .then(|| self.op_state != 0 && !CHECK_NOT_RUN.contains(&self.check_status))
    }
}

/// Everything HAProxy holds now.
#[derive(Debug, Default)]
struct Observed {
    backends: BTreeSet<String>,
    servers: HashMap<(String, String), Server>,
}

/// The servers ebb added: `backend server attachment` per line. Written
/// before a server is added, so a crash between the two leaves a record of
/// a server that may not exist (dropped at the next pass), never a server
/// ebb added but forgot.
struct Managed {
    path: PathBuf,
    servers: BTreeMap<(String, String), String>,
}

impl Managed {
    fn load(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let servers = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                let (b, s, a) = (f.next()?, f.next()?, f.next()?);
                Some(((b.to_owned(), s.to_owned()), a.to_owned()))
            })
            .collect();
        Ok(Self { path, servers })
    }

    fn save(&self) -> std::io::Result<()> {
        let text: String = self
            .servers
            .iter()
            .map(|((b, s), a)| format!("{b} {s} {a}\n"))
            .collect();
        write_atomically(&self.path, text.as_bytes())
    }

    fn set(&mut self, backend: &str, server: &str, attachment: Option<&str>) -> Result<(), String> {
        let key = (backend.to_owned(), server.to_owned());
        let changed = match attachment {
            Some(a) => self.servers.insert(key, a.to_owned()).as_deref() != Some(a),
            None => self.servers.remove(&key).is_some(),
        };
        if changed {
            self.save().map_err(|e| {
                format!(
                    "cannot record ebb's servers in {}: {e}",
                    self.path.display()
                )
            })?;
        }
        Ok(())
    }
}

impl Haproxy {
    pub fn new(socket: PathBuf, check: bool, state_dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            socket,
            check,
            managed: Managed::load(state_dir)?,
        })
    }

    /// One runtime command; its answer, trimmed.
    async fn command(&self, cmd: &str) -> Result<String, String> {
        let talk = async {
            let mut s = tokio::net::UnixStream::connect(&self.socket).await?;
            s.write_all(format!("{cmd}\n").as_bytes()).await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, talk).await {
            Ok(Ok(out)) => Ok(out.trim().to_owned()),
            Ok(Err(e)) => Err(format!(
                "HAProxy's runtime socket {}: {e}",
                self.socket.display()
            )),
            Err(_) => Err(format!(
                "HAProxy's runtime socket {} did not answer `{cmd}` in {COMMAND_TIMEOUT:?}",
                self.socket.display()
            )),
        }
    }

    /// A command whose success is an empty answer (or one of `ok`).
    async fn expect(&self, cmd: &str, ok: &[&str]) -> Result<(), String> {
        let out = self.command(cmd).await?;
        if out.is_empty() || ok.iter().any(|o| out.contains(o)) {
            Ok(())
        } else {
            Err(format!("`{cmd}`: {}", out.replace('\n', " ")))
        }
    }

    async fn observe(&self) -> Result<Observed, String> {
        let state = self.command("show servers state").await?;
        let stat = self.command("show stat -1 6 -1").await?;
        parse_observed(&state, &stat)
    }

    /// Brings every backend named in `lbs` to its member list, removes the
    /// servers ebb added that no list names any more, and reports what
    /// HAProxy holds afterwards. `superseded` says a newer state is waiting:
    /// the pass stops between servers.
    pub async fn converge(
        &mut self,
        lbs: &[LoadBalancerMembers],
        superseded: &(dyn Fn() -> bool + Sync),
    ) -> Vec<AttachmentReport> {
        let observed = match self.observe().await {
            Ok(o) => o,
            Err(e) => return lbs.iter().map(|lb| failed(lb, &e)).collect(),
        };
        let mut attachment_errors: HashMap<&str, String> = HashMap::new();
        let mut member_errors: HashMap<(String, String), String> = HashMap::new();
        let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
        for lb in lbs {
            if !is_name(&lb.backend) || !is_attachment_id(&lb.attachment_id) {
                attachment_errors.insert(
                    &lb.attachment_id,
                    format!(
                        "{:?} is not a backend name or {:?} not an attachment id",
                        lb.backend, lb.attachment_id
                    ),
                );
                continue;
            }
            if !observed.backends.contains(&lb.backend) {
                attachment_errors.insert(
                    &lb.attachment_id,
                    format!(
                        "HAProxy has no backend `{}` (add it to haproxy.cfg, with a dynamic balance algorithm such as roundrobin)",
                        lb.backend
                    ),
                );
                continue;
            }
            for m in &lb.members {
                // A newer state is waiting: its pass does the rest (and
                // this pass's report is not sent).
                if superseded() {
                    return Vec::new();
                }
                let key = (lb.backend.clone(), m.instance_id.clone());
                wanted.insert(key.clone());
                if let Err(e) = self.apply(lb, m, observed.servers.get(&key)).await {
                    warn!(backend = %lb.backend, server = %m.instance_id, "{e}");
                    member_errors.insert(key, e);
                }
            }
        }
        let gone: Vec<_> = self
            .managed
            .servers
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if superseded() {
                return Vec::new();
            }
            if let Err(e) = self.remove(&key, observed.servers.get(&key)).await {
                warn!(backend = %key.0, server = %key.1, "{e}");
                member_errors.insert(key, e);
            }
        }
        let after = match self.observe().await {
            Ok(o) => o,
            Err(e) => return lbs.iter().map(|lb| failed(lb, &e)).collect(),
        };
        // A record of a server HAProxy does not hold (deleted by hand, or
        // HAProxy restarted) is dropped; a listed one is added back next pass.
        let stale: Vec<_> = self
            .managed
            .servers
            .keys()
            .filter(|k| !after.servers.contains_key(*k))
            .cloned()
            .collect();
        for (b, s) in stale {
            if let Err(e) = self.managed.set(&b, &s, None) {
                warn!("{e}");
            }
        }
        let mut reports = Vec::new();
        for lb in lbs {
            let mut members = Vec::new();
            for (key, attachment) in &self.managed.servers {
                if key.0 != lb.backend || *attachment != lb.attachment_id {
                    continue;
                }
                if let Some(server) = after.servers.get(key) {
                    members.push(MemberReport {
                        instance_id: key.1.clone(),
                        state: server.state() as i32,
                        up: server.up(),
                        current_sessions: server.sessions,
                        error: member_errors.remove(key).unwrap_or_default(),
                    });
                }
            }
            // A listed member that could not be added at all.
            for m in &lb.members {
                let key = (lb.backend.clone(), m.instance_id.clone());
                if let Some(error) = member_errors.remove(&key) {
                    members.push(MemberReport {
                        instance_id: m.instance_id.clone(),
                        state: MemberState::Unspecified as i32,
                        up: None,
                        current_sessions: 0,
                        error,
                    });
                }
            }
            reports.push(AttachmentReport {
                attachment_id: lb.attachment_id.clone(),
                error: attachment_errors
                    .get(lb.attachment_id.as_str())
                    .cloned()
                    .unwrap_or_default(),
                members,
            });
        }
        reports
    }

    /// Brings one listed member's server to its address, port, weight and state.
    async fn apply(
        &mut self,
        lb: &LoadBalancerMembers,
        m: &ebb_proto::v1::Member,
        current: Option<&Server>,
    ) -> Result<(), String> {
        let (b, s) = (lb.backend.as_str(), m.instance_id.as_str());
        if !is_name(s) {
            return Err(format!("{s:?} is not a server name"));
        }
        let addr: IpAddr = m
            .address
            .parse()
            .map_err(|_| format!("{:?} is not an IP address", m.address))?;
        let port = u16::try_from(m.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port {} is outside 1..=65535", m.port))?;
        if m.weight > 256 {
            return Err(format!("weight {} is outside 0..=256", m.weight));
        }
        let desired = match MemberState::try_from(m.state) {
            Ok(MemberState::Ready) => "ready",
            Ok(MemberState::Drain) => "drain",
            Ok(MemberState::Maint) => "maint",
            _ => return Err(format!("unknown member state {}", m.state)),
        };
        let owned = self
            .managed
            .servers
            .contains_key(&(b.to_owned(), s.to_owned()));
        let current = match current {
            Some(_) if !owned => {
                return Err(format!(
                    "backend `{b}` has a server named `{s}` that ebb did not add; left alone"
                ));
            }
            Some(c) => c.clone(),
            None => {
                self.managed.set(b, s, Some(&lb.attachment_id))?;
                let at = match addr {
                    IpAddr::V4(a) => format!("{a}:{port}"),
                    IpAddr::V6(a) => format!("[{a}]:{port}"),
                };
                let check = if self.check { " check" } else { "" };
                let added = self
                    .expect(
                        &format!("add server {b}/{s} {at} weight {}{check}", m.weight),
                        &["New server registered"],
                    )
                    .await;
                if let Err(e) = added {
                    self.managed.set(b, s, None)?;
                    return Err(e);
                }
                info!(backend = b, server = s, address = %at, "added server");
                if self.check {
                    self.expect(&format!("enable health {b}/{s}"), &[]).await?;
                }
                // A new server starts in maintenance at the asked address.
                Server {
                    addr: addr.to_string(),
                    port,
                    op_state: 0,
                    admin_state: ADMF_FMAINT,
                    weight: m.weight,
                    check_status: 0,
                    check_state: 0,
                    sessions: 0,
                }
            }
        };
        self.managed.set(b, s, Some(&lb.attachment_id))?;
        // Added with `check`, but the agent stopped before enabling it.
        let check = current.check_state & (CHK_ST_CONFIGURED | CHK_ST_ENABLED);
        if self.check && check == CHK_ST_CONFIGURED {
            self.expect(&format!("enable health {b}/{s}"), &[]).await?;
        }
        let same_addr = current.addr.parse::<IpAddr>().ok() == Some(addr);
        if !same_addr || current.port != port {
            self.expect(
                &format!("set server {b}/{s} addr {addr} port {port}"),
                &["changed", "no need to change"],
            )
            .await?;
            info!(backend = b, server = s, %addr, port, "moved server");
        }
        if current.weight != m.weight {
            self.expect(&format!("set server {b}/{s} weight {}", m.weight), &[])
                .await?;
        }
        if current.state() as i32 != m.state {
            self.expect(&format!("set server {b}/{s} state {desired}"), &[])
                .await?;
            info!(backend = b, server = s, state = desired, "set server state");
        }
        Ok(())
    }

    /// Takes a server ebb added out: maintenance, its remaining sessions
    /// cut (the controller drained it before unlisting it), then deleted.
    async fn remove(
        &mut self,
        key: &(String, String),
        current: Option<&Server>,
    ) -> Result<(), String> {
        let (b, s) = (key.0.as_str(), key.1.as_str());
        let Some(current) = current else {
            return self.managed.set(b, s, None);
        };
        if current.state() != MemberState::Maint {
            self.expect(&format!("set server {b}/{s} state maint"), &[])
                .await?;
        }
        if current.sessions > 0 {
            self.expect(&format!("shutdown sessions server {b}/{s}"), &[])
                .await?;
        }
        self.expect(&format!("del server {b}/{s}"), &["Server deleted"])
            .await?;
        info!(backend = b, server = s, "deleted server");
        self.managed.set(b, s, None)
    }
}

fn failed(lb: &LoadBalancerMembers, error: &str) -> AttachmentReport {
    AttachmentReport {
        attachment_id: lb.attachment_id.clone(),
        error: error.to_owned(),
        members: Vec::new(),
    }
}

/// Reads `show servers state` (format 1, space-separated) and `show stat`
/// (CSV, columns found by name) into one view.
fn parse_observed(state: &str, stat: &str) -> Result<Observed, String> {
    let mut lines = state.lines();
    if lines.next().map(str::trim) != Some("1") {
        return Err(format!(
            "`show servers state` answered in an unknown format: {:?}",
            state.lines().next().unwrap_or_default()
        ));
    }
    let mut observed = Observed::default();
    let mut header: Vec<&str> = Vec::new();
    for line in lines {
        if let Some(h) = line.strip_prefix('#') {
            header = h.split_whitespace().collect();
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < header.len() || header.is_empty() {
            continue;
        }
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .map(|i| fields[i])
                .unwrap_or_default()
        };
        let num = |name: &str| col(name).parse::<u32>().unwrap_or(0);
        observed.servers.insert(
            (col("be_name").to_owned(), col("srv_name").to_owned()),
            Server {
                addr: col("srv_addr").to_owned(),
                port: col("srv_port").parse().unwrap_or(0),
                op_state: num("srv_op_state"),
                admin_state: num("srv_admin_state"),
                weight: num("srv_uweight"),
                check_status: num("srv_check_status"),
                check_state: num("srv_check_state"),
                sessions: 0,
            },
        );
    }
    let mut columns: Vec<&str> = Vec::new();
    for line in stat.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            columns = h.split(',').collect();
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let col = |name: &str| {
            columns
                .iter()
                .position(|h| *h == name)
                .and_then(|i| fields.get(i).copied())
                .unwrap_or_default()
        };
        let (px, sv) = (col("pxname"), col("svname"));
        if sv == "BACKEND" {
            observed.backends.insert(px.to_owned());
        } else if let Some(server) = observed.servers.get_mut(&(px.to_owned(), sv.to_owned())) {
            server.sessions = col("scur").parse().unwrap_or(0);
        }
    }
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 web 1 static1 127.0.0.1 2 0 1 1 2 1 0 2 0 0 0 0 - 18081 - 0 0 - - 0\n3 web 2 i-1 ::1 2 8 5 5 1 6 3 2 6 0 0 0 - 18082 - 0 0 - - 0\n";
    const STAT: &str = "# pxname,svname,qcur,qmax,scur,status\nfe,FRONTEND,,,0,OPEN\nweb,static1,0,0,0,no check\nweb,i-1,0,0,3,DRAIN\nweb,BACKEND,0,0,3,UP\nempty,BACKEND,0,0,0,UP\n";

    #[test]
    fn servers_state_and_stat_are_read_by_column_name() {
        let o = parse_observed(STATE, STAT).unwrap();
        assert_eq!(
            o.backends,
            BTreeSet::from(["web".to_owned(), "empty".to_owned()])
        );
        let s = &o.servers[&("web".to_owned(), "i-1".to_owned())];
        assert_eq!(
            (s.addr.as_str(), s.port, s.weight, s.sessions),
            ("::1", 18082, 5, 3)
        );
        assert_eq!(s.state(), MemberState::Drain);
        assert_eq!(s.up(), Some(true));
        let st = &o.servers[&("web".to_owned(), "static1".to_owned())];
        assert_eq!((st.state(), st.up()), (MemberState::Ready, None));
    }

    #[test]
    fn an_unknown_state_format_is_an_error() {
        let err = parse_observed("2\n# be_id\n", STAT).unwrap_err();
        assert!(err.contains("unknown format"), "{err}");
    }
}
