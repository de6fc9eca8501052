//! Layered configuration, as both services load it: defaults in code < a TOML file < environment
//! variables (`PREFIX_`, nested keys joined by `__`) < command-line flags.

use std::path::Path;

use config::builder::DefaultState;
use config::{ConfigBuilder, ConfigError, Environment, File, Map};

/// The layers above the defaults. `env` is the process environment when `None` (production)
/// and the given map in tests; `flags` are (key, value given on the command line).
pub fn layers(
    prefix: &str,
    file: Option<&Path>,
    env: Option<Map<String, String>>,
    flags: &[(&str, Option<&String>)],
) -> Result<ConfigBuilder<DefaultState>, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(File::from(path));
    }
    builder = builder.add_source(
        Environment::with_prefix(prefix)
            .prefix_separator("_")
            .separator("__")
            .source(env),
    );
    for (key, value) in flags {
        if let Some(value) = value {
            builder = builder.set_override(*key, value.as_str())?;
        }
    }
    Ok(builder)
}
