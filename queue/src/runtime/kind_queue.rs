//! One kind's queue as apalis producers and tools see it: another Rust
//! service pushes with apalis's `TaskSink` API (`push`, `push_bulk`,
//! `push_task` with a run time and an idempotency key), and tools read it
//! through apalis's `FetchById`, `ListTasks`, `ListAllTasks`, `ListWorkers`,
//! `ListQueues` and `Metrics` — together apalis's `Expose`, what
//! apalis-board asks of a backend.
//!
//! It is a handle, not a source: its `poll_next` yields nothing, since the
//! pool's own feeder leases the jobs. Pushes go through
//! [`QueueBackend::push_bulk`], so idempotency keys enqueue once, as they do
//! for every other producer; apalis's `push` has no "duplicate" answer, so
//! a duplicate is simply not enqueued again.
//!
//! Status mapping (apalis has six, we have six, not the same six): pending →
//! `Pending`, scheduled → `Queued`, running → `Running`, retrying →
//! `Failed` (it failed, it will run again), done → `Done`, dead → `Killed`.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use apalis_core::backend::codec::Codec;
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig, FetchById, WireFormatBackend};
use apalis_core::backend::{
    Filter, ListAllTasks, ListQueues, ListTasks, ListWorkers, Metrics, QueueInfo, RunningWorker,
    StatType, Statistic,
};
use apalis_core::layers::Identity;
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures_util::Sink;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::now_ms;
use crate::job::{JobFilter, JobRecord, JobStatus, NewJob, QueueCounts, WorkerInfo};
use crate::queue::{QueueBackend, QueueError};
use crate::settings::KindSettings;

/// Jobs buffered by the sink before a push must go out.
const SINK_BATCH: usize = 1_000;

type Pushing = Pin<Box<dyn Future<Output = Result<(), QueueError>> + Send>>;

/// The apalis face of one kind's queue.
pub struct KindQueue<P> {
    queue: Arc<dyn QueueBackend>,
    kind: String,
    max_attempts: u32,
    buffered: Vec<NewJob>,
    pushing: Option<Pushing>,
    codec: JsonCodec,
    _payload: PhantomData<fn(P) -> P>,
}

impl<P> KindQueue<P> {
    /// `kind`'s queue on `queue`; pushed jobs get the kind's attempts
    /// unless the task names its own.
    pub fn new(queue: Arc<dyn QueueBackend>, kind: &str, settings: &KindSettings) -> Self {
        KindQueue {
            queue,
            kind: kind.to_string(),
            max_attempts: settings.max_attempts,
            buffered: Vec::new(),
            pushing: None,
            codec: JsonCodec,
            _payload: PhantomData,
        }
    }

    fn job_of(&self, task: Task<P>) -> Result<NewJob, QueueError>
    where
        P: Serialize,
    {
        let ctx = task.ctx().clone();
        let payload = serde_json::to_value(&task.args).map_err(|e| QueueError::Corrupt {
            id: String::new(),
            why: format!("the task's arguments do not encode as JSON: {e}"),
        })?;
        // apalis keeps run times in seconds.
        let run_at_ms = ctx
            .run_at()
            .map(|s| s as i64 * 1_000)
            .filter(|&at| at > now_ms());
        Ok(NewJob {
            kind: self.kind.clone(),
            payload,
            run_at_ms,
            max_attempts: ctx
                .max_attempts()
                .map(|n| n as u32)
                .unwrap_or(self.max_attempts),
            idempotency_key: ctx.idempotency_key().map(str::to_string),
            trace_id: None,
            group: None,
            subject: None,
            bulk: false,
        })
    }
}

/// apalis's codec slot: our payloads are JSON values. Ours because
/// apalis-core 1.0 defines the `Codec` trait and no JSON codec (apalis's
/// JSON codecs live in its storage crates, whose backends we do not use):
/// ten lines here rather than a backend crate's dependency tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<T: Serialize + DeserializeOwned> Codec<T> for JsonCodec {
    type Error = serde_json::Error;
    type Compact = serde_json::Value;

    fn encode(&self, val: &T) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(val)
    }

    fn decode(&self, val: &serde_json::Value) -> Result<T, serde_json::Error> {
        serde_json::from_value(val.clone())
    }
}

