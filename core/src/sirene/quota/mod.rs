//! Request quotas shared by every worker process: a sliding-window log per
//! provider, counted where the setting `sirene.quota_store` says — the
//! business database ([`DatabaseQuota`], PostgreSQL or SQLite: every
//! process that uses the database counts together, whatever carries the
//! queue) or a Redis server ([`RedisQuota`]). [`LocalQuota`] counts in one
//! process's memory, for tests and one-off tools.
//!
//! Waiting for quota happens before a request and inside one attempt: it
//! never counts as a failed attempt.
//!
//! A slot counts from when it is taken until one window after the answer
//! ([`Slot::answered`] re-stamps it): the registry counts arrivals, and a
//! request arrives somewhere between the two. Stamping only at the take
//! needs a margin wider than any delay on the way, and one cold connection
//! (a worker's first request) is longer than any margin worth keeping: the
//! next window's requests then arrive in the same second as the delayed
//! ones. Answers on loopback cost the quota nothing; a registry answering
//! in 100 ms holds each slot 10% longer, and never sees more than its quota.
//!
//! In one process, bulk lookups ask the store one at a time
//! ([`Quota::acquire`]): when a slot frees, the process's next bulk lookup
//! takes it, instead of every waiting lookup of every process racing for
//! it (dozens of store transactions for one slot, which on a busy database
//! delay the one that wins, and waste the quota).
//!
//! Interactive lookups (a client created by hand) come before bulk ones (an
//! import's): an interactive lookup that finds the window full says so
//! (a *want*, kept in the same store until it takes a slot), and while any
//! want is live no bulk lookup takes a slot of that provider. So the next
//! free slot goes to the client created by hand, however many of an
//! import's lookups wait. Each live want reserves one slot of the window:
//! bulk lookups take the others, so when no one created by hand waits the
//! import has the whole quota.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::now_ms;

mod database;
mod redis;

pub use database::DatabaseQuota;
pub use redis::RedisQuota;

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The next free slot is further away than the caller accepts.
    #[error("next free slot in {0:?}")]
    WaitTooLong(Duration),
    #[error("quota store (Redis): {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("quota store (database): {0}")]
    Database(#[from] sqlx::Error),
}

/// Who asks for a slot: interactive lookups are served before bulk ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A client created by hand, through the hook or the command line.
    Interactive,
    /// One of an import's clients.
    Bulk,
}

/// How long a want outlives the wait its waiter was told, so that it stays
/// live while the waiter sleeps and wakes, and goes if the waiter died.
pub(crate) const WANT_HOLD_MS: i64 = 1_000;

/// How long a bulk lookup held back by a want waits before it asks again:
/// the interactive waiter takes its slot within that time.
pub(crate) const HELD_BACK: Duration = Duration::from_millis(50);

/// One ask for a slot: by whom (`waiter`, unique per [`Quota::acquire`]
/// call) and with which priority.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub waiter: &'a str,
    pub priority: Priority,
}

/// Takes one slot if the window has one and no interactive waiter comes
/// first; otherwise says how long to wait before asking again.
#[async_trait::async_trait]
pub trait QuotaStore: Send + Sync {
    /// On success the slot is the waiter's (`ask.waiter`), stamped now.
    async fn try_take(
        &self,
        name: &str,
        limit: u32,
        window: Duration,
        ask: Ask<'_>,
    ) -> Result<Option<Duration>, QuotaError>;

    /// The request of `waiter`'s slot was answered: the slot now counts from
    /// now (added again if it already left the window: the request was
    /// slower than the window, and may have arrived just now).
    async fn answered(&self, name: &str, waiter: &str, window: Duration) -> Result<(), QuotaError>;
}

/// One process's count: for tests and tools that run alone.
#[derive(Default)]
pub struct LocalQuota {
    windows: Mutex<HashMap<String, LocalWindow>>,
}

#[derive(Default)]
struct LocalWindow {
    /// Each slot's stamp and waiter, oldest first.
    log: VecDeque<(i64, String)>,
    /// Interactive waiters and until when their want holds.
    wants: HashMap<String, i64>,
}

