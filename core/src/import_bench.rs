//! `dossier-worker bench-import`: a generated N-row file imported end to
//! end — every row checked, every client committed with its exercice, tree,
//! invitation and collaborators, and every onboarding job pushed to the
//! queue — on a chosen deployment. Prints one JSON line with rows/s.

use std::time::Instant;

use serde::Serialize;

use crate::config::{QueueBackendKind, Settings};
use crate::db::{Database, on_pool};
use crate::import::{self, Limits, Request, store};
use crate::queue;
use crate::secrets::KeyRing;
use crate::siret::with_luhn_digit;

#[derive(Debug, Clone)]
pub struct ImportBenchOptions {
    /// sqlite://… or postgres://… (the business database).
    pub database_url: String,
    /// `sqlite` (the jobs table of that SQLite file), `postgres` (the jobs
    /// table of that PostgreSQL database) or `redis`.
    pub queue: QueueBackendKind,
    /// The Redis URL with `queue = redis`.
    pub queue_url: Option<String>,
    pub rows: usize,
}

#[derive(Debug, Serialize)]
pub struct ImportBenchResult {
    pub database: &'static str,
    pub queue: &'static str,
    pub rows: usize,
    pub created: i64,
    pub jobs_enqueued: i64,
    /// Jobs found in the queue afterwards (all of them, or the bench fails).
    pub jobs_in_queue: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportBenchError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error(transparent)]
    Import(#[from] import::ImportError),
    #[error("{0}")]
    Other(String),
}

/// A valid SIRET made from `n`: a SIREN from its last eight digits (and
/// its Luhn key), a NIC from the next four (and the SIRET's key). Distinct
/// for distinct `n` below 10^12, and never La Poste's SIREN.
pub fn siret_for(n: u64) -> String {
    let mut body = n % 100_000_000;
    if body == 35_600_000 {
        body += 1;
    }
    let siren = with_luhn_digit(&format!("{body:08}"));
    with_luhn_digit(&format!("{siren}{:04}", (n / 100_000_000) % 10_000))
}

/// A firm's portfolio as a CSV file: `rows` clients with a SIRET (from
/// `seed`), a name, an exercice, a director invited, an external reference.
pub fn generate_csv(rows: usize, seed: u64) -> String {
    let mut out = String::from(
        "SIRET;Raison sociale;Début d'exercice;Fin d'exercice;Dirigeant email;Dirigeant prénom;Dirigeant nom;Inviter;Référence externe\r\n",
    );
    for i in 0..rows as u64 {
        let month = i % 12 + 1;
        out.push_str(&format!(
            "{};Société {i} SARL;01/{month:02}/2026;;dirigeant.{i}@client-{seed}.example;Prénom{i};Nom{i};oui;REF-{seed}-{i}\r\n",
            siret_for(seed * 1_000_000 + i)
        ));
    }
    out
}

fn name(kind: QueueBackendKind) -> &'static str {
    match kind {
        QueueBackendKind::Sqlite => "sqlite",
        QueueBackendKind::Postgres => "postgres",
        QueueBackendKind::Redis => "redis",
    }
}

pub async fn run(options: &ImportBenchOptions) -> Result<ImportBenchResult, ImportBenchError> {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let mut settings = Settings::default();
    settings.database.url = options.database_url.clone();
    settings.queue.backend = options.queue;
    settings.queue.prefix = format!("bench-import-{tag}");
    settings.queue.url = match options.queue {
        QueueBackendKind::Redis => Some(
            options
                .queue_url
                .clone()
                .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into()),
        ),
        _ => None,
    };
    let db = Database::connect(&settings.database.url, 4).await?;
    db.migrate().await?;
    let q = queue::open(&settings).await?;
    let keys = KeyRing::new(&[]).map_err(|e| ImportBenchError::Other(e.to_string()))?;
    let seed = (crate::clock::now_ms() % 1_000_000) as u64;
    let csv = generate_csv(options.rows, seed);
    let request = Request {
        firm_id: format!("bench-{tag}"),
        file_name: "bench.csv".into(),
        partial: false,
        providers: None,
        trace_id: None,
    };
    crate::firms::add(&db, &request.firm_id, "import bench")
        .await
        .map_err(|e| ImportBenchError::Other(e.to_string()))?;
    let id = store::new_id();
    store::create(&db, &id, &request, csv.as_bytes(), None).await?;

    let started = Instant::now();
    let record = import::run(
        &db,
        Limits::of(&settings),
        &keys,
        Some(q.as_ref()),
        &id,
        &mut |_| {},
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();

    let counts = q.counts().await?;
    let in_queue: u64 = counts.iter().map(|c| c.pending + c.scheduled).sum();
    if record.status != "done" || record.rows_created as usize != options.rows {
        return Err(ImportBenchError::Other(format!(
            "the import ended {} with {} of {} rows created:\n{}",
            record.status,
            record.rows_created,
            options.rows,
            record.report.unwrap_or_default()
        )));
    }
    if in_queue < record.jobs_enqueued as u64 {
        return Err(ImportBenchError::Other(format!(
            "{} jobs staged but only {in_queue} in the queue",
            record.jobs_enqueued
        )));
    }
    cleanup(&db, &settings, &request.firm_id).await;
    Ok(ImportBenchResult {
        database: match db {
            Database::Postgres(_) => "postgres",
            Database::Sqlite(_) => "sqlite",
        },
        queue: name(options.queue),
        rows: options.rows,
        created: record.rows_created,
        jobs_enqueued: record.jobs_enqueued,
        jobs_in_queue: in_queue,
        seconds,
        rows_per_s: options.rows as f64 / seconds,
    })
}

/// Removes what the run wrote: its Redis prefix, its firm's rows. Jobs in
/// a SQL queue stay: give the bench a scratch database.
async fn cleanup(db: &Database, settings: &Settings, firm: &str) {
    if let (QueueBackendKind::Redis, Some(url)) = (settings.queue.backend, &settings.queue.url)
        && let Ok(r) = crate::queue::redis::RedisQueue::connect(url, &settings.queue.prefix).await
    {
        let _ = r.destroy().await;
    }
    let _ = on_pool!(db, pool => async {
        for sql in [
            "DELETE FROM outbox",
            "DELETE FROM invitations WHERE client_id IN (SELECT id FROM clients WHERE firm_id = $1)",
            "DELETE FROM client_trees WHERE client_id IN (SELECT id FROM clients WHERE firm_id = $1)",
            "DELETE FROM exercices WHERE client_id IN (SELECT id FROM clients WHERE firm_id = $1)",
            "DELETE FROM clients WHERE firm_id = $1",
            "DELETE FROM imports WHERE firm_id = $1",
            "DELETE FROM firms WHERE id = $1",
        ] {
            sqlx::query(sql).bind(firm).execute(pool).await?;
        }
        Ok::<(), sqlx::Error>(())
    }.await);
}
