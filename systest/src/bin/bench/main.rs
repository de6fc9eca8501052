//! `make bench` / `make bench-quick`: throughput, latency and drain of the real system on the
//! local stack (`DATABASE_URL`, `KAFKA_BROKERS` from deploy/local/with-stack.sh), with release
//! builds of loms and notifier run as processes. Prints tables, writes
//! `target/bench/results.json` and the figures beside it (SVG). `--quick` runs the same
//! measurements, shorter; `--event-path` measures only the event path's candidate settings
//! (`make bench-event-path`).

mod changes;
mod consume;
mod cpu;
mod drain;
mod e2e;
mod event_path;
mod histogram;
mod load;
mod pgbench;
mod plot;

use std::path::PathBuf;
use std::time::Duration;

use api::loms::{Item, OrderCreateRequest, OrderInfoRequest};
use serde_json::json;
use systest::{load_database, load_sku};
use testkit::kafka::fresh_topic;
use testkit::process::LomsProcess;
use testkit::stack::target_dir;

use crate::changes::Changes;
use crate::cpu::Usage;
use crate::e2e::E2e;
use crate::histogram::Buckets;
use crate::load::Load;

/// Concurrent clients of the OrderCreate, OrderInfo, OrderPay and OrderCancel runs (and of
/// pgbench's).
const CLIENTS: u64 = 64;
/// The fixed rates of the end-to-end runs, kept for comparison with earlier figures; a third
/// runs at half the OrderCreate capacity measured in the same run.
const HIGH_RATE: u64 = 500;
const LOW_RATE: u64 = 100;
/// Events through the broker before anything is measured.
const WARM_UP_EVENTS: i64 = 50_000;

struct Plan {
    load_secs: u64,
    e2e_secs: u64,
    drain_events: i64,
    consume_events: usize,
}

fn out_dir() -> PathBuf {
    target_dir("bench")
}

fn create_request(i: u64) -> OrderCreateRequest {
    OrderCreateRequest {
        user_id: i as i64 + 1,
        items: vec![Item {
            sku: load_sku(i),
            count: 1,
        }],
    }
}

/// A loms (with its relay, its producer given `producer` properties) on a database and topic
/// of its own for the run `name`.
async fn system(name: &str, producer: &[&str]) -> (LomsProcess, String) {
    let db = load_database(&format!("bench_{name}")).await;
    let topic = fresh_topic(&format!("bench.{name}"), 2).await;
    let log = out_dir().join(format!("loms-{name}.log"));
    let options = producer
        .iter()
        .fold(systest::loms(&db, &topic, &log), |o, p| o.kafka_property(p));
    (options.start().await, topic)
}

/// A load run and what the machine's cores did meanwhile.
struct Run {
    load: Load,
    cpu: Usage,
}

/// loms's OrderCreate batches during a run (orders per call of create_orders).
const BATCH_SIZES: &str = "loms_order_batch_size";

impl Run {
    /// CPU microseconds per call of `part`.
    fn per_call_us(&self, part: &str) -> f64 {
        self.cpu.part_per_op_us(part, self.load.rate())
    }
}

/// What the service's runs measured.
struct ServiceRuns {
    create: Run,
    /// Orders per call of create_orders during the OrderCreate run.
    batches: Buckets,
    info: Run,
    changes: Changes,
    rss_mb: (f64, f64),
}

