//! What every resource family's handlers share: errors as gRPC statuses,
//! the lookups of a group by id or name, time.

use crate::engine::{Engine, EngineError};
use crate::store::StoreError;
use ebb_core::model::{Activity, Invalid, ScalingGroup};
use ebb_proto::v1 as pb;
use tonic::Status;

/// Every bad field, as one INVALID_ARGUMENT.
pub(crate) fn invalid(e: Invalid) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A store error as the status a caller can act on.
impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Status::already_exists(m),
            StoreError::NotFound(m) => Status::not_found(m),
            // Another controller leads now; the call did nothing and may be
            // retried, and the retry is redirected to the leader.
            e @ StoreError::Fenced(_) => Status::unavailable(e.to_string()),
            other => Status::internal(other.to_string()),
        }
    }
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(e) => e.into(),
            EngineError::Refused(m) => Status::failed_precondition(m),
            EngineError::NotFound(m) => Status::not_found(m),
            EngineError::Exhausted(m) => Status::resource_exhausted(m),
            EngineError::Certs(e) => Status::internal(e.to_string()),
        }
    }
}

pub(crate) fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(invalid(Invalid::one(field, "is required")))
    } else {
        Ok(())
    }
}

pub(crate) fn now_ms(engine: &Engine) -> i64 {
    engine.clock.now_ms()
}

pub(crate) fn find_group(engine: &Engine, key: &str) -> Result<ScalingGroup, Status> {
    if key.is_empty() {
        return Err(invalid(Invalid::one("scaling_group", "is required")));
    }
    let store = &engine.store;
    match store.get_group(key)? {
        Some(g) => Ok(g),
        None => store
            .find_group_by_name(key)?
            .ok_or_else(|| Status::not_found(format!("scaling group `{key}` does not exist"))),
    }
}

/// A group-scoped record by id, or by name within `group_key`; `field`
/// names the request field, `what` the kind in messages.
pub(crate) fn find_named<T>(
    engine: &Engine,
    group_key: &str,
    key: &str,
    (field, what): (&str, &str),
    get: impl Fn(&str) -> Result<Option<T>, StoreError>,
    list: impl Fn(&str) -> Result<Vec<T>, StoreError>,
    name: impl Fn(&T) -> &str,
) -> Result<T, Status> {
    if key.is_empty() {
        return Err(invalid(Invalid::one(field, "is required")));
    }
    if let Some(found) = get(key)? {
        return Ok(found);
    }
    let group = find_group(engine, group_key)?;
    list(&group.id)?
        .into_iter()
        .find(|r| name(r) == key)
        .ok_or_else(|| {
            Status::not_found(format!(
                "{what} `{key}` does not exist in group {}",
                group.name
            ))
        })
}

/// An activity as the API shows it.
pub(crate) fn activity_view(a: &Activity) -> pb::Activity {
    pb::Activity {
        id: a.id.clone(),
        scaling_group_id: a.group_id.clone(),
        cause: a.cause.clone(),
        trigger: a.trigger.to_string(),
        status: a.status.to_string(),
        progress: u32::from(a.progress),
        capacity_from: a.capacity_from,
        capacity_to: a.capacity_to,
        created_instances: a.created_instances.clone(),
        removed_instances: a.removed_instances.clone(),
        started_at_ms: a.started_at_ms,
        ended_at_ms: a.ended_at_ms.unwrap_or_default(),
        error: a.error.clone().unwrap_or_default(),
        details: a.details.clone(),
        initiated_by: a.initiated_by.clone().unwrap_or_default(),
    }
}
