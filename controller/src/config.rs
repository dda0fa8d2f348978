//! `controller.toml`: every key, its default, and validation that reports
//! every problem at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ebb_core::local::{DEFAULT_DATA_DIR, DEFAULT_GRPC_LISTEN, DEFAULT_SERVER_NAME};
use serde::Deserialize;

/// Metrics and health on loopback, next to the gRPC port.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9440";
/// 5 s: twelve times AWS's 60 s basic monitoring and three times the HPA's 15 s.
pub const DEFAULT_SAMPLING_INTERVAL_MS: u64 = 5_000;
/// 1 s is the fastest the design allows; faster only adds noise and load.
pub const MIN_SAMPLING_INTERVAL_MS: u64 = 1_000;
/// 300 s is the slowest: slower than that, health checks become meaningless.
pub const MAX_SAMPLING_INTERVAL_MS: u64 = 300_000;
/// The most samples a ring may hold. A ring keeps only what the alarms read
/// (a minute, or the longest alarm period and 10 s), so this is a bound, not
/// what each instance costs: 1,000 covers the longest period (900 s) at the
/// fastest sampling (1 s); 64 KB an instance at the worst.
pub const DEFAULT_SAMPLE_RING: usize = 1000;

/// The whole controller configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the CA, certs and (later) the store live.
    pub data_dir: PathBuf,
    /// The SPIFFE trust domain of a CA made on first start.
    pub trust_domain: String,
    pub grpc: GrpcConfig,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    pub fleet: FleetConfig,
    pub provider: ProviderConfig,
    pub health: HealthConfig,
    pub limits: LimitsConfig,
    pub activities: ActivitiesConfig,
    pub store: StoreConfig,
    pub ha: HaConfig,
    pub log: LogConfig,
    pub webhooks: WebhooksConfig,
}

/// `[webhooks]`: how notifications are sent (docs/notifications.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// A PEM file of CA certificates trusted for https:// webhooks besides
    /// the system's bundle (`SSL_CERT_FILE`, else the distribution's).
    pub ca_file: Option<PathBuf>,
    /// Attempts before a delivery is given up on as a dead letter; the
    /// waits between them double from 1 s up to 5 minutes.
    pub attempts: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            attempts: crate::engine::notify::DEFAULT_ATTEMPTS,
        }
    }
}

impl WebhooksConfig {
    /// The settings as the engine takes them; fails on an unusable CA file.
    pub fn webhooks(&self) -> anyhow::Result<crate::engine::notify::Webhooks> {
        Ok(crate::engine::notify::Webhooks {
            client: crate::webhook::Client::new(self.ca_file.as_deref())?,
            attempts: self.attempts,
        })
    }
}

/// `[log]`: what the controller writes to stderr.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: a level (`info`) or per-module directives
    /// (`info,ebb_controller::engine=debug`). `EBB_LOG` overrides it at
    /// start; `SIGHUP` reads it again from the file.
    pub level: String,
    /// `text` (for people) or `json` (one object a line, for collectors);
    /// `--log-format` overrides it.
    pub format: LogFormat,
}

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// A filter of levels and `target=level` directives. tracing would read a
/// bare unknown word (`verbose`) as a target to log at every level; here it
/// is a typo, refused.
pub fn check_log_level(filter: &str) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err("must not be empty (e.g. `info`)".to_owned());
    }
    for directive in filter.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}`: `{level}` is not one of {}",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(|_| ())
        .map_err(|e| format!("`{filter}`: {e}"))
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[store]`: where the controller keeps what it decides.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub etcd: EtcdConfig,
}

/// `sqlite` (one controller, the file `ebb.db` in the data dir) or `etcd`
/// (several controllers, one of them elected to lead; docs/ha.md).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sqlite,
    Etcd,
}

/// `[store.etcd]`: the cluster and how to reach it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Every member's client URL, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// Every key ebb writes starts with this (several ebb clusters can
    /// share one etcd under different prefixes).
    pub prefix: String,
    /// The CA of the members' certificates, for https endpoints.
    pub ca: Option<PathBuf>,
    /// A client certificate and key, when etcd asks for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// How long one request waits for a member before trying the next.
    pub request_timeout_ms: u64,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: "/ebb/".to_owned(),
            ca: None,
            cert: None,
            key: None,
            request_timeout_ms: 2_000,
        }
    }
}

/// `[ha]`: leader election among the controllers sharing an etcd store.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// The leader's lease: a dead leader is replaced within about this long.
    pub lease_ttl_secs: u64,
    /// This controller's gRPC address as agents and ebbctl reach it
    /// (`host:port`); `grpc.listen` when that is a concrete address.
    pub advertise: Option<String>,
    /// Every controller's gRPC address, written into launched instances'
    /// agent.toml so their agents find the leader after a failover;
    /// `[advertise]` when empty.
    pub controllers: Vec<String>,
    /// 64 hex digits (`openssl rand -hex 32`), the same on every
    /// controller: seals the CA kept in the store.
    pub secret_key_file: Option<PathBuf>,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            lease_ttl_secs: 3,
            advertise: None,
            controllers: Vec::new(),
            secret_key_file: None,
        }
    }
}

/// Whether `s` is `host:port` with a port.
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

impl Config {
    /// This controller's address for agents and ebbctl (`ha.advertise`, else
    /// `grpc.listen` when concrete).
    pub fn advertise(&self) -> Option<String> {
        self.ha.advertise.clone().or_else(|| {
            (!self.grpc.listen.ip().is_unspecified()).then(|| self.grpc.listen.to_string())
        })
    }

