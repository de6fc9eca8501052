//! Kafka client settings both services share: the brokers, the client id, and librdkafka
//! properties passed through from configuration (SASL, TLS, tuning). Pass-through properties are
//! applied last, so an operator can override any default a service sets.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use secrecy::{ExposeSecret, SecretString};

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

/// A client configuration: brokers and client id, the failover settings, then the service's
/// `defaults`, then the pass-through `properties`.
pub fn client_config<'a>(
    brokers: &str,
    client_id: &str,
    defaults: impl IntoIterator<Item = (&'a str, String)>,
    properties: &Properties,
) -> ClientConfig {
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
    for (key, value) in properties {
        config.set(key, value.expose_secret());
    }
    config
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
        let config = client_config("b:9092", "me", [("acks", "all".to_string())], &properties);
        assert_eq!(config.get("acks"), Some("1"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(config.get("client.id"), Some("me"));
        assert_eq!(config.get("sasl.password"), Some("hunter2"));
        assert_eq!(config.get("reconnect.backoff.max.ms"), Some("1000"));
        assert!(!format!("{properties:?}").contains("hunter2"));
    }
}
