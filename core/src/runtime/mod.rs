//! The worker pool: fetches jobs per kind, runs handlers under a timeout with
//! panics caught, applies the retry policy, renews leases, rescues the jobs
//! of dead workers, and shuts down gracefully.
//!
//! Path of one attempt: `fetch_loop` leases a batch (bounded by free
//! concurrency permits) → `execute` runs the handler in its own task →
//! the outcome goes to `completer`, which persists outcomes in batches →
//! the job's id leaves the running set (and so stops being heartbeated).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::now_ms;
use crate::config::{KindSettings, QueueSettings};
use crate::job::{AttemptError, JobError, LeasedJob, QueueCounts, WorkerInfo};
use crate::queue::{Completion, Failure, QueueBackend, QueueError};
use crate::retry::NextStep;

mod identity;
mod registry;

pub use identity::{host_name, worker_name};
pub use registry::{JobContext, Registry};
pub use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the worker has no job kinds to run")]
    NoKinds,
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the worker task failed: {0}")]
    Task(String),
}

/// What one run of a worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WorkerReport {
    pub succeeded: u64,
    pub failed: u64,
    /// Handed back to the queue at shutdown, unfinished.
    pub released: u64,
}

#[derive(Default)]
struct Stats {
    succeeded: AtomicU64,
    failed: AtomicU64,
    released: AtomicU64,
}

enum Outcome {
    Done(Completion),
    Failed(Failure),
    /// Handed back uncounted, due at `run_at_ms` (shutdown, snooze).
    Release {
        id: String,
        run_at_ms: i64,
    },
}

impl Outcome {
    fn id(&self) -> &str {
        match self {
            Outcome::Done(c) => &c.id,
            Outcome::Failed(f) => &f.id,
            Outcome::Release { id, .. } => id,
        }
    }
}

struct Shared {
    name: Arc<str>,
    backend: Arc<dyn QueueBackend>,
    settings: QueueSettings,
    running: Mutex<HashSet<String>>,
    stats: Stats,
    info: WorkerInfo,
}

impl Shared {
    fn running_ids(&self) -> Vec<String> {
        let set = self.running.lock().unwrap_or_else(|e| e.into_inner());
        set.iter().cloned().collect()
    }
}

/// One worker process's pool.
pub struct Worker {
    shared: Arc<Shared>,
    registry: Registry,
}

