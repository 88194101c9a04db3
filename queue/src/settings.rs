//! The queue's settings (`[queue]` of the application's configuration):
//! which backend, its timings, and each job kind's concurrency, timeout and
//! retry policy.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackendKind {
    /// The jobs table of the SQLite database: no server needed.
    Sqlite,
    /// A Redis server shared by worker processes on several machines.
    Redis,
    /// The `jobs` table of a PostgreSQL database (`queue.url`, else `database.url`).
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    pub backend: QueueBackendKind,
    /// Redis URL for the `redis` backend; the `sqlite` backend uses `database.url`
    /// unless this names another SQLite file.
    pub url: Option<String>,
    /// Prefix of every Redis key, so that several deployments (or tests) share a server.
    pub prefix: String,
    /// How often an idle worker looks for due jobs (pushes from the same
    /// process, and Redis pushes from anywhere, wake it at once).
    pub poll_interval_ms: u64,
    /// How long a worker holds a job without renewing its lease before the
    /// job is handed to another worker.
    pub lease_ms: u64,
    /// How often a worker renews its leases and announces itself.
    pub heartbeat_ms: u64,
    /// How often expired leases are looked for.
    pub rescue_interval_ms: u64,
    /// On SIGTERM, how long in-flight jobs may take to finish before they
    /// are handed back to the queue.
    pub shutdown_timeout_ms: u64,
    /// How long finished jobs stay visible.
    pub done_retention_secs: u64,
    /// Most jobs taken in one fetch.
    pub fetch_batch: u32,
    /// Settings of every kind that `kinds` does not override.
    pub defaults: KindSettings,
    /// Per-kind overrides, keyed by job kind.
    pub kinds: BTreeMap<String, KindOverride>,
}

/// The settings of one job kind's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindSettings {
    /// Jobs of this kind run at once in one worker process.
    pub concurrency: u32,
    /// An attempt running longer fails with a `timeout` error (and is retried).
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub jitter: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindOverride {
    pub concurrency: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_cap_ms: Option<u64>,
    pub jitter: Option<f64>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            backend: QueueBackendKind::Sqlite,
            url: None,
            prefix: "dossier".into(),
            poll_interval_ms: 200,
            lease_ms: 30_000,
            heartbeat_ms: 5_000,
            rescue_interval_ms: 5_000,
            shutdown_timeout_ms: 30_000,
            done_retention_secs: 7 * 24 * 3600,
            fetch_batch: 100,
            defaults: KindSettings::default(),
            kinds: BTreeMap::new(),
        }
    }
}

impl Default for KindSettings {
    fn default() -> Self {
        let retry = RetryPolicy::default();
        KindSettings {
            concurrency: 8,
            timeout_ms: 300_000,
            max_attempts: retry.max_attempts,
            backoff_base_ms: retry.backoff_base_ms,
            backoff_cap_ms: retry.backoff_cap_ms,
            jitter: retry.jitter,
        }
    }
}

impl KindSettings {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff_base_ms: self.backoff_base_ms,
            backoff_cap_ms: self.backoff_cap_ms,
            jitter: self.jitter,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl QueueSettings {
    /// The effective settings of one kind: its overrides over the defaults.
    pub fn kind(&self, kind: &str) -> KindSettings {
        let d = &self.defaults;
        match self.kinds.get(kind) {
            None => d.clone(),
            Some(o) => KindSettings {
                concurrency: o.concurrency.unwrap_or(d.concurrency),
                timeout_ms: o.timeout_ms.unwrap_or(d.timeout_ms),
                max_attempts: o.max_attempts.unwrap_or(d.max_attempts),
                backoff_base_ms: o.backoff_base_ms.unwrap_or(d.backoff_base_ms),
                backoff_cap_ms: o.backoff_cap_ms.unwrap_or(d.backoff_cap_ms),
                jitter: o.jitter.unwrap_or(d.jitter),
            },
        }
    }

    /// The SQLite URL the `sqlite` queue backend uses: `url`, else the
    /// application's database.
    pub fn sqlite_url<'a>(&'a self, database_url: &'a str) -> &'a str {
        self.url.as_deref().unwrap_or(database_url)
    }
}
