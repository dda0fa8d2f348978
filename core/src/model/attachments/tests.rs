use super::*;
use crate::model::{CreationType, GroupSpec};

fn group() -> ScalingGroup {
    let spec = GroupSpec {
        name: Some("web".into()),
        min_size: Some(0),
        max_size: Some(4),
        ..Default::default()
    };
    ScalingGroup::create("asg-1".into(), &spec, 0).unwrap()
}

fn lb(target: &str, backend: &str) -> LoadBalancerSpec {
    LoadBalancerSpec {
        target: target.into(),
        backend: backend.into(),
        port: 8080,
        ..Default::default()
    }
}

fn db(target: &str, database: &str, user: &str) -> DbInstanceSpec {
    DbInstanceSpec {
        target: target.into(),
        database: database.into(),
        user: user.into(),
        auth_method: None,
    }
}

fn instance(state: LifecycleState) -> Instance {
    Instance {
        id: "i-1".into(),
        group_id: "asg-1".into(),
        configuration_id: None,
        lifecycle_state: state,
        health_status: HealthStatus::Healthy,
        creation_type: CreationType::AutoCreated,
        address: Some("10.88.0.2".into()),
        created_at_ms: 0,
        in_service_at_ms: None,
        activity_id: None,
        hook_waits: Vec::new(),
        attach_phase: None,
        provider_id: None,
        provider_address: None,
        launched_at_ms: None,
    }
}

fn fields(e: &Invalid) -> Vec<&str> {
    e.0.iter().map(|f| f.field.as_str()).collect()
}

#[test]
fn a_load_balancer_takes_the_defaults_and_reattaching_updates_it() {
    let g = group().with_load_balancers(&[lb("lb1", "web")]).unwrap();
    assert_eq!(
        g.load_balancers,
        vec![LoadBalancer {
            target: "lb1".into(),
            backend: "web".into(),
            port: 8080,
            weight: DEFAULT_WEIGHT,
            drain_timeout_secs: DEFAULT_DRAIN_TIMEOUT_SECS,
            detaching_since_ms: None,
        }]
    );
    assert_eq!(g.load_balancers[0].attachment_id(&g.id), "asg-1/web");
    let mut heavier = lb("lb1", "web");
    heavier.weight = Some(10);
    heavier.drain_timeout_secs = Some(0);
    let g2 = g.with_load_balancers(&[heavier]).unwrap();
    assert_eq!(g2.load_balancers.len(), 1);
    assert_eq!(g2.load_balancers[0].weight, 10);
    assert_eq!(g2.load_balancers[0].drain_timeout_secs, 0);
}

#[test]
fn bad_load_balancers_name_every_field_and_change_nothing() {
    let g = group().with_load_balancers(&[lb("lb1", "web")]).unwrap();
    let bad = LoadBalancerSpec {
        target: "lb 1".into(),
        backend: "we b".into(),
        port: 70_000,
        weight: Some(0),
        drain_timeout_secs: Some(3_601),
    };
    let err = g.with_load_balancers(&[bad]).unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "load_balancers[0].target",
            "load_balancers[0].backend",
            "load_balancers[0].port",
            "load_balancers[0].weight",
            "load_balancers[0].drain_timeout_secs"
        ]
    );
    let err = g
        .with_load_balancers(&[lb("lb2", "web")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("already attached on target `lb1`"), "{err}");
    let err = g
        .with_load_balancers(&[lb("lb1", "api"), lb("lb1", "api")])
        .unwrap_err();
    assert_eq!(fields(&err), ["load_balancers[1]"]);
    assert_eq!(
        fields(&group().with_load_balancers(&[]).unwrap_err()),
        ["load_balancers"]
    );
    let six: Vec<_> = (0..6).map(|i| lb("lb1", &format!("b{i}"))).collect();
    assert_eq!(
        fields(&group().with_load_balancers(&six).unwrap_err()),
        ["load_balancers"]
    );
}

