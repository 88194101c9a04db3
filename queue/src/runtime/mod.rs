//! The worker pool, an apalis 1.0 pool: one apalis `Monitor` with one
//! worker per job kind (and one per schedule), on backends of ours.
//!
//! Path of one attempt: the feeder (`feeder`) leases a batch from the queue,
//! as many as the kind has free slots, and puts the jobs in the kind's
//! channel → the kind's apalis backend (`backend`) yields each as a typed
//! task → the apalis stack (`stack`) runs the handler in its own task under
//! a timeout with panics caught → the backend's ack layer (`ack`) decides
//! the outcome through the retry policy → the completer (`completer`) stores
//! outcomes in batches → the job's id leaves the running set, whose leases
//! the heartbeat (`upkeep`) renews meanwhile.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis_core::monitor::Monitor;
use tokio::sync::{Semaphore, mpsc};

use crate::clock::now_ms;
use crate::job::{QueueCounts, WorkerInfo};
use crate::queue::{QueueBackend, QueueError};
use crate::schedule::Scheduled;
use crate::settings::QueueSettings;

mod ack;
mod backend;
mod completer;
mod feeder;
mod identity;
mod kind_queue;
mod pauses;
mod registry;
mod scaling;
mod stack;
mod upkeep;

pub use identity::{host_name, worker_name};
pub use kind_queue::{JsonCodec, KindQueue};
pub use pauses::CONTROLS_REFRESH;
pub use registry::{GivenUp, JobContext, NoJobContext, Registry};
pub use tokio_util::sync::CancellationToken;

use backend::KindEnv;
use feeder::{FetchContext, FetchPlan, fetch_loop};

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

struct Shared {
    name: Arc<str>,
    backend: Arc<dyn QueueBackend>,
    settings: QueueSettings,
    running: Mutex<HashSet<String>>,
    /// How many jobs may be leased and not yet recorded (in flight, or
    /// decided with their outcome waiting for the completer): the fetch
    /// loops lease no more beyond it ([`Shared::wait_for_room`]).
    running_cap: usize,
    /// Notified when the completer has recorded a batch.
    recorded: tokio::sync::Notify,
    stats: Stats,
    info: WorkerInfo,
    pauses: pauses::PauseBoard,
    /// Each kind's slots now, for the heartbeat.
    concurrency: Mutex<std::collections::BTreeMap<String, u32>>,
}

impl Shared {
    fn running_ids(&self) -> Vec<String> {
        let set = self.running.lock().unwrap_or_else(|e| e.into_inner());
        set.iter().cloned().collect()
    }

    fn running_len(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Returns once fewer than `running_cap` jobs are leased and not yet
    /// recorded (false: `stop` fired first). A backend that leases but
    /// cannot record outcomes (a disk that refuses some writes, a replica
    /// gone read-only mid-batch) would otherwise have every decided job's
    /// outcome kept in memory, and the whole backlog leased.
    async fn wait_for_room(&self, stop: &CancellationToken, poll: Duration) -> bool {
        while self.running_len() >= self.running_cap {
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = self.recorded.notified() => {}
                // A batch recorded between the check and the wait.
                _ = tokio::time::sleep(poll) => {}
            }
        }
        true
    }
}

/// The most jobs a worker keeps leased and unrecorded: every kind's slots
/// at the most they can be scaled to, and two of the completer's batches
/// (one being written, one gathering).
fn running_cap(kinds: usize) -> usize {
    kinds * crate::job::MAX_CONCURRENCY as usize + 2 * completer::BATCH
}

