//! SQLite backend: one file in the data dir, WAL journal, one connection
//! behind a mutex. Each record is stored whole as JSON in `data`; the other
//! columns are copies of its keys, there for lookups, uniqueness, cascades
//! and ordering.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    ActivityQuery, CertKind, CertRecord, ClientToken, Delivery, DeliveryCount, DeliveryState,
    Detached, JoinScope, JoinToken, Result, Revoked, Store, StoreError, Write,
};
use ebb_core::model::tasks::{AlarmTask, ScheduledTask};
use ebb_core::model::{Activity, ActivityStatus, Instance, ScalingConfiguration, ScalingGroup};
use ebb_core::rules::ScalingRule;
use ebb_core::rules::predict::MinuteRollup;

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one migration per version; the database records the versions
/// applied in `schema_version`. Append only: never edit a shipped migration.
const MIGRATIONS: &[&str] = &[
    // 1: groups, configurations, instances, activities.
    "CREATE TABLE groups (
         id   TEXT PRIMARY KEY NOT NULL,
         name TEXT NOT NULL UNIQUE,
         data TEXT NOT NULL
     );
     CREATE TABLE configurations (
         id            TEXT PRIMARY KEY NOT NULL,
         group_id      TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
         name          TEXT NOT NULL,
         data          TEXT NOT NULL,
         created_at_ms INTEGER NOT NULL,
         UNIQUE (group_id, name)
     );
     CREATE INDEX configurations_by_group ON configurations(group_id, created_at_ms, id);
     CREATE TABLE instances (
         id            TEXT PRIMARY KEY NOT NULL,
         group_id      TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
         data          TEXT NOT NULL,
         created_at_ms INTEGER NOT NULL
     );
     CREATE INDEX instances_by_group ON instances(group_id, created_at_ms, id);
     CREATE TABLE activities (
         id            TEXT PRIMARY KEY NOT NULL,
         group_id      TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
         data          TEXT NOT NULL,
         started_at_ms INTEGER NOT NULL
     );
     CREATE INDEX activities_by_group ON activities(group_id, started_at_ms, id);
     -- Activities accumulate; listing the newest across groups should not scan them all.
     CREATE INDEX activities_by_time ON activities(started_at_ms, id);",
    // 2: scaling rules, alarm tasks, scheduled tasks; each named uniquely in its group.
    "CREATE TABLE rules (
         id       TEXT PRIMARY KEY NOT NULL,
         group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
         name     TEXT NOT NULL,
         data     TEXT NOT NULL,
         UNIQUE (group_id, name)
     );
     CREATE TABLE alarms (
         id       TEXT PRIMARY KEY NOT NULL,
         group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
         name     TEXT NOT NULL,
         data     TEXT NOT NULL,
         UNIQUE (group_id, name)
     );
     CREATE TABLE tasks (
         id       TEXT PRIMARY KEY NOT NULL,
         group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
         name     TEXT NOT NULL,
         data     TEXT NOT NULL,
         UNIQUE (group_id, name)
     );",
    // 3: instances DetachInstances took out of their group, which ebb must
    // never release. No reference to the group: they outlive it.
    "CREATE TABLE detached_instances (
         id             TEXT PRIMARY KEY NOT NULL,
         group_id       TEXT NOT NULL,
         detached_at_ms INTEGER NOT NULL
     );",
    // 4: an activity's status as a column, so that listings filter before
    // they limit and the running activity is found however many finished
    // after it started.
    "ALTER TABLE activities ADD COLUMN status TEXT NOT NULL DEFAULT '';
     UPDATE activities SET status = json_extract(data, '$.status');
     CREATE INDEX activities_by_group_status ON activities(group_id, status, started_at_ms, id);
     CREATE INDEX activities_by_status ON activities(status, started_at_ms, id);",
    // 5: the deny-list of identities (`ebbctl cert revoke`).
    "CREATE TABLE revoked_identities (
         identity      TEXT PRIMARY KEY NOT NULL,
         revoked_at_ms INTEGER NOT NULL,
         revoked_by    TEXT NOT NULL,
         reason        TEXT NOT NULL
     );",
    // 6: the certificates the controller issued, live ones only (a put
    // forgets its identity's expired ones).
    "CREATE TABLE certificates (
         serial        TEXT PRIMARY KEY NOT NULL,
         identity      TEXT NOT NULL,
         kind          TEXT NOT NULL,
         not_before_ms INTEGER NOT NULL,
         not_after_ms  INTEGER NOT NULL,
         issued_at_ms  INTEGER NOT NULL
     );
     CREATE INDEX certificates_by_identity ON certificates(identity, not_after_ms);",
    // 7: join tokens, the secret kept only as its SHA-256; a group's go with it.
    "CREATE TABLE join_tokens (
         id            TEXT PRIMARY KEY NOT NULL,
         group_id      TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
         secret_sha256 TEXT NOT NULL,
         created_at_ms INTEGER NOT NULL,
         expires_at_ms INTEGER NOT NULL,
         uses_left     INTEGER NOT NULL,
         created_by    TEXT NOT NULL,
         revoked       INTEGER NOT NULL
     );",
    // 8: join tokens for targets: a token names a group or a target.
    "CREATE TABLE join_tokens_v8 (
         id            TEXT PRIMARY KEY NOT NULL,
         group_id      TEXT REFERENCES groups(id) ON DELETE CASCADE,
         target        TEXT,
         secret_sha256 TEXT NOT NULL,
         created_at_ms INTEGER NOT NULL,
         expires_at_ms INTEGER NOT NULL,
         uses_left     INTEGER NOT NULL,
         created_by    TEXT NOT NULL,
         revoked       INTEGER NOT NULL,
         CHECK ((group_id IS NULL) <> (target IS NULL))
     );
     INSERT INTO join_tokens_v8 (id, group_id, target, secret_sha256, created_at_ms,
         expires_at_ms, uses_left, created_by, revoked)
     SELECT id, group_id, NULL, secret_sha256, created_at_ms, expires_at_ms, uses_left,
         created_by, revoked FROM join_tokens;
     DROP TABLE join_tokens;
     ALTER TABLE join_tokens_v8 RENAME TO join_tokens;",
    // 9: each group's per-minute metric rollups (predictive scaling's
    // history), one row per group and minute, every metric in `data`.
    "CREATE TABLE rollups (
         id        TEXT PRIMARY KEY NOT NULL,
         group_id  TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
         minute_ms INTEGER NOT NULL,
         data      TEXT NOT NULL
     );
     CREATE INDEX rollups_by_group ON rollups(group_id, minute_ms);
     CREATE INDEX rollups_by_time ON rollups(minute_ms);",
    // 10: the webhook outbox. No reference to the group: a deleted group's
    // last notifications still go out.
    "CREATE TABLE deliveries (
         id       TEXT PRIMARY KEY NOT NULL,
         group_id TEXT NOT NULL,
         url      TEXT NOT NULL,
         state    TEXT NOT NULL,
         due_ms   INTEGER NOT NULL,
         data     TEXT NOT NULL
     );
     CREATE INDEX deliveries_by_due ON deliveries(state, due_ms, id);",
    // 11: admin calls' client tokens and their answers, kept a day.
    "CREATE TABLE client_tokens (
         token         TEXT PRIMARY KEY NOT NULL,
         method        TEXT NOT NULL,
         fingerprint   TEXT NOT NULL,
         response_hex  TEXT NOT NULL,
         created_at_ms INTEGER NOT NULL
     );
     CREATE INDEX client_tokens_by_time ON client_tokens(created_at_ms);",
];

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The reconcile and alarm loops list every group's instances and every
    /// alarm (each with its history) several times a second; at 10,000
    /// instances, decoding the same JSON again and again was most of their
    /// cost. These keep listings between the commits that change them.
    instances: Listings<Instance>,
    alarms: Listings<AlarmTask>,
}

