//! `make run` as a user runs it: `deploy/local/run.sh` in a process group of its own (a
//! terminal's foreground job) on a private stack; an order is made and its events logged; then
//! SIGINT to the whole group, as Ctrl-C sends it; meanwhile the Prometheus it started scrapes
//! every service. Everything it started must be gone, and the
//! script must have stopped by itself.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::eventually;
use testkit::process::{bin_dir, free_port};

/// The private stack starts from nothing: PostgreSQL's initdb and Kafka's first start.
const START_PATIENCE: Duration = Duration::from_secs(180);
/// Graceful stop of the services, then of the stack.
const STOP_PATIENCE: Duration = Duration::from_secs(90);
/// Exit status of a script stopped by SIGINT.
const INTERRUPTED: i32 = 130;

/// Processes that run.sh started for the stack in `stack_dir`: it is on their command line
/// (PostgreSQL, Kafka) or in their environment (`STACK_DIR`: the services, Jaeger, the log
/// prefixers). As (pid, command line).
fn started_by_the_run(stack_dir: &Path) -> Vec<(String, String)> {
    let marker = stack_dir.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let read = |name| std::fs::read(entry.path().join(name)).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&read("cmdline")).replace('\0', " ");
        let environ = String::from_utf8_lossy(&read("environ")).into_owned();
        if cmdline.contains(&marker) || environ.contains(&format!("STACK_DIR={marker}\0")) {
            found.push((entry.file_name().to_string_lossy().into_owned(), cmdline));
        }
    }
    found
}

/// Kills what the run left, should the test fail before the run stopped it.
struct Leftovers<'a>(&'a Path);

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        for (pid, _) in started_by_the_run(self.0) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

#[tokio::test]
async fn ctrl_c_stops_the_services_and_then_the_stack() {
    let stack_dir = std::env::temp_dir().join(format!("loms-run-test-{}", testkit::unique()));
    std::fs::create_dir_all(&stack_dir).unwrap();
    let _leftovers = Leftovers(&stack_dir);
    // PostgreSQL runs as its own user when the tests run as root.
    Command::new("chmod")
        .arg("755")
        .arg(&stack_dir)
        .status()
        .unwrap();
    let (pg, kafka, grpc, jaeger) = (free_port(), free_port(), free_port(), free_port());
    let prometheus = free_port();
    let notifier_metrics: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    // Built (once) here as `make test` builds it: run.sh starts Jaeger when it is built.
    let built = Command::new(testkit::stack::root().join("deploy/local/jaeger.sh"))
        .status()
        .unwrap();
    assert!(built.success(), "Jaeger builds");
    let log = stack_dir.join("run.log");
    // One open file for both streams: two would write over each other.
    let log_file = std::fs::File::create(&log).unwrap();
    // A shell started in the background by a script (as CI may start this suite) gets SIGINT
    // ignored, and a script cannot trap a signal ignored at its start: reset it, as a terminal
    // has it.
    let mut run = Command::new("env")
        .args(["--default-signal=INT", "bash"])
        .arg(testkit::stack::root().join("deploy/local/run.sh"))
        .env("STACK_DIR", &stack_dir)
        .env("PG_PORT", pg.to_string())
        .env("KAFKA_PORT", kafka.to_string())
        .env("KAFKA_CONTROLLER_PORT", free_port().to_string())
        .env("LOMS_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("LOMS_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("LOMS_ADMIN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("NOTIFIERS_METRICS_ADDRS", notifier_metrics.join(" "))
        .env("PROMETHEUS_ADDR", format!("127.0.0.1:{prometheus}"))
        .env("BIN_DIR", bin_dir())
        .env(
            "JAEGER_OTLP_HTTP_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("JAEGER_QUERY_ADDR", format!("127.0.0.1:{jaeger}"))
        .env(
            "JAEGER_QUERY_GRPC_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .expect("start run.sh");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // An order, and its events logged by a notifier through the prefixed output.
    let address = format!("http://127.0.0.1:{grpc}");
    eventually("loms serves", START_PATIENCE, || {
        if let Some(status) = run.try_wait().unwrap() {
            panic!(
                "run.sh exited ({status}) before loms served:\n{}",
                log_text()
            );
        }
        let address = address.clone();
        async move { api::LomsClient::connect(address).await.is_ok() }
    })
    .await;
    let mut client = api::LomsClient::connect(address).await.unwrap();
    let order_id = testkit::one_order(&mut client).await;
    eventually("its events are logged", START_PATIENCE, || {
        let text = log_text();
        std::future::ready(
            text.lines()
                .filter(|l| l.starts_with("notifier-") && l.contains("order event"))
                .filter(|l| l.contains(&format!("order_id={order_id} ")))
                .count()
                >= 2,
        )
    })
    .await;

    // Their spans in the Jaeger it started.
    let services = format!("http://127.0.0.1:{jaeger}/api/services");
    eventually(
        "Jaeger knows loms and the notifier",
        START_PATIENCE,
        || async {
            let Ok(reply) = reqwest::get(&services).await else {
                return false;
            };
            let text = reply.text().await.unwrap_or_default();
            text.contains("\"loms\"") && text.contains("\"notifier\"")
        },
    )
    .await;

    // The Prometheus it started (Debian's, which setup.sh installs) scrapes all four services
    // and has the shipped alert rules.
    let api = |path: &'static str| {
        let url = format!("http://127.0.0.1:{prometheus}/api/v1/{path}");
        async move {
            let Ok(reply) = reqwest::get(&url).await else {
                return serde_json::Value::Null;
            };
            reply.json().await.unwrap_or_default()
        }
    };
    eventually(
        "Prometheus scrapes loms and the three notifiers",
        START_PATIENCE,
        || async {
            let targets = api("targets").await;
            let up = targets["data"]["activeTargets"]
                .as_array()
                .map(|t| t.iter().filter(|t| t["health"] == "up").count())
                .unwrap_or(0);
            up == 4
        },
    )
    .await;
    let rules = api("rules").await.to_string();
    assert!(rules.contains("LomsNoRelayLeader"), "{rules}");

    // Ctrl-C: SIGINT to the whole foreground group.
    let group = run.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", "--", &format!("-{group}")])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut status = None;
    eventually("run.sh exits", STOP_PATIENCE, || {
        status = run.try_wait().unwrap();
        std::future::ready(status.is_some())
    })
    .await;
    let text = log_text();
    assert_eq!(status.unwrap().code(), Some(INTERRUPTED), "{text}");
    assert!(text.contains("run: stopped"), "{text}");
    // The services stopped gracefully: their last words reached the log.
    for service in ["loms", "notifier-1", "notifier-2", "notifier-3"] {
        let prefix = format!("{service} | ");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&prefix) && l.contains("stopped")),
            "{service} did not log its stop:\n{text}"
        );
    }
    let left = started_by_the_run(&stack_dir);
    assert!(left.is_empty(), "left running: {left:#?}\n{text}");
    for (what, port) in [("Jaeger", jaeger), ("Prometheus", prometheus)] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{what} left running:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&stack_dir);
}
