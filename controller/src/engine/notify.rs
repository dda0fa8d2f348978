//! Webhook notifications: every activity's start and end (and every
//! refusal) is posted as JSON to the group's webhooks that want that event,
//! and lifecycle hooks' actions to their webhook.
//!
//! The notifier watches the store rather than being called from each place
//! that writes an activity, so no path can forget it. Each event goes into
//! the store's outbox first ([`Delivery`], one per event and target, so an
//! event seen twice is sent once), and is sent from there with back-off in
//! tasks of its own that never hold up scaling. A restart (or a new leader)
//! resumes what is pending; what fails every attempt is kept as a dead
//! letter for a week, counted by target.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::store::{Delivery, DeliveryState, StoreError, Write};
use crate::webhook::{Client, Post};
use ebb_core::model::{Activity, ActivityStatus, NotificationConfig, NotificationType};

/// How often the store is looked at for new or changed activities and
/// for deliveries that are due.
const POLL: Duration = Duration::from_millis(300);
/// Activities looked at per pass.
const WINDOW: usize = 200;
/// At start, activities that changed this recently are looked at again:
/// an event the last run saw but had not yet put in the outbox is not
/// lost, and the outbox keeps one already there from being sent twice.
const CATCH_UP_MS: i64 = 10 * 60_000;
/// Deliveries sent at once, at most.
const IN_FLIGHT: usize = 64;
/// Deliveries dropped per commit when a target is deleted: well inside
/// etcd's default `--max-txn-ops` of 128.
const DROP_BATCH: usize = 64;
/// The first retry's wait; it doubles up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: i64 = 1_000;
const MAX_BACKOFF_MS: i64 = 300_000;
/// Delivered entries are kept this long, so the same event is never
/// enqueued again (longer than [`CATCH_UP_MS`]).
const KEEP_DELIVERED_MS: i64 = 86_400_000;
/// Dead letters are kept (and counted) this long.
const KEEP_DEAD_MS: i64 = 7 * 86_400_000;
/// How often ended entries are pruned.
const PRUNE_EVERY_MS: i64 = 3_600_000;

/// How deliveries are made: the client and the attempts each gets.
pub struct Webhooks {
    pub client: Client,
    /// Attempts before a delivery is a dead letter.
    pub attempts: u32,
}

/// Attempts before a delivery is given up on, by default: with back-off
/// doubling from 1 s up to 5 min, about 19 minutes of trying.
pub const DEFAULT_ATTEMPTS: u32 = 12;

impl Webhooks {
    /// The system's roots and the default attempts.
    pub fn system() -> Self {
        Self {
            client: Client::new(None).expect("a client without a CA file has nothing to fail on"),
            attempts: DEFAULT_ATTEMPTS,
        }
    }
}

/// The wait after failed attempt `n` (1-based).
fn backoff_ms(attempt: u32) -> i64 {
    let doubled = FIRST_BACKOFF_MS.saturating_mul(1_i64 << attempt.saturating_sub(1).min(20));
    doubled.min(MAX_BACKOFF_MS)
}

/// Wall-clock milliseconds: retries wait on the network's time, not on the
/// engine's (which tests may drive by hand).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The events an activity in this status means, if any.
pub fn events(a: &Activity) -> Vec<NotificationType> {
    use NotificationType::*;
    let out = a.capacity_to >= a.capacity_from;
    match a.status {
        ActivityStatus::Rejected => vec![ScaleReject],
        ActivityStatus::InProgress => vec![if out { ScaleOutStart } else { ScaleInStart }],
        ActivityStatus::Successful | ActivityStatus::Warning => {
            vec![if out { ScaleOutSuccess } else { ScaleInSuccess }]
        }
        ActivityStatus::Failed => vec![if out { ScaleOutError } else { ScaleInError }],
    }
}

/// The JSON body of one notification.
#[derive(Debug, Serialize)]
struct Body<'a> {
    event: NotificationType,
    scaling_group_id: &'a str,
    scaling_group_name: &'a str,
    activity: ActivityBody<'a>,
}

#[derive(Debug, Serialize)]
struct ActivityBody<'a> {
    id: &'a str,
    cause: &'a str,
    trigger: String,
    status: String,
    capacity_from: u32,
    capacity_to: u32,
    started_at_ms: i64,
    ended_at_ms: Option<i64>,
    error: Option<&'a str>,
    details: &'a [String],
}

