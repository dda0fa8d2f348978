//! High availability, end to end: a real three-member etcd cluster
//! (Debian's etcd-server), several real controllers on it, and real agents.
//! Leaders are SIGKILLed, SIGSTOPped past their lease, and cut off from
//! etcd's quorum; the fleet must be neither lost nor duplicated.

use std::time::{Duration, Instant};

use ebb_proto::v1 as pb;
use ebb_tests::ha::HaCluster;
use ebb_tests::{
    Admin, DEADLINE, Sandbox, activities, admin_call, enabled_group, eventually, instances,
};

const GROUP: &str = "web";

/// Sampling every second, as the agents' pulls.
const SAMPLING_MS: u64 = 1000;

/// A group of `desired` local instances that sleep, with health checked
/// from the first second.
fn group(admin: &mut Admin, desired: u32) {
    enabled_group(
        admin,
        pb::CreateScalingGroupRequest {
            name: GROUP.into(),
            min_size: 0,
            max_size: 10,
            desired_capacity: Some(desired),
            sampling_interval_secs: Some(1),
            health_check_grace_period_secs: Some(1),
            ..Default::default()
        },
    );
}

fn set_desired(admin: &mut Admin, n: u32) {
    admin_call!(
        *admin,
        modify_scaling_group,
        pb::ModifyScalingGroupRequest {
            scaling_group: GROUP.into(),
            desired_capacity: Some(n),
            ..Default::default()
        }
    )
    .expect("set the desired capacity");
}

/// The ids of the group's InService instances, sorted.
fn in_service(admin: &mut Admin) -> Vec<String> {
    let mut ids: Vec<String> = instances(admin, GROUP)
        .into_iter()
        .filter(|i| i.lifecycle_state == "InService")
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids
}

/// Every instance id the group has, in any state, sorted.
fn all_instances(admin: &mut Admin) -> Vec<String> {
    let mut ids: Vec<String> = instances(admin, GROUP).into_iter().map(|i| i.id).collect();
    ids.sort();
    ids
}

/// The ids of `activities`, in their order.
fn activity_ids(activities: &[pb::Activity]) -> Vec<String> {
    activities.iter().map(|a| a.id.clone()).collect()
}

/// Waits until the group has `n` InService instances whose agents are
/// connected to controller `i`.
fn wait_serving(ha: &HaCluster, admin: &mut Admin, i: usize, n: usize) -> Vec<String> {
    let ids = eventually(&format!("{n} instances InService"), DEADLINE * 2, || {
        let ids = in_service(admin);
        (ids.len() == n && all_instances(admin).len() == n).then_some(ids)
    });
    ha.controller(i)
        .wait_metric("ebb_agents_connected", |v| v == n as f64);
    ids
}

#[test]
fn a_killed_idle_leader_is_replaced_and_the_fleet_follows_without_replacing_anything() {
    let sb = Sandbox::new();
    let mut ha = HaCluster::start(sb.path(), 3, SAMPLING_MS).unwrap();
    let leader = ha.wait_leader(None);
    let mut admin = ha.admin(leader);
    group(&mut admin, 3);
    let before = wait_serving(&ha, &mut admin, leader, 3);
    let activities_before = activities(&mut admin, GROUP);
    // Followers serve reads from their replica of the store.
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let mut reader = ha.admin(follower);
    eventually("a follower to read the group", DEADLINE, || {
        (in_service(&mut reader) == before).then_some(())
    });
    drop(admin);
    // ... and refuse writes, naming the leader, whom ebbctl then asks.
    let refused = admin_call!(
        reader,
        modify_scaling_group,
        pb::ModifyScalingGroupRequest {
            scaling_group: GROUP.into(),
            max_size: Some(9),
            ..Default::default()
        }
    )
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        ebb_proto::redirect::leader_of(&refused),
        Some(ha.grpc[leader].to_string())
    );
    let out = ha
        .controller(follower)
        .ebbctl(&["group", "modify", GROUP, "--max", "9"]);
    assert!(
        out.status.success(),
        "ebbctl through a follower: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the follower to read the leader's write", DEADLINE, || {
        let groups = admin_call!(
            reader,
            describe_scaling_groups,
            pb::DescribeScalingGroupsRequest::default()
        )
        .ok()?;
        groups
            .scaling_groups
            .iter()
            .any(|g| g.name == GROUP && g.max_size == 9)
            .then_some(())
    });

    ha.kill(leader);
    let killed = Instant::now();
    let new = ha.wait_leader(Some(leader));
    let ctl = ha.controller(new);
    ctl.wait_metric("ebb_agents_connected", |v| v == 3.0);
    // Pulled by it: every agent answered a few pulls of the new leader.
    let pulls = ctl.wait_metric("ebb_pulls_total", |_| true);
    ctl.wait_metric("ebb_pulls_total", |v| v >= pulls + 6.0);
    let took = killed.elapsed();
    eprintln!("failover: every agent connected to and pulled by the new leader after {took:?}");
    assert!(
        took <= Duration::from_secs(10),
        "the fleet took {took:?} to follow the new leader (at most 10 s)"
    );

    // Nothing was replaced, nothing was done twice: the same instances,
    // the same activities, after the new leader's loops had every chance.
    ctl.wait_passes("ebb_reconcile_passes_total", 5);
    let mut admin = ha.admin(new);
    assert_eq!(in_service(&mut admin), before, "no instance replaced");
    assert_eq!(all_instances(&mut admin), before);
    assert_eq!(
        activity_ids(&activities(&mut admin, GROUP)),
        activity_ids(&activities_before),
        "no activity after the takeover"
    );
    assert_eq!(
        ha.instance_processes().len(),
        3,
        "{:?}",
        ha.instance_processes()
    );
}

