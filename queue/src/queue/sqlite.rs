//! The queue on SQLite: the `jobs` table of the embedded database.
//!
//! Each operation is one statement (batches go through `json_each`), so no
//! multi-statement transaction ever waits to upgrade a read lock, and several
//! processes can share one file under WAL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

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
    PushOutcome, QueueCounts, Scale, WorkerInfo, fair_pick,
};
use crate::write_gate::{self, Lane, WriteGate};

pub struct SqliteQueue {
    pool: SqlitePool,
    /// Shared with the business data's pool when both are one file.
    gate: Arc<WriteGate>,
    wakers: Wakers,
    hints: LaneHints,
}

/// Who leases, when, and until when.
struct Leasing<'a> {
    worker: &'a str,
    now: i64,
    deadline: i64,
}

/// The jobs of a lease statement's `RETURNING` rows.
fn leased_jobs(rows: &[SqliteRow]) -> Result<Vec<LeasedJob>, QueueError> {
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("id")?;
            let payload: String = row.try_get("payload")?;
            Ok(LeasedJob {
                payload: super::leased_payload(&id, &payload)?,
                id,
                kind: row.try_get("kind")?,
                attempt: row.try_get::<i64, _>("attempts")? as u32,
                max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
                trace_id: row.try_get("trace_id")?,
            })
        })
        .collect()
}

/// Columns every listing reads, in `record_from_row`'s order.
const RECORD_COLUMNS: &str = "id, kind, payload, state, attempts, max_attempts, run_at, created_at, \
     updated_at, finished_at, lease_owner, lease_expires_at, idempotency_key, trace_id, group_name, subject, \
     bulk, last_error, errors, result";

/// The first (lane, group) after (?3, ?4) with a job of kind ?1 due at ?2:
/// one seek in `jobs_fair` (a loose index scan, step by step).
const NEXT_LANE: &str = "SELECT bulk, COALESCE(group_name, '') FROM jobs
     WHERE state = 'queued' AND kind = ?1 AND run_at <= ?2
       AND (bulk, COALESCE(group_name, '')) > (?3, ?4)
     ORDER BY bulk, COALESCE(group_name, '') LIMIT 1";

/// The oldest ?5 due jobs of one (lane ?2, group ?3) of kind ?1 at ?4.
const LANE_CANDIDATES: &str =
    "SELECT id FROM jobs WHERE state = 'queued' AND kind = ?1 AND bulk = ?2
       AND COALESCE(group_name, '') = ?3 AND run_at <= ?4
     ORDER BY run_at, id LIMIT ?5";

impl SqliteQueue {
    /// The (lane, group) pairs of `kind` with due jobs, interactive first,
    /// at most [`FAIR_LANES`]: one index seek each (`jobs_fair`), however
    /// long the backlog behind them.
    async fn due_lanes(&self, kind: &str, now: i64) -> Result<Vec<LaneKey>, QueueError> {
        let mut lanes: Vec<LaneKey> = Vec::new();
        let mut after: LaneKey = (-1, String::new());
        while lanes.len() < FAIR_LANES {
            let next: Option<LaneKey> = sqlx::query_as(NEXT_LANE)
                .bind(kind)
                .bind(now)
                .bind(after.0)
                .bind(&after.1)
                .fetch_optional(&self.pool)
                .await?;
            let Some(lane) = next else { break };
            after = lane.clone();
            lanes.push(lane);
        }
        Ok(lanes)
    }

