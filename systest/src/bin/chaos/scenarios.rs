//! The faults. A scenario is one function that injects its fault into a running [`Run`] while
//! the workload goes on; to add one, write the function and list it in [`ALL`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use testkit::stack::stack;

use crate::run::Run;

/// What a fault works on: the run (its processes), and the addresses the workload calls, which
/// a fault may change.
pub struct Fault {
    pub run: Arc<tokio::sync::Mutex<Run>>,
    pub addresses: Arc<Mutex<Vec<String>>>,
    pub quick: bool,
}

impl Fault {
    /// `quick` in a quick run, `full` otherwise.
    fn secs(&self, quick: u64, full: u64) -> Duration {
        Duration::from_secs(if self.quick { quick } else { full })
    }
}

pub struct Scenario {
    pub name: &'static str,
    /// loms replicas of the run.
    pub replicas: usize,
    pub fault: fn(Fault) -> BoxFuture<'static, ()>,
}

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "broker_outage",
        replicas: 1,
        fault: |f| Box::pin(broker_outage(f)),
    },
    Scenario {
        name: "loms_kill",
        replicas: 1,
        fault: |f| Box::pin(loms_kill(f)),
    },
    Scenario {
        name: "notifier_kill",
        replicas: 1,
        fault: |f| Box::pin(notifier_kill(f)),
    },
    Scenario {
        name: "postgres_outage",
        replicas: 1,
        fault: |f| Box::pin(postgres_outage(f)),
    },
    Scenario {
        name: "relay_leader_kill",
        replicas: 2,
        fault: |f| Box::pin(relay_leader_kill(f)),
    },
];

/// Load before a fault, so that it strikes mid-stream.
const WARM_UP: Duration = Duration::from_secs(3);
/// Kills of the kill scenarios.
const KILLS: usize = 5;

/// The broker stopped, then started again.
async fn broker_outage(f: Fault) {
    tokio::time::sleep(WARM_UP).await;
    stack("kafka-stop");
    tokio::time::sleep(f.secs(8, 30)).await;
    stack("kafka-start");
}

/// loms killed with SIGKILL and restarted on its ports, again and again.
async fn loms_kill(f: Fault) {
    for _ in 0..KILLS {
        tokio::time::sleep(f.secs(2, 5)).await;
        f.run.lock().await.loms[0].restart_after_kill().await;
    }
}

/// The notifiers killed with SIGKILL and restarted, in turn.
async fn notifier_kill(f: Fault) {
    for k in 0..KILLS {
        tokio::time::sleep(f.secs(2, 5)).await;
        let mut run = f.run.lock().await;
        let i = k % run.notifiers.len();
        run.notifiers[i].restart_after_kill();
    }
}

/// PostgreSQL stopped, then started again: the API answers Unavailable meanwhile.
async fn postgres_outage(f: Fault) {
    tokio::time::sleep(WARM_UP).await;
    stack("pg-stop");
    tokio::time::sleep(f.secs(10, 10)).await;
    stack("pg-start");
}

/// Of two replicas, the one whose relay leads killed with SIGKILL; the workload goes on with the
/// other, whose relay must take over.
async fn relay_leader_kill(f: Fault) {
    tokio::time::sleep(f.secs(5, 15)).await;
    let mut run = f.run.lock().await;
    let http: Vec<String> = run.loms.iter().map(|l| l.http.clone()).collect();
    let leaders = Mutex::new(Vec::new());
    testkit::eventually("a relay leads", Duration::from_secs(100), || async {
        let found = testkit::process::relay_leaders(&http).await;
        let any = !found.is_empty();
        *leaders.lock().unwrap() = found;
        any
    })
    .await;
    let leader = leaders.into_inner().unwrap()[0];
    let survivor = run.loms[1 - leader].grpc.clone();
    *f.addresses.lock().unwrap() = vec![survivor];
    run.loms[leader].process.kill();
}
