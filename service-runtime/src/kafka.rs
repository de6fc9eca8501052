//! Kafka client settings both services share: the brokers, the client id, and librdkafka
//! properties passed through from configuration (SASL, TLS, tuning). Pass-through properties are
//! applied last, so an operator can override any default a service sets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Pass-through librdkafka properties; values may be secrets and are never printed.
pub type Properties = BTreeMap<String, SecretString>;

/// Settings for a quick and safe failover, for every client of a replicated cluster (and
/// harmless on one broker). librdkafka already refreshes metadata at once when a request meets
/// a partition whose leader moved; these shorten the rest:
/// - a node that went away is tried again within a second once it is back, not after up to
///   ten (the default maximum reconnect back-off);
/// - metadata is refreshed every few seconds even when nothing fails, so that a leader moved
///   back (a rolling restart rebalancing leadership) is followed soon, not after five minutes.
pub const FAILOVER: [(&str, &str); 2] = [
    ("reconnect.backoff.max.ms", "1000"),
    ("topic.metadata.refresh.interval.ms", "5000"),
];

/// How a client connects and authenticates: the settings users look for, each one librdkafka
/// property (`[kafka.security]`, or `LOMS_KAFKA__SECURITY__PROTOCOL`, ...). Unset ones leave
/// librdkafka's default (plaintext). Secrets are never printed; a password may also come from a
/// file (a mounted secret), read when a client is created.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// `security.protocol`: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    pub protocol: Option<String>,
    /// `sasl.mechanism`: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
    pub sasl_mechanism: Option<String>,
    /// `sasl.username`.
    pub sasl_username: Option<String>,
    /// `sasl.password`.
    #[serde(serialize_with = "crate::secret::serialize_option")]
    #[schemars(with = "Option<String>")]
    pub sasl_password: Option<SecretString>,
    /// A file holding `sasl.password` (trailing newline ignored); wins over `sasl_password`.
    pub sasl_password_file: Option<PathBuf>,
    /// `ssl.ca.location`: the CA certificates (PEM) the brokers' certificates must chain to;
    /// the system's trust store when unset.
    pub ca_location: Option<String>,
    /// `ssl.certificate.location`: this client's certificate (PEM), for brokers that ask.
    pub certificate_location: Option<String>,
    /// `ssl.key.location`: its private key (PEM).
    pub key_location: Option<String>,
    /// `ssl.key.password`, when the key is encrypted.
    #[serde(serialize_with = "crate::secret::serialize_option")]
    #[schemars(with = "Option<String>")]
    pub key_password: Option<SecretString>,
}

impl Security {
    /// The librdkafka properties these settings stand for.
    pub fn properties(&self) -> Result<Vec<(&'static str, String)>, String> {
        let password = match &self.sasl_password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map(|p| p.trim_end_matches(['\r', '\n']).to_string())
                    .map_err(|e| {
                        format!("kafka.security.sasl_password_file {}: {e}", path.display())
                    })?,
            ),
            None => self
                .sasl_password
                .as_ref()
                .map(|p| p.expose_secret().to_string()),
        };
        let named = [
            ("security.protocol", self.protocol.clone()),
            ("sasl.mechanism", self.sasl_mechanism.clone()),
            ("sasl.username", self.sasl_username.clone()),
            ("sasl.password", password),
            ("ssl.ca.location", self.ca_location.clone()),
            (
                "ssl.certificate.location",
                self.certificate_location.clone(),
            ),
            ("ssl.key.location", self.key_location.clone()),
            (
                "ssl.key.password",
                self.key_password
                    .as_ref()
                    .map(|p| p.expose_secret().to_string()),
            ),
        ];
        Ok(named
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| (key, v)))
            .collect())
    }
}

/// What every `[kafka]` section has, whatever else its service adds there: both services build
/// their clients from it one way.
pub trait ClientSettings {
    fn brokers(&self) -> &str;
    fn client_id(&self) -> &str;
    fn security(&self) -> &Security;
    fn properties(&self) -> &Properties;

    /// The configuration of one client: `client.id` is the settings' with `suffix` (`""`, or
    /// `"-dlq"` for a second client), `defaults` the client's own settings (see
    /// [`client_config`]).
    fn client<'a>(
        &self,
        suffix: &str,
        defaults: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Result<ClientConfig, String> {
        client_config(
            self.brokers(),
            &format!("{}{suffix}", self.client_id()),
            defaults,
            self.security(),
            self.properties(),
        )
    }
}

