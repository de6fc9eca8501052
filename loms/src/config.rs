//! Layered configuration: defaults in code < a TOML file (`--config`) < environment variables
//! (`LOMS_`, nested keys joined by `__`, e.g. `LOMS_DATABASE__URL`) < command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use service_runtime::kafka::{Properties, Security};
use service_runtime::telemetry::LogSettings;

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
/// The order service: its API (gRPC and the HTTP gateway), PostgreSQL, and the relay that
/// publishes the outbox to Kafka.
pub struct Settings {
    /// The gRPC API's address.
    pub grpc_addr: String,
    /// The HTTP/JSON gateway's address (with `/docs` and `/openapi.json`).
    pub http_addr: String,
    /// `/metrics`, `/readyz` and `/livez`, apart from the API.
    pub admin_addr: String,
    /// Name of this replica in events and logs; defaults to the host name and the process id.
    #[schemars(extend("default" = "<host name>-<process id>"))]
    pub instance_id: String,
    /// Largest HTTP request body accepted; the default fits an order of `max_order_lines`.
    pub http_body_limit_bytes: usize,
    /// Largest gRPC request message accepted; the default fits an order of `max_order_lines`.
    pub grpc_max_message_bytes: usize,
    /// Most lines (distinct skus) one order may have.
    pub max_order_lines: usize,
    /// Requests handled at once; one more is refused as ResourceExhausted.
    pub max_concurrent_requests: usize,
    /// How long one request may take before it is answered Unavailable. Longer than the
    /// statement timeout, so that the database, which can roll back, gives up first; this one
    /// fires only when the database does not answer at all.
    pub request_timeout_ms: u64,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_timeout_ms: u64,
    /// After a shutdown signal, how long health says NOT_SERVING while the listeners still
    /// serve, so that a load balancer moves traffic away before they close.
    pub shutdown_drain_ms: u64,
    /// TLS on the API's listeners (gRPC and HTTP; the admin listener stays plaintext, for
    /// probes and scrapes inside the deployment): plaintext when unset.
    pub tls: Option<ApiTls>,
    pub connections: ConnectionSettings,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub relay: RelaySettings,
    pub log: LogSettings,
}

/// One certificate for gRPC and HTTP; with a client CA, mutual TLS: a client without a
/// certificate that CA signed is refused at the handshake.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiTls {
    /// The server's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The CA (PEM) client certificates must chain to; none: no client certificate is asked.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// What the API's listeners allow each client connection.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSettings {
    /// Connections each API listener (gRPC, HTTP) keeps open at once; one more is closed as soon
    /// as it is accepted. Lowered at start to what the process's file-descriptor limit leaves
    /// room for, so that the admin listener and the database always get descriptors.
    pub max_per_listener: usize,
    /// A connection from which nothing arrived for this long is closed (HTTP/2 clients that
    /// answer the keepalive pings stay). Longer than `request_timeout_ms`.
    pub idle_timeout_ms: u64,
    /// An HTTP/1 request's headers, and a TLS handshake, must arrive within this.
    pub header_read_timeout_ms: u64,
    /// An HTTP/2 connection is pinged after this long without a frame...
    pub keepalive_interval_ms: u64,
    /// ...and closed when the ping is not answered within this.
    pub keepalive_timeout_ms: u64,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        // The HTTP server's own defaults, which the notifier's admin listener uses as they are.
        let timeouts = service_runtime::http::Timeouts::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            max_per_listener: 1_000,
            idle_timeout_ms: 60_000,
            header_read_timeout_ms: ms(timeouts.header_read),
            keepalive_interval_ms: ms(timeouts.keepalive_interval),
            keepalive_timeout_ms: ms(timeouts.keepalive_timeout),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// May carry a password: never printed.
    #[serde(serialize_with = "service_runtime::secret::serialize")]
    #[schemars(with = "String")]
    #[schemars(extend("default" = "postgres://postgres@127.0.0.1:5432/loms"))]
    pub url: SecretString,
    /// The connection pool's size (the order batches, the other requests, the relay).
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before it is answered Unavailable.
    pub acquire_timeout_ms: u64,
    /// Server-side limit of one statement, so that no request hangs on a lock forever.
    pub statement_timeout_ms: u64,
    /// Most requests committed together in one call and one transaction (OrderCreate's, or
    /// OrderPay's and OrderCancel's): those that arrive while every batch worker of their kind is
    /// busy wait and go together.
    pub order_batch_max: usize,
    /// Batches in flight at once for OrderCreate, and as many for OrderPay and OrderCancel, each
    /// on a connection of its own; a request that finds a worker of its kind idle goes at once,
    /// alone.
    pub order_batch_workers: usize,
    /// Whether `loms serve` applies the migrations before it serves; off where a job of its
    /// own runs `loms migrate` first (compose does).
    pub migrate_on_start: bool,
    /// How long a migration waits for a lock before it gives up (it has no statement timeout:
    /// a long rewrite is allowed, waiting behind live traffic is not).
    pub migration_lock_timeout_ms: u64,
    /// TLS to PostgreSQL, over what the URL says (`sslmode`, `sslrootcert`, `sslcert`,
    /// `sslkey` in the URL work as well).
    pub tls: DatabaseTls,
}

