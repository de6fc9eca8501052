//! Smart batching: requests queue up while the workers are busy, and a worker that comes free
//! takes every request waiting, up to a maximum, as one batch. There is no timer: a request that
//! finds a worker idle goes at once, alone, so batching costs nothing at low load and batches
//! grow only as load does.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

/// How requests are gathered into batches.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Batches in flight at once, each on a connection of its own.
    pub workers: usize,
}

/// The queue in front of the workers; dropping every clone stops them once the queue is empty.
pub struct Batcher<T> {
    queue: mpsc::Sender<T>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

/// The workers have stopped: the request was not taken.
#[derive(Debug)]
pub struct Stopped;

impl<T: Send + 'static> Batcher<T> {
    /// Starts `shape.workers` workers, each running `run` on one batch at a time. `capacity`
    /// bounds the queue (the requests in flight are bounded before it anyway).
    pub fn spawn<F, Fut>(shape: Shape, capacity: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (queue, waiting) = mpsc::channel(capacity.max(1));
        let waiting = Arc::new(Mutex::new(waiting));
        let run = Arc::new(run);
        for _ in 0..shape.workers.max(1) {
            let (waiting, run) = (waiting.clone(), run.clone());
            let max_batch = shape.max_batch.max(1);
            tokio::spawn(async move {
                while let Some(batch) = take(&waiting, max_batch).await {
                    run(batch).await;
                }
            });
        }
        Self { queue }
    }

    /// Requests queued and not yet taken by a worker.
    pub fn waiting(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Queues `item` for the next free worker.
    pub async fn submit(&self, item: T) -> Result<(), Stopped> {
        self.queue.send(item).await.map_err(|_| Stopped)
    }
}

/// Waits for one request, then takes those already waiting behind it, up to `max_batch`. One
/// worker at a time gathers, so two workers never split what waits into halves.
async fn take<T>(waiting: &Mutex<mpsc::Receiver<T>>, max_batch: usize) -> Option<Vec<T>> {
    let mut waiting = waiting.lock().await;
    let first = waiting.recv().await?;
    let mut batch = Vec::with_capacity(max_batch.min(waiting.len() + 1));
    batch.push(first);
    while batch.len() < max_batch {
        match waiting.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{oneshot, Notify};

    /// Each batch's items, as the workers saw them.
    type Seen = Arc<std::sync::Mutex<Vec<Vec<u32>>>>;

    /// A batch that starts with item 0 tells `started` it was taken, then waits for `gate`.
    struct Held {
        started: Notify,
        gate: Notify,
    }

    /// A request: its number, and where its answer goes.
    type Item = (u32, oneshot::Sender<()>);

    fn recording(shape: Shape) -> (Batcher<Item>, Seen, Arc<Held>) {
        let seen: Seen = Arc::default();
        let held = Arc::new(Held {
            started: Notify::new(),
            gate: Notify::new(),
        });
        let (log, hold) = (seen.clone(), held.clone());
        let batcher = Batcher::spawn(shape, 64, move |batch: Vec<Item>| {
            let (log, hold) = (log.clone(), hold.clone());
            async move {
                log.lock()
                    .unwrap()
                    .push(batch.iter().map(|(n, _)| *n).collect());
                if batch[0].0 == 0 {
                    hold.started.notify_one();
                    hold.gate.notified().await;
                }
                for (_, done) in batch {
                    let _ = done.send(());
                }
            }
        });
        (batcher, seen, held)
    }

    #[tokio::test]
    async fn a_lone_request_goes_at_once_alone() {
        let shape = Shape {
            max_batch: 64,
            workers: 1,
        };
        let (batcher, seen, _) = recording(shape);
        let (done, answered) = oneshot::channel();
        batcher.submit((7, done)).await.unwrap();
        // Answered with nothing else submitted: no worker waits for company.
        answered.await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![vec![7]]);
    }

    #[tokio::test]
    async fn requests_waiting_behind_a_busy_worker_go_together_in_arrival_order() {
        let shape = Shape {
            max_batch: 3,
            workers: 1,
        };
        let (batcher, seen, held) = recording(shape);
        let (done, first) = oneshot::channel();
        batcher.submit((0, done)).await.unwrap();
        held.started.notified().await;
        let mut answers = Vec::new();
        for n in 1..=5 {
            let (done, answered) = oneshot::channel();
            batcher.submit((n, done)).await.unwrap();
            answers.push(answered);
        }
        // The worker holds batch [0] until the gate opens; 1..=5 queue behind it meanwhile.
        held.gate.notify_one();
        first.await.unwrap();
        for answered in answers {
            answered.await.unwrap();
        }
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![0], vec![1, 2, 3], vec![4, 5]]
        );
    }

    #[tokio::test]
    async fn a_free_worker_takes_a_request_while_another_is_busy() {
        let shape = Shape {
            max_batch: 64,
            workers: 2,
        };
        let (batcher, seen, held) = recording(shape);
        let (done, first) = oneshot::channel();
        batcher.submit((0, done)).await.unwrap();
        held.started.notified().await;
        let (done, second) = oneshot::channel();
        batcher.submit((9, done)).await.unwrap();
        // Answered while the first worker still waits at the gate.
        second.await.unwrap();
        held.gate.notify_one();
        first.await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![vec![0], vec![9]]);
    }
}
