//! Notification configurations: the webhooks told of a group's activities.

use crate::api::common::{Page, find_group, invalid};
use crate::engine::{Engine, limits};
use std::collections::HashMap;

use crate::store::{DeliveryState, Write};
use ebb_core::model::{
    DEFAULT_WEBHOOK_TIMEOUT_MS, Invalid, NotificationConfig, NotificationType, ScalingGroup,
    WEBHOOK_TIMEOUT_MS, check_webhook_secret,
};
use ebb_proto::v1 as pb;
use tonic::Status;
use tracing::{info, warn};

fn notification_view(
    group: &ScalingGroup,
    n: &NotificationConfig,
    dead_letters: u64,
) -> pb::NotificationConfiguration {
    pb::NotificationConfiguration {
        scaling_group: group.id.clone(),
        notification_url: n.url.clone(),
        notification_types: n.types.iter().map(|t| t.to_string()).collect(),
        secret: String::new(),
        timeout_ms: n.timeout_ms,
        signed: n.secret.is_some(),
        dead_letters,
    }
}

/// Each of the group's targets' dead letters, by URL.
fn dead_letters(engine: &Engine, group: &ScalingGroup) -> Result<HashMap<String, u64>, Status> {
    Ok(engine
        .store
        .count_deliveries()?
        .into_iter()
        .filter(|c| c.group_id == group.id && c.state == DeliveryState::Dead)
        .map(|c| (c.url, c.count))
        .collect())
}

pub async fn create_notification_configuration(
    engine: &Engine,
    req: pb::NotificationConfiguration,
) -> Result<pb::NotificationConfiguration, Status> {
    let _ops = engine.ops.lock().await;
    let mut group = find_group(engine, &req.scaling_group)?;
    let mut errors = Invalid::default();
    if let Err(e) = ebb_core::url::parse_url(&req.notification_url) {
        errors.push("notification_url", e);
    }
    let mut types = Vec::new();
    for (i, t) in req.notification_types.iter().enumerate() {
        match t.parse::<NotificationType>() {
            Ok(t) if !types.contains(&t) => types.push(t),
            Ok(_) => errors.push(
                format!("notification_types[{i}]"),
                format!("`{t}` is listed twice"),
            ),
            Err(e) => errors.push(format!("notification_types[{i}]"), e),
        }
    }
    let secret = (!req.secret.is_empty()).then_some(req.secret);
    if let Some(secret) = &secret {
        check_webhook_secret("secret", secret, &mut errors);
    }
    let timeout_ms = match req.timeout_ms {
        0 => DEFAULT_WEBHOOK_TIMEOUT_MS,
        ms if WEBHOOK_TIMEOUT_MS.contains(&ms) => ms,
        ms => {
            errors.push(
                "timeout_ms",
                format!(
                    "{ms} is outside {}..={} (0 for the default, {DEFAULT_WEBHOOK_TIMEOUT_MS})",
                    WEBHOOK_TIMEOUT_MS.start(),
                    WEBHOOK_TIMEOUT_MS.end()
                ),
            );
            DEFAULT_WEBHOOK_TIMEOUT_MS
        }
    };
    if req.signed || req.dead_letters != 0 {
        errors.push(
            "signed",
            "signed and dead_letters are read-only; set a secret to sign",
        );
    }
    if types.is_empty() && errors.is_empty() {
        types = NotificationType::ALL.to_vec();
    }
    if group
        .notifications
        .iter()
        .any(|n| n.url == req.notification_url)
    {
        errors.push(
            "notification_url",
            "the group already notifies this URL; delete it first to change its types",
        );
    }
    errors.into_result().map_err(invalid)?;
    let config = NotificationConfig {
        url: req.notification_url,
        types,
        secret,
        timeout_ms,
    };
    let whose = format!("scaling group {}", group.name);
    let names = (
        "notification configurations",
        whose.as_str(),
        "notifications_per_group",
    );
    let cap = engine.limits.notifications_per_group;
    limits::check(group.notifications.len(), 1, cap, names)?;
    group.notifications.push(config.clone());
    engine
        .store
        .commit(vec![Write::UpdateGroup(group.clone())])?;
    info!(group = %group.name, url = %config.url, signed = config.secret.is_some(),
        "notification configuration created");
    Ok(notification_view(&group, &config, 0))
}

pub async fn delete_notification_configuration(
    engine: &Engine,
    req: pb::NotificationConfiguration,
) -> Result<pb::DeleteNotificationConfigurationResponse, Status> {
    let _ops = engine.ops.lock().await;
    let mut group = find_group(engine, &req.scaling_group)?;
    let before = group.notifications.len();
    group
        .notifications
        .retain(|n| n.url != req.notification_url);
    if group.notifications.len() == before {
        return Err(Status::not_found(format!(
            "scaling group {} does not notify {}",
            group.name, req.notification_url
        )));
    }
    engine
        .store
        .commit(vec![Write::UpdateGroup(group.clone())])?;
    // What was pending for it goes now; the notifier drops, at its next
    // attempt, whatever this misses.
    match crate::engine::notify::drop_pending(engine, &group.id, &req.notification_url) {
        Ok(0) => {}
        Ok(n) => info!(group = %group.name, url = %req.notification_url,
            "dropped {n} pending notifications of a deleted target"),
        Err(e) => warn!(group = %group.name, url = %req.notification_url,
            "dropping a deleted target's pending notifications (left to the notifier): {e}"),
    }
    Ok(pb::DeleteNotificationConfigurationResponse {})
}

pub async fn describe_notification_configurations(
    engine: &Engine,
    req: pb::DescribeNotificationConfigurationsRequest,
) -> Result<pb::DescribeNotificationConfigurationsResponse, Status> {
    let group = find_group(engine, &req.scaling_group)?;
    let page = Page::of(req.page_size, &req.page_token)?;
    let dead = dead_letters(engine, &group)?;
    let (targets, next_page_token) = page.cut(group.notifications.clone(), |n| n.url.clone());
    Ok(pb::DescribeNotificationConfigurationsResponse {
        notification_configurations: targets
            .iter()
            .map(|n| notification_view(&group, n, dead.get(&n.url).copied().unwrap_or(0)))
            .collect(),
        next_page_token,
    })
}
