//! The three listeners (gRPC, the HTTP gateway, admin), each on a guarded listener
//! (`service_runtime::listener`: a bound on open connections, an idle timeout, accept errors
//! backed off), with HTTP/1's header-read timeout and HTTP/2's keepalive pings.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{Stream, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use service_runtime::listener::Connection;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::service::LomsService;

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

/// The gRPC server with health and reflection on `incoming`, until `stop`.
pub fn serve_grpc(
    incoming: impl Stream<Item = io::Result<Connection>> + Send + 'static,
    service: LomsService,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    max_message_bytes: usize,
    tls: Option<tonic::transport::ServerTlsConfig>,
    timeouts: Timeouts,
    stop: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(timeouts.keepalive_interval))
        .http2_keepalive_timeout(Some(timeouts.keepalive_timeout));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("gRPC TLS")?;
    }
    let server = builder
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(api::LomsServer::new(service).max_decoding_message_size(max_message_bytes))
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await });
    Ok(async { server.await.context("gRPC server") })
}

/// `router` over HTTP/1.1 and HTTP/2 (with rustls when `tls` is given) on `incoming` until
/// `stop`, then draining its connections.
pub async fn serve_http(
    incoming: impl Stream<Item = io::Result<Connection>> + Send,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    timeouts: Timeouts,
    stop: CancellationToken,
) -> anyhow::Result<()> {
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
    Ok(())
}
