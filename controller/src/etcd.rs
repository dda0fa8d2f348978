//! A small etcd v3 client over the generated stubs in `ebb_proto::etcd`:
//! what the etcd store and the leader election need, and no more.
//!
//! It knows every member's address and talks to one at a time. A request
//! that finds its member unreachable (or without a raft leader) moves to
//! the next member. Reads and lease calls are retried there; a
//! transaction is not, because one that timed out may have been applied:
//! its caller gets [`EtcdError::Unavailable`] and decides (the store's
//! transactions are conditional, so the engine's next pass converges).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ebb_proto::etcd::etcdserverpb::{
    self as pb, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// A dial that has not connected by then is a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings find a dead member while a watch is idle.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// A range page or a watch response catching up on many revisions can be
/// far larger than tonic's 4 MiB default (etcd itself sends up to 2 GiB);
/// refusing one would make the store's watch fail on it again and again.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Where the etcd cluster is and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdSettings {
    /// `http://host:port` or `https://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// Client TLS, for `https://` endpoints.
    pub tls: Option<EtcdTls>,
    /// How long one request waits for its member.
    pub request_timeout: Duration,
}

/// Client TLS towards etcd: the CA that signed the members' certificates,
/// and a client certificate when etcd asks for one (`--client-cert-auth`).
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// No member answered (down, partitioned, or without quorum).
    #[error("etcd is unavailable: {0}")]
    Unavailable(String),
    /// A member answered with an error that another member would repeat.
    #[error("etcd refused {what}: {message}")]
    Refused { what: &'static str, message: String },
    /// The settings cannot make a client (a bad endpoint, unreadable TLS files).
    #[error("etcd: {0}")]
    Settings(String),
}

pub type Result<T, E = EtcdError> = std::result::Result<T, E>;

/// A client; cheap to clone.
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    members: Vec<(String, Channel)>,
    /// The member requests go to first: the last one that answered.
    current: AtomicUsize,
    timeout: Duration,
}

/// The end of the range of keys under `prefix` (etcd's prefix convention:
/// the prefix with its last byte incremented).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