/// OrderCreate with 64 clients (relay and a notifier running, as in production), then
/// OrderInfo with 64 clients on the orders just made, then OrderPay and OrderCancel on them;
/// and peak memory of both services.
async fn service_runs(secs: u64) -> ServiceRuns {
    let (loms, topic) = system("create", &[]).await;
    let notifier = systest::notifier(
        &topic,
        "bench-create",
        &out_dir().join("notifier-create.log"),
    );
    let run = Duration::from_secs(secs);
    let pids = (Some(loms.process.pid()), Some(notifier.process.pid()));
    let batches_before = histogram::parse(&histogram::scrape(&loms.admin).await, BATCH_SIZES);
    let (create, create_cpu) = cpu::measured(
        pids.0,
        pids.1,
        load::closed_loop(
            &loms.grpc,
            CLIENTS,
            load::Stop::After(run),
            |mut client, i| async move {
                client
                    .order_create(create_request(i))
                    .await
                    .expect("OrderCreate");
            },
        ),
    )
    .await;
    let batches =
        histogram::parse(&histogram::scrape(&loms.admin).await, BATCH_SIZES).since(&batches_before);
    let info = info_run(&loms, pids, run).await;
    let changes = changes::measure(&loms, notifier.process.pid()).await;
    ServiceRuns {
        create: Run {
            load: create,
            cpu: create_cpu,
        },
        batches,
        info,
        changes,
        rss_mb: (loms.process.peak_rss_mb(), notifier.process.peak_rss_mb()),
    }
}

/// OrderInfo with 64 clients on the orders made, spread over them.
async fn info_run(loms: &LomsProcess, pids: (Option<u32>, Option<u32>), run: Duration) -> Run {
    let pool = sqlx::PgPool::connect(&loms.options().database_url)
        .await
        .expect("connect");
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM orders ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("order ids");
    let ids = std::sync::Arc::new(ids);
    let (load, cpu) = cpu::measured(
        pids.0,
        pids.1,
        load::closed_loop(
            &loms.grpc,
            CLIENTS,
            load::Stop::After(run),
            move |mut client, i| {
                let order_id = ids[(i as usize * 7919) % ids.len()];
                async move {
                    client
                        .order_info(OrderInfoRequest { order_id })
                        .await
                        .expect("OrderInfo");
                }
            },
        ),
    )
    .await;
    Run { load, cpu }
}

/// A rate some program reached, and what the machine's cores did meanwhile.
struct Yardstick {
    rate: f64,
    cpu: Usage,
}

impl Yardstick {
    /// CPU microseconds of `part` per transaction.
    fn per_op_us(&self, part: &str) -> f64 {
        self.cpu.part_per_op_us(part, self.rate)
    }

    fn pg_us(&self) -> f64 {
        self.per_op_us("postgres")
    }
}

/// The anchor: OrderCreate's very statement, bare (pgbench), beside a relay stand-in, on a load
/// database of its own, as fast as it goes or held at `rate`.
async fn bare_statement_run(secs: u64, rate: Option<u64>) -> Yardstick {
    let db = "bench_bare";
    load_database(db).await;
    let (rate, cpu) = cpu::measured(None, None, async {
        pgbench::bare_statement(db, CLIENTS, secs, rate, &out_dir())
    })
    .await;
    Yardstick { rate, cpu }
}

/// pgbench's rate with `builtin`, and what the machine's cores did meanwhile.
async fn pgbench_run(builtin: &str, secs: u64) -> Yardstick {
    let (rate, cpu) =
        cpu::measured(None, None, async { pgbench::tps(builtin, CLIENTS, secs) }).await;
    Yardstick { rate, cpu }
}

fn print_cpu(cpu: &Usage) {
    println!("     CPU, cores: {}", cpu.line());
}

fn print_e2e(e: &E2e) {
    println!(
        "   at {}/s, {} orders: reply to log p50 {:.2} / p95 {:.2} / p99 {:.2} / p99.9 {:.2} ms",
        e.rate,
        e.overall_ms.len(),
        e.p(0.5),
        e.p(0.95),
        e.p(0.99),
        e.p(0.999)
    );
    println!(
        "     outbox during the run: up to {} live and {} dead rows, {} autovacuums",
        e.outbox.max_live, e.outbox.max_dead, e.outbox.autovacuums
    );
    print_cpu(&e.cpu);
    println!(
        "     Kafka requests: {:.0} produce/s (relay), {:.0} fetch/s (notifier); {:.1} events per produce request",
        e.requests_per_s.produce,
        e.requests_per_s.fetch,
        2.0 * e.rate as f64 / e.requests_per_s.produce.max(1e-9)
    );
    println!("     broker threads, cores: {}", e.busiest_threads(6));
    for (name, b) in &e.stages {
        println!(
            "     {name:<22} p50 {:>7.2} / p95 {:>7.2} / p99 {:>7.2} / p99.9 {:>7.2} ms ({} observed)",
            b.quantile_ms(0.5),
            b.quantile_ms(0.95),
            b.quantile_ms(0.99),
            b.quantile_ms(0.999),
            b.count()
        );
    }
    if let Err(e) = e.stages_cover_the_measured_events() {
        println!("     WARNING: the stage figures are not of this run's events alone: {e}");
    }
}

