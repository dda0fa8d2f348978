//! `AgentService.Connect`: checks the caller is the instance its cert names,
//! that the instance may connect (it is in a group, not detached, not
//! revoked) and that its Hello is of bounded size, then drives the stream:
//! Welcome, a Pull every sampling interval, and samples into the fleet. A
//! missed answer and a dropped stream are noticed at the next pull and at
//! once, respectively; the stream is closed at once when the controller
//! says so (revoked, left its group, replaced) and when its certificate
//! expires.
//! A renewal request on the stream is signed for the stream's own identity,
//! at most once per [`Renewal::min_interval`], and moves the stream's end
//! to the new certificate's notAfter.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use ebb_certs::{Identity, Role};
use ebb_proto::v1::agent_message::Body as AgentBody;
use ebb_proto::v1::agent_service_server::AgentService;
use ebb_proto::v1::controller_message::Body as ControllerBody;
use ebb_proto::v1::{
    AgentMessage, Closing, Collector, ControllerMessage, Hello, ProtocolVersion, Pull,
    RenewRequest, Renewed, Welcome,
};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::fleet::outbox::{Dropped, Outbound, message};
use crate::fleet::{CloseReason, Control, Fleet, Session};

/// An agent must say hello promptly; a silent stream is dropped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued towards one agent; pulls are tiny and one per interval.
const OUTBOUND_QUEUE: usize = 8;

/// Bounds on a Hello's strings (DESIGN §3, bounded inputs): a DNS name's
/// length; a version string; every address of a busy host (containers'
/// veths included) and an address's text; the checks an agent.toml can
/// hold, as its custom metrics, and their names.
const MAX_HOSTNAME: usize = 253;
const MAX_AGENT_VERSION: usize = 64;
const MAX_ADDRESSES: usize = 256;
const MAX_ADDRESS: usize = 64;
const MAX_HEALTH_CHECKS: usize = 100;
const MAX_HEALTH_CHECK_NAME: usize = 128;

/// The gRPC service agents connect to.
#[derive(Clone)]
pub struct AgentApi {
    fleet: Arc<Fleet>,
    trust_domain: String,
    sampling_interval: Duration,
    interval_of: Option<IntervalLookup>,
    admit: Admission,
    /// Whether a target may hold a stream (by name); None: no targets.
    admit_target: Option<Admission>,
    renewal: Option<Renewal>,
    shutdown: watch::Receiver<bool>,
    /// Refuses every stream while this controller does not lead (HA).
    gate: Option<Gate>,
}

/// Answers `Some(refusal)` when no stream may be opened here now (a
/// controller that is not the leader names the leader in it).
pub type Gate = Arc<dyn Fn() -> Option<Status> + Send + Sync>;

/// Who the caller's certificate says it is.
enum Caller {
    Instance(String),
    Target(String),
}

/// The sampling interval of the group an instance belongs to, if any.
pub type IntervalLookup = Arc<dyn Fn(&str) -> Option<Duration> + Send + Sync>;

/// Whether an instance may hold a stream now: it is in a group, not
/// detached, not revoked. Called twice per Connect (before the Hello and
/// once registered), so it must be a point read, never a listing.
pub type Admission = Arc<dyn Fn(&str) -> Result<(), Refusal> + Send + Sync>;

/// Why [`Admission`] refused an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The `reason` label on `/metrics`.
    pub reason: &'static str,
    /// The sentence the log and the agent get.
    pub message: String,
}

/// Signs a renewal request (PEM) for an instance id and records the new
/// cert; the error is the refusal's reason.
pub type Signer = Arc<dyn Fn(&str, &str) -> Result<String, String> + Send + Sync>;

/// How agents' renewal requests are answered.
#[derive(Clone)]
pub struct Renewal {
    pub sign: Signer,
    /// Signs a target agent's request for its target name.
    pub sign_target: Option<Signer>,
    /// A stream's renewals come at least this far apart: an agent renews at
    /// two thirds of its cert's life, so a second request sooner than that
    /// is a bug or an attack, and costs a signature and a store write.
    pub min_interval: Duration,
}

