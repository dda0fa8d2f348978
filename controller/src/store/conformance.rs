//! The conformance suite every [`Store`] backend passes: call [`run_all`]
//! with a function that makes a fresh, empty store.

use std::collections::{BTreeMap, VecDeque};

use super::{
    ActivityQuery, ClientToken, Delivery, DeliveryCount, DeliveryState, Detached, JoinScope,
    JoinToken, Revoked, Store, StoreError, Write,
};
use ebb_core::model::attachments::{AttachPhase, DbInstance, LoadBalancer};
use ebb_core::model::hooks::{HookWait, LifecycleHook, LifecycleResult, Transition};
use ebb_core::model::tasks::{AlarmRecord, AlarmTask, ScheduledTask, TaskAction};
use ebb_core::model::{
    Activity, ActivityStatus, CreationType, GroupState, HealthCheckType, HealthStatus, Instance,
    LifecycleState, Process, RemovalPolicy, ScalingConfiguration, ScalingGroup, Trigger,
};
use ebb_core::rules::predict::{MetricRollup, MinuteRollup};
use ebb_core::rules::{
    AdjustmentType, AlarmEval, AlarmSpec, AlarmState, Comparison, Metric, MissingData, PeriodPoint,
    RuleKind, ScaleInWindow, ScalingRule, Statistic, StepAdjustment,
};
use ebb_core::schedule::{Recurrence, Schedule};

type Case = fn(&dyn Store);

/// Every behaviour, by name; each runs on a store of its own.
const CASES: &[(&str, Case)] = &[
    ("groups_create_get_find", groups_create_get_find),
    ("groups_listed_by_name", groups_listed_by_name),
    ("group_name_taken_is_conflict", group_name_taken_is_conflict),
    ("group_id_taken_is_conflict", group_id_taken_is_conflict),
    ("failed_commit_writes_nothing", failed_commit_writes_nothing),
    (
        "writes_see_earlier_writes_of_their_commit",
        writes_see_earlier_writes_of_their_commit,
    ),
    ("empty_commit_is_ok", empty_commit_is_ok),
    ("update_group", update_group),
    (
        "update_group_onto_taken_name_is_conflict",
        update_group_onto_taken_name_is_conflict,
    ),
    (
        "update_missing_group_is_not_found",
        update_missing_group_is_not_found,
    ),
    ("delete_group_cascades", delete_group_cascades),
    (
        "deleting_missing_records_is_ok",
        deleting_missing_records_is_ok,
    ),
    ("configurations_put_get_list", configurations_put_get_list),
    ("configuration_put_replaces", configuration_put_replaces),
    (
        "configuration_name_unique_per_group",
        configuration_name_unique_per_group,
    ),
    (
        "configuration_rename_onto_taken_name_is_conflict",
        configuration_rename_onto_taken_name_is_conflict,
    ),
    (
        "configuration_in_missing_group_is_not_found",
        configuration_in_missing_group_is_not_found,
    ),
    ("delete_configuration", delete_configuration),
    ("instances_put_list_delete", instances_put_list_delete),
    (
        "instance_in_missing_group_is_not_found",
        instance_in_missing_group_is_not_found,
    ),
    (
        "activities_newest_first_with_limit",
        activities_newest_first_with_limit,
    ),
    ("activity_put_replaces", activity_put_replaces),
    (
        "activity_in_missing_group_is_not_found",
        activity_in_missing_group_is_not_found,
    ),
    ("every_field_round_trips", every_field_round_trips),
    // Scaling rules, alarms and scheduled tasks: the same behaviours for each.
    ("rules_put_get_list", |s| named_put_get_list(s, &RULES)),
    ("alarms_put_get_list", |s| named_put_get_list(s, &ALARMS)),
    ("tasks_put_get_list", |s| named_put_get_list(s, &TASKS)),
    ("rule_put_replaces", |s| named_put_replaces(s, &RULES)),
    ("alarm_put_replaces", |s| named_put_replaces(s, &ALARMS)),
    ("task_put_replaces", |s| named_put_replaces(s, &TASKS)),
    ("rule_name_unique_per_group", |s| {
        named_name_unique_per_group(s, &RULES)
    }),
    ("alarm_name_unique_per_group", |s| {
        named_name_unique_per_group(s, &ALARMS)
    }),
    ("task_name_unique_per_group", |s| {
        named_name_unique_per_group(s, &TASKS)
    }),
    ("rule_rename_onto_taken_name_is_conflict", |s| {
        named_rename_onto_taken_name_is_conflict(s, &RULES)
    }),
    ("alarm_rename_onto_taken_name_is_conflict", |s| {
        named_rename_onto_taken_name_is_conflict(s, &ALARMS)
    }),
    ("task_rename_onto_taken_name_is_conflict", |s| {
        named_rename_onto_taken_name_is_conflict(s, &TASKS)
    }),
    ("rule_in_missing_group_is_not_found", |s| {
        named_in_missing_group_is_not_found(s, &RULES)
    }),
    ("alarm_in_missing_group_is_not_found", |s| {
        named_in_missing_group_is_not_found(s, &ALARMS)
    }),
    ("task_in_missing_group_is_not_found", |s| {
        named_in_missing_group_is_not_found(s, &TASKS)
    }),
    ("delete_rule", |s| named_delete(s, &RULES)),
    ("delete_alarm", |s| named_delete(s, &ALARMS)),
    ("delete_task", |s| named_delete(s, &TASKS)),
    ("delete_group_cascades_to_rules", |s| {
        named_delete_group_cascades(s, &RULES)
    }),
    ("delete_group_cascades_to_alarms", |s| {
        named_delete_group_cascades(s, &ALARMS)
    }),
    ("delete_group_cascades_to_tasks", |s| {
        named_delete_group_cascades(s, &TASKS)
    }),
    (
        "rules_alarms_tasks_in_one_commit",
        rules_alarms_tasks_in_one_commit,
    ),
    ("rule_every_field_round_trips", rule_every_field_round_trips),
    (
        "alarm_every_field_round_trips",
        alarm_every_field_round_trips,
    ),
    ("task_every_field_round_trips", task_every_field_round_trips),
    ("listings_follow_every_commit", listings_follow_every_commit),
    ("detached_outlive_their_group", detached_outlive_their_group),
    (
        "revocations_are_kept_as_first_written",
        revocations_are_kept_as_first_written,
    ),
    (
        "certificates_latest_per_identity",
        certificates_latest_per_identity,
    ),
    (
        "join_tokens_belong_to_their_group",
        join_tokens_belong_to_their_group,
    ),
    (
        "activities_filtered_before_the_limit",
        activities_filtered_before_the_limit,
    ),
    ("activities_since_and_by_page", activities_since_and_by_page),
    (
        "prune_keeps_the_newest_the_running_and_the_latest_completed",
        prune_keeps_the_newest_the_running_and_the_latest_completed,
    ),
    (
        "rollups_per_group_and_minute_pruned_by_age",
        rollups_per_group_and_minute_pruned_by_age,
    ),
    (
        "deliveries_enqueued_once_listed_when_due_and_pruned",
        deliveries_enqueued_once_listed_when_due_and_pruned,
    ),
    (
        "client_tokens_kept_replaced_and_pruned",
        client_tokens_kept_replaced_and_pruned,
    ),
];

/// Runs every case, each on a store from `make`; panics naming the first that fails.
pub(crate) fn run_all(make: &dyn Fn() -> Box<dyn Store>) {
    for (name, case) in CASES {
        let store = make();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(store.as_ref())));
        if let Err(panic) = outcome {
            eprintln!("store conformance case `{name}` failed");
            std::panic::resume_unwind(panic);
        }
    }
}

pub(super) fn group(id: &str, name: &str) -> ScalingGroup {
    ScalingGroup {
        id: id.into(),
        name: name.into(),
        min_size: 1,
        max_size: 5,
        desired_capacity: 2,
        default_cooldown_secs: 300,
        removal_policies: vec![
            RemovalPolicy::OldestScalingConfiguration,
            RemovalPolicy::OldestInstance,
        ],
        health_check_type: HealthCheckType::Agent,
        health_check_grace_period_secs: 60,
        sampling_interval_secs: 5,
        deletion_protection: false,
        state: GroupState::Inactive,
        active_configuration_id: None,
        created_at_ms: 1_000,
        suspended_processes: Vec::new(),
        notifications: Vec::new(),
        lifecycle_hooks: Vec::new(),
        load_balancers: Vec::new(),
        db_instances: Vec::new(),
    }
}

fn configuration(id: &str, group_id: &str, name: &str, created_at_ms: i64) -> ScalingConfiguration {
    ScalingConfiguration {
        id: id.into(),
        group_id: group_id.into(),
        name: name.into(),
        instance_type: String::new(),
        command: Vec::new(),
        env: BTreeMap::new(),
        tags: BTreeMap::new(),
        user_data: String::new(),
        created_at_ms,
        health_checks: Vec::new(),
        metrics: Vec::new(),
        exec: None,
        microvm: None,
    }
}

pub(crate) fn instance(id: &str, group_id: &str, created_at_ms: i64) -> Instance {
    Instance {
        id: id.into(),
        group_id: group_id.into(),
        configuration_id: None,
        lifecycle_state: LifecycleState::Pending,
        health_status: HealthStatus::Healthy,
        creation_type: CreationType::AutoCreated,
        address: None,
        created_at_ms,
        in_service_at_ms: None,
        activity_id: None,
        hook_waits: Vec::new(),
        attach_phase: None,
        provider_id: None,
        provider_address: None,
        launched_at_ms: None,
    }
}

pub(super) fn activity(id: &str, group_id: &str, started_at_ms: i64) -> Activity {
    Activity {
        id: id.into(),
        group_id: group_id.into(),
        cause: "a test".into(),
        trigger: Trigger::Api,
        status: ActivityStatus::InProgress,
        progress: 0,
        capacity_from: 1,
        capacity_to: 2,
        created_instances: Vec::new(),
        removed_instances: Vec::new(),
        started_at_ms,
        ended_at_ms: None,
        error: None,
        details: Vec::new(),
        initiated_by: None,
    }
}

fn commit(store: &dyn Store, writes: Vec<Write>) {
    store.commit(writes).expect("commit");
}

