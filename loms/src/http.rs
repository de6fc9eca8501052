//! HTTP/JSON gateway over the gRPC service: the routes the proto declares, canonical Protobuf JSON
//! (pbjson), errors as `{"code", "message", "details"}` with grpc-gateway's HTTP statuses.

use std::future::Future;

use api::{HttpRoute, Loms};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter, MethodRouter};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::service::LomsService;

#[derive(Clone)]
struct Gateway {
    service: LomsService,
}

/// The gateway: a route for each RPC's `google.api.http` rule (`api::HTTP_ROUTES`), the OpenAPI
/// document at `/openapi.json` and a Swagger UI page at `/docs`. A rule naming an RPC this
/// gateway cannot call is an error, not a route left out.
pub fn router(service: LomsService, body_limit: usize) -> Result<Router, String> {
    let mut router = Router::new();
    for route in api::HTTP_ROUTES {
        let method = MethodFilter::try_from(
            Method::from_bytes(route.method.as_bytes()).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let endpoint = endpoint(route, method)
            .ok_or_else(|| format!("no gateway call for the rule of {route:?}"))?;
        router = router.route(route.path, endpoint);
    }
    let docs = swagger_ui_dist::ApiDefinition {
        uri_prefix: "/docs",
        api_definition: swagger_ui_dist::OpenApiSource::Uri("/openapi.json"),
        title: Some("loms: HTTP API"),
    };
    Ok(router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(Gateway { service })
        .route("/openapi.json", get(openapi))
        .merge(swagger_ui_dist::generate_routes(docs)))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        api::OPENAPI_JSON,
    )
        .into_response()
}

/// The handler of `route`'s RPC, or `None` for an RPC the gateway does not know.
fn endpoint(route: &HttpRoute, method: MethodFilter) -> Option<MethodRouter<Gateway>> {
    let b = (method, route.body);
    Some(match route.rpc {
        "OrderCreate" => call(b, |s, r| async move { s.order_create(r).await }),
        "OrderInfo" => call(b, |s, r| async move { s.order_info(r).await }),
        "OrderPay" => call(b, |s, r| async move { s.order_pay(r).await }),
        "OrderCancel" => call(b, |s, r| async move { s.order_cancel(r).await }),
        "StocksInfo" => call(b, |s, r| async move { s.stocks_info(r).await }),
        _ => return None,
    })
}

/// A handler for `method` that reads the request message from the JSON body (`from_body`) or
/// the query string, calls the service with the caller's trace context, and writes the reply.
fn call<Req, Resp, F, Fut>(
    (method, from_body): (MethodFilter, bool),
    rpc: F,
) -> MethodRouter<Gateway>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(LomsService, tonic::Request<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>> + Send + 'static,
{
    let handler = move |State(g): State<Gateway>, request: Request| async move {
        let headers = request.headers().clone();
        let message = if from_body {
            parse_body(Bytes::from_request(request, &()).await)
        } else {
            parse_query(request.uri())
        };
        match message {
            Ok(message) => reply(rpc(g.service, service_request(&headers, message)).await),
            Err(e) => e.into_response(),
        }
    };
    on(method, handler)
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

/// A request message from the query string: each parameter is the field of that JSON or
/// proto name, its value read as the JSON mapping reads a string (so 64-bit ids as in a body);
/// an absent field is its default, which validation then refuses by name.
fn parse_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| invalid(format!("invalid query string: {e}")))?;
    let fields: serde_json::Map<String, serde_json::Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| invalid(format!("invalid query string: {e}")))
}

/// A service request for `message`, carrying the caller's trace context from its HTTP headers
/// as gRPC metadata, as a gRPC caller would send it.
fn service_request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut carried = HeaderMap::new();
    // The W3C trace context headers, passed on to the service.
    for name in service_runtime::telemetry::HEADERS {
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
