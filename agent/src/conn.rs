//! The stream to the controller: dial out over mTLS, say Hello, answer each
//! Pull with a Sample; on any failure try the next controller of the list,
//! with jittered exponential back-off between full rounds (`follow`), logging
//! once per change of state rather than once per retry. A controller that is
//! not the leader names the leader, and the agent goes there.
//! At two thirds of its certificate's life the agent makes a new key, sends
//! a signing request on the open stream, and swaps in the signed cert for
//! its next connection; the stream it asked on stays up.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ebb_proto::redirect::leader_of;
use ebb_proto::v1::agent_message::Body as AgentBody;
use ebb_proto::v1::agent_service_client::AgentServiceClient;
use ebb_proto::v1::controller_message::Body as ControllerBody;
use ebb_proto::v1::{self as pb, AgentMessage, Collector, CollectorError, Hello, ProtocolVersion};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::{debug, info, warn};

use crate::collect::{CollectorKind, Collectors, CustomMetrics, HostFacts, Reading};
use crate::config::{server_name_for, split_host_port};
use crate::follow::{Next, Rotation};
use crate::health::{CheckResult, HealthChecks};

/// The first retry comes quickly: most failures are a controller restart.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// A redirect to the leader waits up to this (uniformly), so a fleet told
/// at once does not arrive at once.
const REDIRECT_JITTER_MS: u64 = 250;
/// A dial that has not connected by then is a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The TLS handshake, and then the stream's opening, each get this long: a
/// controller that accepts TCP but never answers (paused by SIGSTOP, or
/// hung) must not hold the agent, so it moves to the next controller.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings find a vanished controller even while the stream is idle.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// How long a clean shutdown waits for the controller to close its half.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A controller silent for this many sampling intervals is treated as gone.
const SILENT_INTERVALS: u32 = 3;
/// ... but never sooner than this, so a slow controller is not abandoned.
const MIN_SILENCE: Duration = Duration::from_secs(30);
/// Custom metric sources get at most 1/this of the sampling interval, so a
/// slow one cannot make the sample miss its pull (the controller drops a
/// sample that comes after the next pull was due).
const CUSTOM_SHARE_OF_INTERVAL: u32 = 2;

/// A renewal request unanswered for this long is sent again.
const RENEWAL_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// After a refused or failed renewal the agent asks again after a tenth of
/// the certificate's remaining life, within these bounds: soon enough for
/// several tries before expiry, rarely enough not to hammer the controller.
const MIN_RENEWAL_RETRY: Duration = Duration::from_secs(1);
const MAX_RENEWAL_RETRY: Duration = Duration::from_secs(300);

/// Where the agent's certificate lives and how to dial with it: what a
/// renewal rewrites and each dial builds its endpoint from.
pub struct TlsFiles {
    /// The name every controller's certificate carries; the host of the
    /// address dialled when `None`.
    pub server_name: Option<String>,
    pub ca_pem: Vec<u8>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The cert and key on disk, ready to dial with.
#[derive(Clone)]
pub struct Credentials {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// The cert's notBefore and notAfter.
    pub validity: (SystemTime, SystemTime),
}

impl TlsFiles {
    /// The cert and key now on disk, and the cert's validity.
    pub fn load(&self) -> anyhow::Result<Credentials> {
        use anyhow::Context;
        ebb_certs::recover_pair(&self.cert, &self.key)?;
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let (cert_pem, key_pem) = (read(&self.cert)?, read(&self.key)?);
        let leaf = ebb_certs::load_certs(&self.cert)?;
        let info = ebb_certs::describe(&leaf[0])?;
        Ok(Credentials {
            cert_pem,
            key_pem,
            validity: (info.not_before.into(), info.not_after.into()),
        })
    }

