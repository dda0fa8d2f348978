//! `agent.toml`: where the controller is, the agent's certificate, the
//! local health checks, the custom metric sources and, on a load balancer
//! or database host, what its target agent may drive (`[target]`).
//! Validation reports every problem at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::collect::{MetricSource, Query, Source};
use crate::health::{HealthCheck, Probe};
use crate::http::HttpUrl;

/// Where the packaged agent looks for its config.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ebb/agent.toml";
/// Where the package puts the hook scripts the host allows (root's, 0755).
pub const DEFAULT_HOOKS_DIR: &str = "/etc/ebb/hooks.d";
/// The controller's default gRPC address (DESIGN.md §7).
pub const DEFAULT_CONTROLLER: &str = "127.0.0.1:7440";
/// Where the package puts the agent's certificates.
pub const DEFAULT_TLS_DIR: &str = "/etc/ebb/tls";
/// A health check every 5 s matches the default sampling interval.
pub const DEFAULT_CHECK_INTERVAL_MS: u64 = 5_000;
/// Two seconds is generous for a local endpoint and still well inside 5 s.
pub const DEFAULT_CHECK_TIMEOUT_MS: u64 = 2_000;
/// Reconnect back-off cap: a restarted controller sees its fleet back within 30 s.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 30_000;
/// Checks more often than every 100 ms would cost more than they tell.
const MIN_CHECK_INTERVAL_MS: u64 = 100;
/// Two seconds is generous for a local endpoint, file or command, and well
/// inside the 5 s default sampling interval.
pub const DEFAULT_METRIC_TIMEOUT_MS: u64 = 2_000;
/// A source slower than a minute is broken rather than slow.
const MAX_METRIC_TIMEOUT_MS: u64 = 60_000;
/// Every source is read on every pull; no host needs more than this many.
const MAX_METRICS: usize = 100;
/// The controller's limit for a custom metric's name (MAX_CUSTOM_METRIC_LEN).
const MAX_METRIC_NAME_LEN: usize = 128;
/// The controller's built-in metrics: an alarm on one of these names reads
/// the built-in metric, so a custom metric by that name could never be used.
const BUILT_IN_METRICS: &[&str] = &[
    "CpuUtilization",
    "MemoryUtilization",
    "LoadAverage",
    "IntranetRx",
    "IntranetTx",
    "TcpConnection",
];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The controllers' gRPC addresses, `host:port`, dialled in order: one
    /// string, or an array of them (several controllers, one the leader).
    #[serde(deserialize_with = "one_or_many")]
    pub controller: Vec<String>,
    /// The name every controller's certificate must carry; when absent, the
    /// host part of the address dialled.
    pub server_name: Option<String>,
    /// Root of the proc filesystem to read (tests point it at fixtures).
    pub proc_root: PathBuf,
    pub tls: TlsConfig,
    pub reconnect: ReconnectConfig,
    #[serde(rename = "health_check")]
    pub health_checks: Vec<HealthCheckConfig>,
    #[serde(rename = "metric")]
    pub metrics: Vec<MetricConfig>,
    pub hooks: HooksConfig,
    /// Present on a target's host only: what the agent may drive.
    pub target: Option<TargetConfig>,
}

/// `[target]`: a load balancer's or database's host. The agent drives only
/// what is named here: one HAProxy runtime socket, one `pg_hba.conf`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Where the agent remembers which HAProxy servers it added.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    pub haproxy: Option<HaproxyConfig>,
    pub postgres: Option<PostgresConfig>,
}

/// `[target.haproxy]`: a local HAProxy's runtime API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// The `stats socket ... level admin` path.
    pub socket: PathBuf,
    /// Whether servers ebb adds run the backend's health check (`check`);
    /// dynamic servers inherit no `default-server` line, so say it here.
    #[serde(default)]
    pub check: bool,
}

/// `[target.postgres]`: a local PostgreSQL's `pg_hba.conf` and how to
/// make the server read it again.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub hba_file: PathBuf,
    pub reload: PgReload,
    /// `reload = "sql"`: the server's unix socket directory.
    #[serde(default = "default_pg_socket_dir")]
    pub socket_dir: PathBuf,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// `reload = "sql"`: the role that runs `pg_reload_conf()`; it must be
    /// let in over the local socket by `trust` or `peer`.
    #[serde(default = "default_pg_user")]
    pub user: String,
    /// `reload = "signal"`: the data directory holding `postmaster.pid`.
    pub data_dir: Option<PathBuf>,
}

/// How the agent has PostgreSQL re-read `pg_hba.conf`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PgReload {
    /// `SELECT pg_reload_conf()` over the local unix socket.
    Sql,
    /// SIGHUP to the postmaster named in `postmaster.pid`.
    Signal,
}

/// Where the package keeps the agent's own state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ebb-agent";
/// Debian's and most distributions' PostgreSQL socket directory.
pub const DEFAULT_PG_SOCKET_DIR: &str = "/var/run/postgresql";
/// PostgreSQL's default port, which names the socket file too.
pub const DEFAULT_PG_PORT: u16 = 5432;
/// The superuser every cluster has, let in by `peer` on Debian.
pub const DEFAULT_PG_USER: &str = "postgres";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_pg_socket_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PG_SOCKET_DIR)
}

