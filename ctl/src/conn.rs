//! Finding the controller and talking to it: the data dir's endpoints.toml
//! and admin certificate unless flags say otherwise, the first of several
//! `--controller`s that answers, mTLS with tonic, and gRPC statuses turned
//! into one readable line (a refusal naming the leader kept apart, for
//! `commands` to follow).

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ebb_core::local::DEFAULT_DATA_DIR;
use ebb_core::local::PkiPaths;
use ebb_core::local::{ENDPOINTS_FILE, Endpoints};
use ebb_proto::redirect::leader_of;
use ebb_proto::v1 as pb;
use ebb_proto::v1::admin_service_client::AdminServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Status};

use crate::cli::Global;
use crate::error::{Error, Result, strip_os_error};
use crate::profile::Profile;

/// The environment variable naming the data dir, as for the controller.
pub const DATA_DIR_ENV: &str = "EBB_DATA";
/// A local controller answers in milliseconds; five seconds means it is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Every admin call returns quickly (long work becomes an activity); this
/// only stops a wedged connection from hanging the CLI.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to connect and with which files.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The controllers to try, in order; the first that answers is used.
    pub addrs: Vec<String>,
    /// The name their certificates carry; the host of each address when `None`.
    pub server_name: Option<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Target {
    /// The same files and name, at the leader a controller named.
    pub fn at(&self, leader: &str) -> Self {
        Self {
            addrs: vec![leader.to_owned()],
            ..self.clone()
        }
    }

    fn server_name_for<'a>(&'a self, addr: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or_else(|| host_of(addr))
    }
}

/// Where the packaged controller keeps its data (packaging/controller).
pub const PACKAGED_DATA_DIR: &str = "/var/lib/ebb";

/// `--data-dir`, else `$EBB_DATA`, else `./ebb-data` — unless only the
/// packaged controller's `/var/lib/ebb` has a running controller's
/// endpoints file (`has_endpoints` tells).
pub fn data_dir(
    flag: Option<&Path>,
    env: Option<OsString>,
    has_endpoints: impl Fn(&Path) -> bool,
) -> PathBuf {
    match (flag, env) {
        (Some(dir), _) => dir.to_owned(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        _ => {
            let local = Path::new(DEFAULT_DATA_DIR);
            let packaged = Path::new(PACKAGED_DATA_DIR);
            if !has_endpoints(local) && has_endpoints(packaged) {
                packaged.to_owned()
            } else {
                local.to_owned()
            }
        }
    }
}

pub fn global_data_dir(global: &Global) -> PathBuf {
    data_dir(
        global.data_dir.as_deref(),
        std::env::var_os(DATA_DIR_ENV),
        |dir| dir.join(ENDPOINTS_FILE).exists(),
    )
}

/// The running controller's endpoints; `None` when the file is absent.
pub fn read_endpoints(data_dir: &Path) -> Result<Option<Endpoints>> {
    let path = data_dir.join(ENDPOINTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::read(&path, &e, "")),
    };
    toml::from_str(&text).map(Some).map_err(|e| Error::Read {
        path,
        reason: format!("not a valid endpoints file: {}", e.message()),
    })
}

/// The address to dial for a listen address: a wildcard listener is
/// reached on loopback.
pub fn dial_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The connection settings the flags and `EBB_*` variables left out,
/// taken from the profile; the rest stay as given.
pub fn with_profile(global: Global, profile: Option<Profile>) -> Global {
    let Some(p) = profile else { return global };
    Global {
        controller: if global.controller.is_empty() {
            p.controller
        } else {
            global.controller
        },
        server_name: global.server_name.or(p.server_name),
        ca: global.ca.or(p.ca),
        cert: global.cert.or(p.cert),
        key: global.key.or(p.key),
        ..global
    }
}

/// The profile the flags name (or `default`), from the user's profile file.
/// A data dir given with `--data-dir` or `$EBB_DATA` means that local
/// controller, so the `default` profile is not used then (a named one is).
pub fn load_profile(global: &Global) -> Result<Option<Profile>> {
    let local =
        global.data_dir.is_some() || std::env::var_os(DATA_DIR_ENV).is_some_and(|d| !d.is_empty());
    if local && global.profile.is_none() {
        return Ok(None);
    }
    let path = crate::profile::file_path(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    );
    crate::profile::load(path.as_deref(), global.profile.as_deref())
}