fn plan(quick: bool) -> Plan {
    if quick {
        Plan {
            load_secs: 8,
            e2e_secs: 6,
            drain_events: 30_000,
            consume_events: 50_000,
        }
    } else {
        Plan {
            load_secs: 30,
            e2e_secs: 20,
            drain_events: 100_000,
            consume_events: 200_000,
        }
    }
}

/// Part 1: the service's capacity and the yardsticks of the same cluster.
struct Capacity {
    service: ServiceRuns,
    simple_update: Yardstick,
    select_only: Yardstick,
    /// OrderCreate's statement bare, as fast as it goes.
    bare: Yardstick,
    /// The same held at the service's OrderCreate rate: PostgreSQL's fixed costs per second
    /// (commits flushed in smaller groups, backends woken for less work) weigh on fewer orders
    /// at a lower rate, so only this one compares CPU per order with the service's.
    bare_at_service_rate: Yardstick,
}

/// Section 1's lines for one run of `name`.
fn print_run(name: &str, unit: &str, took: &str, run: &Run) {
    println!(
        "1. {name}, {CLIENTS} clients, {took}: {:.0} {unit}, p50 {:.2} ms, p99 {:.2} ms",
        run.load.rate(),
        run.load.p(0.5),
        run.load.p(0.99)
    );
    print_cpu(&run.cpu);
    println!(
        "     CPU per call: loms {:.0} us, postgres {:.0} us, load generator {:.0} us; the machine's, all parts: {:.0} us",
        run.per_call_us("loms"),
        run.per_call_us("postgres"),
        run.per_call_us("load generator"),
        run.cpu.per_op_us(run.load.rate())
    );
}

/// Section 1's lines for the service's runs.
fn print_service_runs(secs: u64, s: &ServiceRuns) {
    let took = format!("{secs} s");
    print_run("OrderCreate", "orders/s", &took, &s.create);
    let batches = &s.batches;
    println!(
        "     orders per call of create_orders: p50 {:.1}, p99 {:.1}, max <= {:.0} ({} calls)",
        batches.quantile(0.5),
        batches.quantile(0.99),
        batches.max_at_most(),
        batches.count()
    );
    print_run("OrderInfo", "/s", &took, &s.info);
    s.changes.print();
}

/// pgbench's simple-update and select-only on the same clients and time, printed.
async fn pgbench_yardsticks(secs: u64) -> (Yardstick, Yardstick) {
    pgbench::init();
    let simple_update = pgbench_run("simple-update", secs).await;
    let select_only = pgbench_run("select-only", secs).await;
    for (name, y) in [
        ("simple-update", &simple_update),
        ("select-only", &select_only),
    ] {
        println!(
            "   pgbench {name}, {CLIENTS} clients, {secs} s: {:.0} tps",
            y.rate
        );
        print_cpu(&y.cpu);
        println!(
                "     CPU per transaction: postgres {:.0} us, pgbench {:.0} us; the machine's, all parts: {:.0} us",
                y.pg_us(),
                y.per_op_us("load generator"),
                y.cpu.per_op_us(y.rate)
            );
    }
    (simple_update, select_only)
}

