//! The demo's load balancer: a real `haproxy` in front of the group, driven
//! by a target agent, with a steady request loop through it that counts
//! the answers of each instance. Only when `haproxy` is on PATH and the demo
//! runs as root (the instances then get network namespaces and addresses of
//! their own on a bridge of the demo's); otherwise the demo says why, once.
//! Also the instances' workload, `ebb-controller demo-web`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The target agent's name, and the backend it fills.
pub const TARGET: &str = "lb1";
pub const BACKEND: &str = "web";
/// The port `demo-web` serves on in each instance's namespace.
pub const WEB_PORT: u16 = 8080;
/// How long a leaving instance drains (HAProxy ends it earlier once the
/// server has no sessions left).
pub const DRAIN_SECS: u32 = 5;
/// The pause between two requests of the loop.
pub const REQUEST_PAUSE: Duration = Duration::from_millis(50);

/// Why the demo runs without HAProxy, or None when it shows it.
pub fn unavailable(haproxy: Option<&Path>, root: bool) -> Option<&'static str> {
    match (haproxy, root) {
        (None, _) => Some(
            "HAProxy: not shown — `haproxy` is not installed (apt-get install haproxy; it must be on PATH)",
        ),
        (Some(_), false) => Some(
            "HAProxy: not shown — it needs root for the instances' network namespaces (run the demo as root)",
        ),
        (Some(_), true) => None,
    }
}

/// An executable file named `name` in a directory of PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The demo's own bridge (from its pid, at most 15 bytes) and a /24 in
/// which no interface of the host has an address.
pub fn pick_network(pid: u32) -> anyhow::Result<(String, String)> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .context("running `ip` (iproute2) to find a free subnet")?;
    if !out.status.success() {
        bail!(
            "ip -o -4 addr show: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let used: Vec<(u32, u32)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let cidr = l.split_whitespace().skip_while(|f| *f != "inet").nth(1)?;
            let (addr, prefix) = cidr.split_once('/').unwrap_or((cidr, "32"));
            Some((addr.parse::<Ipv4Addr>().ok()?.into(), prefix.parse().ok()?))
        })
        .collect();
    let seed = pid.wrapping_mul(2_654_435_761);
    let network = (0..4096u32)
        .map(|i| {
            let v = seed.wrapping_add(i.wrapping_mul(7919));
            // 10.64.0.0 to 10.127.255.0: clear of the tests' 10.128/9.
            u32::from(Ipv4Addr::new(
                10,
                64 + (v % 64) as u8,
                ((v / 64) % 256) as u8,
                0,
            ))
        })
        .find(|&n| !used.iter().any(|&(addr, prefix)| overlaps(n, addr, prefix)))
        .context("no free 10.x.y.0/24 for the demo's bridge")?;
    Ok((
        format!("ebd{pid}"),
        format!("{}/24", Ipv4Addr::from(network)),
    ))
}

/// Whether the /24 at `network` and an interface's `addr/prefix` overlap.
fn overlaps(network: u32, addr: u32, prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix.min(24)).unwrap_or(0);
    network & mask == addr & mask
}