/// One worker process's pool.
pub struct Worker {
    shared: Arc<Shared>,
    registry: Registry,
    schedules: Vec<Scheduled>,
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
            concurrency: Default::default(),
        };
        Ok(Worker {
            shared: Arc::new(Shared {
                name: name.into(),
                backend,
                settings,
                running: Mutex::new(HashSet::new()),
                running_cap: running_cap(registry.kinds().count()),
                recorded: tokio::sync::Notify::new(),
                stats: Stats::default(),
                info,
                pauses: pauses::PauseBoard::new(),
                concurrency: Mutex::default(),
            }),
            registry,
            schedules: Vec::new(),
        })
    }

    /// Also fires `schedules` (one apalis-cron worker each, in the same
    /// Monitor), pushing each tick to this pool's queue.
    pub fn with_schedules(mut self, schedules: Vec<Scheduled>) -> Worker {
        self.schedules = schedules;
        self
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
    /// to the queue uncounted and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerReport, RuntimeError> {
        let shared = self.shared.clone();
        let q = &shared.settings;
        let background = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();

        // Scales set by operators hold across restarts.
        let scales = shared.backend.scales().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the kinds' scales failed; configured concurrency for now");
            Vec::new()
        });
        let initial = |kind: &str| scaling::wanted(kind, q.kind(kind).concurrency, &scales);
        *shared.concurrency.lock().unwrap_or_else(|e| e.into_inner()) = self
            .registry
            .kinds()
            .map(|k| (k.to_string(), initial(k)))
            .collect();
        // Announce ourselves before taking work, so `dossier workers` shows us.
        if let Err(e) = upkeep::heartbeat_once(&shared).await {
            tracing::warn!(error = %e, "first heartbeat failed; will keep trying");
        }
        // A restarted worker never fetches a kind paused meanwhile.
        if let Err(e) = shared.pauses.refresh(shared.backend.as_ref()).await {
            tracing::warn!(error = %e, "reading the paused kinds failed; will keep trying");
        }
        let mut bg = tokio::task::JoinSet::new();
        bg.spawn(upkeep::heartbeat_loop(shared.clone(), background.clone()));
        bg.spawn(upkeep::rescue_loop(
            shared.clone(),
            self.registry.given_up(),
            background.clone(),
        ));
        {
            let backend = shared.backend.clone();
            let stop = background.clone();
            bg.spawn(async move { backend.listen(stop).await });
        }
        let completer = tokio::spawn(completer::completer(
            shared.clone(),
            outcomes_rx,
            shutdown.clone(),
        ));

        // A worker only ends on a panic inside the pool (the backends never
        // fail): bring it back rather than leave its kind unserved.
        let mut monitor = Monitor::new().should_restart(|worker, error| {
            tracing::error!(worker = %worker.name(), %error, "an apalis worker failed; restarting it");
            true
        });
        let mut fetchers = tokio::task::JoinSet::new();
        // The slot resizers and the controls loop hold the kinds'
        // environments (and so outcome senders): they end with the
        // fetchers, before the completer is awaited, or it would wait for
        // them forever. Pauses only matter to fetch loops, which end first.
        let mut resizers = tokio::task::JoinSet::new();
        let resizers_stop = CancellationToken::new();
        let mut envs = Vec::new();
        for (kind, mount) in self.registry.mounts() {
            let settings = q.kind(kind);
            let slots = initial(kind) as usize;
            // Room for every job the kind could be scaled to lease, so the
            // feeder never waits on it.
            let (leased, leased_rx) =
                mpsc::channel(settings.concurrency.max(crate::job::MAX_CONCURRENCY) as usize);
            let env = Arc::new(KindEnv::new(
                kind,
                settings.clone(),
                shared.name.clone(),
                Arc::new(Semaphore::new(slots)),
                hard_stop.clone(),
                Duration::from_millis(settings.backoff_base_ms),
                outcomes.clone(),
                leased_rx,
            ));
            monitor = mount(monitor, env.clone());
            resizers.spawn(scaling::absorb(env.clone(), resizers_stop.clone()));
            envs.push(env.clone());
            let plan = FetchPlan::new(
                q.fetch_batch,
                settings.concurrency,
                shared.backend.fetch_loops(),
            );
            for _ in 0..plan.fetchers {
                fetchers.spawn(fetch_loop(FetchContext {
                    shared: shared.clone(),
                    env: env.clone(),
                    batch: plan.batch,
                    soft_stop: shutdown.clone(),
                    leased: leased.clone(),
                }));
            }
        }
        drop(outcomes);
        resizers.spawn(scaling::controls_loop(
            shared.clone(),
            envs,
            resizers_stop.clone(),
        ));
        let ticks_stop = CancellationToken::new();
        monitor = crate::schedule::mount(
            monitor,
            &shared.name,
            shared.backend.clone(),
            self.schedules,
            ticks_stop.clone(),
        );
        let pool = monitor.context();
        let mut monitor = tokio::spawn(monitor.run());
        tracing::info!(worker = %shared.name, backend = shared.backend.name(), "worker started");

        shutdown.cancelled().await;
        tracing::info!(worker = %shared.name, "shutting down: no new jobs, waiting for in-flight ones");
        while fetchers.join_next().await.is_some() {}
        resizers_stop.cancel();
        while resizers.join_next().await.is_some() {}
        ticks_stop.cancel();
        // The workers stop taking tasks, finish those in flight, then hand
        // back what they had not started (the backend's poll_close).
        if let Err(e) = pool.shutdown() {
            tracing::error!(error = %e, "cannot stop the apalis workers");
        }
        let grace = Duration::from_millis(q.shutdown_timeout_ms);
        let ended = match tokio::time::timeout(grace, &mut monitor).await {
            Ok(ended) => ended,
            Err(_) => {
                tracing::warn!(
                    worker = %shared.name,
                    "jobs still running after {grace:?}: handing them back to the queue"
                );
                hard_stop.cancel();
                monitor.await
            }
        };
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the apalis monitor ended with errors"),
            Err(e) => tracing::error!(error = %e, "the apalis monitor task failed"),
        }
        // Every outcome sender is gone now (the feeders ended, the Monitor
        // dropped its workers and their kinds' environments): the
        // completer drains what is left and ends.
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