fn default_pg_port() -> u16 {
    DEFAULT_PG_PORT
}

fn default_pg_user() -> String {
    DEFAULT_PG_USER.to_owned()
}

impl PostgresConfig {
    /// The unix socket `reload = "sql"` connects to.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir.join(format!(".s.PGSQL.{}", self.port))
    }
}

/// `[hooks]`: whether the controller may have this agent run lifecycle
/// hook scripts (the commands come from the controller's hook definitions),
/// and the one directory they may come from. Off unless the host says so:
/// an admin certificate alone must not run code on every host (DESIGN §3).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    pub allow_scripts: bool,
    /// A hook's `argv[0]` must resolve to an executable inside this
    /// directory; relative to the config file's folder when relative.
    pub dir: PathBuf,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            allow_scripts: false,
            dir: PathBuf::from(DEFAULT_HOOKS_DIR),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The controller's CA certificate.
    pub ca: PathBuf,
    /// This agent's certificate; its identity names the instance.
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// Upper bound of the jittered exponential back-off, in milliseconds.
    pub max_backoff_ms: u64,
}

/// One `[[health_check]]`: a name and exactly one of `http`, `tcp`, `command`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub name: String,
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub command: Option<Vec<String>>,
    #[serde(default = "default_check_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_check_timeout")]
    pub timeout_ms: u64,
}

/// One `[[metric]]`: a name and exactly one of `prometheus`, `file`, `command`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    pub name: String,
    pub prometheus: Option<PrometheusConfig>,
    pub file: Option<PathBuf>,
    pub command: Option<Vec<String>>,
    #[serde(default = "default_metric_timeout")]
    pub timeout_ms: u64,
}

/// `prometheus = { url, metric, labels }`: one series (or the sum of several)
/// of a Prometheus text page.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    pub url: String,
    pub metric: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_metric_timeout() -> u64 {
    DEFAULT_METRIC_TIMEOUT_MS
}

fn default_check_interval() -> u64 {
    DEFAULT_CHECK_INTERVAL_MS
}

fn default_check_timeout() -> u64 {
    DEFAULT_CHECK_TIMEOUT_MS
}

