//! The admin listener of both services, apart from their API ports so that scrapes and probes
//! never queue behind requests and need not be exposed with them: `GET /metrics` (OpenMetrics
//! text), `GET /readyz` (200 or 503, its body `{"ready": bool, ...}` with what the service tells
//! of its parts) and `GET /livez`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::Timeouts;
use crate::listener::{Guard, ListenerMetrics};

/// Connections the admin listener keeps open at once: probes and scrapes, a few at a time.
pub const CONNECTIONS: usize = 32;

/// What a service tells its admin listener.
pub trait Status: Clone + Send + Sync + 'static {
    /// Its metrics, as OpenMetrics text.
    fn metrics(&self) -> String;
    /// Whether it can do its job now, and what its parts say, for `/readyz`.
    fn readiness(&self) -> Readiness;
}

/// `/readyz`'s answer: the status follows `ready`; `parts` go into the body beside it.
pub struct Readiness {
    pub ready: bool,
    pub parts: serde_json::Map<String, serde_json::Value>,
}

pub fn router<S: Status>(status: S) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/readyz", get(readyz::<S>))
        .route("/livez", get(|| async { "ok" }))
        .with_state(status)
}

async fn metrics<S: Status>(State(status): State<S>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        status.metrics(),
    )
        .into_response()
}

async fn readyz<S: Status>(State(status): State<S>) -> Response {
    let Readiness { ready, mut parts } = status.readiness();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    parts.insert("ready".into(), ready.into());
    (code, Json(serde_json::Value::Object(parts))).into_response()
}

/// Serves the admin routes on `listener` (bound by the caller, so that a port that cannot be
/// bound fails the start) until `stop`, with its own bound on connections.
pub async fn serve(
    listener: TcpListener,
    status: impl Status,
    idle_timeout: Duration,
    listener_metrics: ListenerMetrics,
    timeouts: Timeouts,
    stop: CancellationToken,
) {
    let guard = Guard {
        max_connections: CONNECTIONS,
        idle_timeout,
    };
    let incoming = crate::listener::incoming(listener, "admin", guard, listener_metrics);
    crate::http::serve(incoming, router(status), None, timeouts, stop).await;
}
