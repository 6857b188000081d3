//! tonic's transport over Spin's outbound HTTP.
//!
//! A component has no sockets: its outbound requests go through
//! `wasi:http`, and to another component of the app through service
//! chaining (`http://<component>.spin.internal`, served in-process by the
//! runtime). [`SpinChannel`] is the `tower` service tonic's generated
//! clients take, sending each call as one such request; the request and
//! response bodies stream, trailers (`grpc-status`) included.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use spin_sdk::http::Response;

/// tonic's `GrpcService` over `spin_sdk::http::send`: give it to a
/// generated client with `with_origin(SpinChannel, origin)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpinChannel;

/// A call that could not be sent (no answer came): tonic reports it as a
/// status whose source is this, so a caller can tell it from an answer.
#[derive(Debug, Clone)]
pub struct SendFailed(pub String);

impl std::fmt::Display for SendFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the call could not be sent: {}", self.0)
    }
}

impl Error for SendFailed {}

impl tower_service::Service<http::Request<tonic::body::Body>> for SpinChannel {
    type Response = Response;
    type Error = SendFailed;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            spin_sdk::http::send(request)
                .await
                .map_err(|e| SendFailed(format!("{e:?}")))
        })
    }
}
