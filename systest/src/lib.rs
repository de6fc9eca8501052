//! What the whole-system programs share: a database with room for load, and loms and notifier
//! processes set up as a run under load wants them.

use std::path::Path;

use testkit::process::{LomsOptions, NotifierOptions, NotifierProcess};

/// Skus added to a run's database, each with ample stock, so that no single row lock is what a
/// run measures.
pub const LOAD_SKUS: i64 = 1_000;
pub const FIRST_LOAD_SKU: i64 = 900_000_000;
const LOAD_STOCK: i64 = 1_000_000_000;
/// Connections of a loms under load: one per concurrent client of the create benchmark.
const LOAD_CONNECTIONS: &str = "64";

/// The sku the `i`-th order of a run buys, spread over the load skus.
pub fn load_sku(i: u64) -> i64 {
    FIRST_LOAD_SKU + (i as i64 % LOAD_SKUS)
}

/// A migrated database `name` (an earlier one of that name is dropped) with the load skus.
pub async fn load_database(name: &str) -> String {
    let url = testkit::db::create_database(name).await;
    let pool = testkit::db::migrated(&url).await;
    sqlx::query(
        "INSERT INTO stocks SELECT s, $3, 0 FROM generate_series($1::bigint, $2::bigint) s",
    )
    .bind(FIRST_LOAD_SKU)
    .bind(FIRST_LOAD_SKU + LOAD_SKUS - 1)
    .bind(LOAD_STOCK)
    .execute(&pool)
    .await
    .expect("add the load skus");
    url
}

/// A release loms for a run: as many connections as clients, quiet logs but the relay's.
pub fn loms(database_url: &str, topic: &str, log: &Path) -> LomsOptions {
    LomsOptions::new(database_url, topic)
        .log(log)
        .env("LOMS_DATABASE__MAX_CONNECTIONS", LOAD_CONNECTIONS)
        .env("LOMS_LOG__FILTER", "warn,loms::relay=info")
}

/// A notifier of `group` logging JSON lines to `log`.
pub fn notifier(topic: &str, group: &str, log: &Path) -> NotifierProcess {
    NotifierOptions::new(topic, group).log(log).start()
}

/// The `p` quantile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Longest a quick run of the chaos program may take in a test (in `timeout`'s terms).
const CHAOS_PATIENCE: &str = "15m";

/// Runs the `chaos` program with `args` for the scenarios `names` and returns their reports,
/// having checked that nothing was lost, reordered or invented and that each saw events. With
/// `own_stack`, on a stack of its own (what names the test's stack is left out, `env` added).
pub fn chaos_scenarios(
    names: &[&str],
    args: &[&str],
    own_stack: bool,
    env: &[(&str, &str)],
) -> Vec<serde_json::Value> {
    let report = std::env::temp_dir().join(format!("chaos-{}.json", testkit::unique()));
    let chaos = testkit::process::bin_dir().join("chaos");
    // A run that hangs fails the test instead of holding the suite for ever.
    let mut command = std::process::Command::new("timeout");
    command.args(["--kill-after=30", CHAOS_PATIENCE]);
    if own_stack {
        command
            .arg("bash")
            .arg(testkit::stack::root().join("deploy/local/with-stack.sh"))
            .arg(chaos)
            .env_remove("DATABASE_URL")
            .env_remove("KAFKA_BROKERS")
            .env_remove("STACK_DIR");
    } else {
        command.arg(chaos);
    }
    let only = names.join(",");
    let status = command
        .args(args)
        .args(["--quick", "--only", &only, "--report"])
        .arg(&report)
        .envs(env.iter().copied())
        .status()
        .expect("run chaos");
    assert!(status.success(), "chaos {only} failed: {status}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("the report")).expect("JSON");
    let scenarios: Vec<serde_json::Value> = report["scenarios"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| names.iter().any(|n| s["name"] == *n))
        .collect();
    assert_eq!(scenarios.len(), names.len(), "{report}");
    for scenario in &scenarios {
        for key in ["lost", "reordered", "phantom", "requests_outside_contract"] {
            assert_eq!(scenario[key], 0, "{key}: {scenario}");
        }
        let broken = scenario["broken"].as_array().cloned().unwrap_or_default();
        assert!(broken.is_empty(), "{broken:?}: {scenario}");
        assert!(
            scenario["events_expected"].as_u64().unwrap_or(0) > 0,
            "{scenario}"
        );
        println!("{scenario}");
    }
    scenarios
}

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on Linux).
pub const TICKS_PER_S: f64 = 100.0;

/// (utime + stime, cutime + cstime) of a process, in seconds; the second is what its exited
/// and reaped children used (PostgreSQL's backends, pgbench).
pub fn cpu_times(pid: u32) -> Option<(f64, f64)> {
    stat_times(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of one thread `tid` of `pid`.
pub fn thread_cpu_seconds(pid: u32, tid: u32) -> Option<f64> {
    stat_times(&format!("/proc/{pid}/task/{tid}/stat")).map(|(own, _)| own)
}

/// (own, reaped children's) CPU seconds from a `stat` file of `/proc`.
fn stat_times(path: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command, which is in parentheses and may hold spaces.
    let fields: Vec<f64> = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14 to 17 of stat; 3 is the first after ')'.
    let own = (fields.get(11)? + fields.get(12)?) / TICKS_PER_S;
    let children = (fields.get(13)? + fields.get(14)?) / TICKS_PER_S;
    Some((own, children))
}
