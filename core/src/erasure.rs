//! Erasure of personal data (RGPD article 17): of every person of an
//! archived client (`dossier client erase ID`), or of one person across
//! clients (`dossier person erase --email E [--firm F]`).
//!
//! What goes, store by store (`docs/privacy.md` keeps the inventory):
//!
//! - `invitations`: the address, the names, the token, the message id and
//!   the last error are replaced (`erased-{id}@erased.invalid`, empty
//!   names); a live invitation is revoked first. The row stays, so that the
//!   client's history still counts it;
//! - `clients` (client erase): the registry's directors are removed from the
//!   record; the company facts stay. The partner apps' settings are
//!   cleared (they may name a person's address);
//! - the queue (SQLite, PostgreSQL or Redis): every job of the client
//!   (client erase) or of the person's invitations (person erase) is
//!   deleted with its payload, result and errors (`QueueBackend::forget`);
//!   the staged ones in `outbox` too;
//! - `http_requests`: the hooks' stored answers that name the client or
//!   the address;
//! - `imports`: the file and the reports of the client's import, and of
//!   every import of the firm whose file or report holds the address, are
//!   emptied (the import's counts stay);
//! - the `.eml` files of the file transport that hold the address.
//!
//! A client is erased only once archived (its work stopped), and not while
//! one of its jobs runs: a job that started before the archive could
//! otherwise write a person's data back after the erasure. Every step is
//! idempotent: erasing again removes what an interrupted run left, and
//! counts nothing twice. An erased client stays archived for good.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::job::{JobFilter, JobStatus};
use crate::queue::QueueBackend;
use crate::write_gate::Lane;

/// Most jobs of one client looked at (a client has tens).
const MAX_JOBS: usize = 10_000;

/// `.eml` files larger than this are not read (ours are a few kB).
const MAX_MAIL_FILE: u64 = 16 << 20;

/// What an erasure removed or replaced, counted per store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Erased {
    /// The client erased, or empty for a person's erasure.
    pub client_id: String,
    /// The client was erased before (this run finished what was left).
    pub already: bool,
    pub removed: BTreeMap<&'static str, u64>,
}

impl Erased {
    fn add(&mut self, store: &'static str, n: u64) {
        *self.removed.entry(store).or_default() += n;
    }

