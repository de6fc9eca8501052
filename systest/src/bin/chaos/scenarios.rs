//! The faults. A scenario is one function that injects its fault into a running [`Run`] while
//! the workload goes on; to add one, write the function and list it in [`ALL`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde_json::{json, Value};
use testkit::stack::stack;

use crate::run::Run;

/// What a fault works on: the run (its processes), and the addresses the workload calls, which
/// a fault may change. A fault marks when it starts and when the system is whole again, for
/// the figures of the fault's window, and may note facts of its own for the report.
pub struct Fault {
    pub run: Arc<tokio::sync::Mutex<Run>>,
    /// What clients were told so far.
    pub tally: Arc<crate::workload::Tally>,
    pub addresses: Arc<Mutex<Vec<String>>>,
    pub quick: bool,
    pub window: Arc<Mutex<Window>>,
}

/// When a fault began and ended, and what it noted.
#[derive(Default)]
pub struct Window {
    pub begin: Option<SystemTime>,
    pub end: Option<SystemTime>,
    pub notes: serde_json::Map<String, Value>,
}

impl Fault {
    /// `quick` in a quick run, `full` otherwise.
    pub fn secs(&self, quick: u64, full: u64) -> Duration {
        Duration::from_secs(if self.quick { quick } else { full })
    }

    pub fn begin(&self) {
        self.window.lock().unwrap().begin = Some(SystemTime::now());
    }

    pub fn end(&self) {
        self.window.lock().unwrap().end = Some(SystemTime::now());
    }

    pub fn note(&self, key: &str, value: Value) {
        self.window.lock().unwrap().notes.insert(key.into(), value);
    }

    async fn topic(&self) -> String {
        self.run.lock().await.topic.clone()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    No,
    Postgres,
    /// The broker, through a listener of its own advertised as the proxy's address.
    Kafka,
}

pub struct Scenario {
    pub name: &'static str,
    /// loms replicas of the run.
    pub replicas: usize,
    /// Which peer each replica reaches through a proxy of its own, which the fault may freeze.
    pub proxied: Proxied,
    pub fault: fn(Fault) -> BoxFuture<'static, ()>,
}

/// The scenarios on a single broker.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "broker_outage",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(broker_outage(f)),
    },
    Scenario {
        name: "loms_kill",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(loms_kill(f)),
    },
    Scenario {
        name: "notifier_kill",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(notifier_kill(f)),
    },
    Scenario {
        name: "postgres_outage",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(postgres_outage(f)),
    },
    Scenario {
        name: "relay_leader_kill",
        replicas: 2,
        proxied: Proxied::No,
        fault: |f| Box::pin(relay_leader_kill(f)),
    },
    Scenario {
        name: "poison_request",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(poison_request(f)),
    },
    Scenario {
        name: "kafka_blackhole",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(kafka_blackhole(f)),
    },
    Scenario {
        name: "pg_blackhole",
        replicas: 2,
        proxied: Proxied::Postgres,
        fault: |f| Box::pin(pg_blackhole(f)),
    },
    Scenario {
        name: "kafka_path_blackhole",
        replicas: 2,
        proxied: Proxied::Kafka,
        fault: |f| Box::pin(kafka_path_blackhole(f)),
    },
    Scenario {
        name: "notifier_pause",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(notifier_pause(f)),
    },
    Scenario {
        name: "backlog_drain",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(crate::backlog::backlog_drain(f)),
    },
    Scenario {
        name: "connection_flood",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(crate::flood::connection_flood(f)),
    },
];

/// The scenarios on a three-node cluster (replication factor 3, min.insync.replicas 2).
pub const REPLICATED: &[Scenario] = &[
    Scenario {
        name: "leader_kill",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(leader_kill(f)),
    },
    Scenario {
        name: "rolling_restart",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(rolling_restart(f)),
    },
    Scenario {
        name: "producer_gap",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(producer_gap(f)),
    },
    Scenario {
        name: "min_isr_loss",
        replicas: 1,
        proxied: Proxied::No,
        fault: |f| Box::pin(min_isr_loss(f)),
    },
];

/// The scenarios of a stack whose PostgreSQL has a synchronous standby (`PG_STANDBY=1`).
pub const STANDBY: &[Scenario] = &[Scenario {
    name: "pg_failover",
    replicas: 2,
    proxied: Proxied::Postgres,
    fault: |f| Box::pin(pg_failover(f)),
}];

