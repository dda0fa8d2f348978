//! The etcd backend, for more than one controller (DESIGN §6).
//!
//! etcd holds the truth and a replica answers every read: an in-memory
//! [`SqliteStore`] with the same schema, fed only by a watch on the key
//! prefix. So every query (orderings, filters, the instance and alarm
//! listings it keeps between changes) is SQLite's own code, served from a
//! watch-fed copy.
//!
//! Keys: `<prefix>t/<table>/<id>`, and `<prefix>t/<table>/<group>/<id>` for
//! what a group owns, so that deleting a group deletes each table's share
//! of it with one range: etcd allows 128 operations in a transaction by
//! default, and a group keeps up to 1000 activities. Ids are escaped (`/`
//! and `%`) so that no id reaches into another's range. Each value is the
//! row as a JSON object of its columns. `<prefix>schema` holds the schema
//! version; `<prefix>sync` is written to learn that the replica is current.
//!
//! A commit is planned on the replica: its writes applied by SQLite's own
//! code in a transaction that is rolled back, so Conflict and NotFound are
//! SQLite's. It is sent as one etcd transaction conditioned on the revisions
//! the replica knew of every key it changes or relies on, and on the fence
//! when one is set. When the replica was behind, it is caught up and the
//! commit planned again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use ebb_proto::etcd::etcdserverpb::{self as pb, compare, request_op, response_op};
use ebb_proto::etcd::mvccpb;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value as Json};

use super::sqlite::{self, SqliteStore};
use super::{
    ActivityQuery, CertRecord, ClientToken, Delivery, DeliveryCount, DeliveryState, Detached,
    JoinToken, Result, Revoked, Store, StoreError, Write,
};
use crate::etcd::{Etcd, EtcdError, EtcdSettings, prefix_end};
use ebb_core::model::tasks::{AlarmTask, ScheduledTask};
use ebb_core::model::{Activity, Instance, ScalingConfiguration, ScalingGroup};
use ebb_core::rules::ScalingRule;
use ebb_core::rules::predict::MinuteRollup;

/// How long a commit may take, its retries included: etcd unreachable (or
/// without quorum) for that long fails it rather than stall the caller.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Commits planned again after the replica was found behind, before giving up:
/// more means another controller keeps writing the same rows.
const STALE_ATTEMPTS: u32 = 5;
/// Keys per page while loading the replica: small responses, few round trips.
const LOAD_PAGE: i64 = 500;
/// Deletes per transaction while pruning: under etcd's default `--max-txn-ops` (128).
const PRUNE_CHUNK: usize = 100;
/// From this schema on, every later migration only adds a table, so an
/// etcd prefix at it is brought up to date by recording the new version.
const ADDITIVE_SINCE: i64 = 8;
/// The watch's back-off after a failure doubles from the first to the second.
const WATCH_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// The back-off between attempts to reach etcd within a commit.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A table of the schema as the etcd store keys it.
struct Table {
    name: &'static str,
    /// The primary key column (TEXT in every table).
    pk: &'static str,
    /// Owned by a group (its `group_id`): keyed under it, deleted with it.
    owned: bool,
    /// Has a `name` unique in its scope (the table, or its group's share).
    named: bool,
}

const fn table(name: &'static str, pk: &'static str, owned: bool, named: bool) -> Table {
    Table {
        name,
        pk,
        owned,
        named,
    }
}

/// Every table of the schema.
const TABLES: &[Table] = &[
    table("groups", "id", false, true),
    table("configurations", "id", true, true),
    table("instances", "id", true, false),
    table("activities", "id", true, false),
    table("rules", "id", true, true),
    table("alarms", "id", true, true),
    table("tasks", "id", true, true),
    // A detached instance outlives its group.
    table("detached_instances", "id", false, false),
    table("revoked_identities", "identity", false, false),
    table("certificates", "serial", false, false),
    // A target's token names no group.
    table("join_tokens", "id", true, false),
    table("rollups", "id", true, false),
    // A deleted group's last notifications still go out.
    table("deliveries", "id", false, false),
    table("client_tokens", "token", false, false),
];

const GROUPS: &Table = &TABLES[0];

fn table_named(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// The owner segment of a target's join token: escaping never produces a
/// lone `%`, so no group's key range holds it.
const NO_GROUP: &str = "%";

/// A key segment, with `%` and `/` escaped.
fn escape(segment: &str) -> String {
    segment.replace('%', "%25").replace('/', "%2F")
}

/// Only the leader's writes go through while it is set: each commit's
/// transaction also requires `key` to be the one created at `create_revision`
/// (the leader election's key, which goes when its lease does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub create_revision: i64,
}

/// A row as stored: its columns by name.
type Row = Map<String, Json>;

/// What the replica knows of a row's key in etcd.
#[derive(Debug, Clone)]
struct Known {
    key: String,
    create_revision: i64,
    mod_revision: i64,
}