    /// The addresses launched agents are given: `ha.controllers`, else this one.
    pub fn controllers(&self) -> Vec<String> {
        if self.ha.controllers.is_empty() {
            self.advertise().into_iter().collect()
        } else {
            self.ha.controllers.clone()
        }
    }

    fn validate_store(&self, problems: &mut Vec<String>) {
        let e = &self.store.etcd;
        if self.store.backend == StoreBackend::Etcd {
            if e.endpoints.is_empty() {
                problems.push(
                    "store.etcd.endpoints: store.backend = \"etcd\" needs at least one endpoint"
                        .into(),
                );
            }
            if self.advertise().is_none() {
                problems.push(format!(
                    "ha.advertise: grpc.listen is {}, so the address agents reach this controller at must be given",
                    self.grpc.listen
                ));
            }
            if self.ha.secret_key_file.is_none() && self.tls.ca_cert.is_none() {
                problems.push(
                    "ha.secret_key_file: store.backend = \"etcd\" keeps the CA in the store, sealed with this key; give the same key file to every controller (or give every controller the operator CA in tls.ca_cert and tls.ca_key)".into(),
                );
            }
        }
        for (i, url) in e.endpoints.iter().enumerate() {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            match rest {
                Some(hp) if is_host_port(hp) => {
                    if url.starts_with("https://") && e.ca.is_none() {
                        problems.push(format!(
                            "store.etcd.endpoints[{i}]: `{url}` is https, so store.etcd.ca is needed"
                        ));
                    }
                }
                _ => problems.push(format!(
                    "store.etcd.endpoints[{i}]: `{url}` is not http://host:port or https://host:port"
                )),
            }
        }
        if !e.prefix.starts_with('/') || !e.prefix.ends_with('/') || e.prefix.len() < 2 {
            problems.push(format!(
                "store.etcd.prefix: `{}` must start and end with `/` and name something (`/ebb/`)",
                e.prefix
            ));
        }
        if e.cert.is_some() != e.key.is_some() {
            problems.push("store.etcd.cert, store.etcd.key: give both or neither".into());
        }
        if !(100..=60_000).contains(&e.request_timeout_ms) {
            problems.push(format!(
                "store.etcd.request_timeout_ms: {} is outside 100..=60000",
                e.request_timeout_ms
            ));
        }
        if !(1..=60).contains(&self.ha.lease_ttl_secs) {
            problems.push(format!(
                "ha.lease_ttl_secs: {} is outside 1..=60",
                self.ha.lease_ttl_secs
            ));
        }
        if let Some(a) = &self.ha.advertise
            && !is_host_port(a)
        {
            problems.push(format!("ha.advertise: `{a}` is not host:port"));
        }
        for (i, c) in self.ha.controllers.iter().enumerate() {
            if !is_host_port(c) {
                problems.push(format!("ha.controllers[{i}]: `{c}` is not host:port"));
            }
        }
    }
}

/// Caps on how many objects the admin API may create; the (cap+1)th is
/// refused with RESOURCE_EXHAUSTED naming the key. Defaults and their
/// reasons: `crate::engine::limits`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub groups: usize,
    pub configurations_per_group: usize,
    pub rules_per_group: usize,
    pub alarms_per_group: usize,
    pub tasks_per_group: usize,
    pub notifications_per_group: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = crate::engine::limits::Limits::default();
        Self {
            groups: d.groups,
            configurations_per_group: d.configurations_per_group,
            rules_per_group: d.rules_per_group,
            alarms_per_group: d.alarms_per_group,
            tasks_per_group: d.tasks_per_group,
            notifications_per_group: d.notifications_per_group,
        }
    }
}

impl LimitsConfig {
    /// The caps as the engine takes them.
    pub fn limits(&self) -> crate::engine::limits::Limits {
        crate::engine::limits::Limits {
            groups: self.groups,
            configurations_per_group: self.configurations_per_group,
            rules_per_group: self.rules_per_group,
            alarms_per_group: self.alarms_per_group,
            tasks_per_group: self.tasks_per_group,
            notifications_per_group: self.notifications_per_group,
        }
    }
}

/// The highest cap a key takes: beyond it, a cap stops bounding anything.
const MAX_LIMIT: usize = 1_000_000;

/// How long scaling activities are kept: the engine prunes, every minute,
/// each group's activities beyond the newest `keep_per_group` and those
/// older than `max_age_days`, but never the one in progress nor the latest
/// completed ones (the cooldown starts at their end).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ActivitiesConfig {
    pub keep_per_group: usize,
    pub max_age_days: u64,
}

impl Default for ActivitiesConfig {
    fn default() -> Self {
        Self {
            keep_per_group: crate::engine::DEFAULT_KEEP_PER_GROUP,
            max_age_days: crate::engine::DEFAULT_MAX_AGE.as_secs() / 86_400,
        }
    }
}

impl ActivitiesConfig {
    /// The retention as the engine takes it.
    pub fn retention(&self) -> crate::engine::Retention {
        crate::engine::Retention {
            keep_per_group: self.keep_per_group,
            max_age: Duration::from_secs(self.max_age_days * 86_400),
        }
    }
}

/// Replacing unhealthy instances.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// When more than half a group turns unhealthy at once, replace at most
    /// this share of it (at least one) per `guard_interval_ms`.
    pub guard_share: f64,
    pub guard_interval_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            guard_share: crate::engine::DEFAULT_GUARD_SHARE,
            guard_interval_ms: crate::engine::DEFAULT_GUARD_INTERVAL.as_millis() as u64,
        }
    }
}

