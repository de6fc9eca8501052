//! The alert rules and the scrape configuration that ship with the system, checked and their
//! tests run by promtool (Debian's `prometheus` package, installed by deploy/local/setup.sh).

use std::process::Command;

fn promtool(args: &[&str]) {
    let dir = testkit::stack::root().join("deploy/prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("promtool (apt-get install prometheus; deploy/local/setup.sh does)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_are_valid_and_their_tests_pass() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
}

#[test]
fn the_scrape_configuration_is_valid_and_names_every_service() {
    promtool(&["check", "config", "prometheus.yml"]);
    let config =
        std::fs::read_to_string(testkit::stack::root().join("deploy/prometheus/prometheus.yml"))
            .unwrap();
    for target in [
        "loms:8085",
        "notifier-1:9100",
        "notifier-2:9100",
        "notifier-3:9100",
    ] {
        assert!(config.contains(target), "{target}");
    }
}
