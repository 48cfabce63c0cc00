//! Trace context end to end: a producer's `traceparent` and `tracestate`
//! reach the exec handler's environment unchanged, and with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set the broker and the worker export
//! their job spans, as children of the producer's span, to an OTLP
//! collector (here one the test runs, on the protocol's own gRPC server).

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use sluice_e2e::cli::{command, run};
use sluice_e2e::process::binary;
use sluice_e2e::{BrokerProcess, WAIT, WorkerProcess, scratch_dir, wait_for_file};
use tokio_stream::wrappers::TcpListenerStream;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

/// Enqueues a job of `job_type` with `sluice enqueue`, the trace context
/// coming from the environment as a producer's would.
fn enqueue_traced(broker: &BrokerProcess, job_type: &str) -> String {
    let mut cli = command(&["--broker", &broker.url(), "enqueue", "--type", job_type]);
    cli.env("TRACEPARENT", traceparent())
        .env("TRACESTATE", TRACESTATE);
    let output = run(cli, None).ok();
    output.stdout.trim().to_owned()
}

#[tokio::test]
async fn the_trace_context_reaches_the_exec_handler_unchanged() {
    let dir = scratch_dir("traceparent-env");
    let out = dir.join("trace");
    let broker = BrokerProcess::start(&[]);
    let handler = format!(
        r#"t=printf '%s\n%s\n' "$TRACEPARENT" "$TRACESTATE" > {}"#,
        out.display()
    );
    let _worker = WorkerProcess::start(&broker, &["--exec", &handler]);
    let job_id = enqueue_traced(&broker, "t");
    let job = broker.job(&job_id).await;
    assert_eq!(job.headers["traceparent"], traceparent());
    assert_eq!(job.headers["tracestate"], TRACESTATE);
    assert_eq!(
        wait_for_file(&out),
        format!("{}\n{TRACESTATE}\n", traceparent())
    );
}

/// Every span exported to it: (service, span name, trace id, parent span id).
type Spans = Arc<Mutex<Vec<(String, String, String, String)>>>;

#[derive(Default)]
struct Collector {
    spans: Spans,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push((
                    service.clone(),
                    span.name,
                    hex(&span.trace_id),
                    hex(&span.parent_span_id),
                ));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn with_an_otlp_endpoint_broker_and_worker_export_the_producers_trace() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let collector = Collector::default();
    let spans = collector.spans.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    // Export batches every 100 ms instead of every 5 s.
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut broker_command = std::process::Command::new(binary("sluice-broker"));
    broker_command
        .args(["--addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .envs(otel);
    let broker = BrokerProcess::spawn(broker_command);
    broker.wait_for_log("exporting job spans over OTLP");
    let _worker = WorkerProcess::start_at(&broker.url(), &["--exec", "t=true"], &otel);

    let job_id = enqueue_traced(&broker, "t");
    broker
        .wait_for_state(&job_id, sluice_proto::v1::JobState::Succeeded)
        .await;

    let wanted = [
        ("sluice-broker", "enqueue"),
        ("sluice-broker", "lease"),
        ("sluice-worker", "job"),
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = spans.lock().unwrap().clone();
        let found = |service: &str, name: &str| {
            seen.iter()
                .find(|s| s.0 == service && s.1 == name && s.2 == TRACE_ID)
                .cloned()
        };
        if wanted
            .iter()
            .all(|(service, name)| found(service, name).is_some())
        {
            for (service, name) in wanted {
                let span = found(service, name).unwrap();
                // Each is a direct child of the producer's span.
                assert_eq!(span.3, PARENT_ID, "{service} {name}: {span:?}");
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every job span reached the collector: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.abort();
}
