//! `kafka_path_blackhole`'s short form: of two replicas, each reaching the broker through a
//! proxy of its own, the relay leader's path goes silent; the other replica leads and publishes
//! within the stall timeout and the lease, and nothing is lost, reordered or invented (the chaos
//! run fails otherwise).

#[test]
fn the_leaders_silent_path_to_kafka_hands_the_relay_over() {
    let scenario = &systest::chaos_scenarios(&["kafka_path_blackhole"], &[], false, &[])[0];
    assert_eq!(scenario["lost"], 0, "{scenario}");
    assert!(scenario["takeover_secs"].is_number(), "{scenario}");
    assert!(scenario["publishing_again_secs"].is_number(), "{scenario}");
}
