//! Layered configuration: defaults in code < a TOML file (`--config`) < environment variables
//! (`NOTIFIER_`, nested keys joined by `__`, e.g. `NOTIFIER_KAFKA__GROUP_ID`) < flags.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use service_runtime::kafka::{Properties, Security};
use service_runtime::telemetry::LogSettings;

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
/// The consumer group that logs every order event (and dead-letters what does not decode).
pub struct Settings {
    pub kafka: KafkaSettings,
    /// Where `/metrics`, `/readyz` and `/livez` are served (loms's name for its own); none by
    /// default.
    pub admin_addr: Option<String>,
    /// How many recent event ids are remembered to recognise duplicates.
    pub dedup_window: usize,
    /// The back-off between retries of a consume or a dead-letter write (as loms's relay).
    pub backoff_initial_ms: u64,
    /// The longest back-off.
    pub backoff_max_ms: u64,
    /// `[log]`, as loms has it.
    pub log: LogSettings,
    /// The names before both services shared theirs: still read, with a warning.
    #[serde(default, skip_serializing)]
    log_json: Option<bool>,
    /// Old name of `admin_addr`.
    #[serde(default, skip_serializing)]
    metrics_addr: Option<String>,
    /// Old name of `log.filter`.
    #[serde(default, skip_serializing)]
    log_filter: Option<String>,
    /// Old name of `log.otlp_endpoint`.
    #[serde(default, skip_serializing)]
    otlp_endpoint: Option<String>,
    /// Old name of `backoff_initial_ms`.
    #[serde(default, skip_serializing)]
    retry_initial_ms: Option<u64>,
    /// Old name of `backoff_max_ms`.
    #[serde(default, skip_serializing)]
    retry_max_ms: Option<u64>,
    /// `(old, new)` for each old name found, for the log once it is set up.
    #[serde(skip)]
    pub renamed: Vec<(&'static str, &'static str)>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The topic of the order events.
    pub topic: String,
    /// The consumer group: its members share the topic's partitions.
    pub group_id: String,
    /// Where messages that do not decode are written, with why, before their offset is committed.
    pub dlq_topic: String,
    /// `client.id`, as the brokers log it.
    pub client_id: String,
    /// TLS and SASL: `[kafka.security]`.
    pub security: Security,
    /// Extra librdkafka properties (timeouts, or any security setting not named in
    /// `[kafka.security]`), passed through as they are, last.
    #[serde(serialize_with = "service_runtime::secret::serialize_map")]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub properties: Properties,
    /// A crashed member's partitions move after this long; a clean stop hands them over at once.
    pub session_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            kafka: KafkaSettings::default(),
            admin_addr: None,
            dedup_window: 100_000,
            backoff_initial_ms: 200,
            backoff_max_ms: 5_000,
            log: LogSettings::default(),
            log_json: None,
            metrics_addr: None,
            log_filter: None,
            otlp_endpoint: None,
            retry_initial_ms: None,
            retry_max_ms: None,
            renamed: Vec::new(),
        }
    }
}

service_runtime::kafka_client_settings!(KafkaSettings);

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: events_proto::TOPIC.into(),
            group_id: "notifier".into(),
            dlq_topic: format!("{}.dlq", events_proto::TOPIC),
            client_id: "notifier".into(),
            security: Security::default(),
            properties: Properties::new(),
            session_timeout_ms: 10_000,
        }
    }
}

/// The key each flag sets (`--config` names the file itself), for the configuration reference;
/// a test holds it to what the flags do.
pub const FLAGS: [(&str, &str); 7] = [
    ("kafka.brokers", "--kafka-brokers"),
    ("kafka.topic", "--kafka-topic"),
    ("kafka.group_id", "--group-id"),
    ("kafka.dlq_topic", "--dlq-topic"),
    ("admin_addr", "--admin-addr"),
    ("kafka.properties", "--kafka-property"),
    ("log.json", "--log-json"),
];