impl Worker {
    /// A pool named `name` (see [`worker_name`]) running `registry`'s kinds.
    pub fn new(
        name: String,
        settings: QueueSettings,
        backend: Arc<dyn QueueBackend>,
        registry: Registry,
    ) -> Result<Worker, RuntimeError> {
        let kinds: Vec<String> = registry.kinds().map(str::to_string).collect();
        if kinds.is_empty() {
            return Err(RuntimeError::NoKinds);
        }
        let info = WorkerInfo {
            name: name.clone(),
            host: host_name(),
            pid: std::process::id(),
            kinds,
            started_at_ms: now_ms(),
            last_heartbeat_ms: now_ms(),
            running: 0,
        };
        Ok(Worker {
            shared: Arc::new(Shared {
                name: name.into(),
                backend,
                settings,
                running: Mutex::new(HashSet::new()),
                stats: Stats::default(),
                info,
            }),
            registry,
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Runs the pool on its own task until [`RunningWorker::stop`].
    pub fn spawn(self) -> RunningWorker {
        let name = self.name().to_string();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(self.run(stop.clone()));
        RunningWorker { name, stop, handle }
    }

    /// Runs until `shutdown` is cancelled, then stops fetching, gives
    /// in-flight jobs `shutdown_timeout_ms` to finish, hands the rest back
    /// to the queue and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerReport, RuntimeError> {
        let shared = self.shared.clone();
        let q = &shared.settings;
        let background = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (tx, rx) = mpsc::channel::<Outcome>(8_192);

        // Announce ourselves before taking work, so `dossier workers` shows us.
        if let Err(e) = heartbeat_once(&shared).await {
            tracing::warn!(error = %e, "first heartbeat failed; will keep trying");
        }
        let mut bg = tokio::task::JoinSet::new();
        bg.spawn(heartbeat_loop(shared.clone(), background.clone()));
        bg.spawn(rescue_loop(shared.clone(), background.clone()));
        {
            let backend = shared.backend.clone();
            let stop = background.clone();
            bg.spawn(async move { backend.listen(stop).await });
        }
        let completer = tokio::spawn(completer(shared.clone(), rx, shutdown.clone()));

        let mut fetchers = tokio::task::JoinSet::new();
        for kind in self.registry.kinds() {
            let kind_settings = q.kind(kind);
            let plan = FetchPlan::new(
                q.fetch_batch,
                kind_settings.concurrency,
                shared.backend.fetch_loops(),
            );
            let semaphore = Arc::new(Semaphore::new(kind_settings.concurrency as usize));
            for _ in 0..plan.fetchers {
                let ctx = FetchContext {
                    shared: shared.clone(),
                    kind: kind.to_string(),
                    semaphore: semaphore.clone(),
                    settings: kind_settings.clone(),
                    batch: plan.batch,
                    registry: self.registry.clone(),
                    tracker: tracker.clone(),
                    soft_stop: shutdown.clone(),
                    hard_stop: hard_stop.clone(),
                    tx: tx.clone(),
                };
                fetchers.spawn(fetch_loop(ctx));
            }
        }
        drop(tx);
        tracing::info!(worker = %shared.name, backend = shared.backend.name(), "worker started");

        shutdown.cancelled().await;
        tracing::info!(worker = %shared.name, "shutting down: no new jobs, waiting for in-flight ones");
        while fetchers.join_next().await.is_some() {}
        tracker.close();
        let grace = Duration::from_millis(q.shutdown_timeout_ms);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                worker = %shared.name,
                "jobs still running after {grace:?}: handing them back to the queue"
            );
            hard_stop.cancel();
            tracker.wait().await;
        }
        // Every sender is gone now: the completer drains what is left and ends.
        if let Err(e) = completer.await {
            tracing::error!(error = %e, "completer task failed");
        }
        background.cancel();
        while bg.join_next().await.is_some() {}
        if let Err(e) = shared.backend.deregister(&shared.name).await {
            tracing::warn!(error = %e, "could not deregister the worker; it will age out");
        }
        let report = WorkerReport {
            succeeded: shared.stats.succeeded.load(Ordering::Relaxed),
            failed: shared.stats.failed.load(Ordering::Relaxed),
            released: shared.stats.released.load(Ordering::Relaxed),
        };
        tracing::info!(worker = %shared.name, ?report, "worker stopped");
        Ok(report)
    }
}

/// How a kind's slots are fetched: how many fetch loops share them, and the
/// most each fetch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FetchPlan {
    fetchers: usize,
    batch: usize,
}

impl FetchPlan {
    /// `loops` fetch loops (one alone leaves slots idle during each round
    /// trip), each taking at most half of its share of the slots, so that
    /// batches overlap: while some run, others are being fetched.
    fn new(fetch_batch: u32, concurrency: u32, loops: usize) -> FetchPlan {
        let concurrency = concurrency.max(1) as usize;
        let fetchers = loops.clamp(1, concurrency);
        FetchPlan {
            fetchers,
            batch: (fetch_batch.max(1) as usize).min(concurrency.div_ceil(2 * fetchers)),
        }
    }
}

/// A pool running on its own task (demo, benchmark, tests).
pub struct RunningWorker {
    pub name: String,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Result<WorkerReport, RuntimeError>>,
}

impl RunningWorker {
    /// Stops it gracefully and waits for the report.
    pub async fn stop(self) -> Result<WorkerReport, RuntimeError> {
        self.stop.cancel();
        match self.handle.await {
            Ok(result) => result,
            Err(e) => Err(RuntimeError::Task(e.to_string())),
        }
    }
}

struct FetchContext {
    shared: Arc<Shared>,
    kind: String,
    settings: KindSettings,
    batch: usize,
    semaphore: Arc<Semaphore>,
    registry: Registry,
    tracker: TaskTracker,
    soft_stop: CancellationToken,
    hard_stop: CancellationToken,
    tx: mpsc::Sender<Outcome>,
}

