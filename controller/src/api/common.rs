//! What every resource family's handlers share: errors as gRPC statuses,
//! the lookups of a group by id or name, time.

use crate::engine::{Engine, EngineError};
use crate::store::StoreError;
use ebb_core::model::{Activity, Invalid, ScalingGroup};
use ebb_proto::v1 as pb;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Every bad field, as one INVALID_ARGUMENT: the one-line text for people
/// (`field: problem; field: problem`), and the same fields as a
/// `google.rpc.BadRequest` detail for programs.
pub(crate) fn invalid(e: Invalid) -> Status {
    bad_request(e.to_string(), &e)
}

/// A `field: problem` line from code that reports its errors as text (the
/// providers' checks) as [`invalid`]: the text kept as it is, the field
/// read from it, or `field` when the line names none.
pub(crate) fn invalid_text(field: &str, line: String) -> Status {
    let violation = match line.split_once(": ") {
        Some((named, problem)) if !named.is_empty() && !named.contains(char::is_whitespace) => {
            Invalid::one(named, problem)
        }
        _ => Invalid::one(field, line.as_str()),
    };
    bad_request(line, &violation)
}

fn bad_request(text: String, fields: &Invalid) -> Status {
    let violations: Vec<FieldViolation> = fields
        .0
        .iter()
        .map(|f| FieldViolation::new(&f.field, &f.message))
        .collect();
    Status::with_error_details(
        Code::InvalidArgument,
        text,
        ErrorDetails::with_bad_request(violations),
    )
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

/// The most one page of a listing holds, and what a caller that names no
/// `page_size` gets (activities, the one listing that grows without bound
/// in normal use, default to 50 instead).
pub(crate) const MAX_PAGE_SIZE: usize = 1000;

/// The longest page token taken back: a listing key, at most a webhook URL
/// (notification targets page by URL) and so far shorter in practice.
const MAX_PAGE_TOKEN: usize = 2 * ebb_core::url::MAX_URL_LEN;

/// Where a page of a listing starts and how long it is.
#[derive(Debug)]
pub(crate) struct Page {
    size: usize,
    after: Option<String>,
}

impl Page {
    /// From a request's `page_size` and `page_token`.
    pub(crate) fn of(page_size: u32, page_token: &str) -> Result<Self, Status> {
        let mut e = Invalid::default();
        let page = Self::read(page_size, page_token, &mut e);
        e.into_result().map_err(invalid)?;
        Ok(page)
    }

    /// As [`Page::of`], adding its problems to a request's others.
    pub(crate) fn read(page_size: u32, page_token: &str, e: &mut Invalid) -> Self {
        let size = match page_size as usize {
            0 => MAX_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                e.push("page_size", format!("{n} is above {MAX_PAGE_SIZE}"));
                n
            }
            n => n,
        };
        if page_token.len() > MAX_PAGE_TOKEN {
            e.push(
                "page_token",
                format!(
                    "is {} bytes, not a next_page_token this server gave out",
                    page_token.len()
                ),
            );
        }
        Self {
            size,
            after: (!page_token.is_empty()).then(|| page_token.to_owned()),
        }
    }

    /// This page of `items`, in the order of `key` (each item's unique
    /// place in the listing), and the next page's token: the last key
    /// shown, empty after the last page. A page resumes after that key, so
    /// records created or deleted between two calls neither repeat nor
    /// shift the rest.
    pub(crate) fn cut<T>(&self, items: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
        let mut keyed: Vec<(String, T)> = items.into_iter().map(|t| (key(&t), t)).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let start = self.after.as_deref().map_or(0, |after| {
            keyed.partition_point(|(k, _)| k.as_str() <= after)
        });
        let more = keyed.len() - start > self.size;
        let page: Vec<(String, T)> = keyed.into_iter().skip(start).take(self.size).collect();
        let next = match page.last() {
            Some((k, _)) if more => k.clone(),
            _ => String::new(),
        };
        (page.into_iter().map(|(_, t)| t).collect(), next)
    }
}

/// A listing key that sorts by time, then id: zero-padded so that text
/// order is time order.
pub(crate) fn time_key(at_ms: i64, id: &str) -> String {
    format!("{:020}:{id}", at_ms.max(0))
}