/// Listings as last read, by group (`None` is all). Filled and emptied only
/// while the connection is held, so a listing is never older than the last
/// commit: a commit that may change them empties them first, whether or not
/// it succeeds. This holds for one store per database file, which the
/// controller's lock on its data dir ensures.
struct Listings<T> {
    by_group: Mutex<HashMap<Option<String>, Vec<T>>>,
    /// Whether a write may change these listings.
    touched_by: fn(&Write) -> bool,
}

impl<T: Clone + DeserializeOwned> Listings<T> {
    fn new(touched_by: fn(&Write) -> bool) -> Self {
        Self {
            by_group: Mutex::new(HashMap::new()),
            touched_by,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Option<String>, Vec<T>>> {
        self.by_group.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called with the connection held, before the commit's writes.
    fn commit(&self, writes: &[Write]) {
        if writes.iter().any(self.touched_by) {
            self.map().clear();
        }
    }

    /// The listing for `group_id`, read with `read` on `conn` (held by the
    /// caller) unless kept.
    fn list(
        &self,
        conn: &Connection,
        group_id: Option<&str>,
        read: impl FnOnce(&Connection) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let key = group_id.map(str::to_owned);
        if let Some(hit) = self.map().get(&key) {
            return Ok(hit.clone());
        }
        let listed = read(conn)?;
        self.map().insert(key, listed.clone());
        Ok(listed)
    }
}

impl SqliteStore {
    /// Opens (creating if absent) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(|e| at(&shown, e))?;
        let store = Self::setup(conn, &shown)?;
        tracing::info!(path = %shown, schema = SCHEMA_VERSION, "store opened");
        Ok(store)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        Self::setup(conn, ":memory:")
    }

    fn setup(mut conn: Connection, shown: &str) -> Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| at(shown, e))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|e| at(shown, e))?;
        // Refuse a newer database before anything below can write to it
        // (switching to WAL rewrites the file header).
        check_not_newer(&conn, shown)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| at(shown, e))?;
        if mode != "wal" && mode != "memory" {
            // Still correct, only slower and with readers blocking writers;
            // happens on filesystems without shared memory (some network mounts).
            tracing::warn!(db = shown, mode, "SQLite refused WAL journal mode");
        }
        // NORMAL is durable in WAL mode except for the last commits on power loss.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| at(shown, e))?;
        migrate(&mut conn, shown)?;
        Ok(Self {
            conn: Mutex::new(conn),
            instances: Listings::new(|w| {
                matches!(
                    w,
                    Write::PutInstance(_) | Write::DeleteInstance(_) | Write::DeleteGroup(_)
                )
            }),
            alarms: Listings::new(|w| {
                matches!(
                    w,
                    Write::PutAlarm(_) | Write::DeleteAlarm(_) | Write::DeleteGroup(_)
                )
            }),
        })
    }

    /// The connection; the etcd store plans its commits and applies its
    /// watch on it (a replica with this schema).
    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done write behind: an
        // open transaction rolls back when dropped. So the connection is fine.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Empties the kept listings, for a change made on the connection
    /// (held by the caller) other than through [`Store::commit`].
    pub(super) fn forget_listings(&self) {
        self.instances.map().clear();
        self.alarms.map().clear();
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A failure while opening, naming the database.
fn at(shown: &str, e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("{shown}: {e}"))
}

/// The highest schema version recorded, 0 for a database without one.
fn recorded_version(conn: &Connection) -> rusqlite::Result<i64> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )
}

fn check_not_newer(conn: &Connection, shown: &str) -> Result<()> {
    let found = recorded_version(conn).map_err(|e| at(shown, e))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "{shown} was written by a newer ebb (schema {found}, this build knows {SCHEMA_VERSION}); \
             run that version of ebb, or restore a backup made by this one"
        )));
    }
    Ok(())
}

fn migrate(conn: &mut Connection, shown: &str) -> Result<()> {
    // IMMEDIATE: two controllers starting on one file take turns rather than
    // both applying the same migration.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| at(shown, e))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version       INTEGER PRIMARY KEY NOT NULL,
             applied_at_ms INTEGER NOT NULL
         );",
    )
    .map_err(|e| at(shown, e))?;
    check_not_newer(&tx, shown)?;
    let found = recorded_version(&tx).map_err(|e| at(shown, e))?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    for (version, sql) in (1..).zip(MIGRATIONS) {
        if version <= found {
            continue;
        }
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Backend(format!("migrating {shown} to schema {version}: {e}"))
        })?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at_ms) VALUES (?1, ?2)",
            params![version, now_ms],
        )
        .map_err(|e| at(shown, e))?;
        tracing::info!(db = shown, version, "applied schema migration");
    }
    tx.commit().map_err(|e| at(shown, e))
}

/// Which uniqueness or reference rule a failed statement broke.
enum Broken {
    Unique,
    ForeignKey,
}

fn broken(e: &rusqlite::Error) -> Option<Broken> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            match f.extended_code {
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => Some(Broken::Unique),
                rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Some(Broken::ForeignKey),
                _ => None,
            }
        }
        _ => None,
    }
}

fn to_json<T: Serialize>(record: &T) -> Result<String> {
    serde_json::to_string(record)
        .map_err(|e| StoreError::Backend(format!("encoding a record: {e}")))
}

fn from_json<T: DeserializeOwned>(table: &str, id: &str, data: &str) -> Result<T> {
    serde_json::from_str(data).map_err(|e| StoreError::Corrupt {
        key: format!("{table}/{id}"),
        message: e.to_string(),
    })
}

fn no_group(group_id: &str) -> StoreError {
    StoreError::NotFound(format!("scaling group {group_id} does not exist"))
}

fn group_name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!("a scaling group named `{name}` already exists"))
}

