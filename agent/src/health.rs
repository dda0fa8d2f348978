//! Local health checks: HTTP GET, TCP connect or a command, each on its own interval.
//!
//! The latest result of each check rides along in every `Sample`; the
//! controller decides what an unhealthy instance means.

use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::describe::{describe, describe_exit, describe_lowercase, timed_out};
pub use crate::http::HttpUrl;
use crate::http::{parse_status_line, send_get};

/// The longest status line (and anything read before it) an HTTP probe accepts.
const MAX_STATUS_LINE: usize = 8 * 1024;

/// `tokio::time::interval` panics on a zero period; a check never runs more often than this.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// How a check decides whether the workload is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// HTTP/1.1 GET over plain TCP, healthy on any 2xx status.
    Http { url: String },
    /// TCP connect succeeds.
    Tcp { address: String },
    /// Command exits 0. argv[0] is the program; no shell.
    Command { argv: Vec<String> },
}

impl Probe {
    /// Parses an `http://host[:port][/path]` URL; https and other schemes are rejected.
    pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
        HttpUrl::parse(url).map_err(|why| format!("bad health check URL {url:?}: {why}"))
    }
}

/// One configured check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub name: String,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
}

/// The outcome of a check's latest run.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub healthy: bool,
    /// Failed runs in a row; 0 when healthy.
    pub consecutive_failures: u32,
    /// Why the check failed; empty when healthy.
    pub message: String,
    pub checked_at_unix_ms: i64,
}

type Latest = Arc<Mutex<Vec<Option<CheckResult>>>>;

/// Runs each check on its own interval (first run immediately) in tokio tasks
/// on the current runtime; keeps only the latest result per check.
pub struct HealthChecks {
    latest: Latest,
    tasks: Vec<JoinHandle<()>>,
}

impl HealthChecks {
    /// Starts one task per check. Must be called from within a tokio runtime.
    pub fn spawn(checks: Vec<HealthCheck>) -> Self {
        let latest: Latest = Arc::new(Mutex::new(vec![None; checks.len()]));
        let tasks = checks
            .into_iter()
            .enumerate()
            .map(|(index, check)| tokio::spawn(run_check(index, check, Arc::clone(&latest))))
            .collect();
        HealthChecks { latest, tasks }
    }

    /// Latest result of each check that has run at least once, in configuration order.
    pub fn results(&self) -> Vec<CheckResult> {
        lock(&self.latest).iter().flatten().cloned().collect()
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        // Aborting drops any running command, which kill_on_drop then kills.
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn run_check(index: usize, check: HealthCheck, latest: Latest) {
    let mut ticker = tokio::time::interval(check.interval.max(MIN_INTERVAL));
    // A probe slower than its interval delays the next run instead of bunching runs up.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failures: u32 = 0;
    loop {
        ticker.tick().await;
        let outcome = probe_once(&check.probe, check.timeout).await;
        let (healthy, message) = match outcome {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(check = %check.name, "health check passing again");
                }
                failures = 0;
                (true, String::new())
            }
            Err(message) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(check = %check.name, %message, "health check failing");
                }
                (false, message)
            }
        };
        lock(&latest)[index] = Some(CheckResult {
            name: check.name.clone(),
            healthy,
            consecutive_failures: failures,
            message,
            checked_at_unix_ms: unix_ms_now(),
        });
    }
}

/// Runs one probe once with its timeout; Ok(()) when healthy, Err(reason) otherwise.
pub async fn probe_once(probe: &Probe, timeout: Duration) -> Result<(), String> {
    match probe {
        Probe::Http { url } => bounded(timeout, http_get(url)).await,
        Probe::Tcp { address } => bounded(timeout, tcp_connect(address)).await,
        Probe::Command { argv } => run_command(argv, timeout).await,
    }
}

async fn bounded(
    timeout: Duration,
    probe: impl Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or_else(|_| Err(timed_out(timeout)))
}

async fn tcp_connect(address: &str) -> Result<(), String> {
    TcpStream::connect(address)
        .await
        .map(drop)
        .map_err(|e| format!("connect to {address}: {}", describe_lowercase(&e)))
}