/// A commit as one etcd transaction.
struct Plan {
    compares: Vec<pb::Compare>,
    ops: Vec<pb::RequestOp>,
    /// Each changed row as the commit leaves it (`None`: gone), to tell
    /// whether a transaction whose answer was lost had landed.
    outcome: Vec<(&'static Table, String, Option<Row>)>,
}

/// The state shared by the store and its thread.
struct Shared {
    replica: SqliteStore,
    prefix: String,
    /// Each table's columns: the only names a stored value may use.
    columns: HashMap<&'static str, HashSet<String>>,
    state: Mutex<State>,
    /// Signalled whenever `state` changes.
    moved: Condvar,
    /// Times the replica was loaded whole.
    loads: AtomicU64,
    /// While true, the watch applies nothing (tests make a replica stale).
    #[cfg(test)]
    hold: tokio::sync::watch::Sender<bool>,
    /// Events the watch holds back because of `hold`.
    #[cfg(test)]
    holding: std::sync::atomic::AtomicUsize,
    /// The member the watch follows.
    #[cfg(test)]
    watching: Mutex<String>,
}

struct State {
    /// The revision the replica holds: every change to the prefix up to it.
    applied: i64,
    /// Why the watch last failed, until it applies something again.
    watch_error: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every holder leaves the data whole (a replica transaction rolls back
    // when dropped), so a panic elsewhere does not poison it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("etcd store replica: {e}"))
}

fn etcd_failed(e: EtcdError) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

/// A job for the store's thread, which owns the async client.
enum Job {
    Txn(
        pb::TxnRequest,
        mpsc::SyncSender<crate::etcd::Result<pb::TxnResponse>>,
    ),
}

/// The etcd store: see the module's comment.
pub struct EtcdStore {
    shared: Arc<Shared>,
    /// To the store's thread; dropping it stops the thread.
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    /// One commit (or prune) at a time: each plans on the replica its
    /// predecessor's writes already reached.
    commit_lock: Mutex<()>,
    fence: Mutex<Option<Fence>>,
    refusals: tokio::sync::watch::Sender<u64>,
    stale: AtomicU64,
}

impl EtcdStore {
    /// Opens the store under `prefix` (such as `/ebb/`): records the schema
    /// version there, or refuses one written by a newer ebb, then loads the
    /// replica and returns once it holds etcd's current revision.
    ///
    /// It makes its own client from `settings`, on its own thread: a
    /// client's connections run on the runtime that made it, and a commit
    /// blocks its caller's thread, which may be that runtime's only one.
    pub fn open(settings: &EtcdSettings, prefix: &str) -> Result<Self> {
        if prefix.is_empty() {
            return Err(StoreError::Backend(
                "the etcd key prefix is empty: give one such as `/ebb/`".into(),
            ));
        }
        let shared = Arc::new(Shared::new(prefix)?);
        let endpoints = settings.endpoints.join(",");
        let settings = settings.clone();
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("etcd-store".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StoreError::Backend(format!(
                            "starting the etcd store's runtime: {e}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let etcd = match Etcd::connect(&settings) {
                        Ok(etcd) => etcd,
                        Err(e) => {
                            let _ = ready_tx.send(Err(etcd_failed(e)));
                            return;
                        }
                    };
                    let next = match start(&worker, &etcd).await {
                        Ok(revision) => revision + 1,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let watching = tokio::spawn(watch(Arc::clone(&worker), etcd.clone(), next));
                    while let Some(job) = queue.recv().await {
                        let etcd = etcd.clone();
                        match job {
                            Job::Txn(request, reply) => {
                                tokio::spawn(async move {
                                    let _ = reply.send(etcd.txn(request).await);
                                });
                            }
                        }
                    }
                    watching.abort();
                });
            })
            .map_err(|e| StoreError::Backend(format!("starting the etcd store's thread: {e}")))?;
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(StoreError::Backend(why))) => {
                return Err(StoreError::Backend(format!(
                    "etcd at {endpoints} (prefix `{prefix}`): {why}"
                )));
            }
            Ok(Err(other)) => return Err(other),
            Err(_) => {
                return Err(StoreError::Backend(
                    "the etcd store's thread stopped while opening".into(),
                ));
            }
        }
        tracing::info!(
            endpoints,
            prefix,
            revision = shared.applied(),
            "etcd store opened"
        );
        Ok(Self {
            shared,
            jobs,
            commit_lock: Mutex::new(()),
            fence: Mutex::new(None),
            refusals: tokio::sync::watch::Sender::new(0),
            stale: AtomicU64::new(0),
        })
    }

    /// Sets (or clears) the fence every later commit is conditioned on. A
    /// commit that changes nothing sends nothing, so no fence refuses it.
    pub fn set_fence(&self, fence: Option<Fence>) {
        *lock(&self.fence) = fence;
    }

    /// How many commits the fence refused so far.
    pub fn fence_refusals(&self) -> tokio::sync::watch::Receiver<u64> {
        self.refusals.subscribe()
    }

    /// The etcd revision the replica holds.
    pub fn revision(&self) -> i64 {
        self.shared.applied()
    }

    /// How many commits found the replica behind and were planned again.
    pub fn stale_retries(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }

    /// Why the watch that feeds the replica last failed, while it has not
    /// recovered.
    pub fn watch_error(&self) -> Option<String> {
        lock(&self.shared.state).watch_error.clone()
    }

    /// Waits until the replica holds everything etcd had at `revision`
    /// (and so everything written before this call).
    pub fn wait_for_revision(&self, revision: i64, timeout: Duration) -> Result<()> {
        if self.shared.applied() >= revision {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let synced = self.catch_up(deadline)?;
        self.shared
            .wait_applied(synced.max(revision), deadline)
            .map_err(etcd_failed)
    }

    /// Sends a transaction through the store's thread and waits for its
    /// answer until `deadline`.
    fn call(
        &self,
        request: pb::TxnRequest,
        deadline: Instant,
    ) -> crate::etcd::Result<pb::TxnResponse> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .send(Job::Txn(request, reply))
            .map_err(|_| EtcdError::Unavailable("the etcd store's thread has stopped".into()))?;
        match answer.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(result) => result,
            Err(_) => Err(EtcdError::Unavailable(
                "no answer before the commit's time ran out".into(),
            )),
        }
    }

    /// Writes the sync key and waits for the replica to hold it: the replica
    /// then holds everything written before. Returns that revision.
    fn sync(&self, deadline: Instant) -> crate::etcd::Result<i64> {
        let answer = self.call(
            pb::TxnRequest {
                compare: vec![],
                success: vec![put(format!("{}sync", self.shared.prefix), Vec::new())],
                failure: vec![],
            },
            deadline,
        )?;
        let revision = answer.header.map_or(0, |h| h.revision);
        self.shared.wait_applied(revision, deadline)?;
        Ok(revision)
    }

    /// [`Self::sync`], tried again while etcd is unreachable, until `deadline`.
    fn catch_up(&self, deadline: Instant) -> Result<i64> {
        loop {
            match self.sync(deadline) {
                Ok(revision) => return Ok(revision),
                Err(EtcdError::Unavailable(why)) if Instant::now() + RETRY_PAUSE < deadline => {
                    tracing::debug!(why, "etcd store: catching up, etcd unavailable");
                    std::thread::sleep(RETRY_PAUSE);
                }
                Err(e) => return Err(etcd_failed(e)),
            }
        }
    }

    /// The transaction for `plan`, conditioned on the fence when one is set.
    fn request(
        &self,
        compares: &[pb::Compare],
        ops: &[pb::RequestOp],
    ) -> (pb::TxnRequest, Option<Fence>) {
        let fence = lock(&self.fence).clone();
        let mut compare = compares.to_vec();
        let mut failure = Vec::new();
        if let Some(f) = &fence {
            compare.push(created_at(f.key.clone(), f.create_revision));
            // Read back on failure, to tell a lost fence from a stale replica.
            failure.push(pb::RequestOp {
                request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                    key: f.key.clone(),
                    ..Default::default()
                })),
            });
        }
        (
            pb::TxnRequest {
                compare,
                success: ops.to_vec(),
                failure,
            },
            fence,
        )
    }

    /// The refusal for a failed transaction whose fence was lost, if it was.
    fn fenced(&self, fence: Option<&Fence>, answer: &pb::TxnResponse) -> Option<StoreError> {
        let fence = fence?;
        let now = answer.responses.first().and_then(|r| match &r.response {
            Some(response_op::Response::ResponseRange(range)) => {
                Some(range.kvs.first().map_or(0, |kv| kv.create_revision))
            }
            _ => None,
        })?;
        if now == fence.create_revision {
            return None;
        }
        self.refusals.send_modify(|n| *n += 1);
        let key = String::from_utf8_lossy(&fence.key);
        let why = if now == 0 {
            format!("its leadership key `{key}` is gone")
        } else {
            format!(
                "its leadership key `{key}` was created again (revision {now}, its own was {})",
                fence.create_revision
            )
        };
        tracing::warn!(key = %key, "etcd store: a commit was fenced off");
        Some(StoreError::Fenced(format!("{why}; nothing was written")))
    }

    /// Plans `writes` on the replica: see the module's comment.
    fn plan(&self, writes: &[Write]) -> Result<Plan> {
        let shared = &self.shared;
        let mut conn = shared.replica.conn();
        let revision = shared.applied();
        let tx = conn.transaction().map_err(backend)?;
        let mut order: Vec<(&'static Table, String)> = Vec::new();
        let mut before: HashMap<(&'static str, String), Option<Row>> = HashMap::new();
        let mut deleted_groups: Vec<String> = Vec::new();
        for write in writes {
            for (t, pk) in touched(&tx, write)? {
                let seen = (t.name, pk.clone());
                if let std::collections::hash_map::Entry::Vacant(first) = before.entry(seen) {
                    first.insert(read_row(&tx, t, &pk)?);
                    order.push((t, pk));
                }
            }
            if let Write::DeleteGroup(id) = write {
                deleted_groups.push(id.clone());
            }
            sqlite::apply(&tx, write)?;
        }

        let mut plan = Plan {
            compares: Vec::new(),
            ops: Vec::new(),
            outcome: Vec::new(),
        };
        let mut compares = Compares::default();
        // Each table's share of a group the commit deletes goes with one range.
        let mut ranges: Vec<String> = Vec::new();
        for id in &deleted_groups {
            let exists = read_row(&tx, GROUPS, id)?.is_some();
            let known = known(&tx, GROUPS, id)?;
            for t in TABLES.iter().filter(|t| t.owned) {
                let range = shared.owner_prefix(t, Some(id));
                if exists {
                    // Deleted and created again: its rows go one by one, and
                    // none may have been added since the replica's revision.
                    compares.unchanged_since(&range, revision);
                } else if known.is_some() && !ranges.contains(&range) {
                    plan.ops.push(delete_range(&range));
                    ranges.push(range);
                }
            }
        }
        let mut referenced: Vec<String> = Vec::new();
        for (t, pk) in order {
            let before = before.remove(&(t.name, pk.clone())).flatten();
            let after = read_row(&tx, t, &pk)?;
            if after == before {
                continue;
            }
            let known = known(&tx, t, &pk)?;
            match &after {
                Some(row) => {
                    let key = shared.key_of(t, row)?;
                    match &known {
                        Some(k) => {
                            compares.modified_at(&k.key, k.mod_revision);
                            if k.key != key {
                                plan.ops.push(delete(&k.key));
                            }
                        }
                        None => compares.created_at(&key, 0),
                    }
                    plan.ops.push(put(key, encode(row)?));
                    let group = t.owned.then(|| group_of(row)).flatten();
                    if let Some(g) = &group {
                        referenced.push(g.clone());
                    }
                    let renamed = before.as_ref().is_none_or(|b| {
                        b.get("name") != row.get("name") || b.get("group_id") != row.get("group_id")
                    });
                    if t.named && renamed {
                        // A name is unique in its scope: nothing there may have
                        // changed since the replica's revision.
                        let scope = if t.owned {
                            shared.owner_prefix(t, group.as_deref())
                        } else {
                            shared.table_prefix(t)
                        };
                        compares.unchanged_since(&scope, revision);
                    }
                }
                None => {
                    if let Some(k) = &known
                        && !ranges.iter().any(|r| k.key.starts_with(r.as_str()))
                    {
                        compares.modified_at(&k.key, k.mod_revision);
                        plan.ops.push(delete(&k.key));
                    }
                }
            }
            plan.outcome.push((t, pk, after));
        }
        // A row put in a group needs that group to stay the one it was.
        for g in referenced {
            if let Some(k) = known(&tx, GROUPS, &g)?
                && !compares.has(&k.key)
            {
                compares.created_at(&k.key, k.create_revision);
            }
        }
        plan.compares = compares.into_vec();
        Ok(plan)
    }

    /// Whether the replica holds every row as `plan` leaves it.
    fn landed(&self, plan: &Plan) -> Result<bool> {
        let conn = self.shared.replica.conn();
        for (t, pk, row) in &plan.outcome {
            if read_row(&conn, t, pk)? != *row {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The stale-replica bookkeeping shared by commit and prune: gives up
    /// after [`STALE_ATTEMPTS`], or catches up.
    fn after_stale(&self, attempts: &mut u32, deadline: Instant) -> Result<()> {
        *attempts += 1;
        self.stale.fetch_add(1, Ordering::Relaxed);
        if *attempts >= STALE_ATTEMPTS {
            return Err(StoreError::Backend(format!(
                "etcd: the rows this commit changes kept changing under it ({attempts} attempts); \
                 is another controller writing?"
            )));
        }
        self.catch_up(deadline).map(drop)
    }
}

impl Shared {
    fn new(prefix: &str) -> Result<Self> {
        let replica = SqliteStore::open_in_memory()?;
        let mut columns = HashMap::new();
        {
            let conn = replica.conn();
            conn.execute_batch(
                "CREATE TABLE etcd_keys (
                     tbl             TEXT NOT NULL,
                     pk              TEXT NOT NULL,
                     key             TEXT NOT NULL UNIQUE,
                     create_revision INTEGER NOT NULL,
                     mod_revision    INTEGER NOT NULL,
                     PRIMARY KEY (tbl, pk)
                 );",
            )
            .map_err(backend)?;
            for t in TABLES {
                let mut stmt = conn
                    .prepare(&format!("SELECT name FROM pragma_table_info('{}')", t.name))
                    .map_err(backend)?;
                let names = stmt
                    .query_map([], |row| row.get::<_, String>(0))
                    .map_err(backend)?
                    .collect::<rusqlite::Result<HashSet<_>>>()
                    .map_err(backend)?;
                columns.insert(t.name, names);
            }
        }
        Ok(Self {
            replica,
            prefix: prefix.to_owned(),
            columns,
            state: Mutex::new(State {
                applied: 0,
                watch_error: None,
            }),
            moved: Condvar::new(),
            loads: AtomicU64::new(0),
            #[cfg(test)]
            hold: tokio::sync::watch::Sender::new(false),
            #[cfg(test)]
            holding: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            watching: Mutex::new(String::new()),
        })
    }

    fn applied(&self) -> i64 {
        lock(&self.state).applied
    }

    /// Waits until the replica holds `revision`, until `deadline`.
    fn wait_applied(&self, revision: i64, deadline: Instant) -> crate::etcd::Result<()> {
        let mut state = lock(&self.state);
        while state.applied < revision {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let why = state
                    .watch_error
                    .as_deref()
                    .map(|e| format!(": its watch failed: {e}"))
                    .unwrap_or_default();
                return Err(EtcdError::Unavailable(format!(
                    "this controller's copy of the store is at revision {}, \
                     not yet at {revision}{why}",
                    state.applied
                )));
            }
            state = self
                .moved
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(())
    }

    fn watch_failed(&self, why: String) {
        tracing::warn!(error = %why, "etcd store: the watch failed; watching again");
        lock(&self.state).watch_error = Some(why);
    }

    fn table_prefix(&self, t: &Table) -> String {
        format!("{}t/{}/", self.prefix, t.name)
    }

    /// Where a group's (or, for join tokens, no group's) rows of `t` are.
    fn owner_prefix(&self, t: &Table, group: Option<&str>) -> String {
        let owner = group.map_or_else(|| NO_GROUP.to_owned(), escape);
        format!("{}{owner}/", self.table_prefix(t))
    }

    fn key_of(&self, t: &Table, row: &Row) -> Result<String> {
        let pk = row
            .get(t.pk)
            .and_then(Json::as_str)
            .ok_or_else(|| StoreError::Backend(format!("a {} row without its {}", t.name, t.pk)))?;
        Ok(if t.owned {
            format!(
                "{}{}",
                self.owner_prefix(t, group_of(row).as_deref()),
                escape(pk)
            )
        } else {
            format!("{}{}", self.table_prefix(t), escape(pk))
        })
    }

    /// The table a key holds a row of, or None for the store's other keys.
    fn table_of(&self, key: &str) -> Option<&'static Table> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix("t/")?;
        table_named(rest.split('/').next()?)
    }

    /// Replaces the replica's rows with `kvs`, read at `revision`.
    fn replace(&self, kvs: &[mvccpb::KeyValue], revision: i64) -> Result<()> {
        let mut conn = self.replica.conn();
        let tx = conn.transaction().map_err(backend)?;
        tx.pragma_update(None, "defer_foreign_keys", true)
            .map_err(backend)?;
        for t in TABLES {
            tx.execute(&format!("DELETE FROM {}", t.name), [])
                .map_err(backend)?;
        }
        tx.execute("DELETE FROM etcd_keys", []).map_err(backend)?;
        for kv in kvs {
            self.put_kv(&tx, kv, false)?;
        }
        tx.commit().map_err(backend)?;
        self.replica.forget_listings();
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.advance(revision);
        Ok(())
    }

    /// Applies a watch's events, one replica transaction per revision.
    /// Returns the last revision applied.
    fn apply_events(&self, events: &[mvccpb::Event]) -> Result<i64> {
        let mut conn = self.replica.conn();
        let mut last = self.applied();
        for batch in events.chunk_by(|a, b| revision_of(a) == revision_of(b)) {
            let tx = conn.transaction().map_err(backend)?;
            // A transaction's rows may come in any order.
            tx.pragma_update(None, "defer_foreign_keys", true)
                .map_err(backend)?;
            let kv = |e: &'_ mvccpb::Event| e.kv.clone().unwrap_or_default();
            let deleted = mvccpb::event::EventType::Delete as i32;
            // Deletes first: they may free a name a put takes.
            for event in batch.iter().filter(|e| e.r#type == deleted) {
                let key = String::from_utf8_lossy(&kv(event).key).into_owned();
                let row: Option<(String, String)> = tx
                    .query_row(
                        "SELECT tbl, pk FROM etcd_keys WHERE key = ?1",
                        [&key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(backend)?;
                if let Some((tbl, pk)) = row
                    && let Some(t) = table_named(&tbl)
                {
                    tx.execute(
                        &format!("DELETE FROM {} WHERE {} = ?1", t.name, t.pk),
                        [&pk],
                    )
                    .map_err(backend)?;
                    tx.execute("DELETE FROM etcd_keys WHERE key = ?1", [&key])
                        .map_err(backend)?;
                }
            }
            let puts: Vec<mvccpb::KeyValue> = batch
                .iter()
                .filter(|e| e.r#type != deleted)
                .map(kv)
                .collect();
            // Two rows that swap names in one commit: park the names first.
            for kv in &puts {
                self.put_kv(&tx, kv, true)?;
            }
            for kv in &puts {
                self.put_kv(&tx, kv, false)?;
            }
            tx.commit().map_err(backend)?;
            last = revision_of(&batch[0]);
        }
        // The kept instance and alarm listings go only when they may have changed.
        let listed = events.iter().any(|e| {
            let key = e.kv.as_ref().map(|kv| String::from_utf8_lossy(&kv.key));
            key.and_then(|k| self.table_of(&k))
                .is_some_and(|t| matches!(t.name, "instances" | "alarms" | "groups"))
        });
        if listed {
            self.replica.forget_listings();
        }
        self.advance(last);
        Ok(last)
    }

    /// Puts one key's row into the replica (a key that holds no row is
    /// skipped). With `park`, only moves an existing named row's name out of
    /// the way.
    fn put_kv(&self, tx: &Connection, kv: &mvccpb::KeyValue, park: bool) -> Result<()> {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        let Some(t) = self.table_of(&key) else {
            return Ok(());
        };
        let corrupt = |message: String| StoreError::Corrupt {
            key: key.clone(),
            message,
        };
        let row: Row = serde_json::from_slice(&kv.value).map_err(|e| corrupt(e.to_string()))?;
        let pk = row
            .get(t.pk)
            .and_then(Json::as_str)
            .ok_or_else(|| corrupt(format!("no `{}`", t.pk)))?;
        if self.key_of(t, &row)? != key {
            return Err(corrupt("its row belongs under another key".into()));
        }
        if park {
            if t.named {
                tx.execute(
                    &format!(
                        "UPDATE {} SET name = char(0) || {pk_col} WHERE {pk_col} = ?1",
                        t.name,
                        pk_col = t.pk
                    ),
                    [pk],
                )
                .map_err(backend)?;
            }
            return Ok(());
        }
        let allowed = &self.columns[t.name];
        let mut names = Vec::with_capacity(row.len());
        let mut values = Vec::with_capacity(row.len());
        for (name, value) in &row {
            if !allowed.contains(name) {
                return Err(corrupt(format!("no column `{name}` in {}", t.name)));
            }
            names.push(name.as_str());
            values.push(match value {
                Json::Null => Value::Null,
                Json::Bool(b) => Value::Integer(i64::from(*b)),
                Json::Number(n) => match n.as_i64() {
                    Some(i) => Value::Integer(i),
                    None => Value::Real(n.as_f64().unwrap_or_default()),
                },
                Json::String(s) => Value::Text(s.clone()),
                other => return Err(corrupt(format!("`{name}` is {other}"))),
            });
        }
        let updates: Vec<String> = names
            .iter()
            .filter(|n| **n != t.pk)
            .map(|n| format!("{n} = excluded.{n}"))
            .collect();
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
            t.name,
            names.join(", "),
            placeholders.join(", "),
            t.pk,
            updates.join(", ")
        );
        tx.prepare_cached(&sql)
            .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(values)))
            .map_err(|e| corrupt(e.to_string()))?;
        tx.execute(
            "INSERT INTO etcd_keys (tbl, pk, key, create_revision, mod_revision)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tbl, pk) DO UPDATE SET key = excluded.key,
                 create_revision = excluded.create_revision, mod_revision = excluded.mod_revision",
            rusqlite::params![t.name, pk, key, kv.create_revision, kv.mod_revision],
        )
        .map_err(backend)?;
        Ok(())
    }

    /// Records that the replica holds `revision`; called with the replica's
    /// connection held, so a plan sees rows and revision together.
    fn advance(&self, revision: i64) {
        let mut state = lock(&self.state);
        state.applied = state.applied.max(revision);
        state.watch_error = None;
        drop(state);
        self.moved.notify_all();
    }

    #[cfg(test)]
    async fn held(&self) {
        let mut hold = self.hold.subscribe();
        if *hold.borrow() {
            self.holding.fetch_add(1, Ordering::Relaxed);
            let _ = hold.wait_for(|held| !*held).await;
            self.holding.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn revision_of(event: &mvccpb::Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

fn group_of(row: &Row) -> Option<String> {
    row.get("group_id")
        .and_then(Json::as_str)
        .map(str::to_owned)
}

fn encode(row: &Row) -> Result<Vec<u8>> {
    serde_json::to_vec(row).map_err(|e| StoreError::Backend(format!("encoding a row: {e}")))
}

/// The rows a write may change, read before it is applied: its own, and
/// those it deletes along with it.
fn touched(conn: &Connection, write: &Write) -> Result<Vec<(&'static Table, String)>> {
    let t = |name: &str| table_named(name).expect("a table of the schema");
    let one = |name: &str, pk: &str| Ok(vec![(t(name), pk.to_owned())]);
    match write {
        Write::CreateGroup(g) | Write::UpdateGroup(g) => one("groups", &g.id),
        Write::DeleteGroup(id) => {
            let mut rows = vec![(GROUPS, id.clone())];
            for owned in TABLES.iter().filter(|t| t.owned) {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {} FROM {} WHERE group_id = ?1",
                        owned.pk, owned.name
                    ))
                    .map_err(backend)?;
                let pks = stmt
                    .query_map([id], |row| row.get::<_, String>(0))
                    .map_err(backend)?;
                for pk in pks {
                    rows.push((owned, pk.map_err(backend)?));
                }
            }
            Ok(rows)
        }
        Write::PutConfiguration(c) => one("configurations", &c.id),
        Write::DeleteConfiguration(id) => one("configurations", id),
        Write::PutInstance(i) => one("instances", &i.id),
        Write::DeleteInstance(id) => one("instances", id),
        Write::PutActivity(a) => one("activities", &a.id),
        Write::PutRule(r) => one("rules", &r.id),
        Write::DeleteRule(id) => one("rules", id),
        Write::PutAlarm(a) => one("alarms", &a.id),
        Write::DeleteAlarm(id) => one("alarms", id),
        Write::PutTask(task) => one("tasks", &task.id),
        Write::DeleteTask(id) => one("tasks", id),
        Write::PutDetached(d) => one("detached_instances", &d.instance_id),
        Write::PutJoinToken(token) => one("join_tokens", &token.id),
        Write::DeleteJoinToken(id) => one("join_tokens", id),
        Write::PutRevoked(r) => one("revoked_identities", &r.identity),
        Write::PutRollup(r) => one("rollups", &r.id()),
        Write::EnqueueDelivery(d) | Write::PutDelivery(d) => one("deliveries", &d.id),
        Write::DeleteDelivery(id) => one("deliveries", id),
        Write::PutClientToken(t) => one("client_tokens", &t.token),
        Write::PutCertificate(c) => {
            let mut rows = vec![(t("certificates"), c.serial.clone())];
            for serial in sqlite::forgotten_certificates(conn, c)? {
                rows.push((t("certificates"), serial));
            }
            Ok(rows)
        }
    }
}

/// A row as the JSON object of its columns, if it exists.
fn read_row(conn: &Connection, t: &Table, pk: &str) -> Result<Option<Row>> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT * FROM {} WHERE {} = ?1", t.name, t.pk))
        .map_err(backend)?;
    let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    stmt.query_row([pk], |row| {
        let mut out = Row::new();
        for (i, name) in names.iter().enumerate() {
            let value = match row.get_ref(i)? {
                ValueRef::Null => Json::Null,
                ValueRef::Integer(n) => Json::from(n),
                ValueRef::Real(f) => Json::from(f),
                ValueRef::Text(s) | ValueRef::Blob(s) => {
                    Json::from(String::from_utf8_lossy(s).into_owned())
                }
            };
            out.insert(name.clone(), value);
        }
        Ok(out)
    })
    .optional()
    .map_err(backend)
}

fn known(conn: &Connection, t: &Table, pk: &str) -> Result<Option<Known>> {
    conn.prepare_cached(
        "SELECT key, create_revision, mod_revision FROM etcd_keys WHERE tbl = ?1 AND pk = ?2",
    )
    .and_then(|mut stmt| {
        stmt.query_row([t.name, pk], |r| {
            Ok(Known {
                key: r.get(0)?,
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
            })
        })
        .optional()
    })
    .map_err(backend)
}

/// A transaction's compares, one per key or range.
#[derive(Default)]
struct Compares(BTreeMap<(Vec<u8>, Vec<u8>), pb::Compare>);

impl Compares {
    fn has(&self, key: &str) -> bool {
        self.0.contains_key(&(key.as_bytes().to_vec(), Vec::new()))
    }

    fn add(&mut self, c: pb::Compare) {
        self.0
            .entry((c.key.clone(), c.range_end.clone()))
            .or_insert(c);
    }

    /// The key was last changed at `revision`.
    fn modified_at(&mut self, key: &str, revision: i64) {
        self.add(pb::Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(revision)),
            range_end: Vec::new(),
        });
    }

    /// The key was created at `revision` (0: it does not exist).
    fn created_at(&mut self, key: &str, revision: i64) {
        self.add(created_at(key.as_bytes().to_vec(), revision));
    }

    /// No key under `prefix` changed after `revision`.
    fn unchanged_since(&mut self, prefix: &str, revision: i64) {
        self.add(pb::Compare {
            result: compare::CompareResult::Less as i32,
            target: compare::CompareTarget::Mod as i32,
            key: prefix.as_bytes().to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(revision + 1)),
            range_end: prefix_end(prefix.as_bytes()),
        });
    }

    fn into_vec(self) -> Vec<pb::Compare> {
        self.0.into_values().collect()
    }
}