impl<P: Send + 'static> Backend for KindQueue<P> {
    type Task = Task<P>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        Poll::Ready(Ok(()))
    }

    /// Nothing: the pool's feeder leases this kind's jobs.
    fn poll_next(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Task<P>, QueueError>>> {
        Poll::Ready(None)
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        Poll::Ready(Ok(()))
    }
}

impl<P> BackendConfig for KindQueue<P> {
    type Args = P;
    type Id = String;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Identity {
        Identity::new()
    }
}

impl<P> WireFormatBackend for KindQueue<P> {
    type Codec = JsonCodec;
    type Compact = serde_json::Value;

    fn codec(&self) -> &JsonCodec {
        &self.codec
    }
}

impl<P: Serialize> Sink<Task<P>> for KindQueue<P> {
    type Error = QueueError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        if self.buffered.len() >= SINK_BATCH {
            return self.poll_flush(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, task: Task<P>) -> Result<(), QueueError> {
        let this = self.get_mut();
        let job = this.job_of(task)?;
        this.buffered.push(job);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        let this = self.get_mut();
        loop {
            if let Some(pushing) = this.pushing.as_mut() {
                let done = ready!(pushing.as_mut().poll(cx));
                this.pushing = None;
                done?;
            }
            if this.buffered.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let jobs = std::mem::take(&mut this.buffered);
            let queue = this.queue.clone();
            this.pushing = Some(Box::pin(
                async move { queue.push_bulk(jobs).await.map(|_| ()) },
            ));
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        self.poll_flush(cx)
    }
}

fn apalis_status(status: JobStatus) -> Status {
    match status {
        JobStatus::Pending => Status::Pending,
        JobStatus::Scheduled => Status::Queued,
        JobStatus::Running => Status::Running,
        JobStatus::Retrying => Status::Failed,
        JobStatus::Done => Status::Done,
        JobStatus::Dead => Status::Killed,
    }
}

/// `None` for a status a later apalis adds: the listing is then unfiltered.
fn our_status(status: &Status) -> Option<JobStatus> {
    Some(match status {
        Status::Pending => JobStatus::Pending,
        Status::Queued => JobStatus::Scheduled,
        Status::Running => JobStatus::Running,
        Status::Failed => JobStatus::Retrying,
        Status::Done => JobStatus::Done,
        Status::Killed => JobStatus::Dead,
        _ => return None,
    })
}

fn task_of<A>(job: &JobRecord, args: A) -> Task<A> {
    let mut task = TaskBuilder::new(args)
        .task_id(TaskId::from_string(job.id.clone()))
        .attempt(job.attempts as usize)
        .max_attempts(job.max_attempts as usize)
        .status(apalis_status(job.status))
        .run_at_timestamp((job.run_at_ms / 1_000).max(0) as u64)
        .lock_by(job.lease_owner.clone());
    if let Some(key) = &job.idempotency_key {
        task = task.idempotency_key(key);
    }
    task.build()
}

fn listed(job: &JobRecord) -> Task<serde_json::Value> {
    task_of(job, job.payload.clone())
}

// The inspection futures own what they read (not `&self`): the sink's
// pending push is not `Sync`, so a borrow of the handle would not be `Send`.
async fn tasks(
    queue: Arc<dyn QueueBackend>,
    kind: Option<String>,
    filter: Filter,
) -> Result<Vec<Task<serde_json::Value>>, QueueError> {
    let offset = filter.page.saturating_sub(1) as usize * filter.limit() as usize;
    let jobs = queue
        .list(&JobFilter {
            kind,
            status: filter.status.as_ref().and_then(our_status),
            limit: offset + filter.limit() as usize,
            ..JobFilter::default()
        })
        .await?;
    Ok(jobs.iter().skip(offset).map(listed).collect())
}

fn statistics(counts: &[QueueCounts]) -> Vec<Statistic> {
    let sum = |f: fn(&QueueCounts) -> u64| counts.iter().map(f).sum::<u64>().to_string();
    let stat = |title: &str, value: String| Statistic {
        title: title.to_string(),
        stat_type: StatType::Number,
        value,
        priority: None,
    };
    vec![
        stat("Pending", sum(|c| c.pending)),
        stat("Scheduled", sum(|c| c.scheduled)),
        stat("Running", sum(|c| c.running)),
        stat("Retrying", sum(|c| c.retrying)),
        stat("Done", sum(|c| c.done)),
        stat("Dead", sum(|c| c.dead)),
    ]
}

fn running_worker(w: &WorkerInfo, queue: &str, backend: &str) -> RunningWorker {
    RunningWorker {
        id: w.name.clone(),
        queue: queue.to_string(),
        backend: backend.to_string(),
        started_at: (w.started_at_ms / 1_000).max(0) as u64,
        last_heartbeat: (w.last_heartbeat_ms / 1_000).max(0) as u64,
        layers: String::new(),
    }
}

impl<P: DeserializeOwned + Send + 'static> FetchById for KindQueue<P> {
    fn fetch_by_id(
        &mut self,
        id: &TaskId,
    ) -> impl Future<Output = Result<Option<Task<P>>, QueueError>> + Send {
        let queue = self.queue.clone();
        let id = id.to_string();
        async move {
            let Some(job) = queue.get(&id).await? else {
                return Ok(None);
            };
            let args: P =
                serde_json::from_value(job.payload.clone()).map_err(|e| QueueError::Corrupt {
                    id: job.id.clone(),
                    why: format!("payload is not of the kind's type: {e}"),
                })?;
            Ok(Some(task_of(&job, args)))
        }
    }
}

impl<P: Send + 'static> ListTasks for KindQueue<P> {
    fn list_tasks(
        &self,
        filter: &Filter,
    ) -> impl Future<Output = Result<Vec<Task<serde_json::Value>>, QueueError>> + Send {
        tasks(self.queue.clone(), Some(self.kind.clone()), filter.clone())
    }
}

