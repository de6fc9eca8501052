//! Jaeger (v2, all in one, spans in memory) as a process of its own on free ports: the binary
//! `deploy/local/jaeger.sh` builds once, with `deploy/jaeger/config.yaml`; and its query API.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::{built_by, free_address, temp_log, Process};
use crate::stack::root;

/// How long Jaeger may take to answer after it starts (it is built first if it is not yet).
const START_PATIENCE: Duration = Duration::from_secs(60);

pub struct Jaeger {
    pub process: Process,
    /// Its OTLP/HTTP base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp: String,
    /// Its query API (and UI) address.
    pub query: String,
}

impl Jaeger {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Jaeger taking OTLP over TLS (`https://`), with the server certificate of
    /// `certificates` (a folder of `deploy/local/certs.sh`).
    pub async fn start_tls(certificates: &std::path::Path) -> Self {
        Self::start_with(Some(certificates)).await
    }

    async fn start_with(tls: Option<&std::path::Path>) -> Self {
        let binary = built_by("deploy/local/jaeger.sh");
        let (otlp, query) = (free_address(), free_address());
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(root().join("deploy/jaeger/config.yaml"))
            .env("JAEGER_OTLP_HTTP_ADDR", &otlp)
            .env("JAEGER_QUERY_ADDR", &query)
            .env("JAEGER_QUERY_GRPC_ADDR", free_address());
        if let Some(dir) = tls {
            command
                .arg("--config")
                .arg(root().join("deploy/jaeger/config.tls.yaml"))
                .env("JAEGER_OTLP_TLS_CERT", dir.join("server.pem"))
                .env("JAEGER_OTLP_TLS_KEY", dir.join("server.key"));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let jaeger = Self {
            process: Process::spawn(command, &temp_log("jaeger"), false),
            otlp: format!("{scheme}://{otlp}"),
            query,
        };
        crate::eventually(
            "Jaeger takes OTLP and answers queries",
            START_PATIENCE,
            || jaeger.ready(),
        )
        .await;
        jaeger
    }

    async fn ready(&self) -> bool {
        let otlp = self.otlp.split_once("://").map_or(&*self.otlp, |(_, a)| a);
        tokio::net::TcpStream::connect(otlp).await.is_ok()
            && reqwest::get(format!("http://{}/api/services", self.query))
                .await
                .is_ok_and(|r| r.status().is_success())
    }

    /// The spans Jaeger holds of trace `trace_id` (32 hex digits), as (service, operation).
    pub async fn spans(&self, trace_id: &str) -> Vec<(String, String)> {
        let Ok(reply) = reqwest::get(format!("http://{}/api/traces/{trace_id}", self.query)).await
        else {
            return Vec::new();
        };
        let body: Value = reply.json().await.unwrap_or_default();
        let mut spans = Vec::new();
        for trace in body["data"].as_array().into_iter().flatten() {
            for span in trace["spans"].as_array().into_iter().flatten() {
                let process = span["processID"].as_str().unwrap_or_default();
                let service = trace["processes"][process]["serviceName"]
                    .as_str()
                    .unwrap_or_default();
                let operation = span["operationName"].as_str().unwrap_or_default();
                spans.push((service.to_string(), operation.to_string()));
            }
        }
        spans
    }
}