fn created_at(key: Vec<u8>, revision: i64) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key,
        target_union: Some(compare::TargetUnion::CreateRevision(revision)),
        range_end: Vec::new(),
    }
}

fn put(key: String, value: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(pb::PutRequest {
            key: key.into_bytes(),
            value,
            lease: 0,
        })),
    }
}

fn delete(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                range_end: Vec::new(),
            },
        )),
    }
}

fn delete_range(prefix: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
            },
        )),
    }
}

/// Opening, on the store's thread: the schema check, then the first load.
/// Returns the revision loaded.
async fn start(shared: &Shared, etcd: &Etcd) -> Result<i64> {
    check_schema(shared, etcd).await?;
    load(shared, etcd).await
}

/// Writes `version` at the schema `key` if `when` holds; false when it did
/// not (another controller got there first).
async fn record_schema(etcd: &Etcd, key: &[u8], when: pb::Compare, version: i64) -> Result<bool> {
    let written = etcd
        .txn(pb::TxnRequest {
            compare: vec![when],
            success: vec![put(
                String::from_utf8_lossy(key).into_owned(),
                version.to_string().into_bytes(),
            )],
            failure: vec![],
        })
        .await
        .map_err(etcd_failed)?;
    Ok(written.succeeded)
}

/// Records this build's schema version under a new prefix; refuses a
/// prefix written by another.
async fn check_schema(shared: &Shared, etcd: &Etcd) -> Result<()> {
    let key = format!("{}schema", shared.prefix).into_bytes();
    let ours = sqlite::SCHEMA_VERSION;
    // Twice: another controller may record it between our read and write.
    for _ in 0..2 {
        let read = etcd
            .range(pb::RangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await
            .map_err(etcd_failed)?;
        let Some(kv) = read.kvs.first() else {
            if record_schema(etcd, &key, created_at(key.clone(), 0), ours).await? {
                return Ok(());
            }
            continue;
        };
        let text = String::from_utf8_lossy(&kv.value);
        let found: i64 = text.trim().parse().map_err(|_| {
            StoreError::Backend(format!(
                "`{}` holds `{text}`, not a schema version",
                String::from_utf8_lossy(&key)
            ))
        })?;
        return match found.cmp(&ours) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(StoreError::Backend(format!(
                "this prefix was written by a newer ebb (schema {found}, this build knows {ours}); \
                 run that version of ebb, or give this one another prefix"
            ))),
            // Only tables were added since: the prefix's keys read the
            // same, so recording the new version is the whole migration.
            std::cmp::Ordering::Less if found >= ADDITIVE_SINCE => {
                let unchanged = pb::Compare {
                    key: key.clone(),
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Mod as i32,
                    target_union: Some(compare::TargetUnion::ModRevision(kv.mod_revision)),
                    ..Default::default()
                };
                if record_schema(etcd, &key, unchanged, ours).await? {
                    tracing::info!(
                        from = found,
                        to = ours,
                        "etcd store: schema version recorded"
                    );
                    return Ok(());
                }
                continue;
            }
            std::cmp::Ordering::Less => Err(StoreError::Backend(format!(
                "this prefix was written at schema {found}, and this build (schema {ours}) \
                 has no migration for etcd"
            ))),
        };
    }
    Err(StoreError::Backend(
        "the schema version key keeps changing; is another controller starting?".into(),
    ))
}

