//! Everything Dossier holds about one client and its people, as one JSON
//! document: what a firm hands over when a person asks to see or take
//! their data (RGPD articles 15 and 20), from `dossier client export ID`
//! or `GET /v1/clients/{id}/export`.
//!
//! The document gathers every store that keeps something of the client:
//! the client record (typed and registry values), its exercices and
//! folders, its invitations (the people's names and addresses, their
//! history), the firm members following it, its partner apps (settings
//! with secrets masked, as everywhere), every job of the client on the
//! queue (found by the job's subject, on any backend; payloads redacted by
//! the catalogue) and the hooks' stored answers that name it. Secrets —
//! partner credentials, invitation tokens, API tokens — are never in it.

use serde::Serialize;

use crate::apps::ClientApp;
use crate::clients::Client;
use crate::collaborators::Member;
use crate::db::{Database, on_pool};
use crate::exercice::Exercice;
use crate::invitations::Invitation;
use crate::job::{JobFilter, JobRecord};
use crate::queue::QueueBackend;
use crate::tree::folders::StoredFolder;

/// What the document says it is, so that a reader can tell versions apart.
pub const FORMAT: &str = "dossier.client-export/1";

/// Most jobs of one client exported (a client has tens).
const MAX_JOBS: usize = 10_000;

#[derive(Debug, Serialize)]
pub struct ClientExport {
    pub format: &'static str,
    pub exported_at_ms: i64,
    pub client: Client,
    pub exercices: Vec<Exercice>,
    pub folders: Vec<StoredFolder>,
    pub invitations: Vec<Invitation>,
    pub collaborators: Vec<Member>,
    pub apps: Vec<AppExport>,
    pub jobs: Vec<JobRecord>,
    pub hook_answers: Vec<HookAnswer>,
}

/// A partner app of the client, its secret settings masked.
#[derive(Debug, Serialize)]
pub struct AppExport {
    #[serde(flatten)]
    pub app: ClientApp,
    pub settings: std::collections::BTreeMap<String, serde_json::Value>,
}

/// An answer the hooks keep for a retried request (`Idempotency-Key`).
#[derive(Debug, Serialize)]
pub struct HookAnswer {
    pub key: String,
    pub status: i64,
    pub body: serde_json::Value,
    pub created_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("client: {0}")]
    Client(#[from] crate::clients::ClientError),
    #[error("exercices: {0}")]
    Exercice(#[from] crate::exercice::ExerciceError),
    #[error("folders: {0}")]
    Folders(#[from] crate::tree::folders::FolderError),
    #[error("invitations: {0}")]
    Invitations(#[from] crate::invitations::InvitationError),
    #[error("collaborators: {0}")]
    Members(#[from] crate::collaborators::MemberError),
    #[error("apps: {0}")]
    Apps(#[from] crate::apps::AppError),
    #[error("jobs: {0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error("hook answers: {0}")]
    Db(#[from] sqlx::Error),
}

/// The client's document, or `None` when there is no such client. Without
/// a queue (it cannot be opened) the jobs are left out, and the caller
/// says so.
pub async fn export(
    db: &Database,
    queue: Option<&dyn QueueBackend>,
    id: &str,
) -> Result<Option<ClientExport>, ExportError> {
    let Some(client) = crate::clients::get(db, id).await? else {
        return Ok(None);
    };
    let apps = crate::apps::client_apps(db, id)
        .await?
        .into_iter()
        .map(|app| AppExport {
            settings: app.redacted_settings(),
            app,
        })
        .collect();
    let jobs = match queue {
        Some(q) => {
            let catalogue = crate::catalogue::Catalogue::product();
            q.list(&JobFilter {
                subject: Some(id.to_string()),
                limit: MAX_JOBS,
                ..JobFilter::default()
            })
            .await?
            .into_iter()
            .map(|mut j| {
                catalogue.redact(&j.kind, &mut j.payload);
                j
            })
            .collect()
        }
        None => Vec::new(),
    };
    Ok(Some(ClientExport {
        format: FORMAT,
        exported_at_ms: crate::clock::now_ms(),
        exercices: crate::exercice::list(db, id).await?,
        folders: crate::tree::folders::list(db, id).await?,
        invitations: crate::invitations::list(db, id).await?,
        collaborators: crate::collaborators::of_client(db, id).await?,
        apps,
        jobs,
        hook_answers: hook_answers(db, id).await?,
        client,
    }))
}

/// The stored answers whose body names the client (its id is a UUID: no
/// other text contains it).
async fn hook_answers(db: &Database, id: &str) -> Result<Vec<HookAnswer>, sqlx::Error> {
    let pattern = format!("%\"{id}\"%");
    let rows: Vec<(String, i64, String, i64)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT key, CAST(status AS BIGINT), body, created_at FROM http_requests
         WHERE body LIKE $1 ORDER BY created_at",
    )
    .bind(&pattern)
    .fetch_all(pool)
    .await?);
    Ok(rows
        .into_iter()
        .map(|(key, status, body, created_at_ms)| HookAnswer {
            key,
            status,
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
            created_at_ms,
        })
        .collect())
}
