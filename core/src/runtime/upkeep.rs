//! The process's own upkeep beside the jobs: heartbeats that renew the
//! leases of every job in the running set, and the rescuer that hands back
//! the jobs of workers that stopped renewing theirs.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::clock::now_ms;
use crate::queue::QueueError;

pub(crate) async fn heartbeat_once(shared: &Shared) -> Result<(), QueueError> {
    let ids = shared.running_ids();
    let mut info = shared.info.clone();
    info.running = ids.len() as u64;
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

pub(crate) async fn rescue_loop(shared: Arc<Shared>, stop: CancellationToken) {
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
