//! pgbench on the stack's cluster: the yardstick the service's figures are compared with.

use std::process::{Command, Output};

use systest::{FIRST_LOAD_SKU, LOAD_SKUS};
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

/// pgbench on `database` with `args`, started.
fn spawn(database: &str, args: &[&str]) -> std::process::Child {
    spawn_with(database, args, "")
}

/// pgbench running loms's SQL, its sessions planning as loms's do.
fn spawn_as_loms(database: &str, args: &[&str]) -> std::process::Child {
    let planner: Vec<String> = loms::database::PLANNER_SETTINGS
        .iter()
        .map(|(k, v)| format!("-c {k}={v}"))
        .collect();
    spawn_with(database, args, &planner.join(" "))
}

/// pgbench with the server settings `pgoptions` for its sessions.
fn spawn_with(database: &str, args: &[&str], pgoptions: &str) -> std::process::Child {
    let (host, port, user) = server();
    Command::new(PGBENCH)
        .envs(tls_env())
        .env("PGOPTIONS", pgoptions)
        .args(["-h", &host, "-p", &port, "-U", &user])
        .args(args)
        .arg(database)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run pgbench")
}

fn pgbench(args: &[&str]) -> String {
    let output = spawn(DATABASE, args).wait_with_output().expect("pgbench");
    checked(output, "pgbench")
}

fn tps_of(text: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output: {text}"))
}

/// loms's OrderCreate call as a pgbench script, one order per call and so per transaction, as
/// a lone request makes it: the very SQL, its parameters as pgbench variables (one random load
/// sku, one unit, two events of the bench's size).
fn bare_script() -> String {
    // Roughly what loms writes per event: a ~90-byte payload and a few headers.
    let payload = format!("'\\x{}'::bytea", "5a".repeat(90));
    let headers = r#"'{"event_type": "order.status_changed", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}'::jsonb"#;
    let pair = |one: &str| format!("ARRAY[{one}, {one}]");
    let value = |n: usize| match n {
        1 => "ARRAY[:id]::bigint[]".to_string(),
        2 => "ARRAY[:uid]::bigint[]".to_string(),
        3 => "'{1}'::int[]".to_string(),
        4 => "ARRAY[:sku]::bigint[]".to_string(),
        5 => "'{1}'::bigint[]".to_string(),
        6 => "'awaiting payment'".to_string(),
        7 => "'failed'".to_string(),
        8 => "2".to_string(),
        9 => "'bench.bare'".to_string(),
        10 => "ARRAY[:id::text, :id::text]".to_string(),
        11 | 13 => pair(&payload),
        12 | 14 => pair(headers),
        _ => panic!("OrderCreate has no parameter ${n}"),
    };
    // $14 before $1: a longer number first, so that $1 never takes $14's prefix.
    let mut sql = loms::storage::CREATE_ORDERS.to_string();
    for n in (1..=14).rev() {
        sql = sql.replace(&format!("${n}"), &value(n));
    }
    let (first, last) = (FIRST_LOAD_SKU, FIRST_LOAD_SKU + LOAD_SKUS - 1);
    format!(
        "\\set sku random({first}, {last})\n\\set uid random(1, 1000000)\n\\set id random(1, 9000000000000000000)\n{sql};\n"
    )
}

/// The relay's work in the outbox, stood in for: delete the oldest rows, a batch at a time.
const RELAY_STAND_IN: &str =
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 256);\n";

/// The relay stand-in's calls per second when the statement's rate is held: about what loms's
/// relay issues at its OrderCreate capacity (49/s measured, pg_stat_statements); 256 rows each
/// keep up with 6,400 orders/s. Unheld, it loops as fast as it can.
const RELAY_STAND_IN_CALLS_PER_S: &str = "50";

/// Orders per second of loms's OrderCreate statement run bare by pgbench (prepared) with
/// `clients` for `secs` on `database` (a load database), beside one client standing in for the
/// relay; at `rate` orders per second if given (pgbench's `-R`), else as fast as it goes.
pub fn bare_statement(
    database: &str,
    clients: u64,
    secs: u64,
    rate: Option<u64>,
    dir: &std::path::Path,
) -> f64 {
    let script = dir.join("bare-order-create.sql");
    let relay = dir.join("relay-stand-in.sql");
    std::fs::write(&script, bare_script()).expect("write the bare statement's script");
    std::fs::write(&relay, RELAY_STAND_IN).expect("write the relay stand-in's script");
    let (secs, clients) = (secs.to_string(), clients.to_string());
    let common = ["-n", "-M", "prepared", "-T", &secs];
    let rate = rate.map(|r| r.to_string());
    let (create_rate, relay_rate): (&[&str], &[&str]) = match &rate {
        Some(r) => (&["-R", r], &["-R", RELAY_STAND_IN_CALLS_PER_S]),
        None => (&[], &[]),
    };
    let relay = spawn_as_loms(
        database,
        &[
            &common[..],
            relay_rate,
            &["-c", "1", "-f", relay.to_str().unwrap()],
        ]
        .concat(),
    );
    let creates = spawn_as_loms(
        database,
        &[
            &common[..],
            create_rate,
            &[
                "-c",
                &clients,
                "-j",
                THREADS,
                "-f",
                script.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    let text = checked(
        creates.wait_with_output().expect("pgbench"),
        "pgbench, bare statement",
    );
    checked(
        relay.wait_with_output().expect("pgbench"),
        "pgbench, relay stand-in",
    );
    tps_of(&text)
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
    tps_of(&text)
}

#[cfg(test)]
mod tests {
    /// The bare statement, as pgbench runs it, flat out and held at a rate, does what
    /// OrderCreate's does: orders stored, stock reserved, two outbox rows each (less what the
    /// relay stand-in deleted).
    #[tokio::test]
    async fn the_bare_statement_makes_orders_as_loms_does() {
        let db = "bench_bare_test";
        let url = systest::load_database(db).await;
        let dir = std::env::temp_dir().join(format!("bench-bare-{}", testkit::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let mut before = 0;
        for rate in [None, Some(50)] {
            assert!(super::bare_statement(db, 4, 1, rate, &dir) > 0.0);
            let (orders, reserved): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM orders WHERE status = 'awaiting payment'),
                        (SELECT sum(reserved)::bigint FROM stocks WHERE sku >= $1)",
            )
            .bind(systest::FIRST_LOAD_SKU)
            .fetch_one(&pool)
            .await
            .unwrap();
            assert!(orders > before, "orders made at rate {rate:?}");
            assert_eq!(reserved, orders, "one unit reserved per order");
            before = orders;
        }
    }
}
