//! Request quotas shared by every worker process: a sliding-window log per
//! provider, counted where the setting `sirene.quota_store` says — the
//! business database ([`DatabaseQuota`], PostgreSQL or SQLite: every
//! process that uses the database counts together, whatever carries the
//! queue) or a Redis server ([`RedisQuota`]). [`LocalQuota`] counts in one
//! process's memory, for tests and one-off tools.
//!
//! Waiting for quota happens before a request and inside one attempt: it
//! never counts as a failed attempt.

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

/// Takes one slot if the window has one; otherwise says how long until one frees.
#[async_trait::async_trait]
pub trait QuotaStore: Send + Sync {
    async fn try_take(
        &self,
        name: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Option<Duration>, QuotaError>;
}

/// One process's count: for tests and tools that run alone.
#[derive(Default)]
pub struct LocalQuota {
    windows: Mutex<HashMap<String, VecDeque<i64>>>,
}

#[async_trait::async_trait]
impl QuotaStore for LocalQuota {
    async fn try_take(
        &self,
        name: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Option<Duration>, QuotaError> {
        let now = now_ms();
        let window_ms = window.as_millis() as i64;
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let log = windows.entry(name.to_string()).or_default();
        while log.front().is_some_and(|&t| t <= now - window_ms) {
            log.pop_front();
        }
        let verdict = Window {
            now_ms: now,
            taken: log.len() as i64,
            oldest_ms: log.front().copied(),
        }
        .verdict(limit, window_ms);
        if verdict.is_none() {
            log.push_back(now);
        }
        Ok(verdict)
    }
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
    fn verdict(&self, limit: u32, window_ms: i64) -> Option<Duration> {
        if self.taken < i64::from(limit) {
            return None;
        }
        let oldest = self.oldest_ms.unwrap_or(self.now_ms);
        Some(Duration::from_millis(
            (oldest + window_ms - self.now_ms).max(1) as u64,
        ))
    }
}

/// Waits for a slot, up to a limit.
#[derive(Clone)]
pub struct Quota {
    store: Arc<dyn QuotaStore>,
}

impl Quota {
    pub fn new(store: Arc<dyn QuotaStore>) -> Quota {
        Quota { store }
    }

    pub fn local() -> Quota {
        Quota::new(Arc::new(LocalQuota::default()))
    }

    /// Takes a slot of `name`, sleeping while the window is full; gives up
    /// (`WaitTooLong`) when the next slot is further than `max_wait`.
    ///
    /// The window is stretched by 5% (at least 20 ms): requests leave at the
    /// quota's pace but reach the registry with network jitter, and the
    /// registry counts arrivals.
    pub async fn acquire(
        &self,
        name: &str,
        limit: u32,
        window: Duration,
        max_wait: Duration,
    ) -> Result<(), QuotaError> {
        let margin = (window / 20).max(Duration::from_millis(20));
        let window = window + margin;
        loop {
            match self.store.try_take(name, limit, window).await? {
                None => return Ok(()),
                Some(wait) if wait > max_wait => return Err(QuotaError::WaitTooLong(wait)),
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
        for _ in 0..3 {
            assert!(q.try_take("p", 3, w).await.expect("ok").is_none());
        }
        let wait = q.try_take("p", 3, w).await.expect("ok").expect("full");
        assert!(wait <= w && wait > Duration::from_millis(400), "{wait:?}");
        assert!(
            q.try_take("other", 3, w).await.expect("ok").is_none(),
            "per provider"
        );
    }

    #[tokio::test]
    async fn acquire_gives_up_beyond_max_wait() {
        let quota = Quota::local();
        let w = Duration::from_secs(60);
        quota
            .acquire("p", 1, w, Duration::ZERO)
            .await
            .expect("first is free");
        assert!(matches!(
            quota.acquire("p", 1, w, Duration::from_secs(1)).await,
            Err(QuotaError::WaitTooLong(_))
        ));
    }
}
