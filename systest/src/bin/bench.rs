//! `make bench` / `make bench-quick`: throughput, latency and drain of the real system on the
//! local stack (`DATABASE_URL`, `KAFKA_BROKERS` from deploy/local/with-stack.sh), with release
//! builds of loms and notifier run as processes. Prints a table and writes
//! `target/bench/results.json`. `--quick` runs the same measurements, shorter.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use api::loms::{Item, OrderCreateRequest};
use loms::domain::Status;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use systest::{load_database, load_sku, percentile, FIRST_LOAD_SKU};
use testkit::kafka::fresh_topic;
use testkit::process::{free_port, LomsProcess, NotifierOptions};
use testkit::stack::{brokers, database_url, target_dir};

/// Concurrent clients of the OrderCreate run (and pgbench's), sharing a few connections as a
/// service's client pool would.
const CLIENTS: u64 = 64;
const CONNECTIONS: usize = 8;
/// The low rate of the end-to-end run: the floor the pipeline adds, far from saturation.
const LOW_RATE: u64 = 100;
/// How long the notifiers may take to log the last events of a run.
const LOG_PATIENCE: Duration = Duration::from_secs(60);
const CONSUME_PATIENCE: Duration = Duration::from_secs(300);
/// pgbench's scale factor.
const PGBENCH_SCALE: &str = "10";

struct Plan {
    create_secs: u64,
    e2e_secs: u64,
    e2e_rate: u64,
    drain_events: i64,
    consume_events: usize,
}

fn out_dir() -> std::path::PathBuf {
    target_dir("bench")
}

fn create_request(i: u64) -> OrderCreateRequest {
    let sku = load_sku(i);
    OrderCreateRequest {
        user_id: i as i64 + 1,
        items: vec![Item { sku, count: 1 }],
    }
}

/// A loms (with its relay) on a database and topic of its own for the run `name`.
async fn system(name: &str) -> (LomsProcess, String) {
    let db = load_database(&format!("bench_{name}")).await;
    let topic = fresh_topic(&format!("bench.{name}"), 2).await;
    let log = out_dir().join(format!("loms-{name}.log"));
    (systest::loms(&db, &topic, &log).start().await, topic)
}

/// 1. OrderCreate at 64 concurrent clients; returns (orders/s, p50 ms, p99 ms, rss loms, rss notifier).
async fn create_throughput(plan: &Plan) -> (f64, f64, f64, f64, f64) {
    let (loms, topic) = system("create").await;
    let grpc = loms.grpc.clone();
    let notifier = systest::notifier(
        &topic,
        "bench-create",
        &out_dir().join("notifier-create.log"),
    );
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(
            api::LomsClient::connect(format!("http://{grpc}"))
                .await
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(plan.create_secs);
    let started = Instant::now();
    let workers = (0..CLIENTS).map(|w| {
        let mut client = channels[w as usize % channels.len()].clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = w;
            while Instant::now() < deadline {
                let t = Instant::now();
                client
                    .order_create(create_request(i))
                    .await
                    .expect("OrderCreate");
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                i += CLIENTS;
            }
            latencies
        })
    });
    let mut latencies: Vec<f64> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let rate = latencies.len() as f64 / elapsed;
    (
        rate,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        loms.process.peak_rss_mb(),
        notifier.process.peak_rss_mb(),
    )
}

