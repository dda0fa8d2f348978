//! The attachments' real peers, started by the tests themselves and
//! stopped when dropped: Debian's `haproxy` with an admin runtime socket,
//! and a PostgreSQL 15 cluster made by `initdb` in a temp dir, on its own
//! port and socket dir, run as the `postgres` user (initdb refuses root).
//! A missing package is named in the failure, never skipped.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::is_root;
use crate::{DEADLINE, eventually};

/// PostgreSQL 15's programs, as Debian's postgresql-15 installs them.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A port free on loopback now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One `GET /` with `Connection: close`; the body on a 200, else None.
pub fn http_get(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    if !out.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(out.split("\r\n\r\n").nth(1)?.to_owned())
}

/// Runs `c`, failing with its output unless it succeeds.
pub fn run(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real haproxy, killed when dropped.
pub struct Haproxy {
    child: Child,
    dir: tempfile::TempDir,
    /// Where its frontend listens.
    pub frontend: SocketAddr,
}

impl Haproxy {
    /// Starts haproxy with an admin runtime socket and a frontend on
    /// `bind` (a free port) whose default backend is `default_backend`;
    /// `backends` is the rest of the config (the backend sections).
    pub fn start(bind: IpAddr, default_backend: &str, backends: &str) -> Self {
        let ok = Command::new("haproxy")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "this test needs the haproxy package (apt-get install haproxy; .ci/run installs it)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let frontend = SocketAddr::new(bind, free_port());
        let socket = dir.path().join("admin.sock");
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n    stats socket {} level admin\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\nfrontend fe\n    bind {frontend}\n    default_backend {default_backend}\n{backends}",
                socket.display()
            ),
        )
        .expect("haproxy.cfg");
        let child = Command::new("haproxy")
            .args(["-db", "-q"])
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let p = Self {
            child,
            dir,
            frontend,
        };
        eventually("haproxy's runtime socket to accept", DEADLINE, || {
            std::os::unix::net::UnixStream::connect(p.socket())
                .ok()
                .map(drop)
        });
        p
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// One runtime API command's answer.
    pub fn runtime(&self, cmd: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).expect("admin socket");
        s.write_all(format!("{cmd}\n").as_bytes()).expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    /// `show servers state <backend>`, one entry per server.
    pub fn servers(&self, backend: &str) -> Vec<ServerState> {
        self.runtime(&format!("show servers state {backend}"))
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some(ServerState {
                    name: f.get(3)?.to_string(),
                    address: f.get(4)?.to_string(),
                    admin_state: f.get(6)?.parse().ok()?,
                    weight: f.get(7)?.parse().ok()?,
                    port: f.get(18)?.parse().ok()?,
                })
            })
            .collect()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server as `show servers state` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub name: String,
    pub address: String,
    /// `srv_admin_state`: 0 ready, 1 forced maint, 8 drain (flags).
    pub admin_state: u32,
    pub weight: u32,
    pub port: u16,
}

/// A PostgreSQL 15 cluster of the test's own, stopped when dropped.
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
}

/// A program of PostgreSQL's, run as the `postgres` user.
pub fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"])
        .arg(Path::new(PG_BIN).join(program));
    c
}

impl PgCluster {
    /// `initdb` (trust) into a temp dir, `pg_hba` set to `hba`, started on
    /// a free port listening on `listen` (e.g. `127.0.0.1`), its unix
    /// socket in the temp dir.
    pub fn start(listen: &str, hba: &str) -> Self {
        assert!(
            is_root(),
            "this test needs root (initdb refuses root, so the cluster runs as the postgres user); run the suite as root, as .ci/run does"
        );
        assert!(
            Path::new(PG_BIN).join("initdb").exists(),
            "this test needs the postgresql-15 package (apt-get install postgresql-15; .ci/run installs it)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        run(Command::new("chown").arg("postgres:").arg(dir.path()));
        let c = Self {
            dir,
            port: free_port(),
        };
        run(as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(c.data()));
        std::fs::write(c.hba(), hba).expect("pg_hba.conf");
        run(as_postgres("pg_ctl")
            .arg("-D")
            .arg(c.data())
            .arg("-l")
            .arg(c.dir.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses={listen}",
                c.port,
                c.dir.path().display()
            ))
            .args(["-w", "start"]));
        c
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn hba(&self) -> PathBuf {
        self.data().join("pg_hba.conf")
    }

    /// The unix socket's directory.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
