//! Target streams (DESIGN §4), end to end against a real controller over
//! real mTLS: a target identity holds a stream that is sent its whole
//! desired state, versioned, when it connects and whenever it changes, and
//! its reports show in the API; the identities that must not drive a
//! target, or the admin API, are refused, logged and counted.

use std::time::Duration;

use ebb_proto::v1 as pb;
use ebb_proto::v1::agent_message::Body as AgentBody;
use ebb_proto::v1::controller_message::Body as ControllerBody;
use ebb_tests::{
    Admin, ControllerProc, DEADLINE, Next, RawStream, Sandbox, admin_call, enabled_group,
    eventually,
};

fn target_hello(name: &str) -> pb::Hello {
    pb::Hello {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        target_name: name.to_owned(),
        hostname: format!("{name}.test"),
        drives: vec![pb::TargetKind::Haproxy as i32],
        ..Default::default()
    }
}

/// A certificate for target `name` from the controller's own CA.
fn target_identity(ctl: &ControllerProc, name: &str) -> (String, String) {
    let issued = ctl
        .ca()
        .issue_target(name, Duration::from_secs(3600))
        .unwrap();
    (issued.cert_pem, issued.key_pem)
}

fn refused(ctl: &ControllerProc, reason: &str) -> f64 {
    ctl.metric(&format!(
        "ebb_agent_connects_refused_total{{reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

/// The next TargetState on the stream, skipping pulls.
fn next_state(stream: &mut RawStream) -> pb::TargetState {
    loop {
        match stream.next(DEADLINE) {
            Next::Message(m) => {
                if let Some(ControllerBody::TargetState(s)) = m.body {
                    return s;
                }
            }
            other => panic!("no target state: {other:?}"),
        }
    }
}

/// An admin client, and an enabled group `web` (0 to 2 instances).
fn web(ctl: &ControllerProc) -> Admin {
    let mut admin = Admin::local(ctl);
    enabled_group(
        &mut admin,
        pb::CreateScalingGroupRequest {
            name: "web".into(),
            min_size: 0,
            max_size: 2,
            ..Default::default()
        },
    );
    admin
}

fn load_balancers(admin: &mut Admin) -> Vec<pb::LoadBalancerAttachment> {
    admin_call!(
        *admin,
        describe_load_balancers,
        pb::DescribeLoadBalancersRequest {
            scaling_group: "web".into()
        }
    )
    .unwrap()
    .load_balancers
}

#[test]
fn a_target_is_sent_its_state_on_connect_and_on_every_change_and_its_report_shows() {
    let dir = Sandbox::new();
    let ctl = ControllerProc::start(dir.path(), 1000).unwrap();
    let mut admin = web(&ctl);
    let ca = std::fs::read_to_string(ctl.pki_dir().join("ca.crt")).unwrap();
    let (cert, key) = target_identity(&ctl, "lb1");
    let mut stream = RawStream::open(ctl.grpc, &ca, (&cert, &key), target_hello("lb1"))
        .expect("a target's stream is welcomed");
    // Nothing is attached yet: an empty state.
    let first = next_state(&mut stream);
    assert!(first.load_balancers.is_empty() && first.allow_lists.is_empty());
    assert!(first.version > 0);

    admin_call!(
        admin,
        attach_load_balancers,
        pb::AttachLoadBalancersRequest {
            scaling_group: "web".into(),
            load_balancers: vec![pb::LoadBalancerAttachment {
                target: "lb1".into(),
                backend: "web".into(),
                port: 8080,
                ..Default::default()
            }],
        }
    )
    .unwrap();
    let second = next_state(&mut stream);
    assert!(second.version > first.version);
    assert_eq!(second.load_balancers.len(), 1);
    let lb = &second.load_balancers[0];
    assert_eq!(lb.backend, "web");
    assert!(lb.attachment_id.ends_with("/web"), "{}", lb.attachment_id);
    assert!(lb.members.is_empty(), "the group has no instances");

    // The attachment shows the target connected, then its reported error.
    let listed = load_balancers(&mut admin);
    assert!(listed[0].target_connected, "{listed:?}");
    assert_eq!(listed[0].state, "Attached");
    assert_eq!(listed[0].drain_timeout_secs, Some(30));
    stream.send(AgentBody::TargetReport(pb::TargetReport {
        version: second.version,
        attachments: vec![pb::AttachmentReport {
            attachment_id: lb.attachment_id.clone(),
            error: "no backend `web` in this HAProxy".into(),
            members: vec![],
        }],
    }));
    eventually("the target's error to show", DEADLINE, || {
        let l = load_balancers(&mut admin);
        (l[0].error == "no backend `web` in this HAProxy").then_some(())
    });

    // A second stream for the same target supersedes the first, and is
    // sent the whole state at once.
    let mut again = RawStream::open(ctl.grpc, &ca, (&cert, &key), target_hello("lb1")).unwrap();
    let resent = next_state(&mut again);
    assert_eq!(resent.load_balancers, second.load_balancers);
    assert!(resent.version >= second.version);
    // Its reports count, the first stream's no longer do.
    again.send(AgentBody::TargetReport(pb::TargetReport {
        version: resent.version,
        attachments: vec![],
    }));
    eventually(
        "the new stream's report to replace the error",
        DEADLINE,
        || load_balancers(&mut admin)[0].error.is_empty().then_some(()),
    );
}

#[test]
fn identities_that_may_not_drive_a_target_or_the_admin_api_are_refused() {
    let dir = Sandbox::new();
    let ctl = ControllerProc::start(dir.path(), 1000).unwrap();
    let mut admin = web(&ctl);
    let ca = std::fs::read_to_string(ctl.pki_dir().join("ca.crt")).unwrap();

    // An instance's certificate posing as a target.
    ctl.attach("web", &["i-poser"]);
    let instance = ctl
        .ca()
        .issue_agent("i-poser", Duration::from_secs(3600))
        .unwrap();
    let before = refused(&ctl, "not_a_target");
    let mut hello = target_hello("lb1");
    hello.instance_id = "i-poser".into();
    let err = RawStream::open(
        ctl.grpc,
        &ca,
        (&instance.cert_pem, &instance.key_pem),
        hello,
    )
    .err()
    .expect("an instance posing as a target is refused");
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(
        err.contains("instance i-poser's certificate cannot act as target `lb1`"),
        "{err}"
    );
    assert_eq!(refused(&ctl, "not_a_target"), before + 1.0);
    ctl.wait_log("cannot act as target `lb1`");
    // On its own stream, a target report from it is dropped and counted.
    let own = RawStream::open(
        ctl.grpc,
        &ca,
        (&instance.cert_pem, &instance.key_pem),
        ebb_tests::hello("i-poser"),
    )
    .expect("the instance's own stream");
    own.send(AgentBody::TargetReport(pb::TargetReport {
        version: u64::MAX,
        attachments: vec![],
    }));
    ctl.wait_metric("ebb_target_reports_dropped_total", |v| v == 1.0);
    ctl.wait_log("dropped a target report from an instance's agent");

    // A target certificate whose Hello names another target.
    let (cert, key) = target_identity(&ctl, "lb1");
    let err = RawStream::open(ctl.grpc, &ca, (&cert, &key), target_hello("pg1"))
        .err()
        .expect("a Hello for another target is refused");
    assert!(
        err.contains("Hello names target `pg1`") && err.contains("certificate is for target `lb1`"),
        "{err}"
    );

    // A target calling the admin API.
    let mut as_target = Admin::with_identity(&ctl, &cert, &key);
    let err = admin_call!(
        as_target,
        describe_scaling_groups,
        pb::DescribeScalingGroupsRequest::default()
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("spiffe://ebb.local/target/lb1 is a target agent's certificate"),
        "{err:?}"
    );
    let err = admin_call!(
        as_target,
        attach_load_balancers,
        pb::AttachLoadBalancersRequest {
            scaling_group: "web".into(),
            load_balancers: vec![pb::LoadBalancerAttachment {
                target: "lb1".into(),
                backend: "web".into(),
                port: 80,
                ..Default::default()
            }],
        }
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(load_balancers(&mut admin).is_empty());

    // Revoking a target closes its open stream at once, and it is refused
    // at Connect from then on.
    let mut open = RawStream::open(ctl.grpc, &ca, (&cert, &key), target_hello("lb1")).unwrap();
    admin_call!(
        admin,
        revoke_certificate,
        pb::RevokeCertificateRequest {
            identity: "spiffe://ebb.local/target/lb1".into(),
            ..Default::default()
        }
    )
    .unwrap();
    let seen = open
        .until_end(DEADLINE)
        .expect("the revoked target's stream ends");
    assert!(
        seen.iter().any(|m| matches!(
            &m.body,
            Some(ControllerBody::Closing(c)) if c.reason.contains("revoked")
        )),
        "{seen:?}"
    );
    let before = refused(&ctl, "revoked");
    let err = RawStream::open(ctl.grpc, &ca, (&cert, &key), target_hello("lb1"))
        .err()
        .expect("a revoked target is refused");
    assert!(err.contains("was revoked"), "{err}");
    assert_eq!(refused(&ctl, "revoked"), before + 1.0);
}

/// A target token: the host joining with it gets the target's certificate
/// (not an instance, in no group), the token is used up, and the target
/// renews its certificate over its stream.
#[test]
fn a_host_joins_as_a_target_with_a_target_token_and_renews_over_its_stream() {
    let dir = Sandbox::new();
    let ctl = ControllerProc::start(dir.path(), 1000).unwrap();
    let mut admin = web(&ctl);
    let created = admin_call!(
        admin,
        create_join_token,
        pb::CreateJoinTokenRequest {
            target: "pg1".into(),
            ..Default::default()
        }
    )
    .unwrap();
    let info = created.info.unwrap();
    assert_eq!(info.target, "pg1");
    assert!(info.scaling_group_id.is_empty());
    let ca = ctl.ca().cert_pem().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut join = pb::join_service_client::JoinServiceClient::new(
        rt.block_on(ebb_tests::certless(&ctl, &ca)),
    );
    let csr = ebb_certs::Csr::generate().unwrap();
    let joined = rt
        .block_on(join.join(pb::JoinRequest {
            token: created.token.clone(),
            csr_pem: csr.csr_pem.clone(),
            hostname: "db-host".into(),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(joined.target_name, "pg1");
    assert!(joined.instance_id.is_empty() && joined.scaling_group_id.is_empty());
    let described = ebb_certs::describe_pem(&joined.cert_pem).unwrap();
    assert_eq!(
        described.identity.unwrap().uri(),
        "spiffe://ebb.local/target/pg1"
    );
    assert!(ebb_tests::instances(&mut admin, "web").is_empty());
    ctl.wait_log("joined with token");
    // Used up.
    let again = rt
        .block_on(join.join(pb::JoinRequest {
            token: created.token,
            csr_pem: ebb_certs::Csr::generate().unwrap().csr_pem,
            hostname: String::new(),
        }))
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::PermissionDenied, "{again:?}");
    let listed = admin_call!(
        admin,
        list_certificates,
        pb::ListCertificatesRequest::default()
    )
    .unwrap()
    .certificates;
    assert!(
        listed
            .iter()
            .any(|c| c.kind == "target" && c.identity == "spiffe://ebb.local/target/pg1"),
        "{listed:?}"
    );

    // Its certificate holds a target stream, which renews it.
    let issued = csr.into_issued(joined.cert_pem);
    let mut hello = target_hello("pg1");
    hello.drives = vec![pb::TargetKind::Postgres as i32];
    let mut stream =
        RawStream::open(ctl.grpc, &ca, (&issued.cert_pem, &issued.key_pem), hello).unwrap();
    let renewal = ebb_certs::Csr::generate().unwrap();
    stream.send(AgentBody::RenewRequest(pb::RenewRequest {
        csr_pem: renewal.csr_pem,
    }));
    let renewed = eventually("a renewed certificate", DEADLINE, || {
        match stream.next(Duration::from_secs(1)) {
            Next::Message(m) => match m.body {
                Some(ControllerBody::Renewed(r)) => Some(r),
                _ => None,
            },
            _ => None,
        }
    });
    assert!(renewed.error.is_empty(), "{}", renewed.error);
    assert_eq!(
        ebb_certs::describe_pem(&renewed.cert_pem)
            .unwrap()
            .identity
            .unwrap()
            .uri(),
        "spiffe://ebb.local/target/pg1"
    );
}