/// Applies one write inside `tx`; its errors are the store's Conflict and
/// NotFound for what the write breaks.
pub(super) fn apply(tx: &Transaction<'_>, write: &Write) -> Result<()> {
    match write {
        Write::CreateGroup(g) => {
            let result = tx.execute(
                "INSERT INTO groups (id, name, data) VALUES (?1, ?2, ?3)",
                params![g.id, g.name, to_json(g)?],
            );
            match result {
                Ok(_) => Ok(()),
                Err(e) if matches!(broken(&e), Some(Broken::Unique)) => {
                    let id_taken: bool = tx
                        .query_row(
                            "SELECT EXISTS (SELECT 1 FROM groups WHERE id = ?1)",
                            [&g.id],
                            |row| row.get(0),
                        )
                        .map_err(backend)?;
                    Err(if id_taken {
                        StoreError::Conflict(format!("scaling group {} already exists", g.id))
                    } else {
                        group_name_taken(&g.name)
                    })
                }
                Err(e) => Err(backend(e)),
            }
        }
        Write::UpdateGroup(g) => {
            let result = tx.execute(
                "UPDATE groups SET name = ?2, data = ?3 WHERE id = ?1",
                params![g.id, g.name, to_json(g)?],
            );
            match result {
                Ok(0) => Err(no_group(&g.id)),
                Ok(_) => Ok(()),
                Err(e) if matches!(broken(&e), Some(Broken::Unique)) => {
                    Err(group_name_taken(&g.name))
                }
                Err(e) => Err(backend(e)),
            }
        }
        Write::DeleteGroup(id) => delete(tx, "groups", id),
        Write::PutConfiguration(c) => {
            let result = tx.execute(
                "INSERT INTO configurations (id, group_id, name, data, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET group_id = excluded.group_id, name = excluded.name,
                     data = excluded.data, created_at_ms = excluded.created_at_ms",
                params![c.id, c.group_id, c.name, to_json(c)?, c.created_at_ms],
            );
            match result {
                Ok(_) => Ok(()),
                Err(e) => Err(match broken(&e) {
                    Some(Broken::Unique) => StoreError::Conflict(format!(
                        "scaling configuration `{}` already exists in group {}",
                        c.name, c.group_id
                    )),
                    Some(Broken::ForeignKey) => no_group(&c.group_id),
                    None => backend(e),
                }),
            }
        }
        Write::DeleteConfiguration(id) => delete(tx, "configurations", id),
        Write::PutInstance(i) => {
            let result = tx.execute(
                "INSERT INTO instances (id, group_id, data, created_at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET group_id = excluded.group_id, data = excluded.data,
                     created_at_ms = excluded.created_at_ms",
                params![i.id, i.group_id, to_json(i)?, i.created_at_ms],
            );
            put_result(result, &i.group_id)
        }
        Write::DeleteInstance(id) => delete(tx, "instances", id),
        Write::PutActivity(a) => {
            let result = tx.execute(
                "INSERT INTO activities (id, group_id, data, started_at_ms, status)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET group_id = excluded.group_id, data = excluded.data,
                     started_at_ms = excluded.started_at_ms, status = excluded.status",
                params![
                    a.id,
                    a.group_id,
                    to_json(a)?,
                    a.started_at_ms,
                    a.status.as_str()
                ],
            );
            put_result(result, &a.group_id)
        }
        Write::PutRule(r) => put_named(
            tx,
            "rules",
            "scaling rule",
            &r.id,
            &r.group_id,
            &r.name,
            to_json(r)?,
        ),
        Write::DeleteRule(id) => delete(tx, "rules", id),
        Write::PutAlarm(a) => put_named(
            tx,
            "alarms",
            "alarm",
            &a.id,
            &a.group_id,
            &a.name,
            to_json(a)?,
        ),
        Write::DeleteAlarm(id) => delete(tx, "alarms", id),
        Write::PutTask(t) => put_named(
            tx,
            "tasks",
            "scheduled task",
            &t.id,
            &t.group_id,
            &t.name,
            to_json(t)?,
        ),
        Write::DeleteTask(id) => delete(tx, "tasks", id),
        Write::PutDetached(d) => tx
            .execute(
                "INSERT INTO detached_instances (id, group_id, detached_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET group_id = excluded.group_id,
                     detached_at_ms = excluded.detached_at_ms",
                params![d.instance_id, d.group_id, d.detached_at_ms],
            )
            .map(drop)
            .map_err(backend),
        Write::PutRevoked(r) => tx
            .execute(
                "INSERT INTO revoked_identities (identity, revoked_at_ms, revoked_by, reason)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (identity) DO NOTHING",
                params![r.identity, r.revoked_at_ms, r.revoked_by, r.reason],
            )
            .map(drop)
            .map_err(backend),
        Write::PutCertificate(c) => {
            tx.execute(
                &format!("DELETE FROM certificates WHERE {FORGOTTEN_CERTIFICATES}"),
                forgotten_params(c),
            )
            .map_err(backend)?;
            tx.execute(
                "INSERT INTO certificates (serial, identity, kind, not_before_ms, not_after_ms, issued_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (serial) DO UPDATE SET identity = excluded.identity, kind = excluded.kind,
                     not_before_ms = excluded.not_before_ms, not_after_ms = excluded.not_after_ms,
                     issued_at_ms = excluded.issued_at_ms",
                params![
                    c.serial,
                    c.identity,
                    c.kind.as_str(),
                    c.not_before_ms,
                    c.not_after_ms,
                    c.issued_at_ms
                ],
            )
            .map(drop)
            .map_err(backend)
        }
        Write::PutRollup(r) => put_result(
            tx.execute(
                "INSERT INTO rollups (id, group_id, minute_ms, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                params![r.id(), r.group_id, r.minute_ms, to_json(r)?],
            ),
            &r.group_id,
        ),
        Write::PutJoinToken(t) => {
            let (group_id, target) = match &t.scope {
                JoinScope::Group(g) => (Some(g.as_str()), None),
                JoinScope::Target(n) => (None, Some(n.as_str())),
            };
            let result = tx.execute(
                "INSERT INTO join_tokens (id, group_id, target, secret_sha256, created_at_ms,
                     expires_at_ms, uses_left, created_by, revoked)
                 VALUES (?1, ?2, ?9, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET group_id = excluded.group_id,
                     target = excluded.target,
                     secret_sha256 = excluded.secret_sha256, created_at_ms = excluded.created_at_ms,
                     expires_at_ms = excluded.expires_at_ms, uses_left = excluded.uses_left,
                     created_by = excluded.created_by, revoked = excluded.revoked",
                params![
                    t.id,
                    group_id,
                    t.secret_sha256,
                    t.created_at_ms,
                    t.expires_at_ms,
                    t.uses_left,
                    t.created_by,
                    t.revoked,
                    target
                ],
            );
            put_result(result, group_id.unwrap_or_default())
        }
        Write::DeleteJoinToken(id) => delete(tx, "join_tokens", id),
        Write::DeleteDelivery(id) => delete(tx, "deliveries", id),
        Write::PutClientToken(t) => tx
            .execute(
                "INSERT INTO client_tokens (token, method, fingerprint, response_hex, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (token) DO UPDATE SET method = excluded.method,
                     fingerprint = excluded.fingerprint, response_hex = excluded.response_hex,
                     created_at_ms = excluded.created_at_ms",
                params![
                    t.token,
                    t.method,
                    t.fingerprint,
                    t.response_hex,
                    t.created_at_ms
                ],
            )
            .map(drop)
            .map_err(backend),
        Write::EnqueueDelivery(d) | Write::PutDelivery(d) => {
            let on_conflict = if matches!(write, Write::EnqueueDelivery(_)) {
                "DO NOTHING"
            } else {
                "DO UPDATE SET group_id = excluded.group_id, url = excluded.url,
                     state = excluded.state, due_ms = excluded.due_ms, data = excluded.data"
            };
            tx.execute(
                &format!(
                    "INSERT INTO deliveries (id, group_id, url, state, due_ms, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) {on_conflict}"
                ),
                params![
                    d.id,
                    d.group_id,
                    d.url,
                    d.state.as_str(),
                    d.due_ms,
                    to_json(d)?
                ],
            )
            .map(drop)
            .map_err(backend)
        }
    }
}

