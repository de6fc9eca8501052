//! chaos's `pg_blackhole` and `kafka_blackhole` in their short forms, on a stack of their own
//! (the broker is frozen): of two replicas, the relay leader's path to PostgreSQL frozen
//! (nothing passes, nothing closes), the leader stops publishing within its statements'
//! deadline and the other replica terminates the silent session after the lease and takes over;
//! then the broker frozen and thawed. Nothing lost, reordered or invented.

#[test]
fn silent_peers_stop_nothing() {
    let scenarios = systest::chaos_scenarios(&["pg_blackhole", "kafka_blackhole"], &[], true, &[]);
    let cut = scenarios
        .iter()
        .find(|s| s["name"] == "pg_blackhole")
        .expect("pg_blackhole's report");
    assert!(cut["takeover_secs"].as_f64().is_some(), "{cut}");
}
