//! The file parsed and planned against what the controller has, from the
//! docs' examples and small files: the lines a user reads and the requests
//! sent.

use ebb_core::rules::RuleKind;
use ebb_proto::v1 as pb;

use super::file::{ApplyFile, parse};
use super::plan::plan;
use super::step::{State, Step};
use crate::automation::definition_json;

const EXAMPLE: &str = include_str!("../../../docs/examples/web.toml");

fn file() -> ApplyFile {
    parse("web.toml", EXAMPLE).unwrap()
}

/// The state the controller reports after the example was applied.
fn applied(f: &ApplyFile) -> (pb::ScalingGroup, Vec<pb::ScalingConfiguration>) {
    let g = &f.group;
    let c = &f.configuration;
    let group = pb::ScalingGroup {
        id: "asg-1".into(),
        name: g.name.clone(),
        min_size: g.min_size,
        max_size: g.max_size,
        desired_capacity: g.desired_capacity.unwrap_or(g.min_size),
        default_cooldown_secs: g.default_cooldown_secs.unwrap_or(300),
        removal_policies: g.removal_policies.clone().unwrap_or_default(),
        health_check_type: g.health_check_type.clone().unwrap_or("AGENT".into()),
        health_check_grace_period_secs: g.health_check_grace_period_secs.unwrap_or(60),
        sampling_interval_secs: g.sampling_interval_secs.unwrap_or(5),
        deletion_protection: g.deletion_protection.unwrap_or(false),
        state: "Active".into(),
        active_scaling_configuration_id: "asc-1".into(),
        ..Default::default()
    };
    let config = pb::ScalingConfiguration {
        id: "asc-1".into(),
        scaling_group_id: "asg-1".into(),
        name: c.name.clone(),
        instance_type: c.instance_type.clone(),
        command: c.command.clone(),
        env: c.env.clone().into_iter().collect(),
        tags: c.tags.clone().into_iter().collect(),
        user_data: c.user_data.clone(),
        active: true,
        ..Default::default()
    };
    (group, vec![config])
}

fn st(g: &pb::ScalingGroup, c: &[pb::ScalingConfiguration]) -> State {
    State {
        group: Some(g.clone()),
        configurations: c.to_vec(),
        ..State::default()
    }
}

fn lines(steps: &[Step]) -> Vec<String> {
    steps.iter().map(|s| s.line(true)).collect()
}

#[test]
fn the_example_parses() {
    let f = file();
    assert_eq!(f.group.name, "web");
    assert!(f.group.enabled);
    assert!(!f.configuration.command.is_empty());
}

#[test]
fn configuration_health_checks_are_sent_and_compared() {
    let text = format!(
        "{}\n[[configuration.health_checks]]\nname = \"web\"\nhttp = \"http://127.0.0.1:8080/healthz\"\ninterval_ms = 2000\n",
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/examples/web.toml"
        ))
        .unwrap()
    );
    let f = parse("web.toml", &text).unwrap();
    assert_eq!(f.configuration.health_checks.len(), 1);
    let steps = plan(&f, &State::default()).unwrap();
    let Step::CreateConfig(r) = &steps[1] else {
        panic!()
    };
    assert_eq!(r.health_checks[0].http, "http://127.0.0.1:8080/healthz");
    assert_eq!(r.health_checks[0].interval_ms, 2000);
    let bad = text.replace("http = \"http://127.0.0.1:8080/healthz\"", "htp = \"x\"");
    let err = parse("web.toml", &bad).unwrap_err().to_string();
    assert!(err.contains("htp"), "{err}");
}

#[test]
fn configuration_metrics_are_parsed_sent_and_compared() {
    let text = format!(
        r#"{EXAMPLE}
[[configuration.metrics]]
name = "queue_depth"
file = "/run/app/queue-depth"
timeout_ms = 500

[[configuration.metrics]]
name = "rps"
prometheus = {{ url = "http://127.0.0.1:9100/metrics", metric = "http_requests_total", labels = {{ code = "200" }} }}

[[configuration.metrics]]
name = "sessions"
command = ["/usr/local/bin/sessions", "--count"]
"#
    );
    let f = parse("web.toml", &text).unwrap();
    let m = &f.configuration.metrics;
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].file.as_deref(), Some("/run/app/queue-depth"));
    assert_eq!(m[0].timeout_ms, Some(500));
    let p = m[1].prometheus.as_ref().unwrap();
    assert_eq!(p.labels["code"], "200");
    assert_eq!(m[2].command.as_ref().unwrap()[1], "--count");

    let steps = plan(&f, &State::default()).unwrap();
    let Step::CreateConfig(r) = &steps[1] else {
        panic!("{steps:?}")
    };
    assert_eq!(r.metrics.len(), 3);
    assert_eq!(r.metrics[0].file, "/run/app/queue-depth");
    assert_eq!(r.metrics[0].timeout_ms, 500);
    assert_eq!(
        r.metrics[1].prometheus.as_ref().unwrap().metric,
        "http_requests_total"
    );
    assert_eq!(r.metrics[2].timeout_ms, 0, "0: the agent's default");

    // The controller has them: nothing to do.
    let (g, mut c) = applied(&f);
    c[0].metrics = r.metrics.clone();
    assert_eq!(plan(&f, &st(&g, &c)).unwrap(), []);
    // One source changed: the whole list is sent, the change shown.
    c[0].metrics[0].timeout_ms = 0;
    let steps = plan(&f, &st(&g, &c)).unwrap();
    let Step::ModifyConfig { request, .. } = &steps[0] else {
        panic!("{steps:?}")
    };
    assert!(request.set_metrics && !request.set_health_checks);
    assert_eq!(request.metrics, r.metrics);
    assert_eq!(
        lines(&steps),
        [concat!(
            "modified configuration web-v1: metrics ",
            "[queue_depth: file /run/app/queue-depth, ",
            "rps: prometheus http://127.0.0.1:9100/metrics http_requests_total{code=\"200\"}, ",
            "sessions: command /usr/local/bin/sessions --count] → ",
            "[queue_depth: file /run/app/queue-depth (timeout 500 ms), ",
            "rps: prometheus http://127.0.0.1:9100/metrics http_requests_total{code=\"200\"}, ",
            "sessions: command /usr/local/bin/sessions --count]"
        )]
    );
    // Left out of the file: the controller's are removed (the file is the whole template).
    let steps = plan(&file(), &st(&g, &c)).unwrap();
    let Step::ModifyConfig { request, .. } = &steps[0] else {
        panic!("{steps:?}")
    };
    assert!(request.set_metrics && request.metrics.is_empty());
}

