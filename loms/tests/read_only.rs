//! A loms whose database address points at a server that will not take writes (a standby behind
//! a stale address, or a primary demoted under it: every session read-only) never serves a write
//! and says NOT_SERVING; each write is answered Unavailable with nothing changed.

use api::loms::{Item, OrderCreateRequest, OrderPayRequest};
use testkit::app::{settings, TestApp};
use tonic::Code;

#[tokio::test]
async fn a_read_only_database_serves_no_write_and_health_says_not_serving() {
    let url = testkit::db::fresh_database().await;
    let pool = testkit::db::migrated(&url).await;
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let stocks_before = testkit::db::stocks(&pool).await;
    let mut settings = settings(&url, "loms.order-events.unused", false);
    settings.database.migrate_on_start = false;
    let app = TestApp::start(settings, &url).await;

    let mut client = app.client().await;
    let create = client
        .order_create(OrderCreateRequest {
            user_id: 1,
            items: vec![Item {
                sku: 1076963,
                count: 1,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(create.code(), Code::Unavailable, "{create:?}");
    let pay = client
        .order_pay(OrderPayRequest { order_id: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(pay.code(), Code::Unavailable | Code::NotFound),
        "{pay:?}"
    );
    assert_eq!(
        testkit::process::health_status(&app.grpc.to_string()).await,
        Some(false),
        "NOT_SERVING"
    );
    let ready = reqwest::get(format!("http://{}/readyz", app.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(testkit::db::stocks(&pool).await, stocks_before);
    assert_eq!(testkit::db::count(&pool, "orders").await, 0);
    app.stop().await;
}
