//! Attachments end to end (DESIGN §4): a real `haproxy` (Debian's 2.6, with
//! a runtime socket) and a real PostgreSQL 15 cluster, each driven by a real
//! target agent over mTLS, in front of and behind a group of namespaced
//! instances serving HTTP (`ebb-test-web`, answering its own id). Every
//! part is started by the test, on the test's own bridge and ports, and
//! removed at its end. Needs root (namespaces, a bridge, a cluster run as
//! `postgres`) and the haproxy and postgresql-15 packages; fails saying so
//! otherwise.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ebb_proto::v1 as pb;
use ebb_tests::net::{TestNet, ip};
use ebb_tests::peers::{Haproxy, PgCluster, http_get};
use ebb_tests::{
    Admin, AgentProc, ControllerProc, DEADLINE, Sandbox, WEB_GROUP, WEB_PORT, activities,
    admin_call, eventually, instances, set_desired, web_group,
};

const LB: &str = "lb1";
const PG: &str = "pg1";
/// `srv_admin_state`'s forced-maintenance flag.
const MAINT: u32 = 1;
/// ebb's markers around its block of pg_hba.conf.
const BLOCK_BEGIN: &str = "# BEGIN ebb";
const BLOCK_END: &str = "# END ebb";

/// The whole set-up: a controller with namespaced instances, HAProxy and
/// its target agent, and optionally PostgreSQL and its target agent; the
/// group `web` attached to both, at desired 0. Dropped in this order: the
/// agents, the controller, the peers, the sandbox (what is left of the
/// instances), and last the bridge with every namespace on it.
struct Stack {
    lb_agent: AgentProc,
    pg_agent: Option<AgentProc>,
    ctl: ControllerProc,
    admin: Admin,
    haproxy: Haproxy,
    pg: Option<PgCluster>,
    sb: Sandbox,
    net: TestNet,
}

impl Stack {
    fn new(with_db: bool, drain_timeout_secs: u32) -> Self {
        let net = TestNet::new();
        let sb = Sandbox::new();
        let ctl = ControllerProc::start_with(sb.path(), 1000, &net.provider_config()).unwrap();
        // Checks make HAProxy say when a new server is UP; retries with
        // redispatch send a request whose connection failed to another
        // server, as any production backend should.
        let haproxy = Haproxy::start(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "web",
            "backend web\n    balance roundrobin\n    option httpchk GET /\n    retries 3\n    option redispatch\n",
        );
        let lb_agent = AgentProc::start_target(
            &ctl,
            LB,
            &format!(
                "[target]\nstate_dir = \"{}\"\n[target.haproxy]\nsocket = \"{}\"\ncheck = true\n",
                haproxy.dir().join("ebb-state").display(),
                haproxy.socket().display()
            ),
        )
        .unwrap();
        // The database listens on the bridge's address, where the
        // instances reach it; its own lines admit only its local socket.
        let (pg, pg_agent) = if with_db {
            let pg = PgCluster::start(&net.gateway().to_string(), "local all all trust\n");
            let agent = AgentProc::start_target(
                &ctl,
                PG,
                &format!(
                    "[target]\nstate_dir = \"{}\"\n[target.postgres]\nhba_file = \"{}\"\nreload = \"sql\"\nsocket_dir = \"{}\"\nport = {}\nuser = \"postgres\"\n",
                    pg.dir().join("ebb-state").display(),
                    pg.hba().display(),
                    pg.socket_dir().display(),
                    pg.port
                ),
            )
            .unwrap();
            (Some(pg), Some(agent))
        } else {
            (None, None)
        };
        let mut admin = Admin::local(&ctl);
        web_group(&mut admin, &sb, 0);
        admin_call!(
            admin,
            attach_load_balancers,
            pb::AttachLoadBalancersRequest {
                scaling_group: WEB_GROUP.into(),
                load_balancers: vec![pb::LoadBalancerAttachment {
                    target: LB.into(),
                    backend: "web".into(),
                    port: u32::from(WEB_PORT),
                    drain_timeout_secs: Some(drain_timeout_secs),
                    ..Default::default()
                }],
            }
        )
        .unwrap();
        if with_db {
            admin_call!(
                admin,
                attach_db_instances,
                pb::AttachDbInstancesRequest {
                    scaling_group: WEB_GROUP.into(),
                    db_instances: vec![pb::DbInstanceAttachment {
                        target: PG.into(),
                        database: "postgres".into(),
                        user: "postgres".into(),
                        auth_method: "trust".into(),
                        ..Default::default()
                    }],
                }
            )
            .unwrap();
        }
        Self {
            lb_agent,
            pg_agent,
            ctl,
            admin,
            haproxy,
            pg,
            sb,
            net,
        }
    }

