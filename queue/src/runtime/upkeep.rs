//! The process's own upkeep beside the jobs: heartbeats that renew the
//! leases of every job in the running set, and the rescuer that hands back
//! the jobs of workers that stopped renewing theirs.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::clock::now_ms;
use crate::job::{AttemptError, JobError};
use crate::queue::{ExpiredLease, Failure, QueueBackend, QueueError};
use crate::retry::NextStep;
use crate::settings::QueueSettings;

/// Leases read per round of the rescuer.
const RESCUE_BATCH: usize = 500;

pub(crate) async fn heartbeat_once(shared: &Shared) -> Result<(), QueueError> {
    let ids = shared.running_ids();
    let mut info = shared.info.clone();
    info.running = ids.len() as u64;
    info.concurrency = shared
        .concurrency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    info.last_heartbeat_ms = now_ms();
    shared
        .backend
        .heartbeat(&info, &ids, Duration::from_millis(shared.settings.lease_ms))
        .await
}

pub(crate) async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
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

pub(crate) async fn rescue_loop(
    shared: Arc<Shared>,
    given_up: Option<super::GivenUp>,
    stop: CancellationToken,
) {
    let every = Duration::from_millis(shared.settings.rescue_interval_ms);
    let retention = Duration::from_secs(shared.settings.done_retention_secs);
    let purge_every = Duration::from_secs(60);
    let mut last_purge = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match rescue(shared.backend.as_ref(), &shared.settings, given_up.as_ref()).await {
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

/// Hands back the jobs whose lease ran out, each through its kind's retry
/// policy as a failed attempt of class `lost`: the same backoff and jitter
/// as any failure (a job that kills its worker does not come straight back
/// to kill the next), the dead set once out of attempts — then `given_up`
/// is told. Each write is fenced by the lease it read. Returns how many it
/// recorded.
pub(crate) async fn rescue(
    backend: &dyn QueueBackend,
    settings: &QueueSettings,
    given_up: Option<&super::GivenUp>,
) -> Result<u64, QueueError> {
    let mut recorded = 0;
    loop {
        let expired = backend.expired(RESCUE_BATCH).await?;
        let mut this_round = 0;
        for lease in &expired {
            let failure = lost(lease, settings, now_ms());
            if backend.fail(&lease.owner, &failure).await? {
                this_round += 1;
                if failure.retry_at_ms.is_none()
                    && let Some(hook) = given_up
                {
                    hook(lease.clone()).await;
                }
            }
        }
        recorded += this_round;
        // A full round that changed nothing would only read the same leases
        // again (their workers renewed meanwhile).
        if expired.len() < RESCUE_BATCH || this_round == 0 {
            return Ok(recorded);
        }
    }
}

/// The failure the rescuer records for a lost lease.
pub(crate) fn lost(lease: &ExpiredLease, settings: &QueueSettings, now: i64) -> Failure {
    let message = format!(
        "worker {} stopped renewing its lease (killed, crashed or cut off); job handed back",
        lease.owner
    );
    let error = JobError::transient(message.clone());
    let step = settings.kind(&lease.kind).retry_policy().next_step(
        lease.attempts,
        lease.max_attempts,
        &error,
    );
    Failure {
        id: lease.id.clone(),
        error: AttemptError {
            attempt: lease.attempts,
            at_ms: now,
            class: "lost".into(),
            message,
        },
        retry_at_ms: match step {
            NextStep::RetryIn(d) => Some(now + d.as_millis() as i64),
            NextStep::Dead => None,
        },
        lease_expires_at_ms: Some(lease.lease_expires_at_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(attempts: u32, max_attempts: u32) -> ExpiredLease {
        ExpiredLease {
            id: "j".into(),
            kind: "k".into(),
            owner: "w-1".into(),
            attempts,
            max_attempts,
            lease_expires_at_ms: 1_000,
        }
    }

    #[test]
    fn lost_leases_follow_the_kinds_retry_policy() {
        let mut settings = QueueSettings::default();
        settings.defaults.backoff_base_ms = 1_000;
        settings.defaults.jitter = 0.0;
        let f = lost(&lease(2, 5), &settings, 10_000);
        assert_eq!(
            f.retry_at_ms,
            Some(12_000),
            "base × 2 after the 2nd attempt"
        );
        assert_eq!(
            f.lease_expires_at_ms,
            Some(1_000),
            "fenced by the lease read"
        );
        assert_eq!((f.error.attempt, f.error.class.as_str()), (2, "lost"));
        assert!(f.error.message.starts_with("worker w-1 stopped renewing"));
        assert_eq!(
            lost(&lease(5, 5), &settings, 10_000).retry_at_ms,
            None,
            "out of attempts: dead"
        );
    }
}
