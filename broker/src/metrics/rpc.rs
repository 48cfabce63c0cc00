//! gRPC call latency by method: a tower layer around the whole router that
//! times each call from its request to its response headers (for a stream,
//! to its start). Methods of the contract and of health have a label of
//! their own, read from the file descriptors once; any other path
//! (reflection, unknown methods) is counted as `other`, so requests cannot
//! grow the scrape.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use prost::Message;
use tower_layer::Layer;
use tower_service::Service;

/// The label of calls to any other path.
const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

/// A histogram per known method, made when registered.
#[derive(Debug)]
pub struct RpcMetrics {
    by_path: HashMap<String, Histogram>,
    other: Histogram,
}

impl RpcMetrics {
    /// Registers `rpc_duration_seconds` in `registry`, with a label for
    /// every method of the Broker, Admin and Health services.
    pub fn register(registry: &mut Registry) -> Self {
        // 100 µs to ~52 s.
        let family = Family::<MethodLabel, Histogram, _>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 20))
        });
        registry.register_with_unit(
            "rpc_duration",
            "gRPC calls from request to response headers (a stream: to its start), by method",
            Unit::Seconds,
            family.clone(),
        );
        let mut by_path = HashMap::new();
        for set in [
            sluice_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            // Built into the binary by the build script: always decodes.
            let set = prost_types::FileDescriptorSet::decode(set)
                .expect("the compiled-in file descriptor set decodes");
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        let path =
                            format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        let label = MethodLabel {
                            method: format!("{}/{}", service.name(), method.name()),
                        };
                        by_path.insert(path, family.get_or_create_owned(&label));
                    }
                }
            }
        }
        let other = family.get_or_create_owned(&MethodLabel {
            method: OTHER.to_owned(),
        });
        Self { by_path, other }
    }

    fn histogram(&self, path: &str) -> &Histogram {
        self.by_path.get(path).unwrap_or(&self.other)
    }
}

/// Times every call when metrics are on; passes calls through otherwise.
#[derive(Debug, Clone, Default)]
pub struct RpcLatencyLayer {
    metrics: Option<Arc<RpcMetrics>>,
}

impl RpcLatencyLayer {
    /// Times calls into `metrics`, or none with `None`.
    pub fn new(metrics: Option<Arc<RpcMetrics>>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcLatencyLayer {
    type Service = RpcLatency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLatency {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RpcLatencyLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct RpcLatency<S> {
    inner: S,
    metrics: Option<Arc<RpcMetrics>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for RpcLatency<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(metrics) = &self.metrics else {
            return Box::pin(self.inner.call(request));
        };
        let histogram = metrics.histogram(request.uri().path()).clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            histogram.observe(started.elapsed().as_secs_f64());
            result
        })
    }
}