/// The process provider: instances as local process trees.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// The `ebb-agent` binary launched for each instance; found beside
    /// `ebb-controller`, then on PATH, when unset.
    pub agent_bin: Option<PathBuf>,
    /// Where the process provider keeps its instances' folders
    /// (`<data_dir>/instances` when unset). Several controllers on one host
    /// (an HA setup tried on one machine) share one, so that the leader
    /// after a failover finds its predecessor's instances.
    pub instances_dir: Option<PathBuf>,
    /// An instance whose agent has not connected by then is released and
    /// replaced, in milliseconds.
    pub launch_timeout_ms: u64,
    /// SIGTERM, then SIGKILL after this many milliseconds, on release.
    pub release_timeout_ms: u64,
    /// Whether each instance runs as a uid of its own (`auto`: when the
    /// controller can switch users, i.e. runs as root or holds the
    /// capabilities the packaged unit grants).
    pub isolation: Isolation,
    /// The uids instances run as, `FIRST-LAST`; each live instance has one.
    pub uid_range: String,
    /// Whether launched agents run lifecycle hook scripts (their
    /// `[hooks] allow_scripts`). Off: the controller writes its instances'
    /// agent.toml, so this is the host's consent, given here.
    pub allow_hook_scripts: bool,
    /// The absolute directory launched agents take hook scripts from; the
    /// agent's default (`/etc/ebb/hooks.d`) when unset.
    pub hooks_dir: Option<PathBuf>,
    /// Whether instances share the host's network or each get a namespace
    /// and an address of their own on `bridge`.
    pub network: Network,
    /// The bridge namespaced instances sit on; made when missing.
    pub bridge: String,
    /// The IPv4 subnet of the bridge: its first address is the bridge's,
    /// the rest go to instances, lowest free first.
    pub subnet: String,
    /// The programs `exec` configurations may name: a path, or a directory
    /// (ending in `/`) whose files may be named. An exec program runs with
    /// the controller's privileges, so an admin may only pick among those
    /// the host's owner put here.
    pub exec_programs: Vec<PathBuf>,
    /// `[provider.microvm]`: what microVM instances boot, and how.
    pub microvm: MicrovmConfig,
}

/// `[provider.microvm]`: the kernel and initramfs that
/// packaging/microvm/build.sh makes, and QEMU's accelerator.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MicrovmConfig {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: crate::provider::microvm::Accel,
}

impl Default for MicrovmConfig {
    fn default() -> Self {
        Self {
            kernel: crate::provider::microvm::DEFAULT_KERNEL.into(),
            initramfs: crate::provider::microvm::DEFAULT_INITRAMFS.into(),
            accel: crate::provider::microvm::Accel::Kvm,
        }
    }
}

