//! What ships for operating the system, checked statically: the alert rules and the scrape
//! configuration (by promtool, from Debian's `prometheus` package, installed by
//! deploy/local/setup.sh), each alert's tests, and the Grafana dashboard; and that every metric
//! the rules and the dashboard read is one the services export.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use testkit::compose::{self, read};

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

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn alert_rules() -> Vec<Value> {
    yaml("deploy/prometheus/alerts.yml")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/loms.json")).expect("dashboard JSON")
}

fn dashboard_panels() -> Vec<Value> {
    dashboard()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .cloned()
        .collect()
}

/// Every series name the services export, as a query names it (`_total` of a counter, the
/// `_bucket`, `_sum` and `_count` of a histogram).
fn exported() -> BTreeSet<String> {
    let loms = loms::metrics::Metrics::default();
    // A family is rendered once it has a series.
    loms.request("OrderInfo", tonic::Code::Ok, std::time::Duration::ZERO);
    let texts = [
        loms.render(),
        notifier::metrics::Metrics::default().render(),
    ];
    let mut names = BTreeSet::new();
    for line in texts.iter().flat_map(|t| t.lines()) {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            match kind {
                "counter" => names.insert(format!("{name}_total")),
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .all(|s| names.insert(format!("{name}{s}"))),
                _ => names.insert(name.to_string()),
            };
        }
    }
    names
}

/// The names of our own series a PromQL expression reads.
fn series_in(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("loms_") || w.starts_with("notifier_"))
        .map(String::from)
        .collect()
}

#[test]
fn the_alert_rules_are_valid_and_their_tests_pass() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
}

/// Each alert has a case where it fires and one where it stays silent.
#[test]
fn every_alert_has_a_firing_and_a_silent_test() {
    let tests = yaml("deploy/prometheus/alerts.test.yml");
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .collect();
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap();
        let of_it: Vec<&&Value> = cases.iter().filter(|c| c["alertname"] == name).collect();
        let fires = |c: &&&Value| !c["exp_alerts"].as_array().unwrap().is_empty();
        assert!(of_it.iter().any(fires), "{name} is never tested firing");
        assert!(!of_it.iter().all(fires), "{name} is never tested silent");
    }
}

#[test]
fn the_scrape_configuration_is_valid_and_names_every_service() {
    promtool(&["check", "config", "prometheus.yml"]);
    let config = read("deploy/prometheus/prometheus.yml");
    // loms's admin listener, and each notifier's metrics address.
    for target in [
        "loms:8085",
        "notifier-1:9100",
        "notifier-2:9100",
        "notifier-3:9100",
    ] {
        assert!(config.contains(target), "{target}");
    }
    for file in compose::FILES {
        let c = compose::compose_file(file);
        let env = compose::environment(&c, "loms");
        assert_eq!(env["LOMS_ADMIN_ADDR"], "0.0.0.0:8085", "{file}");
    }
}

/// The rules and the dashboard read only series the services export: a renamed metric fails
/// here, not silently in production.
#[test]
fn alerts_and_dashboard_read_only_exported_series() {
    let exported = exported();
    let mut read: Vec<(String, String)> = Vec::new();
    for rule in alert_rules() {
        let expr = rule["expr"].as_str().unwrap();
        let name = rule["alert"].as_str().unwrap().to_string();
        read.extend(series_in(expr).into_iter().map(|s| (name.clone(), s)));
    }
    for panel in dashboard_panels() {
        let title = panel["title"].as_str().unwrap().to_string();
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            read.extend(series_in(expr).into_iter().map(|s| (title.clone(), s)));
        }
    }
    assert!(read.len() > 30, "{read:?}");
    let missing: Vec<&(String, String)> =
        read.iter().filter(|(_, s)| !exported.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}\nexported: {exported:?}"
    );
}

/// The dashboard is provisioned in both compose files against their Prometheus, under the
/// datasource uid every panel names; panel ids are unique and panels do not overlap.
#[test]
fn the_dashboard_is_provisioned_against_prometheus() {
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let source = &datasources["datasources"][0];
    assert_eq!(source["type"], "prometheus");
    assert_eq!(source["url"], "http://prometheus:9090");
    let uid = source["uid"].as_str().unwrap();
    let providers = yaml("deploy/grafana/provisioning/dashboards/loms.yml");
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();

    let d = dashboard();
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let all = d["panels"].as_array().unwrap();
    let ids: BTreeSet<i64> = all.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "panel ids are unique");
    let mut cells = BTreeSet::new();
    for panel in all {
        let g = &panel["gridPos"];
        let (x, y, w, h) = ["x", "y", "w", "h"].map(|k| g[k].as_i64().unwrap()).into();
        assert!(x + w <= 24, "{}", panel["title"]);
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(
                cells.insert(cell),
                "{} overlaps another panel",
                panel["title"]
            );
        }
    }
    for panel in dashboard_panels() {
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], uid, "{}", panel["title"]);
        }
    }

    for file in compose::FILES {
        let c = compose::compose_file(file);
        let grafana = &c["services"]["grafana"];
        let mounts: Vec<&str> = grafana["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            mounts.contains(&"./grafana/provisioning:/etc/grafana/provisioning:ro"),
            "{file}"
        );
        assert!(
            mounts.contains(&format!("./grafana/dashboards:{path}:ro").as_str()),
            "{file}"
        );
        assert_eq!(
            grafana["depends_on"],
            serde_json::json!(["prometheus"]),
            "{file}"
        );
    }
}
