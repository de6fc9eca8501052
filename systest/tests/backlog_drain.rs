//! `backlog_drain`'s short form: the broker away 30 s under load, then back while the load goes
//! on; the backlog drains with nothing lost, reordered or invented, and the figures (drain rate,
//! OrderCreate's latency before, during and after, the outbox's dead rows) are reported.

#[test]
fn a_backlog_drains_under_load_with_nothing_lost() {
    let scenario = &systest::chaos_scenarios(&["backlog_drain"], &[], false, &[])[0];
    assert!(
        scenario["backlog_events"].as_i64().unwrap_or(0) > 0,
        "{scenario}"
    );
    assert!(
        scenario["drain_events_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{scenario}"
    );
    assert!(
        scenario["create_latency_during_drain"]["calls"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{scenario}"
    );
}
