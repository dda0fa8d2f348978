//! `config create` (from scratch or from an instance's configuration) and
//! `config modify`: the flags laid over what is there, then the request.

use ebb_core::model::ProviderKind;
use ebb_proto::v1 as pb;

use crate::cli::group::ConfigFields;

/// `base` with the flags that were given laid over it: env and tags set
/// their keys, an exec or microvm flag sets that field, a command replaces.
pub fn overlay(base: &pb::ScalingConfiguration, f: &ConfigFields) -> pb::ScalingConfiguration {
    let mut c = base.clone();
    if let Some(t) = &f.instance_type {
        c.instance_type.clone_from(t);
    }
    c.env.extend(f.env.iter().cloned());
    c.tags.extend(f.tags.iter().cloned());
    if let Some(u) = &f.user_data {
        c.user_data.clone_from(u);
    }
    if !f.command.is_empty() {
        c.command.clone_from(&f.command);
    }
    let exec_given = f.exec_program.is_some()
        || !f.exec_params.is_empty()
        || !f.exec_env.is_empty()
        || f.exec_launch_timeout_ms.is_some()
        || f.exec_attempts.is_some();
    if exec_given {
        let e = c.exec.get_or_insert_with(Default::default);
        if let Some(p) = &f.exec_program {
            e.program.clone_from(p);
        }
        e.params.extend(f.exec_params.iter().cloned());
        e.env.extend(f.exec_env.iter().cloned());
        if f.exec_launch_timeout_ms.is_some() {
            e.launch_timeout_ms = f.exec_launch_timeout_ms;
        }
        if f.exec_attempts.is_some() {
            e.attempts = f.exec_attempts;
        }
    }
    if f.vcpus.is_some() || f.memory_mib.is_some() {
        let m = c.microvm.get_or_insert_with(Default::default);
        if f.vcpus.is_some() {
            m.vcpus = f.vcpus;
        }
        if f.memory_mib.is_some() {
            m.memory_mib = f.memory_mib;
        }
    }
    // Another provider's settings do not travel with a changed type.
    match ProviderKind::of(&c.instance_type) {
        ProviderKind::Exec => c.microvm = None,
        ProviderKind::Microvm => c.exec = None,
        ProviderKind::Process => {
            c.exec = None;
            c.microvm = None;
        }
    }
    c
}

/// The create request for `c` (its id, group and timestamps are the
/// server's to set).
pub fn create_request(
    group: &str,
    name: &str,
    c: &pb::ScalingConfiguration,
) -> pb::CreateScalingConfigurationRequest {
    pb::CreateScalingConfigurationRequest {
        scaling_group: group.to_owned(),
        name: name.to_owned(),
        instance_type: c.instance_type.clone(),
        command: c.command.clone(),
        env: c.env.clone(),
        tags: c.tags.clone(),
        user_data: c.user_data.clone(),
        health_checks: c.health_checks.clone(),
        metrics: c.metrics.clone(),
        exec: c.exec.clone(),
        microvm: c.microvm,
    }
}

/// The modify request taking `current` to `wanted`: only what differs is
/// sent. None when nothing does.
pub fn modify_request(
    current: &pb::ScalingConfiguration,
    wanted: &pb::ScalingConfiguration,
) -> Option<pb::ModifyScalingConfigurationRequest> {
    let request = pb::ModifyScalingConfigurationRequest {
        scaling_configuration_id: current.id.clone(),
        name: (wanted.name != current.name).then(|| wanted.name.clone()),
        instance_type: (wanted.instance_type != current.instance_type)
            .then(|| wanted.instance_type.clone()),
        set_command: wanted.command != current.command,
        command: wanted.command.clone(),
        set_env: wanted.env != current.env,
        env: wanted.env.clone(),
        set_tags: wanted.tags != current.tags,
        tags: wanted.tags.clone(),
        user_data: (wanted.user_data != current.user_data).then(|| wanted.user_data.clone()),
        health_checks: Vec::new(),
        set_health_checks: false,
        metrics: Vec::new(),
        set_metrics: false,
        exec: wanted.exec.clone().filter(|_| wanted.exec != current.exec),
        microvm: wanted.microvm.filter(|_| wanted.microvm != current.microvm),
    };
    let nothing = request.name.is_none()
        && request.instance_type.is_none()
        && !request.set_command
        && !request.set_env
        && !request.set_tags
        && request.user_data.is_none()
        && request.exec.is_none()
        && request.microvm.is_none();
    (!nothing).then_some(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_config() -> pb::ScalingConfiguration {
        pb::ScalingConfiguration {
            id: "asc-1".into(),
            name: "web-v1".into(),
            instance_type: "exec".into(),
            command: vec!["/usr/bin/web".into()],
            env: [("PORT".to_owned(), "8080".to_owned())].into(),
            exec: Some(pb::ExecSettings {
                program: "/opt/launch".into(),
                params: [("image".to_owned(), "debian-12".to_owned())].into(),
                attempts: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn flags_override_what_an_instance_configuration_had() {
        let base = exec_config();
        let f = ConfigFields {
            env: vec![("MODE".into(), "fast".into())],
            exec_params: vec![("image".into(), "debian-13".into())],
            ..Default::default()
        };
        let c = overlay(&base, &f);
        assert_eq!(c.env.len(), 2, "keys are set, not replaced");
        assert_eq!(c.env["PORT"], "8080");
        let exec = c.exec.as_ref().unwrap();
        assert_eq!(exec.program, "/opt/launch");
        assert_eq!(exec.params["image"], "debian-13");
        assert_eq!(exec.attempts, Some(2));
        assert_eq!(c.command, base.command);

        let r = create_request("web", "web-v2", &c);
        assert_eq!(
            (r.scaling_group.as_str(), r.name.as_str()),
            ("web", "web-v2")
        );
        assert_eq!(r.exec, c.exec);
    }

    #[test]
    fn changing_the_type_drops_the_other_providers_settings() {
        let f = ConfigFields {
            instance_type: Some("microvm".into()),
            memory_mib: Some(512),
            ..Default::default()
        };
        let c = overlay(&exec_config(), &f);
        assert_eq!(c.exec, None);
        assert_eq!(c.microvm.as_ref().unwrap().memory_mib, Some(512));
        let f = ConfigFields {
            instance_type: Some("large".into()),
            ..Default::default()
        };
        let c = overlay(&exec_config(), &f);
        assert_eq!((c.exec.is_none(), c.microvm.is_none()), (true, true));
    }

    #[test]
    fn modify_sends_only_what_differs() {
        let current = exec_config();
        assert_eq!(modify_request(&current, &current), None);
        let f = ConfigFields {
            exec_attempts: Some(5),
            user_data: Some("hello".into()),
            ..Default::default()
        };
        let wanted = overlay(&current, &f);
        let r = modify_request(&current, &wanted).unwrap();
        assert_eq!(r.scaling_configuration_id, "asc-1");
        assert_eq!(r.user_data.as_deref(), Some("hello"));
        assert_eq!(r.exec.unwrap().attempts, Some(5));
        assert!(!r.set_env && !r.set_command && r.instance_type.is_none() && r.name.is_none());
        assert_eq!(r.microvm, None);
    }
}