impl MicrovmConfig {
    /// The paths must be absolute: the controller's cwd is nobody's business.
    pub fn check(&self) -> Result<(), String> {
        for (key, path) in [
            ("provider.microvm.kernel", &self.kernel),
            ("provider.microvm.initramfs", &self.initramfs),
        ] {
            if !path.is_absolute() {
                return Err(format!(
                    "{key}: `{}` is not an absolute path",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

/// Where packaged exec provider programs go (root's alone to fill).
pub const DEFAULT_EXEC_PROGRAMS: &str = "/etc/ebb/providers/";

/// `provider.network`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Instances use the host's network (and its addresses).
    Host,
    /// Each instance gets a network namespace, a veth on the bridge and an
    /// address of its own (needs root).
    Namespace,
}

/// Short, and plainly ebb's.
pub const DEFAULT_BRIDGE: &str = "ebb0";
/// A private /24: 253 instances. Podman's default network is 10.88.0.0/16
/// too; where Podman runs, set another (the controller refuses a subnet
/// that another interface's overlaps).
pub const DEFAULT_SUBNET: &str = "10.88.0.0/24";

/// `provider.isolation`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// On when the controller can switch users, else off with a warning.
    Auto,
    /// On, or the controller refuses to start.
    On,
    /// Off: instances run as the controller's own user (development only).
    Off,
}

/// Above the uids distributions hand out to people and services (and below
/// the 524288+ ranges container runtimes use): 1,000 instances.
pub const DEFAULT_UID_RANGE: &str = "200000-200999";

impl ProviderConfig {
    /// `uid_range` as (first, count).
    pub fn uids(&self) -> Result<(u32, u32), String> {
        let bad = || {
            format!(
                "provider.uid_range: `{}` is not FIRST-LAST (e.g. \"{DEFAULT_UID_RANGE}\")",
                self.uid_range
            )
        };
        let (first, last) = self.uid_range.split_once('-').ok_or_else(bad)?;
        let first: u32 = first.trim().parse().map_err(|_| bad())?;
        let last: u32 = last.trim().parse().map_err(|_| bad())?;
        if first < 1000 {
            return Err(format!(
                "provider.uid_range: starts at {first}, among system and login users; start at 1000 or above"
            ));
        }
        if last < first || last == u32::MAX {
            return Err(bad());
        }
        Ok((first, last - first + 1))
    }

    /// `subnet`, parsed.
    pub fn subnet(&self) -> Result<crate::provider::netns::Subnet, String> {
        crate::provider::netns::Subnet::parse(&self.subnet)
            .map_err(|e| format!("provider.subnet: {e}"))
    }
}

/// The agent's own default `[hooks] dir`, used when `provider.hooks_dir` is unset.
const DEFAULT_AGENT_HOOKS_DIR: &str = "/etc/ebb/hooks.d";

/// A local agent connects in well under a second; a minute leaves room for a
/// loaded host without letting a broken launch hold capacity for long.
pub const DEFAULT_LAUNCH_TIMEOUT_MS: u64 = 60_000;
/// Ten seconds for a workload to drain on SIGTERM, as systemd's default is 90
/// but scale-in should not wait that long.
pub const DEFAULT_RELEASE_TIMEOUT_MS: u64 = 10_000;

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            agent_bin: None,
            instances_dir: None,
            launch_timeout_ms: DEFAULT_LAUNCH_TIMEOUT_MS,
            release_timeout_ms: DEFAULT_RELEASE_TIMEOUT_MS,
            isolation: Isolation::Auto,
            uid_range: DEFAULT_UID_RANGE.to_owned(),
            allow_hook_scripts: false,
            hooks_dir: None,
            network: Network::Host,
            bridge: DEFAULT_BRIDGE.to_owned(),
            subnet: DEFAULT_SUBNET.to_owned(),
            exec_programs: vec![PathBuf::from(DEFAULT_EXEC_PROGRAMS)],
            microvm: MicrovmConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Address agents and ebbctl connect to.
    pub listen: SocketAddr,
    /// DNS names put in the server certificate, besides the listen IP and
    /// loopback addresses. Agents dial one of these.
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of `/metrics` and `/healthz`.
    pub listen: SocketAddr,
    /// Whether `/metrics` has each instance's CPU and memory gauges (one
    /// series each per instance: turn them off for very large fleets).
    pub instance_metrics: bool,
}

/// An operator-supplied CA (both or neither; neither means the controller
/// makes its own in `<data_dir>/pki` on first start), and how long the
/// certificates it issues live.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    /// Agent certificates' lifetime in seconds; agents renew at two thirds.
    pub agent_cert_lifetime_secs: u64,
    /// The controller's server certificate's lifetime in seconds; it is
    /// re-issued live at two thirds.
    pub server_cert_lifetime_secs: u64,
}

/// Shortest certificate lifetime: renewal at two thirds must leave the
/// agent time to ask again after a refusal or a reconnect.
pub const MIN_CERT_LIFETIME_SECS: u64 = 30;
/// Longest agent certificate: a lost host's cert must not outlive a quarter.
pub const MAX_AGENT_CERT_LIFETIME_SECS: u64 = 90 * 86_400;
/// Longest server certificate: ten years, the CA's own life.
pub const MAX_SERVER_CERT_LIFETIME_SECS: u64 = 3650 * 86_400;

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_cert: None,
            ca_key: None,
            agent_cert_lifetime_secs: ebb_certs::AGENT_VALIDITY.as_secs(),
            server_cert_lifetime_secs: ebb_certs::SERVER_VALIDITY.as_secs(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// How often each agent is pulled, in milliseconds (1000..=300000).
    pub sampling_interval_ms: u64,
    /// How many recent samples are kept per instance.
    pub sample_ring: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            trust_domain: ebb_certs::DEFAULT_TRUST_DOMAIN.to_owned(),
            grpc: GrpcConfig::default(),
            http: HttpConfig::default(),
            tls: TlsConfig::default(),
            fleet: FleetConfig::default(),
            provider: ProviderConfig::default(),
            health: HealthConfig::default(),
            limits: LimitsConfig::default(),
            activities: ActivitiesConfig::default(),
            store: StoreConfig::default(),
            ha: HaConfig::default(),
            log: LogConfig::default(),
            webhooks: WebhooksConfig::default(),
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_GRPC_LISTEN.parse().expect("valid default address"),
            server_names: vec![DEFAULT_SERVER_NAME.to_owned()],
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_HTTP_LISTEN.parse().expect("valid default address"),
            instance_metrics: true,
        }
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            sampling_interval_ms: DEFAULT_SAMPLING_INTERVAL_MS,
            sample_ring: DEFAULT_SAMPLE_RING,
        }
    }
}