/// Flags (and the profile merged into them) first, then the data dir.
pub fn resolve(global: &Global, data_dir: &Path) -> Result<Target> {
    let (addrs, server_name) = if global.controller.is_empty() {
        let endpoints = read_endpoints(data_dir)?
            .ok_or_else(|| Error::NoController(data_dir.join(ENDPOINTS_FILE)))?;
        let name = global.server_name.clone().unwrap_or(endpoints.server_name);
        (vec![dial_addr(endpoints.grpc).to_string()], Some(name))
    } else {
        (global.controller.clone(), global.server_name.clone())
    };
    let pki = PkiPaths::new(data_dir);
    let (admin_crt, admin_key) = pki.admin();
    Ok(Target {
        addrs,
        server_name,
        ca: global.ca.clone().unwrap_or_else(|| pki.ca().0),
        cert: global.cert.clone().unwrap_or(admin_crt),
        key: global.key.clone().unwrap_or(admin_key),
    })
}

fn read_pem(path: &Path, flag: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::read(path, &e, &format!("use {flag}")))
}

/// An open, authenticated connection to the admin API.
pub struct Admin {
    client: AdminServiceClient<Channel>,
    addr: String,
}

/// Connects to the first of the target's controllers that answers; when
/// none does, says why for each.
pub async fn connect(target: &Target) -> Result<Admin> {
    let ca = Certificate::from_pem(read_pem(&target.ca, "--ca")?);
    let identity = Identity::from_pem(
        read_pem(&target.cert, "--cert")?,
        read_pem(&target.key, "--key")?,
    );
    // Every address is checked before any is dialled, so a typo in the
    // second is not hidden by the first answering.
    let mut endpoints = Vec::new();
    for addr in &target.addrs {
        let tls = ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .identity(identity.clone())
            .domain_name(target.server_name_for(addr));
        let endpoint = Channel::from_shared(format!("https://{addr}"))
            .map_err(|_| {
                Error::Usage(format!(
                    "`{addr}` is not a controller address; expected host:port"
                ))
            })?
            .tls_config(tls)
            .map_err(|e| {
                Error::Local(format!(
                    "cannot use the certificates {}, {}, {}: {}",
                    target.ca.display(),
                    target.cert.display(),
                    target.key.display(),
                    innermost(&e)
                ))
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        endpoints.push((addr, endpoint));
    }
    let mut failures = Vec::new();
    for (addr, endpoint) in endpoints {
        match endpoint.connect().await {
            Ok(channel) => {
                return Ok(Admin {
                    client: AdminServiceClient::new(channel),
                    addr: addr.clone(),
                });
            }
            Err(e) => failures.push((addr.clone(), reason(&e))),
        }
    }
    Err(match <[_; 1]>::try_from(failures) {
        Ok([(addr, reason)]) => Error::Unreachable { addr, reason },
        Err(all) => Error::UnreachableAll(all),
    })
}

/// The deepest cause in an error chain, which is the one that says what
/// happened ("connection refused", "invalid peer certificate: ...").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    if let Some(io) = last.downcast_ref::<std::io::Error>() {
        return crate::error::io_reason(io);
    }
    strip_os_error(&last.to_string())
}

/// Why a connection failed, with a hint where the fix is known.
fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let why = innermost(e);
    let lower = why.to_lowercase();
    if lower.contains("timed out") || lower.contains("elapsed") {
        format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())
    } else if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        format!("{why} (its certificate is not from --ca's CA)")
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        format!("{why} (use --server-name with a name in its certificate)")
    } else {
        why
    }
}

