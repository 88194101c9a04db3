//! When a client's onboarding is over: every step finished — registry
//! facts stored (or none to look up), tree written, every exercice's
//! folders written, every invitation sent or left as a draft on purpose,
//! every app provisioned — `client.ready` is sent once, with a summary.
//!
//! [`settle`] runs at the end of every onboarding step's successful
//! attempt, after that step's own work is committed. It reads the steps
//! without locking anything: of two steps finishing at once, the one whose
//! read comes last sees both committed (each read follows its own step's
//! commit), and if both see everything done, marking `ready_at` only where
//! it is still empty lets one of them send the event. Most calls find a
//! step still open and write nothing. A worker killed between a step's
//! commit and `settle` has not finished its job, which runs again (every
//! step is idempotent) and settles then.

use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::events::{Event, EventType, emit};
use crate::write_gate::Lane;

/// What `client.ready` says was made.
#[derive(Debug, Clone, serde::Serialize)]
struct Summary {
    enrichment: String,
    folders: i64,
    exercices: Vec<String>,
    invitations: Vec<serde_json::Value>,
    apps: Vec<serde_json::Value>,
}

/// Marks the client ready and sends `client.ready` if its last step has
/// just finished. Whether it did.
pub async fn settle(db: &Database, client_id: &str) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    on_pool!(db, pool => {
        // Reads only, on one connection: no write turn, no lock.
        let mut conn = pool.acquire().await?;
        let Some((firm, ready_at, import, enrichment)) =
            sqlx::query_as::<_, (String, Option<i64>, Option<String>, String)>(
                "SELECT firm_id, ready_at, import_id, enrichment_status FROM clients WHERE id = $1",
            )
            .bind(client_id)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(false);
        };
        if ready_at.is_some() || !matches!(enrichment.as_str(), "enriched" | "skipped") {
            return Ok(false);
        }
        let (folders,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM client_folders WHERE client_id = $1")
                .bind(client_id)
                .fetch_one(&mut *conn)
                .await?;
        if folders == 0 {
            return Ok(false);
        }
        let exercices: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT label, folders_done_at FROM exercices WHERE client_id = $1 ORDER BY start_date",
        )
        .bind(client_id)
        .fetch_all(&mut *conn)
        .await?;
        if exercices.iter().any(|(_, done)| done.is_none()) {
            return Ok(false);
        }
        let invitations: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, role, status, last_error FROM invitations WHERE client_id = $1 ORDER BY created_at, id",
        )
        .bind(client_id)
        .fetch_all(&mut *conn)
        .await?;
        // Queued: not sent yet; a draft with an error: refused, to fix.
        if invitations.iter().any(|(_, _, status, error)| {
            status == "queued" || (status == "draft" && error.is_some())
        }) {
            return Ok(false);
        }
        let apps: Vec<(String, String)> = sqlx::query_as(
            "SELECT app_id, status FROM client_apps WHERE client_id = $1 ORDER BY app_id",
        )
        .bind(client_id)
        .fetch_all(&mut *conn)
        .await?;
        if apps.iter().any(|(_, status)| !matches!(status.as_str(), "active" | "disabled")) {
            return Ok(false);
        }
        drop(conn);
        let summary = Summary {
            enrichment,
            folders,
            exercices: exercices.into_iter().map(|(label, _)| label).collect(),
            invitations: invitations
                .into_iter()
                .map(|(id, role, status, _)| serde_json::json!({ "id": id, "role": role, "status": status }))
                .collect(),
            apps: apps
                .into_iter()
                .map(|(app, status)| serde_json::json!({ "app_id": app, "status": status }))
                .collect(),
        };
        let event = Event::for_client(
            EventType::ClientReady,
            &firm,
            client_id,
            serde_json::to_value(&summary).unwrap_or_default(),
        )
        .in_bulk(import.is_some());
        let _turn = db.write_turn(Lane::Background).await;
        let mut tx = pool.begin().await?;
        let first = sqlx::query("UPDATE clients SET ready_at = $1 WHERE id = $2 AND ready_at IS NULL")
            .bind(now)
            .bind(client_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !first {
            // Another step's settle got there: it sent the event.
            return Ok(false);
        }
        emit!(tx, &event)?;
        tx.commit().await?;
        Ok(true)
    })
}

/// Where the clients an import created stand, for `dossier import --wait`:
/// ready, failed (a step that will not finish without someone: registry
/// not found, an invitation refused, an app failed, a dead job), or still
/// working.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportClients {
    pub clients: usize,
    pub ready: usize,
    /// (client, why), at most [`FAILED_SHOWN`] of them.
    pub failed: Vec<(String, String)>,
    pub failed_count: usize,
}

/// Failed clients listed with their reason; the rest are counted.
pub const FAILED_SHOWN: usize = 20;

impl ImportClients {
    /// Clients neither ready nor failed.
    pub fn working(&self) -> usize {
        self.clients - self.ready - self.failed_count
    }
}

/// Reads the state of import `import_id`'s clients; `queue` adds the ones
/// whose job went dead.
pub async fn import_clients(
    db: &Database,
    queue: Option<&dyn crate::queue::QueueBackend>,
    firm: &str,
    import_id: &str,
) -> Result<ImportClients, sqlx::Error> {
    type Row = (
        String,
        Option<i64>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(
        "SELECT c.id, c.ready_at, c.enrichment_status, c.enrichment_message,
                (SELECT i.last_error FROM invitations i
                 WHERE i.client_id = c.id AND i.status = 'draft' AND i.last_error IS NOT NULL LIMIT 1),
                (SELECT a.last_error FROM client_apps a
                 WHERE a.client_id = c.id AND a.status = 'failed' LIMIT 1)
         FROM clients c WHERE c.import_id = $1 ORDER BY c.id",
    )
    .bind(import_id)
    .fetch_all(pool)
    .await?);
    let mut out = ImportClients {
        clients: rows.len(),
        ..Default::default()
    };
    let failed = |out: &mut ImportClients, id: String, why: String| {
        out.failed_count += 1;
        if out.failed.len() < FAILED_SHOWN {
            out.failed.push((id, why));
        }
    };
    // Neither ready nor failed by the records: a dead job may say why.
    let mut unsure = Vec::new();
    for (id, ready_at, enrichment, message, invitation, app) in rows {
        if ready_at.is_some() {
            out.ready += 1;
        } else if enrichment == "not_found" {
            failed(
                &mut out,
                id,
                format!("enrichment: {}", message.unwrap_or_default()),
            );
        } else if let Some(e) = invitation {
            failed(&mut out, id, format!("invitation: {e}"));
        } else if let Some(e) = app {
            failed(&mut out, id, format!("app: {e}"));
        } else {
            unsure.push(id);
        }
    }
    // The firm's dead jobs are read only while some client is unsure:
    // not at every look of a wait whose clients are all accounted for.
    if let Some(q) = queue.filter(|_| !unsure.is_empty())
        && let Ok(jobs) = q
            .list(&crate::job::JobFilter {
                group: Some(firm.to_string()),
                status: Some(crate::job::JobStatus::Dead),
                limit: 10_000,
                ..Default::default()
            })
            .await
    {
        let mut dead = std::collections::BTreeMap::new();
        for j in jobs {
            if let Some(subject) = j.subject {
                dead.entry(subject).or_insert_with(|| {
                    format!("{} failed: {}", j.kind, j.last_error.unwrap_or_default())
                });
            }
        }
        for id in unsure {
            if let Some(why) = dead.remove(&id) {
                failed(&mut out, id, why);
            }
        }
    }
    Ok(out)
}
