//! Where the machine's CPU goes during a run, per part of the system, from `/proc`: what bounds
//! a figure on a machine where everything shares two cores.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};
use systest::{cpu_times as times, TICKS_PER_S};

/// CPU seconds used so far, per part, and by the whole machine.
pub struct Sample {
    at: Instant,
    parts: Vec<(&'static str, f64)>,
    machine_busy: f64,
}

fn command(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The numeric entries of a `/proc` directory: processes, or a process's threads.
fn ids(dir: &str) -> impl Iterator<Item = u32> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// CPU seconds of every process named `name`, with what their reaped children used.
fn by_name(name: &str) -> f64 {
    ids("/proc")
        .filter(|pid| command(*pid) == name)
        .filter_map(times)
        .map(|(own, children)| own + children)
        .sum()
}

fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait is busy.
    let busy: f64 = cpu
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy / TICKS_PER_S
}

/// A sample now: loms and the notifier by pid, PostgreSQL and the Kafka broker (the JVMs) by
/// name, and the load generator (this program, with pgbench when it ran it).
pub fn sample(loms: Option<u32>, notifier: Option<u32>) -> Sample {
    let pid_seconds = |pid: Option<u32>| pid.and_then(times).map_or(0.0, |(own, _)| own);
    let client = times(std::process::id()).map_or(0.0, |(own, children)| own + children);
    Sample {
        at: Instant::now(),
        parts: vec![
            ("postgres", by_name("postgres")),
            ("kafka", by_name("java")),
            ("loms", pid_seconds(loms)),
            ("notifier", pid_seconds(notifier)),
            ("load generator", client),
        ],
        machine_busy: machine_busy(),
    }
}

/// Cores used on average between two samples, per part, then "other" and "idle".
pub struct Usage(pub Vec<(&'static str, f64)>);

impl Usage {
    pub fn between(before: &Sample, after: &Sample) -> Self {
        let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let mut parts: Vec<(&'static str, f64)> = before
            .parts
            .iter()
            .zip(&after.parts)
            .map(|((name, b), (_, a))| (*name, ((a - b) / secs).max(0.0)))
            .collect();
        let busy = (after.machine_busy - before.machine_busy) / secs;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let known: f64 = parts.iter().map(|(_, c)| c).sum();
        parts.push(("other", (busy - known).max(0.0)));
        parts.push(("idle", (cores - busy).max(0.0)));
        Self(parts)
    }

    pub fn of(&self, part: &str) -> f64 {
        self.0
            .iter()
            .find(|(name, _)| *name == part)
            .map_or(0.0, |(_, c)| *c)
    }

    /// Cores busy, whatever with.
    pub fn busy(&self) -> f64 {
        self.0
            .iter()
            .filter(|(name, _)| *name != "idle")
            .map(|(_, c)| c)
            .sum()
    }

    /// Microseconds of the machine's CPU per operation at `rate` operations per second.
    pub fn per_op_us(&self, rate: f64) -> f64 {
        per_op_us(self.busy(), rate)
    }

    /// Microseconds of `part`'s CPU per operation at `rate` operations per second.
    pub fn part_per_op_us(&self, part: &str, rate: f64) -> f64 {
        per_op_us(self.of(part), rate)
    }

    pub fn line(&self) -> String {
        self.0
            .iter()
            .map(|(name, cores)| format!("{name} {cores:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn json(&self) -> Value {
        self.0
            .iter()
            .map(|(name, cores)| (name.to_string(), json!(cores)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Runs `work`, and what the machine's cores did meanwhile.
pub async fn measured<T>(
    loms: Option<u32>,
    notifier: Option<u32>,
    work: impl std::future::Future<Output = T>,
) -> (T, Usage) {
    let before = sample(loms, notifier);
    let result = work.await;
    (result, Usage::between(&before, &sample(loms, notifier)))
}

/// Microseconds of CPU per operation: `cores` busy at `rate` operations per second.
fn per_op_us(cores: f64, rate: f64) -> f64 {
    cores / rate.max(1e-9) * 1e6
}

/// CPU seconds of each thread of the broker (every `java` process), by (pid, tid).
pub fn broker_threads() -> BTreeMap<(u32, u32), f64> {
    let mut threads = BTreeMap::new();
    for pid in ids("/proc").filter(|pid| command(*pid) == "java") {
        for tid in ids(&format!("/proc/{pid}/task")) {
            if let Some(secs) = systest::thread_cpu_seconds(pid, tid) {
                threads.insert((pid, tid), secs);
            }
        }
    }
    threads
}

/// The Java names of `pid`'s threads by tid, from `jstack` (the kernel keeps only their first
/// 15 characters, which do not tell the broker's request handlers from its network threads).
fn java_thread_names(pid: u32) -> BTreeMap<u32, String> {
    let Ok(out) = std::process::Command::new("jstack")
        .arg(pid.to_string())
        .output()
    else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let name = line.strip_prefix('"')?.split('"').next()?;
            let nid = line.split("nid=0x").nth(1)?.split_whitespace().next()?;
            Some((u32::from_str_radix(nid, 16).ok()?, name.to_string()))
        })
        .collect()
}

/// Cores the broker's threads used between two [`broker_threads`] samples `secs` apart, by
/// thread name without its numbers (`data-plane-kafka-request-handler-3` counts as
/// `data-plane-kafka-request-handler-`), busiest first, those above a hundredth of a core.
pub fn thread_cores(
    before: &BTreeMap<(u32, u32), f64>,
    after: &BTreeMap<(u32, u32), f64>,
    secs: f64,
) -> Vec<(String, f64)> {
    let mut names: BTreeMap<u32, BTreeMap<u32, String>> = BTreeMap::new();
    let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
    for (&(pid, tid), a) in after {
        let used = a - before.get(&(pid, tid)).unwrap_or(&0.0);
        if used <= 0.0 {
            continue;
        }
        let java = names.entry(pid).or_insert_with(|| java_thread_names(pid));
        let name = java.get(&tid).cloned().unwrap_or_else(|| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default()
        });
        let name: String = name
            .trim()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        *by_name.entry(name).or_insert(0.0) += used / secs.max(1e-3);
    }
    let mut cores: Vec<(String, f64)> = by_name.into_iter().filter(|(_, c)| *c >= 0.01).collect();
    cores.sort_by(|a, b| b.1.total_cmp(&a.1));
    cores
}
