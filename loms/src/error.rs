//! Errors at the edge of the service, mapped once to gRPC codes (and from those to HTTP).

use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The database cannot be reached now; the client may retry.
    #[error("storage unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ServiceError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        let transient = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // Server shutting down, too many connections, serialization/lock failures, query canceled.
            sqlx::Error::Database(db) => {
                matches!(db.code().as_deref(), Some(c) if c.starts_with("57") || c.starts_with("08") || c.starts_with("53") || c == "40001" || c == "40P01" || c == "55P03")
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

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        // Internal details (SQL, addresses) go to the log, never to the client.
        match e {
            ServiceError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            ServiceError::NotFound(m) => tonic::Status::not_found(m),
            ServiceError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            ServiceError::Unavailable(source) => {
                tracing::warn!(error = %source, "storage unavailable");
                tonic::Status::unavailable("storage unavailable, retry later")
            }
            ServiceError::Internal(source) => {
                tracing::error!(error = format!("{source:#}"), "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}

/// HTTP status of a gRPC code, as grpc-gateway maps them.
pub fn http_status(code: Code) -> u16 {
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

    #[test]
    fn contract_codes() {
        assert_eq!(
            tonic::Status::from(ServiceError::invalid("x")).code(),
            Code::InvalidArgument
        );
        assert_eq!(http_status(Code::InvalidArgument), 400);
        assert_eq!(http_status(Code::FailedPrecondition), 400);
        assert_eq!(http_status(Code::NotFound), 404);
        assert_eq!(http_status(Code::Internal), 500);
        assert_eq!(http_status(Code::Unavailable), 503);
        let status = tonic::Status::from(ServiceError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("pool"));
    }
}
