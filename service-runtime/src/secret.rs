//! Secrets in configuration are `secrecy::SecretString`s, so `Debug` never shows them; they
//! serialize (for the configuration checks) as a fixed marker, never as their value.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Serializer;

/// What a secret serializes to.
pub const REDACTED: &str = "[REDACTED]";

pub fn serialize<S: Serializer>(_: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(REDACTED)
}

pub fn serialize_option<S: Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_some(REDACTED),
        None => serializer.serialize_none(),
    }
}

pub fn serialize_map<S: Serializer>(
    map: &BTreeMap<String, SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.keys().map(|k| (k, REDACTED)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Holder {
        #[serde(serialize_with = "serialize")]
        password: SecretString,
        #[serde(serialize_with = "serialize_map")]
        properties: BTreeMap<String, SecretString>,
    }

    #[test]
    fn secrets_serialize_as_the_marker() {
        let holder = Holder {
            password: "hunter2".into(),
            properties: [("sasl.password".to_string(), "hunter3".into())].into(),
        };
        let json = serde_json::to_string(&holder).unwrap();
        assert_eq!(
            json,
            r#"{"password":"[REDACTED]","properties":{"sasl.password":"[REDACTED]"}}"#
        );
    }
}
