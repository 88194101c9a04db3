//! A kind's slots, resized live when an operator scales it (`dossier
//! queues scale`): each worker reads the scales every [`CONTROLS_REFRESH`]
//! and gives the kind that many slots, or its configured concurrency once
//! the scale is dropped. Growing adds slots at once; shrinking takes slots
//! back as running jobs give them up (a running job is never cut short).
//!
//! [`CONTROLS_REFRESH`]: super::CONTROLS_REFRESH

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::backend::KindEnv;
use crate::job::{MAX_CONCURRENCY, Scale};

/// How many slots a kind should have, and how many it still has to give
/// back after a shrink.
pub(crate) struct SlotLimit {
    state: Mutex<LimitState>,
    owed: Notify,
}

struct LimitState {
    target: usize,
    debt: usize,
}

impl SlotLimit {
    pub(crate) fn new(target: usize) -> SlotLimit {
        SlotLimit {
            state: Mutex::new(LimitState { target, debt: 0 }),
            owed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn target(&self) -> usize {
        self.lock().target
    }

    /// Makes `slots` hold `want` slots in all; whether that changed it.
    pub(crate) fn resize(&self, slots: &Semaphore, want: usize) -> bool {
        let mut s = self.lock();
        if want == s.target {
            return false;
        }
        if want > s.target {
            // Slots still owed from a shrink are forgiven first.
            let grow = want - s.target;
            let forgiven = grow.min(s.debt);
            s.debt -= forgiven;
            slots.add_permits(grow - forgiven);
        } else {
            s.debt += s.target - want;
            self.owed.notify_one();
        }
        s.target = want;
        true
    }

    /// A free slot, kept (forgotten) while a shrink is owed, else given back.
    fn take(&self, permit: OwnedSemaphorePermit) {
        let mut s = self.lock();
        if s.debt > 0 {
            s.debt -= 1;
            permit.forget();
        }
    }

    fn owes(&self) -> bool {
        self.lock().debt > 0
    }
}

/// Takes back, as they come free, the slots a shrink owes, until `stop`.
pub(crate) async fn absorb(env: Arc<KindEnv>, stop: CancellationToken) {
    loop {
        while !env.limit.owes() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = env.limit.owed.notified() => {}
            }
        }
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = env.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        env.limit.take(permit);
    }
}

/// The slots `kind` should have under `scales`, `configured` unless scaled.
pub(crate) fn wanted(kind: &str, configured: u32, scales: &[Scale]) -> u32 {
    scales
        .iter()
        .find(|s| s.kind == kind)
        .map_or(configured, |s| s.concurrency)
        .clamp(1, MAX_CONCURRENCY)
}

/// Each kind's slots now, for the heartbeat (`dossier workers`).
pub(crate) fn snapshot(envs: &[Arc<KindEnv>]) -> BTreeMap<String, u32> {
    envs.iter()
        .map(|e| (e.kind.to_string(), e.limit.target() as u32))
        .collect()
}

/// Reads the operators' controls every [`super::CONTROLS_REFRESH`] until
/// `stop`: the paused kinds (for the fetch loops) and the scales (applied
/// to the kinds' slots here). One loop, so the two reads share a tick.
pub(crate) async fn controls_loop(
    shared: Arc<Shared>,
    envs: Vec<Arc<KindEnv>>,
    stop: CancellationToken,
) {
    let mut pauses = Outage::new("the paused kinds; the last state holds");
    let mut scales = Outage::new("the kinds' scales; their slots stay");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(super::CONTROLS_REFRESH) => {}
        }
        pauses.check(shared.pauses.refresh(shared.backend.as_ref()).await);
        let Some(scales) = scales.check(shared.backend.scales().await) else {
            continue;
        };
        let mut changed = false;
        for env in &envs {
            let want = wanted(&env.kind, env.settings.concurrency, &scales) as usize;
            if env.limit.resize(&env.slots, want) {
                changed = true;
                tracing::info!(kind = %env.kind, slots = want, "the kind's slots changed");
            }
        }
        if changed {
            *shared.concurrency.lock().unwrap_or_else(|e| e.into_inner()) = snapshot(&envs);
        }
    }
}

/// A read that may fail twice a second for as long as the queue is down:
/// said once when it starts failing and once when it reads again.
struct Outage {
    what: &'static str,
    failing: bool,
}

impl Outage {
    fn new(what: &'static str) -> Outage {
        Outage {
            what,
            failing: false,
        }
    }

    fn check<T>(&mut self, read: Result<T, crate::queue::QueueError>) -> Option<T> {
        match read {
            Ok(v) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("reading {} again", self.what);
                }
                Some(v)
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(error = %e, "reading {} failed", self.what);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn growing_is_at_once_and_shrinking_waits_for_running_jobs() {
        let slots = Arc::new(Semaphore::new(4));
        let limit = SlotLimit::new(4);
        // Three running jobs hold three slots.
        let running: Vec<_> = (0..3)
            .map(|_| slots.clone().try_acquire_owned().expect("free"))
            .collect();
        assert!(limit.resize(&slots, 1));
        assert!(!limit.resize(&slots, 1), "no change");
        // The free slot is taken back at once, two more as jobs finish.
        limit.take(slots.clone().try_acquire_owned().expect("free"));
        assert_eq!(slots.available_permits(), 0);
        for p in running {
            p.forget();
            slots.add_permits(1);
            if limit.owes() {
                limit.take(slots.clone().try_acquire_owned().expect("free"));
            }
        }
        assert_eq!(slots.available_permits(), 1, "one slot left");
        assert!(!limit.owes());
        // Growing adds slots at once, forgiving any debt first.
        assert!(limit.resize(&slots, 3));
        assert_eq!(slots.available_permits(), 3);
        let held = slots.clone().try_acquire_many_owned(3).expect("three");
        assert!(limit.resize(&slots, 1));
        assert!(limit.resize(&slots, 2), "half the shrink forgiven");
        drop(held);
        limit.take(slots.clone().try_acquire_owned().expect("free"));
        assert_eq!(slots.available_permits(), 2);
        assert!(!limit.owes());
        // A permit taken when nothing is owed goes back.
        limit.take(slots.clone().try_acquire_owned().expect("free"));
        assert_eq!(slots.available_permits(), 2);
    }
}
