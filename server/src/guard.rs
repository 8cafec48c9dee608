//! One tower layer for every "decide, then call or refuse" check in front
//! of the gRPC services: which port serves a method ([`crate::ports`]), how
//! many client requests may be in flight ([`crate::admission`]), who a
//! request comes from and whether it may call the method
//! (`api::auth_layer`).
//!
//! A check is a [`Gate`]: it looks at a request before anything else
//! happens to it (before decoding), and either lets it through, possibly
//! adding extensions and holding something for as long as the request runs
//! (an admission slot), or answers it with a gRPC status. [`GateLayer`]
//! does the tower plumbing once, so a new check is one `impl Gate`.
//!
//! What it may import: nothing of this crate (tonic, http and tower only).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A check in front of a server's routes.
pub trait Gate: Clone + Send + Sync + 'static {
    /// What an admitted request holds until its answer, or until the client
    /// goes away and the request is dropped (`()` for a pure check).
    type Held: Send + 'static;

    /// Decides about `req`: `Ok` lets it through (the gate may have added
    /// extensions to it), `Err` answers it with that status and the service
    /// never sees it.
    fn decide<B>(&self, req: &mut http::Request<B>) -> Result<Self::Held, tonic::Status>;
}

/// A tower layer putting a [`Gate`] in front of a service.
#[derive(Clone, Debug)]
pub struct GateLayer<G> {
    gate: G,
}

impl<G> GateLayer<G> {
    /// The layer of `gate`.
    pub fn new(gate: G) -> Self {
        GateLayer { gate }
    }
}

impl<S, G: Clone> tower_layer::Layer<S> for GateLayer<G> {
    type Service = Guarded<S, G>;

    fn layer(&self, inner: S) -> Guarded<S, G> {
        Guarded {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The service a [`GateLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct Guarded<S, G> {
    inner: S,
    gate: G,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, G, B> tower_service::Service<http::Request<B>> for Guarded<S, G>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    G: Gate,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.gate.decide(&mut req) {
            Ok(held) => {
                let response = self.inner.call(req);
                Box::pin(async move {
                    let r = response.await;
                    drop(held);
                    r
                })
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tower_layer::Layer;
    use tower_service::Service;

    use super::*;

    /// Lets `/ok` through, counting how many admitted requests are running;
    /// refuses anything else, and tags what it admits.
    #[derive(Clone)]
    struct Counting(Arc<AtomicUsize>);

    struct Running(Arc<AtomicUsize>);

    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Gate for Counting {
        type Held = Running;

        fn decide<B>(&self, req: &mut http::Request<B>) -> Result<Running, tonic::Status> {
            if req.uri().path() != "/ok" {
                return Err(tonic::Status::permission_denied("not /ok"));
            }
            req.extensions_mut().insert("tagged");
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Running(self.0.clone()))
        }
    }

    #[tokio::test]
    async fn a_gate_refuses_before_the_service_and_holds_until_the_answer() {
        let running = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let (seen2, running2) = (seen.clone(), running.clone());
        let inner = tower::service_fn(move |req: http::Request<()>| {
            let seen = seen2.clone();
            let running = running2.clone();
            async move {
                assert_eq!(req.extensions().get::<&str>(), Some(&"tagged"));
                // The admitted request holds its slot while it runs.
                assert_eq!(running.load(Ordering::SeqCst), 1);
                seen.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
            }
        });
        let mut svc = GateLayer::new(Counting(running.clone())).layer(inner);

        let refused = svc
            .call(http::Request::builder().uri("/no").body(()).unwrap())
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(refused.headers()).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            seen.load(Ordering::SeqCst),
            0,
            "a refused request reached the service"
        );

        svc.call(http::Request::builder().uri("/ok").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "the slot outlived the request"
        );
    }
}