/// Load before a fault, so that it strikes mid-stream.
pub const WARM_UP: Duration = Duration::from_secs(3);
/// Kills of the kill scenarios.
const KILLS: usize = 5;

/// The broker stopped, then started again.
async fn broker_outage(f: Fault) {
    tokio::time::sleep(WARM_UP).await;
    f.begin();
    stack("kafka-stop");
    tokio::time::sleep(f.secs(8, 30)).await;
    stack("kafka-start");
    f.end();
}

/// loms killed with SIGKILL and restarted on its ports, again and again.
async fn loms_kill(f: Fault) {
    for kill in 0..KILLS {
        tokio::time::sleep(f.secs(2, 5)).await;
        if kill == 0 {
            f.begin();
        }
        f.run.lock().await.loms[0].restart_after_kill().await;
    }
    f.end();
}

/// The notifiers killed with SIGKILL and restarted, in turn.
async fn notifier_kill(f: Fault) {
    for k in 0..KILLS {
        tokio::time::sleep(f.secs(2, 5)).await;
        if k == 0 {
            f.begin();
        }
        let mut run = f.run.lock().await;
        let i = k % run.notifiers.len();
        run.notifiers[i].restart_after_kill();
    }
    f.end();
}

/// A notifier that owns a partition stopped (SIGSTOP) for longer than its session timeout, then
/// resumed (SIGCONT): its partition goes to the other member, which starts from the committed
/// offset; the woken member's commits for what it no longer owns are refused by the group, and it
/// logs that and rejoins. The judge reads the union of both logs.
async fn notifier_pause(f: Fault) {
    tokio::time::sleep(WARM_UP).await;
    f.begin();
    f.run.lock().await.notifiers[0].process.signal("STOP");
    // The notifiers' session timeout is 10 s.
    tokio::time::sleep(f.secs(15, 30)).await;
    let logged_before = f.run.lock().await.notifiers[0].process.log_text().len();
    f.run.lock().await.notifiers[0].process.signal("CONT");
    let woken = |run: &Run| run.notifiers[0].process.log_text()[logged_before..].to_string();
    testkit::eventually(
        "the woken notifier rejoins",
        Duration::from_secs(60),
        || async { woken(&*f.run.lock().await).contains("partitions assigned") },
    )
    .await;
    f.end();
    let since = woken(&*f.run.lock().await);
    let refusals = since
        .lines()
        .filter(|l| l.contains("commit") && l.contains("fail"))
        .count();
    f.note("woken_commit_refusals_logged", json!(refusals));
    f.note("woken_rejoined", json!(true));
}

/// PostgreSQL stopped, then started again: the API answers Unavailable meanwhile.
async fn postgres_outage(f: Fault) {
    tokio::time::sleep(WARM_UP).await;
    f.begin();
    stack("pg-stop");
    tokio::time::sleep(f.secs(10, 10)).await;
    stack("pg-start");
    f.end();
}

/// Of two replicas, the index of the one whose relay leads, once one does; the workload is
/// moved to the other.
async fn leader_of_two(f: &Fault, run: &Run) -> usize {
    let admin: Vec<String> = run.loms.iter().map(|l| l.admin.clone()).collect();
    let leaders = Mutex::new(Vec::new());
    testkit::eventually("a relay leads", Duration::from_secs(100), || async {
        let found = testkit::process::relay_leaders(&admin).await;
        let any = !found.is_empty();
        *leaders.lock().unwrap() = found;
        any
    })
    .await;
    let leader = leaders.into_inner().unwrap()[0];
    *f.addresses.lock().unwrap() = vec![run.loms[1 - leader].grpc.clone()];
    leader
}

/// The fault lasts until the other replica's relay has taken over from `leader`.
async fn until_the_other_leads(run: &Run, leader: usize) {
    let other = &run.loms[1 - leader];
    testkit::eventually(
        "the other relay takes over",
        Duration::from_secs(100),
        || other.is_relay_leader(),
    )
    .await;
}