fn conflict(result: super::Result<()>) -> String {
    match result {
        Err(StoreError::Conflict(m)) => m,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

fn not_found(result: super::Result<()>) -> String {
    match result {
        Err(StoreError::NotFound(m)) => m,
        other => panic!("expected NotFound, got {other:?}"),
    }
}

fn ids<T>(records: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    records.iter().map(|r| id(r).to_owned()).collect()
}

fn group_ids(store: &dyn Store) -> Vec<String> {
    ids(&store.list_groups().unwrap(), |g| &g.id)
}

fn configuration_ids(store: &dyn Store, group_id: Option<&str>) -> Vec<String> {
    ids(&store.list_configurations(group_id).unwrap(), |c| &c.id)
}

fn instance_ids(store: &dyn Store, group_id: Option<&str>) -> Vec<String> {
    ids(&store.list_instances(group_id).unwrap(), |i| &i.id)
}

fn activity_ids(store: &dyn Store, group_id: Option<&str>, limit: usize) -> Vec<String> {
    ids(&store.list_activities(group_id, limit).unwrap(), |a| &a.id)
}

fn groups_create_get_find(store: &dyn Store) {
    assert_eq!(store.get_group("asg-1").unwrap(), None);
    assert_eq!(store.find_group_by_name("web").unwrap(), None);
    let web = group("asg-1", "web");
    commit(store, vec![Write::CreateGroup(web.clone())]);
    assert_eq!(store.get_group("asg-1").unwrap(), Some(web.clone()));
    assert_eq!(store.find_group_by_name("web").unwrap(), Some(web));
    assert_eq!(
        store.find_group_by_name("Web").unwrap(),
        None,
        "names are case sensitive"
    );
    assert_eq!(store.get_group("asg-2").unwrap(), None);
}

fn groups_listed_by_name(store: &dyn Store) {
    assert!(store.list_groups().unwrap().is_empty());
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "workers")),
            Write::CreateGroup(group("asg-2", "api")),
        ],
    );
    commit(store, vec![Write::CreateGroup(group("asg-3", "batch"))]);
    assert_eq!(group_ids(store), ["asg-2", "asg-3", "asg-1"]);
}

fn group_name_taken_is_conflict(store: &dyn Store) {
    commit(store, vec![Write::CreateGroup(group("asg-1", "web"))]);
    let message = conflict(store.commit(vec![Write::CreateGroup(group("asg-2", "web"))]));
    assert_eq!(message, "a scaling group named `web` already exists");
    assert_eq!(store.get_group("asg-2").unwrap(), None);
    assert_eq!(group_ids(store), ["asg-1"]);
}

fn group_id_taken_is_conflict(store: &dyn Store) {
    commit(store, vec![Write::CreateGroup(group("asg-1", "web"))]);
    let message = conflict(store.commit(vec![Write::CreateGroup(group("asg-1", "api"))]));
    assert_eq!(message, "scaling group asg-1 already exists");
    assert_eq!(store.get_group("asg-1").unwrap().unwrap().name, "web");
    assert_eq!(store.find_group_by_name("api").unwrap(), None);
}

fn failed_commit_writes_nothing(store: &dyn Store) {
    commit(store, vec![Write::CreateGroup(group("asg-1", "web"))]);
    let mut raised = store.get_group("asg-1").unwrap().unwrap();
    raised.desired_capacity = 4;

    // A good write, then one breaking a uniqueness rule.
    let result = store.commit(vec![
        Write::CreateGroup(group("asg-2", "api")),
        Write::UpdateGroup(raised.clone()),
        Write::PutActivity(activity("act-1", "asg-1", 10)),
        Write::CreateGroup(group("asg-3", "web")),
    ]);
    conflict(result);
    assert_eq!(store.get_group("asg-2").unwrap(), None);
    assert_eq!(
        store.get_group("asg-1").unwrap().unwrap().desired_capacity,
        2
    );
    assert_eq!(store.get_activity("act-1").unwrap(), None);
    assert_eq!(group_ids(store), ["asg-1"]);

    // A good write, then one naming a missing group.
    let result = store.commit(vec![
        Write::UpdateGroup(raised),
        Write::PutInstance(instance("i-1", "asg-1", 10)),
        Write::PutInstance(instance("i-2", "asg-missing", 10)),
    ]);
    not_found(result);
    assert_eq!(
        store.get_group("asg-1").unwrap().unwrap().desired_capacity,
        2
    );
    assert!(instance_ids(store, None).is_empty());

    // A good write, then a delete of everything, then a conflict: the group survives.
    let result = store.commit(vec![
        Write::PutConfiguration(configuration("cfg-1", "asg-1", "v1", 10)),
        Write::DeleteGroup("asg-1".into()),
        Write::CreateGroup(group("asg-4", "api")),
        Write::CreateGroup(group("asg-5", "api")),
    ]);
    conflict(result);
    assert!(store.get_group("asg-1").unwrap().is_some());
    assert!(configuration_ids(store, None).is_empty());
}

fn writes_see_earlier_writes_of_their_commit(store: &dyn Store) {
    let mut web = group("asg-1", "web");
    web.active_configuration_id = Some("cfg-1".into());
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::PutConfiguration(configuration("cfg-1", "asg-1", "v1", 10)),
            Write::UpdateGroup(web.clone()),
            Write::PutInstance(instance("i-1", "asg-1", 20)),
            Write::PutActivity(activity("act-1", "asg-1", 20)),
            Write::DeleteInstance("i-1".into()),
        ],
    );
    assert_eq!(store.get_group("asg-1").unwrap(), Some(web));
    assert_eq!(configuration_ids(store, Some("asg-1")), ["cfg-1"]);
    assert!(instance_ids(store, None).is_empty());
    assert_eq!(activity_ids(store, None, 10), ["act-1"]);

    // A name freed earlier in a commit may be taken later in it.
    commit(
        store,
        vec![
            Write::DeleteGroup("asg-1".into()),
            Write::CreateGroup(group("asg-2", "web")),
        ],
    );
    assert_eq!(group_ids(store), ["asg-2"]);
}

fn empty_commit_is_ok(store: &dyn Store) {
    commit(store, Vec::new());
    assert!(store.list_groups().unwrap().is_empty());
}

fn update_group(store: &dyn Store) {
    commit(store, vec![Write::CreateGroup(group("asg-1", "web"))]);
    let mut changed = group("asg-1", "frontend");
    changed.desired_capacity = 5;
    changed.state = GroupState::Active;
    changed.active_configuration_id = Some("cfg-1".into());
    commit(store, vec![Write::UpdateGroup(changed.clone())]);
    assert_eq!(store.get_group("asg-1").unwrap(), Some(changed.clone()));
    assert_eq!(store.find_group_by_name("frontend").unwrap(), Some(changed));
    assert_eq!(
        store.find_group_by_name("web").unwrap(),
        None,
        "the old name is free"
    );
    commit(store, vec![Write::CreateGroup(group("asg-2", "web"))]);
    assert_eq!(group_ids(store), ["asg-1", "asg-2"]);
}

fn update_group_onto_taken_name_is_conflict(store: &dyn Store) {
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::CreateGroup(group("asg-2", "api")),
        ],
    );
    let message = conflict(store.commit(vec![Write::UpdateGroup(group("asg-2", "web"))]));
    assert_eq!(message, "a scaling group named `web` already exists");
    assert_eq!(store.get_group("asg-2").unwrap().unwrap().name, "api");
    // Keeping one's own name is not a conflict.
    let mut api = group("asg-2", "api");
    api.max_size = 9;
    commit(store, vec![Write::UpdateGroup(api.clone())]);
    assert_eq!(store.get_group("asg-2").unwrap(), Some(api));
}

fn update_missing_group_is_not_found(store: &dyn Store) {
    let message = not_found(store.commit(vec![Write::UpdateGroup(group("asg-9", "web"))]));
    assert_eq!(message, "scaling group asg-9 does not exist");
    assert!(store.list_groups().unwrap().is_empty());
}

fn delete_group_cascades(store: &dyn Store) {
    let mut writes = Vec::new();
    for g in ["asg-1", "asg-2"] {
        writes.extend([
            Write::CreateGroup(group(g, &format!("name-{g}"))),
            Write::PutConfiguration(configuration(&format!("cfg-{g}"), g, "v1", 10)),
            Write::PutInstance(instance(&format!("i-{g}"), g, 10)),
            Write::PutActivity(activity(&format!("act-{g}"), g, 10)),
        ]);
    }
    commit(store, writes);
    commit(store, vec![Write::DeleteGroup("asg-1".into())]);

    assert_eq!(store.get_group("asg-1").unwrap(), None);
    assert_eq!(store.find_group_by_name("name-asg-1").unwrap(), None);
    assert_eq!(store.get_configuration("cfg-asg-1").unwrap(), None);
    assert_eq!(store.get_instance("i-asg-1").unwrap(), None);
    assert_eq!(store.get_activity("act-asg-1").unwrap(), None);
    assert!(configuration_ids(store, Some("asg-1")).is_empty());
    assert!(instance_ids(store, Some("asg-1")).is_empty());
    assert!(activity_ids(store, Some("asg-1"), 10).is_empty());

    assert_eq!(group_ids(store), ["asg-2"]);
    assert_eq!(configuration_ids(store, None), ["cfg-asg-2"]);
    assert_eq!(instance_ids(store, None), ["i-asg-2"]);
    assert_eq!(activity_ids(store, None, 10), ["act-asg-2"]);

    // The name and ids are free again, with nothing left over.
    commit(
        store,
        vec![Write::CreateGroup(group("asg-1", "name-asg-1"))],
    );
    assert!(configuration_ids(store, Some("asg-1")).is_empty());
}

fn deleting_missing_records_is_ok(store: &dyn Store) {
    commit(
        store,
        vec![
            Write::DeleteGroup("asg-9".into()),
            Write::DeleteConfiguration("cfg-9".into()),
            Write::DeleteInstance("i-9".into()),
            Write::DeleteRule("rule-9".into()),
            Write::DeleteAlarm("alarm-9".into()),
            Write::DeleteTask("task-9".into()),
        ],
    );
}

fn configurations_put_get_list(store: &dyn Store) {
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::CreateGroup(group("asg-2", "api")),
        ],
    );
    assert!(configuration_ids(store, None).is_empty());
    assert!(configuration_ids(store, Some("asg-1")).is_empty());
    let v1 = configuration("cfg-c", "asg-1", "v1", 30);
    commit(
        store,
        vec![
            Write::PutConfiguration(v1.clone()),
            Write::PutConfiguration(configuration("cfg-a", "asg-1", "v2", 10)),
            Write::PutConfiguration(configuration("cfg-z", "asg-2", "v1", 20)),
        ],
    );
    // Ties on the creation time go by id.
    commit(
        store,
        vec![
            Write::PutConfiguration(configuration("cfg-e", "asg-1", "v4", 20)),
            Write::PutConfiguration(configuration("cfg-d", "asg-1", "v3", 20)),
        ],
    );
    assert_eq!(store.get_configuration("cfg-c").unwrap(), Some(v1));
    assert_eq!(store.get_configuration("cfg-x").unwrap(), None);
    assert_eq!(
        configuration_ids(store, Some("asg-1")),
        ["cfg-a", "cfg-d", "cfg-e", "cfg-c"]
    );
    assert_eq!(configuration_ids(store, Some("asg-2")), ["cfg-z"]);
    assert_eq!(
        configuration_ids(store, None),
        ["cfg-a", "cfg-d", "cfg-e", "cfg-z", "cfg-c"]
    );
    assert!(configuration_ids(store, Some("asg-9")).is_empty());
}