#[test]
fn a_leader_killed_mid_scale_out_leaves_the_new_leader_to_finish_it_exactly_once() {
    let sb = Sandbox::new();
    let mut ha = HaCluster::start(sb.path(), 2, SAMPLING_MS).unwrap();
    let leader = ha.wait_leader(None);
    let mut admin = ha.admin(leader);
    group(&mut admin, 2);
    wait_serving(&ha, &mut admin, leader, 2);

    set_desired(&mut admin, 6);
    // Killed while the scale-out runs: its activity is InProgress and
    // some of its instances are not in service yet.
    eventually("the scale-out to be under way", DEADLINE, || {
        let running = activities(&mut admin, GROUP)
            .iter()
            .any(|a| a.status == "InProgress");
        (running && all_instances(&mut admin).len() > 2).then_some(())
    });
    drop(admin);
    ha.kill(leader);

    let new = ha.wait_leader(Some(leader));
    let mut admin = ha.admin(new);
    let ids = wait_serving(&ha, &mut admin, new, 6);
    let acts = activities(&mut admin, GROUP);
    let outs: Vec<&pb::Activity> = acts
        .iter()
        .filter(|a| a.capacity_from == 2 && a.capacity_to == 6)
        .collect();
    assert!(
        acts.iter().all(|a| a.status != "InProgress"),
        "every activity ended: {acts:#?}"
    );
    assert_eq!(
        outs.len(),
        1,
        "one scale-out activity, finished once: {acts:#?}"
    );
    assert_eq!(outs[0].status, "Successful", "{acts:#?}");
    // No orphan, no duplicate: exactly the six agents the records name.
    ha.controller(new)
        .wait_passes("ebb_reconcile_passes_total", 5);
    let procs = ha.instance_processes();
    assert_eq!(procs.len(), 6, "{procs:#?}");
    for id in &ids {
        assert!(
            procs.iter().any(|p| p.contains(id.as_str())),
            "{id} runs: {procs:#?}"
        );
    }
}

#[test]
fn a_leader_paused_past_its_lease_is_fenced_when_it_resumes_and_follows() {
    let sb = Sandbox::new();
    let ha = HaCluster::start(sb.path(), 2, SAMPLING_MS).unwrap();
    let leader = ha.wait_leader(None);
    let mut admin = ha.admin(leader);
    group(&mut admin, 2);
    wait_serving(&ha, &mut admin, leader, 2);
    // Paused with work to do: a scale-out it has recorded but not carried
    // out; on resuming, its loops go on with it where they were.
    set_desired(&mut admin, 4);
    drop(admin);
    ha.controller(leader).proc.signal("STOP");

    let new = ha.wait_leader(Some(leader));
    let mut admin = ha.admin(new);
    let serving = wait_serving(&ha, &mut admin, new, 4);
    let acts_before = activities(&mut admin, GROUP);

    ha.controller(leader).proc.signal("CONT");
    let old = ha.controller(leader);
    // It finds out from its lease (expired) or from its first write
    // (refused by the fence, "no longer leads"), whichever comes first.
    old.wait_log("lost leadership");
    eventually("the old leader to follow", DEADLINE, || {
        ha.health(leader)
            .filter(|(code, body)| *code == 200 && body.starts_with("ok: follower"))
    });
    // Nothing it attempted is visible: the new leader's view is unchanged.
    ha.controller(new)
        .wait_passes("ebb_reconcile_passes_total", 5);
    assert_eq!(all_instances(&mut admin), serving);
    assert_eq!(
        activity_ids(&activities(&mut admin, GROUP)),
        activity_ids(&acts_before)
    );
    assert_eq!(
        ha.instance_processes().len(),
        4,
        "{:?}",
        ha.instance_processes()
    );
    assert_eq!(ha.leaders(), vec![new], "one leader");
}

