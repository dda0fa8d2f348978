//! `AgentService.Connect`: checks the caller is the instance its cert names,
//! then drives the stream: Welcome, a Pull every sampling interval, and
//! samples into the fleet. A missed answer and a dropped stream are noticed
//! at the next pull and at once, respectively. A renewal request on the
//! stream is signed for the stream's own identity, at most once per
//! [`Renewal::min_interval`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ebb_certs::{Identity, Role};
use ebb_proto::v1::agent_message::Body as AgentBody;
use ebb_proto::v1::agent_service_server::AgentService;
use ebb_proto::v1::controller_message::Body as ControllerBody;
use ebb_proto::v1::{
    AgentMessage, Collector, ControllerMessage, ProtocolVersion, Pull, RenewRequest, Renewed,
    Welcome,
};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::fleet::outbox::{Outbound, message};
use crate::fleet::{Fleet, Session};

/// An agent must say hello promptly; a silent stream is dropped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued towards one agent; pulls are tiny and one per interval.
const OUTBOUND_QUEUE: usize = 8;

/// The gRPC service agents connect to.
#[derive(Clone)]
pub struct AgentApi {
    fleet: Arc<Fleet>,
    trust_domain: String,
    sampling_interval: Duration,
    interval_of: Option<IntervalLookup>,
    renewal: Option<Renewal>,
    shutdown: watch::Receiver<bool>,
}

/// The sampling interval of the group an instance belongs to, if any.
pub type IntervalLookup = Arc<dyn Fn(&str) -> Option<Duration> + Send + Sync>;

/// Signs a renewal request (PEM) for an instance id and records the new
/// cert; the error is the refusal's reason.
pub type Signer = Arc<dyn Fn(&str, &str) -> Result<String, String> + Send + Sync>;

/// How agents' renewal requests are answered.
#[derive(Clone)]
pub struct Renewal {
    pub sign: Signer,
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
            min_interval: (agent_lifetime / 3).min(Duration::from_secs(60)),
        }
    }
}

impl AgentApi {
    pub fn new(
        fleet: Arc<Fleet>,
        trust_domain: String,
        sampling_interval: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            fleet,
            trust_domain,
            sampling_interval,
            interval_of: None,
            renewal: None,
            shutdown,
        }
    }

    /// Answer renewal requests with `renewal`; without one they are refused.
    pub fn with_renewal(mut self, renewal: Renewal) -> Self {
        self.renewal = Some(renewal);
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

    /// The instance id the caller's certificate names and the cert's
    /// notAfter (Unix ms), or the refusal.
    fn instance_of<T>(&self, request: &Request<T>, peer: &str) -> Result<(String, i64), Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| self.refuse(peer, "no client certificate".into()))?;
        let leaf = certs
            .first()
            .ok_or_else(|| self.refuse(peer, "no client certificate".into()))?;
        let info = ebb_certs::describe(leaf)
            .map_err(|e| self.refuse(peer, format!("unusable client certificate: {e}")))?;
        let not_after_ms = unix_ms(info.not_after);
        let identity = info.identity.ok_or_else(|| {
            self.refuse(
                peer,
                format!(
                    "unusable client certificate: {}",
                    ebb_certs::Error::NoIdentity
                ),
            )
        })?;
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
        match role {
            Role::Instance(id) => Ok((id, not_after_ms)),
            Role::Admin(_) => Err(self.refuse(
                peer,
                format!("admin certificate {identity} cannot connect as an agent"),
            )),
        }
    }
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
        let (instance, cert_not_after_ms) = self.instance_of(&request, &peer)?;
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                body: Some(AgentBody::Hello(h)),
            }))) => h,
            Ok(Ok(Some(_))) => {
                return Err(self.refuse(&peer, "the first message must be a Hello".into()));
            }
            Ok(Ok(None)) => return Err(Status::cancelled("stream closed before Hello")),
            Ok(Err(status)) => {
                return Err(self.refuse(
                    &peer,
                    format!("unreadable first message: {}", status.message()),
                ));
            }
            Err(_) => {
                return Err(self.refuse(&peer, format!("no Hello within {HELLO_TIMEOUT:?}")));
            }
        };
        if hello.instance_id != instance {
            return Err(self.refuse(
                &peer,
                format!(
                    "Hello names instance `{}` but the certificate is for `{instance}`",
                    hello.instance_id
                ),
            ));
        }
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
        let session = self.fleet.connect(hello);
        session.cert_valid_until(cert_not_after_ms);
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
    let reason = loop {
        tokio::select! {
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
                    info!(instance = %session.instance_id, token = %result.token, exit_code = ?result.exit_code, "hook script finished");
                    fleet.lifecycle.finished(result);
                    fleet.changed.notify_one();
                }
                Ok(Some(AgentMessage { body: Some(AgentBody::RenewRequest(request)) })) => {
                    let answer = renew(&fleet, &session, renewal.as_ref(), &mut last_renewal, &request);
                    if tx.try_send(message(ControllerBody::Renewed(answer))).is_err() {
                        warn!(instance = %session.instance_id, "the renewal's answer could not be queued; the agent will ask again");
                    }
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

fn unix_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
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
    let now = tokio::time::Instant::now();
    let signed = match renewal {
        None => Err("this controller does not renew certificates".to_owned()),
        Some(_) if request.csr_pem.len() > ebb_certs::MAX_CSR_LEN => Err(format!(
            "the request is {} bytes, more than the {} allowed",
            request.csr_pem.len(),
            ebb_certs::MAX_CSR_LEN
        )),
        Some(r) if last.is_some_and(|at| now.duration_since(at) < r.min_interval) => Err(format!(
            "this stream renewed {:?} ago; at most one renewal per {:?}",
            now.duration_since(last.expect("checked")),
            r.min_interval
        )),
        Some(r) => (r.sign)(&session.instance_id, &request.csr_pem),
    };
    match signed {
        Ok(cert_pem) => {
            *last = Some(now);
            fleet
                .counters
                .cert_renewals_total
                .fetch_add(1, Ordering::Relaxed);
            let not_after = ebb_certs::describe_pem(&cert_pem)
                .map(|i| unix_ms(i.not_after))
                .ok();
            if let Some(ms) = not_after {
                session.cert_valid_until(ms);
            }
            info!(instance = %session.instance_id, not_after_ms = ?not_after, "renewed the agent's certificate");
            Renewed {
                cert_pem,
                error: String::new(),
            }
        }
        Err(error) => {
            fleet
                .counters
                .cert_renewals_refused_total
                .fetch_add(1, Ordering::Relaxed);
            warn!(instance = %session.instance_id, "refused a certificate renewal: {error}");
            Renewed {
                cert_pem: String::new(),
                error,
            }
        }
    }
}