/// A listing key that sorts by name, then id (a space sorts before every
/// character a name may hold).
pub(crate) fn name_key(name: &str, id: &str) -> String {
    format!("{name} {id}")
}

/// The group id `scaling_group` names, or `None` when it is empty (every
/// group).
pub(crate) fn group_filter(engine: &Engine, scaling_group: &str) -> Result<Option<String>, Status> {
    if scaling_group.is_empty() {
        Ok(None)
    } else {
        Ok(Some(find_group(engine, scaling_group)?.id))
    }
}

/// A request's optional filter `text` (empty: none) as a `T`; a bad one is
/// added to `e`, naming `field`.
pub(crate) fn filter<T: std::str::FromStr>(field: &str, text: &str, e: &mut Invalid) -> Option<T>
where
    T::Err: std::fmt::Display,
{
    if text.is_empty() {
        return None;
    }
    text.parse()
        .map_err(|why: T::Err| e.push(field, why.to_string()))
        .ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: &Status) -> Vec<(String, String)> {
        s.get_error_details()
            .bad_request()
            .expect("a BadRequest detail")
            .field_violations
            .iter()
            .map(|v| (v.field.clone(), v.description.clone()))
            .collect()
    }

    #[test]
    fn every_bad_field_is_a_violation_and_the_text_is_unchanged() {
        let mut e = Invalid::one("name", "is required");
        e.push("max_size", "0 is below min_size 1");
        let s = invalid(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "name: is required; max_size: 0 is below min_size 1"
        );
        assert_eq!(
            fields(&s),
            [
                ("name".into(), "is required".into()),
                ("max_size".into(), "0 is below min_size 1".into())
            ]
        );
    }

    #[test]
    fn a_providers_line_names_its_field_or_the_given_one() {
        let s = invalid_text(
            "scaling_configuration",
            "exec.program: `x` is not an absolute path".into(),
        );
        assert_eq!(s.message(), "exec.program: `x` is not an absolute path");
        assert_eq!(
            fields(&s),
            [("exec.program".into(), "`x` is not an absolute path".into())]
        );
        let line = "instance_type `bad` cannot be launched by the fake provider";
        let s = invalid_text("scaling_configuration", line.into());
        assert_eq!(s.message(), line);
        assert_eq!(fields(&s), [("scaling_configuration".into(), line.into())]);
    }

    fn walk(items: &[&str], size: u32) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let page = Page::of(size, &token).unwrap();
            let owned: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
            let (got, next) = page.cut(owned, Clone::clone);
            pages.push(got);
            if next.is_empty() {
                return pages;
            }
            token = next;
        }
    }

    #[test]
    fn pages_cover_the_listing_in_key_order_once() {
        assert_eq!(walk(&[], 2), [Vec::<String>::new()]);
        // A last page that is exactly full gives no token to an empty one.
        assert_eq!(walk(&["b", "a", "d", "c"], 2), [["a", "b"], ["c", "d"]]);
        assert_eq!(
            walk(&["c", "a", "b"], 2),
            [vec!["a".to_owned(), "b".into()], vec!["c".into()]]
        );
        // A token whose record was deleted still says where to resume.
        let page = Page::of(2, "b").unwrap();
        let (got, next) = page.cut(vec!["a", "c", "d", "e"], |s| (*s).to_owned());
        assert_eq!((got, next.as_str()), (vec!["c", "d"], "d"));
    }

    #[test]
    fn page_size_and_token_are_checked() {
        assert_eq!(Page::of(0, "").unwrap().size, MAX_PAGE_SIZE);
        // A token as long as the longest key (a webhook URL) is taken.
        assert!(Page::of(1, &"x".repeat(ebb_core::url::MAX_URL_LEN)).is_ok());
        let e = Page::of(1001, &"x".repeat(5000)).unwrap_err();
        assert_eq!(
            e.message(),
            "page_size: 1001 is above 1000; page_token: is 5000 bytes, not a next_page_token this server gave out"
        );
        assert_eq!(time_key(5, "i-1"), "00000000000000000005:i-1");
        assert!(time_key(10, "a") > time_key(9, "z"));
        assert!(name_key("ab", "z") < name_key("ab.c", "a"));
    }
}
