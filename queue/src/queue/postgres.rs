//! The queue on PostgreSQL: the `jobs` table, with `FOR UPDATE SKIP LOCKED`
//! so that concurrent fetches never wait on each other, and LISTEN/NOTIFY
//! wake-ups across processes. Batches go through `jsonb_to_recordset`: one
//! statement per batch.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use tokio_util::sync::CancellationToken;

use super::lane_hint::{LaneHints, LaneKey};
use super::sql_filter::{Bind, Dialect, where_clause};
use super::{
    AdminOutcome, Completion, CountsRow, ExpiredLease, Failure, PauseRow, QueueBackend, QueueError,
    ScaleRow, Wakers, WorkerRow, counts_from_row, pause_from_row, scale_from_row, waiting_status,
    worker_from_row,
};
use crate::clock::now_ms;
use crate::job::{
    FAIR_LANES, GroupWaiting, JobFilter, JobRecord, JobStatus, LeasedJob, NewJob, Pause,
    PushOutcome, QueueCounts, Scale, WorkerInfo,
};

pub struct PostgresQueue {
    pool: PgPool,
    channel: String,
    wakers: Wakers,
    hints: LaneHints,
}

/// The jobs of a lease statement's `RETURNING` rows.
fn leased_jobs(rows: &[PgRow]) -> Result<Vec<LeasedJob>, QueueError> {
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("id")?;
            let payload: String = row.try_get("payload")?;
            Ok(LeasedJob {
                payload: super::leased_payload(&id, &payload)?,
                id,
                kind: row.try_get("kind")?,
                attempt: row.try_get::<i32, _>("attempts")?.max(0) as u32,
                max_attempts: row.try_get::<i32, _>("max_attempts")?.max(0) as u32,
                trace_id: row.try_get("trace_id")?,
            })
        })
        .collect()
}

const RECORD_COLUMNS: &str = "id, kind, payload::text AS payload, state, attempts, max_attempts, run_at, \
     created_at, updated_at, finished_at, lease_owner, lease_expires_at, idempotency_key, trace_id, \
     group_name, subject, bulk, last_error, errors::text AS errors, result::text AS result";

/// Inserts jobs given as a JSON array ($1, see [`job_rows`]) at time $2;
/// a job whose idempotency key exists is skipped. Returns the new ids.
pub(crate) const INSERT_JOBS: &str =
    "INSERT INTO jobs (id, kind, payload, state, attempts, max_attempts, run_at, created_at,
                   updated_at, idempotency_key, trace_id, group_name, subject, bulk)
 SELECT x.id, x.kind, x.payload, 'queued', 0, x.max_attempts, x.run_at, $2, $2,
        x.idempotency_key, x.trace_id, x.group_name, x.subject, x.bulk
 FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, kind text, payload jsonb,
      max_attempts int, run_at bigint, idempotency_key text, trace_id text, group_name text,
      subject text, bulk int)
 ON CONFLICT (idempotency_key) DO NOTHING
 RETURNING id";

/// One fetch, fair across groups: `lanes` walks `jobs_fair` one (lane,
/// group) with due work at a time (a loose index scan: one seek each, at
/// most $6), `turns` takes each pair's oldest due jobs (at most $5, locked
/// as they are read, skipping jobs another fetch holds) and numbers them
/// within the pair; the jobs leased are the first $5 by lane (interactive
/// first), then turn — each group one job per round — then run time.
/// Both are MATERIALIZED: evaluated once, so that a rescan by the planner
/// can never pick (and lease) a second, different set.
const FAIR_FETCH: &str = "
WITH RECURSIVE lanes AS (
    (SELECT bulk, COALESCE(group_name, '') AS g, 1 AS n FROM jobs
     WHERE state = 'queued' AND kind = $4 AND run_at <= $3
     ORDER BY bulk, COALESCE(group_name, '') LIMIT 1)
    UNION ALL
    SELECT x.bulk, x.g, l.n + 1 FROM lanes l CROSS JOIN LATERAL (
        SELECT bulk, COALESCE(group_name, '') AS g FROM jobs
        WHERE state = 'queued' AND kind = $4 AND run_at <= $3
          AND (bulk, COALESCE(group_name, '')) > (l.bulk, l.g)
        ORDER BY bulk, COALESCE(group_name, '') LIMIT 1) x
    WHERE l.n < $6
),
turns AS MATERIALIZED (
    SELECT c.id, l.bulk, c.run_at,
           ROW_NUMBER() OVER (PARTITION BY l.bulk, l.g ORDER BY c.run_at, c.id) AS turn
    FROM lanes l CROSS JOIN LATERAL (
        SELECT id, run_at FROM jobs
        WHERE state = 'queued' AND kind = $4 AND bulk = l.bulk
          AND COALESCE(group_name, '') = l.g AND run_at <= $3
        ORDER BY run_at, id LIMIT $5 FOR UPDATE SKIP LOCKED) c
),
picked AS MATERIALIZED (
    SELECT id FROM turns ORDER BY bulk, turn, run_at, id LIMIT $5
)
UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1,
       lease_expires_at = $2, updated_at = $3