    /// Waits until the group holds exactly `n` instances, all InService
    /// with a connected agent; their ids and addresses.
    fn in_service(&mut self, n: usize) -> Vec<(String, Ipv4Addr)> {
        let admin = &mut self.admin;
        eventually(&format!("{n} instances InService"), DEADLINE * 4, || {
            let list = instances(admin, WEB_GROUP);
            let ready: Vec<(String, Ipv4Addr)> = list
                .iter()
                .filter(|i| i.lifecycle_state == "InService" && i.agent_connected)
                .filter_map(|i| Some((i.id.clone(), i.address.parse().ok()?)))
                .collect();
            (list.len() == n && ready.len() == n).then_some(ready)
        })
    }

    /// The servers ebb holds in backend `web` (it has no others).
    fn servers(&self) -> BTreeSet<String> {
        self.haproxy
            .servers("web")
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    /// Who answers `n` requests through HAProxy.
    fn answers(&self, n: usize) -> BTreeSet<String> {
        (0..n)
            .filter_map(|_| http_get(self.haproxy.frontend))
            .collect()
    }

    /// The addresses in ebb's block of pg_hba.conf.
    fn allowed(&self) -> BTreeSet<String> {
        let hba = std::fs::read_to_string(self.pg.as_ref().unwrap().hba()).unwrap();
        let Some(start) = hba.find(BLOCK_BEGIN) else {
            return BTreeSet::new();
        };
        let end = hba.find(BLOCK_END).expect("the block's end marker");
        hba[start..end]
            .lines()
            .filter(|l| l.starts_with("host"))
            .map(|l| {
                let addr = l.split_whitespace().nth(3).expect("an address");
                addr.split('/').next().unwrap().to_owned()
            })
            .collect()
    }

    /// `psql` from inside namespace `netns` to the database on the bridge:
    /// Ok, or PostgreSQL's refusal.
    fn psql_from(&self, netns: &str) -> Result<(), String> {
        let pg = self.pg.as_ref().unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", netns, "psql"])
            .arg(format!(
                "host={} port={} user=postgres dbname=postgres connect_timeout=10",
                self.net.gateway(),
                pg.port
            ))
            .args(["-Atc", "select 1"])
            .output()
            .expect("run psql (postgresql-client)");
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1" {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// A network namespace of the test's own, deleted (with its end of the
/// veth) when dropped.
struct Probe(String);

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ids(list: &[(String, Ipv4Addr)]) -> BTreeSet<String> {
    list.iter().map(|(id, _)| id.clone()).collect()
}

fn kill_agent_of(id: &str) {
    let status = Command::new("pkill")
        .args(["-KILL", "-f", &format!("instances/{id}/agent.toml")])
        .status()
        .unwrap();
    assert!(status.success(), "no agent for {id}");
}

/// A constant request load through HAProxy, one connection per request,
/// bounded in count and in time, against this machine's own addresses.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    worker: std::thread::JoinHandle<Vec<String>>,
}

impl Load {
    const MAX_REQUESTS: u64 = 500_000;
    const MAX_TIME: Duration = Duration::from_secs(600);

    fn start(to: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let worker = std::thread::spawn({
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            move || {
                let start = Instant::now();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed)
                    && sent.load(Ordering::Relaxed) < Self::MAX_REQUESTS
                    && start.elapsed() < Self::MAX_TIME
                {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if http_get(to).is_none() {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if failures.len() < 10 {
                            failures.push(format!("request failed at {:?}", start.elapsed()));
                        }
                    }
                }
                failures
            }
        });
        Self {
            stop,
            sent,
            failed,
            worker,
        }
    }

    fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.worker.join().expect("the load thread");
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures,
        )
    }
}

