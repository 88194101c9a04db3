//! The transactional outbox: a job is written in the same transaction as
//! the data it is about ([`stage!`]), then [`relay`] pushes it to the
//! queue (Redis, or the SQL `jobs` table) and deletes the row.
//!
//! A rolled-back transaction leaves no job; a crash between commit and push
//! leaves the row for the next relay (every worker runs one); a crash
//! between push and delete makes the next relay push again, which the row's
//! idempotency key turns into a no-op.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::{BulkExec, BulkInsert, Col, Database, on_pool, placeholders};
use crate::job::NewJob;
use crate::queue::{QueueBackend, QueueError};
use crate::write_gate::Lane;

/// Rows relayed per round.
const BATCH: i64 = 2000;

/// Writes `job` into the outbox inside the transaction `$tx` (a
/// `sqlx::Transaction` of either engine), labelled with its client and firm
/// ([`crate::owners`]). Its idempotency key is the job's own, or one made
/// from the row's id.
macro_rules! stage {
    ($tx:expr, $job:expr) => {{
        let mut labelled = [$job.clone()];
        match $crate::owners::label_in!($tx, &mut labelled) {
            Err(e) => Err(e),
            Ok(()) => {
                let [job] = labelled;
                let id = uuid::Uuid::now_v7().to_string();
                let key = job
                    .idempotency_key
                    .clone()
                    .unwrap_or_else(|| format!("outbox:{id}"));
                sqlx::query(
                    "INSERT INTO outbox (id, kind, payload, run_at, max_attempts, idempotency_key,
                                         trace_id, group_name, subject, bulk, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&id)
                .bind(&job.kind)
                .bind(job.payload.to_string())
                .bind(job.run_at_ms)
                .bind(i64::from(job.max_attempts))
                .bind(key)
                .bind(&job.trace_id)
                .bind(&job.group)
                .bind(&job.subject)
                .bind(i64::from(job.bulk))
                .bind($crate::clock::now_ms())
                .execute(&mut *$tx)
                .await
            }
        }
    }};
}
pub(crate) use stage;

const OUTBOX: BulkInsert = BulkInsert {
    table: "outbox",
    cols: &[
        Col::Text("id"),
        Col::Text("kind"),
        Col::Text("payload"),
        Col::Int("run_at"),
        Col::Int("max_attempts"),
        Col::Text("idempotency_key"),
        Col::Text("trace_id"),
        Col::Text("group_name"),
        Col::Text("subject"),
        Col::Int("bulk"),
        Col::Int("created_at"),
    ],
    on_conflict: "",
};

/// A job written into the outbox: its row's id, and the job as the row
/// holds it (idempotency key included), so that the writer can push it
/// itself once committed.
#[derive(Debug, Clone)]
pub struct Staged {
    pub id: String,
    pub job: NewJob,
}

/// The outbox rows of `jobs`, as [`stage!`] writes one, and what they hold.
fn outbox_rows(jobs: &[NewJob]) -> (Vec<serde_json::Value>, Vec<Staged>) {
    let now = crate::clock::now_ms();
    jobs.iter()
        .map(|job| {
            let id = uuid::Uuid::now_v7().to_string();
            let key = job
                .idempotency_key
                .clone()
                .unwrap_or_else(|| format!("outbox:{id}"));
            let row = serde_json::json!({
                "id": id,
                "kind": job.kind,
                "payload": job.payload.to_string(),
                "run_at": job.run_at_ms,
                "max_attempts": job.max_attempts,
                "idempotency_key": key,
                "trace_id": job.trace_id,
                "group_name": job.group,
                "subject": job.subject,
                "bulk": i64::from(job.bulk),
                "created_at": now,
            });
            let job = NewJob {
                idempotency_key: Some(key),
                ..job.clone()
            };
            (row, Staged { id, job })
        })
        .unzip()
}

/// Where a transaction's jobs go: the outbox, or — when the queue is the
/// `jobs` table of this very database — straight into the queue, inside
/// the same transaction (on PostgreSQL its wake-up NOTIFY is delivered at
/// commit; on SQLite the writer wakes this process's fetchers itself).
pub(crate) trait StageJobs {
    /// `direct`: the queue's prefix, when the queue lives in this database.
    /// Returns what went into the outbox (nothing when direct).
    async fn stage_jobs(
        &mut self,
        jobs: &[NewJob],
        direct: Option<&str>,
    ) -> Result<Vec<Staged>, sqlx::Error>;
}

