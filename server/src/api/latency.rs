//! One tower layer that times every client-API call, in place of a timer in
//! each handler: it wraps the whole `Kv` gRPC service in `server.rs`.
//!
//! A call is timed from the moment its HTTP/2 request reaches the service
//! until the service's response future resolves (the handler has returned
//! and the response head is ready); it failed when the response carries a
//! non-zero `grpc-status` header, which is how tonic sends a handler's
//! `Err(Status)` and a request it could not decode. The method is the last
//! segment of the gRPC path (`/trireme.v1.Kv/Put` is `put`), recorded under
//! the names of [`crate::metrics::METHODS`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::codegen::http;
use tonic::server::NamedService;

use crate::metrics::METHODS;

/// Where a timed call is recorded: method, time taken, whether it succeeded.
pub type Record = Arc<dyn Fn(&'static str, Duration, bool) + Send + Sync>;

/// Wraps a gRPC service in [`Latency`].
#[derive(Clone)]
pub struct LatencyLayer {
    record: Record,
}

impl LatencyLayer {
    /// Records every call through `record`.
    pub fn new(record: impl Fn(&'static str, Duration, bool) + Send + Sync + 'static) -> Self {
        LatencyLayer {
            record: Arc::new(record),
        }
    }
}

impl<S> tower::Layer<S> for LatencyLayer {
    type Service = Latency<S>;

    fn layer(&self, inner: S) -> Latency<S> {
        Latency {
            inner,
            record: self.record.clone(),
        }
    }
}

/// A gRPC service whose calls are timed (see the module docs).
#[derive(Clone)]
pub struct Latency<S> {
    inner: S,
    record: Record,
}

/// tonic routes by service name: the wrapper answers for the wrapped service.
impl<S: NamedService> NamedService for Latency<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower::Service<http::Request<B>> for Latency<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_of(req.uri().path());
        Timed {
            inner: self.inner.call(req),
            method,
            start: Instant::now(),
            record: self.record.clone(),
        }
    }
}

/// The metric name of the gRPC method at `path`, if it is a measured one.
fn method_of(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next()?;
    METHODS.iter().copied().find(|m| {
        // `get_many` is the label of `GetMany`.
        m.bytes()
            .filter(|b| *b != b'_')
            .eq(name.bytes().map(|b| b.to_ascii_lowercase()))
    })
}

/// The wrapped service's response future, recording when it resolves.
pub struct Timed<F> {
    inner: F,
    method: Option<&'static str>,
    start: Instant,
    record: Record,
}

impl<F, R, E> Future for Timed<F>
where
    F: Future<Output = Result<http::Response<R>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        if let Some(method) = self.method {
            let ok = match &out {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .is_none_or(|s| s.as_bytes() == b"0"),
                Err(_) => false,
            };
            (self.record)(method, self.start.elapsed(), ok);
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tower::{Layer, Service, ServiceExt};

    use super::*;

    type Seen = Arc<Mutex<Vec<(&'static str, bool)>>>;

    /// A service that answers `grpc-status: 13` for paths ending in `Put`
    /// (as tonic answers a handler's error) and 0 or nothing otherwise.
    type Answer = Result<http::Response<()>, std::convert::Infallible>;
    type Answering = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn fake() -> impl Service<
        http::Request<()>,
        Response = http::Response<()>,
        Error = std::convert::Infallible,
        Future = Answering,
    > + Clone {
        tower::service_fn(|req: http::Request<()>| {
            let path = req.uri().path().to_string();
            Box::pin(async move {
                let mut builder = http::Response::builder();
                if path.ends_with("/Put") {
                    builder = builder.header("grpc-status", "13");
                } else if path.ends_with("/Get") {
                    builder = builder.header("grpc-status", "0");
                }
                Ok(builder.body(()).expect("a valid response"))
            }) as Answering
        })
    }

    #[tokio::test]
    async fn every_call_is_recorded_once_under_its_method_with_its_outcome() {
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let mut svc = LatencyLayer::new(move |m, _, ok| log.lock().expect("lock").push((m, ok)))
            .layer(fake());
        for path in [
            "/trireme.v1.Kv/Get",
            "/trireme.v1.Kv/Put",
            "/trireme.v1.Kv/Commit",
            "/trireme.v1.Kv/Unknown",
            "/trireme.v1.Kv/Scan",
        ] {
            let req = http::Request::builder()
                .uri(path)
                .body(())
                .expect("a valid request");
            svc.ready()
                .await
                .expect("ready")
                .call(req)
                .await
                .expect("answered");
        }
        assert_eq!(
            *seen.lock().expect("lock"),
            [
                ("get", true),
                ("put", false),
                ("commit", true),
                ("scan", true)
            ]
        );
    }

    #[test]
    fn method_names_are_the_metric_labels() {
        assert_eq!(method_of("/trireme.v1.Kv/Begin"), Some("begin"));
        assert_eq!(method_of("/trireme.v1.Kv/GetMany"), Some("get_many"));
        assert_eq!(method_of("/trireme.v1.Kv/Get"), Some("get"));
        assert_eq!(method_of("/trireme.v1.Kv/Get_Many"), None);
        assert_eq!(method_of("/trireme.v1.Kv/Delete"), Some("delete"));
        assert_eq!(method_of("/trireme.v1.Kv/Status"), None);
        assert_eq!(method_of(""), None);
    }
}