#[test]
fn traffic_follows_the_group_and_nothing_is_lost_while_it_scales_in_and_out() {
    let mut s = Stack::new(false, 30);
    set_desired(&mut s.admin, 4);
    let four = ids(&s.in_service(4));
    // Every InService instance, and only those, is a server taking traffic.
    assert_eq!(s.servers(), four);
    eventually("every instance answers through HAProxy", DEADLINE, || {
        (s.answers(40) == four).then_some(())
    });

    let load = Load::start(s.haproxy.frontend);
    set_desired(&mut s.admin, 1);
    let one = ids(&s.in_service(1));
    assert!(one.is_subset(&four));
    eventually("the three removed leave the backend", DEADLINE, || {
        (s.servers() == one).then_some(())
    });
    set_desired(&mut s.admin, 4);
    let again = ids(&s.in_service(4));
    assert!(one.is_subset(&again));
    eventually("the new instances answer through HAProxy", DEADLINE, || {
        (s.answers(40) == again).then_some(())
    });
    let (sent, failed, failures) = load.finish();
    println!("requests through HAProxy while scaling 4 -> 1 -> 4: {sent} sent, {failed} failed");
    assert!(sent > 100, "the load sent only {sent} requests");
    assert_eq!(failed, 0, "{failures:?}");
    assert_eq!(s.servers(), again);

    // The scale-in's activity records each drain and deregistration.
    let acts = activities(&mut s.admin, WEB_GROUP);
    let scale_in = acts
        .iter()
        .find(|a| a.capacity_from == 4 && a.capacity_to == 1)
        .expect("the scale-in activity");
    let details = scale_in.details.join("\n");
    assert_eq!(details.matches("drained in").count(), 3, "{details}");
    assert_eq!(details.matches("deregistered in").count(), 3, "{details}");
    assert_eq!(scale_in.status, "Successful", "{scale_in:?}");
    let scale_out = acts
        .iter()
        .find(|a| a.capacity_from == 0 && a.capacity_to == 4)
        .expect("the first scale-out");
    assert_eq!(
        scale_out
            .details
            .join("\n")
            .matches("registered on every attachment")
            .count(),
        4,
        "{scale_out:?}"
    );
}

#[test]
fn an_instance_whose_agent_is_killed_leaves_the_backend_and_its_replacement_joins() {
    let mut s = Stack::new(false, 30);
    set_desired(&mut s.admin, 2);
    let two = ids(&s.in_service(2));
    eventually("both answer through HAProxy", DEADLINE, || {
        (s.answers(20) == two).then_some(())
    });
    let victim = two.iter().next().unwrap().clone();
    kill_agent_of(&victim);
    // Its workload still answers HAProxy's checks; the lost agent takes it
    // off the backend all the same.
    eventually("the lost instance leaves the backend", DEADLINE * 2, || {
        let serving = s
            .haproxy
            .servers("web")
            .into_iter()
            .any(|sv| sv.name == victim && sv.admin_state & MAINT == 0);
        (!serving).then_some(())
    });
    let healed = ids(&s.in_service(2));
    assert!(!healed.contains(&victim));
    eventually("the replacement is the backend's", DEADLINE, || {
        (s.servers() == healed).then_some(())
    });
    eventually("the replacement answers through HAProxy", DEADLINE, || {
        (s.answers(20) == healed).then_some(())
    });
}

