//! The feeder: per kind, loops that lease jobs from the queue in batches as
//! slots free up and hand them to the kind's apalis backend.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::backend::KindEnv;
use super::completer::Outcome;
use crate::clock::now_ms;
use crate::job::LeasedJob;

/// How a kind's slots are fetched: how many fetch loops share them, and the
/// most each fetch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchPlan {
    pub(crate) fetchers: usize,
    pub(crate) batch: usize,
}

impl FetchPlan {
    /// `loops` fetch loops (one alone leaves slots idle during each round
    /// trip), each taking at most half of its share of the slots, so that
    /// batches overlap: while some run, others are being fetched.
    pub(crate) fn new(fetch_batch: u32, concurrency: u32, loops: usize) -> FetchPlan {
        let concurrency = concurrency.max(1) as usize;
        let fetchers = loops.clamp(1, concurrency);
        FetchPlan {
            fetchers,
            batch: (fetch_batch.max(1) as usize).min(concurrency.div_ceil(2 * fetchers)),
        }
    }
}

pub(crate) struct FetchContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) env: Arc<KindEnv>,
    pub(crate) batch: usize,
    pub(crate) soft_stop: CancellationToken,
    /// To the kind's apalis backend.
    pub(crate) leased: mpsc::Sender<LeasedJob>,
}

/// How long a fetcher waits for more free slots before fetching a partial
/// batch: long enough to batch under load, too short to notice when idle
/// (an idle pool has every slot free and fetches at once).
const BATCH_GATHER: Duration = Duration::from_millis(2);

/// How often a fetcher that gives way to interactive requests looks again
/// (its running jobs may have finished meanwhile).
const YIELD_RECHECK: Duration = Duration::from_millis(20);

pub(crate) async fn fetch_loop(ctx: FetchContext) {
    let shared = &ctx.shared;
    let q = &shared.settings;
    let kind = &ctx.env.kind;
    let semaphore = &ctx.env.slots;
    let wake = shared.backend.wakers().get(kind);
    let lease = Duration::from_millis(q.lease_ms);
    let poll = Duration::from_millis(q.poll_interval_ms);
    let target = ctx.batch;
    let mut error_backoff = Duration::from_millis(100);
    let mut pauses = shared.pauses.subscribe();
    loop {
        if !super::pauses::wait_while_paused(&mut pauses, kind, &ctx.soft_stop).await {
            return;
        }
        let first = tokio::select! {
            _ = ctx.soft_stop.cancelled() => return,
            p = semaphore.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        // While the hooks answer requests, a quarter of the slots
        // (crate::interactive); the permit is held meanwhile, so the
        // check below counts this fetch too.
        let slots = ctx.env.limit.target();
        let share = crate::interactive::background_share(slots);
        while crate::interactive::busy()
            && slots.saturating_sub(semaphore.available_permits()) > share
        {
            tokio::select! {
                _ = ctx.soft_stop.cancelled() => return,
                _ = crate::interactive::idle_or(YIELD_RECHECK) => {}
            }
        }
        let target = if crate::interactive::busy() {
            target.min(share + 1 - (slots.saturating_sub(semaphore.available_permits())).min(share))
        } else {
            target
        };
        let mut permits = vec![first];
        let gather_until = Instant::now() + BATCH_GATHER;
        while permits.len() < target {
            if let Ok(p) = semaphore.clone().try_acquire_owned() {
                permits.push(p);
                continue;
            }
            tokio::select! {
                p = semaphore.clone().acquire_owned() => match p {
                    Ok(p) => permits.push(p),
                    Err(_) => return,
                },
                _ = tokio::time::sleep_until(gather_until) => break,
            }
        }
        // Paused while the slots were gathered: fetch nothing.
        if super::pauses::is_paused(&pauses, kind) {
            continue;
        }
        // Slots are freed when a job is decided, before its outcome is
        // recorded: this bounds what waits for the completer.
        if !shared.wait_for_room(&ctx.soft_stop, poll).await {
            return;
        }
        let asked = permits.len();
        match shared.backend.fetch(kind, &shared.name, asked, lease).await {
            Ok(jobs) => {
                error_backoff = Duration::from_millis(100);
                let got = jobs.len();
                {
                    let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
                    running.extend(jobs.iter().map(|j| j.id.clone()));
                }
                for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
                    // The slot now travels with the job; whoever decides
                    // the job gives it back (KindEnv::settle).
                    permit.forget();
                    // Never waits: the channel holds as many jobs as the
                    // kind has slots. It only fails once the pool is gone.
                    if let Err(mpsc::error::SendError(job)) = ctx.leased.send(job).await {
                        ctx.env.settle(Outcome::Release {
                            id: job.id,
                            run_at_ms: now_ms(),
                        });
                    }
                }
                drop(permits);
                if got == asked {
                    // Likely more where these came from: make sure a sibling
                    // fetch loop that sleeps joins in.
                    wake.notify_one();
                } else {
                    // The queue is drained for now: sleep until a push wakes
                    // us or the poll interval passes (scheduled jobs, other
                    // processes' SQLite pushes).
                    tokio::select! {
                        _ = ctx.soft_stop.cancelled() => return,
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
            }
            Err(e) => {
                drop(permits);
                tracing::warn!(kind = %kind, error = %e, "fetch failed; retrying in {error_backoff:?}");
                tokio::select! {
                    _ = ctx.soft_stop.cancelled() => return,
                    _ = tokio::time::sleep(error_backoff) => {}
                }
                error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_plan_overlaps_batches() {
        assert_eq!(
            FetchPlan::new(100, 1, 2),
            FetchPlan {
                fetchers: 1,
                batch: 1
            }
        );
        assert_eq!(
            FetchPlan::new(100, 8, 2),
            FetchPlan {
                fetchers: 2,
                batch: 2
            }
        );
        assert_eq!(
            FetchPlan::new(100, 64, 2),
            FetchPlan {
                fetchers: 2,
                batch: 16
            }
        );
        assert_eq!(
            FetchPlan::new(100, 64, 1),
            FetchPlan {
                fetchers: 1,
                batch: 32
            }
        );
        assert_eq!(
            FetchPlan::new(100, 1000, 2),
            FetchPlan {
                fetchers: 2,
                batch: 100
            }
        );
    }
}