impl Renewal {
    /// One renewal per minute per stream, or per third of the agent cert's
    /// life when that is shorter (the end-to-end tests use 30 s certs).
    pub fn new(sign: Signer, agent_lifetime: Duration) -> Self {
        Self {
            sign,
            sign_target: None,
            min_interval: (agent_lifetime / 3).min(Duration::from_secs(60)),
        }
    }

    /// Renews target agents' certificates with `sign` too.
    pub fn with_targets(mut self, sign: Signer) -> Self {
        self.sign_target = Some(sign);
        self
    }
}

impl AgentApi {
    pub fn new(
        fleet: Arc<Fleet>,
        trust_domain: String,
        sampling_interval: Duration,
        admit: Admission,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            fleet,
            trust_domain,
            sampling_interval,
            interval_of: None,
            admit,
            admit_target: None,
            renewal: None,
            shutdown,
            gate: None,
        }
    }

    /// Refuses streams while `gate` says so (a controller that does not lead).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Answer renewal requests with `renewal`; without one they are refused.
    pub fn with_renewal(mut self, renewal: Renewal) -> Self {
        self.renewal = Some(renewal);
        self
    }

    /// Serve target agents (load balancer and database hosts) that
    /// `admit` lets in.
    pub fn with_targets(mut self, admit: Admission) -> Self {
        self.admit_target = Some(admit);
        self
    }

    /// Pull each instance at its group's sampling interval; others at the default.
    pub fn with_group_intervals(mut self, lookup: IntervalLookup) -> Self {
        self.interval_of = Some(lookup);
        self
    }

    fn refuse(&self, peer: &str, why: String) -> Status {
        self.fleet
            .counters
            .connections_refused_total
            .fetch_add(1, Ordering::Relaxed);
        warn!(peer, "refused agent stream: {why}");
        Status::permission_denied(why)
    }

    /// A refusal with a reason label, counted under it too.
    fn refuse_for(&self, peer: &str, refusal: Refusal) -> Status {
        self.fleet.counters.connects_refused.add(refusal.reason);
        self.refuse(peer, refusal.message)
    }

    /// The instance or target the caller's certificate names and the
    /// certificate's notAfter, or the refusal.
    fn caller_of<T>(
        &self,
        request: &Request<T>,
        peer: &str,
    ) -> Result<(Caller, SystemTime), Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| self.refuse(peer, "no client certificate".into()))?;
        let leaf = certs
            .first()
            .ok_or_else(|| self.refuse(peer, "no client certificate".into()))?;
        let info = ebb_certs::describe(leaf)
            .map_err(|e| self.refuse(peer, format!("unusable client certificate: {e}")))?;
        let identity = info.identity.ok_or_else(|| {
            self.refuse(
                peer,
                format!(
                    "unusable client certificate: {}",
                    ebb_certs::Error::NoIdentity
                ),
            )
        })?;
        let not_after = SystemTime::from(info.not_after);
        let Identity { trust_domain, role } = identity.clone();
        if trust_domain != self.trust_domain {
            return Err(self.refuse(
                peer,
                format!(
                    "certificate {identity} is for trust domain {trust_domain}, not {}",
                    self.trust_domain
                ),
            ));
        }
        // A connection whose handshake was made before the certificate
        // expired may still open streams; each is refused.
        if not_after <= SystemTime::now() {
            return Err(self.refuse_for(
                peer,
                Refusal {
                    reason: "expired",
                    message: format!(
                        "certificate {identity} expired at {}; the agent must reconnect with a new one",
                        info.not_after
                    ),
                },
            ));
        }
        match role {
            Role::Instance(id) => Ok((Caller::Instance(id), not_after)),
            Role::Target(name) => Ok((Caller::Target(name), not_after)),
            Role::Admin(_) => Err(self.refuse(
                peer,
                format!("admin certificate {identity} cannot connect as an agent"),
            )),
        }
    }
}

