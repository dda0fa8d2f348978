//! Scaling rules, alarms, scheduled tasks and suspended processes: the
//! admin operations and the loops that run them.

use ebb_proto::v1 as pb;
use tonic::Status;

use crate::engine::Engine;

pub async fn create_scaling_rule(
    _engine: &Engine,
    _req: pb::CreateScalingRuleRequest,
) -> Result<pb::ScalingRule, Status> {
    Err(Status::unimplemented("create_scaling_rule is being built"))
}

pub async fn modify_scaling_rule(
    _engine: &Engine,
    _req: pb::ModifyScalingRuleRequest,
) -> Result<pb::ScalingRule, Status> {
    Err(Status::unimplemented("modify_scaling_rule is being built"))
}

pub async fn delete_scaling_rule(
    _engine: &Engine,
    _req: pb::DeleteScalingRuleRequest,
) -> Result<pb::DeleteScalingRuleResponse, Status> {
    Err(Status::unimplemented("delete_scaling_rule is being built"))
}

pub async fn describe_scaling_rules(
    _engine: &Engine,
    _req: pb::DescribeScalingRulesRequest,
) -> Result<pb::DescribeScalingRulesResponse, Status> {
    Err(Status::unimplemented(
        "describe_scaling_rules is being built",
    ))
}

pub async fn execute_scaling_rule(
    _engine: &Engine,
    _req: pb::ExecuteScalingRuleRequest,
) -> Result<pb::ScalingActivityResponse, Status> {
    Err(Status::unimplemented("execute_scaling_rule is being built"))
}

pub async fn scale_with_adjustment(
    _engine: &Engine,
    _req: pb::ScaleWithAdjustmentRequest,
) -> Result<pb::ScalingActivityResponse, Status> {
    Err(Status::unimplemented(
        "scale_with_adjustment is being built",
    ))
}

pub async fn create_alarm(
    _engine: &Engine,
    _req: pb::CreateAlarmRequest,
) -> Result<pb::Alarm, Status> {
    Err(Status::unimplemented("create_alarm is being built"))
}

pub async fn modify_alarm(
    _engine: &Engine,
    _req: pb::ModifyAlarmRequest,
) -> Result<pb::Alarm, Status> {
    Err(Status::unimplemented("modify_alarm is being built"))
}

pub async fn enable_alarm(_engine: &Engine, _req: pb::AlarmRef) -> Result<pb::Alarm, Status> {
    Err(Status::unimplemented("enable_alarm is being built"))
}

pub async fn disable_alarm(_engine: &Engine, _req: pb::AlarmRef) -> Result<pb::Alarm, Status> {
    Err(Status::unimplemented("disable_alarm is being built"))
}

pub async fn delete_alarm(
    _engine: &Engine,
    _req: pb::AlarmRef,
) -> Result<pb::DeleteAlarmResponse, Status> {
    Err(Status::unimplemented("delete_alarm is being built"))
}

pub async fn describe_alarms(
    _engine: &Engine,
    _req: pb::DescribeAlarmsRequest,
) -> Result<pb::DescribeAlarmsResponse, Status> {
    Err(Status::unimplemented("describe_alarms is being built"))
}

pub async fn create_scheduled_task(
    _engine: &Engine,
    _req: pb::CreateScheduledTaskRequest,
) -> Result<pb::ScheduledTask, Status> {
    Err(Status::unimplemented(
        "create_scheduled_task is being built",
    ))
}

pub async fn modify_scheduled_task(
    _engine: &Engine,
    _req: pb::ModifyScheduledTaskRequest,
) -> Result<pb::ScheduledTask, Status> {
    Err(Status::unimplemented(
        "modify_scheduled_task is being built",
    ))
}

pub async fn delete_scheduled_task(
    _engine: &Engine,
    _req: pb::ScheduledTaskRef,
) -> Result<pb::DeleteScheduledTaskResponse, Status> {
    Err(Status::unimplemented(
        "delete_scheduled_task is being built",
    ))
}

pub async fn describe_scheduled_tasks(
    _engine: &Engine,
    _req: pb::DescribeScheduledTasksRequest,
) -> Result<pb::DescribeScheduledTasksResponse, Status> {
    Err(Status::unimplemented(
        "describe_scheduled_tasks is being built",
    ))
}

pub async fn suspend_processes(
    _engine: &Engine,
    _req: pb::ProcessesRequest,
) -> Result<pb::ScalingGroup, Status> {
    Err(Status::unimplemented("suspend_processes is being built"))
}

pub async fn resume_processes(
    _engine: &Engine,
    _req: pb::ProcessesRequest,
) -> Result<pb::ScalingGroup, Status> {
    Err(Status::unimplemented("resume_processes is being built"))
}