impl Capacity {
    async fn measure(secs: u64) -> Self {
        let service = service_runs(secs).await;
        print_service_runs(secs, &service);
        let (simple_update, select_only) = pgbench_yardsticks(secs).await;
        let service_rate = service.create.load.rate().round().max(1.0) as u64;
        let bare = bare_statement_run(secs, None).await;
        let bare_at_service_rate = bare_statement_run(secs, Some(service_rate)).await;
        let capacity = Self {
            service,
            simple_update,
            select_only,
            bare,
            bare_at_service_rate,
        };
        capacity.print_bare(secs);
        capacity
    }

    /// PostgreSQL's CPU microseconds per order in the service.
    fn create_pg_us(&self) -> f64 {
        self.service.create.per_call_us("postgres")
    }

    fn print_bare(&self, secs: u64) {
        let service = self.create_pg_us();
        for (how, y) in [
            ("as fast as it goes", &self.bare),
            ("held at the service's rate", &self.bare_at_service_rate),
        ] {
            println!(
                "   OrderCreate's statement bare (pgbench, prepared, {CLIENTS} clients, a relay stand-in), {how}, {secs} s: {:.0} orders/s",
                y.rate
            );
            print_cpu(&y.cpu);
            println!(
                "     PostgreSQL CPU per order: bare {:.0} us, in the service {service:.0} us ({:.2}x)",
                y.pg_us(),
                service / y.pg_us()
            );
        }
        let (create_bound, info_bound) = self.cpu_bounds();
        println!(
            "   ratios the CPU per call allows: OrderCreate {create_bound:.2} of simple-update, OrderInfo {info_bound:.2} of select-only"
        );
    }

    /// On shared cores a ratio cannot exceed the inverse ratio of the machine's CPU per call.
    fn cpu_bounds(&self) -> (f64, f64) {
        let bound =
            |y: &Yardstick, run: &Run| y.cpu.per_op_us(y.rate) / run.cpu.per_op_us(run.load.rate());
        (
            bound(&self.simple_update, &self.service.create),
            bound(&self.select_only, &self.service.info),
        )
    }
}

/// Everything one bench run measured.
struct Figures {
    quick: bool,
    cores: usize,
    capacity: Capacity,
    /// At half the OrderCreate capacity, at HIGH_RATE, at LOW_RATE.
    e2e: Vec<E2e>,
    drain: (f64, f64, usize),
    consume: f64,
}

