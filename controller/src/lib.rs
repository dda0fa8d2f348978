//! ebb's controller.
//!
//! - `config`: `controller.toml`, its defaults and validation.
//! - `pki`: the CA, server and admin certs in the data dir; the mTLS server config.
//! - `tls`: the accept loop that authenticates connections and logs refusals.
//! - `fleet`: the live registry of agents, their counters and sample rings.
//! - `agent_service`: `AgentService.Connect`, identity checks and the pull loop.
//! - `http`: `/healthz` and `/metrics`.
//! - `server`: start-up order and serving until shutdown.
//! - `demo`: the quickstart: a controller, a local agent and a live view.
#![forbid(unsafe_code)]

pub mod agent_service;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod http;
pub mod pki;
pub mod server;
pub mod tls;