impl AgentApi {
    /// The stream's first message, which must be a Hello, in time.
    async fn read_hello(
        &self,
        inbound: &mut Streaming<AgentMessage>,
        peer: &str,
    ) -> Result<Hello, Status> {
        match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                body: Some(AgentBody::Hello(h)),
            }))) => Ok(h),
            Ok(Ok(Some(_))) => Err(self.refuse(peer, "the first message must be a Hello".into())),
            Ok(Ok(None)) => Err(Status::cancelled("stream closed before Hello")),
            Ok(Err(status)) => Err(self.refuse(
                peer,
                format!("unreadable first message: {}", status.message()),
            )),
            Err(_) => Err(self.refuse(peer, format!("no Hello within {HELLO_TIMEOUT:?}"))),
        }
    }

    /// A target agent's stream: its Hello must name the target its
    /// certificate names; from then on it gets its whole desired state
    /// whenever that changes, and its reports go to the registry.
    async fn connect_target(
        &self,
        name: String,
        not_after: SystemTime,
        mut inbound: Streaming<AgentMessage>,
        peer: &str,
    ) -> Result<Response<<Self as AgentService>::ConnectStream>, Status> {
        let admit = self.admit_target.as_ref().ok_or_else(|| {
            self.refuse(
                peer,
                format!("target `{name}`: this controller serves no target agents"),
            )
        })?;
        admit(&name).map_err(|r| self.refuse_for(peer, r))?;
        let hello = self.read_hello(&mut inbound, peer).await?;
        if hello.target_name != name || !hello.instance_id.is_empty() {
            return Err(self.refuse(
                peer,
                format!(
                    "Hello names target `{}` and instance `{}`, but the certificate is for target `{name}`",
                    hello.target_name, hello.instance_id
                ),
            ));
        }
        check_hello(&hello).map_err(|message| {
            self.refuse_for(
                peer,
                Refusal {
                    reason: "hello",
                    message,
                },
            )
        })?;
        let drives: Vec<String> = hello
            .drives()
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("TARGET_KIND_")
                    .to_lowercase()
            })
            .collect();
        info!(target = %name, peer, hostname = %hello.hostname, drives = ?drives, "target agent connected");
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let welcome = Welcome {
            protocol_version: ProtocolVersion::ProtocolVersion1 as i32,
            sampling_interval_ms: u32::try_from(self.sampling_interval.as_millis())
                .unwrap_or(u32::MAX),
            collect: Vec::new(),
        };
        tx.send(message(ControllerBody::Welcome(welcome)))
            .await
            .map_err(|_| Status::cancelled("agent went away"))?;
        let (session, desired) = self.fleet.targets.connect(&name);
        self.fleet.changed.notify_one();
        tokio::spawn(drive_target(
            self.fleet.clone(),
            TargetStream {
                name,
                session,
                not_after,
                interval: self.sampling_interval,
            },
            inbound,
            tx,
            desired,
            self.renewal.clone(),
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|m| Ok(*m)),
        )))
    }
}

struct TargetStream {
    name: String,
    session: u64,
    not_after: SystemTime,
    /// Pulls keep the stream alive (the agent reconnects after a silence).
    interval: Duration,
}

