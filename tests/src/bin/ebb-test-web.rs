//! `ebb-test-web`: the tests' workload. An HTTP/1.1 server on
//! `0.0.0.0:$PORT` (8080 by default) that answers every request with
//! `$EBB_INSTANCE_ID` as its body, so a client sees which instance served
//! it. One thread per connection, keep-alive with Content-Length.
//! `GET /sleep/<ms>` waits that long (at most a minute) before answering:
//! a session a load balancer must drain.
//! Arguments are ignored: tests pass their sandbox's path, so that the
//! sandbox's clean-up (which kills what names it) finds the process.
//!
//! On SIGTERM it stops taking connections, closes its idle kept-alive
//! connections (shutting their reading side, so a request already received
//! is still read and answered), lets the requests under way finish (their
//! responses say `Connection: close`), and exits 0 once no connection is
//! left: a workload drained by a load balancer and then released loses
//! nothing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

const DEFAULT_PORT: u16 = 8080;
/// How long connections may take to finish after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// A request's head larger than this is refused; real ones are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Default)]
struct State {
    stopping: AtomicBool,
    next: AtomicU64,
    /// Every open connection, and whether it waits for its next request.
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

struct Conn {
    stream: TcpStream,
    idle: AtomicBool,
}

impl State {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn main() {
    let port = match std::env::var("PORT") {
        Ok(p) => p.parse().unwrap_or_else(|_| {
            eprintln!("ebb-test-web: PORT `{p}` is not a port number");
            std::process::exit(64);
        }),
        Err(_) => DEFAULT_PORT,
    };
    let id = std::env::var("EBB_INSTANCE_ID").unwrap_or_default();
    // Blocked here, before any thread starts, so that every thread inherits
    // the mask and only the waiting thread below ever takes SIGTERM.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    term.thread_block().expect("block SIGTERM");
    let listener = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| {
        eprintln!("ebb-test-web: cannot listen on 0.0.0.0:{port}: {e}");
        std::process::exit(1);
    });
    eprintln!("ebb-test-web: instance {id:?} listening on 0.0.0.0:{port}");
    let state = Arc::new(State::default());
    let on_term = state.clone();
    std::thread::spawn(move || {
        let _ = term.wait();
        on_term.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stopping` and closes the listener.
        let _ = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(1),
        );
        // Idle connections are closed for reading (again each round: one
        // may turn idle later); the others finish their request first.
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            let open: Vec<Arc<Conn>> = on_term.conns().values().cloned().collect();
            if open.is_empty() || Instant::now() >= deadline {
                break;
            }
            for conn in open.iter().filter(|c| c.idle.load(Ordering::SeqCst)) {
                let _ = conn.stream.shutdown(Shutdown::Read);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("ebb-test-web: SIGTERM; requests under way finished, exiting");
        std::process::exit(0);
    });
    let body: Arc<str> = id.into();
    for conn in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        let (state, body) = (state.clone(), body.clone());
        std::thread::spawn(move || {
            let key = state.next.fetch_add(1, Ordering::SeqCst);
            let Ok(stream) = conn.try_clone() else {
                return;
            };
            let me = Arc::new(Conn {
                stream,
                idle: AtomicBool::new(true),
            });
            state.conns().insert(key, me.clone());
            serve(conn, &me, &state, &body);
            state.conns().remove(&key);
        });
    }
    drop(listener);
    // Stopping: the SIGTERM thread exits the process once requests finish.
    loop {
        std::thread::park();
    }
}

/// Answers requests on one connection until the client closes it, asks for
/// close, or the server is stopping.
fn serve(conn: TcpStream, me: &Conn, state: &State, body: &str) {
    let _ = conn.set_nodelay(true);
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        // Idle until the next request starts to arrive: a stopping server
        // closes the reading side of idle connections, and the read then
        // ends (after whatever was already received).
        me.idle.store(true, Ordering::SeqCst);
        match reader.fill_buf() {
            Ok([]) | Err(_) => return,
            Ok(_) => {}
        }
        me.idle.store(false, Ordering::SeqCst);
        if !answer(&mut reader, &mut writer, state, body) {
            return;
        }
    }
}

/// Reads one request and writes its response; whether to keep the
/// connection open afterwards.
fn answer(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    state: &State,
    body: &str,
) -> bool {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        match reader.read_until(b'\n', &mut head) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if head.len() > MAX_HEAD {
            let _ = writer.write_all(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return false;
        }
        let line = &head[before..];
        if before > 0 && (line == b"\r\n" || line == b"\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let version = parts.next().unwrap_or("HTTP/1.0");
    let mut length = 0usize;
    let mut close = version != "HTTP/1.1";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "connection" if value.eq_ignore_ascii_case("close") => close = true,
            "connection" if value.eq_ignore_ascii_case("keep-alive") => close = false,
            _ => {}
        }
    }
    // A body, if any, is read and dropped.
    if std::io::copy(
        &mut reader.by_ref().take(length as u64),
        &mut std::io::sink(),
    )
    .is_err()
    {
        return false;
    }
    if let Some(ms) = path
        .strip_prefix("/sleep/")
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms.min(60_000)));
    }
    close |= state.stopping.load(Ordering::SeqCst);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{}",
        body.len(),
        if close { "close" } else { "keep-alive" },
        if method == "HEAD" { "" } else { body },
    );
    writer.write_all(response.as_bytes()).is_ok() && writer.flush().is_ok() && !close
}
