//! DESIGN §3, joining: a host gets its identity with a join token and
//! `ebb-agent join`, the CA pinned by hash, and is attached to the token's
//! group; a reused, expired, revoked or unknown token is refused with a
//! clear error on the host, a log line on the controller, and nothing
//! stored changed. Real controller, real agents, real mTLS, real SQLite.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ebb_proto::v1 as pb;
use ebb_tests::{
    Admin, AgentProc, ControllerProc, DEADLINE, Proc, RawOutcome, Sandbox, activities, admin_call,
    bin, enabled_group, eventually, instances, raw_connect,
};
use serde_json::Value;

const INTERVAL_MS: u64 = 1_000;
/// sysexits codes `ebb-agent join` exits with.
const EXIT_USAGE: i32 = 64;
const EXIT_REFUSED: i32 = 77;

/// An active group that launches nothing by itself (desired 0).
fn group(admin: &mut Admin, name: &str) {
    enabled_group(
        admin,
        pb::CreateScalingGroupRequest {
            name: name.into(),
            min_size: 0,
            max_size: 5,
            desired_capacity: Some(0),
            ..Default::default()
        },
    );
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `ebbctl -o json token create ARGS`: the token and its CA hash.
fn create_token(ctl: &ControllerProc, args: &[&str]) -> (String, String) {
    let mut all = vec!["-o", "json", "token", "create"];
    all.extend_from_slice(args);
    let out = ctl.ebbctl(&all);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    (
        v["token"].as_str().unwrap().to_owned(),
        v["ca_hash"].as_str().unwrap().to_owned(),
    )
}

fn tokens(ctl: &ControllerProc) -> Vec<Value> {
    let out = ctl.ebbctl(&["-o", "json", "token", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("json")
        .as_array()
        .unwrap()
        .clone()
}

fn uses_left(ctl: &ControllerProc, id: &str) -> u64 {
    tokens(ctl)
        .iter()
        .find(|t| t["id"] == id)
        .expect("token listed")["uses_left"]
        .as_u64()
        .unwrap()
}

/// `ebb-agent --config <dir>/agent.toml join ... --no-run`.
fn join(ctl: &ControllerProc, dir: &Path, token: &str, ca_hash: &str, extra: &[&str]) -> Output {
    fs::create_dir_all(dir).unwrap();
    Command::new(bin("ebb-agent"))
        .arg("--config")
        .arg(dir.join("agent.toml"))
        .args(["join", "--controller", &ctl.grpc.to_string()])
        .args(["--token", token, "--ca-hash", ca_hash, "--no-run"])
        .args(extra)
        .env("EBB_LOG", "info")
        .output()
        .expect("run ebb-agent join")
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn group_of(admin: &mut Admin, name: &str) -> pb::ScalingGroup {
    admin_call!(
        *admin,
        describe_scaling_groups,
        pb::DescribeScalingGroupsRequest {
            scaling_groups: vec![name.into()],
            ..Default::default()
        }
    )
    .unwrap()
    .scaling_groups
    .remove(0)
}

#[test]
fn a_host_joins_with_a_token_and_is_attached() {
    let sandbox = Sandbox::new();
    let ctl = ControllerProc::start(sandbox.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "web");

    // As an operator would: the printed command, pasted on the host.
    let out = ctl.ebbctl(&["token", "create", "--group", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let command = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("ebb-agent join "))
        .unwrap_or_else(|| panic!("no join command in:\n{printed}"))
        .to_owned();
    let ca_hash = String::from_utf8(ctl.ebbctl(&["cert", "ca-hash"]).stdout).unwrap();
    assert!(
        command.contains(&format!("--ca-hash {}", ca_hash.trim())),
        "{command} vs {ca_hash}"
    );
    let token = command
        .split_whitespace()
        .skip_while(|w| *w != "--token")
        .nth(1)
        .unwrap()
        .to_owned();
    // The secret is shown once: never in the listing.
    let listed = ctl.ebbctl(&["token", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    let (id, secret) = token.split_once('.').unwrap();
    assert!(listed.contains(id) && !listed.contains(secret), "{listed}");

    // The host joins and then runs as the agent.
    let host = sandbox.path().join("host-1");
    fs::create_dir_all(&host).unwrap();
    let mut cmd = Command::new(bin("ebb-agent"));
    cmd.arg("--config")
        .arg(host.join("agent.toml"))
        .arg("join")
        .args(command.split_whitespace());
    let _agent = spawn(cmd, host.join("agent.log"));
    let joined = eventually("the joined host's agent to connect", DEADLINE * 2, || {
        instances(&mut admin, "web")
            .into_iter()
            .find(|i| i.agent_connected && i.lifecycle_state == "InService")
    });
    assert_eq!(joined.creation_type, "Attached");
    assert!(!joined.hostname.is_empty());
    assert_eq!(group_of(&mut admin, "web").desired_capacity, 1);
    let act = activities(&mut admin, "web");
    assert!(
        act.iter().any(|a| a.cause.contains(&format!(
            "Join attached {} (host {}) with token {id}",
            joined.id, joined.hostname
        )) && a.created_instances == [joined.id.clone()]),
        "{act:?}"
    );
    // Its files: the key readable by the agent alone, the cert for the
    // instance the controller minted.
    assert_eq!(mode(&host.join("agent.key")), 0o600);
    for f in ["agent.crt", "ca.crt", "agent.toml"] {
        assert_eq!(mode(&host.join(f)) & 0o022, 0, "{f} is writable by others");
    }
    let cert = ebb_certs::load_certs(&host.join("agent.crt")).unwrap();
    assert_eq!(
        ebb_certs::peer_identity(&cert[0]).unwrap().uri(),
        format!("spiffe://ebb.local/instance/{}", joined.id)
    );
    assert_eq!(uses_left(&ctl, id), 0);
    let t = tokens(&ctl);
    assert_eq!(t[0]["created_by"], "spiffe://ebb.local/admin/local-admin");
    assert_eq!(ctl.metric("ebb_joins_total"), Some(1.0));
    ctl.wait_log(&format!(
        "host joined with token {id} as instance {}",
        joined.id
    ));
    ctl.wait_metric(
        &format!(
            "ebb_instance_cpu_utilization{{instance_id=\"{}\",group=\"web\"}}",
            joined.id
        ),
        |_| true,
    );

    // Joining again on a joined host is refused unless forced, before
    // anything is sent.
    let (fresh, hash) = create_token(&ctl, &["--group", "web"]);
    let again = join(&ctl, &host, &fresh, &hash, &[]);
    assert_eq!(again.status.code(), Some(EXIT_USAGE), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("this host has joined already"),
        "{}",
        text(&again)
    );
    assert_eq!(uses_left(&ctl, fresh.split('.').next().unwrap()), 1);
}

/// Spawns `cmd` with its output in `log`, killed when dropped.
fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
    let out = fs::File::create(&log).unwrap();
    cmd.stdout(out.try_clone().unwrap()).stderr(out);
    Proc {
        child: cmd.spawn().expect("spawn"),
        log,
    }
}

#[test]
fn reused_expired_revoked_and_unknown_tokens_are_refused_and_change_nothing() {
    let sandbox = Sandbox::new();
    let ctl = ControllerProc::start(sandbox.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "web");
    let (once, hash) = create_token(&ctl, &["--group", "web"]);
    let ok = join(&ctl, &sandbox.path().join("h0"), &once, &hash, &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    let expiring = create_token(&ctl, &["--group", "web", "--ttl", "1s"]).0;
    let revoked = create_token(&ctl, &["--group", "web", "--uses", "5"]).0;
    let rid = revoked.split('.').next().unwrap().to_owned();
    let out = ctl.ebbctl(&["token", "revoke", &rid]);
    assert!(out.status.success(), "{}", text(&out));
    // The expiring token's second must pass (by the controller's clock,
    // which is this host's).
    let eid = expiring.split('.').next().unwrap().to_owned();
    eventually("the 1 s token to expire", DEADLINE, || {
        let t = tokens(&ctl).into_iter().find(|t| t["id"] == eid.as_str())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        (t["expires_at_ms"].as_i64()? < now).then_some(())
    });
    let before = (
        instances(&mut admin, "web").len(),
        group_of(&mut admin, "web").desired_capacity,
        tokens(&ctl),
        activities(&mut admin, "web").len(),
    );
    assert_eq!((before.0, before.1), (1, 1));

    let oid = once.split('.').next().unwrap().to_owned();
    let wrong_secret = format!("{oid}.{}", "0".repeat(16));
    let cases = [
        (
            "reused",
            once.clone(),
            format!("join token {oid} has been used up"),
            format!("refused join with token {oid}: the token has no uses left"),
        ),
        (
            "expired",
            expiring.clone(),
            format!("join token {eid} expired at"),
            format!("refused join with token {eid}: the token has expired"),
        ),
        (
            "revoked",
            revoked.clone(),
            format!("join token {rid} was revoked"),
            format!("refused join with token {rid}: the token was revoked"),
        ),
        (
            "wrong secret",
            wrong_secret,
            "no such token, or a wrong secret".to_owned(),
            format!("refused join with token {oid}: wrong secret"),
        ),
        (
            "unknown",
            "zzzzzz.0123456789abcdef".to_owned(),
            "no such token, or a wrong secret".to_owned(),
            "refused join with token zzzzzz: no token with this id".to_owned(),
        ),
    ];
    for (n, (name, token, told, logged)) in cases.iter().enumerate() {
        let host = sandbox.path().join(format!("h{}", n + 1));
        let out = join(&ctl, &host, token, &hash, &[]);
        assert_eq!(
            out.status.code(),
            Some(EXIT_REFUSED),
            "{name}: {}",
            text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(told.as_str()), "{name}: {}", text(&out));
        ctl.wait_log(logged);
        assert!(!host.join("agent.crt").exists(), "{name}");
        assert!(!host.join("agent.key").exists(), "{name}");
    }
    assert_eq!(ctl.metric("ebb_joins_refused_total"), Some(5.0));
    let after = (
        instances(&mut admin, "web").len(),
        group_of(&mut admin, "web").desired_capacity,
        tokens(&ctl),
        activities(&mut admin, "web").len(),
    );
    assert_eq!(after, before);
}

#[test]
fn a_wrong_ca_hash_is_refused_before_the_token_is_sent() {
    let sandbox = Sandbox::new();
    let ctl = ControllerProc::start(sandbox.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "web");
    let (token, hash) = create_token(&ctl, &["--group", "web"]);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let host = sandbox.path().join("h");
    let out = join(&ctl, &host, &token, &wrong, &[]);
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("--ca-hash pins {wrong}, but its CA is {hash}"))
            && stderr.contains("The token was not sent"),
        "{}",
        text(&out)
    );
    assert!(!host.join("agent.key").exists());
    // The right CA, but a name its server certificate does not carry.
    let out = join(
        &ctl,
        &host,
        &token,
        &hash,
        &["--server-name", "wrong.example"],
    );
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the controller's certificate is not valid for `wrong.example`"),
        "{}",
        text(&out)
    );
    // The controller never saw a Join: the token is whole, nothing refused.
    assert_eq!(uses_left(&ctl, token.split('.').next().unwrap()), 1);
    assert_eq!(ctl.metric("ebb_joins_refused_total"), Some(0.0));
    assert!(instances(&mut admin, "web").is_empty());
    // With the right pin the same token works.
    let out = join(&ctl, &host, &token, &hash, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let joined = instances(&mut admin, "web");
    assert_eq!(joined.len(), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("joined as instance {} of group web", joined[0].id)),
        "{}",
        text(&out)
    );
}

/// A client without a certificate finishes the handshake now (for Join),
/// but no other service serves it.
#[test]
fn certless_clients_cannot_use_the_admin_api_or_connect() {
    let sandbox = Sandbox::new();
    let ctl = ControllerProc::start(sandbox.path(), INTERVAL_MS).unwrap();
    let ca_pem = ctl.ca().cert_pem().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let channel = rt.block_on(ebb_tests::certless(&ctl, &ca_pem));
    let mut client = pb::admin_service_client::AdminServiceClient::new(channel.clone());
    let err = rt
        .block_on(client.describe_scaling_groups(pb::DescribeScalingGroupsRequest::default()))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = rt
        .block_on(client.create_join_token(pb::CreateJoinTokenRequest {
            scaling_group: "web".into(),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    ctl.wait_log("refused admin call: no client certificate");

    let outcome = raw_connect(ctl.grpc, &ca_pem, None, "x");
    match outcome {
        RawOutcome::Refused(why) => assert!(why.contains("PermissionDenied"), "{why}"),
        other => panic!("a cert-less Connect was not refused: {other:?}"),
    }
    ctl.wait_log("refused agent stream: no client certificate");
    assert!(ctl.metric("ebb_connections_refused_total").unwrap() >= 1.0);
    // Nor health checking (which an admin or agent certificate may use).
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let err = rt
        .block_on(health.check(tonic_health::pb::HealthCheckRequest {
            service: "ebb.v1.AdminService".into(),
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    ctl.wait_log("refused call: no client certificate");

    // An agent certificate cannot manage tokens either.
    let agent = AgentProc::start(&ctl, "a-1", "").unwrap();
    let cert = fs::read_to_string(agent.dir.join("agent.crt")).unwrap();
    let key = fs::read_to_string(agent.dir.join("agent.key")).unwrap();
    let mut as_agent = Admin::with_identity(&ctl, &cert, &key);
    let err = admin_call!(
        as_agent,
        list_join_tokens,
        pb::ListJoinTokensRequest::default()
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}

/// Every bad input to token create, revoke and Join is refused naming the
/// field, and stores nothing.
#[test]
fn bad_token_and_join_requests_are_refused_naming_the_field() {
    let sandbox = Sandbox::new();
    let ctl = ControllerProc::start(sandbox.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "web");

    for (args, says) in [
        (
            vec!["--group", "nope"],
            "scaling group `nope` does not exist",
        ),
        (vec!["--group", "web", "--ttl", "0"], "outside 1s..=7d"),
        (vec!["--group", "web", "--ttl", "8d"], "outside 1s..=7d"),
        (vec!["--group", "web", "--ttl", "soon"], "is not a duration"),
        (vec!["--group", "web", "--uses", "0"], "--uses"),
        (vec!["--group", "web", "--uses", "1001"], "--uses"),
    ] {
        let mut all = vec!["token", "create"];
        all.extend(args.iter().copied());
        let out = ctl.ebbctl(&all);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out)
        );
    }
    // The API checks what ebbctl checks, naming the field.
    for (req, field) in [
        (
            pb::CreateJoinTokenRequest {
                scaling_group: "web".into(),
                ttl_secs: Some(0),
                uses: None,
                target: String::new(),
            },
            "ttl_secs: 0 is outside",
        ),
        (
            pb::CreateJoinTokenRequest {
                scaling_group: "web".into(),
                ttl_secs: Some(8 * 86_400),
                uses: None,
                target: String::new(),
            },
            "ttl_secs: 691200 is outside",
        ),
        (
            pb::CreateJoinTokenRequest {
                scaling_group: "web".into(),
                ttl_secs: None,
                uses: Some(0),
                target: String::new(),
            },
            "uses: 0 is outside",
        ),
        (
            pb::CreateJoinTokenRequest {
                scaling_group: String::new(),
                ttl_secs: None,
                uses: None,
                target: String::new(),
            },
            "scaling_group: is required",
        ),
        (
            pb::CreateJoinTokenRequest {
                scaling_group: "web".into(),
                ttl_secs: None,
                uses: None,
                target: "lb1".into(),
            },
            "target: a token is for a group or for a target, not both",
        ),
        (
            pb::CreateJoinTokenRequest {
                scaling_group: String::new(),
                ttl_secs: None,
                uses: None,
                target: "lb 1".into(),
            },
            "target: invalid identity",
        ),
    ] {
        let err = admin_call!(admin, create_join_token, req).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(field), "{err:?}");
    }
    let err = admin_call!(
        admin,
        revoke_join_token,
        pb::RevokeJoinTokenRequest {
            id: "nosuch".into()
        }
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(tokens(&ctl).is_empty());

    // ebb-agent join checks its flags before dialling.
    let out = join(&ctl, &sandbox.path().join("h"), "short", "sha256:12", &[]);
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--token") && stderr.contains("--ca-hash"),
        "{stderr}"
    );

    // Join itself: a malformed token or a bad CSR is refused naming the
    // field, and a bad CSR costs the token nothing.
    let (token, _) = create_token(&ctl, &["--group", "web"]);
    let ca_pem = ctl.ca().cert_pem().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = pb::join_service_client::JoinServiceClient::new(
        rt.block_on(ebb_tests::certless(&ctl, &ca_pem)),
    );
    for (req, field) in [
        (
            pb::JoinRequest {
                token: "not-a-token".into(),
                csr_pem: "x".into(),
                hostname: String::new(),
            },
            "token: is not a join token",
        ),
        (
            pb::JoinRequest {
                token: token.clone(),
                csr_pem: "not a csr".into(),
                hostname: String::new(),
            },
            "csr_pem: unusable certificate signing request",
        ),
        (
            pb::JoinRequest {
                token: token.clone(),
                csr_pem: ebb_certs::Csr::generate().unwrap().csr_pem,
                hostname: "h".repeat(300),
            },
            "hostname: is longer than 253",
        ),
    ] {
        let err = rt.block_on(client.join(req)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(field), "{err:?}");
    }
    assert_eq!(uses_left(&ctl, token.split('.').next().unwrap()), 1);
    assert!(instances(&mut admin, "web").is_empty());

    // Ten refusals from one address in a minute (three above, seven
    // guessed secrets here), and even a good token is turned away.
    let id = token.split('.').next().unwrap();
    for n in 0..7 {
        let req = pb::JoinRequest {
            token: format!("{id}.{n:0>16}"),
            csr_pem: ebb_certs::Csr::generate().unwrap().csr_pem,
            hostname: String::new(),
        };
        let err = rt.block_on(client.join(req)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    }
    let req = pb::JoinRequest {
        token: token.clone(),
        csr_pem: ebb_certs::Csr::generate().unwrap().csr_pem,
        hostname: String::new(),
    };
    let err = rt.block_on(client.join(req)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    ctl.wait_log("refused join: too many refused joins from this address");
    assert_eq!(uses_left(&ctl, id), 1);
    assert_eq!(ctl.metric("ebb_joins_refused_total"), Some(11.0));
}

/// `ebb-agent join` with a target token: the host gets the target's
/// certificate, joins no group, and is told its agent.toml needs a
/// `[target]` section; started without one, the agent says so.
#[test]
fn a_host_joins_as_a_target_with_a_target_token() {
    let sandbox = Sandbox::new();
    let ctl = ControllerProc::start(sandbox.path(), INTERVAL_MS).unwrap();
    let mut admin = Admin::local(&ctl);
    group(&mut admin, "web");
    let (token, ca_hash) = create_token(&ctl, &["--target", "lb1"]);
    let host = sandbox.path().join("lb-host");
    let out = join(&ctl, &host, &token, &ca_hash, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("joined as target lb1 (its agent.toml needs a [target] section"),
        "{stderr}"
    );
    let cert = fs::read_to_string(host.join("agent.crt")).expect("the joined certificate");
    let id = ebb_certs::describe_pem(&cert).unwrap().identity.unwrap();
    assert_eq!(id.uri(), "spiffe://ebb.local/target/lb1");
    assert!(instances(&mut admin, "web").is_empty());
    assert_eq!(uses_left(&ctl, token.split('.').next().unwrap()), 0);
    // Run as is, with no [target] section, it stops and says why.
    let run = Command::new(bin("ebb-agent"))
        .arg("--config")
        .arg(host.join("agent.toml"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(64), "{}", text(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("[target]"),
        "{}",
        text(&run)
    );
}
