//! chaos's `pg_blackhole` in its short form, on the test stack: of two replicas, the relay
//! leader's path to PostgreSQL frozen (nothing passes, nothing closes); the leader stops
//! publishing within its statements' deadline, the other replica terminates the silent session
//! after the lease and takes over; nothing lost, reordered or invented.

#[test]
fn a_leader_cut_off_from_postgres_is_replaced() {
    let scenario = systest::chaos_scenario("pg_blackhole", &[], false, &[]);
    assert!(scenario["takeover_secs"].as_f64().is_some(), "{scenario}");
}
