//! The gRPC layer: glue between `sluice.v1` and the [`crate::backend`]. It
//! validates and converts requests (`convert.rs`), runs each operation on
//! the backend, turns what it answers into messages (`outbound.rs`), and
//! maps errors to statuses in one place (`error.rs`, applied by
//! [`respond`]). No queue rule lives here.

mod admin_rpc;
mod broker_rpc;
pub mod convert;
mod enqueue_stream;
mod error;
mod flow_rpc;
mod lease_permits;
mod lease_stream;
pub mod outbound;
pub mod rates;
mod schedule_rpc;
mod source_rpc;
mod stream_groups;
mod trace_spans;
mod visibility;
mod work_session;

pub use admin_rpc::AdminService;
pub use broker_rpc::BrokerService;
pub use enqueue_stream::EnqueueResults;
pub use error::RequestError;
pub use lease_stream::{LeaseBatchStream, LeaseStream};
pub use schedule_rpc::ScheduleDesk;
pub use source_rpc::{INVALID_JOB_TYPE, SourceDesk};
pub use work_session::WorkStream;

use tonic::{Response, Status};

/// An RPC's result on the wire.
fn respond<T>(result: Result<T, RequestError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}
