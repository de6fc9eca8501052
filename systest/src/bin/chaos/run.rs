//! One scenario's run: its own database, topic, loms replicas and two notifiers, the workload
//! for the scenario's time with its fault injected, and the judgement that follows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use testkit::process::{LomsProcess, NotifierProcess};
use testkit::toxiproxy::{host_port, url_through, Toxiproxy};

use crate::judge::{self, Verdict};
use crate::scenarios::{Fault, Proxied, Scenario, Window};
use crate::workload::{self, Tally};

/// Notifiers of a run: two, so that each holds one of the topic's two partitions.
const NOTIFIERS: usize = 2;

pub struct Run {
    pub name: &'static str,
    pub db: String,
    pub topic: String,
    pub dir: PathBuf,
    pub loms: Vec<LomsProcess>,
    pub notifiers: Vec<NotifierProcess>,
    /// With a scenario that cuts connections: per replica, the proxy between it and PostgreSQL.
    pub pg_proxies: Vec<Toxiproxy>,
    /// Or between it and the broker.
    pub kafka_proxies: Vec<Toxiproxy>,
}

impl Run {
    pub async fn new(name: &'static str, replicas: usize, proxied: Proxied) -> Self {
        let dir = testkit::stack::target_dir("chaos").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the run's folder");
        let db = systest::load_database(&format!("chaos_{name}")).await;
        let topic = testkit::kafka::fresh_topic(&format!("chaos.{name}"), 2).await;
        // The notifiers' dead-letter topic, as kafka-init creates it.
        testkit::kafka::ensure_topic(&format!("{topic}.dlq"), 1).await;
        let mut loms = Vec::new();
        let mut pg_proxies = Vec::new();
        let mut kafka_proxies = Vec::new();
        let kafka_paths = kafka_paths(proxied, replicas);
        for i in 0..replicas {
            let log = dir.join(format!("loms-{i}.log"));
            let url = if proxied == Proxied::Postgres {
                let proxy = Toxiproxy::start().await;
                let listen = proxy.proxy("pg", &host_port(&db)).await;
                pg_proxies.push(proxy);
                url_through(&db, &listen)
            } else {
                db.clone()
            };
            let mut options = systest::loms(&url, &topic, &log);
            if let Some((listener, advertised)) = kafka_paths.get(i) {
                let proxy = Toxiproxy::start().await;
                let listen = proxy.proxy_at("kafka", advertised, listener).await;
                kafka_proxies.push(proxy);
                options = options.env("LOMS_KAFKA__BROKERS", &listen);
            }
            loms.push(options.start().await);
        }
        let group = format!("chaos-{name}-{}", testkit::unique());
        let notifiers = (0..NOTIFIERS)
            .map(|i| systest::notifier(&topic, &group, &dir.join(format!("notifier-{i}.log"))))
            .collect();
        Self {
            name,
            db,
            topic,
            dir,
            loms,
            notifiers,
            pg_proxies,
            kafka_proxies,
        }
    }
}

/// For a scenario whose replicas reach the broker through proxies: per replica, the broker's
/// listener for it and the address that listener advertises, where its proxy listens
/// (`KAFKA_PROXIED_LISTENERS`, as `stack.sh env` prints them).
fn kafka_paths(proxied: Proxied, replicas: usize) -> Vec<(String, String)> {
    if proxied != Proxied::Kafka {
        return Vec::new();
    }
    let ports = std::env::var("KAFKA_PROXIED_LISTENERS")
        .expect("a stack with proxied broker listeners (with-stack.sh makes one)");
    let paths: Vec<(String, String)> = ports
        .split(',')
        .filter_map(|pair| pair.split_once(':'))
        .map(|(listen, advertised)| {
            (
                format!("127.0.0.1:{listen}"),
                format!("127.0.0.1:{advertised}"),
            )
        })
        .collect();
    assert!(
        paths.len() >= replicas,
        "KAFKA_PROXIED_LISTENERS names {} paths for {replicas} replicas",
        paths.len()
    );
    paths
}