/// Of two replicas, the one whose relay leads killed with SIGKILL; the workload goes on with the
/// other, whose relay must take over.
async fn relay_leader_kill(f: Fault) {
    tokio::time::sleep(f.secs(5, 15)).await;
    let mut run = f.run.lock().await;
    let leader = leader_of_two(&f, &run).await;
    f.begin();
    run.loms[leader].process.kill();
    until_the_other_leads(&run, leader).await;
    f.end();
}

/// The broker stops answering without closing anything (SIGSTOP), then answers again: the
/// relay's messages wait in its producer (no message timeout), its leader steps down if the
/// stall lasts longer than its stall timeout, and nothing is lost or reordered.
async fn kafka_blackhole(f: Fault) {
    tokio::time::sleep(WARM_UP).await;
    f.begin();
    stack("kafka-freeze");
    tokio::time::sleep(f.secs(8, 30)).await;
    stack("kafka-thaw");
    f.end();
}

/// The leader of partition 0 stops answering (SIGSTOP) while the relay has messages in flight to
/// it: the controller fences it and elects another leader, and the producer must move its
/// messages there without leaving a gap (a later event acknowledged, an earlier one dropped).
/// Then the node answers again and rejoins. The notifiers' logs are judged for events logged
/// out of order as well.
async fn producer_gap(f: Fault) {
    partition_leader_away(f, "frozen_node", "kafka-freeze", "kafka-thaw").await;
}

/// Of two replicas, the relay leader's path to PostgreSQL silently stops passing bytes: its
/// proxy frozen (SIGSTOP), so nothing passes and nothing is closed, and the server keeps the
/// leader's session and its lock. The leader must notice (its statements' deadline) and stop
/// publishing; the other replica must terminate the silent session after the lease and take
/// over. Then the path is thawed.
async fn pg_blackhole(f: Fault) {
    tokio::time::sleep(f.secs(5, 15)).await;
    let run = f.run.lock().await;
    let leader = leader_of_two(&f, &run).await;
    let proxy = &run.pg_proxies[leader].process;
    f.begin();
    proxy.signal("STOP");
    let cut = std::time::Instant::now();
    until_the_other_leads(&run, leader).await;
    f.note("takeover_secs", json!(cut.elapsed().as_secs_f64()));
    proxy.signal("CONT");
    f.end();
}

/// PostgreSQL fails over under load: the primary killed (SIGKILL), its synchronous standby
/// promoted, and the address both replicas reach PostgreSQL by (each its own Toxiproxy) moved to
/// the new primary, as a virtual IP or a pooler moves. Their connections to the old one are
/// gone; the relay's lock and lease must be taken on the new one; every change a client was told
/// of must be there (synchronous replication) and reach the topic. The fault lasts until an
/// OrderCreate succeeds again and a relay publishes again.
async fn pg_failover(f: Fault) {
    let standby = std::env::var("DATABASE_STANDBY_URL")
        .expect("pg_failover needs a stack with a standby (PG_STANDBY=1)");
    tokio::time::sleep(f.secs(5, 15)).await;
    let admin: Vec<String> = {
        let run = f.run.lock().await;
        run.loms.iter().map(|l| l.admin.clone()).collect()
    };
    let leads = || async { !testkit::process::relay_leaders(&admin).await.is_empty() };
    testkit::eventually("a relay leads", Duration::from_secs(100), leads).await;
    f.begin();
    let killed = SystemTime::now();
    stack("pg-kill");
    stack("pg-promote");
    let new_primary = testkit::toxiproxy::host_port(&standby);
    {
        let mut run = f.run.lock().await;
        for proxy in &run.pg_proxies {
            proxy.move_upstream("pg", &new_primary).await;
        }
        // The run's database is the new primary's now: the judge reads what committed there.
        run.db = testkit::toxiproxy::url_through(&run.db, &new_primary);
    }
    let moved = SystemTime::now();
    // Sessions on the dead primary may answer for a moment: success counts from the move.
    let ok_since_move = || {
        f.tally
            .creates
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.ok && c.at > moved)
    };
    testkit::eventually(
        "OrderCreate succeeds on the new primary",
        Duration::from_secs(120),
        || std::future::ready(ok_since_move()),
    )
    .await;
    publishes_again(&admin).await;
    let since_kill = |t: SystemTime| t.duration_since(killed).unwrap_or_default().as_secs_f64();
    f.note(
        "relay_publishes_again_after_secs",
        json!(since_kill(SystemTime::now())),
    );
    f.note(
        "create_unavailable_secs",
        json!(longest_gap(&f.tally, killed)),
    );
    f.end();
}

