//! `dossier-worker demo`: the whole pipeline on the embedded default, in one
//! command, on a fresh SQLite database under `var/`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::clients::{self, Client, NewClient};
use crate::config::{QueueBackendKind, Settings};
use crate::db::Database;
use crate::exercice;
use crate::invitations;
use crate::job::{JobFilter, JobStatus, NewJob, QueueCounts};
use crate::jobs::{self, siret_check, siret_enrichment, tree_setup};
use crate::queue::{self, QueueBackend};
use crate::runtime::{self, Registry, Worker};
use crate::siret::with_luhn_digit;
use crate::tree::folders;

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
    Firm(#[from] crate::firms::FirmError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Deps(#[from] crate::jobs::DepsError),
    #[error(
        "the demo's Sirene extract: {0} (run the demo from the repository root, or pass --sirene-extract)"
    )]
    Extract(String),
    #[error(transparent)]
    Client(#[from] crate::clients::ClientError),
    #[error(transparent)]
    Exercice(#[from] crate::exercice::ExerciceError),
    #[error(transparent)]
    Folders(#[from] crate::tree::folders::FolderError),
    #[error(transparent)]
    Invitation(#[from] crate::invitations::InvitationError),
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
}

/// The demo's directors (ASCII, so that their addresses stay plain).
const DIRECTORS: [(&str, &str); 6] = [
    ("Camille", "Martin"),
    ("Julien", "Bernard"),
    ("Sophie", "Petit"),
    ("Nicolas", "Durand"),
    ("Claire", "Leroy"),
    ("Thomas", "Moreau"),
];

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub database: String,
    pub enqueued: usize,
    pub elapsed_ms: u128,
    pub counts: Vec<QueueCounts>,
    /// A few dead jobs with the reason, as an operator would see them.
    pub dead_samples: Vec<(String, String)>,
    /// The demo's clients after enrichment.
    pub clients: Vec<Client>,
    /// How many folders each client's tree has, in the order of `clients`.
    pub folders: Vec<usize>,
    /// Where the invitation emails were written, and how many there are.
    pub outbox: String,
    pub emails: usize,
}

/// A batch shaped like a firm's input: mostly valid SIRETs, some typed with
/// spaces, some with a mistyped digit, some that lost a leading zero in a
/// spreadsheet, and La Poste's special numbering.
pub fn sample_sirets(n: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let mut random = |n: usize| -> String {
                (0..n)
                    .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                    .collect()
            };
            // A valid SIREN (its own Luhn digit), then the NIC's.
            let siren = with_luhn_digit(&random(8));
            let mut digits = with_luhn_digit(&format!("{siren}{}", random(4)));
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

/// Clients as a firm would create them from the extract: most with only a
/// SIRET, some with a name typed differently from the registry's, one
/// entered by hand without SIRET, one whose SIRET no registry knows.
fn demo_clients(extract: &Path) -> Result<Vec<NewClient>, DemoError> {
    let path = extract.join("StockEtablissement.csv");
    let mut reader = csv::Reader::from_path(&path)
        .map_err(|e| DemoError::Extract(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| DemoError::Extract(format!("{}: {e}", path.display())))?;
        let siret = record.get(2).unwrap_or_default().to_string();
        let mut entered = clients::Fields::new();
        if i == 1 {
            entered.insert("legal_name".into(), "Moreau Conseil".into());
        }
        if i == 3 {
            entered.insert("address.city".into(), "Nantes".into());
        }
        out.push(NewClient {
            firm_id: "cabinet-demo".into(),
            siret: Some(siret),
            entered,
        });
    }
    out.push(NewClient {
        firm_id: "cabinet-demo".into(),
        siret: None,
        entered: [("legal_name".to_string(), "Ferme du Bois Joli".to_string())].into(),
    });
    out.push(NewClient {
        firm_id: "cabinet-demo".into(),
        siret: Some("73282932000074".into()),
        entered: clients::Fields::new(),
    });
    Ok(out)
}

/// Told while the demo's jobs run: (finished, all), done and dead both
/// counted as finished.
pub type OnProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;

pub async fn run(
    mut settings: Settings,
    db_path: &Path,
    extract: &Path,
    jobs_n: usize,
    on_progress: Option<OnProgress>,
) -> Result<DemoReport, DemoError> {
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", db_path.display());
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DemoError::Reset { path: p, source }),
        }
    }
    // Invitations go to files: one .eml per message, nothing leaves the machine.
    let outbox = db_path.with_file_name("demo-outbox");
    match std::fs::remove_dir_all(&outbox) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DemoError::Reset {
                path: outbox.display().to_string(),
                source,
            });
        }
    }
    settings.mail.transport = crate::config::MailTransportKind::File;
    settings.mail.outbox_dir = outbox.display().to_string();
    let url = format!("sqlite://{}", db_path.display());
    settings.database.url = url.clone();
    settings.queue.backend = QueueBackendKind::Sqlite;
    settings.queue.url = None;
    let db = Database::connect(&url, 2).await?;
    db.migrate().await?;
    match crate::firms::add(&db, "cabinet-demo", "Cabinet Démo").await {
        Ok(_) | Err(crate::firms::FirmError::Exists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let backend: Arc<dyn QueueBackend> = queue::open(&settings).await?;

    // Enrichment runs offline, from the extract shipped in the repository.
    let index = db_path.with_file_name("demo-sirene-index.db");
    crate::sirene::file::build_index(
        &extract.join("StockUniteLegale.csv"),
        &extract.join("StockEtablissement.csv"),
        &index,
    )
    .await
    .map_err(|e| DemoError::Extract(e.to_string()))?;
    settings.sirene.providers = vec![crate::sirene::file::NAME.into()];
    settings.sirene.file_index = index.display().to_string();
    let mut client_ids = Vec::new();
    // Each client gets the current calendar year as its first exercice; its
    // tree and monthly folders come from the `tree_setup` job below.
    let year_start =
        chrono::NaiveDate::from_ymd_opt(chrono::Datelike::year(&chrono::Utc::now()), 1, 1)
            .ok_or_else(|| DemoError::Extract("the current year is out of range".into()))?;
    for new in demo_clients(extract)? {
        let id = clients::create(&db, new).await?.id;
        exercice::add(
            &db,
            &id,
            year_start,
            None,
            false,
            exercice::Origin::Manual,
            true,
        )
        .await?;
        client_ids.push(id);
    }
    let trees: Vec<NewJob> = client_ids
        .iter()
        .map(|id| NewJob {
            kind: tree_setup::KIND.into(),
            payload: serde_json::json!({ "client_id": id }),
            run_at_ms: None,
            max_attempts: settings.queue.kind(tree_setup::KIND).max_attempts,
            idempotency_key: Some(format!("tree-{id}")),
            trace_id: None,
            group: None,
            subject: None,
            bulk: false,
        })
        .collect();
    backend.push_bulk(trees).await?;
    // Each client's director is invited at once (file transport); the jobs
    // are staged with the invitations and relayed from the outbox.
    for (i, id) in client_ids.iter().enumerate() {
        let (first, last) = DIRECTORS[i % DIRECTORS.len()];
        invitations::create_with_attempts(
            &db,
            invitations::NewInvitation {
                client_id: id.clone(),
                email: format!(
                    "{}.{}@client-{}.example",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    i + 1
                ),
                first_name: first.into(),
                last_name: last.into(),
                invited_by: None,
                themes: None,
            },
            true,
            settings.queue.kind(jobs::invitation::KIND).max_attempts,
        )
        .await?;
    }
    crate::outbox::relay(&db, backend.as_ref()).await?;
    let enrichment: Vec<NewJob> = client_ids
        .iter()
        .map(|id| NewJob {
            kind: siret_enrichment::KIND.into(),
            payload: serde_json::json!({ "client_id": id }),
            run_at_ms: None,
            max_attempts: settings.queue.kind(siret_enrichment::KIND).max_attempts,
            idempotency_key: Some(format!("enrich-{id}")),
            trace_id: None,
            group: None,
            subject: None,
            bulk: false,
        })
        .collect();
    backend.push_bulk(enrichment).await?;

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
            group: None,
            subject: None,
            bulk: false,
        })
        .collect();
    backend.push_bulk(batch).await?;

    let mut registry = Registry::new();
    let deps = jobs::JobDeps::from_settings(&settings, backend.clone()).await?;
    jobs::register_all(&mut registry, std::sync::Arc::new(deps));
    let kinds: Vec<String> = registry.kinds().map(str::to_string).collect();
    let worker = Worker::new(
        runtime::worker_name("demo"),
        settings.queue.clone(),
        backend.clone(),
        registry,
    )?;
    let running = worker.spawn();
    let last_word = on_progress.clone();
    let ticker = on_progress.map(|tell| {
        let backend = backend.clone();
        let kinds = kinds.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(counts) = backend.counts().await {
                    let mine = counts.iter().filter(|c| kinds.contains(&c.kind));
                    let (finished, all) = mine.fold((0, 0), |(f, a), c| {
                        (f + c.done + c.dead, a + c.done + c.dead + c.outstanding())
                    });
                    tell(finished, all);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    });
    let kind_refs: Vec<&str> = kinds.iter().map(String::as_str).collect();
    let counts =
        runtime::wait_until_drained(&*backend, &kind_refs, Duration::from_millis(50)).await?;
    if let Some(t) = ticker {
        t.abort();
    }
    // The last word is the whole count, whenever the ticker last looked.
    if let Some(tell) = last_word {
        let finished: u64 = counts.iter().map(|c| c.done + c.dead).sum();
        tell(finished, finished);
    }
    running.stop().await?;
    let dead = backend
        .list(&JobFilter {
            kind: None,
            status: Some(JobStatus::Dead),
            limit: 5,
            ..JobFilter::default()
        })
        .await?;
    let mut clients_after = Vec::new();
    let mut folder_counts = Vec::new();
    for id in &client_ids {
        if let Some(c) = clients::get(&db, id).await? {
            clients_after.push(c);
            folder_counts.push(folders::list(&db, id).await?.len());
        }
    }
    let emails = std::fs::read_dir(&outbox)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
            })
            .count()
        })
        .unwrap_or(0);
    Ok(DemoReport {
        outbox: outbox.display().to_string(),
        emails,
        clients: clients_after,
        folders: folder_counts,
        database: db_path.display().to_string(),
        enqueued: jobs_n,
        elapsed_ms: started.elapsed().as_millis(),
        counts,
        dead_samples: dead
            .into_iter()
            .map(|j| {
                (
                    j.payload["siret"]
                        .as_str()
                        .or(j.payload["client_id"].as_str())
                        .unwrap_or("")
                        .to_string(),
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
