//! pgbench on the stack's cluster: the yardstick the service's figures are compared with.

use std::process::{Command, Output};

use testkit::stack::database_url;

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
const DATABASE: &str = "bench_pgbench";
/// pgbench's scale factor.
const SCALE: &str = "10";
/// pgbench's worker threads: one per core here.
const THREADS: &str = "2";

/// Host, port and user of the stack's server.
fn server() -> (String, String, String) {
    let url = database_url();
    let rest = url.trim_start_matches("postgres://");
    let (user, rest) = rest.split_once('@').expect("a user in DATABASE_URL");
    let (host_port, _) = rest.split_once('/').expect("a database in DATABASE_URL");
    let (host, port) = host_port.split_once(':').expect("a port in DATABASE_URL");
    (host.into(), port.into(), user.into())
}

/// The URL's TLS parameters as libpq's variables (`sslmode` as `PGSSLMODE`, ...): pgbench and
/// psql are given host, port and user apart, and these.
fn tls_env() -> Vec<(String, String)> {
    let url = database_url();
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| key.starts_with("ssl"))
        .map(|(key, value)| (format!("PG{}", key.to_uppercase()), value.to_string()))
        .collect()
}

fn checked(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn pgbench(args: &[&str]) -> String {
    let (host, port, user) = server();
    let output = Command::new(PGBENCH)
        .envs(tls_env())
        .args(["-h", &host, "-p", &port, "-U", &user])
        .args(args)
        .arg(DATABASE)
        .output()
        .expect("run pgbench");
    checked(output, "pgbench")
}

/// A fresh pgbench database.
pub fn init() {
    let (host, port, user) = server();
    let psql = Command::new("psql")
        .envs(tls_env())
        .args(["-h", &host, "-p", &port, "-U", &user, "-d", "postgres"])
        .args(["-c", &format!("DROP DATABASE IF EXISTS {DATABASE}")])
        .args(["-c", &format!("CREATE DATABASE {DATABASE}")])
        .output()
        .expect("run psql");
    checked(psql, "psql");
    pgbench(&["-i", "-s", SCALE, "-q"]);
}

/// Transactions per second of pgbench's built-in script `builtin` (`simple-update`,
/// `select-only`) with `clients` for `secs`.
pub fn tps(builtin: &str, clients: u64, secs: u64) -> f64 {
    let text = pgbench(&[
        "-b",
        builtin,
        "-c",
        &clients.to_string(),
        "-j",
        THREADS,
        "-T",
        &secs.to_string(),
    ]);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output: {text}"))
}
