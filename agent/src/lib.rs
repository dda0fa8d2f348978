//! ebb's host agent.
//!
//! - `config`: `agent.toml`, its defaults and validation.
//! - `collect`: the host metric collectors (cpu, memory, load, net, tcp) and host facts.
//! - `health`: the local health checks (HTTP, TCP, command) configured in agent.toml.
//! - `hooks`: lifecycle hook scripts the controller asks the agent to run.
//! - `join`: `ebb-agent join`, a host's identity from a join token, the CA pinned by hash.
//! - `conn`: the mTLS stream to the controller, with reconnect and back-off.
//! - `follow`: which controller of the list to dial next, and following the leader.
//! - `http`: a small plain-HTTP client for endpoints on the host (health checks, Prometheus sources).
//! - `target`: target mode, converging a local HAProxy and PostgreSQL to the controller's state.
//! - `describe`: one-line messages for I/O errors, exit statuses and time-outs.
#![forbid(unsafe_code)]

pub mod collect;
pub mod config;
pub mod conn;
mod describe;
pub mod follow;
pub mod health;
pub mod hooks;
pub mod http;
pub mod join;
pub mod target;