impl Etcd {
    /// A client for `settings`; it dials lazily, so a cluster that is down
    /// now is found on the first request, not here.
    pub fn connect(settings: &EtcdSettings) -> Result<Self> {
        if settings.endpoints.is_empty() {
            return Err(EtcdError::Settings("no endpoints".into()));
        }
        let tls = match &settings.tls {
            Some(tls) => Some(client_tls(tls)?),
            None => None,
        };
        let mut members = Vec::with_capacity(settings.endpoints.len());
        for url in &settings.endpoints {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| EtcdError::Settings(format!("endpoint `{url}`: {e}")))?
                .connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(KEEPALIVE)
                .keep_alive_timeout(KEEPALIVE)
                .keep_alive_while_idle(true)
                .tcp_nodelay(true);
            if url.starts_with("https://") {
                let Some(tls) = &tls else {
                    return Err(EtcdError::Settings(format!(
                        "endpoint `{url}` is https, but no etcd CA is configured"
                    )));
                };
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| EtcdError::Settings(format!("endpoint `{url}`: {e}")))?;
            } else if !url.starts_with("http://") {
                return Err(EtcdError::Settings(format!(
                    "endpoint `{url}` must start with http:// or https://"
                )));
            }
            members.push((url.clone(), endpoint.connect_lazy()));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                members,
                current: AtomicUsize::new(0),
                timeout: settings.request_timeout,
            }),
        })
    }

    /// The member requests go to now.
    pub fn current(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.members.len();
        &self.inner.members[i].0
    }

    /// Gives up on the current member: the next request goes to the next one.
    pub fn skip(&self) {
        let n = self.inner.members.len();
        let i = self.inner.current.load(Ordering::Relaxed);
        let _ = self.inner.current.compare_exchange(
            i,
            (i + 1) % n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn channel(&self) -> (usize, Channel) {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.members.len();
        (i, self.inner.members[i].1.clone())
    }

    /// Runs `call` on the current member, and on each next one while the
    /// failure is about reachability, at most once per member.
    async fn retried<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let mut failures = Vec::new();
        for _ in 0..self.inner.members.len() {
            let (i, channel) = self.channel();
            match self.once(what, call(channel)).await {
                Ok(answer) => return Ok(answer),
                Err(EtcdError::Unavailable(why)) => {
                    failures.push(format!("{}: {why}", self.inner.members[i].0));
                    self.skip();
                }
                Err(other) => return Err(other),
            }
        }
        Err(EtcdError::Unavailable(failures.join("; ")))
    }

    /// One attempt, within the request timeout.
    async fn once<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(classify(what, &status)),
            Err(_) => Err(EtcdError::Unavailable(format!(
                "{what} got no answer within {:?}",
                self.inner.timeout
            ))),
        }
    }

    pub async fn range(&self, request: pb::RangeRequest) -> Result<pb::RangeResponse> {
        self.retried("a range read", |channel| {
            let request = request.clone();
            async move {
                KvClient::new(channel)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .range(request)
                    .await
            }
        })
        .await
    }

    /// One attempt on the current member (see the module's comment); a
    /// failure moves the next request to another member.
    pub async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse> {
        let (_, channel) = self.channel();
        let result = self
            .once("a transaction", KvClient::new(channel).txn(request))
            .await;
        if matches!(result, Err(EtcdError::Unavailable(_))) {
            self.skip();
        }
        result
    }

    /// A new lease of `ttl_secs`: its id and the TTL etcd granted.
    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<(i64, i64)> {
        let answer = self
            .retried("a lease grant", |channel| async move {
                LeaseClient::new(channel)
                    .lease_grant(pb::LeaseGrantRequest {
                        ttl: ttl_secs,
                        id: 0,
                    })
                    .await
            })
            .await?;
        if !answer.error.is_empty() {
            return Err(EtcdError::Refused {
                what: "a lease grant",
                message: answer.error,
            });
        }
        Ok((answer.id, answer.ttl))
    }

    /// Revokes a lease, deleting the keys attached to it.
    pub async fn lease_revoke(&self, id: i64) -> Result<()> {
        self.retried("a lease revoke", |channel| async move {
            LeaseClient::new(channel)
                .lease_revoke(pb::LeaseRevokeRequest { id })
                .await
        })
        .await
        .map(drop)
    }

    /// Renews a lease once; the TTL left, 0 when the lease is gone.
    pub async fn keep_alive(&self, id: i64) -> Result<i64> {
        self.retried("a lease keep-alive", |channel| async move {
            let mut answers = LeaseClient::new(channel)
                .lease_keep_alive(tokio_stream::once(pb::LeaseKeepAliveRequest { id }))
                .await?
                .into_inner();
            match answers.message().await? {
                Some(answer) => Ok(tonic::Response::new(answer.ttl)),
                None => Err(Status::unavailable(
                    "the keep-alive stream ended unanswered",
                )),
            }
        })
        .await
    }

    /// A watch from `start_revision` on the current member. The stream ends
    /// or fails when that member does; the caller watches again from the
    /// revision after the last it saw.
    pub async fn watch(&self, create: pb::WatchCreateRequest) -> Result<WatchStream> {
        let request = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        };
        // The request side stays open for as long as the watch runs
        // (`WatchStream` holds it).
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(request)
            .await
            .map_err(|_| EtcdError::Unavailable("watch request channel closed".into()))?;
        let mut requests = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        // A member cut off from the others would keep the watch open and
        // send nothing more; with this, it ends the watch once it has had
        // no raft leader for a few election timeouts, so the watcher moves on.
        requests.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let (_, channel) = self.channel();
        let result = self
            .once(
                "a watch",
                WatchClient::new(channel)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .watch(requests),
            )
            .await;
        match result {
            Ok(responses) => Ok(WatchStream {
                responses,
                _requests: tx,
            }),
            Err(e) => {
                if matches!(e, EtcdError::Unavailable(_)) {
                    self.skip();
                }
                Err(e)
            }
        }
    }

    /// The current member's status: the cluster's revision and its raft
    /// leader (0 when it has none).
    pub async fn status(&self) -> Result<pb::StatusResponse> {
        self.retried("a status request", |channel| async move {
            MaintenanceClient::new(channel)
                .status(pb::StatusRequest {})
                .await
        })
        .await
    }
}

/// A running watch.
pub struct WatchStream {
    responses: tonic::Streaming<pb::WatchResponse>,
    /// Closing the request side would end the watch.
    _requests: tokio::sync::mpsc::Sender<pb::WatchRequest>,
}

impl WatchStream {
    /// The next response; `None` when the member closed the stream.
    pub async fn next(&mut self) -> Result<Option<pb::WatchResponse>> {
        self.responses
            .message()
            .await
            .map_err(|status| classify("a watch", &status))
    }
}

/// Whether a failure is about reaching etcd (try another member) or about
/// the request (every member would say the same).
fn classify(what: &'static str, status: &Status) -> EtcdError {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Unknown
        | Code::Cancelled
        | Code::Aborted => EtcdError::Unavailable(explain(status)),
        _ => EtcdError::Refused {
            what,
            message: explain(status),
        },
    }
}

