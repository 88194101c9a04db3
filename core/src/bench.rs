//! `dossier-worker bench`: push N no-op jobs, drain them with concurrency C,
//! then measure idle pickup latency, on a chosen backend. Prints one JSON line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::{QueueBackendKind, Settings};
use crate::db::Database;
use crate::job::{JobError, NewJob};
use crate::queue::{self, QueueBackend};
use crate::runtime::{self, Registry, Worker};

const KIND: &str = "bench_noop";

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub backend: QueueBackendKind,
    /// Redis URL, or SQLite file URL; defaults: redis://127.0.0.1:6379/0, sqlite://var/bench.db.
    pub url: Option<String>,
    pub jobs: usize,
    pub concurrency: u32,
    pub pickup_samples: usize,
}

#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub backend: &'static str,
    pub jobs: usize,
    pub concurrency: u32,
    /// Async runtime threads the worker ran on (`worker.threads`).
    pub threads: usize,
    pub push_jobs_per_s: f64,
    pub drain_jobs_per_s: f64,
    pub pickup_p50_ms: f64,
    pub pickup_p99_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

#[derive(Serialize, Deserialize)]
struct Noop {
    /// Push time in epoch µs, for pickup samples; 0 in the drain phase.
    t: i64,
}

fn epoch_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub async fn run(mut settings: Settings, opts: BenchOptions) -> Result<BenchResult, BenchError> {
    let threads = match settings.worker.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    settings.queue.backend = opts.backend;
    settings.queue.kinds.clear();
    settings.queue.defaults.concurrency = opts.concurrency;
    settings.queue.prefix = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let mut redis_queue = None;
    let backend: Arc<dyn QueueBackend> = match opts.backend {
        QueueBackendKind::Sqlite => {
            let url = opts
                .url
                .clone()
                .unwrap_or_else(|| "sqlite://var/bench.db".into());
            if let Some(path) = crate::db::sqlite_path(&url) {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            settings.database.url = url.clone();
            settings.queue.url = None;
            Database::connect(&url, 1).await?.migrate().await?;
            queue::open(&settings).await?
        }
        QueueBackendKind::Postgres => {
            let url = opts
                .url
                .clone()
                .unwrap_or_else(|| settings.database.url.clone());
            let db = Database::connect(&url, 1).await?;
            db.migrate().await?;
            if let Database::Postgres(pool) = &db {
                // A previous run's jobs would skew the drain.
                sqlx::query("DELETE FROM jobs WHERE kind = $1")
                    .bind(KIND)
                    .execute(pool)
                    .await
                    .map_err(|e| BenchError::Queue(e.into()))?;
            }
            settings.queue.url = Some(url);
            queue::open(&settings).await?
        }
        QueueBackendKind::Redis => {
            let url = opts
                .url
                .clone()
                .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
            let q =
                Arc::new(queue::redis::RedisQueue::connect(&url, &settings.queue.prefix).await?);
            redis_queue = Some(q.clone());
            q
        }
    };

    // Push phase.
    let jobs: Vec<NewJob> = (0..opts.jobs)
        .map(|_| NewJob {
            kind: KIND.into(),
            payload: serde_json::json!({"t": 0}),
            run_at_ms: None,
            max_attempts: 3,
            idempotency_key: None,
            trace_id: None,
            group: None,
            subject: None,
            bulk: false,
        })
        .collect();
    let t0 = Instant::now();
    for chunk in jobs.chunks(5_000) {
        backend.push_bulk(chunk.to_vec()).await?;
    }
    let push_secs = t0.elapsed().as_secs_f64();

    // Drain phase: the full runtime (retry policy, leases, heartbeats, tracing spans).
    let handled = Arc::new(AtomicU64::new(0));
    let (sample_tx, mut sample_rx) = mpsc::unbounded_channel::<f64>();
    let mut registry = Registry::new();
    {
        let handled = handled.clone();
        registry.register(KIND, move |job: Noop, _ctx| {
            let handled = handled.clone();
            let tx = sample_tx.clone();
            async move {
                handled.fetch_add(1, Ordering::Relaxed);
                if job.t > 0 {
                    let _ = tx.send((epoch_us() - job.t) as f64 / 1000.0);
                }
                Ok::<_, JobError>(())
            }
        });
    }
    let worker = Worker::new(
        runtime::worker_name("bench"),
        settings.queue.clone(),
        backend.clone(),
        registry,
    )?;
    let t1 = Instant::now();
    let running = worker.spawn();
    // Watch the handler's counter, not the queue's counts: counting a large
    // table every few milliseconds would steal the time being measured.
    while handled.load(Ordering::Relaxed) < opts.jobs as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    runtime::wait_until_drained(&*backend, &[KIND], Duration::from_millis(5)).await?;
    let drain_secs = t1.elapsed().as_secs_f64();

    // Idle pickup: one job at a time into an idle pool.
    let mut samples = Vec::with_capacity(opts.pickup_samples);
    for _ in 0..opts.pickup_samples {
        tokio::time::sleep(Duration::from_millis(20)).await;
        backend
            .push(NewJob {
                kind: KIND.into(),
                payload: serde_json::json!({"t": epoch_us()}),
                run_at_ms: None,
                max_attempts: 3,
                idempotency_key: None,
                trace_id: None,
                group: None,
                subject: None,
                bulk: false,
            })
            .await?;
        if let Ok(Some(ms)) = tokio::time::timeout(Duration::from_secs(5), sample_rx.recv()).await {
            samples.push(ms);
        }
    }
    running.stop().await?;
    if let Some(q) = redis_queue {
        q.destroy().await?;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    Ok(BenchResult {
        backend: backend.name(),
        jobs: opts.jobs,
        concurrency: opts.concurrency,
        threads,
        push_jobs_per_s: (opts.jobs as f64 / push_secs).round(),
        drain_jobs_per_s: (opts.jobs as f64 / drain_secs).round(),
        pickup_p50_ms: percentile(&samples, 0.50),
        pickup_p99_ms: percentile(&samples, 0.99),
    })
}
