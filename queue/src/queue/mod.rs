//! The queue: one trait, one implementation per backend.
//!
//! Every backend keeps the same record (`JobRecord`) and the same life cycle:
//! queued → running (under a lease renewed by heartbeats) → done or dead, with
//! failed attempts going back to queued at a later run time. The runtime
//! (`crate::runtime`) decides *what* happens after an attempt; a backend only
//! makes it durable. Apalis 1.0's own backends cannot do that uniformly (see
//! `docs/architecture.md`), hence these.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::job::{
    AttemptError, GroupWaiting, JobFilter, JobRecord, JobStatus, LeasedJob, NewJob, Pause,
    PushOutcome, QueueCounts, Scale, WorkerInfo,
};
use crate::settings::{QueueBackendKind, QueueSettings};

mod lane_hint;
pub mod postgres;
pub mod redis;
mod sql_filter;
pub mod sqlite;
mod wake;

pub use lane_hint::HINT_TTL as LANE_HINT_TTL;
pub use wake::Wakers;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("SQLite queue: {0}")]
    Sqlite(#[from] sqlx::Error),
    #[error("Redis queue: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("cannot open the queue: {0}")]
    Open(#[from] crate::sqlite_pool::ConnectError),
    #[error("stored job {id} is unreadable: {why}")]
    Corrupt { id: String, why: String },
}

/// A failed attempt, as the runtime hands it to the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub id: String,
    pub error: AttemptError,
    /// When to run again (epoch ms); `None` sends the job to the dead set.
    pub retry_at_ms: Option<i64>,
    /// Only if the lease still ends at this time (epoch ms): the rescuer's
    /// fence, so that a worker that renewed its lease meanwhile keeps its
    /// job. `None` for an attempt's own outcome.
    pub lease_expires_at_ms: Option<i64>,
}

/// A running job whose lease ran out: its worker stopped renewing it
/// (killed, crashed, cut off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredLease {
    pub id: String,
    pub kind: String,
    /// The worker that held it.
    pub owner: String,
    /// Attempts counted so far, the lost one included.
    pub attempts: u32,
    pub max_attempts: u32,
    pub lease_expires_at_ms: i64,
}

/// A successful attempt and what the handler returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: String,
    pub result: serde_json::Value,
}

/// What an operator's retry or kill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOutcome {
    Applied,
    NotFound,
    /// The job's status does not allow it (e.g. killing a finished job).
    Refused(JobStatus),
}

