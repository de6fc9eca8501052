//! Layered configuration, as both services load it: defaults in code < a TOML file < environment
//! variables (`PREFIX_`, nested keys joined by `__`) < command-line flags. Unknown keys are
//! refused (each settings type denies them), `--kafka-property` pairs are added last, and the
//! result is validated before anything starts.

use std::path::Path;

use config::{ConfigError, Environment, File, Map};
use serde::de::DeserializeOwned;

use crate::kafka::Properties;

/// A service's settings, as [`load`] builds them.
pub trait Layered: DeserializeOwned {
    /// The environment variables' prefix, `LOMS` or `NOTIFIER`.
    const PREFIX: &'static str;
    /// Where `--kafka-property` pairs go.
    fn kafka_properties(&mut self) -> &mut Properties;
    /// Moves what an old key name set to its new name (renamed keys are read, not refused).
    fn adopt_old_names(&mut self) {}
    /// Values no layer may set (zero sizes, contradictions), named in the error.
    fn validate(&self) -> Result<(), String>;
}

/// What the command line gave.
pub struct Given<'a> {
    /// `--config`.
    pub file: Option<&'a Path>,
    /// (key, value) of each flag that sets one key.
    pub flags: &'a [(&'a str, Option<&'a String>)],
    /// `--log-json`.
    pub log_json: bool,
    /// `--kafka-property key=value`, repeatable.
    pub kafka_properties: &'a [String],
}

/// Builds the settings from every layer; `env` is the process environment when `None`
/// (production) and the given map in tests.
pub fn load<T: Layered>(
    given: &Given<'_>,
    env: Option<Map<String, String>>,
) -> Result<T, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = given.file {
        builder = builder.add_source(File::from(path));
    }
    builder = builder.add_source(
        Environment::with_prefix(T::PREFIX)
            .prefix_separator("_")
            .separator("__")
            .source(env),
    );
    for (key, value) in given.flags {
        if let Some(value) = value {
            builder = builder.set_override(*key, value.as_str())?;
        }
    }
    if given.log_json {
        builder = builder.set_override("log.json", true)?;
    }
    let mut settings: T = builder.build()?.try_deserialize()?;
    settings.adopt_old_names();
    for property in given.kafka_properties {
        crate::kafka::add_property(settings.kafka_properties(), property)
            .map_err(ConfigError::Message)?;
    }
    settings.validate().map_err(ConfigError::Message)?;
    Ok(settings)
}

/// "`key` must be greater than 0" for each of `values` that is 0.
pub fn zero_values(values: &[(&str, u64)]) -> Vec<String> {
    values
        .iter()
        .filter(|(_, v)| *v == 0)
        .map(|(k, _)| format!("{k} must be greater than 0"))
        .collect()
}

/// The problems found, as one error naming them all.
pub fn verdict(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// `settings` checked again, for those built in code rather than loaded (tests, tools).
pub fn check<T: Layered>(settings: &T) -> Result<(), ConfigError> {
    settings
        .validate()
        .map_err(|e| ConfigError::Message(format!("configuration: {e}")))
}