impl Default for Config {
    fn default() -> Self {
        Self {
            controller: vec![DEFAULT_CONTROLLER.to_owned()],
            server_name: None,
            proc_root: PathBuf::from("/proc"),
            tls: TlsConfig::default(),
            reconnect: ReconnectConfig::default(),
            health_checks: Vec::new(),
            metrics: Vec::new(),
            hooks: HooksConfig::default(),
            target: None,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        let dir = Path::new(DEFAULT_TLS_DIR);
        Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("agent.crt"),
            key: dir.join("agent.key"),
        }
    }
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
        }
    }
}

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
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates; relative paths are taken from the config
    /// file's folder, so a config and its certs can travel together.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config = Self::parse_unchecked(text, path)?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Parses without validating, relative paths resolved: `ebb-agent join`
    /// reads where the certificates go before they exist.
    pub fn parse_unchecked(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
            &mut config.hooks.dir,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(t) = config.target.as_mut() {
            let mut paths = vec![&mut t.state_dir];
            if let Some(h) = t.haproxy.as_mut() {
                paths.push(&mut h.socket);
            }
            if let Some(p) = t.postgres.as_mut() {
                paths.push(&mut p.hba_file);
                paths.push(&mut p.socket_dir);
                if let Some(d) = p.data_dir.as_mut() {
                    paths.push(d);
                }
            }
            for p in paths {
                if p.is_relative() && !p.as_os_str().is_empty() {
                    *p = base.join(&*p);
                }
            }
        }
        for file in config.metrics.iter_mut().filter_map(|m| m.file.as_mut()) {
            if file.is_relative() && !file.as_os_str().is_empty() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        controller_problems(&self.controller, &mut problems);
        if self.server_name.as_deref() == Some("") {
            problems.push("server_name: must not be empty".to_owned());
        }
        for (key, path) in [
            ("tls.ca", &self.tls.ca),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
        ] {
            if let Err(e) = std::fs::metadata(path) {
                problems.push(format!("{key}: cannot read {}: {e}", path.display()));
            }
        }
        if self.hooks.allow_scripts {
            match std::fs::metadata(&self.hooks.dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => problems.push(format!(
                    "hooks.dir: {} is not a directory",
                    self.hooks.dir.display()
                )),
                Err(e) => problems.push(format!(
                    "hooks.dir: cannot read {}: {e} (create it, or set allow_scripts = false)",
                    self.hooks.dir.display()
                )),
            }
        }
        if !(100..=3_600_000).contains(&self.reconnect.max_backoff_ms) {
            problems.push(format!(
                "reconnect.max_backoff_ms: {} is outside 100..=3600000",
                self.reconnect.max_backoff_ms
            ));
        }
        let mut names = HashSet::new();
        for (i, check) in self.health_checks.iter().enumerate() {
            let at = if check.name.is_empty() {
                format!("health_check[{i}]")
            } else {
                format!("health_check `{}`", check.name)
            };
            if check.name.is_empty() {
                problems.push(format!("{at}.name: must not be empty"));
            } else if !names.insert(&check.name) {
                problems.push(format!("{at}.name: used by another check"));
            }
            if let Err(e) = check.probe() {
                problems.push(format!("{at}: {e}"));
            }
            if check.interval_ms < MIN_CHECK_INTERVAL_MS {
                problems.push(format!(
                    "{at}.interval_ms: {} is below {MIN_CHECK_INTERVAL_MS}",
                    check.interval_ms
                ));
            }
            if check.timeout_ms == 0 || check.timeout_ms > check.interval_ms {
                problems.push(format!(
                    "{at}.timeout_ms: {} must be above 0 and at most interval_ms ({})",
                    check.timeout_ms, check.interval_ms
                ));
            }
        }
        self.metric_problems(&mut problems);
        if let Some(t) = &self.target {
            target_problems(t, &mut problems);
        }
        problems
    }

    fn metric_problems(&self, problems: &mut Vec<String>) {
        if self.metrics.len() > MAX_METRICS {
            problems.push(format!(
                "metric: {} sources, at most {MAX_METRICS} are allowed",
                self.metrics.len()
            ));
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, metric) in self.metrics.iter().enumerate() {
            let at = format!("metric[{i}]");
            let name = metric.name.as_str();
            if name.is_empty() {
                problems.push(format!("{at}.name: must not be empty"));
            } else if name.len() > MAX_METRIC_NAME_LEN {
                problems.push(format!(
                    "{at}.name: `{name}` is longer than {MAX_METRIC_NAME_LEN} characters"
                ));
            } else if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
            {
                problems.push(format!(
                    "{at}.name: `{name}` may use only letters, digits, '_', '.', ':' and '-'"
                ));
            } else if BUILT_IN_METRICS.contains(&name) {
                problems.push(format!(
                    "{at}.name: `{name}` is a built-in metric; give the custom one another name"
                ));
            } else if let Some(first) = names.insert(name, i) {
                problems.push(format!(
                    "{at}.name: `{name}` is already metric[{first}]'s name"
                ));
                names.insert(name, first);
            }
            if !(1..=MAX_METRIC_TIMEOUT_MS).contains(&metric.timeout_ms) {
                problems.push(format!(
                    "{at}.timeout_ms: {} is outside 1..={MAX_METRIC_TIMEOUT_MS}",
                    metric.timeout_ms
                ));
            }
            if let Err(source_problems) = metric.source() {
                problems.extend(source_problems.iter().map(|p| format!("{at}{p}")));
            }
        }
    }

    /// The TLS server name for dialling `addr`: `server_name`, else the
    /// host part of `addr`.
    pub fn server_name_for(&self, addr: &str) -> String {
        server_name_for(self.server_name.as_deref(), addr)
    }

    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.reconnect.max_backoff_ms)
    }

    /// The custom metric sources as the agent reads them (the config is valid).
    pub fn custom_metrics(&self) -> Vec<MetricSource> {
        self.metrics
            .iter()
            .filter_map(|m| {
                Some(MetricSource {
                    name: m.name.clone(),
                    source: m.source().ok()?,
                    timeout: Duration::from_millis(m.timeout_ms),
                })
            })
            .collect()
    }

    /// The health checks as the runner takes them (the config is valid).
    pub fn health_checks(&self) -> Vec<HealthCheck> {
        self.health_checks
            .iter()
            .filter_map(|c| {
                Some(HealthCheck {
                    name: c.name.clone(),
                    probe: c.probe().ok()?,
                    interval: Duration::from_millis(c.interval_ms),
                    timeout: Duration::from_millis(c.timeout_ms),
                })
            })
            .collect()
    }
}

impl HealthCheckConfig {
    fn probe(&self) -> Result<Probe, String> {
        match (&self.http, &self.tcp, &self.command) {
            (Some(url), None, None) => {
                Probe::parse_http_url(url)?;
                Ok(Probe::Http { url: url.clone() })
            }
            (None, Some(address), None) => {
                split_host_port(address).map_err(|e| format!("tcp: {e}"))?;
                Ok(Probe::Tcp {
                    address: address.clone(),
                })
            }
            (None, None, Some(argv)) => {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(
                        "command: name the program to run, e.g. [\"/usr/local/bin/check\"]".into(),
                    );
                }
                Ok(Probe::Command { argv: argv.clone() })
            }
            _ => Err("set exactly one of `http`, `tcp` or `command`".into()),
        }
    }
}