/// `X-Ebb-Event` of a lifecycle hook's webhook.
pub const LIFECYCLE_EVENT: &str = "LIFECYCLE_ACTION";

/// The outbox entry of one event for one target: its id is the event's
/// source, the event and a hash of the URL, so the same event for the same
/// target is one entry however often it is enqueued.
pub fn delivery(
    source: &str,
    group_id: &str,
    event: &str,
    target: &NotificationConfig,
    body: String,
) -> Delivery {
    let digest = ring::digest::digest(&ring::digest::SHA256, target.url.as_bytes());
    let now = wall_ms();
    Delivery {
        id: format!(
            "{source}.{event}.{}",
            &ebb_certs::hex(digest.as_ref())[..12]
        ),
        group_id: group_id.to_owned(),
        state: DeliveryState::Pending,
        due_ms: now,
        created_at_ms: now,
        url: target.url.clone(),
        event: event.to_owned(),
        body,
        secret: target.secret.clone(),
        timeout_ms: target.timeout_ms,
        attempts: 0,
        last_error: None,
    }
}

/// When an activity last changed.
fn changed_at_ms(a: &Activity) -> i64 {
    a.ended_at_ms.unwrap_or(a.started_at_ms)
}

/// Watches activities, fills the outbox and sends what is due, until shutdown.
pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    // Older activities were announced by the run that saw them change.
    let since = engine.clock.now_ms() - CATCH_UP_MS;
    let mut seen: HashMap<String, ActivityStatus> = engine
        .store
        .list_activities(None, WINDOW)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| changed_at_ms(a) < since)
        .map(|a| (a.id, a.status))
        .collect();
    let mut sending: JoinSet<()> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // The first pass sends everything pending at once: a restart is the
    // moment to try again, whatever the back-off said.
    let mut due_by = i64::MAX;
    let mut last_prune: Option<i64> = None;
    loop {
        enqueue_new(&engine, &mut seen);
        while let Ok(id) = done_rx.try_recv() {
            in_flight.remove(&id);
        }
        while sending.try_join_next().is_some() {}
        let room = IN_FLIGHT.saturating_sub(in_flight.len());
        if room > 0 {
            let due = engine
                .store
                .list_deliveries(DeliveryState::Pending, due_by, room + in_flight.len())
                .unwrap_or_default();
            let fresh: Vec<Delivery> = due
                .into_iter()
                .filter(|d| !in_flight.contains(&d.id))
                .take(room)
                .collect();
            for d in fresh {
                in_flight.insert(d.id.clone());
                let engine = engine.clone();
                let done = done_tx.clone();
                sending.spawn(async move {
                    let id = d.id.clone();
                    attempt(&engine, d).await;
                    let _ = done.send(id);
                });
            }
        }
        due_by = wall_ms();
        if last_prune.is_none_or(|t| due_by - t >= PRUNE_EVERY_MS) {
            last_prune = Some(due_by);
            prune(&engine, due_by);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => {
                // An attempt cut short stays pending, for whoever runs next.
                sending.shutdown().await;
                return;
            }
        }
    }
}

