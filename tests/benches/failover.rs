//! Failover time: three controllers on a three-member etcd cluster
//! (Debian's etcd-server, loopback), a group of three instances; the
//! leader is SIGKILLed, and two times are taken from the kill:
//!
//! - takeover: until another controller's `/healthz` says it leads;
//! - fleet: until every agent is connected to the new leader and has
//!   answered two of its pulls.
//!
//! The killed controller is started again (as a follower) before the next
//! trial. The lease TTL is the default, 3 s.
//!
//! `cargo build --workspace --bins && cargo test -p ebb-tests --bench
//! failover -- [--trials 10] [--smoke]` (debug builds, as the tests run
//! them: failover is bound by the lease and the agents' back-off, not by
//! the build profile).

mod common;

use std::time::{Duration, Instant};

use common::{flag, load_average, switch};
use ebb_proto::v1 as pb;
use ebb_tests::ha::{HaCluster, LEASE_TTL_SECS};
use ebb_tests::{Admin, DEADLINE, Sandbox, enabled_group, eventually};

/// Three local instances that sleep, pulled every second.
fn group(admin: &mut Admin) {
    enabled_group(
        admin,
        pb::CreateScalingGroupRequest {
            name: "web".into(),
            min_size: 0,
            max_size: 3,
            desired_capacity: Some(3),
            sampling_interval_secs: Some(1),
            health_check_grace_period_secs: Some(1),
            ..Default::default()
        },
    );
}

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{name:<9} n={:<3} median {:>8}  max {:>8}  min {:>8}",
        times.len(),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        ms(times[0])
    );
}

fn main() {
    let smoke = switch("--smoke");
    let trials: usize = flag("--trials", if smoke { 1 } else { 10 });
    println!(
        "load average before: {}; lease TTL {LEASE_TTL_SECS} s",
        load_average()
    );
    let sb = Sandbox::new();
    let mut ha = HaCluster::start(sb.path(), 3, 1000).expect("HA cluster");
    let leader = ha.wait_leader(None);
    let mut admin = ha.admin(leader);
    group(&mut admin);
    drop(admin);
    let (mut takeovers, mut fleets) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        let leader = ha.wait_leader(None);
        ha.controller(leader)
            .wait_metric("ebb_agents_connected", |v| v == 3.0);
        let killed = Instant::now();
        ha.kill(leader);
        let new = eventually("a new leader", DEADLINE, || {
            let l = ha.leaders();
            (l.len() == 1 && l[0] != leader).then(|| l[0])
        });
        let takeover = killed.elapsed();
        let ctl = ha.controller(new);
        eventually("the fleet on the new leader", DEADLINE, || {
            (ctl.metric("ebb_agents_connected") == Some(3.0)).then_some(())
        });
        let pulls = ctl.metric("ebb_pulls_total").unwrap_or(0.0);
        eventually("two pulls of each agent", DEADLINE, || {
            (ctl.metric("ebb_pulls_total").unwrap_or(0.0) >= pulls + 6.0).then_some(())
        });
        let fleet = killed.elapsed();
        println!(
            "trial {trial}: controller {leader} killed, {new} leads after {:.0} ms, fleet on it after {:.0} ms",
            takeover.as_secs_f64() * 1000.0,
            fleet.as_secs_f64() * 1000.0
        );
        takeovers.push(takeover);
        fleets.push(fleet);
        ha.start_controller(leader)
            .expect("restart the killed controller");
        eventually("the restarted controller to follow", DEADLINE, || {
            ha.health(leader)
                .filter(|(code, body)| *code == 200 && body.starts_with("ok: follower"))
        });
    }
    report("takeover", takeovers);
    report("fleet", fleets);
    println!("load average after: {}", load_average());
}