impl Figures {
    fn json(&self, figures: Vec<String>) -> serde_json::Value {
        let c = &self.capacity;
        let (create, info) = (&c.service.create.load, &c.service.info.load);
        let (pg_update, pg_select) = (c.simple_update.rate, c.select_only.rate);
        let create_pg_us = c.create_pg_us();
        let (cpu_bound_create, cpu_bound_info) = c.cpu_bounds();
        let (at_half, at_high, at_low) = (&self.e2e[0], &self.e2e[1], &self.e2e[2]);
        let (drain, raw, size) = self.drain;
        json!({
            "mode": if self.quick { "quick" } else { "full" },
            "cores": self.cores,
            "create_throughput_per_s": create.rate(),
            "create_latency_ms": {"p50": create.p(0.5), "p99": create.p(0.99)},
            "create_batch_orders": {"p50": c.service.batches.quantile(0.5), "p99": c.service.batches.quantile(0.99), "max_at_most": c.service.batches.max_at_most(), "calls": c.service.batches.count()},
            "pgbench_tps": pg_update,
            "bare_sql_per_s": c.bare.rate,
            "bare_sql_pg_cpu_us_per_order": c.bare.pg_us(),
            "bare_sql_at_service_rate_per_s": c.bare_at_service_rate.rate,
            "bare_sql_at_service_rate_pg_cpu_us_per_order": c.bare_at_service_rate.pg_us(),
            "create_pg_cpu_us_per_order": create_pg_us,
            "create_vs_bare_sql_pg_cpu": create_pg_us / c.bare.pg_us(),
            "create_vs_bare_sql_at_same_rate_pg_cpu": create_pg_us / c.bare_at_service_rate.pg_us(),
            "create_vs_pgbench": create.rate() / pg_update,
            "cpu_cores": {
                "create": c.service.create.cpu.json(),
                "info": c.service.info.cpu.json(),
                "pgbench_simple_update": c.simple_update.cpu.json(),
                "pgbench_select_only": c.select_only.cpu.json(),
                "bare_sql": c.bare.cpu.json(),
                "bare_sql_at_service_rate": c.bare_at_service_rate.cpu.json(),
            },
            "cpu_bound_create_vs_pgbench": cpu_bound_create,
            "cpu_bound_info_vs_pgbench_select_only": cpu_bound_info,
            "info_throughput_per_s": info.rate(),
            "info_latency_ms": {"p50": info.p(0.5), "p99": info.p(0.99)},
            "pgbench_select_only_tps": pg_select,
            "info_vs_pgbench_select_only": info.rate() / pg_select,
            "pay_and_cancel": c.service.changes.json(),
            // Each run's figures named by its rate (every run's in full in e2e_runs).
            "e2e_latency_ms_at_half_capacity": {"rate_per_s": at_half.rate, "p50": at_half.p(0.5), "p95": at_half.p(0.95), "p99": at_half.p(0.99)},
            format!("e2e_latency_ms_at_{HIGH_RATE}_per_s"): {"p50": at_high.p(0.5), "p95": at_high.p(0.95), "p99": at_high.p(0.99)},
            format!("e2e_latency_ms_at_{LOW_RATE}_per_s"): {"p50": at_low.p(0.5), "p95": at_low.p(0.95), "p99": at_low.p(0.99)},
            "e2e_runs": self.e2e.iter().map(E2e::json).collect::<Vec<_>>(),
            "e2e_half_capacity_rate_per_s": at_half.rate,
            "relay_drain_per_s": drain,
            "raw_producer_per_s": raw,
            "relay_vs_raw": drain / raw,
            "event_size_bytes": size,
            "notifier_consume_per_s": self.consume,
            "rss_mb": {"loms": c.service.rss_mb.0, "notifier": c.service.rss_mb.1},
            "figures": figures,
        })
    }

    fn print_table(&self) {
        let c = &self.capacity;
        let (create, info) = (&c.service.create.load, &c.service.info.load);
        let (pg_update, pg_select) = (c.simple_update.rate, c.select_only.rate);
        let create_pg_us = c.create_pg_us();
        let (same_rate, flat_out) = (&c.bare_at_service_rate, &c.bare);
        println!("| measure | figure | goal |");
        println!("|---|---|---|");
        println!(
            "| OrderCreate, {CLIENTS} clients | {:.0}/s, {:.2} of pgbench simple-update {pg_update:.0} tps | >= 0.7 |",
            create.rate(),
            create.rate() / pg_update
        );
        println!(
            "| PostgreSQL CPU per order | service {create_pg_us:.0} us; the bare statement at the same rate ({:.0}/s) {:.0} us: {:.2}x; flat out ({:.0}/s) {:.0} us: {:.2}x | <= 1.3x |",
            same_rate.rate,
            same_rate.pg_us(),
            create_pg_us / same_rate.pg_us(),
            flat_out.rate,
            flat_out.pg_us(),
            create_pg_us / flat_out.pg_us()
        );
        println!(
            "| OrderInfo, {CLIENTS} clients | {:.0}/s, {:.2} of pgbench select-only {pg_select:.0} tps | >= 0.4 |",
            info.rate(),
            info.rate() / pg_select
        );
        println!("{}", c.service.changes.table_row());
        for (e, goal) in self
            .e2e
            .iter()
            .zip(["p99 <= 20, p50 <= 5 ms", "p99 <= 30 ms", ""])
        {
            println!(
                "| end to end at {}/s | p50 {:.1} / p95 {:.1} / p99 {:.1} / p99.9 {:.1} ms | {goal} |",
                e.rate,
                e.p(0.5),
                e.p(0.95),
                e.p(0.99),
                e.p(0.999)
            );
        }
        let (drain, raw, _) = self.drain;
        println!(
            "| relay drain | {drain:.0} events/s, {:.2} of the raw producer's {raw:.0}/s | >= 0.7 |",
            drain / raw
        );
        println!(
            "| notifier consumption | {:.0} events/s | >= 50,000/s |",
            self.consume
        );
        println!(
            "| peak RSS | loms {:.1} MB, notifier {:.1} MB | <= 64 MB each |",
            c.service.rss_mb.0, c.service.rss_mb.1
        );
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = plan(quick);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "bench ({}) on {cores} cores",
        if quick { "quick" } else { "full" }
    );

