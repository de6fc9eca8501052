//! End-to-end latency at a steady rate: from OrderCreate's reply to the notifier's log line of
//! the order's `awaiting payment` event, and where the time goes, stage by stage, from the
//! services' own histograms.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use loms::domain::Status;
use serde_json::{json, Value};
use systest::percentile;
use testkit::process::{free_port, NotifierOptions, NotifierProcess};
use tonic::transport::Channel;

use crate::cpu::{self, Usage};
use crate::histogram::{self, Buckets};

/// Seconds of orders sent at the run's rate before it is measured.
const WARM_UP_SECS: u64 = 1;
/// How long the notifier may take to log the last events of a run.
const LOG_PATIENCE: Duration = Duration::from_secs(60);
/// The services' librdkafka statistics each second, for their request counters (their own
/// interval is 5 s, too coarse for a run of seconds).
const STATISTICS: &str = "statistics.interval.ms=1000";
/// The quantiles reported.
pub const QUANTILES: [(&str, f64); 4] =
    [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("p99_9", 0.999)];

/// The stages, as (name in the report, the histogram, whose `/metrics` has it).
const STAGES: [(&str, &str, Side); 4] = [
    ("outbox_wait", "loms_outbox_wait_seconds", Side::Loms),
    ("publish", "loms_relay_publish_seconds", Side::Loms),
    ("relay_cycle", "loms_relay_cycle_seconds", Side::Loms),
    (
        "event_age_at_notifier",
        "notifier_event_age_seconds",
        Side::Notifier,
    ),
];

#[derive(Clone, Copy)]
enum Side {
    Loms,
    Notifier,
}

pub struct E2e {
    pub rate: u64,
    /// What the machine's cores did while the orders were sent.
    pub cpu: Usage,
    pub outbox: OutboxSample,
    /// Reply to log line, per order, sorted, in milliseconds.
    pub overall_ms: Vec<f64>,
    pub stages: Vec<(&'static str, Buckets)>,
    /// The relay's produce requests and the notifier's fetch requests per second.
    pub requests_per_s: Requests,
    /// The broker's busiest threads (by name) in cores.
    pub broker_threads: Vec<(String, f64)>,
}

/// Kafka requests per second (or in total), by kind.
#[derive(Clone, Copy, Default)]
pub struct Requests {
    pub produce: f64,
    pub fetch: f64,
}

impl E2e {
    pub fn p(&self, q: f64) -> f64 {
        percentile(&self.overall_ms, q)
    }

