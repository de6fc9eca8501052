//! `make bench` / `make bench-quick`: throughput, latency and drain of the real system on the
//! local stack (`DATABASE_URL`, `KAFKA_BROKERS` from deploy/local/with-stack.sh), with release
//! builds of loms and notifier run as processes. Prints a table and writes
//! `target/bench/results.json`. `--quick` runs the same measurements, shorter.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use api::loms::{Item, OrderCreateRequest};
use loms::domain::{Line, Status};
use loms::outbox::{Change, Outbox};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use support::{
    create_topic, env, free_port, fresh_database, start_notifier, target_dir, Loms, BENCH_SKUS,
    FIRST_BENCH_SKU,
};

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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn create_request(i: u64) -> OrderCreateRequest {
    let sku = FIRST_BENCH_SKU + (i as i64 % BENCH_SKUS);
    OrderCreateRequest {
        user_id: i as i64 + 1,
        items: vec![Item { sku, count: 1 }],
    }
}

/// 1. OrderCreate at 64 concurrent clients; returns (orders/s, p50 ms, p99 ms, rss loms, rss notifier).
async fn create_throughput(plan: &Plan) -> (f64, f64, f64, f64, f64) {
    let db = fresh_database("bench_create").await;
    let topic = create_topic("bench.create", 2).await;
    let loms = Loms::start(&db, &topic, true, &out_dir().join("loms-create.log")).await;
    let grpc = loms.grpc.clone();
    let notifier = start_notifier(
        &topic,
        "bench-create",
        &out_dir().join("notifier-create.log"),
        None,
    );
    // A few connections shared by the 64 clients, as a service's client pool would.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(
            api::LomsClient::connect(format!("http://{grpc}"))
                .await
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(plan.create_secs);
    let started = Instant::now();
    let workers = (0..64u64).map(|w| {
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
                i += 64;
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
        loms.proc.peak_rss_mb(),
        notifier.peak_rss_mb(),
    )
}

/// pgbench simple-update TPS on the same cluster, same client count and duration.
fn pgbench_tps(secs: u64) -> f64 {
    let url = env("DATABASE_URL");
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
    let init = run(&["-i", "-s", "10", "-q"], "bench_pgbench");
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
            "64",
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
    let db = fresh_database("bench_e2e").await;
    let topic = create_topic("bench.e2e", 2).await;
    let loms = Loms::start(&db, &topic, true, &out_dir().join("loms-e2e.log")).await;
    let grpc = loms.grpc.clone();
    let log = out_dir().join("notifier-e2e.log");
    let _ = std::fs::remove_file(&log);
    let _notifier = start_notifier(&topic, "bench-e2e", &log, None);
    // Let the notifier join its group before the clock starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("partitions assigned")
    {
        assert!(Instant::now() < deadline, "the notifier did not join");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let deadline = Instant::now() + Duration::from_secs(60);
    while handled.len() < replies.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["message"] == "order event" && v["status"] == "awaiting payment" {
                let ts =
                    chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
                handled.insert(v["order_id"].as_i64().unwrap(), ts.into());
            }
        }
    }
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

/// 3. A full outbox drained by the relay of a fresh loms; and the raw producer on the same data.
async fn relay_drain(plan: &Plan) -> (f64, f64, usize) {
    let db = fresh_database("bench_drain").await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let topic = create_topic("bench.drain", 2).await;
    let outbox = Outbox {
        topic: topic.clone(),
        instance: "bench".into(),
        written: Default::default(),
    };
    let lines = [Line {
        sku: FIRST_BENCH_SKU,
        count: 1,
    }];
    let orders: Vec<i64> = (1..=plan.drain_events).collect();
    for chunk in orders.chunks(5_000) {
        let mut tx = pool.begin().await.unwrap();
        let changes: Vec<Change> = chunk
            .iter()
            .map(|&order_id| Change {
                order_id,
                user_id: 1,
                status: Status::New,
                previous: None,
                sequence: 1,
                lines: &lines,
                rpc: "bench",
                reason: None,
            })
            .collect();
        outbox.write(&mut tx, &changes).await.unwrap();
        tx.commit().await.unwrap();
    }
    let payloads: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT key, payload FROM outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let size = payloads.first().map_or(0, |p| p.1.len());

    let started = Instant::now();
    let _loms = Loms::start(&db, &topic, true, &out_dir().join("loms-drain.log")).await;
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = plan.drain_events as f64 / started.elapsed().as_secs_f64();

    let raw_topic = create_topic("bench.raw", 2).await;
    let producer: FutureProducer = loms::relay::producer_config(&loms::config::KafkaSettings {
        brokers: env("KAFKA_BROKERS"),
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
    let topic = create_topic("bench.consume", 2).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", env("KAFKA_BROKERS"))
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for order_id in 1..=plan.consume_events as i64 {
        let event = events_proto::OrderEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            order_id,
            status: "awaiting payment".into(),
            previous_status: "new".into(),
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
    let _notifier = start_notifier(&topic, "bench-consume", &log, Some(&metrics));
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
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = handled().await.unwrap_or(0);
        if n > 0 && started.is_none() {
            started = Some((Instant::now(), n));
        }
        if n >= plan.consume_events {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the notifier did not finish: {n} handled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (t0, n0) = started.unwrap();
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
    let (l50, l95, l99, _) = e2e_latency(&plan, 100).await;
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
