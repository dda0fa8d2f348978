//! ebb's controller.
//!
//! - `config`: `controller.toml`, its defaults and validation.
//! - `store`: the `Store` trait and its SQLite backend.
//! - `provider`: the `Provider` trait and the process provider.
//! - `pki`: the CA, server and admin certs in the data dir; the mTLS server config.
//! - `tls`: the accept loop that authenticates connections and logs refusals.
//! - `engine`: capacity changes as activities, and the reconcile loop.
//! - `clock`: wall-clock time behind one type.
//! - `lifecycle`: lifecycle hooks' admin operations and the outbox to agents.
//! - `notify`: webhook notifications of activities, retried, never blocking.
//! - `fleet`: the live registry of agents, their counters and sample rings.
//! - `metric_sources`: a configuration's custom metric sources in the admin API's form.
//! - `admin`: `AdminService`, the ESS-named admin API (admin certs only).
//! - `automation`: scaling rules, alarms, scheduled tasks, suspended processes.
//! - `agent_service`: `AgentService.Connect`, identity checks and the pull loop.
//! - `http`: `/healthz` and `/metrics`.
//! - `server`: start-up order and serving until shutdown.
//! - `demo`: the quickstart: a controller, a local agent and a live view.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent_service;
pub mod automation;
pub mod clock;
pub mod config;
pub mod demo;
pub mod engine;
pub mod fleet;
pub mod http;
pub mod id;
pub mod lifecycle;
pub mod metric_sources;
pub mod notify;
pub mod pki;
pub mod provider;
pub mod server;
pub mod store;
pub mod tls;