async fn http_get(url: &str) -> Result<(), String> {
    let target = Probe::parse_http_url(url)?;
    let mut stream = send_get(&target, None).await?;

    let mut response = Vec::with_capacity(256);
    let status_line = loop {
        if let Some(end) = response.iter().position(|&b| b == b'\n') {
            break String::from_utf8_lossy(&response[..end])
                .trim_end()
                .to_owned();
        }
        if response.len() >= MAX_STATUS_LINE {
            return Err(format!(
                "no status line in the first {MAX_STATUS_LINE} bytes from {url}"
            ));
        }
        let mut chunk = [0u8; 1024];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read response from {url}: {}", describe_lowercase(&e)))?;
        if n == 0 {
            return Err(format!(
                "{url} closed the connection before sending a status line"
            ));
        }
        response.extend_from_slice(&chunk[..n]);
    };

    let status = parse_status_line(&status_line)
        .ok_or_else(|| format!("bad status line {status_line:?} from {url}"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP {status} from {url}"))
    }
}

async fn run_command(argv: &[String], timeout: Duration) -> Result<(), String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "empty command".to_owned())?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {}", describe(&e)))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(describe_exit(status)),
        Ok(Err(e)) => Err(format!("waiting for `{program}`: {}", describe(&e))),
        Err(_) => {
            // Kill and reap it now rather than leave that to kill_on_drop's background reaper.
            let _ = child.kill().await;
            Err(timed_out(timeout))
        }
    }
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A poisoned lock only means a task panicked mid-update; the data is still the latest we have.
fn lock(latest: &Latest) -> MutexGuard<'_, Vec<Option<CheckResult>>> {
    latest
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;
    use tokio::time::Instant;

    /// Serves one connection with `response` and hands back the request it read.
    async fn serve_once(response: &'static str) -> (String, oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/healthz?deep=1", listener.local_addr().unwrap());
        let (sent, received) = oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let n = socket.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..n]);
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            let _ = sent.send(String::from_utf8(request).unwrap());
        });
        (url, received)
    }

    /// A port on 127.0.0.1 that nothing listens on (bound, then released).
    async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }

    fn http(url: &str) -> Probe {
        Probe::Http {
            url: url.to_owned(),
        }
    }

    fn command(argv: &[&str]) -> Probe {
        Probe::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn http_200_is_healthy_and_the_request_is_well_formed() {
        let (url, request) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        assert_eq!(probe_once(&http(&url), TIMEOUT).await, Ok(()));
        let request = request.await.unwrap();
        let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
        assert_eq!(
            request,
            format!(
                "GET /healthz?deep=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: ebb-agent\r\nConnection: close\r\n\r\n"
            )
        );
    }

    #[tokio::test]
    async fn http_503_is_unhealthy_with_the_code() {
        let (url, _request) =
            serve_once("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            probe_once(&http(&url), TIMEOUT).await,
            Err(format!("HTTP 503 from {url}"))
        );
    }

    #[tokio::test]
    async fn http_garbage_is_unhealthy() {
        let (url, _request) = serve_once("SSH-2.0-OpenSSH_9.6\r\n").await;
        let error = probe_once(&http(&url), TIMEOUT).await.unwrap_err();
        assert!(error.starts_with("bad status line"), "{error}");
    }

    #[tokio::test]
    async fn http_connection_refused() {
        let port = closed_port().await;
        let url = format!("http://127.0.0.1:{port}/");
        assert_eq!(
            probe_once(&http(&url), TIMEOUT).await,
            Err(format!("connect to 127.0.0.1:{port}: connection refused"))
        );
    }

    #[tokio::test]
    async fn http_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let started = Instant::now();
        let result = probe_once(&http(&url), Duration::from_millis(100)).await;
        assert_eq!(result, Err("timed out after 100ms".to_owned()));
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
    }

    #[tokio::test]
    async fn tcp_connect_to_a_listener_is_healthy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let probe = Probe::Tcp {
            address: listener.local_addr().unwrap().to_string(),
        };
        assert_eq!(probe_once(&probe, TIMEOUT).await, Ok(()));
    }

    #[tokio::test]
    async fn tcp_connect_to_a_closed_port_is_unhealthy() {
        let address = format!("127.0.0.1:{}", closed_port().await);
        let probe = Probe::Tcp {
            address: address.clone(),
        };
        assert_eq!(
            probe_once(&probe, TIMEOUT).await,
            Err(format!("connect to {address}: connection refused"))
        );
    }

    #[tokio::test]
    async fn commands() {
        assert_eq!(probe_once(&command(&["true"]), TIMEOUT).await, Ok(()));
        assert_eq!(
            probe_once(&command(&["false"]), TIMEOUT).await,
            Err("exit status 1".to_owned())
        );
        assert_eq!(
            probe_once(&command(&["sh", "-c", "exit 3"]), TIMEOUT).await,
            Err("exit status 3".to_owned())
        );
        assert_eq!(
            probe_once(&command(&["/nonexistent/ebb-check"]), TIMEOUT).await,
            Err("cannot run `/nonexistent/ebb-check`: No such file or directory".to_owned())
        );
        assert_eq!(
            probe_once(&command(&[]), TIMEOUT).await,
            Err("empty command".to_owned())
        );
    }

    #[tokio::test]
    async fn slow_command_is_killed_at_the_timeout() {
        let started = Instant::now();
        assert_eq!(
            probe_once(&command(&["sleep", "5"]), Duration::from_millis(100)).await,
            Err("timed out after 100ms".to_owned())
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// Polls `results` until `done` holds or the deadline passes.
    async fn eventually(
        checks: &HealthChecks,
        done: impl Fn(&[CheckResult]) -> bool,
    ) -> Vec<CheckResult> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let results = checks.results();
            if done(&results) || Instant::now() > deadline {
                return results;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn spawned_checks_count_consecutive_failures_in_config_order() {
        let closed = format!("127.0.0.1:{}", closed_port().await);
        let check = |name: &str, probe, timeout| HealthCheck {
            name: name.to_owned(),
            probe,
            interval: Duration::from_millis(50),
            timeout,
        };
        let checks = HealthChecks::spawn(vec![
            check("slow", command(&["sleep", "30"]), Duration::from_secs(60)),
            check("up", command(&["true"]), TIMEOUT),
            check(
                "down",
                Probe::Tcp {
                    address: closed.clone(),
                },
                TIMEOUT,
            ),
        ]);
        let results = eventually(&checks, |results| {
            results
                .iter()
                .any(|r| r.name == "down" && r.consecutive_failures >= 3)
        })
        .await;

        // "slow" has not finished its first run, so it has no result yet.
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["up", "down"]);
        let (up, down) = (&results[0], &results[1]);
        assert!(up.healthy);
        assert_eq!(up.consecutive_failures, 0);
        assert_eq!(up.message, "");
        assert!(!down.healthy);
        assert!(down.consecutive_failures >= 3, "{down:?}");
        assert_eq!(
            down.message,
            format!("connect to {closed}: connection refused")
        );
        assert!(down.checked_at_unix_ms > 1_600_000_000_000);
    }

    #[tokio::test]
    async fn failures_reset_when_the_check_passes_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let checks = HealthChecks::spawn(vec![HealthCheck {
            name: "port".to_owned(),
            probe: Probe::Tcp {
                address: address.to_string(),
            },
            interval: Duration::from_millis(50),
            timeout: TIMEOUT,
        }]);
        let results = eventually(&checks, |r| {
            r.first().is_some_and(|r| r.consecutive_failures >= 2)
        })
        .await;
        assert!(results[0].consecutive_failures >= 2, "{results:?}");

        let _listener = TcpListener::bind(address).await.unwrap();
        let results = eventually(&checks, |r| r.first().is_some_and(|r| r.healthy)).await;
        assert!(results[0].healthy, "{results:?}");
        assert_eq!(results[0].consecutive_failures, 0);
        assert_eq!(results[0].message, "");
    }
}
