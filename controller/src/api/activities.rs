//! Scaling activities: the story of every change of capacity.

use crate::api::common::{MAX_PAGE_SIZE, activity_view, group_filter, invalid};
use crate::engine::Engine;
use crate::store::ActivityQuery;
use ebb_core::model::{Activity, ActivityStatus, Invalid};
use ebb_proto::v1 as pb;
use tonic::Status;

/// Activities returned when the caller names no page size.
const DEFAULT_ACTIVITY_LIMIT: usize = 50;

/// The page size: `page_size`, or its older name `limit`.
fn page_size(req: &pb::DescribeScalingActivitiesRequest) -> Result<usize, Status> {
    let (field, n) = match (req.page_size, req.limit) {
        (0, 0) => return Ok(DEFAULT_ACTIVITY_LIMIT),
        (0, n) => ("limit", n),
        (n, 0) => ("page_size", n),
        (p, l) if p == l => ("page_size", p),
        (p, l) => {
            return Err(invalid(Invalid::one(
                "page_size",
                format!("{p} differs from limit {l}; limit is page_size's older name, give one"),
            )));
        }
    };
    let n = n as usize;
    if n > MAX_PAGE_SIZE {
        return Err(invalid(Invalid::one(
            field,
            format!("{n} is above {MAX_PAGE_SIZE}"),
        )));
    }
    Ok(n)
}

/// The token of the page after `last`: where it stands in the listing's order.
fn page_token(last: &Activity) -> String {
    format!("{}:{}", last.started_at_ms, last.id)
}

fn parse_page_token(token: &str) -> Result<Option<(i64, String)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .split_once(':')
        .and_then(|(at, id)| Some((at.parse().ok()?, id)))
        .filter(|(_, id)| !id.is_empty())
        .map(|(at, id)| Some((at, id.to_owned())))
        .ok_or_else(|| {
            invalid(Invalid::one(
                "page_token",
                format!("`{token}` is not a next_page_token this server gave out"),
            ))
        })
}

pub async fn describe_scaling_activities(
    engine: &Engine,
    req: pb::DescribeScalingActivitiesRequest,
) -> Result<pb::DescribeScalingActivitiesResponse, Status> {
    let store = &engine.store;
    let group_id = group_filter(engine, &req.scaling_group)?;
    let status = if req.status.is_empty() {
        None
    } else {
        Some(
            req.status
                .parse::<ActivityStatus>()
                .map_err(|e| invalid(Invalid::one("status", e)))?,
        )
    };
    let since_ms = (req.since_ms != 0).then_some(req.since_ms);
    let size = page_size(&req)?;
    let after = parse_page_token(&req.page_token)?;
    if !req.activity_ids.is_empty() {
        let mut found = Vec::new();
        for id in &req.activity_ids {
            let a = store.get_activity(id)?.ok_or_else(|| {
                Status::not_found(format!("scaling activity {id} does not exist"))
            })?;
            if status.is_none_or(|s| a.status == s)
                && since_ms.is_none_or(|since| a.started_at_ms >= since)
            {
                found.push(activity_view(&a));
            }
        }
        return Ok(pb::DescribeScalingActivitiesResponse {
            activities: found,
            next_page_token: String::new(),
        });
    }
    // One more than a page: whether there is a next one.
    let mut page = store.find_activities(&ActivityQuery {
        group_id,
        status,
        since_ms,
        after,
        limit: size + 1,
    })?;
    let next_page_token = if page.len() > size {
        page.truncate(size);
        page.last().map(page_token).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(pb::DescribeScalingActivitiesResponse {
        activities: page.iter().map(activity_view).collect(),
        next_page_token,
    })
}