/// Puts the events of activities that changed since the last pass into the
/// outbox.
fn enqueue_new(engine: &Engine, seen: &mut HashMap<String, ActivityStatus>) {
    let Ok(mut recent) = engine.store.list_activities(None, WINDOW) else {
        return;
    };
    recent.reverse();
    for a in recent {
        let before = seen.get(&a.id).copied();
        if before == Some(a.status) {
            continue;
        }
        // An activity first seen already finished also had a start.
        let mut events = Vec::new();
        if before.is_none()
            && !matches!(
                a.status,
                ActivityStatus::InProgress | ActivityStatus::Rejected
            )
        {
            let mut start = a.clone();
            start.status = ActivityStatus::InProgress;
            events.extend(self::events(&start));
        }
        events.extend(self::events(&a));
        let group = match engine.store.get_group(&a.group_id) {
            Ok(Some(group)) => group,
            // Gone with its webhooks: nothing to tell anyone.
            Ok(None) => {
                seen.insert(a.id.clone(), a.status);
                continue;
            }
            // Looked at again next pass.
            Err(_) => continue,
        };
        let mut writes = Vec::new();
        for config in &group.notifications {
            for event in events.iter().filter(|e| config.types.contains(e)) {
                let body = Body {
                    event: *event,
                    scaling_group_id: &group.id,
                    scaling_group_name: &group.name,
                    activity: ActivityBody {
                        id: &a.id,
                        cause: &a.cause,
                        trigger: a.trigger.to_string(),
                        status: a.status.to_string(),
                        capacity_from: a.capacity_from,
                        capacity_to: a.capacity_to,
                        started_at_ms: a.started_at_ms,
                        ended_at_ms: a.ended_at_ms,
                        error: a.error.as_deref(),
                        details: &a.details,
                    },
                };
                let Ok(json) = serde_json::to_string(&body) else {
                    continue;
                };
                writes.push(Write::EnqueueDelivery(delivery(
                    &a.id,
                    &group.id,
                    event.as_str(),
                    config,
                    json,
                )));
            }
        }
        if !writes.is_empty()
            && let Err(e) = engine.store.commit(writes)
        {
            // Not marked seen: enqueued on the next pass.
            warn!(activity = %a.id, "putting notifications in the outbox: {e}");
            continue;
        }
        seen.insert(a.id.clone(), a.status);
        if a.status != ActivityStatus::InProgress {
            engine.fleet.counters.activities.add(&[
                &group.name,
                &a.trigger.to_string(),
                &a.status.to_string(),
            ]);
        }
    }
    if seen.len() > WINDOW * 4 {
        let keep: HashSet<String> = engine
            .store
            .list_activities(None, WINDOW)
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.id)
            .collect();
        seen.retain(|id, _| keep.contains(id));
    }
}

/// Deletes what is pending for `url`, a target of group `group_id` just
/// deleted, a batch per commit; returns how many.
pub fn drop_pending(engine: &Engine, group_id: &str, url: &str) -> Result<usize, StoreError> {
    let pending: Vec<Write> = engine
        .store
        .list_deliveries(DeliveryState::Pending, i64::MAX, usize::MAX)?
        .into_iter()
        .filter(|d| d.group_id == group_id && d.url == url && d.event != LIFECYCLE_EVENT)
        .map(|d| Write::DeleteDelivery(d.id))
        .collect();
    let n = pending.len();
    let mut rest = pending.into_iter().peekable();
    while rest.peek().is_some() {
        engine
            .store
            .commit(rest.by_ref().take(DROP_BATCH).collect())?;
    }
    Ok(n)
}

/// Whether `d` is a notification for a target its group no longer has:
/// deleting a target stops what was still pending for it. A deleted
/// group's last notifications still go out, and a lifecycle hook's webhook
/// is its hook's, not a target's.
fn target_deleted(engine: &Engine, d: &Delivery) -> bool {
    if d.event == LIFECYCLE_EVENT {
        return false;
    }
    match engine.store.get_group(&d.group_id) {
        Ok(Some(group)) => !group.notifications.iter().any(|n| n.url == d.url),
        _ => false,
    }
}

