//! Boot time by provider: from setting a group's desired capacity 0 -> 1
//! to its instance listed InService with a connected agent, polling
//! DescribeScalingInstances every 10 ms (so it includes the reconcile
//! loop's wake-up and the controller recording the launch). Then back to
//! 0 and, once the instance is gone, the next trial.
//!
//! - process: a local process tree on the host's network;
//! - namespace: the same in a network namespace on a bridge;
//! - microvm: a QEMU microVM on that bridge (KVM where it boots a stock
//!   kernel, else TCG, said in the output; needs root and qemu-system-x86).
//!
//! `cargo build --release --workspace --bins && cargo bench -p ebb-tests
//! --bench boot -- [--trials 20] [--smoke] [--only process|namespace|microvm]`

mod common;

use std::time::{Duration, Instant};

use common::{flag, load_average, switch};
use ebb_proto::v1 as pb;
use ebb_tests::microvm::{images, missing};
use ebb_tests::net::{TestNet, is_root};
use ebb_tests::{Admin, ControllerProc, DEADLINE, Sandbox, admin_call, bin, eventually};

fn instances(admin: &mut Admin) -> Vec<pb::Instance> {
    admin_call!(
        *admin,
        describe_scaling_instances,
        pb::DescribeScalingInstancesRequest {
            scaling_group: "boot".into(),
            ..Default::default()
        }
    )
    .map(|r| r.instances)
    .unwrap_or_default()
}

fn desired(admin: &mut Admin, n: u32) {
    admin_call!(
        *admin,
        modify_scaling_group,
        pb::ModifyScalingGroupRequest {
            scaling_group: "boot".into(),
            desired_capacity: Some(n),
            ..Default::default()
        }
    )
    .expect("set desired capacity");
}

/// `trials` boots in a fresh controller; the durations.
fn run(extra: &str, instance_type: &str, trials: usize) -> Vec<Duration> {
    let sb = Sandbox::new();
    let extra = format!("[provider]\nlaunch_timeout_ms = 300000\n{extra}");
    let ctl = ControllerProc::start_with(sb.path(), 1000, &extra).expect("controller");
    let mut admin = Admin::local(&ctl);
    admin_call!(
        admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: "boot".into(),
            min_size: 0,
            max_size: 1,
            desired_capacity: Some(0),
            sampling_interval_secs: Some(1),
            health_check_grace_period_secs: Some(1),
            ..Default::default()
        }
    )
    .expect("create group");
    admin_call!(
        admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: "boot".into(),
            name: "v1".into(),
            instance_type: instance_type.into(),
            command: vec![bin("ebb-test-web").display().to_string()],
            ..Default::default()
        }
    )
    .expect("create configuration");
    admin_call!(
        admin,
        enable_scaling_group,
        pb::EnableScalingGroupRequest {
            scaling_group: "boot".into(),
            ..Default::default()
        }
    )
    .expect("enable group");
    let mut times = Vec::new();
    for _ in 0..trials {
        let started = Instant::now();
        desired(&mut admin, 1);
        let took = eventually("the instance connected", Duration::from_secs(300), || {
            let up = instances(&mut admin)
                .iter()
                .any(|i| i.lifecycle_state == "InService" && i.agent_connected);
            if !up {
                std::thread::sleep(Duration::from_millis(10));
            }
            up.then(|| started.elapsed())
        });
        times.push(took);
        desired(&mut admin, 0);
        eventually("the instance gone", DEADLINE * 2, || {
            instances(&mut admin).is_empty().then_some(())
        });
    }
    times
}

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!(
        "{name:<10} n={:<3} median {:>9}  max {:>9}  min {:>9}",
        times.len(),
        ms(median),
        ms(max),
        ms(times[0])
    );
}

fn main() {
    let smoke = switch("--smoke");
    let trials: usize = flag("--trials", if smoke { 1 } else { 20 });
    let only: String = flag("--only", String::new());
    let wanted = |n: &str| only.is_empty() || only == n;
    println!("load average before: {}", load_average());
    if wanted("process") {
        report("process", run("", "", trials));
    }
    if !is_root() {
        println!("namespace, microvm: not run (needs root)");
        return;
    }
    if wanted("namespace") {
        let net = TestNet::new();
        let table = net.provider_config().replace("[provider]\n", "");
        report("namespace", run(&table, "", trials));
    }
    if wanted("microvm") {
        if let Some(why) = missing() {
            println!("microvm: not run: {why}");
            return;
        }
        let images = images();
        match &images.no_kvm {
            None => println!("microvm: under KVM"),
            Some(why) => println!("microvm: under TCG (emulation), not KVM: {why}"),
        }
        let net = TestNet::new();
        let table = net.provider_config().replace("[provider]\n", "") + &images.provider_config();
        report(
            &format!("microvm/{}", images.accel),
            run(&table, "microvm", trials),
        );
    }
    println!("load average after: {}", load_average());
}