/// Implements [`ClientSettings`] for a settings type with the fields `brokers`, `client_id`,
/// `security` and `properties`.
#[macro_export]
macro_rules! kafka_client_settings {
    ($settings:ty) => {
        impl $crate::kafka::ClientSettings for $settings {
            fn brokers(&self) -> &str {
                &self.brokers
            }
            fn client_id(&self) -> &str {
                &self.client_id
            }
            fn security(&self) -> &$crate::kafka::Security {
                &self.security
            }
            fn properties(&self) -> &$crate::kafka::Properties {
                &self.properties
            }
        }
    };
}

/// A client configuration: brokers and client id, the failover settings, the service's
/// `defaults`, the `security` settings, then the pass-through `properties`.
pub fn client_config<'a>(
    brokers: &str,
    client_id: &str,
    defaults: impl IntoIterator<Item = (&'a str, String)>,
    security: &Security,
    properties: &Properties,
) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id);
    for (key, value) in FAILOVER {
        config.set(key, value);
    }
    for (key, value) in defaults {
        config.set(key, value);
    }
    for (key, value) in security.properties()? {
        config.set(key, value);
    }
    for (key, value) in properties {
        config.set(key, value.expose_secret());
    }
    Ok(config)
}

/// Requests of one kind (`Produce`, `Fetch`) a client has sent to all brokers, from librdkafka's
/// statistics, turned into increments of a counter: librdkafka reports totals since the client
/// was created, and a service creates its clients again after some failures.
#[derive(Debug, Default)]
pub struct RequestCount {
    seen: std::sync::atomic::AtomicU64,
}

impl RequestCount {
    /// The requests of `kind` sent since the previous statistics of this client.
    pub fn since_last(&self, statistics: &rdkafka::Statistics, kind: &str) -> u64 {
        let total: i64 = statistics
            .brokers
            .values()
            .filter_map(|b| b.req.get(kind))
            .sum();
        let total = u64::try_from(total).unwrap_or(0);
        let before = self.seen.swap(total, std::sync::atomic::Ordering::Relaxed);
        total.saturating_sub(before)
    }
}

/// Adds a `KEY=VALUE` property given on the command line.
pub fn add_property(properties: &mut Properties, pair: &str) -> Result<(), String> {
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("kafka property {pair:?} is not KEY=VALUE"))?;
    properties.insert(key.to_string(), SecretString::from(value.to_string()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_come_last() {
        let mut properties = Properties::new();
        add_property(&mut properties, "acks=1").unwrap();
        add_property(&mut properties, "sasl.password=hunter2").unwrap();
        assert!(add_property(&mut properties, "nonsense").is_err());
        let config = client_config(
            "b:9092",
            "me",
            [("acks", "all".to_string())],
            &Security::default(),
            &properties,
        )
        .unwrap();
        assert_eq!(config.get("acks"), Some("1"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(config.get("client.id"), Some("me"));
        assert_eq!(config.get("sasl.password"), Some("hunter2"));
        assert_eq!(config.get("reconnect.backoff.max.ms"), Some("1000"));
        assert!(!format!("{properties:?}").contains("hunter2"));
    }

    #[test]
    fn security_settings_become_librdkafka_properties() {
        let dir = std::env::temp_dir().join(format!("kafka-security-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "from-the-file\n").unwrap();
        let security = Security {
            protocol: Some("SASL_SSL".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("loms".into()),
            sasl_password: Some("inline".into()),
            sasl_password_file: Some(file),
            ca_location: Some("/ca.pem".into()),
            ..Default::default()
        };
        let mut properties = Properties::new();
        add_property(&mut properties, "ssl.ca.location=/other.pem").unwrap();
        let config = client_config("b:9092", "me", [], &security, &properties).unwrap();
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("loms"));
        assert_eq!(
            config.get("sasl.password"),
            Some("from-the-file"),
            "the file wins"
        );
        assert_eq!(
            config.get("ssl.ca.location"),
            Some("/other.pem"),
            "pass-through last"
        );
        assert!(!format!("{security:?}").contains("inline"));
        let missing = Security {
            sasl_password_file: Some("/no/such/file".into()),
            ..Default::default()
        };
        let error = client_config("b:9092", "me", [], &missing, &Properties::new()).unwrap_err();
        assert!(
            error.contains("sasl_password_file") && error.contains("/no/such/file"),
            "{error}"
        );
    }
}