/// libpq's TLS settings, by their libpq meaning.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseTls {
    /// `disable`, `prefer` (the default), `require`, `verify-ca` or `verify-full`.
    pub mode: Option<String>,
    /// The CA certificates (PEM) the server's must chain to (`sslrootcert`).
    pub root_cert: Option<PathBuf>,
    /// This client's certificate (PEM), for a server that asks for one (`sslcert`).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM, `sslkey`).
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The topic order events are published to.
    pub topic: String,
    /// `client.id` of the relay's producer, as the brokers log it.
    pub client_id: String,
    /// How long the producer retries one message before reporting a delivery error; 0 (the
    /// default) retries until it is written or the producer fails for good, which keeps the
    /// partition gapless. A stalled leader steps down after `relay.stall_timeout_ms` instead.
    pub message_timeout_ms: u64,
    /// Largest event (payload, key and headers) written to the outbox: an order whose events
    /// would be larger is refused as InvalidArgument. Below librdkafka's and the broker's
    /// default limits (1,000,000 and 1,048,588 bytes).
    pub max_event_bytes: usize,
    /// TLS and SASL: `[kafka.security]`.
    pub security: Security,
    /// Extra librdkafka properties (tuning, or any security setting not named in
    /// `[kafka.security]`), passed through as they are, last.
    #[serde(serialize_with = "service_runtime::secret::serialize_map")]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub properties: Properties,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Whether this replica runs the relay (publishing the outbox; one replica at a time leads).
    pub enabled: bool,
    /// Most outbox rows one relay cycle reads and publishes.
    pub batch_size: i64,
    /// Fallback poll for rows written by other replicas; this replica wakes the relay itself.
    pub poll_interval_ms: u64,
    /// The first back-off after a failed cycle, doubled on each failure...
    pub backoff_initial_ms: u64,
    /// ...up to this.
    pub backoff_max_ms: u64,
    /// PostgreSQL advisory lock key that elects the one active relay.
    pub lock_key: i64,
    /// Deadline of every statement on the relay's connection: one that does not answer means
    /// the connection is gone, and the leader stops publishing.
    pub call_timeout_ms: u64,
    /// The leader runs a statement at least this often, also while it waits for Kafka.
    pub heartbeat_ms: u64,
    /// A follower terminates a leader's session that has been silent for this long, so that a
    /// leader cut off from the database cannot hold the lock for the OS's keepalive time.
    pub lease_ms: u64,
    /// A batch without any acknowledgement for this long ends the leadership term, so that a
    /// replica that reaches the broker can publish.
    pub stall_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            grpc_addr: "0.0.0.0:8083".into(),
            http_addr: "0.0.0.0:8084".into(),
            admin_addr: "0.0.0.0:8085".into(),
            instance_id: default_instance_id(),
            http_body_limit_bytes: 64 * 1024,
            grpc_max_message_bytes: 64 * 1024,
            max_order_lines: 1_000,
            max_concurrent_requests: 1_024,
            request_timeout_ms: 15_000,
            shutdown_timeout_ms: 10_000,
            shutdown_drain_ms: 1_000,
            tls: None,
            connections: ConnectionSettings::default(),
            database: DatabaseSettings::default(),
            kafka: KafkaSettings::default(),
            relay: RelaySettings::default(),
            log: LogSettings::default(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://postgres@127.0.0.1:5432/loms"),
            max_connections: 32,
            acquire_timeout_ms: 3_000,
            statement_timeout_ms: 10_000,
            order_batch_max: 64,
            order_batch_workers: 2,
            migrate_on_start: true,
            migration_lock_timeout_ms: 5_000,
            tls: DatabaseTls::default(),
        }
    }
}

