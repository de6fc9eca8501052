//! One notifier on a pre-filled topic, logging to a file: events handled per second.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use loms::domain::Status;
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::kafka::fresh_topic;
use testkit::process::{free_port, NotifierOptions};

/// How long the notifier may take to handle the whole topic.
const CONSUME_PATIENCE: Duration = Duration::from_secs(300);

/// 4. One notifier on a pre-filled topic, logging to a file.
pub async fn run(events: usize) -> f64 {
    let topic = fresh_topic("bench.consume", 2).await;
    fill(&topic, events).await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let log = crate::out_dir().join("notifier-consume.log");
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
    let started = Mutex::new(None);
    testkit::eventually(
        "the notifier handles every event",
        CONSUME_PATIENCE,
        || async {
            let n = handled().await.unwrap_or(0);
            let mut started = started.lock().unwrap();
            if n > 0 && started.is_none() {
                *started = Some((Instant::now(), n));
            }
            n >= events
        },
    )
    .await;
    let (t0, n0) = started
        .into_inner()
        .unwrap()
        .expect("a first handled event");
    (events - n0) as f64 / t0.elapsed().as_secs_f64()
}

/// Writes `events` events, one order each, and waits for their acknowledgements.
async fn fill(topic: &str, events: usize) {
    let producer: FutureProducer = testkit::stack::kafka_client()
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for order_id in 1..=events as i64 {
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
        let (key, payload) = (order_id.to_string(), event.encode_to_bytes());
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}