impl StageJobs for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn stage_jobs(
        &mut self,
        jobs: &[NewJob],
        direct: Option<&str>,
    ) -> Result<Vec<Staged>, sqlx::Error> {
        if direct.is_none() {
            let (rows, staged) = outbox_rows(jobs);
            self.bulk(&OUTBOX, &rows).await?;
            return Ok(staged);
        }
        crate::queue::sqlite::insert_in(self, jobs).await?;
        Ok(Vec::new())
    }
}

impl StageJobs for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn stage_jobs(
        &mut self,
        jobs: &[NewJob],
        direct: Option<&str>,
    ) -> Result<Vec<Staged>, sqlx::Error> {
        let Some(prefix) = direct else {
            let (rows, staged) = outbox_rows(jobs);
            self.bulk(&OUTBOX, &rows).await?;
            return Ok(staged);
        };
        crate::queue::postgres::insert_in(self, jobs, prefix).await?;
        Ok(Vec::new())
    }
}

/// The queue prefix when jobs can be inserted straight into the queue in
/// the business transaction: the PostgreSQL or SQLite queue with no
/// `queue.url` of its own, that is in `database.url`.
pub fn direct_queue(queue: &crate::config::QueueSettings) -> Option<&str> {
    use crate::config::QueueBackendKind;
    (matches!(
        queue.backend,
        QueueBackendKind::Postgres | QueueBackendKind::Sqlite
    ) && queue.url.is_none())
    .then_some(queue.prefix.as_str())
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

type Row = (
    String,
    String,
    String,
    Option<i64>,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

/// Pushes what the outbox holds to the queue; returns how many jobs.
pub async fn relay(db: &Database, queue: &dyn QueueBackend) -> Result<usize, OutboxError> {
    let mut total = 0;
    loop {
        let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(
            "SELECT id, kind, payload, run_at, max_attempts, idempotency_key, trace_id, group_name,
                    subject, CAST(bulk AS BIGINT)
             FROM outbox ORDER BY id LIMIT $1",
        )
        .bind(BATCH)
        .fetch_all(pool)
        .await?);
        if rows.is_empty() {
            return Ok(total);
        }
        let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        let jobs = rows
            .into_iter()
            .map(
                |(_, kind, payload, run_at, attempts, key, trace, group, subject, bulk)| NewJob {
                    kind,
                    payload: serde_json::from_str(&payload).unwrap_or_default(),
                    run_at_ms: run_at,
                    max_attempts: u32::try_from(attempts).unwrap_or(1).max(1),
                    idempotency_key: Some(key),
                    trace_id: trace,
                    group,
                    subject,
                    bulk: bulk != 0,
                },
            )
            .collect();
        queue.push_bulk(jobs).await?;
        delete(db, &ids, Lane::Background).await?;
        total += ids.len();
    }
}

/// Pushes the jobs a committed transaction staged, then deletes their rows:
/// what the writer does at once instead of waiting for the relay (which
/// takes over if this fails or the process dies first).
pub async fn push_staged(
    db: &Database,
    queue: &dyn QueueBackend,
    staged: Vec<Staged>,
    lane: Lane,
) -> Result<(), OutboxError> {
    if staged.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = staged.iter().map(|s| s.id.clone()).collect();
    queue
        .push_bulk(staged.into_iter().map(|s| s.job).collect())
        .await?;
    delete(db, &ids, lane).await
}

async fn delete(db: &Database, ids: &[String], lane: Lane) -> Result<(), OutboxError> {
    let sql = format!(
        "DELETE FROM outbox WHERE id IN ({})",
        placeholders(1, ids.len())
    );
    let _turn = db.write_turn(lane).await;
    on_pool!(db, pool => {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id);
        }
        q.execute(pool).await?;
    });
    Ok(())
}

/// Relays every `interval` until `stop`; errors are logged and retried.
pub async fn run_relay(
    db: Database,
    queue: Arc<dyn QueueBackend>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        match relay(&db, queue.as_ref()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(jobs = n, "outbox relayed"),
            Err(e) => tracing::warn!(error = %e, "outbox relay failed; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
