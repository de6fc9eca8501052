//! `bench --event-path`: the event path's settings chosen by measurement. For each candidate
//! (the relay producer's linger, the notifier consumer's fetch settings), end to end at several
//! rates: latency from OrderCreate's reply to the log line, and CPU per order of the broker,
//! loms, the notifier and the whole machine. Writes `target/bench/event-path.json`.

use serde_json::json;

use crate::e2e::{self, EventPath, DEFAULTS};

/// Orders per second of each run: low, ordinary, and about half the machine's capacity.
const RATES: [u64; 3] = [100, 500, 1_000];

/// The candidates: the services' own settings, then each cost of the broker's attacked alone
/// and together. The producer's linger lets one produce request carry several relay cycles;
/// a fetch that waits for 16 KiB (at most 10 ms) answers several produce requests at once.
const CANDIDATES: [EventPath; 4] = [
    DEFAULTS,
    EventPath {
        name: "linger.ms=5",
        producer: &["linger.ms=5"],
        consumer: &[],
    },
    EventPath {
        name: "fetch.min.bytes=16384, fetch.wait.max.ms=10",
        producer: &[],
        consumer: &["fetch.min.bytes=16384", "fetch.wait.max.ms=10"],
    },
    EventPath {
        name: "both",
        producer: &["linger.ms=5"],
        consumer: &["fetch.min.bytes=16384", "fetch.wait.max.ms=10"],
    },
];

pub async fn sweep(secs: u64) {
    println!("| settings | orders/s | p50 ms | p99 ms | broker µs/order | loms µs/order | notifier µs/order | machine µs/order | produce/s | fetch/s | broker's busiest threads, cores |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for path in &CANDIDATES {
        for rate in RATES {
            let run = e2e::run(secs, rate, path).await;
            let per_order = |part: &str| run.cpu.part_per_op_us(part, rate as f64);
            let row = json!({
                "settings": path.name,
                "rate_per_s": rate,
                "p50_ms": run.p(0.5),
                "p99_ms": run.p(0.99),
                "broker_us_per_order": per_order("kafka"),
                "loms_us_per_order": per_order("loms"),
                "notifier_us_per_order": per_order("notifier"),
                "machine_us_per_order": run.cpu.per_op_us(rate as f64),
                "produce_requests_per_s": run.requests_per_s.produce,
                "fetch_requests_per_s": run.requests_per_s.fetch,
                "broker_threads_cores": run.broker_threads_json(),
            });
            println!(
                "| {} | {rate} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
                path.name,
                run.p(0.5),
                run.p(0.99),
                per_order("kafka"),
                per_order("loms"),
                per_order("notifier"),
                run.cpu.per_op_us(rate as f64),
                run.requests_per_s.produce,
                run.requests_per_s.fetch,
                run.busiest_threads(3),
            );
            rows.push(row);
        }
    }
    let out = crate::out_dir().join("event-path.json");
    let text = serde_json::to_string_pretty(&json!({ "runs": rows })).expect("json");
    std::fs::write(&out, text).expect("write the results");
    println!("results: {}", out.display());
}