fn configuration_put_replaces(store: &dyn Store) {
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::PutConfiguration(configuration("cfg-1", "asg-1", "v1", 10)),
        ],
    );
    let mut renamed = configuration("cfg-1", "asg-1", "v1-renamed", 10);
    renamed.instance_type = "large".into();
    commit(store, vec![Write::PutConfiguration(renamed.clone())]);
    assert_eq!(store.get_configuration("cfg-1").unwrap(), Some(renamed));
    assert_eq!(configuration_ids(store, None), ["cfg-1"]);
    // The old name is free.
    commit(
        store,
        vec![Write::PutConfiguration(configuration(
            "cfg-2", "asg-1", "v1", 20,
        ))],
    );
    assert_eq!(configuration_ids(store, Some("asg-1")), ["cfg-1", "cfg-2"]);
}

fn configuration_name_unique_per_group(store: &dyn Store) {
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::CreateGroup(group("asg-2", "api")),
            Write::PutConfiguration(configuration("cfg-1", "asg-1", "v1", 10)),
        ],
    );
    let message = conflict(store.commit(vec![Write::PutConfiguration(configuration(
        "cfg-2", "asg-1", "v1", 20,
    ))]));
    assert_eq!(
        message,
        "scaling configuration `v1` already exists in group asg-1"
    );
    assert_eq!(store.get_configuration("cfg-2").unwrap(), None);
    commit(
        store,
        vec![Write::PutConfiguration(configuration(
            "cfg-3", "asg-2", "v1", 20,
        ))],
    );
    assert_eq!(configuration_ids(store, None), ["cfg-1", "cfg-3"]);
}

fn configuration_rename_onto_taken_name_is_conflict(store: &dyn Store) {
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::PutConfiguration(configuration("cfg-1", "asg-1", "v1", 10)),
            Write::PutConfiguration(configuration("cfg-2", "asg-1", "v2", 20)),
        ],
    );
    let message = conflict(store.commit(vec![Write::PutConfiguration(configuration(
        "cfg-2", "asg-1", "v1", 20,
    ))]));
    assert_eq!(
        message,
        "scaling configuration `v1` already exists in group asg-1"
    );
    assert_eq!(
        store.get_configuration("cfg-1").unwrap().unwrap().name,
        "v1"
    );
    assert_eq!(
        store.get_configuration("cfg-2").unwrap().unwrap().name,
        "v2"
    );
}

fn configuration_in_missing_group_is_not_found(store: &dyn Store) {
    let message = not_found(store.commit(vec![Write::PutConfiguration(configuration(
        "cfg-1", "asg-9", "v1", 10,
    ))]));
    assert_eq!(message, "scaling group asg-9 does not exist");
    assert_eq!(store.get_configuration("cfg-1").unwrap(), None);
}

fn delete_configuration(store: &dyn Store) {
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::PutConfiguration(configuration("cfg-1", "asg-1", "v1", 10)),
            Write::PutConfiguration(configuration("cfg-2", "asg-1", "v2", 20)),
        ],
    );
    commit(store, vec![Write::DeleteConfiguration("cfg-1".into())]);
    assert_eq!(store.get_configuration("cfg-1").unwrap(), None);
    assert_eq!(configuration_ids(store, Some("asg-1")), ["cfg-2"]);
    assert!(store.get_group("asg-1").unwrap().is_some());
    // Its name is free again.
    commit(
        store,
        vec![Write::PutConfiguration(configuration(
            "cfg-3", "asg-1", "v1", 30,
        ))],
    );
}

fn instances_put_list_delete(store: &dyn Store) {
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::CreateGroup(group("asg-2", "api")),
        ],
    );
    assert!(instance_ids(store, None).is_empty());
    commit(
        store,
        vec![
            Write::PutInstance(instance("i-3", "asg-1", 30)),
            Write::PutInstance(instance("i-2", "asg-1", 10)),
            Write::PutInstance(instance("i-1", "asg-1", 10)),
            Write::PutInstance(instance("i-9", "asg-2", 20)),
        ],
    );
    assert_eq!(instance_ids(store, Some("asg-1")), ["i-1", "i-2", "i-3"]);
    assert_eq!(instance_ids(store, Some("asg-2")), ["i-9"]);
    assert_eq!(instance_ids(store, None), ["i-1", "i-2", "i-9", "i-3"]);

    // Put replaces: the state moves on, the instance stays one.
    let mut serving = instance("i-2", "asg-1", 10);
    serving.lifecycle_state = LifecycleState::InService;
    serving.address = Some("10.0.0.2".into());
    serving.in_service_at_ms = Some(15);
    commit(store, vec![Write::PutInstance(serving.clone())]);
    assert_eq!(store.get_instance("i-2").unwrap(), Some(serving));
    assert_eq!(instance_ids(store, Some("asg-1")), ["i-1", "i-2", "i-3"]);

    commit(store, vec![Write::DeleteInstance("i-1".into())]);
    assert_eq!(store.get_instance("i-1").unwrap(), None);
    assert_eq!(instance_ids(store, Some("asg-1")), ["i-2", "i-3"]);
}

fn instance_in_missing_group_is_not_found(store: &dyn Store) {
    let message = not_found(store.commit(vec![Write::PutInstance(instance("i-1", "asg-9", 10))]));
    assert_eq!(message, "scaling group asg-9 does not exist");
    assert_eq!(store.get_instance("i-1").unwrap(), None);
}

fn activities_newest_first_with_limit(store: &dyn Store) {
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::CreateGroup(group("asg-2", "api")),
        ],
    );
    assert!(activity_ids(store, None, 10).is_empty());
    commit(
        store,
        vec![
            Write::PutActivity(activity("act-1", "asg-1", 10)),
            Write::PutActivity(activity("act-3", "asg-1", 30)),
            Write::PutActivity(activity("act-2", "asg-1", 20)),
            Write::PutActivity(activity("act-4", "asg-1", 20)),
            Write::PutActivity(activity("act-9", "asg-2", 25)),
        ],
    );
    // Ties on the start time go by id, descending.
    assert_eq!(
        activity_ids(store, Some("asg-1"), 10),
        ["act-3", "act-4", "act-2", "act-1"]
    );
    assert_eq!(activity_ids(store, Some("asg-1"), 2), ["act-3", "act-4"]);
    assert!(activity_ids(store, Some("asg-1"), 0).is_empty());
    assert_eq!(activity_ids(store, Some("asg-2"), 10), ["act-9"]);
    assert_eq!(activity_ids(store, None, 3), ["act-3", "act-9", "act-4"]);
    assert_eq!(activity_ids(store, None, usize::MAX).len(), 5);
}

fn activity_put_replaces(store: &dyn Store) {
    let running = activity("act-1", "asg-1", 10);
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::PutActivity(running.clone()),
        ],
    );
    assert_eq!(store.get_activity("act-1").unwrap(), Some(running.clone()));
    let done = Activity {
        status: ActivityStatus::Successful,
        progress: 100,
        created_instances: vec!["i-1".into()],
        ended_at_ms: Some(40),
        ..running
    };
    commit(store, vec![Write::PutActivity(done.clone())]);
    assert_eq!(store.get_activity("act-1").unwrap(), Some(done));
    assert_eq!(activity_ids(store, None, 10), ["act-1"]);
}

fn activity_in_missing_group_is_not_found(store: &dyn Store) {
    let message = not_found(store.commit(vec![Write::PutActivity(activity("act-1", "asg-9", 10))]));
    assert_eq!(message, "scaling group asg-9 does not exist");
    assert_eq!(store.get_activity("act-1").unwrap(), None);
}

