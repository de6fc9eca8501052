//! What a failed database call says about the database, by SQLSTATE and by kind, in one place:
//! what a caller may do next, and what a client is told.

use std::sync::Arc;

use crate::error::Error;

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::shared(Arc::new(e))
    }
}

impl Error {
    /// The error of each request a failed database call served: Unavailable when the database
    /// is, Internal otherwise.
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
    /// The server refused the session for good: authentication, or no such database. No
    /// retry changes that; an operator must.
    Refused,
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
                // 28000 invalid authorization, 28P01 wrong password, 3D000 no such database.
                Some("28000" | "28P01" | "3D000") => Self::Refused,
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
    fn a_client_hears_unavailable_only_when_the_database_is() {
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