    pub fn json(&self) -> Value {
        let quantiles = |f: &dyn Fn(f64) -> f64| -> Value {
            QUANTILES
                .iter()
                .map(|(name, q)| (name.to_string(), json!(f(*q))))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let stages: serde_json::Map<String, Value> = self
            .stages
            .iter()
            .map(|(name, b)| (name.to_string(), quantiles(&|q| b.quantile_ms(q))))
            .collect();
        json!({
            "rate_per_s": self.rate,
            "outbox": {
                "max_live_rows": self.outbox.max_live,
                "max_dead_rows": self.outbox.max_dead,
                "autovacuums": self.outbox.autovacuums,
            },
            "orders": self.overall_ms.len(),
            "events_measured": self.events_measured(),
            "stage_observations": self
                .stages
                .iter()
                .map(|(name, b)| (name.to_string(), json!(b.count())))
                .collect::<serde_json::Map<_, _>>(),
            "stages_cover_the_measured_events": self.stages_cover_the_measured_events().is_ok(),
            "cpu_cores": self.cpu.json(),
            "broker_threads_cores": self.broker_threads_json(),
            "kafka_requests_per_s": {
                "produce": self.requests_per_s.produce,
                "fetch": self.requests_per_s.fetch,
            },
            "latency_ms": quantiles(&|q| self.p(q)),
            "stages_ms": stages,
        })
    }

    /// The broker's `n` busiest threads, as `name cores, ...`.
    pub fn busiest_threads(&self, n: usize) -> String {
        let threads: Vec<String> = self
            .broker_threads
            .iter()
            .take(n)
            .map(|(name, cores)| format!("{name} {cores:.2}"))
            .collect();
        threads.join(", ")
    }

    pub fn broker_threads_json(&self) -> Value {
        self.broker_threads
            .iter()
            .map(|(name, cores)| (name.clone(), json!(cores)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// Events the measured orders wrote: two each (`new`, `awaiting payment`).
    pub fn events_measured(&self) -> u64 {
        2 * self.overall_ms.len() as u64
    }

    /// Whether each per-event stage observed exactly the measured orders' events: nothing of
    /// the warm-up, of another run, or twice. A stage figure that disagrees with the client's
    /// would show here first.
    pub fn stages_cover_the_measured_events(&self) -> Result<(), String> {
        let expected = self.events_measured();
        let wrong: Vec<String> = self
            .stages
            .iter()
            .filter(|(name, _)| *name != "relay_cycle") // per batch, not per event
            .filter(|(_, b)| b.count() != expected)
            .map(|(name, b)| format!("{name} observed {} events, not {expected}", b.count()))
            .collect();
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    }

    /// Distributions for the plot: each stage's, and the overall one.
    pub fn cdfs(&self) -> Vec<(String, Vec<(f64, f64)>)> {
        let mut series: Vec<(String, Vec<(f64, f64)>)> = self
            .stages
            .iter()
            .map(|(name, b)| (name.to_string(), b.cdf()))
            .collect();
        let n = self.overall_ms.len().max(1) as f64;
        let overall = self
            .overall_ms
            .iter()
            .enumerate()
            .map(|(i, ms)| (*ms, (i + 1) as f64 / n))
            .collect();
        series.push(("reply_to_log".into(), overall));
        series
    }
}

/// The event path's settings: librdkafka properties of the relay's producer and of the
/// notifier's consumer, over the services' own.
pub struct EventPath {
    pub name: &'static str,
    pub producer: &'static [&'static str],
    pub consumer: &'static [&'static str],
}

/// The services' own settings.
pub const DEFAULTS: EventPath = EventPath {
    name: "defaults",
    producer: &[],
    consumer: &[],
};

/// Orders at `rate` per second for `secs`, each measured from its reply to its log line.
pub async fn run(secs: u64, rate: u64, path: &EventPath) -> E2e {
    let producer: Vec<&str> = path.producer.iter().copied().chain([STATISTICS]).collect();
    let (loms, topic) = crate::system("e2e", &producer).await;
    let log = crate::out_dir().join("notifier-e2e.log");
    let _ = std::fs::remove_file(&log);
    let metrics = format!("127.0.0.1:{}", free_port());
    let notifier = path
        .consumer
        .iter()
        .chain(&[STATISTICS])
        .fold(NotifierOptions::new(&topic, "bench-e2e"), |o, p| {
            o.kafka_property(p)
        })
        .log(&log)
        .metrics(&metrics)
        .start();
    // The clock starts once the notifier has joined its group.
    notifier.joined().await;
    let pool = sqlx::PgPool::connect(&loms.options().database_url)
        .await
        .expect("connect");
    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn(sample_outbox(pool, sampling.clone()));
    let client = api::LomsClient::connect(format!("http://{}", loms.grpc))
        .await
        .expect("gRPC connect");
    // Warm-up, not measured: the first calls open the pool's connections, the producer's and
    // the consumer's first requests find their brokers; the figures are of the steady state.
    let warm_up = send(&client, WARM_UP_SECS * rate, rate).await;
    logged_by(&notifier, &warm_up).await;
    let before_run = scrape(&loms.admin, &metrics).await;
    let pids = (Some(loms.process.pid()), Some(notifier.process.pid()));
    let (before, threads_before) = (cpu::sample(pids.0, pids.1), cpu::broker_threads());
    let replies = send(&client, secs * rate, rate).await;
    let cpu = Usage::between(&before, &cpu::sample(pids.0, pids.1));
    let broker_threads = cpu::thread_cores(&threads_before, &cpu::broker_threads(), secs as f64);
    let logged = logged_by(&notifier, &replies).await;
    let after_run = scrape(&loms.admin, &metrics).await;
    // Both request counters lag by up to a statistics interval, at the start as at the end.
    let requests_per_s = Requests {
        produce: (after_run.requests.produce - before_run.requests.produce) / secs as f64,
        fetch: (after_run.requests.fetch - before_run.requests.fetch) / secs as f64,
    };
    let overall_ms = reply_to_log(&replies, &logged);
    sampling.cancel();
    let outbox = sampler.await.expect("the outbox sampler");
    let stages = after_run
        .stages
        .into_iter()
        .zip(before_run.stages)
        .map(|((name, after), (_, before))| (name, after.since(&before)))
        .collect();
    E2e {
        rate,
        cpu,
        outbox,
        overall_ms,
        stages,
        requests_per_s,
        broker_threads,
    }
}

/// Each order's time from its reply to its log line, in milliseconds, sorted.
fn reply_to_log(replies: &HashMap<i64, SystemTime>, logged: &HashMap<i64, SystemTime>) -> Vec<f64> {
    let mut overall_ms: Vec<f64> = replies
        .iter()
        .filter_map(|(id, reply)| {
            let at = logged.get(id)?;
            Some(
                at.duration_since(*reply)
                    .map_or(0.0, |d| d.as_secs_f64() * 1e3),
            )
        })
        .collect();
    overall_ms.sort_by(f64::total_cmp);
    overall_ms
}

/// `count` orders at `rate` per second, sent whether or not earlier ones were answered: when
/// each was answered, by order id.
async fn send(
    client: &api::LomsClient<Channel>,
    count: u64,
    rate: u64,
) -> HashMap<i64, SystemTime> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut calls = Vec::new();
    for i in 0..count {
        ticker.tick().await;
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            let reply = client.order_create(crate::create_request(i)).await;
            (
                reply.expect("OrderCreate").get_ref().order_id,
                SystemTime::now(),
            )
        }));
    }
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|c| c.expect("a call"))
        .collect()
}