fn every_field_round_trips(store: &dyn Store) {
    let full_group = ScalingGroup {
        id: "asg-1".into(),
        name: "web.frontend_01".into(),
        min_size: 3,
        max_size: 10_000,
        desired_capacity: 7,
        default_cooldown_secs: 86_400,
        removal_policies: vec![RemovalPolicy::LeastBusy, RemovalPolicy::NewestInstance],
        health_check_type: HealthCheckType::None,
        health_check_grace_period_secs: 0,
        sampling_interval_secs: 300,
        deletion_protection: true,
        state: GroupState::Deleting,
        active_configuration_id: Some("cfg-1".into()),
        created_at_ms: 1_754_000_000_123,
        suspended_processes: vec![Process::ScaleIn, Process::AlarmNotification],
        notifications: Vec::new(),
        lifecycle_hooks: vec![LifecycleHook {
            id: "ash-1".into(),
            name: "drain".into(),
            transition: Transition::ScaleIn,
            heartbeat_timeout_secs: 21_600,
            default_result: LifecycleResult::Abandon,
            webhook: Some("http://10.0.0.5:8080/hook?x=1".into()),
            script: vec!["sh".into(), "-c".into(), "drain --grace 60 \"all\"".into()],
            created_at_ms: 1_754_000_000_000,
            secret: Some("a-hook-secret-of-32-bytes-length".into()),
        }],
        load_balancers: vec![LoadBalancer {
            target: "lb-1".into(),
            backend: "web:80".into(),
            port: 65_535,
            weight: 256,
            drain_timeout_secs: 3_600,
            detaching_since_ms: Some(1_754_000_000_999),
        }],
        db_instances: vec![DbInstance {
            target: "pg-1".into(),
            database: "all".into(),
            user: "app_rw".into(),
            auth_method: "scram-sha-256".into(),
        }],
    };
    let plain_group = group("asg-2", "plain");
    let full_configuration = ScalingConfiguration {
        id: "cfg-1".into(),
        group_id: "asg-1".into(),
        name: "v1".into(),
        instance_type: "large".into(),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo \"hi\" && sleep 1".into(),
        ],
        env: BTreeMap::from([
            ("PORT".into(), "8080".into()),
            ("GREETING".into(), "héllo, wörld ✓\n\t\"quoted\"".into()),
            ("EMPTY".into(), String::new()),
        ]),
        tags: BTreeMap::from([
            ("team".into(), "core".into()),
            ("env".into(), "prod".into()),
        ]),
        user_data: "#!/bin/sh\necho 'ready'\n\\0 not a nul\n".into(),
        created_at_ms: -5,
        health_checks: vec![ebb_core::model::LocalCheck {
            name: "web".into(),
            http: Some("http://127.0.0.1:8080/healthz".into()),
            tcp: None,
            command: None,
            interval_ms: Some(1_000),
            timeout_ms: None,
        }],
        metrics: vec![
            ebb_core::model::MetricSource {
                name: "rps".into(),
                prometheus: Some(ebb_core::model::PrometheusSource {
                    url: "http://127.0.0.1:9100/metrics".into(),
                    metric: "http_requests_total".into(),
                    labels: BTreeMap::from([("code".into(), "2\"00\"".into())]),
                }),
                file: None,
                command: None,
                timeout_ms: Some(500),
            },
            ebb_core::model::MetricSource {
                name: "queue_depth".into(),
                prometheus: None,
                file: Some("run/queue dépth".into()),
                command: None,
                timeout_ms: None,
            },
        ],
        // Not a launchable pair (the store keeps what it is given).
        exec: Some(ebb_core::model::ExecSettings {
            program: "/opt/ebb/launch wörld".into(),
            env: BTreeMap::from([("REGION".into(), "eu \"1\"".into())]),
            params: BTreeMap::from([("image".into(), "debian-12".into())]),
            launch_timeout_ms: Some(1),
            release_timeout_ms: None,
            list_timeout_ms: Some(u64::MAX),
            attempts: Some(7),
        }),
        microvm: Some(ebb_core::model::MicrovmSettings {
            vcpus: Some(2),
            memory_mib: None,
        }),
    };
    let plain_configuration = configuration("cfg-2", "asg-2", "v1", 0);
    let full_instance = Instance {
        id: "i-1".into(),
        group_id: "asg-1".into(),
        configuration_id: Some("cfg-1".into()),
        lifecycle_state: LifecycleState::RemovingWait,
        health_status: HealthStatus::Unhealthy,
        creation_type: CreationType::Attached,
        address: Some("[::1]:9000".into()),
        created_at_ms: i64::MAX,
        in_service_at_ms: Some(i64::MIN),
        activity_id: Some("act-1".into()),
        hook_waits: vec![HookWait {
            token: "lat-1".into(),
            hook_id: "ash-1".into(),
            hook_name: "drain".into(),
            transition: Transition::ScaleIn,
            heartbeat_timeout_secs: 21_600,
            default_result: LifecycleResult::Abandon,
            started_at_ms: 1,
            deadline_ms: i64::MAX,
            result: Some(LifecycleResult::Continue),
            outcome: Some("the script exited 0 after 5 ms (last output: ✓)".into()),
            script_sent: true,
            webhook_sent: false,
        }],
        attach_phase: Some(AttachPhase::Draining {
            since_ms: 1_754_000_000_500,
        }),
        provider_id: Some("qemu pid 4242".into()),
        provider_address: Some("10.88.0.7".into()),
        launched_at_ms: Some(1_754_000_000_700),
    };
    let plain_instance = instance("i-2", "asg-2", 0);
    let full_activity = Activity {
        id: "act-1".into(),
        group_id: "asg-1".into(),
        cause: "alarm `cpu-high` executed rule `add-2`, changing the Total Capacity from 2 to 4"
            .into(),
        trigger: Trigger::Alarm,
        status: ActivityStatus::Warning,
        progress: 100,
        capacity_from: u32::MAX,
        capacity_to: 0,
        created_instances: vec!["i-1".into(), "i-3".into()],
        removed_instances: vec!["i-0".into()],
        started_at_ms: 1,
        ended_at_ms: Some(2),
        error: Some("1 of 2 instances failed to start: exit status 1".into()),
        details: Vec::new(),
        initiated_by: Some("spiffe://ebb.test/admin/alice".into()),
    };
    let plain_activity = activity("act-2", "asg-2", 0);

    commit(
        store,
        vec![
            Write::CreateGroup(full_group.clone()),
            Write::CreateGroup(plain_group.clone()),
            Write::PutConfiguration(full_configuration.clone()),
            Write::PutConfiguration(plain_configuration.clone()),
            Write::PutInstance(full_instance.clone()),
            Write::PutInstance(plain_instance.clone()),
            Write::PutActivity(full_activity.clone()),
            Write::PutActivity(plain_activity.clone()),
        ],
    );
    assert_eq!(store.get_group("asg-1").unwrap(), Some(full_group.clone()));
    assert_eq!(store.get_group("asg-2").unwrap(), Some(plain_group.clone()));
    assert_eq!(store.list_groups().unwrap(), [plain_group, full_group]);
    assert_eq!(
        store.get_configuration("cfg-1").unwrap(),
        Some(full_configuration.clone())
    );
    assert_eq!(
        store.get_configuration("cfg-2").unwrap(),
        Some(plain_configuration.clone())
    );
    assert_eq!(
        store.list_configurations(None).unwrap(),
        [full_configuration, plain_configuration]
    );
    assert_eq!(
        store.get_instance("i-1").unwrap(),
        Some(full_instance.clone())
    );
    assert_eq!(
        store.get_instance("i-2").unwrap(),
        Some(plain_instance.clone())
    );
    assert_eq!(
        store.list_instances(None).unwrap(),
        [plain_instance, full_instance]
    );
    assert_eq!(
        store.get_activity("act-1").unwrap(),
        Some(full_activity.clone())
    );
    assert_eq!(
        store.get_activity("act-2").unwrap(),
        Some(plain_activity.clone())
    );
    assert_eq!(
        store.list_activities(None, 10).unwrap(),
        [full_activity, plain_activity]
    );
}

fn rule(id: &str, group_id: &str, name: &str, adjustment_value: i64) -> ScalingRule {
    ScalingRule {
        id: id.into(),
        group_id: group_id.into(),
        name: name.into(),
        kind: RuleKind::Simple {
            adjustment_type: AdjustmentType::QuantityChangeInCapacity,
            adjustment_value,
            min_adjustment_magnitude: None,
            cooldown_secs: None,
        },
    }
}

fn alarm(id: &str, group_id: &str, name: &str, created_at_ms: i64) -> AlarmTask {
    AlarmTask {
        id: id.into(),
        group_id: group_id.into(),
        name: name.into(),
        spec: AlarmSpec {
            metric: Metric::CpuUtilization,
            statistic: Statistic::Average,
            period_secs: 60,
            comparison: Comparison::Ge,
            threshold: 80.0,
            evaluation_count: 3,
            missing_data: MissingData::Missing,
        },
        alarm_actions: Vec::new(),
        enabled: true,
        eval: AlarmEval::default(),
        owner_rule_id: None,
        history: Vec::new(),
        last_period_end_ms: None,
        last_rejection: None,
        scale_in_window: None,
        created_at_ms,
    }
}

fn task(id: &str, group_id: &str, name: &str, created_at_ms: i64) -> ScheduledTask {
    ScheduledTask {
        id: id.into(),
        group_id: group_id.into(),
        name: name.into(),
        schedule: Schedule {
            launch_time: timestamp("2025-08-01T08:00:00Z"),
            recurrence: Recurrence::None,
            time_zone: "UTC".into(),
            recurrence_end_time: None,
            launch_expiration_secs: 600,
        },
        action: TaskAction::Capacity {
            min_size: None,
            max_size: None,
            desired_capacity: Some(2),
        },
        enabled: true,
        last_occurrence: None,
        last_result: None,
        created_at_ms,
    }
}

fn timestamp(rfc3339: &str) -> jiff::Timestamp {
    rfc3339.parse().expect("a timestamp")
}

/// One of the kinds named uniquely within their group (rules, alarms,
/// scheduled tasks), so each behaviour is written once for all three.
/// Records travel as the `Write` that puts them, which compares whole.
struct Named {
    /// How a Conflict message names the kind.
    what: &'static str,
    /// The put of a record; `x` varies a field other than id, group and name.
    put: fn(id: &str, group_id: &str, name: &str, x: i64) -> Write,
    delete: fn(String) -> Write,
    get: fn(&dyn Store, &str) -> Option<Write>,
    list: fn(&dyn Store, Option<&str>) -> Vec<Write>,
}

const RULES: Named = Named {
    what: "scaling rule",
    put: |id, g, name, x| Write::PutRule(rule(id, g, name, x)),
    delete: Write::DeleteRule,
    get: |s, id| s.get_rule(id).unwrap().map(Write::PutRule),
    list: |s, g| {
        s.list_rules(g)
            .unwrap()
            .into_iter()
            .map(Write::PutRule)
            .collect()
    },
};

const ALARMS: Named = Named {
    what: "alarm",
    put: |id, g, name, x| Write::PutAlarm(alarm(id, g, name, x)),
    delete: Write::DeleteAlarm,
    get: |s, id| s.get_alarm(id).unwrap().map(Write::PutAlarm),
    list: |s, g| {
        s.list_alarms(g)
            .unwrap()
            .into_iter()
            .map(Write::PutAlarm)
            .collect()
    },
};

const TASKS: Named = Named {
    what: "scheduled task",
    put: |id, g, name, x| Write::PutTask(task(id, g, name, x)),
    delete: Write::DeleteTask,
    get: |s, id| s.get_task(id).unwrap().map(Write::PutTask),
    list: |s, g| {
        s.list_tasks(g)
            .unwrap()
            .into_iter()
            .map(Write::PutTask)
            .collect()
    },
};

impl Named {
    fn ids(&self, store: &dyn Store, group_id: Option<&str>) -> Vec<String> {
        (self.list)(store, group_id)
            .iter()
            .map(|w| match w {
                Write::PutRule(r) => r.id.clone(),
                Write::PutAlarm(a) => a.id.clone(),
                Write::PutTask(t) => t.id.clone(),
                other => unreachable!("not a named record: {other:?}"),
            })
            .collect()
    }

    fn taken(&self, name: &str, group_id: &str) -> String {
        format!("{} `{name}` already exists in group {group_id}", self.what)
    }
}

fn two_groups(store: &dyn Store) {
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::CreateGroup(group("asg-2", "api")),
        ],
    );
}

fn named_put_get_list(store: &dyn Store, k: &Named) {
    two_groups(store);
    assert!(k.ids(store, None).is_empty());
    assert!(k.ids(store, Some("asg-1")).is_empty());
    assert_eq!((k.get)(store, "x-1"), None);
    let alpha = (k.put)("x-3", "asg-1", "alpha", 7);
    commit(
        store,
        vec![
            (k.put)("x-1", "asg-1", "gamma", 1),
            alpha.clone(),
            (k.put)("x-2", "asg-1", "beta", 2),
            (k.put)("x-4", "asg-2", "alpha", 3),
        ],
    );
    commit(store, vec![(k.put)("x-0", "asg-2", "delta", 4)]);

    assert_eq!((k.get)(store, "x-3"), Some(alpha.clone()));
    assert_eq!((k.get)(store, "x-9"), None);
    // By name, whatever the ids or the order of the puts.
    assert_eq!(k.ids(store, Some("asg-1")), ["x-3", "x-2", "x-1"]);
    assert_eq!(
        (k.list)(store, Some("asg-2")),
        [
            (k.put)("x-4", "asg-2", "alpha", 3),
            (k.put)("x-0", "asg-2", "delta", 4)
        ]
    );
    // All groups: by name, ties (one name in two groups) by id.
    assert_eq!(k.ids(store, None), ["x-3", "x-4", "x-2", "x-0", "x-1"]);
    assert_eq!((k.list)(store, None)[0], alpha);
    assert!(k.ids(store, Some("asg-9")).is_empty());
}

