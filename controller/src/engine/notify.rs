//! Webhook notifications: every activity's start and end (and every
//! refusal) is posted as JSON to the group's webhooks that want that event.
//! The notifier watches the store rather than being called from each place
//! that writes an activity, so no path can forget it; delivery is retried
//! with back-off in its own tasks and never holds up scaling.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::fleet::Fleet;
use ebb_core::model::{Activity, ActivityStatus, NotificationType};

/// How often the store is looked at for new or changed activities.
const POLL: Duration = Duration::from_millis(300);
/// Activities looked at per pass.
const WINDOW: usize = 200;
/// Delivery attempts before a notification is given up on.
const ATTEMPTS: u32 = 4;
/// The first retry's wait; it doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// One attempt's limit, connect to status line.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Watches activities and posts notifications until shutdown.
pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    // What was already known at start is not announced again.
    let mut seen: HashMap<String, ActivityStatus> = engine
        .store
        .list_activities(None, WINDOW)
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.id, a.status))
        .collect();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
        let Ok(mut recent) = engine.store.list_activities(None, WINDOW) else {
            continue;
        };
        recent.reverse();
        for a in recent {
            let before = seen.insert(a.id.clone(), a.status);
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
            let Ok(Some(group)) = engine.store.get_group(&a.group_id) else {
                continue;
            };
            if a.status != ActivityStatus::InProgress {
                engine.fleet.counters.activities.add(&[
                    &group.name,
                    &a.trigger.to_string(),
                    &a.status.to_string(),
                ]);
            }
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
                    tokio::spawn(deliver(
                        engine.fleet.clone(),
                        config.url.clone(),
                        event.to_string(),
                        json,
                    ));
                }
            }
        }
        if seen.len() > WINDOW * 4 {
            let keep: std::collections::HashSet<String> = engine
                .store
                .list_activities(None, WINDOW)
                .unwrap_or_default()
                .into_iter()
                .map(|a| a.id)
                .collect();
            seen.retain(|id, _| keep.contains(id));
        }
    }
}

/// Posts one notification (an activity event or a lifecycle action),
/// retrying with back-off; counted as sent or failed, never blocking.
pub async fn deliver(fleet: Arc<Fleet>, url: String, event: String, json: String) {
    let counters = &fleet.counters;
    let mut wait = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(&url, &json)).await {
            Ok(Ok(())) => {
                counters
                    .notifications_sent_total
                    .fetch_add(1, Ordering::Relaxed);
                if attempt > 1 {
                    info!(%url, %event, attempt, "notification delivered after retrying");
                }
                return;
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {ATTEMPT_TIMEOUT:?}"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    counters
        .notifications_failed_total
        .fetch_add(1, Ordering::Relaxed);
    warn!(%url, %event, "gave up on a notification after {ATTEMPTS} attempts: {last}");
}

/// One HTTP/1.1 POST; Ok on a 2xx status.
async fn post(url: &str, json: &str) -> Result<(), String> {
    let (address, host, path) = ebb_core::url::parse_url(url)?;
    let mut stream = TcpStream::connect(&address)
        .await
        .map_err(|e| format!("connect to {address}: {e}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ebb-controller\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send to {address}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read from {address}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP {code} from {url}")),
        None => Err(format!("no HTTP status line from {url}")),
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