/// Command-line flags; they override every other layer.
#[derive(Debug, Default, clap::Parser)]
#[command(version, about = "Logs every order event of loms, at least once.")]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    pub kafka_brokers: Option<String>,
    /// Topic of the order events (default loms.order-events).
    #[arg(long)]
    pub kafka_topic: Option<String>,
    /// Old name of --kafka-topic: still read, with a warning.
    #[arg(long, hide = true)]
    pub topic: Option<String>,
    /// Consumer group (default notifier).
    #[arg(long)]
    pub group_id: Option<String>,
    /// Dead-letter topic for messages that do not decode (default loms.order-events.dlq).
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// Serve /metrics, /readyz and /livez on this address, e.g. 0.0.0.0:9100.
    #[arg(long)]
    pub admin_addr: Option<String>,
    /// Old name of --admin-addr: still read, with a warning.
    #[arg(long, hide = true)]
    pub metrics_addr: Option<String>,
    /// A librdkafka property, `key=value`; repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_properties: Vec<String>,
    /// Logs as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

impl Settings {
    /// The back-off between retries of a consume or dead-letter write.
    pub fn backoff(&self) -> service_runtime::Backoff {
        service_runtime::Backoff::new(
            std::time::Duration::from_millis(self.backoff_initial_ms),
            std::time::Duration::from_millis(self.backoff_max_ms),
        )
    }

    pub fn load(
        flags: &Flags,
        env: Option<config::Map<String, String>>,
    ) -> Result<Self, config::ConfigError> {
        let keys = [
            ("kafka.brokers", flags.kafka_brokers.as_ref()),
            (
                "kafka.topic",
                flags.kafka_topic.as_ref().or(flags.topic.as_ref()),
            ),
            ("kafka.group_id", flags.group_id.as_ref()),
            ("kafka.dlq_topic", flags.dlq_topic.as_ref()),
            (
                "admin_addr",
                flags.admin_addr.as_ref().or(flags.metrics_addr.as_ref()),
            ),
        ];
        let given = service_runtime::config::Given {
            file: flags.config.as_deref(),
            flags: &keys,
            log_json: flags.log_json,
            kafka_properties: &flags.kafka_properties,
        };
        let mut settings: Self = service_runtime::config::load(&given, env)?;
        for (given, old, new) in [
            (&flags.topic, "--topic", "--kafka-topic"),
            (&flags.metrics_addr, "--metrics-addr", "--admin-addr"),
        ] {
            if given.is_some() {
                settings.renamed.push((old, new));
            }
        }
        Ok(settings)
    }

    /// Logs each old name read, with its new name.
    pub fn warn_renamed(&self) {
        for (old, new) in &self.renamed {
            tracing::warn!(
                old,
                new,
                "configuration: {old} is an old name, read as {new}; use {new}"
            );
        }
    }

    /// Zero sizes and intervals are refused at start, by name.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("dedup_window", self.dedup_window as u64),
            ("backoff_initial_ms", self.backoff_initial_ms),
            ("backoff_max_ms", self.backoff_max_ms),
            ("kafka.session_timeout_ms", self.kafka.session_timeout_ms),
        ];
        service_runtime::config::verdict(service_runtime::config::zero_values(&positive))
    }
}

impl service_runtime::config::Layered for Settings {
    const PREFIX: &'static str = "NOTIFIER";

    fn kafka_properties(&mut self) -> &mut Properties {
        &mut self.kafka.properties
    }

    fn validate(&self) -> Result<(), String> {
        Settings::validate(self)
    }

