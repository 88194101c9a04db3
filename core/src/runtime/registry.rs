//! Handlers by job kind, with payloads decoded from JSON at the edge.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::job::JobError;

/// What a handler knows about the attempt it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub id: String,
    pub kind: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    pub trace_id: Option<String>,
    pub worker: Arc<str>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, JobError>> + Send>>;
pub(crate) type ErasedHandler =
    Arc<dyn Fn(serde_json::Value, JobContext) -> BoxFuture + Send + Sync>;

/// The handlers one worker process runs, keyed by kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, ErasedHandler>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers `handler` for `kind`. A payload that does not decode into
    /// `P` fails the job permanently: no retry can fix it. The handler's
    /// return value is stored as the job's result.
    pub fn register<P, R, F, Fut>(&mut self, kind: &str, handler: F) -> &mut Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(P, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, JobError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let kind_name = kind.to_string();
        let erased: ErasedHandler = Arc::new(move |raw, ctx| {
            let handler = handler.clone();
            let kind_name = kind_name.clone();
            Box::pin(async move {
                let payload: P = serde_json::from_value(raw).map_err(|e| {
                    JobError::permanent(format!("payload is not a valid {kind_name} job: {e}"))
                })?;
                let out = handler(payload, ctx).await?;
                serde_json::to_value(out).map_err(|e| {
                    JobError::permanent(format!("handler result cannot be stored: {e}"))
                })
            })
        });
        self.handlers.insert(kind.to_string(), erased);
        self
    }

    /// The same handlers restricted to `kinds`.
    pub fn only(&self, kinds: &[String]) -> Registry {
        Registry {
            handlers: self
                .handlers
                .iter()
                .filter(|(k, _)| kinds.contains(k))
                .map(|(k, h)| (k.clone(), h.clone()))
                .collect(),
        }
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    pub fn contains(&self, kind: &str) -> bool {
        self.handlers.contains_key(kind)
    }

    pub(crate) fn get(&self, kind: &str) -> Option<ErasedHandler> {
        self.handlers.get(kind).cloned()
    }
}
