//! Request quotas shared by every worker process: a sliding-window log per
//! provider, in Redis when the queue is on Redis (so all machines count
//! together), in process memory on the embedded deployment.
//!
//! Waiting for quota happens before a request and inside one attempt: it
//! never counts as a failed attempt.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::clock::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The next free slot is further away than the caller accepts.
    #[error("next free slot in {0:?}")]
    WaitTooLong(Duration),
    #[error("quota store: {0}")]
    Store(#[from] redis::RedisError),
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

/// One process's count (the embedded deployment runs one worker process).
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
        if log.len() < limit as usize {
            log.push_back(now);
            return Ok(None);
        }
        let oldest = log.front().copied().unwrap_or(now);
        Ok(Some(Duration::from_millis(
            (oldest + window_ms - now).max(1) as u64,
        )))
    }
}

/// Every process on one Redis counts in the same sorted set.
pub struct RedisQuota {
    conn: ConnectionManager,
    prefix: String,
    script: Script,
}

/// Sliding-window log: drop entries older than the window, take a slot if
/// fewer than `limit` remain, else answer the wait until the oldest leaves.
/// Redis's own clock (`TIME`) is used so that machines' clocks do not matter.
const TAKE: &str = r#"
local key, limit, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, now .. '-' .. t[2] .. '-' .. redis.call('INCR', key .. ':seq'))
  redis.call('PEXPIRE', key, window)
  redis.call('PEXPIRE', key .. ':seq', window)
  return -1
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return math.max(tonumber(oldest[2]) + window - now, 1)
"#;

impl RedisQuota {
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisQuota, QuotaError> {
        let client = redis::Client::open(url)?;
        Ok(RedisQuota {
            conn: ConnectionManager::new(client).await?,
            prefix: prefix.to_string(),
            script: Script::new(TAKE),
        })
    }
}

#[async_trait::async_trait]
impl QuotaStore for RedisQuota {
    async fn try_take(
        &self,
        name: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Option<Duration>, QuotaError> {
        let mut conn = self.conn.clone();
        let wait: i64 = self
            .script
            .key(format!("{}:quota:{name}", self.prefix))
            .arg(limit)
            .arg(window.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok((wait >= 0).then(|| Duration::from_millis(wait as u64)))
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