/// What both services' `/metrics` say now, each scraped once: every stage's histogram, the
/// relay's produce requests and the notifier's fetch requests.
struct Scrape {
    stages: Vec<(&'static str, Buckets)>,
    requests: Requests,
}

async fn scrape(loms: &str, notifier: &str) -> Scrape {
    let (loms_text, notifier_text) = (
        histogram::scrape(loms).await,
        histogram::scrape(notifier).await,
    );
    let stages = STAGES
        .iter()
        .map(|(name, metric, side)| {
            let text = match side {
                Side::Loms => &loms_text,
                Side::Notifier => &notifier_text,
            };
            (*name, histogram::parse(text, metric))
        })
        .collect();
    let counter = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix("_total "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0)
    };
    let requests = Requests {
        produce: counter(&loms_text, "loms_kafka_produce_requests"),
        fetch: counter(&notifier_text, "notifier_kafka_fetch_requests"),
    };
    Scrape { stages, requests }
}

/// Waits until the notifier has logged every order of `replies`; when it logged each order.
async fn logged_by(
    notifier: &NotifierProcess,
    replies: &HashMap<i64, SystemTime>,
) -> HashMap<i64, SystemTime> {
    let mut logged = HashMap::new();
    testkit::eventually("the notifier logs every order", LOG_PATIENCE, || {
        logged = logged_at(&notifier.process.json_lines());
        std::future::ready(replies.keys().all(|id| logged.contains_key(id)))
    })
    .await;
    logged
}

/// When the notifier logged each order's `awaiting payment` event, from its JSON log lines.
fn logged_at(lines: &[Value]) -> HashMap<i64, SystemTime> {
    lines
        .iter()
        .filter(|v| {
            v["message"] == "order event" && v["status"] == Status::AwaitingPayment.as_str()
        })
        .filter_map(|v| {
            let at = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok()?;
            Some((v["order_id"].as_i64()?, at.into()))
        })
        .collect()
}

/// What the outbox table looked like during a run, from PostgreSQL's statistics.
#[derive(Debug, Default)]
pub struct OutboxSample {
    pub max_live: i64,
    pub max_dead: i64,
    pub autovacuums: i64,
}

/// How often the outbox's statistics are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

async fn sample_outbox(
    pool: sqlx::PgPool,
    stop: tokio_util::sync::CancellationToken,
) -> OutboxSample {
    let read = || async {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT n_live_tup, n_dead_tup, autovacuum_count FROM pg_stat_user_tables
             WHERE relname = 'outbox'",
        )
        .fetch_one(&pool)
        .await
        .expect("outbox statistics")
    };
    let (_, _, vacuums_before) = read().await;
    let mut sample = OutboxSample::default();
    while !stop.is_cancelled() {
        let (live, dead, vacuums) = read().await;
        sample.max_live = sample.max_live.max(live);
        sample.max_dead = sample.max_dead.max(dead);
        sample.autovacuums = vacuums - vacuums_before;
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stop.cancelled() => {}
        }
    }
    sample
}

#[cfg(test)]
mod tests {
    /// The stage histograms of a short run, differenced around it, hold exactly its orders'
    /// events: the warm-up's are not in them.
    #[tokio::test]
    async fn stage_figures_are_of_the_measured_orders_only() {
        let run = super::run(2, 50, &super::DEFAULTS).await;
        assert_eq!(run.overall_ms.len(), 100);
        assert_eq!(run.stages_cover_the_measured_events(), Ok(()));
    }
}
