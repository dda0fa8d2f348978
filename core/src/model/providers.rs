//! Which provider launches a configuration's instances, and the settings
//! the `exec` and `microvm` providers take (DESIGN §5).
//!
//! The provider is picked by the configuration's `instance_type`: `exec`
//! and `microvm` name those providers; anything else (empty, or the
//! operator's own sizing words) is the process provider.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// The provider a configuration's instances are launched by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Process,
    Exec,
    Microvm,
}

impl ProviderKind {
    /// The provider `instance_type` names.
    pub fn of(instance_type: &str) -> Self {
        match instance_type {
            "exec" => Self::Exec,
            "microvm" => Self::Microvm,
            _ => Self::Process,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Exec => "exec",
            Self::Microvm => "microvm",
        }
    }
}

/// Default time-outs and attempts of an `exec` configuration.
pub const EXEC_LAUNCH_TIMEOUT_MS: u64 = 120_000;
pub const EXEC_RELEASE_TIMEOUT_MS: u64 = 60_000;
pub const EXEC_LIST_TIMEOUT_MS: u64 = 30_000;
pub const EXEC_ATTEMPTS: u32 = 3;
/// No script step may be given longer than an hour.
pub const EXEC_MAX_TIMEOUT_MS: u64 = 3_600_000;
pub const EXEC_MAX_ATTEMPTS: u32 = 10;

/// The operator's program an `exec` configuration launches through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSettings {
    /// An absolute path; called as `PROGRAM launch|release|list`.
    pub program: String,
    /// The program's environment (beside the `EBB_*` variables ebb sets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Passed to `launch` as is: an image, a zone, a size.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_timeout_ms: Option<u64>,
    /// Launch attempts before the launch fails (1 = no retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

impl ExecSettings {
    pub fn launch_timeout(&self) -> Duration {
        Duration::from_millis(self.launch_timeout_ms.unwrap_or(EXEC_LAUNCH_TIMEOUT_MS))
    }

    pub fn release_timeout(&self) -> Duration {
        Duration::from_millis(self.release_timeout_ms.unwrap_or(EXEC_RELEASE_TIMEOUT_MS))
    }

    pub fn list_timeout(&self) -> Duration {
        Duration::from_millis(self.list_timeout_ms.unwrap_or(EXEC_LIST_TIMEOUT_MS))
    }

    pub fn attempts(&self) -> u32 {
        self.attempts.unwrap_or(EXEC_ATTEMPTS)
    }

    pub(super) fn check(&self, errors: &mut Invalid) {
        if !self.program.starts_with('/') {
            errors.push(
                "exec.program",
                format!("`{}` is not an absolute path", self.program),
            );
        }
        super::check_env_names("exec.env", &self.env, errors);
        for key in self.params.keys() {
            if key.is_empty() || key.len() > 128 {
                errors.push(
                    format!("exec.params.{key}"),
                    "a parameter name is 1 to 128 characters",
                );
            }
        }
        for (field, value) in [
            ("exec.launch_timeout_ms", self.launch_timeout_ms),
            ("exec.release_timeout_ms", self.release_timeout_ms),
            ("exec.list_timeout_ms", self.list_timeout_ms),
        ] {
            if let Some(ms) = value
                && !(100..=EXEC_MAX_TIMEOUT_MS).contains(&ms)
            {
                errors.push(
                    field,
                    format!("{ms} is outside 100..={EXEC_MAX_TIMEOUT_MS}"),
                );
            }
        }
        if let Some(n) = self.attempts
            && !(1..=EXEC_MAX_ATTEMPTS).contains(&n)
        {
            errors.push(
                "exec.attempts",
                format!("{n} is outside 1..={EXEC_MAX_ATTEMPTS}"),
            );
        }
    }
}

/// Default size of a `microvm` instance.
pub const MICROVM_VCPUS: u32 = 1;
pub const MICROVM_MEMORY_MIB: u32 = 256;
pub const MICROVM_MAX_VCPUS: u32 = 64;
pub const MICROVM_MIN_MEMORY_MIB: u32 = 64;
pub const MICROVM_MAX_MEMORY_MIB: u32 = 262_144;

/// The size of a `microvm` configuration's virtual machines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicrovmSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
}

impl MicrovmSettings {
    pub fn vcpus(&self) -> u32 {
        self.vcpus.unwrap_or(MICROVM_VCPUS)
    }

    pub fn memory_mib(&self) -> u32 {
        self.memory_mib.unwrap_or(MICROVM_MEMORY_MIB)
    }

    pub(super) fn check(&self, errors: &mut Invalid) {
        if let Some(n) = self.vcpus
            && !(1..=MICROVM_MAX_VCPUS).contains(&n)
        {
            errors.push(
                "microvm.vcpus",
                format!("{n} is outside 1..={MICROVM_MAX_VCPUS}"),
            );
        }
        if let Some(m) = self.memory_mib
            && !(MICROVM_MIN_MEMORY_MIB..=MICROVM_MAX_MEMORY_MIB).contains(&m)
        {
            errors.push(
                "microvm.memory_mib",
                format!("{m} is outside {MICROVM_MIN_MEMORY_MIB}..={MICROVM_MAX_MEMORY_MIB}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_type_names_the_provider() {
        assert_eq!(ProviderKind::of("exec"), ProviderKind::Exec);
        assert_eq!(ProviderKind::of("microvm"), ProviderKind::Microvm);
        assert_eq!(ProviderKind::of(""), ProviderKind::Process);
        assert_eq!(ProviderKind::of("large"), ProviderKind::Process);
    }

    #[test]
    fn exec_defaults_and_bad_values_name_their_field() {
        let s = ExecSettings {
            program: "/opt/launch".into(),
            ..Default::default()
        };
        assert_eq!(s.launch_timeout(), Duration::from_secs(120));
        assert_eq!(s.attempts(), 3);
        let mut errors = Invalid::default();
        s.check(&mut errors);
        assert!(errors.0.is_empty(), "{errors:?}");

        let bad = ExecSettings {
            program: "launch.sh".into(),
            env: [("EBB_X".to_string(), "1".to_string())].into(),
            launch_timeout_ms: Some(5),
            attempts: Some(0),
            ..Default::default()
        };
        let mut errors = Invalid::default();
        bad.check(&mut errors);
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "exec.program",
                "exec.env.EBB_X",
                "exec.launch_timeout_ms",
                "exec.attempts"
            ]
        );
    }

    #[test]
    fn microvm_sizes_are_bounded() {
        let mut errors = Invalid::default();
        MicrovmSettings {
            vcpus: Some(0),
            memory_mib: Some(16),
        }
        .check(&mut errors);
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["microvm.vcpus", "microvm.memory_mib"]);
        assert_eq!(MicrovmSettings::default().memory_mib(), 256);
    }
}
