//! What a batch does when its call fails: each request must get the answer it would have got
//! alone, so a failure of the batch's transaction is retried or the batch is split, and never
//! reported as a business outcome. OrderCreate's and OrderPay/OrderCancel's batches share it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use crate::database::failure::DbFailure;
use crate::error::Error;

/// Runs of a batch whose connection broke mid-call (its commit may or may not have happened:
/// each kind of batch recognises a batch committed before, rather than applying it twice).
const LOST_RETRIES: u32 = 1;
/// Runs of a batch that lost a serialization or lock conflict, before it is split.
const CONFLICT_RETRIES: u32 = 3;

/// A request waiting in a batch.
pub(super) trait Pending: Send {
    /// Its client gave up (the request timed out and was told to retry): it is not applied.
    fn abandoned(&self) -> bool;
    /// Answers it with `error`.
    fn fail(self, error: Error);
}

/// What a batch's call left: the requests to run again, or, when it failed, all of them with
/// the error.
pub(super) type Committed<T> = Result<Vec<T>, (Vec<T>, sqlx::Error)>;

/// One kind of batch: how its requests are committed in one call.
pub(super) trait Batches: Send + Sync {
    type Item: Pending;

    /// Commits `items` in one call and answers those it decided. Returns the requests to run
    /// again from the start (those a concurrent change overtook), or, when the call failed, all
    /// of them with its error, none answered.
    fn commit(&self, items: Vec<Self::Item>) -> impl Future<Output = Committed<Self::Item>> + Send;
}

/// What to do with a batch whose call failed.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Run it again as it is.
    Retry,
    /// Run each half on its own, the first half first, until the request at fault is alone.
    Split,
    /// Give every request in it the error.
    Answer,
}

fn next_step(failure: DbFailure, runs: u32, requests: usize) -> Next {
    match failure {
        DbFailure::Lost if runs <= LOST_RETRIES => Next::Retry,
        DbFailure::Conflict if runs <= CONFLICT_RETRIES => Next::Retry,
        // The database itself is away: splitting would only fail more often.
        DbFailure::Lost | DbFailure::Unreachable | DbFailure::Refused => Next::Answer,
        DbFailure::Conflict | DbFailure::Timeout | DbFailure::Other if requests > 1 => Next::Split,
        DbFailure::Conflict | DbFailure::Timeout | DbFailure::Other => Next::Answer,
    }
}

/// Commits `items` through `batches` and answers each, whatever happens.
pub(super) async fn settle<B: Batches>(batches: &B, items: Vec<B::Item>) {
    let mut work = VecDeque::from([(items, 1)]);
    while let Some((items, runs)) = work.pop_front() {
        let mut items: Vec<B::Item> = items.into_iter().filter(|i| !i.abandoned()).collect();
        if items.is_empty() {
            continue;
        }
        let (failed, failure) = match batches.commit(items).await {
            Ok(again) => {
                work.push_front((again, 1));
                continue;
            }
            Err(failed) => failed,
        };
        items = failed;
        let kind = DbFailure::of(&failure);
        let next = next_step(kind, runs, items.len());
        tracing::warn!(requests = items.len(), runs, error = %failure, ?kind, ?next, "a batch failed");
        match next {
            Next::Retry => work.push_front((items, runs + 1)),
            Next::Split => {
                let second = items.split_off(items.len() / 2);
                work.push_front((second, 1));
                work.push_front((items, 1));
            }
            Next::Answer => {
                let failure = Arc::new(failure);
                for item in items {
                    item.fail(Error::shared(failure.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_and_conflicting_batches_are_retried_then_split_or_answered() {
        assert_eq!(next_step(DbFailure::Lost, 1, 5), Next::Retry);
        assert_eq!(next_step(DbFailure::Lost, 2, 5), Next::Answer);
        assert_eq!(next_step(DbFailure::Conflict, 3, 5), Next::Retry);
        assert_eq!(next_step(DbFailure::Conflict, 4, 5), Next::Split);
        assert_eq!(next_step(DbFailure::Timeout, 1, 2), Next::Split);
        assert_eq!(next_step(DbFailure::Other, 1, 1), Next::Answer);
        assert_eq!(next_step(DbFailure::Unreachable, 1, 9), Next::Answer);
        assert_eq!(next_step(DbFailure::Refused, 1, 9), Next::Answer);
    }
}
