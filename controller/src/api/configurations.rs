//! Scaling configurations: the templates new instances are launched from.

use super::metric_sources;
use crate::api::common::{Page, find_group, invalid, invalid_text, now_ms, required, time_key};
use crate::engine::{Engine, limits};
use crate::id::new_id;
use crate::store::Write;
use ebb_core::model::{
    ConfigurationSpec, GroupState, LocalCheck, ScalingConfiguration, ScalingGroup,
};
use ebb_proto::v1 as pb;
use tonic::Status;
use tracing::info;

/// A configuration of `group` by id or name.
pub(crate) fn find_configuration(
    engine: &Engine,
    group: &ScalingGroup,
    key: &str,
) -> Result<ScalingConfiguration, Status> {
    engine
        .store
        .list_configurations(Some(&group.id))?
        .into_iter()
        .find(|c| c.id == key || c.name == key)
        .ok_or_else(|| {
            Status::not_found(format!(
                "scaling configuration `{key}` does not exist in group {}",
                group.name
            ))
        })
}

fn config_view(
    _engine: &Engine,
    c: &ScalingConfiguration,
    group: Option<&ScalingGroup>,
) -> pb::ScalingConfiguration {
    let active = group.is_some_and(|g| g.active_configuration_id.as_deref() == Some(&c.id));
    pb::ScalingConfiguration {
        id: c.id.clone(),
        scaling_group_id: c.group_id.clone(),
        name: c.name.clone(),
        instance_type: c.instance_type.clone(),
        command: c.command.clone(),
        env: c.env.clone().into_iter().collect(),
        tags: c.tags.clone().into_iter().collect(),
        user_data: c.user_data.clone(),
        created_at_ms: c.created_at_ms,
        active,
        health_checks: c.health_checks.iter().map(check_view).collect(),
        metrics: metric_sources::view(&c.metrics),
        exec: c.exec.as_ref().map(Into::into),
        microvm: c.microvm.as_ref().map(Into::into),
    }
}

/// A local health check as the API carries it: empty and 0 mean "not set".
fn check_view(c: &LocalCheck) -> pb::LocalHealthCheck {
    pb::LocalHealthCheck {
        name: c.name.clone(),
        http: c.http.clone().unwrap_or_default(),
        tcp: c.tcp.clone().unwrap_or_default(),
        command: c.command.clone().unwrap_or_default(),
        interval_ms: c.interval_ms.unwrap_or_default() as u32,
        timeout_ms: c.timeout_ms.unwrap_or_default() as u32,
    }
}

fn check_of(c: &pb::LocalHealthCheck) -> LocalCheck {
    let text = |s: &String| (!s.is_empty()).then(|| s.clone());
    LocalCheck {
        name: c.name.clone(),
        http: text(&c.http),
        tcp: text(&c.tcp),
        command: (!c.command.is_empty()).then(|| c.command.clone()),
        interval_ms: (c.interval_ms > 0).then_some(u64::from(c.interval_ms)),
        timeout_ms: (c.timeout_ms > 0).then_some(u64::from(c.timeout_ms)),
    }
}

/// Refuses a configuration this controller's provider cannot launch (the
/// microvm provider on a host without /dev/kvm, say), naming what is missing.
fn launchable(engine: &Engine, config: &ScalingConfiguration) -> Result<(), Status> {
    use crate::provider::ProviderError;
    match engine.provider.check(config) {
        Ok(()) => Ok(()),
        Err(ProviderError::Invalid(why)) => Err(invalid_text("scaling_configuration", why)),
        Err(e) => Err(Status::failed_precondition(e.to_string())),
    }
}

pub async fn create_scaling_configuration(
    engine: &Engine,
    req: pb::CreateScalingConfigurationRequest,
) -> Result<pb::ScalingConfiguration, Status> {
    let _ops = engine.ops.lock().await;
    let mut group = find_group(engine, &req.scaling_group)?;
    let spec = ConfigurationSpec {
        name: Some(req.name),
        instance_type: Some(req.instance_type),
        command: Some(req.command),
        env: Some(req.env.into_iter().collect()),
        tags: Some(req.tags.into_iter().collect()),
        user_data: Some(req.user_data),
        health_checks: Some(req.health_checks.iter().map(check_of).collect()),
        metrics: Some(metric_sources::of(&req.metrics)),
        exec: req.exec.as_ref().map(Into::into),
        microvm: req.microvm.as_ref().map(Into::into),
    };
    let config =
        ScalingConfiguration::create(new_id("asc"), group.id.clone(), &spec, now_ms(engine))
            .map_err(invalid)?;
    launchable(engine, &config)?;
    let mut writes = vec![Write::PutConfiguration(config.clone())];
    // A group's first configuration becomes its active one.
    if group.active_configuration_id.is_none() {
        group.active_configuration_id = Some(config.id.clone());
        writes.push(Write::UpdateGroup(group.clone()));
    }
    let existing = engine.store.list_configurations(Some(&group.id))?;
    if existing.iter().any(|c| c.name == config.name) {
        return Err(Status::already_exists(format!(
            "scaling configuration `{}` already exists in group {}",
            config.name, group.name
        )));
    }
    let cap = engine.limits.configurations_per_group;
    let whose = format!("scaling group {}", group.name);
    let names = (
        "scaling configurations",
        whose.as_str(),
        "configurations_per_group",
    );
    limits::check(existing.len(), 1, cap, names)?;
    engine.store.commit(writes)?;
    info!(group = %group.name, configuration = %config.name, "scaling configuration created");
    Ok(config_view(engine, &config, Some(&group)))
}

