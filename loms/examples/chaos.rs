//! `make chaos`: injects real faults into the real stack under a steady workload and judges the
//! outcome against what committed: lost, reordered, phantom and duplicated events, on the topic
//! and in the notifiers' logs. Writes `target/chaos/report.json`; exits non-zero if anything
//! was lost, reordered or invented. `--quick` shortens every scenario.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::loms::{Item, OrderCancelRequest, OrderCreateRequest, OrderPayRequest};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use serde_json::{json, Value};
use support::{
    create_topic, env, fresh_database, relay_leader, stack, start_notifier, target_dir, Loms, Proc,
    FIRST_BENCH_SKU,
};
use tonic::Code;

/// One scenario's environment: a database, a topic, loms replicas, two notifiers.
struct Run {
    name: &'static str,
    db: String,
    topic: String,
    group: String,
    dir: PathBuf,
    loms: Vec<Loms>,
    notifiers: Vec<Proc>,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Replies outside the contract (a 5xx other than Unavailable, an unexpected code).
    bad: AtomicU64,
    /// Orders whose OrderCreate returned OK: (order id, whether pay or cancel then returned OK and which).
    acknowledged: Mutex<Vec<(i64, Option<&'static str>)>>,
}

impl Run {
    async fn new(name: &'static str, replicas: usize) -> Self {
        let dir = target_dir("chaos").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = fresh_database(&format!("chaos_{name}")).await;
        let topic = create_topic(&format!("chaos.{name}"), 2).await;
        support_dlq(&topic).await;
        let mut loms = Vec::new();
        for i in 0..replicas {
            loms.push(Loms::start(&db, &topic, true, &dir.join(format!("loms-{i}.log"))).await);
        }
        let group = format!("chaos-{name}-{}", uuid::Uuid::now_v7().simple());
        let notifiers = (0..2)
            .map(|i| start_notifier(&topic, &group, &dir.join(format!("notifier-{i}.log")), None))
            .collect();
        Self {
            name,
            db,
            topic,
            group,
            dir,
            loms,
            notifiers,
        }
    }

    fn grpc_addresses(&self) -> Vec<String> {
        self.loms.iter().map(|l| l.grpc.clone()).collect()
    }
}

async fn support_dlq(topic: &str) {
    // The notifier's dead-letter topic is named after the topic; create it as kafka-init would.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", env("KAFKA_BROKERS"))
            .create()
            .unwrap();
    let dlq = format!("{topic}.dlq");
    let new = rdkafka::admin::NewTopic::new(&dlq, 1, rdkafka::admin::TopicReplication::Fixed(1));
    let _ = admin
        .create_topics(&[new], &rdkafka::admin::AdminOptions::new())
        .await;
}

/// Drives ~200 orders per second against `addresses` (shared, so a scenario can swap replicas)
/// until `stop`: each order is created, then paid or cancelled.
fn workload(
    addresses: Arc<Mutex<Vec<String>>>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(5));
        let mut i: u64 = 0;
        let mut tasks = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            i += 1;
            let address = {
                let a = addresses.lock().unwrap();
                a[i as usize % a.len()].clone()
            };
            let tally = tally.clone();
            tasks.push(tokio::spawn(
                async move { one_order(&address, i, &tally).await },
            ));
        }
        futures::future::join_all(tasks).await;
    })
}

