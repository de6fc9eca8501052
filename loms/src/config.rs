//! Layered configuration: defaults in code < a TOML file (`--config`) < environment variables
//! (`LOMS_`, nested keys joined by `__`, e.g. `LOMS_DATABASE__URL`) < command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use service_runtime::kafka::Properties;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    pub grpc_addr: String,
    pub http_addr: String,
    /// Name of this replica in events and logs; defaults to the host name.
    pub instance_id: String,
    /// Largest HTTP request body accepted.
    pub http_body_limit_bytes: usize,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_timeout_ms: u64,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub relay: RelaySettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// May carry a password: never printed.
    #[serde(serialize_with = "service_runtime::secret::serialize")]
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// Server-side limit of one statement, so that no request hangs on a lock forever.
    pub statement_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub client_id: String,
    /// How long the producer retries one message before reporting a delivery error.
    pub message_timeout_ms: u64,
    /// Extra librdkafka properties (SASL, TLS, tuning), passed through as they are.
    #[serde(serialize_with = "service_runtime::secret::serialize_map")]
    pub properties: Properties,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RelaySettings {
    pub enabled: bool,
    pub batch_size: i64,
    /// Fallback poll for rows written by other replicas; this replica wakes the relay itself.
    pub poll_interval_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// PostgreSQL advisory lock key that elects the one active relay.
    pub lock_key: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct LogSettings {
    pub json: bool,
    /// `tracing_subscriber::EnvFilter` directives; RUST_LOG wins when set.
    pub filter: String,
    /// OTLP/HTTP endpoint spans are exported to (off when unset);
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` wins.
    pub otlp_endpoint: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            grpc_addr: "0.0.0.0:8083".into(),
            http_addr: "0.0.0.0:8084".into(),
            instance_id: default_instance_id(),
            http_body_limit_bytes: 64 * 1024,
            shutdown_timeout_ms: 10_000,
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
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: events_proto::TOPIC.into(),
            client_id: "loms".into(),
            message_timeout_ms: 10_000,
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
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            json: false,
            filter: "info".into(),
            otlp_endpoint: None,
        }
    }
}

impl RelaySettings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

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
    /// PostgreSQL URL.
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Kafka bootstrap servers.
    #[arg(long, global = true)]
    pub kafka_brokers: Option<String>,
    /// Topic of the order events.
    #[arg(long, global = true)]
    pub kafka_topic: Option<String>,
    /// Logs as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
}

impl Settings {
    /// Builds the settings from every layer; `env` is the process environment in production
    /// and a given map in tests.
    pub fn load(
        overrides: &Overrides,
        env: Option<config::Map<String, String>>,
    ) -> Result<Self, config::ConfigError> {
        let mut builder = service_runtime::config::layers(
            "LOMS",
            overrides.config.as_deref(),
            env,
            &[
                ("grpc_addr", overrides.grpc_addr.as_ref()),
                ("http_addr", overrides.http_addr.as_ref()),
                ("database.url", overrides.database_url.as_ref()),
                ("kafka.brokers", overrides.kafka_brokers.as_ref()),
                ("kafka.topic", overrides.kafka_topic.as_ref()),
            ],
        )?;
        if overrides.log_json {
            builder = builder.set_override("log.json", true)?;
        }
        builder.build()?.try_deserialize()
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
