//! One order followed across services: the caller's W3C trace context goes from gRPC or HTTP
//! through the outbox and Kafka to the notifier's log lines, and spans of loms and of the
//! notifier reach Jaeger under that trace. A collector that is away and comes back is played by
//! an OTLP receiver built here on the official OTLP protobufs, on an address chosen beforehand.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::loms::{Item, OrderCreateRequest};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use testkit::eventually;
use testkit::jaeger::Jaeger;
use testkit::kafka;
use testkit::process::{LomsOptions, NotifierOptions};

const PATIENCE: Duration = Duration::from_secs(60);
const SKU: i64 = 1076963;

/// (service name, trace id, span name) of every span received.
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// An OTLP/HTTP receiver on `listener`: what it received.
fn receiver_on(listener: tokio::net::TcpListener) -> Received {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
                let mut store = store.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                            AnyValue::StringValue(s) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                        let trace: String =
                            span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                        store.push((service.clone(), trace, span.name.clone()));
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    received
}

/// Whether `received` holds a span named `name` of `service` under one of `traces`.
fn has_span(received: &Received, service: &str, name: &str, traces: &[String]) -> bool {
    received
        .lock()
        .unwrap()
        .iter()
        .any(|(s, t, n)| s == service && n == name && traces.contains(t))
}

