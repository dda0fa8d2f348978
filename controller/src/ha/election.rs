//! The leader election, on an etcd lease.
//!
//! Each controller holds a lease of `ttl` (3 s by default) and renews it
//! three times per TTL. It campaigns with one transaction: "if the
//! leadership key does not exist, create it with my address, attached to
//! my lease; else tell me who holds it". The winner's key lives as long as
//! its lease: a leader that dies, or is paused or cut off past its TTL,
//! loses the key, and the next campaign of another controller wins.
//!
//! The winner fences its writes on the key's create revision (see
//! [`FencedStore`]): a leader paused past its lease comes back to a key
//! created by its successor, so its first write is refused, it notices,
//! and steps down. It also steps down by itself when it has not renewed
//! its lease for a whole TTL (etcd unreachable, or without quorum): a
//! successor may lead by then.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{Leadership, Role, existing, put_if_absent};
use crate::etcd::{Etcd, EtcdError};
use crate::store::etcd::EtcdStore;

/// The default lease: a dead leader is replaced about this long after it died.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// What the election needs of the store.
pub trait FencedStore: Send + Sync + 'static {
    /// From now on, every write is a transaction that succeeds only while
    /// `key` has this create revision (the leadership won at it).
    fn set_fence(&self, key: Vec<u8>, create_revision: i64);
    /// Counts the writes refused by the fence: each means another
    /// controller leads now.
    fn fence_refusals(&self) -> watch::Receiver<u64>;
    /// Waits until the store's replica holds every write up to `revision`,
    /// so a new leader acts on everything its predecessor wrote.
    fn wait_for_revision(&self, revision: i64, timeout: Duration) -> Result<(), String>;
}

/// The election fences this store's writes on its leadership key.
impl FencedStore for EtcdStore {
    fn set_fence(&self, key: Vec<u8>, create_revision: i64) {
        EtcdStore::set_fence(
            self,
            Some(crate::store::etcd::Fence {
                key,
                create_revision,
            }),
        );
    }

    fn fence_refusals(&self) -> tokio::sync::watch::Receiver<u64> {
        EtcdStore::fence_refusals(self)
    }