    /// Leases the oldest `limit` due jobs of one (lane, group) of `kind`, in
    /// one statement, as a plain queue takes them.
    async fn lease_lane(
        &self,
        kind: &str,
        (bulk, group): &LaneKey,
        limit: usize,
        lease: &Leasing<'_>,
    ) -> Result<Vec<SqliteRow>, QueueError> {
        Ok(sqlx::query(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = ?1,
                    lease_expires_at = ?2, updated_at = ?3
             WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND kind = ?4
                            AND bulk = ?6 AND COALESCE(group_name, '') = ?7 AND run_at <= ?3
                          ORDER BY run_at, id LIMIT ?5)
             RETURNING id, kind, payload, attempts, max_attempts, trace_id",
        )
        .bind(lease.worker)
        .bind(lease.deadline)
        .bind(lease.now)
        .bind(kind)
        .bind(limit as i64)
        .bind(bulk)
        .bind(group)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Wraps a pool on a migrated database.
    pub fn new(pool: SqlitePool) -> Self {
        let gate = write_gate::for_file(&pool.connect_options().get_filename().to_string_lossy());
        SqliteQueue {
            pool,
            gate,
            wakers: Wakers::default(),
            hints: LaneHints::default(),
        }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Inserts the jobs of `job_rows` (`?1`, a JSON array) at `?2`; returns the
/// ids inserted (a job whose idempotency key is taken is not).
/// `WHERE true` disambiguates the upsert.
pub(crate) const INSERT_JOBS: &str =
    "INSERT INTO jobs (id, kind, payload, state, attempts, max_attempts, run_at, created_at, \
                               updated_at, idempotency_key, trace_id, group_name, subject, bulk)
             SELECT value ->> '$.id', value ->> '$.kind', value ->> '$.payload', 'queued', 0,
                    value ->> '$.max_attempts', value ->> '$.run_at', ?2, ?2,
                    value ->> '$.idempotency_key', value ->> '$.trace_id',
                    value ->> '$.group_name', value ->> '$.subject', value ->> '$.bulk'
             FROM json_each(?1) WHERE true
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING id";

/// The JSON rows [`INSERT_JOBS`] reads, one per job, with these ids.
pub(crate) fn job_rows(jobs: &[NewJob], ids: &[String], now: i64) -> Vec<serde_json::Value> {
    jobs.iter()
        .zip(ids)
        .map(|(j, id)| {
            serde_json::json!({
                "id": id,
                "kind": j.kind,
                "payload": j.payload.to_string(),
                "max_attempts": j.max_attempts,
                "run_at": j.run_at_ms.unwrap_or(now),
                "idempotency_key": j.idempotency_key,
                "trace_id": j.trace_id,
                "group_name": j.group,
                "subject": j.subject,
                "bulk": i64::from(j.bulk),
            })
        })
        .collect()
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Enqueues `jobs` inside the caller's transaction on the queue's own
/// database (River's `InsertTx`): they exist exactly when the caller's
/// business rows do. A job whose idempotency key is taken is skipped. The
/// caller wakes the kinds' workers after commit (`Wakers`); other processes
/// see the jobs at their next poll.
pub async fn insert_in(
    tx: &mut sqlx::SqliteConnection,
    jobs: &[NewJob],
) -> Result<(), sqlx::Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let ids: Vec<String> = jobs.iter().map(|_| new_id()).collect();
    sqlx::query(INSERT_JOBS)
        .bind(serde_json::Value::Array(job_rows(jobs, &ids, now)).to_string())
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

fn status_of(state: &str, run_at: i64, attempts: u32, now: i64) -> Result<JobStatus, String> {
    match state {
        "queued" => Ok(waiting_status(run_at, attempts, now)),
        "running" => Ok(JobStatus::Running),
        "done" => Ok(JobStatus::Done),
        "dead" => Ok(JobStatus::Dead),
        other => Err(format!("unknown state {other}")),
    }
}

fn record_from_row(row: &SqliteRow, now: i64) -> Result<JobRecord, QueueError> {
    let id: String = row.try_get("id")?;
    let corrupt = |why: String| QueueError::Corrupt {
        id: id.clone(),
        why,
    };
    let payload: String = row.try_get("payload")?;
    let errors: String = row.try_get("errors")?;
    let result: Option<String> = row.try_get("result")?;
    let state: String = row.try_get("state")?;
    let attempts: i64 = row.try_get("attempts")?;
    let run_at: i64 = row.try_get("run_at")?;
    let attempts = u32::try_from(attempts).map_err(|e| corrupt(e.to_string()))?;
    Ok(JobRecord {
        kind: row.try_get("kind")?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload: {e}")))?,
        status: status_of(&state, run_at, attempts, now).map_err(corrupt)?,
        attempts,
        max_attempts: u32::try_from(row.try_get::<i64, _>("max_attempts")?)
            .map_err(|e| corrupt(e.to_string()))?,
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
        bulk: row.try_get::<i64, _>("bulk")? != 0,
        last_error: row.try_get("last_error")?,
        errors: serde_json::from_str(&errors).map_err(|e| corrupt(format!("errors: {e}")))?,
        result: match result {
            Some(r) => Some(serde_json::from_str(&r).map_err(|e| corrupt(format!("result: {e}")))?),
            None => None,
        },
        id,
    })
}

#[async_trait]
impl QueueBackend for SqliteQueue {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn wakers(&self) -> &Wakers {
        &self.wakers
    }

    /// SQLite has one writer at a time: a second fetch loop would only queue
    /// behind the first, with smaller batches.
    fn fetch_loops(&self) -> usize {
        1
    }

    async fn push_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<PushOutcome>, QueueError> {
        let _turn = self.gate.turn(Lane::Background).await;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let ids: Vec<String> = jobs.iter().map(|_| new_id()).collect();
        // One statement for the whole batch: an import of 50,000 rows costs
        // one write lock, not 50,000.
        let inserted: Vec<String> = sqlx::query_scalar(INSERT_JOBS)
            .bind(serde_json::Value::Array(job_rows(&jobs, &ids, now)).to_string())
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
                let key = job.idempotency_key.as_deref().unwrap_or_default();
                let existing: String =
                    sqlx::query_scalar("SELECT id FROM jobs WHERE idempotency_key = ?1")
                        .bind(key)
                        .fetch_one(&self.pool)
                        .await?;
                out.push(PushOutcome::Duplicate(existing));
            }
        }
        for kind in kinds {
            self.wakers.wake(kind);
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
        let _turn = self.gate.turn(Lane::Background).await;
        let now = now_ms();
        let lease = Leasing {
            worker,
            now,
            deadline: now + lease.as_millis() as i64,
        };
        let wakes = self.wakers.wakes(kind);
        let mut rows = Vec::new();
        if let Some(lane) = self.hints.one_lane(kind, wakes) {
            rows = self.lease_lane(kind, &lane, limit, &lease).await?;
            if rows.len() == limit {
                return leased_jobs(&rows);
            }
            self.hints.forget(kind);
        }
        let lanes = self.due_lanes(kind, now).await?;
        self.hints.observe(kind, &lanes, wakes);
        let rest = limit - rows.len();
        match lanes.as_slice() {
            [] => {}
            [lane] => rows.extend(self.lease_lane(kind, lane, rest, &lease).await?),
            _ => {
                let mut candidates = Vec::with_capacity(lanes.len());
                for (bulk, group) in &lanes {
                    let ids: Vec<String> = sqlx::query_scalar(LANE_CANDIDATES)
                        .bind(kind)
                        .bind(bulk)
                        .bind(group)
                        .bind(now)
                        .bind(rest as i64)
                        .fetch_all(&self.pool)
                        .await?;
                    candidates.push((*bulk != 0, ids));
                }
                let picked = fair_pick(&candidates, rest);
                rows.extend(
                    sqlx::query(
                        "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = ?1,
                                lease_expires_at = ?2, updated_at = ?3
                         WHERE id IN (SELECT value FROM json_each(?4)) AND state = 'queued'
                         RETURNING id, kind, payload, attempts, max_attempts, trace_id",
                    )
                    .bind(lease.worker)
                    .bind(lease.deadline)
                    .bind(now)
                    .bind(serde_json::Value::from(picked).to_string())
                    .fetch_all(&self.pool)
                    .await?,
                );
            }
        }
        leased_jobs(&rows)
    }

    async fn complete(&self, worker: &str, done: &[Completion]) -> Result<(), QueueError> {
        let _turn = self.gate.turn(Lane::Background).await;
        if done.is_empty() {
            return Ok(());
        }
        let items: Vec<serde_json::Value> = done
            .iter()
            .map(|c| serde_json::json!({"id": c.id, "result": c.result.to_string()}))
            .collect();
        let now = now_ms();
        // UPDATE … FROM joins the batch once (a correlated subquery per row
        // would read the whole batch for every job).
        sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = ?1, updated_at = ?1, lease_owner = NULL,
                    lease_expires_at = NULL, result = batch.result
             FROM (SELECT value ->> '$.id' AS id, value ->> '$.result' AS result
                   FROM json_each(?3)) AS batch
             WHERE jobs.id = batch.id AND jobs.state = 'running' AND jobs.lease_owner = ?2",
        )
        .bind(now)
        .bind(worker)
        .bind(serde_json::Value::Array(items).to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fail(&self, worker: &str, failure: &Failure) -> Result<bool, QueueError> {
        let _turn = self.gate.turn(Lane::Background).await;
        let now = now_ms();
        let error = serde_json::to_string(&failure.error).map_err(|e| QueueError::Corrupt {
            id: failure.id.clone(),
            why: e.to_string(),
        })?;
        let (state, run_at, finished) = match failure.retry_at_ms {
            Some(at) => ("queued", Some(at), None),
            None => ("dead", None, Some(now)),
        };
        let changed = sqlx::query(
            "UPDATE jobs SET state = ?1, run_at = COALESCE(?2, run_at), finished_at = ?3,
                    last_error = ?4, errors = json_insert(errors, '$[#]', json(?5)),
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = ?6
             WHERE id = ?7 AND state = 'running' AND lease_owner = ?8
               AND (?9 IS NULL OR lease_expires_at = ?9)",
        )
        .bind(state)
        .bind(run_at)
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
            && run_at.is_some_and(|at| at <= now)
            && let Some(kind) = self.kind_of(&failure.id).await?
        {
            self.wakers.wake(&kind);
        }
        Ok(changed > 0)
    }

    async fn release(
        &self,
        worker: &str,
        ids: &[String],
        run_at_ms: i64,
    ) -> Result<(), QueueError> {
        let _turn = self.gate.turn(Lane::Background).await;
        if ids.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), run_at = ?4,
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1
             WHERE state = 'running' AND lease_owner = ?2
               AND id IN (SELECT value FROM json_each(?3))",
        )
        .bind(now)
        .bind(worker)
        .bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
        .bind(run_at_ms.max(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn heartbeat(
        &self,
        worker: &WorkerInfo,
        running: &[String],
        lease: Duration,
    ) -> Result<(), QueueError> {
        let _turn = self.gate.turn(Lane::Interactive).await;
        let now = now_ms();
        sqlx::query(
            "UPDATE jobs SET lease_expires_at = ?1
             WHERE state = 'running' AND lease_owner = ?2
               AND id IN (SELECT value FROM json_each(?3))",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(&worker.name)
        .bind(serde_json::to_string(running).unwrap_or_else(|_| "[]".into()))
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "INSERT INTO workers (name, host, pid, kinds, started_at, last_heartbeat, running, concurrency)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (name) DO UPDATE SET last_heartbeat = excluded.last_heartbeat,
                                              running = excluded.running,
                                              concurrency = excluded.concurrency",
        )
        .bind(&worker.name)
        .bind(&worker.host)
        .bind(i64::from(worker.pid))
        .bind(serde_json::to_string(&worker.kinds).unwrap_or_else(|_| "[]".into()))
        .bind(worker.started_at_ms)
        .bind(now)
        .bind(running.len() as i64)
        .bind(serde_json::to_string(&worker.concurrency).unwrap_or_else(|_| "{}".into()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn deregister(&self, worker: &str) -> Result<(), QueueError> {
        let _turn = self.gate.turn(Lane::Background).await;
        sqlx::query("DELETE FROM workers WHERE name = ?1")
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn expired(&self, limit: usize) -> Result<Vec<ExpiredLease>, QueueError> {
        let rows: Vec<(String, String, Option<String>, i64, i64, i64)> = sqlx::query_as(
            "SELECT id, kind, lease_owner, attempts, max_attempts, lease_expires_at FROM jobs
             WHERE state = 'running' AND lease_expires_at < ?1
             ORDER BY lease_expires_at LIMIT ?2",
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
        let _turn = self.gate.turn(Lane::Background).await;
        let cutoff = now_ms() - retention.as_millis() as i64;
        let jobs = sqlx::query("DELETE FROM jobs WHERE state = 'done' AND finished_at < ?1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM workers WHERE last_heartbeat < ?1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(jobs)
    }

    async fn purge_dead(&self, retention: Duration) -> Result<u64, QueueError> {
        let _turn = self.gate.turn(Lane::Background).await;
        let cutoff = now_ms() - retention.as_millis() as i64;
        Ok(
            sqlx::query("DELETE FROM jobs WHERE state = 'dead' AND finished_at < ?1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn forget(&self, ids: &[String]) -> Result<u64, QueueError> {
        let _turn = self.gate.turn(Lane::Interactive).await;
        let mut n = 0;
        for id in ids {
            n += sqlx::query("DELETE FROM jobs WHERE id = ?1 AND state <> 'running'")
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(n)
    }

    async fn counts(&self) -> Result<Vec<QueueCounts>, QueueError> {
        let now = now_ms();
        let rows: Vec<CountsRow> = sqlx::query_as(
            "SELECT kind,
                    SUM(state = 'queued' AND run_at <= ?1) AS pending,
                    SUM(state = 'queued' AND run_at > ?1 AND attempts = 0) AS scheduled,
                    SUM(state = 'running') AS running,
                    SUM(state = 'queued' AND run_at > ?1 AND attempts > 0) AS retrying,
                    SUM(state = 'done') AS done,
                    SUM(state = 'dead') AS dead,
                    MIN(CASE WHEN state = 'queued' AND run_at <= ?1 THEN run_at END) AS oldest
             FROM jobs GROUP BY kind ORDER BY kind",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| counts_from_row(r, now)).collect())
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        let now = now_ms();
        let (condition, binds) = where_clause(filter, now, Dialect::Sqlite);
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
        let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE idempotency_key = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| record_from_row(&r, now_ms())).transpose()
    }

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| record_from_row(&r, now_ms())).transpose()
    }

    async fn retry(&self, id: &str) -> Result<AdminOutcome, QueueError> {
        let _turn = self.gate.turn(Lane::Interactive).await;
        let now = now_ms();
        let changed = sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = ?1, finished_at = NULL, updated_at = ?1,
                    max_attempts = MAX(max_attempts, attempts + 1)
             WHERE id = ?2 AND state IN ('dead', 'queued')",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed > 0 {
            if let Some(kind) = self.kind_of(id).await? {
                self.wakers.wake(&kind);
            }
            return Ok(AdminOutcome::Applied);
        }
        Ok(match self.get(id).await? {
            None => AdminOutcome::NotFound,
            Some(job) => AdminOutcome::Refused(job.status),
        })
    }

    async fn reschedule(&self, id: &str, run_at_ms: i64) -> Result<AdminOutcome, QueueError> {
        let _turn = self.gate.turn(Lane::Interactive).await;
        let now = now_ms();
        let kind: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET run_at = ?1, updated_at = ?2 WHERE id = ?3 AND state = 'queued'
             RETURNING kind",
        )
        .bind(run_at_ms)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(kind) = kind {
            if run_at_ms <= now {
                self.wakers.wake(&kind);
            }
            return Ok(AdminOutcome::Applied);
        }
        Ok(match self.get(id).await? {
            None => AdminOutcome::NotFound,
            Some(job) => AdminOutcome::Refused(job.status),
        })
    }

    async fn retry_all_dead(&self, kind: Option<&str>) -> Result<u64, QueueError> {
        let _turn = self.gate.turn(Lane::Interactive).await;
        let now = now_ms();
        let kinds: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'queued', run_at = ?1, finished_at = NULL, updated_at = ?1,
                    max_attempts = MAX(max_attempts, attempts + 1)
             WHERE state = 'dead' AND (?2 IS NULL OR kind = ?2)
             RETURNING kind",
        )
        .bind(now)
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        let distinct: std::collections::BTreeSet<&String> = kinds.iter().collect();
        for k in distinct {
            self.wakers.wake(k);
        }
        Ok(kinds.len() as u64)
    }

    async fn kill(&self, id: &str, reason: &str) -> Result<AdminOutcome, QueueError> {
        let _turn = self.gate.turn(Lane::Interactive).await;
        let now = now_ms();
        let changed = sqlx::query(
            "UPDATE jobs SET state = 'dead', finished_at = ?1, updated_at = ?1, last_error = ?2,
                    errors = json_insert(errors, '$[#]', json_object('attempt', attempts, 'at_ms', ?1,
                        'class', 'killed', 'message', ?2)),
                    lease_owner = NULL, lease_expires_at = NULL
             WHERE id = ?3 AND state IN ('queued', 'running')",
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
            "SELECT name, host, pid, kinds, started_at, last_heartbeat, running, concurrency
             FROM workers ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(worker_from_row).collect())
    }

    async fn pause(&self, pause: &Pause) -> Result<bool, QueueError> {
        let _turn = self.gate.turn(Lane::Interactive).await;
        let done = sqlx::query(
            "INSERT INTO queue_pauses (kind, reason, paused_by, paused_at) VALUES (?1, ?2, ?3, ?4)
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
        let _turn = self.gate.turn(Lane::Interactive).await;
        let done = sqlx::query("DELETE FROM queue_pauses WHERE kind = ?1")
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
        let _turn = self.gate.turn(Lane::Interactive).await;
        sqlx::query(
            "INSERT INTO queue_scales (kind, concurrency, set_by, set_at) VALUES (?1, ?2, ?3, ?4)
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
        let _turn = self.gate.turn(Lane::Interactive).await;
        let done = sqlx::query("DELETE FROM queue_scales WHERE kind = ?1")
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

impl SqliteQueue {
    async fn kind_of(&self, id: &str) -> Result<Option<String>, QueueError> {
        Ok(sqlx::query_scalar("SELECT kind FROM jobs WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    /// The fetch's two reads search `jobs_fair` on the shipped schema: no
    /// scan of the table, no sort of the backlog.
    #[tokio::test]
    async fn the_fair_fetch_searches_its_index() {
        let pool = crate::sqlite_pool::migrated_in_memory().await;
        for sql in [super::NEXT_LANE, super::LANE_CANDIDATES] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind("k")
                    .bind(0_i64)
                    .bind(0_i64)
                    .bind("")
                    .bind(10_i64)
                    .fetch_all(&pool)
                    .await
                    .expect("plan");
            let steps: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
            assert!(
                steps
                    .iter()
                    .any(|s| s.starts_with("SEARCH jobs USING INDEX jobs_fair")),
                "{sql}: {steps:?}"
            );
            assert!(
                !steps
                    .iter()
                    .any(|s| s.contains("TEMP B-TREE") || *s == "SCAN jobs"),
                "{sql}: {steps:?}"
            );
        }
    }
}
