//! Every input the fuzz campaign kept (its corpus, and any crash it found once fixed) replayed
//! through the targets' code on every `make test`.

fn replay(target: &str, run: fn(&[u8])) {
    let inputs = testkit::fuzz::kept_inputs(target);
    assert!(!inputs.is_empty(), "fuzz/corpus/{target} holds inputs");
    for (path, bytes) in &inputs {
        let outcome = std::panic::catch_unwind(|| run(bytes));
        assert!(outcome.is_ok(), "{} panics", path.display());
    }
    println!("{target}: {} inputs replayed", inputs.len());
}

#[test]
fn gateway_inputs() {
    replay("gateway", testkit::fuzz::gateway);
}

#[test]
fn event_inputs() {
    replay("event", testkit::fuzz::event);
}

#[test]
fn config_inputs() {
    replay("config", testkit::fuzz::config);
}