/// Sends a target agent its desired state whenever it changes, takes its
/// reports, until the stream ends, is superseded, or its certificate
/// expires.
async fn drive_target(
    fleet: Arc<Fleet>,
    stream: TargetStream,
    mut inbound: Streaming<AgentMessage>,
    tx: Outbound,
    mut desired: watch::Receiver<Arc<ebb_proto::v1::TargetState>>,
    renewal: Option<Renewal>,
    mut shutdown: watch::Receiver<bool>,
) {
    let TargetStream {
        name,
        session,
        not_after,
        interval,
    } = stream;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut last_renewal = None;
    let expiry = tokio::time::sleep_until(deadline(&Control {
        close: None,
        until: Some(not_after),
    }));
    tokio::pin!(expiry);
    let reason = loop {
        tokio::select! {
            () = &mut expiry => {
                fleet.counters.streams_closed.add(CloseReason::Expired.label());
                let _ = tx.try_send(message(ControllerBody::Closing(Closing {
                    reason: CloseReason::Expired.sentence().to_owned(),
                })));
                break CloseReason::Expired.sentence().to_owned();
            }
            changed = desired.changed() => {
                if changed.is_err() {
                    break "the target's state was dropped".to_owned();
                }
                if !fleet.targets.is_current(&name, session) {
                    if !fleet.targets.was_closed(&name) {
                        break "replaced by a newer stream".to_owned();
                    }
                    let why = CloseReason::Revoked;
                    fleet.counters.streams_closed.add(why.label());
                    let _ = tx.try_send(message(ControllerBody::Closing(Closing {
                        reason: why.sentence().to_owned(),
                    })));
                    break why.sentence().to_owned();
                }
                let state = (**desired.borrow_and_update()).clone();
                debug!(target = %name, version = state.version, "sending target state");
                if tx.send(message(ControllerBody::TargetState(state))).await.is_err() {
                    break "the agent went away".to_owned();
                }
            }
            _ = tick.tick() => {
                if !fleet.targets.is_current(&name, session) {
                    break "replaced by a newer stream".to_owned();
                }
                seq += 1;
                match tx.try_send(message(ControllerBody::Pull(Pull { seq }))) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => break "stream closed".to_owned(),
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(AgentMessage { body: Some(AgentBody::TargetReport(report)) })) => {
                    debug!(target = %name, version = report.version, "target report");
                    if fleet.targets.report(&name, session, report) {
                        fleet.changed.notify_one();
                    }
                }
                Ok(Some(AgentMessage { body: Some(AgentBody::RenewRequest(request)) })) => {
                    let sign = renewal
                        .as_ref()
                        .and_then(|r| r.sign_target.as_ref().map(|s| (s, r.min_interval)));
                    let (answer, not_after) =
                        sign_renewal(&fleet, &name, sign, &mut last_renewal, &request);
                    if let Some(t) = not_after {
                        expiry.as_mut().reset(deadline(&Control { close: None, until: Some(t) }));
                    }
                    if tx.try_send(message(ControllerBody::Renewed(answer))).is_err() {
                        warn!(target = %name, "the renewal's answer could not be queued; the agent will ask again");
                    }
                }
                Ok(Some(AgentMessage { body: Some(AgentBody::HookResult(_)) })) => {
                    fleet.counters.hook_results_dropped_total.fetch_add(1, Ordering::Relaxed);
                    warn!(target = %name, "dropped a hook result from a target agent");
                }
                // Samples (a target is not pulled for metrics), a second
                // Hello, and what this controller does not know: ignored.
                Ok(Some(_)) => {}
                Ok(None) => break "the agent closed the stream".to_owned(),
                Err(status) => break format!("stream error: {}", status.message()),
            },
            _ = tx.closed() => break "the agent went away".to_owned(),
            _ = shutdown.changed() => break "controller shutting down".to_owned(),
        }
    };
    fleet.targets.disconnect(&name, session);
    fleet.changed.notify_one();
    info!(target = %name, "target agent disconnected: {reason}");
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let (caller, not_after) = self.caller_of(&request, &peer)?;
        // Authenticated first: only our own agents learn where the leader is.
        if let Some(refusal) = self.gate.as_ref().and_then(|gate| gate()) {
            return Err(refusal);
        }
        let instance = match caller {
            Caller::Instance(id) => id,
            Caller::Target(name) => {
                return self
                    .connect_target(name, not_after, request.into_inner(), &peer)
                    .await;
            }
        };
        (self.admit)(&instance).map_err(|r| self.refuse_for(&peer, r))?;
        let mut inbound = request.into_inner();
        let hello = self.read_hello(&mut inbound, &peer).await?;
        if hello.instance_id != instance {
            return Err(self.refuse(
                &peer,
                format!(
                    "Hello names instance `{}` but the certificate is for `{instance}`",
                    hello.instance_id
                ),
            ));
        }
        if !hello.target_name.is_empty() {
            return Err(self.refuse_for(
                &peer,
                Refusal {
                    reason: "not_a_target",
                    message: format!(
                        "instance {instance}'s certificate cannot act as target `{}`; a target needs its own certificate (`ebbctl cert issue --target NAME`)",
                        hello.target_name
                    ),
                },
            ));
        }
        check_hello(&hello).map_err(|message| {
            self.refuse_for(
                &peer,
                Refusal {
                    reason: "hello",
                    message,
                },
            )
        })?;
        info!(
            instance = %instance,
            peer,
            hostname = %hello.hostname,
            agent_version = %hello.agent_version,
            cpus = hello.cpu_count,
            "agent connected"
        );
        let interval = self
            .interval_of
            .as_ref()
            .and_then(|f| f(&instance))
            .unwrap_or(self.sampling_interval);
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let welcome = Welcome {
            protocol_version: ProtocolVersion::ProtocolVersion1 as i32,
            sampling_interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            collect: [
                Collector::Cpu,
                Collector::Memory,
                Collector::Load,
                Collector::Network,
                Collector::Tcp,
            ]
            .map(|c| c as i32)
            .to_vec(),
        };
        tx.send(message(ControllerBody::Welcome(welcome)))
            .await
            .map_err(|_| Status::cancelled("agent went away"))?;
        let session = self.fleet.connect_until(hello, Some(not_after));
        // Removed, detached or revoked while the Hello was awaited: the
        // engine's close found no stream then, so this one ends now.
        if let Err(refusal) = (self.admit)(&instance) {
            session.disconnected(&self.fleet, &refusal.message);
            return Err(self.refuse_for(&peer, refusal));
        }
        self.fleet
            .lifecycle
            .open(&session.instance_id, session.session, tx.clone());
        tokio::spawn(drive(
            self.fleet.clone(),
            session,
            inbound,
            tx,
            interval,
            self.renewal.clone(),
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|m| Ok(*m)),
        )))
    }
}

