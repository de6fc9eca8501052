//! The `loms.Loms` service: validation, then storage. The HTTP gateway calls these same methods,
//! so both transports share one validation and one error mapping.

use std::future::Future;
use std::time::Instant;

use api::loms::{
    Item, OrderCancelRequest, OrderCancelResponse, OrderCreateRequest, OrderCreateResponse,
    OrderInfoRequest, OrderInfoResponse, OrderPayRequest, OrderPayResponse, StocksInfoRequest,
    StocksInfoResponse,
};
use tonic::{Request, Response, Status};

use crate::domain::{self, positive_id};
use crate::error::ServiceError;
use crate::metrics::Metrics;
use crate::storage::Storage;

#[derive(Clone)]
pub struct LomsService {
    storage: Storage,
    metrics: Metrics,
}

impl LomsService {
    pub fn new(storage: Storage, metrics: Metrics) -> Self {
        Self { storage, metrics }
    }

    /// Runs one request and writes its log line: method, code, latency.
    async fn observe<T>(
        &self,
        method: &'static str,
        work: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = work.await.map_err(Status::from);
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        self.metrics.request(method, code);
        match &result {
            Err(status) if matches!(code, tonic::Code::Internal | tonic::Code::Unavailable) => {
                tracing::warn!(method, code = ?code, latency_ms, message = status.message(), "request failed")
            }
            Err(status) => {
                tracing::info!(method, code = ?code, latency_ms, message = status.message(), "request")
            }
            Ok(_) => tracing::info!(method, code = ?code, latency_ms, "request"),
        }
        result.map(Response::new)
    }
}

#[tonic::async_trait]
impl api::Loms for LomsService {
    async fn order_create(
        &self,
        request: Request<OrderCreateRequest>,
    ) -> Result<Response<OrderCreateResponse>, Status> {
        self.observe("OrderCreate", async {
            let order = domain::new_order(request.get_ref())?;
            let created = self.storage.create_order(&order).await?;
            match created.failure {
                None => Ok(OrderCreateResponse {
                    order_id: created.order_id,
                }),
                Some(reason) => Err(ServiceError::FailedPrecondition(format!(
                    "order {} failed: not enough stock: {reason}",
                    created.order_id
                ))),
            }
        })
        .await
    }

    async fn order_info(
        &self,
        request: Request<OrderInfoRequest>,
    ) -> Result<Response<OrderInfoResponse>, Status> {
        self.observe("OrderInfo", async {
            let order_id = positive_id("order_id", request.get_ref().order_id)?;
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
        self.observe("OrderPay", async {
            let order_id = positive_id("order_id", request.get_ref().order_id)?;
            self.storage.pay(order_id).await?;
            Ok(OrderPayResponse {})
        })
        .await
    }

    async fn order_cancel(
        &self,
        request: Request<OrderCancelRequest>,
    ) -> Result<Response<OrderCancelResponse>, Status> {
        self.observe("OrderCancel", async {
            let order_id = positive_id("order_id", request.get_ref().order_id)?;
            self.storage.cancel(order_id).await?;
            Ok(OrderCancelResponse {})
        })
        .await
    }

    async fn stocks_info(
        &self,
        request: Request<StocksInfoRequest>,
    ) -> Result<Response<StocksInfoResponse>, Status> {
        self.observe("StocksInfo", async {
            let sku = positive_id("sku", request.get_ref().sku)?;
            Ok(StocksInfoResponse {
                count: self.storage.available(sku).await?,
            })
        })
        .await
    }
}
