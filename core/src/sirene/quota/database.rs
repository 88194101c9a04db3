//! The quota log in the business database's `quota_slots` table.
//!
//! One take is one short transaction, serialised per provider: on
//! PostgreSQL by a transaction-scoped advisory lock (machines' clocks do not
//! matter: the database's clock stamps the slots); on SQLite by
//! `BEGIN IMMEDIATE`, the file's one writer at a time (all its processes
//! share this machine's clock). Registry quotas are a few requests a
//! second, so a few round trips per take cost nothing that matters.

use std::time::Duration;

use sqlx::{PgPool, SqlitePool};

use super::{Ask, Priority, QuotaError, QuotaStore, Window, reserved, want_until};
use crate::clock::now_ms;
use crate::db::Database;
use crate::write_gate::Lane;

/// Every process on one business database counts in the same table.
pub struct DatabaseQuota {
    db: Database,
}

impl DatabaseQuota {
    /// Counts in `db`, which must be migrated (`quota_slots`).
    pub fn new(db: Database) -> DatabaseQuota {
        DatabaseQuota { db }
    }
}

#[async_trait::async_trait]
impl QuotaStore for DatabaseQuota {
    async fn try_take(
        &self,
        name: &str,
        limit: u32,
        window: Duration,
        ask: Ask<'_>,
    ) -> Result<Option<Duration>, QuotaError> {
        let window_ms = window.as_millis() as i64;
        match &self.db {
            Database::Postgres(pool) => take_postgres(pool, name, limit, window_ms, ask).await,
            Database::Sqlite(pool) => {
                let _turn = self.db.write_turn(Lane::Background).await;
                take_sqlite(pool, name, limit, window_ms, ask).await
            }
        }
    }

