//! Makes outcomes durable: batches them into the backend's `complete`,
//! `fail` and `release`, retrying a failing backend. A job's id leaves the
//! running set only once its outcome is stored, so its lease is renewed
//! until then and nobody else runs it meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::queue::{Completion, Failure, QueueError};

/// What one attempt came to, as the ack layer decided it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Done(Completion),
    Failed(Failure),
    /// Handed back uncounted, due at `run_at_ms` (shutdown, snooze).
    Release {
        id: String,
        run_at_ms: i64,
    },
}

impl Outcome {
    pub(crate) fn id(&self) -> &str {
        match self {
            Outcome::Done(c) => &c.id,
            Outcome::Failed(f) => &f.id,
            Outcome::Release { id, .. } => id,
        }
    }
}

/// The most outcomes recorded in one go.
pub(crate) const BATCH: usize = 1_000;

/// Persists outcomes in batches. A backend error is retried with backoff:
/// until an outcome is stored its job stays in the running set, so its lease
/// keeps being renewed and nobody else runs it meanwhile.
pub(crate) async fn completer(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Outcome>,
    shutdown: CancellationToken,
) {
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
        drop(running);
        shared.recorded.notify_waiters();
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
            // A job no longer ours (its lease ran out and was rescued) is
            // left to its new owner.
            Outcome::Failed(f) => {
                backend.fail(&shared.name, f).await?;
            }
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
