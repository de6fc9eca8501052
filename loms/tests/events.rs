//! Order events through the outbox and the relay, on the real PostgreSQL and Kafka broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use api::loms::*;
use events_proto::OrderEvent;
use testkit::app::TestApp;
use testkit::checks::{by_order, decode};
use testkit::db::wait_for_empty_outbox;
use testkit::kafka;

const SKU_A: i64 = 1076963;
const SKU_BIG: i64 = 139275865; // 65534 units

async fn create(app: &TestApp, user_id: i64, items: &[(i64, u32)]) -> Result<i64, tonic::Status> {
    let items = items
        .iter()
        .map(|&(sku, count)| Item { sku, count })
        .collect();
    app.client()
        .await
        .order_create(OrderCreateRequest { user_id, items })
        .await
        .map(|r| r.get_ref().order_id)
}

fn statuses(events: &[OrderEvent]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|e| (e.previous_status.as_str(), e.status.as_str()))
        .collect()
}

#[tokio::test]
async fn each_rpc_produces_its_events_in_order() {
    let app = TestApp::spawn_with_relay().await;
    let mut c = app.client().await;
    let paid = create(&app, 11, &[(SKU_A, 2), (SKU_BIG, 1)]).await.unwrap();
    c.order_pay(OrderPayRequest { order_id: paid })
        .await
        .unwrap();
    c.order_pay(OrderPayRequest { order_id: paid })
        .await
        .unwrap(); // no-op: no event
    let cancelled = create(&app, 12, &[(SKU_A, 1)]).await.unwrap();
    c.order_cancel(OrderCancelRequest {
        order_id: cancelled,
    })
    .await
    .unwrap();
    c.order_cancel(OrderCancelRequest {
        order_id: cancelled,
    })
    .await
    .unwrap(); // no-op
    let failed_err = create(&app, 13, &[(SKU_A, 60_000)]).await.unwrap_err();
    assert_eq!(failed_err.code(), tonic::Code::FailedPrecondition);
    c.order_info(OrderInfoRequest { order_id: paid })
        .await
        .unwrap();

    let messages =
        kafka::consume_until(&app.topic, Duration::from_secs(60), |m| m.len() >= 8).await;
    let (orders, duplicates) = by_order(&messages);
    assert_eq!((orders.len(), duplicates), (3, 0));
    let failed = *orders.keys().max().unwrap();
    assert_eq!(
        statuses(&orders[&paid]),
        [
            ("", "new"),
            ("new", "awaiting payment"),
            ("awaiting payment", "payed")
        ]
    );
    assert_eq!(
        statuses(&orders[&cancelled]),
        [
            ("", "new"),
            ("new", "awaiting payment"),
            ("awaiting payment", "cancelled")
        ]
    );
    assert_eq!(statuses(&orders[&failed]), [("", "new"), ("new", "failed")]);

    let pay = &orders[&paid][2];
    assert_eq!(pay.user_id, 11);
    assert_eq!(pay.metadata["rpc"], "OrderPay");
    assert!(!pay.metadata["instance"].is_empty());
    assert_eq!(
        pay.items,
        vec![
            events_proto::Item {
                sku: SKU_A,
                count: 2
            },
            events_proto::Item {
                sku: SKU_BIG,
                count: 1
            }
        ]
    );
    assert!(pay.occurred_at.as_ref().unwrap().seconds > 1_700_000_000);
    assert!(
        uuid::Uuid::parse_str(&pay.event_id)
            .unwrap()
            .get_version_num()
            == 7
    );
    let fail = &orders[&failed][1];
    assert!(
        fail.metadata["reason"].contains(&SKU_A.to_string()),
        "{:?}",
        fail.metadata
    );
    assert_eq!(fail.metadata["rpc"], "OrderCreate");

    // Nothing more: the no-ops and OrderInfo sent nothing, and the outbox is empty.
    let all_ids: std::collections::HashSet<_> =
        messages.iter().map(|m| decode(m).event_id).collect();
    assert_eq!(all_ids.len(), 8);
    wait_for_empty_outbox(&app.pool).await;
    assert_eq!(app.metrics.events_published(), 8);
    let relay = app.metrics.relay_status();
    assert!(relay.leader, "{relay:?}");
    assert_eq!(relay.consecutive_failures, 0);
    assert!(relay.last_publish_age_seconds.is_some(), "{relay:?}");
    assert_eq!(
        kafka::consume_all(&app.topic).await.len(),
        8,
        "nothing else on the topic"
    );
    app.stop().await;
}

