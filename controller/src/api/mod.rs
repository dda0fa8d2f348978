//! The admin gRPC API, one file per resource family. A handler parses its
//! request, calls the engine and renders the answer; `common` maps every
//! error to the status a caller can act on.
//!
//! - `groups`, `configurations`, `instances`, `activities`: the group and what it holds.
//! - `rules`, `alarms`, `tasks`: what changes capacity, and when.
//! - `hooks`, `notifications`: who is told, and who may hold an instance.
//! - `certificates`: the registry of issued certs, admin certs, server
//!   rotation, and the deny-list of revoked identities.
//! - `tokens`: join tokens; `join`: the `JoinService` a host without a
//!   certificate calls with one.

use std::sync::Arc;

use ebb_certs::{Identity, Role};
use ebb_proto::v1 as pb;
use ebb_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::denylist::DenyList;
use crate::engine::Engine;

pub mod activities;
pub mod alarms;
pub mod attachments;
pub mod certificates;
pub mod common;
pub mod configurations;
pub mod forecast;
pub mod groups;
pub mod hooks;
pub mod idempotency;
pub mod instances;
pub mod join;
mod metric_sources;
pub mod notifications;
pub mod rules;
pub mod tasks;
pub mod tokens;

/// The admin gRPC service.
#[derive(Clone)]
pub struct AdminApi {
    engine: Arc<Engine>,
    tokens: Arc<idempotency::Tokens>,
}

impl AdminApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            tokens: Arc::default(),
        }
    }
}

/// The admin identity making a call, put in the request's extensions by
/// [`admin_only`].
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

/// Refuses a caller without a client certificate from our CA (the TLS
/// layer verified any it presented): for the health and reflection
/// services, which any agent or admin may use, but not a stranger.
pub fn certified(req: Request<()>) -> Result<Request<()>, Status> {
    if req.peer_certs().is_some_and(|c| !c.is_empty()) {
        Ok(req)
    } else {
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        warn!(peer, "refused call: no client certificate");
        Err(Status::permission_denied("no client certificate"))
    }
}

/// Refuses any caller whose certificate is not an admin certificate of
/// `trust_domain`, or whose identity is on the deny-list; logs each
/// refusal.
pub fn admin_only(
    trust_domain: String,
    deny: Arc<DenyList>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| {
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let refuse = |why: String| {
            warn!(peer, "refused admin call: {why}");
            Status::permission_denied(why)
        };
        let certs = req
            .peer_certs()
            .ok_or_else(|| refuse("no client certificate".into()))?;
        let leaf = certs
            .first()
            .ok_or_else(|| refuse("no client certificate".into()))?;
        let id = ebb_certs::peer_identity(leaf)
            .map_err(|e| refuse(format!("unusable certificate: {e}")))?;
        if id.trust_domain != trust_domain {
            return Err(refuse(format!(
                "certificate {id} is not of trust domain {trust_domain}"
            )));
        }
        if deny.contains(&id.uri()) {
            return Err(refuse(format!(
                "certificate {id} was revoked (`ebbctl cert revoked` lists the deny-list)"
            )));
        }
        match id.role {
            Role::Admin(_) => {
                req.extensions_mut().insert(Caller(id));
                Ok(req)
            }
            Role::Instance(_) => Err(refuse(format!(
                "{id} is an agent certificate; the admin API needs an admin certificate"
            ))),
            Role::Target(_) => Err(refuse(format!(
                "{id} is a target agent's certificate; the admin API needs an admin certificate"
            ))),
        }
    }
}

/// Who makes `request`: the identity [`admin_only`] found on its
/// certificate ("unknown" only for a server built without the interceptor).
fn admin_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.uri())
}

/// Logs a mutating call with the admin who made it and how it ended.
fn log_call<T>(admin: &str, call: &str, result: &Result<T, Status>) {
    match result {
        Ok(_) => info!(%admin, call, "admin call"),
        Err(status) => {
            info!(%admin, call, code = ?status.code(), "admin call refused: {}", status.message());
        }
    }
}