/// A status as one line: the server's message, or why the transport failed.
pub fn status_error(addr: &str, status: &Status) -> Error {
    if let Some(leader) = leader_of(status) {
        return Error::NotLeader {
            message: status.message().to_owned(),
            leader,
        };
    }
    // Statuses made on this side from a transport failure carry the cause.
    if let Some(source) = std::error::Error::source(status)
        && matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        )
    {
        return Error::Unreachable {
            addr: addr.to_owned(),
            reason: reason(source),
        };
    }
    let message = if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    };
    match status.code() {
        // The controller may already say so; the hint is for when it does not.
        Code::PermissionDenied
            if !message.contains("admin certificate") && !message.contains("was revoked") =>
        {
            Error::Server(format!(
                "{message} (this certificate is not an admin certificate)"
            ))
        }
        Code::Unauthenticated => Error::Server(format!(
            "{message} (use an admin certificate from this controller's CA)"
        )),
        Code::Unimplemented => Error::Server(format!(
            "the controller at {addr} does not serve this admin call ({message}); is it older than ebbctl?"
        )),
        Code::DeadlineExceeded => Error::Unreachable {
            addr: addr.to_owned(),
            reason: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
        },
        _ => Error::Server(message),
    }
}

macro_rules! rpcs {
    ($($method:ident($req:ident) -> $resp:ident;)*) => {
        impl Admin {
            $(
                pub async fn $method(&mut self, request: pb::$req) -> Result<pb::$resp> {
                    match self.client.$method(request).await {
                        Ok(response) => Ok(response.into_inner()),
                        Err(status) => Err(status_error(&self.addr, &status)),
                    }
                }
            )*
        }
    };
}

/// Listings that come in pages: ebbctl asks for each page in turn and
/// answers with all of them, so no command stops at the first page. A page
/// with `page_size` set is one page, as asked.
macro_rules! paged_rpcs {
    ($($method:ident($req:ident) -> $resp:ident { $items:ident };)*) => {
        impl Admin {
            $(
                pub async fn $method(&mut self, mut request: pb::$req) -> Result<pb::$resp> {
                    let one_page = request.page_size != 0;
                    let mut all = pb::$resp::default();
                    loop {
                        let page = match self.client.$method(request.clone()).await {
                            Ok(response) => response.into_inner(),
                            Err(status) => return Err(status_error(&self.addr, &status)),
                        };
                        all.$items.extend(page.$items);
                        if one_page || page.next_page_token.is_empty() {
                            all.next_page_token = page.next_page_token;
                            return Ok(all);
                        }
                        request.page_token = page.next_page_token;
                    }
                }
            )*
        }
    };
}

paged_rpcs! {
    describe_scaling_groups(DescribeScalingGroupsRequest) -> DescribeScalingGroupsResponse { scaling_groups };
    describe_scaling_configurations(DescribeScalingConfigurationsRequest) -> DescribeScalingConfigurationsResponse { scaling_configurations };
    describe_scaling_instances(DescribeScalingInstancesRequest) -> DescribeScalingInstancesResponse { instances };
    describe_scaling_rules(DescribeScalingRulesRequest) -> DescribeScalingRulesResponse { scaling_rules };
    describe_alarms(DescribeAlarmsRequest) -> DescribeAlarmsResponse { alarms };
    describe_scheduled_tasks(DescribeScheduledTasksRequest) -> DescribeScheduledTasksResponse { scheduled_tasks };
    list_join_tokens(ListJoinTokensRequest) -> ListJoinTokensResponse { tokens };
    describe_revoked_certificates(DescribeRevokedCertificatesRequest) -> DescribeRevokedCertificatesResponse { certificates };
    list_certificates(ListCertificatesRequest) -> ListCertificatesResponse { certificates };
    describe_lifecycle_actions(DescribeLifecycleActionsRequest) -> DescribeLifecycleActionsResponse { lifecycle_actions };
    describe_notification_configurations(DescribeNotificationConfigurationsRequest) -> DescribeNotificationConfigurationsResponse { notification_configurations };
}

