//! The OTLP span exporter of the binaries. It runs only when the standard
//! variable `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the exporter reads the
//! other standard variables itself (`OTEL_EXPORTER_OTLP_HEADERS`,
//! `..._TIMEOUT`, `OTEL_SERVICE_NAME`, ...). It sends over gRPC, in
//! batches, from a thread of its own, only the spans of [`TRACE_TARGET`].

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use crate::TRACE_TARGET;

/// The variables that turn the exporter on.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// Flushes and stops the exporter when dropped: keep it until exit.
#[derive(Debug)]
pub struct ExportGuard {
    provider: SdkTracerProvider,
}

/// How long the exit waits for the last spans to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

impl Drop for ExportGuard {
    fn drop(&mut self) {
        // Spans still queued go out now, for at most FLUSH_TIMEOUT: a
        // collector that is gone loses them, which must not hold up the exit
        // (the exporter's own timeout is 10 s).
        let provider = self.provider.clone();
        let (done, flushed) = std::sync::mpsc::channel();
        let flushing = std::thread::Builder::new()
            .name("sluice-otlp-flush".into())
            .spawn(move || {
                let _ = provider.shutdown();
                let _ = done.send(());
            });
        if flushing.is_ok() {
            let _ = flushed.recv_timeout(FLUSH_TIMEOUT);
        }
    }
}

/// The layer that exports job spans, and its guard; `None` when no
/// endpoint variable is set. Must be called inside a tokio runtime (the
/// gRPC channel lives on it).
///
/// # Errors
/// When the exporter cannot be built from the variables.
pub fn layer<S>(
    service_name: &'static str,
) -> Result<Option<(impl Layer<S> + use<S>, ExportGuard)>, String>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    if !ENDPOINT_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_protocol(opentelemetry_otlp::Protocol::Grpc)
        .build()
        .map_err(|e| format!("the OTLP exporter: {e}"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("sluice"))
        .with_filter(Targets::new().with_target(TRACE_TARGET, LevelFilter::TRACE));
    Ok(Some((layer, ExportGuard { provider })))
}
