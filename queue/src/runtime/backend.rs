//! The apalis backend of one job kind: it yields the jobs the feeder
//! (`super::feeder`) leased from our queue, as typed apalis tasks.
//!
//! It is `Ephemeral` and decodes payloads itself, because apalis treats any
//! error from a backend as fatal to the worker: an undecodable payload goes
//! to the dead set here and the worker goes on, and a queue outage is
//! absorbed by the feeder's backoff (`Error = Infallible`). Its own layer,
//! [`AckLayer`], is where every attempt's outcome is decided.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Span;

use super::ack::{self, AckLayer};
use super::completer::Outcome;
use super::registry::JobContext;
use crate::clock::now_ms;
use crate::job::LeasedJob;
use crate::metrics::KindMetrics;
use crate::settings::KindSettings;

/// What the pool shares with one kind's apalis worker.
pub(crate) struct KindEnv {
    pub(crate) kind: Arc<str>,
    pub(crate) settings: KindSettings,
    pub(crate) worker: Arc<str>,
    /// The kind's slots: one permit per job leased and not yet decided.
    /// The feeder takes them; whoever decides the job gives its permit back.
    pub(crate) slots: Arc<Semaphore>,
    /// How many slots the kind should have (an operator may scale it live).
    pub(crate) limit: super::scaling::SlotLimit,
    /// Fired when in-flight jobs outlive the shutdown grace: each attempt
    /// is handed back uncounted and its handler aborted.
    pub(crate) hard_stop: CancellationToken,
    /// How long an apalis `DeferredError` ("run again soon") waits.
    pub(crate) defer: Duration,
    pub(crate) metrics: KindMetrics,
    outcomes: mpsc::UnboundedSender<Outcome>,
    /// The leased jobs' channel, held by the live backend; a backend
    /// rebuilt by a Monitor restart takes it from here.
    leased: Mutex<Option<mpsc::Receiver<LeasedJob>>>,
}

impl KindEnv {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        kind: &str,
        settings: KindSettings,
        worker: Arc<str>,
        slots: Arc<Semaphore>,
        hard_stop: CancellationToken,
        defer: Duration,
        outcomes: mpsc::UnboundedSender<Outcome>,
        leased: mpsc::Receiver<LeasedJob>,
    ) -> KindEnv {
        KindEnv {
            kind: Arc::from(kind),
            settings,
            worker,
            limit: super::scaling::SlotLimit::new(slots.available_permits()),
            slots,
            hard_stop,
            defer,
            metrics: KindMetrics::new(kind),
            outcomes,
            leased: Mutex::new(Some(leased)),
        }
    }

    /// Records a job's outcome and frees its slot. If the completer is gone
    /// the job's lease expires and the rescuer hands it back.
    pub(crate) fn settle(&self, outcome: Outcome) {
        self.slots.add_permits(1);
        let _ = self.outcomes.send(outcome);
    }
}

/// What the backend attaches to every task: our context for the handler and
/// the span every line of the attempt is logged in.
#[derive(Debug)]
pub(crate) struct JobMeta {
    pub(crate) ctx: JobContext,
    pub(crate) span: Span,
}

impl JobMeta {
    pub(crate) fn new(job: &LeasedJob, env: &KindEnv) -> JobMeta {
        // Every line a job logs carries these. A payload's top-level
        // `client_id` (the subject of most jobs: a customer, a tenant's
        // client) is recorded too; a handler may record it once it knows.
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
        JobMeta {
            ctx: JobContext {
                id: Arc::from(job.id.as_str()),
                kind: env.kind.clone(),
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                trace_id: job.trace_id.clone(),
                worker: env.worker.clone(),
            },
            span,
        }
    }
}

/// One kind's apalis backend.
pub(crate) struct DossierBackend<P> {
    env: Arc<KindEnv>,
    leased: Option<mpsc::Receiver<LeasedJob>>,
    _payload: PhantomData<fn() -> P>,
}

impl<P> DossierBackend<P> {
    pub(crate) fn new(env: Arc<KindEnv>) -> DossierBackend<P> {
        let leased = env.leased.lock().unwrap_or_else(|e| e.into_inner()).take();
        if leased.is_none() {
            tracing::error!(kind = %env.kind, "a second apalis worker for one kind: it gets no jobs");
        }
        DossierBackend {
            env,
            leased,
            _payload: PhantomData,
        }
    }
}

impl<P> Drop for DossierBackend<P> {
    fn drop(&mut self) {
        if let Some(rx) = self.leased.take() {
            *self.env.leased.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
        }
    }
}

impl<P: DeserializeOwned + Send + 'static> Backend for DossierBackend<P> {
    type Task = Task<P>;
    type Error = Infallible;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Task<P>, Infallible>>> {
        let Some(rx) = self.leased.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let Some(job) = ready!(rx.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            let meta = JobMeta::new(&job, &self.env);
            match serde_json::from_value::<P>(job.payload) {
                Ok(args) => {
                    let task = TaskBuilder::new(args)
                        .task_id(TaskId::from_string(job.id))
                        // apalis's lifecycle layer counts the attempt on its
                        // first poll: start one below ours so both agree.
                        .attempt(job.attempt.saturating_sub(1) as usize)
                        .max_attempts(job.max_attempts as usize)
                        .data(Arc::new(meta))
                        .build();
                    return Poll::Ready(Some(Ok(task)));
                }
                Err(e) => self.env.settle(ack::undecodable(&meta, &self.env, &e)),
            }
        }
    }

    /// Called once the worker's in-flight tasks are done (graceful stop):
    /// the jobs leased but never started go back to the queue uncounted.
    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Infallible>> {
        if let Some(rx) = self.leased.as_mut() {
            let now = now_ms();
            while let Ok(job) = rx.try_recv() {
                self.env.settle(Outcome::Release {
                    id: job.id,
                    run_at_ms: now,
                });
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<P> BackendConfig for DossierBackend<P> {
    type Args = P;
    type Id = String;
    type Kind = Ephemeral;
    type Config = KindSettings;
    type Layer = AckLayer;

    fn config(&self) -> &KindSettings {
        &self.env.settings
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> AckLayer {
        AckLayer::new(self.env.clone())
    }
}
