//! Instances with addresses of their own (`provider.network = "namespace"`,
//! DESIGN §4 "Attachments"): each instance runs in a network namespace on
//! a bridge the controller makes, gets the lowest free address of the
//! subnet, serves on it, keeps it across a controller restart and gives it
//! back when released.
//!
//! Needs root (as `.ci/run` is) and iproute2: real namespaces, a real
//! bridge, each test its own (see `ebb_tests::net::TestNet`), removed even
//! when a test fails.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

use ebb_tests::net::{NETNS_DIR, TestNet, ip};
use ebb_tests::{
    Admin, ControllerProc, DEADLINE, Sandbox, bin, eventually, set_desired, web_get, web_group,
};

/// `ebbctl instance list -o json`: id -> (address, lifecycle state, connected).
fn listed(ctl: &ControllerProc) -> BTreeMap<String, (Option<String>, String, bool)> {
    let out = ctl.ebbctl(&["instance", "list", "-o", "json"]);
    assert!(
        out.status.success(),
        "ebbctl instance list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                (
                    i["address"].as_str().map(str::to_owned),
                    i["lifecycle_state"].as_str().unwrap().to_owned(),
                    i["agent_connected"].as_bool().unwrap_or(false),
                ),
            )
        })
        .collect()
}

/// Waits until exactly `n` instances are InService with an address and a
/// connected agent; id -> address.
fn serving(ctl: &ControllerProc, n: usize) -> BTreeMap<String, Ipv4Addr> {
    eventually(
        &format!("{n} instances InService with addresses"),
        DEADLINE * 2,
        || {
            let all = listed(ctl);
            let ready: BTreeMap<String, Ipv4Addr> = all
                .iter()
                .filter(|(_, (_, state, connected))| state == "InService" && *connected)
                .filter_map(|(id, (addr, ..))| Some((id.clone(), addr.as_ref()?.parse().ok()?)))
                .collect();
            (all.len() == n && ready.len() == n).then_some(ready)
        },
    )
}

fn host(net: &TestNet, last: u8) -> Ipv4Addr {
    let [a, b, c, _] = net.network.octets();
    Ipv4Addr::new(a, b, c, last)
}

