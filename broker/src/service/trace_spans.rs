//! The spans that carry a job's trace context through the broker (see
//! `sluice-trace`): `enqueue`, around the write of a job (of an Enqueue,
//! or one job of a batch), and `lease`, once a job is sent to a worker.
//! Both are children of the producer's span named by the job's
//! `traceparent` header and record its `trace_id`. They are TRACE spans of
//! [`TRACE_TARGET`], disabled (and free) unless the OTLP exporter runs.

use sluice_limits::DEFAULT_QUEUE;
use sluice_proto::v1 as pb;
use sluice_queue::JobSnapshot;
use sluice_trace::{TRACE_TARGET, TraceContext, continue_trace};
use tracing::{Level, Span, field, trace_span};

/// The span of one Enqueue; its `job_id` is recorded once known.
pub fn enqueue(req: &pb::EnqueueRequest) -> Span {
    let queue = if req.queue.is_empty() {
        DEFAULT_QUEUE
    } else {
        &req.queue
    };
    let span = trace_span!(target: TRACE_TARGET, "enqueue", queue, job_type = req.job_type,
        job_id = field::Empty, trace_id = field::Empty);
    continue_trace(&span, context(&req.headers));
    span
}

/// The `lease` span of `job`, sent to its worker now (if such spans are
/// enabled). Emitted by the Lease stream, where every backend's jobs pass.
pub fn leased(job: &JobSnapshot) {
    if !tracing::enabled!(target: TRACE_TARGET, Level::TRACE) {
        return;
    }
    let worker_id = job.lease.as_ref().map_or("", |l| l.worker_id.as_str());
    let span = trace_span!(target: TRACE_TARGET, "lease", job_id = %job.id, queue = job.queue,
        job_type = job.job_type, attempt = job.attempt, worker_id, trace_id = field::Empty);
    continue_trace(
        &span,
        TraceContext::from_headers(job.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    );
}

fn context(headers: &std::collections::HashMap<String, String>) -> Option<TraceContext<'_>> {
    TraceContext::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}
