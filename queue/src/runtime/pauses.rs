//! Which kinds are paused, as this process last read them from the queue
//! (every [`CONTROLS_REFRESH`], so a pause reaches every worker within a
//! second). A fetch loop of a paused kind waits here instead of fetching;
//! the kind's running jobs finish, and pushes and schedules still enqueue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::queue::{QueueBackend, QueueError};

/// How often each worker reads the paused kinds.
pub const CONTROLS_REFRESH: Duration = Duration::from_millis(500);

type Paused = Arc<HashSet<String>>;

pub(crate) struct PauseBoard {
    tx: watch::Sender<Paused>,
}

impl PauseBoard {
    pub(crate) fn new() -> PauseBoard {
        PauseBoard {
            tx: watch::Sender::new(Arc::default()),
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Paused> {
        self.tx.subscribe()
    }

    /// Reads the paused kinds; the fetch loops hear of a change only.
    /// While the queue does not answer, the last state holds.
    pub(crate) async fn refresh(&self, backend: &dyn QueueBackend) -> Result<(), QueueError> {
        let now: HashSet<String> = backend
            .paused()
            .await?
            .into_iter()
            .map(|p| p.kind)
            .collect();
        self.tx.send_if_modified(|current| {
            if **current == now {
                false
            } else {
                *current = Arc::new(now);
                true
            }
        });
        Ok(())
    }
}

/// Waits while `kind` is paused. `false` when `stop` came first.
pub(crate) async fn wait_while_paused(
    board: &mut watch::Receiver<Paused>,
    kind: &str,
    stop: &CancellationToken,
) -> bool {
    loop {
        if !board.borrow_and_update().contains(kind) {
            return true;
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            changed = board.changed() => if changed.is_err() { return false },
        }
    }
}

pub(crate) fn is_paused(board: &watch::Receiver<Paused>, kind: &str) -> bool {
    board.borrow().contains(kind)
}
