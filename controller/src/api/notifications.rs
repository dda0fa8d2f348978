//! Notification configurations: the webhooks told of a group's activities.

use crate::api::common::{find_group, invalid};
use crate::engine::{Engine, limits};
use crate::store::Write;
use ebb_core::model::{Invalid, NotificationConfig, NotificationType, ScalingGroup};
use ebb_proto::v1 as pb;
use tonic::Status;
use tracing::info;

fn notification_view(
    group: &ScalingGroup,
    n: &NotificationConfig,
) -> pb::NotificationConfiguration {
    pb::NotificationConfiguration {
        scaling_group: group.id.clone(),
        notification_url: n.url.clone(),
        notification_types: n.types.iter().map(|t| t.to_string()).collect(),
    }
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
    info!(group = %group.name, url = %config.url, "notification configuration created");
    Ok(notification_view(&group, &config))
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
    engine.store.commit(vec![Write::UpdateGroup(group)])?;
    Ok(pb::DeleteNotificationConfigurationResponse {})
}

pub async fn describe_notification_configurations(
    engine: &Engine,
    req: pb::DescribeNotificationConfigurationsRequest,
) -> Result<pb::DescribeNotificationConfigurationsResponse, Status> {
    let group = find_group(engine, &req.scaling_group)?;
    Ok(pb::DescribeNotificationConfigurationsResponse {
        notification_configurations: group
            .notifications
            .iter()
            .map(|n| notification_view(&group, n))
            .collect(),
    })
}