service_runtime::kafka_client_settings!(KafkaSettings);

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: events_proto::TOPIC.into(),
            client_id: "loms".into(),
            message_timeout_ms: 0,
            max_event_bytes: 900_000,
            security: Security::default(),
            properties: Properties::new(),
        }
    }
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 1_000,
            poll_interval_ms: 200,
            backoff_initial_ms: 200,
            backoff_max_ms: 5_000,
            lock_key: 0x6c6f_6d73, // "loms"
            call_timeout_ms: 5_000,
            heartbeat_ms: 1_000,
            lease_ms: 10_000,
            stall_timeout_ms: 20_000,
        }
    }
}

impl ConnectionSettings {
    pub fn timeouts(&self) -> service_runtime::http::Timeouts {
        service_runtime::http::Timeouts {
            header_read: Duration::from_millis(self.header_read_timeout_ms),
            keepalive_interval: Duration::from_millis(self.keepalive_interval_ms),
            keepalive_timeout: Duration::from_millis(self.keepalive_timeout_ms),
        }
    }
}

impl RelaySettings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }
}

impl Settings {
    /// What no run can work with, refused at start with the key's name: a zero size or
    /// interval (a relay that reads nothing, a busy loop), and timings that contradict each
    /// other (a lease a live leader's heartbeat cannot renew).
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = service_runtime::config::zero_values(&self.positive());
        problems.extend(self.contradictions());
        service_runtime::config::verdict(problems)
    }

    /// The sizes and intervals that must not be 0.
    #[rustfmt::skip]
    fn positive(&self) -> [(&'static str, u64); 25] {
        [
            ("http_body_limit_bytes", self.http_body_limit_bytes as u64),
            ("grpc_max_message_bytes", self.grpc_max_message_bytes as u64),
            ("max_order_lines", self.max_order_lines as u64),
            ("max_concurrent_requests", self.max_concurrent_requests as u64),
            ("request_timeout_ms", self.request_timeout_ms),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
            ("connections.max_per_listener", self.connections.max_per_listener as u64),
            ("connections.idle_timeout_ms", self.connections.idle_timeout_ms),
            ("connections.header_read_timeout_ms", self.connections.header_read_timeout_ms),
            ("connections.keepalive_interval_ms", self.connections.keepalive_interval_ms),
            ("connections.keepalive_timeout_ms", self.connections.keepalive_timeout_ms),
            ("database.max_connections", u64::from(self.database.max_connections)),
            ("database.acquire_timeout_ms", self.database.acquire_timeout_ms),
            ("database.statement_timeout_ms", self.database.statement_timeout_ms),
            ("database.order_batch_max", self.database.order_batch_max as u64),
            ("database.order_batch_workers", self.database.order_batch_workers as u64),
            ("kafka.max_event_bytes", self.kafka.max_event_bytes as u64),
            ("relay.batch_size", u64::try_from(self.relay.batch_size).unwrap_or(0)),
            ("relay.poll_interval_ms", self.relay.poll_interval_ms),
            ("relay.backoff_initial_ms", self.relay.backoff_initial_ms),
            ("relay.backoff_max_ms", self.relay.backoff_max_ms),
            ("relay.call_timeout_ms", self.relay.call_timeout_ms),
            ("relay.heartbeat_ms", self.relay.heartbeat_ms),
            ("relay.lease_ms", self.relay.lease_ms),
            ("relay.stall_timeout_ms", self.relay.stall_timeout_ms),
        ]
    }

    /// Timings and sizes that contradict each other.
    fn contradictions(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.request_timeout_ms <= self.database.statement_timeout_ms {
            problems.push(format!(
                "request_timeout_ms ({}) must exceed database.statement_timeout_ms ({})",
                self.request_timeout_ms, self.database.statement_timeout_ms
            ));
        }
        if self.connections.idle_timeout_ms <= self.request_timeout_ms {
            problems.push(format!(
                "connections.idle_timeout_ms ({}) must exceed request_timeout_ms ({}): a client waiting for its answer is not idle",
                self.connections.idle_timeout_ms, self.request_timeout_ms
            ));
        }
        if 2 * self.database.order_batch_workers >= self.database.max_connections as usize {
            problems.push(format!(
                "twice database.order_batch_workers ({}, one set for OrderCreate and one for OrderPay and OrderCancel) must be fewer than database.max_connections ({}): the other requests need connections too",
                self.database.order_batch_workers, self.database.max_connections
            ));
        }
        let r = &self.relay;
        if r.lease_ms <= r.heartbeat_ms + r.call_timeout_ms {
            problems.push(format!(
                "relay.lease_ms ({}) must exceed relay.heartbeat_ms + relay.call_timeout_ms ({})",
                r.lease_ms,
                r.heartbeat_ms + r.call_timeout_ms
            ));
        }
        problems
    }
}