    /// The endpoint for the controller at `addr` (`host:port`).
    pub fn endpoint(
        &self,
        credentials: &Credentials,
        addr: &str,
    ) -> Result<Endpoint, tonic::transport::Error> {
        endpoint(
            addr,
            &server_name_for(self.server_name.as_deref(), addr),
            &self.ca_pem,
            &credentials.cert_pem,
            &credentials.key_pem,
        )
    }
}

/// Everything one agent needs to talk to its controllers.
pub struct Agent {
    /// The controllers, and which one to dial next.
    pub controllers: Rotation,
    /// The cert files, renewed over the stream.
    pub tls: TlsFiles,
    /// The cert and key to dial with, and the cert's validity.
    pub credentials: Credentials,
    /// Who the certificate says this agent is: an instance, or a target.
    pub role: ebb_certs::Role,
    /// In target mode, the task converging what this host drives.
    pub target: Option<crate::target::Target>,
    pub facts: HostFacts,
    pub collectors: Collectors,
    /// The `[[metric]]` sources, read on every pull.
    pub custom: CustomMetrics,
    pub checks: HealthChecks,
    pub check_names: Vec<String>,
    pub max_backoff: Duration,
    /// Whether lifecycle hook scripts may run, and from where (`[hooks]`).
    pub hooks: std::sync::Arc<crate::config::HooksConfig>,
}

/// Builds the mTLS endpoint for `controller` (`host:port`).
pub fn endpoint(
    controller: &str,
    server_name: &str,
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Endpoint, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .domain_name(server_name);
    Ok(Channel::from_shared(format!("https://{controller}"))
        .expect("validated host:port makes a valid URI")
        .tls_config(tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The stream could not be opened, or failed.
    Lost {
        /// Whether the controller had accepted us (sent Welcome).
        welcomed: bool,
        reason: String,
        /// The leader, when the controller refused us as not being it.
        leader: Option<String>,
    },
    /// We were asked to stop, and closed the stream cleanly.
    Shutdown,
}

impl Agent {
    /// Runs sessions until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = INITIAL_BACKOFF;
        // Each address's last failure logged: a retry failing alike is quiet.
        let mut last_failure: HashMap<String, String> = HashMap::new();
        // The controller last connected to or followed: a redirect to
        // another is logged, once.
        let mut following: Option<String> = None;
        loop {
            let addr = self.controllers.current().to_owned();
            let Ended::Lost {
                welcomed,
                mut reason,
                leader,
            } = self.session(&addr, &mut shutdown).await
            else {
                break;
            };
            if welcomed {
                backoff = INITIAL_BACKOFF;
                last_failure.clear();
                self.controllers.connected();
                following = Some(addr.clone());
            }
            let leader = leader.filter(|l| {
                let usable = split_host_port(l).is_ok();
                if !usable {
                    reason.push_str(&format!(
                        " (it names `{l}` as the leader, which is not host:port)"
                    ));
                }
                usable
            });
            let next = match leader {
                Some(leader) => {
                    let next = self.controllers.redirected(&leader);
                    if next == Next::Leader && following.as_deref() != Some(&leader) {
                        info!(
                            "the controller at {addr} is not the leader; following the leader at {leader}"
                        );
                        following = Some(leader);
                    }
                    next
                }
                None if welcomed => {
                    warn!("lost the controller at {addr}: {reason}; reconnecting");
                    self.controllers.failed()
                }
                None => {
                    if last_failure.get(&addr) != Some(&reason) {
                        let then = if self.controllers.several() {
                            "trying the next, with back-off up to"
                        } else {
                            "retrying with back-off up to"
                        };
                        warn!(
                            "cannot connect to the controller at {addr}: {reason}; {then} {:?} between rounds",
                            self.max_backoff
                        );
                        last_failure.insert(addr, reason);
                    }
                    self.controllers.failed()
                }
            };
            let wait = match next {
                Next::Leader => Duration::from_millis(fastrand::u64(0..=REDIRECT_JITTER_MS)),
                // A fleet that lost its controller at once spreads out.
                Next::Dial if welcomed => jitter(INITIAL_BACKOFF),
                Next::Dial => Duration::ZERO,
                Next::BackOff => {
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(self.max_backoff);
                    wait
                }
            };
            debug!(
                next = %self.controllers.current(),
                "retrying in {wait:?}"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut shutdown => break,
            }
        }
        info!("shut down");
    }

    async fn session(
        &mut self,
        addr: &str,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Ended {
        let before = |reason: String| Ended::Lost {
            welcomed: false,
            reason,
            leader: None,
        };
        let endpoint = match self.tls.endpoint(&self.credentials, addr) {
            Ok(e) => e,
            Err(e) => return before(format!("TLS setup: {}", error_chain(&e))),
        };
        let channel = tokio::select! {
            r = tokio::time::timeout(OPEN_TIMEOUT, endpoint.connect()) => match r {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return before(error_chain(&e)),
                Err(_) => return before(format!("no TLS handshake within {OPEN_TIMEOUT:?}")),
            },
            _ = &mut *shutdown => return Ended::Shutdown,
        };
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<AgentMessage>(4);
        let hello = self.hello();
        if tx.try_send(wrap(AgentBody::Hello(hello))).is_err() {
            return before("internal queue closed".into());
        }
        let mut inbound = tokio::select! {
            r = tokio::time::timeout(OPEN_TIMEOUT, client.connect(ReceiverStream::new(rx))) => match r {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(status)) => return Ended::Lost {
                    welcomed: false,
                    reason: status_text(&status),
                    leader: leader_of(&status),
                },
                Err(_) => return before(format!("the stream did not open within {OPEN_TIMEOUT:?}")),
            },
            _ = &mut *shutdown => return Ended::Shutdown,
        };
        let mut enabled: Vec<CollectorKind> = CollectorKind::ALL.to_vec();
        let mut silence = MIN_SILENCE;
        let mut welcomed = false;
        let mut last_collect = Instant::now();
        // Until a Welcome names the interval, each source's own time-out bounds it.
        let mut custom_budget = Duration::MAX;
        // When to ask for a new certificate, and the key of a request in flight.
        let mut renew_at = self.renewal_time();
        let mut pending: Option<ebb_certs::Csr> = None;
        // A target's reports; an instance's agent has none to send.
        let mut reports = self.target.as_ref().map(|t| t.reports());
        let end = |welcomed: bool, reason: String| Ended::Lost {
            welcomed,
            reason,
            leader: None,
        };
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(silence, inbound.message()) => next,
                _ = tokio::time::sleep_until(renew_at), if welcomed => {
                    if pending.is_some() {
                        warn!("no answer to the certificate renewal request in {RENEWAL_ANSWER_TIMEOUT:?}; asking again");
                    }
                    match ebb_certs::Csr::generate() {
                        Ok(csr) => {
                            let request = pb::RenewRequest { csr_pem: csr.csr_pem.clone() };
                            if tx.send(wrap(AgentBody::RenewRequest(request))).await.is_err() {
                                return end(welcomed, "the outbound stream closed".into());
                            }
                            info!("asked the controller to renew the certificate (valid until {})", when(self.credentials.validity.1));
                            pending = Some(csr);
                            renew_at = tokio::time::Instant::now() + RENEWAL_ANSWER_TIMEOUT;
                        }
                        Err(e) => {
                            let retry = self.renewal_retry();
                            warn!("cannot make a key for renewal: {e}; retrying in {retry:?}");
                            renew_at = tokio::time::Instant::now() + retry;
                        }
                    }
                    continue;
                }
                Some(report) = next_report(&mut reports) => {
                    debug!(version = report.version, "sending a target report");
                    if tx.send(wrap(AgentBody::TargetReport(report))).await.is_err() {
                        return end(welcomed, "the outbound stream closed".into());
                    }
                    continue;
                }
                _ = &mut *shutdown => {
                    // End our half of the stream so the controller sees a
                    // clean close, and give it a moment to end its half.
                    drop(tx);
                    let _ = tokio::time::timeout(CLOSE_GRACE, inbound.message()).await;
                    return Ended::Shutdown;
                }
            };
            let msg = match next {
                Err(_) => {
                    return end(
                        welcomed,
                        format!("no message from the controller for {silence:?}"),
                    );
                }
                // A controller that stepped down names the new leader.
                Ok(Err(status)) => {
                    return Ended::Lost {
                        welcomed,
                        reason: status_text(&status),
                        leader: leader_of(&status),
                    };
                }
                Ok(Ok(None)) => return end(welcomed, "the controller closed the stream".into()),
                Ok(Ok(Some(m))) => m,
            };
            match msg.body {
                Some(ControllerBody::Welcome(w)) => {
                    if !welcomed {
                        info!(
                            controller = %addr,
                            identity = ?self.role,
                            sampling_interval_ms = w.sampling_interval_ms,
                            "connected to the controller"
                        );
                    }
                    welcomed = true;
                    enabled = kinds(&w.collect);
                    let interval = Duration::from_millis(u64::from(w.sampling_interval_ms));
                    silence = (interval * SILENT_INTERVALS).max(MIN_SILENCE);
                    custom_budget = interval / CUSTOM_SHARE_OF_INTERVAL;
                    // Prime the rate collectors (and counters among the custom
                    // metrics) so the first Pull has a window.
                    last_collect = Instant::now();
                    self.collectors.collect(&enabled, last_collect);
                    self.custom.read(last_collect, custom_budget).await;
                }
                Some(ControllerBody::Pull(pull)) => {
                    let now = Instant::now();
                    let reading = self.collectors.collect(&enabled, now);
                    let custom = self.custom.read(now, custom_budget).await.values;
                    let window = now.duration_since(last_collect);
                    last_collect = now;
                    let sample = sample(pull.seq, window, reading, self.checks.results(), custom);
                    if tx.send(wrap(AgentBody::Sample(sample))).await.is_err() {
                        return end(welcomed, "the outbound stream closed".into());
                    }
                }
                Some(ControllerBody::RunHook(run)) => {
                    info!(hook = %run.hook_name, transition = %run.transition, token = %run.token, "running lifecycle hook script");
                    let tx = tx.clone();
                    let hooks = self.hooks.clone();
                    tokio::spawn(async move {
                        let result = crate::hooks::run(run, &hooks).await;
                        if result.refused {
                            warn!(token = %result.token, "lifecycle hook script refused: {}", result.error);
                        } else {
                            info!(token = %result.token, exit_code = ?result.exit_code, error = %result.error, "lifecycle hook script finished");
                        }
                        if tx.send(wrap(AgentBody::HookResult(result))).await.is_err() {
                            warn!("the stream closed before the hook result could be sent");
                        }
                    });
                }
                Some(ControllerBody::TargetState(state)) => match &self.target {
                    Some(target) => {
                        debug!(version = state.version, "received a target state");
                        target.apply(state);
                    }
                    None => {
                        warn!(
                            "ignored a target state: this agent is an instance's, not a target's"
                        );
                    }
                },
                Some(ControllerBody::Closing(c)) => {
                    warn!(reason = %c.reason, "the controller is closing this stream");
                }
                Some(ControllerBody::Renewed(renewed)) => {
                    let Some(csr) = pending.take() else {
                        warn!("ignored a renewed certificate nobody asked for");
                        continue;
                    };
                    renew_at = match self.swap_in(csr, renewed) {
                        Ok(()) => self.renewal_time(),
                        Err(e) => {
                            let retry = self.renewal_retry();
                            warn!(
                                "certificate not renewed: {e}; asking again in {retry:?} (the current one is valid until {})",
                                when(self.credentials.validity.1)
                            );
                            tokio::time::Instant::now() + retry
                        }
                    };
                }
                // A command from a newer controller: not ours to answer.
                None => {}
            }
        }
    }

