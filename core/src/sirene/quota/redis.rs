//! The quota log in a Redis sorted set per provider.

use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;

use super::{QuotaError, QuotaStore};

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
        let client = ::redis::Client::open(url)?;
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
