//! The errors of loms, in the terms of the domain. They are mapped to gRPC codes once, at the
//! service edge (`service.rs`); storage and the domain never see a transport, and this module
//! never sees the database (`database::failure` says what a database error means).

use std::sync::Arc;

use crate::domain::{Action, Invalid, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request that fails validation; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("order {0} not found")]
    OrderNotFound(i64),
    #[error("sku {0} not found")]
    SkuNotFound(i64),
    /// The order's status does not allow the transition.
    #[error("order {order_id} is {status}, {}", action.refusal())]
    WrongStatus {
        order_id: i64,
        status: Status,
        action: Action,
    },
    /// The order was stored as `failed`: the stock could not cover it.
    #[error("order {order_id} failed: not enough stock: {shortage}")]
    NotEnoughStock { order_id: i64, shortage: String },
    /// The database cannot be reached now; the client may retry. Shared: one failure of a
    /// batch's transaction answers each of its requests.
    #[error("storage unavailable")]
    Unavailable(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// As many requests as configured are in flight already.
    #[error("too many requests in flight, retry later")]
    Overloaded,
    /// The request did not finish within the configured time; nothing it did is left half done
    /// (each change is one transaction), so the client may retry.
    #[error("request timed out after {0:?}, retry later")]
    TimedOut(std::time::Duration),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

impl From<Invalid> for Error {
    fn from(Invalid(message): Invalid) -> Self {
        Self::Invalid(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_the_client_can_do_about_it() {
        let pay = Error::WrongStatus {
            order_id: 7,
            status: Status::Cancelled,
            action: Action::Pay,
        };
        assert_eq!(
            pay.to_string(),
            "order 7 is cancelled, only an order awaiting payment can be paid"
        );
    }
}
