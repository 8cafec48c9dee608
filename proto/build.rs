//! Generates the trireme.v1 gRPC code (and the etcd v3 subset the etcd
//! listener serves) with a vendored protoc, so that a fresh
//! machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; PROTOC is read by prost-build below.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // The descriptor set feeds gRPC server reflection (grpcurl lists and calls
    // the services without the .proto file).
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("trireme_descriptor.bin"))
        .compile_protos(
            &[
                "proto/trireme/v1/trireme.proto",
                "proto/trireme/v1/auth.proto",
            ],
            &["proto"],
        )?;
    // The part of etcd's v3 API served on the etcd listener (our own
    // definitions, wire-compatible with etcd's).
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/etcd/api/mvccpb/kv.proto",
            "proto/etcd/api/etcdserverpb/rpc.proto",
        ],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
