//! The errors of loms, in the terms of the domain. They are mapped to gRPC codes once, at the
//! service edge (`service.rs`); storage and the domain never see a transport.

use crate::domain::{Action, Status};

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
    /// The database cannot be reached now; the client may retry.
    #[error("storage unavailable")]
    Unavailable(#[source] sqlx::Error),
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

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        let transient = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // Server shutting down, too many connections, serialization/lock failures, query
            // canceled, a session the server ended for idling inside a transaction.
            sqlx::Error::Database(db) => {
                matches!(db.code().as_deref(), Some(c) if c.starts_with("57") || c.starts_with("08") || c.starts_with("53") || c == "40001" || c == "40P01" || c == "55P03" || c == "25P03")
            }
            _ => false,
        };
        if transient {
            Self::Unavailable(e)
        } else {
            Self::Internal(e.into())
        }
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
        assert!(matches!(
            Error::from(sqlx::Error::PoolTimedOut),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            Error::from(sqlx::Error::RowNotFound),
            Error::Internal(_)
        ));
    }
}
