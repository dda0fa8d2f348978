//! Caps on how many objects the admin API may create (DESIGN §3 "every
//! list a cap"): each is a bound on memory, on every pass's work and on the
//! store, so a runaway script cannot grow them without end.
//!
//! The defaults sit well above the cloud services' quotas, which are sized
//! for accounts rather than one controller: Amazon EC2 Auto Scaling allows
//! 500 groups per region, 50 scaling policies, 125 scheduled actions and 10
//! SNS topics per group ("Quotas for Auto Scaling resources and groups");
//! Alibaba ESS's DescribeLimitation reports e.g. 200 groups per region and
//! 70 scaling configurations per group. Lifecycle hooks are capped by the
//! model itself (`ebb_core::model::hooks::MAX_HOOKS_PER_GROUP`).

use super::EngineError;

/// Twice AWS's 500 per region: one controller seldom has more.
pub const DEFAULT_MAX_GROUPS: usize = 1000;
/// ESS allows 70 per group; 100 leaves room for history kept for rollback.
pub const DEFAULT_MAX_CONFIGURATIONS: usize = 100;
/// AWS allows 50 policies per group.
pub const DEFAULT_MAX_RULES: usize = 100;
/// Rules' own alarms count too; a target-tracking rule owns two.
pub const DEFAULT_MAX_ALARMS: usize = 100;
/// AWS allows 125 scheduled actions per group.
pub const DEFAULT_MAX_TASKS: usize = 125;
/// AWS allows 10 SNS topics per group.
pub const DEFAULT_MAX_NOTIFICATIONS: usize = 10;

/// The caps, each named by its `[limits]` key in controller.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub groups: usize,
    pub configurations_per_group: usize,
    pub rules_per_group: usize,
    pub alarms_per_group: usize,
    pub tasks_per_group: usize,
    pub notifications_per_group: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            groups: DEFAULT_MAX_GROUPS,
            configurations_per_group: DEFAULT_MAX_CONFIGURATIONS,
            rules_per_group: DEFAULT_MAX_RULES,
            alarms_per_group: DEFAULT_MAX_ALARMS,
            tasks_per_group: DEFAULT_MAX_TASKS,
            notifications_per_group: DEFAULT_MAX_NOTIFICATIONS,
        }
    }
}

/// Refuses adding `adding` objects to `have` when that passes `cap`; the
/// sentence names what, where, the cap's key and what to do.
pub fn check(
    have: usize,
    adding: usize,
    cap: usize,
    (what, whose, key): (&str, &str, &str),
) -> Result<(), EngineError> {
    if have + adding <= cap {
        return Ok(());
    }
    Err(EngineError::Exhausted(format!(
        "{whose} already has {have} {what}, and limits.{key} allows {cap}: delete one, or raise limits.{key} in controller.toml"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_itself_is_allowed_one_more_is_not() {
        let names = ("scaling rules", "scaling group web", "rules_per_group");
        assert!(check(1, 1, 2, names).is_ok());
        let err = check(2, 1, 2, names).unwrap_err().to_string();
        assert_eq!(
            err,
            "scaling group web already has 2 scaling rules, and limits.rules_per_group allows 2: \
             delete one, or raise limits.rules_per_group in controller.toml"
        );
        // A rule that brings two alarms needs room for both.
        assert!(check(99, 2, 100, names).is_err());
    }
}
