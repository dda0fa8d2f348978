//! Compiles the `ebb.v1` protos (and the part of etcd's API the
//! controller uses) with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["ebb/v1/agent.proto", "ebb/v1/admin.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    // No generated `connect` constructor: it would clash with the `Connect`
    // rpc. Clients are built with `new(channel)`.
    // Kept for gRPC server reflection.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("ebb_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_transport(false)
        // prost's codec with small buffers (src/codec.rs).
        .codec_path("crate::codec::SmallCodec")
        .compile_fds(fds)?;
    // The part of etcd's v3 API the controller's etcd store and leader
    // election use (`etcd/`): clients only.
    let etcd = ["etcdserverpb/rpc.proto", "mvccpb/kv.proto"];
    for f in etcd {
        println!("cargo:rerun-if-changed=etcd/{f}");
    }
    tonic_prost_build::configure()
        .build_transport(false)
        .build_server(false)
        .compile_fds(protox::compile(etcd, ["etcd"])?)?;
    Ok(())
}
