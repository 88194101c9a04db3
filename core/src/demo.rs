//! `dossier-worker demo`: the whole pipeline on the embedded default, in one
//! command, on a fresh SQLite database under `var/`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::{QueueBackendKind, Settings};
use crate::db::Database;
use crate::job::{JobFilter, JobStatus, NewJob, QueueCounts};
use crate::jobs::{self, siret_check};
use crate::queue::{self, QueueBackend};
use crate::runtime::{self, Registry, Worker};
use crate::siret::luhn;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot remove the previous demo database {path}: {source}")]
    Reset {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Deps(#[from] crate::jobs::DepsError),
}

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub database: String,
    pub enqueued: usize,
    pub elapsed_ms: u128,
    pub counts: Vec<QueueCounts>,
    /// A few dead jobs with the reason, as an operator would see them.
    pub dead_samples: Vec<(String, String)>,
}

/// A batch shaped like a firm's input: mostly valid SIRETs, some typed with
/// spaces, some with a mistyped digit, some that lost a leading zero in a
/// spreadsheet, and La Poste's special numbering.
pub fn sample_sirets(n: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let mut digits: String = (0..13)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect();
            let check = (0..10u8)
                .map(|d| format!("{digits}{d}"))
                .find(|s| luhn(s))
                .unwrap_or_else(|| format!("{digits}0"));
            digits = check;
            match i % 20 {
                0 => "35600000049837".to_string(),
                1 | 2 => {
                    // Mistyped last digit.
                    let last = digits.pop().map(|c| c as u8 - b'0').unwrap_or(0);
                    format!("{digits}{}", (last + 1) % 10)
                }
                3 => digits[1..].to_string(),
                4..=7 => format!(
                    "{} {} {} {}",
                    &digits[..3],
                    &digits[3..6],
                    &digits[6..9],
                    &digits[9..]
                ),
                _ => digits,
            }
        })
        .collect()
}

pub async fn run(
    mut settings: Settings,
    db_path: &Path,
    jobs_n: usize,
) -> Result<DemoReport, DemoError> {
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", db_path.display());
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DemoError::Reset { path: p, source }),
        }
    }
    let url = format!("sqlite://{}", db_path.display());
    settings.database.url = url.clone();
    settings.queue.backend = QueueBackendKind::Sqlite;
    settings.queue.url = None;
    Database::connect(&url, 1).await?.migrate().await?;
    let backend: Arc<dyn QueueBackend> = queue::open(&settings).await?;

    let started = Instant::now();
    let max_attempts = settings.queue.kind(siret_check::KIND).max_attempts;
    let batch: Vec<NewJob> = sample_sirets(jobs_n, 42)
        .into_iter()
        .enumerate()
        .map(|(i, siret)| NewJob {
            kind: siret_check::KIND.into(),
            payload: serde_json::json!({ "siret": siret }),
            run_at_ms: None,
            max_attempts,
            idempotency_key: Some(format!("demo-{i}")),
            trace_id: Some(format!("demo-import-row-{}", i + 2)),
        })
        .collect();
    backend.push_bulk(batch).await?;

    let mut registry = Registry::new();
    let deps = jobs::JobDeps::from_settings(&settings).await?;
    jobs::register_all(&mut registry, std::sync::Arc::new(deps));
    let kinds: Vec<String> = registry.kinds().map(str::to_string).collect();
    let worker = Worker::new(
        runtime::worker_name("demo"),
        settings.queue.clone(),
        backend.clone(),
        registry,
    )?;
    let running = worker.spawn();
    let kind_refs: Vec<&str> = kinds.iter().map(String::as_str).collect();
    let counts =
        runtime::wait_until_drained(&*backend, &kind_refs, Duration::from_millis(50)).await?;
    running.stop().await?;
    let dead = backend
        .list(&JobFilter {
            kind: None,
            status: Some(JobStatus::Dead),
            limit: 5,
        })
        .await?;
    Ok(DemoReport {
        database: db_path.display().to_string(),
        enqueued: jobs_n,
        elapsed_ms: started.elapsed().as_millis(),
        counts,
        dead_samples: dead
            .into_iter()
            .map(|j| {
                (
                    j.payload["siret"].as_str().unwrap_or("").to_string(),
                    j.last_error.unwrap_or_default(),
                )
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::siret::Siret;

    #[test]
    fn sample_mixes_valid_and_invalid_numbers() {
        let s = sample_sirets(100, 1);
        let valid = s.iter().filter(|x| Siret::parse(x).is_ok()).count();
        assert_eq!(valid, 85, "{s:?}");
    }
}
