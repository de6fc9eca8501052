//! The contract of loms, through gRPC and through the HTTP gateway, on a real PostgreSQL.

use std::sync::Arc;

use api::loms::*;
use serde_json::{json, Value};
use testkit::app::TestApp;
use tonic::Code;

const SKU_A: i64 = 1076963; // 300 total, 35 reserved
const SKU_B: i64 = 2956315; // 300 total, 30 reserved
const SKU_OVERSOLD: i64 = 139818428; // 100 total, 101 reserved
const SKU_UNKNOWN: i64 = 404;

/// One call of the API, made through either transport.
#[derive(Debug, Clone)]
enum Call {
    Create(i64, Vec<(i64, u32)>),
    Info(i64),
    Pay(i64),
    Cancel(i64),
    Stock(i64),
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Grpc,
    Http,
}

/// The reply as JSON (the Protobuf JSON mapping for both transports), or the error code and message.
async fn call(app: &TestApp, transport: Transport, call: &Call) -> Result<Value, (Code, String)> {
    match transport {
        Transport::Grpc => grpc(app, call).await,
        Transport::Http => http(app, call).await,
    }
}

async fn grpc(app: &TestApp, call: &Call) -> Result<Value, (Code, String)> {
    let mut c = app.client().await;
    let json = |v: &dyn erased::Ser| v.to_json();
    let result = match call.clone() {
        Call::Create(user_id, items) => c
            .order_create(OrderCreateRequest {
                user_id,
                items: items
                    .into_iter()
                    .map(|(sku, count)| Item { sku, count })
                    .collect(),
            })
            .await
            .map(|r| json(r.get_ref())),
        Call::Info(order_id) => c
            .order_info(OrderInfoRequest { order_id })
            .await
            .map(|r| json(r.get_ref())),
        Call::Pay(order_id) => c
            .order_pay(OrderPayRequest { order_id })
            .await
            .map(|r| json(r.get_ref())),
        Call::Cancel(order_id) => c
            .order_cancel(OrderCancelRequest { order_id })
            .await
            .map(|r| json(r.get_ref())),
        Call::Stock(sku) => c
            .stocks_info(StocksInfoRequest { sku })
            .await
            .map(|r| json(r.get_ref())),
    };
    result.map_err(|s| (s.code(), s.message().to_string()))
}