WHERE id IN (SELECT id FROM picked)
RETURNING id, kind, payload::text AS payload, attempts, max_attempts, trace_id,
          bulk, COALESCE(group_name, '') AS g, (SELECT count(*) FROM lanes) AS lanes";

/// The oldest $5 due jobs of one (lane $6, group $7) of kind $4 at $3,
/// leased in one statement as a plain queue takes them (`lane_hint`).
const LANE_FETCH: &str = "
UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1,
       lease_expires_at = $2, updated_at = $3
WHERE id IN (SELECT id FROM jobs
             WHERE state = 'queued' AND kind = $4 AND bulk = $6
               AND COALESCE(group_name, '') = $7 AND run_at <= $3
             ORDER BY run_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)
RETURNING id, kind, payload::text AS payload, attempts, max_attempts, trace_id";

/// The rows [`INSERT_JOBS`] takes.
pub(crate) fn job_rows(jobs: &[NewJob], ids: &[String], now: i64) -> Vec<serde_json::Value> {
    jobs.iter()
        .zip(ids)
        .map(|(j, id)| {
            serde_json::json!({
                "id": id,
                "kind": j.kind,
                "payload": j.payload,
                "max_attempts": j.max_attempts,
                "run_at": j.run_at_ms.unwrap_or(now),
                "idempotency_key": j.idempotency_key,
                "trace_id": j.trace_id,
                "group_name": j.group,
                "subject": j.subject,
                "bulk": i32::from(j.bulk),
            })
        })
        .collect()
}

/// The LISTEN/NOTIFY channel of a queue prefix.
pub(crate) fn channel(prefix: &str) -> String {
    format!("{prefix}_wake")
}

/// Enqueues `jobs` inside the caller's transaction on the queue's own
/// database (River's `InsertTx`): they exist exactly when the caller's
/// business rows do, and the workers of the queue `prefix` are woken at
/// commit (NOTIFY is transactional). A job whose idempotency key is taken
/// is skipped.
pub async fn insert_in(
    tx: &mut sqlx::PgConnection,
    jobs: &[NewJob],
    prefix: &str,
) -> Result<(), sqlx::Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let ids: Vec<String> = jobs
        .iter()
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    sqlx::query(INSERT_JOBS)
        .bind(serde_json::Value::Array(job_rows(jobs, &ids, now)).to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let mut kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel(prefix))
            .bind(kind)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

