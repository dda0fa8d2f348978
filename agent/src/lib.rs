//! ebb's host agent.
//!
//! - `collect`: the host metric collectors (cpu, memory, load, net, tcp) and host facts.
//! - `health`: the local health checks (HTTP, TCP, command) configured in agent.toml.

pub mod collect;
pub mod health;
