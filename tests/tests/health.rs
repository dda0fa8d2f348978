//! Health checks and replacement, end to end: real agents launched by the
//! process provider, stopped or killed from outside.

use std::time::Instant;

use ebb_proto::v1 as pb;
use ebb_tests::{
    Admin, ControllerProc, DEADLINE, Sandbox, activities, admin_call, enabled_group, eventually,
    instances,
};

fn group(admin: &mut Admin, name: &str, n: u32) {
    enabled_group(
        admin,
        pb::CreateScalingGroupRequest {
            name: name.into(),
            min_size: n,
            max_size: n + 2,
            sampling_interval_secs: Some(1),
            health_check_grace_period_secs: Some(1),
            ..Default::default()
        },
    );
}

fn ready(admin: &mut Admin, group: &str, n: usize) -> Vec<pb::Instance> {
    eventually(
        &format!("{n} healthy instances in {group}"),
        DEADLINE * 2,
        || {
            let list = instances(admin, group);
            (list.len() == n
                && list.iter().all(|i| {
                    i.lifecycle_state == "InService"
                        && i.agent_connected
                        && i.health_status == "Healthy"
                }))
            .then_some(list)
        },
    )
}

/// Sends `sig` to the instance's agent only (not its workload).
fn signal_agent(id: &str, sig: &str) {
    let status = std::process::Command::new("pkill")
        .args([
            &format!("-{sig}"),
            "-f",
            &format!("instances/{id}/agent.toml"),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "no agent for {id}");
}

#[test]
fn a_hung_agent_is_caught_by_missed_pulls_and_replaced() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "hung", 2);
    let before = ready(&mut admin, "hung", 2);
    let victim = before[0].id.clone();
    signal_agent(&victim, "STOP");
    let after = eventually("the hung instance replaced", DEADLINE * 2, || {
        let list = ready(&mut admin, "hung", 2);
        (!list.iter().any(|i| i.id == victim)).then_some(list)
    });
    assert_eq!(after.len(), 2);
    let heal = activities(&mut admin, "hung")
        .into_iter()
        .find(|a| a.cause.contains(&victim))
        .expect("an activity naming the hung instance");
    assert_eq!(heal.trigger, "health");
    assert!(
        heal.cause.contains("pulls in a row went unanswered"),
        "{}",
        heal.cause
    );
    assert!(ctl.proc.log_text().contains("instance unhealthy"));
}

#[test]
fn a_killed_agent_is_replaced_and_the_time_is_measured() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "killed", 1);
    let before = ready(&mut admin, "killed", 1);
    let started = Instant::now();
    signal_agent(&before[0].id, "KILL");
    let after = eventually("a replacement agent connected", DEADLINE * 2, || {
        let list = instances(&mut admin, "killed");
        list.iter()
            .find(|i| i.id != before[0].id && i.agent_connected)
            .cloned()
    });
    eprintln!(
        "replacement: agent SIGKILLed → replacement's agent connected in {} ms",
        started.elapsed().as_millis()
    );
    assert_ne!(after.id, before[0].id);
}

#[test]
fn a_protected_instance_that_fails_is_not_removed() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "prot", 2);
    let before = ready(&mut admin, "prot", 2);
    let keep = before[0].id.clone();
    admin_call!(
        admin,
        set_instances_protection,
        pb::SetInstancesProtectionRequest {
            scaling_group: "prot".into(),
            instance_ids: vec![keep.clone()],
            protected: true
        }
    )
    .unwrap();
    signal_agent(&keep, "STOP");
    // Its pulls go unanswered well past three; it stays.
    eventually("missed pulls from the protected instance", DEADLINE, || {
        ctl.metric("ebb_pulls_missed_total").filter(|m| *m >= 6.0)
    });
    let list = instances(&mut admin, "prot");
    assert!(
        list.iter()
            .any(|i| i.id == keep && i.lifecycle_state == "Protected"),
        "{list:#?}"
    );
    assert!(
        activities(&mut admin, "prot")
            .iter()
            .all(|a| a.trigger != "health")
    );
    signal_agent(&keep, "CONT");
}