rpcs! {
    create_scaling_group(CreateScalingGroupRequest) -> ScalingGroup;
    modify_scaling_group(ModifyScalingGroupRequest) -> ScalingGroup;
    delete_scaling_group(DeleteScalingGroupRequest) -> DeleteScalingGroupResponse;
    enable_scaling_group(EnableScalingGroupRequest) -> ScalingGroup;
    disable_scaling_group(DisableScalingGroupRequest) -> ScalingGroup;
    create_scaling_configuration(CreateScalingConfigurationRequest) -> ScalingConfiguration;
    modify_scaling_configuration(ModifyScalingConfigurationRequest) -> ScalingConfiguration;
    delete_scaling_configuration(DeleteScalingConfigurationRequest) -> DeleteScalingConfigurationResponse;
    attach_instances(AttachInstancesRequest) -> InstancesResponse;
    detach_instances(DetachInstancesRequest) -> InstancesResponse;
    remove_instances(RemoveInstancesRequest) -> InstancesResponse;
    set_instances_protection(SetInstancesProtectionRequest) -> InstancesResponse;
    set_instance_health(SetInstanceHealthRequest) -> InstancesResponse;
    create_notification_configuration(NotificationConfiguration) -> NotificationConfiguration;
    delete_notification_configuration(NotificationConfiguration) -> DeleteNotificationConfigurationResponse;
    create_lifecycle_hook(CreateLifecycleHookRequest) -> LifecycleHook;
    delete_lifecycle_hook(LifecycleHookRef) -> DeleteLifecycleHookResponse;
    describe_lifecycle_hooks(DescribeLifecycleHooksRequest) -> DescribeLifecycleHooksResponse;
    complete_lifecycle_action(CompleteLifecycleActionRequest) -> LifecycleAction;
    record_lifecycle_action_heartbeat(LifecycleActionRef) -> LifecycleAction;
    enter_standby(StandbyRequest) -> InstancesResponse;
    exit_standby(StandbyRequest) -> InstancesResponse;
    describe_scaling_activities(DescribeScalingActivitiesRequest) -> DescribeScalingActivitiesResponse;
    create_scaling_rule(CreateScalingRuleRequest) -> ScalingRule;
    modify_scaling_rule(ModifyScalingRuleRequest) -> ScalingRule;
    delete_scaling_rule(DeleteScalingRuleRequest) -> DeleteScalingRuleResponse;
    execute_scaling_rule(ExecuteScalingRuleRequest) -> ScalingActivityResponse;
    scale_with_adjustment(ScaleWithAdjustmentRequest) -> ScalingActivityResponse;
    describe_forecast(DescribeForecastRequest) -> DescribeForecastResponse;
    create_alarm(CreateAlarmRequest) -> Alarm;
    modify_alarm(ModifyAlarmRequest) -> Alarm;
    enable_alarm(AlarmRef) -> Alarm;
    disable_alarm(AlarmRef) -> Alarm;
    delete_alarm(AlarmRef) -> DeleteAlarmResponse;
    create_scheduled_task(CreateScheduledTaskRequest) -> ScheduledTask;
    modify_scheduled_task(ModifyScheduledTaskRequest) -> ScheduledTask;
    delete_scheduled_task(ScheduledTaskRef) -> DeleteScheduledTaskResponse;
    suspend_processes(ProcessesRequest) -> ScalingGroup;
    create_join_token(CreateJoinTokenRequest) -> CreateJoinTokenResponse;
    revoke_join_token(RevokeJoinTokenRequest) -> JoinToken;
    resume_processes(ProcessesRequest) -> ScalingGroup;
    revoke_certificate(RevokeCertificateRequest) -> RevokedCertificate;
    issue_certificate(IssueCertificateRequest) -> IssuedCertificate;
    rotate_server_certificate(RotateServerCertificateRequest) -> IssuedCertificate;
    attach_load_balancers(AttachLoadBalancersRequest) -> LoadBalancerAttachments;
    detach_load_balancers(DetachLoadBalancersRequest) -> LoadBalancerAttachments;
    describe_load_balancers(DescribeLoadBalancersRequest) -> LoadBalancerAttachments;
    attach_db_instances(AttachDbInstancesRequest) -> DbInstanceAttachments;
    detach_db_instances(DetachDbInstancesRequest) -> DbInstanceAttachments;
    describe_db_instances(DescribeDbInstancesRequest) -> DbInstanceAttachments;
}

