//! Leadership: one relay per database holds a PostgreSQL advisory lock on a connection of its
//! own, and does all its outbox work on that connection, so it cannot go on once it lost it.
//!
//! A leader that dies without closing its connection (a cut network, a frozen host) would keep
//! the lock for as long as the server takes to notice, hours by default. So every call has a
//! deadline, the leader proves it is alive with a statement at least every heartbeat, and a
//! follower that finds the lock held by a session that has been idle for longer than the lease
//! terminates that session: the lock is then free for whoever asks next.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::config::RelaySettings;

/// A follower tries the leader lock at most this often, however short the poll interval.
pub const FOLLOWER_POLL_MIN: Duration = Duration::from_millis(500);

/// The relay's connection, with the deadline every call on it gets.
pub struct Leader {
    conn: PgConnection,
    timeout: Duration,
}

impl Leader {
    /// Runs `call` on the connection within the call timeout; a call that does not answer in
    /// time means the connection (or the server) is gone.
    pub async fn call<'c, T, F>(
        &'c mut self,
        what: &'static str,
        call: impl FnOnce(&'c mut PgConnection) -> F,
    ) -> anyhow::Result<T>
    where
        F: Future<Output = Result<T, sqlx::Error>> + 'c,
    {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, call(&mut self.conn))
            .await
            .map_err(|_| anyhow::anyhow!("relay: {what}: no answer within {timeout:?}"))?
            .with_context(|| format!("relay: {what}"))
    }

    /// A statement that proves to the server (and to followers watching the lock's session)
    /// that this leader is alive, and to the leader that its connection still answers.
    pub async fn heartbeat(&mut self) -> anyhow::Result<()> {
        self.call("heartbeat", |c| async move {
            sqlx::query("SELECT 1").execute(c).await.map(drop)
        })
        .await
    }

    /// Ends the term; closing the connection releases the lock even if the unlock is not
    /// reached. A connection that does not answer is simply dropped.
    pub async fn resign(self) {
        let _ = tokio::time::timeout(self.timeout, self.conn.close()).await;
    }
}

/// Waits until this replica holds the leader lock; `None` on shutdown.
pub async fn acquire(
    connect: &PgConnectOptions,
    settings: &RelaySettings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Leader>> {
    let timeout = settings.call_timeout();
    let conn = tokio::time::timeout(timeout, PgConnection::connect_with(connect))
        .await
        .map_err(|_| anyhow::anyhow!("relay: connecting: no answer within {timeout:?}"))?
        .context("relay: connecting")?;
    let mut leader = Leader { conn, timeout };
    let follower_poll = settings.poll_interval().max(FOLLOWER_POLL_MIN);
    let key = settings.lock_key;
    loop {
        let locked = leader
            .call("taking the leader lock", |c| async move {
                sqlx::query_as::<_, (bool,)>("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(c)
                    .await
            })
            .await?
            .0;
        if locked {
            return Ok(Some(leader));
        }
        let lease = settings.lease().as_secs_f64();
        let stale = leader
            .call("looking at the leader", |c| async move {
                stale_leader(c, key, lease).await
            })
            .await?;
        if let Some((pid, idle)) = stale {
            tracing::warn!(
                pid,
                idle_secs = idle,
                lease_secs = lease,
                "relay: the leader's session has been silent for longer than the lease; terminating it"
            );
            // Waits (within the call timeout) until that session is gone, so that the next
            // round finds the lock free rather than the same session, still on its way out.
            let wait_ms = (settings.call_timeout_ms / 2) as i64;
            leader
                .call("terminating the silent leader", |c| async move {
                    sqlx::query("SELECT pg_terminate_backend($1, $2)")
                        .bind(pid)
                        .bind(wait_ms)
                        .execute(c)
                        .await
                        .map(drop)
                })
                .await?;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(follower_poll) => {}
            _ = shutdown.cancelled() => {
                leader.resign().await;
                return Ok(None);
            }
        }
    }
}

/// The session holding advisory lock `key`, if it has been idle for more than `lease` seconds:
/// (its pid, seconds idle). A bigint advisory lock shows in `pg_locks` as its high half in
/// `classid`, its low half in `objid`, and `objsubid` 1.
async fn stale_leader(
    conn: &mut PgConnection,
    key: i64,
    lease: f64,
) -> Result<Option<(i32, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.pid, EXTRACT(EPOCH FROM now() - a.state_change)::float8
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
           AND l.classid::bigint = ($1 >> 32) AND l.objid::bigint = ($1 & 4294967295)
           AND a.pid <> pg_backend_pid()
           AND a.state = 'idle' AND a.state_change < now() - make_interval(secs => $2)",
    )
    .bind(key)
    .bind(lease)
    .fetch_optional(conn)
    .await
}
