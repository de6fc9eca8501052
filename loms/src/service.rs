//! The `loms.Loms` service: validation, then storage. The HTTP gateway calls these same methods,
//! so both transports share one validation and one error mapping.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::loms::{
    Item, OrderCancelRequest, OrderCancelResponse, OrderCreateRequest, OrderCreateResponse,
    OrderInfoRequest, OrderInfoResponse, OrderPayRequest, OrderPayResponse, StocksInfoRequest,
    StocksInfoResponse,
};
use service_runtime::telemetry::Carrier;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::domain::{self, Action, NewOrder, OrderId, Sku};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// The event metadata key naming the call that made the change.
const RPC: &str = "rpc";

/// The one mapping of errors to gRPC codes. Internal details (SQL, addresses) go to the log,
/// never to the client.
pub fn status_of(e: Error) -> Status {
    let message = e.to_string();
    match e {
        Error::Invalid(_) => Status::invalid_argument(message),
        Error::OrderNotFound(_) | Error::SkuNotFound(_) => Status::not_found(message),
        Error::WrongStatus { .. } | Error::NotEnoughStock { .. } => {
            Status::failed_precondition(message)
        }
        Error::Overloaded => Status::resource_exhausted(message),
        Error::TimedOut(_) => Status::unavailable(message),
        Error::Unavailable(source) => {
            tracing::warn!(error = %source, "storage unavailable");
            Status::unavailable("storage unavailable, retry later")
        }
        Error::Internal(source) => {
            tracing::error!(error = format!("{source:#}"), "internal error");
            Status::internal("internal error")
        }
    }
}

/// What one request may ask and take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_order_lines: usize,
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
}

#[derive(Clone)]
pub struct LomsService {
    storage: Storage,
    metrics: Metrics,
    limits: Limits,
    /// A permit per request in flight, gRPC and HTTP together.
    slots: Arc<Semaphore>,
}

impl LomsService {
    pub fn new(storage: Storage, metrics: Metrics, limits: Limits) -> Self {
        Self {
            storage,
            metrics,
            limits,
            slots: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
        }
    }

