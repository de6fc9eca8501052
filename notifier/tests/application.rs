//! The notifier in the test's own process, through `startup::Application` as `main` runs it:
//! what it handles, commits and tells on its admin listener.

use std::time::Duration;

use rdkafka::Offset;
use serde_json::Value;
use testkit::eventually;
use testkit::kafka;
use testkit::notifier_app::{settings, TestNotifier};

const PATIENCE: Duration = Duration::from_secs(90);

fn group() -> String {
    format!("notifier-test-{}", testkit::unique())
}

/// Every event is handled once, `/readyz` says why it is ready, `/metrics` counts them, and a
/// clean stop commits exactly what was handled.
#[tokio::test]
async fn in_process_it_handles_commits_and_tells_its_state() {
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let group = group();
    let ids = kafka::produce_events(&topic, 1..101).await;
    let mut settings = settings(&topic, &group);
    // Statistics (lag, broker up, fetch requests) often, so that the test need not wait for them.
    settings.kafka.properties.insert(
        "statistics.interval.ms".into(),
        secrecy::SecretString::from("200"),
    );
    let notifier = TestNotifier::start(settings).await;
    eventually("every event is handled", PATIENCE, || async {
        notifier.metrics.handled_count() == ids.len() as u64
    })
    .await;
    eventually("ready in its group", PATIENCE, || async {
        notifier.admin_get("/readyz").await.0 == 200
    })
    .await;
    let (_, body) = notifier.admin_get("/readyz").await;
    let body: Value = serde_json::from_str(&body).expect("/readyz is JSON");
    assert_eq!(
        body,
        serde_json::json!({"ready": true, "group_member": true, "broker_up": true})
    );
    let (status, text) = notifier.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("notifier_events_handled_total 100"), "{text}");
    assert_eq!(notifier.admin_get("/livez").await.0, 200);
    eventually("its fetch requests are counted", PATIENCE, || async {
        let (_, text) = notifier.admin_get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix("notifier_kafka_fetch_requests_total "))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
    .await;

    notifier.stop().await.expect("a clean stop");
    let committed: i64 = kafka::committed_offsets(&topic, &group, 2)
        .values()
        .map(|offset| match offset {
            Offset::Offset(next) => *next,
            other => panic!("partition without a committed offset: {other:?}"),
        })
        .sum();
    assert_eq!(committed, ids.len() as i64, "committed what was handled");
}

/// Without a broker the admin listener answers, and `/readyz` is 503 with its reasons.
#[tokio::test]
async fn readyz_is_503_without_a_broker() {
    let mut settings = settings("loms.order-events.nowhere", &group());
    settings.kafka.brokers = testkit::process::free_address();
    let notifier = TestNotifier::start(settings).await;
    assert_eq!(notifier.admin_get("/livez").await.0, 200);
    let (status, body) = notifier.admin_get("/readyz").await;
    assert_eq!(status, 503);
    let body: Value = serde_json::from_str(&body).expect("/readyz is JSON");
    assert_eq!(body["ready"], false);
    assert_eq!(body["broker_up"], false);
}

/// An admin address that cannot be bound fails the start, naming it.
#[tokio::test]
async fn an_admin_address_in_use_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let mut settings = settings("loms.order-events.test", &group());
    settings.admin_addr = Some(address.clone());
    let error = notifier::startup::Application::build(settings)
        .await
        .err()
        .expect("the start fails");
    let message = format!("{error:#}");
    assert!(
        message.contains("admin listener") && message.contains(&address),
        "{message}"
    );
}