/// The key each flag sets (`--config` names the file itself), for the configuration reference;
/// a test holds it to what the flags do.
pub const FLAGS: [(&str, &str); 8] = [
    ("grpc_addr", "--grpc-addr"),
    ("http_addr", "--http-addr"),
    ("admin_addr", "--admin-addr"),
    ("database.url", "--database-url"),
    ("kafka.brokers", "--kafka-brokers"),
    ("kafka.topic", "--kafka-topic"),
    ("kafka.properties", "--kafka-property"),
    ("log.json", "--log-json"),
];

/// Values given on the command line; they override everything else.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// gRPC listen address (default 0.0.0.0:8083).
    #[arg(long, global = true)]
    pub grpc_addr: Option<String>,
    /// HTTP/JSON gateway listen address (default 0.0.0.0:8084).
    #[arg(long, global = true)]
    pub http_addr: Option<String>,
    /// Admin listen address: metrics and probes (default 0.0.0.0:8085).
    #[arg(long, global = true)]
    pub admin_addr: Option<String>,
    /// PostgreSQL URL.
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Kafka bootstrap servers.
    #[arg(long, global = true)]
    pub kafka_brokers: Option<String>,
    /// Topic of the order events.
    #[arg(long, global = true)]
    pub kafka_topic: Option<String>,
    /// A librdkafka property, `key=value`; repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", global = true)]
    pub kafka_properties: Vec<String>,
    /// Logs as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
}

impl service_runtime::config::Layered for Settings {
    const PREFIX: &'static str = "LOMS";

    fn kafka_properties(&mut self) -> &mut Properties {
        &mut self.kafka.properties
    }

    fn validate(&self) -> Result<(), String> {
        Settings::validate(self)
    }
}

