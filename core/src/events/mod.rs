//! What happened to a firm's clients and imports, told to the firm's
//! upstream application: events written in the transaction of the change
//! that causes them ([`emit!`]), one delivery per subscribed endpoint
//! (`endpoints`), each delivered by the `webhook_delivery` job kind
//! (`crate::jobs::webhook_delivery`), signed like the partner calls
//! (`crate::apps::signature`).
//!
//! Never lost, never invented: a rolled-back change leaves no event and no
//! delivery; a committed one leaves both, and its delivery job is staged in
//! the same transaction through the outbox. A receiver sees an event at
//! least once (a worker killed after the receiver's answer sends it again)
//! with the same `Idempotency-Key`, the event's id; `sequence` orders one
//! client's events, and one endpoint receives them in that order.

pub mod endpoints;

use serde::Serialize;

/// The kinds of event, as receivers see them in `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum EventType {
    /// Every onboarding step finished (sent once per client).
    ClientReady,
    /// A step's attempt failed: which, why, whether it will be retried.
    ClientStepFailed,
    /// The registries' facts stored: differences with what was typed, and
    /// a closed company's warning.
    ClientEnriched,
    InvitationSent,
    InvitationAccepted,
    /// The mail server refused it, or it could not be composed.
    InvitationFailed,
    InvitationExpired,
    /// An import's run ended: counts, and where its report is.
    ImportFinished,
    /// The rollover opened a client's next exercice.
    ExerciceCreated,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        EventType::ClientReady,
        EventType::ClientStepFailed,
        EventType::ClientEnriched,
        EventType::InvitationSent,
        EventType::InvitationAccepted,
        EventType::InvitationFailed,
        EventType::InvitationExpired,
        EventType::ImportFinished,
        EventType::ExerciceCreated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ClientReady => "client.ready",
            EventType::ClientStepFailed => "client.step_failed",
            EventType::ClientEnriched => "client.enriched",
            EventType::InvitationSent => "invitation.sent",
            EventType::InvitationAccepted => "invitation.accepted",
            EventType::InvitationFailed => "invitation.failed",
            EventType::InvitationExpired => "invitation.expired",
            EventType::ImportFinished => "import.finished",
            EventType::ExerciceCreated => "exercice.created",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventType,
    pub firm_id: String,
    pub client_id: Option<String>,
    pub import_id: Option<String>,
    /// The small body receivers read in `data`.
    pub data: serde_json::Value,
    /// Its deliveries wait behind interactive work (an import's clients).
    pub bulk: bool,
}

impl Event {
    pub fn for_client(
        kind: EventType,
        firm_id: &str,
        client_id: &str,
        data: serde_json::Value,
    ) -> Event {
        Event {
            kind,
            firm_id: firm_id.to_string(),
            client_id: Some(client_id.to_string()),
            import_id: None,
            data,
            bulk: false,
        }
    }

    pub fn for_import(
        kind: EventType,
        firm_id: &str,
        import_id: &str,
        data: serde_json::Value,
    ) -> Event {
        Event {
            kind,
            firm_id: firm_id.to_string(),
            client_id: None,
            import_id: Some(import_id.to_string()),
            data,
            bulk: true,
        }
    }

    pub fn in_bulk(mut self, bulk: bool) -> Event {
        self.bulk = bulk;
        self
    }

    /// Whose events this one is ordered among.
    pub fn ordering_key(&self, id: &str) -> String {
        self.client_id
            .as_deref()
            .or(self.import_id.as_deref())
            .unwrap_or(id)
            .to_string()
    }
}

/// Whether an endpoint's stored `events` list (JSON) takes `kind`.
pub fn subscribed(stored: &str, kind: EventType) -> bool {
    serde_json::from_str::<Vec<String>>(stored)
        .map(|list| list.iter().any(|t| t == kind.as_str()))
        .unwrap_or(false)
}

/// The job delivering event `event_id` to endpoint `endpoint_id`.
pub fn delivery_job(event_id: &str, endpoint_id: &str, event: &Event) -> crate::job::NewJob {
    crate::job::NewJob {
        kind: crate::jobs::webhook_delivery::KIND.to_string(),
        payload: serde_json::json!({ "event_id": event_id, "endpoint_id": endpoint_id }),
        run_at_ms: None,
        max_attempts: crate::jobs::webhook_delivery::JOB_ATTEMPTS,
        idempotency_key: Some(crate::jobs::webhook_delivery::key(event_id, endpoint_id)),
        trace_id: None,
        group: Some(event.firm_id.clone()),
        subject: event.client_id.clone(),
        bulk: event.bulk,
    }
}

