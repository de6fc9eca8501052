//! Toxiproxy as a process of its own on a free port (the binary `deploy/local/toxiproxy.sh`
//! builds once): proxies between a service and a peer. A peer that goes silent (a cut network,
//! a frozen host) is the proxy process stopped with SIGSTOP: nothing passes and nothing is
//! closed on either side, where Toxiproxy's own `timeout` toxic still passes on a close from
//! one side to the other, so the server learns the client is gone.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::process::{built_by, free_address, temp_log, Process};

/// How long Toxiproxy may take to answer after it starts.
const START_PATIENCE: Duration = Duration::from_secs(30);

pub struct Toxiproxy {
    pub process: Process,
    api: String,
    http: reqwest::Client,
}

impl Toxiproxy {
    pub async fn start() -> Self {
        let binary = built_by("deploy/local/toxiproxy.sh");
        let api = free_address();
        let (host, port) = api.rsplit_once(':').expect("host:port");
        let mut command = Command::new(binary);
        command.args(["-host", host, "-port", port]);
        let toxiproxy = Self {
            process: Process::spawn(command, &temp_log("toxiproxy"), false),
            api,
            http: reqwest::Client::new(),
        };
        crate::eventually("Toxiproxy answers", START_PATIENCE, || async {
            toxiproxy
                .http
                .get(format!("http://{}/version", toxiproxy.api))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        toxiproxy
    }

    /// A proxy `name` to `upstream` (host:port); returns the address it listens on.
    pub async fn proxy(&self, name: &str, upstream: &str) -> String {
        let listen = free_address();
        let reply = self
            .http
            .post(format!("http://{}/proxies", self.api))
            .json(&json!({ "name": name, "listen": listen, "upstream": upstream, "enabled": true }))
            .send()
            .await
            .expect("create a proxy");
        assert!(
            reply.status().is_success(),
            "creating proxy {name}: {}",
            reply.status()
        );
        listen
    }
}
