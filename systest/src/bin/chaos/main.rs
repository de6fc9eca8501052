//! `make chaos`: injects real faults into the real stack under a steady workload and judges the
//! outcome against what committed: lost, reordered, phantom and duplicated events, on the topic
//! and in the notifiers' logs. Writes `target/chaos/report.json`; exits non-zero if anything
//! was lost, reordered or invented. `--quick` shortens every scenario; `--replicated` runs the
//! scenarios of a three-node Kafka cluster (the stack must be one: `KAFKA_NODES=3`) and adds
//! them to the report; `--standby` likewise runs the scenarios of a stack whose PostgreSQL has a
//! synchronous standby (`PG_STANDBY=1`); `--only NAME[,NAME...]` runs only those.

mod backlog;
mod flood;
mod judge;
mod malformed;
mod run;
mod scenarios;
mod workload;

use clap::Parser;
use serde_json::{json, Value};

/// Faults injected into the real stack under load, judged against what committed.
#[derive(Parser)]
struct Args {
    /// Shorter scenarios.
    #[arg(long)]
    quick: bool,
    /// The three-node cluster's scenarios (leader_kill, rolling_restart, min_isr_loss), added
    /// to the report of the single-broker ones.
    #[arg(long)]
    replicated: bool,
    /// The scenarios of a PostgreSQL with a synchronous standby (pg_failover), added to the
    /// report likewise.
    #[arg(long, conflicts_with = "replicated")]
    standby: bool,
    /// Only the scenarios of these names (comma-separated).
    #[arg(long)]
    only: Option<String>,
    /// Where the report goes (default target/chaos/report.json).
    #[arg(long)]
    report: Option<std::path::PathBuf>,
}

/// Seconds of load per scenario, and malformed requests sent, in a quick and a full run.
const QUICK: (u64, usize) = (25, 2_000);
const FULL: (u64, usize) = (60, 10_000);

/// Whether a scenario's report shows a broken guarantee (or a promise of its own, `broken`).
fn failed(report: &Value) -> bool {
    ["lost", "reordered", "phantom", "requests_outside_contract"]
        .iter()
        .any(|k| report[*k].as_u64().unwrap_or(0) > 0)
        || report["broken"].as_array().is_some_and(|b| !b.is_empty())
}

fn print_table(reports: &[Value]) {
    println!();
    println!(
        "| scenario | requests ok | events expected | lost | reordered | phantom | duplicated | out of order | parked | OrderCreate errors during the fault | longest commit-to-log wait during the fault |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for s in reports {
        let during = |key: &str, scale: f64, unit: &str| {
            s[key]
                .as_f64()
                .map_or("".to_string(), |v| format!("{:.1}{unit}", v * scale))
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s["name"].as_str().unwrap_or_default(),
            s["requests_ok"],
            s["events_expected"],
            s["lost"],
            s["reordered"],
            s["phantom"],
            s["duplicated"],
            s["out_of_order"],
            s["parked"],
            during("create_error_rate_during_fault", 100.0, " %"),
            during("max_event_wait_ms_during_fault", 1e-3, " s"),
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let (secs, malformed) = if args.quick { QUICK } else { FULL };
    let chosen = |name: &str| {
        args.only
            .as_deref()
            .is_none_or(|only| only.split(',').any(|o| o == name))
    };
    // A run on a stack of its own adds its scenarios to the report of the single-broker run.
    let adds = args.replicated || args.standby;
    let list = if args.replicated {
        scenarios::REPLICATED
    } else if args.standby {
        scenarios::STANDBY
    } else {
        scenarios::ALL
    };
    let mut reports = Vec::new();
    for scenario in list.iter().filter(|s| chosen(s.name)) {
        reports.push(run::scenario(scenario, secs, args.quick).await);
    }
    if !adds && chosen("malformed_requests") {
        reports.push(malformed::scenario(malformed).await);
    }

    let path = args
        .report
        .clone()
        .unwrap_or_else(|| testkit::stack::target_dir("chaos").join("report.json"));
    let mut all: Vec<Value> = if adds {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|v| v["scenarios"].as_array().cloned())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    all.retain(|old| !reports.iter().any(|new| new["name"] == old["name"]));
    all.extend(reports.iter().cloned());
    let report =
        serde_json::to_string_pretty(&json!({ "scenarios": all })).expect("the report serializes");
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
