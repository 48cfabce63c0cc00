//! The `sluice.v1` contract: generated messages, clients and servers, the
//! encoded file descriptor set that gRPC reflection serves, the client's
//! [`Bearer`] credential, and the messages as JSON documents ([`json`]).
//!
//! The `.proto` files beside this crate are the source of truth; clients in
//! other languages generate their stubs from them.

mod bearer;
pub mod json;

pub use bearer::{Bearer, InvalidToken};

/// Package `sluice.v1` (generated code).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("sluice.v1");
}

/// A duration on the wire; one past protobuf's range (about 292 billion
/// years) is clamped to its end.
pub fn duration_to_pb(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

/// The encoded `FileDescriptorSet` of `sluice.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");
