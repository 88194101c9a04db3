//! A firm's webhook endpoints: where its events go (`dossier webhook
//! add|list|remove|rotate-secret|enable`, and the admin API). The secret
//! signing the deliveries is made here, shown once, and kept sealed under
//! `apps.encryption_keys`, bound to the endpoint.

use serde::Serialize;

use super::EventType;
use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::secrets::{KeyRing, SecretError};
use crate::write_gate::Lane;

/// Longest endpoint URL.
pub const MAX_URL: usize = 2_000;
/// Endpoints one firm may have.
pub const MAX_PER_FIRM: i64 = 20;
/// Where a secret starts, so that a leaked one is recognised for what it is.
const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub id: String,
    pub firm_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at_ms: i64,
    pub rotated_at_ms: Option<i64>,
    /// Since when every delivery has failed, while some do.
    pub failing_since_ms: Option<i64>,
    pub disabled_at_ms: Option<i64>,
    pub disabled_reason: Option<String>,
}

impl Endpoint {
    pub fn state(&self) -> &'static str {
        match (self.disabled_at_ms, self.failing_since_ms) {
            (Some(_), _) => "disabled",
            (None, Some(_)) => "failing",
            (None, None) => "enabled",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Firm(#[from] crate::firms::FirmError),
    #[error("webhook URL: {0}")]
    BadUrl(String),
    #[error("webhook events: {0}")]
    BadEvents(String),
    #[error(
        "firm {0} has {MAX_PER_FIRM} webhook endpoints already: remove one (`dossier webhook list --firm {0}`)"
    )]
    TooMany(String),
    #[error("no webhook endpoint {0} (`dossier webhook list` shows them)")]
    NotFound(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl EndpointError {
    /// Whether the caller can fix it (exit code 2; HTTP 4xx).
    pub fn is_user_error(&self) -> bool {
        match self {
            EndpointError::Firm(e) => e.is_user_error(),
            EndpointError::Secret(SecretError::NoKey) => true,
            EndpointError::Secret(_) | EndpointError::Db(_) => false,
            _ => true,
        }
    }
}

/// The event types of a list as typed (`client.ready,invitation.sent`, or
/// `all`), each known, none twice.
pub fn parse_events(typed: &[String]) -> Result<Vec<EventType>, EndpointError> {
    let mut out = Vec::new();
    for t in typed.iter().flat_map(|t| t.split(',')).map(str::trim) {
        if t.is_empty() {
            continue;
        }
        if t == "all" {
            return Ok(EventType::ALL.to_vec());
        }
        let kind = EventType::parse(t).ok_or_else(|| {
            EndpointError::BadEvents(format!(
                "{:?} is not an event type; the types are: all, {}",
                crate::text::printable(&t.chars().take(60).collect::<String>()),
                EventType::ALL.map(EventType::as_str).join(", ")
            ))
        })?;
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    if out.is_empty() {
        return Err(EndpointError::BadEvents(
            "name at least one type (`--events client.ready,invitation.sent`, or `all`)".into(),
        ));
    }
    Ok(out)
}

/// A new secret: 32 random bytes in hex, recognisably a webhook secret.
fn new_secret() -> String {
    format!("{SECRET_PREFIX}{}", crate::digest::random_token())
}

/// What the secret is sealed against: it opens for this endpoint only.
pub(crate) fn seal_context(id: &str) -> String {
    format!("webhook:{id}")
}

type Row = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

const COLUMNS: &str =
    "id, firm_id, url, events, created_at, rotated_at, failing_since, disabled_at, disabled_reason";

fn endpoint(r: Row) -> Endpoint {
    Endpoint {
        id: r.0,
        firm_id: r.1,
        url: r.2,
        events: serde_json::from_str(&r.3).unwrap_or_default(),
        created_at_ms: r.4,
        rotated_at_ms: r.5,
        failing_since_ms: r.6,
        disabled_at_ms: r.7,
        disabled_reason: r.8,
    }
}

/// Records an endpoint of `firm` for `events` at `url` (checked against
/// the outbound policy: https, a public address unless allowed). Gives it
/// with its secret, which is never shown again.
pub async fn add(
    db: &Database,
    keys: &KeyRing,
    outbound: &crate::config::OutboundSettings,
    firm: &str,
    url: &str,
    events: &[EventType],
) -> Result<(Endpoint, String), EndpointError> {
    crate::firms::require(db, firm).await?;
    crate::text::check(url, MAX_URL).map_err(|e| EndpointError::BadUrl(e.to_string()))?;
    if let Some(why) = outbound.url_problem(url) {
        return Err(EndpointError::BadUrl(why));
    }
    let id = format!("whk_{}", &uuid::Uuid::now_v7().simple().to_string()[..20]);
    let secret = new_secret();
    let sealed = keys.seal(&secret, &seal_context(&id))?;
    let types: Vec<&str> = events.iter().map(|t| t.as_str()).collect();
    let now = now_ms();
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => {
        // The insert first: on SQLite it takes the write lock, so the
        // count below sees every endpoint committed before.
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, firm_id, url, events, secret, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(firm)
        .bind(url)
        .bind(serde_json::to_string(&types).unwrap_or_default())
        .bind(&sealed)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM webhook_endpoints WHERE firm_id = $1")
                .bind(firm)
                .fetch_one(&mut *tx)
                .await?;
        if count > MAX_PER_FIRM {
            return Err(EndpointError::TooMany(firm.to_string()));
        }
        tx.commit().await?;
    });
    let e = get(db, &id, None)
        .await?
        .ok_or_else(|| EndpointError::NotFound(id.clone()))?;
    Ok((e, secret))
}

/// The endpoints of `firm`, or of every firm; oldest first.
pub async fn list(db: &Database, firm: Option<&str>) -> Result<Vec<Endpoint>, EndpointError> {
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints
         WHERE ($1 IS NULL OR firm_id = $1) ORDER BY created_at, id"
    )))
    .bind(firm)
    .fetch_all(pool)
    .await?);
    Ok(rows.into_iter().map(endpoint).collect())
}

