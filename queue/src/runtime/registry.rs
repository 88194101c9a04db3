//! The job kinds one worker process runs: an apalis handler per kind.
//!
//! A handler is any apalis service of `Task<P>` — most simply an `async fn`
//! of the typed payload plus extractors (`JobContext`, `Data<T>`,
//! `Attempt`, `TaskId`…) wrapped by `apalis::prelude::task_fn`. What it
//! returns is classified by the ack layer (`super::ack`): `Ok` is stored as
//! the job's result; [`JobError`] and apalis's own `AbortError`,
//! `RetryAfterError` and `DeferredError` say how it failed.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use apalis_core::error::BoxDynError;
use apalis_core::layers::Service;
use apalis_core::task::Task;
use apalis_core::task::from_request::FromRequest;
use apalis_core::task::task_fn::task_fn;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::backend::JobMeta;
use super::stack::{Mount, mount};
use crate::job::JobError;

/// What a handler knows about the attempt it runs. An apalis extractor: a
/// handler asks for it as an argument.
#[derive(Debug, Clone)]
pub struct JobContext {
    // Shared, not owned: the context is cloned for every handler that asks
    // for it, on every job's path.
    pub id: Arc<str>,
    pub kind: Arc<str>,
    /// This attempt's number, from 1 (apalis's `Attempt` says the same).
    pub attempt: u32,
    pub max_attempts: u32,
    pub trace_id: Option<String>,
    pub worker: Arc<str>,
}

/// Asked for a [`JobContext`] in a task no Dossier backend fed.
#[derive(Debug, thiserror::Error)]
#[error("this task carries no Dossier job context: it was not fed by a Dossier queue backend")]
pub struct NoJobContext;

impl<P: Sync> FromRequest<Task<P>> for JobContext {
    type Error = NoJobContext;

    async fn from_request(task: &Task<P>) -> Result<JobContext, NoJobContext> {
        task.ctx()
            .data()
            .get::<Arc<JobMeta>>()
            .map(|m| m.ctx.clone())
            .ok_or(NoJobContext)
    }
}

/// The handlers one worker process runs, keyed by kind.
/// Called once a job is dead because its workers kept being lost (the
/// rescuer's decision, which no handler sees): the application can tell
/// someone. Called by the one worker whose rescuer recorded the death.
pub type GivenUp = Arc<
    dyn Fn(crate::queue::ExpiredLease) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Mount>,
    given_up: Option<GivenUp>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Sets what to call when the rescuer sends a job to the dead set
    /// ([`GivenUp`]).
    pub fn on_given_up(&mut self, hook: GivenUp) -> &mut Self {
        self.given_up = Some(hook);
        self
    }

    pub(crate) fn given_up(&self) -> Option<GivenUp> {
        self.given_up.clone()
    }

    /// Registers `handler(payload, context)` for `kind`. A payload that does
    /// not decode into `P` fails the job permanently (no retry can fix it)
    /// and the worker goes on. The handler's return value is stored as the
    /// job's result.
    pub fn register<P, R, F, Fut>(&mut self, kind: &str, handler: F) -> &mut Self
    where
        P: DeserializeOwned + Send + Sync + 'static,
        R: Serialize + Send + Sync + 'static,
        F: Fn(P, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, JobError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let f = move |payload: P, ctx: JobContext| {
            let handler = handler.clone();
            async move { handler(payload, ctx).await }
        };
        self.register_service(kind, task_fn(f))
    }

    /// Registers any apalis service of `Task<P>` for `kind`, e.g.
    /// `task_fn(handler)` where `handler` takes extractors of its own
    /// choosing and returns apalis's error types.
    pub fn register_service<P, S>(&mut self, kind: &str, service: S) -> &mut Self
    where
        P: DeserializeOwned + Send + Sync + 'static,
        S: Service<Task<P>> + Clone + Send + Sync + 'static,
        S::Response: Serialize + Send + Sync + 'static,
        S::Error: Into<BoxDynError> + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        self.kinds.insert(kind.to_string(), mount::<P, S>(service));
        self
    }

    /// The same handlers restricted to `kinds`.
    pub fn only(&self, kinds: &[String]) -> Registry {
        Registry {
            kinds: self
                .kinds
                .iter()
                .filter(|(k, _)| kinds.contains(k))
                .map(|(k, m)| (k.clone(), m.clone()))
                .collect(),
            given_up: self.given_up.clone(),
        }
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    pub fn contains(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    pub(crate) fn mounts(&self) -> impl Iterator<Item = (&str, &Mount)> {
        self.kinds.iter().map(|(k, m)| (k.as_str(), m))
    }
}
