//! Monitoring as an operator sets it up: Debian's Prometheus scrapes a live
//! controller with real agents, loads ebb's alert rules
//! (`packaging/monitoring/ebb-alerts.yml`, checked by `promtool`), and
//! every query of the Grafana dashboard and of the rules returns data.
//! Needs Debian's `prometheus` package (`.ci/run` installs it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ebb_proto::v1 as pb;
use ebb_tests::{
    Admin, ControllerProc, Sandbox, admin_call, enabled_group, eventually, free_addrs, http_status,
};

/// Scrapes come every second, and the failing group needs its three
/// launch failures: generous, for a busy machine.
const SLOW: Duration = Duration::from_secs(180);

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/monitoring")
        .join(file)
}

fn need(program: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(program);
    assert!(
        path.exists(),
        "{} is missing: install Debian's `prometheus` package (apt-get install prometheus); .ci/run does",
        path.display()
    );
    path
}

/// A Prometheus server killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Self {
        let addr = free_addrs(1)[0];
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: ebb-controller\n    static_configs:\n      - targets: [\"{target}\"]\n",
                monitoring("ebb-alerts.yml").display()
            ),
        )
        .unwrap();
        let out = Command::new(need("promtool"))
            .arg("check")
            .arg("config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let log = dir.join("prometheus.log");
        let child = Command::new(need("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Self { child, addr, log }
    }

    /// The series an instant query returns (an error is a test failure).
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // HTTP/1.0: a whole body, never chunked.
        write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}"));
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// A query string's value, percent-encoded.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every query the dashboard's panels make, with Grafana's variables as
/// they are with every group chosen.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring("ebb-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(
                t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$group", ".*")
                    .replace("$__rate_interval", "1m"),
            );
        }
    }
    exprs
}

/// Each rule's query: its expression without the final comparison with a
/// threshold (which holds only while the alert fires).
fn rule_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring("ebb-alerts.yml")).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(|e| {
            let cut = [" == ", " != ", " >= ", " <= ", " > ", " < "]
                .iter()
                .filter_map(|op| e.rfind(op))
                .max()
                .unwrap_or_else(|| panic!("no comparison in `{e}`"));
            e[..cut].to_owned()
        })
        .collect()
}

#[test]
fn prometheus_scrapes_a_live_controller_and_every_dashboard_and_alert_query_has_data() {
    let out = Command::new(need("promtool"))
        .arg("check")
        .arg("rules")
        .arg(monitoring("ebb-alerts.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "promtool check rules: {out:?}");
    let rules = rule_queries();
    assert_eq!(rules.len(), 6, "{rules:?}");
    let panels = dashboard_queries();
    assert!(panels.len() >= 10, "{panels:?}");

    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    enabled_group(
        &mut admin,
        pb::CreateScalingGroupRequest {
            name: "web".into(),
            min_size: 1,
            max_size: 3,
            sampling_interval_secs: Some(1),
            ..Default::default()
        },
    );
    admin_call!(
        admin,
        create_scaling_rule,
        pb::CreateScalingRuleRequest {
            scaling_group: "web".into(),
            name: "add-1".into(),
            definition_json: r#"{"rule_type":"SimpleScalingRule","adjustment_type":"QuantityChangeInCapacity","adjustment_value":1}"#.into(),
        }
    )
    .unwrap();
    admin_call!(
        admin,
        create_alarm,
        pb::CreateAlarmRequest {
            scaling_group: "web".into(),
            name: "cpu-high".into(),
            metric: "CpuUtilization".into(),
            statistic: "Average".into(),
            period_secs: 5,
            comparison_operator: ">=".into(),
            threshold: 99.0,
            alarm_actions: vec!["add-1".into()],
            ..Default::default()
        }
    )
    .unwrap();
    // A scheduled task that runs at once: a run to count.
    admin_call!(
        admin,
        create_scheduled_task,
        pb::CreateScheduledTaskRequest {
            scaling_group: "web".into(),
            name: "now".into(),
            launch_time: ebb_core::time::rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64
                    + 2000
            ),
            desired_capacity: Some(2),
            ..Default::default()
        }
    )
    .unwrap();
    // A group whose launches cannot work: its activity fails.
    admin_call!(
        admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: "broken".into(),
            min_size: 1,
            max_size: 1,
            sampling_interval_secs: Some(1),
            ..Default::default()
        }
    )
    .unwrap();
    admin_call!(
        admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: "broken".into(),
            name: "v1".into(),
            command: vec!["/nonexistent/workload".into()],
            ..Default::default()
        }
    )
    .unwrap();
    admin_call!(
        admin,
        enable_scaling_group,
        pb::EnableScalingGroupRequest {
            scaling_group: "broken".into(),
            ..Default::default()
        }
    )
    .unwrap();

    // The controller's own view first: healthy, ready, and the new series.
    assert_eq!(
        http_status(ctl.http, "/healthz").unwrap(),
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        http_status(ctl.http, "/readyz").unwrap(),
        (200, "ready: leader\n".to_owned())
    );
    let want = [
        "ebb_scaling_activities_total{group=\"broken\",trigger=\"api\",status=\"Failed\"} 1\n",
        "ebb_scheduled_task_runs_total{group=\"web\",task=\"now\",result=\"ran\"} 1\n",
        "ebb_group_max{group=\"web\"} 3\n",
        "ebb_alarm_state{group=\"web\",alarm=\"cpu-high\",state=\"ALARM\"} 0\n",
        "ebb_healthy 1\n",
        "ebb_build_info{version=\"",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "ebb_instance_cpu_utilization{instance_id=\"",
    ];
    let text = eventually("every new series on /metrics", SLOW, || {
        let (_, text) = http_status(ctl.http, "/metrics").ok()?;
        want.iter().all(|l| text.contains(l)).then_some(text)
    });
    assert!(!text.contains("{instance=\""), "{text}");

    let prom = Prometheus::start(sb.path(), ctl.http);
    for expr in rules.iter().chain(&panels) {
        eventually(&format!("data for `{expr}`"), SLOW, || {
            if !http_status(prom.addr, "/-/ready").is_ok_and(|(code, _)| code == 200) {
                return None;
            }
            let series = prom.query(expr);
            (!series.is_empty()).then_some(())
        });
    }
    // And the alerts are loaded, none firing on a healthy controller but
    // the failing group's.
    let firing = prom.query("ALERTS{alertstate=\"firing\"}");
    let names: Vec<&str> = firing
        .iter()
        .filter_map(|s| s["metric"]["alertname"].as_str())
        .collect();
    assert!(
        names.iter().all(|n| *n == "EbbScalingActivitiesFailing"),
        "{names:?}\n{}",
        std::fs::read_to_string(&prom.log).unwrap_or_default()
    );
}
