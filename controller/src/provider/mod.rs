//! Providers launch and release instances and report what exists. Each sits
//! behind [`Provider`]; `process` (the embedded default) runs each instance
//! as a local process tree under the data dir, `isolation` as a uid of its
//! own, `netns` in a network namespace of its own. [`Providers`] routes each
//! configuration to the provider its `instance_type` names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ebb_core::model::{ProviderKind, ScalingConfiguration};

pub mod agent_config;
#[cfg(test)]
pub(crate) mod conformance;
pub mod exec;
#[cfg(test)]
pub(crate) mod fake;
pub mod isolation;
pub mod microvm;
pub mod netns;
pub mod process;

/// How a provider step failed. The message is what an operator reads in
/// the activity, so it carries the provider's own words (an exec script's
/// stderr, QEMU's complaint).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("launch of {instance} failed: {message}")]
    Launch { instance: String, message: String },
    #[error("release of {instance} failed: {message}")]
    Release { instance: String, message: String },
    /// A step ran past its time-out and was killed.
    #[error(
        "{step} of {instance} timed out after {after_ms} ms and was killed{}",
        detail(message)
    )]
    TimedOut {
        instance: String,
        step: &'static str,
        after_ms: u64,
        message: String,
    },
    /// This host cannot run it (no /dev/kvm, no qemu-system-x86_64): a
    /// sentence naming what is missing. Nothing was started.
    #[error("{0}")]
    Unavailable(String),
    /// The configuration cannot be launched by this provider: names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("provider: {0}")]
    Other(String),
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
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

/// What a launch made: the provider's own name for it and, where the
/// provider assigns one, its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    pub provider_id: String,
    pub address: Option<String>,
}

/// An instance as the provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInstance {
    pub instance_id: String,
    /// False when its processes are gone (killed from outside, crashed).
    /// A launch still in flight is alive.
    pub alive: bool,
    pub provider_id: Option<String>,
    pub address: Option<String>,
}

impl ProviderInstance {
    /// An instance known by its id alone.
    pub fn bare(instance_id: impl Into<String>, alive: bool) -> Self {
        Self {
            instance_id: instance_id.into(),
            alive,
            provider_id: None,
            address: None,
        }
    }
}

/// Launches, releases and lists instances.
#[tonic::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// A short name for logs and activity causes ("process", "exec").
    fn name(&self) -> &'static str;
    /// Whether this provider can launch `configuration` on this host.
    /// Checked when a configuration is created or modified, and before
    /// each launch.
    fn check(&self, _configuration: &ScalingConfiguration) -> Result<()> {
        Ok(())
    }
    /// Starts the instance; returns once its processes run (not once its
    /// agent connected: the reconcile loop watches for that). A launch that
    /// fails undoes what it made before returning.
    async fn launch(&self, request: LaunchRequest) -> Result<Launched>;
    /// Stops and removes the instance. Releasing an unknown or already
    /// released instance succeeds.
    async fn release(&self, instance_id: &str) -> Result<()>;
    /// Every instance the provider knows of, alive or not.
    async fn describe(&self) -> Result<Vec<ProviderInstance>>;
}

/// The providers of one controller, each configuration routed to the one
/// its `instance_type` names. Releases go to every provider (each succeeds
/// for an id it does not know) and descriptions are merged, so an instance
/// is found whichever provider made it.
pub struct Providers {
    process: Arc<dyn Provider>,
    others: Vec<(ProviderKind, Arc<dyn Provider>)>,
}

impl Providers {
    pub fn new(process: Arc<dyn Provider>) -> Self {
        Self {
            process,
            others: Vec::new(),
        }
    }

    /// Adds the provider for `kind` (exec, microvm).
    pub fn with(mut self, kind: ProviderKind, provider: Arc<dyn Provider>) -> Self {
        self.others.retain(|(k, _)| *k != kind);
        self.others.push((kind, provider));
        self
    }

    fn for_kind(&self, kind: ProviderKind) -> Result<&Arc<dyn Provider>> {
        if kind == ProviderKind::Process {
            return Ok(&self.process);
        }
        self.others
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| p)
            .ok_or_else(|| {
                ProviderError::Unavailable(format!(
                    "instance_type `{}`: this controller has no {} provider",
                    kind.as_str(),
                    kind.as_str()
                ))
            })
    }

    fn all(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        std::iter::once(&self.process).chain(self.others.iter().map(|(_, p)| p))
    }
}

#[tonic::async_trait]
impl Provider for Providers {
    fn name(&self) -> &'static str {
        "providers"
    }

    fn check(&self, configuration: &ScalingConfiguration) -> Result<()> {
        self.for_kind(configuration.provider_kind())?
            .check(configuration)
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Launched> {
        let provider = self.for_kind(request.configuration.provider_kind())?;
        provider.check(&request.configuration)?;
        provider.launch(request).await
    }

    async fn release(&self, instance_id: &str) -> Result<()> {
        let mut first_error = None;
        for provider in self.all() {
            if let Err(e) = provider.release(instance_id).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn describe(&self) -> Result<Vec<ProviderInstance>> {
        let mut all = Vec::new();
        for provider in self.all() {
            all.extend(provider.describe().await?);
        }
        Ok(all)
    }
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
