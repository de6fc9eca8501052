//! `pg_failover`'s short form, on a stack of its own with a synchronous standby: the primary
//! killed under load, the standby promoted, the replicas' address moved to it; OrderCreate
//! comes back, a relay publishes from the new primary, and nothing a client was told of is lost,
//! reordered or invented (the chaos run fails otherwise).

#[test]
fn postgres_fails_over_to_its_synchronous_standby() {
    let scenario = &systest::chaos_scenarios(
        &["pg_failover"],
        &["--standby"],
        true,
        &[("PG_STANDBY", "1")],
    )[0];
    assert_eq!(scenario["lost"], 0, "{scenario}");
    assert!(
        scenario["create_unavailable_secs"].is_number(),
        "{scenario}"
    );
    assert!(
        scenario["relay_publishes_again_after_secs"].is_number(),
        "{scenario}"
    );
    assert!(
        scenario["requests_ok"].as_u64().unwrap_or(0) > 0,
        "{scenario}"
    );
}