/// A configuration that cannot be used, with every reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: invalid configuration:\n  - {}", problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl Config {
    /// Reads and validates a config file, or the defaults when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            let config = Self::default();
            config.validate(Path::new("(defaults)"))?;
            return Ok(config);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks every key; `path` only names the source in the error (the
    /// command line's overrides are checked again with it).
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.validate_store(&mut problems);
        if let Err(e) = check_log_level(&self.log.level) {
            problems.push(format!("log.level: {e}"));
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir: must not be empty".to_owned());
        }
        if let Err(e) = ebb_certs::Identity::instance(&self.trust_domain, "x") {
            problems.push(format!("trust_domain: {e}"));
        }
        let ms = self.fleet.sampling_interval_ms;
        if !(MIN_SAMPLING_INTERVAL_MS..=MAX_SAMPLING_INTERVAL_MS).contains(&ms) {
            problems.push(format!(
                "fleet.sampling_interval_ms: {ms} is outside {MIN_SAMPLING_INTERVAL_MS}..={MAX_SAMPLING_INTERVAL_MS}"
            ));
        }
        if !(2..=100_000).contains(&self.fleet.sample_ring) {
            problems.push(format!(
                "fleet.sample_ring: {} is outside 2..=100000",
                self.fleet.sample_ring
            ));
        }
        if !(1_000..=3_600_000).contains(&self.provider.launch_timeout_ms) {
            problems.push(format!(
                "provider.launch_timeout_ms: {} is outside 1000..=3600000",
                self.provider.launch_timeout_ms
            ));
        }
        if self.provider.release_timeout_ms > 600_000 {
            problems.push(format!(
                "provider.release_timeout_ms: {} is above 600000",
                self.provider.release_timeout_ms
            ));
        }
        if let Err(e) = self.provider.uids() {
            problems.push(e);
        }
        if let Err(e) = crate::provider::netns::check_bridge_name(&self.provider.bridge) {
            problems.push(format!("provider.bridge: {e}"));
        }
        if let Err(e) = self.provider.subnet() {
            problems.push(e);
        }
        if let Some(dir) = &self.provider.instances_dir
            && !dir.is_absolute()
        {
            problems.push(format!(
                "provider.instances_dir: `{}` is not an absolute path",
                dir.display()
            ));
        }
        for (i, p) in self.provider.exec_programs.iter().enumerate() {
            let parent = p.components().any(|c| c == std::path::Component::ParentDir);
            if !p.is_absolute() || parent {
                problems.push(format!(
                    "provider.exec_programs[{i}]: `{}` is not an absolute path without `..`",
                    p.display()
                ));
            }
        }
        if let Err(e) = self.provider.microvm.check() {
            problems.push(e);
        }
        match &self.provider.hooks_dir {
            Some(dir) if !dir.is_absolute() => problems.push(format!(
                "provider.hooks_dir: `{}` is not an absolute path (agents run in their own folders)",
                dir.display()
            )),
            // A launched agent allowed scripts refuses to start without its
            // directory: say so now rather than fail every launch.
            dir if self.provider.allow_hook_scripts => {
                let dir = dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_HOOKS_DIR));
                if !dir.is_dir() {
                    problems.push(format!(
                        "provider.hooks_dir: {} is not a directory; launched agents allowed \
                         scripts need it (create it, or set provider.allow_hook_scripts = false)",
                        dir.display()
                    ));
                }
            }
            _ => {}
        }
        if !(self.health.guard_share > 0.0 && self.health.guard_share <= 1.0) {
            problems.push(format!(
                "health.guard_share: {} is outside (0, 1]",
                self.health.guard_share
            ));
        }
        if !(1_000..=86_400_000).contains(&self.health.guard_interval_ms) {
            problems.push(format!(
                "health.guard_interval_ms: {} is outside 1000..=86400000",
                self.health.guard_interval_ms
            ));
        }
        let l = &self.limits;
        for (key, value) in [
            ("groups", l.groups),
            ("configurations_per_group", l.configurations_per_group),
            ("rules_per_group", l.rules_per_group),
            ("alarms_per_group", l.alarms_per_group),
            ("tasks_per_group", l.tasks_per_group),
            ("notifications_per_group", l.notifications_per_group),
        ] {
            if !(1..=MAX_LIMIT).contains(&value) {
                problems.push(format!("limits.{key}: {value} is outside 1..={MAX_LIMIT}"));
            }
        }
        if !(1..=MAX_LIMIT).contains(&self.activities.keep_per_group) {
            problems.push(format!(
                "activities.keep_per_group: {} is outside 1..={MAX_LIMIT}",
                self.activities.keep_per_group
            ));
        }
        if !(1..=100).contains(&self.webhooks.attempts) {
            problems.push(format!(
                "webhooks.attempts: {} is outside 1..=100",
                self.webhooks.attempts
            ));
        }
        if self.webhooks.ca_file.is_some()
            && let Err(e) = crate::webhook::Client::new(self.webhooks.ca_file.as_deref())
        {
            problems.push(e.to_string());
        }
        if !(1..=3650).contains(&self.activities.max_age_days) {
            problems.push(format!(
                "activities.max_age_days: {} is outside 1..=3650",
                self.activities.max_age_days
            ));
        }
        if self.grpc.server_names.is_empty() {
            problems
                .push("grpc.server_names: name at least one DNS name (e.g. \"localhost\")".into());
        }
        for name in &self.grpc.server_names {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*'));
            if !ok {
                problems.push(format!("grpc.server_names: `{name}` is not a DNS name"));
            }
        }
        if self.grpc.listen == self.http.listen && self.grpc.listen.port() != 0 {
            problems.push(format!(
                "http.listen: {} is also grpc.listen; give them different ports",
                self.http.listen
            ));
        }
        match (&self.tls.ca_cert, &self.tls.ca_key) {
            (Some(_), None) => problems.push("tls.ca_key: required when tls.ca_cert is set".into()),
            (None, Some(_)) => problems.push("tls.ca_cert: required when tls.ca_key is set".into()),
            _ => {}
        }
        for (key, value, max) in [
            (
                "tls.agent_cert_lifetime_secs",
                self.tls.agent_cert_lifetime_secs,
                MAX_AGENT_CERT_LIFETIME_SECS,
            ),
            (
                "tls.server_cert_lifetime_secs",
                self.tls.server_cert_lifetime_secs,
                MAX_SERVER_CERT_LIFETIME_SECS,
            ),
        ] {
            if !(MIN_CERT_LIFETIME_SECS..=max).contains(&value) {
                problems.push(format!(
                    "{key}: {value} is outside {MIN_CERT_LIFETIME_SECS}..={max}"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    pub fn sampling_interval(&self) -> Duration {
        Duration::from_millis(self.fleet.sampling_interval_ms)
    }

    pub fn agent_cert_lifetime(&self) -> Duration {
        Duration::from_secs(self.tls.agent_cert_lifetime_secs)
    }

    pub fn server_cert_lifetime(&self) -> Duration {
        Duration::from_secs(self.tls.server_cert_lifetime_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("controller.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.grpc.listen.to_string(), "127.0.0.1:7440");
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9440");
        assert_eq!(c.data_dir, PathBuf::from("./ebb-data"));
        assert_eq!(c.sampling_interval(), Duration::from_secs(5));
        assert_eq!(c.agent_cert_lifetime(), Duration::from_secs(86_400));
        assert_eq!(c.server_cert_lifetime(), Duration::from_secs(365 * 86_400));
        assert_eq!(c.limits.limits(), crate::engine::limits::Limits::default());
        assert_eq!(c.limits.groups, 1000);
        assert_eq!(
            c.activities.retention(),
            crate::engine::Retention::default()
        );
        assert_eq!(c.activities.max_age_days, 30);
    }

    #[test]
    fn bad_limits_and_retention_are_named() {
        let err = parse(
            "[limits]\ngroups = 0\nrules_per_group = 1000001\n[activities]\nkeep_per_group = 0\nmax_age_days = 0\n",
        )
        .unwrap_err();
        for needle in [
            "limits.groups: 0 is outside 1..=1000000",
            "limits.rules_per_group: 1000001 is outside 1..=1000000",
            "activities.keep_per_group: 0 is outside 1..=1000000",
            "activities.max_age_days: 0 is outside 1..=3650",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
        for (text, key) in [
            ("[limits]\ngroup = 5\n", "unknown field `group`"),
            ("[limits]\ngroups = -1\n", "groups"),
            (
                "[activities]\nmax_age = \"30d\"\n",
                "unknown field `max_age`",
            ),
            ("[activities]\nkeep_per_group = \"all\"\n", "keep_per_group"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "missing `{key}` in:\n{err}");
        }
    }

    #[test]
    fn webhook_keys_default_parse_and_bad_values_are_named() {
        let c = parse("").unwrap();
        assert_eq!(c.webhooks, WebhooksConfig::default());
        assert_eq!(c.webhooks.attempts, 12);
        let dir = tempfile::tempdir().unwrap();
        let ca = ebb_certs::Ca::generate("hooks.test", Duration::from_secs(60)).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.cert_pem()).unwrap();
        let c = parse(&format!(
            "[webhooks]\nca_file = \"{}\"\nattempts = 3\n",
            good.display()
        ))
        .unwrap();
        assert_eq!(c.webhooks.attempts, 3);
        let bad = dir.path().join("junk.pem");
        std::fs::write(&bad, "junk\n").unwrap();
        let err = parse(&format!(
            "[webhooks]\nca_file = \"{}\"\nattempts = 0\n",
            bad.display()
        ))
        .unwrap_err();
        for needle in [
            "webhooks.attempts: 0 is outside 1..=100",
            "webhooks.ca_file ",
            "junk.pem",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
        let err = parse("[webhooks]\nretries = 3\n").unwrap_err();
        assert!(err.contains("unknown field `retries`"), "{err}");
    }

    #[test]
    fn full_file_parses() {
        let hooks = tempfile::tempdir().unwrap();
        let c = parse(
            &r#"
            data_dir = "/var/lib/ebb"
            trust_domain = "prod.example"
            [grpc]
            listen = "0.0.0.0:7440"
            server_names = ["ebb.example.com", "localhost"]
            [http]
            listen = "127.0.0.1:9441"
            [tls]
            ca_cert = "/etc/ebb/tls/ca.crt"
            ca_key = "/etc/ebb/tls/ca.key"
            agent_cert_lifetime_secs = 3600
            server_cert_lifetime_secs = 86400
            [fleet]
            sampling_interval_ms = 1000
            sample_ring = 600
            [provider]
            agent_bin = "/usr/bin/ebb-agent"
            launch_timeout_ms = 30000
            release_timeout_ms = 5000
            allow_hook_scripts = true
            hooks_dir = "HOOKS"
            network = "namespace"
            bridge = "ebb-test"
            subnet = "10.77.0.0/16"
            [limits]
            groups = 50
            configurations_per_group = 5
            rules_per_group = 6
            alarms_per_group = 7
            tasks_per_group = 8
            notifications_per_group = 2
            [activities]
            keep_per_group = 200
            max_age_days = 7
            "#
            .replace("HOOKS", &hooks.path().display().to_string()),
        )
        .unwrap();
        assert_eq!(
            c.limits.limits(),
            crate::engine::limits::Limits {
                groups: 50,
                configurations_per_group: 5,
                rules_per_group: 6,
                alarms_per_group: 7,
                tasks_per_group: 8,
                notifications_per_group: 2,
            }
        );
        assert_eq!(
            c.activities.retention(),
            crate::engine::Retention {
                keep_per_group: 200,
                max_age: Duration::from_secs(7 * 86_400),
            }
        );
        assert_eq!(c.fleet.sampling_interval_ms, 1000);
        assert!(c.provider.allow_hook_scripts);
        assert_eq!(c.provider.network, Network::Namespace);
        assert_eq!(c.provider.bridge, "ebb-test");
        assert_eq!(c.provider.subnet().unwrap().to_string(), "10.77.0.0/16");
        assert_eq!(Config::default().provider.network, Network::Host);
        assert!(!Config::default().provider.allow_hook_scripts);
        assert_eq!(c.agent_cert_lifetime(), Duration::from_secs(3600));
        assert_eq!(c.server_cert_lifetime(), Duration::from_secs(86400));
        assert_eq!(c.grpc.server_names.len(), 2);
        assert_eq!(
            c.tls.ca_key.as_deref(),
            Some(Path::new("/etc/ebb/tls/ca.key"))
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[fleet]\nsampling_intervall_ms = 5\n").unwrap_err();
        assert!(err.contains("controller.toml"), "{err}");
        assert!(err.contains("sampling_intervall_ms"), "{err}");
    }

    #[test]
    fn malformed_values_are_named() {
        let err = parse("[grpc]\nlisten = \"localhost:notaport\"\n").unwrap_err();
        assert!(err.contains("listen"), "{err}");
        let err = parse("[fleet]\nsampling_interval_ms = \"fast\"\n").unwrap_err();
        assert!(err.contains("sampling_interval_ms"), "{err}");
        let err = parse("[provider]\nallow_hook_scripts = \"yes\"\n").unwrap_err();
        assert!(err.contains("allow_hook_scripts"), "{err}");
        let err = parse("[provider]\nhooks_dir = 5\n").unwrap_err();
        assert!(err.contains("hooks_dir"), "{err}");
        let err = parse(
            "[provider]\nallow_hook_scripts = true\nhooks_dir = \"/nonexistent/ebb-hooks.d\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("provider.hooks_dir: /nonexistent/ebb-hooks.d is not a directory"),
            "{err}"
        );
        // Unused while scripts are off: it need not exist.
        parse("[provider]\nhooks_dir = \"/nonexistent/ebb-hooks.d\"\n").unwrap();
        let err = parse("data_dir = ").unwrap_err();
        assert!(err.contains("controller.toml"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse(
            r#"
            trust_domain = "Not A Domain"
            [grpc]
            listen = "127.0.0.1:7000"
            server_names = []
            [http]
            listen = "127.0.0.1:7000"
            [tls]
            ca_cert = "/x"
            agent_cert_lifetime_secs = 5
            server_cert_lifetime_secs = 999999999999
            [fleet]
            sampling_interval_ms = 10
            sample_ring = 1
            [provider]
            launch_timeout_ms = 5
            uid_range = "5-10"
            hooks_dir = "hooks.d"
            [health]
            guard_share = 1.5
            "#,
        )
        .unwrap_err();
        for needle in [
            "trust_domain:",
            "fleet.sampling_interval_ms: 10 is outside",
            "fleet.sample_ring: 1",
            "grpc.server_names:",
            "http.listen:",
            "tls.ca_key: required",
            "tls.agent_cert_lifetime_secs: 5 is outside 30..=7776000",
            "tls.server_cert_lifetime_secs: 999999999999 is outside",
            "provider.launch_timeout_ms: 5",
            "provider.uid_range: starts at 5",
            "provider.hooks_dir: `hooks.d` is not an absolute path",
            "health.guard_share: 1.5",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }

    #[test]
    fn isolation_and_uid_range_are_checked() {
        let c = parse("").unwrap();
        assert_eq!(c.provider.isolation, Isolation::Auto);
        assert_eq!(c.provider.uids(), Ok((200_000, 1000)));
        let c = parse("[provider]\nisolation = \"off\"\nuid_range = \"3000-3000\"\n").unwrap();
        assert_eq!(c.provider.isolation, Isolation::Off);
        assert_eq!(c.provider.uids(), Ok((3000, 1)));
        let err = parse("[provider]\nisolation = \"maybe\"\n").unwrap_err();
        assert!(err.contains("isolation") && err.contains("auto"), "{err}");
        for bad in ["\"200\"", "\"3000-2000\"", "\"x-y\"", "\"1000-4294967295\""] {
            let err = parse(&format!("[provider]\nuid_range = {bad}\n")).unwrap_err();
            assert!(err.contains("provider.uid_range:"), "{bad}: {err}");
        }
    }

    #[test]
    fn exec_programs_default_to_etc_ebb_providers_and_bad_ones_are_named() {
        let c = parse("").unwrap();
        assert_eq!(
            c.provider.exec_programs,
            [PathBuf::from("/etc/ebb/providers/")]
        );
        let c =
            parse("[provider]\nexec_programs = [\"/opt/cloud/launch\", \"/srv/p/\"]\n").unwrap();
        assert_eq!(c.provider.exec_programs.len(), 2);
        for (bad, needle) in [
            (
                "[\"launch.sh\"]",
                "provider.exec_programs[0]: `launch.sh` is not an absolute path",
            ),
            (
                "[\"/ok/\", \"/etc/ebb/../../bin/\"]",
                "provider.exec_programs[1]: `/etc/ebb/../../bin/` is not an absolute path without `..`",
            ),
            ("\"/etc/ebb/providers/\"", "exec_programs"),
        ] {
            let err = parse(&format!("[provider]\nexec_programs = {bad}\n")).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn microvm_keys_default_parse_and_bad_values_are_named() {
        let c = parse("").unwrap();
        assert_eq!(c.provider.microvm, MicrovmConfig::default());
        assert_eq!(
            c.provider.microvm.kernel,
            PathBuf::from("/usr/lib/ebb/microvm/vmlinuz")
        );
        let c = parse(
            "[provider.microvm]\nkernel = \"/srv/vm/vmlinuz\"\ninitramfs = \"/srv/vm/initramfs.cpio\"\naccel = \"tcg\"\n",
        )
        .unwrap();
        assert_eq!(c.provider.microvm.kernel, PathBuf::from("/srv/vm/vmlinuz"));
        assert_eq!(
            c.provider.microvm.initramfs,
            PathBuf::from("/srv/vm/initramfs.cpio")
        );
        assert_eq!(
            c.provider.microvm.accel,
            crate::provider::microvm::Accel::Tcg
        );
        for (text, needle) in [
            (
                "kernel = \"vmlinuz\"",
                "provider.microvm.kernel: `vmlinuz` is not an absolute path",
            ),
            (
                "initramfs = \"out/initramfs.cpio\"",
                "provider.microvm.initramfs: `out/initramfs.cpio` is not an absolute path",
            ),
            ("accel = \"hvf\"", "accel"),
            ("accel = \"hvf\"", "kvm"),
            ("kernal = \"/x\"", "kernal"),
        ] {
            let err = parse(&format!("[provider.microvm]\n{text}\n")).unwrap_err();
            assert!(
                err.contains(needle),
                "{text}: missing `{needle}` in:\n{err}"
            );
        }
    }

    #[test]
    fn log_keys_default_parse_and_bad_values_are_named() {
        let c = parse("").unwrap();
        assert_eq!(
            (c.log.level.as_str(), c.log.format),
            ("info", LogFormat::Text)
        );
        let c = parse("[log]\nlevel = \"warn,ebb_controller::engine=TRACE\"\nformat = \"json\"\n")
            .unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        for (text, needle) in [
            ("level = \"\"", "log.level: must not be empty"),
            (
                "level = \"verbose\"",
                "log.level: `verbose`: `verbose` is not one of trace, debug, info, warn, error, off",
            ),
            (
                "level = \"info,ebb=loud\"",
                "log.level: `ebb=loud`: `loud` is not one of",
            ),
            (
                "format = \"xml\"",
                "unknown variant `xml`, expected `text` or `json`",
            ),
            ("colour = true", "colour"),
        ] {
            let err = parse(&format!("[log]\n{text}\n")).unwrap_err();
            assert!(
                err.contains(needle),
                "{text}: missing `{needle}` in:\n{err}"
            );
        }
    }

    #[test]
    fn bad_network_values_are_named() {
        let c = parse("").unwrap();
        assert_eq!(
            (c.provider.network, c.provider.bridge.as_str()),
            (Network::Host, "ebb0")
        );
        assert_eq!(c.provider.subnet().unwrap().to_string(), "10.88.0.0/24");
        for (text, needle) in [
            ("network = \"bridge\"", "network"),
            ("network = \"bridge\"", "namespace"),
            ("bridge = \"\"", "provider.bridge: `` is not a bridge name"),
            (
                "bridge = \"a-bridge-too-long\"",
                "provider.bridge: `a-bridge-too-long` is not a bridge name (1 to 15",
            ),
            ("bridge = \"ebb.0\"", "provider.bridge: `ebb.0`"),
            (
                "subnet = \"10.88.0.0\"",
                "provider.subnet: `10.88.0.0` is not",
            ),
            (
                "subnet = \"fd00::/64\"",
                "provider.subnet: `fd00::/64` is not",
            ),
            (
                "subnet = \"10.0.0.0/8\"",
                "provider.subnet: `10.0.0.0/8`: the prefix must be /16 to /29",
            ),
            (
                "subnet = \"10.88.0.0/30\"",
                "provider.subnet: `10.88.0.0/30`: the prefix",
            ),
            (
                "subnet = \"10.88.0.9/24\"",
                "provider.subnet: `10.88.0.9/24` has host bits set",
            ),
        ] {
            let err = parse(&format!("[provider]\n{text}\n")).unwrap_err();
            assert!(
                err.contains(needle),
                "{text}: missing `{needle}` in:\n{err}"
            );
        }
    }

    #[test]
    fn store_and_ha_keys_default_parse_and_bad_values_are_named() {
        let c = parse("").unwrap();
        assert_eq!(c.store.backend, StoreBackend::Sqlite);
        assert_eq!(
            (c.store.etcd.prefix.as_str(), c.ha.lease_ttl_secs),
            ("/ebb/", 3)
        );
        let good = "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n\
                    [ha]\nadvertise = \"10.0.0.1:7440\"\nsecret_key_file = \"/etc/ebb/store.key\"\n\
                    controllers = [\"10.0.0.1:7440\", \"10.0.0.2:7440\"]\n";
        let c = parse(good).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Etcd);
        assert_eq!(c.advertise().as_deref(), Some("10.0.0.1:7440"));
        assert_eq!(c.controllers(), ["10.0.0.1:7440", "10.0.0.2:7440"]);
        // Without an advertised address, a concrete listen address is it.
        let c = parse("[grpc]\nlisten = \"10.0.0.9:7440\"").unwrap();
        assert_eq!(c.controllers(), ["10.0.0.9:7440"]);
        for (text, needle) in [
            ("[store]\nbackend = \"redis\"", "backend"),
            (
                "[store]\nbackend = \"etcd\"",
                "store.etcd.endpoints: store.backend = \"etcd\" needs at least one endpoint",
            ),
            (
                "[store]\nbackend = \"etcd\"\n[grpc]\nlisten = \"0.0.0.0:7440\"",
                "ha.advertise: grpc.listen is 0.0.0.0:7440",
            ),
            (
                "[store]\nbackend = \"etcd\"",
                "ha.secret_key_file: store.backend",
            ),
            (
                "[store.etcd]\nendpoints = [\"10.0.0.1:2379\"]",
                "store.etcd.endpoints[0]: `10.0.0.1:2379` is not http://host:port",
            ),
            (
                "[store.etcd]\nendpoints = [\"https://e:2379\"]",
                "store.etcd.endpoints[0]: `https://e:2379` is https, so store.etcd.ca is needed",
            ),
            (
                "[store.etcd]\nprefix = \"ebb\"",
                "store.etcd.prefix: `ebb` must start and end",
            ),
            (
                "[store.etcd]\ncert = \"/c\"",
                "store.etcd.cert, store.etcd.key: give both",
            ),
            (
                "[store.etcd]\nrequest_timeout_ms = 10",
                "store.etcd.request_timeout_ms: 10 is outside 100..=60000",
            ),
            (
                "[ha]\nlease_ttl_secs = 0",
                "ha.lease_ttl_secs: 0 is outside 1..=60",
            ),
            (
                "[ha]\nadvertise = \"nowhere\"",
                "ha.advertise: `nowhere` is not host:port",
            ),
            (
                "[ha]\ncontrollers = [\"a:1\", \"b\"]",
                "ha.controllers[1]: `b` is not host:port",
            ),
            ("[ha]\nleader = true", "unknown field `leader`"),
            (
                "[provider]\ninstances_dir = \"shared\"",
                "provider.instances_dir: `shared` is not an absolute path",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{text}: missing `{needle}` in:\n{err}"
            );
        }
    }
}