/// Pulls one agent until its stream ends, a newer stream replaces it, or the
/// controller shuts down.
async fn drive(
    fleet: Arc<Fleet>,
    session: Session,
    mut inbound: Streaming<AgentMessage>,
    tx: Outbound,
    interval: Duration,
    renewal: Option<Renewal>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_renewal: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut outstanding: Option<u64> = None;
    let mut sent_at = tokio::time::Instant::now();
    let mut control = session.control.clone();
    let expiry = tokio::time::sleep_until(deadline(&control.borrow_and_update()));
    tokio::pin!(expiry);
    let reason = loop {
        tokio::select! {
            () = &mut expiry => break close(&fleet, &session, &tx, CloseReason::Expired),
            changed = control.changed() => {
                // The sender goes with a newer stream's arrival.
                let c = if changed.is_ok() {
                    *control.borrow_and_update()
                } else {
                    Control { close: Some(CloseReason::Replaced), until: None }
                };
                if let Some(why) = c.close {
                    break close(&fleet, &session, &tx, why);
                }
                expiry.as_mut().reset(deadline(&c));
            }
            _ = tick.tick() => {
                if !session.is_current() {
                    break "replaced by a newer stream".to_owned();
                }
                if let Some(missed) = outstanding.take() {
                    session.missed(&fleet, missed);
                }
                seq += 1;
                // try_send: a full queue means the agent is not reading;
                // that pull is then simply unanswered.
                match tx.try_send(message(ControllerBody::Pull(Pull { seq }))) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => break "stream closed".to_owned(),
                }
                outstanding = Some(seq);
                sent_at = tokio::time::Instant::now();
                session.pulled(&fleet);
            }
            msg = inbound.message() => match msg {
                Ok(Some(AgentMessage { body: Some(AgentBody::Sample(sample)) })) => {
                    if outstanding == Some(sample.seq) {
                        outstanding = None;
                        fleet.counters.pull_round_trip.record(sent_at.elapsed());
                        session.sampled(&fleet, sample);
                    } else {
                        fleet.counters.samples_late_total.fetch_add(1, Ordering::Relaxed);
                        debug!(instance = %session.instance_id, seq = sample.seq, "late sample dropped");
                    }
                }
                Ok(Some(AgentMessage { body: Some(AgentBody::HookResult(result)) })) => {
                    let token = result.token.clone();
                    match fleet.lifecycle.finished(&session.instance_id, result) {
                        Ok(()) => {
                            info!(instance = %session.instance_id, %token, "hook script finished");
                            fleet.changed.notify_one();
                        }
                        Err(why) => {
                            fleet.counters.hook_results_dropped_total.fetch_add(1, Ordering::Relaxed);
                            let why = match why {
                                Dropped::NotSent => "its token is not an open lifecycle action sent to this instance",
                                Dropped::TooMany => "too many results are waiting to be collected",
                            };
                            warn!(instance = %session.instance_id, %token, "hook result dropped: {why}");
                        }
                    }
                }
                Ok(Some(AgentMessage { body: Some(AgentBody::RenewRequest(request)) })) => {
                    let answer = renew(&fleet, &session, renewal.as_ref(), &mut last_renewal, &request);
                    if tx.try_send(message(ControllerBody::Renewed(answer))).is_err() {
                        warn!(instance = %session.instance_id, "the renewal's answer could not be queued; the agent will ask again");
                    }
                }
                Ok(Some(AgentMessage { body: Some(AgentBody::TargetReport(_)) })) => {
                    fleet.counters.target_reports_dropped_total.fetch_add(1, Ordering::Relaxed);
                    warn!(instance = %session.instance_id, "dropped a target report from an instance's agent: only a target identity drives load balancers and databases");
                }
                Ok(Some(AgentMessage { body: Some(AgentBody::Hello(_)) })) => {
                    warn!(instance = %session.instance_id, "ignored a second Hello on the same stream");
                }
                // An answer type this controller does not know: ignore it.
                Ok(Some(AgentMessage { body: None })) => {}
                Ok(None) => break "the agent closed the stream".to_owned(),
                Err(status) => break format!("stream error: {}", status.message()),
            },
            _ = tx.closed() => break "the agent went away".to_owned(),
            _ = shutdown.changed() => break "controller shutting down".to_owned(),
        }
    };
    fleet.lifecycle.close(&session.instance_id, session.session);
    session.disconnected(&fleet, &reason);
}