#[test]
fn the_allow_list_admits_an_instance_once_in_service_and_never_another_address() {
    let mut s = Stack::new(true, 30);
    // A SCALE_OUT hook holds the instance before its registration.
    admin_call!(
        s.admin,
        create_lifecycle_hook,
        pb::CreateLifecycleHookRequest {
            scaling_group: WEB_GROUP.into(),
            name: "hold".into(),
            transition: "SCALE_OUT".into(),
            ..Default::default()
        }
    )
    .unwrap();
    set_desired(&mut s.admin, 1);
    let admin = &mut s.admin;
    let held = eventually("the instance held by its hook", DEADLINE * 2, || {
        instances(admin, WEB_GROUP)
            .into_iter()
            .find(|i| i.lifecycle_state == "Pending:Wait" && !i.address.is_empty())
    });
    let netns = s.net.netns(&held.id);
    let refused = s.psql_from(&netns).expect_err("let in before InService");
    assert!(refused.contains("no pg_hba.conf entry"), "{refused}");
    assert!(s.allowed().is_empty(), "{:?}", s.allowed());

    admin_call!(
        s.admin,
        complete_lifecycle_action,
        pb::CompleteLifecycleActionRequest {
            action: Some(pb::LifecycleActionRef {
                instance_id: held.id.clone(),
                hook: "hold".into(),
                ..Default::default()
            }),
            result: "CONTINUE".into(),
        }
    )
    .unwrap();
    let one = s.in_service(1);
    assert_eq!(one[0].0, held.id);
    // InService means every target holds it: the line is written and
    // reloaded already.
    s.psql_from(&netns).expect("let in once InService");
    assert_eq!(s.allowed(), BTreeSet::from([held.address.clone()]));

    // Removed: released, then taken off the allow-list. A host that takes
    // the address afterwards is refused.
    set_desired(&mut s.admin, 0);
    let admin = &mut s.admin;
    eventually("the instance gone", DEADLINE * 2, || {
        instances(admin, WEB_GROUP).is_empty().then_some(())
    });
    eventually("its line gone", DEADLINE, || {
        s.allowed().is_empty().then_some(())
    });
    // Not named after the bridge: the controller removes the bridge's
    // namespaces that no instance claims.
    let probe = Probe(format!("ebbprobe{}", std::process::id() % 100_000));
    let veth = format!("ebp{}", std::process::id() % 100_000);
    ip(&["netns", "add", &probe.0]);
    ip(&[
        "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &probe.0,
    ]);
    ip(&["link", "set", &veth, "master", &s.net.bridge, "up"]);
    ip(&[
        "-n",
        &probe.0,
        "addr",
        "add",
        &format!("{}/24", held.address),
        "dev",
        "eth0",
    ]);
    ip(&["-n", &probe.0, "link", "set", "eth0", "up"]);
    let refused = s
        .psql_from(&probe.0)
        .expect_err("a removed instance's address let in");
    assert!(refused.contains("no pg_hba.conf entry"), "{refused}");
}

#[test]
fn killed_target_agents_converge_after_a_scale_out() {
    let mut s = Stack::new(true, 30);
    set_desired(&mut s.admin, 1);
    s.in_service(1);
    set_desired(&mut s.admin, 3);
    // Both target agents die as the scale-out starts, and come back.
    s.lb_agent.proc.signal("KILL");
    s.pg_agent.as_ref().unwrap().proc.signal("KILL");
    std::thread::sleep(Duration::from_secs(2));
    s.lb_agent.restart().unwrap();
    s.pg_agent.as_mut().unwrap().restart().unwrap();
    let three = s.in_service(3);
    let want_ids = ids(&three);
    let want_addrs: BTreeSet<String> = three.iter().map(|(_, a)| a.to_string()).collect();
    eventually("the backend holds the three", DEADLINE, || {
        (s.servers() == want_ids).then_some(())
    });
    eventually("the allow-list holds the three", DEADLINE, || {
        (s.allowed() == want_addrs).then_some(())
    });
    eventually("the three answer through HAProxy", DEADLINE, || {
        (s.answers(30) == want_ids).then_some(())
    });
    for (id, _) in &three {
        s.psql_from(&s.net.netns(id))
            .expect("an InService instance let in");
    }
}