    pub fn total(&self) -> u64 {
        self.removed.values().sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(
        "client {0} is not archived: `dossier client archive {0}` first (erasure is for a client the firm no longer works with)"
    )]
    NotArchived(String),
    #[error("{} job(s) of client {client} are running ({}): erase again when they end (at most their lease)", jobs.len(), jobs.join(", "))]
    Running { client: String, jobs: Vec<String> },
    #[error("the address to erase is not an email address (it has no @)")]
    NotAnAddress,
    #[error("client: {0}")]
    Client(#[from] crate::clients::ClientError),
    #[error("invitations: {0}")]
    Invitations(#[from] crate::invitations::InvitationError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("jobs: {0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error("mail files in {path}: {source}")]
    Mail {
        path: String,
        source: std::io::Error,
    },
}

/// Where the deployment keeps sent mail as files, if it does.
pub fn mail_dir(settings: &crate::config::Settings) -> Option<PathBuf> {
    (settings.mail.transport == crate::config::MailTransportKind::File)
        .then(|| PathBuf::from(&settings.mail.outbox_dir))
}

/// The address an erased invitation carries instead of the person's.
fn erased_address(invitation_id: &str) -> String {
    format!("erased-{invitation_id}@erased.invalid")
}

/// Whether `hay` holds any of `needles`, ASCII case ignored (addresses are
/// compared lowercased everywhere).
fn mentions(hay: &[u8], needles: &[String]) -> bool {
    let hay = hay.to_ascii_lowercase();
    needles.iter().any(|n| {
        let n = n.as_bytes();
        !n.is_empty() && hay.windows(n.len()).any(|w| w == n)
    })
}

/// Erases every person of an archived client. `None`: no such client.
pub async fn erase_client(
    db: &Database,
    queue: &dyn QueueBackend,
    mail_dir: Option<&Path>,
    id: &str,
) -> Result<Option<Erased>, ErasureError> {
    let Some(client) = crate::clients::get(db, id).await? else {
        return Ok(None);
    };
    if client.archived_at_ms.is_none() {
        return Err(ErasureError::NotArchived(id.to_string()));
    }
    let jobs = queue
        .list(&JobFilter {
            subject: Some(id.to_string()),
            limit: MAX_JOBS,
            ..JobFilter::default()
        })
        .await?;
    let running: Vec<String> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Running)
        .map(|j| j.id.clone())
        .collect();
    if !running.is_empty() {
        return Err(ErasureError::Running {
            client: id.to_string(),
            jobs: running,
        });
    }
    let invitations = crate::invitations::list(db, id).await?;
    let addresses: Vec<String> = invitations
        .iter()
        .map(|i| i.email.to_ascii_lowercase())
        .filter(|e| !e.ends_with("@erased.invalid"))
        .collect();
    let mut done = Erased {
        client_id: id.to_string(),
        already: crate::clients::erased_at(db, id).await?.is_some(),
        ..Erased::default()
    };
    let ids: Vec<String> = invitations.iter().map(|i| i.id.clone()).collect();
    done.add("invitations", scrub_invitations(db, &ids).await?);
    done.add(
        "clients (registry directors)",
        crate::clients::erase_people(db, id, now_ms()).await?,
    );
    done.add("client_apps (settings)", clear_app_settings(db, id).await?);
    done.add(
        "http_requests",
        delete_hook_answers(db, &format!("\"{id}\""), &addresses).await?,
    );
    done.add("outbox", delete_staged(db, id).await?);
    done.add("events", delete_events(db, id).await?);
    done.add(
        "imports",
        scrub_imports(db, &client.firm_id, client.import_id.as_deref(), &addresses).await?,
    );
    let ids: Vec<String> = jobs.into_iter().map(|j| j.id).collect();
    done.add("queue jobs", queue.forget(&ids).await?);
    done.add("mail files", delete_mail_files(mail_dir, &addresses)?);
    Ok(Some(done))
}

/// Erases one person — every invitation to `email` (of `firm`'s clients
/// only, if given) and what names the address elsewhere.
pub async fn erase_person(
    db: &Database,
    queue: &dyn QueueBackend,
    mail_dir: Option<&Path>,
    email: &str,
    firm: Option<&str>,
) -> Result<Erased, ErasureError> {
    let address = email.trim().to_ascii_lowercase();
    if address.is_empty() || !address.contains('@') {
        return Err(ErasureError::NotAnAddress);
    }
    let found: Vec<(String, String, String)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT i.id, i.client_id, c.firm_id FROM invitations i JOIN clients c ON c.id = i.client_id
         WHERE i.email_key = $1 AND ($2 IS NULL OR c.firm_id = $2) ORDER BY i.id",
    )
    .bind(&address)
    .bind(firm)
    .fetch_all(pool)
    .await?);
    let mut done = Erased::default();
    let ids: Vec<String> = found.iter().map(|(id, _, _)| id.clone()).collect();
    // The person's invitation jobs: found through their clients' jobs.
    let mut jobs = Vec::new();
    let mut clients: Vec<&str> = found.iter().map(|(_, c, _)| c.as_str()).collect();
    clients.sort_unstable();
    clients.dedup();
    for client in &clients {
        for job in queue
            .list(&JobFilter {
                subject: Some(client.to_string()),
                kind: Some(crate::jobs::invitation::KIND.into()),
                limit: MAX_JOBS,
                ..JobFilter::default()
            })
            .await?
        {
            let of_person = job
                .payload
                .get("invitation_id")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|i| ids.iter().any(|id| id == i));
            if of_person && job.status != JobStatus::Running {
                jobs.push(job.id);
            }
        }
    }
    done.add("invitations", scrub_invitations(db, &ids).await?);
    let addresses = vec![address];
    done.add(
        "http_requests",
        delete_hook_answers(db, "", &addresses).await?,
    );
    let mut firms: Vec<&str> = match firm {
        Some(f) => vec![f],
        None => found.iter().map(|(_, _, f)| f.as_str()).collect(),
    };
    firms.sort_unstable();
    firms.dedup();
    for f in firms {
        done.add("imports", scrub_imports(db, f, None, &addresses).await?);
    }
    done.add("queue jobs", queue.forget(&jobs).await?);
    done.add("mail files", delete_mail_files(mail_dir, &addresses)?);
    Ok(done)
}

