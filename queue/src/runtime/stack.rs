//! One kind's apalis worker: its backend and the layers every attempt runs
//! through, outermost first (apalis puts the backend's [`AckLayer`] around
//! them all):
//!
//! 1. `concurrency` — a guard at the most slots a kind can be scaled to;
//!    the feeder's slots are the real limit.
//! 2. `parallelize` with abort-on-drop — each attempt in its own tokio task
//!    (without it every handler of every kind would share the Monitor's one
//!    task), cancelled when the ack drops it at a hard stop.
//! 3. tracing — the span the backend made, with our fields; apalis's own
//!    request/response/failure logs are off (the ack logs each outcome once,
//!    at the right level, and apalis's span would number attempts from 0).
//! 4. catch-panic with our handler — a panic is a failed attempt, retried
//!    (apalis's default would make it permanent).
//! 5. `timeout` — the kind's attempt timeout.
//!
//! apalis's retry layer is not used: it retries in-process with the slot
//! held; our retries are durable run times chosen by the retry policy.
//!
//! [`AckLayer`]: super::ack::AckLayer

use std::any::Any;
use std::sync::Arc;

use apalis::layers::catch_panic::CatchPanicLayer;
use apalis::layers::tracing::TraceLayer;
use apalis::prelude::WorkerBuilderExt;
use apalis_core::error::BoxDynError;
use apalis_core::layers::Service;
use apalis_core::monitor::Monitor;
use apalis_core::task::Task;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::ext::parallelize::ParallelizeExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::task::AbortOnDropHandle;
use tracing::Span;

use super::backend::{DossierBackend, JobMeta, KindEnv};

/// Adds one kind's worker to the Monitor (called once per pool run).
pub(crate) type Mount = Arc<dyn Fn(Monitor, Arc<KindEnv>) -> Monitor + Send + Sync>;

pub(crate) fn mount<P, S>(service: S) -> Mount
where
    P: DeserializeOwned + Send + Sync + 'static,
    S: Service<Task<P>> + Clone + Send + Sync + 'static,
    S::Response: Serialize + Send + Sync + 'static,
    S::Error: Into<BoxDynError> + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    Arc::new(move |monitor: Monitor, env: Arc<KindEnv>| {
        let service = service.clone();
        // Called again on each restart: a fresh backend takes the channel
        // of leased jobs back from `env`.
        monitor.register(move |_restarts| {
            WorkerBuilder::new(format!("{}/{}", env.worker, env.kind))
                .backend(DossierBackend::<P>::new(env.clone()))
                .concurrency(env.settings.concurrency.max(crate::job::MAX_CONCURRENCY) as usize)
                .parallelize(spawn_abortable)
                .layer(
                    TraceLayer::new()
                        .make_span_with(job_span::<P>)
                        .on_request(quiet_request::<P>)
                        .on_response(())
                        .on_failure(()),
                )
                .layer(CatchPanicLayer::with_panic_handler(on_panic))
                .timeout(env.settings.timeout())
                .build(service.clone())
        })
    })
}

/// apalis's parallelize executor: a tokio task whose handle aborts it when
/// dropped, so that no handler runs on detached once its attempt is decided.
pub(crate) fn spawn_abortable<F>(f: F) -> AbortOnDropHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    AbortOnDropHandle::new(tokio::spawn(f))
}

fn job_span<P>(task: &Task<P>) -> Span {
    task.ctx()
        .data()
        .get::<Arc<JobMeta>>()
        .map(|m| m.span.clone())
        .unwrap_or_else(Span::none)
}

fn quiet_request<P>(_: &Task<P>, _: &Span) {}

/// A handler panicked: a failed attempt of class `panic`.
#[derive(Debug, thiserror::Error)]
#[error("handler panicked: {0}")]
pub(crate) struct Panicked(pub(crate) String);

fn on_panic(panic: &Box<dyn Any + Send>) -> Panicked {
    Panicked(
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into()),
    )
}
