//! The `ebb.v1` protocol: the messages and gRPC services shared by the agent,
//! the controller and `ebbctl`, generated from `proto/ebb/v1/*.proto`.
//!
//! - `v1`: the generated messages, the `AgentService` and `AdminService`
//!   clients and servers, and the descriptor set for reflection.
//! - `codec`: the protobuf codec they use, with buffers sized for ebb's
//!   small messages.
//! - `convert`: conversions between these messages and `ebb-core`'s model,
//!   shared by the controller and `ebbctl`.
//! - `redirect`: how a controller that is not the leader names the leader
//!   in its refusal, for the agent and `ebbctl` to follow.

pub mod codec;
pub mod convert;
pub mod redirect;

/// etcd's v3 API, as far as the controller's etcd store and leader election
/// use it (`proto/etcd/`): KV, Watch, Lease and Maintenance clients.
pub mod etcd {
    #![allow(clippy::all, clippy::pedantic)]
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
}

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("ebb.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/ebb_descriptor.bin"));
}
