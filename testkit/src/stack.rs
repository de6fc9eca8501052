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