    async fn answered(
        &self,
        name: &str,
        waiter: &str,
        _window: Duration,
    ) -> Result<(), QuotaError> {
        match &self.db {
            Database::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // Under the take's lock: a take deciding now sees the new
                // stamp or runs before it.
                lock_postgres(&mut tx, name).await?;
                sqlx::query(RESTAMP_POSTGRES)
                    .bind(name)
                    .bind(waiter)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Database::Sqlite(pool) => {
                let _turn = self.db.write_turn(Lane::Background).await;
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query("DELETE FROM quota_slots WHERE name = $1 AND waiter = $2")
                    .bind(name)
                    .bind(waiter)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO quota_slots (name, taken_at_ms, waiter) VALUES ($1, $2, $3)",
                )
                .bind(name)
                .bind(now_ms())
                .bind(waiter)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

/// The slot of a waiter (if still there) replaced by one stamped now, on
/// the database's clock.
const RESTAMP_POSTGRES: &str = "WITH gone AS (
       DELETE FROM quota_slots WHERE name = $1 AND waiter = $2 RETURNING 1)
     INSERT INTO quota_slots (name, taken_at_ms, waiter)
     SELECT $1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint, $2";

/// One provider's takes and re-stamps, one at a time across processes.
async fn lock_postgres(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('dossier.quota:' || $1, 0))")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What an ask does with the wants of a provider, in the take's
/// transaction: the slots a bulk ask must leave free (one per live want),
/// and, once the verdict is known, an interactive waiter's want recorded
/// or dropped.
macro_rules! wants {
    (reserved: $tx:expr, $name:expr, $now:expr, $ask:expr) => {{
        sqlx::query("DELETE FROM quota_wants WHERE name = $1 AND until_ms <= $2")
            .bind($name)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        let wants: i64 = if $ask.priority == Priority::Bulk {
            sqlx::query_scalar("SELECT count(*) FROM quota_wants WHERE name = $1")
                .bind($name)
                .fetch_one(&mut *$tx)
                .await?
        } else {
            0
        };
        reserved($ask, wants)
    }};
    (record: $tx:expr, $name:expr, $now:expr, $ask:expr, $verdict:expr) => {{
        match ($ask.priority, $verdict) {
            (Priority::Interactive, None) => {
                sqlx::query("DELETE FROM quota_wants WHERE name = $1 AND waiter = $2")
                    .bind($name)
                    .bind($ask.waiter)
                    .execute(&mut *$tx)
                    .await?;
            }
            (Priority::Interactive, Some(wait)) => {
                sqlx::query(
                    "INSERT INTO quota_wants (name, waiter, until_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (name, waiter) DO UPDATE SET until_ms = excluded.until_ms",
                )
                .bind($name)
                .bind($ask.waiter)
                .bind(want_until($now, wait))
                .execute(&mut *$tx)
                .await?;
            }
            (Priority::Bulk, _) => {}
        }
    }};
}

async fn take_postgres(
    pool: &PgPool,
    name: &str,
    limit: u32,
    window_ms: i64,
    ask: Ask<'_>,
) -> Result<Option<Duration>, QuotaError> {
    let mut tx = pool.begin().await?;
    // Taken before the statement below, whose snapshot then sees every
    // slot committed by whoever held the lock before us.
    lock_postgres(&mut tx, name).await?;
    // The database's clock, as the slots' stamps below.
    let clock: i64 =
        sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
            .fetch_one(&mut *tx)
            .await?;
    let keep_free = wants!(reserved: tx, name, clock, ask);
    // One statement: read the window, take a slot if one is free, drop the
    // slots that left the window. Only the commit remains between the
    // slot's stamp and the request it lets through (the registry counts
    // arrivals: the later the stamp, the smaller the gap).
    let (now_ms, taken, oldest_ms): (i64, i64, Option<i64>) = sqlx::query_as(
        "WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms),
         found AS (
           SELECT count(s.taken_at_ms) AS taken, min(s.taken_at_ms) AS oldest
           FROM clock LEFT JOIN quota_slots s
             ON s.name = $1 AND s.taken_at_ms > clock.ms - $2),
         take AS (
           INSERT INTO quota_slots (name, taken_at_ms, waiter)
           SELECT $1, clock.ms, $4 FROM clock, found WHERE found.taken < $3
           RETURNING 1),
         gone AS (
           DELETE FROM quota_slots s USING clock
           WHERE s.name = $1 AND s.taken_at_ms <= clock.ms - $2
           RETURNING 1)
         SELECT clock.ms, found.taken, found.oldest FROM clock, found",
    )
    .bind(name)
    .bind(window_ms)
    .bind(i64::from(limit) - keep_free)
    .bind(ask.waiter)
    .fetch_one(&mut *tx)
    .await?;
    let verdict = Window {
        now_ms,
        taken,
        oldest_ms,
    }
    .verdict(limit, window_ms, keep_free);
    wants!(record: tx, name, now_ms, ask, verdict);
    tx.commit().await?;
    Ok(verdict)
}

async fn take_sqlite(
    pool: &SqlitePool,
    name: &str,
    limit: u32,
    window_ms: i64,
    ask: Ask<'_>,
) -> Result<Option<Duration>, QuotaError> {
    // IMMEDIATE: the write lock from the start, so that two processes
    // cannot both count a free slot and both take it.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let now = now_ms();
    let keep_free = wants!(reserved: tx, name, now, ask);
    sqlx::query("DELETE FROM quota_slots WHERE name = $1 AND taken_at_ms <= $2")
        .bind(name)
        .bind(now - window_ms)
        .execute(&mut *tx)
        .await?;
    let (taken, oldest_ms): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), min(taken_at_ms) FROM quota_slots WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    let found = Window {
        now_ms: now,
        taken,
        oldest_ms,
    };
    let verdict = found.verdict(limit, window_ms, keep_free);
    if verdict.is_none() {
        // Stamped as late as it can be (see `take_postgres`).
        sqlx::query("INSERT INTO quota_slots (name, taken_at_ms, waiter) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(now_ms().max(found.now_ms))
            .bind(ask.waiter)
            .execute(&mut *tx)
            .await?;
    }
    wants!(record: tx, name, now, ask, verdict);
    tx.commit().await?;
    Ok(verdict)
}
