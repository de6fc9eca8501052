//! The malformed-requests scenario: thousands of malformed gRPC and HTTP requests must all be
//! answered within the contract (no 5xx but 503), crash nothing and change nothing.

use api::loms::{Item, OrderCreateRequest, OrderPayRequest};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::run::Run;

/// Malformed JSON bodies for the POST routes.
const BODIES: [&str; 12] = [
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
/// Malformed query strings for the GET routes.
const QUERIES: [&str; 7] = [
    "orderId=abc",
    "orderId=",
    "orderId=-5",
    "orderId=99999999999999999999",
    "sku=%zz",
    "sku=0",
    "",
];
/// Bytes of an oversized body: far over the gateway's limit.
const OVERSIZE_BYTES: usize = 200_000;
/// Failures quoted in the report.
const EXAMPLES: usize = 5;

/// A repeatable stream of pseudo-random numbers (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The stock and the number of orders: what a refused request must leave as it was.
async fn snapshot(pool: &PgPool) -> (Vec<(i64, i64, i64)>, i64) {
    (
        testkit::db::stocks(pool).await,
        testkit::db::count(pool, "orders").await,
    )
}

struct Clients {
    http: String,
    web: reqwest::Client,
    grpc: api::LomsClient<tonic::transport::Channel>,
}

/// What the server answered, as an HTTP status, or a transport error.
type Outcome = Result<u16, reqwest::Error>;

async fn malformed_post(c: &Clients, r: u64, oversize: bool) -> Outcome {
    let body = if oversize {
        "x".repeat(OVERSIZE_BYTES + (r % 1000) as usize)
    } else {
        BODIES[r as usize % BODIES.len()].to_string()
    };
    let path = ["/order/create", "/order/pay", "/order/cancel"][r as usize % 3];
    let reply = c
        .web
        .post(format!("{}{path}", c.http))
        .body(body)
        .send()
        .await?;
    Ok(reply.status().as_u16())
}

async fn malformed_get(c: &Clients, r: u64) -> Outcome {
    let query = QUERIES[r as usize % QUERIES.len()];
    let path = ["/order/info", "/stock/info"][r as usize % 2];
    let reply = c
        .web
        .get(format!("{}{path}?{query}", c.http))
        .send()
        .await?;
    Ok(reply.status().as_u16())
}

async fn malformed_create(c: &mut Clients, r: u64) -> Outcome {
    let items = (0..(r % 3))
        .map(|k| Item {
            sku: -(k as i64) * (r as i64 % 5),
            count: (r % 2) as u32,
        })
        .collect();
    let user_id = if r.is_multiple_of(3) {
        0
    } else {
        -(r as i64 % 1000)
    };
    let reply = c
        .grpc
        .order_create(OrderCreateRequest { user_id, items })
        .await;
    Ok(reply.map_or_else(|s| loms::http::http_status(s.code()), |_| 200))
}

async fn malformed_pay(c: &mut Clients, r: u64) -> Outcome {
    let order_id = -((r % 1_000_000) as i64);
    let reply = c.grpc.order_pay(OrderPayRequest { order_id }).await;
    Ok(reply.map_or_else(|s| loms::http::http_status(s.code()), |_| 200))
}

pub async fn scenario(count: usize) -> Value {
    println!("scenario malformed_requests");
    let mut run = Run::new("malformed_requests", 1, crate::scenarios::Proxied::No).await;
    let pool = PgPool::connect(&run.db).await.expect("connect");
    let before = snapshot(&pool).await;
    let mut clients = Clients {
        http: format!("http://{}", run.loms[0].http),
        web: reqwest::Client::new(),
        grpc: run.loms[0].client().await.expect("gRPC connect"),
    };
    let (mut ok, mut bad) = (0u64, 0u64);
    let mut examples: Vec<String> = Vec::new();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in 0..count {
        let r = rng.next();
        // The server refuses a body over its limit without reading it all; the client may then
        // see the connection close before its upload ends: refused, not an error of the server.
        let oversize = i.is_multiple_of(4) && r.is_multiple_of(7);
        let outcome = match i % 4 {
            0 => malformed_post(&clients, r, oversize).await,
            1 => malformed_get(&clients, r).await,
            2 => malformed_create(&mut clients, r).await,
            _ => malformed_pay(&mut clients, r).await,
        };
        match outcome {
            Ok(status) if status < 500 || status == 503 => ok += 1,
            Err(e) if oversize && (e.is_request() || e.is_body()) => ok += 1,
            other => {
                bad += 1;
                if examples.len() < EXAMPLES {
                    examples.push(format!("request {i}: {other:?}"));
                }
            }
        }
    }
    let alive = run.loms[0].process.alive();
    let unchanged = snapshot(&pool).await == before;
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