/// One attempt at a delivery; its outcome is written back to the outbox.
/// One for a deleted target is dropped instead (the backstop of
/// [`drop_pending`], for what it missed or what an attempt in flight wrote
/// back).
async fn attempt(engine: &Engine, mut d: Delivery) {
    if target_deleted(engine, &d) {
        info!(url = %d.url, event = %d.event, delivery = %d.id,
            "dropped a pending notification: its target was deleted");
        if let Err(e) = engine.store.commit(vec![Write::DeleteDelivery(d.id)]) {
            warn!("dropping a deleted target's notification: {e}");
        }
        return;
    }
    let webhooks = &engine.webhooks;
    let outcome = webhooks
        .client
        .post(Post {
            url: &d.url,
            event: &d.event,
            delivery_id: &d.id,
            body: &d.body,
            secret: d.secret.as_deref(),
            timeout: Duration::from_millis(u64::from(d.timeout_ms)),
        })
        .await;
    d.attempts += 1;
    let now = wall_ms();
    let counters = &engine.fleet.counters;
    match outcome {
        Ok(()) => {
            counters
                .notifications_sent_total
                .fetch_add(1, Ordering::Relaxed);
            if d.attempts > 1 {
                info!(url = %d.url, event = %d.event, attempts = d.attempts, "notification delivered after retrying");
            }
            d.state = DeliveryState::Delivered;
            d.due_ms = now;
            d.last_error = None;
        }
        Err(e) if d.attempts >= webhooks.attempts => {
            counters
                .notifications_failed_total
                .fetch_add(1, Ordering::Relaxed);
            warn!(url = %d.url, event = %d.event, delivery = %d.id,
                "gave up on a notification after {} attempts (a dead letter): {e}", d.attempts);
            d.state = DeliveryState::Dead;
            d.due_ms = now;
            d.last_error = Some(e);
        }
        Err(e) => {
            d.due_ms = now + backoff_ms(d.attempts);
            d.last_error = Some(e);
        }
    }
    if let Err(e) = engine.store.commit(vec![Write::PutDelivery(d)]) {
        // Still pending in the store: sent again later, which the receiver
        // can tell by X-Ebb-Delivery.
        warn!("recording a notification's attempt: {e}");
    }
}

/// Forgets delivered entries after a day and dead letters after a week.
fn prune(engine: &Engine, now: i64) {
    for (state, keep) in [
        (DeliveryState::Delivered, KEEP_DELIVERED_MS),
        (DeliveryState::Dead, KEEP_DEAD_MS),
    ] {
        if let Err(e) = engine.store.prune_deliveries(state, now - keep) {
            warn!("pruning the notification outbox: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_core::model::Trigger;

    fn activity(from: u32, to: u32, status: ActivityStatus) -> Activity {
        Activity {
            id: "a".into(),
            group_id: "g".into(),
            cause: "c".into(),
            trigger: Trigger::Api,
            status,
            progress: 0,
            capacity_from: from,
            capacity_to: to,
            created_instances: vec![],
            removed_instances: vec![],
            started_at_ms: 0,
            ended_at_ms: None,
            error: None,
            details: vec![],
            initiated_by: None,
        }
    }

    #[test]
    fn backoff_doubles_from_a_second_to_five_minutes() {
        let waits: Vec<i64> = (1..=12).map(backoff_ms).collect();
        assert_eq!(
            waits,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000,
                300_000, 300_000
            ]
        );
        assert_eq!(backoff_ms(u32::MAX), MAX_BACKOFF_MS);
    }

    #[test]
    fn one_outbox_entry_per_event_and_target() {
        let target = |url: &str| NotificationConfig {
            url: url.into(),
            types: vec![],
            secret: None,
            timeout_ms: 5_000,
        };
        let a = delivery(
            "act-1",
            "asg-1",
            "SCALE_OUT_START",
            &target("https://a/"),
            "{}".into(),
        );
        let again = delivery(
            "act-1",
            "asg-1",
            "SCALE_OUT_START",
            &target("https://a/"),
            "{}".into(),
        );
        let other = delivery(
            "act-1",
            "asg-1",
            "SCALE_OUT_START",
            &target("https://b/"),
            "{}".into(),
        );
        assert_eq!(a.id, again.id);
        assert_ne!(a.id, other.id);
        assert!(a.id.starts_with("act-1.SCALE_OUT_START."), "{}", a.id);
    }

    #[test]
    fn events_by_direction_and_status() {
        use NotificationType::*;
        let table = [
            (1, 3, ActivityStatus::InProgress, ScaleOutStart),
            (1, 3, ActivityStatus::Successful, ScaleOutSuccess),
            (1, 3, ActivityStatus::Warning, ScaleOutSuccess),
            (1, 3, ActivityStatus::Failed, ScaleOutError),
            (3, 1, ActivityStatus::InProgress, ScaleInStart),
            (3, 1, ActivityStatus::Successful, ScaleInSuccess),
            (3, 1, ActivityStatus::Failed, ScaleInError),
            (3, 1, ActivityStatus::Rejected, ScaleReject),
        ];
        for (from, to, status, want) in table {
            assert_eq!(
                events(&activity(from, to, status)),
                [want],
                "{from}→{to} {status}"
            );
        }
    }
}