    /// When two thirds of the current certificate's life have passed.
    fn renewal_time(&self) -> tokio::time::Instant {
        let (not_before, not_after) = self.credentials.validity;
        let life = not_after.duration_since(not_before).unwrap_or_default();
        let at = not_before + life * 2 / 3;
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::Instant::now() + wait
    }

    /// How long to wait before asking again after a failure.
    fn renewal_retry(&self) -> Duration {
        let left = self
            .credentials
            .validity
            .1
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        (left / 10).clamp(MIN_RENEWAL_RETRY, MAX_RENEWAL_RETRY)
    }

    /// Checks the controller's answer, writes the new key and cert (see
    /// [`ebb_certs::Issued::write`]) and dials with them from the next
    /// connection on.
    fn swap_in(&mut self, csr: ebb_certs::Csr, renewed: pb::Renewed) -> anyhow::Result<()> {
        use anyhow::{Context, bail};
        let tls = &self.tls;
        if !renewed.error.is_empty() {
            bail!("the controller refused: {}", renewed.error);
        }
        let info = ebb_certs::describe_pem(&renewed.cert_pem).context("the renewed certificate")?;
        let names_us = matches!(&info.identity, Some(id) if id.role == self.role);
        if !names_us {
            bail!(
                "the renewed certificate names {:?}, not {:?}",
                info.identity.map(|i| i.uri()),
                self.role
            );
        }
        if !ebb_certs::key_matches(&renewed.cert_pem, &csr.key_pem)? {
            bail!("the renewed certificate is not for the key this agent made");
        }
        csr.into_issued(renewed.cert_pem)
            .write(&tls.cert, &tls.key)
            .context("cannot write the renewed certificate")?;
        let credentials = tls.load()?;
        let validity = credentials.validity;
        self.credentials = credentials;
        info!(
            cert = %tls.cert.display(),
            serial = %info.serial,
            "renewed the certificate; valid until {}, used from the next connection on",
            when(validity.1)
        );
        Ok(())
    }