/// Replaces the person's data on each invitation (revoking a live one):
/// how many still held some.
pub(crate) async fn scrub_invitations(db: &Database, ids: &[String]) -> Result<u64, sqlx::Error> {
    let now = now_ms();
    let mut n = 0;
    let _turn = db.write_turn(Lane::Interactive).await;
    for id in ids {
        let erased = erased_address(id);
        n += on_pool!(db, pool => sqlx::query(
            "UPDATE invitations SET email = $1, email_key = $1, first_name = '', last_name = '',
                    token_hash = NULL, message_id = NULL, last_error = NULL, send_state = NULL,
                    send_frame = NULL, smtp_reply = NULL,
                    status = CASE WHEN status IN ('draft', 'queued', 'sent') THEN 'revoked' ELSE status END,
                    revoked_at = CASE WHEN status IN ('draft', 'queued', 'sent') THEN $2 ELSE revoked_at END,
                    updated_at = $2
             WHERE id = $3 AND email <> $1",
        )
        .bind(&erased)
        .bind(now)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
    }
    Ok(n)
}

async fn clear_app_settings(db: &Database, client: &str) -> Result<u64, sqlx::Error> {
    let _turn = db.write_turn(Lane::Interactive).await;
    Ok(on_pool!(db, pool => sqlx::query(
        "UPDATE client_apps SET settings = '{}', updated_at = $1 WHERE client_id = $2 AND settings <> '{}'",
    )
    .bind(now_ms())
    .bind(client)
    .execute(pool)
    .await?
    .rows_affected()))
}

/// Deletes the stored hook answers holding `quoted` (a quoted client id;
/// empty: none) or one of `addresses`.
async fn delete_hook_answers(
    db: &Database,
    quoted: &str,
    addresses: &[String],
) -> Result<u64, sqlx::Error> {
    let mut patterns: Vec<String> = addresses.iter().map(|a| format!("%{a}%")).collect();
    if !quoted.is_empty() {
        patterns.push(format!("%{quoted}%"));
    }
    let _turn = db.write_turn(Lane::Interactive).await;
    let mut n = 0;
    for pattern in patterns {
        n += on_pool!(db, pool => sqlx::query("DELETE FROM http_requests WHERE LOWER(body) LIKE $1")
            .bind(&pattern)
            .execute(pool)
            .await?
            .rows_affected());
    }
    Ok(n)
}

/// The client's events, with their deliveries: their bodies name the
/// company and what was done for it.
async fn delete_events(db: &Database, client: &str) -> Result<u64, sqlx::Error> {
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "DELETE FROM webhook_deliveries WHERE event_id IN (SELECT id FROM events WHERE client_id = $1)",
        )
        .bind(client)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query("DELETE FROM events WHERE client_id = $1")
            .bind(client)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    })
}

async fn delete_staged(db: &Database, client: &str) -> Result<u64, sqlx::Error> {
    let _turn = db.write_turn(Lane::Interactive).await;
    Ok(
        on_pool!(db, pool => sqlx::query("DELETE FROM outbox WHERE subject = $1 OR payload LIKE $2")
        .bind(client)
        .bind(format!("%\"{client}\"%"))
        .execute(pool)
        .await?
        .rows_affected()),
    )
}

