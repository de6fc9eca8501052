//! loms as a separate process (the built binary), for signals and crashes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct LomsProcess {
    pub grpc: String,
    pub http: String,
    child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl LomsProcess {
    /// Starts loms and waits until its health check answers SERVING.
    pub async fn start(database_url: &str, topic: &str, env: &[(&str, &str)]) -> Self {
        let (grpc, http) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let log =
            std::env::temp_dir().join(format!("loms-test-{}.log", uuid::Uuid::now_v7().simple()));
        let child = Command::new(env!("CARGO_BIN_EXE_loms"))
            .env("LOMS_GRPC_ADDR", &grpc)
            .env("LOMS_HTTP_ADDR", &http)
            .env("LOMS_DATABASE__URL", database_url)
            .env("LOMS_KAFKA__BROKERS", super::kafka::brokers())
            .env("LOMS_KAFKA__TOPIC", topic)
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start loms");
        println!("loms pid {} logs to {}", child.id(), log.display());
        let process = Self { grpc, http, child };
        process.wait_serving().await;
        process
    }

    async fn wait_serving(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(channel) =
                tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
                    .unwrap()
                    .connect()
                    .await
            {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let request = tonic_health::pb::HealthCheckRequest {
                    service: "loms.Loms".into(),
                };
                if let Ok(reply) = health.check(request).await {
                    if reply.get_ref().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                    {
                        return;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "loms did not start serving"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn client(
        &self,
    ) -> Result<api::LomsClient<tonic::transport::Channel>, tonic::transport::Error> {
        api::LomsClient::connect(format!("http://{}", self.grpc)).await
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, returning its status.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "loms did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether its relay holds the leader lock, from its metrics.
    pub async fn is_relay_leader(&self) -> bool {
        match reqwest::get(format!("http://{}/metrics", self.http)).await {
            Ok(reply) => reply
                .text()
                .await
                .unwrap_or_default()
                .contains("\nloms_relay_leader 1"),
            Err(_) => false,
        }
    }
}

impl Drop for LomsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