    fn hello(&self) -> Hello {
        let instance_id = match &self.role {
            ebb_certs::Role::Instance(id) => id.clone(),
            _ => String::new(),
        };
        Hello {
            protocol_version: ProtocolVersion::ProtocolVersion1 as i32,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            instance_id,
            hostname: self.facts.hostname.clone(),
            addresses: self.facts.addresses.iter().map(|a| a.to_string()).collect(),
            cpu_count: self.facts.cpu_count,
            memory_total_bytes: self.facts.memory_total_bytes,
            boot_time_unix: self.facts.boot_time_unix,
            health_checks: self.check_names.clone(),
            target_name: self
                .target
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            drives: self
                .target
                .iter()
                .flat_map(|t| t.drives.iter().map(|k| *k as i32))
                .collect(),
        }
    }
}

/// The next report to send; never, for an agent that is not a target's.
async fn next_report(
    reports: &mut Option<tokio::sync::watch::Receiver<Option<pb::TargetReport>>>,
) -> Option<pb::TargetReport> {
    let Some(r) = reports else {
        return std::future::pending().await;
    };
    if r.changed().await.is_err() {
        return std::future::pending().await;
    }
    r.borrow_and_update().clone()
}

fn wrap(body: AgentBody) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

/// A wall-clock time in UTC, for logs.
fn when(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).to_string()
}