#[tokio::test]
async fn thousand_orders_spread_evenly_and_keep_their_order() {
    let app = Arc::new(TestApp::spawn_with_relay().await);
    let orders = 1_000;
    let workers = (0..16).map(|w| {
        let app = app.clone();
        tokio::spawn(async move {
            for i in (w..orders).step_by(16) {
                create(&app, i + 1, &[(SKU_BIG, 1)]).await.unwrap();
            }
        })
    });
    for w in futures::future::join_all(workers).await {
        w.unwrap();
    }
    let messages = kafka::consume_until(&app.topic, Duration::from_secs(120), |m| {
        m.len() >= 2 * orders as usize
    })
    .await;
    let (per_order, duplicates) = by_order(&messages);
    assert_eq!((per_order.len(), duplicates), (orders as usize, 0));
    let mut per_partition: HashMap<i32, usize> = HashMap::new();
    for m in &messages {
        *per_partition.entry(m.partition).or_default() += 1;
    }
    let share =
        |p| per_partition.get(&p).copied().unwrap_or_default() as f64 / messages.len() as f64;
    println!(
        "events per partition: {per_partition:?} (shares {:.3} / {:.3})",
        share(0),
        share(1)
    );
    for p in [0, 1] {
        assert!(
            (0.45..=0.55).contains(&share(p)),
            "partition {p} has {:.3} of the events",
            share(p)
        );
    }
    Arc::into_inner(app).unwrap().stop().await;
}

#[tokio::test]
async fn a_failed_transaction_sends_nothing() {
    let app = TestApp::spawn_with_relay().await;
    let outbox = testkit::db::outbox(&app.topic, "test");
    let lines = [loms::domain::Line {
        sku: SKU_A,
        count: 1,
    }];
    let change = |order_id| loms::outbox::Change {
        order_id,
        user_id: 1,
        status: loms::domain::Status::New,
        previous: None,
        sequence: 1,
        lines: &lines,
        facts: &[],
        reason: None,
    };
    // The event row is written, then the transaction fails and rolls back.
    let mut tx = app.pool.begin().await.unwrap();
    testkit::db::write_events(&mut tx, &outbox, &[change(1_000_001)]).await;
    sqlx::query("SELECT 1/0")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    drop(tx);
    // Then a real order, whose events must be all the topic holds.
    let id = create(&app, 5, &[(SKU_A, 1)]).await.unwrap();
    kafka::consume_until(&app.topic, Duration::from_secs(60), |m| m.len() >= 2).await;
    wait_for_empty_outbox(&app.pool).await;
    let messages = kafka::consume_all(&app.topic).await;
    assert_eq!(messages.len(), 2);
    assert!(
        messages.iter().all(|m| decode(m).order_id == id),
        "a rolled-back event was sent"
    );
    assert_eq!(app.count("outbox").await, 0);
    app.stop().await;
}

