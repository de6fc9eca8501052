//! The system with every connection encrypted, verified and authenticated, on a stack of its
//! own (`KAFKA_SECURITY=sasl_ssl PG_TLS=1`): loms and a notifier over SASL_SSL (SCRAM-SHA-512)
//! and PostgreSQL over TLS with a client certificate, an order's events logged; and each way it
//! must refuse: plaintext to either server, a CA that did not sign the server, a host name the
//! certificate does not name, verify-full against a server without TLS, a CA file that does
//! not exist.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use testkit::eventually;
use testkit::process::{bin_dir, LomsOptions, NotifierOptions};
use testkit::stack::PrivateStack;

const PATIENCE: Duration = Duration::from_secs(60);

/// The stack's Kafka security settings as a service's variables (`LOMS`, `NOTIFIER`), with
/// `ca` as the CA file.
fn kafka_security(prefix: &str, stack: &PrivateStack, ca: &str) -> Vec<(String, String)> {
    let mut security = stack.kafka_security();
    for (key, value) in &mut security {
        if *key == "CA_LOCATION" {
            *value = ca.to_string();
        }
    }
    testkit::stack::security_env(prefix, &security)
}

/// A CA of nobody's: it signed none of the stack's certificates.
fn another_ca(dir: &Path) -> String {
    let ca = testkit::stack::certificates(&dir.join("another-ca")).join("ca.pem");
    ca.to_string_lossy().into_owned()
}

/// `loms migrate` with `env`: its exit and what it said.
fn migrate(env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(bin_dir().join("loms"))
        .arg("migrate")
        .envs(env.iter().copied())
        .output()
        .expect("run loms migrate");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[tokio::test]
async fn every_connection_encrypted_verified_and_authenticated() {
    let stack = PrivateStack::up(&[("KAFKA_SECURITY", "sasl_ssl"), ("PG_TLS", "1")]);
    let (db, brokers, ca) = (
        stack.var("DATABASE_URL"),
        stack.var("KAFKA_BROKERS"),
        stack.var("KAFKA_CA_LOCATION"),
    );
    assert!(db.contains("sslmode=verify-full"), "{db}");
    let topic = events_proto::TOPIC;

    // Through: an order made through loms is logged by a notifier.
    let mut loms = LomsOptions::new(db, topic).env("LOMS_KAFKA__BROKERS", brokers);
    for (k, v) in kafka_security("LOMS", &stack, ca) {
        loms = loms.env(&k, &v);
    }
    let loms = loms.start().await;
    let mut notifier = NotifierOptions::new(topic, "notifier-secure");
    notifier.brokers = brokers.to_string();
    for (k, v) in kafka_security("NOTIFIER", &stack, ca) {
        notifier = notifier.env(&k, &v);
    }
    let notifier = notifier.start();
    let order_id = testkit::one_order(&mut loms.client().await.unwrap()).await;
    eventually("the notifier logs the order's two events", PATIENCE, || {
        let logged = notifier
            .process
            .json_lines()
            .iter()
            .filter(|l| l["message"] == "order event" && l["order_id"] == order_id)
            .count();
        std::future::ready(logged >= 2)
    })
    .await;
    // Every session of loms's is encrypted.
    let pool = sqlx::PgPool::connect(db).await.expect("connect over TLS");
    let (encrypted, plain): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where s.ssl), count(*) filter (where not s.ssl)
         from pg_stat_activity a join pg_stat_ssl s using (pid) where a.application_name = 'loms'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        encrypted > 0 && plain == 0,
        "{encrypted} encrypted, {plain} not"
    );
    let password = stack.var("KAFKA_SASL_PASSWORD");
    for log in [loms.process.log_text(), notifier.process.log_text()] {
        assert!(!log.contains(password), "a password in a log");
    }

    // Plaintext: refused by both servers.
    let plaintext_pg = db.split('?').next().unwrap().to_string() + "?sslmode=disable";
    let refused = sqlx::PgPool::connect(&plaintext_pg).await.unwrap_err();
    assert!(refused.to_string().contains("no encryption"), "{refused}");
    let plaintext_kafka: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "plaintext")
        .create()
        .unwrap();
    assert!(
        plaintext_kafka
            .fetch_metadata(None, Duration::from_secs(5))
            .is_err(),
        "the secure broker answered a plaintext client"
    );

    // Refusals a start must name: checked by `loms migrate`, which connects as `serve` does.
    let other_ca = another_ca(&stack.dir);
    let (ok, said) = migrate(&[
        ("LOMS_DATABASE__URL", db),
        ("LOMS_DATABASE__TLS__ROOT_CERT", &other_ca),
    ]);
    assert!(
        !ok && said.contains("invalid peer certificate"),
        "a wrong CA: {said}"
    );
    let proxy = testkit::toxiproxy::Toxiproxy::start().await;
    let pg = testkit::toxiproxy::host_port(db);
    let port = pg.rsplit_once(':').unwrap().1;
    let elsewhere = proxy
        .proxy_at("pg-by-another-name", &format!("127.0.0.2:{port}"), &pg)
        .await;
    let wrong_name = db.replace(&pg, &elsewhere);
    let (ok, said) = migrate(&[("LOMS_DATABASE__URL", &wrong_name)]);
    assert!(
        !ok && said.contains("not valid for name"),
        "a wrong host name: {said}"
    );
    let plain_server = format!(
        "{}?sslmode=verify-full&sslrootcert={ca}",
        testkit::stack::database_url()
    );
    let (ok, said) = migrate(&[("LOMS_DATABASE__URL", &plain_server)]);
    assert!(
        !ok && said.contains("does not support TLS"),
        "no TLS: {said}"
    );

    // Kafka: a CA that did not sign the broker is refused by each client at its handshake; a CA
    // file that does not exist stops the start with librdkafka's reason.
    // (The relay of the first loms holds the lock; this one's relay must lead to connect.)
    let mut loms = loms;
    loms.process.terminate().await;
    let mut wrong = LomsOptions::new(db, topic).env("LOMS_KAFKA__BROKERS", brokers);
    for (k, v) in kafka_security("LOMS", &stack, &other_ca) {
        wrong = wrong.env(&k, &v);
    }
    let wrong_loms = wrong.start().await;
    let mut wrong = NotifierOptions::new(topic, "notifier-wrong-ca");
    wrong.brokers = brokers.to_string();
    for (k, v) in kafka_security("NOTIFIER", &stack, &other_ca) {
        wrong = wrong.env(&k, &v);
    }
    let wrong_notifier = wrong.start();
    for (who, process) in [
        ("loms", &wrong_loms.process),
        ("the notifier", &wrong_notifier.process),
    ] {
        eventually(
            &format!("{who} says the broker's certificate is not trusted"),
            PATIENCE,
            || std::future::ready(process.log_text().contains("certificate verify failed")),
        )
        .await;
    }
    // Under a deadline: a start that did not fail would serve until stopped.
    let missing = Command::new("timeout")
        .arg("60")
        .arg(bin_dir().join("loms"))
        .envs([
            ("LOMS_DATABASE__URL", db),
            ("LOMS_KAFKA__BROKERS", brokers),
            ("LOMS_KAFKA__SECURITY__PROTOCOL", "SSL"),
            ("LOMS_KAFKA__SECURITY__CA_LOCATION", "/no/such/ca.pem"),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success(), "started without its CA file");
    assert!(
        said.contains("ssl.ca.location") || said.contains("/no/such/ca.pem"),
        "{said}"
    );
}