/// Waits until the relays together publish more than they had: a leader that has not noticed
/// the failover yet still says it leads, so events published are counted instead.
async fn publishes_again(admin: &[String]) {
    let total = || async {
        let mut sum = 0;
        for a in admin {
            sum += published(a).await;
        }
        sum
    };
    let before = total().await;
    testkit::eventually(
        "a relay publishes from the new primary",
        Duration::from_secs(120),
        || async { total().await > before },
    )
    .await;
}

/// The longest time from `since` without a successful OrderCreate, in seconds.
fn longest_gap(tally: &crate::workload::Tally, since: SystemTime) -> f64 {
    let mut oks: Vec<SystemTime> = tally
        .creates
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.ok && c.at > since)
        .map(|c| c.at)
        .collect();
    oks.sort();
    let mut last = since;
    let mut longest = Duration::ZERO;
    for at in oks {
        longest = longest.max(at.duration_since(last).unwrap_or_default());
        last = at;
    }
    longest.as_secs_f64()
}

/// Of two replicas, each reaching the broker through a proxy of its own, the relay leader's path
/// goes silent (its proxy frozen: nothing passes, nothing closes) while the other's holds. Its
/// stalled batch must end its term within the stall timeout, and the other replica lead and
/// publish; then the path is thawed.
async fn kafka_path_blackhole(f: Fault) {
    tokio::time::sleep(f.secs(5, 15)).await;
    let run = f.run.lock().await;
    let leader = leader_of_two(&f, &run).await;
    let proxy = &run.kafka_proxies[leader].process;
    let other = &run.loms[1 - leader].admin;
    f.begin();
    proxy.signal("STOP");
    let cut = std::time::Instant::now();
    until_the_other_leads(&run, leader).await;
    f.note("takeover_secs", json!(cut.elapsed().as_secs_f64()));
    let before = published(other).await;
    testkit::eventually(
        "the other replica publishes",
        Duration::from_secs(60),
        || async { published(other).await > before },
    )
    .await;
    let silent = cut.elapsed();
    f.note("publishing_again_secs", json!(silent.as_secs_f64()));
    if silent > PATH_SILENCE_BOUND {
        let broken = format!("events waited {silent:?}, over the stall timeout and the lease");
        f.note("broken", json!([broken]));
    }
    proxy.signal("CONT");
    f.end();
}

/// loms's relay stall timeout (20 s) and lease (10 s), and a few seconds: how long the events
/// may wait when the leader's path to the broker goes silent.
const PATH_SILENCE_BOUND: Duration = Duration::from_secs(20 + 10 + 5);

/// Distinct unknown skus of the poison request: about 1.5 MB over gRPC, under gRPC's 4 MiB.
const POISON_SKUS: i64 = 150_000;
/// A payload no producer takes (librdkafka's limit is 1,000,000 bytes).
const POISON_EVENT_BYTES: usize = 1_100_000;

