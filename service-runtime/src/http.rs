//! HTTP/1.1 and HTTP/2 (optionally TLS) on a guarded listener: what loms's gateway and both
//! services' admin listeners are served with, HTTP/1's header-read timeout and HTTP/2's
//! keepalive pings included.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::listener::Connection;

/// How long a client may take over what it must send, and how a quiet peer is checked on.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// An HTTP/1 request's headers, and a TLS handshake, must arrive within this.
    pub header_read: Duration,
    /// An HTTP/2 connection is pinged after this long without a frame...
    pub keepalive_interval: Duration,
    /// ...and closed when the ping is not answered within this.
    pub keepalive_timeout: Duration,
}

/// `router` over HTTP/1.1 and HTTP/2 (with rustls when `tls` is given) on `incoming` until
/// `stop`, then draining its connections.
pub async fn serve(
    incoming: impl Stream<Item = io::Result<Connection>> + Send,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    timeouts: Timeouts,
    stop: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.keepalive_interval)
        .keep_alive_timeout(timeouts.keepalive_timeout);
    let builder = Arc::new(builder);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = TaskTracker::new();
    let mut incoming = Box::pin(incoming);
    loop {
        let connection = tokio::select! {
            _ = stop.cancelled() => break,
            next = incoming.next() => match next {
                Some(Ok(connection)) => connection,
                Some(Err(_)) => continue,
                None => break,
            },
        };
        let (builder, router, tls, stop) =
            (builder.clone(), router.clone(), tls.clone(), stop.clone());
        connections.spawn(async move {
            let io = match tls {
                None => Either::Left(connection),
                Some(tls) => {
                    match tokio::time::timeout(timeouts.header_read, tls.accept(connection)).await {
                        Ok(Ok(stream)) => Either::Right(stream),
                        Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    }
                }
            };
            let service =
                router.map_request(|r: hyper::Request<Incoming>| r.map(axum::body::Body::new));
            let served = builder.serve_connection_with_upgrades(
                TokioIo::new(io),
                TowerToHyperService::new(service),
            );
            let mut served = std::pin::pin!(served);
            tokio::select! {
                _ = served.as_mut() => {}
                _ = stop.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    let _ = served.await;
                }
            }
        });
    }
    // The listener closes here: new clients are refused instead of left waiting.
    drop(incoming);
    connections.close();
    connections.wait().await;
}

impl Default for Timeouts {
    /// loms's defaults (`[connections]`), and the notifier's admin listener's.
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}