#[async_trait::async_trait]
impl QuotaStore for LocalQuota {
    async fn try_take(
        &self,
        name: &str,
        limit: u32,
        window: Duration,
        ask: Ask<'_>,
    ) -> Result<Option<Duration>, QuotaError> {
        let now = now_ms();
        let window_ms = window.as_millis() as i64;
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.entry(name.to_string()).or_default();
        while w.log.front().is_some_and(|(t, _)| *t <= now - window_ms) {
            w.log.pop_front();
        }
        w.wants.retain(|_, until| *until > now);
        let verdict = Window {
            now_ms: now,
            taken: w.log.len() as i64,
            oldest_ms: w.log.front().map(|(t, _)| *t),
        }
        .verdict(limit, window_ms, reserved(ask, w.wants.len() as i64));
        match verdict {
            None => {
                w.log.push_back((now, ask.waiter.to_string()));
                w.wants.remove(ask.waiter);
            }
            Some(wait) if ask.priority == Priority::Interactive => {
                w.wants
                    .insert(ask.waiter.to_string(), want_until(now, wait));
            }
            Some(_) => {}
        }
        Ok(verdict)
    }

    async fn answered(
        &self,
        name: &str,
        waiter: &str,
        _window: Duration,
    ) -> Result<(), QuotaError> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.entry(name.to_string()).or_default();
        w.log.retain(|(_, who)| who != waiter);
        // Every stamp is of an earlier now: the log stays oldest first.
        w.log.push_back((now_ms(), waiter.to_string()));
        Ok(())
    }
}

/// The slots an ask must leave free: one per live want, for a bulk ask.
pub(crate) fn reserved(ask: Ask<'_>, wants: i64) -> i64 {
    match ask.priority {
        Priority::Bulk => wants,
        Priority::Interactive => 0,
    }
}

/// Until when the want of a waiter told to wait `wait` at `now` holds.
pub(crate) fn want_until(now: i64, wait: Duration) -> i64 {
    now + wait.as_millis() as i64 + WANT_HOLD_MS
}

/// What one take found in a provider's window: its slots and the oldest.
struct Window {
    now_ms: i64,
    taken: i64,
    oldest_ms: Option<i64>,
}

impl Window {
    /// `None`: a slot is free (and the caller takes it); else the wait
    /// until the oldest slot leaves the window.
    ///
    /// An ask that must leave `reserved` slots free (interactive waiters')
    /// is held back a moment when only those are free.
    fn verdict(&self, limit: u32, window_ms: i64, reserved: i64) -> Option<Duration> {
        if self.taken + reserved < i64::from(limit) {
            return None;
        }
        if self.taken < i64::from(limit) {
            return Some(HELD_BACK);
        }
        let oldest = self.oldest_ms.unwrap_or(self.now_ms);
        Some(Duration::from_millis(
            (oldest + window_ms - self.now_ms).max(1) as u64,
        ))
    }
}

/// Stamps are whole milliseconds, and a store's clock may step by one
/// between a slot's answer and the next take: the window is kept this much
/// longer.
const CLOCK_MARGIN: Duration = Duration::from_millis(10);

/// Waits for a slot, up to a limit.
#[derive(Clone)]
pub struct Quota {
    store: Arc<dyn QuotaStore>,
    /// Per provider: the turn of this process's bulk lookups to ask the
    /// store (tokio's mutex is first come, first served).
    bulk_turns: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A slot taken: say when its request was answered ([`Slot::answered`]).
/// Dropped unanswered (the lookup's future cancelled), the slot counts from
/// its take only.
#[must_use = "the slot counts from its answer: call `answered` after the request"]
pub struct Slot {
    store: Arc<dyn QuotaStore>,
    name: String,
    waiter: String,
    window: Duration,
}

impl Slot {
    /// The request was answered (or failed): the slot counts a window from
    /// now. A store that cannot be reached leaves the take's stamp, which a
    /// delayed request may then share a second with the next: it is logged.
    pub async fn answered(self) {
        if let Err(e) = self
            .store
            .answered(&self.name, &self.waiter, self.window)
            .await
        {
            tracing::warn!(provider = %self.name, error = %e, "could not re-stamp a quota slot at its answer");
        }
    }
}

impl Quota {
    pub fn new(store: Arc<dyn QuotaStore>) -> Quota {
        Quota {
            store,
            bulk_turns: Arc::default(),
        }
    }

    fn bulk_turn(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.bulk_turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(name.to_string()).or_default().clone()
    }

    pub fn local() -> Quota {
        Quota::new(Arc::new(LocalQuota::default()))
    }

