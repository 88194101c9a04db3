//! Interactive requests first: the hooks count the requests they are
//! answering, and this process's background work gives way while there
//! are any.
//!
//! One `dossier-worker run` serves the hooks and runs the jobs on the same
//! cores and the same database. Left alone, an import's 10,000 onboarding
//! jobs take the CPU and the database from a client created through the
//! hook meanwhile (its answer went from 0.25 s to 2.2 s, issue 24). So
//! while a request is in flight each job kind runs at most
//! [`background_share`] of its slots; the rest of its jobs wait in the
//! queue, and the full concurrency comes back once the requests stop. On
//! SQLite the same rule orders the writers ([`crate::write_gate`]).
//!
//! The count is per process: a worker with no hooks never slows down, and
//! hooks served by another process do not slow this one.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long after its last request the process still counts as busy: the
/// gaps between one caller's requests do not flip background work back to
/// full speed and down again.
pub const LINGER: Duration = Duration::from_secs(1);

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static IDLE: Notify = Notify::const_new();
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
/// When the last request ended, in ms since `EPOCH` (0: never).
static LAST_END_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// How long the process stays busy if no request comes.
fn lingering() -> Duration {
    let last = LAST_END_MS.load(Ordering::Acquire);
    if last == 0 {
        return Duration::ZERO;
    }
    let since = Duration::from_millis(now_ms().saturating_sub(last));
    LINGER.saturating_sub(since)
}

/// An interactive request being answered; dropping it ends it.
#[must_use = "the request counts as in flight until this is dropped"]
pub struct InFlight(());

impl Drop for InFlight {
    fn drop(&mut self) {
        LAST_END_MS.store(now_ms().max(1), Ordering::Release);
        if IN_FLIGHT.fetch_sub(1, Ordering::AcqRel) == 1 {
            IDLE.notify_waiters();
        }
    }
}

/// Counts a request in flight until the returned guard is dropped.
pub fn begin() -> InFlight {
    IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
    InFlight(())
}

/// Whether a request is being answered now, or ended less than
/// [`LINGER`] ago.
pub fn busy() -> bool {
    IN_FLIGHT.load(Ordering::Acquire) > 0 || !lingering().is_zero()
}

/// The slots of a kind with `concurrency` that may run while requests are
/// in flight: a quarter, at least one, so background work slows but never
/// stops.
pub fn background_share(concurrency: usize) -> usize {
    (concurrency / 4).max(1)
}

/// Waits until the process is no longer [`busy`], or `at_most`.
pub async fn idle_or(at_most: Duration) {
    let deadline = tokio::time::Instant::now() + at_most;
    loop {
        let idle = IDLE.notified();
        if IN_FLIGHT.load(Ordering::Acquire) == 0 {
            // Only the linger is left: sleep it off (or until the deadline).
            let until = (tokio::time::Instant::now() + lingering()).min(deadline);
            tokio::time::sleep_until(until).await;
            if !busy() || tokio::time::Instant::now() >= deadline {
                return;
            }
            continue;
        }
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_in_flight_are_counted_and_their_end_wakes_waiters() {
        assert!(!busy());
        // Idle: no wait at all.
        tokio::time::timeout(Duration::from_millis(100), idle_or(Duration::from_secs(30)))
            .await
            .expect("idle");
        let a = begin();
        let b = begin();
        assert!(busy());
        let waiter = tokio::spawn(idle_or(Duration::from_secs(30)));
        tokio::task::yield_now().await;
        let ended = Instant::now();
        drop(a);
        assert!(busy(), "one request is still in flight");
        drop(b);
        assert!(busy(), "busy for a while after the last request");
        tokio::time::timeout(LINGER * 3, waiter)
            .await
            .expect("idle once the linger is over")
            .expect("waiter");
        assert!(ended.elapsed() >= LINGER - Duration::from_millis(50));
        assert!(!busy());
        // A wait is bounded by its own limit.
        let _c = begin();
        let t = Instant::now();
        idle_or(Duration::from_millis(50)).await;
        assert!(t.elapsed() < LINGER);
    }

    #[test]
    fn a_quarter_of_the_slots_at_least_one() {
        assert_eq!(background_share(1), 1);
        assert_eq!(background_share(8), 2);
        assert_eq!(background_share(32), 8);
    }
}