/// Reads every key under the prefix at one revision and makes the replica
/// that. Returns the revision.
async fn load(shared: &Shared, etcd: &Etcd) -> Result<i64> {
    let mut from = shared.prefix.as_bytes().to_vec();
    let end = prefix_end(&from);
    let mut revision = 0;
    let mut kvs = Vec::new();
    loop {
        let page = etcd
            .range(pb::RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                limit: LOAD_PAGE,
                revision,
                ..Default::default()
            })
            .await
            .map_err(etcd_failed)?;
        if revision == 0 {
            revision = page.header.map_or(0, |h| h.revision);
        }
        let more = page.more;
        if let Some(last) = page.kvs.last() {
            from = last.key.clone();
            from.push(0);
        }
        kvs.extend(page.kvs);
        if !more {
            break;
        }
    }
    shared.replace(&kvs, revision)?;
    tracing::debug!(revision, keys = kvs.len(), "etcd store: replica loaded");
    Ok(revision)
}

/// Why the watch stopped.
enum Stop {
    /// Watch again from the next revision (on another member).
    Broken(String),
    /// The replica cannot follow on from where it is: load it again.
    Reload(String),
}

/// Feeds the replica for as long as the store lives: watches the prefix
/// from `next`, watches again after a failure, and reloads when etcd no
/// longer has the history the replica needs.
async fn watch(shared: Arc<Shared>, etcd: Etcd, mut next: i64) {
    let mut pause = WATCH_BACKOFF.0;
    loop {
        let (stop, progressed) = follow(&shared, &etcd, &mut next).await;
        if progressed {
            pause = WATCH_BACKOFF.0;
        }
        match stop {
            Stop::Broken(why) => {
                shared.watch_failed(why);
                etcd.skip();
            }
            Stop::Reload(why) => {
                tracing::warn!(why, "etcd store: loading the replica again");
                match load(&shared, &etcd).await {
                    Ok(revision) => {
                        next = revision + 1;
                        continue;
                    }
                    Err(e) => shared.watch_failed(e.to_string()),
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(WATCH_BACKOFF.1);
    }
}

/// One watch, from `next`, until it stops; whether it applied anything.
async fn follow(shared: &Shared, etcd: &Etcd, next: &mut i64) -> (Stop, bool) {
    let prefix = shared.prefix.as_bytes().to_vec();
    let create = pb::WatchCreateRequest {
        range_end: prefix_end(&prefix),
        key: prefix,
        start_revision: *next,
        ..Default::default()
    };
    let mut stream = match etcd.watch(create).await {
        Ok(stream) => stream,
        Err(e) => return (Stop::Broken(e.to_string()), false),
    };
    #[cfg(test)]
    {
        *lock(&shared.watching) = etcd.current().to_owned();
    }
    let mut progressed = false;
    loop {
        let answer = match stream.next().await {
            Ok(Some(answer)) => answer,
            Ok(None) => {
                return (
                    Stop::Broken("the member ended the watch".into()),
                    progressed,
                );
            }
            Err(e) => return (Stop::Broken(e.to_string()), progressed),
        };
        if answer.compact_revision > 0 {
            return (
                Stop::Reload(format!(
                    "etcd compacted its history to revision {}, past {next}",
                    answer.compact_revision
                )),
                progressed,
            );
        }
        if answer.canceled {
            return (
                Stop::Broken(format!(
                    "etcd cancelled the watch: {}",
                    answer.cancel_reason
                )),
                progressed,
            );
        }
        if answer.events.is_empty() {
            continue;
        }
        #[cfg(test)]
        shared.held().await;
        match shared.apply_events(&answer.events) {
            Ok(last) => {
                *next = last + 1;
                progressed = true;
            }
            Err(e) => return (Stop::Reload(e.to_string()), progressed),
        }
    }
}

impl EtcdStore {
    /// Deletes the rows of `table` that `doomed` selects on the replica, in
    /// chunks under etcd's transaction limit, each conditioned on the rows
    /// being unchanged. Returns how many went.
    fn prune(
        &self,
        table: &str,
        doomed: impl Fn(&Connection) -> Result<Vec<String>>,
    ) -> Result<usize> {
        let _one = lock(&self.commit_lock);
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        let mut pruned = 0;
        let mut stale = 0;
        let t = table_named(table).expect("a table of the schema");
        'plan: loop {
            let doomed: Vec<Known> = {
                let conn = self.shared.replica.conn();
                let mut out = Vec::new();
                for id in doomed(&conn)? {
                    out.extend(known(&conn, t, &id)?);
                }
                out
            };
            for chunk in doomed.chunks(PRUNE_CHUNK) {
                let mut compares = Compares::default();
                for k in chunk {
                    compares.modified_at(&k.key, k.mod_revision);
                }
                let ops: Vec<_> = chunk.iter().map(|k| delete(&k.key)).collect();
                let (request, fence) = self.request(&compares.into_vec(), &ops);
                let answer = self.call(request, deadline).map_err(etcd_failed)?;
                if !answer.succeeded {
                    if let Some(refusal) = self.fenced(fence.as_ref(), &answer) {
                        return Err(refusal);
                    }
                    self.after_stale(&mut stale, deadline)?;
                    continue 'plan;
                }
                let revision = answer.header.map_or(0, |h| h.revision);
                self.shared
                    .wait_applied(revision, deadline)
                    .map_err(etcd_failed)?;
                pruned += chunk.len();
            }
            return Ok(pruned);
        }
    }
}

impl Store for EtcdStore {
    fn commit(&self, writes: Vec<Write>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let _one = lock(&self.commit_lock);
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        let mut caught_up = false;
        let mut stale = 0;
        // Plans sent whose answer was lost: any of them may have landed.
        let mut in_doubt: Vec<Plan> = Vec::new();
        loop {
            for plan in &in_doubt {
                if self.landed(plan)? {
                    return Ok(());
                }
            }
            let plan = match self.plan(&writes) {
                Ok(plan) => plan,
                // The replica may be behind what refuses the commit: decide
                // on a current one, when etcd answers.
                Err(StoreError::Conflict(_) | StoreError::NotFound(_))
                    if !caught_up && self.sync(deadline).is_ok() =>
                {
                    caught_up = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if plan.ops.is_empty() {
                return Ok(());
            }
            let (request, fence) = self.request(&plan.compares, &plan.ops);
            match self.call(request, deadline) {
                Ok(answer) if answer.succeeded => {
                    let revision = answer.header.map_or(0, |h| h.revision);
                    return self.shared.wait_applied(revision, deadline).map_err(|e| {
                        StoreError::Backend(format!(
                            "etcd: the commit landed at revision {revision}, but {e}"
                        ))
                    });
                }
                Ok(answer) => {
                    if let Some(refusal) = self.fenced(fence.as_ref(), &answer) {
                        return Err(refusal);
                    }
                    self.after_stale(&mut stale, deadline)?;
                    caught_up = true;
                }
                Err(EtcdError::Unavailable(why)) => {
                    // It may have landed: find out once etcd answers again.
                    in_doubt.push(plan);
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        return Err(StoreError::Backend(format!(
                            "etcd: {why}; the commit may or may not have been applied"
                        )));
                    }
                    std::thread::sleep(RETRY_PAUSE);
                    self.catch_up(deadline).map_err(|e| {
                        let last = match e {
                            StoreError::Backend(m) => m,
                            other => other.to_string(),
                        };
                        StoreError::Backend(format!(
                            "{last} (first: {why}); the commit may or may not have been applied"
                        ))
                    })?;
                    caught_up = true;
                }
                Err(e @ EtcdError::Refused { .. })
                    if e.to_string().contains("too many operations") =>
                {
                    return Err(StoreError::Backend(format!(
                        "etcd: this commit is {} operations, more than etcd's --max-txn-ops allows \
                         (128 unless raised; see docs/ha.md): {e}",
                        plan.ops.len().max(plan.compares.len())
                    )));
                }
                Err(e) => return Err(etcd_failed(e)),
            }
        }
    }

    fn prune_activities(&self, group_id: &str, keep: usize, before_ms: i64) -> Result<usize> {
        self.prune("activities", |conn| {
            sqlite::prunable(conn, group_id, keep, before_ms)
        })
    }

    fn list_rollups(&self, group_id: &str, since_ms: i64) -> Result<Vec<MinuteRollup>> {
        self.shared.replica.list_rollups(group_id, since_ms)
    }

    fn prune_rollups(&self, before_ms: i64) -> Result<usize> {
        self.prune("rollups", |conn| sqlite::prunable_rollups(conn, before_ms))
    }

    fn list_deliveries(
        &self,
        state: DeliveryState,
        due_by_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        self.shared.replica.list_deliveries(state, due_by_ms, limit)
    }

    fn count_deliveries(&self) -> Result<Vec<DeliveryCount>> {
        self.shared.replica.count_deliveries()
    }

    fn prune_deliveries(&self, state: DeliveryState, before_ms: i64) -> Result<usize> {
        self.prune("deliveries", |conn| {
            sqlite::prunable_deliveries(conn, state, before_ms)
        })
    }

    fn get_client_token(&self, token: &str) -> Result<Option<ClientToken>> {
        self.shared.replica.get_client_token(token)
    }

    fn prune_client_tokens(&self, before_ms: i64) -> Result<usize> {
        self.prune("client_tokens", |conn| {
            sqlite::prunable_client_tokens(conn, before_ms)
        })
    }

    fn get_group(&self, id: &str) -> Result<Option<ScalingGroup>> {
        self.shared.replica.get_group(id)
    }

    fn find_group_by_name(&self, name: &str) -> Result<Option<ScalingGroup>> {
        self.shared.replica.find_group_by_name(name)
    }

    fn list_groups(&self) -> Result<Vec<ScalingGroup>> {
        self.shared.replica.list_groups()
    }

    fn get_configuration(&self, id: &str) -> Result<Option<ScalingConfiguration>> {
        self.shared.replica.get_configuration(id)
    }

    fn list_configurations(&self, group_id: Option<&str>) -> Result<Vec<ScalingConfiguration>> {
        self.shared.replica.list_configurations(group_id)
    }

    fn get_instance(&self, id: &str) -> Result<Option<Instance>> {
        self.shared.replica.get_instance(id)
    }

    fn list_instances(&self, group_id: Option<&str>) -> Result<Vec<Instance>> {
        self.shared.replica.list_instances(group_id)
    }

    fn get_activity(&self, id: &str) -> Result<Option<Activity>> {
        self.shared.replica.get_activity(id)
    }

    fn list_activities(&self, group_id: Option<&str>, limit: usize) -> Result<Vec<Activity>> {
        self.shared.replica.list_activities(group_id, limit)
    }

    fn find_activities(&self, query: &ActivityQuery) -> Result<Vec<Activity>> {
        self.shared.replica.find_activities(query)
    }

    fn get_rule(&self, id: &str) -> Result<Option<ScalingRule>> {
        self.shared.replica.get_rule(id)
    }

    fn list_rules(&self, group_id: Option<&str>) -> Result<Vec<ScalingRule>> {
        self.shared.replica.list_rules(group_id)
    }

    fn get_alarm(&self, id: &str) -> Result<Option<AlarmTask>> {
        self.shared.replica.get_alarm(id)
    }

    fn list_alarms(&self, group_id: Option<&str>) -> Result<Vec<AlarmTask>> {
        self.shared.replica.list_alarms(group_id)
    }

    fn get_task(&self, id: &str) -> Result<Option<ScheduledTask>> {
        self.shared.replica.get_task(id)
    }

    fn list_tasks(&self, group_id: Option<&str>) -> Result<Vec<ScheduledTask>> {
        self.shared.replica.list_tasks(group_id)
    }

    fn list_detached(&self) -> Result<Vec<Detached>> {
        self.shared.replica.list_detached()
    }

    fn get_detached(&self, id: &str) -> Result<Option<Detached>> {
        self.shared.replica.get_detached(id)
    }

    fn list_revoked(&self) -> Result<Vec<Revoked>> {
        self.shared.replica.list_revoked()
    }

    fn list_certificates(&self) -> Result<Vec<CertRecord>> {
        self.shared.replica.list_certificates()
    }

    fn get_join_token(&self, id: &str) -> Result<Option<JoinToken>> {
        self.shared.replica.get_join_token(id)
    }

    fn list_join_tokens(&self) -> Result<Vec<JoinToken>> {
        self.shared.replica.list_join_tokens()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::store::conformance::{self, activity, group, instance};
    use ebb_core::model::ActivityStatus;
    use ebb_tests::etcd::EtcdCluster;

    /// Generous: the tests share two busy cores with etcd.
    const WAIT: Duration = Duration::from_secs(30);

    /// One etcd member for every test that fails nothing of it; each store
    /// gets a prefix of its own.
    fn shared_cluster() -> &'static EtcdCluster {
        static CLUSTER: OnceLock<EtcdCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| {
            if let Some(why) = ebb_tests::etcd::missing() {
                panic!("{why}");
            }
            let dir = tempfile::tempdir().expect("tempdir").keep();
            let cluster = EtcdCluster::start(&dir, 1).expect("etcd starts");
            // A static is never dropped, so its members would outlive the
            // tests: a shell waits for this process to end, then ends them.
            let pids = cluster
                .members
                .iter()
                .filter_map(|m| m.pid())
                .map(|p| p.to_string());
            Command::new("sh")
                .args([
                    "-c",
                    r#"(while kill -0 "$1" 2>/dev/null; do sleep 1; done; d="$2"; shift 2; kill -9 "$@"; rm -rf "$d") &"#,
                    "etcd-reaper",
                    &std::process::id().to_string(),
                    &dir.display().to_string(),
                ])
                .args(pids)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("sh");
            cluster
        })
    }

    fn fresh_prefix() -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!(
            "/ebb-test-{}-{}/",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn settings(endpoints: Vec<String>) -> EtcdSettings {
        EtcdSettings {
            endpoints,
            tls: None,
            request_timeout: Duration::from_secs(2),
        }
    }

    fn open(endpoints: Vec<String>, prefix: &str) -> EtcdStore {
        EtcdStore::open(&settings(endpoints), prefix).expect("store opens")
    }

    /// A store on the shared one-member cluster, under a prefix of its
    /// own: for tests elsewhere that need etcd's limits, not its failures.
    pub(crate) fn fresh_store() -> EtcdStore {
        open(shared_cluster().endpoints(), &fresh_prefix())
    }

    /// Runs `f` with a client of its own, on a runtime of its own.
    fn on_etcd<T>(endpoints: &[String], f: impl AsyncFnOnce(&Etcd) -> T) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let etcd = Etcd::connect(&settings(endpoints.to_vec())).expect("client");
                f(&etcd).await
            })
    }

    fn keys_under(etcd: &[String], prefix: &str) -> Vec<String> {
        on_etcd(etcd, async |etcd| {
            etcd.range(pb::RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                keys_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect()
        })
    }

    /// Puts (or, with `None`, deletes) one key; the revision it made.
    fn set(etcd: &[String], key: &str, value: Option<&str>) -> i64 {
        let op = match value {
            Some(v) => put(key.to_owned(), v.as_bytes().to_vec()),
            None => delete(key),
        };
        on_etcd(etcd, async |etcd| {
            etcd.txn(pb::TxnRequest {
                compare: vec![],
                success: vec![op],
                failure: vec![],
            })
            .await
            .unwrap()
            .header
            .unwrap()
            .revision
        })
    }

    #[test]
    fn conformance_on_etcd() {
        let cluster = shared_cluster();
        conformance::run_all(&|| Box::new(open(cluster.endpoints(), &fresh_prefix())));
    }

    #[test]
    fn store_is_send_and_sync() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<EtcdStore>();
    }

    /// The layout operators see with `etcdctl get --prefix`: a schema key,
    /// and each row as the JSON of its columns, under its group when a
    /// group owns it.
    #[test]
    fn rows_are_keys_under_the_prefix() {
        let cluster = shared_cluster();
        let prefix = fresh_prefix();
        let store = open(cluster.endpoints(), &prefix);
        store
            .commit(vec![
                Write::CreateGroup(group("asg-1", "web")),
                Write::PutInstance(instance("i-1", "asg-1", 5)),
                Write::PutRevoked(Revoked {
                    identity: "spiffe://ebb.local/agent/i-9".into(),
                    revoked_at_ms: 1,
                    revoked_by: "spiffe://ebb.local/admin/ops".into(),
                    reason: "lost".into(),
                }),
            ])
            .unwrap();
        let etcd = cluster.endpoints();
        assert_eq!(
            keys_under(&etcd, &prefix),
            [
                format!("{prefix}schema"),
                format!("{prefix}t/groups/asg-1"),
                format!("{prefix}t/instances/asg-1/i-1"),
                format!("{prefix}t/revoked_identities/spiffe:%2F%2Febb.local%2Fagent%2Fi-9"),
            ]
        );
        let value = on_etcd(&etcd, async |etcd| {
            etcd.range(pb::RangeRequest {
                key: format!("{prefix}t/groups/asg-1").into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap()
            .kvs
            .remove(0)
            .value
        });
        let row: Row = serde_json::from_slice(&value).unwrap();
        assert_eq!(
            row.keys().collect::<Vec<_>>(),
            ["data", "id", "name"],
            "{row:?}"
        );
        assert_eq!(row["name"], "web");
        let data: ScalingGroup = serde_json::from_str(row["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, group("asg-1", "web"));
    }

    #[test]
    fn two_stores_on_one_prefix_share_writes_and_resolve_a_stale_replica() {
        let cluster = shared_cluster();
        let prefix = fresh_prefix();
        let a = open(cluster.endpoints(), &prefix);
        let b = open(cluster.endpoints(), &prefix);

        a.commit(vec![Write::CreateGroup(group("asg-1", "web"))])
            .unwrap();
        b.wait_for_revision(a.revision(), WAIT).unwrap();
        assert_eq!(b.get_group("asg-1").unwrap(), Some(group("asg-1", "web")));

        // B's kept instance listing follows A's writes through the watch.
        assert!(b.list_instances(Some("asg-1")).unwrap().is_empty());
        a.commit(vec![Write::PutInstance(instance("i-1", "asg-1", 5))])
            .unwrap();
        b.wait_for_revision(a.revision(), WAIT).unwrap();
        assert_eq!(
            b.list_instances(Some("asg-1")).unwrap(),
            [instance("i-1", "asg-1", 5)]
        );

        // B's replica is held behind while A changes the group: B's update,
        // planned on the old row, is refused by etcd; B catches up, plans
        // again, and its update lands.
        b.shared.hold.send_replace(true);
        let mut by_a = group("asg-1", "web");
        by_a.desired_capacity = 3;
        a.commit(vec![Write::UpdateGroup(by_a)]).unwrap();
        let mut by_b = group("asg-1", "web");
        by_b.max_size = 9;
        let stale = b.stale_retries();
        std::thread::scope(|s| {
            let update = s.spawn(|| b.commit(vec![Write::UpdateGroup(by_b.clone())]));
            ebb_tests::eventually("B finds its replica behind", WAIT, || {
                (b.stale_retries() > stale).then_some(())
            });
            b.shared.hold.send_replace(false);
            update.join().unwrap().unwrap();
        });
        a.wait_for_revision(b.revision(), WAIT).unwrap();
        assert_eq!(a.get_group("asg-1").unwrap(), Some(by_b.clone()));
        assert_eq!(b.get_group("asg-1").unwrap(), Some(by_b.clone()));

        // A name taken behind B's back is a Conflict once B has caught up,
        // not a second group of that name.
        b.shared.hold.send_replace(true);
        a.commit(vec![Write::CreateGroup(group("asg-2", "api"))])
            .unwrap();
        let stale = b.stale_retries();
        std::thread::scope(|s| {
            let create = s.spawn(|| b.commit(vec![Write::CreateGroup(group("asg-3", "api"))]));
            ebb_tests::eventually("B finds its replica behind", WAIT, || {
                (b.stale_retries() > stale).then_some(())
            });
            b.shared.hold.send_replace(false);
            let err = create.join().unwrap().unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
            assert_eq!(
                err.to_string(),
                "a scaling group named `api` already exists"
            );
        });
        a.wait_for_revision(b.revision(), WAIT).unwrap();
        for store in [&a, &b] {
            let ids: Vec<String> = store
                .list_groups()
                .unwrap()
                .into_iter()
                .map(|g| g.id)
                .collect();
            assert_eq!(ids, ["asg-2", "asg-1"]);
        }
    }

    #[test]
    fn a_lost_fence_refuses_the_commit_and_writes_nothing() {
        let cluster = shared_cluster();
        let prefix = fresh_prefix();
        let leader = open(cluster.endpoints(), &prefix);
        let other = open(cluster.endpoints(), &prefix);
        let etcd = cluster.endpoints();
        let key = format!("{prefix}leader");
        let created = set(&etcd, &key, Some("a"));
        leader.set_fence(Some(Fence {
            key: key.clone().into_bytes(),
            create_revision: created,
        }));
        let refusals = leader.fence_refusals();

        // While the key is the one it was, commits go through.
        leader
            .commit(vec![Write::CreateGroup(group("asg-1", "web"))])
            .unwrap();
        assert_eq!(*refusals.borrow(), 0);

        // Another controller's key now: deleted, and created again.
        set(&etcd, &key, None);
        let again = set(&etcd, &key, Some("b"));
        let mut bigger = group("asg-1", "web");
        bigger.desired_capacity = 5;
        let attempt = vec![
            Write::UpdateGroup(bigger),
            Write::CreateGroup(group("asg-2", "api")),
        ];
        let err = leader.commit(attempt.clone()).unwrap_err();
        assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "this controller no longer leads: its leadership key `{key}` was created again \
                 (revision {again}, its own was {created}); nothing was written"
            )
        );
        assert_eq!(*refusals.borrow(), 1);

        // The key gone altogether.
        let gone = set(&etcd, &key, None);
        let err = leader.commit(attempt).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("its leadership key `{key}` is gone")),
            "{err}"
        );
        assert_eq!(*refusals.borrow(), 2);

        // Nothing it attempted is in etcd, as either store sees it.
        for store in [&leader, &other] {
            store.wait_for_revision(gone, WAIT).unwrap();
            assert_eq!(
                store.get_group("asg-1").unwrap(),
                Some(group("asg-1", "web"))
            );
            assert_eq!(store.get_group("asg-2").unwrap(), None);
        }
        assert_eq!(
            keys_under(&etcd, &format!("{prefix}t/")),
            [format!("{prefix}t/groups/asg-1")]
        );
    }

    /// etcd allows 128 operations in a transaction by default, and a group
    /// keeps up to 1000 activities: deleting and pruning must not depend
    /// on how many it has.
    #[test]
    fn a_group_larger_than_a_transaction_is_pruned_and_deleted() {
        let cluster = shared_cluster();
        let prefix = fresh_prefix();
        let store = open(cluster.endpoints(), &prefix);
        store
            .commit(vec![Write::CreateGroup(group("asg-1", "web"))])
            .unwrap();
        for batch in 0..3 {
            let writes = (0..100)
                .map(|i| {
                    let n = batch * 100 + i;
                    let mut a = activity(&format!("act-{n:03}"), "asg-1", n);
                    a.status = ActivityStatus::Successful;
                    Write::PutActivity(a)
                })
                .collect();
            store.commit(writes).unwrap();
        }
        let writes = (0..100)
            .map(|i| Write::PutInstance(instance(&format!("i-{i:03}"), "asg-1", i)))
            .collect();
        store.commit(writes).unwrap();
        assert_eq!(store.list_activities(None, 1000).unwrap().len(), 300);

        assert_eq!(store.prune_activities("asg-1", 10, 0).unwrap(), 290);
        let etcd = cluster.endpoints();
        let kept = keys_under(&etcd, &format!("{prefix}t/activities/"));
        assert_eq!(kept.len(), 10);
        assert_eq!(kept[0], format!("{prefix}t/activities/asg-1/act-290"));
        assert_eq!(store.list_activities(None, 1000).unwrap().len(), 10);

        store
            .commit(vec![Write::DeleteGroup("asg-1".into())])
            .unwrap();
        assert_eq!(
            keys_under(&etcd, &format!("{prefix}t/")),
            Vec::<String>::new()
        );
        assert!(store.list_instances(None).unwrap().is_empty());
        assert!(store.list_activities(None, 1000).unwrap().is_empty());
    }

    #[test]
    fn opening_fails_clearly() {
        let cluster = shared_cluster();

        let err = EtcdStore::open(&settings(vec!["http://127.0.0.1:9".into()]), "/ebb/")
            .err()
            .expect("nothing listens there");
        let message = err.to_string();
        assert!(
            message.starts_with(
                "store: etcd at http://127.0.0.1:9 (prefix `/ebb/`): etcd: etcd is unavailable"
            ),
            "{message}"
        );

        let err = EtcdStore::open(&settings(cluster.endpoints()), "")
            .err()
            .expect("an empty prefix");
        assert_eq!(
            err.to_string(),
            "store: the etcd key prefix is empty: give one such as `/ebb/`"
        );

        let prefix = fresh_prefix();
        set(
            &cluster.endpoints(),
            &format!("{prefix}schema"),
            Some("999"),
        );
        let err = EtcdStore::open(&settings(cluster.endpoints()), &prefix)
            .err()
            .expect("a newer schema");
        assert!(
            err.to_string().ends_with(&format!(
                "(prefix `{prefix}`): this prefix was written by a newer ebb (schema 999, \
                 this build knows {}); run that version of ebb, or give this one another prefix",
                sqlite::SCHEMA_VERSION
            )),
            "{err}"
        );
    }

    /// A prefix written at schema 8 (before the rollups' table) is brought
    /// to this build's schema by recording the version: its rows read as
    /// before and rollups go under the group. One older than 8 is refused.
    #[test]
    fn a_prefix_at_schema_8_is_brought_up_and_an_older_one_refused() {
        use ebb_core::rules::predict::MinuteRollup;
        let cluster = shared_cluster();
        let etcd = cluster.endpoints();
        let prefix = fresh_prefix();
        {
            let store = open(etcd.clone(), &prefix);
            store
                .commit(vec![Write::CreateGroup(group("asg-1", "web"))])
                .unwrap();
        }
        set(&etcd, &format!("{prefix}schema"), Some("8"));
        let store = open(etcd.clone(), &prefix);
        let schema = on_etcd(&etcd, async |e| {
            e.range(pb::RangeRequest {
                key: format!("{prefix}schema").into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap()
            .kvs[0]
                .value
                .clone()
        });
        assert_eq!(
            String::from_utf8(schema).unwrap(),
            sqlite::SCHEMA_VERSION.to_string()
        );
        assert_eq!(store.get_group("asg-1").unwrap().unwrap().name, "web");
        let rollup = MinuteRollup {
            group_id: "asg-1".into(),
            minute_ms: 60_000,
            in_service: 1,
            metrics: vec![],
        };
        store
            .commit(vec![Write::PutRollup(rollup.clone())])
            .unwrap();
        assert_eq!(store.list_rollups("asg-1", 0).unwrap(), [rollup]);
        assert!(
            keys_under(&etcd, &prefix).contains(&format!("{prefix}t/rollups/asg-1/asg-1@60000"))
        );

        let old = fresh_prefix();
        set(&etcd, &format!("{old}schema"), Some("7"));
        let err = EtcdStore::open(&settings(etcd), &old)
            .err()
            .expect("an older schema");
        assert!(
            err.to_string()
                .contains("this prefix was written at schema 7"),
            "{err}"
        );
    }

    /// A three-member cluster loses members: commits go on with two of
    /// three; without quorum they fail within their bound while reads go on
    /// from the replica, even with etcd entirely down; and a watch that
    /// comes back after etcd compacted its history loads the replica again.
    #[test]
    fn member_loss_quorum_loss_and_compaction() {
        if let Some(why) = ebb_tests::etcd::missing() {
            panic!("{why}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = EtcdCluster::start(dir.path(), 3).unwrap();
        let prefix = fresh_prefix();
        let a = open(cluster.endpoints(), &prefix);
        let mut rotated = cluster.endpoints();
        rotated.rotate_left(1);
        let b = open(rotated, &prefix);
        a.commit(vec![Write::CreateGroup(group("asg-1", "g1"))])
            .unwrap();

        // A's watch holds a change while its member dies and etcd compacts
        // past it: A's next watch finds the history gone and reloads.
        a.shared.hold.send_replace(true);
        b.commit(vec![Write::CreateGroup(group("asg-2", "g2"))])
            .unwrap();
        ebb_tests::eventually("A's watch holds the change", WAIT, || {
            (a.shared.holding.load(Ordering::Relaxed) > 0).then_some(())
        });
        let watched = lock(&a.shared.watching).clone();
        let first = cluster
            .endpoints()
            .iter()
            .position(|e| *e == watched)
            .expect("A watches a member");
        let (second, third) = ((first + 1) % 3, (first + 2) % 3);
        cluster.kill(first);
        b.commit(vec![Write::CreateGroup(group("asg-3", "g3"))])
            .unwrap();
        let mut g3 = group("asg-3", "g3");
        g3.desired_capacity = 4;
        b.commit(vec![Write::UpdateGroup(g3)]).unwrap();
        // Past the revision after A's held change: A cannot follow on.
        let compact_at = b.revision().to_string();
        let etcdctl = |endpoint: &str, args: &[&str]| {
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", endpoint, "--command-timeout=10s"])
                .args(args)
                .output()
                .expect("etcdctl (Debian's etcd-client)")
        };
        let live = [
            cluster.endpoints()[second].clone(),
            cluster.endpoints()[third].clone(),
        ];
        let out = etcdctl(&live[0], &["compact", &compact_at]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Each member applies the compaction in its own time.
        for endpoint in &live {
            ebb_tests::eventually("the member has compacted", WAIT, || {
                let out = etcdctl(endpoint, &["get", "--rev=1", "x"]);
                String::from_utf8_lossy(&out.stderr)
                    .contains("compacted")
                    .then_some(())
            });
        }
        a.shared.hold.send_replace(false);
        a.wait_for_revision(b.revision(), WAIT).unwrap();
        let names = |s: &EtcdStore| -> Vec<String> {
            s.list_groups()
                .unwrap()
                .into_iter()
                .map(|g| g.name)
                .collect()
        };
        assert_eq!(names(&a), ["g1", "g2", "g3"]);
        assert_eq!(
            a.shared.loads.load(Ordering::Relaxed),
            2,
            "opened, then reloaded"
        );

        // One member of three down: A's client moves on.
        a.commit(vec![Write::CreateGroup(group("asg-4", "g4"))])
            .unwrap();

        // Two down: no quorum. The commit fails within its bound, saying so.
        cluster.kill(second);
        let started = Instant::now();
        let err = a
            .commit(vec![Write::CreateGroup(group("asg-5", "g5"))])
            .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("store: etcd: etcd is unavailable: "),
            "{message}"
        );
        assert!(
            message.ends_with("; the commit may or may not have been applied"),
            "{message}"
        );
        assert!(took < COMMIT_TIMEOUT + Duration::from_secs(20), "{took:?}");
        eprintln!("a commit without quorum failed after {took:?}: {err}");
        assert_eq!(names(&a), ["g1", "g2", "g3", "g4"]);

        // All down: reads go on from the replica.
        cluster.kill(third);
        assert_eq!(names(&a), ["g1", "g2", "g3", "g4"]);
        assert_eq!(a.get_group("asg-4").unwrap().unwrap().name, "g4");

        // Quorum back: commits work again, and both stores agree.
        cluster.restart(first).unwrap();
        cluster.restart(second).unwrap();
        ebb_tests::eventually(
            "a commit once quorum is back",
            Duration::from_secs(90),
            || {
                // A commit whose answer was lost may have landed all the same.
                match a.commit(vec![Write::CreateGroup(group("asg-6", "g6"))]) {
                    Ok(()) => Some(()),
                    Err(_) => a.get_group("asg-6").unwrap().map(drop),
                }
            },
        );
        b.wait_for_revision(a.revision(), WAIT).unwrap();
        assert_eq!(names(&b), ["g1", "g2", "g3", "g4", "g6"]);
        assert_eq!(names(&a), names(&b));
    }

    /// A value written by hand that is no row stops the replica (which
    /// keeps what it had, and says why) until it is fixed or deleted.
    #[test]
    fn an_unreadable_value_stops_the_replica_until_it_goes() {
        let cluster = shared_cluster();
        let prefix = fresh_prefix();
        let store = open(cluster.endpoints(), &prefix);
        store
            .commit(vec![Write::CreateGroup(group("asg-1", "web"))])
            .unwrap();
        let key = format!("{prefix}t/groups/asg-2");
        set(&cluster.endpoints(), &key, Some("{\"id\": "));
        let why =
            ebb_tests::eventually("the watch reports the value", WAIT, || store.watch_error());
        assert!(
            why.starts_with(&format!("store: corrupt record {key}: ")),
            "{why}"
        );
        assert_eq!(store.list_groups().unwrap(), [group("asg-1", "web")]);

        let deleted = set(&cluster.endpoints(), &key, None);
        store.wait_for_revision(deleted, WAIT).unwrap();
        assert_eq!(store.watch_error(), None);
        store
            .commit(vec![Write::CreateGroup(group("asg-3", "api"))])
            .unwrap();
        let ids: Vec<String> = store
            .list_groups()
            .unwrap()
            .into_iter()
            .map(|g| g.id)
            .collect();
        assert_eq!(ids, ["asg-3", "asg-1"]);
    }

    /// etcd refuses a transaction of more than `--max-txn-ops` operations
    /// (128 by default): the refusal says which setting to raise.
    #[test]
    fn a_commit_beyond_max_txn_ops_names_the_setting() {
        let cluster = shared_cluster();
        let store = open(cluster.endpoints(), &fresh_prefix());
        store
            .commit(vec![Write::CreateGroup(group("asg-1", "web"))])
            .unwrap();
        let writes = (0..130)
            .map(|i| Write::PutInstance(instance(&format!("i-{i:03}"), "asg-1", i)))
            .collect();
        let err = store.commit(writes).unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        assert!(
            err.to_string().starts_with(
                "store: etcd: this commit is 131 operations, more than etcd's --max-txn-ops allows"
            ),
            "{err}"
        );
        assert!(store.list_instances(None).unwrap().is_empty());
    }

    /// A member cut off from the others (here: both others stopped) ends
    /// the watch rather than leave the replica silently behind; the store
    /// says so, and follows on once the cluster is whole again.
    #[test]
    fn a_watch_on_a_member_without_a_leader_ends_and_resumes() {
        if let Some(why) = ebb_tests::etcd::missing() {
            panic!("{why}");
        }
        let dir = tempfile::tempdir().unwrap();
        let cluster = EtcdCluster::start(dir.path(), 3).unwrap();
        let prefix = fresh_prefix();
        let store = open(cluster.endpoints(), &prefix);
        store
            .commit(vec![Write::CreateGroup(group("asg-1", "web"))])
            .unwrap();
        let watched = lock(&store.shared.watching).clone();
        let others: Vec<u32> = cluster
            .members
            .iter()
            .zip(cluster.endpoints())
            .filter(|(_, endpoint)| *endpoint != watched)
            .filter_map(|(m, _)| m.pid())
            .collect();
        let signal = |sig: &str| {
            for pid in &others {
                let status = Command::new("kill")
                    .args([format!("-{sig}"), pid.to_string()])
                    .status()
                    .expect("kill(1)");
                assert!(status.success());
            }
        };
        signal("STOP");
        let why = ebb_tests::eventually("the watch ends", Duration::from_secs(60), || {
            store.watch_error()
        });
        signal("CONT");
        assert!(why.contains("no leader"), "{why}");
        assert_eq!(store.list_groups().unwrap(), [group("asg-1", "web")]);
        ebb_tests::eventually(
            "a commit once the cluster is whole",
            Duration::from_secs(90),
            || match store.commit(vec![Write::CreateGroup(group("asg-2", "api"))]) {
                Ok(()) => Some(()),
                Err(_) => store.get_group("asg-2").unwrap().map(drop),
            },
        );
        assert_eq!(store.watch_error(), None);
    }
}