fn judge(code: Code, tally: &Tally) {
    match code {
        Code::Unavailable
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::FailedPrecondition => {
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            tally.bad.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn one_order(address: &str, i: u64, tally: &Tally) {
    let Ok(Ok(mut client)) = tokio::time::timeout(
        Duration::from_secs(5),
        api::LomsClient::connect(format!("http://{address}")),
    )
    .await
    else {
        tally.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let sku = FIRST_BENCH_SKU + (i as i64 % 100);
    let request = OrderCreateRequest {
        user_id: i as i64,
        items: vec![Item { sku, count: 1 }],
    };
    let order_id = match client.order_create(request).await {
        Ok(r) => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            r.get_ref().order_id
        }
        Err(s) => return judge(s.code(), tally),
    };
    let index = {
        let mut a = tally.acknowledged.lock().unwrap();
        a.push((order_id, None));
        a.len() - 1
    };
    let (name, result) = if i.is_multiple_of(2) {
        (
            "payed",
            client
                .order_pay(OrderPayRequest { order_id })
                .await
                .map(drop),
        )
    } else {
        (
            "cancelled",
            client
                .order_cancel(OrderCancelRequest { order_id })
                .await
                .map(drop),
        )
    };
    match result {
        Ok(()) => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            tally.acknowledged.lock().unwrap()[index].1 = Some(name);
        }
        Err(s) => judge(s.code(), tally),
    }
}

#[derive(Debug, Default)]
struct Verdict {
    events_expected: usize,
    lost: usize,
    reordered: usize,
    phantom: usize,
    duplicated: usize,
}

/// (order id, sequence, status, event id) of an event.
type Seen = (i64, i64, String, String);

fn read_topic(topic: &str) -> Vec<Seen> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env("KAFKA_BROKERS"))
        .create()
        .unwrap();
    let total: i64 = (0..2)
        .map(|p| {
            probe
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(l, h)| h - l)
                .unwrap()
        })
        .sum();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", env("KAFKA_BROKERS"))
        .set(
            "group.id",
            format!("chaos-reader-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut per_partition: BTreeMap<i32, Vec<Seen>> = BTreeMap::new();
    let rt = tokio::runtime::Handle::current();
    let mut read = 0;
    while read < total {
        let m = tokio::task::block_in_place(|| {
            rt.block_on(tokio::time::timeout(
                Duration::from_secs(60),
                consumer.recv(),
            ))
        })
        .expect("reading the topic timed out")
        .unwrap();
        read += 1;
        if let Ok(e) = events_proto::OrderEvent::decode_from(m.payload().unwrap_or_default()) {
            per_partition
                .entry(m.partition())
                .or_default()
                .push((e.order_id, e.sequence, e.status, e.event_id));
        }
    }
    per_partition.into_values().flatten().collect()
}

/// Events the notifiers logged, in log order per file.
fn read_logs(dir: &std::path::Path) -> Vec<Vec<Seen>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("notifier-")
        {
            continue;
        }
        let mut seen = Vec::new();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["message"] == "order event"
                || v["message"] == "duplicate order event, already logged"
            {
                let event_id = v["event_id"].as_str().unwrap_or_default().to_string();
                let status = v["status"].as_str().unwrap_or_default().to_string();
                // Duplicates are logged without their sequence: take it from the first sighting.
                seen.push((
                    v["order_id"].as_i64().unwrap_or(0),
                    v["sequence"].as_i64().unwrap_or(-1),
                    status,
                    event_id,
                ));
            }
        }
        files.push(seen);
    }
    files
}

/// Judges a sequence of sightings (the topic, or a notifier's log) against what committed.
fn judge_stream(
    streams: &[Vec<Seen>],
    committed: &HashMap<i64, Vec<String>>,
    verdict: &mut Verdict,
    count_duplicates: bool,
) {
    let mut first_seen: HashMap<String, (i64, i64)> = HashMap::new();
    let mut sightings = 0;
    for stream in streams {
        let mut last_sequence: HashMap<i64, i64> = HashMap::new();
        for (order, sequence, status, event_id) in stream {
            sightings += 1;
            let (order, sequence) = *first_seen
                .entry(event_id.clone())
                .or_insert((*order, *sequence));
            match committed.get(&order) {
                Some(statuses)
                    if sequence >= 1
                        && (sequence as usize) <= statuses.len()
                        && statuses[sequence as usize - 1] == *status => {}
                _ => verdict.phantom += 1,
            }
            // Order within one stream: a first sighting of a lower sequence after a higher one.
            let last = last_sequence.entry(order).or_insert(0);
            if sequence < *last && !stream_saw_before(stream, order, sequence, event_id) {
                verdict.reordered += 1;
            }
            *last = (*last).max(sequence);
        }
    }
    let distinct: HashSet<(i64, i64)> = first_seen.values().copied().collect();
    for (order, statuses) in committed {
        for sequence in 1..=statuses.len() as i64 {
            if !distinct.contains(&(*order, sequence)) {
                verdict.lost += 1;
            }
        }
    }
    if count_duplicates {
        verdict.duplicated += sightings - first_seen.len();
    }
}

