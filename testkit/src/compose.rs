//! Reading `deploy/docker-compose.yml` for the static checks of the deployment.
use std::collections::BTreeMap;

use serde_json::Value;

/// A file of the repository, by its path from the root.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(crate::stack::root().join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The compose files: the default one, and the one with a three-node Kafka.
pub const FILES: [&str; 2] = [
    "deploy/docker-compose.yml",
    "deploy/docker-compose.replicated.yml",
];

/// The secure override, used over the default file (`-f docker-compose.yml -f` this).
pub const SECURE: &str = "deploy/docker-compose.secure.yml";

/// The environment of `service` with `docker-compose.yml` under `SECURE`: the override's
/// variables over the default file's, as compose merges them.
pub fn secure_environment(service: &str) -> BTreeMap<String, String> {
    let mut env = environment(&compose(), service);
    env.extend(environment(&compose_file(SECURE), service));
    env
}

/// The default compose file as JSON.
pub fn compose() -> Value {
    compose_file(FILES[0])
}

/// A compose file as JSON.
pub fn compose_file(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// The environment a service of the compose file is given, values as text.
pub fn environment(compose: &Value, service: &str) -> BTreeMap<String, String> {
    let env = compose["services"][service]["environment"]
        .as_object()
        .unwrap_or_else(|| panic!("{service} has an environment map"));
    env.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_string),
            )
        })
        .collect()
}

/// Checks that every `PREFIX_A__B` variable names a field `a.b` of the loaded settings
/// (serialized as JSON) and that the field took the variable's value: a misspelt name, which
/// the configuration would silently ignore, fails here. A secret serializes as a marker, so of
/// a secret field only its existence is checked here; its value, by the caller.
pub fn assert_env_configures(prefix: &str, env: &BTreeMap<String, String>, settings: &Value) {
    // OpenTelemetry's own variables are read by its SDK, not by the settings.
    for (name, value) in env.iter().filter(|(name, _)| !name.starts_with("OTEL_")) {
        let path = name
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{name} lacks the prefix {prefix}"));
        let mut field = settings;
        for key in path.to_lowercase().split("__") {
            field = field
                .get(key)
                .unwrap_or_else(|| panic!("{name}: the configuration has no field {key:?}"));
        }
        let loaded = field
            .as_str()
            .map_or_else(|| field.to_string(), str::to_string);
        if loaded != service_runtime::secret::REDACTED {
            assert_eq!(&loaded, value, "{name} was not applied");
        }
    }
}