fn named_put_replaces(store: &dyn Store, k: &Named) {
    two_groups(store);
    commit(store, vec![(k.put)("x-1", "asg-1", "alpha", 1)]);
    let renamed = (k.put)("x-1", "asg-1", "alpha-renamed", 2);
    commit(store, vec![renamed.clone()]);
    assert_eq!((k.get)(store, "x-1"), Some(renamed.clone()));
    assert_eq!((k.list)(store, None), [renamed]);
    // Putting a record unchanged is no conflict with itself.
    commit(store, vec![(k.put)("x-1", "asg-1", "alpha-renamed", 3)]);
    // The old name is free.
    commit(store, vec![(k.put)("x-2", "asg-1", "alpha", 4)]);
    assert_eq!(k.ids(store, Some("asg-1")), ["x-2", "x-1"]);
    // A put may move a record to another group.
    let moved = (k.put)("x-1", "asg-2", "alpha-renamed", 5);
    commit(store, vec![moved.clone()]);
    assert_eq!(k.ids(store, Some("asg-1")), ["x-2"]);
    assert_eq!((k.list)(store, Some("asg-2")), [moved]);
    assert_eq!(k.ids(store, None), ["x-2", "x-1"]);
}

fn named_name_unique_per_group(store: &dyn Store, k: &Named) {
    two_groups(store);
    let original = (k.put)("x-1", "asg-1", "alpha", 1);
    commit(store, vec![original.clone()]);

    // Good writes, then the duplicate: none of the commit stays.
    let message = conflict(store.commit(vec![
        Write::CreateGroup(group("asg-3", "batch")),
        (k.put)("x-0", "asg-1", "beta", 2),
        (k.put)("x-3", "asg-3", "alpha", 2),
        (k.put)("x-2", "asg-1", "alpha", 2),
    ]));
    assert_eq!(message, k.taken("alpha", "asg-1"));
    for id in ["x-0", "x-2", "x-3"] {
        assert_eq!((k.get)(store, id), None, "{id}");
    }
    assert_eq!(store.get_group("asg-3").unwrap(), None);
    assert_eq!((k.get)(store, "x-1"), Some(original));
    assert_eq!(k.ids(store, None), ["x-1"]);

    // The same name in another group is fine.
    commit(store, vec![(k.put)("x-4", "asg-2", "alpha", 3)]);
    assert_eq!(k.ids(store, Some("asg-2")), ["x-4"]);
    assert_eq!(k.ids(store, None), ["x-1", "x-4"]);
}

fn named_rename_onto_taken_name_is_conflict(store: &dyn Store, k: &Named) {
    two_groups(store);
    let (alpha, beta, other) = (
        (k.put)("x-1", "asg-1", "alpha", 1),
        (k.put)("x-2", "asg-1", "beta", 2),
        (k.put)("x-3", "asg-2", "alpha", 3),
    );
    commit(store, vec![alpha.clone(), beta.clone(), other.clone()]);
    let message = conflict(store.commit(vec![(k.put)("x-2", "asg-1", "alpha", 2)]));
    assert_eq!(message, k.taken("alpha", "asg-1"));
    // Moving into a group where the name is taken, too.
    let message = conflict(store.commit(vec![(k.put)("x-3", "asg-1", "alpha", 3)]));
    assert_eq!(message, k.taken("alpha", "asg-1"));
    assert_eq!((k.get)(store, "x-1"), Some(alpha));
    assert_eq!((k.get)(store, "x-2"), Some(beta));
    assert_eq!((k.get)(store, "x-3"), Some(other));
}

fn named_in_missing_group_is_not_found(store: &dyn Store, k: &Named) {
    let message = not_found(store.commit(vec![(k.put)("x-1", "asg-9", "alpha", 1)]));
    assert_eq!(message, "scaling group asg-9 does not exist");
    assert_eq!((k.get)(store, "x-1"), None);

    // A good write before it is rolled back; a record is not moved out of its group.
    commit(store, vec![Write::CreateGroup(group("asg-1", "web"))]);
    let kept = (k.put)("x-2", "asg-1", "beta", 2);
    commit(store, vec![kept.clone()]);
    let message = not_found(store.commit(vec![
        (k.put)("x-3", "asg-1", "alpha", 3),
        (k.put)("x-2", "asg-9", "beta", 2),
    ]));
    assert_eq!(message, "scaling group asg-9 does not exist");
    assert_eq!((k.get)(store, "x-3"), None);
    assert_eq!((k.list)(store, None), [kept]);
}

fn named_delete(store: &dyn Store, k: &Named) {
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            (k.put)("x-1", "asg-1", "alpha", 1),
            (k.put)("x-2", "asg-1", "beta", 2),
        ],
    );
    commit(store, vec![(k.delete)("x-1".into())]);
    assert_eq!((k.get)(store, "x-1"), None);
    assert_eq!(k.ids(store, Some("asg-1")), ["x-2"]);
    assert!(store.get_group("asg-1").unwrap().is_some());
    // Deleting what is gone is fine.
    commit(
        store,
        vec![(k.delete)("x-1".into()), (k.delete)("x-9".into())],
    );
    // Its name is free again, even later in the commit that frees it.
    commit(
        store,
        vec![
            (k.put)("x-3", "asg-1", "alpha", 3),
            (k.delete)("x-2".into()),
            (k.put)("x-4", "asg-1", "beta", 4),
        ],
    );
    assert_eq!(k.ids(store, None), ["x-3", "x-4"]);
}

fn named_delete_group_cascades(store: &dyn Store, k: &Named) {
    let mut writes = Vec::new();
    for g in ["asg-1", "asg-2"] {
        writes.extend([
            Write::CreateGroup(group(g, &format!("name-{g}"))),
            (k.put)(&format!("x-{g}-a"), g, "alpha", 1),
            (k.put)(&format!("x-{g}-b"), g, "beta", 2),
        ]);
    }
    commit(store, writes);
    commit(store, vec![Write::DeleteGroup("asg-1".into())]);

    assert_eq!((k.get)(store, "x-asg-1-a"), None);
    assert_eq!((k.get)(store, "x-asg-1-b"), None);
    assert!(k.ids(store, Some("asg-1")).is_empty());
    assert_eq!(k.ids(store, None), ["x-asg-2-a", "x-asg-2-b"]);

    // The group and the names come back with nothing left over.
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "name-asg-1")),
            (k.put)("x-new", "asg-1", "alpha", 3),
        ],
    );
    assert_eq!(k.ids(store, Some("asg-1")), ["x-new"]);
}

fn rules_alarms_tasks_in_one_commit(store: &dyn Store) {
    // The kinds are separate: one name may be a rule, an alarm and a task.
    let mut watch = alarm("alarm-1", "asg-1", "cpu", 1);
    watch.alarm_actions = vec!["rule-1".into()];
    let mut run = task("task-1", "asg-1", "cpu", 1);
    run.action = TaskAction::Rule {
        rule_id: "rule-1".into(),
    };
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::PutRule(rule("rule-1", "asg-1", "cpu", 1)),
            Write::PutAlarm(watch.clone()),
            Write::PutTask(run.clone()),
        ],
    );
    assert_eq!(
        store.list_rules(Some("asg-1")).unwrap(),
        [rule("rule-1", "asg-1", "cpu", 1)]
    );
    assert_eq!(store.list_alarms(Some("asg-1")).unwrap(), [watch.clone()]);
    assert_eq!(store.list_tasks(Some("asg-1")).unwrap(), [run.clone()]);

    // A conflict among the tasks rolls back the rule and alarm writes too.
    let result = store.commit(vec![
        Write::DeleteRule("rule-1".into()),
        Write::PutRule(rule("rule-2", "asg-1", "mem", 2)),
        Write::PutAlarm(alarm("alarm-2", "asg-1", "mem", 2)),
        Write::DeleteAlarm("alarm-1".into()),
        Write::PutTask(task("task-2", "asg-1", "cpu", 2)),
    ]);
    assert_eq!(
        conflict(result),
        "scheduled task `cpu` already exists in group asg-1"
    );
    assert_eq!(
        store.list_rules(None).unwrap(),
        [rule("rule-1", "asg-1", "cpu", 1)]
    );
    assert_eq!(store.list_alarms(None).unwrap(), [watch]);
    assert_eq!(store.list_tasks(None).unwrap(), [run]);

    // And a group's deletion takes all three kinds with it.
    commit(store, vec![Write::DeleteGroup("asg-1".into())]);
    assert!(store.list_rules(None).unwrap().is_empty());
    assert!(store.list_alarms(None).unwrap().is_empty());
    assert!(store.list_tasks(None).unwrap().is_empty());
}

fn rule_every_field_round_trips(store: &dyn Store) {
    let step = ScalingRule {
        id: "rule-1".into(),
        group_id: "asg-1".into(),
        name: "step-out".into(),
        kind: RuleKind::Step {
            adjustment_type: AdjustmentType::PercentChangeInCapacity,
            step_adjustments: vec![
                StepAdjustment {
                    lower_bound: None,
                    upper_bound: Some(-10.5),
                    adjustment: -30,
                },
                StepAdjustment {
                    lower_bound: Some(-10.5),
                    upper_bound: Some(0.0),
                    adjustment: 0,
                },
                StepAdjustment {
                    lower_bound: Some(0.0),
                    upper_bound: Some(12.25),
                    adjustment: 20,
                },
                StepAdjustment {
                    lower_bound: Some(12.25),
                    upper_bound: None,
                    adjustment: 150,
                },
            ],
            min_adjustment_magnitude: Some(2),
            // Not the default (300), which a missing field would give.
            estimated_instance_warmup_secs: 0,
        },
    };
    let unbounded = ScalingRule {
        id: "rule-2".into(),
        group_id: "asg-1".into(),
        name: "step-any".into(),
        kind: RuleKind::Step {
            adjustment_type: AdjustmentType::QuantityChangeInCapacity,
            step_adjustments: vec![StepAdjustment {
                lower_bound: None,
                upper_bound: None,
                adjustment: i64::MIN,
            }],
            min_adjustment_magnitude: None,
            estimated_instance_warmup_secs: u32::MAX,
        },
    };
    let target = ScalingRule {
        id: "rule-3".into(),
        group_id: "asg-1".into(),
        name: "track-queue".into(),
        kind: RuleKind::TargetTracking {
            metric: Metric::Custom("queue_depth:per-instance.v2".into()),
            target_value: 100.0 / 3.0,
            disable_scale_in: true,
            estimated_instance_warmup_secs: 86_400,
            alarm_period: Default::default(),
            scale_in_stabilization_secs: 300,
        },
    };
    let simple = ScalingRule {
        id: "rule-4".into(),
        group_id: "asg-2".into(),
        name: "set-total".into(),
        kind: RuleKind::Simple {
            adjustment_type: AdjustmentType::TotalCapacity,
            adjustment_value: i64::MAX,
            min_adjustment_magnitude: Some(0),
            cooldown_secs: Some(0),
        },
    };
    let predictive = ScalingRule {
        id: "rule-5".into(),
        group_id: "asg-2".into(),
        name: "forecast".into(),
        kind: RuleKind::predictive(Metric::MemoryUtilization, 0.1),
    };
    let all = [step, unbounded, target, simple, predictive];
    let mut writes = vec![
        Write::CreateGroup(group("asg-1", "web")),
        Write::CreateGroup(group("asg-2", "api")),
    ];
    writes.extend(all.iter().cloned().map(Write::PutRule));
    commit(store, writes);
    for r in &all {
        assert_eq!(store.get_rule(&r.id).unwrap().as_ref(), Some(r), "{}", r.id);
    }
    let [step, unbounded, target, simple, predictive] = all;
    assert_eq!(
        store.list_rules(Some("asg-1")).unwrap(),
        [unbounded.clone(), step.clone(), target.clone()]
    );
    assert_eq!(
        store.list_rules(None).unwrap(),
        [predictive, simple, unbounded, step, target]
    );
}