impl Admin {
    /// One group by id or name; NOT_FOUND and an empty answer read the same.
    pub async fn find_group(&mut self, group: &str) -> Result<Option<pb::ScalingGroup>> {
        let request = pb::DescribeScalingGroupsRequest {
            scaling_groups: vec![group.to_owned()],
            ..Default::default()
        };
        match self.client.describe_scaling_groups(request).await {
            Ok(r) => Ok(r
                .into_inner()
                .scaling_groups
                .into_iter()
                .find(|g| g.id == group || g.name == group)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(status_error(&self.addr, &s)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A data dir holding a CA and an admin certificate, and the CA (the
    /// command tests use it too).
    pub(crate) fn test_data_dir() -> (tempfile::TempDir, ebb_certs::Ca) {
        let dir = tempfile::tempdir().unwrap();
        let ca = ebb_certs::Ca::generate("ebb.local", ebb_certs::CA_VALIDITY).unwrap();
        let pki = PkiPaths::new(dir.path());
        let (crt, key) = pki.ca();
        ca.to_issued().write(&crt, &key).unwrap();
        let (acrt, akey) = pki.admin();
        ca.issue_admin("t", ebb_certs::ADMIN_VALIDITY)
            .unwrap()
            .write(&acrt, &akey)
            .unwrap();
        (dir, ca)
    }

    fn global() -> Global {
        Global {
            data_dir: None,
            profile: None,
            controller: Vec::new(),
            server_name: None,
            ca: None,
            cert: None,
            key: None,
            output: crate::output::Output::Table,
        }
    }

    #[test]
    fn data_dir_prefers_the_flag_then_the_environment() {
        let flag = Path::new("/flag");
        let none = |_: &Path| false;
        assert_eq!(data_dir(Some(flag), Some("/env".into()), none), flag);
        assert_eq!(data_dir(None, Some("/env".into()), none), Path::new("/env"));
        assert_eq!(
            data_dir(None, Some("".into()), none),
            Path::new("./ebb-data")
        );
        assert_eq!(data_dir(None, None, none), Path::new("./ebb-data"));
    }

    #[test]
    fn the_packaged_data_dir_is_found_when_only_it_has_a_controller() {
        let packaged = |d: &Path| d == Path::new("/var/lib/ebb");
        assert_eq!(data_dir(None, None, packaged), Path::new("/var/lib/ebb"));
        // A local controller wins; so do the flag and the environment.
        let both = |_: &Path| true;
        assert_eq!(data_dir(None, None, both), Path::new("./ebb-data"));
        assert_eq!(
            data_dir(None, Some("/env".into()), packaged),
            Path::new("/env")
        );
        assert_eq!(
            data_dir(Some(Path::new("/f")), None, packaged),
            Path::new("/f")
        );
    }

    #[test]
    fn no_endpoints_file_says_where_it_looked_and_what_to_do() {
        let err = resolve(&global(), Path::new("./ebb-data")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no controller found: ./ebb-data/endpoints.toml does not exist \
             (is ebb-controller serve running here? use --data-dir or --controller)"
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn endpoints_and_pki_come_from_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("endpoints.toml"),
            "grpc = \"0.0.0.0:7440\"\nhttp = \"127.0.0.1:9440\"\nserver_name = \"localhost\"\n",
        )
        .unwrap();
        let t = resolve(&global(), dir.path()).unwrap();
        assert_eq!(t.addrs, ["127.0.0.1:7440"]);
        assert_eq!(t.server_name.as_deref(), Some("localhost"));
        assert_eq!(t.ca, dir.path().join("pki/ca.crt"));
        assert_eq!(t.cert, dir.path().join("pki/admin.crt"));
        assert_eq!(t.key, dir.path().join("pki/admin.key"));
    }

    #[test]
    fn flags_override_discovery() {
        let g = Global {
            controller: vec!["[::1]:7441".into()],
            cert: Some("/me.crt".into()),
            ..global()
        };
        let t = resolve(&g, Path::new("/nowhere")).unwrap();
        assert_eq!(t.addrs, ["[::1]:7441"]);
        assert_eq!(t.server_name_for(&t.addrs[0]), "::1");
        assert_eq!(t.cert, Path::new("/me.crt"));
        assert_eq!(t.key, Path::new("/nowhere/pki/admin.key"));
        assert_eq!(host_of("ctl.example:7440"), "ctl.example");
    }

    #[test]
    fn the_profile_fills_in_what_flags_and_variables_left_out() {
        let profile = Profile {
            controller: vec!["prof:7440".into()],
            server_name: Some("ctl.prof".into()),
            ca: Some("/prof/ca.crt".into()),
            cert: Some("/prof/admin.crt".into()),
            key: Some("/prof/admin.key".into()),
        };
        let g = Global {
            cert: Some("/flag.crt".into()),
            ..global()
        };
        let t = resolve(
            &with_profile(g, Some(profile.clone())),
            Path::new("/nowhere"),
        )
        .unwrap();
        assert_eq!(t.addrs, ["prof:7440"]);
        assert_eq!(t.server_name.as_deref(), Some("ctl.prof"));
        assert_eq!(t.ca, Path::new("/prof/ca.crt"));
        assert_eq!(t.cert, Path::new("/flag.crt"));
        assert_eq!(t.key, Path::new("/prof/admin.key"));
        // A --controller given (or EBB_CONTROLLER) replaces the profile's list.
        let g = Global {
            controller: vec!["flag:1".into()],
            ..global()
        };
        let t = resolve(&with_profile(g, Some(profile)), Path::new("/nowhere")).unwrap();
        assert_eq!(t.addrs, ["flag:1"]);
        // No profile: the data dir, as before.
        let g = with_profile(global(), None);
        let err = resolve(&g, Path::new("/nowhere")).unwrap_err().to_string();
        assert!(err.starts_with("no controller found"), "{err}");
    }

    #[test]
    fn a_broken_endpoints_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("endpoints.toml"), "grpc = 1\n").unwrap();
        let err = resolve(&global(), dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("cannot read "), "{err}");
        assert!(
            err.contains("endpoints.toml: not a valid endpoints file"),
            "{err}"
        );
    }

    #[test]
    fn statuses_read_as_one_line() {
        let denied =
            Status::permission_denied("spiffe://ebb.local/instance/i-1 may not call the admin API");
        assert_eq!(
            status_error("127.0.0.1:7440", &denied).to_string(),
            "spiffe://ebb.local/instance/i-1 may not call the admin API \
             (this certificate is not an admin certificate)"
        );
        let missing = Status::not_found("scaling group `web` does not exist");
        assert_eq!(
            status_error("a:1", &missing).to_string(),
            "scaling group `web` does not exist"
        );
        let said = Status::permission_denied("the admin API needs an admin certificate");
        assert_eq!(
            status_error("a:1", &said).to_string(),
            "the admin API needs an admin certificate"
        );
        let err = status_error("a:1", &Status::unimplemented(""));
        assert!(
            err.to_string().contains("does not serve this admin call"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[tokio::test]
    async fn a_closed_port_is_connection_refused() {
        let (dir, _) = test_data_dir();
        // A port that was just free is very likely still closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let g = Global {
            controller: vec![format!("127.0.0.1:{port}")],
            ..global()
        };
        let target = resolve(&g, dir.path()).unwrap();
        let Err(err) = connect(&target).await else {
            panic!("connected to a closed port")
        };
        assert_eq!(
            err.to_string(),
            format!("cannot reach the controller at 127.0.0.1:{port}: connection refused")
        );
    }

    #[tokio::test]
    async fn a_missing_admin_cert_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let g = Global {
            controller: vec!["127.0.0.1:1".into()],
            ..global()
        };
        let target = resolve(&g, dir.path()).unwrap();
        let Err(err) = connect(&target).await else {
            panic!("connected without certificates")
        };
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read {}: it does not exist (use --ca)",
                dir.path().join("pki/ca.crt").display()
            )
        );
    }
}