    // A fresh broker compiles its hot paths first (JIT); a pass of the relay's and the
    // notifier's traffic, not measured, so that the figures are of a warm broker.
    println!("0. warming the broker up: {WARM_UP_EVENTS} events drained by a relay and consumed by a notifier, not measured");
    drain::run(WARM_UP_EVENTS).await;
    consume::run(WARM_UP_EVENTS as usize).await;
    if std::env::args().any(|a| a == "--event-path") {
        return event_path::sweep(plan.e2e_secs).await;
    }

    let capacity = Capacity::measure(plan.load_secs).await;

    let half = ((capacity.service.create.load.rate() / 2.0) as u64).max(1);
    println!("2. end to end (reply to the notifier's log line), and per stage:");
    let mut e2e = Vec::new();
    for rate in [half, HIGH_RATE, LOW_RATE] {
        let run = e2e::run(plan.e2e_secs, rate, &e2e::DEFAULTS).await;
        print_e2e(&run);
        e2e.push(run);
    }
    let drain = drain::run(plan.drain_events).await;
    println!(
        "3. relay drain of {} events ({} B): {:.0} events/s; raw producer {:.0} msgs/s",
        plan.drain_events, drain.2, drain.0, drain.1
    );
    let consume = consume::run(plan.consume_events).await;
    println!(
        "4. notifier on {} events: {consume:.0} events/s",
        plan.consume_events
    );
    println!(
        "5. peak RSS during 1: loms {:.1} MB, notifier {:.1} MB",
        capacity.service.rss_mb.0, capacity.service.rss_mb.1
    );

    let figures = write_figures(
        &capacity.service.create.load,
        &capacity.service.info.load,
        &e2e,
    );
    let measured = Figures {
        quick,
        cores,
        capacity,
        e2e,
        drain,
        consume,
    };
    let path = out_dir().join("results.json");
    let text = serde_json::to_string_pretty(&measured.json(figures)).expect("json");
    std::fs::write(&path, text).expect("write results");
    println!();
    measured.print_table();
    println!("results: {}", path.display());
}

/// Draws the figures; their file names, for the results.
fn write_figures(create: &Load, info: &Load, e2e: &[E2e]) -> Vec<String> {
    let mut names = Vec::new();
    let mut draw = |name: String, result: Result<(), Box<dyn std::error::Error>>| match result {
        Ok(()) => names.push(name),
        Err(e) => eprintln!("bench: figure {name} not drawn: {e}"),
    };
    for run in e2e {
        let name = format!("latency-{}-per-s.svg", run.rate);
        let title = format!(
            "End to end at {} orders/s: distribution per stage",
            run.rate
        );
        draw(
            name.clone(),
            plot::latency_cdf(&out_dir().join(&name), &title, &run.cdfs()),
        );
    }
    let series = [
        ("OrderCreate".to_string(), create.per_second.clone()),
        ("OrderInfo".to_string(), info.per_second.clone()),
    ];
    draw(
        "throughput.svg".into(),
        plot::throughput(
            &out_dir().join("throughput.svg"),
            &format!("Throughput over time, {CLIENTS} clients"),
            &series,
        ),
    );
    names
}