#[test]
fn the_mass_failure_guard_limits_replacements() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "mass", 4);
    let before = ready(&mut admin, "mass", 4);
    for inst in &before[..3] {
        signal_agent(&inst.id, "STOP");
    }
    // Three of four at once: more than half. One (25 % of 4) is replaced
    // this minute; the other two stay, marked Unhealthy.
    eventually("one guarded replacement", DEADLINE * 2, || {
        let list = instances(&mut admin, "mass");
        let replaced = list
            .iter()
            .filter(|i| !before.iter().any(|b| b.id == i.id))
            .count();
        let waiting = list
            .iter()
            .filter(|i| i.health_status == "Unhealthy")
            .count();
        (replaced == 1 && waiting == 2).then_some(())
    });
    // Three more passes, each a chance for the guard to let another through.
    ctl.wait_passes("ebb_reconcile_passes_total", 3);
    let list = instances(&mut admin, "mass");
    let replaced = list
        .iter()
        .filter(|i| !before.iter().any(|b| b.id == i.id))
        .count();
    assert_eq!(replaced, 1, "the guard let more through: {list:#?}");
    assert!(
        ctl.proc.log_text().contains("mass-failure guard: 3 of 4"),
        "{}",
        ctl.proc.log_text()
    );
    // Let the stopped agents go (the replaced one's is gone already).
    for inst in &before[..3] {
        let _ = std::process::Command::new("pkill")
            .args(["-CONT", "-f", &format!("instances/{}/agent.toml", inst.id)])
            .status();
    }
}

/// A tiny HTTP server on loopback answering 200 or 503 as told.
struct Backend {
    port: u16,
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Backend {
    fn start() -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = healthy.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let status = if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Self { port, healthy }
    }
}

#[test]
fn a_failing_local_http_check_gets_the_instance_replaced() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    let backend = Backend::start();
    admin_call!(
        admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: "web".into(),
            min_size: 1,
            max_size: 2,
            sampling_interval_secs: Some(1),
            health_check_grace_period_secs: Some(1),
            ..Default::default()
        }
    )
    .unwrap();
    admin_call!(
        admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: "web".into(),
            name: "v1".into(),
            command: vec!["sleep".into(), "infinity".into()],
            health_checks: vec![pb::LocalHealthCheck {
                name: "web".into(),
                http: format!("http://127.0.0.1:{}/healthz", backend.port),
                interval_ms: 200,
                timeout_ms: 150,
                ..Default::default()
            }],
            ..Default::default()
        }
    )
    .unwrap();
    admin_call!(
        admin,
        enable_scaling_group,
        pb::EnableScalingGroupRequest {
            scaling_group: "web".into(),
            ..Default::default()
        }
    )
    .unwrap();
    let before = ready(&mut admin, "web", 1);
    backend
        .healthy
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let heal = eventually("a health replacement", DEADLINE * 2, || {
        activities(&mut admin, "web")
            .into_iter()
            .find(|a| a.trigger == "health" && a.cause.contains(&before[0].id))
    });
    assert!(
        heal.cause.contains("local check `web` failed")
            && heal.cause.contains("times in a row: HTTP 503"),
        "{}",
        heal.cause
    );
}

#[test]
fn an_operator_marks_an_instance_unhealthy_and_it_is_replaced() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "manual", 2);
    let before = ready(&mut admin, "manual", 2);
    let err = admin_call!(
        admin,
        set_instance_health,
        pb::SetInstanceHealthRequest {
            scaling_group: "manual".into(),
            instance_ids: vec![before[0].id.clone()],
            health_status: "Sick".into()
        }
    )
    .unwrap_err();
    assert!(
        err.message()
            .contains("health_status: unknown value `Sick`"),
        "{}",
        err.message()
    );
    admin_call!(
        admin,
        set_instance_health,
        pb::SetInstanceHealthRequest {
            scaling_group: "manual".into(),
            instance_ids: vec![before[0].id.clone()],
            health_status: "Unhealthy".into()
        }
    )
    .unwrap();
    eventually("the marked instance replaced", DEADLINE * 2, || {
        let list = ready(&mut admin, "manual", 2);
        (!list.iter().any(|i| i.id == before[0].id)).then_some(())
    });
}