fn alarm_every_field_round_trips(store: &dyn Store) {
    let full = AlarmTask {
        id: "alarm-1".into(),
        group_id: "asg-1".into(),
        name: "latency-high".into(),
        spec: AlarmSpec {
            metric: Metric::Custom("http_p99_latency_ms".into()),
            statistic: Statistic::P99,
            period_secs: 15,
            comparison: Comparison::Lt,
            threshold: -2.5,
            evaluation_count: 100,
            missing_data: MissingData::NotBreaching,
        },
        alarm_actions: vec!["rule-1".into(), "rule-2".into()],
        enabled: false,
        eval: AlarmEval {
            state: AlarmState::Alarm,
            since_ms: Some(1_754_000_000_456),
            history: VecDeque::from([
                PeriodPoint::Breaching(91.5),
                PeriodPoint::Missing,
                PeriodPoint::NotBreaching(-0.25),
                PeriodPoint::Breaching(0.0),
                PeriodPoint::NotBreaching(1e300),
            ]),
        },
        owner_rule_id: Some("rule-2".into()),
        history: vec![
            AlarmRecord {
                at_ms: 1_754_000_000_000,
                state: AlarmState::InsufficientData,
                value: None,
                explanation: "no data: 0 of 3 in-service instances answered".into(),
            },
            AlarmRecord {
                at_ms: 1_754_000_015_000,
                state: AlarmState::Alarm,
                value: Some(91.5),
                explanation: "p99 91.5 < -2.5 for \"3\" periods → ALARM ✓\n".into(),
            },
            AlarmRecord {
                at_ms: i64::MIN,
                state: AlarmState::Ok,
                value: Some(-0.125),
                explanation: String::new(),
            },
        ],
        last_period_end_ms: Some(1_754_000_015_000),
        scale_in_window: Some(ScaleInWindow {
            since_ms: Some(1_754_000_000_000),
            peaks: VecDeque::from([(1_754_000_005_000, 12), (1_754_000_015_000, 3)]),
        }),
        last_rejection: Some("cooldown: 120 s left".into()),
        created_at_ms: -1,
    };
    let mut ok = alarm("alarm-2", "asg-1", "cpu-low", 0);
    ok.spec.metric = Metric::TcpConnection;
    ok.spec.statistic = Statistic::Minimum;
    ok.spec.missing_data = MissingData::Ignore;
    ok.eval = AlarmEval {
        state: AlarmState::Ok,
        since_ms: Some(0),
        history: VecDeque::from([PeriodPoint::NotBreaching(3.0)]),
    };
    let plain = alarm("alarm-3", "asg-2", "cpu-high", 0);
    commit(
        store,
        vec![
            Write::CreateGroup(group("asg-1", "web")),
            Write::CreateGroup(group("asg-2", "api")),
            Write::PutAlarm(full.clone()),
            Write::PutAlarm(ok.clone()),
            Write::PutAlarm(plain.clone()),
        ],
    );
    assert_eq!(store.get_alarm("alarm-1").unwrap(), Some(full.clone()));
    assert_eq!(store.get_alarm("alarm-2").unwrap(), Some(ok.clone()));
    assert_eq!(store.get_alarm("alarm-3").unwrap(), Some(plain.clone()));
    assert_eq!(
        store.list_alarms(None).unwrap(),
        [plain, ok.clone(), full.clone()]
    );
    assert_eq!(store.list_alarms(Some("asg-1")).unwrap(), [ok, full]);
}

fn task_every_field_round_trips(store: &dyn Store) {
    let cron = ScheduledTask {
        id: "task-1".into(),
        group_id: "asg-1".into(),
        name: "weekday-morning".into(),
        schedule: Schedule {
            launch_time: timestamp("2025-03-30T01:30:00.123456789Z"),
            recurrence: Recurrence::Cron {
                expression: "30 2 * * 1-5".into(),
            },
            time_zone: "Europe/Berlin".into(),
            recurrence_end_time: Some(timestamp("2030-12-31T23:59:59.999Z")),
            launch_expiration_secs: 1800,
        },
        action: TaskAction::Rule {
            rule_id: "rule-1".into(),
        },
        enabled: false,
        last_occurrence: Some(timestamp("2025-08-01T00:30:00.000000001Z")),
        last_result: Some("act-42".into()),
        created_at_ms: 5,
    };
    let weekly = ScheduledTask {
        id: "task-2".into(),
        group_id: "asg-1".into(),
        name: "weekend".into(),
        schedule: Schedule {
            launch_time: timestamp("1969-07-20T20:17:40Z"),
            recurrence: Recurrence::Weekly { days: vec![0, 6] },
            time_zone: "America/New_York".into(),
            recurrence_end_time: None,
            launch_expiration_secs: 0,
        },
        action: TaskAction::Capacity {
            min_size: Some(0),
            max_size: Some(u32::MAX),
            desired_capacity: None,
        },
        enabled: true,
        last_occurrence: Some(timestamp("1970-01-01T00:00:00Z")),
        last_result: Some("dropped: 1800 s late, past its launch expiration".into()),
        created_at_ms: i64::MIN,
    };
    let mut monthly = task("task-3", "asg-2", "month-end", i64::MAX);
    monthly.schedule.recurrence = Recurrence::Monthly { from: 29, to: 31 };
    monthly.action = TaskAction::Capacity {
        min_size: None,
        max_size: None,
        desired_capacity: None,
    };
    let mut daily = task("task-4", "asg-2", "every-third-day", 0);
    daily.schedule.recurrence = Recurrence::Daily { every: 3 };
    daily.schedule.time_zone = "Asia/Kolkata".into();
    let once = task("task-5", "asg-2", "launch-day", 0);
    let all = [cron, weekly, monthly, daily, once];
    let mut writes = vec![
        Write::CreateGroup(group("asg-1", "web")),
        Write::CreateGroup(group("asg-2", "api")),
    ];
    writes.extend(all.iter().cloned().map(Write::PutTask));
    commit(store, writes);
    for t in &all {
        assert_eq!(store.get_task(&t.id).unwrap().as_ref(), Some(t), "{}", t.id);
    }
    let [cron, weekly, monthly, daily, once] = all;
    assert_eq!(
        store.list_tasks(Some("asg-1")).unwrap(),
        [cron.clone(), weekly.clone()]
    );
    assert_eq!(
        store.list_tasks(None).unwrap(),
        [daily, once, monthly, cron, weekly]
    );
}

/// Listings read again after each kind of commit show it (the SQLite
/// backend keeps listings in memory between commits).
fn listings_follow_every_commit(store: &dyn Store) {
    two_groups(store);
    let state = |id: &str| {
        store
            .list_instances(Some("asg-1"))
            .unwrap()
            .into_iter()
            .find(|i| i.id == id)
            .map(|i| i.lifecycle_state)
    };
    commit(
        store,
        vec![Write::PutInstance(instance("i-1", "asg-1", 10))],
    );
    assert_eq!(state("i-1"), Some(LifecycleState::Pending));
    assert_eq!(instance_ids(store, None), ["i-1"]);

    let mut changed = instance("i-1", "asg-1", 10);
    changed.lifecycle_state = LifecycleState::InService;
    commit(store, vec![Write::PutInstance(changed.clone())]);
    assert_eq!(state("i-1"), Some(LifecycleState::InService));

    // A failed commit changes nothing, listed or not.
    let mut failed = changed.clone();
    failed.lifecycle_state = LifecycleState::Removing;
    not_found(store.commit(vec![
        Write::PutInstance(failed),
        Write::PutInstance(instance("i-2", "asg-missing", 10)),
    ]));
    assert_eq!(state("i-1"), Some(LifecycleState::InService));

    commit(
        store,
        vec![Write::PutInstance(instance("i-2", "asg-2", 20))],
    );
    assert_eq!(instance_ids(store, None), ["i-1", "i-2"]);
    assert_eq!(instance_ids(store, Some("asg-2")), ["i-2"]);
    commit(store, vec![Write::DeleteInstance("i-1".into())]);
    assert_eq!(state("i-1"), None);
    assert_eq!(instance_ids(store, None), ["i-2"]);
    commit(store, vec![Write::DeleteGroup("asg-2".into())]);
    assert!(instance_ids(store, Some("asg-2")).is_empty());
    assert!(instance_ids(store, None).is_empty());

    // Alarms too (the SQLite backend keeps their listings as well).
    let k = &ALARMS;
    commit(store, vec![(k.put)("x-1", "asg-1", "alpha", 1)]);
    assert_eq!(
        (k.list)(store, Some("asg-1")),
        [(k.put)("x-1", "asg-1", "alpha", 1)]
    );
    commit(store, vec![(k.put)("x-1", "asg-1", "alpha", 2)]);
    assert_eq!((k.list)(store, None), [(k.put)("x-1", "asg-1", "alpha", 2)]);
    not_found(store.commit(vec![
        (k.put)("x-1", "asg-1", "alpha", 3),
        (k.put)("x-2", "asg-missing", "beta", 3),
    ]));
    assert_eq!((k.list)(store, None), [(k.put)("x-1", "asg-1", "alpha", 2)]);
    commit(store, vec![Write::DeleteGroup("asg-1".into())]);
    assert!((k.list)(store, None).is_empty());
}

fn detached_outlive_their_group(store: &dyn Store) {
    two_groups(store);
    let detached = |id: &str, group_id: &str, at: i64| Detached {
        instance_id: id.into(),
        group_id: group_id.into(),
        detached_at_ms: at,
    };
    assert!(store.list_detached().unwrap().is_empty());
    commit(
        store,
        vec![
            Write::PutDetached(detached("i-2", "asg-1", 10)),
            Write::PutDetached(detached("i-1", "asg-2", 20)),
        ],
    );
    assert_eq!(
        store.list_detached().unwrap(),
        [detached("i-1", "asg-2", 20), detached("i-2", "asg-1", 10)]
    );
    // Put replaces; a failed commit writes none of its records.
    commit(
        store,
        vec![Write::PutDetached(detached("i-1", "asg-1", 30))],
    );
    not_found(store.commit(vec![
        Write::PutDetached(detached("i-3", "asg-1", 40)),
        Write::PutInstance(instance("i-4", "asg-missing", 40)),
    ]));
    assert_eq!(
        store.list_detached().unwrap(),
        [detached("i-1", "asg-1", 30), detached("i-2", "asg-1", 10)]
    );
    // Deleting the group they left forgets nothing: they still run.
    commit(store, vec![Write::DeleteGroup("asg-1".into())]);
    assert_eq!(store.list_detached().unwrap().len(), 2);
    assert_eq!(
        store.get_detached("i-2").unwrap(),
        Some(detached("i-2", "asg-1", 10))
    );
    assert_eq!(store.get_detached("i-3").unwrap(), None);
}