#[test]
fn the_leader_rides_out_one_lost_etcd_member_and_stops_acting_without_quorum() {
    let sb = Sandbox::new();
    let mut ha = HaCluster::start(sb.path(), 2, SAMPLING_MS).unwrap();
    let leader = ha.wait_leader(None);
    let mut admin = ha.admin(leader);
    group(&mut admin, 2);
    wait_serving(&ha, &mut admin, leader, 2);

    // One member of three gone: everything goes on.
    ha.etcd.kill(0);
    set_desired(&mut admin, 3);
    let leader = ha.wait_leader(None);
    let mut admin = ha.admin(leader);
    wait_serving(&ha, &mut admin, leader, 3);

    // Two of three gone: no quorum. The leader stops acting and says why.
    ha.etcd.kill(1);
    eventually("the leader to stop acting", DEADLINE, || {
        ha.health(leader)
            .filter(|(code, body)| *code == 503 && body.contains("not acting"))
    });
    ha.controller(leader).wait_log("lost leadership");
    // A killed instance is not replaced while no controller may act.
    let victim = ha.instance_processes()[0].clone();
    let pid = victim.split_whitespace().next().unwrap().to_owned();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    let stalled = Instant::now();
    while stalled.elapsed() < Duration::from_secs(8) {
        assert!(ha.leaders().is_empty(), "nobody leads without quorum");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(ha.instance_processes().len(), 2, "nothing launched");

    // Quorum back: a leader acts again and heals the group.
    ha.etcd.restart(0).unwrap();
    ha.etcd.restart(1).unwrap();
    let leader = ha.wait_leader(None);
    let mut admin = ha.admin(leader);
    wait_serving(&ha, &mut admin, leader, 3);
    eventually("3 agents again", DEADLINE, || {
        (ha.instance_processes().len() == 3).then_some(())
    });
}

#[test]
fn a_controller_reaches_etcd_over_tls_with_a_client_certificate_and_names_what_is_wrong_without() {
    use ebb_tests::etcd::EtcdCluster;
    use ebb_tests::{ControllerProc, bin};
    let sb = Sandbox::new();
    let etcd = EtcdCluster::start_tls(&sb.path().join("etcd"), 1).unwrap();
    let tls = etcd.tls.as_ref().unwrap();
    let key_file = sb.path().join("store.key");
    std::fs::write(&key_file, "11".repeat(32)).unwrap();
    let config = |client: bool| {
        let mut text = format!(
            "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"{}\"]\nca = \"{}\"\n",
            etcd.endpoints()[0],
            tls.ca.display()
        );
        if client {
            text += &format!(
                "cert = \"{}\"\nkey = \"{}\"\n",
                tls.client_cert.display(),
                tls.client_key.display()
            );
        }
        text + &format!("[ha]\nsecret_key_file = \"{}\"\n", key_file.display())
    };

    // Without a client certificate etcd refuses the handshake: the
    // controller exits at once, saying which store and why.
    let dir = sb.path().join("no-cert");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("controller.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = \"{}\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n{}",
            dir.join("data").display(),
            config(false)
        ),
    )
    .unwrap();
    // An ephemeral port is no address for agents: advertise one.
    std::fs::write(
        &file,
        std::fs::read_to_string(&file).unwrap() + "advertise = \"127.0.0.1:7440\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("ebb-controller"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started without a client cert: {stderr}"
    );
    assert!(
        stderr.contains(&format!("store: etcd at {}", etcd.endpoints()[0]))
            && stderr.contains("etcd is unavailable"),
        "names the store and why: {stderr}"
    );

    // With it, the controller leads and its records are in etcd.
    let grpc = ebb_tests::free_addrs(1)[0];
    std::fs::create_dir_all(sb.path().join("ok")).unwrap();
    let ctl = ControllerProc::start_configured(
        &sb.path().join("ok"),
        SAMPLING_MS,
        grpc,
        "127.0.0.1:0".parse().unwrap(),
        &config(true),
    )
    .unwrap();
    ctl.wait_log("elected: this controller leads now");
    let mut admin = Admin::local(&ctl);
    group(&mut admin, 0);
    let keys = etcd
        .etcdctl(&["get", "/ebb/t/groups/", "--prefix", "--keys-only"])
        .unwrap();
    assert!(keys.contains("/ebb/t/groups/"), "{keys}");
    // The CA is there only sealed.
    let sealed = etcd
        .etcdctl(&["get", "/ebb/secrets/ca", "--print-value-only"])
        .unwrap();
    assert!(sealed.contains("\"sealed\""), "{sealed}");
    assert!(
        !sealed.contains("PRIVATE KEY"),
        "the CA key in the clear: {sealed}"
    );
}