impl PostgresQueue {
    /// Connects to a migrated database; `prefix` names the wake-up channel.
    pub async fn connect(
        url: &str,
        prefix: &str,
        max_connections: u32,
    ) -> Result<Self, QueueError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        Ok(PostgresQueue {
            pool,
            channel: channel(prefix),
            wakers: Wakers::default(),
            hints: LaneHints::default(),
        })
    }

    async fn notify(&self, kind: &str) {
        self.wakers.wake(kind);
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(kind)
            .execute(&self.pool)
            .await
        {
            tracing::debug!(error = %e, "wake-up notification not sent; workers will poll");
        }
    }

    async fn kind_of(&self, id: &str) -> Result<Option<String>, QueueError> {
        Ok(sqlx::query_scalar("SELECT kind FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }
}

fn record_from_row(row: &PgRow, now: i64) -> Result<JobRecord, QueueError> {
    let id: String = row.try_get("id")?;
    let corrupt = |why: String| QueueError::Corrupt {
        id: id.clone(),
        why,
    };
    let payload: String = row.try_get("payload")?;
    let errors: String = row.try_get("errors")?;
    let result: Option<String> = row.try_get("result")?;
    let state: String = row.try_get("state")?;
    let attempts = row.try_get::<i32, _>("attempts")?.max(0) as u32;
    let run_at: i64 = row.try_get("run_at")?;
    let status = match state.as_str() {
        "queued" => waiting_status(run_at, attempts, now),
        "running" => JobStatus::Running,
        "done" => JobStatus::Done,
        "dead" => JobStatus::Dead,
        other => return Err(corrupt(format!("unknown state {other}"))),
    };
    Ok(JobRecord {
        kind: row.try_get("kind")?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload: {e}")))?,
        status,
        attempts,
        max_attempts: row.try_get::<i32, _>("max_attempts")?.max(0) as u32,
        run_at_ms: run_at,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        finished_at_ms: row.try_get("finished_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at_ms: row.try_get("lease_expires_at")?,
        idempotency_key: row.try_get("idempotency_key")?,
        trace_id: row.try_get("trace_id")?,
        group: row.try_get("group_name")?,
        subject: row.try_get("subject")?,
        bulk: row.try_get::<i32, _>("bulk")? != 0,
        last_error: row.try_get("last_error")?,
        errors: serde_json::from_str(&errors).map_err(|e| corrupt(format!("errors: {e}")))?,
        result: result
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| corrupt(format!("result: {e}")))?,
        id,
    })
}

#[async_trait]
impl QueueBackend for PostgresQueue {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn wakers(&self) -> &Wakers {
        &self.wakers
    }

    async fn listen(&self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(&self.channel).await {
                        tracing::warn!(error = %e, "cannot LISTEN for wake-ups; retrying");
                    } else {
                        loop {
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                n = listener.recv() => match n {
                                    Ok(n) => self.wakers.wake(n.payload()),
                                    Err(e) => {
                                        tracing::warn!(error = %e, "wake-up listener lost; reconnecting");
                                        break;
                                    }
                                },
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "wake-up listener cannot connect; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn push_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<PushOutcome>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let ids: Vec<String> = jobs
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let rows = job_rows(&jobs, &ids, now);
        let inserted: Vec<String> = sqlx::query_scalar(INSERT_JOBS)
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
        let mut out = Vec::with_capacity(jobs.len());
        let mut kinds = std::collections::BTreeSet::new();
        for (job, id) in jobs.iter().zip(ids) {
            if inserted.contains(&id) {
                kinds.insert(job.kind.as_str());
                out.push(PushOutcome::Created(id));
            } else {
                let existing: String =
                    sqlx::query_scalar("SELECT id FROM jobs WHERE idempotency_key = $1")
                        .bind(job.idempotency_key.as_deref().unwrap_or_default())
                        .fetch_one(&self.pool)
                        .await?;
                out.push(PushOutcome::Duplicate(existing));
            }
        }
        for kind in kinds {
            self.notify(kind).await;
        }
        Ok(out)
    }

    async fn fetch(
        &self,
        kind: &str,
        worker: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<LeasedJob>, QueueError> {
        let now = now_ms();
        let deadline = now + lease.as_millis() as i64;
        let wakes = self.wakers.wakes(kind);
        let mut rows = Vec::new();
        if let Some((bulk, group)) = self.hints.one_lane(kind, wakes) {
            rows = sqlx::query(LANE_FETCH)
                .bind(worker)
                .bind(deadline)
                .bind(now)
                .bind(kind)
                .bind(limit as i64)
                .bind(bulk)
                .bind(group)
                .fetch_all(&self.pool)
                .await?;
            if rows.len() == limit {
                return leased_jobs(&rows);
            }
            self.hints.forget(kind);
        }
        let fair = sqlx::query(FAIR_FETCH)
            .bind(worker)
            .bind(deadline)
            .bind(now)
            .bind(kind)
            .bind((limit - rows.len()) as i64)
            .bind(FAIR_LANES as i64)
            .fetch_all(&self.pool)
            .await?;
        // Every row carries the number of pairs surveyed; with one, any
        // row names it.
        if let Some(row) = fair.first() {
            let lanes: i64 = row.try_get("lanes")?;
            let lane: LaneKey = (i64::from(row.try_get::<i32, _>("bulk")?), row.try_get("g")?);
            let found = if lanes == 1 { vec![lane] } else { Vec::new() };
            self.hints.observe(kind, &found, wakes);
        }
        rows.extend(fair);
        leased_jobs(&rows)
    }

    async fn complete(&self, worker: &str, done: &[Completion]) -> Result<(), QueueError> {
        if done.is_empty() {
            return Ok(());
        }
        let items: Vec<serde_json::Value> = done
            .iter()
            .map(|c| serde_json::json!({"id": c.id, "result": c.result}))
            .collect();
        sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = $1, updated_at = $1, lease_owner = NULL,
                    lease_expires_at = NULL, result = b.result
             FROM jsonb_to_recordset($3::text::jsonb) AS b(id text, result jsonb)
             WHERE jobs.id = b.id AND jobs.state = 'running' AND jobs.lease_owner = $2",
        )
        .bind(now_ms())
        .bind(worker)
        .bind(serde_json::Value::Array(items).to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fail(&self, worker: &str, failure: &Failure) -> Result<bool, QueueError> {
        let now = now_ms();
        let error = serde_json::to_string(&failure.error).map_err(|e| QueueError::Corrupt {
            id: failure.id.clone(),
            why: e.to_string(),
        })?;
        let (state, finished) = match failure.retry_at_ms {
            Some(_) => ("queued", None),
            None => ("dead", Some(now)),
        };
        let changed = sqlx::query(
            "UPDATE jobs SET state = $1, run_at = COALESCE($2, run_at), finished_at = $3,
                    last_error = $4, errors = errors || jsonb_build_array($5::text::jsonb),
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = $6
             WHERE id = $7 AND state = 'running' AND lease_owner = $8
               AND ($9::bigint IS NULL OR lease_expires_at = $9)",
        )
        .bind(state)
        .bind(failure.retry_at_ms)
        .bind(finished)
        .bind(&failure.error.message)
        .bind(error)
        .bind(now)
        .bind(&failure.id)
        .bind(worker)
        .bind(failure.lease_expires_at_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed > 0
            && failure.retry_at_ms.is_some_and(|at| at <= now)
            && let Some(kind) = self.kind_of(&failure.id).await?
        {
            self.notify(&kind).await;
        }
        Ok(changed > 0)
    }

    async fn release(
        &self,
        worker: &str,
        ids: &[String],
        run_at_ms: i64,
    ) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let kinds: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'queued', attempts = GREATEST(attempts - 1, 0), run_at = $4,
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = $1
             WHERE state = 'running' AND lease_owner = $2 AND id = ANY($3)
             RETURNING kind",
        )
        .bind(now)
        .bind(worker)
        .bind(ids)
        .bind(run_at_ms.max(now))
        .fetch_all(&self.pool)
        .await?;
        if run_at_ms <= now {
            for kind in kinds.iter().collect::<std::collections::BTreeSet<_>>() {
                self.notify(kind).await;
            }
        }
        Ok(())
    }

    async fn heartbeat(
        &self,
        worker: &WorkerInfo,
        running: &[String],
        lease: Duration,
    ) -> Result<(), QueueError> {
        let now = now_ms();
        sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1
             WHERE state = 'running' AND lease_owner = $2 AND id = ANY($3)",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(&worker.name)
        .bind(running)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "INSERT INTO workers (name, host, pid, kinds, started_at, last_heartbeat, running, concurrency)
             VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, $7, $8)
             ON CONFLICT (name) DO UPDATE SET last_heartbeat = excluded.last_heartbeat,
                                              running = excluded.running,
                                              concurrency = excluded.concurrency",
        )
        .bind(&worker.name)
        .bind(&worker.host)
        .bind(worker.pid as i32)
        .bind(serde_json::to_string(&worker.kinds).unwrap_or_else(|_| "[]".into()))
        .bind(worker.started_at_ms)
        .bind(now)
        .bind(running.len() as i32)
        .bind(serde_json::to_string(&worker.concurrency).unwrap_or_else(|_| "{}".into()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn deregister(&self, worker: &str) -> Result<(), QueueError> {
        sqlx::query("DELETE FROM workers WHERE name = $1")
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn expired(&self, limit: usize) -> Result<Vec<ExpiredLease>, QueueError> {
        let rows: Vec<(String, String, Option<String>, i32, i32, i64)> = sqlx::query_as(
            "SELECT id, kind, lease_owner, attempts, max_attempts, lease_expires_at FROM jobs
             WHERE state = 'running' AND lease_expires_at < $1
             ORDER BY lease_expires_at LIMIT $2",
        )
        .bind(now_ms())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, kind, owner, attempts, max_attempts, expires)| ExpiredLease {
                    id,
                    kind,
                    owner: owner.unwrap_or_default(),
                    attempts: attempts as u32,
                    max_attempts: max_attempts as u32,
                    lease_expires_at_ms: expires,
                },
            )
            .collect())
    }

    async fn purge(&self, retention: Duration) -> Result<u64, QueueError> {
        let cutoff = now_ms() - retention.as_millis() as i64;
        let jobs = sqlx::query("DELETE FROM jobs WHERE state = 'done' AND finished_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM workers WHERE last_heartbeat < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(jobs)
    }

    async fn purge_dead(&self, retention: Duration) -> Result<u64, QueueError> {
        let cutoff = now_ms() - retention.as_millis() as i64;
        Ok(
            sqlx::query("DELETE FROM jobs WHERE state = 'dead' AND finished_at < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn forget(&self, ids: &[String]) -> Result<u64, QueueError> {
        Ok(
            sqlx::query("DELETE FROM jobs WHERE id = ANY($1) AND state <> 'running'")
                .bind(ids)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn counts(&self) -> Result<Vec<QueueCounts>, QueueError> {
        let now = now_ms();
        let rows: Vec<CountsRow> = sqlx::query_as(
            "SELECT kind,
                    COUNT(*) FILTER (WHERE state = 'queued' AND run_at <= $1) AS pending,
                    COUNT(*) FILTER (WHERE state = 'queued' AND run_at > $1 AND attempts = 0) AS scheduled,
                    COUNT(*) FILTER (WHERE state = 'running') AS running,
                    COUNT(*) FILTER (WHERE state = 'queued' AND run_at > $1 AND attempts > 0) AS retrying,
                    COUNT(*) FILTER (WHERE state = 'done') AS done,
                    COUNT(*) FILTER (WHERE state = 'dead') AS dead,
                    MIN(run_at) FILTER (WHERE state = 'queued' AND run_at <= $1) AS oldest
             FROM jobs GROUP BY kind ORDER BY kind",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| counts_from_row(r, now)).collect())
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        let now = now_ms();
        let (condition, binds) = where_clause(filter, now, Dialect::Postgres);
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM jobs {condition}
             ORDER BY updated_at DESC, id DESC LIMIT {}",
            filter.limit.max(1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = match b {
                Bind::Int(v) => query.bind(v),
                Bind::Text(v) => query.bind(v),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(|r| record_from_row(r, now)).collect()
    }

    async fn waiting_by_group(&self, limit: usize) -> Result<Vec<GroupWaiting>, QueueError> {
        let rows: Vec<(Option<String>, i64, i64)> = sqlx::query_as(super::WAITING_BY_GROUP)
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await?;
        Ok(super::waiting_from_rows(rows, limit))
    }

    async fn get_by_key(&self, key: &str) -> Result<Option<JobRecord>, QueueError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE idempotency_key = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| record_from_row(&r, now_ms())).transpose()
    }

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| record_from_row(&r, now_ms())).transpose()
    }

    async fn retry(&self, id: &str) -> Result<AdminOutcome, QueueError> {
        let now = now_ms();
        let kind: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'queued', run_at = $1, finished_at = NULL, updated_at = $1,
                    max_attempts = GREATEST(max_attempts, attempts + 1)
             WHERE id = $2 AND state IN ('dead', 'queued')
             RETURNING kind",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(kind) = kind {
            self.notify(&kind).await;
            return Ok(AdminOutcome::Applied);
        }
        Ok(match self.get(id).await? {
            None => AdminOutcome::NotFound,
            Some(job) => AdminOutcome::Refused(job.status),
        })
    }

    async fn reschedule(&self, id: &str, run_at_ms: i64) -> Result<AdminOutcome, QueueError> {
        let now = now_ms();
        let kind: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET run_at = $1, updated_at = $2 WHERE id = $3 AND state = 'queued'
             RETURNING kind",
        )
        .bind(run_at_ms)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(kind) = kind {
            if run_at_ms <= now {
                self.notify(&kind).await;
            }
            return Ok(AdminOutcome::Applied);
        }
        Ok(match self.get(id).await? {
            None => AdminOutcome::NotFound,
            Some(job) => AdminOutcome::Refused(job.status),
        })
    }

    async fn retry_all_dead(&self, kind: Option<&str>) -> Result<u64, QueueError> {
        let now = now_ms();
        let kinds: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'queued', run_at = $1, finished_at = NULL, updated_at = $1,
                    max_attempts = GREATEST(max_attempts, attempts + 1)
             WHERE state = 'dead' AND ($2::text IS NULL OR kind = $2)
             RETURNING kind",
        )
        .bind(now)
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        for k in kinds.iter().collect::<std::collections::BTreeSet<_>>() {
            self.notify(k).await;
        }
        Ok(kinds.len() as u64)
    }

    async fn kill(&self, id: &str, reason: &str) -> Result<AdminOutcome, QueueError> {
        let now = now_ms();
        let changed = sqlx::query(
            "UPDATE jobs SET state = 'dead', finished_at = $1, updated_at = $1, last_error = $2,
                    errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempts,
                        'at_ms', $1, 'class', 'killed', 'message', $2)),
                    lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $3 AND state IN ('queued', 'running')",
        )
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed > 0 {
            return Ok(AdminOutcome::Applied);
        }
        Ok(match self.get(id).await? {
            None => AdminOutcome::NotFound,
            Some(job) => AdminOutcome::Refused(job.status),
        })
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError> {
        let rows: Vec<WorkerRow> = sqlx::query_as(
            "SELECT name, host, pid::bigint, kinds::text, started_at, last_heartbeat, running::bigint, concurrency
             FROM workers ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(worker_from_row).collect())
    }

    async fn pause(&self, pause: &Pause) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "INSERT INTO queue_pauses (kind, reason, paused_by, paused_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind) DO NOTHING",
        )
        .bind(&pause.kind)
        .bind(&pause.reason)
        .bind(&pause.by)
        .bind(pause.at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn resume(&self, kind: &str) -> Result<bool, QueueError> {
        let done = sqlx::query("DELETE FROM queue_pauses WHERE kind = $1")
            .bind(kind)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn paused(&self) -> Result<Vec<Pause>, QueueError> {
        let rows: Vec<PauseRow> = sqlx::query_as(
            "SELECT kind, reason, paused_by, paused_at FROM queue_pauses ORDER BY kind",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(pause_from_row).collect())
    }

    async fn scale(&self, scale: &Scale) -> Result<(), QueueError> {
        sqlx::query(
            "INSERT INTO queue_scales (kind, concurrency, set_by, set_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind) DO UPDATE SET concurrency = excluded.concurrency,
                                              set_by = excluded.set_by, set_at = excluded.set_at",
        )
        .bind(&scale.kind)
        .bind(i64::from(scale.concurrency))
        .bind(&scale.by)
        .bind(scale.at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unscale(&self, kind: &str) -> Result<bool, QueueError> {
        let done = sqlx::query("DELETE FROM queue_scales WHERE kind = $1")
            .bind(kind)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn scales(&self) -> Result<Vec<Scale>, QueueError> {
        let rows: Vec<ScaleRow> = sqlx::query_as(
            "SELECT kind, CAST(concurrency AS BIGINT), set_by, set_at FROM queue_scales ORDER BY kind",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(scale_from_row).collect())
    }
}
