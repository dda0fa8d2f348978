//! The conformance suite every [`Store`] backend passes: call [`run_all`]
//! with a function that makes a fresh, empty store.

use std::collections::BTreeMap;

use super::{Store, StoreError, Write};
use crate::model::{
    Activity, ActivityStatus, CreationType, GroupState, HealthCheckType, HealthStatus, Instance,
    LifecycleState, Process, RemovalPolicy, ScalingConfiguration, ScalingGroup, Trigger,
};

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

fn group(id: &str, name: &str) -> ScalingGroup {
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
    }
}

fn instance(id: &str, group_id: &str, created_at_ms: i64) -> Instance {
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
    }
}

fn activity(id: &str, group_id: &str, started_at_ms: i64) -> Activity {
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