/// Full jitter over the upper half: spreads a fleet's reconnects after a
/// controller restart while keeping the back-off meaningful.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(fastrand::f64())
}

fn kinds(collect: &[i32]) -> Vec<CollectorKind> {
    collect
        .iter()
        .filter_map(|c| match Collector::try_from(*c).ok()? {
            Collector::Cpu => Some(CollectorKind::Cpu),
            Collector::Memory => Some(CollectorKind::Memory),
            Collector::Load => Some(CollectorKind::Load),
            Collector::Network => Some(CollectorKind::Network),
            Collector::Tcp => Some(CollectorKind::Tcp),
            Collector::Unspecified => None,
        })
        .collect()
}

fn collector_of(kind: CollectorKind) -> Collector {
    match kind {
        CollectorKind::Cpu => Collector::Cpu,
        CollectorKind::Memory => Collector::Memory,
        CollectorKind::Load => Collector::Load,
        CollectorKind::Network => Collector::Network,
        CollectorKind::Tcp => Collector::Tcp,
    }
}

/// A Reading, the latest check results and the custom metrics that have a
/// value, as a protocol Sample.
pub fn sample(
    seq: u64,
    window: Duration,
    r: Reading,
    checks: Vec<CheckResult>,
    custom: Vec<(String, f64)>,
) -> pb::Sample {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    pb::Sample {
        seq,
        collected_at_unix_ms: now_ms,
        window_ms: window.as_millis() as u64,
        cpu_utilization: r.cpu_utilization,
        memory_utilization: r.memory_utilization,
        load: r.load.map(|l| pb::LoadAverage {
            one: l.one,
            five: l.five,
            fifteen: l.fifteen,
        }),
        network: r.network.map(|n| pb::NetworkRates {
            rx_bytes_per_second: n.rx_bytes_per_second,
            tx_bytes_per_second: n.tx_bytes_per_second,
        }),
        tcp: r.tcp.map(|t| pb::TcpConnections {
            total: t.total,
            established: t.established,
        }),
        health: checks
            .into_iter()
            .map(|c| pb::HealthCheckResult {
                name: c.name,
                healthy: c.healthy,
                consecutive_failures: c.consecutive_failures,
                message: c.message,
                checked_at_unix_ms: c.checked_at_unix_ms,
            })
            .collect(),
        custom: custom
            .into_iter()
            .map(|(name, value)| pb::CustomMetric { name, value })
            .collect(),
        errors: r
            .errors
            .into_iter()
            .map(|(kind, message)| CollectorError {
                collector: collector_of(kind) as i32,
                message,
            })
            .collect(),
    }
}

