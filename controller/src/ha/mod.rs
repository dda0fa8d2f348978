//! High availability: several controllers on one etcd store, one of them
//! the leader (DESIGN §6).
//!
//! - [`Leadership`]: this controller's role, as the election last saw it,
//!   shared by everything that must act only while leading: the control
//!   loops, the agents' streams, mutating admin calls and joins.
//! - [`election`]: the campaign on an etcd lease, and the fence every
//!   write of the leader carries.
//! - [`secrets`]: the CA, kept in the store encrypted, so any controller
//!   can issue certificates.
//!
//! With the SQLite store there is one controller, and it always leads.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

pub mod election;
pub mod secrets;

use ebb_proto::etcd::etcdserverpb as pb;
use ebb_proto::etcd::mvccpb::KeyValue;

/// One etcd transaction: create `key` holding `value` (attached to `lease`;
/// 0 for none) if it does not exist, else read it. Both the campaign and
/// the CA's first put are this.
fn put_if_absent(key: &[u8], value: Vec<u8>, lease: i64) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Create as i32,
            key: key.to_vec(),
            target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
            range_end: vec![],
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.to_vec(),
                value,
                lease,
            })),
        }],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })),
        }],
    }
}

/// The key as a [`put_if_absent`] that found it read it.
fn existing(answer: &pb::TxnResponse) -> Option<KeyValue> {
    answer.responses.iter().find_map(|r| match &r.response {
        Some(pb::response_op::Response::ResponseRange(range)) => range.kvs.first().cloned(),
        _ => None,
    })
}

/// The metadata entry naming the leader's gRPC address in a refusal.
pub use ebb_proto::redirect::LEADER_METADATA;

/// What this controller is doing, as far as it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not yet known: the first campaign is under way.
    Starting,
    /// It holds the leadership key; its writes are fenced on it.
    Leader,
    /// Another controller leads (at this address, when known).
    Follower { leader: Option<String> },
    /// It cannot tell (etcd unreachable or without quorum) and so does not
    /// act; the sentence says why.
    Stalled(String),
}

/// This controller's role, shared.
pub struct Leadership {
    role: watch::Sender<Role>,
    /// Whether an election runs at all (false with SQLite: always leader).
    elected: bool,
    /// When the role last changed (or the controller started).
    since: std::sync::Mutex<std::time::Instant>,
}

impl Leadership {
    /// One controller on its own store: it leads from the start.
    pub fn single() -> Arc<Self> {
        Arc::new(Self {
            role: watch::Sender::new(Role::Leader),
            elected: false,
            since: std::sync::Mutex::new(std::time::Instant::now()),
        })
    }

    /// A controller that must win an election before it acts.
    pub fn elected() -> Arc<Self> {
        Arc::new(Self {
            role: watch::Sender::new(Role::Starting),
            elected: true,
            since: std::sync::Mutex::new(std::time::Instant::now()),
        })
    }

    /// Whether leadership comes from an election (several controllers).
    pub fn is_elected(&self) -> bool {
        self.elected
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        matches!(*self.role.borrow(), Role::Leader)
    }

    /// How long the role has been what it is.
    pub fn in_role_for(&self) -> std::time::Duration {
        self.since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
    }

    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Records a new role; returns the previous one when it changed.
    pub fn set(&self, role: Role) -> Option<Role> {
        let mut previous = None;
        self.role.send_if_modified(|current| {
            if *current == role {
                return false;
            }
            previous = Some(std::mem::replace(current, role));
            true
        });
        if previous.is_some() {
            *self
                .since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::Instant::now();
        }
        previous
    }

    /// The refusal of a call only the leader may answer; None while leading.
    /// A refusal naming the leader carries its address in
    /// [`LEADER_METADATA`], so agents and ebbctl go there.
    pub fn refusal(&self) -> Option<Status> {
        match self.role() {
            Role::Leader => None,
            Role::Follower { leader } => Some(ebb_proto::redirect::not_leader(leader.as_deref())),
            Role::Starting => Some(ebb_proto::redirect::not_leader(None)),
            Role::Stalled(why) => Some(Status::unavailable(format!("not the leader: {why}"))),
        }
    }

    /// A gate for the services that only the leader serves.
    pub fn gate(self: &Arc<Self>) -> Gate {
        let me = self.clone();
        Arc::new(move || me.refusal())
    }
}

/// Answers `Some(refusal)` when a call must not be served here (the
/// agents' service takes the same).
pub use crate::fleet::agent_service::Gate;

/// Whether an admin method only reads (a follower answers it from its
/// replica of the store).
pub fn reads_only(method: &str) -> bool {
    method.starts_with("Describe") || method.starts_with("List")
}

/// Wraps a gRPC service so that a controller that does not lead refuses its
/// mutating methods (see [`reads_only`]) and serves its reads.
#[derive(Clone)]
pub struct LeaderOnly<S> {
    inner: S,
    gate: Gate,
}

impl<S> LeaderOnly<S> {
    pub fn new(inner: S, gate: Gate) -> Self {
        Self { inner, gate }
    }
}

impl<S, B> Service<http::Request<B>> for LeaderOnly<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        if !reads_only(method)
            && let Some(refusal) = (self.gate)()
        {
            return Box::pin(async move { Ok(refusal.into_http()) });
        }
        let future = self.inner.call(request);
        Box::pin(future)
    }
}

impl<S: NamedService> NamedService for LeaderOnly<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_names_the_leader_in_its_refusal() {
        let l = Leadership::elected();
        let refusal = l.refusal().expect("starting: refused");
        assert!(refusal.message().contains("no leader elected yet"));
        assert_eq!(l.set(Role::Leader), Some(Role::Starting));
        assert!(l.refusal().is_none());
        assert_eq!(l.set(Role::Leader), None, "no change");
        l.set(Role::Follower {
            leader: Some("10.0.0.2:7440".into()),
        });
        let refusal = l.refusal().expect("follower: refused");
        assert_eq!(refusal.code(), tonic::Code::Unavailable);
        assert_eq!(
            refusal.metadata().get(LEADER_METADATA).unwrap(),
            "10.0.0.2:7440"
        );
        l.set(Role::Stalled("etcd has no quorum".into()));
        assert!(
            l.refusal()
                .unwrap()
                .message()
                .contains("etcd has no quorum")
        );
        assert!(Leadership::single().refusal().is_none());
    }

    #[test]
    fn only_describes_and_lists_are_reads() {
        for m in [
            "DescribeScalingGroups",
            "ListJoinTokens",
            "ListCertificates",
        ] {
            assert!(reads_only(m), "{m}");
        }
        for m in [
            "CreateScalingGroup",
            "ExecuteScalingRule",
            "IssueCertificate",
            "CompleteLifecycleAction",
            "",
        ] {
            assert!(!reads_only(m), "{m}");
        }
    }
}