/// `AdminService` as one line per call: the handler in its family's file,
/// on the inner request (and, for those after `with caller:`, the admin
/// identity making it; for those after `once per client_token:`, run once
/// per token), its answer wrapped.
macro_rules! handlers {
    (
        $($family:ident::$method:ident($req:ty) -> $resp:ty;)*
        ; with caller:
        $($cfamily:ident::$cmethod:ident($creq:ty) -> $cresp:ty;)*
        ; once per client_token:
        $($ifamily:ident::$imethod:ident($ireq:ty) -> $iresp:ty;)*
    ) => {
        #[tonic::async_trait]
        impl AdminService for AdminApi {
            $(
                async fn $imethod(
                    &self,
                    request: Request<$ireq>,
                ) -> Result<Response<$iresp>, Status> {
                    let call = stringify!($imethod);
                    let admin = admin_of(&request);
                    let mut req = request.into_inner();
                    let token = std::mem::take(&mut req.client_token);
                    let named = req.clone();
                    let result = crate::engine::activity::as_admin(
                        admin.clone(),
                        idempotency::once(
                            &self.engine,
                            &self.tokens,
                            call,
                            token,
                            &named,
                            $ifamily::$imethod(&self.engine, req),
                        ),
                    )
                    .await;
                    log_call(&admin, call, &result);
                    result.map(Response::new)
                }
            )*
            $(
                async fn $method(
                    &self,
                    request: Request<$req>,
                ) -> Result<Response<$resp>, Status> {
                    let call = stringify!($method);
                    // Reads are not recorded; every other call is logged
                    // with its admin, and what it starts records them.
                    if call.starts_with("describe_") {
                        return $family::$method(&self.engine, request.into_inner())
                            .await
                            .map(Response::new);
                    }
                    let admin = admin_of(&request);
                    let result = crate::engine::activity::as_admin(
                        admin.clone(),
                        $family::$method(&self.engine, request.into_inner()),
                    )
                    .await;
                    log_call(&admin, call, &result);
                    result.map(Response::new)
                }
            )*
            $(
                async fn $cmethod(
                    &self,
                    request: Request<$creq>,
                ) -> Result<Response<$cresp>, Status> {
                    let call = stringify!($cmethod);
                    let caller = request
                        .extensions()
                        .get::<Caller>()
                        .cloned()
                        .ok_or_else(|| Status::permission_denied("no admin identity on the call"))?;
                    let admin = caller.0.uri();
                    let result = $cfamily::$cmethod(&self.engine, caller, request.into_inner()).await;
                    log_call(&admin, call, &result);
                    result.map(Response::new)
                }
            )*
        }
    };
}

