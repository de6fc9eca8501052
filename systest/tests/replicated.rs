//! Failover on a production-shaped Kafka, kept true by CI: chaos's `leader_kill` scenario in its
//! short form, on a three-node cluster of its own (replication factor 3, min.insync.replicas 2):
//! the leader of a partition killed with SIGKILL under load, started again 20 s later; nothing
//! lost, reordered or invented, on the topic and in the notifiers' logs.

#[test]
fn leader_kill_on_three_nodes_loses_nothing() {
    systest::chaos_scenario(
        "leader_kill",
        &["--replicated"],
        true,
        &[("KAFKA_NODES", "3")],
    );
}