mod erased {
    pub trait Ser {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}

async fn http(app: &TestApp, call: &Call) -> Result<Value, (Code, String)> {
    let client = reqwest::Client::new();
    let request = match call {
        Call::Create(user_id, items) => client.post(app.url("/order/create")).json(&json!({
            "userId": user_id.to_string(),
            "items": items.iter().map(|(sku, count)| json!({"sku": sku.to_string(), "count": count})).collect::<Vec<_>>(),
        })),
        Call::Info(id) => client.get(app.url(&format!("/order/info?orderId={id}"))),
        Call::Pay(id) => client.post(app.url("/order/pay")).json(&json!({ "orderId": id.to_string() })),
        Call::Cancel(id) => client.post(app.url("/order/cancel")).json(&json!({ "orderId": id })),
        Call::Stock(sku) => client.get(app.url(&format!("/stock/info?sku={sku}"))),
    };
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON reply");
    if status == 200 {
        return Ok(body);
    }
    let code = Code::from(body["code"].as_i64().expect("error has a code") as i32);
    assert_eq!(
        status,
        loms::http::http_status(code),
        "HTTP status of {code:?}: {body}"
    );
    assert!(body["details"].is_array(), "{body}");
    Err((
        code,
        body["message"]
            .as_str()
            .expect("error has a message")
            .to_string(),
    ))
}

fn order_id(reply: &Value) -> i64 {
    reply["orderId"]
        .as_str()
        .expect("orderId is a string")
        .parse()
        .unwrap()
}

async fn available(app: &TestApp, sku: i64) -> i64 {
    grpc(app, &Call::Stock(sku)).await.unwrap()["count"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn error_table_through_both_transports() {
    let app = TestApp::spawn().await;
    for transport in [Transport::Grpc, Transport::Http] {
        // An order of each status to act on.
        let awaiting = order_id(
            &call(&app, transport, &Call::Create(1, vec![(SKU_A, 1)]))
                .await
                .unwrap(),
        );
        let payed = order_id(
            &call(&app, transport, &Call::Create(1, vec![(SKU_A, 1)]))
                .await
                .unwrap(),
        );
        call(&app, transport, &Call::Pay(payed)).await.unwrap();
        let cancelled = order_id(
            &call(&app, transport, &Call::Create(1, vec![(SKU_A, 1)]))
                .await
                .unwrap(),
        );
        call(&app, transport, &Call::Cancel(cancelled))
            .await
            .unwrap();

        let stocks = app.stocks().await;
        let orders = app.count("orders").await;
        let invalid = [
            (Call::Create(0, vec![(SKU_A, 1)]), "user_id"),
            (Call::Create(-1, vec![(SKU_A, 1)]), "user_id"),
            (Call::Create(1, vec![]), "items"),
            (Call::Create(1, vec![(0, 1)]), "sku"),
            (Call::Create(1, vec![(SKU_A, 0)]), "count"),
            (Call::Info(0), "order_id"),
            (Call::Pay(-5), "order_id"),
            (Call::Cancel(0), "order_id"),
            (Call::Stock(0), "sku"),
            (Call::Stock(-1), "sku"),
        ];
        for (c, field) in &invalid {
            let (code, message) = call(&app, transport, c).await.unwrap_err();
            assert_eq!(code, Code::InvalidArgument, "{transport:?} {c:?}");
            assert!(
                message.contains(field),
                "{transport:?} {c:?}: {message:?} names {field}"
            );
        }
        let refused = [
            (Call::Info(999_999), Code::NotFound),
            (Call::Pay(999_999), Code::NotFound),
            (Call::Cancel(999_999), Code::NotFound),
            (Call::Stock(SKU_UNKNOWN), Code::NotFound),
            (Call::Cancel(payed), Code::FailedPrecondition),
            (Call::Pay(cancelled), Code::FailedPrecondition),
        ];
        for (c, expected) in &refused {
            assert_eq!(
                call(&app, transport, c).await.unwrap_err().0,
                *expected,
                "{transport:?} {c:?}"
            );
        }
        // Idempotent repeats are OK and change nothing.
        call(&app, transport, &Call::Pay(payed)).await.unwrap();
        call(&app, transport, &Call::Cancel(cancelled))
            .await
            .unwrap();
        assert_eq!(
            app.stocks().await,
            stocks,
            "{transport:?}: refused calls changed the stock"
        );
        assert_eq!(
            app.count("orders").await,
            orders,
            "{transport:?}: refused calls created orders"
        );

        // Not enough stock, or no stock row: FailedPrecondition, a failed order, stock unchanged.
        for items in [
            vec![(SKU_A, 1), (SKU_B, 10_000)],
            vec![(SKU_A, 1), (SKU_UNKNOWN, 1)],
        ] {
            let (code, message) = call(&app, transport, &Call::Create(7, items))
                .await
                .unwrap_err();
            assert_eq!(code, Code::FailedPrecondition, "{transport:?}");
            let failed: i64 = message
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .expect("message names the order");
            let info = call(&app, transport, &Call::Info(failed)).await.unwrap();
            assert_eq!(info["status"], "failed");
            assert_eq!(
                app.stocks().await,
                stocks,
                "{transport:?}: a failed order changed the stock"
            );
            assert_eq!(
                call(&app, transport, &Call::Pay(failed))
                    .await
                    .unwrap_err()
                    .0,
                Code::FailedPrecondition
            );
            assert_eq!(
                call(&app, transport, &Call::Cancel(failed))
                    .await
                    .unwrap_err()
                    .0,
                Code::FailedPrecondition
            );
        }
        let _ = awaiting;
    }
    app.stop().await;
}

#[tokio::test]
async fn happy_paths_keep_the_stock_arithmetic() {
    let app = TestApp::spawn().await;
    for transport in [Transport::Grpc, Transport::Http] {
        let (a0, b0) = (available(&app, SKU_A).await, available(&app, SKU_B).await);
        let id = order_id(
            &call(
                &app,
                transport,
                &Call::Create(42, vec![(SKU_B, 2), (SKU_A, 3), (SKU_A, 1)]),
            )
            .await
            .unwrap(),
        );
        assert_eq!(
            (available(&app, SKU_A).await, available(&app, SKU_B).await),
            (a0 - 4, b0 - 2)
        );
        let info = call(&app, transport, &Call::Info(id)).await.unwrap();
        assert_eq!(
            info,
            json!({"status": "awaiting payment", "userId": "42", "items": [
                {"sku": SKU_A.to_string(), "count": 4}, {"sku": SKU_B.to_string(), "count": 2}]}),
            "items sorted by sku, duplicates summed"
        );
        let before_pay = app.stocks().await;
        call(&app, transport, &Call::Pay(id)).await.unwrap();
        let after_pay = app.stocks().await;
        for ((sku, total, reserved), (_, total0, reserved0)) in after_pay.iter().zip(&before_pay) {
            let n = match *sku {
                SKU_A => 4,
                SKU_B => 2,
                _ => 0,
            };
            assert_eq!(
                (*total, *reserved),
                (total0 - n, reserved0 - n),
                "sku {sku} after pay"
            );
        }
        assert_eq!(
            available(&app, SKU_A).await,
            a0 - 4,
            "paying keeps availability"
        );
        assert_eq!(
            call(&app, transport, &Call::Info(id)).await.unwrap()["status"],
            "payed"
        );

        let id = order_id(
            &call(&app, transport, &Call::Create(42, vec![(SKU_A, 5)]))
                .await
                .unwrap(),
        );
        assert_eq!(available(&app, SKU_A).await, a0 - 9);
        call(&app, transport, &Call::Cancel(id)).await.unwrap();
        assert_eq!(
            available(&app, SKU_A).await,
            a0 - 4,
            "cancel releases the reservation"
        );
        assert_eq!(
            call(&app, transport, &Call::Info(id)).await.unwrap()["status"],
            "cancelled"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn oversold_seed_row_answers_zero_and_cannot_be_ordered() {
    let app = TestApp::spawn().await;
    let reply = reqwest::get(app.url(&format!("/stock/info?sku={SKU_OVERSOLD}")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(reply, r#"{"count":0}"#, "a default value is written too");
    let (code, _) = grpc(&app, &Call::Create(1, vec![(SKU_OVERSOLD, 1)]))
        .await
        .unwrap_err();
    assert_eq!(code, Code::FailedPrecondition);
    app.stop().await;
}

#[tokio::test]
async fn hundred_concurrent_creates_reserve_exactly_hundred() {
    let app = Arc::new(TestApp::spawn().await);
    let before = available(&app, SKU_A).await;
    let calls = (0..100).map(|i| {
        let app = app.clone();
        tokio::spawn(async move { grpc(&app, &Call::Create(i + 1, vec![(SKU_A, 1)])).await })
    });
    let results = futures::future::join_all(calls).await;
    let ok = results
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(ok, 100);
    assert_eq!(available(&app, SKU_A).await, before - 100);

    // Past the stock: exactly what is left is sold, never more.
    let left = available(&app, SKU_A).await;
    let calls = (0..left + 20).map(|_| {
        let app = app.clone();
        tokio::spawn(async move { grpc(&app, &Call::Create(1, vec![(SKU_A, 1)])).await })
    });
    let results = futures::future::join_all(calls).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count() as i64;
    assert_eq!(ok, left);
    assert_eq!(available(&app, SKU_A).await, 0);
    Arc::into_inner(app).unwrap().stop().await;
}

#[tokio::test]
async fn pay_racing_cancel_has_one_winner() {
    let app = Arc::new(TestApp::spawn().await);
    let (total0, reserved0) = {
        let s = app.stocks().await;
        let row = s.iter().find(|r| r.0 == SKU_B).unwrap();
        (row.1, row.2)
    };
    let (mut payed, mut cancelled) = (0, 0);
    for _ in 0..30 {
        let id = order_id(
            &grpc(&app, &Call::Create(3, vec![(SKU_B, 2)]))
                .await
                .unwrap(),
        );
        let (pay_call, cancel_call) = (Call::Pay(id), Call::Cancel(id));
        let (pay, cancel) = tokio::join!(grpc(&app, &pay_call), grpc(&app, &cancel_call));
        let status = grpc(&app, &Call::Info(id)).await.unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string();
        match status.as_str() {
            "payed" => {
                payed += 1;
                assert!(pay.is_ok());
                assert_eq!(cancel.unwrap_err().0, Code::FailedPrecondition);
            }
            "cancelled" => {
                cancelled += 1;
                assert!(cancel.is_ok());
                assert_eq!(pay.unwrap_err().0, Code::FailedPrecondition);
            }
            other => panic!("order {id} ended {other}"),
        }
    }
    let s = app.stocks().await;
    let row = s.iter().find(|r| r.0 == SKU_B).unwrap();
    assert_eq!(
        (row.1, row.2),
        (total0 - 2 * payed, reserved0),
        "payed {payed}, cancelled {cancelled}"
    );
    Arc::into_inner(app).unwrap().stop().await;
}

#[tokio::test]
async fn json_mapping_of_the_gateway() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: &'static str| {
        client
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // 64-bit ids as numbers or strings in, strings out; unknown fields ignored.
    let reply = post(
        "/order/create",
        r#"{"userId": 42, "items": [{"sku": 1076963, "count": 1}], "comment": "x"}"#,
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    let id = body["orderId"]
        .as_str()
        .expect("orderId written as a string")
        .to_string();
    let reply = client
        .post(app.url("/order/pay"))
        .body(format!(r#"{{"orderId": {id}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (reply.status().as_u16(), reply.text().await.unwrap()),
        (200, "{}".to_string())
    );

    let stocks = app.stocks().await;
    let orders = app.count("orders").await;
    for bad in [
        r#"{"userId": "42", "items": [{"sku": "1076963", "count": -3}]}"#,
        r#"{"userId": "42", "items": [{"sku": "1076963", "count": 3}"#,
        r#"{"userId": "forty-two", "items": [{"sku": "1076963", "count": 3}]}"#,
        r#"{"userId": "42", "items": [{"sku": "99999999999999999999", "count": 3}]}"#,
        r#"{"userId": "42", "items": [{"sku": "1", "count": 4294967296}]}"#,
        "",
        "[]",
    ] {
        let reply = post("/order/create", bad).await.unwrap();
        assert_eq!(reply.status(), 400, "{bad}");
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["code"], 3, "{bad}: {body}");
    }
    let huge = format!(
        r#"{{"userId": "42", "items": [{}]}}"#,
        vec![r#"{"sku": "1", "count": 1}"#; 20_000].join(",")
    );
    let reply = client
        .post(app.url("/order/create"))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400, "a body over the limit is refused");
    assert_eq!(
        reply.headers()["connection"],
        "close",
        "its unread rest must not be taken for a request"
    );
    let reply = client
        .get(app.url("/order/info?orderId=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    assert_eq!(app.stocks().await, stocks);
    assert_eq!(app.count("orders").await, orders);

    let reply = client.get(app.url("/no/such/route")).send().await.unwrap();
    assert_eq!(reply.status(), 404);
    assert_eq!(reply.json::<Value>().await.unwrap()["code"], 5);
    app.stop().await;
}

#[tokio::test]
async fn seed_migration_matches_the_stock_data() {
    let app = TestApp::spawn().await;
    let data: Vec<Value> = serde_json::from_str(include_str!("../../data/stock-data.json"))
        .expect("stock-data.json is JSON");
    let mut expected: Vec<(i64, i64, i64)> = data
        .iter()
        .map(|r| {
            (
                r["sku"].as_i64().unwrap(),
                r["total_count"].as_i64().unwrap(),
                r["reserved"].as_i64().unwrap(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(app.stocks().await, expected);
    // Migrations run again at start-up and by `loms migrate`: harmless.
    loms::database::migrate(&app.pool).await.unwrap();
    assert_eq!(app.stocks().await, expected);
    app.stop().await;
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let app = TestApp::spawn().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "loms.Loms".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        reply.get_ref().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    app.stop().await;
}

/// Metrics and probes are on the admin listener only; the public port serves the API alone.
#[tokio::test]
async fn metrics_and_probes_are_on_the_admin_listener_only() {
    let app = TestApp::spawn().await;
    let get = |address: std::net::SocketAddr, path: &'static str| async move {
        let reply = reqwest::get(format!("http://{address}{path}"))
            .await
            .unwrap();
        (reply.status().as_u16(), reply.text().await.unwrap())
    };
    for path in ["/metrics", "/readyz", "/livez"] {
        assert_eq!(get(app.http, path).await.0, 404, "{path} on the API port");
        assert_eq!(
            get(app.admin, path).await.0,
            200,
            "{path} on the admin port"
        );
    }
    let (_, metrics) = get(app.admin, "/metrics").await;
    for line in [
        "loms_db_pool_max_connections 32",
        "loms_db_pool_connections_idle ",
        "loms_db_pool_connections_in_use ",
        "loms_relay_consecutive_failures 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let (_, ready) = get(app.admin, "/readyz").await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["relay"]["leader"], false, "this app's relay is off");
    app.stop().await;
}