impl Settings {
    /// Builds the settings from every layer; `env` is the process environment in production
    /// and a given map in tests.
    pub fn load(
        overrides: &Overrides,
        env: Option<config::Map<String, String>>,
    ) -> Result<Self, config::ConfigError> {
        let flags = [
            ("grpc_addr", overrides.grpc_addr.as_ref()),
            ("http_addr", overrides.http_addr.as_ref()),
            ("admin_addr", overrides.admin_addr.as_ref()),
            ("database.url", overrides.database_url.as_ref()),
            ("kafka.brokers", overrides.kafka_brokers.as_ref()),
            ("kafka.topic", overrides.kafka_topic.as_ref()),
        ];
        let given = service_runtime::config::Given {
            file: overrides.config.as_deref(),
            flags: &flags,
            log_json: overrides.log_json,
            kafka_properties: &overrides.kafka_properties,
        };
        service_runtime::config::load(&given, env)
    }
}

fn default_instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .map(|h| format!("{h}-{}", std::process::id()))
        .unwrap_or_else(|| format!("loms-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> Option<config::Map<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn layers_override_in_order() {
        let dir = std::env::temp_dir().join(format!("loms-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("loms.toml");
        std::fs::write(
            &file,
            "grpc_addr = \"127.0.0.1:1\"\nhttp_addr = \"127.0.0.1:2\"\n[relay]\nbatch_size = 7\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            config: Some(file),
            grpc_addr: Some("127.0.0.1:3".into()),
            kafka_properties: vec!["linger.ms=7".into()],
            ..Default::default()
        };
        let s = Settings::load(
            &overrides,
            env(&[
                ("LOMS_HTTP_ADDR", "127.0.0.1:4"),
                ("LOMS_DATABASE__MAX_CONNECTIONS", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(s.grpc_addr, "127.0.0.1:3", "flag beats file");
        assert_eq!(s.http_addr, "127.0.0.1:4", "environment beats file");
        assert_eq!(s.relay.batch_size, 7, "file beats default");
        assert_eq!(s.database.max_connections, 5);
        assert_eq!(
            s.kafka.properties["security.protocol"].expose_secret(),
            "SASL_SSL"
        );
        assert_eq!(s.kafka.topic, "loms.order-events", "default");
        assert_eq!(s.kafka.properties["linger.ms"].expose_secret(), "7");
    }

    #[test]
    fn unknown_keys_and_zero_sizes_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("loms-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |text: &str| {
            let file = dir.join("loms.toml");
            std::fs::write(&file, text).unwrap();
            let overrides = Overrides {
                config: Some(file),
                ..Default::default()
            };
            Settings::load(&overrides, env(&[]))
                .map(drop)
                .unwrap_err()
                .to_string()
        };
        assert!(load("[relay]\nbatch_sise = 7\n").contains("batch_sise"));
        assert!(load("grcp_addr = \"x\"\n").contains("grcp_addr"));
        assert!(load("[relay]\nbatch_size = 0\n").contains("relay.batch_size"));
        assert!(load("[relay]\npoll_interval_ms = 0\n").contains("relay.poll_interval_ms"));
        assert!(load("[relay]\nlease_ms = 2000\n").contains("relay.lease_ms"));
        let env_typo = Settings::load(
            &Overrides::default(),
            env(&[("LOMS_RELAY__BATCHSIZE", "1")]),
        );
        assert!(env_typo.unwrap_err().to_string().contains("batchsize"));
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn secrets_are_not_printed() {
        let mut s = Settings::default();
        s.database.url = "postgres://loms:hunter2@db:5432/loms".into();
        s.kafka
            .properties
            .insert("sasl.password".into(), "hunter3".into());
        let printed = format!("{s:?}");
        let serialized = serde_json::to_string(&s).unwrap();
        for shown in [printed, serialized] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("hunter3"),
                "{shown}"
            );
        }
    }
}
