//! Predictive scaling on a live controller: real gRPC over mTLS, the real
//! SQLite store, `ebbctl` as a user runs it; only the controller's clock is
//! driven by hand (`Controller::with_clock`), which is why the controller
//! runs in this test's process. Two days of per-minute history with a
//! daily rise are seeded into the store before it starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use ebb_controller::clock::ManualClock;
use ebb_controller::config::Config;
use ebb_controller::server::{Controller, STORE_FILE};
use ebb_controller::store::sqlite::SqliteStore;
use ebb_controller::store::{Store, Write};
use ebb_core::model::{GroupSpec, ScalingGroup};
use ebb_core::rules::predict::{MetricRollup, MinuteRollup};
use ebb_tests::{DEADLINE, Sandbox, bin, eventually, http_status};
use serde_json::Value;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// The rule's lead time: the floor rises this long before the forecast rise.
const LEAD_SECS: i64 = 600;

/// A controller serving on a runtime of its own, on a hand-driven clock.
struct Live {
    rt: tokio::runtime::Runtime,
    clock: ManualClock,
    data: PathBuf,
    http: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Live {
    fn start(sb: &Sandbox, now_ms: i64) -> Self {
        let data = sb.path().join("ebb-data");
        let text = format!(
            "data_dir = \"{}\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [fleet]\nsampling_interval_ms = 1000\n[provider]\nagent_bin = \"{}\"\n",
            data.display(),
            bin("ebb-agent").display()
        );
        let config = Config::parse(&text, Path::new("controller.toml")).expect("config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let clock = ManualClock::new(now_ms);
        let controller = rt
            .block_on(Controller::start(config))
            .expect("start the controller")
            .with_clock(Arc::new(clock.clone()));
        let http = controller.http_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = rt.spawn(async move {
            controller
                .serve(async move {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
        });
        eventually("the controller to write endpoints.toml", DEADLINE, || {
            data.join("endpoints.toml").exists().then_some(())
        });
        Self {
            rt,
            clock,
            data,
            http,
            stop: Some(tx),
            served: Some(served),
        }
    }

    fn ebbctl(&self, args: &[&str]) -> Output {
        Command::new(bin("ebbctl"))
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("run ebbctl")
    }

    /// `ebbctl ARGS -o json`, which must succeed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ebbctl(&all);
        assert!(
            out.status.success(),
            "ebbctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    fn desired(&self, group: &str) -> u64 {
        self.json(&["group", "describe", group])["desired_capacity"]
            .as_u64()
            .expect("desired_capacity")
    }

    fn passes(&self) -> Option<f64> {
        let (_, body) = http_status(self.http, "/metrics").ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix("ebb_predictive_passes_total ")?.parse().ok())
    }

    /// Moves the clock to `at_ms` and waits until a predictive pass has run
    /// at that time: everything it would do has had its chance.
    fn at(&self, at_ms: i64) {
        let before = eventually("the predictive pass counter", DEADLINE, || self.passes());
        self.clock.advance_ms(at_ms - self.clock_ms());
        eventually("a predictive pass at the new time", DEADLINE, || {
            self.passes().filter(|n| *n > before)
        });
    }

    fn clock_ms(&self) -> i64 {
        use ebb_controller::clock::Clock;
        self.clock.now_ms()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = self.rt.block_on(served);
        }
    }
}

/// Seeds `group` with two days of minutes before `now`: no load at night,
/// two instances at 50 % CPU (a load of 100) for two hours from `rise` (a
/// time of day) each day.
fn seed(store: &SqliteStore, name: &str, now: i64, rise: i64) {
    let spec = GroupSpec {
        name: Some(name.into()),
        min_size: Some(0),
        max_size: Some(4),
        desired_capacity: Some(0),
        ..Default::default()
    };
    let id = format!("asg-{name}");
    let group = ScalingGroup::create(id.clone(), &spec, now - 3 * DAY_MS).expect("group");
    store
        .commit(vec![Write::CreateGroup(group)])
        .expect("group");
    let minutes: Vec<Write> = (1..=2 * 1440)
        .map(|back| {
            let minute_ms = now - back * MINUTE_MS;
            let busy = (minute_ms - rise).rem_euclid(DAY_MS) < 2 * 60 * MINUTE_MS;
            Write::PutRollup(MinuteRollup {
                group_id: id.clone(),
                minute_ms,
                in_service: if busy { 2 } else { 1 },
                metrics: vec![MetricRollup {
                    metric: "CpuUtilization".into(),
                    average: if busy { 50.0 } else { 0.0 },
                    max: if busy { 60.0 } else { 0.0 },
                    count: 60,
                }],
            })
        })
        .collect();
    for chunk in minutes.chunks(500) {
        store.commit(chunk.to_vec()).expect("rollups");
    }
}

fn apply_file(sb: &Sandbox, group: &str, mode: &str) -> String {
    let path = sb.path().join(format!("{group}.toml"));
    std::fs::write(
        &path,
        format!(
            "[group]\nname = \"{group}\"\nmin_size = 0\nmax_size = 4\nsampling_interval_secs = 1\n\
             [configuration]\nname = \"v1\"\ncommand = [\"sh\", \"-c\", \"exec sleep infinity\", \"{}\"]\n\
             [[rule]]\nname = \"forecast\"\nrule_type = \"PredictiveScalingRule\"\n\
             metric = \"CpuUtilization\"\ntarget_value = 50\npredictive_scaling_mode = \"{mode}\"\n\
             predictive_task_buffer_secs = {LEAD_SECS}\n",
            sb.path().display()
        ),
    )
    .expect("write the apply file");
    path.display().to_string()
}

fn forecast_activities(live: &Live, group: &str) -> Vec<Value> {
    live.json(&["activity", "list", "--group", group])
        .as_array()
        .expect("a list")
        .iter()
        .filter(|a| a["trigger"] == "forecast")
        .cloned()
        .collect()
}

#[test]
fn a_forecast_rise_raises_the_floor_ahead_by_the_lead_time_and_forecast_only_acts_not() {
    let sb = Sandbox::new();
    // A whole five minutes of real time (certificates keep real time), so
    // the forecast's 5-minute buckets fall on the rise.
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64;
    let t0 = real.div_euclid(5 * MINUTE_MS) * 5 * MINUTE_MS;
    let rise = t0 + 40 * MINUTE_MS;
    {
        std::fs::create_dir_all(sb.path().join("ebb-data")).expect("data dir");
        let store =
            SqliteStore::open(&sb.path().join("ebb-data").join(STORE_FILE)).expect("the store");
        seed(&store, "web", t0, rise);
        seed(&store, "watch", t0, rise);
    }
    let live = Live::start(&sb, t0);
    for (group, mode) in [("web", "ForecastAndScale"), ("watch", "ForecastOnly")] {
        let out = live.ebbctl(&["apply", "-f", &apply_file(&sb, group, mode)]);
        assert!(
            out.status.success(),
            "apply {group}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The forecast beside the history: the rise two days running, and ahead.
    let f = live.json(&["rule", "forecast", "forecast", "--group", "web"]);
    assert_eq!(f["mode"], "ForecastAndScale");
    assert_eq!(f["method"], "daily seasonal-naive");
    assert_eq!(f["history_minutes"], 2880);
    assert_eq!(f["lead_secs"], LEAD_SECS);
    assert_eq!(f["floor"], 0, "{f}");
    let buckets = f["buckets"].as_array().expect("buckets");
    let hour = |ms: i64| ms.div_euclid(3_600_000) * 3_600_000;
    let bucket = |start: i64| {
        buckets
            .iter()
            .find(|b| b["start_ms"] == start)
            .unwrap_or_else(|| panic!("a bucket at {start}: {f}"))
    };
    let yesterday = bucket(hour(rise - DAY_MS) + 3_600_000);
    assert_eq!(yesterday["history_load"], 100.0, "{yesterday}");
    assert_eq!(yesterday["history_in_service"], 2);
    let tomorrow = bucket(hour(rise + DAY_MS) + 3_600_000);
    assert_eq!(tomorrow["forecast_capacity"], 2, "{tomorrow}");
    let table = live.ebbctl(&["rule", "forecast", "forecast", "--group", "web"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("TIME") && text.contains("FORECAST CAPACITY"),
        "{text}"
    );

    // 15 minutes before the rise, more than the lead time: nothing yet.
    live.at(rise - 15 * MINUTE_MS);
    assert_eq!(live.desired("web"), 0);
    assert!(forecast_activities(&live, "web").is_empty());

    // 9 minutes before it, within the lead time: the floor is 2 and desired
    // capacity rises to it, by an activity that says why.
    live.at(rise - 9 * MINUTE_MS);
    let f = live.json(&["rule", "forecast", "forecast", "--group", "web"]);
    assert_eq!(f["floor"], 2, "{f}");
    let peak = f["peak_load"].as_f64().expect("peak_load");
    assert!((peak - 100.0).abs() < 1e-6, "{f}");
    assert_eq!(live.desired("web"), 2);
    let acts = forecast_activities(&live, "web");
    assert_eq!(acts.len(), 1, "{acts:?}");
    let cause = acts[0]["cause"].as_str().expect("cause");
    assert!(
        cause.starts_with("predictive rule `forecast` forecast a load of 100.0 by "),
        "{cause}"
    );
    assert!(
        cause.ends_with("changing the Total Capacity from 0 to 2"),
        "{cause}"
    );
    let started = acts[0]["started_at_ms"].as_i64().expect("started_at_ms");
    assert!(
        started <= rise - LEAD_SECS * 1000 + MINUTE_MS && started < rise,
        "raised at {started}, the rise is at {rise}"
    );

    // ForecastOnly: the same forecast and floor, shown, never acted on.
    let f = live.json(&["rule", "forecast", "forecast", "--group", "watch"]);
    assert_eq!(
        (f["mode"].as_str(), f["floor"].as_u64()),
        (Some("ForecastOnly"), Some(2))
    );
    assert_eq!(live.desired("watch"), 0);
    assert!(forecast_activities(&live, "watch").is_empty());

    // The floor's instances report, and each finished minute of their
    // samples is rolled up into the store: one row per group and minute.
    eventually(
        "the floor's two instances in service, sampled",
        DEADLINE * 2,
        || {
            let list = live.json(&["instance", "list", "--group", "web"]);
            let sampled = list
                .as_array()?
                .iter()
                .filter(|i| i["lifecycle_state"] == "InService" && i["cpu_utilization"].is_f64())
                .count();
            (sampled == 2).then_some(())
        },
    );
    let minute = rise - 9 * MINUTE_MS;
    live.at(minute + MINUTE_MS + 1_000);
    let store =
        SqliteStore::open(&live.data.join(STORE_FILE)).expect("a second handle on the store");
    let rollups = store.list_rollups("asg-web", minute).expect("rollups");
    let r = rollups
        .iter()
        .find(|r| r.minute_ms == minute)
        .unwrap_or_else(|| panic!("the minute the instances reported in: {rollups:?}"));
    assert_eq!(r.in_service, 2, "{r:?}");
    let cpu = r
        .metrics
        .iter()
        .find(|m| m.metric == "CpuUtilization")
        .unwrap_or_else(|| panic!("CPU in {r:?}"));
    assert!(cpu.count >= 2 && cpu.max >= cpu.average, "{r:?}");

    // Bad input names the field.
    let out = live.ebbctl(&[
        "rule", "forecast", "forecast", "--group", "web", "--bucket", "100",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bucket_secs: 100 is not a multiple of 300"),
        "{err}"
    );
    let out = live.ebbctl(&[
        "rule",
        "create",
        "--group",
        "web",
        "--name",
        "bad",
        "--definition-json",
        r#"{"rule_type":"PredictiveScalingRule","metric":"CpuUtilization","target_value":50,
            "predictive_value_behavior":"PredictiveValueOverrideMaxWithBuffer","predictive_value_buffer":150}"#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("predictive_value_buffer: 150 is outside 0..=100 (percent)"),
        "{err}"
    );

    // Clean up: the instances the floor launched go before the controller
    // does (instances outlive their controller by design).
    let out = live.ebbctl(&["group", "modify", "web", "--desired", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the web group's instances to go", DEADLINE * 2, || {
        live.json(&["instance", "list", "--group", "web"])
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
}