/// How long a fetcher waits for more free slots before fetching a partial
/// batch: long enough to batch under load, too short to notice when idle
/// (an idle pool has every slot free and fetches at once).
const BATCH_GATHER: Duration = Duration::from_millis(2);

/// How often a fetcher that gives way to interactive requests looks again
/// (its running jobs may have finished meanwhile).
const YIELD_RECHECK: Duration = Duration::from_millis(20);

async fn fetch_loop(ctx: FetchContext) {
    let shared = &ctx.shared;
    let q = &shared.settings;
    let Some(handler) = ctx.registry.get(&ctx.kind) else {
        return;
    };
    let wake = shared.backend.wakers().get(&ctx.kind);
    let lease = Duration::from_millis(q.lease_ms);
    let poll = Duration::from_millis(q.poll_interval_ms);
    let target = ctx.batch;
    let mut error_backoff = Duration::from_millis(100);
    loop {
        let first = tokio::select! {
            _ = ctx.soft_stop.cancelled() => return,
            p = ctx.semaphore.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        // While the hooks answer requests, a quarter of the slots
        // (crate::interactive); the permit is held meanwhile, so the
        // check below counts this fetch too.
        let slots = ctx.settings.concurrency as usize;
        let share = crate::interactive::background_share(slots);
        while crate::interactive::busy() && slots - ctx.semaphore.available_permits() > share {
            tokio::select! {
                _ = ctx.soft_stop.cancelled() => return,
                _ = crate::interactive::idle_or(YIELD_RECHECK) => {}
            }
        }
        let target = if crate::interactive::busy() {
            target.min(share + 1 - (slots - ctx.semaphore.available_permits()).min(share))
        } else {
            target
        };
        let mut permits = vec![first];
        let gather_until = Instant::now() + BATCH_GATHER;
        while permits.len() < target {
            if let Ok(p) = ctx.semaphore.clone().try_acquire_owned() {
                permits.push(p);
                continue;
            }
            tokio::select! {
                p = ctx.semaphore.clone().acquire_owned() => match p {
                    Ok(p) => permits.push(p),
                    Err(_) => return,
                },
                _ = tokio::time::sleep_until(gather_until) => break,
            }
        }
        let asked = permits.len();
        match shared
            .backend
            .fetch(&ctx.kind, &shared.name, asked, lease)
            .await
        {
            Ok(jobs) => {
                error_backoff = Duration::from_millis(100);
                let got = jobs.len();
                {
                    let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
                    running.extend(jobs.iter().map(|j| j.id.clone()));
                }
                for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
                    let handler = handler.clone();
                    let settings = ctx.settings.clone();
                    let hard_stop = ctx.hard_stop.clone();
                    let tx = ctx.tx.clone();
                    let worker = shared.name.clone();
                    ctx.tracker.spawn(async move {
                        let outcome = execute(handler, job, &settings, worker, hard_stop).await;
                        drop(permit);
                        // The completer outlives every job task; a send can only
                        // fail if it crashed, and then the lease expires and
                        // the rescuer hands the job back.
                        let _ = tx.send(outcome).await;
                    });
                }
                drop(permits);
                if got == asked {
                    // Likely more where these came from: make sure a sibling
                    // fetch loop that sleeps joins in.
                    wake.notify_one();
                } else {
                    // The queue is drained for now: sleep until a push wakes
                    // us or the poll interval passes (scheduled jobs, other
                    // processes' SQLite pushes).
                    tokio::select! {
                        _ = ctx.soft_stop.cancelled() => return,
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
            }
            Err(e) => {
                drop(permits);
                tracing::warn!(kind = %ctx.kind, error = %e, "fetch failed; retrying in {error_backoff:?}");
                tokio::select! {
                    _ = ctx.soft_stop.cancelled() => return,
                    _ = tokio::time::sleep(error_backoff) => {}
                }
                error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

async fn execute(
    handler: registry::ErasedHandler,
    job: LeasedJob,
    settings: &KindSettings,
    worker: Arc<str>,
    hard_stop: CancellationToken,
) -> Outcome {
    // Every line a job logs carries these; `client_id` is filled from the
    // payload here, or by the handler once it knows the client.
    let span = tracing::info_span!(
        "job",
        job_id = %job.id,
        kind = %job.kind,
        attempt = job.attempt,
        trace_id = job.trace_id.as_deref().unwrap_or(""),
        client_id = tracing::field::Empty,
    );
    if let Some(client) = job.payload.get("client_id").and_then(|c| c.as_str()) {
        span.record("client_id", client);
    }
    let started = Instant::now();
    let kind = job.kind.clone();
    crate::metrics::attempt_started(&kind);
    let finished = move |outcome: &str| {
        crate::metrics::job_finished(&kind, outcome, started.elapsed().as_secs_f64());
    };
    async move {
        let ctx = JobContext {
            id: job.id.clone(),
            kind: job.kind.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            trace_id: job.trace_id.clone(),
            worker,
        };
        let timeout = settings.timeout();
        let run = AssertUnwindSafe(handler(job.payload, ctx)).catch_unwind();
        let result = tokio::select! {
            biased;
            _ = hard_stop.cancelled() => {
                tracing::info!("handed back unfinished at shutdown");
                finished("handed_back");
                return Outcome::Release {
                    id: job.id,
                    run_at_ms: now_ms(),
                };
            }
            r = tokio::time::timeout(timeout, run) => r,
        };
        let (class, error) = match result {
            Ok(Ok(Ok(value))) => {
                tracing::debug!("done");
                finished("done");
                return Outcome::Done(Completion {
                    id: job.id,
                    result: value,
                });
            }
            Ok(Ok(Err(JobError::Snooze { reason, after }))) => {
                tracing::info!(%reason, "snoozed for {after:?}; the attempt does not count");
                finished("snoozed");
                return Outcome::Release {
                    id: job.id,
                    run_at_ms: now_ms() + after.as_millis() as i64,
                };
            }
            Ok(Ok(Err(e @ JobError::Permanent { .. }))) => ("permanent", e),
            Ok(Ok(Err(e))) => ("transient", e),
            Ok(Err(panic)) => (
                "panic",
                JobError::transient(format!("handler panicked: {}", panic_message(&*panic))),
            ),
            Err(_) => (
                "timeout",
                JobError::transient(format!("attempt timed out after {timeout:?}")),
            ),
        };
        let now = now_ms();
        let step = settings
            .retry_policy()
            .next_step(job.attempt, job.max_attempts, &error);
        let retry_at_ms = match step {
            NextStep::RetryIn(d) => Some(now + d.as_millis() as i64),
            NextStep::Dead => None,
        };
        match step {
            NextStep::RetryIn(d) => {
                finished("retried");
                tracing::warn!(class, error = %error, "attempt failed; retry in {d:?}")
            }
            NextStep::Dead => {
                finished("dead");
                tracing::warn!(class, error = %error, "job failed for good: moved to the dead set")
            }
        }
        Outcome::Failed(Failure {
            id: job.id,
            error: AttemptError {
                attempt: job.attempt,
                at_ms: now,
                class: class.to_string(),
                message: error.to_string(),
            },
            retry_at_ms,
        })
    }
    .instrument(span)
    .await
}

/// Persists outcomes in batches. A backend error is retried with backoff:
/// until an outcome is stored its job stays in the running set, so its lease
/// keeps being renewed and nobody else runs it meanwhile.
async fn completer(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Outcome>,
    shutdown: CancellationToken,
) {
    const BATCH: usize = 1_000;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(50);
        let mut stopping_since: Option<Instant> = None;
        loop {
            match persist(&shared, &batch).await {
                Ok(()) => break,
                Err(e) => {
                    if shutdown.is_cancelled() {
                        let since = *stopping_since.get_or_insert_with(Instant::now);
                        if since.elapsed()
                            > Duration::from_millis(shared.settings.shutdown_timeout_ms)
                        {
                            tracing::error!(error = %e, jobs = batch.len(),
                                "cannot record outcomes before exit; their leases will expire and the jobs run again");
                            break;
                        }
                    }
                    tracing::warn!(error = %e, "recording outcomes failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
        for o in &batch {
            running.remove(o.id());
        }
    }
}

async fn persist(shared: &Shared, batch: &[Outcome]) -> Result<(), QueueError> {
    let backend = &shared.backend;
    let done: Vec<Completion> = batch
        .iter()
        .filter_map(|o| match o {
            Outcome::Done(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let mut released = 0;
    backend.complete(&shared.name, &done).await?;
    for o in batch {
        match o {
            Outcome::Failed(f) => backend.fail(&shared.name, f).await?,
            Outcome::Release { id, run_at_ms } => {
                released += 1;
                backend
                    .release(&shared.name, std::slice::from_ref(id), *run_at_ms)
                    .await?
            }
            Outcome::Done(_) => {}
        }
    }
    let failed = batch.len() - done.len() - released;
    shared
        .stats
        .succeeded
        .fetch_add(done.len() as u64, Ordering::Relaxed);
    shared
        .stats
        .failed
        .fetch_add(failed as u64, Ordering::Relaxed);
    shared
        .stats
        .released
        .fetch_add(released as u64, Ordering::Relaxed);
    Ok(())
}

async fn heartbeat_once(shared: &Shared) -> Result<(), QueueError> {
    let ids = shared.running_ids();
    let mut info = shared.info.clone();
    info.running = ids.len() as u64;
    info.last_heartbeat_ms = now_ms();
    shared
        .backend
        .heartbeat(&info, &ids, Duration::from_millis(shared.settings.lease_ms))
        .await
}

async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let every = Duration::from_millis(shared.settings.heartbeat_ms);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = heartbeat_once(&shared).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}

async fn rescue_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let every = Duration::from_millis(shared.settings.rescue_interval_ms);
    let retention = Duration::from_secs(shared.settings.done_retention_secs);
    let purge_every = Duration::from_secs(60);
    let mut last_purge = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match shared.backend.rescue().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                jobs = n,
                "handed back the jobs of workers that stopped renewing their leases"
            ),
            Err(e) => tracing::warn!(error = %e, "rescue failed"),
        }
        if last_purge.elapsed() >= purge_every {
            last_purge = Instant::now();
            if let Err(e) = shared.backend.purge(retention).await {
                tracing::warn!(error = %e, "purge of finished jobs failed");
            }
        }
    }
}

/// Waits until no job of `kinds` is pending, scheduled, running or retrying;
/// returns the final counts. For the demo, the benchmark and tests.
pub async fn wait_until_drained(
    backend: &dyn QueueBackend,
    kinds: &[&str],
    poll: Duration,
) -> Result<Vec<QueueCounts>, QueueError> {
    loop {
        let counts: Vec<QueueCounts> = backend
            .counts()
            .await?
            .into_iter()
            .filter(|c| kinds.contains(&c.kind.as_str()))
            .collect();
        if counts.iter().all(|c| c.outstanding() == 0) {
            return Ok(counts);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Cancels `stop` on SIGTERM or SIGINT (Ctrl-C): the worker then drains.
pub async fn stop_on_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("stop signal received");
    stop.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_plan_overlaps_batches() {
        assert_eq!(
            FetchPlan::new(100, 1, 2),
            FetchPlan {
                fetchers: 1,
                batch: 1
            }
        );
        assert_eq!(
            FetchPlan::new(100, 8, 2),
            FetchPlan {
                fetchers: 2,
                batch: 2
            }
        );
        assert_eq!(
            FetchPlan::new(100, 64, 2),
            FetchPlan {
                fetchers: 2,
                batch: 16
            }
        );
        assert_eq!(
            FetchPlan::new(100, 64, 1),
            FetchPlan {
                fetchers: 1,
                batch: 32
            }
        );
        assert_eq!(
            FetchPlan::new(100, 1000, 2),
            FetchPlan {
                fetchers: 2,
                batch: 100
            }
        );
    }
}