/// pgbench simple-update TPS on the same cluster, same client count and duration.
fn pgbench_tps(secs: u64) -> f64 {
    let url = database_url();
    let (base, _) = url.rsplit_once('/').unwrap();
    let (host_port, user) = {
        let rest = base.trim_start_matches("postgres://");
        let (user, host_port) = rest.split_once('@').unwrap();
        (host_port.to_string(), user.to_string())
    };
    let (host, port) = host_port.split_once(':').unwrap();
    let bin = "/usr/lib/postgresql/15/bin/pgbench";
    let run = |args: &[&str], db: &str| {
        Command::new(bin)
            .args(["-h", host, "-p", port, "-U", &user])
            .args(args)
            .arg(db)
            .output()
            .expect("run pgbench")
    };
    let psql = Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-U",
            &user,
            "-d",
            "postgres",
            "-c",
            "DROP DATABASE IF EXISTS bench_pgbench",
            "-c",
            "CREATE DATABASE bench_pgbench",
        ])
        .output()
        .unwrap();
    assert!(
        psql.status.success(),
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    let init = run(&["-i", "-s", PGBENCH_SCALE, "-q"], "bench_pgbench");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = run(
        &[
            "-b",
            "simple-update",
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &secs.to_string(),
        ],
        "bench_pgbench",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output: {text}"))
}

/// 2. OrderCreate reply → the notifier's log line of that order's `awaiting payment` event.
async fn e2e_latency(plan: &Plan, rate: u64) -> (f64, f64, f64, usize) {
    let (loms, topic) = system("e2e").await;
    let grpc = loms.grpc.clone();
    let log = out_dir().join("notifier-e2e.log");
    let _ = std::fs::remove_file(&log);
    let notifier = systest::notifier(&topic, "bench-e2e", &log);
    // The clock starts once the notifier has joined its group.
    notifier.joined().await;
    let client = api::LomsClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let total = plan.e2e_secs * rate;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut calls = Vec::new();
    for i in 0..total {
        ticker.tick().await;
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            let id = client
                .order_create(create_request(i))
                .await
                .expect("OrderCreate")
                .get_ref()
                .order_id;
            (id, SystemTime::now())
        }));
    }
    let replies: HashMap<i64, SystemTime> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut handled: HashMap<i64, SystemTime> = HashMap::new();
    testkit::eventually("the notifier logs every order", LOG_PATIENCE, || {
        handled = logged_at(&notifier.process.json_lines());
        std::future::ready(handled.len() >= replies.len())
    })
    .await;
    let mut latencies: Vec<f64> = replies
        .iter()
        .filter_map(|(id, reply)| {
            handled.get(id).map(|h| {
                h.duration_since(*reply)
                    .map_or(0.0, |d| d.as_secs_f64() * 1e3)
            })
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies.len(),
    )
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

/// 3. A full outbox drained by the relay of a fresh loms; and the raw producer on the same data.
async fn relay_drain(plan: &Plan) -> (f64, f64, usize) {
    let db = load_database("bench_drain").await;
    let pool = testkit::db::migrated(&db).await;
    let topic = fresh_topic("bench.drain", 2).await;
    testkit::db::fill_outbox(
        &pool,
        &topic,
        1..=plan.drain_events,
        FIRST_LOAD_SKU,
        &[Status::New],
    )
    .await;
    let payloads: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT key, payload FROM outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let size = payloads.first().map_or(0, |p| p.1.len());

    let started = Instant::now();
    let _loms = systest::loms(&db, &topic, &out_dir().join("loms-drain.log"))
        .start()
        .await;
    testkit::db::wait_for_empty_outbox(&pool).await;
    let drain = plan.drain_events as f64 / started.elapsed().as_secs_f64();

    let raw_topic = fresh_topic("bench.raw", 2).await;
    let producer: FutureProducer = loms::relay::producer_config(&loms::config::KafkaSettings {
        brokers: brokers(),
        ..Default::default()
    })
    .create()
    .unwrap();
    let started = Instant::now();
    let deliveries: Vec<_> = payloads
        .iter()
        .map(|(key, payload)| {
            producer
                .send_result(FutureRecord::to(&raw_topic).key(key).payload(payload))
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .collect();
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let raw = payloads.len() as f64 / started.elapsed().as_secs_f64();
    (drain, raw, size)
}

/// 4. One notifier on a pre-filled topic, logging to a file.
async fn notifier_consumption(plan: &Plan) -> f64 {
    let topic = fresh_topic("bench.consume", 2).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for order_id in 1..=plan.consume_events as i64 {
        let event = events_proto::OrderEvent {
            event_id: testkit::unique(),
            order_id,
            status: Status::AwaitingPayment.as_str().into(),
            previous_status: Status::New.as_str().into(),
            occurred_at: Some(SystemTime::now().into()),
            sequence: 2,
            user_id: 1,
            items: vec![events_proto::Item { sku: 1, count: 1 }],
            metadata: [("rpc".to_string(), "OrderCreate".to_string())].into(),
        };
        let key = order_id.to_string();
        deliveries.push(
            producer
                .send_result(
                    FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&event.encode_to_bytes()),
                )
                .map_err(|(e, _)| e)
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let metrics = format!("127.0.0.1:{}", free_port());
    let log = out_dir().join("notifier-consume.log");
    let _ = std::fs::remove_file(&log);
    let _notifier = NotifierOptions::new(&topic, "bench-consume")
        .log(&log)
        .metrics(&metrics)
        .start();
    let handled = || async {
        let text = reqwest::get(format!("http://{metrics}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("notifier_events_handled_total "))?
            .parse::<usize>()
            .ok()
    };
    // The clock starts at the first handled event: group join is not consumption.
    let started = std::sync::Mutex::new(None);
    testkit::eventually(
        "the notifier handles every event",
        CONSUME_PATIENCE,
        || async {
            let n = handled().await.unwrap_or(0);
            let mut started = started.lock().unwrap();
            if n > 0 && started.is_none() {
                *started = Some((Instant::now(), n));
            }
            n >= plan.consume_events
        },
    )
    .await;
    let (t0, n0) = started
        .into_inner()
        .unwrap()
        .expect("a first handled event");
    (plan.consume_events - n0) as f64 / t0.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            create_secs: 8,
            e2e_secs: 6,
            e2e_rate: 500,
            drain_events: 30_000,
            consume_events: 50_000,
        }
    } else {
        Plan {
            create_secs: 30,
            e2e_secs: 20,
            e2e_rate: 500,
            drain_events: 100_000,
            consume_events: 200_000,
        }
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "bench ({}) on {cores} cores",
        if quick { "quick" } else { "full" }
    );

    let (create_rate, p50, p99, rss_loms, rss_notifier) = create_throughput(&plan).await;
    println!("1. OrderCreate, 64 clients, {} s: {create_rate:.0} orders/s, p50 {p50:.2} ms, p99 {p99:.2} ms", plan.create_secs);
    let pgbench = pgbench_tps(plan.create_secs);
    println!(
        "   pgbench simple-update, 64 clients, {} s: {pgbench:.0} tps",
        plan.create_secs
    );
    let (e50, e95, e99, measured) = e2e_latency(&plan, plan.e2e_rate).await;
    println!("2. end to end at {} orders/s, {measured} orders: p50 {e50:.2} ms, p95 {e95:.2} ms, p99 {e99:.2} ms", plan.e2e_rate);
    // The same path far from saturation: the floor the pipeline itself adds.
    let (l50, l95, l99, _) = e2e_latency(&plan, LOW_RATE).await;
    println!("   end to end at 100 orders/s: p50 {l50:.2} ms, p95 {l95:.2} ms, p99 {l99:.2} ms");
    let (drain, raw, size) = relay_drain(&plan).await;
    println!(
        "3. relay drain of {} events ({size} B): {drain:.0} events/s; raw producer {raw:.0} msgs/s",
        plan.drain_events
    );
    let consume = notifier_consumption(&plan).await;
    println!(
        "4. notifier on {} events: {consume:.0} events/s",
        plan.consume_events
    );
    println!("5. peak RSS during 1: loms {rss_loms:.1} MB, notifier {rss_notifier:.1} MB");

    let results = json!({
        "mode": if quick { "quick" } else { "full" },
        "cores": cores,
        "create_throughput_per_s": create_rate,
        "create_latency_ms": {"p50": p50, "p99": p99},
        "pgbench_tps": pgbench,
        "create_vs_pgbench": create_rate / pgbench,
        "e2e_latency_ms": {"p50": e50, "p95": e95, "p99": e99},
        "e2e_orders_measured": measured,
        "e2e_latency_ms_at_100_per_s": {"p50": l50, "p95": l95, "p99": l99},
        "relay_drain_per_s": drain,
        "raw_producer_per_s": raw,
        "relay_vs_raw": drain / raw,
        "event_size_bytes": size,
        "notifier_consume_per_s": consume,
        "rss_mb": {"loms": rss_loms, "notifier": rss_notifier},
    });
    let path = out_dir().join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    println!();
    println!("| measure | figure | goal |");
    println!("|---|---|---|");
    println!("| OrderCreate throughput (64 clients) | {create_rate:.0}/s, {:.2} of pgbench {pgbench:.0} tps | ratio >= 0.5 |", create_rate / pgbench);
    println!("| end-to-end latency at {}/s | p50 {e50:.1} / p95 {e95:.1} / p99 {e99:.1} ms | p99 <= 20 ms |", plan.e2e_rate);
    println!(
        "| relay drain | {drain:.0} events/s ({:.2} of raw producer {raw:.0}/s) | >= 30,000/s |",
        drain / raw
    );
    println!("| notifier consumption | {consume:.0} events/s | >= 50,000/s |");
    println!("| peak RSS | loms {rss_loms:.1} MB, notifier {rss_notifier:.1} MB | <= 64 MB each |");
    println!("results: {}", path.display());
}
