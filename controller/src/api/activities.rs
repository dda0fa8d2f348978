//! Scaling activities: the story of every change of capacity.

use crate::api::common::{activity_view, find_group, invalid};
use crate::engine::Engine;
use ebb_core::model::{ActivityStatus, Invalid};
use ebb_proto::v1 as pb;
use tonic::Status;

/// Activities returned when the caller names no limit.
const DEFAULT_ACTIVITY_LIMIT: usize = 50;

/// The most a caller may ask for at once.
const MAX_ACTIVITY_LIMIT: usize = 1000;

pub async fn describe_scaling_activities(
    engine: &Engine,
    req: pb::DescribeScalingActivitiesRequest,
) -> Result<pb::DescribeScalingActivitiesResponse, Status> {
    let store = &engine.store;
    let group_id = if req.scaling_group.is_empty() {
        None
    } else {
        Some(find_group(engine, &req.scaling_group)?.id)
    };
    let status = if req.status.is_empty() {
        None
    } else {
        Some(
            req.status
                .parse::<ActivityStatus>()
                .map_err(|e| invalid(Invalid::one("status", e)))?,
        )
    };
    let limit = match req.limit as usize {
        0 => DEFAULT_ACTIVITY_LIMIT,
        n if n > MAX_ACTIVITY_LIMIT => {
            return Err(invalid(Invalid::one(
                "limit",
                format!("{n} is above {MAX_ACTIVITY_LIMIT}"),
            )));
        }
        n => n,
    };
    let activities = if req.activity_ids.is_empty() {
        store.list_activities(group_id.as_deref(), limit)?
    } else {
        let mut found = Vec::new();
        for id in &req.activity_ids {
            found.push(store.get_activity(id)?.ok_or_else(|| {
                Status::not_found(format!("scaling activity {id} does not exist"))
            })?);
        }
        found
    };
    let views = activities
        .iter()
        .filter(|a| status.is_none_or(|s| a.status == s))
        .map(activity_view)
        .collect();
    Ok(pb::DescribeScalingActivitiesResponse { activities: views })
}
