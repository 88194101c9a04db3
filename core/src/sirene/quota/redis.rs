//! The quota log in a Redis sorted set per provider.

use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;

use super::{Ask, HELD_BACK, Priority, QuotaError, QuotaStore, WANT_HOLD_MS};

/// Every process on one Redis counts in the same sorted set.
pub struct RedisQuota {
    conn: ConnectionManager,
    prefix: String,
    script: Script,
    answered: Script,
}

/// Sliding-window log, one member per slot (its waiter, scored by its
/// stamp): drop entries older than the window, take a slot if
/// fewer than `limit` remain, else answer the wait until the oldest leaves.
/// Redis's own clock (`TIME`) is used so that machines' clocks do not matter.
/// The interactive waiters' wants are a second sorted set (KEYS[2]: waiter
/// by the time its want lapses): a bulk ask (ARGV[3] `b`) leaves one slot
/// free per live want, and is held back when only those are free.
const TAKE: &str = r#"
local key, wants = KEYS[1], KEYS[2]
local limit, window, priority, waiter, hold, held =
  tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', wants, '-inf', now)
local reserved = 0
if priority == 'b' then reserved = redis.call('ZCARD', wants) end
local taken = redis.call('ZCARD', key)
if taken + reserved < limit then
  redis.call('ZADD', key, now, waiter)
  redis.call('PEXPIRE', key, window)
  if priority == 'i' then redis.call('ZREM', wants, waiter) end
  return -1
end
if taken < limit then return held end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local wait = math.max(tonumber(oldest[2]) + window - now, 1)
if priority == 'i' then
  redis.call('ZADD', wants, now + wait + hold, waiter)
  redis.call('PEXPIRE', wants, wait + hold)
end
return wait
"#;

/// A slot's request was answered: its stamp becomes now (on Redis's clock).
const ANSWERED: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"#;

impl RedisQuota {
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisQuota, QuotaError> {
        let client = ::redis::Client::open(url)?;
        Ok(RedisQuota {
            conn: ConnectionManager::new(client).await?,
            prefix: prefix.to_string(),
            script: Script::new(TAKE),
            answered: Script::new(ANSWERED),
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
        ask: Ask<'_>,
    ) -> Result<Option<Duration>, QuotaError> {
        let mut conn = self.conn.clone();
        let wait: i64 = self
            .script
            .key(format!("{}:quota:{name}", self.prefix))
            .key(format!("{}:quota:{name}:wants", self.prefix))
            .arg(limit)
            .arg(window.as_millis() as u64)
            .arg(match ask.priority {
                Priority::Interactive => "i",
                Priority::Bulk => "b",
            })
            .arg(ask.waiter)
            .arg(WANT_HOLD_MS)
            .arg(HELD_BACK.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok((wait >= 0).then(|| Duration::from_millis(wait as u64)))
    }

    async fn answered(&self, name: &str, waiter: &str, window: Duration) -> Result<(), QuotaError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .answered
            .key(format!("{}:quota:{name}", self.prefix))
            .arg(waiter)
            .arg(window.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