#[test]
fn bad_configuration_metrics_are_named() {
    for (table, needle) in [
        (
            "name = \"queue depth\"\nfile = \"/run/q\"",
            "web.toml: configuration.metrics[0].name: `queue depth` may use only letters, digits, '_', '.', ':' and '-'",
        ),
        (
            "name = \"q\"\nfile = \"/run/q\"\ncommand = [\"x\"]",
            "configuration.metrics[0]: set exactly one of `prometheus`, `file` or `command`",
        ),
        (
            "name = \"CpuUtilization\"\nfile = \"/run/q\"",
            "configuration.metrics[0].name: `CpuUtilization` is a built-in metric",
        ),
        (
            "name = \"q\"\nprometheus = { url = \"https://h/m\", metric = \"m\" }",
            "configuration.metrics[0].prometheus.url: bad URL \"https://h/m\": https is not supported",
        ),
        (
            "name = \"q\"\nfile = \"/run/q\"\ntimeout_ms = 0",
            "configuration.metrics[0].timeout_ms: 0 is outside 1..=60000",
        ),
        (
            "name = \"q\"\nfile = \"/run/q\"\ninterval_ms = 5",
            "unknown field `interval_ms`",
        ),
        (
            "name = \"q\"\nprometheus = { url = \"http://h/\" }",
            "missing field `metric`",
        ),
    ] {
        let text = format!("{EXAMPLE}\n[[configuration.metrics]]\n{table}\n");
        let err = parse("web.toml", &text).unwrap_err().to_string();
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn from_nothing_creates_activates_and_enables() {
    let f = file();
    let steps = plan(&f, &State::default()).unwrap();
    assert_eq!(
        lines(&steps),
        [
            "created group web",
            "created configuration web-v1 in group web",
            "made web-v1 the active configuration of group web",
            "enabled group web",
        ]
    );
    let Step::CreateGroup(r) = &steps[0] else {
        panic!()
    };
    assert_eq!(
        (r.min_size, r.max_size, r.desired_capacity),
        (2, 6, Some(2))
    );
    assert_eq!(
        r.removal_policies,
        ["OldestScalingConfiguration", "OldestInstance"]
    );
    let Step::CreateConfig(r) = &steps[1] else {
        panic!()
    };
    assert_eq!(r.scaling_group, "web");
    assert_eq!(r.command, f.configuration.command);
    assert_eq!(r.env.get("PYTHONUNBUFFERED").map(String::as_str), Some("1"));
}

#[test]
fn equal_state_plans_nothing() {
    let f = file();
    let (g, c) = applied(&f);
    assert_eq!(plan(&f, &st(&g, &c)).unwrap(), []);
}

#[test]
fn a_changed_field_is_exactly_that_modify() {
    let f = file();
    let (mut g, c) = applied(&f);
    g.desired_capacity = 4;
    let steps = plan(&f, &st(&g, &c)).unwrap();
    assert_eq!(
        lines(&steps),
        ["modified group web: desired_capacity 4 → 2"]
    );
    let Step::ModifyGroup { request, .. } = &steps[0] else {
        panic!()
    };
    assert_eq!(
        *request,
        pb::ModifyScalingGroupRequest {
            scaling_group: "web".into(),
            desired_capacity: Some(2),
            ..Default::default()
        }
    );
}

#[test]
fn keys_left_out_of_the_file_are_left_alone() {
    let mut f = file();
    f.group.desired_capacity = None;
    f.group.default_cooldown_secs = None;
    let (mut g, c) = applied(&f);
    g.desired_capacity = 5;
    g.default_cooldown_secs = 60;
    assert_eq!(plan(&f, &st(&g, &c)).unwrap(), []);
}

#[test]
fn a_changed_configuration_is_modified_in_place() {
    let f = file();
    let (g, mut c) = applied(&f);
    c[0].command = vec!["sleep".into(), "1".into()];
    c[0].env.insert("EXTRA".into(), "1".into());
    let steps = plan(&f, &st(&g, &c)).unwrap();
    assert_eq!(steps.len(), 1);
    let Step::ModifyConfig {
        request, changes, ..
    } = &steps[0]
    else {
        panic!()
    };
    assert_eq!(request.scaling_configuration_id, "asc-1");
    assert!(request.set_command && request.set_env && !request.set_tags);
    assert_eq!(request.command, f.configuration.command);
    assert_eq!(request.instance_type, None);
    assert_eq!(request.user_data, None);
    assert_eq!(
        changes.iter().map(|c| c.field).collect::<Vec<_>>(),
        ["command", "env"]
    );
}

#[test]
fn a_new_configuration_name_is_created_and_made_active() {
    let mut f = file();
    f.configuration.name = "web-v2".into();
    let (g, c) = applied(&f.clone());
    let c: Vec<_> = c
        .into_iter()
        .map(|mut x| {
            x.name = "web-v1".into();
            x
        })
        .collect();
    assert_eq!(
        lines(&plan(&f, &st(&g, &c)).unwrap()),
        [
            "created configuration web-v2 in group web",
            "made web-v2 the active configuration of group web",
        ]
    );
}

#[test]
fn an_inactive_configuration_is_activated() {
    let f = file();
    let (mut g, c) = applied(&f);
    g.active_scaling_configuration_id = "asc-other".into();
    assert_eq!(
        lines(&plan(&f, &st(&g, &c)).unwrap()),
        ["made web-v1 the active configuration of group web"]
    );
}

#[test]
fn enabled_decides_enable_and_disable() {
    let mut f = file();
    let (mut g, c) = applied(&f);
    g.state = "Inactive".into();
    assert_eq!(
        lines(&plan(&f, &st(&g, &c)).unwrap()),
        ["enabled group web"]
    );
    f.group.enabled = false;
    assert_eq!(plan(&f, &st(&g, &c)).unwrap(), []);
    g.state = "Active".into();
    assert_eq!(
        lines(&plan(&f, &st(&g, &c)).unwrap()),
        ["disabled group web"]
    );
}

#[test]
fn a_group_being_deleted_is_refused() {
    let f = file();
    let (mut g, c) = applied(&f);
    g.state = "Deleting".into();
    assert!(plan(&f, &st(&g, &c)).unwrap_err().contains("being deleted"));
}

#[test]
fn dry_run_lines_are_in_the_present_tense() {
    let steps = plan(&file(), &State::default()).unwrap();
    assert_eq!(steps[0].line(false), "create group web");
}

const MINIMAL: &str = "[group]\nname = \"web\"\nmin_size = 1\nmax_size = 2\n\
                       [configuration]\nname = \"web-v1\"\n";

#[test]
fn a_minimal_file_takes_defaults() {
    let f = parse("m.toml", MINIMAL).unwrap();
    assert!(f.group.enabled);
    assert_eq!(f.group.desired_capacity, None);
    assert!(f.configuration.command.is_empty());
}

#[test]
fn an_unknown_key_is_named_with_file_and_line() {
    let text = MINIMAL.replace("max_size = 2", "max_size = 2\nmax_sise = 3");
    let err = parse("web.toml", &text).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(
        msg.starts_with("web.toml:5:1: group.max_sise: unknown field `max_sise`"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn a_wrong_type_is_named_with_its_key() {
    let text = MINIMAL.replace("min_size = 1", "min_size = \"one\"");
    let msg = parse("web.toml", &text).unwrap_err().to_string();
    assert!(
        msg.starts_with("web.toml:3:12: group.min_size: invalid type"),
        "{msg}"
    );
    let text = MINIMAL.replace(
        "name = \"web-v1\"",
        "name = \"web-v1\"\nenv = { PORT = 8080 }",
    );
    let msg = parse("web.toml", &text).unwrap_err().to_string();
    assert!(msg.contains("configuration.env: invalid type"), "{msg}");
}

#[test]
fn a_missing_section_or_key_is_named() {
    let msg = parse(
        "web.toml",
        "[group]\nname = \"web\"\nmin_size = 1\nmax_size = 2\n",
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("missing field `configuration`"), "{msg}");
    let msg = parse("web.toml", &MINIMAL.replace("max_size = 2\n", ""))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing field `max_size`"), "{msg}");
}

#[test]
fn domain_validation_reports_every_problem_with_its_key() {
    let text = MINIMAL
        .replace(
            "min_size = 1",
            "min_size = 3\nremoval_policies = [\"Newest\"]",
        )
        .replace(
            "name = \"web-v1\"",
            "name = \"web-v1\"\nenv = { EBB_X = \"1\" }",
        );
    let err = parse("web.toml", &text).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(msg.starts_with("web.toml: "), "{msg}");
    assert!(
        msg.contains("group.removal_policies[0]: unknown value `Newest`"),
        "{msg}"
    );
    assert!(
        msg.contains("group.min_size: 3 is greater than max_size 2"),
        "{msg}"
    );
    assert!(
        msg.contains("configuration.env.EBB_X: EBB_ variables are reserved"),
        "{msg}"
    );
}

const AUTOSCALED: &str = include_str!("../../../docs/examples/autoscaled.toml");

fn autoscaled() -> ApplyFile {
    parse("autoscaled.toml", AUTOSCALED).unwrap()
}

/// What the controller reports once `autoscaled.toml` is applied: ids,
/// the rule's owned alarms, times normalised to UTC.
fn autoscaled_state(f: &ApplyFile) -> State {
    let group = pb::ScalingGroup {
        id: "asg-1".into(),
        name: "api".into(),
        min_size: 1,
        max_size: 8,
        desired_capacity: 3,
        default_cooldown_secs: 300,
        removal_policies: vec!["OldestScalingConfiguration".into(), "OldestInstance".into()],
        health_check_type: "AGENT".into(),
        health_check_grace_period_secs: 60,
        sampling_interval_secs: 5,
        state: "Active".into(),
        active_scaling_configuration_id: "asc-1".into(),
        ..Default::default()
    };
    let c = &f.configuration;
    let config = pb::ScalingConfiguration {
        id: "asc-1".into(),
        scaling_group_id: "asg-1".into(),
        name: c.name.clone(),
        instance_type: c.instance_type.clone(),
        command: c.command.clone(),
        env: c.env.clone().into_iter().collect(),
        tags: c.tags.clone().into_iter().collect(),
        active: true,
        ..Default::default()
    };
    let rule = pb::ScalingRule {
        id: "asr-1".into(),
        scaling_group_id: "asg-1".into(),
        name: "cpu-50".into(),
        rule_type: "TargetTrackingScalingRule".into(),
        // Another key order and spelling of the numbers: compared as definitions.
        definition_json: r#"{"target_value":50,"metric":"CpuUtilization","rule_type":"TargetTrackingScalingRule","estimated_instance_warmup_secs":300,"disable_scale_in":false}"#.into(),
        owned_alarm_ids: vec!["asl-out".into(), "asl-in".into()],
    };
    let owned = |id: &str| pb::Alarm {
        id: id.into(),
        scaling_group_id: "asg-1".into(),
        name: format!("cpu-50-{id}"),
        owner_rule_id: "asr-1".into(),
        ..Default::default()
    };
    let task = |id: &str, name: &str, utc: &str, min: u32| pb::ScheduledTask {
        id: id.into(),
        scaling_group_id: "asg-1".into(),
        name: name.into(),
        launch_time: utc.into(),
        recurrence_type: "Daily".into(),
        recurrence_value: "1".into(),
        time_zone: "Europe/Berlin".into(),
        launch_expiration_secs: 600,
        enabled: true,
        min_size: Some(min),
        next_run: "2025-01-07T07:00:00Z".into(),
        ..Default::default()
    };
    State {
        group: Some(group),
        configurations: vec![config],
        rules: vec![rule],
        alarms: vec![owned("asl-out"), owned("asl-in")],
        tasks: vec![
            task("ast-1", "office-hours", "2025-01-06T07:00:00Z", 2),
            task("ast-2", "night", "2025-01-06T19:00:00Z", 1),
        ],
        ..State::default()
    }
}

#[test]
fn the_autoscaled_example_parses() {
    let f = autoscaled();
    assert_eq!(f.rules.len(), 1);
    assert_eq!(
        f.rules[0].kind,
        RuleKind::TargetTracking {
            metric: "CpuUtilization".to_owned().into(),
            target_value: 50.0,
            disable_scale_in: false,
            estimated_instance_warmup_secs: 300,
            alarm_period: Default::default(),
            scale_in_stabilization_secs: 300,
        }
    );
    assert_eq!(f.tasks.len(), 2);
    assert_eq!(f.tasks[0].time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(f.tasks[0].min_size, Some(2));
    assert_eq!(f.tasks[1].min_size, Some(1));
}

#[test]
fn from_nothing_creates_rules_before_tasks_and_enables_last() {
    let f = autoscaled();
    let steps = plan(&f, &State::default()).unwrap();
    assert_eq!(
        lines(&steps),
        [
            "created group api",
            "created configuration api-v1 in group api",
            "made api-v1 the active configuration of group api",
            "created rule cpu-50 in group api",
            "created scheduled task office-hours in group api",
            "created scheduled task night in group api",
            "enabled group api",
        ]
    );
    let Step::CreateRule(r) = &steps[3] else {
        panic!()
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.definition_json).unwrap(),
        serde_json::json!({
            "rule_type": "TargetTrackingScalingRule",
            "metric": "CpuUtilization",
            "target_value": 50.0,
            "disable_scale_in": false,
            "estimated_instance_warmup_secs": 300,
                "alarm_period": "SamplingInterval",
                "scale_in_stabilization_secs": 300,
        })
    );
    let Step::CreateTask(t) = &steps[4] else {
        panic!()
    };
    assert_eq!(t.launch_time, "2025-01-06T08:00:00+01:00");
    assert_eq!(
        (t.recurrence_type.as_str(), t.recurrence_value.as_str()),
        ("Daily", "1")
    );
    assert_eq!(t.time_zone, "Europe/Berlin");
    assert_eq!((t.min_size, t.enabled), (Some(2), Some(true)));
    assert_eq!(t.scaling_rule, "");
}

#[test]
fn equal_automation_state_plans_nothing() {
    let f = autoscaled();
    assert_eq!(plan(&f, &autoscaled_state(&f)).unwrap(), []);
}

#[test]
fn what_the_file_does_not_mention_is_left_alone() {
    let f = autoscaled();
    let mut state = autoscaled_state(&f);
    state.rules.push(pb::ScalingRule {
        id: "asr-9".into(),
        name: "by-hand".into(),
        definition_json: "{}".into(),
        ..Default::default()
    });
    state.alarms.push(pb::Alarm {
        id: "asl-9".into(),
        name: "by-hand".into(),
        ..Default::default()
    });
    state.tasks.push(pb::ScheduledTask {
        id: "ast-9".into(),
        name: "by-hand".into(),
        ..Default::default()
    });
    assert_eq!(plan(&f, &state).unwrap(), []);
}

#[test]
fn a_changed_rule_field_is_exactly_that_modify() {
    let f = autoscaled();
    let mut state = autoscaled_state(&f);
    state.rules[0].definition_json = state.rules[0]
        .definition_json
        .replace("\"target_value\":50", "\"target_value\":60");
    let steps = plan(&f, &state).unwrap();
    assert_eq!(
        lines(&steps),
        ["modified rule cpu-50: target_value 60.0 → 50.0"]
    );
    let Step::ModifyRule { request, .. } = &steps[0] else {
        panic!()
    };
    assert_eq!(request.scaling_rule, "cpu-50");
    assert_eq!(request.scaling_group, "api");
    assert_eq!(request.name, None);
    let sent: RuleKind = serde_json::from_str(request.definition_json.as_deref().unwrap()).unwrap();
    assert_eq!(sent, f.rules[0].kind);
}

#[test]
fn a_changed_task_field_is_exactly_that_modify() {
    let f = autoscaled();
    let mut state = autoscaled_state(&f);
    state.tasks[0].min_size = Some(3);
    let steps = plan(&f, &state).unwrap();
    assert_eq!(
        lines(&steps),
        ["modified scheduled task office-hours: min_size 3 → 2"]
    );
    let Step::ModifyTask { request, .. } = &steps[0] else {
        panic!()
    };
    assert_eq!(
        *request,
        pb::ModifyScheduledTaskRequest {
            scheduled_task: "office-hours".into(),
            scaling_group: "api".into(),
            min_size: Some(2),
            ..Default::default()
        }
    );
    // A different instant is a change; the same instant spelled in UTC is not.
    let mut state = autoscaled_state(&f);
    state.tasks[1].launch_time = "2025-01-06T18:00:00Z".into();
    assert_eq!(
        lines(&plan(&f, &state).unwrap()),
        [
            "modified scheduled task night: launch_time 2025-01-06T18:00:00Z → 2025-01-06T20:00:00+01:00"
        ]
    );
}

const WITH_ALARM: &str = "[group]\nname = \"web\"\nmin_size = 1\nmax_size = 4\n\
    [configuration]\nname = \"web-v1\"\n\
    [[rule]]\nname = \"add-1\"\nrule_type = \"SimpleScalingRule\"\n\
    adjustment_type = \"QuantityChangeInCapacity\"\nadjustment_value = 1\ncooldown_secs = 60\n\
    [[alarm]]\nname = \"cpu-high\"\nmetric = \"CpuUtilization\"\nstatistic = \"Average\"\n\
    period_secs = 60\ncomparison_operator = \">\"\nthreshold = 80\nevaluation_count = 3\n\
    alarm_actions = [\"add-1\"]\n\
    [[task]]\nname = \"nightly\"\nlaunch_time = \"2025-01-06T02:00:00Z\"\n\
    recurrence_type = \"Cron\"\nrecurrence_value = \"0 2 * * *\"\nscaling_rule = \"add-1\"\n";

fn with_alarm_state(f: &ApplyFile) -> State {
    let (group, configurations) = applied(&ApplyFile {
        group: f.group.clone(),
        configuration: f.configuration.clone(),
        rules: vec![],
        alarms: vec![],
        tasks: vec![],
        load_balancers: vec![],
        db_instances: vec![],
    });
    State {
        group: Some(group),
        configurations,
        rules: vec![pb::ScalingRule {
            id: "asr-1".into(),
            scaling_group_id: "asg-1".into(),
            name: "add-1".into(),
            rule_type: "SimpleScalingRule".into(),
            definition_json: definition_json(&f.rules[0].kind),
            owned_alarm_ids: vec![],
        }],
        alarms: vec![pb::Alarm {
            id: "asl-1".into(),
            scaling_group_id: "asg-1".into(),
            name: "cpu-high".into(),
            metric: "CpuUtilization".into(),
            statistic: "Average".into(),
            period_secs: 60,
            comparison_operator: ">".into(),
            threshold: 80.0,
            evaluation_count: 3,
            missing_data: "missing".into(),
            alarm_actions: vec!["asr-1".into()],
            enabled: true,
            state: "OK".into(),
            ..Default::default()
        }],
        tasks: vec![pb::ScheduledTask {
            id: "ast-1".into(),
            scaling_group_id: "asg-1".into(),
            name: "nightly".into(),
            launch_time: "2025-01-06T02:00:00Z".into(),
            recurrence_type: "Cron".into(),
            recurrence_value: "0 2 * * *".into(),
            time_zone: "UTC".into(),
            launch_expiration_secs: 600,
            enabled: true,
            scaling_rule_id: "asr-1".into(),
            ..Default::default()
        }],
        ..State::default()
    }
}

#[test]
fn alarms_come_after_their_rules_and_name_them() {
    let f = parse("w.toml", WITH_ALARM).unwrap();
    let steps = plan(&f, &State::default()).unwrap();
    assert_eq!(
        lines(&steps)[3..],
        [
            "created rule add-1 in group web",
            "created alarm cpu-high in group web",
            "created scheduled task nightly in group web",
            "enabled group web",
        ]
    );
    let Step::CreateAlarm(a) = &steps[4] else {
        panic!()
    };
    assert_eq!(a.alarm_actions, ["add-1"]);
    assert_eq!((a.comparison_operator.as_str(), a.threshold), (">", 80.0));
    assert_eq!(a.missing_data, None);
    let Step::CreateTask(t) = &steps[5] else {
        panic!()
    };
    assert_eq!(t.scaling_rule, "add-1");
}

#[test]
fn alarm_actions_by_id_equal_the_files_names() {
    let f = parse("w.toml", WITH_ALARM).unwrap();
    assert_eq!(plan(&f, &with_alarm_state(&f)).unwrap(), []);
}

#[test]
fn a_changed_alarm_field_is_exactly_that_modify() {
    let f = parse("w.toml", WITH_ALARM).unwrap();
    let mut state = with_alarm_state(&f);
    state.alarms[0].threshold = 85.0;
    let steps = plan(&f, &state).unwrap();
    assert_eq!(
        lines(&steps),
        ["modified alarm cpu-high: threshold 85 → 80"]
    );
    let Step::ModifyAlarm { request, .. } = &steps[0] else {
        panic!()
    };
    assert_eq!(
        *request,
        pb::ModifyAlarmRequest {
            alarm: "cpu-high".into(),
            scaling_group: "web".into(),
            threshold: Some(80.0),
            ..Default::default()
        }
    );
    // Enabled is its own call.
    let mut state = with_alarm_state(&f);
    state.alarms[0].enabled = false;
    assert_eq!(
        lines(&plan(&f, &state).unwrap()),
        ["enabled alarm cpu-high"]
    );
    // Another rule as the action.
    let mut state = with_alarm_state(&f);
    state.rules.push(pb::ScalingRule {
        id: "asr-2".into(),
        name: "add-2".into(),
        ..Default::default()
    });
    state.alarms[0].alarm_actions = vec!["asr-2".into()];
    assert_eq!(
        lines(&plan(&f, &state).unwrap()),
        ["modified alarm cpu-high: alarm_actions [add-2] → [add-1]"]
    );
}

#[test]
fn an_action_naming_no_rule_is_refused() {
    let text = WITH_ALARM.replace("alarm_actions = [\"add-1\"]", "alarm_actions = [\"nope\"]");
    let f = parse("w.toml", &text).unwrap();
    let err = plan(&f, &State::default()).unwrap_err();
    assert!(err.contains("action `nope` names no rule"), "{err}");
}

#[test]
fn bad_rules_alarms_and_tasks_are_named() {
    let text = WITH_ALARM.replace("cooldown_secs = 60", "cooldown_secs = 60\ncooldwn = 1");
    let msg = parse("w.toml", &text).unwrap_err().to_string();
    assert!(msg.contains("rule add-1: unknown field `cooldwn`"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    let text = WITH_ALARM
        .replace(
            "comparison_operator = \">\"",
            "comparison_operator = \"=>\"",
        )
        .replace("period_secs = 60", "period_secs = 61")
        .replace(
            "scaling_rule = \"add-1\"",
            "scaling_rule = \"add-1\"\nmin_size = 2",
        )
        .replace("0 2 * * *", "0 25 * * *");
    let err = parse("w.toml", &text).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    for part in [
        "alarm cpu-high.comparison_operator: unknown value `=>`",
        "task nightly.scaling_rule: give scaling_rule or",
        "task nightly.recurrence_value: cron",
    ] {
        assert!(msg.contains(part), "{part} in {msg}");
    }
    let text = WITH_ALARM.replace("adjustment_value = 1", "adjustment_value = 0");
    let msg = parse("w.toml", &text).unwrap_err().to_string();
    assert!(msg.contains("rule add-1.adjustment_value"), "{msg}");
}

const ATTACHED: &str = include_str!("../../../docs/examples/attached.toml");

fn attached() -> ApplyFile {
    parse("attached.toml", ATTACHED).unwrap()
}

/// The controller's answer once the attached example was applied.
fn attached_state(f: &ApplyFile) -> State {
    let (group, configurations) = applied(f);
    State {
        group: Some(group),
        configurations,
        load_balancers: vec![pb::LoadBalancerAttachment {
            target: "lb1".into(),
            backend: "shop".into(),
            port: 8080,
            weight: 1,
            drain_timeout_secs: Some(30),
            target_connected: false,
            state: "Attached".into(),
            error: "target agent `lb1` is not connected".into(),
        }],
        db_instances: vec![pb::DbInstanceAttachment {
            target: "db1".into(),
            database: "shop".into(),
            user: "shop".into(),
            auth_method: "scram-sha-256".into(),
            target_connected: true,
            error: String::new(),
        }],
        ..State::default()
    }
}

#[test]
fn from_nothing_attaches_after_the_automation_and_before_enabling() {
    let f = attached();
    let steps = plan(&f, &State::default()).unwrap();
    assert_eq!(
        lines(&steps),
        [
            "created group shop",
            "created configuration shop-v1 in group shop",
            "made shop-v1 the active configuration of group shop",
            "attached load balancer lb1/shop to group shop: port 8080, weight 1, drain 30s",
            "attached database allow-list db1/shop/shop to group shop: auth method scram-sha-256",
            "enabled group shop",
        ]
    );
    let Step::AttachLoadBalancer { request, .. } = &steps[3] else {
        panic!("{:?}", steps[3])
    };
    assert_eq!(request.scaling_group, "shop");
    assert_eq!(request.load_balancers[0].drain_timeout_secs, Some(30));
}

#[test]
fn equal_attachments_plan_nothing_and_a_change_is_exactly_that() {
    let f = attached();
    let state = attached_state(&f);
    assert_eq!(plan(&f, &state).unwrap(), vec![]);

    let mut changed = f.clone();
    changed.load_balancers[0].port = 8081;
    changed.load_balancers[0].weight = None;
    changed.db_instances[0].auth_method = Some("md5".into());
    assert_eq!(
        lines(&plan(&changed, &state).unwrap()),
        [
            "modified load balancer lb1/shop in group shop: port 8080 → 8081",
            "modified database allow-list db1/shop/shop in group shop: auth_method scram-sha-256 → md5",
        ]
    );
    // A key left out is the default, as `lb attach` takes it.
    let mut heavier = state.clone();
    heavier.load_balancers[0].weight = 5;
    assert_eq!(
        lines(&plan(&f, &heavier).unwrap()),
        ["modified load balancer lb1/shop in group shop: weight 5 → 1"]
    );
    // One being detached is attached again.
    let mut detaching = state.clone();
    detaching.load_balancers[0].state = "Detaching".into();
    assert_eq!(
        lines(&plan(&f, &detaching).unwrap()),
        [
            "attached load balancer lb1/shop to group shop again (it was detaching): port 8080, weight 1, drain 30s"
        ]
    );
}

#[test]
fn attachments_the_file_does_not_mention_are_left_alone() {
    let f = attached();
    let mut state = attached_state(&f);
    state.load_balancers.push(pb::LoadBalancerAttachment {
        target: "lb2".into(),
        backend: "legacy".into(),
        port: 80,
        weight: 1,
        state: "Attached".into(),
        ..Default::default()
    });
    assert_eq!(plan(&f, &state).unwrap(), vec![]);
}

#[test]
fn a_backend_held_by_another_target_or_one_too_many_is_refused_before_any_call() {
    let f = attached();
    let mut state = attached_state(&f);
    state.load_balancers[0].target = "lb2".into();
    let err = plan(&f, &state).unwrap_err();
    assert!(
        err.starts_with(
            "load_balancer[0].backend: backend `shop` is attached to group shop on target `lb2`"
        ),
        "{err}"
    );
    let mut full = attached_state(&f);
    full.load_balancers = (0..5)
        .map(|i| pb::LoadBalancerAttachment {
            target: "lb9".into(),
            backend: format!("b{i}"),
            port: 80,
            ..Default::default()
        })
        .collect();
    let err = plan(&f, &full).unwrap_err();
    assert_eq!(
        err,
        "load_balancer: group shop would have 6 load balancers; it takes at most 5"
    );
}

#[test]
fn bad_attachments_are_named_by_their_place_in_the_file() {
    let base = ATTACHED.split("[[load_balancer]]").next().unwrap();
    let text = format!(
        "{base}[[load_balancer]]\ntarget = \"lb1\"\nbackend = \"shop\"\nport = 70000\nweight = 0\n\
         drain_timeout_secs = 3601\n\n[[load_balancer]]\ngroup = \"other\"\ntarget = \"lb 2\"\nbackend = \"shop\"\nport = 80\n\n\
         [[db_instance]]\ntarget = \"db1\"\ndatabase = \"a b\"\nuser = \"shop\"\n\
         auth_method = \"trust\\nhost all all 0.0.0.0/0 trust\"\n"
    );
    let msg = parse("shop.toml", &text).unwrap_err().to_string();
    for want in [
        "load_balancer[0].port: 70000 is outside 1..=65535",
        "load_balancer[0].weight: 0 is outside 1..=256",
        "load_balancer[0].drain_timeout_secs: 3601 is outside 0..=3600",
        "load_balancer[1].group: `other` is not this file's group `shop`",
        "load_balancer[1].target: `lb 2` may use only",
        "load_balancer[1].backend: backend `shop` is already load_balancer[0]",
        "db_instance[0].database: `a b` may use only",
        "db_instance[0].auth_method: `trust\\nhost all all 0.0.0.0/0 trust` is not a pg_hba host method",
    ] {
        assert!(msg.contains(want), "{want} not in {msg}");
    }
    assert!(msg.starts_with("shop.toml: "), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    let typo = format!(
        "{base}[[load_balancer]]\ntarget = \"lb1\"\nbackend = \"shop\"\nport = 80\n\n[[load_balancer]]\ntarget = \"lb1\"\nbackend = \"b\"\nprot = 80\n"
    );
    let msg = parse("shop.toml", &typo).unwrap_err().to_string();
    assert!(
        msg.contains(": load_balancer[1].prot: unknown field `prot`"),
        "{msg}"
    );
}

#[test]
fn provider_settings_parse_and_bad_ones_are_named() {
    let exec = format!(
        "{MINIMAL}instance_type = \"exec\"\n[configuration.exec]\nprogram = \"/opt/launch\"\n\
         params = {{ image = \"debian-12\" }}\nattempts = 2\n"
    );
    let f = parse("e.toml", &exec).unwrap();
    let settings = f.configuration.exec.as_ref().unwrap();
    assert_eq!(settings.program, "/opt/launch");
    assert_eq!(settings.params["image"], "debian-12");
    assert_eq!(settings.attempts(), 2);
    let steps = plan(&f, &State::default()).unwrap();
    let Some(Step::CreateConfig(request)) = steps.get(1) else {
        panic!("{steps:?}")
    };
    assert_eq!(request.exec.as_ref().unwrap().attempts, Some(2));

    for (text, needle) in [
        (
            exec.replace("\"/opt/launch\"", "\"launch.sh\""),
            "e.toml: configuration.exec.program: `launch.sh` is not an absolute path",
        ),
        (
            exec.replace("attempts = 2", "attempts = 2\nretries = 4"),
            "configuration.exec.retries: unknown field `retries`",
        ),
        (
            format!("{MINIMAL}instance_type = \"exec\"\n"),
            "configuration.exec: instance_type = \"exec\" needs exec settings",
        ),
        (
            format!("{MINIMAL}[configuration.microvm]\nvcpus = 2\n"),
            "configuration.microvm: is set, but instance_type is ``; set instance_type = \"microvm\"",
        ),
        (
            format!(
                "{MINIMAL}instance_type = \"microvm\"\n[configuration.microvm]\nmemory_mib = 8\n"
            ),
            "configuration.microvm.memory_mib: 8 is outside 64..=262144",
        ),
    ] {
        let err = parse("e.toml", &text).unwrap_err().to_string();
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn a_predictive_rule_in_the_file_takes_its_fields_and_names_bad_ones() {
    let rule = |extra: &str| {
        format!(
            "{MINIMAL}\n[[rule]]\nname = \"forecast\"\nrule_type = \"PredictiveScalingRule\"\n\
             metric = \"CpuUtilization\"\ntarget_value = 50\n{extra}"
        )
    };
    let f = parse(
        "p.toml",
        &rule(
            "predictive_scaling_mode = \"ForecastAndScale\"\n\
             predictive_value_behavior = \"PredictiveValueOverrideMaxWithBuffer\"\n\
             predictive_value_buffer = 20\npredictive_task_buffer_secs = 600\n",
        ),
    )
    .unwrap();
    assert_eq!(
        f.rules[0].kind,
        RuleKind::Predictive {
            metric: ebb_core::rules::Metric::CpuUtilization,
            target_value: 50.0,
            predictive_scaling_mode: ebb_core::rules::PredictiveMode::ForecastAndScale,
            predictive_value_behavior:
                ebb_core::rules::PredictiveValueBehavior::PredictiveValueOverrideMaxWithBuffer,
            predictive_value_buffer: Some(20),
            predictive_task_buffer_secs: Some(600),
        }
    );
    let msg = parse(
        "p.toml",
        &rule("predictive_scaling_mode = \"PredictOnly\"\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("rule forecast"), "{msg}");
    assert!(msg.contains("`PredictOnly`"), "{msg}");
    let msg = parse("p.toml", &rule("predictive_task_buffer_secs = 7200\n"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("predictive_task_buffer_secs: 7200 is outside 0..=3600"),
        "{msg}"
    );
}

#[test]
fn prune_lists_what_the_file_no_longer_names_and_keeps_the_rest() {
    let full = parse("w.toml", WITH_ALARM).unwrap();
    let mut state = with_alarm_state(&full);
    // A target-tracking rule's own alarm goes with its rule, never by itself.
    state.rules.push(pb::ScalingRule {
        id: "asr-2".into(),
        name: "cpu50".into(),
        rule_type: "TargetTrackingScalingRule".into(),
        owned_alarm_ids: vec!["asl-2".into()],
        ..Default::default()
    });
    state.alarms.push(pb::Alarm {
        id: "asl-2".into(),
        name: "cpu50-high".into(),
        owner_rule_id: "asr-2".into(),
        ..Default::default()
    });
    // The same file: only the rule it never named.
    assert_eq!(
        lines(&super::plan_automation::prune(&full, &state)),
        ["deleted rule cpu50 from group web (pruned)"]
    );
    // A file without its task and alarm: they go, then the rules.
    let bare = ApplyFile {
        alarms: vec![],
        tasks: vec![],
        ..full.clone()
    };
    let steps = super::plan_automation::prune(&bare, &state);
    assert_eq!(
        steps.iter().map(|s| s.line(false)).collect::<Vec<_>>(),
        [
            "delete scheduled task nightly from group web (pruned)",
            "delete alarm cpu-high from group web (pruned)",
            "delete rule cpu50 from group web (pruned)",
        ]
    );
    assert_eq!(
        steps[0],
        Step::DeleteTask {
            group: "web".into(),
            task: "nightly".into()
        }
    );
    // A rule the file's alarm still runs stays though the file does not declare it.
    let alarm_only = ApplyFile {
        rules: vec![],
        tasks: vec![],
        ..full.clone()
    };
    assert_eq!(
        lines(&super::plan_automation::prune(&alarm_only, &state)),
        [
            "deleted scheduled task nightly from group web (pruned)",
            "deleted rule cpu50 from group web (pruned)",
        ]
    );
    // Without --prune the plan deletes nothing.
    assert_eq!(plan(&bare, &state).unwrap(), []);
}