fn revocations_are_kept_as_first_written(store: &dyn Store) {
    let revoked = |identity: &str, at: i64, reason: &str| Revoked {
        identity: identity.into(),
        revoked_at_ms: at,
        revoked_by: "spiffe://ebb.local/admin/alice".into(),
        reason: reason.into(),
    };
    assert!(store.list_revoked().unwrap().is_empty());
    let b = revoked("spiffe://ebb.local/instance/i-b", 10, "lost laptop");
    let a = revoked("spiffe://ebb.local/admin/bob", 20, "");
    commit(
        store,
        vec![Write::PutRevoked(b.clone()), Write::PutRevoked(a.clone())],
    );
    // A second revocation of the same identity changes nothing.
    commit(
        store,
        vec![Write::PutRevoked(revoked(
            "spiffe://ebb.local/instance/i-b",
            30,
            "again",
        ))],
    );
    // A failed commit writes none of its records.
    not_found(store.commit(vec![
        Write::PutRevoked(revoked("spiffe://ebb.local/instance/i-c", 40, "")),
        Write::PutInstance(instance("i-4", "asg-missing", 40)),
    ]));
    assert_eq!(store.list_revoked().unwrap(), [a, b]);
}

fn certificates_latest_per_identity(store: &dyn Store) {
    use super::{CertKind, CertRecord};
    let cert = |serial: &str, identity: &str, kind: CertKind, issued: i64, until: i64| CertRecord {
        serial: serial.into(),
        identity: identity.into(),
        kind,
        not_before_ms: issued - 300,
        not_after_ms: until,
        issued_at_ms: issued,
    };
    assert!(store.list_certificates().unwrap().is_empty());
    let agent = "spiffe://ebb.local/instance/i-1";
    let admin = "spiffe://ebb.local/admin/ops";
    commit(
        store,
        vec![
            Write::PutCertificate(cert("a1", agent, CertKind::Agent, 100, 200)),
            Write::PutCertificate(cert("s1", "localhost", CertKind::Server, 100, 900)),
            Write::PutCertificate(cert("o1", admin, CertKind::Admin, 100, 500)),
        ],
    );
    // A renewal: the identity's latest cert is listed, soonest expiry first.
    commit(
        store,
        vec![Write::PutCertificate(cert(
            "a2",
            agent,
            CertKind::Agent,
            150,
            600,
        ))],
    );
    let listed = store.list_certificates().unwrap();
    let serials: Vec<_> = listed.iter().map(|c| c.serial.as_str()).collect();
    assert_eq!(serials, ["o1", "a2", "s1"]);
    assert_eq!(listed[1], cert("a2", agent, CertKind::Agent, 150, 600));
    // A failed commit records nothing.
    not_found(store.commit(vec![
        Write::PutCertificate(cert("a3", agent, CertKind::Agent, 160, 9000)),
        Write::PutInstance(instance("i-4", "asg-missing", 40)),
    ]));
    assert_eq!(store.list_certificates().unwrap(), listed);
    // Issuing after the first agent cert expired forgets it; the live
    // one stays, and so do other identities'.
    commit(
        store,
        vec![Write::PutCertificate(cert(
            "a3",
            agent,
            CertKind::Agent,
            300,
            700,
        ))],
    );
    let serials: Vec<_> = store
        .list_certificates()
        .unwrap()
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(serials, ["o1", "a3", "s1"]);
    // Two that expire in the same second: the later issued is the latest.
    commit(
        store,
        vec![Write::PutCertificate(cert(
            "s2",
            "localhost",
            CertKind::Server,
            400,
            900,
        ))],
    );
    let server = store.list_certificates().unwrap().pop().unwrap();
    assert_eq!(server.serial, "s2");
    // A week after they expired, anyone's certificates are forgotten.
    let later = 900 + super::CERT_RETENTION_MS;
    commit(
        store,
        vec![Write::PutCertificate(cert(
            "n1",
            "spiffe://ebb.local/instance/i-2",
            CertKind::Agent,
            later,
            later + 100,
        ))],
    );
    let serials: Vec<_> = store
        .list_certificates()
        .unwrap()
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(
        serials,
        ["s2", "n1"],
        "o1 and a3 expired over a week before"
    );
}

fn join_tokens_belong_to_their_group(store: &dyn Store) {
    two_groups(store);
    let token = |id: &str, group_id: &str, at: i64| JoinToken {
        id: id.into(),
        scope: JoinScope::Group(group_id.into()),
        secret_sha256: "ab".repeat(32),
        created_at_ms: at,
        expires_at_ms: at + 3_600_000,
        uses_left: 1,
        created_by: "spiffe://ebb.local/admin/ops".into(),
        revoked: false,
    };
    assert!(store.list_join_tokens().unwrap().is_empty());
    assert_eq!(store.get_join_token("aaaaaa").unwrap(), None);
    commit(
        store,
        vec![
            Write::PutJoinToken(token("bbbbbb", "asg-1", 20)),
            Write::PutJoinToken(token("aaaaaa", "asg-2", 10)),
        ],
    );
    assert_eq!(
        store.list_join_tokens().unwrap(),
        [token("aaaaaa", "asg-2", 10), token("bbbbbb", "asg-1", 20)]
    );
    // Put replaces every field; a token of a missing group is NotFound and
    // its commit writes nothing.
    let used = JoinToken {
        uses_left: 0,
        revoked: true,
        ..token("bbbbbb", "asg-1", 20)
    };
    commit(store, vec![Write::PutJoinToken(used.clone())]);
    assert_eq!(store.get_join_token("bbbbbb").unwrap(), Some(used));
    not_found(store.commit(vec![
        Write::PutJoinToken(token("cccccc", "asg-1", 30)),
        Write::PutJoinToken(token("dddddd", "asg-missing", 30)),
    ]));
    assert_eq!(store.list_join_tokens().unwrap().len(), 2);
    commit(store, vec![Write::DeleteJoinToken("aaaaaa".into())]);
    assert_eq!(store.get_join_token("aaaaaa").unwrap(), None);
    // A target token belongs to no group, and outlives them all.
    let target = JoinToken {
        scope: JoinScope::Target("lb-1".into()),
        ..token("tttttt", "unused", 40)
    };
    commit(store, vec![Write::PutJoinToken(target.clone())]);
    assert_eq!(
        store.get_join_token("tttttt").unwrap(),
        Some(target.clone())
    );
    // A deleted group takes its tokens with it.
    commit(store, vec![Write::DeleteGroup("asg-1".into())]);
    assert_eq!(store.list_join_tokens().unwrap(), [target]);
}

fn found_ids(store: &dyn Store, query: ActivityQuery) -> Vec<String> {
    ids(&store.find_activities(&query).unwrap(), |a| &a.id)
}

fn activities_filtered_before_the_limit(store: &dyn Store) {
    two_groups(store);
    let with = |id: &str, group_id: &str, at: i64, status: ActivityStatus| Activity {
        status,
        ..activity(id, group_id, at)
    };
    // One long activity, then 30 that ended while it ran.
    let mut writes = vec![Write::PutActivity(with(
        "act-00",
        "asg-1",
        10,
        ActivityStatus::InProgress,
    ))];
    for i in 1..=30 {
        let status = if i % 3 == 0 {
            ActivityStatus::Successful
        } else {
            ActivityStatus::Rejected
        };
        writes.push(Write::PutActivity(with(
            &format!("act-{i:02}"),
            "asg-1",
            10 + i,
            status,
        )));
    }
    writes.push(Write::PutActivity(with(
        "act-99",
        "asg-2",
        50,
        ActivityStatus::InProgress,
    )));
    commit(store, writes);
    let query = |group: Option<&str>, status, limit| ActivityQuery {
        group_id: group.map(str::to_owned),
        status,
        limit,
        ..Default::default()
    };
    let running = Some(ActivityStatus::InProgress);
    assert_eq!(
        found_ids(store, query(Some("asg-1"), running, 1)),
        ["act-00"]
    );
    assert_eq!(
        found_ids(store, query(None, running, 10)),
        ["act-99", "act-00"]
    );
    let done = Some(ActivityStatus::Successful);
    assert_eq!(
        found_ids(store, query(Some("asg-1"), done, 5)),
        ["act-30", "act-27", "act-24", "act-21", "act-18"]
    );
    assert_eq!(found_ids(store, query(Some("asg-1"), done, 100)).len(), 10);
    assert_eq!(
        found_ids(store, query(Some("asg-1"), None, 3)),
        ["act-30", "act-29", "act-28"]
    );
    assert_eq!(found_ids(store, query(None, None, 100)).len(), 32);
    assert!(found_ids(store, query(Some("asg-2"), done, 10)).is_empty());
    // A status that changes moves the activity between the filters.
    commit(
        store,
        vec![Write::PutActivity(with(
            "act-00",
            "asg-1",
            10,
            ActivityStatus::Warning,
        ))],
    );
    assert!(found_ids(store, query(Some("asg-1"), running, 1)).is_empty());
    assert_eq!(
        found_ids(store, query(None, Some(ActivityStatus::Warning), 10)),
        ["act-00"]
    );
}

fn activities_since_and_by_page(store: &dyn Store) {
    two_groups(store);
    let with = |id: &str, group_id: &str, at: i64, status: ActivityStatus| Activity {
        status,
        ..activity(id, group_id, at)
    };
    // Start times tie in pairs, so pages must break ties by id.
    let mut writes = Vec::new();
    for i in 0..20 {
        let status = if i % 2 == 0 {
            ActivityStatus::Successful
        } else {
            ActivityStatus::Rejected
        };
        writes.push(Write::PutActivity(with(
            &format!("act-{i:02}"),
            "asg-1",
            100 + i / 2,
            status,
        )));
    }
    writes.push(Write::PutActivity(with(
        "act-x",
        "asg-2",
        105,
        ActivityStatus::Successful,
    )));
    commit(store, writes);
    let since = |since_ms| ActivityQuery {
        group_id: Some("asg-1".into()),
        since_ms: Some(since_ms),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        found_ids(store, since(108)),
        ["act-19", "act-18", "act-17", "act-16"]
    );
    assert_eq!(found_ids(store, since(0)).len(), 20);
    assert!(found_ids(store, since(110)).is_empty());

    // Paging through every Successful one, 5 at a time: a page ends inside
    // a tie (act-x and act-10 both started at 105).
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .find_activities(&ActivityQuery {
                status: Some(ActivityStatus::Successful),
                since_ms: Some(101),
                after: after.clone(),
                limit: 5,
                ..Default::default()
            })
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.started_at_ms, last.id.clone()));
        pages.push(ids(&page, |a| &a.id));
    }
    assert_eq!(
        pages,
        [
            ["act-18", "act-16", "act-14", "act-12", "act-x"],
            ["act-10", "act-08", "act-06", "act-04", "act-02"],
        ]
    );
}

