//! Failover on a production-shaped Kafka, kept true by CI: chaos's `leader_kill` scenario in its
//! short form, on a three-node cluster of its own (replication factor 3, min.insync.replicas 2):
//! the leader of a partition killed with SIGKILL under load, started again 20 s later; nothing
//! lost, reordered or invented, on the topic and in the notifiers' logs.

use std::process::Command;

use serde_json::Value;
use testkit::process::bin_dir;

#[test]
fn leader_kill_on_three_nodes_loses_nothing() {
    let report = std::env::temp_dir().join(format!("chaos-{}.json", testkit::unique()));
    // A stack of its own: what names the test's stack is left out.
    let status = Command::new("bash")
        .arg(testkit::stack::root().join("deploy/local/with-stack.sh"))
        .arg(bin_dir().join("chaos"))
        .args([
            "--replicated",
            "--quick",
            "--only",
            "leader_kill",
            "--report",
        ])
        .arg(&report)
        .env("KAFKA_NODES", "3")
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .env_remove("STACK_DIR")
        .status()
        .expect("run chaos");
    assert!(status.success(), "chaos leader_kill failed: {status}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let scenario = &report["scenarios"][0];
    assert_eq!(scenario["name"], "leader_kill");
    for key in ["lost", "reordered", "phantom", "requests_outside_contract"] {
        assert_eq!(scenario[key], 0, "{key}: {scenario}");
    }
    assert!(
        scenario["events_expected"].as_u64().unwrap() > 0,
        "{scenario}"
    );
    println!("{scenario}");
}