#[test]
fn detaching_marks_the_load_balancer_and_names_unknown_ones() {
    let g = group()
        .with_load_balancers(&[lb("lb1", "web"), lb("lb1", "api")])
        .unwrap();
    let d = g
        .without_load_balancers(&[("lb1".into(), "web".into())], 42)
        .unwrap();
    assert_eq!(d.load_balancers[0].detaching_since_ms, Some(42));
    assert_eq!(d.active_load_balancers().count(), 1);
    // A second detach keeps the first time; attaching again revives it.
    let d2 = d
        .without_load_balancers(&[("lb1".into(), "web".into())], 99)
        .unwrap();
    assert_eq!(d2.load_balancers[0].detaching_since_ms, Some(42));
    let back = d2.with_load_balancers(&[lb("lb1", "web")]).unwrap();
    assert_eq!(back.load_balancers[0].detaching_since_ms, None);
    let err = g
        .without_load_balancers(&[("lb2".into(), "web".into())], 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lb2/web is not attached to group web"),
        "{err}"
    );
}

#[test]
fn db_instances_check_names_and_methods() {
    let g = group()
        .with_db_instances(&[db("pg1", "app", "all")])
        .unwrap();
    assert_eq!(g.db_instances[0].auth_method, DEFAULT_AUTH_METHOD);
    assert_eq!(g.db_instances[0].attachment_id(&g.id), "asg-1/app/all");
    let bad = DbInstanceSpec {
        target: String::new(),
        database: "app db".into(),
        user: "+admins".into(),
        auth_method: Some("trust\nhost all all 0.0.0.0/0 trust".into()),
    };
    let err = g.with_db_instances(&[bad]).unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "db_instances[0].target",
            "db_instances[0].database",
            "db_instances[0].user",
            "db_instances[0].auth_method"
        ]
    );
    let gone = g
        .without_db_instances(&[("pg1".into(), "app".into(), "all".into())])
        .unwrap();
    assert!(gone.db_instances.is_empty());
    let err = g
        .without_db_instances(&[("pg1".into(), "other".into(), "all".into())])
        .unwrap_err();
    assert_eq!(fields(&err), ["db_instances[0]"]);
}

const LIVE: bool = false;
const LOST: bool = true;

#[test]
fn membership_follows_the_lifecycle() {
    use LifecycleState::*;
    let mut i = instance(Pending);
    assert_eq!(load_balancer_membership(&i, LIVE), None);
    assert!(!allowed(&i));
    i.attach_phase = Some(AttachPhase::Registering { since_ms: 1 });
    assert_eq!(load_balancer_membership(&i, LIVE), Some(Membership::Ready));
    assert!(allowed(&i));
    i.attach_phase = None;
    i.lifecycle_state = InService;
    assert_eq!(load_balancer_membership(&i, LIVE), Some(Membership::Ready));
    // Agent lost, unhealthy, Standby: off the load balancer at once.
    assert_eq!(load_balancer_membership(&i, LOST), Some(Membership::Maint));
    i.health_status = HealthStatus::Unhealthy;
    assert_eq!(load_balancer_membership(&i, LIVE), Some(Membership::Maint));
    i.health_status = HealthStatus::Healthy;
    i.lifecycle_state = Standby;
    assert_eq!(load_balancer_membership(&i, LIVE), Some(Membership::Maint));
    assert!(allowed(&i));
    i.lifecycle_state = Removing;
    i.attach_phase = Some(AttachPhase::Draining { since_ms: 2 });
    assert_eq!(load_balancer_membership(&i, LIVE), Some(Membership::Drain));
    i.attach_phase = Some(AttachPhase::Deregistering { since_ms: 3 });
    assert_eq!(load_balancer_membership(&i, LIVE), None);
    // Still allowed until its record is gone, after its release.
    assert!(allowed(&i));
    i.address = None;
    assert!(!allowed(&i));
    assert_eq!(load_balancer_membership(&i, LIVE), None);
}

#[test]
fn phases_round_trip_through_json_and_old_records_have_none() {
    let mut i = instance(LifecycleState::Removing);
    i.attach_phase = Some(AttachPhase::Draining { since_ms: 7 });
    let json = serde_json::to_string(&i).unwrap();
    assert!(
        json.contains(r#""attach_phase":{"phase":"draining","since_ms":7}"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Instance>(&json).unwrap(), i);
    i.attach_phase = None;
    let json = serde_json::to_string(&i).unwrap();
    assert!(!json.contains("attach_phase"));
    assert_eq!(serde_json::from_str::<Instance>(&json).unwrap(), i);
}
