//! The errors of loms, in the terms of the domain. They are mapped to gRPC codes once, at the
//! service edge (`service.rs`); storage and the domain never see a transport.

use std::sync::Arc;

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
    /// Shared: one failure of a batch's transaction answers each of its requests.
    Unavailable(#[source] Arc<sqlx::Error>),
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
        Self::shared(Arc::new(e))
    }
}

impl Error {
    /// The error of each request a failed database call served.
    pub fn shared(e: Arc<sqlx::Error>) -> Self {
        if DbFailure::of(&e) == DbFailure::Other {
            Self::Internal(e.into())
        } else {
            Self::Unavailable(e)
        }
    }
}

/// What a failed database call says about the database, and so what a caller may do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// The connection broke during the call: whether a commit took effect is unknown.
    Lost,
    /// No connection could be had, or the server will not take writes now (shutting down, too
    /// many connections, read-only or in recovery).
    Unreachable,
    /// A serialization failure, deadlock or lock timeout: the transaction rolled back and may
    /// simply be run again.
    Conflict,
    /// The statement ran out of time (or was cancelled) and rolled back.
    Timeout,
    /// Anything else: about the request, not the database.
    Other,
}

impl DbFailure {
    pub fn of(e: &sqlx::Error) -> Self {
        match e {
            // The peer spoke something else than PostgreSQL's protocol (a proxy whose upstream
            // is gone answers a connect with a close): the connection, not the request.
            sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) => {
                Self::Lost
            }
            sqlx::Error::Tls(_) => Self::Unreachable,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => Self::Unreachable,
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("40001" | "40P01" | "55P03") => Self::Conflict,
                Some("57014") => Self::Timeout,
                // Connection exceptions; the server ended the session (admin shutdown, crash,
                // idle in transaction).
                Some("57P01" | "57P02" | "25P03") => Self::Lost,
                Some(c) if c.starts_with("08") => Self::Lost,
                // Shutting down or starting, too many connections, a read-only transaction (a
                // standby, or a primary demoted under us).
                Some(c) if c.starts_with("57") || c.starts_with("53") || c == "25006" => {
                    Self::Unreachable
                }
                _ => Self::Other,
            },
            _ => Self::Other,
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

    #[test]
    fn database_failures_by_what_a_caller_may_do() {
        use DbFailure::*;
        assert_eq!(DbFailure::of(&sqlx::Error::PoolTimedOut), Unreachable);
        assert_eq!(DbFailure::of(&sqlx::Error::RowNotFound), Other);
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(DbFailure::of(&sqlx::Error::Io(io)), Lost);
        let garbled = sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into());
        assert_eq!(DbFailure::of(&garbled), Lost);
    }
}