/// The durable queue operations every backend provides.
#[async_trait]
pub trait QueueBackend: Send + Sync + 'static {
    /// `sqlite` or `redis`.
    fn name(&self) -> &'static str;

    /// Wake-up handles: a push in this process (or, on Redis, anywhere)
    /// notifies the kind's handle so that idle workers fetch at once.
    fn wakers(&self) -> &Wakers;

    /// How many fetch loops per kind pay off: overlapping round trips help a
    /// networked server; a single-writer file gains nothing from them.
    fn fetch_loops(&self) -> usize {
        2
    }

    /// Starts delivering wake-ups from other processes, until `stop`.
    async fn listen(&self, _stop: CancellationToken) {}

    async fn push(&self, job: NewJob) -> Result<PushOutcome, QueueError> {
        let mut out = self.push_bulk(vec![job]).await?;
        out.pop().ok_or_else(|| QueueError::Corrupt {
            id: String::new(),
            why: "push returned no outcome".into(),
        })
    }

    /// Enqueues many jobs at once, in order; one outcome per job.
    async fn push_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<PushOutcome>, QueueError>;

    /// Leases up to `limit` due jobs of `kind` to `worker` for `lease`.
    async fn fetch(
        &self,
        kind: &str,
        worker: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<LeasedJob>, QueueError>;

    /// Marks jobs done. Jobs whose lease `worker` no longer holds are left alone.
    async fn complete(&self, worker: &str, done: &[Completion]) -> Result<(), QueueError>;

    /// Records a failed attempt: retry later or dead. Returns whether the
    /// job was still `worker`'s (and, with `lease_expires_at_ms`, its lease
    /// still ending then); if not, nothing is written.
    async fn fail(&self, worker: &str, failure: &Failure) -> Result<bool, QueueError>;

    /// Hands leased jobs back without counting the attempt, due at
    /// `run_at_ms` (graceful shutdown: now; a snoozed job: later).
    async fn release(&self, worker: &str, ids: &[String], run_at_ms: i64)
    -> Result<(), QueueError>;

    /// Renews the leases of `running` and records that `worker` is alive.
    async fn heartbeat(
        &self,
        worker: &WorkerInfo,
        running: &[String],
        lease: Duration,
    ) -> Result<(), QueueError>;

    /// Forgets a worker that stopped cleanly.
    async fn deregister(&self, worker: &str) -> Result<(), QueueError>;

    /// Up to `limit` running jobs whose lease ran out, oldest first. The
    /// rescuer decides each one through the kind's retry policy and records
    /// it with [`QueueBackend::fail`], fenced by the lease it read.
    async fn expired(&self, limit: usize) -> Result<Vec<ExpiredLease>, QueueError>;

    /// Deletes finished jobs older than `retention`, and workers silent that long.
    async fn purge(&self, retention: Duration) -> Result<u64, QueueError>;

    /// Deletes the jobs `ids` whatever their state but running (a running
    /// job's lease is left to end), with every trace of them: payload,
    /// result, errors, idempotency key, indexes. How an erasure removes
    /// what a job held about a person. Returns how many went.
    async fn forget(&self, ids: &[String]) -> Result<u64, QueueError>;

    /// Deletes dead jobs that died longer than `retention` ago, as
    /// [`QueueBackend::forget`] does (the retention of people's data: a
    /// dead job's payload and errors may name someone).
    async fn purge_dead(&self, retention: Duration) -> Result<u64, QueueError>;

    /// Per-kind counts, every kind that has jobs.
    async fn counts(&self) -> Result<Vec<QueueCounts>, QueueError>;

    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError>;

    /// The groups with jobs due now and not yet fetched (every kind), the
    /// most first, at most `limit` ([`crate::job::most_waiting_first`]).
    async fn waiting_by_group(&self, limit: usize) -> Result<Vec<GroupWaiting>, QueueError>;

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError>;

    /// The job pushed with this idempotency key (until it is purged).
    async fn get_by_key(&self, key: &str) -> Result<Option<JobRecord>, QueueError>;

    /// Runs a dead or waiting job now. A dead job that used all its attempts
    /// gets one more (River's rule), so a retried job is never lost to a
    /// spent budget.
    async fn retry(&self, id: &str) -> Result<AdminOutcome, QueueError>;

    /// Retries every dead job (of one kind); returns how many.
    async fn retry_all_dead(&self, kind: Option<&str>) -> Result<u64, QueueError>;

    /// Sends a waiting or running job to the dead set.
    async fn kill(&self, id: &str, reason: &str) -> Result<AdminOutcome, QueueError>;

    /// Moves a waiting job's run time to `run_at_ms` (earlier or later);
    /// its attempts are untouched, so a retrying job stays one.
    async fn reschedule(&self, id: &str, run_at_ms: i64) -> Result<AdminOutcome, QueueError>;

    async fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError>;

    /// Pauses a kind for every worker of this queue: none fetches its jobs
    /// until [`QueueBackend::resume`]. Returns `false` (and keeps the first
    /// pause's reason) when the kind was paused already.
    async fn pause(&self, pause: &Pause) -> Result<bool, QueueError>;

    /// Resumes a paused kind; `false` when it was not paused.
    async fn resume(&self, kind: &str) -> Result<bool, QueueError>;

    /// The paused kinds, by kind. Each worker reads this every
    /// [`crate::runtime::CONTROLS_REFRESH`].
    async fn paused(&self) -> Result<Vec<Pause>, QueueError>;

    /// Sets a kind's concurrency on every worker, replacing any earlier
    /// scale (and the configured value) until [`QueueBackend::unscale`].
    async fn scale(&self, scale: &Scale) -> Result<(), QueueError>;

    /// Drops a kind's scale: workers go back to their configured
    /// concurrency. `false` when there was none.
    async fn unscale(&self, kind: &str) -> Result<bool, QueueError>;

    /// The scaled kinds, by kind, read like [`QueueBackend::paused`].
    async fn scales(&self) -> Result<Vec<Scale>, QueueError>;
}

/// The per-kind counts with each paused kind's pause, paused kinds without
/// jobs included: what `dossier queues`, the dashboard and the metrics show.
pub async fn counts_and_pauses(q: &dyn QueueBackend) -> Result<Vec<QueueCounts>, QueueError> {
    let mut counts = q.counts().await?;
    for pause in q.paused().await? {
        match counts.iter_mut().find(|c| c.kind == pause.kind) {
            Some(c) => c.paused = Some(pause),
            None => counts.push(QueueCounts {
                kind: pause.kind.clone(),
                pending: 0,
                scheduled: 0,
                running: 0,
                retrying: 0,
                done: 0,
                dead: 0,
                oldest_pending_age_ms: None,
                paused: Some(pause),
            }),
        }
    }
    counts.sort_by(|a, b| a.kind.cmp(&b.kind));
    Ok(counts)
}

