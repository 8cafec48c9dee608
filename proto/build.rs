//! Generates the trireme.v1 gRPC code with a vendored protoc, so that a fresh
//! machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; PROTOC is read by prost-build below.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .compile_protos(&["proto/trireme/v1/trireme.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