/// A status as one line: the refusal reason the controller gave.
fn status_text(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::PermissionDenied => format!("refused by the controller: {}", status.message()),
        tonic::Code::Unavailable => format!("controller unavailable: {}", status.message()),
        _ => format!("{}: {}", status.code(), status.message()),
    }
}

/// An error and its sources on one line ("transport error: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_upper_half() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(8));
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }

    #[test]
    fn unknown_collectors_are_ignored() {
        assert_eq!(
            kinds(&[1, 99, 5, 0]),
            [CollectorKind::Cpu, CollectorKind::Tcp]
        );
    }

    #[test]
    fn sample_carries_reading_checks_custom_metrics_and_errors() {
        let r = Reading {
            cpu_utilization: Some(12.0),
            memory_utilization: None,
            errors: vec![(CollectorKind::Memory, "/proc/meminfo: gone".into())],
            ..Default::default()
        };
        let checks = vec![CheckResult {
            name: "web".into(),
            healthy: false,
            consecutive_failures: 2,
            message: "HTTP 503".into(),
            checked_at_unix_ms: 1,
        }];
        let custom = vec![("queue_depth".to_owned(), 4.5)];
        let s = sample(7, Duration::from_secs(1), r, checks, custom);
        assert_eq!((s.seq, s.window_ms), (7, 1000));
        assert_eq!(
            s.custom,
            [pb::CustomMetric {
                name: "queue_depth".into(),
                value: 4.5
            }]
        );
        assert_eq!(s.cpu_utilization, Some(12.0));
        assert_eq!(s.memory_utilization, None);
        assert_eq!(s.health[0].consecutive_failures, 2);
        assert_eq!(s.errors[0].collector, Collector::Memory as i32);
    }
}