impl<P: Send + 'static> ListAllTasks for KindQueue<P> {
    fn list_all_tasks(
        &self,
        filter: &Filter,
    ) -> impl Future<Output = Result<Vec<Task<serde_json::Value>>, QueueError>> + Send {
        tasks(self.queue.clone(), None, filter.clone())
    }
}

impl<P: Send + 'static> ListWorkers for KindQueue<P> {
    fn list_workers(&self) -> impl Future<Output = Result<Vec<RunningWorker>, QueueError>> + Send {
        let (queue, kind) = (self.queue.clone(), self.kind.clone());
        async move {
            let backend = queue.name();
            Ok(queue
                .workers()
                .await?
                .iter()
                .filter(|w| w.kinds.contains(&kind))
                .map(|w| running_worker(w, &kind, backend))
                .collect())
        }
    }

    fn list_all_workers(
        &self,
    ) -> impl Future<Output = Result<Vec<RunningWorker>, QueueError>> + Send {
        let queue = self.queue.clone();
        async move {
            let backend = queue.name();
            Ok(queue
                .workers()
                .await?
                .iter()
                .map(|w| running_worker(w, &w.kinds.join(","), backend))
                .collect())
        }
    }
}

impl<P: Send + 'static> ListQueues for KindQueue<P> {
    fn list_queues(&self) -> impl Future<Output = Result<Vec<QueueInfo>, QueueError>> + Send {
        let queue = self.queue.clone();
        async move {
            let workers = queue.workers().await?;
            Ok(queue
                .counts()
                .await?
                .into_iter()
                .map(|c| QueueInfo {
                    workers: workers
                        .iter()
                        .filter(|w| w.kinds.contains(&c.kind))
                        .map(|w| w.name.clone())
                        .collect(),
                    stats: statistics(std::slice::from_ref(&c)),
                    name: c.kind,
                    activity: Vec::new(),
                })
                .collect())
        }
    }
}

impl<P: Send + 'static> Metrics for KindQueue<P> {
    fn global(&self) -> impl Future<Output = Result<Vec<Statistic>, QueueError>> + Send {
        let queue = self.queue.clone();
        async move { Ok(statistics(&queue.counts().await?)) }
    }

    fn fetch_by_queue(&self) -> impl Future<Output = Result<Vec<Statistic>, QueueError>> + Send {
        let (queue, kind) = (self.queue.clone(), self.kind.clone());
        async move {
            let counts: Vec<QueueCounts> = queue
                .counts()
                .await?
                .into_iter()
                .filter(|c| c.kind == kind)
                .collect();
            Ok(statistics(&counts))
        }
    }
}
