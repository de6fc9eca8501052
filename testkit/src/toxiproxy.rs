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
        self.proxy_at(name, &free_address(), upstream).await
    }

    /// A proxy `name` listening on `listen` (host:port; any loopback address, such as
    /// 127.0.0.2, reaches a server on 127.0.0.1 under another name) to `upstream`.
    pub async fn proxy_at(&self, name: &str, listen: &str, upstream: &str) -> String {
        let body = json!({ "name": name, "listen": listen, "upstream": upstream, "enabled": true });
        self.post("/proxies", body, &format!("creating proxy {name}"))
            .await;
        listen.to_string()
    }

    /// Points proxy `name` at another `upstream`, as a virtual IP or a pooler moves to a new
    /// primary: Toxiproxy closes the connections it carried, and new ones reach `upstream`.
    pub async fn move_upstream(&self, name: &str, upstream: &str) {
        let body = json!({ "upstream": upstream });
        self.post(
            &format!("/proxies/{name}"),
            body,
            &format!("moving proxy {name}"),
        )
        .await;
    }

    /// POSTs `body` to the API's `path`, which must succeed.
    async fn post(&self, path: &str, body: serde_json::Value, what: &str) {
        let reply = self
            .http
            .post(format!("http://{}{path}", self.api))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(reply.status().is_success(), "{what}: {}", reply.status());
    }
}

/// `url` with its host and port replaced by `address`.
pub fn url_through(url: &str, address: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (credentials, rest) = rest.split_once('@').map_or(("", rest), |(c, r)| (c, r));
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let at = if credentials.is_empty() { "" } else { "@" };
    format!("{scheme}://{credentials}{at}{address}{path}")
}

/// The host:port of a URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_through_a_proxy() {
        let url = "postgres://postgres@127.0.0.1:5432/chaos_x";
        assert_eq!(super::host_port(url), "127.0.0.1:5432");
        assert_eq!(
            super::url_through(url, "127.0.0.1:9"),
            "postgres://postgres@127.0.0.1:9/chaos_x"
        );
        assert_eq!(
            super::url_through("postgres://h:1/d", "p:2"),
            "postgres://p:2/d"
        );
    }
}