/// Requests sent through HAProxy, and who answered them.
#[derive(Default)]
pub struct Counts {
    pub total: AtomicU64,
    pub failed: AtomicU64,
    /// Instance id → requests it answered.
    pub by_instance: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    pub fn per_instance(&self) -> BTreeMap<String, u64> {
        self.by_instance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A server of the backend as HAProxy reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub state: &'static str,
}

/// HAProxy, its target agent, and the request loop.
pub struct Lb {
    haproxy: Child,
    agent: Option<Child>,
    pub dir: PathBuf,
    pub frontend: SocketAddr,
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    requests: Option<std::thread::JoinHandle<()>>,
    /// Whether the request loop was started (it may have stopped since).
    started: bool,
}

impl Lb {
    /// Starts haproxy with its admin socket in `dir` and a frontend on a
    /// free loopback port; waits until the socket answers.
    pub fn start_haproxy(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let frontend = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let socket = dir.join("admin.sock");
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n    stats socket {} level admin\n\
                 defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend demo\n    bind {frontend}\n    default_backend {BACKEND}\n\
                 # ebb fills this backend with the group's instances.\n\
                 backend {BACKEND}\n    balance roundrobin\n    option httpchk GET /\n    retries 3\n    option redispatch\n",
                socket.display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        // A process group of its own, as the instances have: Ctrl-C on the
        // demo's terminal must not kill it before the teardown drains the
        // group through it.
        let haproxy = Command::new("haproxy")
            .process_group(0)
            .args(["-db", "-q", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting haproxy")?;
        let mut lb = Self {
            haproxy,
            agent: None,
            dir: dir.to_owned(),
            frontend,
            counts: Arc::default(),
            stop: Arc::default(),
            requests: None,
            started: false,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = lb.haproxy.try_wait() {
                bail!(
                    "haproxy exited ({status}): {}",
                    std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("haproxy's runtime socket {} did not open", socket.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(lb)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    /// Starts the target agent that drives this haproxy, with its target
    /// certificate (issued by the demo controller's CA) and that CA.
    pub fn start_agent(
        &mut self,
        agent_bin: &Path,
        issued: &ebb_certs::Issued,
        ca_pem: &str,
        controller: SocketAddr,
    ) -> anyhow::Result<()> {
        let dir = self.dir.join("target-agent");
        std::fs::create_dir_all(&dir)?;
        issued.write(&dir.join("agent.crt"), &dir.join("agent.key"))?;
        std::fs::write(dir.join("ca.crt"), ca_pem)?;
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "controller = \"{controller}\"\nserver_name = \"localhost\"\n\
                 [reconnect]\nmax_backoff_ms = 1000\n\
                 [tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n\
                 [target]\nstate_dir = \"state\"\n\
                 [target.haproxy]\nsocket = {}\ncheck = true\n",
                super::toml_string(&self.socket().display().to_string())
            ),
        )?;
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = Command::new(agent_bin)
            .process_group(0)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the target agent {}", agent_bin.display()))?;
        self.agent = Some(child);
        Ok(())
    }

    /// Whether the request loop was started.
    pub fn sending(&self) -> bool {
        self.started
    }

    /// Starts the steady request loop through the frontend.
    pub fn start_requests(&mut self) {
        self.started = true;
        let (stop, counts, frontend) = (self.stop.clone(), self.counts.clone(), self.frontend);
        self.requests = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                counts.total.fetch_add(1, Ordering::Relaxed);
                match http_get(frontend) {
                    Some(id) => {
                        *counts
                            .by_instance
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(id)
                            .or_default() += 1;
                    }
                    None => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(REQUEST_PAUSE);
            }
        }));
    }

    /// Stops the request loop (the request under way finishes).
    pub fn stop_requests(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.requests.take() {
            let _ = t.join();
        }
    }

    /// The backend's servers, by name; None when the socket does not answer.
    pub fn servers(&self) -> Option<Vec<Server>> {
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("show servers state {BACKEND}\n").as_bytes())
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(parse_servers(&out))
    }

    /// Kills the target agent and haproxy and waits for them.
    pub fn kill(&mut self) {
        self.stop_requests();
        for child in self
            .agent
            .iter_mut()
            .chain(std::iter::once(&mut self.haproxy))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.agent = None;
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `show servers state` as name and a word for its state: `maint` (put in
/// maintenance), `drain`, `up` (checks pass) or `down`.
pub fn parse_servers(out: &str) -> Vec<Server> {
    out.lines()
        .skip(1)
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let op: u32 = f.get(5)?.parse().ok()?;
            let admin: u32 = f.get(6)?.parse().ok()?;
            // SRV_ADMF_*: FMAINT 0x1, IMAINT 0x2, CMAINT 0x4, RMAINT 0x20,
            // HMAINT 0x40; FDRAIN 0x8, IDRAIN 0x10. SRV_ST_RUNNING is 2.
            let state = if admin & 0x67 != 0 {
                "maint"
            } else if admin & 0x18 != 0 {
                "drain"
            } else if op == 2 {
                "up"
            } else {
                "down"
            };
            Some(Server {
                name: f.get(3)?.to_string(),
                state,
            })
        })
        .collect()
}

/// One `GET /` through the frontend; the body of a 200, else None.
fn http_get(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    if !out.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(out.split("\r\n\r\n").nth(1)?.trim().to_owned())
}

/// Deletes what is left on the demo's bridge (the instances' veths and
/// namespaces, normally already gone with their release) and the bridge.
pub fn remove_network(bridge: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let prefix = format!("{bridge}.");
    let namespaces: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let ports = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ports: Vec<String> = ports
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect();
    let mut run = |args: &[&str]| match Command::new("ip").args(args).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => problems.push(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => problems.push(format!("ip {}: {e}", args.join(" "))),
    };
    for port in &ports {
        run(&["link", "del", port]);
    }
    for ns in &namespaces {
        run(&["netns", "del", ns]);
    }
    run(&["link", "del", bridge]);
    problems
}

/// `ebb-controller demo-web`: the demo instances' workload. An HTTP server
/// on `0.0.0.0:$PORT` (8080) answering every request with
/// `$EBB_INSTANCE_ID`, one thread per connection, one request per
/// connection. Std only: it runs in each instance's namespace.
pub fn web() -> std::process::ExitCode {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => match p.parse() {
            Ok(p) => p,
            Err(_) => {
                eprintln!("ebb-controller demo-web: PORT `{p}` is not a port number");
                return std::process::ExitCode::from(64);
            }
        },
        Err(_) => WEB_PORT,
    };
    let id: Arc<str> = std::env::var("EBB_INSTANCE_ID").unwrap_or_default().into();
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ebb-controller demo-web: cannot listen on 0.0.0.0:{port}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("ebb-controller demo-web: instance {id:?} listening on 0.0.0.0:{port}");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let id = id.clone();
        std::thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            // The request's head, up to its blank line; a body is not read.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head_only = head.starts_with(b"HEAD ");
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    id.len(),
                    if head_only { "" } else { &id }
                )
                .as_bytes(),
            );
        });
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_why_haproxy_is_not_shown() {
        let haproxy = Path::new("/usr/sbin/haproxy");
        assert_eq!(unavailable(Some(haproxy), true), None);
        let missing = unavailable(None, true).unwrap();
        assert!(missing.contains("`haproxy` is not installed"), "{missing}");
        assert!(missing.contains("apt-get install haproxy"), "{missing}");
        assert_eq!(unavailable(None, false), Some(missing));
        let not_root = unavailable(Some(haproxy), false).unwrap();
        assert!(not_root.contains("needs root"), "{not_root}");
    }

    #[test]
    fn a_subnet_overlaps_a_wider_or_equal_interface_network() {
        let ip = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        assert!(overlaps(ip("10.70.3.0"), ip("10.70.3.9"), 24));
        assert!(overlaps(ip("10.70.3.0"), ip("10.70.3.9"), 32));
        assert!(overlaps(ip("10.70.3.0"), ip("10.1.2.3"), 8));
        assert!(overlaps(ip("10.70.3.0"), ip("192.168.0.1"), 0));
        assert!(!overlaps(ip("10.70.3.0"), ip("10.70.4.1"), 24));
        assert!(!overlaps(ip("10.70.3.0"), ip("192.168.0.1"), 16));
    }

    #[test]
    fn reads_the_backends_servers_and_their_states() {
        let out = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight ...\n\
                   3 web 1 i-up 10.64.0.2 2 0 1 1 1 6 3 0 6 0 0 0 - 8080 - 0 0 - - 0\n\
                   3 web 2 i-drain 10.64.0.3 2 8 1 1 1 6 3 0 6 0 0 0 - 8080 - 0 0 - - 0\n\
                   3 web 3 i-maint 10.64.0.4 0 1 1 1 1 6 3 0 6 0 0 0 - 8080 - 0 0 - - 0\n\
                   3 web 4 i-down 10.64.0.5 0 0 1 1 1 6 3 0 6 0 0 0 - 8080 - 0 0 - - 0\n";
        let got: Vec<(String, &str)> = parse_servers(out)
            .into_iter()
            .map(|s| (s.name, s.state))
            .collect();
        assert_eq!(
            got,
            [
                ("i-up".to_owned(), "up"),
                ("i-drain".to_owned(), "drain"),
                ("i-maint".to_owned(), "maint"),
                ("i-down".to_owned(), "down"),
            ]
        );
    }
}
