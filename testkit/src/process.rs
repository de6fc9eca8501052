//! loms and the notifier as processes of their own (the built binaries of the same profile as
//! the running test or program), for signals and crashes: started and waited for until ready,
//! signalled, killed, and waited for until gone with their ports free.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::eventually;

/// How long a service may take to become ready, or to exit after a signal.
pub const START_PATIENCE: Duration = Duration::from_secs(60);
pub const EXIT_PATIENCE: Duration = Duration::from_secs(30);

/// The folder of the binaries built with the running program: `target/<profile>/`, for a test
/// (in `target/<profile>/deps/`) and for a system program alike.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().expect("a folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir
    }
}

/// The binary a build script of ours prints the path of (building it once, then cached).
pub fn built_by(script: &str) -> PathBuf {
    let built = Command::new(crate::stack::root().join(script))
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        built.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&built.stdout).trim())
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: `cargo build --workspace` (or the Makefile) builds it",
        path.display()
    );
    path
}

/// Where ports are handed out from: below the kernel's ephemeral range (32768 and up here),
/// from which outgoing connections take their local ports. A port the kernel picked for us
/// (bind to 0) was itself ephemeral, and in the moment before its service bound it, a
/// connection of Kafka's or PostgreSQL's could take it: "address already in use".
const PORTS: std::ops::Range<u16> = 20_000..32_000;
/// The next candidate, as an offset into `PORTS`; each process starts at a place of its own.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// A port nothing listens on, never handed out before by this process.
pub fn free_port() -> u16 {
    use std::sync::atomic::Ordering::SeqCst;
    let span = u32::from(PORTS.end - PORTS.start);
    let start = std::process::id().wrapping_mul(7_919) % span;
    let _ = NEXT_PORT.compare_exchange(u32::MAX, start, SeqCst, SeqCst);
    for _ in 0..span {
        let port = PORTS.start + (NEXT_PORT.fetch_add(1, SeqCst) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}");
}

/// A free TCP address on the loopback interface.
pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A log file of its own in the temporary folder.
pub fn temp_log(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{name}-{}.log", crate::unique()))
}

/// A child process whose stdout and stderr go to a log file (appended), directly or through a
/// pipe read by a `cat` of its own; killed when dropped.
pub struct Process {
    child: Child,
    pub log: PathBuf,
    /// The reader of the pipe, when the output goes through one.
    pipe_reader: Option<Child>,
}

fn append(log: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
}

impl Process {
    pub(crate) fn spawn(mut command: Command, log: &Path, through_pipe: bool) -> Self {
        let mut pipe_reader = None;
        if through_pipe {
            let mut reader = Command::new("cat")
                .stdin(Stdio::piped())
                .stdout(append(log))
                .spawn()
                .expect("start the log reader");
            let pipe: std::os::fd::OwnedFd = reader.stdin.take().expect("a pipe").into();
            let second = pipe.try_clone().expect("duplicate the pipe");
            command.stdout(pipe).stderr(second);
            pipe_reader = Some(reader);
        } else {
            command.stdout(append(log)).stderr(append(log));
        }
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        // Only the child holds the pipe's writing end now: the reader sees its end of output.
        drop(command);
        println!("pid {} logs to {}", child.id(), log.display());
        Self {
            child,
            log: log.to_path_buf(),
            pipe_reader,
        }
    }

    /// Kills the reader of its output pipe: from then on every write to stdout or stderr fails
    /// (EPIPE), as when the log shipper of a container dies.
    pub fn kill_log_reader(&mut self) {
        let reader = self
            .pipe_reader
            .as_mut()
            .expect("started with its output through a pipe");
        let _ = reader.kill();
        let _ = reader.wait();
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the reader of its output pipe: a stalled log
    /// shipper, whose pipe fills and then takes no more.
    pub fn pause_log_reader(&self, paused: bool) {
        let reader = self
            .pipe_reader
            .as_ref()
            .expect("started with its output through a pipe");
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &reader.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM", "INT", "KILL").
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until the process has exited.
    pub async fn wait(&mut self) -> ExitStatus {
        let mut status = None;
        eventually("the process exits", EXIT_PATIENCE, || {
            status = self.child.try_wait().expect("wait");
            std::future::ready(status.is_some())
        })
        .await;
        status.expect("exited")
    }

    /// SIGTERM, then its exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait().await
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its log lines that are JSON objects.
    pub fn json_lines(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Peak resident set size in MB, from /proc.
    pub fn peak_rss_mb(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if let Some(reader) = self.pipe_reader.as_mut() {
            let _ = reader.kill();
            let _ = reader.wait();
        }
    }
}

/// Waits until nothing listens on `address` any more.
async fn wait_port_free(address: &str) {
    eventually(&format!("{address} is free"), EXIT_PATIENCE, || {
        std::future::ready(std::net::TcpListener::bind(address).is_ok())
    })
    .await;
}

/// How to start a loms process.
#[derive(Debug, Clone)]
pub struct LomsOptions {
    pub database_url: String,
    pub topic: String,
    pub relay: bool,
    pub grpc: String,
    pub http: String,
    pub admin: String,
    pub log: PathBuf,
    /// Further `LOMS_*` variables.
    pub env: Vec<(String, String)>,
    /// Output through a pipe with a reader that a test can kill.
    pub through_pipe: bool,
    /// Its limit on open file descriptors (soft and hard), if not the inherited one.
    pub open_files: Option<u64>,
    /// librdkafka properties given with `--kafka-property`, `key=value`.
    pub kafka_properties: Vec<String>,
}

impl LomsOptions {
    /// loms on free ports with its relay on, logging to a file of its own.
    pub fn new(database_url: &str, topic: &str) -> Self {
        Self {
            database_url: database_url.into(),
            topic: topic.into(),
            relay: true,
            grpc: free_address(),
            http: free_address(),
            admin: free_address(),
            log: temp_log("loms"),
            env: Vec::new(),
            through_pipe: false,
            open_files: None,
            kafka_properties: Vec::new(),
        }
    }

    /// A librdkafka property of its producer, `key=value`.
    pub fn kafka_property(mut self, property: &str) -> Self {
        self.kafka_properties.push(property.into());
        self
    }

    /// Started under `limit` open file descriptors, as `ulimit -n` would.
    pub fn open_files(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }

    /// Stdout and stderr through a pipe (see [`Process::kill_log_reader`]).
    pub fn through_pipe(mut self) -> Self {
        self.through_pipe = true;
        self
    }

    pub fn relay(mut self, on: bool) -> Self {
        self.relay = on;
        self
    }

    pub fn log(mut self, path: &Path) -> Self {
        self.log = path.to_path_buf();
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub async fn start(self) -> LomsProcess {
        LomsProcess::start(self).await
    }
}

pub struct LomsProcess {
    pub process: Process,
    pub grpc: String,
    pub http: String,
    /// Metrics and probes.
    pub admin: String,
    options: LomsOptions,
}

impl LomsProcess {
    /// Starts loms and waits until its health check answers SERVING; fails if it exits first.
    pub async fn start(options: LomsOptions) -> Self {
        let mut command = match options.open_files {
            None => Command::new(binary("loms")),
            // prlimit sets the limit and execs loms: the process keeps its pid.
            Some(limit) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={limit}:{limit}"))
                    .arg(binary("loms"));
                c
            }
        };
        command
            .env("LOMS_GRPC_ADDR", &options.grpc)
            .env("LOMS_HTTP_ADDR", &options.http)
            .env("LOMS_ADMIN_ADDR", &options.admin)
            .env("LOMS_DATABASE__URL", &options.database_url)
            .env("LOMS_KAFKA__BROKERS", crate::stack::brokers())
            .env("LOMS_KAFKA__TOPIC", &options.topic)
            .env("LOMS_RELAY__ENABLED", options.relay.to_string())
            .envs(crate::stack::security_env(
                "LOMS",
                &crate::stack::kafka_security(),
            ))
            .envs(options.env.iter().map(|(k, v)| (k, v)));
        for property in &options.kafka_properties {
            command.args(["--kafka-property", property]);
        }
        let mut loms = Self {
            process: Process::spawn(command, &options.log, options.through_pipe),
            grpc: options.grpc.clone(),
            http: options.http.clone(),
            admin: options.admin.clone(),
            options,
        };
        loms.wait_serving().await;
        loms
    }

    async fn wait_serving(&mut self) {
        let grpc = self.grpc.clone();
        let process = &mut self.process;
        eventually("loms serves", START_PATIENCE, || {
            assert!(
                process.alive(),
                "loms exited at start: {}",
                process.log_text()
            );
            serving(&grpc)
        })
        .await;
    }

    /// SIGKILL, wait until it is gone and its ports are free, and start it again on them.
    pub async fn restart_after_kill(&mut self) {
        self.process.kill();
        wait_port_free(&self.grpc).await;
        wait_port_free(&self.http).await;
        wait_port_free(&self.admin).await;
        *self = Self::start(self.options.clone()).await;
    }

    pub async fn client(
        &self,
    ) -> Result<api::LomsClient<tonic::transport::Channel>, tonic::transport::Error> {
        api::LomsClient::connect(format!("http://{}", self.grpc)).await
    }

    pub fn options(&self) -> &LomsOptions {
        &self.options
    }

    /// Whether its relay holds the leader lock, from its metrics.
    pub async fn is_relay_leader(&self) -> bool {
        relay_leader(&self.admin).await
    }
}

async fn serving(grpc: &str) -> bool {
    health_status(grpc).await == Some(true)
}

/// What gRPC health of loms on `grpc` says of `loms.Loms`: SERVING (true), anything else
/// (false), or no answer (None).
pub async fn health_status(grpc: &str) -> Option<bool> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .expect("a URI")
        .connect()
        .await
        .ok()?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: "loms.Loms".into(),
    };
    let reply = health.check(request).await.ok()?;
    Some(reply.get_ref().status == ServingStatus::Serving as i32)
}

/// The relay-leader probe: whether the loms whose admin listener is `admin` holds the relay lock.
pub async fn relay_leader(admin: &str) -> bool {
    let Ok(reply) = reqwest::get(format!("http://{admin}/metrics")).await else {
        return false;
    };
    reply
        .text()
        .await
        .unwrap_or_default()
        .lines()
        .any(|l| l == "loms_relay_leader 1")
}

/// Indexes of the replicas (by admin address) whose relay leads.
pub async fn relay_leaders(admin: &[String]) -> Vec<usize> {
    let mut leaders = Vec::new();
    for (i, address) in admin.iter().enumerate() {
        if relay_leader(address).await {
            leaders.push(i);
        }
    }
    leaders
}

/// How to start a notifier process.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    pub topic: String,
    pub group: String,
    pub log: PathBuf,
    pub metrics: Option<String>,
    /// Output through a pipe with a reader that a test can kill.
    pub through_pipe: bool,
    /// Further environment variables.
    pub env: Vec<(String, String)>,
    /// librdkafka properties given with `--kafka-property`, `key=value`.
    pub kafka_properties: Vec<String>,
    /// Its bootstrap servers: the stack's unless a test names others.
    pub brokers: String,
}

/// The broker's minimum session timeout: a killed member's partitions move on sooner.
const TEST_SESSION_TIMEOUT_MS: &str = "6000";

impl NotifierOptions {
    pub fn new(topic: &str, group: &str) -> Self {
        Self {
            topic: topic.into(),
            group: group.into(),
            log: temp_log("notifier"),
            metrics: None,
            brokers: crate::stack::brokers(),
            through_pipe: false,
            env: Vec::new(),
            kafka_properties: Vec::new(),
        }
    }

    /// A librdkafka property of its consumer, `key=value`.
    pub fn kafka_property(mut self, property: &str) -> Self {
        self.kafka_properties.push(property.into());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Stdout and stderr through a pipe (see [`Process::kill_log_reader`]).
    pub fn through_pipe(mut self) -> Self {
        self.through_pipe = true;
        self
    }

    pub fn log(mut self, path: &Path) -> Self {
        self.log = path.to_path_buf();
        self
    }

    pub fn metrics(mut self, address: &str) -> Self {
        self.metrics = Some(address.into());
        self
    }

    /// Starts the notifier logging JSON lines (its readiness is its group assignment, which
    /// [`NotifierProcess::assignment`] shows).
    pub fn start(self) -> NotifierProcess {
        let mut command = Command::new(binary("notifier"));
        command
            .args(["--kafka-brokers", &self.brokers])
            .args(["--kafka-topic", &self.topic, "--group-id", &self.group])
            .args(["--dlq-topic", &format!("{}.dlq", self.topic), "--log-json"])
            .env(
                "NOTIFIER_KAFKA__SESSION_TIMEOUT_MS",
                TEST_SESSION_TIMEOUT_MS,
            )
            .envs(crate::stack::security_env(
                "NOTIFIER",
                &crate::stack::kafka_security(),
            ))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(address) = &self.metrics {
            command.args(["--admin-addr", address]);
        }
        for property in &self.kafka_properties {
            command.args(["--kafka-property", property]);
        }
        NotifierProcess {
            process: Process::spawn(command, &self.log, self.through_pipe),
            options: self,
        }
    }
}

pub struct NotifierProcess {
    pub process: Process,
    pub options: NotifierOptions,
}

impl NotifierProcess {
    /// (event id, partition, offset) of every event it logged as new.
    pub fn events(&self) -> Vec<(String, i64, i64)> {
        self.process
            .json_lines()
            .iter()
            .filter(|l| l["message"] == "order event")
            .map(|l| {
                (
                    l["event_id"].as_str().unwrap_or_default().to_string(),
                    l["partition"].as_i64().unwrap_or(-1),
                    l["offset"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    }

    /// The partitions of its latest assignment, if it had one ("none" for an idle member).
    pub fn assignment(&self) -> Option<String> {
        self.process
            .json_lines()
            .iter()
            .rev()
            .find(|l| l["message"] == "partitions assigned")
            .map(|l| l["partitions"].as_str().unwrap_or_default().to_string())
    }

    /// Waits until it was assigned its share (possibly none) of the group's partitions.
    pub async fn joined(&self) {
        eventually("the notifier joins its group", START_PATIENCE, || {
            std::future::ready(self.assignment().is_some())
        })
        .await;
    }

    /// SIGKILL, and start it again with the same options (and log).
    pub fn restart_after_kill(&mut self) {
        self.process.kill();
        *self = self.options.clone().start();
    }
}
