//! Compiles `sluice/v1/*.proto` with protox, a pure-Rust protobuf compiler, so
//! that a machine with only the Rust toolchain builds the workspace.

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &[
    "sluice/v1/job.proto",
    "sluice/v1/schedule.proto",
    "sluice/v1/broker.proto",
    "sluice/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Served by gRPC reflection, so grpcurl needs no .proto files at hand.
    std::fs::write(out_dir.join("sluice_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Payloads as `bytes::Bytes`: handed from request to lease stream without copying.
        .bytes(".sluice.v1")
        .compile_fds(fds)?;
    Ok(())
}