/// A status's message with its causes: tonic says only "transport error"
/// for a refused TLS handshake; the reason is in the source chain.
fn explain(status: &Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

fn client_tls(tls: &EtcdTls) -> Result<ClientTlsConfig> {
    let read = |p: &PathBuf, key: &str| {
        std::fs::read(p).map_err(|e| EtcdError::Settings(format!("{key} {}: {e}", p.display())))
    };
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&tls.ca, "store.etcd.ca")?));
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read(cert, "store.etcd.cert")?,
                read(key, "store.etcd.key")?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(EtcdError::Settings(
                "store.etcd.cert and store.etcd.key go together".into(),
            ));
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_last_byte_plus_one() {
        assert_eq!(prefix_end(b"/ebb/"), b"/ebb0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn bad_endpoints_are_named() {
        let settings = |endpoints: &[&str]| EtcdSettings {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            tls: None,
            request_timeout: Duration::from_secs(1),
        };
        let err = |e: &[&str]| match Etcd::connect(&settings(e)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{e:?} accepted"),
        };
        assert_eq!(err(&[]), "etcd: no endpoints");
        assert!(err(&["127.0.0.1:2379"]).contains("must start with http:// or https://"));
        assert!(err(&["https://127.0.0.1:2379"]).contains("no etcd CA is configured"));
    }

    /// Against a real one-member etcd: a conditional put, a read, a lease
    /// whose key goes with it, and a watch that sees both.
    #[tokio::test]
    async fn talks_to_a_real_etcd() {
        if let Some(why) = ebb_tests::etcd::missing() {
            panic!("{why}");
        }
        let dir = tempfile::tempdir().unwrap();
        let cluster = ebb_tests::etcd::EtcdCluster::start(dir.path(), 1).unwrap();
        let etcd = Etcd::connect(&EtcdSettings {
            endpoints: cluster.endpoints(),
            tls: None,
            request_timeout: Duration::from_secs(5),
        })
        .unwrap();
        let put = |key: &str, value: &str, lease: i64| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.into(),
                value: value.into(),
                lease,
            })),
        };
        let absent = |key: &str| pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Create as i32,
            key: key.into(),
            target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
            range_end: vec![],
        };
        let mut watch = etcd
            .watch(pb::WatchCreateRequest {
                key: b"/t/".to_vec(),
                range_end: prefix_end(b"/t/"),
                ..Default::default()
            })
            .await
            .unwrap();
        let created = etcd
            .txn(pb::TxnRequest {
                compare: vec![absent("/t/a")],
                success: vec![put("/t/a", "1", 0)],
                failure: vec![],
            })
            .await
            .unwrap();
        assert!(created.succeeded);
        // The same create again: its compare fails, nothing changes.
        let again = etcd
            .txn(pb::TxnRequest {
                compare: vec![absent("/t/a")],
                success: vec![put("/t/a", "2", 0)],
                failure: vec![],
            })
            .await
            .unwrap();
        assert!(!again.succeeded);
        let (lease, ttl) = etcd.lease_grant(30).await.unwrap();
        assert!(ttl > 0 && ttl <= 30, "{ttl}");
        assert!(etcd.keep_alive(lease).await.unwrap() > 0);
        etcd.txn(pb::TxnRequest {
            compare: vec![],
            success: vec![put("/t/leased", "x", lease)],
            failure: vec![],
        })
        .await
        .unwrap();
        let read = etcd
            .range(pb::RangeRequest {
                key: b"/t/".to_vec(),
                range_end: prefix_end(b"/t/"),
                ..Default::default()
            })
            .await
            .unwrap();
        let values: Vec<(Vec<u8>, Vec<u8>)> =
            read.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        assert_eq!(
            values,
            [
                (b"/t/a".to_vec(), b"1".to_vec()),
                (b"/t/leased".to_vec(), b"x".to_vec())
            ]
        );
        etcd.lease_revoke(lease).await.unwrap();
        assert_eq!(etcd.keep_alive(lease).await.unwrap(), 0, "a revoked lease");
        // The watch saw: put a, put leased, delete leased (the revoke).
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let response = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .expect("watch events")
                .unwrap()
                .expect("stream open");
            for event in response.events {
                let kv = event.kv.unwrap_or_default();
                seen.push((event.r#type, String::from_utf8(kv.key).unwrap()));
            }
        }
        assert_eq!(
            seen,
            [
                (0, "/t/a".to_owned()),
                (0, "/t/leased".to_owned()),
                (1, "/t/leased".to_owned())
            ]
        );
    }
}
