//! Closed-loop load: a number of clients, each sending its next request as soon as the last
//! one was answered, for a while; latencies and completions per second.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use systest::percentile;

pub type Client = api::LomsClient<tonic::transport::Channel>;

/// Connections the clients share, as a service's client pool would.
const CONNECTIONS: usize = 8;

pub struct Load {
    /// Sorted, in milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Requests completed in each second of the run.
    pub per_second: Vec<u64>,
    pub elapsed: Duration,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p(&self, q: f64) -> f64 {
        percentile(&self.latencies_ms, q)
    }
}

pub async fn connect(grpc: &str) -> Vec<Client> {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = api::LomsClient::connect(format!("http://{grpc}"))
            .await
            .expect("gRPC connect");
        channels.push(client);
    }
    channels
}

/// When a load run ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// Once this many calls were made.
    Calls(u64),
}

impl Stop {
    /// The next call's number, if the run goes on.
    fn next(self, started: Instant, calls: &AtomicU64) -> Option<u64> {
        match self {
            Stop::After(run) if started.elapsed() >= run => None,
            Stop::After(_) => Some(calls.fetch_add(1, Ordering::Relaxed)),
            Stop::Calls(n) => Some(calls.fetch_add(1, Ordering::Relaxed)).filter(|&i| i < n),
        }
    }
}

/// `clients` workers call `call(client, i)` (i = 0, 1, 2... over all workers) until `stop`.
pub async fn closed_loop<F, Fut>(grpc: &str, clients: u64, stop: Stop, call: F) -> Load
where
    F: Fn(Client, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let channels = connect(grpc).await;
    let started = Instant::now();
    let calls = Arc::new(AtomicU64::new(0));
    let workers = (0..clients).map(|w| {
        let (client, call) = (channels[w as usize % channels.len()].clone(), call.clone());
        let calls = calls.clone();
        tokio::spawn(async move {
            let mut done = Vec::new();
            while let Some(i) = stop.next(started, &calls) {
                let t = Instant::now();
                call(client.clone(), i).await;
                done.push((t.elapsed().as_secs_f64() * 1e3, started.elapsed().as_secs()));
            }
            done
        })
    });
    let done: Vec<(f64, u64)> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flat_map(|w| w.expect("a load worker"))
        .collect();
    let elapsed = started.elapsed();
    let mut per_second = vec![0u64; elapsed.as_secs() as usize + 1];
    for &(_, second) in &done {
        per_second[second as usize] += 1;
    }
    // The last second is a part of one.
    per_second.truncate((elapsed.as_secs() as usize).max(1));
    let mut latencies_ms: Vec<f64> = done.into_iter().map(|(ms, _)| ms).collect();
    latencies_ms.sort_by(f64::total_cmp);
    Load {
        latencies_ms,
        per_second,
        elapsed,
    }
}