/// Between ordinary load: the 150,000-sku OrderCreate, through gRPC and HTTP (refused up front,
/// nothing written), and an outbox row too large for any broker, as an older loms without the
/// event limit could have written one: parked with its order, while every other order's events
/// go on. The fault lasts until the row is parked.
async fn poison_request(f: Fault) {
    tokio::time::sleep(WARM_UP).await;
    let (db, grpc, http, topic) = {
        let run = f.run.lock().await;
        let loms = &run.loms[0];
        (
            run.db.clone(),
            loms.grpc.clone(),
            loms.http.clone(),
            run.topic.clone(),
        )
    };
    f.begin();
    let items: Vec<api::loms::Item> = (1..=POISON_SKUS)
        .map(|sku| api::loms::Item { sku, count: 1 })
        .collect();
    let mut client = api::LomsClient::connect(format!("http://{grpc}"))
        .await
        .expect("gRPC connect");
    let grpc_reply = client
        .order_create(api::loms::OrderCreateRequest { user_id: 1, items })
        .await
        .map(|r| r.get_ref().order_id);
    let body = json!({
        "userId": "1",
        "items": (1..=POISON_SKUS).map(|sku| json!({"sku": sku, "count": 1})).collect::<Vec<_>>(),
    });
    // The gateway answers 413 before reading the body and closes the connection: a client
    // still sending may see the close instead of the reply.
    let http_reply = match reqwest::Client::new()
        .post(format!("http://{http}/order/create"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => format!("closed: {e}"),
    };
    f.note(
        "poison_grpc_reply",
        json!(match &grpc_reply {
            Ok(id) => format!("OK (order {id})"),
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        }),
    );
    f.note("poison_http_reply", json!(http_reply));
    let pool = sqlx::PgPool::connect(&db).await.expect("connect");
    sqlx::query("INSERT INTO outbox (topic, key, payload, headers) VALUES ($1, '-1', $2, '{}')")
        .bind(&topic)
        .bind(vec![0u8; POISON_EVENT_BYTES])
        .execute(&pool)
        .await
        .expect("write the poison row");
    testkit::eventually(
        "the poison row is parked",
        Duration::from_secs(60),
        || async { testkit::db::parked_rows(&pool).await >= 1 },
    )
    .await;
    f.end();
}

/// How long a node stays dead in `leader_kill`.
const LEADER_DEAD: Duration = Duration::from_secs(20);
/// How long the replicas may take to be back in sync after a node returns.
const RESYNC_PATIENCE: Duration = Duration::from_secs(180);

/// The node leading partition 0 of the run's topic killed with SIGKILL, started again later.
async fn leader_kill(f: Fault) {
    partition_leader_away(f, "killed_node", "kafka-kill", "kafka-start").await;
}

/// The node leading partition 0 of the run's topic taken away by the stack command `away`,
/// noted as `noted`, and brought back by `back` after [`LEADER_DEAD`].
async fn partition_leader_away(f: Fault, noted: &str, away: &str, back: &str) {
    tokio::time::sleep(WARM_UP).await;
    let leader = testkit::kafka::partition_leader(&f.topic().await, 0);
    f.note(noted, json!(leader));
    f.begin();
    stack(&format!("{away} {leader}"));
    tokio::time::sleep(LEADER_DEAD).await;
    stack(&format!("{back} {leader}"));
    f.end();
}

/// Every node stopped cleanly and started again, one after the other, each once the replicas
/// are back in sync.
async fn rolling_restart(f: Fault) {
    tokio::time::sleep(WARM_UP).await;
    let topic = f.topic().await;
    f.begin();
    for node in 1..=3 {
        stack(&format!("kafka-stop {node}"));
        stack(&format!("kafka-start {node}"));
        testkit::eventually("the replicas are back in sync", RESYNC_PATIENCE, || {
            std::future::ready(testkit::kafka::fully_in_sync(&topic))
        })
        .await;
    }
    f.end();
}

/// Two of three nodes stopped: too few in-sync replicas, so the relay must stop publishing
/// while OrderCreate goes on and the outbox grows; then one node back, and everything drains.
async fn min_isr_loss(f: Fault) {
    tokio::time::sleep(WARM_UP).await;
    let (db, admin) = {
        let run = f.run.lock().await;
        (run.db.clone(), run.loms[0].admin.clone())
    };
    let pool = sqlx::PgPool::connect(&db).await.expect("connect");
    f.begin();
    stack("kafka-stop 2");
    stack("kafka-kill 3");
    // What was in flight when the nodes went has failed or landed by now.
    tokio::time::sleep(f.secs(12, 20)).await;
    let (acked, backlog) = (
        published(&admin).await,
        testkit::db::outbox_rows(&pool).await,
    );
    tokio::time::sleep(f.secs(8, 20)).await;
    let published_while_short = published(&admin).await - acked;
    let backlog_growth = testkit::db::outbox_rows(&pool).await - backlog;
    f.note(
        "published_while_short_of_replicas",
        json!(published_while_short),
    );
    f.note(
        "outbox_growth_while_short_of_replicas",
        json!(backlog_growth),
    );
    stack("kafka-start 2");
    f.end();
}

/// Events the relay of the loms whose admin listener is `admin` has seen acknowledged, from its
/// metrics.
async fn published(admin: &str) -> i64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("scrape loms")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("loms_events_published_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