/// Runs the workload for `secs` with the scenario's fault injected at its start, then judges.
pub async fn scenario(scenario: &Scenario, secs: u64, quick: bool) -> Value {
    println!("scenario {}", scenario.name);
    let run = Run::new(scenario.name, scenario.replicas, scenario.proxied).await;
    let addresses = Arc::new(Mutex::new(
        run.loms.iter().map(|l| l.grpc.clone()).collect::<Vec<_>>(),
    ));
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload::start(addresses.clone(), tally.clone(), stop.clone());
    let run = Arc::new(tokio::sync::Mutex::new(run));
    let started = Instant::now();
    let window = Arc::new(Mutex::new(Window::default()));
    (scenario.fault)(Fault {
        run: run.clone(),
        tally: tally.clone(),
        addresses,
        quick,
        window: window.clone(),
    })
    .await;
    tokio::time::sleep(Duration::from_secs(secs).saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("the workload");
    let run = Arc::into_inner(run)
        .expect("the fault is done")
        .into_inner();
    let mut report = finish(&run, &tally).await;
    let window = std::mem::take(&mut *window.lock().unwrap());
    if let (Some(begin), Some(end)) = (window.begin, window.end) {
        let during = |t: SystemTime| t >= begin && t <= end;
        let creates: Vec<bool> = tally
            .creates
            .lock()
            .unwrap()
            .iter()
            .filter(|c| during(c.at))
            .map(|c| c.ok)
            .collect();
        let failed = creates.iter().filter(|ok| !**ok).count();
        report["fault_secs"] = json!(end.duration_since(begin).unwrap_or_default().as_secs_f64());
        report["create_error_rate_during_fault"] =
            json!(failed as f64 / creates.len().max(1) as f64);
        report["max_event_wait_ms_during_fault"] =
            json!(judge::longest_wait_ms(&run.dir, begin, end));
    }
    for (key, value) in window.notes {
        report[key] = value;
    }
    println!("  {report}");
    report
}

async fn finish(run: &Run, tally: &Tally) -> Value {
    let committed = judge::committed(&run.db).await;
    let expected: usize = committed.values().map(|h| h.len()).sum();
    let pool = sqlx::PgPool::connect(&run.db).await.expect("connect");
    let drained = testkit::holds_within(testkit::db::DRAIN_PATIENCE, || async {
        let logged: std::collections::HashSet<String> = judge::read_logs(&run.dir)
            .into_iter()
            .flatten()
            .map(|s| s.3)
            .collect();
        testkit::db::outbox_rows(&pool).await == 0 && logged.len() >= expected
    })
    .await;
    if !drained {
        println!("  {}: gave up waiting for the events to drain", run.name);
    }
    let mut verdict = Verdict {
        events_expected: expected,
        ..Default::default()
    };
    // Every change a client was told had happened must have committed.
    for (order, then) in tally.acknowledged.lock().unwrap().iter() {
        let history = committed.get(order);
        let ok = history.is_some_and(|h| then.is_none_or(|t| h.last() == Some(&t)));
        if !ok {
            verdict.lost += 1;
        }
    }
    let topic = judge::read_topic(&run.topic).await;
    judge::judge_streams(&[topic], &committed, &mut verdict, true);
    let mut from_logs = Verdict::default();
    judge::judge_streams(
        &judge::read_logs(&run.dir),
        &committed,
        &mut from_logs,
        false,
    );
    verdict.lost += from_logs.lost;
    verdict.reordered += from_logs.reordered;
    verdict.phantom += from_logs.phantom;
    verdict.out_of_order += from_logs.out_of_order;
    json!({
        "name": run.name,
        "requests_ok": tally.ok.load(Ordering::Relaxed),
        "requests_failed": tally.failed.load(Ordering::Relaxed),
        "requests_outside_contract": tally.bad.load(Ordering::Relaxed),
        "events_expected": verdict.events_expected,
        "lost": verdict.lost,
        "reordered": verdict.reordered,
        "phantom": verdict.phantom,
        "duplicated": verdict.duplicated,
        "out_of_order": verdict.out_of_order,
        "parked": testkit::db::parked_rows(&pool).await,
    })
}