/// Whether this very event was already sighted earlier in the stream (a redelivery, not a reordering).
fn stream_saw_before(stream: &[Seen], order: i64, sequence: i64, event_id: &str) -> bool {
    let first = stream.iter().position(|s| s.3 == event_id);
    let later_higher = stream.iter().position(|s| s.0 == order && s.1 > sequence);
    matches!((first, later_higher), (Some(f), Some(h)) if f < h)
}

/// What committed, from the database: per order, the status of each event in sequence.
async fn committed(db: &str) -> HashMap<i64, Vec<String>> {
    let pool = sqlx::PgPool::connect(db).await.unwrap();
    let rows: Vec<(i64, String, i64)> = sqlx::query_as("SELECT id, status, event_seq FROM orders")
        .fetch_all(&pool)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, status, seq)| {
            let history = match (status.as_str(), seq) {
                ("failed", 2) => vec!["new", "failed"],
                (_, 2) => vec!["new", "awaiting payment"],
                ("payed", 3) => vec!["new", "awaiting payment", "payed"],
                ("cancelled", 3) => vec!["new", "awaiting payment", "cancelled"],
                _ => panic!("order {id}: status {status} with {seq} events"),
            };
            (id, history.into_iter().map(String::from).collect())
        })
        .collect()
}

async fn wait_drained(run: &Run, expected: usize) {
    let pool = sqlx::PgPool::connect(&run.db).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        let logged: HashSet<String> = read_logs(&run.dir)
            .into_iter()
            .flatten()
            .map(|s| s.3)
            .collect();
        if n == 0 && logged.len() >= expected {
            return;
        }
        if Instant::now() > deadline {
            println!(
                "  {}: gave up waiting: outbox {n}, logged {} of {expected}",
                run.name,
                logged.len()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn finish(run: Run, tally: &Tally) -> Value {
    let committed = committed(&run.db).await;
    let expected: usize = committed.values().map(Vec::len).sum();
    wait_drained(&run, expected).await;
    let mut verdict = Verdict {
        events_expected: expected,
        ..Default::default()
    };
    // Every change a client was told had happened must have committed.
    for (order, then) in tally.acknowledged.lock().unwrap().iter() {
        let history = committed.get(order);
        let ok = history.is_some_and(|h| then.is_none_or(|t| h.last().is_some_and(|s| s == t)));
        if !ok {
            verdict.lost += 1;
        }
    }
    let topic = read_topic(&run.topic);
    judge_stream(&[topic], &committed, &mut verdict, true);
    let mut from_logs = Verdict::default();
    judge_stream(&read_logs(&run.dir), &committed, &mut from_logs, false);
    verdict.lost += from_logs.lost;
    verdict.reordered += from_logs.reordered;
    verdict.phantom += from_logs.phantom;
    let report = json!({
        "name": run.name,
        "requests_ok": tally.ok.load(Ordering::Relaxed),
        "requests_failed": tally.failed.load(Ordering::Relaxed),
        "requests_outside_contract": tally.bad.load(Ordering::Relaxed),
        "events_expected": verdict.events_expected,
        "lost": verdict.lost,
        "reordered": verdict.reordered,
        "phantom": verdict.phantom,
        "duplicated": verdict.duplicated,
    });
    println!("  {report}");
    report
}

/// Runs the workload for `secs`, calling `fault` once at its start with the run.
async fn scenario<F, Fut>(name: &'static str, replicas: usize, secs: u64, fault: F) -> Value
where
    F: FnOnce(Arc<Mutex<Run>>, Arc<Mutex<Vec<String>>>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    println!("scenario {name}");
    let run = Run::new(name, replicas).await;
    let addresses = Arc::new(Mutex::new(run.grpc_addresses()));
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(addresses.clone(), tally.clone(), stop.clone());
    let run = Arc::new(Mutex::new(run));
    let started = Instant::now();
    fault(run.clone(), addresses).await;
    let rest = Duration::from_secs(secs).saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let run = Arc::into_inner(run).unwrap().into_inner().unwrap();
    let mut report = finish(run, &tally).await;
    report["requests_outside_contract"] = json!(tally.bad.load(Ordering::Relaxed));
    report
}

async fn pause(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

/// Restarts loms replica `i` on the same ports.
async fn restart_loms(run: &Arc<Mutex<Run>>, i: usize) {
    let (db, topic, log, grpc, http) = {
        let r = run.lock().unwrap();
        (
            r.db.clone(),
            r.topic.clone(),
            r.dir.join(format!("loms-{i}.log")),
            r.loms[i].grpc.clone(),
            r.loms[i].http.clone(),
        )
    };
    let fresh = Loms::start_on(&db, &topic, true, &log, grpc, http).await;
    let old = std::mem::replace(&mut run.lock().unwrap().loms[i], fresh);
    drop(old);
}

async fn malformed_requests(count: usize) -> Value {
    println!("scenario malformed_requests");
    let run = Run::new("malformed_requests", 1).await;
    let pool = sqlx::PgPool::connect(&run.db).await.unwrap();
    let snapshot = || async {
        let stocks: Vec<(i64, i64, i64)> =
            sqlx::query_as("SELECT sku, total_count, reserved FROM stocks ORDER BY sku")
                .fetch_all(&pool)
                .await
                .unwrap();
        let (orders,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders")
            .fetch_one(&pool)
            .await
            .unwrap();
        (stocks, orders)
    };
    let before = snapshot().await;
    let http = format!("http://{}", run.loms[0].http);
    let client = reqwest::Client::new();
    let mut grpc = api::LomsClient::connect(format!("http://{}", run.loms[0].grpc))
        .await
        .unwrap();
    let (mut ok, mut bad) = (0u64, 0u64);
    let mut examples: Vec<String> = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let bodies = [
        "",
        "{",
        "[]",
        "null",
        "\"x\"",
        "{\"userId\": \"abc\"}",
        "{\"userId\": -1, \"items\": []}",
        "{\"userId\": 1, \"items\": [{\"sku\": 1, \"count\": -1}]}",
        "{\"userId\": 1, \"items\": [{\"sku\": \"1e99\", \"count\": 1}]}",
        "{\"userId\": 1, \"items\": [{\"sku\": 1, \"count\": 99999999999}]}",
        "{\"orderId\": {}}",
        "{\"items\": \"many\"}",
    ];
    for i in 0..count {
        let r = next();
        // The server refuses a body over its limit without reading it all; the client may then
        // see the connection close before its upload ends: refused, not an error of the server.
        let oversize = i % 4 == 0 && r % 7 == 0;
        let outcome = match i % 4 {
            0 => {
                let body = if oversize {
                    "x".repeat(200_000 + (r % 1000) as usize)
                } else {
                    bodies[r as usize % bodies.len()].to_string()
                };
                let path = ["/order/create", "/order/pay", "/order/cancel"][r as usize % 3];
                client
                    .post(format!("{http}{path}"))
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
            1 => {
                let q = [
                    "orderId=abc",
                    "orderId=",
                    "orderId=-5",
                    "orderId=99999999999999999999",
                    "sku=%zz",
                    "sku=0",
                    "",
                ][r as usize % 7];
                let path = ["/order/info", "/stock/info"][r as usize % 2];
                client
                    .get(format!("{http}{path}?{q}"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
            2 => {
                let items = (0..(r % 3))
                    .map(|k| Item {
                        sku: -(k as i64) * (r as i64 % 5),
                        count: (r % 2) as u32,
                    })
                    .collect();
                let user_id = if r % 3 == 0 { 0 } else { -(r as i64 % 1000) };
                Ok(
                    match grpc
                        .order_create(OrderCreateRequest { user_id, items })
                        .await
                    {
                        Ok(_) => 200,
                        Err(s) => loms::error::http_status(s.code()),
                    },
                )
            }
            _ => {
                let order_id = -((r % 1_000_000) as i64);
                Ok(match grpc.order_pay(OrderPayRequest { order_id }).await {
                    Ok(_) => 200,
                    Err(s) => loms::error::http_status(s.code()),
                })
            }
        };
        match outcome {
            Ok(status) if status < 500 || status == 503 => ok += 1,
            Err(e) if oversize && (e.is_request() || e.is_body()) => ok += 1,
            other => {
                bad += 1;
                if examples.len() < 5 {
                    examples.push(format!("request {i}: {other:?}"));
                }
            }
        }
    }
    let mut run = run;
    let alive = run.loms[0].proc.alive();
    let unchanged = snapshot().await == before;
    let report = json!({
        "name": "malformed_requests",
        "requests_ok": ok,
        "requests_outside_contract": bad + u64::from(!alive) + u64::from(!unchanged),
        "events_expected": 0, "lost": 0, "reordered": 0,
        "phantom": if unchanged { 0 } else { 1 },
        "duplicated": 0,
        "loms_alive": alive,
        "database_unchanged": unchanged,
        "outside_contract_examples": examples,
    });
    println!("  {report}");
    report
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (secs, outage) = if quick { (25, 8) } else { (60, 30) };
    let mut scenarios = Vec::new();

    scenarios.push(
        scenario("broker_outage", 1, secs, |_, _| async move {
            pause(3).await;
            stack("kafka-stop");
            pause(outage).await;
            stack("kafka-start");
        })
        .await,
    );
    scenarios.push(
        scenario("loms_kill", 1, secs, |run, _| async move {
            for _ in 0..5 {
                pause(if quick { 2 } else { 5 }).await;
                run.lock().unwrap().loms[0].proc.kill_now();
                restart_loms(&run, 0).await;
            }
        })
        .await,
    );
    scenarios.push(
        scenario("notifier_kill", 1, secs, |run, _| async move {
            for k in 0..5 {
                pause(if quick { 2 } else { 5 }).await;
                let mut r = run.lock().unwrap();
                let i = k % 2;
                r.notifiers[i].kill_now();
                let log = r.dir.join(format!("notifier-{i}.log"));
                let fresh = start_notifier(&r.topic, &r.group, &log, None);
                let old = std::mem::replace(&mut r.notifiers[i], fresh);
                drop(old);
            }
        })
        .await,
    );
    scenarios.push(
        scenario("postgres_outage", 1, secs, |_, _| async move {
            pause(3).await;
            stack("pg-stop");
            pause(10).await;
            stack("pg-start");
        })
        .await,
    );
    scenarios.push(
        scenario("relay_leader_kill", 2, secs, |run, addresses| async move {
            pause(if quick { 5 } else { 15 }).await;
            let leader = {
                let mut found = None;
                for _ in 0..100 {
                    let (a, b) = {
                        let r = run.lock().unwrap();
                        (r.loms[0].http.clone(), r.loms[1].http.clone())
                    };
                    for (i, http) in [a, b].into_iter().enumerate() {
                        if relay_leader(&http).await {
                            found = Some(i);
                        }
                    }
                    if found.is_some() {
                        break;
                    }
                    pause(1).await;
                }
                found.expect("a relay leader")
            };
            let survivor = run.lock().unwrap().loms[1 - leader].grpc.clone();
            *addresses.lock().unwrap() = vec![survivor];
            run.lock().unwrap().loms[leader].proc.kill_now();
        })
        .await,
    );
    scenarios.push(malformed_requests(if quick { 2_000 } else { 10_000 }).await);

    let path = target_dir("chaos").join("report.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({ "scenarios": scenarios })).unwrap(),
    )
    .unwrap();
    println!();
    println!(
        "| scenario | requests ok | events expected | lost | reordered | phantom | duplicated |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut failed = false;
    for s in &scenarios {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            s["name"].as_str().unwrap(),
            s["requests_ok"],
            s["events_expected"],
            s["lost"],
            s["reordered"],
            s["phantom"],
            s["duplicated"]
        );
        failed |= ["lost", "reordered", "phantom", "requests_outside_contract"]
            .iter()
            .any(|k| s[*k].as_u64().unwrap_or(0) > 0);
    }
    println!("report: {}", path.display());
    if failed {
        eprintln!(
            "chaos: something was lost, reordered, invented, or answered outside the contract"
        );
        std::process::exit(1);
    }
}