/// The tokens [`Store::prune_client_tokens`] deletes.
pub(super) fn prunable_client_tokens(conn: &Connection, before_ms: i64) -> Result<Vec<String>> {
    keys(
        conn,
        "SELECT token FROM client_tokens WHERE created_at_ms < ?1",
        [before_ms],
    )
}

/// The deliveries [`Store::prune_deliveries`] deletes (parameters: state, before).
const PRUNABLE_DELIVERIES: &str = "state = ?1 AND due_ms < ?2";

/// The ids of the deliveries [`Store::prune_deliveries`] deletes.
pub(super) fn prunable_deliveries(
    conn: &Connection,
    state: DeliveryState,
    before_ms: i64,
) -> Result<Vec<String>> {
    keys(
        conn,
        &format!("SELECT id FROM deliveries WHERE {PRUNABLE_DELIVERIES}"),
        params![state.as_str(), before_ms],
    )
}

/// The certificates a put of `c` forgets (parameters: [`forgotten_params`]).
const FORGOTTEN_CERTIFICATES: &str = "(identity = ?1 AND not_after_ms < ?2) OR not_after_ms < ?3";

fn forgotten_params(c: &CertRecord) -> (&str, i64, i64) {
    (
        &c.identity,
        c.issued_at_ms,
        c.issued_at_ms - super::CERT_RETENTION_MS,
    )
}

/// The serials of the certificates a put of `c` forgets.
pub(super) fn forgotten_certificates(conn: &Connection, c: &CertRecord) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT serial FROM certificates WHERE {FORGOTTEN_CERTIFICATES}"
        ))
        .map_err(backend)?;
    let rows = stmt
        .query_map(forgotten_params(c), |row| row.get(0))
        .map_err(backend)?;
    rows.collect::<rusqlite::Result<_>>().map_err(backend)
}

/// Which of a group's activities [`Store::prune_activities`] deletes
/// (parameters: group id, `before_ms`, `keep`).
fn prunable_filter() -> String {
    let newest = |status: ActivityStatus| {
        format!(
            "SELECT id FROM activities WHERE group_id = ?1 AND status = '{}'
             ORDER BY started_at_ms DESC, id DESC LIMIT 1",
            status.as_str()
        )
    };
    format!(
        "group_id = ?1 AND status != '{in_progress}'
           AND id NOT IN ({successful}) AND id NOT IN ({warning})
           AND (started_at_ms < ?2 OR id NOT IN (
               SELECT id FROM activities WHERE group_id = ?1
               ORDER BY started_at_ms DESC, id DESC LIMIT ?3))",
        in_progress = ActivityStatus::InProgress.as_str(),
        successful = newest(ActivityStatus::Successful),
        warning = newest(ActivityStatus::Warning),
    )
}

/// The ids of the activities [`Store::prune_activities`] would delete.
pub(super) fn prunable(
    conn: &Connection,
    group_id: &str,
    keep: usize,
    before_ms: i64,
) -> Result<Vec<String>> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT id FROM activities WHERE {}",
            prunable_filter()
        ))
        .map_err(backend)?;
    let rows = stmt
        .query_map(rusqlite::params![group_id, before_ms, keep], |row| {
            row.get(0)
        })
        .map_err(backend)?;
    rows.collect::<rusqlite::Result<_>>().map_err(backend)
}

const DETACHED_COLUMNS: &str = "id, group_id, detached_at_ms";

fn detached_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Detached> {
    Ok(Detached {
        instance_id: row.get(0)?,
        group_id: row.get(1)?,
        detached_at_ms: row.get(2)?,
    })
}

const JOIN_TOKEN_COLUMNS: &str = "id, group_id, secret_sha256, created_at_ms, expires_at_ms, uses_left, created_by, revoked, target";

fn join_token_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JoinToken> {
    let group: Option<String> = row.get(1)?;
    let target: Option<String> = row.get(8)?;
    Ok(JoinToken {
        id: row.get(0)?,
        // The table's CHECK keeps exactly one of the two.
        scope: match (group, target) {
            (Some(g), _) => JoinScope::Group(g),
            (None, t) => JoinScope::Target(t.unwrap_or_default()),
        },
        secret_sha256: row.get(2)?,
        created_at_ms: row.get(3)?,
        expires_at_ms: row.get(4)?,
        uses_left: row.get(5)?,
        created_by: row.get(6)?,
        revoked: row.get(7)?,
    })
}

/// Upserts a record named uniquely within its group.
fn put_named(
    tx: &Transaction<'_>,
    table: &str,
    what: &str,
    id: &str,
    group_id: &str,
    name: &str,
    data: String,
) -> Result<()> {
    let result = tx.execute(
        &format!(
            "INSERT INTO {table} (id, group_id, name, data) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET group_id = excluded.group_id, name = excluded.name,
                 data = excluded.data"
        ),
        params![id, group_id, name, data],
    );
    match result {
        Ok(_) => Ok(()),
        Err(e) => Err(match broken(&e) {
            Some(Broken::Unique) => StoreError::Conflict(format!(
                "{what} `{name}` already exists in group {group_id}"
            )),
            Some(Broken::ForeignKey) => no_group(group_id),
            None => backend(e),
        }),
    }
}