/// Readers of the released schema read what loms writes today: every message a real order
/// produced decodes with a decoder built from the committed snapshot, to the same values.
#[tokio::test]
async fn events_decode_with_the_released_schema() {
    use prost_reflect::{DynamicMessage, Value};
    let released = &build_support::schema::RELEASED[1];
    let snapshot = std::fs::read_to_string(testkit::stack::root().join(released.snapshot)).unwrap();
    let pool = build_support::schema::from_snapshot(&snapshot).unwrap();
    let desc = pool
        .get_message_by_name(events_proto::MESSAGE_TYPE)
        .unwrap();

    let app = TestApp::spawn_with_relay().await;
    let id = create(&app, 9, &[(SKU_A, 2)]).await.unwrap();
    let messages =
        kafka::consume_until(&app.topic, Duration::from_secs(60), |m| m.len() >= 2).await;
    for m in &messages {
        let today = decode(m);
        let old = DynamicMessage::decode(desc.clone(), m.payload.as_slice()).unwrap();
        let field = |name: &str| old.get_field_by_name(name).unwrap().into_owned();
        assert_eq!(field("event_id"), Value::String(today.event_id.clone()));
        assert_eq!(field("order_id"), Value::I64(id));
        assert_eq!(field("status"), Value::String(today.status.clone()));
        assert_eq!(field("sequence"), Value::I64(today.sequence));
        let items = field("items");
        let items = items.as_list().unwrap();
        assert_eq!(items.len(), 1);
        let item = items[0].as_message().unwrap();
        assert_eq!(item.get_field_by_name("count").unwrap().as_u32(), Some(2));
        assert!(
            old.unknown_fields().next().is_none(),
            "nothing unknown to the release"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_row_written_before_trace_context_still_publishes() {
    // The service as deployed, with its telemetry: its relay's publication makes a span.
    let db = testkit::db::fresh_database().await;
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let _loms = testkit::process::LomsOptions::new(&db, &topic)
        .start()
        .await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let event = OrderEvent {
        event_id: "01a21a8c-36a3-7551-a427-f48849edebe8".into(),
        order_id: 4242,
        status: "new".into(),
        sequence: 1,
        user_id: 7,
        ..Default::default()
    };
    // Its headers as rows had them then: no traceparent, no tracestate.
    let headers = serde_json::json!({
        events_proto::headers::EVENT_ID: event.event_id,
        events_proto::headers::MESSAGE_TYPE: events_proto::MESSAGE_TYPE,
        events_proto::headers::CONTENT_TYPE: events_proto::CONTENT_TYPE,
    });
    sqlx::query("INSERT INTO outbox (topic, key, payload, headers) VALUES ($1, $2, $3, $4)")
        .bind(&topic)
        .bind(event.order_id.to_string())
        .bind(event.encode_to_bytes())
        .bind(headers)
        .execute(&pool)
        .await
        .unwrap();
    // No wake-up from a transaction of loms's own: the relay finds it by its periodic read.

    let messages = kafka::consume_until(&topic, Duration::from_secs(60), |m| !m.is_empty()).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].event(), Some(event.clone()));
    assert_eq!(
        messages[0].headers[events_proto::headers::EVENT_ID],
        event.event_id
    );
    // The relay's publication starts a trace of its own for it: version, trace id, span id, flags.
    let traceparent = &messages[0].headers["traceparent"];
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [2, 32, 16, 2],
        "{traceparent}"
    );
    assert!(parts[1].chars().any(|c| c != '0'), "{traceparent}");
    wait_for_empty_outbox(&pool).await;
}

/// The relay's produce requests are counted from librdkafka's statistics, for the bench and the
/// dashboards.
#[tokio::test]
async fn produce_requests_are_counted() {
    let db = testkit::db::fresh_database().await;
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let mut settings = testkit::app::settings(&db, &topic, true);
    settings.kafka.properties.insert(
        "statistics.interval.ms".into(),
        secrecy::SecretString::from("200"),
    );
    let app = TestApp::start(settings, &db).await;
    create(&app, 1, &[(SKU_A, 1)]).await.unwrap();
    wait_for_empty_outbox(&app.pool).await;
    testkit::eventually(
        "the produce requests are counted",
        Duration::from_secs(30),
        || async {
            app.metrics
                .render()
                .lines()
                .find_map(|l| l.strip_prefix("loms_kafka_produce_requests_total "))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        },
    )
    .await;
    app.stop().await;
}
