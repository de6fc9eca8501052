//! What the bench and chaos programs share: the stack from the environment, release builds of
//! loms and notifier run as processes, databases and topics of their own.
#![allow(dead_code)] // each program uses a part of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

pub const BENCH_SKUS: i64 = 1_000;
pub const FIRST_BENCH_SKU: i64 = 900_000_000;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run through the Makefile"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn release_bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name)
}

pub fn target_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `deploy/local/stack.sh <command>` on the stack of this run.
pub fn stack(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local/stack.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(command)
        .status()
        .expect("run stack.sh");
    assert!(status.success(), "stack.sh {command} failed");
}

/// A process that is killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Peak resident set size, from /proc.
    pub fn peak_rss_mb(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// SIGKILL, and wait until the process is gone (and its ports free).
    pub fn kill_now(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    pub fn alive(&mut self) -> bool {
        self.0.try_wait().map(|s| s.is_none()).unwrap_or(false)
    }
}

/// A migrated database of its own, with 1,000 extra skus of ample stock so that no single row
/// lock is what a run measures.
pub async fn fresh_database(name: &str) -> String {
    let server = env("DATABASE_URL");
    let admin = sqlx::PgPool::connect(&server).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    loms::startup::migrate(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO stocks SELECT s, 1000000000, 0 FROM generate_series($1::bigint, $2::bigint) s",
    )
    .bind(FIRST_BENCH_SKU)
    .bind(FIRST_BENCH_SKU + BENCH_SKUS - 1)
    .execute(&pool)
    .await
    .unwrap();
    url
}

pub async fn create_topic(prefix: &str, partitions: i32) -> String {
    let name = format!("{prefix}.{}", uuid::Uuid::now_v7().simple());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", env("KAFKA_BROKERS"))
        .create()
        .unwrap();
    for r in admin
        .create_topics(
            &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
    name
}

pub struct Loms {
    pub proc: Proc,
    pub grpc: String,
    pub http: String,
}

impl Loms {
    /// Starts a release loms and waits until it accepts gRPC connections.
    pub async fn start(database_url: &str, topic: &str, relay: bool, log: &Path) -> Self {
        let (grpc, http) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        Self::start_on(database_url, topic, relay, log, grpc, http).await
    }

    pub async fn start_on(
        database_url: &str,
        topic: &str,
        relay: bool,
        log: &Path,
        grpc: String,
        http: String,
    ) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(release_bin("loms"))
            .env("LOMS_GRPC_ADDR", &grpc)
            .env("LOMS_HTTP_ADDR", &http)
            .env("LOMS_DATABASE__URL", database_url)
            .env("LOMS_DATABASE__MAX_CONNECTIONS", "64")
            .env("LOMS_KAFKA__BROKERS", env("KAFKA_BROKERS"))
            .env("LOMS_KAFKA__TOPIC", topic)
            .env("LOMS_RELAY__ENABLED", relay.to_string())
            .env("LOMS_LOG__FILTER", "warn,loms::relay=info")
            .stdout(log)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start loms (the Makefile builds it)");
        let proc = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while api::LomsClient::connect(format!("http://{grpc}"))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "loms did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { proc, grpc, http }
    }
}

/// Starts a release notifier logging JSON lines to `log`.
pub fn start_notifier(topic: &str, group: &str, log: &Path, metrics: Option<&str>) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(release_bin("notifier"));
    cmd.args([
        "--kafka-brokers",
        &env("KAFKA_BROKERS"),
        "--topic",
        topic,
        "--group-id",
        group,
        "--log-json",
    ])
    .args(["--dlq-topic", &format!("{topic}.dlq")])
    .args(["--kafka-property", "session.timeout.ms=6000"])
    .stdout(log);
    if let Some(addr) = metrics {
        cmd.args(["--metrics-addr", addr]);
    }
    Proc(cmd.spawn().expect("start notifier"))
}

/// Whether the loms serving HTTP on `http` holds the relay lock, from its metrics.
pub async fn relay_leader(http: &str) -> bool {
    match reqwest::get(format!("http://{http}/metrics")).await {
        Ok(reply) => reply
            .text()
            .await
            .unwrap_or_default()
            .contains("\nloms_relay_leader 1"),
        Err(_) => false,
    }
}