/// Waiting jobs per group on both SQL backends: due queued jobs by group,
/// interactive and bulk (bound: now).
pub(crate) const WAITING_BY_GROUP: &str = "SELECT group_name,
        SUM(CASE WHEN bulk = 0 THEN 1 ELSE 0 END), SUM(CASE WHEN bulk = 0 THEN 0 ELSE 1 END)
     FROM jobs WHERE state = 'queued' AND run_at <= $1 GROUP BY group_name";

/// A leased job's stored payload (JSON text), read back; one that is not
/// JSON is an error naming the job.
pub(crate) fn leased_payload(id: &str, text: &str) -> Result<serde_json::Value, QueueError> {
    serde_json::from_str(text).map_err(|e| QueueError::Corrupt {
        id: id.to_string(),
        why: format!("payload: {e}"),
    })
}

pub(crate) fn waiting_from_rows(
    rows: Vec<(Option<String>, i64, i64)>,
    limit: usize,
) -> Vec<GroupWaiting> {
    crate::job::most_waiting_first(
        rows.into_iter()
            .map(|(group, i, b)| GroupWaiting {
                group,
                interactive: i.max(0) as u64,
                bulk: b.max(0) as u64,
            })
            .collect(),
        limit,
    )
}

/// A row of the `queue_pauses` table on both SQL backends.
pub(crate) type PauseRow = (String, String, String, i64);

pub(crate) fn pause_from_row((kind, reason, by, at_ms): PauseRow) -> Pause {
    Pause {
        kind,
        reason,
        by,
        at_ms,
    }
}

/// Opens the backend `q` names. `database_url` is the application's
/// database: the SQLite and PostgreSQL queues live in it unless `q.url`
/// names another.
pub async fn open(
    q: &QueueSettings,
    database_url: &str,
    max_connections: u32,
) -> Result<Arc<dyn QueueBackend>, QueueError> {
    let max_connections = max_connections.max(2);
    Ok(match q.backend {
        QueueBackendKind::Sqlite => {
            let pool =
                crate::sqlite_pool::connect(q.sqlite_url(database_url), max_connections).await?;
            Arc::new(sqlite::SqliteQueue::new(pool))
        }
        QueueBackendKind::Postgres => {
            let url = q.url.as_deref().unwrap_or(database_url);
            Arc::new(postgres::PostgresQueue::connect(url, &q.prefix, max_connections).await?)
        }
        QueueBackendKind::Redis => {
            let url = q.url.as_deref().unwrap_or_default();
            Arc::new(redis::RedisQueue::connect(url, &q.prefix).await?)
        }
    })
}

/// How a status maps onto stored state for a waiting job.
pub(crate) fn waiting_status(run_at_ms: i64, attempts: u32, now_ms: i64) -> JobStatus {
    if run_at_ms <= now_ms {
        JobStatus::Pending
    } else if attempts == 0 {
        JobStatus::Scheduled
    } else {
        JobStatus::Retrying
    }
}

/// A row of the per-kind counts query, as both SQL backends return it:
/// kind, pending, scheduled, running, retrying, done, dead, oldest due run time.
pub(crate) type CountsRow = (String, i64, i64, i64, i64, i64, i64, Option<i64>);

pub(crate) fn counts_from_row(row: CountsRow, now_ms: i64) -> QueueCounts {
    let (kind, pending, scheduled, running, retrying, done, dead, oldest) = row;
    let n = |v: i64| v.max(0) as u64;
    QueueCounts {
        kind,
        pending: n(pending),
        scheduled: n(scheduled),
        running: n(running),
        retrying: n(retrying),
        done: n(done),
        dead: n(dead),
        oldest_pending_age_ms: oldest.map(|t| (now_ms - t).max(0)),
        paused: None,
    }
}

/// A row of the workers table on both SQL backends: name, host, pid, kinds
/// (JSON text), started at, last heartbeat, running.
pub(crate) type WorkerRow = (String, String, i64, String, i64, i64, i64, String);

pub(crate) fn worker_from_row(row: WorkerRow) -> WorkerInfo {
    let (name, host, pid, kinds, started_at_ms, last_heartbeat_ms, running, concurrency) = row;
    WorkerInfo {
        name,
        host,
        pid: pid.max(0) as u32,
        kinds: serde_json::from_str(&kinds).unwrap_or_default(),
        started_at_ms,
        last_heartbeat_ms,
        running: running.max(0) as u64,
        concurrency: serde_json::from_str(&concurrency).unwrap_or_default(),
    }
}

/// A row of the `queue_scales` table on both SQL backends.
pub(crate) type ScaleRow = (String, i64, String, i64);

pub(crate) fn scale_from_row((kind, concurrency, by, at_ms): ScaleRow) -> Scale {
    Scale {
        kind,
        concurrency: concurrency.clamp(1, i64::from(crate::job::MAX_CONCURRENCY)) as u32,
        by,
        at_ms,
    }
}