#[test]
fn a_controller_killed_mid_drain_finishes_it_after_restart_and_releases_once() {
    let mut s = Stack::new(false, 120);
    set_desired(&mut s.admin, 2);
    let two = ids(&s.in_service(2));
    eventually("both answer through HAProxy", DEADLINE, || {
        (s.answers(20) == two).then_some(())
    });
    // Slow requests on both servers: the one leaving must drain them.
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let to = s.haproxy.frontend;
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut c = std::net::TcpStream::connect(to).unwrap();
                c.write_all(b"GET /sleep/20000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut out = String::new();
                c.read_to_string(&mut out).unwrap();
                out
            })
        })
        .collect();
    eventually("every server holds a slow session", DEADLINE, || {
        let stat = s.haproxy.runtime("show stat -1 4 -1");
        let busy = stat
            .lines()
            .filter(|l| l.starts_with("web,i-"))
            .filter(|l| l.split(',').nth(4).is_some_and(|scur| scur != "0"))
            .count();
        (busy == 2).then_some(())
    });
    set_desired(&mut s.admin, 1);
    let admin = &mut s.admin;
    let victim = eventually("an instance draining", DEADLINE, || {
        instances(admin, WEB_GROUP).into_iter().find(|i| {
            i.attachments
                .iter()
                .any(|a| a.kind == "load_balancer" && a.state == "draining")
        })
    });
    // Requests go on through the restart: a restarted controller must not
    // take the servers it finds out of the backend while its agents
    // reconnect.
    let load = Load::start(s.haproxy.frontend);
    let (grpc, http) = (s.ctl.grpc, s.ctl.http);
    s.ctl.proc.signal("KILL");
    s.ctl.proc.wait_exit(DEADLINE);
    let first_log = s.ctl.proc.log_text();
    s.ctl =
        ControllerProc::start_configured(s.sb.path(), 1000, grpc, http, &s.net.provider_config())
            .unwrap();
    s.admin = Admin::local(&s.ctl);
    // It goes on draining: still a server, still held, until its slow
    // sessions end; then it leaves the backend and is released.
    let left = s.in_service(1);
    assert!(!left.iter().any(|(id, _)| *id == victim.id));
    assert_eq!(s.servers(), ids(&left));
    for t in slow {
        let answer = t.join().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "a drained session was cut: {answer}"
        );
    }
    let (sent, failed, failures) = load.finish();
    println!(
        "requests through HAProxy across the controller's restart: {sent} sent, {failed} failed"
    );
    assert!(sent > 10, "the load sent only {sent} requests");
    assert_eq!(failed, 0, "{failures:?}");
    let second_log = s.ctl.proc.log_text();
    let removed = format!("instance={}", victim.id);
    let releases = [&first_log, &second_log]
        .iter()
        .flat_map(|log| log.lines())
        .filter(|l| l.contains("instance removed") && l.contains(&removed))
        .count();
    assert_eq!(releases, 1, "{second_log}");
    let acts = activities(&mut s.admin, WEB_GROUP);
    let scale_in = acts
        .iter()
        .find(|a| a.capacity_from == 2 && a.capacity_to == 1)
        .expect("the scale-in activity");
    let details = scale_in.details.join("\n");
    assert_eq!(details.matches("drained in").count(), 1, "{details}");
    assert_eq!(details.matches("deregistered in").count(), 1, "{details}");
}