/// Empties the file and reports of `import` and of every import of `firm`
/// that holds one of `addresses`: how many imports were emptied.
async fn scrub_imports(
    db: &Database,
    firm: &str,
    import: Option<&str>,
    addresses: &[String],
) -> Result<u64, sqlx::Error> {
    let ids: Vec<(String,)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT id FROM imports WHERE firm_id = $1 ORDER BY created_at",
    )
    .bind(firm)
    .fetch_all(pool)
    .await?);
    let mut n = 0;
    for (id,) in ids {
        // One at a time: an import file may weigh megabytes.
        let row: Option<(Vec<u8>, Option<String>, Option<String>)> = on_pool!(db, pool => sqlx::query_as(
            "SELECT content, report, errors_csv FROM imports WHERE id = $1",
        )
        .bind(&id)
        .fetch_optional(pool)
        .await?);
        let Some((content, report, errors)) = row else {
            continue;
        };
        let reports_name = report
            .as_deref()
            .is_some_and(|r| mentions(r.as_bytes(), addresses))
            || errors
                .as_deref()
                .is_some_and(|e| mentions(e.as_bytes(), addresses));
        // The client's own import holds its row even where no address
        // matches (an Excel file is compressed).
        let file_names =
            !content.is_empty() && (import == Some(id.as_str()) || mentions(&content, addresses));
        if !(file_names || reports_name) {
            continue;
        }
        let _turn = db.write_turn(Lane::Interactive).await;
        n += on_pool!(db, pool => sqlx::query(
            "UPDATE imports SET content = $1, report = NULL, errors_csv = NULL,
                    error = 'file and reports erased (a person named in them asked)', updated_at = $2
             WHERE id = $3",
        )
        .bind(Vec::<u8>::new())
        .bind(now_ms())
        .bind(&id)
        .execute(pool)
        .await?
        .rows_affected());
    }
    Ok(n)
}

/// Deletes the mail files of `dir` that hold one of `addresses`.
fn delete_mail_files(dir: Option<&Path>, addresses: &[String]) -> Result<u64, ErasureError> {
    let Some(dir) = dir else { return Ok(0) };
    if addresses.is_empty() {
        return Ok(0);
    }
    crate::mail::remove_files(dir, |path, meta| {
        Ok(meta.len() <= MAX_MAIL_FILE && mentions(&std::fs::read(path)?, addresses))
    })
    .map_err(|source| ErasureError::Mail {
        path: dir.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_found_whatever_its_case() {
        let needles = vec!["louise.dubois@fromagerie.fr".to_string()];
        assert!(mentions(b"To: <Louise.Dubois@Fromagerie.FR>", &needles));
        assert!(!mentions(b"To: <louise.dupont@fromagerie.fr>", &needles));
        assert!(!mentions(b"anything", &[String::new()]));
    }

    #[test]
    fn links_and_folders_in_the_mail_folder_are_left_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let needles = vec!["louise@x.fr".to_string()];
        std::fs::write(dir.path().join("a.eml"), "To: louise@x.fr").expect("write");
        std::fs::write(dir.path().join("b.eml"), "To: paul@x.fr").expect("write");
        let outside = tempfile::tempdir().expect("dir");
        let target = outside.path().join("secret.eml");
        std::fs::write(&target, "To: louise@x.fr").expect("write");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, dir.path().join("link.eml")).expect("link");
        std::fs::create_dir(dir.path().join("sub")).expect("dir");
        assert_eq!(
            delete_mail_files(Some(dir.path()), &needles).expect("scan"),
            1
        );
        assert!(!dir.path().join("a.eml").exists());
        assert!(dir.path().join("b.eml").exists());
        assert!(target.exists(), "a link's target is not ours to delete");
        assert_eq!(
            delete_mail_files(Some(dir.path()), &needles).expect("scan"),
            0
        );
    }
}