/// One endpoint; with `firm`, only if it is that firm's (another firm's
/// endpoint is as absent as one that does not exist).
pub async fn get(
    db: &Database,
    id: &str,
    firm: Option<&str>,
) -> Result<Option<Endpoint>, EndpointError> {
    let row: Option<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND ($2 IS NULL OR firm_id = $2)"
    )))
    .bind(id)
    .bind(firm)
    .fetch_optional(pool)
    .await?);
    Ok(row.map(endpoint))
}

async fn require(db: &Database, id: &str, firm: Option<&str>) -> Result<Endpoint, EndpointError> {
    get(db, id, firm)
        .await?
        .ok_or_else(|| EndpointError::NotFound(crate::text::printable(id).into_owned()))
}

/// Removes an endpoint with its pending deliveries (their jobs find
/// nothing to send and finish).
pub async fn remove(
    db: &Database,
    id: &str,
    firm: Option<&str>,
) -> Result<Endpoint, EndpointError> {
    let e = require(db, id, firm).await?;
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(&e.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(&e.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
    Ok(e)
}

/// A new secret for the endpoint, shown once; the old one stops signing at
/// once (the receiver takes the new one before the next delivery).
pub async fn rotate_secret(
    db: &Database,
    keys: &KeyRing,
    id: &str,
    firm: Option<&str>,
) -> Result<(Endpoint, String), EndpointError> {
    let e = require(db, id, firm).await?;
    let secret = new_secret();
    let sealed = keys.seal(&secret, &seal_context(&e.id))?;
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => sqlx::query(
        "UPDATE webhook_endpoints SET secret = $1, rotated_at = $2 WHERE id = $3",
    )
    .bind(&sealed)
    .bind(now_ms())
    .bind(&e.id)
    .execute(pool)
    .await?
    .rows_affected());
    let e = require(db, id, firm).await?;
    Ok((e, secret))
}

/// Turns a disabled endpoint back on: new events reach it again. What it
/// missed is in the dead set (`dossier jobs list --kind webhook_delivery
/// --status dead`), for `dossier jobs retry`.
pub async fn enable(
    db: &Database,
    id: &str,
    firm: Option<&str>,
) -> Result<Endpoint, EndpointError> {
    let e = require(db, id, firm).await?;
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => sqlx::query(
        "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL
         WHERE id = $1",
    )
    .bind(&e.id)
    .execute(pool)
    .await?
    .rows_affected());
    require(db, id, firm).await
}

/// The opened secret of an endpoint, to sign with.
pub(crate) fn open_secret(keys: &KeyRing, id: &str, sealed: &str) -> Result<String, SecretError> {
    keys.open(sealed, &seal_context(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lists_are_checked_and_all_means_every_type() {
        let typed = |s: &str| vec![s.to_string()];
        assert_eq!(
            parse_events(&typed("client.ready, invitation.sent,client.ready")).unwrap(),
            vec![EventType::ClientReady, EventType::InvitationSent]
        );
        assert_eq!(parse_events(&typed("all")).unwrap().len(), 9);
        let e = parse_events(&typed("client.redy")).unwrap_err().to_string();
        assert!(e.contains("\"client.redy\" is not an event type"), "{e}");
        assert!(e.contains("client.ready"), "{e}");
        assert!(parse_events(&typed(" , ")).is_err());
    }
}
