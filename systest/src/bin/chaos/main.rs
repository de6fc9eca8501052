//! `make chaos`: injects real faults into the real stack under a steady workload and judges the
//! outcome against what committed: lost, reordered, phantom and duplicated events, on the topic
//! and in the notifiers' logs. Writes `target/chaos/report.json`; exits non-zero if anything
//! was lost, reordered or invented. `--quick` shortens every scenario.

mod judge;
mod malformed;
mod run;
mod scenarios;
mod workload;

use serde_json::{json, Value};

/// Seconds of load per scenario, and malformed requests sent, in a quick and a full run.
const QUICK: (u64, usize) = (25, 2_000);
const FULL: (u64, usize) = (60, 10_000);

/// Whether a scenario's report shows a broken guarantee.
fn failed(report: &Value) -> bool {
    ["lost", "reordered", "phantom", "requests_outside_contract"]
        .iter()
        .any(|k| report[*k].as_u64().unwrap_or(0) > 0)
}

fn print_table(reports: &[Value]) {
    println!();
    println!(
        "| scenario | requests ok | events expected | lost | reordered | phantom | duplicated |"
    );
    println!("|---|---|---|---|---|---|---|");
    for s in reports {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            s["name"].as_str().unwrap_or_default(),
            s["requests_ok"],
            s["events_expected"],
            s["lost"],
            s["reordered"],
            s["phantom"],
            s["duplicated"]
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (secs, malformed) = if quick { QUICK } else { FULL };
    let mut reports = Vec::new();
    for scenario in scenarios::ALL {
        reports.push(run::scenario(scenario, secs, quick).await);
    }
    reports.push(malformed::scenario(malformed).await);

    let path = testkit::stack::target_dir("chaos").join("report.json");
    let report = serde_json::to_string_pretty(&json!({ "scenarios": reports }))
        .expect("the report serializes");
    std::fs::write(&path, report).expect("write the report");
    print_table(&reports);
    println!("report: {}", path.display());
    if reports.iter().any(failed) {
        eprintln!(
            "chaos: something was lost, reordered, invented, or answered outside the contract"
        );
        std::process::exit(1);
    }
}
