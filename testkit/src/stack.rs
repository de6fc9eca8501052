//! The stack under test: PostgreSQL and Kafka named by `DATABASE_URL` and `KAFKA_BROKERS`, which
//! `make test` (through `deploy/local/with-stack.sh`) sets, with `STACK_DIR` and the ports that
//! let `stack.sh` stop and start the pieces of that very stack.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test kit sits in the repository")
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run through `make test` (or deploy/local/with-stack.sh)")
    })
}

/// URL of the stack's PostgreSQL server (its default database).
pub fn database_url() -> String {
    var("DATABASE_URL")
}

/// Bootstrap servers of the stack's Kafka.
pub fn brokers() -> String {
    var("KAFKA_BROKERS")
}

/// `[kafka.security]` keys and the `stack.sh env` variables that give them.
const SECURITY_VARS: [(&str, &str); 5] = [
    ("PROTOCOL", "KAFKA_SECURITY_PROTOCOL"),
    ("SASL_MECHANISM", "KAFKA_SASL_MECHANISM"),
    ("SASL_USERNAME", "KAFKA_SASL_USERNAME"),
    ("SASL_PASSWORD", "KAFKA_SASL_PASSWORD"),
    ("CA_LOCATION", "KAFKA_CA_LOCATION"),
];

/// A stack's Kafka security as `[kafka.security]` keys (`PROTOCOL`, ...) with their values, the
/// variables read by `lookup`: none for a plaintext stack.
fn security_from(lookup: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
    SECURITY_VARS
        .into_iter()
        .filter_map(|(key, var)| Some((key, lookup(var).filter(|v| !v.is_empty())?)))
        .collect()
}

/// The stack under test's Kafka security, from what `stack.sh env` printed.
pub fn kafka_security() -> Vec<(&'static str, String)> {
    security_from(|var| std::env::var(var).ok())
}

/// `security` as a service's variables (`LOMS_KAFKA__SECURITY__PROTOCOL`, ...), for `prefix`
/// `LOMS` or `NOTIFIER`.
pub fn security_env(prefix: &str, security: &[(&str, String)]) -> Vec<(String, String)> {
    security
        .iter()
        .map(|(key, value)| (format!("{prefix}_KAFKA__SECURITY__{key}"), value.clone()))
        .collect()
}

/// A Kafka client configuration for the stack: its brokers, and its security if it has any.
pub fn kafka_client() -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", brokers());
    with_kafka_security(&mut config);
    config
}

/// `config` with the stack's security properties, if it has any: read as the services read
/// `[kafka.security]`, and turned into librdkafka's properties by the same code.
pub fn with_kafka_security(config: &mut rdkafka::ClientConfig) -> &mut rdkafka::ClientConfig {
    let settings: serde_json::Map<String, serde_json::Value> = kafka_security()
        .into_iter()
        .map(|(key, value)| (key.to_lowercase(), value.into()))
        .collect();
    let security: service_runtime::kafka::Security =
        serde_json::from_value(settings.into()).expect("the stack's security settings");
    for (key, value) in security
        .properties()
        .expect("the stack's security properties")
    {
        config.set(key, value);
    }
    config
}

/// Runs `deploy/local/stack.sh <command>` on the stack under test (e.g. `kafka-stop`, or
/// `kafka-kill 2` for one node of three).
pub fn stack(command: &str) {
    let status = Command::new("bash")
        .arg(root().join("deploy/local/stack.sh"))
        .args(command.split_whitespace())
        .status()
        .expect("run stack.sh");
    assert!(status.success(), "stack.sh {command} failed");
}

/// `target/<name>/`, created: where the system programs write their reports.
pub fn target_dir(name: &str) -> PathBuf {
    let dir = root().join("target").join(name);
    std::fs::create_dir_all(&dir).expect("create the output folder");
    dir
}

/// A stack of a test's own, in its own folder on free ports, made with `settings` (such as
/// `KAFKA_SECURITY=sasl_ssl`, `PG_TLS=1`): up when made, down (and its folder gone) when
/// dropped. [`PrivateStack::var`] reads what its `stack.sh env` prints.
pub struct PrivateStack {
    pub dir: PathBuf,
    vars: Vec<(String, String)>,
    env: std::collections::BTreeMap<String, String>,
}

impl PrivateStack {
    pub fn up(settings: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("loms-private-stack-{}", crate::unique()));
        std::fs::create_dir_all(&dir).expect("create the stack folder");
        // PostgreSQL runs as its own user when the tests run as root.
        let _ = Command::new("chmod").arg("755").arg(&dir).status();
        let port = || crate::process::free_port().to_string();
        let mut vars: Vec<(String, String)> = vec![
            ("STACK_DIR".into(), dir.to_string_lossy().into_owned()),
            ("PG_PORT".into(), port()),
            ("KAFKA_PORT".into(), port()),
            ("KAFKA_CONTROLLER_PORT".into(), port()),
            ("KAFKA_NODES".into(), "1".into()),
        ];
        vars.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut stack = Self {
            dir,
            vars,
            env: Default::default(),
        };
        let up = stack.command("up").status().expect("run stack.sh up");
        assert!(up.success(), "stack.sh up of a private stack failed");
        let printed = stack.command("env").output().expect("run stack.sh env");
        stack.env = String::from_utf8_lossy(&printed.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        stack
    }

    fn command(&self, command: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(root().join("deploy/local/stack.sh"))
            .arg(command)
            // Only what this stack is made of: not the stack under test's.
            .env_remove("KAFKA_PORTS")
            .env_remove("KAFKA_CONTROLLER_PORTS")
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Its Kafka security, as [`kafka_security`] gives the stack under test's.
    pub fn kafka_security(&self) -> Vec<(&'static str, String)> {
        security_from(|var| self.env.get(var).cloned())
    }

    /// A line of its `stack.sh env` (`DATABASE_URL`, `KAFKA_BROKERS`, ...).
    pub fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in the stack's env: {:?}", self.env.keys()))
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let _ = self.command("down").status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A certificate authority of its own in `dir` (`deploy/local/certs.sh`): `ca.pem`, a server
/// certificate for 127.0.0.1 and localhost (`server.pem`, `server.key`), a client certificate
/// (`client.pem`, `client.key`).
pub fn certificates(dir: &Path) -> PathBuf {
    let made = Command::new("bash")
        .arg(root().join("deploy/local/certs.sh"))
        .arg(dir)
        .status()
        .expect("run certs.sh");
    assert!(made.success(), "certs.sh {} failed", dir.display());
    dir.to_path_buf()
}