    /// Runs `work` if a slot is free, within the request timeout.
    async fn bounded<T>(&self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        let _slot = self.slots.try_acquire().map_err(|_| Error::Overloaded)?;
        let timeout = self.limits.request_timeout;
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| Error::TimedOut(timeout))?
    }

    /// Runs one request in a span of its own and writes its log line: method, code, latency.
    /// The span continues the caller's W3C trace context (`traceparent`, `tracestate` in the
    /// gRPC metadata or, through the gateway, the HTTP headers), or starts a trace.
    async fn observe<T>(
        &self,
        method: &'static str,
        metadata: &MetadataMap,
        order_id: Option<i64>,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<Response<T>, Status> {
        let span = tracing::info_span!(
            "rpc",
            rpc.system = "grpc",
            rpc.method = method,
            order_id = order_id,
            outcome = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        let carrier = Carrier::from_lookup(|k| metadata.get(k).and_then(|v| v.to_str().ok()));
        service_runtime::telemetry::continue_trace(&span, &carrier);
        let trace_id = service_runtime::telemetry::trace_id(&span);
        span.record("trace_id", trace_id.as_str());
        let started = Instant::now();
        let result = self
            .bounded(work)
            .instrument(span.clone())
            .await
            .map_err(status_of);
        let _entered = span.enter();
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        span.record("outcome", format!("{code:?}").as_str());
        let took = started.elapsed();
        let latency_ms = took.as_secs_f64() * 1e3;
        self.metrics.request(method, code, took);
        match &result {
            Err(status) if matches!(code, tonic::Code::Internal | tonic::Code::Unavailable) => {
                tracing::warn!(method, code = ?code, latency_ms, message = status.message(), %trace_id, "request failed")
            }
            Err(status) => {
                tracing::info!(method, code = ?code, latency_ms, message = status.message(), %trace_id, "request")
            }
            Ok(_) => tracing::info!(method, code = ?code, latency_ms, %trace_id, "request"),
        }
        result.map(Response::new)
    }
}

/// The request in the domain's terms.
pub fn order_request(request: &OrderCreateRequest) -> domain::OrderRequest {
    domain::OrderRequest {
        user_id: request.user_id,
        items: request.items.iter().map(|i| (i.sku, i.count)).collect(),
    }
}

#[tonic::async_trait]
impl api::Loms for LomsService {
    async fn order_create(
        &self,
        request: Request<OrderCreateRequest>,
    ) -> Result<Response<OrderCreateResponse>, Status> {
        self.observe("OrderCreate", request.metadata(), None, async {
            let order = NewOrder::parse(
                &order_request(request.get_ref()),
                self.limits.max_order_lines,
            )?;
            let order_id = self
                .storage
                .create_order(order, &[(RPC, "OrderCreate")])
                .await?;
            tracing::Span::current().record("order_id", order_id);
            Ok(OrderCreateResponse { order_id })
        })
        .await
    }

    async fn order_info(
        &self,
        request: Request<OrderInfoRequest>,
    ) -> Result<Response<OrderInfoResponse>, Status> {
        let order_id = request.get_ref().order_id;
        self.observe("OrderInfo", request.metadata(), Some(order_id), async {
            let order_id = OrderId::parse("order_id", request.get_ref().order_id)?;
            let order = self.storage.order(order_id).await?;
            Ok(OrderInfoResponse {
                status: order.status.as_str().into(),
                user_id: order.user_id,
                items: order
                    .lines
                    .iter()
                    .map(|l| Item {
                        sku: l.sku,
                        count: u32::try_from(l.count).unwrap_or(u32::MAX),
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn order_pay(
        &self,
        request: Request<OrderPayRequest>,
    ) -> Result<Response<OrderPayResponse>, Status> {
        let order_id = request.get_ref().order_id;
        self.observe("OrderPay", request.metadata(), Some(order_id), async {
            let order_id = OrderId::parse("order_id", request.get_ref().order_id)?;
            self.storage
                .apply(order_id, Action::Pay, &[(RPC, "OrderPay")])
                .await?;
            Ok(OrderPayResponse {})
        })
        .await
    }

    async fn order_cancel(
        &self,
        request: Request<OrderCancelRequest>,
    ) -> Result<Response<OrderCancelResponse>, Status> {
        let order_id = request.get_ref().order_id;
        self.observe("OrderCancel", request.metadata(), Some(order_id), async {
            let order_id = OrderId::parse("order_id", request.get_ref().order_id)?;
            self.storage
                .apply(order_id, Action::Cancel, &[(RPC, "OrderCancel")])
                .await?;
            Ok(OrderCancelResponse {})
        })
        .await
    }

    async fn stocks_info(
        &self,
        request: Request<StocksInfoRequest>,
    ) -> Result<Response<StocksInfoResponse>, Status> {
        self.observe("StocksInfo", request.metadata(), None, async {
            let sku = Sku::parse("sku", request.get_ref().sku)?;
            Ok(StocksInfoResponse {
                count: self.storage.available(sku).await?,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn contract_codes() {
        let code = |e| status_of(e).code();
        assert_eq!(code(Error::invalid("x")), Code::InvalidArgument);
        assert_eq!(code(Error::OrderNotFound(1)), Code::NotFound);
        assert_eq!(code(Error::SkuNotFound(1)), Code::NotFound);
        let wrong = Error::WrongStatus {
            order_id: 1,
            status: domain::Status::Failed,
            action: Action::Pay,
        };
        assert_eq!(code(wrong), Code::FailedPrecondition);
        let short = Error::NotEnoughStock {
            order_id: 1,
            shortage: "sku 1".into(),
        };
        assert_eq!(code(short), Code::FailedPrecondition);
        assert_eq!(code(Error::Overloaded), Code::ResourceExhausted);
        assert_eq!(
            code(Error::TimedOut(Duration::from_secs(1))),
            Code::Unavailable
        );
        let status = status_of(Error::from(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("pool"));
    }
}
