//! Names for listings: group and rule ids to names, looked up over the
//! admin API.

use std::collections::{BTreeSet, HashMap};

use ebb_proto::v1 as pb;

use crate::conn::Admin;
use crate::view::{GroupNames, RuleNames};

/// Group ids to names; an empty map (ids shown) if the lookup fails, since
/// the names only decorate a listing.
pub async fn group_names(admin: &mut Admin) -> GroupNames {
    match admin
        .describe_scaling_groups(pb::DescribeScalingGroupsRequest::default())
        .await
    {
        Ok(r) => r
            .scaling_groups
            .into_iter()
            .map(|g| (g.id, g.name))
            .collect(),
        Err(_) => HashMap::new(),
    }
}

/// Rule ids to names for the groups given; best effort, like group names.
pub async fn rule_names(admin: &mut Admin, groups: impl IntoIterator<Item = String>) -> RuleNames {
    let mut names = RuleNames::new();
    let groups: BTreeSet<String> = groups.into_iter().collect();
    for g in groups {
        if let Ok(r) = admin
            .describe_scaling_rules(pb::DescribeScalingRulesRequest {
                scaling_group: g,
                ..Default::default()
            })
            .await
        {
            names.extend(r.scaling_rules.into_iter().map(|r| (r.id, r.name)));
        }
    }
    names
}
