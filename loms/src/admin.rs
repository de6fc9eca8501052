//! The admin listener, apart from the API's ports so that scrapes and probes never queue behind
//! requests and need not be exposed with them: `GET /metrics`, `GET /readyz` and `GET /livez`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::health::Readiness;
use crate::metrics::Metrics;

#[derive(Clone)]
struct Admin {
    metrics: Metrics,
    readiness: Readiness,
}

pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/readyz", get(readyz))
        .route("/livez", get(|| async { "ok" }))
        .with_state(Admin { metrics, readiness })
}

async fn metrics_text(State(a): State<Admin>) -> Response {
    (
        [(header::CONTENT_TYPE, service_runtime::metrics::CONTENT_TYPE)],
        a.metrics.render(),
    )
        .into_response()
}

/// 200 while this replica can serve (PostgreSQL answers, no shutdown begun), 503 otherwise. The
/// body also tells what the relay does: a relay that cannot publish (the broker is away) does not
/// make the replica unready, as requests still succeed and their events wait in the outbox, but
/// it says so here, in `loms_relay_consecutive_failures`, and in the alerts.
async fn readyz(State(a): State<Admin>) -> Response {
    let ready = a.readiness.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": ready, "relay": a.metrics.relay_status() });
    (status, Json(body)).into_response()
}
