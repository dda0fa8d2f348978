//! Conversions between the wire messages and `ebb-core`'s model, so the
//! controller and `ebbctl` read and write them the same way.

use crate::v1 as pb;
use ebb_core::model;

impl From<&model::ExecSettings> for pb::ExecSettings {
    fn from(s: &model::ExecSettings) -> Self {
        Self {
            program: s.program.clone(),
            env: s.env.clone().into_iter().collect(),
            params: s.params.clone().into_iter().collect(),
            launch_timeout_ms: s.launch_timeout_ms,
            release_timeout_ms: s.release_timeout_ms,
            list_timeout_ms: s.list_timeout_ms,
            attempts: s.attempts,
        }
    }
}

impl From<&pb::ExecSettings> for model::ExecSettings {
    fn from(s: &pb::ExecSettings) -> Self {
        Self {
            program: s.program.clone(),
            env: s.env.clone().into_iter().collect(),
            params: s.params.clone().into_iter().collect(),
            launch_timeout_ms: s.launch_timeout_ms,
            release_timeout_ms: s.release_timeout_ms,
            list_timeout_ms: s.list_timeout_ms,
            attempts: s.attempts,
        }
    }
}

impl From<&model::MicrovmSettings> for pb::MicrovmSettings {
    fn from(s: &model::MicrovmSettings) -> Self {
        Self {
            vcpus: s.vcpus,
            memory_mib: s.memory_mib,
        }
    }
}

impl From<&pb::MicrovmSettings> for model::MicrovmSettings {
    fn from(s: &pb::MicrovmSettings) -> Self {
        Self {
            vcpus: s.vcpus,
            memory_mib: s.memory_mib,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_settings_survive_the_wire() {
        let s = model::ExecSettings {
            program: "/opt/ebb/launch".into(),
            env: [("ZONE".to_string(), "a".to_string())].into(),
            params: [("image".to_string(), "debian-12".to_string())].into(),
            launch_timeout_ms: Some(5_000),
            release_timeout_ms: None,
            list_timeout_ms: Some(700),
            attempts: Some(2),
        };
        assert_eq!(model::ExecSettings::from(&pb::ExecSettings::from(&s)), s);
        let vm = model::MicrovmSettings {
            vcpus: Some(2),
            memory_mib: None,
        };
        assert_eq!(
            model::MicrovmSettings::from(&pb::MicrovmSettings::from(&vm)),
            vm
        );
    }
}