impl MetricConfig {
    /// The source, or what is wrong with it, each problem as `.key: why` (or
    /// `: why`) to follow `metric[i]`.
    fn source(&self) -> Result<Source, Vec<String>> {
        match (&self.prometheus, &self.file, &self.command) {
            (Some(p), None, None) => {
                let mut problems = Vec::new();
                if let Err(why) = HttpUrl::parse(&p.url) {
                    problems.push(format!(".prometheus.url: bad URL {:?}: {why}", p.url));
                }
                if !is_prometheus_name(&p.metric, true) {
                    problems.push(format!(
                        ".prometheus.metric: {:?} is not a Prometheus metric name (letters, digits, '_' and ':', not starting with a digit)",
                        p.metric
                    ));
                }
                for label in p.labels.keys().filter(|l| !is_prometheus_name(l, false)) {
                    problems.push(format!(
                        ".prometheus.labels: {label:?} is not a label name (letters, digits and '_', not starting with a digit)"
                    ));
                }
                if problems.is_empty() {
                    Ok(Source::Prometheus {
                        url: p.url.clone(),
                        query: Query {
                            metric: p.metric.clone(),
                            labels: p.labels.clone(),
                        },
                    })
                } else {
                    Err(problems)
                }
            }
            (None, Some(path), None) => {
                if path.as_os_str().is_empty() {
                    Err(vec![".file: name the file that holds the number".into()])
                } else {
                    Ok(Source::File { path: path.clone() })
                }
            }
            (None, None, Some(argv)) => {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    Err(vec![
                        ".command: name the program to run, e.g. [\"/usr/local/bin/queue-depth\"]"
                            .into(),
                    ])
                } else {
                    Ok(Source::Command { argv: argv.clone() })
                }
            }
            _ => Err(vec![
                ": set exactly one of `prometheus`, `file` or `command`".into(),
            ]),
        }
    }
}

/// The name a controller's certificate must carry when dialled at `addr`:
/// the configured one, else the host part of `addr` (brackets removed).
pub fn server_name_for(configured: Option<&str>, addr: &str) -> String {
    match configured {
        Some(n) => n.to_owned(),
        None => split_host_port(addr)
            .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
            .unwrap_or_default(),
    }
}

/// `controller = "host:port"` or `controller = ["host:port", ...]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a \"host:port\" string or an array of them")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut all = Vec::new();
            while let Some(addr) = seq.next_element::<String>()? {
                all.push(addr);
            }
            Ok(all)
        }
    }
    d.deserialize_any(Visitor)
}

/// What is wrong with `controller`: an empty list, an entry that is not
/// `host:port` or that repeats another. One address is named `controller`,
/// an entry of several `controller[i]`.
fn controller_problems(controllers: &[String], problems: &mut Vec<String>) {
    if controllers.is_empty() {
        problems.push(
            "controller: the list is empty; name at least one controller as \"host:port\""
                .to_owned(),
        );
    }
    let many = controllers.len() > 1;
    for (i, addr) in controllers.iter().enumerate() {
        let at = if many {
            format!("controller[{i}]")
        } else {
            "controller".to_owned()
        };
        if let Err(e) = split_host_port(addr) {
            problems.push(format!("{at}: {e}"));
        } else if let Some(first) = controllers[..i].iter().position(|a| a == addr) {
            problems.push(format!("{at}: `{addr}` is already controller[{first}]"));
        }
    }
}

/// What is wrong with `[target]`: every path it names is opened (or
/// connected to) now, so a typo is found at start-up, not at the first
/// change the controller sends.
fn target_problems(t: &TargetConfig, problems: &mut Vec<String>) {
    if t.haproxy.is_none() && t.postgres.is_none() {
        problems.push(
            "target: name what this target drives: [target.haproxy] socket, or [target.postgres] hba_file"
                .to_owned(),
        );
    }
    if let Some(h) = &t.haproxy {
        if let Err(e) = std::os::unix::net::UnixStream::connect(&h.socket) {
            problems.push(format!(
                "target.haproxy.socket: cannot connect to {}: {e} (is HAProxy running with `stats socket {} level admin`, and may this user open it?)",
                h.socket.display(),
                h.socket.display()
            ));
        }
        match std::fs::metadata(&t.state_dir) {
            Ok(m) if !m.is_dir() => problems.push(format!(
                "target.state_dir: {} is not a directory",
                t.state_dir.display()
            )),
            Ok(_) => {}
            Err(_) if t.state_dir.parent().is_some_and(Path::is_dir) => {}
            Err(e) => problems.push(format!(
                "target.state_dir: cannot use {}: {e}",
                t.state_dir.display()
            )),
        }
    }
    let Some(p) = &t.postgres else { return };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(&p.hba_file)
    {
        problems.push(format!(
            "target.postgres.hba_file: cannot open {} for reading and writing: {e}",
            p.hba_file.display()
        ));
    }
    match (p.reload, &p.data_dir) {
        (PgReload::Sql, _) => {
            if p.port == 0 {
                problems.push("target.postgres.port: must not be 0".to_owned());
            }
            if p.user.is_empty() || !p.user.chars().all(|c| c.is_ascii_graphic()) {
                problems.push(format!(
                    "target.postgres.user: {:?} is not a role name",
                    p.user
                ));
            }
            let socket = p.socket_path();
            if let Err(e) = std::os::unix::net::UnixStream::connect(&socket) {
                problems.push(format!(
                    "target.postgres.socket_dir: cannot connect to {}: {e} (is PostgreSQL running on port {}?)",
                    socket.display(),
                    p.port
                ));
            }
        }
        (PgReload::Signal, None) => problems.push(
            "target.postgres.data_dir: required with reload = \"signal\" (the directory holding postmaster.pid)"
                .to_owned(),
        ),
        (PgReload::Signal, Some(dir)) => {
            let pid = dir.join("postmaster.pid");
            if let Err(e) = std::fs::File::open(&pid) {
                problems.push(format!(
                    "target.postgres.data_dir: cannot read {}: {e} (is PostgreSQL running from this directory?)",
                    pid.display()
                ));
            }
        }
    }
}

