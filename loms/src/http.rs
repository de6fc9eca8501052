//! HTTP/JSON gateway over the gRPC service: the contract's routes, canonical Protobuf JSON
//! (pbjson), errors as `{"code", "message", "details"}` with grpc-gateway's HTTP statuses.

use std::collections::HashMap;

use api::loms::{
    OrderCancelRequest, OrderCreateRequest, OrderInfoRequest, OrderPayRequest, StocksInfoRequest,
};
use api::Loms;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::service::LomsService;

#[derive(Clone)]
struct Gateway {
    service: LomsService,
}

pub fn router(service: LomsService, body_limit: usize) -> Router {
    Router::new()
        .route("/order/create", post(order_create))
        .route("/order/info", get(order_info))
        .route("/order/pay", post(order_pay))
        .route("/order/cancel", post(order_cancel))
        .route("/stock/info", get(stock_info))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(Gateway { service })
}

/// An error reply: `{"code", "message", "details"}` with the HTTP status of the gRPC code.
struct ApiError(tonic::Code, String, Connection);

/// Whether the connection may serve another request after this reply.
#[derive(PartialEq)]
enum Connection {
    KeepAlive,
    /// The request body was refused unread: what is left of it would be taken for the next
    /// request, so the client is told not to reuse the connection.
    Close,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(code, message, connection) = self;
        let status =
            StatusCode::from_u16(http_status(code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "code": code as i32, "message": message, "details": [] });
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if connection == Connection::Close {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

fn invalid(message: String) -> ApiError {
    ApiError(tonic::Code::InvalidArgument, message, Connection::KeepAlive)
}

fn reply<T: Serialize>(result: Result<tonic::Response<T>, tonic::Status>) -> Response {
    match result {
        Ok(response) => match serde_json::to_string(response.get_ref()) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => ApiError(
                tonic::Code::Internal,
                format!("response not encodable: {e}"),
                Connection::KeepAlive,
            )
            .into_response(),
        },
        Err(status) => ApiError(
            status.code(),
            status.message().to_string(),
            Connection::KeepAlive,
        )
        .into_response(),
    }
}

type Body = Result<Bytes, axum::extract::rejection::BytesRejection>;
type QueryParams = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

/// A JSON body in the Protobuf JSON mapping. The body limit's rejection is turned into the
/// contract's error shape as well.
fn parse_body<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        ApiError(
            tonic::Code::InvalidArgument,
            format!("request body not readable: {e}"),
            Connection::Close,
        )
    })?;
    serde_json::from_slice(&body).map_err(|e| invalid(format!("invalid request body: {e}")))
}

/// A 64-bit id from the query string, by its JSON name or its proto name (as grpc-gateway
/// accepts both); absent means 0, which validation then refuses by name.
fn query_id(query: QueryParams, name: &str, proto_name: &str) -> Result<i64, ApiError> {
    let Query(query) = query.map_err(|e| invalid(format!("invalid query string: {e}")))?;
    match query.get(name).or_else(|| query.get(proto_name)) {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| invalid(format!("{name}: {v:?} is not a 64-bit integer"))),
    }
}

/// The W3C trace context headers the gateway passes on to the service.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// A service request for `message`, carrying the caller's trace context from its HTTP headers
/// as gRPC metadata, as a gRPC caller would send it.
fn request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut carried = HeaderMap::new();
    for name in TRACE_HEADERS {
        if let Some(value) = headers.get(name) {
            carried.insert(name, value.clone());
        }
    }
    tonic::Request::from_parts(
        tonic::metadata::MetadataMap::from_headers(carried),
        tonic::Extensions::default(),
        message,
    )
}

async fn order_create(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    match parse_body::<OrderCreateRequest>(body) {
        Ok(req) => reply(g.service.order_create(request(&headers, req)).await),
        Err(e) => e.into_response(),
    }
}

async fn order_pay(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    match parse_body::<OrderPayRequest>(body) {
        Ok(req) => reply(g.service.order_pay(request(&headers, req)).await),
        Err(e) => e.into_response(),
    }
}

async fn order_cancel(State(g): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    match parse_body::<OrderCancelRequest>(body) {
        Ok(req) => reply(g.service.order_cancel(request(&headers, req)).await),
        Err(e) => e.into_response(),
    }
}

async fn order_info(State(g): State<Gateway>, headers: HeaderMap, query: QueryParams) -> Response {
    match query_id(query, "orderId", "order_id") {
        Ok(order_id) => reply(
            g.service
                .order_info(request(&headers, OrderInfoRequest { order_id }))
                .await,
        ),
        Err(e) => e.into_response(),
    }
}

async fn stock_info(State(g): State<Gateway>, headers: HeaderMap, query: QueryParams) -> Response {
    match query_id(query, "sku", "sku") {
        Ok(sku) => reply(
            g.service
                .stocks_info(request(&headers, StocksInfoRequest { sku }))
                .await,
        ),
        Err(e) => e.into_response(),
    }
}

async fn not_found() -> Response {
    ApiError(
        tonic::Code::NotFound,
        "Not Found".into(),
        Connection::KeepAlive,
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    let mut resp = ApiError(
        tonic::Code::Unimplemented,
        "Method Not Allowed".into(),
        Connection::KeepAlive,
    )
    .into_response();
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp
}

/// HTTP status of a gRPC code, as grpc-gateway maps them.
pub fn http_status(code: tonic::Code) -> u16 {
    use tonic::Code;
    match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn grpc_gateway_statuses() {
        assert_eq!(http_status(Code::InvalidArgument), 400);
        assert_eq!(http_status(Code::FailedPrecondition), 400);
        assert_eq!(http_status(Code::NotFound), 404);
        assert_eq!(http_status(Code::Internal), 500);
        assert_eq!(http_status(Code::Unavailable), 503);
    }
}
