//! Prometheus metrics shared by berth-api and berth-agent: the plain-HTTP
//! exporter behind `--metrics-listen` (`GET /metrics`, OpenMetrics text),
//! the RPC metrics of a tonic server (a tower layer: latency by service,
//! method and gRPC code) and the bucket layouts. Each binary keeps its own
//! metrics and builds its [`Registry`]; docs/metrics.md lists every metric.
//!
//! Label values are bounded: methods outside the binary's own table are
//! counted as `unknown`, and no label ever carries a sandbox name or id.
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
pub use prometheus_client;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tonic::codegen::http;

/// The content type of a scrape (what prometheus-client encodes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets for request and transaction latencies: 0.25 ms … ~8 s, doubling.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_25, 2.0, 16)
}

/// A histogram with [`latency_buckets`] (a `fn` so families can make them).
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// A family of latency histograms.
pub type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A new [`LatencyFamily`].
pub fn latency_family<L: Clone + std::hash::Hash + Eq>() -> LatencyFamily<L> {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

/// The registry encoded as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// Serves `GET /metrics` with `registry` on `listener` until the task is
/// aborted; anything else is 404 (405 for another method on /metrics).
pub async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &registry)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

fn answer(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &str| {
        let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: metrics are at /metrics");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics");
    }
    let mut r = Response::new(Full::new(Bytes::from(encode(registry))));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

/// Binds `--metrics-listen` (`addr`; empty: no exporter) and spawns the
/// exporter; returns the bound address, or a one-line error naming `flag`.
pub async fn start(flag: &str, addr: &str, registry: Registry) -> Result<Option<SocketAddr>, String> {
    if addr.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("{flag} {addr:?}: {e} (expected IP:PORT)"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{flag}: binding {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(addr = %bound, "serving metrics on http://{bound}/metrics");
    tokio::spawn(serve(listener, Arc::new(registry)));
    Ok(Some(bound))
}

/// Labels of the RPC metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub service: String,
    pub method: String,
    pub code: String,
}

/// The RPC metrics of one server.
#[derive(Clone)]
pub struct RpcMetrics {
    /// Time from the request's arrival to the end of its response (the
    /// trailers): for a streaming RPC, the stream's whole life.
    pub duration: LatencyFamily<RpcLabels>,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self {
            duration: latency_family(),
        }
    }
}

impl RpcMetrics {
    /// Registers `berth_rpc_duration_seconds`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "berth_rpc_duration",
            "Time from a gRPC request's arrival to its status, by service, method and gRPC code (streams: their whole life)",
            Unit::Seconds,
            self.duration.clone(),
        );
    }

    fn record(&self, service: &str, method: &str, code: &str, start: Instant) {
        self.duration
            .get_or_create(&RpcLabels {
                service: service.to_string(),
                method: method.to_string(),
                code: code.to_string(),
            })
            .observe(start.elapsed().as_secs_f64());
    }
}

/// The canonical name of a gRPC status code (`OK`, `NOT_FOUND`, …).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn code_of(headers: &http::HeaderMap) -> Option<&'static str> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    let n: i32 = v.trim().parse().ok()?;
    Some(code_name(tonic::Code::from_i32(n)))
}

/// The tower layer for `Server::builder().layer(…)`; put it first, so it
/// also sees the calls that the access check refuses. `known` says whether
/// a path (`/pkg.Service/Method`) is one of the server's own; others are
/// counted under service and method `unknown`.
#[derive(Clone)]
pub struct RpcLayer {
    pub metrics: RpcMetrics,
    pub known: fn(&str) -> bool,
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

/// Splits `/pkg.Service/Method` if `known` admits it.
fn labels_for(path: &str, known: fn(&str) -> bool) -> (String, String) {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((s, m)) if known(path) => (s.to_string(), m.to_string()),
        _ => ("unknown".to_string(), "unknown".to_string()),
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<RpcBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let start = Instant::now();
        let (service, method) = labels_for(req.uri().path(), self.layer.known);
        let metrics = self.layer.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let recorder = Recorder {
                metrics,
                service,
                method,
                start,
            };
            match fut.await {
                Ok(resp) => {
                    // A trailers-only answer (most errors) has its status in the headers.
                    let rec = match code_of(resp.headers()) {
                        Some(code) => {
                            recorder.finish(code);
                            None
                        }
                        None => Some(recorder),
                    };
                    Ok(resp.map(|inner| RpcBody { inner, rec }))
                }
                Err(e) => {
                    recorder.finish("UNKNOWN");
                    Err(e)
                }
            }
        })
    }
}

struct Recorder {
    metrics: RpcMetrics,
    service: String,
    method: String,
    start: Instant,
}

impl Recorder {
    fn finish(self, code: &str) {
        self.metrics.record(&self.service, &self.method, code, self.start);
    }
}

/// A response body that records the RPC when its trailers pass (or, if
/// the client goes away first, as `CANCELLED`).
pub struct RpcBody<B> {
    inner: B,
    rec: Option<Recorder>,
}

impl<B> Drop for RpcBody<B> {
    fn drop(&mut self) {
        if let Some(r) = self.rec.take() {
            r.finish("CANCELLED");
        }
    }
}

impl<B> hyper::body::Body for RpcBody<B>
where
    B: hyper::body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(t) = f.trailers_ref()
                    && let Some(r) = this.rec.take()
                {
                    r.finish(code_of(t).unwrap_or("UNKNOWN"));
                }
            }
            Some(Err(_)) | None => {
                if let Some(r) = this.rec.take() {
                    r.finish("UNKNOWN");
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        let known = |p: &str| p == "/berth.v1.NodeService/ListNodes";
        assert_eq!(
            labels_for("/berth.v1.NodeService/ListNodes", known),
            ("berth.v1.NodeService".into(), "ListNodes".into())
        );
        assert_eq!(
            labels_for("/berth.v1.NodeService/Random123", known),
            ("unknown".into(), "unknown".into())
        );
        assert_eq!(labels_for("garbage", known).0, "unknown");
    }

    #[test]
    fn codes_and_encoding() {
        let mut h = http::HeaderMap::new();
        assert_eq!(code_of(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(code_of(&h), Some("NOT_FOUND"));
        let m = RpcMetrics::default();
        let mut r = Registry::default();
        m.register(&mut r);
        m.record("s", "M", "OK", Instant::now());
        let text = encode(&r);
        assert!(
            text.contains("# TYPE berth_rpc_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(r#"berth_rpc_duration_seconds_count{service="s",method="M",code="OK"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