/// The outcome of an upsert whose only rule is that its group exists.
fn put_result(result: rusqlite::Result<usize>, group_id: &str) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if matches!(broken(&e), Some(Broken::ForeignKey)) => Err(no_group(group_id)),
        Err(e) => Err(backend(e)),
    }
}

/// The first column of the rows `sql` selects: the keys a prune deletes.
fn keys(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt.query_map(params, |row| row.get(0)).map_err(backend)?;
    rows.collect::<rusqlite::Result<_>>().map_err(backend)
}

/// The ids of the rollups [`Store::prune_rollups`] deletes.
pub(super) fn prunable_rollups(conn: &Connection, before_ms: i64) -> Result<Vec<String>> {
    keys(
        conn,
        "SELECT id FROM rollups WHERE minute_ms < ?1",
        [before_ms],
    )
}

/// Deleting what is already gone is not an error: a retried step converges.
fn delete(tx: &Transaction<'_>, table: &str, id: &str) -> Result<()> {
    tx.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id])
        .map(drop)
        .map_err(backend)
}

impl SqliteStore {
    /// Reads the `(id, data)` rows `sql` selects and decodes each.
    fn query<T: DeserializeOwned>(
        &self,
        table: &str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<T>> {
        query_on(&self.conn(), table, sql, params)
    }

    /// A group-scoped named table's records (all when None), by name then id.
    fn list_named<T: DeserializeOwned>(
        &self,
        table: &str,
        group_id: Option<&str>,
    ) -> Result<Vec<T>> {
        list_named_on(&self.conn(), table, group_id)
    }

    fn get<T: DeserializeOwned>(&self, table: &str, id: &str) -> Result<Option<T>> {
        let conn = self.conn();
        let data: Option<String> = conn
            .prepare_cached(&format!("SELECT data FROM {table} WHERE id = ?1"))
            .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)).optional())
            .map_err(backend)?;
        data.map(|d| from_json(table, id, &d)).transpose()
    }
}

/// A group-scoped named table's records (all when None), by name then id.
fn list_named_on<T: DeserializeOwned>(
    conn: &Connection,
    table: &str,
    group_id: Option<&str>,
) -> Result<Vec<T>> {
    match group_id {
        Some(g) => query_on(
            conn,
            table,
            &format!("SELECT id, data FROM {table} WHERE group_id = ?1 ORDER BY name, id"),
            [g],
        ),
        None => query_on(
            conn,
            table,
            &format!("SELECT id, data FROM {table} ORDER BY name, id"),
            [],
        ),
    }
}

