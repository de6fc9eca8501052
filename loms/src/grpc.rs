//! The gRPC server (the API, health and reflection) on a guarded listener
//! (`service_runtime::listener`), with HTTP/2's keepalive pings.

use std::io;

use anyhow::Context;
use futures::Stream;
use service_runtime::http::Timeouts;
use service_runtime::listener::Connection;
use tokio_util::sync::CancellationToken;

use crate::service::LomsService;

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
