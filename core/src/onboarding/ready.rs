//! When a client's onboarding is over: every step finished — registry
//! facts stored (or none to look up), tree written, every exercice's
//! folders written, every invitation sent or left as a draft on purpose,
//! every app provisioned — `client.ready` is sent once, with a summary.
//!
//! [`settle`] runs at the end of every onboarding step's successful
//! attempt. It takes the client's row lock first, then reads the steps, so
//! that of two steps finishing at once the second to commit sees the
//! first's work: the last one sends the event. A worker killed between a
//! step's commit and `settle` has not finished its job, which runs again
//! (every step is idempotent) and settles then.

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
    let _turn = db.write_turn(Lane::Background).await;
    on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        // A no-op update: the row lock every step's settle queues on.
        let Some((firm, ready_at, import, enrichment)) =
            sqlx::query_as::<_, (String, Option<i64>, Option<String>, String)>(
                "UPDATE clients SET ready_at = ready_at WHERE id = $1
                 RETURNING firm_id, ready_at, import_id, enrichment_status",
            )
            .bind(client_id)
            .fetch_optional(&mut *tx)
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
                .fetch_one(&mut *tx)
                .await?;
        if folders == 0 {
            return Ok(false);
        }
        let exercices: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT label, folders_done_at FROM exercices WHERE client_id = $1 ORDER BY start_date",
        )
        .bind(client_id)
        .fetch_all(&mut *tx)
        .await?;
        if exercices.iter().any(|(_, done)| done.is_none()) {
            return Ok(false);
        }
        let invitations: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, role, status, last_error FROM invitations WHERE client_id = $1 ORDER BY created_at, id",
        )
        .bind(client_id)
        .fetch_all(&mut *tx)
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
        .fetch_all(&mut *tx)
        .await?;
        if apps.iter().any(|(_, status)| !matches!(status.as_str(), "active" | "disabled")) {
            return Ok(false);
        }
        sqlx::query("UPDATE clients SET ready_at = $1 WHERE id = $2")
            .bind(now)
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
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
    let mut dead = std::collections::BTreeMap::new();
    if let Some(q) = queue
        && let Ok(jobs) = q
            .list(&crate::job::JobFilter {
                group: Some(firm.to_string()),
                status: Some(crate::job::JobStatus::Dead),
                limit: 10_000,
                ..Default::default()
            })
            .await
    {
        for j in jobs {
            if let Some(subject) = j.subject {
                dead.entry(subject).or_insert_with(|| {
                    format!("{} failed: {}", j.kind, j.last_error.unwrap_or_default())
                });
            }
        }
    }
    let mut out = ImportClients {
        clients: rows.len(),
        ..Default::default()
    };
    for (id, ready_at, enrichment, message, invitation, app) in rows {
        if ready_at.is_some() {
            out.ready += 1;
            continue;
        }
        let why = if enrichment == "not_found" {
            Some(format!("enrichment: {}", message.unwrap_or_default()))
        } else if let Some(e) = invitation {
            Some(format!("invitation: {e}"))
        } else if let Some(e) = app {
            Some(format!("app: {e}"))
        } else {
            dead.remove(&id)
        };
        if let Some(why) = why {
            out.failed_count += 1;
            if out.failed.len() < FAILED_SHOWN {
                out.failed.push((id, why));
            }
        }
    }
    Ok(out)
}