    /// Takes a slot of `name`, sleeping while the window is full; gives up
    /// (`WaitTooLong`) when the slot would come later than `max_wait` from
    /// the call, waiting in line included. Bulk lookups of this process
    /// take turns; interactive ones ask at once.
    pub async fn acquire(
        &self,
        name: &str,
        limit: u32,
        window: Duration,
        max_wait: Duration,
        priority: Priority,
    ) -> Result<Slot, QuotaError> {
        let window = window + CLOCK_MARGIN;
        let deadline = tokio::time::Instant::now() + max_wait;
        let turn = match priority {
            Priority::Bulk => Some(self.bulk_turn(name)),
            Priority::Interactive => None,
        };
        // A lookup at the back of a long line would hold its worker for
        // minutes: past `max_wait` it gives its place up (the job is
        // snoozed) and the line is served by those fetched after it.
        let _turn = match &turn {
            Some(turn) => match tokio::time::timeout_at(deadline, turn.lock()).await {
                Ok(held) => Some(held),
                Err(_) => return Err(QuotaError::WaitTooLong(max_wait)),
            },
            None => None,
        };
        let waiter = uuid::Uuid::now_v7().simple().to_string();
        let ask = Ask {
            waiter: &waiter,
            priority,
        };
        loop {
            match self.store.try_take(name, limit, window, ask).await? {
                None => {
                    return Ok(Slot {
                        store: self.store.clone(),
                        name: name.to_string(),
                        waiter,
                        window,
                    });
                }
                Some(wait) if tokio::time::Instant::now() + wait > deadline => {
                    return Err(QuotaError::WaitTooLong(wait));
                }
                Some(wait) => {
                    crate::metrics::quota_waited(name, wait.as_secs_f64());
                    tokio::time::sleep(wait).await
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_window_admits_limit_then_says_how_long() {
        let q = LocalQuota::default();
        let w = Duration::from_millis(500);
        let ask = Ask {
            waiter: "a",
            priority: Priority::Bulk,
        };
        for _ in 0..3 {
            assert!(q.try_take("p", 3, w, ask).await.expect("ok").is_none());
        }
        let wait = q.try_take("p", 3, w, ask).await.expect("ok").expect("full");
        assert!(wait <= w && wait > Duration::from_millis(400), "{wait:?}");
        assert!(
            q.try_take("other", 3, w, ask).await.expect("ok").is_none(),
            "per provider"
        );
    }

    #[tokio::test]
    async fn a_waiting_interactive_lookup_takes_the_next_slot_before_bulk_ones() {
        let q = LocalQuota::default();
        let w = Duration::from_millis(200);
        let bulk = Ask {
            waiter: "import",
            priority: Priority::Bulk,
        };
        let by_hand = Ask {
            waiter: "hand",
            priority: Priority::Interactive,
        };
        assert!(q.try_take("p", 1, w, bulk).await.expect("ok").is_none());
        // Full: the interactive lookup waits, and says so.
        let wait = q
            .try_take("p", 1, w, by_hand)
            .await
            .expect("ok")
            .expect("full");
        tokio::time::sleep(wait).await;
        // The slot is free again, but it is the interactive lookup's.
        assert_eq!(
            q.try_take("p", 1, w, bulk).await.expect("ok"),
            Some(HELD_BACK),
            "held back while someone created by hand waits"
        );

        assert!(q.try_take("p", 1, w, by_hand).await.expect("ok").is_none());
        tokio::time::sleep(w).await;
        assert!(
            q.try_take("p", 1, w, bulk).await.expect("ok").is_none(),
            "no one waits: the import has the quota"
        );
    }

    #[tokio::test]
    async fn each_waiting_interactive_lookup_keeps_one_slot_the_import_takes_the_rest() {
        let q = LocalQuota::default();
        let w = Duration::from_millis(200);
        let bulk = Ask {
            waiter: "import",
            priority: Priority::Bulk,
        };
        let by_hand = Ask {
            waiter: "hand",
            priority: Priority::Interactive,
        };
        for _ in 0..2 {
            assert!(q.try_take("p", 2, w, bulk).await.expect("ok").is_none());
        }
        let wait = q
            .try_take("p", 2, w, by_hand)
            .await
            .expect("ok")
            .expect("full");
        tokio::time::sleep(wait).await;
        assert!(
            q.try_take("p", 2, w, bulk).await.expect("ok").is_none(),
            "two free, one kept: the import takes the other"
        );
        assert_eq!(
            q.try_take("p", 2, w, bulk).await.expect("ok"),
            Some(HELD_BACK)
        );
        assert!(q.try_take("p", 2, w, by_hand).await.expect("ok").is_none());
    }

    #[tokio::test]
    async fn an_answered_slot_counts_from_its_answer() {
        let q = LocalQuota::default();
        let w = Duration::from_millis(300);
        let ask = |waiter| Ask {
            waiter,
            priority: Priority::Bulk,
        };
        assert!(q.try_take("p", 1, w, ask("a")).await.expect("ok").is_none());
        tokio::time::sleep(Duration::from_millis(200)).await;
        q.answered("p", "a", w).await.expect("answered");
        let wait = q.try_take("p", 1, w, ask("b")).await.expect("ok");
        assert!(
            wait.is_some_and(|d| d > Duration::from_millis(250)),
            "a window from the answer, not from the take: {wait:?}"
        );
    }

    #[tokio::test]
    async fn bulk_lookups_of_one_process_ask_the_store_in_turn() {
        let counting = Arc::new(Counting::default());
        let quota = Quota::new(counting.clone());
        let w = Duration::from_millis(200);
        let slot = quota
            .acquire("p", 1, w, Duration::from_secs(5), Priority::Bulk)
            .await
            .expect("free");
        slot.answered().await;
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                let quota = quota.clone();
                tokio::spawn(async move {
                    quota
                        .acquire("p", 1, w, Duration::from_secs(5), Priority::Bulk)
                        .await
                        .expect("in turn")
                        .answered()
                        .await
                })
            })
            .collect();
        for task in waiting {
            task.await.expect("task");
        }
        // Each of the 8 asks when its turn comes: once told to wait, once
        // to take (the 8 racing would ask ~8 times per slot).
        let asks = counting.asks.load(std::sync::atomic::Ordering::Relaxed);
        assert!(asks <= 1 + 8 * 3, "{asks} asks for 9 slots");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_lookup_waits_in_line_no_longer_than_max_wait() {
        let quota = Quota::local();
        let w = Duration::from_millis(400);
        let max_wait = Duration::from_millis(500);
        quota
            .acquire("p", 1, w, max_wait, Priority::Bulk)
            .await
            .expect("first is free")
            .answered()
            .await;
        // One slot per 400 ms and eight in line: the last would wait ~3 s.
        let line: Vec<_> = (0..8)
            .map(|_| {
                let quota = quota.clone();
                tokio::spawn(async move {
                    let asked = std::time::Instant::now();
                    let got = quota.acquire("p", 1, w, max_wait, Priority::Bulk).await;
                    let waited = asked.elapsed();
                    if let Ok(slot) = got {
                        slot.answered().await;
                        return (true, waited);
                    }
                    (false, waited)
                })
            })
            .collect();
        let mut served = 0;
        for task in line {
            let (took, waited) = task.await.expect("task");
            served += usize::from(took);
            assert!(
                waited < max_wait + Duration::from_millis(400),
                "waited {waited:?} in line, beyond max_wait {max_wait:?}"
            );
        }
        assert!((1..8).contains(&served), "{served} of 8 served");
    }

    /// A [`LocalQuota`] that counts the asks.
    #[derive(Default)]
    struct Counting {
        inner: LocalQuota,
        asks: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl QuotaStore for Counting {
        async fn try_take(
            &self,
            name: &str,
            limit: u32,
            window: Duration,
            ask: Ask<'_>,
        ) -> Result<Option<Duration>, QuotaError> {
            self.asks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.try_take(name, limit, window, ask).await
        }

        async fn answered(
            &self,
            name: &str,
            waiter: &str,
            window: Duration,
        ) -> Result<(), QuotaError> {
            self.inner.answered(name, waiter, window).await
        }
    }

    #[tokio::test]
    async fn acquire_gives_up_beyond_max_wait() {
        let quota = Quota::local();
        let w = Duration::from_secs(60);
        quota
            .acquire("p", 1, w, Duration::ZERO, Priority::Bulk)
            .await
            .expect("first is free")
            .answered()
            .await;
        assert!(matches!(
            quota
                .acquire("p", 1, w, Duration::from_secs(1), Priority::Interactive)
                .await,
            Err(QuotaError::WaitTooLong(_))
        ));
    }
}
