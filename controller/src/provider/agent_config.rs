//! The `agent.toml` a provider gives each instance's agent: where it dials
//! the controller, its certificate files, the configuration's local checks
//! and metric sources, and whether it runs hook scripts. The process
//! provider writes it beside each instance; the exec provider hands it to
//! the operator's script.

use serde::Serialize;

use ebb_core::model::{MetricSource, ScalingConfiguration};
use std::path::PathBuf;

/// Instances sit near the controller: reconnect within 2 s of its restart.
const AGENT_MAX_BACKOFF_MS: u64 = 2_000;

/// The keys of `agent.toml` the provider sets (the agent denies unknown ones).
#[derive(Serialize)]
struct AgentConfig<'a> {
    controller: Controllers<'a>,
    /// Omitted when empty: the agent then takes the host part of `controller`.
    #[serde(skip_serializing_if = "str::is_empty")]
    server_name: &'a str,
    tls: &'a Tls,
    reconnect: AgentReconnect,
    /// The configuration's local checks, as `[[health_check]]` tables.
    #[serde(rename = "health_check", skip_serializing_if = "Vec::is_empty")]
    health_checks: Vec<AgentCheck<'a>>,
    /// The configuration's custom metric sources, as `[[metric]]` tables
    /// (the model's keys are the agent's: name, prometheus, file, command,
    /// timeout_ms).
    #[serde(rename = "metric", skip_serializing_if = "<[_]>::is_empty")]
    metrics: &'a [MetricSource],
    hooks: &'a AgentHooks,
}

/// `[hooks]` of a launched agent: whether it runs lifecycle hook scripts,
/// and from which directory (the agent's default when None). Off unless
/// the controller's config turns it on (`provider.allow_hook_scripts`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentHooks {
    pub allow_scripts: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

#[derive(Serialize)]
struct AgentCheck<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

/// Where the agent finds its CA, certificate and key; relative paths are
/// taken from agent.toml's folder.
#[derive(Debug, Clone, Serialize)]
pub struct Tls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl Tls {
    /// `ca.crt`, `agent.crt` and `agent.key` in `dir` ("" for agent.toml's own).
    pub fn in_dir(dir: &str) -> Self {
        let at = |name: &str| {
            if dir.is_empty() {
                name.to_owned()
            } else {
                format!("{dir}/{name}")
            }
        };
        Self {
            ca: at("ca.crt"),
            cert: at("agent.crt"),
            key: at("agent.key"),
        }
    }
}

#[derive(Serialize)]
struct AgentReconnect {
    max_backoff_ms: u64,
}

/// `controller`: one address, or with several controllers (HA) all of
/// them, so the agent finds the leader after a failover.
#[derive(Serialize)]
#[serde(untagged)]
enum Controllers<'a> {
    One(&'a str),
    Several(Vec<&'a str>),
}

impl<'a> Controllers<'a> {
    /// From `LaunchRequest::controller`: addresses separated by commas.
    fn of(list: &'a str) -> Self {
        if list.contains(',') {
            Self::Several(list.split(',').map(str::trim).collect())
        } else {
            Self::One(list)
        }
    }
}

/// The agent.toml text for an instance of `configuration`; `controller`
/// is one `host:port`, or several separated by commas.
pub fn render(
    configuration: &ScalingConfiguration,
    controller: &str,
    server_name: &str,
    tls: &Tls,
    hooks: &AgentHooks,
) -> Result<String, String> {
    let config = AgentConfig {
        controller: Controllers::of(controller),
        server_name,
        tls,
        reconnect: AgentReconnect {
            max_backoff_ms: AGENT_MAX_BACKOFF_MS,
        },
        health_checks: configuration
            .health_checks
            .iter()
            .map(|c| AgentCheck {
                name: &c.name,
                http: c.http.as_deref(),
                tcp: c.tcp.as_deref(),
                command: c.command.as_deref(),
                interval_ms: c.interval_ms,
                timeout_ms: c.timeout_ms,
            })
            .collect(),
        metrics: &configuration.metrics,
        hooks,
    };
    toml::to_string(&config).map_err(|e| format!("cannot render agent.toml: {e}"))
}
