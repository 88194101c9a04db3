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

/// The slots `env` should have under `scales`.
pub(crate) fn wanted(env: &KindEnv, scales: &[Scale]) -> usize {
    scales
        .iter()
        .find(|s| *s.kind == *env.kind)
        .map_or(env.settings.concurrency, |s| s.concurrency)
        .clamp(1, MAX_CONCURRENCY) as usize
}

/// Each kind's slots now, for the heartbeat (`dossier workers`).
pub(crate) fn snapshot(envs: &[Arc<KindEnv>]) -> BTreeMap<String, u32> {
    envs.iter()
        .map(|e| (e.kind.to_string(), e.limit.target() as u32))
        .collect()
}

/// Applies the scales every [`super::CONTROLS_REFRESH`], until `stop`.
pub(crate) async fn scale_loop(
    shared: Arc<Shared>,
    envs: Vec<Arc<KindEnv>>,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(super::CONTROLS_REFRESH) => {}
        }
        let scales = match shared.backend.scales().await {
            Ok(s) => {
                failing = false;
                s
            }
            // Said once per outage; the slots stay as they are.
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "reading the kinds' scales failed; their slots stay");
                }
                failing = true;
                continue;
            }
        };
        let mut changed = false;
        for env in &envs {
            let want = wanted(env, &scales);
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