fn prune_keeps_the_newest_the_running_and_the_latest_completed(store: &dyn Store) {
    two_groups(store);
    let with = |id: &str, group_id: &str, at: i64, status: ActivityStatus| Activity {
        status,
        ..activity(id, group_id, at)
    };
    use ActivityStatus::{Failed, InProgress, Rejected, Successful, Warning};
    // Oldest first: a long-running activity, the latest Warning and
    // Successful ones, then a run of rejections and failures.
    let mut writes = vec![
        Write::PutActivity(with("act-a", "asg-1", 100, InProgress)),
        Write::PutActivity(with("act-b", "asg-1", 101, Successful)),
        Write::PutActivity(with("act-c", "asg-1", 102, Warning)),
        Write::PutActivity(with("act-d", "asg-1", 103, Successful)),
    ];
    for i in 0..6 {
        let status = if i % 2 == 0 { Rejected } else { Failed };
        writes.push(Write::PutActivity(with(
            &format!("act-r{i}"),
            "asg-1",
            200 + i,
            status,
        )));
    }
    writes.push(Write::PutActivity(with("act-x", "asg-2", 100, Rejected)));
    commit(store, writes);
    let all = |group: &str| {
        found_ids(
            store,
            ActivityQuery {
                group_id: Some(group.into()),
                limit: 100,
                ..Default::default()
            },
        )
    };

    // Nothing is old and there are fewer than 20: nothing goes.
    assert_eq!(store.prune_activities("asg-1", 20, 0).unwrap(), 0);
    assert_eq!(all("asg-1").len(), 10);

    // Keep 3: the three newest stay, and so do the running one and the
    // latest Successful and Warning, however old; the older Successful goes.
    assert_eq!(store.prune_activities("asg-1", 3, 0).unwrap(), 4);
    assert_eq!(
        all("asg-1"),
        ["act-r5", "act-r4", "act-r3", "act-d", "act-c", "act-a"]
    );
    // By age: everything that started before 204 goes, but the same three.
    assert_eq!(store.prune_activities("asg-1", 100, 204).unwrap(), 1);
    assert_eq!(
        all("asg-1"),
        ["act-r5", "act-r4", "act-d", "act-c", "act-a"]
    );
    assert_eq!(store.prune_activities("asg-1", 1, i64::MAX).unwrap(), 2);
    assert_eq!(all("asg-1"), ["act-d", "act-c", "act-a"]);
    // Another group's activities are never touched; an unknown group is no error.
    assert_eq!(all("asg-2"), ["act-x"]);
    assert_eq!(store.prune_activities("asg-9", 1, i64::MAX).unwrap(), 0);
}

fn rollup(group_id: &str, minute_ms: i64, cpu: f64) -> MinuteRollup {
    MinuteRollup {
        group_id: group_id.into(),
        minute_ms,
        in_service: 3,
        metrics: vec![
            MetricRollup {
                metric: "CpuUtilization".into(),
                average: cpu,
                max: cpu + 10.5,
                count: 36,
            },
            MetricRollup {
                metric: "queue_depth".into(),
                average: 7.25,
                max: 12.0,
                count: 35,
            },
        ],
    }
}

fn rollups_per_group_and_minute_pruned_by_age(store: &dyn Store) {
    two_groups(store);
    let minutes = |g: &str, since: i64| -> Vec<(i64, f64)> {
        store
            .list_rollups(g, since)
            .unwrap()
            .iter()
            .map(|r| (r.minute_ms, r.metrics[0].average))
            .collect()
    };
    // Written out of order, one group's minute replaced.
    commit(
        store,
        vec![
            Write::PutRollup(rollup("asg-1", 180_000, 30.0)),
            Write::PutRollup(rollup("asg-1", 60_000, 10.0)),
            Write::PutRollup(rollup("asg-1", 120_000, 20.0)),
            Write::PutRollup(rollup("asg-2", 60_000, 99.0)),
        ],
    );
    commit(
        store,
        vec![Write::PutRollup(rollup("asg-1", 120_000, 25.0))],
    );
    assert_eq!(
        minutes("asg-1", 0),
        [(60_000, 10.0), (120_000, 25.0), (180_000, 30.0)]
    );
    assert_eq!(
        minutes("asg-1", 120_000),
        [(120_000, 25.0), (180_000, 30.0)]
    );
    assert_eq!(
        store.list_rollups("asg-1", 0).unwrap()[0],
        rollup("asg-1", 60_000, 10.0)
    );
    assert_eq!(minutes("asg-2", 0), [(60_000, 99.0)]);
    // A minute of a group that does not exist.
    not_found(store.commit(vec![Write::PutRollup(rollup("asg-9", 60_000, 1.0))]));
    // Pruned by age across groups.
    assert_eq!(store.prune_rollups(120_000).unwrap(), 2);
    assert_eq!(minutes("asg-1", 0), [(120_000, 25.0), (180_000, 30.0)]);
    assert!(minutes("asg-2", 0).is_empty());
    assert_eq!(store.prune_rollups(120_000).unwrap(), 0);
    // Deleting the group deletes its minutes.
    commit(store, vec![Write::DeleteGroup("asg-1".into())]);
    assert!(minutes("asg-1", 0).is_empty());
}

fn delivery(id: &str, url: &str, due_ms: i64) -> Delivery {
    Delivery {
        id: id.into(),
        group_id: "asg-1".into(),
        state: DeliveryState::Pending,
        due_ms,
        created_at_ms: 1_000,
        url: url.into(),
        event: "SCALE_OUT_START".into(),
        body: r#"{"event":"SCALE_OUT_START"}"#.into(),
        secret: Some("0123456789abcdef".into()),
        timeout_ms: 5_000,
        attempts: 0,
        last_error: None,
    }
}

fn deliveries_enqueued_once_listed_when_due_and_pruned(store: &dyn Store) {
    two_groups(store);
    let due = |by: i64| -> Vec<String> {
        store
            .list_deliveries(DeliveryState::Pending, by, 10)
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect()
    };
    let a = delivery("act-1.SCALE_OUT_START.aa", "https://a/", 2_000);
    let b = delivery("act-1.SCALE_OUT_START.bb", "https://b/", 1_000);
    commit(
        store,
        vec![
            Write::EnqueueDelivery(a.clone()),
            Write::EnqueueDelivery(b.clone()),
        ],
    );
    assert_eq!(due(i64::MAX), [b.id.clone(), a.id.clone()], "soonest first");
    assert_eq!(due(1_500), std::slice::from_ref(&b.id));
    assert_eq!(
        store
            .list_deliveries(DeliveryState::Pending, i64::MAX, 10)
            .unwrap()[1],
        a
    );
    // An attempt's outcome replaces it; enqueueing the event again keeps it.
    let mut sent = b.clone();
    sent.state = DeliveryState::Delivered;
    sent.attempts = 1;
    sent.due_ms = 3_000;
    commit(store, vec![Write::PutDelivery(sent.clone())]);
    commit(store, vec![Write::EnqueueDelivery(b.clone())]);
    assert_eq!(due(i64::MAX), std::slice::from_ref(&a.id));
    assert_eq!(
        store
            .list_deliveries(DeliveryState::Delivered, i64::MAX, 10)
            .unwrap(),
        [sent]
    );
    // Deleted one by one (a target's, when the target is gone); a second
    // delete, or one of an id never stored, changes nothing.
    let c = delivery("act-2.SCALE_OUT_START.cc", "https://c/", 1_500);
    commit(store, vec![Write::EnqueueDelivery(c.clone())]);
    assert_eq!(due(i64::MAX), [c.id.clone(), a.id.clone()]);
    commit(store, vec![Write::DeleteDelivery(c.id.clone())]);
    commit(
        store,
        vec![
            Write::DeleteDelivery(c.id.clone()),
            Write::DeleteDelivery("act-9.SCALE_IN_START.zz".into()),
        ],
    );
    assert_eq!(due(i64::MAX), std::slice::from_ref(&a.id));
    // Not tied to the group: its deletion keeps them.
    commit(store, vec![Write::DeleteGroup("asg-1".into())]);
    let mut dead = a.clone();
    dead.state = DeliveryState::Dead;
    dead.due_ms = 9_000;
    dead.last_error = Some("HTTP 503".into());
    commit(store, vec![Write::PutDelivery(dead)]);
    let count = |url: &str, state| DeliveryCount {
        group_id: "asg-1".into(),
        url: url.into(),
        state,
        count: 1,
    };
    assert_eq!(
        store.count_deliveries().unwrap(),
        [
            count("https://a/", DeliveryState::Dead),
            count("https://b/", DeliveryState::Delivered)
        ]
    );
    // Pruned by state and age.
    assert_eq!(
        store.prune_deliveries(DeliveryState::Dead, 9_000).unwrap(),
        0
    );
    assert_eq!(
        store
            .prune_deliveries(DeliveryState::Delivered, 9_000)
            .unwrap(),
        1
    );
    assert_eq!(
        store.prune_deliveries(DeliveryState::Dead, 9_001).unwrap(),
        1
    );
    assert!(store.count_deliveries().unwrap().is_empty());
}

fn client_tokens_kept_replaced_and_pruned(store: &dyn Store) {
    let token = |t: &str, at: i64| ClientToken {
        token: t.into(),
        method: "scale_with_adjustment".into(),
        fingerprint: "ab".repeat(32),
        response_hex: "0a0361736131".into(),
        created_at_ms: at,
    };
    assert_eq!(store.get_client_token("t-1").unwrap(), None);
    commit(
        store,
        vec![
            Write::PutClientToken(token("t-1", 1_000)),
            Write::PutClientToken(token("t-2", 5_000)),
        ],
    );
    assert_eq!(
        store.get_client_token("t-1").unwrap(),
        Some(token("t-1", 1_000))
    );
    // Used again after it expired: replaced.
    let mut again = token("t-1", 9_000);
    again.method = "execute_scaling_rule".into();
    commit(store, vec![Write::PutClientToken(again.clone())]);
    assert_eq!(store.get_client_token("t-1").unwrap(), Some(again));
    assert_eq!(store.prune_client_tokens(6_000).unwrap(), 1);
    assert_eq!(store.get_client_token("t-2").unwrap(), None);
    assert!(store.get_client_token("t-1").unwrap().is_some());
}
