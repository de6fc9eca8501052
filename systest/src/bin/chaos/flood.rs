//! `connection_flood`: loms under a low file-descriptor limit, and hundreds of connections to its
//! API ports that never send a byte, beside the ordinary workload. Ordinary requests keep being
//! answered (or refused, never left hanging), health and metrics answer throughout, loms's CPU
//! stays flat, and the server closes every idle connection within its idle timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::scenarios::Fault;

/// What a service manager might give loms: well below the connections of the flood.
const OPEN_FILES: u64 = 256;
/// Connections of the flood, half to each API port.
const FLOOD: usize = 600;
const IDLE_TIMEOUT_MS: u64 = 5_000;
/// A probe that got no answer in this long counts as hung.
const PROBE_PATIENCE: Duration = Duration::from_secs(3);
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long loms's CPU is measured under the ordinary workload before the flood.
const BASELINE: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Probes {
    answered: AtomicUsize,
    refused: AtomicUsize,
    hung: AtomicUsize,
    admin_answered: AtomicUsize,
    admin_failed: AtomicUsize,
}

/// One probe: a request on a connection of its own; the admin ones must answer.
async fn probe(client: &reqwest::Client, url: &str, admin: bool, probes: &Probes) {
    let count = |c: &AtomicUsize| {
        c.fetch_add(1, Ordering::Relaxed);
    };
    match tokio::time::timeout(PROBE_PATIENCE, client.get(url).send()).await {
        Ok(Ok(reply)) if reply.status().is_success() || !admin => count(if admin {
            &probes.admin_answered
        } else {
            &probes.answered
        }),
        Ok(_) if !admin => count(&probes.refused),
        Err(_) if !admin => count(&probes.hung),
        _ => count(&probes.admin_failed),
    }
}

/// Opens a connection that never sends, and waits until the server closes it: how long that
/// took, or None if it stayed open past `patience`.
async fn silent(address: String, patience: Duration) -> Option<Duration> {
    let opened = Instant::now();
    let connected = tokio::time::timeout(patience, TcpStream::connect(&address)).await;
    let Ok(Ok(mut stream)) = connected else {
        // Refused at once: closed by the server as well.
        return Some(opened.elapsed());
    };
    let mut byte = [0_u8; 1];
    match tokio::time::timeout(patience, stream.read(&mut byte)).await {
        Ok(_) => Some(opened.elapsed()),
        Err(_) => None,
    }
}

pub async fn connection_flood(f: Fault) {
    tokio::time::sleep(crate::scenarios::WARM_UP).await;
    // The flood's own sockets need descriptors on this side too.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (grpc, http, admin, pid) = restart_under_limit(&f).await;
    let cpu = || systest::cpu_times(pid).map_or(0.0, |(own, _)| own);
    // loms's CPU under the ordinary workload alone, to compare the flood's with.
    let (cpu_before, started) = (cpu(), Instant::now());
    tokio::time::sleep(BASELINE).await;
    let cores_before = (cpu() - cpu_before) / started.elapsed().as_secs_f64();
    let hold = f.secs(10, 20);
    let (cpu_before, started) = (cpu(), Instant::now());
    f.begin();
    let patience = Duration::from_millis(IDLE_TIMEOUT_MS) + PROBE_PATIENCE;
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            let address = if i % 2 == 0 {
                grpc.clone()
            } else {
                http.clone()
            };
            tokio::spawn(silent(address, hold + patience))
        })
        .collect();
    let probes = probe_until(&http, &admin, started, hold).await;
    let cores = (cpu() - cpu_before) / started.elapsed().as_secs_f64();
    let mut closed = Vec::new();
    for connection in flood {
        if let Some(took) = connection.await.expect("a flood connection") {
            closed.push(took);
        }
    }
    f.end();
    report(&f, &closed, &probes);
    f.note("loms_cpu_cores_before_flood", json!(cores_before));
    f.note("loms_cpu_cores_during_flood", json!(cores));
}

/// loms restarted with few descriptors and a short idle timeout: its API and admin addresses
/// and its pid.
async fn restart_under_limit(f: &Fault) -> (String, String, String, u32) {
    let mut run = f.run.lock().await;
    let loms = &mut run.loms[0];
    let options = loms
        .options()
        .clone()
        .open_files(OPEN_FILES)
        .env(
            "LOMS_CONNECTIONS__IDLE_TIMEOUT_MS",
            &IDLE_TIMEOUT_MS.to_string(),
        )
        .env("LOMS_REQUEST_TIMEOUT_MS", "4000")
        .env("LOMS_DATABASE__STATEMENT_TIMEOUT_MS", "3000");
    loms.process.terminate().await;
    *loms = options.start().await;
    (
        loms.grpc.clone(),
        loms.http.clone(),
        loms.admin.clone(),
        loms.process.pid(),
    )
}

/// Probes the API and the admin listener, each on fresh connections, until `hold` passed.
async fn probe_until(http: &str, admin: &str, started: Instant, hold: Duration) -> Probes {
    let probes = Probes::default();
    // A fresh connection per request: a flood takes what new clients would.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client");
    let stock = format!("http://{http}/stock/info?sku={}", systest::FIRST_LOAD_SKU);
    let (ready, metrics) = (
        format!("http://{admin}/readyz"),
        format!("http://{admin}/metrics"),
    );
    while started.elapsed() < hold {
        tokio::join!(
            probe(&client, &stock, false, &probes),
            probe(&client, &ready, true, &probes),
            probe(&client, &metrics, true, &probes),
        );
        tokio::time::sleep(PROBE_EVERY).await;
    }
    probes
}

/// What the flood broke, and its figures, in the scenario's notes.
fn report(f: &Fault, closed: &[Duration], probes: &Probes) {
    let longest = closed.iter().max().copied().unwrap_or_default();
    let read = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    let mut broken = Vec::new();
    if closed.len() < FLOOD {
        broken.push(format!(
            "{} idle connections left open",
            FLOOD - closed.len()
        ));
    }
    if read(&probes.hung) > 0 {
        broken.push(format!("{} requests hung", read(&probes.hung)));
    }
    if read(&probes.admin_failed) > 0 {
        broken.push(format!(
            "{} probes of the admin listener failed",
            read(&probes.admin_failed)
        ));
    }
    f.note("open_files", json!(OPEN_FILES));
    f.note("flood_connections", json!(FLOOD));
    f.note("flood_closed_by_server", json!(closed.len()));
    f.note("flood_longest_open_ms", json!(longest.as_millis() as u64));
    f.note("idle_timeout_ms", json!(IDLE_TIMEOUT_MS));
    f.note("probes_answered", json!(read(&probes.answered)));
    f.note("probes_refused", json!(read(&probes.refused)));
    f.note("probes_hung", json!(read(&probes.hung)));
    f.note("admin_answered", json!(read(&probes.admin_answered)));
    f.note("admin_failed", json!(read(&probes.admin_failed)));
    f.note("broken", json!(broken));
}
