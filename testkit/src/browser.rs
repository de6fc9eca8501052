//! A real browser for page tests: Debian's headless Chromium, driven over WebDriver by a
//! chromedriver of the test's own on a free port.

use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::process::{free_port, temp_log, Process};

/// Chromium's flags for a machine with no network beyond loopback: without the background ones
/// it keeps trying Google's hosts.
const CHROMIUM_ARGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2000",
];

/// A browser session; its chromedriver (and with it Chromium) is killed when dropped.
pub struct Browser {
    pub client: Client,
    _driver: Process,
}

impl Browser {
    pub async fn start() -> Self {
        let port = free_port();
        let mut command = Command::new("chromedriver");
        command.arg(format!("--port={port}"));
        let driver = Process::spawn(command, &temp_log("chromedriver"), false);
        let url = format!("http://127.0.0.1:{port}");
        crate::eventually("chromedriver listens", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        let profile = std::env::temp_dir().join(format!("chromium-{}", crate::unique()));
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("a Chromium session from {url}: {e}"));
        Self {
            client,
            _driver: driver,
        }
    }
}