/// Answers one renewal request: a certificate for the stream's own
/// instance, or the refusal, logged and counted.
fn renew(
    fleet: &Fleet,
    session: &Session,
    renewal: Option<&Renewal>,
    last: &mut Option<tokio::time::Instant>,
    request: &RenewRequest,
) -> Renewed {
    let sign = renewal.map(|r| (&r.sign, r.min_interval));
    let (answer, not_after) = sign_renewal(fleet, &session.instance_id, sign, last, request);
    if let Some(t) = not_after {
        session.extend_until(t);
    }
    answer
}

/// Answers one renewal request for `who` (an instance id or a target
/// name, as `sign` takes it): the certificate and its notAfter, or the
/// refusal, logged and counted.
fn sign_renewal(
    fleet: &Fleet,
    who: &str,
    sign: Option<(&Signer, Duration)>,
    last: &mut Option<tokio::time::Instant>,
    request: &RenewRequest,
) -> (Renewed, Option<SystemTime>) {
    let now = tokio::time::Instant::now();
    let signed = match sign {
        None => Err("this controller does not renew certificates".to_owned()),
        Some(_) if request.csr_pem.len() > ebb_certs::MAX_CSR_LEN => Err(format!(
            "the request is {} bytes, more than the {} allowed",
            request.csr_pem.len(),
            ebb_certs::MAX_CSR_LEN
        )),
        Some((_, min)) if last.is_some_and(|at| now.duration_since(at) < min) => Err(format!(
            "this stream renewed {:?} ago; at most one renewal per {min:?}",
            now.duration_since(last.expect("checked")),
        )),
        Some((sign, _)) => sign(who, &request.csr_pem),
    };
    match signed {
        Ok(cert_pem) => {
            *last = Some(now);
            fleet
                .counters
                .cert_renewals_total
                .fetch_add(1, Ordering::Relaxed);
            // The stream may live as long as its new certificate.
            let not_after = ebb_certs::describe_pem(&cert_pem).map(|i| i.not_after).ok();
            info!(%who, not_after = ?not_after, "renewed the agent's certificate");
            (
                Renewed {
                    cert_pem,
                    error: String::new(),
                },
                not_after.map(SystemTime::from),
            )
        }
        Err(error) => {
            fleet
                .counters
                .cert_renewals_refused_total
                .fetch_add(1, Ordering::Relaxed);
            warn!(%who, "refused a certificate renewal: {error}");
            (
                Renewed {
                    cert_pem: String::new(),
                    error,
                },
                None,
            )
        }
    }
}

