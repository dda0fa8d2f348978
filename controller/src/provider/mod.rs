//! Providers launch and release instances and report what exists. Each sits
//! behind [`Provider`]; `process` (the embedded default) runs each instance
//! as a local process tree under the data dir, `isolation` as a uid of its
//! own, `netns` in a network namespace of its own.

use std::path::{Path, PathBuf};

use ebb_core::model::ScalingConfiguration;

pub mod isolation;
pub mod netns;
pub mod process;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("launch of {instance} failed: {message}")]
    Launch { instance: String, message: String },
    #[error("release of {instance} failed: {message}")]
    Release { instance: String, message: String },
    #[error("provider: {0}")]
    Other(String),
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// Everything a provider needs to start one instance whose agent can reach
/// the controller.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub instance_id: String,
    pub group_id: String,
    pub configuration: ScalingConfiguration,
    /// The controller's gRPC address and the name on its certificate.
    pub controller: String,
    pub server_name: String,
    /// PEM: the CA, and the instance's freshly issued agent cert and key.
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// How often the agent's own health checks would run; unused by the
    /// process provider for now, kept so providers see the group's pace.
    pub sampling_interval_secs: u32,
}

/// An instance as the provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInstance {
    pub instance_id: String,
    /// False when its processes are gone (killed from outside, crashed).
    pub alive: bool,
}

/// Launches, releases and lists instances.
#[tonic::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// A short name for logs and activity causes ("process", "exec").
    fn name(&self) -> &'static str;
    /// Starts the instance; returns once its processes run (not once its
    /// agent connected: the reconcile loop watches for that).
    async fn launch(&self, request: LaunchRequest) -> Result<()>;
    /// Stops and removes the instance. Releasing an unknown or already
    /// released instance succeeds.
    async fn release(&self, instance_id: &str) -> Result<()>;
    /// Every instance the provider knows of, alive or not.
    async fn describe(&self) -> Result<Vec<ProviderInstance>>;
}

/// Finds `ebb-agent`: the configured path, else `EBB_AGENT_BIN`, else beside
/// this executable, else on PATH.
pub fn find_agent_binary(configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = configured {
        return if p.exists() {
            Ok(p.to_owned())
        } else {
            Err(ProviderError::Other(format!(
                "provider.agent_bin {} does not exist",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os("EBB_AGENT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()
        .map_err(|e| ProviderError::Other(format!("locating this executable: {e}")))?;
    let beside = exe.with_file_name("ebb-agent");
    if beside.exists() {
        return Ok(beside);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("ebb-agent");
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    Err(ProviderError::Other(format!(
        "ebb-agent not found beside {} or on PATH; build it with `cargo build --workspace`, set EBB_AGENT_BIN, or set provider.agent_bin",
        exe.display()
    )))
}