    fn wait_for_revision(&self, revision: i64, timeout: Duration) -> Result<(), String> {
        EtcdStore::wait_for_revision(self, revision, timeout).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct ElectionSettings {
    /// The leadership key (`<prefix>leader`).
    pub key: Vec<u8>,
    /// This controller's gRPC address as agents and ebbctl reach it: the
    /// value of the key while it leads.
    pub advertise: String,
    pub ttl: Duration,
}

/// How long a new leader waits for its replica to catch up before giving
/// the leadership back.
const CATCH_UP: Duration = Duration::from_secs(10);

/// Campaigns until `stop`, keeping `leadership` up to date. On stop, a
/// leader gives its lease back so a successor takes over at once.
pub async fn run(
    etcd: Etcd,
    store: Arc<dyn FencedStore>,
    settings: ElectionSettings,
    leadership: Arc<Leadership>,
    mut stop: watch::Receiver<bool>,
) {
    let ttl = settings.ttl.max(Duration::from_secs(1));
    let ttl_secs = ttl.as_secs() as i64;
    // Followers try again four times a second at the default TTL: a
    // takeover comes within a quarter second of the old lease's end.
    let tick = (ttl / 12).max(Duration::from_millis(100));
    let renew_every = ttl / 3;
    let mut refusals = store.fence_refusals();
    let mut lease: Option<Lease> = None;
    let mut last_error = String::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let current = match lease.take() {
            Some(l) => l,
            None => {
                let asked = Instant::now();
                match etcd.lease_grant(ttl_secs).await {
                    Ok((id, granted)) => Lease {
                        id,
                        valid_until: asked + Duration::from_secs(granted.max(0) as u64),
                        renewed: asked,
                    },
                    Err(e) => {
                        last_error = e.to_string();
                        step(
                            &leadership,
                            Role::Stalled(format!("cannot reach etcd: {e}")),
                        );
                        wait(tick, &mut stop, &mut refusals).await;
                        continue;
                    }
                }
            }
        };
        let mut l = current;
        // Renew three times per TTL.
        if l.renewed.elapsed() >= renew_every {
            let asked = Instant::now();
            match etcd.keep_alive(l.id).await {
                Ok(left) if left > 0 => {
                    l.valid_until = asked + Duration::from_secs(left as u64);
                    l.renewed = asked;
                }
                Ok(_) => {
                    step(
                        &leadership,
                        Role::Stalled("its etcd lease expired (paused, or cut off from etcd, for longer than the lease)".into()),
                    );
                    continue;
                }
                Err(e) => {
                    last_error = e.to_string();
                    // Try again at the next tick, not a whole period later.
                    l.renewed = asked.checked_sub(renew_every).unwrap_or(asked) + tick;
                }
            }
        }
        // Not renewed for a whole TTL: a successor may lead by now.
        if Instant::now() >= l.valid_until {
            step(
                &leadership,
                Role::Stalled(format!(
                    "cannot renew its etcd lease for {ttl:?} (etcd unreachable or without quorum: {last_error})"
                )),
            );
            let _ = etcd.lease_revoke(l.id).await;
            continue;
        }
        match etcd
            .txn(put_if_absent(
                &settings.key,
                settings.advertise.clone().into_bytes(),
                l.id,
            ))
            .await
        {
            Ok(answer) if answer.succeeded => {
                let revision = answer.header.map_or(0, |h| h.revision);
                if !lead(&store, &settings, revision, &leadership).await {
                    let _ = etcd.lease_revoke(l.id).await;
                    continue;
                }
            }
            Ok(answer) => match existing(&answer) {
                Some(kv) if kv.lease == l.id => {
                    // Ours: we lead (or won with an answer that was lost).
                    if !leadership.is_leader()
                        && !lead(&store, &settings, kv.create_revision, &leadership).await
                    {
                        let _ = etcd.lease_revoke(l.id).await;
                        continue;
                    }
                }
                Some(kv) => {
                    let leader = String::from_utf8_lossy(&kv.value).into_owned();
                    step(
                        &leadership,
                        Role::Follower {
                            leader: Some(leader),
                        },
                    );
                }
                None => step(&leadership, Role::Follower { leader: None }),
            },
            Err(EtcdError::Refused { message, .. }) => {
                // The lease is gone (expired while we were paused): start over.
                step(
                    &leadership,
                    Role::Stalled(format!("its campaign was refused: {message}")),
                );
                continue;
            }
            Err(e) => {
                last_error = e.to_string();
                if !leadership.is_leader() {
                    step(
                        &leadership,
                        Role::Stalled(format!("cannot reach etcd: {e}")),
                    );
                }
            }
        }
        lease = Some(l);
        wait(tick, &mut stop, &mut refusals).await;
    }
    if let Some(l) = lease
        && leadership.is_leader()
    {
        step(&leadership, Role::Follower { leader: None });
        match etcd.lease_revoke(l.id).await {
            Ok(()) => info!("gave up the leadership"),
            Err(e) => {
                warn!("could not give up the leadership at once ({e}); it lapses with the lease")
            }
        }
    }
}

/// A lease this controller holds, as far as it knows.
struct Lease {
    id: i64,
    /// When etcd lets it lapse, unless renewed (measured from the request).
    valid_until: Instant,
    renewed: Instant,
}

/// Takes up the leadership won at `revision`: fence, catch up, then lead.
/// False when the replica could not catch up (the lease is then given back).
async fn lead(
    store: &Arc<dyn FencedStore>,
    settings: &ElectionSettings,
    revision: i64,
    leadership: &Leadership,
) -> bool {
    store.set_fence(settings.key.clone(), revision);
    let replica = store.clone();
    let caught_up =
        tokio::task::spawn_blocking(move || replica.wait_for_revision(revision, CATCH_UP))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = caught_up {
        warn!("won the election but the store did not catch up ({e}); giving it back");
        step(
            leadership,
            Role::Stalled(format!("its store replica lags: {e}")),
        );
        return false;
    }
    step(leadership, Role::Leader);
    true
}

/// Records a new role, logging each change once.
fn step(leadership: &Leadership, role: Role) {
    let shown = role.clone();
    let Some(previous) = leadership.set(role) else {
        return;
    };
    match (&previous, &shown) {
        (_, Role::Leader) => info!("elected: this controller leads now"),
        (Role::Leader, Role::Follower { leader }) => warn!(
            leader = leader.as_deref().unwrap_or("unknown"),
            "lost leadership: another controller leads; following it"
        ),
        (Role::Leader, Role::Stalled(why)) => {
            warn!("lost leadership: {why}; not acting until etcd answers")
        }
        (_, Role::Follower { leader }) => info!(
            leader = leader.as_deref().unwrap_or("unknown"),
            "following the leader"
        ),
        (_, Role::Stalled(why)) => warn!("not acting: {why}"),
        (_, Role::Starting) => {}
    }
}

/// Sleeps a tick, or less when stopping or when a write was fenced (then
/// the next campaign finds out who leads at once).
async fn wait(
    tick: Duration,
    stop: &mut watch::Receiver<bool>,
    refusals: &mut watch::Receiver<u64>,
) {
    tokio::select! {
        _ = tokio::time::sleep(tick) => {}
        _ = stop.changed() => {}
        _ = refusals.changed() => {}
    }
}