/// When the stream must end: its certificate's notAfter, or far away.
fn deadline(c: &Control) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    match c.until {
        Some(until) => now + until.duration_since(SystemTime::now()).unwrap_or_default(),
        // A year: as good as never, and no overflow.
        None => now + Duration::from_secs(365 * 24 * 3600),
    }
}

/// Ends a stream on the controller's side: logged, counted, and the agent
/// told why (best effort: its queue may be full).
fn close(fleet: &Fleet, session: &Session, tx: &Outbound, why: CloseReason) -> String {
    fleet.counters.streams_closed.add(why.label());
    warn!(instance = %session.instance_id, reason = why.label(), "closed agent stream: {}", why.sentence());
    let _ = tx.try_send(message(ControllerBody::Closing(Closing {
        reason: why.sentence().to_owned(),
    })));
    why.sentence().to_owned()
}

/// Refuses a Hello whose strings are longer or more than any real host's.
fn check_hello(h: &Hello) -> Result<(), String> {
    let long = |field: &str, value: &str, max: usize| {
        (value.len() > max).then(|| {
            format!(
                "Hello field {field} is {} bytes long, at most {max} are allowed",
                value.len()
            )
        })
    };
    let many = |field: &str, n: usize, max: usize| {
        (n > max).then(|| format!("Hello field {field} has {n} entries, at most {max} are allowed"))
    };
    let problem = long("hostname", &h.hostname, MAX_HOSTNAME)
        .or_else(|| long("agent_version", &h.agent_version, MAX_AGENT_VERSION))
        .or_else(|| many("addresses", h.addresses.len(), MAX_ADDRESSES))
        .or_else(|| {
            h.addresses
                .iter()
                .enumerate()
                .find_map(|(i, a)| long(&format!("addresses[{i}]"), a, MAX_ADDRESS))
        })
        .or_else(|| many("health_checks", h.health_checks.len(), MAX_HEALTH_CHECKS))
        .or_else(|| {
            h.health_checks
                .iter()
                .enumerate()
                .find_map(|(i, c)| long(&format!("health_checks[{i}]"), c, MAX_HEALTH_CHECK_NAME))
        });
    problem.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_strings_are_bounded_and_the_bound_is_named() {
        let ok = Hello {
            hostname: "h".repeat(MAX_HOSTNAME),
            agent_version: "0.1.0".into(),
            addresses: vec!["fe80::1%eth0".into(); MAX_ADDRESSES],
            health_checks: vec!["c".repeat(MAX_HEALTH_CHECK_NAME); MAX_HEALTH_CHECKS],
            ..Default::default()
        };
        assert_eq!(check_hello(&ok), Ok(()));
        type Spoil = fn(&mut Hello);
        let cases: [(Spoil, &str); 6] = [
            (
                |h| h.hostname.push('h'),
                "Hello field hostname is 254 bytes long, at most 253",
            ),
            (
                |h| h.agent_version = "v".repeat(65),
                "Hello field agent_version is 65 bytes",
            ),
            (
                |h| h.addresses.push("a".into()),
                "Hello field addresses has 257 entries, at most 256",
            ),
            (
                |h| h.addresses[3] = "a".repeat(65),
                "Hello field addresses[3] is 65 bytes",
            ),
            (
                |h| h.health_checks.push("c".into()),
                "Hello field health_checks has 101 entries",
            ),
            (
                |h| h.health_checks[0].push('c'),
                "Hello field health_checks[0] is 129 bytes",
            ),
        ];
        for (spoil, want) in cases {
            let mut h = ok.clone();
            spoil(&mut h);
            let got = check_hello(&h).unwrap_err();
            assert!(got.starts_with(want), "{got}");
        }
    }
}