/// A Prometheus metric name (`colons` allowed) or label name.
fn is_prometheus_name(name: &str, colons: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    let mut chars = name.chars();
    chars.next().is_some_and(ok) && chars.all(|c| ok(c) || c.is_ascii_digit())
}

/// Splits `host:port` (`[v6]:port` for IPv6), checking the port.
/// `host:port` split, with a reason when it is not one.
pub fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not host:port"))?;
    if host.is_empty() {
        return Err(format!("`{s}` has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host, p)),
        _ => Err(format!("`{s}` has no valid port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(tempfile::TempDir);

    fn dir_with_certs() -> Dir {
        let d = tempfile::tempdir().unwrap();
        for f in ["ca.crt", "agent.crt", "agent.key"] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        Dir(d)
    }

    fn parse(d: &Dir, text: &str) -> Result<Config, String> {
        Config::parse(text, &d.0.path().join("agent.toml")).map_err(|e| e.to_string())
    }

    const TLS: &str = "[tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n";

    #[test]
    fn minimal_config_uses_defaults_and_resolves_relative_paths() {
        let d = dir_with_certs();
        let c = parse(&d, TLS).unwrap();
        assert_eq!(c.controller, ["127.0.0.1:7440"]);
        assert_eq!(c.server_name_for(&c.controller[0]), "127.0.0.1");
        assert_eq!(c.tls.cert, d.0.path().join("agent.crt"));
        assert_eq!(c.max_backoff(), Duration::from_secs(30));
        assert!(c.health_checks().is_empty());
    }

    #[test]
    fn health_checks_parse() {
        let d = dir_with_certs();
        let c = parse(
            &d,
            &format!(
                "controller = \"ebb.example:7440\"\n{TLS}
                [[health_check]]
                name = \"web\"
                http = \"http://127.0.0.1:8080/healthz\"
                [[health_check]]
                name = \"db\"
                tcp = \"127.0.0.1:5432\"
                interval_ms = 1000
                timeout_ms = 500
                [[health_check]]
                name = \"disk\"
                command = [\"/bin/true\"]
                "
            ),
        )
        .unwrap();
        assert_eq!(c.controller, ["ebb.example:7440"]);
        assert_eq!(c.server_name_for(&c.controller[0]), "ebb.example");
        let checks = c.health_checks();
        assert_eq!(checks.len(), 3);
        assert_eq!(checks[0].interval, Duration::from_secs(5));
        assert_eq!(checks[1].timeout, Duration::from_millis(500));
        assert_eq!(
            checks[2].probe,
            Probe::Command {
                argv: vec!["/bin/true".into()]
            }
        );
    }

    #[test]
    fn several_controllers_are_a_list_dialled_in_order() {
        let d = dir_with_certs();
        let c = parse(
            &d,
            &format!(
                "controller = [\"10.0.0.1:7440\", \"ctl-2.example:7440\", \"[::1]:7441\"]\n{TLS}"
            ),
        )
        .unwrap();
        assert_eq!(
            c.controller,
            ["10.0.0.1:7440", "ctl-2.example:7440", "[::1]:7441"]
        );
        // Without server_name each address is checked against its own host...
        assert_eq!(c.server_name_for("ctl-2.example:7440"), "ctl-2.example");
        assert_eq!(c.server_name_for("[::1]:7441"), "::1");
        // ... with it, every controller must carry that one name.
        let named = parse(
            &d,
            &format!(
                "controller = [\"10.0.0.1:7440\", \"10.0.0.2:7440\"]\nserver_name = \"ebb-controller\"\n{TLS}"
            ),
        )
        .unwrap();
        assert_eq!(named.server_name_for("10.0.0.9:7440"), "ebb-controller");
        // A one-entry list is the same as the string.
        let one = parse(&d, &format!("controller = [\"10.0.0.1:7440\"]\n{TLS}")).unwrap();
        assert_eq!(one.controller, ["10.0.0.1:7440"]);
    }

    #[test]
    fn bad_controller_entries_are_named() {
        let d = dir_with_certs();
        let err = parse(
            &d,
            &format!(
                "controller = [\"10.0.0.1:7440\", \"no-port\", \":7440\", \"10.0.0.1:0\", \"10.0.0.1:7440\"]\n{TLS}"
            ),
        )
        .unwrap_err();
        for needle in [
            "controller[1]: `no-port` is not host:port",
            "controller[2]: `:7440` has no host",
            "controller[3]: `10.0.0.1:0` has no valid port",
            "controller[4]: `10.0.0.1:7440` is already controller[0]",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
        assert!(!err.contains("controller[0]:"), "{err}");
        let err = parse(&d, &format!("controller = []\n{TLS}")).unwrap_err();
        assert!(
            err.contains("controller: the list is empty; name at least one controller"),
            "{err}"
        );
        let err = parse(&d, &format!("controller = [\"no-port\"]\n{TLS}")).unwrap_err();
        assert!(
            err.contains("controller: `no-port` is not host:port"),
            "{err}"
        );
        for (text, needle) in [
            (
                "controller = 7440\n",
                "a \"host:port\" string or an array of them",
            ),
            ("controller = [\"a:1\", 2]\n", "controller"),
            ("controller = { a = \"b:1\" }\n", "controller"),
        ] {
            let err = parse(&d, &format!("{text}{TLS}")).unwrap_err();
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }

    #[test]
    fn unknown_and_malformed_keys_are_named() {
        let d = dir_with_certs();
        let err = parse(&d, &format!("{TLS}contoller = \"x:1\"\n")).unwrap_err();
        assert!(err.contains("contoller"), "{err}");
        let err = parse(&d, "[reconnect]\nmax_backoff_ms = \"soon\"\n").unwrap_err();
        assert!(err.contains("max_backoff_ms"), "{err}");
        let err = parse(
            &d,
            &format!("{TLS}[[health_check]]\nname = \"a\"\nhttp = \"http://x/\"\nretries = 3\n"),
        )
        .unwrap_err();
        assert!(err.contains("retries"), "{err}");
        let err = parse(&d, &format!("{TLS}[hooks]\nallow_scripts = \"yes\"\n")).unwrap_err();
        assert!(err.contains("allow_scripts"), "{err}");
        let err = parse(&d, &format!("{TLS}[hooks]\nallow = false\n")).unwrap_err();
        assert!(err.contains("unknown field `allow`"), "{err}");
    }

    #[test]
    fn custom_metrics_parse() {
        let d = dir_with_certs();
        let c = parse(
            &d,
            &format!(
                r#"{TLS}
                [[metric]]
                name = "http.ok_rps"
                prometheus = {{ url = "http://127.0.0.1:9100/metrics", metric = "http_requests_total", labels = {{ code = "200" }} }}
                [[metric]]
                name = "queue_depth"
                file = "run/queue-depth"
                timeout_ms = 500
                [[metric]]
                name = "app:sessions"
                command = ["sh", "-c", "echo 42"]
                [[metric]]
                name = "up"
                [metric.prometheus]
                url = "http://[::1]:8080/metrics"
                metric = "up"
                "#
            ),
        )
        .unwrap();
        let metrics = c.custom_metrics();
        assert_eq!(
            metrics,
            [
                MetricSource {
                    name: "http.ok_rps".into(),
                    source: Source::Prometheus {
                        url: "http://127.0.0.1:9100/metrics".into(),
                        query: Query {
                            metric: "http_requests_total".into(),
                            labels: [("code".to_owned(), "200".to_owned())].into(),
                        },
                    },
                    timeout: Duration::from_secs(2),
                },
                MetricSource {
                    name: "queue_depth".into(),
                    source: Source::File {
                        path: d.0.path().join("run/queue-depth"),
                    },
                    timeout: Duration::from_millis(500),
                },
                MetricSource {
                    name: "app:sessions".into(),
                    source: Source::Command {
                        argv: vec!["sh".into(), "-c".into(), "echo 42".into()],
                    },
                    timeout: Duration::from_secs(2),
                },
                MetricSource {
                    name: "up".into(),
                    source: Source::Prometheus {
                        url: "http://[::1]:8080/metrics".into(),
                        query: Query {
                            metric: "up".into(),
                            labels: BTreeMap::new(),
                        },
                    },
                    timeout: Duration::from_secs(2),
                },
            ]
        );
        assert!(parse(&d, TLS).unwrap().custom_metrics().is_empty());
    }

    #[test]
    fn bad_custom_metrics_are_all_named() {
        let d = dir_with_certs();
        let long = "m".repeat(129);
        let err = parse(
            &d,
            &format!(
                r#"{TLS}
                [[metric]]
                name = "queue depth"
                file = "/run/q"
                [[metric]]
                name = "rps"
                prometheus = {{ url = "https://127.0.0.1/metrics", metric = "2xx-total", labels = {{ "code-class" = "2xx" }} }}
                [[metric]]
                name = "rps"
                file = "/run/a"
                command = ["x"]
                [[metric]]
                name = ""
                command = []
                timeout_ms = 0
                [[metric]]
                name = "{long}"
                file = ""
                timeout_ms = 60001
                [[metric]]
                name = "CpuUtilization"
                command = ["/usr/local/bin/cpu"]
                [[metric]]
                name = "nothing"
                "#
            ),
        )
        .unwrap_err();
        for needle in [
            "metric[0].name: `queue depth` may use only letters, digits, '_', '.', ':' and '-'",
            "metric[1].prometheus.url: bad URL \"https://127.0.0.1/metrics\": https is not supported",
            "metric[1].prometheus.metric: \"2xx-total\" is not a Prometheus metric name",
            "metric[1].prometheus.labels: \"code-class\" is not a label name",
            "metric[2].name: `rps` is already metric[1]'s name",
            "metric[2]: set exactly one of `prometheus`, `file` or `command`",
            "metric[3].name: must not be empty",
            "metric[3].timeout_ms: 0 is outside 1..=60000",
            "metric[3].command: name the program to run",
            "metric[4].name: `mmmm",
            "is longer than 128 characters",
            "metric[4].file: name the file that holds the number",
            "metric[4].timeout_ms: 60001 is outside 1..=60000",
            "metric[5].name: `CpuUtilization` is a built-in metric",
            "metric[6]: set exactly one of `prometheus`, `file` or `command`",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }

    #[test]
    fn unknown_metric_keys_are_named() {
        let d = dir_with_certs();
        for (text, needle) in [
            (
                "[[metric]]\nname = \"a\"\nfile = \"/f\"\ninterval_ms = 5\n",
                "unknown field `interval_ms`",
            ),
            (
                "[[metric]]\nname = \"a\"\nprometheus = { url = \"http://h/\", metric = \"m\", label = { a = \"b\" } }\n",
                "unknown field `label`",
            ),
            (
                "[[metric]]\nname = \"a\"\nprometheus = { url = \"http://h/\" }\n",
                "missing field `metric`",
            ),
            ("[[metric]]\nfile = \"/f\"\n", "missing field `name`"),
            (
                "[[metric]]\nname = \"a\"\ncommand = \"echo 1\"\n",
                "command",
            ),
            (
                "[[metric]]\nname = \"a\"\nfile = \"/f\"\ntimeout_ms = \"2s\"\n",
                "timeout_ms",
            ),
        ] {
            let err = parse(&d, &format!("{TLS}{text}")).unwrap_err();
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }

    #[test]
    fn at_most_a_hundred_metrics() {
        let d = dir_with_certs();
        let many: String = (0..101)
            .map(|i| format!("[[metric]]\nname = \"m{i}\"\nfile = \"/run/m{i}\"\n"))
            .collect();
        let err = parse(&d, &format!("{TLS}{many}")).unwrap_err();
        assert!(
            err.contains("metric: 101 sources, at most 100 are allowed"),
            "{err}"
        );
    }

    #[test]
    fn hook_scripts_are_refused_unless_turned_on() {
        let d = dir_with_certs();
        let default = parse(&d, TLS).unwrap();
        assert!(!default.hooks.allow_scripts);
        assert_eq!(default.hooks.dir, Path::new("/etc/ebb/hooks.d"));
        std::fs::create_dir(d.0.path().join("hooks.d")).unwrap();
        let on = parse(
            &d,
            &format!("{TLS}[hooks]\nallow_scripts = true\ndir = \"hooks.d\"\n"),
        )
        .unwrap();
        assert!(on.hooks.allow_scripts);
        assert_eq!(on.hooks.dir, d.0.path().join("hooks.d"));
    }

    #[test]
    fn an_allowed_hooks_dir_must_exist() {
        let d = dir_with_certs();
        let err = parse(
            &d,
            &format!("{TLS}[hooks]\nallow_scripts = true\ndir = \"missing.d\"\n"),
        )
        .unwrap_err();
        assert!(err.contains("hooks.dir: cannot read"), "{err}");
        assert!(err.contains("missing.d"), "{err}");
        let err = parse(
            &d,
            &format!("{TLS}[hooks]\nallow_scripts = true\ndir = \"ca.crt\"\n"),
        )
        .unwrap_err();
        assert!(
            err.contains("hooks.dir:") && err.contains("is not a directory"),
            "{err}"
        );
        let err = parse(&d, &format!("{TLS}[hooks]\ndir = 3\n")).unwrap_err();
        assert!(err.contains("dir"), "{err}");
        // Off, the directory is never read: it need not exist.
        parse(&d, &format!("{TLS}[hooks]\ndir = \"missing.d\"\n")).unwrap();
    }

    /// The packaged agent.toml, as shipped, with only its certificate
    /// paths pointed at files that exist here.
    #[test]
    fn the_packaged_agent_toml_refuses_scripts() {
        let d = dir_with_certs();
        let shipped = include_str!("../../packaging/agent/agent.toml");
        assert!(shipped.contains("# allow_scripts = true"), "{shipped}");
        let text = shipped.replace("/etc/ebb/tls/", "");
        let c = parse(&d, &text).unwrap();
        assert!(!c.hooks.allow_scripts);
        assert_eq!(c.hooks.dir, Path::new("/etc/ebb/hooks.d"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let d = dir_with_certs();
        let err = parse(
            &d,
            "controller = \"no-port\"
            [tls]
            ca = \"missing-ca.crt\"
            cert = \"agent.crt\"
            key = \"agent.key\"
            [[health_check]]
            name = \"web\"
            http = \"https://127.0.0.1/\"
            [[health_check]]
            name = \"web\"
            tcp = \"127.0.0.1:1\"
            command = [\"x\"]
            [[health_check]]
            name = \"\"
            command = []
            interval_ms = 10
            timeout_ms = 20
            ",
        )
        .unwrap_err();
        for needle in [
            "controller: `no-port` is not host:port",
            "tls.ca: cannot read",
            "missing-ca.crt",
            "health_check `web`: bad health check URL",
            "health_check `web`.name: used by another check",
            "health_check `web`: set exactly one of",
            "health_check[2].name: must not be empty",
            "health_check[2]: command: name the program",
            "health_check[2].interval_ms: 10 is below 100",
            "health_check[2].timeout_ms: 20",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }

    /// A unix socket something listens on, as HAProxy's and PostgreSQL's do.
    fn listening(path: &Path) -> std::os::unix::net::UnixListener {
        std::os::unix::net::UnixListener::bind(path).unwrap()
    }

    #[test]
    fn a_target_section_parses_with_its_defaults() {
        let d = dir_with_certs();
        let _h = listening(&d.0.path().join("admin.sock"));
        std::fs::create_dir(d.0.path().join("pg")).unwrap();
        let _p = listening(&d.0.path().join("pg/.s.PGSQL.5432"));
        std::fs::write(d.0.path().join("pg_hba.conf"), "local all all peer\n").unwrap();
        let c = parse(
            &d,
            &format!(
                "{TLS}[target]\nstate_dir = \"state\"\n[target.haproxy]\nsocket = \"admin.sock\"\n[target.postgres]\nhba_file = \"pg_hba.conf\"\nreload = \"sql\"\nsocket_dir = \"pg\"\n"
            ),
        )
        .unwrap();
        let t = c.target.unwrap();
        assert_eq!(t.state_dir, d.0.path().join("state"));
        let h = t.haproxy.unwrap();
        assert_eq!((h.socket, h.check), (d.0.path().join("admin.sock"), false));
        let p = t.postgres.unwrap();
        assert_eq!(
            (p.reload, p.port, p.user.as_str()),
            (PgReload::Sql, 5432, "postgres")
        );
        assert_eq!(p.socket_path(), d.0.path().join("pg/.s.PGSQL.5432"));
        let none = parse(&d, TLS).unwrap();
        assert_eq!(none.target, None);
    }

    #[test]
    fn bad_target_keys_are_named() {
        let d = dir_with_certs();
        let _h = listening(&d.0.path().join("admin.sock"));
        std::fs::write(d.0.path().join("pg_hba.conf"), "").unwrap();
        std::fs::write(d.0.path().join("plain"), "").unwrap();
        let pg = "[target.postgres]\nhba_file = \"pg_hba.conf\"\n";
        for (text, needle) in [
            ("[target]\n", "target: name what this target drives"),
            (
                "[target.haproxy]\nsocket = \"missing.sock\"\n",
                "target.haproxy.socket: cannot connect to",
            ),
            (
                "[target.haproxy]\nsocket = \"plain\"\n",
                "target.haproxy.socket: cannot connect to",
            ),
            (
                "[target.haproxy]\nsocket = \"admin.sock\"\ncheck = \"yes\"\n",
                "check",
            ),
            (
                "[target.haproxy]\nsocket = \"admin.sock\"\nchecks = true\n",
                "unknown field `checks`",
            ),
            ("[target.haproxy]\n", "missing field `socket`"),
            (
                "[target]\nstate_dir = \"plain\"\n[target.haproxy]\nsocket = \"admin.sock\"\n",
                "target.state_dir: ",
            ),
            (
                "[target]\nstate_dir = \"no/such/dir\"\n[target.haproxy]\nsocket = \"admin.sock\"\n",
                "target.state_dir: cannot use",
            ),
            ("[target]\nstat_dir = \"x\"\n", "unknown field `stat_dir`"),
            (
                "[target.postgres]\nhba_file = \"missing.conf\"\nreload = \"signal\"\ndata_dir = \".\"\n",
                "target.postgres.hba_file: cannot open",
            ),
            (&format!("{pg}reload = \"restart\"\n"), "reload"),
            (pg, "missing field `reload`"),
            (
                &format!("{pg}reload = \"sql\"\nsocket_dir = \"nowhere\"\n"),
                "target.postgres.socket_dir: cannot connect to",
            ),
            (&format!("{pg}reload = \"sql\"\nport = 70000\n"), "port"),
            (
                &format!("{pg}reload = \"sql\"\nport = 0\n"),
                "target.postgres.port: must not be 0",
            ),
            (
                &format!("{pg}reload = \"sql\"\nuser = \"\"\n"),
                "target.postgres.user: \"\" is not a role name",
            ),
            (
                &format!("{pg}reload = \"signal\"\n"),
                "target.postgres.data_dir: required",
            ),
            (
                &format!("{pg}reload = \"signal\"\ndata_dir = \"nowhere\"\n"),
                "target.postgres.data_dir: cannot read",
            ),
            (
                &format!("{pg}reload = \"sql\"\nsocket = \"x\"\n"),
                "unknown field `socket`",
            ),
        ] {
            let err = parse(&d, &format!("{TLS}{text}")).unwrap_err();
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }
}
