use super::removal::{Candidate, pick_for_removal};
use super::*;

fn spec(min: u32, max: u32) -> GroupSpec {
    GroupSpec {
        name: Some("web".into()),
        min_size: Some(min),
        max_size: Some(max),
        ..Default::default()
    }
}

fn fields(e: &Invalid) -> Vec<&str> {
    e.0.iter().map(|f| f.field.as_str()).collect()
}

#[test]
fn a_new_group_takes_the_documented_defaults() {
    let g = ScalingGroup::create("asg-1".into(), &spec(2, 5), 7).unwrap();
    assert_eq!(g.desired_capacity, 2, "desired starts at min_size");
    assert_eq!(g.default_cooldown_secs, 300);
    assert_eq!(g.removal_policies, default_removal_policies());
    assert_eq!(g.health_check_type, HealthCheckType::Agent);
    assert_eq!(g.health_check_grace_period_secs, 60);
    assert_eq!(g.sampling_interval_secs, 5);
    assert_eq!(g.state, GroupState::Inactive);
    assert_eq!(g.created_at_ms, 7);
}

#[test]
fn group_validation_table() {
    struct Case {
        name: &'static str,
        spec: GroupSpec,
        fields: &'static [&'static str],
    }
    let with = |f: fn(&mut GroupSpec)| {
        let mut s = spec(1, 3);
        f(&mut s);
        s
    };
    let cases = [
        Case {
            name: "min > max",
            spec: spec(4, 3),
            fields: &["min_size"],
        },
        Case {
            name: "desired above max",
            spec: with(|s| s.desired_capacity = Some(4)),
            fields: &["desired_capacity"],
        },
        Case {
            name: "desired below min",
            spec: with(|s| s.desired_capacity = Some(0)),
            fields: &["desired_capacity"],
        },
        Case {
            name: "cooldown too long",
            spec: with(|s| s.default_cooldown_secs = Some(86_401)),
            fields: &["default_cooldown_secs"],
        },
        Case {
            name: "cooldown at limit",
            spec: with(|s| s.default_cooldown_secs = Some(86_400)),
            fields: &[],
        },
        Case {
            name: "unknown policy",
            spec: with(|s| s.removal_policies = Some(vec!["Random".into()])),
            fields: &["removal_policies[0]"],
        },
        Case {
            name: "three policies",
            spec: with(|s| {
                s.removal_policies = Some(vec![
                    "OldestInstance".into(),
                    "NewestInstance".into(),
                    "LeastBusy".into(),
                ])
            }),
            fields: &["removal_policies"],
        },
        Case {
            name: "duplicate policy",
            spec: with(|s| {
                s.removal_policies = Some(vec!["OldestInstance".into(), "OldestInstance".into()])
            }),
            fields: &["removal_policies[1]"],
        },
        Case {
            name: "no policy",
            spec: with(|s| s.removal_policies = Some(vec![])),
            fields: &["removal_policies"],
        },
        Case {
            name: "empty name",
            spec: with(|s| s.name = Some(String::new())),
            fields: &["name"],
        },
        Case {
            name: "long name",
            spec: with(|s| s.name = Some("a".repeat(65))),
            fields: &["name"],
        },
        Case {
            name: "bad name char",
            spec: with(|s| s.name = Some("web server".into())),
            fields: &["name"],
        },
        Case {
            name: "name starts with dash",
            spec: with(|s| s.name = Some("-web".into())),
            fields: &["name"],
        },
        Case {
            name: "missing name",
            spec: with(|s| s.name = None),
            fields: &["name", "name"],
        },
        Case {
            name: "bad health type",
            spec: with(|s| s.health_check_type = Some("ELB".into())),
            fields: &["health_check_type"],
        },
        Case {
            name: "sampling 0",
            spec: with(|s| s.sampling_interval_secs = Some(0)),
            fields: &["sampling_interval_secs"],
        },
        Case {
            name: "sampling 301",
            spec: with(|s| s.sampling_interval_secs = Some(301)),
            fields: &["sampling_interval_secs"],
        },
        Case {
            name: "huge max",
            spec: spec(0, MAX_GROUP_SIZE + 1),
            fields: &["max_size"],
        },
        Case {
            name: "LeastBusy allowed",
            spec: with(|s| {
                s.removal_policies = Some(vec!["LeastBusy".into(), "NewestInstance".into()])
            }),
            fields: &[],
        },
    ];
    for case in cases {
        let got = ScalingGroup::create("asg-1".into(), &case.spec, 0);
        match (got, case.fields) {
            (Ok(_), []) => {}
            (Ok(_), want) => panic!("{}: accepted, expected errors on {want:?}", case.name),
            (Err(e), want) => assert_eq!(fields(&e), want, "{}: {e}", case.name),
        }
    }
}

