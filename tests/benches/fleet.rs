//! The controller against a simulated fleet: N agents from one process, each
//! a real `Connect` stream over its own mTLS connection with its own
//! certificate from the controller's CA, answering every Pull with a
//! synthetic Sample. The agents are attached to scaling groups of
//! `--group-size` with two CpuUtilization alarms each (`--alarms-per-group`), so every period the
//! controller evaluates every alarm over every instance's samples.
//!
//! Round trip: measured by the controller, from the moment a stream's task
//! queues a Pull to the moment the same task reads the matching Sample
//! (`ebb_pull_round_trip_seconds`, read as the difference of two scrapes;
//! its buckets are 10 a decade, so each quantile is a bucket's upper bound).
//!
//! `cargo build --release --workspace --bins && cargo bench -p ebb-tests
//! --bench fleet -- [--agents 1000,5000,10000] [--secs 60] [--smoke]`

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    CpuTime, HostCpu, MemoryKb, clock_ticks, flag, load_average, memory_kb, raise_fd_limit, switch,
};
use ebb_proto::v1 as pb;
use ebb_proto::v1::agent_message::Body as AgentBody;
use ebb_proto::v1::agent_service_client::AgentServiceClient;
use ebb_proto::v1::controller_message::Body as ControllerBody;
use ebb_tests::{Admin, ControllerProc, Sandbox, admin_call, eventually};
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Handshakes in flight at once while the fleet connects.
const CONNECTING_AT_ONCE: usize = 64;

