//! A migration keeps what earlier ones stored: orders made while their lines lived in a table of
//! their own (`order_items`) read back the same once the lines moved into the order's row.

use api::loms::{Item, OrderInfoRequest};
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use testkit::app::{settings, TestApp};

/// The first migration that stores an order's lines in its row.
const LINES_IN_ORDERS: i64 = 20260101000004;

#[tokio::test]
async fn orders_made_before_the_lines_moved_keep_their_lines() {
    let url = testkit::db::fresh_database().await;
    let pool = PgPool::connect(&url).await.unwrap();
    // The schema as it was: the migrations before that one, from a folder of their own.
    let earlier = std::env::temp_dir().join(format!("migrations-{}", testkit::unique()));
    std::fs::create_dir_all(&earlier).unwrap();
    for migration in loms::database::MIGRATOR.iter() {
        if migration.version < LINES_IN_ORDERS {
            let name = format!(
                "{}_{}.sql",
                migration.version,
                migration.description.replace(' ', "_")
            );
            std::fs::write(earlier.join(name), migration.sql.as_ref()).unwrap();
        }
    }
    Migrator::new(earlier.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    std::fs::remove_dir_all(&earlier).unwrap();
    for statement in [
        "INSERT INTO orders (id, user_id, status, event_seq) VALUES (1, 7, 'awaiting payment', 2)",
        "INSERT INTO order_items (order_id, sku, count) VALUES (1, 2956315, 3), (1, 1076963, 2)",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }

    // loms migrates the rest at start, and reads the order as it was made.
    let app = TestApp::start(settings(&url, "loms.order-events.unused", false), &url).await;
    let info = app
        .client()
        .await
        .order_info(OrderInfoRequest { order_id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.status, "awaiting payment");
    assert_eq!(info.user_id, 7);
    assert_eq!(
        info.items,
        vec![
            Item {
                sku: 1076963,
                count: 2
            },
            Item {
                sku: 2956315,
                count: 3
            },
        ]
    );
    let old_table: Option<String> = sqlx::query_scalar("SELECT to_regclass('order_items')::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(old_table, None, "the lines live in the order's row only");
    app.stop().await;
}

/// `loms migrate` runs on a connection of its own: the requests' statement timeout does not
/// cancel it (here 1 ms, shorter than any migration), and a migration that would wait for a lock
/// held by live traffic gives up after the lock timeout with the reason, instead of queueing
/// every request behind it.
#[tokio::test]
async fn migrations_ignore_the_statement_timeout_and_respect_the_lock_timeout() {
    let migrate = |url: &str| {
        std::process::Command::new(testkit::process::bin_dir().join("loms"))
            .args(["--database-url", url, "migrate"])
            .env("LOMS_DATABASE__STATEMENT_TIMEOUT_MS", "1")
            .env("LOMS_DATABASE__MIGRATION_LOCK_TIMEOUT_MS", "500")
            .env("LOMS_LOG__FILTER", "warn")
            .output()
            .expect("run loms migrate")
    };
    let url = testkit::db::fresh_database().await;
    let out = migrate(&url);
    assert!(out.status.success(), "{out:?}");
    let pool = PgPool::connect(&url).await.unwrap();
    let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, loms::database::MIGRATOR.iter().count() as i64);

    // Live traffic holds a lock the next migration needs: the migration gives up.
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 20260101000005")
        .execute(&pool)
        .await
        .unwrap();
    let mut traffic = pool.begin().await.unwrap();
    // That migration indexes outbox_parked: it needs a lock on that table.
    sqlx::query("LOCK TABLE outbox_parked IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *traffic)
        .await
        .unwrap();
    let blocked = migrate(&url);
    assert!(!blocked.status.success());
    let said = String::from_utf8_lossy(&blocked.stderr).to_string()
        + &String::from_utf8_lossy(&blocked.stdout);
    assert!(said.contains("lock timeout"), "{said}");
    traffic.rollback().await.unwrap();
    assert!(migrate(&url).status.success(), "once the lock is gone");
}