#[test]
fn namespaced_instances_serve_on_their_own_addresses_keep_them_and_give_them_back() {
    let net = TestNet::new();
    let sb = Sandbox::new();
    let ctl = ControllerProc::start_with(sb.path(), 1000, &net.provider_config()).unwrap();
    let bridge = ip(&["-o", "-4", "addr", "show", "dev", &net.bridge]);
    assert!(
        bridge.contains(&format!("inet {}/24", net.gateway())),
        "the controller made the bridge with the subnet's first address: {bridge}"
    );
    let mut admin = Admin::local(&ctl);
    web_group(&mut admin, &sb, 3);

    // Three instances, each on its own address: the subnet's lowest three
    // after the bridge's, as `instance list` shows them.
    let first = serving(&ctl, 3);
    let mut addresses: Vec<Ipv4Addr> = first.values().copied().collect();
    addresses.sort();
    assert_eq!(
        addresses,
        [host(&net, 2), host(&net, 3), host(&net, 4)],
        "{first:?}"
    );
    assert_eq!(
        net.namespaces(),
        first.keys().cloned().collect::<Vec<_>>(),
        "one namespace per instance, named after it"
    );
    assert_eq!(net.ports().len(), 3, "one veth per instance on the bridge");
    // From the host, each address answers with its own instance's id.
    for (id, addr) in &first {
        let body = eventually(&format!("{id} to answer on {addr}"), DEADLINE, || {
            web_get(*addr)
        });
        assert_eq!(&body, id, "{addr} is served by its own instance");
    }
    // A namespaced agent dials the bridge's address (its loopback is its own).
    let instances = ctl.dir.join("ebb-data/instances");
    let some = first.keys().next().unwrap();
    let agent_toml = std::fs::read_to_string(instances.join(some).join("agent.toml")).unwrap();
    let dial = format!("controller = \"{}:{}\"", net.gateway(), ctl.grpc.port());
    assert!(agent_toml.contains(&dial), "{dial} in:\n{agent_toml}");
    assert!(
        agent_toml.contains("server_name = \"localhost\""),
        "{agent_toml}"
    );

    // A restarted controller re-adopts them: same ids, same addresses,
    // agents back (on the bridge's listener), still serving.
    let (grpc, http) = (ctl.grpc, ctl.http);
    drop(ctl);
    let ctl = ControllerProc::start_configured(sb.path(), 1000, grpc, http, &net.provider_config())
        .unwrap();
    ctl.wait_passes("ebb_reconcile_passes_total", 3);
    assert_eq!(serving(&ctl, 3), first, "re-adopted with their addresses");
    for (id, addr) in &first {
        assert_eq!(web_get(*addr).as_deref(), Some(id.as_str()));
    }

    // Scale-in: the released instances' namespaces and veths are gone.
    let mut admin = Admin::local(&ctl);
    set_desired(&mut admin, 1);
    let kept = serving(&ctl, 1);
    let (kept_id, kept_addr) = kept.iter().next().unwrap();
    assert_eq!(first.get(kept_id), Some(kept_addr));
    eventually("the released namespaces removed", DEADLINE, || {
        (net.namespaces() == [kept_id.clone()]).then_some(())
    });
    assert_eq!(net.ports().len(), 1, "{:?}", net.ports());
    for id in first.keys().filter(|id| *id != kept_id) {
        assert!(!Path::new(NETNS_DIR).join(net.netns(id)).exists());
        assert!(!instances.join(id).exists());
    }

    // Scale-out again: the next launch takes the lowest freed address.
    let freed = first
        .values()
        .filter(|a| *a != kept_addr)
        .min()
        .copied()
        .unwrap();
    set_desired(&mut admin, 2);
    let now = serving(&ctl, 2);
    let (new_id, new_addr) = now.iter().find(|(id, _)| *id != kept_id).unwrap();
    assert!(!first.contains_key(new_id), "a new instance");
    assert_eq!(*new_addr, freed, "the lowest freed address is reused");
    let body = eventually("the new instance to answer", DEADLINE, || {
        web_get(*new_addr)
    });
    assert_eq!(&body, new_id);
}

#[test]
fn a_bridge_with_another_address_is_refused_and_orphaned_namespaces_are_removed() {
    let net = TestNet::new();
    let sb = Sandbox::new();
    // The bridge exists with an address that is not the subnet's first.
    ip(&["link", "add", &net.bridge, "type", "bridge"]);
    let wrong = format!("{}/24", host(&net, 9));
    ip(&["addr", "add", &wrong, "dev", &net.bridge]);
    let config = sb.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n{}",
            sb.path().join("ebb-data").display(),
            net.provider_config()
        ),
    )
    .unwrap();
    let out = Command::new(bin("ebb-controller"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let expected = format!(
        "provider.bridge: {} exists with {wrong}, not {}/24",
        net.bridge,
        net.gateway()
    );
    assert!(stderr.contains(&expected), "`{expected}` in:\n{stderr}");

    // With the bridge right, a namespace of this bridge that no instance
    // claims (a crash's leftover) is removed.
    ip(&["addr", "del", &wrong, "dev", &net.bridge]);
    let orphan = net.netns("i-orphan");
    ip(&["netns", "add", &orphan]);
    let ctl = ControllerProc::start_with(sb.path(), 1000, &net.provider_config()).unwrap();
    let bridge = ip(&["-o", "-4", "addr", "show", "dev", &net.bridge]);
    assert!(
        bridge.contains(&format!("inet {}/24", net.gateway())),
        "the existing bridge was given its address: {bridge}"
    );
    eventually("the orphaned namespace removed", DEADLINE, || {
        (!Path::new(NETNS_DIR).join(&orphan).exists()).then_some(())
    });
    ctl.wait_log("removed an orphaned namespace");
}

#[test]
fn bad_network_settings_are_refused_naming_the_key() {
    let sb = Sandbox::new();
    for (table, needle) in [
        (
            "network = \"bridged\"",
            "unknown variant `bridged`, expected `host` or `namespace`",
        ),
        (
            "bridge = \"a-name-too-long!\"",
            "provider.bridge: `a-name-too-long!` is not a bridge name",
        ),
        (
            "subnet = \"10.88.0.0/8\"",
            "provider.subnet: `10.88.0.0/8`: the prefix must be /16 to /29",
        ),
        (
            "subnet = \"10.88.0.1/24\"",
            "provider.subnet: `10.88.0.1/24` has host bits set",
        ),
        (
            "subnet = \"fd00::/64\"",
            "provider.subnet: `fd00::/64` is not",
        ),
    ] {
        let config = sb.path().join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[provider]\n{table}\n",
                sb.path().join("ebb-data").display()
            ),
        )
        .unwrap();
        let out = Command::new(bin("ebb-controller"))
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{table}: {stderr}");
        assert!(stderr.contains(needle), "{table}: `{needle}` in:\n{stderr}");
        // A value of the wrong kind is refused by the parser, whose excerpt
        // shows the key's line.
        if needle.starts_with("unknown variant") {
            assert!(stderr.contains(table), "{table} shown in:\n{stderr}");
        }
        assert!(
            !sb.path().join("ebb-data").exists(),
            "nothing was started for {table}"
        );
    }
}