/// The value of a counter on a service's `/metrics`.
async fn counter(address: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

fn order() -> OrderCreateRequest {
    OrderCreateRequest {
        user_id: 7,
        items: vec![Item { sku: SKU, count: 1 }],
    }
}

/// The trace id of a `traceparent` value.
fn trace_of(traceparent: &str) -> String {
    traceparent
        .split('-')
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_callers_trace_follows_its_order_to_kafka_the_notifier_and_jaeger() {
    let jaeger = Jaeger::start().await;
    let otlp = jaeger.otlp.clone();
    let db = testkit::db::fresh_database().await;
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    // Quiet logs: the trace does not depend on what is logged.
    let loms = LomsOptions::new(&db, &topic)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("LOMS_LOG__FILTER", "warn")
        .start()
        .await;
    let group = format!("tracing-test-{}", testkit::unique());
    let notifier = NotifierOptions::new(&topic, &group)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .start();
    notifier.joined().await;

    // A gRPC call and an HTTP call, each with a trace context of the caller's; a third without.
    let grpc_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let http_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut client = loms.client().await.unwrap();
    let untraced = client
        .order_create(order())
        .await
        .unwrap()
        .get_ref()
        .order_id;
    let mut request = tonic::Request::new(order());
    let traceparent = format!("00-{grpc_trace}-00f067aa0ba902b7-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let by_grpc = client
        .order_create(request)
        .await
        .unwrap()
        .get_ref()
        .order_id;
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/order/create", loms.http))
        .header(
            "traceparent",
            format!("00-{http_trace}-b7ad6b7169203331-01"),
        )
        .json(&serde_json::json!({"userId": "7", "items": [{"sku": SKU.to_string(), "count": 1}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_http: i64 = reply["orderId"].as_str().unwrap().parse().unwrap();

    // On Kafka: each message carries its order's trace.
    let messages = kafka::consume_until(&topic, PATIENCE, |m| m.len() >= 6).await;
    let mut traces: HashMap<i64, HashSet<String>> = HashMap::new();
    for m in &messages {
        let event = m.event().unwrap();
        let traceparent = m.headers.get("traceparent").expect("a traceparent header");
        traces
            .entry(event.order_id)
            .or_default()
            .insert(trace_of(traceparent));
    }
    let example = messages
        .iter()
        .find(|m| m.event().unwrap().order_id == by_grpc);
    println!("headers of a message: {:?}", example.map(|m| &m.headers));
    assert_eq!(traces[&by_grpc], HashSet::from([grpc_trace.to_string()]));
    assert_eq!(traces[&by_http], HashSet::from([http_trace.to_string()]));
    let fresh = traces[&untraced].iter().next().unwrap().clone();
    assert_eq!(traces[&untraced].len(), 1, "one trace for one call");
    assert!(
        fresh.len() == 32 && fresh.chars().any(|c| c != '0') && fresh != grpc_trace,
        "a fresh, valid trace id: {fresh}"
    );

    // In the notifier's log: every event's line carries its order's trace id.
    let expected = [
        (by_grpc, grpc_trace.to_string()),
        (by_http, http_trace.to_string()),
        (untraced, fresh.clone()),
    ];
    eventually("the notifier logs the six events", PATIENCE, || {
        std::future::ready(notifier.events().len() >= 6)
    })
    .await;
    for line in notifier.process.json_lines() {
        if line["message"] != "order event" {
            continue;
        }
        let order_id = line["order_id"].as_i64().unwrap();
        let (_, trace) = expected.iter().find(|(id, _)| *id == order_id).unwrap();
        assert_eq!(line["trace_id"].as_str(), Some(trace.as_str()), "{line}");
    }

    // In Jaeger: spans of loms (the call, the publication) and of the notifier under each trace.
    for (_, trace) in &expected {
        eventually("Jaeger holds spans of both services", PATIENCE, || async {
            let spans = jaeger.spans(trace).await;
            ["rpc", "publish"]
                .iter()
                .all(|name| spans.contains(&("loms".into(), name.to_string())))
                && spans.contains(&("notifier".into(), "handle".into()))
        })
        .await;
    }
}

#[tokio::test]
async fn spans_pause_while_the_collector_is_away_and_resume_when_it_answers() {
    let port = testkit::process::free_port();
    let otlp = format!("http://127.0.0.1:{port}");
    let db = testkit::db::fresh_database().await;
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let loms = LomsOptions::new(&db, &topic)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .start()
        .await;
    let notifier_metrics = format!("127.0.0.1:{}", testkit::process::free_port());
    let group = format!("tracing-test-{}", testkit::unique());
    let notifier = NotifierOptions::new(&topic, &group)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .metrics(&notifier_metrics)
        .start();
    notifier.joined().await;
    let client = loms.client().await.unwrap();
    let create = |traceparent: Option<String>| {
        let mut client = client.clone();
        async move {
            let mut request = tonic::Request::new(order());
            if let Some(traceparent) = traceparent {
                request
                    .metadata_mut()
                    .insert("traceparent", traceparent.parse().unwrap());
            }
            // Made or failed for want of stock: either way the call writes events.
            if let Err(status) = client.order_create(request).await {
                assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
            }
        }
    };

    // Nobody listens: both services go on, count what they cannot export, and say so.
    eventually(
        "both services count spans dropped with the collector away",
        PATIENCE,
        || async {
            create(None).await;
            counter(&loms.admin, "loms_spans_dropped_total").await > 0.0
                && counter(&notifier_metrics, "notifier_spans_dropped_total").await > 0.0
        },
    )
    .await;
    for log in [loms.process.log_text(), notifier.process.log_text()] {
        assert!(log.contains("span collector unreachable"), "{log}");
        // One WARN of our own says it; the SDK's ERROR lines are not repeated.
        assert!(!log.contains("ERROR"), "{log}");
    }
    // Trace ids still travel with the events.
    let messages = kafka::consume_until(&topic, PATIENCE, |m| !m.is_empty()).await;
    let trace = trace_of(&messages[0].headers["traceparent"]);
    assert!(
        trace.len() == 32 && trace.chars().any(|c| c != '0'),
        "{trace}"
    );

    // The collector comes up on its address: spans of calls made from then on reach it.
    let received = receiver_on(
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap(),
    );
    let mut traces = Vec::new();
    eventually(
        "spans of both services reach the collector once it answers",
        PATIENCE,
        || {
            let trace = testkit::unique();
            traces.push(trace.clone());
            let traces = traces.clone();
            let received = received.clone();
            let create = &create;
            async move {
                create(Some(format!("00-{trace}-00f067aa0ba902b7-01"))).await;
                has_span(&received, "loms", "rpc", &traces)
                    && has_span(&received, "loms", "publish", &traces)
                    && has_span(&received, "notifier", "handle", &traces)
            }
        },
    )
    .await;
    for log in [loms.process.log_text(), notifier.process.log_text()] {
        assert!(log.contains("span collector reachable again"), "{log}");
    }
}

/// OTLP to an `https://` collector whose certificate chains to a CA of its own: with that CA
/// (`OTEL_EXPORTER_OTLP_CERTIFICATE`) loms's spans arrive; without it they are refused, counted
/// as dropped.
#[tokio::test]
async fn spans_reach_an_https_collector_that_its_ca_vouches_for() {
    let certificates = testkit::stack::certificates(
        &std::env::temp_dir().join(format!("loms-otlp-tls-{}", testkit::unique())),
    );
    let jaeger = Jaeger::start_tls(&certificates).await;
    assert!(jaeger.otlp.starts_with("https://"));
    let db = testkit::db::fresh_database().await;
    let ca = certificates.join("ca.pem");
    let trusted = LomsOptions::new(&db, "loms.order-events.unused")
        .relay(false)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &jaeger.otlp)
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca.to_string_lossy())
        .env("OTEL_SERVICE_NAME", "loms-tls")
        .start()
        .await;
    let untrusting = LomsOptions::new(&db, "loms.order-events.unused")
        .relay(false)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &jaeger.otlp)
        .env("OTEL_SERVICE_NAME", "loms-without-the-ca")
        .start()
        .await;
    let services = format!("http://{}/api/services", jaeger.query);
    eventually(
        "the spans of the loms with the CA arrive",
        PATIENCE,
        || async {
            for loms in [&trusted, &untrusting] {
                let _ = loms.client().await.unwrap().order_create(order()).await;
            }
            let known = reqwest::get(&services).await.unwrap().text().await.unwrap();
            known.contains("\"loms-tls\"")
        },
    )
    .await;
    eventually("the other's are dropped", PATIENCE, || async {
        let _ = untrusting
            .client()
            .await
            .unwrap()
            .order_create(order())
            .await;
        counter(&untrusting.admin, "loms_spans_dropped_total").await > 0.0
    })
    .await;
    let known = reqwest::get(&services).await.unwrap().text().await.unwrap();
    assert!(!known.contains("loms-without-the-ca"), "{known}");
}