#[derive(Default)]
struct Stats {
    connected: AtomicU64,
    pulls: AtomicU64,
    failed: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let smoke = switch("--smoke");
    let agents: String = flag(
        "--agents",
        if smoke { "50" } else { "1000,5000,10000" }.to_owned(),
    );
    let secs: u64 = flag("--secs", if smoke { 5 } else { 60 });
    let warmup: u64 = flag("--warmup", if smoke { 2 } else { 15 });
    let group_size: usize = flag("--group-size", 100);
    let workers: usize = flag("--loadgen-threads", 1);
    // 0 leaves the groups without alarms, to see what evaluating them costs.
    let alarms: usize = flag("--alarms-per-group", 2);
    let limit = raise_fd_limit();
    println!("open-file limit: {limit}");
    let mut rows = Vec::new();
    for n in agents.split(',') {
        let n: usize = n.trim().parse()?;
        let row = run(n, secs, warmup, group_size, workers, alarms)?;
        rows.push(row);
    }
    println!(
        "\n| agents | controller CPU (cores) | controller VmRSS / VmHWM (MB) | round trip p50 / p99 / max (ms, ≤) | pulls | missed | late | alarm evaluation: alarms, passes, mean / max (ms, ≤) | loadgen CPU (cores) | other CPU (cores) / steal | load avg before |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

fn run(
    n: usize,
    secs: u64,
    warmup: u64,
    group_size: usize,
    workers: usize,
    alarms: usize,
) -> anyhow::Result<String> {
    let load_before = load_average();
    println!("\n# {n} agents (load average {load_before})");
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000)?;
    let mut admin = Admin::local(&ctl);
    let groups = n.div_ceil(group_size);
    let ids: Vec<String> = (0..n).map(|i| format!("sim-{i:05}")).collect();
    let t = Instant::now();
    for (g, chunk) in ids.chunks(group_size).enumerate() {
        setup_group(&mut admin, &format!("g{g:03}"), chunk, group_size, alarms)?;
    }
    println!(
        "{groups} groups of ≤{group_size} with {alarms} alarms each, set up in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let ca = ctl.ca();
    let certs: Vec<(String, String)> = std::thread::scope(|s| {
        let half = ids.len() / 2 + 1;
        let parts: Vec<_> = ids
            .chunks(half)
            .map(|part| {
                let ca = &ca;
                s.spawn(move || {
                    part.iter()
                        .map(|id| {
                            let i = ca
                                .issue_agent(id, ebb_certs::AGENT_VALIDITY)
                                .expect("issue agent cert");
                            (i.cert_pem, i.key_pem)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("issuing thread"))
            .collect()
    });
    println!(
        "{n} agent certificates issued in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    let stats = Arc::new(Stats::default());
    let ca_pem = std::fs::read_to_string(ctl.pki_dir().join("ca.crt"))?;
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let t = Instant::now();
    for (i, (id, (crt, key))) in ids.iter().zip(certs).enumerate() {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca_pem))
            .identity(Identity::from_pem(crt, key))
            .domain_name("localhost");
        rt.spawn(agent(
            ctl.grpc,
            tls,
            id.clone(),
            i as u64,
            stats.clone(),
            gate.clone(),
        ));
    }
    eventually(
        &format!("{n} simulated agents connected"),
        Duration::from_secs(600),
        || {
            guard(&ctl).expect("a quiet enough machine");
            let failed = stats.failed.load(Ordering::Relaxed);
            assert_eq!(failed, 0, "simulated agents failed to connect");
            (stats.connected.load(Ordering::Relaxed) == n as u64).then_some(())
        },
    );
    println!("{n} agents connected in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    eventually(
        "every instance in service",
        Duration::from_secs(600),
        || {
            let in_service: usize = (0..groups)
                .map(|g| in_service(&mut admin, &format!("g{g:03}")))
                .sum();
            (in_service == n).then_some(())
        },
    );
    println!(
        "every instance in service after {:.1} s more; warming up {warmup} s",
        t.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(warmup));

    let hz = clock_ticks();
    let me = std::process::id();
    let ctl_pid = ctl.proc.pid();
    let before = Snapshot::take(&ctl, &stats, ctl_pid, me)?;
    let host_before = HostCpu::now();
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        guard(&ctl)?;
    }
    let host_after = HostCpu::now();
    let after = Snapshot::take(&ctl, &stats, ctl_pid, me)?;
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let cores = |a: &CpuTime, b: &CpuTime| a.ms_since(b, hz).1 / 1000.0 / wall;
    let ctl_cores = cores(&after.controller, &before.controller);
    let loadgen_cores = cores(&after.loadgen, &before.loadgen);
    // What else ran on the host in the window, and what the hypervisor took:
    // either slows the controller without being its doing.
    let (host_busy, steal) = host_after.since(&host_before, hz as f64, wall);
    let others = (host_busy - ctl_cores - loadgen_cores).max(0.0);
    let MemoryKb { rss, hwm, .. } = memory_kb(ctl_pid);
    let delta = |k: &str| after.metric(k) - before.metric(k);
    let rt_hist = bucket_delta(
        &before.metrics,
        &after.metrics,
        "ebb_pull_round_trip_seconds",
    );
    let eval_hist = bucket_delta(
        &before.metrics,
        &after.metrics,
        "ebb_alarm_evaluation_seconds",
    );
    let eval_mean_ms = 1000.0 * delta("ebb_alarm_evaluation_seconds_sum")
        / delta("ebb_alarm_evaluation_seconds_count").max(1.0);
    let pulls = delta("ebb_pulls_total");
    let missed = delta("ebb_pulls_missed_total");
    let late = delta("ebb_samples_late_total");
    let answered = after.pulls - before.pulls;
    println!(
        "window {wall:.1} s: controller {ctl_cores:.3} cores, VmRSS {:.0} MB (VmHWM {:.0} MB); loadgen {loadgen_cores:.3} cores",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "host: {host_busy:.2} cores busy, of which {others:.2} neither the controller nor the loadgen; {:.1} % of CPU time stolen by the hypervisor",
        steal * 100.0
    );
    println!(
        "pulls sent {pulls:.0} (expected ≈ {}), pulls the loadgen answered {answered}, missed {missed:.0}, late {late:.0}",
        n as u64 * secs
    );
    println!(
        "pull round trip (bucket upper bounds): {}",
        common::quantiles(&rt_hist)
    );
    println!(
        "alarm evaluation passes: {} of {} alarms each, mean {eval_mean_ms:.1} ms, max ≤ {}",
        eval_hist.len(),
        alarms * groups,
        common::ms(eval_hist.max())
    );
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let row = format!(
        "| {n} | {ctl_cores:.2} | {:.0} / {:.0} | {:.1} / {:.1} / {:.1} | {pulls:.0} | {missed:.0} | {late:.0} | {}, {}, {eval_mean_ms:.1} / {:.1} | {loadgen_cores:.2} | {others:.2} / {:.1} % | {load_before} |",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        q(&rt_hist, 0.5),
        q(&rt_hist, 0.99),
        rt_hist.max() as f64 / 1000.0,
        alarms * groups,
        eval_hist.len(),
        eval_hist.max() as f64 / 1000.0,
        steal * 100.0,
    );
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(admin);
    drop(ctl);
    Ok(row)
}

/// Stops the run if the controller has begun replacing simulated instances
/// (they missed pulls: the machine is too busy): each replacement is a real
/// agent process, which loads the machine more, and the figures would say
/// nothing. The launched processes are killed.
fn guard(ctl: &ControllerProc) -> anyhow::Result<()> {
    let launched = ctl.dir.join("ebb-data").join("instances");
    let any = std::fs::read_dir(&launched).is_ok_and(|mut d| d.next().is_some());
    if !any {
        return Ok(());
    }
    for line in ctl.instance_processes() {
        if let Some(pid) = line.split_whitespace().next() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status();
        }
    }
    anyhow::bail!(
        "the controller began replacing simulated instances that missed pulls (is the machine busy? load average {}): this run's figures are void",
        load_average()
    )
}

/// A scaling group with a configuration that is never launched (the fleet
/// is attached), one rule, and up to two alarms the synthetic load never
/// trips.
fn setup_group(
    admin: &mut Admin,
    name: &str,
    ids: &[String],
    size: usize,
    alarms: usize,
) -> anyhow::Result<()> {
    admin_call!(
        *admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: name.into(),
            min_size: 0,
            max_size: size as u32,
            sampling_interval_secs: Some(1),
            ..Default::default()
        }
    )?;
    admin_call!(
        *admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: name.into(),
            name: "v1".into(),
            command: vec!["sleep".into(), "infinity".into()],
            ..Default::default()
        }
    )?;
    admin_call!(
        *admin,
        enable_scaling_group,
        pb::EnableScalingGroupRequest {
            scaling_group: name.into(),
            ..Default::default()
        }
    )?;
    admin_call!(
        *admin,
        create_scaling_rule,
        pb::CreateScalingRuleRequest {
            scaling_group: name.into(),
            name: "add-1".into(),
            definition_json: r#"{"rule_type":"SimpleScalingRule","adjustment_type":"QuantityChangeInCapacity","adjustment_value":1,"cooldown_secs":60}"#.into(),
        }
    )?;
    let specs = [("cpu-high", ">=", 95.0), ("cpu-low", "<=", 1.0)];
    for (alarm, op, threshold) in specs.into_iter().take(alarms) {
        admin_call!(
            *admin,
            create_alarm,
            pb::CreateAlarmRequest {
                scaling_group: name.into(),
                name: alarm.into(),
                metric: "CpuUtilization".into(),
                statistic: "Average".into(),
                period_secs: 1,
                comparison_operator: op.into(),
                threshold,
                evaluation_count: Some(3),
                alarm_actions: vec!["add-1".into()],
                ..Default::default()
            }
        )?;
    }
    // A hundred a call, the most AttachInstances takes.
    for batch in ids.chunks(100) {
        admin_call!(
            *admin,
            attach_instances,
            pb::AttachInstancesRequest {
                client_token: String::new(),
                scaling_group: name.into(),
                instance_ids: batch.to_vec(),
            }
        )?;
    }
    Ok(())
}

/// Every page of the group's InService instances (1000 to a page).
fn in_service(admin: &mut Admin, group: &str) -> usize {
    let mut count = 0;
    let mut page_token = String::new();
    loop {
        let Ok(r) = admin_call!(
            *admin,
            describe_scaling_instances,
            pb::DescribeScalingInstancesRequest {
                scaling_group: group.into(),
                lifecycle_state: "InService".into(),
                page_token: page_token.clone(),
                ..Default::default()
            }
        ) else {
            return count;
        };
        count += r.instances.len();
        if r.next_page_token.is_empty() {
            return count;
        }
        page_token = r.next_page_token;
    }
}

/// One simulated agent: connect, Hello, answer every Pull at once.
async fn agent(
    grpc: std::net::SocketAddr,
    tls: ClientTlsConfig,
    id: String,
    n: u64,
    stats: Arc<Stats>,
    gate: Arc<Semaphore>,
) {
    let permit = gate.acquire_owned().await.expect("gate open");
    let channel = Channel::from_shared(format!("https://{grpc}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect()
        .await;
    let channel = match channel {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{id}: connect failed: {e:?}");
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let (tx, rx) = mpsc::channel(4);
    let hello = pb::Hello {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        agent_version: "loadgen".into(),
        instance_id: id.clone(),
        hostname: format!("{id}.sim"),
        addresses: vec![format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255)],
        cpu_count: 2,
        memory_total_bytes: 4 << 30,
        boot_time_unix: 1_700_000_000,
        ..Default::default()
    };
    let _ = tx
        .send(pb::AgentMessage {
            body: Some(AgentBody::Hello(hello)),
        })
        .await;
    let mut inbound = match AgentServiceClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => {
            eprintln!("{id}: Connect refused: {e}");
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    drop(permit);
    stats.connected.fetch_add(1, Ordering::Relaxed);
    // A cheap per-agent pseudo-random walk for the CPU figure, 20..60 %.
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while let Ok(Some(msg)) = inbound.message().await {
        let Some(ControllerBody::Pull(pull)) = msg.body else {
            continue;
        };
        stats.pulls.fetch_add(1, Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let cpu = 20.0 + (x % 4000) as f64 / 100.0;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let sample = pb::Sample {
            seq: pull.seq,
            collected_at_unix_ms: now_ms,
            window_ms: 1000,
            cpu_utilization: Some(cpu),
            memory_utilization: Some(41.5),
            load: Some(pb::LoadAverage {
                one: cpu / 50.0,
                five: 0.8,
                fifteen: 0.7,
            }),
            network: Some(pb::NetworkRates {
                rx_bytes_per_second: 12_345.0,
                tx_bytes_per_second: 6_789.0,
            }),
            tcp: Some(pb::TcpConnections {
                total: 12,
                established: 7,
            }),
            ..Default::default()
        };
        if tx
            .send(pb::AgentMessage {
                body: Some(AgentBody::Sample(sample)),
            })
            .await
            .is_err()
        {
            break;
        }
    }
    stats.connected.fetch_sub(1, Ordering::Relaxed);
}

struct Snapshot {
    at: Instant,
    metrics: HashMap<String, f64>,
    controller: CpuTime,
    loadgen: CpuTime,
    pulls: u64,
}

impl Snapshot {
    fn take(ctl: &ControllerProc, stats: &Stats, ctl_pid: u32, me: u32) -> anyhow::Result<Self> {
        let at = Instant::now();
        let controller = CpuTime::of(ctl_pid);
        let loadgen = CpuTime::of(me);
        let pulls = stats.pulls.load(Ordering::Relaxed);
        let text = ctl.http_get("/metrics")?;
        let metrics = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("ebb_instance_"))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        Ok(Self {
            at,
            metrics,
            controller,
            loadgen,
            pulls,
        })
    }

    fn metric(&self, key: &str) -> f64 {
        self.metrics.get(key).copied().unwrap_or(0.0)
    }
}

/// The observations between two scrapes of a Prometheus histogram, each
/// recorded at its bucket's upper bound (in µs); above the last bound, at
/// twice it.
fn bucket_delta(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
    name: &str,
) -> Histogram<u64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut bounds: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v - before.get(k).copied().unwrap_or(0.0)))
        })
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut h = common::histogram();
    let (mut below, mut last) = (0.0, 0.0);
    for (le, cumulative) in bounds {
        let count = (cumulative - below).max(0.0) as u64;
        let at = if le.is_finite() { le } else { last * 2.0 };
        if count > 0 {
            h.record_n((at * 1e6).max(1.0) as u64, count)
                .expect("value in range");
        }
        below = cumulative;
        last = le;
    }
    h
}
