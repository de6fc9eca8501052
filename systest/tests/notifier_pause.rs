//! `notifier_pause`'s short form: a notifier that owns a partition is stopped for longer than
//! its session timeout and resumed; its partition moved to the other member meanwhile, it rejoins,
//! and the union of both logs misses nothing, reorders nothing, invents nothing.

#[test]
fn a_paused_notifier_wakes_rejoins_and_nothing_is_missing() {
    let scenario = &systest::chaos_scenarios(&["notifier_pause"], &[], false, &[])[0];
    assert_eq!(scenario["woken_rejoined"], true, "{scenario}");
}
