//! HTTP/1.1 connections from wispd to the app inside a sprite, pooled (keep-alive) per sprite
//! and port. Pool keys are `http://<sprite id>:<port>`; the connector makes the socket in the
//! sprite's network namespace. A pooled connection whose sprite stopped is closed by the
//! kernel (its peer is gone) and leaves the pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::connect::{connect_sprite, localhost, ConnectError};
use crate::runtime::Runtime;

/// Idle upstream connections are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// At most this many idle connections per sprite and port.
const POOL_MAX_IDLE: usize = 64;

#[derive(Clone)]
pub struct SpriteConnector {
    runtime: Arc<dyn Runtime>,
}

impl tower::Service<Uri> for SpriteConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let id = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(80);
            let stream = connect_sprite(&runtime, &id, &localhost(port)).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

pub type UpstreamClient = Client<SpriteConnector, Body>;

pub fn client(runtime: Arc<dyn Runtime>) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .set_host(false)
        .build(SpriteConnector { runtime })
}

/// The [`ConnectError`] behind a client error, if connecting was what failed.
pub fn connect_error(e: &hyper_util::client::legacy::Error) -> Option<&ConnectError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return Some(c);
        }
        source = s.source();
    }
    None
}
