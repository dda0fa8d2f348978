//! `--wait`: following what a command started until it ends. An activity
//! is polled until it is no longer InProgress; a group (after `group
//! enable` or `apply`) until none of its activities runs and every
//! instance it wants is in service. Either fails, naming the cause, when
//! an activity failed or was rejected, or when the time given runs out.

use std::collections::HashSet;
use std::time::Duration;

use ebb_core::model::{ActivityStatus, GroupState};
use ebb_proto::v1 as pb;

use crate::conn::Admin;
use crate::error::{Error, Result};

/// How often the controller is asked; an activity takes seconds.
const POLL: Duration = Duration::from_secs(1);
/// How many of a group's newest activities are looked at on each poll.
const RECENT: u32 = 50;

/// `Ok` for an activity that succeeded (or succeeded with a warning);
/// otherwise its status and cause (and error) as the command's error.
pub fn succeeded(a: &pb::Activity) -> Result<()> {
    if a.status == ActivityStatus::Failed.as_str() || a.status == ActivityStatus::Rejected.as_str()
    {
        let mut why = a.cause.clone();
        if !a.error.is_empty() && a.error != a.cause {
            why = format!("{why}: {}", a.error);
        }
        return Err(Error::Server(format!(
            "activity {} {}: {why} (ebbctl activity describe {})",
            a.id, a.status, a.id
        )));
    }
    Ok(())
}

/// Polls activity `id` until it ends, and returns it as it ended.
pub async fn activity(admin: &mut Admin, id: &str, timeout: Duration) -> Result<pb::Activity> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let a = admin
            .describe_scaling_activities(pb::DescribeScalingActivitiesRequest {
                activity_ids: vec![id.to_owned()],
                ..Default::default()
            })
            .await?
            .activities
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| Error::Server(format!("activity `{id}` does not exist")))?;
        if a.status != ActivityStatus::InProgress.as_str() {
            return Ok(a);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Server(format!(
                "gave up waiting after {} s: activity {id} is still InProgress, {}% done \
                 (ebbctl activity describe {id})",
                timeout.as_secs(),
                a.progress
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The ids of a group's newest activities: those already there before a
/// command, so that only the ones it started count against it.
pub async fn known_activities(admin: &mut Admin, group: &str) -> Result<HashSet<String>> {
    Ok(recent(admin, group)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect())
}

async fn recent(admin: &mut Admin, group: &str) -> Result<Vec<pb::Activity>> {
    Ok(admin
        .describe_scaling_activities(pb::DescribeScalingActivitiesRequest {
            scaling_group: group.to_owned(),
            limit: RECENT,
            page_size: RECENT,
            ..Default::default()
        })
        .await?
        .activities)
}

/// Where a group stands once it settled.
pub struct Settled {
    pub group: pb::ScalingGroup,
    /// The activities that ran since the command, oldest first.
    pub activities: Vec<pb::Activity>,
}

/// Polls until the group is settled: no activity of it InProgress and, if
/// it is Active, as many instances in service as it desires and none
/// pending. An activity not in `known` that failed or was rejected ends
/// the wait with its cause.
pub async fn group(
    admin: &mut Admin,
    group: &str,
    known: &HashSet<String>,
    timeout: Duration,
) -> Result<Settled> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let g = admin
            .find_group(group)
            .await?
            .ok_or_else(|| Error::Server(format!("scaling group `{group}` does not exist")))?;
        let activities = recent(admin, &g.id).await?;
        let mut new: Vec<pb::Activity> = activities
            .iter()
            .filter(|a| !known.contains(&a.id))
            .cloned()
            .collect();
        new.reverse();
        if let Some(bad) = new.iter().find(|a| succeeded(a).is_err()) {
            succeeded(bad)?;
        }
        let running = activities
            .iter()
            .find(|a| a.status == ActivityStatus::InProgress.as_str());
        let converged = g.state != GroupState::Active.as_str()
            || (g.in_service == g.desired_capacity && g.pending == 0);
        if running.is_none() && converged {
            return Ok(Settled {
                group: g,
                activities: new,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            let doing = running.map_or_else(String::new, |a| {
                format!(", activity {} is still InProgress ({})", a.id, a.cause)
            });
            return Err(Error::Server(format!(
                "gave up waiting after {} s: group {} has {} of {} in service, {} pending{doing} \
                 (ebbctl activity list --group {})",
                timeout.as_secs(),
                g.name,
                g.in_service,
                g.desired_capacity,
                g.pending,
                g.name
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One line for a settled group.
pub fn settled_line(s: &Settled) -> String {
    let g = &s.group;
    let ran = match s.activities.len() {
        0 => String::new(),
        n => format!(
            " after {n} activit{} ({})",
            if n == 1 { "y" } else { "ies" },
            s.activities
                .iter()
                .map(|a| format!("{} {}", a.id, a.status))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "group {} settled: {}, {} of {} in service{ran}",
        g.name, g.state, g.in_service, g.desired_capacity
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_or_rejected_activity_is_the_error_with_its_cause() {
        let a = pb::Activity {
            id: "asa-1".into(),
            status: "Failed".into(),
            cause: "a user changed the desired capacity from 0 to 2".into(),
            error: "launch failed: no such program /nope".into(),
            ..Default::default()
        };
        let err = succeeded(&a).unwrap_err();
        assert_eq!(
            err.to_string(),
            "activity asa-1 Failed: a user changed the desired capacity from 0 to 2: \
             launch failed: no such program /nope (ebbctl activity describe asa-1)"
        );
        assert_eq!(err.exit_code(), 1);
        let rejected = pb::Activity {
            status: "Rejected".into(),
            error: String::new(),
            cause: "the group is at its max size".into(),
            ..a.clone()
        };
        assert!(
            succeeded(&rejected)
                .unwrap_err()
                .to_string()
                .contains("Rejected: the group is at its max size")
        );
        for ok in ["Successful", "Warning"] {
            let a = pb::Activity {
                status: ok.into(),
                ..a.clone()
            };
            assert!(succeeded(&a).is_ok(), "{ok}");
        }
    }
}
