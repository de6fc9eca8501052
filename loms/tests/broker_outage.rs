//! The broker stopped while orders are made: every call succeeds, and once the broker is back
//! every event arrives, in order within each order. Alone in its test binary, since it stops the
//! stack's broker.

use std::sync::Arc;
use std::time::Duration;

use api::loms::*;
use testkit::app::TestApp;
use testkit::checks::by_order;
use testkit::db::committed_events;
use testkit::kafka;
use testkit::stack::stack;

#[tokio::test]
async fn events_wait_out_a_broker_outage() {
    let app = Arc::new(TestApp::spawn_with_relay().await);
    stack("kafka-stop");

    let workers = (0..8).map(|w| {
        let app = app.clone();
        tokio::spawn(async move {
            let mut c = app.client().await;
            for i in (w..200).step_by(8) {
                let items = vec![Item {
                    sku: 139275865,
                    count: 1,
                }];
                let id = c
                    .order_create(OrderCreateRequest {
                        user_id: i + 1,
                        items,
                    })
                    .await
                    .expect("create")
                    .get_ref()
                    .order_id;
                if i % 2 == 0 {
                    c.order_pay(OrderPayRequest { order_id: id })
                        .await
                        .expect("pay");
                } else {
                    c.order_cancel(OrderCancelRequest { order_id: id })
                        .await
                        .expect("cancel");
                }
            }
        })
    });
    for w in futures::future::join_all(workers).await {
        w.unwrap();
    }
    assert_eq!(
        app.count("outbox").await,
        600,
        "every event waits in the outbox"
    );

    stack("kafka-start");
    let messages =
        kafka::consume_until(&app.topic, Duration::from_secs(180), |m| m.len() >= 600).await;
    let (orders, duplicates) = by_order(&messages);
    println!(
        "after the outage: {} messages, {duplicates} duplicates",
        messages.len()
    );
    let expected = committed_events(&app.pool).await;
    assert_eq!(orders.len(), 200);
    for (id, events) in &orders {
        assert_eq!(events.len(), 3, "order {id}");
        assert_eq!(expected[id], 3);
    }
    Arc::into_inner(app).unwrap().stop().await;
}
