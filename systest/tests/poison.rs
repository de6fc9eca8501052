//! chaos's `poison_request` in its short form, on the test stack: the 150,000-sku OrderCreate
//! and an outbox row too large for any broker between ordinary load; the request is refused up
//! front, the row parked with its order, and every other order's events arrive: nothing lost,
//! reordered or invented, on the topic and in the notifiers' logs.

#[test]
fn a_poison_request_and_a_poison_row_stop_nothing_else() {
    let scenario = &systest::chaos_scenarios(&["poison_request"], &[], false, &[])[0];
    assert_eq!(scenario["parked"], 1, "the poison row, parked: {scenario}");
    let refused = scenario["poison_grpc_reply"].as_str().unwrap_or_default();
    assert!(!refused.starts_with("OK"), "{refused}");
    assert!(refused.len() < 400, "a bounded message: {refused}");
    let http = scenario["poison_http_reply"].as_str().unwrap_or_default();
    assert!(
        http.starts_with('4') || http.starts_with("closed"),
        "{http}"
    );
}
