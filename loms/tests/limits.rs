//! Requests are bounded: lines per order, message and body sizes, event size, requests in
//! flight. Each refusal is a clear error in the contract's shape, with nothing changed. On a real
//! PostgreSQL.

use api::loms::*;
use testkit::app::{settings, TestApp};
use tonic::Code;

const SKU_A: i64 = 1076963;

fn items(n: i64) -> Vec<Item> {
    (1..=n).map(|sku| Item { sku, count: 1 }).collect()
}

async fn create(app: &TestApp, items: Vec<Item>) -> Result<i64, tonic::Status> {
    app.client()
        .await
        .order_create(OrderCreateRequest { user_id: 1, items })
        .await
        .map(|r| r.get_ref().order_id)
}

/// Nothing was written: no order, no event, the stock as seeded.
async fn unchanged(app: &TestApp, stocks: &[(i64, i64, i64)]) {
    assert_eq!(app.count("orders").await, 0);
    assert_eq!(app.count("outbox").await, 0);
    assert_eq!(app.stocks().await, stocks);
}

#[tokio::test]
async fn oversized_orders_are_refused_with_nothing_changed() {
    let app = TestApp::spawn().await;
    let stocks = app.stocks().await;

    let too_many = create(&app, items(1_001)).await.unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert_eq!(
        too_many.message(),
        "items: at most 1000 lines per order, got 1001"
    );

    // 150,000 distinct skus: about 1.5 MB, refused before it is decoded.
    let huge = create(&app, items(150_000)).await.unwrap_err();
    assert_ne!(huge.code(), Code::Ok);
    assert!(huge.message().len() < 300, "{}", huge.message());

    // The same through the gateway: refused unread, in the contract's error shape.
    let body = serde_json::json!({
        "userId": "1",
        "items": (1..=150_000).map(|sku| serde_json::json!({"sku": sku, "count": 1})).collect::<Vec<_>>(),
    });
    let reply = reqwest::Client::new()
        .post(app.url("/order/create"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_client_error(), "{}", reply.status());
    let error: serde_json::Value = reply.json().await.unwrap();
    assert!(
        error["code"].is_number() && error["message"].is_string(),
        "{error}"
    );
    assert!(error["message"].as_str().unwrap().len() < 300);

    // 1,000 lines of unknown skus fit every limit: a failed order, its message bounded.
    let failed = create(&app, items(1_000)).await.unwrap_err();
    assert_eq!(failed.code(), Code::FailedPrecondition);
    assert!(failed.message().len() < 300, "{}", failed.message());
    assert_eq!(app.count("orders").await, 1);
    sqlx::query("DELETE FROM outbox")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM orders")
        .execute(&app.pool)
        .await
        .unwrap();
    unchanged(&app, &stocks).await;
    app.stop().await;
}

#[tokio::test]
async fn an_order_whose_events_would_exceed_the_event_limit_is_refused() {
    let db = testkit::db::fresh_database().await;
    let mut s = settings(&db, "loms.order-events.unused", false);
    s.kafka.max_event_bytes = 2_000;
    let app = TestApp::start(s, &db).await;
    let stocks = app.stocks().await;
    let refused = create(&app, items(300)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("order too large") && refused.message().contains("2000"),
        "{}",
        refused.message()
    );
    unchanged(&app, &stocks).await;
    // A small order still fits.
    create(
        &app,
        vec![Item {
            sku: SKU_A,
            count: 1,
        }],
    )
    .await
    .unwrap();
    app.stop().await;
}

/// With one request allowed in flight, a call made while another holds the slot is refused as
/// ResourceExhausted at once, in the contract's shape on both transports; the one in flight
/// ends when the database gives up on it (its statement timeout), with nothing changed.
#[tokio::test]
async fn a_request_beyond_the_concurrency_limit_is_refused_at_once() {
    let db = testkit::db::fresh_database().await;
    let mut s = settings(&db, "loms.order-events.unused", false);
    s.max_concurrent_requests = 1;
    s.database.statement_timeout_ms = 3_000;
    let app = TestApp::start(s, &db).await;
    let stocks = app.stocks().await;
    // A stock row locked elsewhere: an OrderCreate for it waits, holding the only slot.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM stocks WHERE sku = $1 FOR UPDATE")
        .bind(SKU_A)
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut client = app.client().await;
    let waiting = tokio::spawn(async move {
        client
            .order_create(OrderCreateRequest {
                user_id: 1,
                items: vec![Item {
                    sku: SKU_A,
                    count: 1,
                }],
            })
            .await
    });
    let stock_info = || async {
        app.client()
            .await
            .stocks_info(StocksInfoRequest { sku: SKU_A })
            .await
    };
    testkit::eventually(
        "a call is refused while the slot is taken",
        std::time::Duration::from_secs(30),
        || async {
            stock_info()
                .await
                .is_err_and(|e| e.code() == Code::ResourceExhausted)
        },
    )
    .await;
    let reply = reqwest::get(app.url(&format!("/stock/info?sku={SKU_A}")))
        .await
        .unwrap();
    assert_eq!(reply.status(), 429);
    let error: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(error["code"], Code::ResourceExhausted as i32);
    let timed_out = waiting.await.unwrap().unwrap_err();
    assert_eq!(timed_out.code(), Code::Unavailable, "{timed_out:?}");
    lock.rollback().await.unwrap();
    unchanged(&app, &stocks).await;
    assert!(stock_info().await.is_ok(), "the slot is free again");
    app.stop().await;
}