#[test]
fn a_controller_that_is_not_root_refuses_namespaces_at_start() {
    // Root only to become someone else: the controller runs as nobody.
    let net = TestNet::new();
    let sb = Sandbox::new();
    let data = sb.path().join("ebb-data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let config = sb.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n{}",
            data.display(),
            net.provider_config()
        ),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin("ebb-controller"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "provider.network = \"namespace\": the controller must run as root to make network namespaces"
        ),
        "{stderr}"
    );
    assert!(
        !Path::new("/sys/class/net").join(&net.bridge).exists(),
        "no bridge was made"
    );
}

/// The workload the load-balancer tests put under constant load: kept-alive
/// requests are answered with the instance's id, and on SIGTERM a request
/// under way still gets its answer before the process exits 0.
#[test]
fn the_test_workload_answers_its_id_and_finishes_requests_under_way_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut web = Command::new(bin("ebb-test-web"))
        .env("PORT", port.to_string())
        .env("EBB_INSTANCE_ID", "i-web")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = eventually("ebb-test-web to listen", DEADLINE, || {
        TcpStream::connect(addr).ok()
    });
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let response = |reader: &mut std::io::BufReader<TcpStream>| {
        use std::io::BufRead;
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "connection closed"
            );
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let length: usize = head
            .iter()
            .find_map(|h| h.strip_prefix("Content-Length: "))
            .expect("Content-Length")
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (head, String::from_utf8(body).unwrap())
    };
    // Two requests on one kept-alive connection.
    for _ in 0..2 {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (head, body) = response(&mut reader);
        assert_eq!(head[0], "HTTP/1.1 200 OK");
        assert!(
            head.contains(&"Connection: keep-alive".to_owned()),
            "{head:?}"
        );
        assert_eq!(body, "i-web");
    }
    // A request received when SIGTERM comes is still answered; then the
    // idle connection is closed, the listener too, and the process exits.
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let stopping = Command::new("kill")
        .args(["-TERM", &web.id().to_string()])
        .status()
        .unwrap();
    assert!(stopping.success());
    let (head, body) = response(&mut reader);
    assert_eq!(
        (head[0].as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "i-web")
    );
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    eventually("the listener closed", DEADLINE, || {
        TcpStream::connect(addr).is_err().then_some(())
    });
    let status = eventually("ebb-test-web to exit", DEADLINE, || web.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
}