pub async fn modify_scaling_configuration(
    engine: &Engine,
    req: pb::ModifyScalingConfigurationRequest,
) -> Result<pb::ScalingConfiguration, Status> {
    let _ops = engine.ops.lock().await;
    required("scaling_configuration_id", &req.scaling_configuration_id)?;
    let store = &engine.store;
    let old = store
        .get_configuration(&req.scaling_configuration_id)?
        .ok_or_else(|| {
            Status::not_found(format!(
                "scaling configuration {} does not exist",
                req.scaling_configuration_id
            ))
        })?;
    let spec = ConfigurationSpec {
        name: req.name,
        instance_type: req.instance_type,
        command: req.set_command.then_some(req.command),
        env: req.set_env.then(|| req.env.into_iter().collect()),
        tags: req.set_tags.then(|| req.tags.into_iter().collect()),
        user_data: req.user_data,
        health_checks: req
            .set_health_checks
            .then(|| req.health_checks.iter().map(check_of).collect()),
        metrics: req.set_metrics.then(|| metric_sources::of(&req.metrics)),
        exec: req.exec.as_ref().map(Into::into),
        microvm: req.microvm.as_ref().map(Into::into),
    };
    let config = old.modified(&spec).map_err(invalid)?;
    launchable(engine, &config)?;
    store.commit(vec![Write::PutConfiguration(config.clone())])?;
    let group = store.get_group(&config.group_id)?;
    info!(configuration = %config.name, "scaling configuration modified; running instances are left alone");
    Ok(config_view(engine, &config, group.as_ref()))
}

pub async fn delete_scaling_configuration(
    engine: &Engine,
    req: pb::DeleteScalingConfigurationRequest,
) -> Result<pb::DeleteScalingConfigurationResponse, Status> {
    let _ops = engine.ops.lock().await;
    required("scaling_configuration_id", &req.scaling_configuration_id)?;
    let store = &engine.store;
    let config = store
        .get_configuration(&req.scaling_configuration_id)?
        .ok_or_else(|| {
            Status::not_found(format!(
                "scaling configuration {} does not exist",
                req.scaling_configuration_id
            ))
        })?;
    if let Some(group) = store.get_group(&config.group_id)? {
        if group.active_configuration_id.as_deref() == Some(&config.id)
            && group.state == GroupState::Active
        {
            return Err(Status::failed_precondition(format!(
                "scaling configuration {} is the active one of enabled group {}; make another active or disable the group first",
                config.name, group.name
            )));
        }
        let mut writes = vec![Write::DeleteConfiguration(config.id.clone())];
        if group.active_configuration_id.as_deref() == Some(&config.id) {
            let mut g = group.clone();
            g.active_configuration_id = None;
            writes.insert(0, Write::UpdateGroup(g));
        }
        store.commit(writes)?;
    } else {
        store.commit(vec![Write::DeleteConfiguration(config.id.clone())])?;
    }
    Ok(pb::DeleteScalingConfigurationResponse {})
}

pub async fn describe_scaling_configurations(
    engine: &Engine,
    req: pb::DescribeScalingConfigurationsRequest,
) -> Result<pb::DescribeScalingConfigurationsResponse, Status> {
    let store = &engine.store;
    let page = Page::of(req.page_size, &req.page_token)?;
    let (configs, groups) = if req.scaling_group.is_empty() {
        (store.list_configurations(None)?, store.list_groups()?)
    } else {
        let g = find_group(engine, &req.scaling_group)?;
        (store.list_configurations(Some(&g.id))?, vec![g])
    };
    let (configs, next_page_token) = page.cut(configs, |c| time_key(c.created_at_ms, &c.id));
    let views = configs
        .iter()
        .map(|c| config_view(engine, c, groups.iter().find(|g| g.id == c.group_id)))
        .collect();
    Ok(pb::DescribeScalingConfigurationsResponse {
        scaling_configurations: views,
        next_page_token,
    })
}
