//! The `ebb.v1` protocol: the messages and gRPC services shared by the agent,
//! the controller and `ebbctl`, generated from `proto/ebb/v1/*.proto`.
//!
//! - `v1`: the generated messages, `AgentService` client and server.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("ebb.v1");
}