/// Reads the `(id, data)` rows `sql` selects on `conn` and decodes each.
fn query_on<T: DeserializeOwned>(
    conn: &Connection,
    table: &str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt
        .query_map(params, |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, data) = row.map_err(backend)?;
        out.push(from_json(table, &id, &data)?);
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn commit(&self, writes: Vec<Write>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        self.instances.commit(&writes);
        self.alarms.commit(&writes);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        for write in &writes {
            // Returning early drops `tx`, which rolls back everything before.
            apply(&tx, write)?;
        }
        tx.commit().map_err(backend)
    }

    /// A real write: the newest schema version's row rewritten as it is,
    /// committed, so a read-only or failing disk shows.
    fn probe(&self) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        tx.execute(
            "UPDATE schema_version SET applied_at_ms = applied_at_ms
             WHERE version = (SELECT MAX(version) FROM schema_version)",
            [],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)
    }

    fn get_group(&self, id: &str) -> Result<Option<ScalingGroup>> {
        self.get("groups", id)
    }

    fn find_group_by_name(&self, name: &str) -> Result<Option<ScalingGroup>> {
        let mut found = self.query(
            "groups",
            "SELECT id, data FROM groups WHERE name = ?1",
            [name],
        )?;
        Ok(found.pop())
    }

    fn list_groups(&self) -> Result<Vec<ScalingGroup>> {
        self.query("groups", "SELECT id, data FROM groups ORDER BY name", [])
    }

    fn get_configuration(&self, id: &str) -> Result<Option<ScalingConfiguration>> {
        self.get("configurations", id)
    }

    fn list_configurations(&self, group_id: Option<&str>) -> Result<Vec<ScalingConfiguration>> {
        match group_id {
            Some(g) => self.query(
                "configurations",
                "SELECT id, data FROM configurations WHERE group_id = ?1 ORDER BY created_at_ms, id",
                [g],
            ),
            None => self.query(
                "configurations",
                "SELECT id, data FROM configurations ORDER BY created_at_ms, id",
                [],
            ),
        }
    }

    fn get_instance(&self, id: &str) -> Result<Option<Instance>> {
        self.get("instances", id)
    }

    fn list_instances(&self, group_id: Option<&str>) -> Result<Vec<Instance>> {
        let conn = self.conn();
        self.instances.list(&conn, group_id, |conn| match group_id {
            Some(g) => query_on(
                conn,
                "instances",
                "SELECT id, data FROM instances WHERE group_id = ?1 ORDER BY created_at_ms, id",
                [g],
            ),
            None => query_on(
                conn,
                "instances",
                "SELECT id, data FROM instances ORDER BY created_at_ms, id",
                [],
            ),
        })
    }

    fn get_activity(&self, id: &str) -> Result<Option<Activity>> {
        self.get("activities", id)
    }

    fn get_rule(&self, id: &str) -> Result<Option<ScalingRule>> {
        self.get("rules", id)
    }

    fn list_rules(&self, group_id: Option<&str>) -> Result<Vec<ScalingRule>> {
        self.list_named("rules", group_id)
    }

    fn get_alarm(&self, id: &str) -> Result<Option<AlarmTask>> {
        self.get("alarms", id)
    }

    fn list_alarms(&self, group_id: Option<&str>) -> Result<Vec<AlarmTask>> {
        let conn = self.conn();
        self.alarms.list(&conn, group_id, |conn| {
            list_named_on(conn, "alarms", group_id)
        })
    }

    fn get_task(&self, id: &str) -> Result<Option<ScheduledTask>> {
        self.get("tasks", id)
    }

    fn list_tasks(&self, group_id: Option<&str>) -> Result<Vec<ScheduledTask>> {
        self.list_named("tasks", group_id)
    }

    fn find_activities(&self, query: &ActivityQuery) -> Result<Vec<Activity>> {
        let mut clauses = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(g) = &query.group_id {
            values.push(Value::Text(g.clone()));
            clauses.push(format!("group_id = ?{}", values.len()));
        }
        if let Some(s) = query.status {
            values.push(Value::Text(s.as_str().to_owned()));
            clauses.push(format!("status = ?{}", values.len()));
        }
        if let Some(since) = query.since_ms {
            values.push(Value::Integer(since));
            clauses.push(format!("started_at_ms >= ?{}", values.len()));
        }
        if let Some((at, id)) = &query.after {
            values.push(Value::Integer(*at));
            values.push(Value::Text(id.clone()));
            let (a, i) = (values.len() - 1, values.len());
            clauses.push(format!(
                "(started_at_ms < ?{a} OR (started_at_ms = ?{a} AND id < ?{i}))"
            ));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        values.push(Value::Integer(
            i64::try_from(query.limit).unwrap_or(i64::MAX),
        ));
        self.query(
            "activities",
            &format!(
                "SELECT id, data FROM activities {filter}
                 ORDER BY started_at_ms DESC, id DESC LIMIT ?{}",
                values.len()
            ),
            rusqlite::params_from_iter(values),
        )
    }

    fn prune_activities(&self, group_id: &str, keep: usize, before_ms: i64) -> Result<usize> {
        let sql = format!("DELETE FROM activities WHERE {}", prunable_filter());
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.conn()
            .execute(&sql, rusqlite::params![group_id, before_ms, keep])
            .map_err(backend)
    }

    fn list_rollups(&self, group_id: &str, since_ms: i64) -> Result<Vec<MinuteRollup>> {
        self.query(
            "rollups",
            "SELECT id, data FROM rollups WHERE group_id = ?1 AND minute_ms >= ?2
             ORDER BY minute_ms",
            params![group_id, since_ms],
        )
    }

    fn prune_rollups(&self, before_ms: i64) -> Result<usize> {
        self.conn()
            .execute("DELETE FROM rollups WHERE minute_ms < ?1", [before_ms])
            .map_err(backend)
    }

    fn list_deliveries(
        &self,
        state: DeliveryState,
        due_by_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        self.query(
            "deliveries",
            "SELECT id, data FROM deliveries WHERE state = ?1 AND due_ms <= ?2
             ORDER BY due_ms, id LIMIT ?3",
            params![
                state.as_str(),
                due_by_ms,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
        )
    }

    fn count_deliveries(&self) -> Result<Vec<DeliveryCount>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT group_id, url, state, COUNT(*) FROM deliveries
                 GROUP BY group_id, url, state ORDER BY group_id, url, state",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            let (group_id, url, state, count) = row.map_err(backend)?;
            let state = DeliveryState::parse(&state).ok_or_else(|| StoreError::Corrupt {
                key: format!("deliveries of {url}"),
                message: format!("unknown state `{state}`"),
            })?;
            out.push(DeliveryCount {
                group_id,
                url,
                state,
                count: u64::try_from(count).unwrap_or(0),
            });
        }
        Ok(out)
    }

    fn prune_deliveries(&self, state: DeliveryState, before_ms: i64) -> Result<usize> {
        self.conn()
            .execute(
                &format!("DELETE FROM deliveries WHERE {PRUNABLE_DELIVERIES}"),
                params![state.as_str(), before_ms],
            )
            .map_err(backend)
    }

    fn get_client_token(&self, token: &str) -> Result<Option<ClientToken>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT token, method, fingerprint, response_hex, created_at_ms
                 FROM client_tokens WHERE token = ?1",
            )
            .map_err(backend)?;
        stmt.query_row([token], |row| {
            Ok(ClientToken {
                token: row.get(0)?,
                method: row.get(1)?,
                fingerprint: row.get(2)?,
                response_hex: row.get(3)?,
                created_at_ms: row.get(4)?,
            })
        })
        .optional()
        .map_err(backend)
    }

    fn prune_client_tokens(&self, before_ms: i64) -> Result<usize> {
        self.conn()
            .execute(
                "DELETE FROM client_tokens WHERE created_at_ms < ?1",
                [before_ms],
            )
            .map_err(backend)
    }

    fn list_detached(&self) -> Result<Vec<Detached>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DETACHED_COLUMNS} FROM detached_instances ORDER BY id"
            ))
            .map_err(backend)?;
        let rows = stmt.query_map([], detached_row).map_err(backend)?;
        rows.collect::<rusqlite::Result<_>>().map_err(backend)
    }

    fn get_detached(&self, id: &str) -> Result<Option<Detached>> {
        self.conn()
            .prepare_cached(&format!(
                "SELECT {DETACHED_COLUMNS} FROM detached_instances WHERE id = ?1"
            ))
            .map_err(backend)?
            .query_row([id], detached_row)
            .optional()
            .map_err(backend)
    }

    fn list_revoked(&self) -> Result<Vec<Revoked>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT identity, revoked_at_ms, revoked_by, reason FROM revoked_identities ORDER BY identity",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |row| {
                Ok(Revoked {
                    identity: row.get(0)?,
                    revoked_at_ms: row.get(1)?,
                    revoked_by: row.get(2)?,
                    reason: row.get(3)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<rusqlite::Result<_>>().map_err(backend)
    }

    fn list_certificates(&self) -> Result<Vec<CertRecord>> {
        let conn = self.conn();
        // Each identity's row with the latest not_after; between two issued
        // within the same second (a cert's times are whole seconds), the
        // later issued.
        let mut stmt = conn
            .prepare_cached(
                "SELECT serial, identity, kind, not_before_ms, not_after_ms, issued_at_ms
                 FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY identity
                           ORDER BY not_after_ms DESC, issued_at_ms DESC, serial DESC) AS latest
                       FROM certificates)
                 WHERE latest = 1 ORDER BY not_after_ms, identity",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            })
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            let (serial, identity, kind, not_before_ms, not_after_ms, issued_at_ms) =
                row.map_err(backend)?;
            let kind = CertKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
                key: format!("certificates/{serial}"),
                message: format!("unknown kind `{kind}`"),
            })?;
            out.push(CertRecord {
                serial,
                identity,
                kind,
                not_before_ms,
                not_after_ms,
                issued_at_ms,
            });
        }
        Ok(out)
    }

    fn get_join_token(&self, id: &str) -> Result<Option<JoinToken>> {
        let conn = self.conn();
        conn.prepare_cached(&format!(
            "SELECT {JOIN_TOKEN_COLUMNS} FROM join_tokens WHERE id = ?1"
        ))
        .and_then(|mut stmt| stmt.query_row([id], join_token_row).optional())
        .map_err(backend)
    }

    fn list_join_tokens(&self) -> Result<Vec<JoinToken>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {JOIN_TOKEN_COLUMNS} FROM join_tokens ORDER BY created_at_ms, id"
            ))
            .map_err(backend)?;
        let rows = stmt.query_map([], join_token_row).map_err(backend)?;
        rows.collect::<rusqlite::Result<_>>().map_err(backend)
    }

    fn list_activities(&self, group_id: Option<&str>, limit: usize) -> Result<Vec<Activity>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match group_id {
            Some(g) => self.query(
                "activities",
                "SELECT id, data FROM activities WHERE group_id = ?1
                 ORDER BY started_at_ms DESC, id DESC LIMIT ?2",
                params![g, limit],
            ),
            None => self.query(
                "activities",
                "SELECT id, data FROM activities ORDER BY started_at_ms DESC, id DESC LIMIT ?1",
                [limit],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::conformance;
    use ebb_core::model::{GroupState, HealthCheckType, RemovalPolicy};

    fn group(id: &str, name: &str) -> ScalingGroup {
        ScalingGroup {
            id: id.into(),
            name: name.into(),
            min_size: 0,
            max_size: 3,
            desired_capacity: 1,
            default_cooldown_secs: 300,
            removal_policies: vec![RemovalPolicy::OldestInstance],
            health_check_type: HealthCheckType::Agent,
            health_check_grace_period_secs: 60,
            sampling_interval_secs: 5,
            deletion_protection: false,
            state: GroupState::Active,
            active_configuration_id: None,
            created_at_ms: 7,
            suspended_processes: Vec::new(),
            notifications: Vec::new(),
            lifecycle_hooks: Vec::new(),
            load_balancers: Vec::new(),
            db_instances: Vec::new(),
        }
    }

    fn raw(store: &SqliteStore) -> MutexGuard<'_, Connection> {
        store.conn()
    }

    fn version_rows(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .map(|v| v.unwrap())
            .collect()
    }

    #[test]
    fn conformance_in_memory() {
        conformance::run_all(&|| Box::new(SqliteStore::open_in_memory().unwrap()));
    }

    #[test]
    fn conformance_on_file() {
        let dir = tempfile::tempdir().unwrap();
        let n = AtomicUsize::new(0);
        conformance::run_all(&|| {
            let path = dir
                .path()
                .join(format!("ebb-{}.db", n.fetch_add(1, Ordering::Relaxed)));
            Box::new(SqliteStore::open(&path).unwrap())
        });
    }

    #[test]
    fn store_is_send_and_sync() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<SqliteStore>();
    }

    #[test]
    fn creates_the_file_and_keeps_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ebb.db");
        assert!(!path.exists());
        {
            let store = SqliteStore::open(&path).unwrap();
            assert!(path.exists());
            store
                .commit(vec![Write::CreateGroup(group("asg-1", "web"))])
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.get_group("asg-1").unwrap(),
            Some(group("asg-1", "web"))
        );
        // Reopening applies no migration twice.
        assert_eq!(
            version_rows(&raw(&store)),
            (1..=SCHEMA_VERSION).collect::<Vec<_>>()
        );
    }

    #[test]
    fn pragmas_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ebb.db")).unwrap();
        let conn = raw(&store);
        let pragma = |name: &str| -> String {
            conn.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|v| match v {
                    rusqlite::types::Value::Text(s) => s,
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "1", "NORMAL");
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(pragma("busy_timeout"), BUSY_TIMEOUT.as_millis().to_string());
    }

    #[test]
    fn schema_version_is_recorded() {
        let store = SqliteStore::open_in_memory().unwrap();
        let conn = raw(&store);
        assert_eq!(recorded_version(&conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(
            version_rows(&conn),
            (1..=SCHEMA_VERSION).collect::<Vec<_>>()
        );
    }

    #[test]
    fn newer_schema_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("ebb.db");
        let newer = SCHEMA_VERSION + 1;
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL);
                 CREATE TABLE future (x TEXT);",
            )
            .unwrap();
            for v in 1..=newer {
                conn.execute("INSERT INTO schema_version VALUES (?1, 0)", [v])
                    .unwrap();
            }
        }
        let before = std::fs::read(&path).unwrap();

        let err = SqliteStore::open(&path)
            .err()
            .expect("a newer schema is refused");
        let message = err.to_string();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        assert!(
            message.contains(&format!(
                "{} was written by a newer ebb (schema {newer}, this build knows {SCHEMA_VERSION});",
                path.display()
            )),
            "{message}"
        );

        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file is untouched"
        );
        let conn = Connection::open(&path).unwrap();
        assert_eq!(recorded_version(&conn).unwrap(), newer);
        let groups: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'groups')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!groups, "no migration ran");
    }

    #[test]
    fn schema_1_is_migrated_keeping_its_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ebb.db");
        // A database as the build before rules, alarms and tasks left it.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (
                     version       INTEGER PRIMARY KEY NOT NULL,
                     applied_at_ms INTEGER NOT NULL
                 );",
            )
            .unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute("INSERT INTO schema_version VALUES (1, 42)", [])
                .unwrap();
            for g in [group("asg-1", "web"), group("asg-2", "api")] {
                conn.execute(
                    "INSERT INTO groups (id, name, data) VALUES (?1, ?2, ?3)",
                    params![g.id, g.name, to_json(&g).unwrap()],
                )
                .unwrap();
            }
            assert_eq!(recorded_version(&conn).unwrap(), 1);
        }

        let store = SqliteStore::open(&path).unwrap();
        let all_versions: Vec<i64> = (1..=SCHEMA_VERSION).collect();
        {
            let conn = raw(&store);
            assert_eq!(recorded_version(&conn).unwrap(), SCHEMA_VERSION);
            assert_eq!(version_rows(&conn), all_versions);
            let applied_1: i64 = conn
                .query_row(
                    "SELECT applied_at_ms FROM schema_version WHERE version = 1",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(applied_1, 42, "version 1's row is left as it was");
        }
        assert_eq!(
            store.list_groups().unwrap(),
            [group("asg-2", "api"), group("asg-1", "web")]
        );

        // The new tables work, cascades included.
        let rule = ebb_core::rules::ScalingRule {
            id: "rule-1".into(),
            group_id: "asg-1".into(),
            name: "add-1".into(),
            kind: ebb_core::rules::RuleKind::Simple {
                adjustment_type: ebb_core::rules::AdjustmentType::QuantityChangeInCapacity,
                adjustment_value: 1,
                min_adjustment_magnitude: None,
                cooldown_secs: None,
            },
        };
        store.commit(vec![Write::PutRule(rule.clone())]).unwrap();
        assert_eq!(store.list_rules(None).unwrap(), [rule]);
        assert!(store.list_alarms(None).unwrap().is_empty());
        assert!(store.list_tasks(None).unwrap().is_empty());
        store
            .commit(vec![Write::DeleteGroup("asg-1".into())])
            .unwrap();
        assert!(store.list_rules(None).unwrap().is_empty());
        drop(store);

        // Reopening migrates nothing again.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(version_rows(&raw(&store)), all_versions);
        assert_eq!(store.list_groups().unwrap(), [group("asg-2", "api")]);
    }

    /// A database at schema `version`, as the build that wrote it left it.
    fn at_schema(path: &Path, version: i64) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (
                 version       INTEGER PRIMARY KEY NOT NULL,
                 applied_at_ms INTEGER NOT NULL
             );",
        )
        .unwrap();
        for (v, sql) in (1..=version).zip(MIGRATIONS) {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_version VALUES (?1, 0)", [v])
                .unwrap();
        }
        conn
    }

    #[test]
    fn schema_7_join_tokens_keep_their_group_through_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ebb.db");
        {
            let conn = at_schema(&path, 7);
            let g = group("asg-1", "web");
            conn.execute(
                "INSERT INTO groups (id, name, data) VALUES (?1, ?2, ?3)",
                params![g.id, g.name, to_json(&g).unwrap()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO join_tokens VALUES ('abcdef', 'asg-1', 'ff', 1, 2, 3, 'spiffe://ebb.local/admin/ops', 0)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let token = store.get_join_token("abcdef").unwrap().unwrap();
        assert_eq!(token.scope, JoinScope::Group("asg-1".into()));
        assert_eq!(
            (token.created_at_ms, token.expires_at_ms, token.uses_left),
            (1, 2, 3)
        );
        // The group still takes its tokens with it.
        store
            .commit(vec![Write::DeleteGroup("asg-1".into())])
            .unwrap();
        assert!(store.list_join_tokens().unwrap().is_empty());
    }

    #[test]
    fn schema_3_activities_keep_their_status_through_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ebb.db");
        let running = Activity {
            id: "act-1".into(),
            group_id: "asg-1".into(),
            cause: "test".into(),
            trigger: ebb_core::model::Trigger::Api,
            status: ebb_core::model::ActivityStatus::InProgress,
            progress: 0,
            capacity_from: 0,
            capacity_to: 1,
            created_instances: Vec::new(),
            removed_instances: Vec::new(),
            started_at_ms: 1,
            ended_at_ms: None,
            error: None,
            details: Vec::new(),
            initiated_by: None,
        };
        // A database as the build before the status column left it.
        {
            let conn = at_schema(&path, 3);
            let g = group("asg-1", "web");
            conn.execute(
                "INSERT INTO groups (id, name, data) VALUES (?1, ?2, ?3)",
                params![g.id, g.name, to_json(&g).unwrap()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO activities (id, group_id, data, started_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![running.id, running.group_id, to_json(&running).unwrap(), 1],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let found = store
            .find_activities(&ActivityQuery {
                group_id: Some("asg-1".into()),
                status: Some(ebb_core::model::ActivityStatus::InProgress),
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(found, [running]);
    }

    #[test]
    fn not_a_database_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ebb.db");
        std::fs::write(
            &path,
            "this is not SQLite, but long enough to have a header".repeat(4),
        )
        .unwrap();
        let err = SqliteStore::open(&path).err().expect("refused");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("store: {}: ", path.display())),
            "{message}"
        );
        assert!(message.contains("not a database"), "{message}");
    }

    #[test]
    fn unreadable_record_is_corrupt_naming_table_and_id() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .commit(vec![
                Write::CreateGroup(group("asg-1", "web")),
                Write::PutActivity(Activity {
                    id: "act-1".into(),
                    group_id: "asg-1".into(),
                    cause: "test".into(),
                    trigger: ebb_core::model::Trigger::Api,
                    status: ebb_core::model::ActivityStatus::InProgress,
                    progress: 0,
                    capacity_from: 0,
                    capacity_to: 1,
                    created_instances: Vec::new(),
                    removed_instances: Vec::new(),
                    started_at_ms: 1,
                    ended_at_ms: None,
                    error: None,
                    details: Vec::new(),
                    initiated_by: None,
                }),
            ])
            .unwrap();
        raw(&store)
            .execute_batch(
                "UPDATE groups SET data = '{\"id\": \"asg-1\", \"name\": ' WHERE id = 'asg-1';
                 UPDATE activities SET data = '{\"id\": \"act-1\"}' WHERE id = 'act-1';",
            )
            .unwrap();

        let check = |err: StoreError, key: &str| match err {
            StoreError::Corrupt {
                key: ref k,
                ref message,
            } => {
                assert_eq!(k, key);
                assert!(!message.is_empty());
                assert!(
                    err.to_string()
                        .starts_with(&format!("store: corrupt record {key}: ")),
                    "{err}"
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        };
        check(store.get_group("asg-1").unwrap_err(), "groups/asg-1");
        check(store.find_group_by_name("web").unwrap_err(), "groups/asg-1");
        check(store.list_groups().unwrap_err(), "groups/asg-1");
        check(store.get_activity("act-1").unwrap_err(), "activities/act-1");
        check(
            store.list_activities(None, 10).unwrap_err(),
            "activities/act-1",
        );
    }

    #[test]
    fn unreadable_rule_alarm_or_task_is_corrupt_naming_table_and_id() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .commit(vec![Write::CreateGroup(group("asg-1", "web"))])
            .unwrap();
        raw(&store)
            .execute_batch(
                "INSERT INTO rules (id, group_id, name, data) VALUES ('rule-1', 'asg-1', 'r', '{}');
                 INSERT INTO alarms (id, group_id, name, data) VALUES ('alarm-1', 'asg-1', 'a', '[');
                 INSERT INTO tasks (id, group_id, name, data) VALUES ('task-1', 'asg-1', 't', 'null');",
            )
            .unwrap();
        let key = |err: StoreError| match err {
            StoreError::Corrupt { key, .. } => key,
            other => panic!("expected Corrupt, got {other:?}"),
        };
        assert_eq!(key(store.get_rule("rule-1").unwrap_err()), "rules/rule-1");
        assert_eq!(key(store.list_rules(None).unwrap_err()), "rules/rule-1");
        assert_eq!(
            key(store.get_alarm("alarm-1").unwrap_err()),
            "alarms/alarm-1"
        );
        assert_eq!(
            key(store.list_alarms(Some("asg-1")).unwrap_err()),
            "alarms/alarm-1"
        );
        assert_eq!(key(store.get_task("task-1").unwrap_err()), "tasks/task-1");
        assert_eq!(key(store.list_tasks(None).unwrap_err()), "tasks/task-1");
    }

    #[test]
    fn two_handles_on_one_file_share_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ebb.db");
        let a = Arc::new(SqliteStore::open(&path).unwrap());
        let b = SqliteStore::open(&path).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let a = Arc::clone(&a);
                std::thread::spawn(move || {
                    for i in 0..10 {
                        let id = format!("asg-{t}-{i}");
                        a.commit(vec![Write::CreateGroup(group(&id, &id))]).unwrap();
                    }
                })
            })
            .collect();
        for i in 0..10 {
            let id = format!("asg-b-{i}");
            b.commit(vec![Write::CreateGroup(group(&id, &id))]).unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(a.list_groups().unwrap().len(), 50);
        assert_eq!(b.list_groups().unwrap().len(), 50);
        let err = b
            .commit(vec![Write::CreateGroup(group("asg-x", "asg-0-0"))])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a scaling group named `asg-0-0` already exists"
        );
    }
}
