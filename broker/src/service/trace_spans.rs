//! The spans that carry a job's trace context through the broker (see
//! `sluice-trace`): `enqueue`, around the write of a job (of an Enqueue, or one job of a batch), and `lease`, when
//! a job is handed to a worker. Both are children of the producer's span
//! named by the job's `traceparent` header and record its `trace_id`. They
//! are TRACE spans of [`TRACE_TARGET`], disabled (and free) unless the
//! OTLP exporter runs.

use sluice_proto::v1 as pb;
use sluice_trace::{TRACE_TARGET, continue_trace};
use tracing::{Span, field, trace_span};

/// The span of one Enqueue; its `job_id` is recorded once known.
pub fn enqueue(req: &pb::EnqueueRequest) -> Span {
    let span = trace_span!(target: TRACE_TARGET, "enqueue", queue = req.queue, job_type = req.job_type,
        job_id = field::Empty, trace_id = field::Empty);
    continue_trace(&span, headers(&req.headers));
    span
}

/// A job handed to a worker.
pub fn leased(message: &pb::LeasedJob) {
    let Some(job) = &message.job else {
        return;
    };
    let span = trace_span!(target: TRACE_TARGET, "lease", job_id = job.id, queue = job.queue,
        job_type = job.job_type, attempt = job.attempt, worker_id = job.worker_id, trace_id = field::Empty);
    continue_trace(&span, headers(&job.headers));
}

fn headers(
    headers: &std::collections::HashMap<String, String>,
) -> impl Iterator<Item = (&str, &str)> {
    headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}