#[test]
fn every_problem_is_reported_at_once_with_a_readable_message() {
    let bad = GroupSpec {
        name: Some("x".into()),
        min_size: Some(5),
        max_size: Some(2),
        default_cooldown_secs: Some(100_000),
        removal_policies: Some(vec!["Nope".into()]),
        ..Default::default()
    };
    let e = ScalingGroup::create("asg-1".into(), &bad, 0).unwrap_err();
    assert_eq!(
        fields(&e),
        [
            "removal_policies[0]",
            "name",
            "min_size",
            "default_cooldown_secs"
        ]
    );
    let text = e.to_string();
    assert!(
        text.contains("min_size: 5 is greater than max_size 2"),
        "{text}"
    );
    assert!(
        text.contains("unknown value `Nope`; expected one of OldestScalingConfiguration"),
        "{text}"
    );
}

#[test]
fn modifying_bounds_pulls_desired_into_them() {
    let g = ScalingGroup::create("asg-1".into(), &spec(2, 5), 0).unwrap();
    let g = g
        .modified(&GroupSpec {
            desired_capacity: Some(4),
            ..Default::default()
        })
        .unwrap();
    let lowered = g
        .modified(&GroupSpec {
            max_size: Some(1),
            min_size: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(lowered.desired_capacity, 1);
    let raised = g
        .modified(&GroupSpec {
            min_size: Some(5),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(raised.desired_capacity, 5);
    let err = g
        .modified(&GroupSpec {
            max_size: Some(3),
            desired_capacity: Some(4),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(fields(&err), ["desired_capacity"]);
    let err = g
        .modified(&GroupSpec {
            min_size: Some(6),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(fields(&err), ["min_size"]);
}

#[test]
fn configuration_validation() {
    let ok = ConfigurationSpec {
        name: Some("v1".into()),
        command: Some(vec!["/bin/sleep".into(), "1000".into()]),
        env: Some([("PORT".to_string(), "8080".to_string())].into()),
        ..Default::default()
    };
    assert!(ScalingConfiguration::create("asc-1".into(), "asg-1".into(), &ok, 0).is_ok());
    let bad = ConfigurationSpec {
        name: None,
        command: Some(vec![String::new()]),
        env: Some(
            [
                ("1X".to_string(), String::new()),
                ("EBB_ID".to_string(), String::new()),
            ]
            .into(),
        ),
        tags: Some((0..21).map(|i| (format!("k{i}"), String::new())).collect()),
        user_data: Some("x".repeat(MAX_USER_DATA_BYTES + 1)),
        ..Default::default()
    };
    let e = ScalingConfiguration::create("asc-1".into(), "asg-1".into(), &bad, 0).unwrap_err();
    assert_eq!(
        fields(&e),
        [
            "name",
            "name",
            "command[0]",
            "env.1X",
            "env.EBB_ID",
            "tags",
            "user_data"
        ]
    );
}

#[test]
fn configuration_metric_sources_are_validated_kept_and_cleared() {
    let depth = MetricSource {
        name: "queue_depth".into(),
        prometheus: None,
        file: Some("/run/app/queue-depth".into()),
        command: None,
        timeout_ms: Some(500),
    };
    let spec = ConfigurationSpec {
        name: Some("v1".into()),
        metrics: Some(vec![depth.clone()]),
        ..Default::default()
    };
    let c = ScalingConfiguration::create("asc-1".into(), "asg-1".into(), &spec, 0).unwrap();
    assert_eq!(c.metrics, std::slice::from_ref(&depth));
    // Stored as JSON; a configuration stored before sources existed loads.
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["metrics"][0]["file"], "/run/app/queue-depth");
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("metrics");
    let loaded: ScalingConfiguration = serde_json::from_value(old).unwrap();
    assert!(loaded.metrics.is_empty());

    let twice = ConfigurationSpec {
        metrics: Some(vec![depth.clone(), depth]),
        ..Default::default()
    };
    let e = c.modified(&twice).unwrap_err();
    assert_eq!(
        e.to_string(),
        "metrics[1].name: `queue_depth` is already metrics[0]'s name"
    );
    let cleared = c
        .modified(&ConfigurationSpec {
            metrics: Some(Vec::new()),
            ..Default::default()
        })
        .unwrap();
    assert!(cleared.metrics.is_empty());
    let kept = c.modified(&ConfigurationSpec::default()).unwrap();
    assert_eq!(kept.metrics, c.metrics);
}

fn instance(id: &str, state: LifecycleState, health: HealthStatus, created: i64) -> Instance {
    Instance {
        id: id.into(),
        group_id: "asg-1".into(),
        configuration_id: Some("asc-1".into()),
        lifecycle_state: state,
        health_status: health,
        creation_type: CreationType::AutoCreated,
        address: None,
        created_at_ms: created,
        in_service_at_ms: None,
        activity_id: None,
        hook_waits: Vec::new(),
        attach_phase: None,
        provider_id: None,
        provider_address: None,
        launched_at_ms: None,
    }
}

#[test]
fn scale_in_selection_table() {
    use HealthStatus::*;
    use LifecycleState::*;
    let insts = [
        instance("a", InService, Healthy, 10),
        instance("b", InService, Healthy, 20),
        instance("c", InService, Unhealthy, 30),
        instance("d", Protected, Unhealthy, 1),
        instance("e", Standby, Healthy, 2),
        instance("f", InService, Healthy, 40),
    ];
    // configuration age: a and b come from an older configuration.
    let cfg_age = |id: &str| if matches!(id, "a" | "b") { 100 } else { 200 };
    let cpu = |id: &str| match id {
        "a" => Some(90.0),
        "b" => Some(5.0),
        "f" => Some(50.0),
        _ => None,
    };
    let candidates: Vec<Candidate<'_>> = insts
        .iter()
        .map(|i| Candidate {
            instance: i,
            configuration_created_at_ms: Some(cfg_age(&i.id)),
            recent_cpu: cpu(&i.id),
        })
        .collect();
    use RemovalPolicy::*;
    let table: [(&[RemovalPolicy], usize, &[&str]); 6] = [
        (
            &[OldestScalingConfiguration, OldestInstance],
            3,
            &["c", "a", "b"],
        ),
        (
            &[OldestScalingConfiguration, NewestInstance],
            3,
            &["c", "b", "a"],
        ),
        (&[NewestInstance], 2, &["c", "f"]),
        (&[OldestInstance], 10, &["c", "a", "b", "f"]),
        (&[LeastBusy], 4, &["c", "b", "f", "a"]),
        (&[], 2, &["c", "a"]),
    ];
    for (policies, n, want) in table {
        assert_eq!(
            pick_for_removal(&candidates, policies, n),
            want,
            "{policies:?}"
        );
    }
}

#[test]
fn enum_names_round_trip_and_unknown_names_are_listed() {
    for p in RemovalPolicy::ALL {
        assert_eq!(p.as_str().parse::<RemovalPolicy>().unwrap(), *p);
    }
    assert_eq!(
        "Pending:Wait".parse::<LifecycleState>().unwrap(),
        LifecycleState::PendingWait
    );
    let err = "Sometimes".parse::<HealthCheckType>().unwrap_err();
    assert_eq!(
        err,
        "unknown value `Sometimes`; expected one of AGENT, NONE"
    );
}
