//! Failover on a production-shaped Kafka, kept true by CI: chaos's `leader_kill` and
//! `producer_gap` scenarios in their short forms, on a three-node cluster of its own
//! (replication factor 3, min.insync.replicas 2): the leader of a partition killed with SIGKILL
//! under load, started again 20 s later; then frozen (SIGSTOP) with messages in flight to it, and
//! thawed. Nothing lost, reordered or invented, on the topic and in the notifiers' logs.

#[test]
fn leader_kill_and_leader_freeze_on_three_nodes_lose_nothing() {
    systest::chaos_scenarios(
        &["leader_kill", "producer_gap"],
        &["--replicated"],
        true,
        &[("KAFKA_NODES", "3")],
    );
}