    /// Moves what an old name set to its new name, and notes it; an old name is only read when
    /// given, so it overrides the new name's value.
    fn adopt_old_names(&mut self) {
        if let Some(json) = self.log_json.take() {
            self.log.json |= json;
            self.renamed.push(("log_json", "log.json"));
        }
        if let Some(filter) = self.log_filter.take() {
            self.log.filter = filter;
            self.renamed.push(("log_filter", "log.filter"));
        }
        if let Some(endpoint) = self.otlp_endpoint.take() {
            self.log.otlp_endpoint = Some(endpoint);
            self.renamed.push(("otlp_endpoint", "log.otlp_endpoint"));
        }
        if let Some(ms) = self.retry_initial_ms.take() {
            self.backoff_initial_ms = ms;
            self.renamed
                .push(("retry_initial_ms", "backoff_initial_ms"));
        }
        if let Some(addr) = self.metrics_addr.take() {
            self.admin_addr = Some(addr);
            self.renamed.push(("metrics_addr", "admin_addr"));
        }
        if let Some(ms) = self.retry_max_ms.take() {
            self.backoff_max_ms = ms;
            self.renamed.push(("retry_max_ms", "backoff_max_ms"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment of `pairs`, as the tests give it to `Settings::load`.
    fn env_of(pairs: &[(&str, &str)]) -> config::Map<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flags_beat_environment_beat_defaults() {
        let env = env_of(&[
            ("NOTIFIER_KAFKA__GROUP_ID", "from-env"),
            ("NOTIFIER_KAFKA__TOPIC", "env-topic"),
            ("NOTIFIER_DEDUP_WINDOW", "10"),
        ]);
        let flags = Flags {
            topic: Some("flag-topic".into()),
            kafka_properties: vec!["sasl.password=hunter2".into()],
            ..Default::default()
        };
        let s = Settings::load(&flags, Some(env)).unwrap();
        assert_eq!(s.kafka.topic, "flag-topic");
        assert_eq!(s.kafka.group_id, "from-env");
        assert_eq!(s.dedup_window, 10);
        assert_eq!(s.kafka.dlq_topic, "loms.order-events.dlq");
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&s.kafka.properties["sasl.password"]),
            "hunter2"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
    }

    #[test]
    fn unknown_keys_and_zero_sizes_are_refused_by_name() {
        let env = |k: &str, v: &str| Some(env_of(&[(k, v)]));
        let error = |k, v| {
            Settings::load(&Flags::default(), env(k, v))
                .unwrap_err()
                .to_string()
        };
        assert!(error("NOTIFIER_KAFKA__GROUPID", "x").contains("groupid"));
        assert!(error("NOTIFIER_DEDUP_WINDOW", "0").contains("dedup_window"));
    }

    #[test]
    fn old_names_are_read_as_the_shared_ones_and_noted() {
        let env = env_of(&[
            ("NOTIFIER_LOG_JSON", "true"),
            ("NOTIFIER_RETRY_MAX_MS", "900"),
            ("NOTIFIER_LOG__FILTER", "debug"),
        ]);
        let s = Settings::load(&Flags::default(), Some(env)).unwrap();
        assert!(s.log.json);
        assert_eq!(s.backoff_max_ms, 900);
        assert_eq!(s.log.filter, "debug", "the new name, given alone");
        assert_eq!(
            s.renamed,
            [("log_json", "log.json"), ("retry_max_ms", "backoff_max_ms")]
        );
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("retry_max_ms").is_none() && json["backoff_max_ms"] == 900);
    }

    #[test]
    fn old_flag_and_key_names_are_read_and_noted() {
        use clap::Parser;
        let flags =
            Flags::try_parse_from(["notifier", "--topic", "t", "--metrics-addr", "a:1"]).unwrap();
        let s = Settings::load(&flags, Some(env_of(&[]))).unwrap();
        assert_eq!(
            (s.kafka.topic.as_str(), s.admin_addr.as_deref()),
            ("t", Some("a:1"))
        );
        assert_eq!(
            s.renamed,
            [
                ("--topic", "--kafka-topic"),
                ("--metrics-addr", "--admin-addr")
            ]
        );
        let env = env_of(&[("NOTIFIER_METRICS_ADDR", "b:2")]);
        let s = Settings::load(&Flags::default(), Some(env)).unwrap();
        assert_eq!(s.admin_addr.as_deref(), Some("b:2"));
        assert_eq!(s.renamed, [("metrics_addr", "admin_addr")]);
    }

    #[test]
    fn a_property_without_value_is_an_error() {
        let flags = Flags {
            kafka_properties: vec!["nonsense".into()],
            ..Default::default()
        };
        assert!(Settings::load(&flags, Some(Default::default())).is_err());
    }
}
