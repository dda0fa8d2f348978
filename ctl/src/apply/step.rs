//! What a plan works on and yields: the controller's current `State`,
//! the `Step`s (calls) that close the gap, each with the line it prints,
//! and the `Change`s of fields those lines list.

use std::fmt;

use ebb_proto::v1 as pb;

/// One field that differs: its name and both values, for the printed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub field: &'static str,
    pub from: String,
    pub to: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} → {}", self.field, self.from, self.to)
    }
}

/// One call `apply` makes. Groups and configurations are named, not by id:
/// the API accepts either and a group being created has no id yet.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreateGroup(pb::CreateScalingGroupRequest),
    ModifyGroup {
        changes: Vec<Change>,
        request: pb::ModifyScalingGroupRequest,
    },
    CreateConfig(pb::CreateScalingConfigurationRequest),
    ModifyConfig {
        name: String,
        changes: Vec<Change>,
        request: pb::ModifyScalingConfigurationRequest,
    },
    /// Make the configuration (by name) the group's active one.
    Activate {
        group: String,
        configuration: String,
    },
    CreateRule(pb::CreateScalingRuleRequest),
    ModifyRule {
        changes: Vec<Change>,
        request: pb::ModifyScalingRuleRequest,
    },
    CreateAlarm(pb::CreateAlarmRequest),
    ModifyAlarm {
        changes: Vec<Change>,
        request: pb::ModifyAlarmRequest,
    },
    /// Enable (true) or disable an alarm, by name.
    SetAlarmEnabled {
        group: String,
        alarm: String,
        enabled: bool,
    },
    CreateTask(pb::CreateScheduledTaskRequest),
    ModifyTask {
        changes: Vec<Change>,
        request: pb::ModifyScheduledTaskRequest,
    },
    /// Attach one load balancer: new (no changes), again (it was
    /// detaching), or with the fields that differ.
    AttachLoadBalancer {
        again: bool,
        changes: Vec<Change>,
        request: pb::AttachLoadBalancersRequest,
    },
    /// Attach one database allow-list, new or with the fields that differ.
    AttachDbInstance {
        changes: Vec<Change>,
        request: pb::AttachDbInstancesRequest,
    },
    Enable {
        group: String,
    },
    Disable {
        group: String,
    },
    /// `--prune`: a rule, alarm or scheduled task the file no longer names.
    DeleteRule {
        group: String,
        rule: String,
    },
    DeleteAlarm {
        group: String,
        alarm: String,
    },
    DeleteTask {
        group: String,
        task: String,
    },
}

impl Step {
    /// What the step does, in the past tense once done.
    pub fn line(&self, done: bool) -> String {
        let v = |now: &'static str, past: &'static str| if done { past } else { now };
        let list = |c: &[Change]| {
            c.iter()
                .map(Change::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Step::CreateGroup(r) => format!("{} group {}", v("create", "created"), r.name),
            Step::ModifyGroup { changes, request } => format!(
                "{} group {}: {}",
                v("modify", "modified"),
                request.scaling_group,
                list(changes)
            ),
            Step::CreateConfig(r) => format!(
                "{} configuration {} in group {}",
                v("create", "created"),
                r.name,
                r.scaling_group
            ),
            Step::ModifyConfig { name, changes, .. } => {
                format!(
                    "{} configuration {name}: {}",
                    v("modify", "modified"),
                    list(changes)
                )
            }
            Step::Activate {
                group,
                configuration,
            } => format!(
                "{} {configuration} the active configuration of group {group}",
                v("make", "made")
            ),
            Step::CreateRule(r) => format!(
                "{} rule {} in group {}",
                v("create", "created"),
                r.name,
                r.scaling_group
            ),
            Step::ModifyRule { changes, request } => format!(
                "{} rule {}: {}",
                v("modify", "modified"),
                request.scaling_rule,
                list(changes)
            ),
            Step::CreateAlarm(r) => format!(
                "{} alarm {} in group {}",
                v("create", "created"),
                r.name,
                r.scaling_group
            ),
            Step::ModifyAlarm { changes, request } => format!(
                "{} alarm {}: {}",
                v("modify", "modified"),
                request.alarm,
                list(changes)
            ),
            Step::SetAlarmEnabled { alarm, enabled, .. } => {
                if *enabled {
                    format!("{} alarm {alarm}", v("enable", "enabled"))
                } else {
                    format!("{} alarm {alarm}", v("disable", "disabled"))
                }
            }
            Step::CreateTask(r) => format!(
                "{} scheduled task {} in group {}",
                v("create", "created"),
                r.name,
                r.scaling_group
            ),
            Step::ModifyTask { changes, request } => format!(
                "{} scheduled task {}: {}",
                v("modify", "modified"),
                request.scheduled_task,
                list(changes)
            ),
            Step::AttachLoadBalancer {
                again,
                changes,
                request,
            } => {
                let group = &request.scaling_group;
                let Some(l) = request.load_balancers.first() else {
                    return format!(
                        "{} no load balancer to group {group}",
                        v("attach", "attached")
                    );
                };
                let name = format!("{}/{}", l.target, l.backend);
                if changes.is_empty() {
                    format!(
                        "{} load balancer {name} to group {group}{}: port {}, weight {}, drain {}s",
                        v("attach", "attached"),
                        if *again {
                            " again (it was detaching)"
                        } else {
                            ""
                        },
                        l.port,
                        l.weight,
                        l.drain_timeout_secs.unwrap_or_default()
                    )
                } else {
                    format!(
                        "{} load balancer {name} in group {group}: {}",
                        v("modify", "modified"),
                        list(changes)
                    )
                }
            }
            Step::AttachDbInstance { changes, request } => {
                let group = &request.scaling_group;
                let Some(d) = request.db_instances.first() else {
                    return format!(
                        "{} no database instance to group {group}",
                        v("attach", "attached")
                    );
                };
                let name = format!("{}/{}/{}", d.target, d.database, d.user);
                if changes.is_empty() {
                    format!(
                        "{} database allow-list {name} to group {group}: auth method {}",
                        v("attach", "attached"),
                        d.auth_method
                    )
                } else {
                    format!(
                        "{} database allow-list {name} in group {group}: {}",
                        v("modify", "modified"),
                        list(changes)
                    )
                }
            }
            Step::Enable { group } => format!("{} group {group}", v("enable", "enabled")),
            Step::Disable { group } => format!("{} group {group}", v("disable", "disabled")),
            Step::DeleteRule { group, rule } => {
                format!(
                    "{} rule {rule} from group {group} (pruned)",
                    v("delete", "deleted")
                )
            }
            Step::DeleteAlarm { group, alarm } => {
                format!(
                    "{} alarm {alarm} from group {group} (pruned)",
                    v("delete", "deleted")
                )
            }
            Step::DeleteTask { group, task } => format!(
                "{} scheduled task {task} from group {group} (pruned)",
                v("delete", "deleted")
            ),
        }
    }
}

/// What the controller has: the group named in the file, if it exists, and
/// its configurations, rules, alarms, scheduled tasks and attachments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub group: Option<pb::ScalingGroup>,
    pub configurations: Vec<pb::ScalingConfiguration>,
    pub rules: Vec<pb::ScalingRule>,
    pub alarms: Vec<pb::Alarm>,
    pub tasks: Vec<pb::ScheduledTask>,
    pub load_balancers: Vec<pb::LoadBalancerAttachment>,
    pub db_instances: Vec<pb::DbInstanceAttachment>,
}