handlers! {
    groups::create_scaling_group(pb::CreateScalingGroupRequest) -> pb::ScalingGroup;
    groups::delete_scaling_group(pb::DeleteScalingGroupRequest) -> pb::DeleteScalingGroupResponse;
    groups::describe_scaling_groups(pb::DescribeScalingGroupsRequest) -> pb::DescribeScalingGroupsResponse;
    groups::disable_scaling_group(pb::DisableScalingGroupRequest) -> pb::ScalingGroup;
    configurations::create_scaling_configuration(pb::CreateScalingConfigurationRequest) -> pb::ScalingConfiguration;
    configurations::modify_scaling_configuration(pb::ModifyScalingConfigurationRequest) -> pb::ScalingConfiguration;
    configurations::delete_scaling_configuration(pb::DeleteScalingConfigurationRequest) -> pb::DeleteScalingConfigurationResponse;
    configurations::describe_scaling_configurations(pb::DescribeScalingConfigurationsRequest) -> pb::DescribeScalingConfigurationsResponse;
    instances::describe_scaling_instances(pb::DescribeScalingInstancesRequest) -> pb::DescribeScalingInstancesResponse;
    instances::set_instances_protection(pb::SetInstancesProtectionRequest) -> pb::InstancesResponse;
    instances::set_instance_health(pb::SetInstanceHealthRequest) -> pb::InstancesResponse;
    instances::enter_standby(pb::StandbyRequest) -> pb::InstancesResponse;
    instances::exit_standby(pb::StandbyRequest) -> pb::InstancesResponse;
    activities::describe_scaling_activities(pb::DescribeScalingActivitiesRequest) -> pb::DescribeScalingActivitiesResponse;
    rules::create_scaling_rule(pb::CreateScalingRuleRequest) -> pb::ScalingRule;
    rules::modify_scaling_rule(pb::ModifyScalingRuleRequest) -> pb::ScalingRule;
    rules::delete_scaling_rule(pb::DeleteScalingRuleRequest) -> pb::DeleteScalingRuleResponse;
    rules::describe_scaling_rules(pb::DescribeScalingRulesRequest) -> pb::DescribeScalingRulesResponse;
    forecast::describe_forecast(pb::DescribeForecastRequest) -> pb::DescribeForecastResponse;
    alarms::create_alarm(pb::CreateAlarmRequest) -> pb::Alarm;
    alarms::modify_alarm(pb::ModifyAlarmRequest) -> pb::Alarm;
    alarms::enable_alarm(pb::AlarmRef) -> pb::Alarm;
    alarms::disable_alarm(pb::AlarmRef) -> pb::Alarm;
    alarms::delete_alarm(pb::AlarmRef) -> pb::DeleteAlarmResponse;
    alarms::describe_alarms(pb::DescribeAlarmsRequest) -> pb::DescribeAlarmsResponse;
    tasks::create_scheduled_task(pb::CreateScheduledTaskRequest) -> pb::ScheduledTask;
    tasks::modify_scheduled_task(pb::ModifyScheduledTaskRequest) -> pb::ScheduledTask;
    tasks::delete_scheduled_task(pb::ScheduledTaskRef) -> pb::DeleteScheduledTaskResponse;
    tasks::describe_scheduled_tasks(pb::DescribeScheduledTasksRequest) -> pb::DescribeScheduledTasksResponse;
    groups::suspend_processes(pb::ProcessesRequest) -> pb::ScalingGroup;
    groups::resume_processes(pb::ProcessesRequest) -> pb::ScalingGroup;
    notifications::create_notification_configuration(pb::NotificationConfiguration) -> pb::NotificationConfiguration;
    notifications::delete_notification_configuration(pb::NotificationConfiguration) -> pb::DeleteNotificationConfigurationResponse;
    hooks::create_lifecycle_hook(pb::CreateLifecycleHookRequest) -> pb::LifecycleHook;
    hooks::delete_lifecycle_hook(pb::LifecycleHookRef) -> pb::DeleteLifecycleHookResponse;
    hooks::describe_lifecycle_hooks(pb::DescribeLifecycleHooksRequest) -> pb::DescribeLifecycleHooksResponse;
    hooks::describe_lifecycle_actions(pb::DescribeLifecycleActionsRequest) -> pb::DescribeLifecycleActionsResponse;
    hooks::complete_lifecycle_action(pb::CompleteLifecycleActionRequest) -> pb::LifecycleAction;
    hooks::record_lifecycle_action_heartbeat(pb::LifecycleActionRef) -> pb::LifecycleAction;
    notifications::describe_notification_configurations(pb::DescribeNotificationConfigurationsRequest) -> pb::DescribeNotificationConfigurationsResponse;
    certificates::describe_revoked_certificates(pb::DescribeRevokedCertificatesRequest) -> pb::DescribeRevokedCertificatesResponse;
    certificates::list_certificates(pb::ListCertificatesRequest) -> pb::ListCertificatesResponse;
    certificates::issue_certificate(pb::IssueCertificateRequest) -> pb::IssuedCertificate;
    certificates::rotate_server_certificate(pb::RotateServerCertificateRequest) -> pb::IssuedCertificate;
    tokens::list_join_tokens(pb::ListJoinTokensRequest) -> pb::ListJoinTokensResponse;
    attachments::attach_load_balancers(pb::AttachLoadBalancersRequest) -> pb::LoadBalancerAttachments;
    attachments::detach_load_balancers(pb::DetachLoadBalancersRequest) -> pb::LoadBalancerAttachments;
    attachments::describe_load_balancers(pb::DescribeLoadBalancersRequest) -> pb::LoadBalancerAttachments;
    attachments::attach_db_instances(pb::AttachDbInstancesRequest) -> pb::DbInstanceAttachments;
    attachments::detach_db_instances(pb::DetachDbInstancesRequest) -> pb::DbInstanceAttachments;
    attachments::describe_db_instances(pb::DescribeDbInstancesRequest) -> pb::DbInstanceAttachments;
    ; with caller:
    certificates::revoke_certificate(pb::RevokeCertificateRequest) -> pb::RevokedCertificate;
    tokens::create_join_token(pb::CreateJoinTokenRequest) -> pb::CreateJoinTokenResponse;
    tokens::revoke_join_token(pb::RevokeJoinTokenRequest) -> pb::JoinToken;
    ; once per client_token:
    groups::modify_scaling_group(pb::ModifyScalingGroupRequest) -> pb::ScalingGroup;
    groups::enable_scaling_group(pb::EnableScalingGroupRequest) -> pb::ScalingGroup;
    instances::attach_instances(pb::AttachInstancesRequest) -> pb::InstancesResponse;
    instances::detach_instances(pb::DetachInstancesRequest) -> pb::InstancesResponse;
    instances::remove_instances(pb::RemoveInstancesRequest) -> pb::InstancesResponse;
    rules::execute_scaling_rule(pb::ExecuteScalingRuleRequest) -> pb::ScalingActivityResponse;
    rules::scale_with_adjustment(pb::ScaleWithAdjustmentRequest) -> pb::ScalingActivityResponse;
}