/// What a receiver is sent: the envelope around an event's body. Its bytes
/// are what the signature covers.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub created_at: String,
    pub firm_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_id: Option<&'a str>,
    pub sequence: i64,
    pub data: serde_json::Value,
}

/// Writes `$event` (an [`Event`]) inside the transaction `$tx` (a
/// `sqlx::Transaction` of either engine), when one of the firm's enabled
/// endpoints takes its type: the event row with the next sequence number
/// of its client (bumping `clients.event_seq` takes the client's row lock,
/// so concurrent writers for one client are ordered), a delivery row for
/// each such endpoint, and each delivery's job, staged through the outbox.
/// Gives the event's id, or `None` when nobody takes it (nothing written).
macro_rules! emit {
    ($tx:expr, $event:expr) => {{
        let event: &$crate::events::Event = $event;
        let result: Result<Option<String>, sqlx::Error> = async {
            let endpoints: Vec<(String, String)> = sqlx::query_as(
                "SELECT id, events FROM webhook_endpoints
                 WHERE firm_id = $1 AND disabled_at IS NULL ORDER BY id",
            )
            .bind(&event.firm_id)
            .fetch_all(&mut *$tx)
            .await?;
            let takers: Vec<&String> = endpoints
                .iter()
                .filter(|(_, types)| $crate::events::subscribed(types, event.kind))
                .map(|(id, _)| id)
                .collect();
            // Nobody to tell: nothing written (a firm without webhooks
            // pays one read).
            if takers.is_empty() {
                return Ok(None);
            }
            let now = $crate::clock::now_ms();
            let id = uuid::Uuid::now_v7().to_string();
            let seq: i64 = match &event.client_id {
                Some(client) => {
                    sqlx::query_scalar::<_, i64>(
                        "UPDATE clients SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq",
                    )
                    .bind(client)
                    .fetch_one(&mut *$tx)
                    .await?
                }
                None => 1,
            };
            sqlx::query(
                "INSERT INTO events (id, firm_id, type, client_id, import_id, seq, body, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&id)
            .bind(&event.firm_id)
            .bind(event.kind.as_str())
            .bind(&event.client_id)
            .bind(&event.import_id)
            .bind(seq)
            .bind(event.data.to_string())
            .bind(now)
            .execute(&mut *$tx)
            .await?;
            let ordering = event.ordering_key(&id);
            for endpoint in takers {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (event_id, endpoint_id, ordering_key, seq)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&id)
                .bind(endpoint)
                .bind(&ordering)
                .bind(seq)
                .execute(&mut *$tx)
                .await?;
                let job = $crate::events::delivery_job(&id, endpoint, event);
                $crate::outbox::stage!($tx, job)?;
            }
            Ok(Some(id))
        }
        .await;
        result
    }};
}
pub(crate) use emit;

/// [`emit!`] for an event about client `$client` (a `&str`), whose firm
/// and import are read in the same transaction: `$kind` an [`EventType`],
/// `$data` its body. An unknown client emits nothing (`Ok(None)`).
macro_rules! emit_for_client {
    ($tx:expr, $kind:expr, $client:expr, $data:expr) => {{
        let client: &str = $client;
        let result: Result<Option<String>, sqlx::Error> = async {
            let owner: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT firm_id, import_id FROM clients WHERE id = $1")
                    .bind(client)
                    .fetch_optional(&mut *$tx)
                    .await?;
            let Some((firm, import)) = owner else {
                return Ok(None);
            };
            let event = $crate::events::Event::for_client($kind, &firm, client, $data)
                .in_bulk(import.is_some());
            $crate::events::emit!($tx, &event)
        }
        .await;
        result
    }};
}
pub(crate) use emit_for_client;

/// Writes `event` in a transaction of its own, for a change whose own
/// record is not in the business database (a job's failed attempt is
/// recorded by the queue, which may be Redis).
pub async fn emit_alone(
    db: &crate::db::Database,
    event: &Event,
) -> Result<Option<String>, sqlx::Error> {
    use crate::db::Database;
    let _turn = db.write_turn(crate::write_gate::Lane::Background).await;
    match db {
        // Immediate: the transaction reads before it writes, and a read
        // lock upgraded while another process writes would fail.
        Database::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let id = emit!(tx, event)?;
            tx.commit().await?;
            Ok(id)
        }
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let id = emit!(tx, event)?;
            tx.commit().await?;
            Ok(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_reads_back_and_subscriptions_match_exactly() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("client.*"), None);
        let stored = r#"["client.ready","invitation.sent"]"#;
        assert!(subscribed(stored, EventType::ClientReady));
        assert!(!subscribed(stored, EventType::ClientEnriched));
        assert!(!subscribed("not json", EventType::ClientReady));
    }
}
