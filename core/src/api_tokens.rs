//! API tokens issued by `dossier token create`: who may call the hooks and
//! the admin API, and for which firm. A token is shown once; only its
//! SHA-256 is stored (256 random bits need no slow hash: there is nothing
//! to guess). A `hooks` token belongs to one firm and sees that firm only;
//! an `admin` token is platform-wide, like the tokens of `http.tokens`.
//! [`authenticate`] is the one check every request goes through.

use crate::clock::{format_ms, now_ms};
use crate::db::{Database, on_pool};
use crate::firms::{self, FirmError};
use crate::write_gate::Lane;

/// Every issued token starts with this, so that a leaked one is
/// recognisable (secret scanners, logs) and anything else is refused
/// without a query.
pub const PREFIX: &str = "dsk_";
/// How stale `last_used_at` may get: recording every use would make every
/// request a write.
pub const LAST_USE_RESOLUTION_MS: i64 = 60_000;

/// What a token may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// A firm's own clients, jobs and invitations through the hooks.
    Hooks,
    /// Everything, every firm: /metrics, the dashboard, the admin API.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Hooks => "hooks",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "hooks" => Some(Scope::Hooks),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// Who a request speaks for, once its token is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every firm, every route: a configured token or an admin token.
    Platform,
    /// One firm's clients, jobs and invitations; no admin route.
    Firm(String),
}

impl Access {
    /// The firm the caller is confined to, if any.
    pub fn firm(&self) -> Option<&str> {
        match self {
            Access::Platform => None,
            Access::Firm(f) => Some(f),
        }
    }

    /// Whether the caller may see what belongs to `firm_id`.
    pub fn sees(&self, firm_id: &str) -> bool {
        self.firm().is_none_or(|f| f == firm_id)
    }
}

/// The name of the token a request came with, for the record of what an
/// operator did (`http.tokens` for a configured one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(pub String);

/// A token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub firm_id: Option<String>,
    pub scope: Scope,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
}

impl TokenRecord {
    /// active, expired or revoked, at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at_ms.is_some() {
            "revoked"
        } else if self.expires_at_ms.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: Option<String>,
    pub firm_id: Option<String>,
    pub scope: Scope,
    pub expires_at_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Firm(#[from] FirmError),
    #[error("a hooks token belongs to one firm: give --firm")]
    FirmRequired,
    #[error(
        "an admin token is platform-wide (every firm's jobs, /metrics, the dashboard): create it without --firm"
    )]
    AdminHasNoFirm,
    #[error("token name: {0}")]
    BadName(String),
    #[error(
        "expiry {0:?}: give a delay (90d, 12h, +30d), a date (2027-03-31, meaning 00:00 UTC that day) or an RFC 3339 time, in the future"
    )]
    BadExpiry(String),
    #[error("no token {0:?} (`dossier token list`)")]
    Unknown(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl TokenError {
    pub fn is_user_error(&self) -> bool {
        match self {
            TokenError::Db(_) => false,
            TokenError::Firm(e) => e.is_user_error(),
            _ => true,
        }
    }
}

/// Why a presented token was not accepted; each is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "send Authorization: Bearer <token> with a token from `dossier token create` or http.tokens"
    )]
    Unknown,
    #[error("this token expired at {0}; ask for a new one (`dossier token create`)")]
    Expired(String),
    #[error("this token was revoked; ask for a new one (`dossier token create`)")]
    Revoked,
}

/// `90d`, `+12h`, `2027-03-31` (00:00 UTC) or an RFC 3339 time, into epoch
/// ms; it must lie in the future.
pub fn parse_expiry(s: &str) -> Result<i64, TokenError> {
    crate::when::parse(s, crate::when::Direction::Ahead)
        .filter(|at| *at > now_ms())
        .ok_or_else(|| TokenError::BadExpiry(crate::text::for_terminal(s.trim()).into_owned()))
}

/// Issues a token: the record, and the token itself (shown once).
pub async fn create(db: &Database, new: NewToken) -> Result<(TokenRecord, String), TokenError> {
    match (new.scope, &new.firm_id) {
        (Scope::Hooks, None) => return Err(TokenError::FirmRequired),
        (Scope::Admin, Some(_)) => return Err(TokenError::AdminHasNoFirm),
        _ => {}
    }
    if let Some(firm) = &new.firm_id {
        firms::require(db, firm).await?;
    }
    let name = match new.name.as_deref().map(str::trim) {
        Some("") => return Err(TokenError::BadName("it is empty".into())),
        Some(n) => {
            crate::text::check(n, 100).map_err(|e| TokenError::BadName(e.to_string()))?;
            n.to_string()
        }
        None => format!(
            "{}-{}",
            new.firm_id.as_deref().unwrap_or("platform"),
            new.scope.as_str()
        ),
    };
    let secret = format!("{PREFIX}{}", crate::digest::random_token());
    let record = TokenRecord {
        id: format!("tok-{}", &crate::digest::random_token()[..16]),
        name,
        firm_id: new.firm_id,
        scope: new.scope,
        created_at_ms: now_ms(),
        expires_at_ms: new.expires_at_ms,
        revoked_at_ms: None,
        last_used_at_ms: None,
    };
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => sqlx::query(
        "INSERT INTO api_tokens (id, name, firm_id, scope, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&record.id)
    .bind(&record.name)
    .bind(&record.firm_id)
    .bind(record.scope.as_str())
    .bind(crate::digest::sha256_hex(secret.as_bytes()))
    .bind(record.created_at_ms)
    .bind(record.expires_at_ms)
    .execute(pool)
    .await
    .map(|_| ())?);
    Ok((record, secret))
}

type Row = (
    String,
    String,
    Option<String>,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

const COLUMNS: &str = "id, name, firm_id, scope, created_at, expires_at, revoked_at, last_used_at";

fn decode(row: Row) -> TokenRecord {
    let (id, name, firm_id, scope, created, expires, revoked, used) = row;
    TokenRecord {
        id,
        name,
        firm_id,
        // The column's CHECK allows these two only; a hand-edited row
        // reading otherwise grants the least.
        scope: Scope::parse(&scope).unwrap_or(Scope::Hooks),
        created_at_ms: created,
        expires_at_ms: expires,
        revoked_at_ms: revoked,
        last_used_at_ms: used,
    }
}

/// The tokens, newest first; of one firm with `firm`.
pub async fn list(db: &Database, firm: Option<&str>) -> Result<Vec<TokenRecord>, TokenError> {
    let rows: Vec<Row> = match firm {
        Some(f) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM api_tokens WHERE firm_id = $1 ORDER BY created_at DESC, id"
            );
            on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(f).fetch_all(pool).await?)
        }
        None => {
            let sql = format!("SELECT {COLUMNS} FROM api_tokens ORDER BY created_at DESC, id");
            on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?)
        }
    };
    Ok(rows.into_iter().map(decode).collect())
}

/// Revokes a token at once: its next request is refused. Revoking twice
/// keeps the first time.
pub async fn revoke(db: &Database, id: &str) -> Result<TokenRecord, TokenError> {
    let now = now_ms();
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => sqlx::query(
        "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(pool)
    .await
    .map(|_| ())?);
    drop(_turn);
    let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1");
    let row: Option<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?);
    row.map(decode)
        .ok_or_else(|| TokenError::Unknown(crate::text::for_terminal(id).into_owned()))
}

/// The access `presented` grants, or why it grants none. A token that is
/// not one of ours by its shape is refused without a query.
pub async fn authenticate(
    db: &Database,
    presented: &str,
) -> Result<(Access, TokenName), AuthError> {
    let plausible = presented.len() == PREFIX.len() + 64
        && presented
            .strip_prefix(PREFIX)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !plausible {
        return Err(AuthError::Refused(Refusal::Unknown));
    }
    let hash = crate::digest::sha256_hex(presented.as_bytes());
    let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1");
    let row: Option<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(&hash).fetch_optional(pool).await?);
    let token = row
        .map(decode)
        .ok_or(AuthError::Refused(Refusal::Unknown))?;
    let now = now_ms();
    if token.revoked_at_ms.is_some() {
        return Err(AuthError::Refused(Refusal::Revoked));
    }
    if let Some(at) = token.expires_at_ms.filter(|at| *at <= now) {
        return Err(AuthError::Refused(Refusal::Expired(format_ms(at))));
    }
    if token
        .last_used_at_ms
        .is_none_or(|t| t <= now - LAST_USE_RESOLUTION_MS)
    {
        // A use not recorded is a lost statistic, not a lost request.
        if let Err(e) = record_use(db, &token.id, now).await {
            tracing::warn!(error = %e, "recording a token's last use failed");
        }
    }
    let access = match (token.scope, token.firm_id) {
        (Scope::Hooks, Some(firm)) => Access::Firm(firm),
        (Scope::Admin, None) => Access::Platform,
        // Impossible under the table's CHECK; refused rather than guessed.
        _ => return Err(AuthError::Refused(Refusal::Unknown)),
    };
    Ok((access, TokenName(token.name)))
}

async fn record_use(db: &Database, id: &str, now: i64) -> Result<(), sqlx::Error> {
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => sqlx::query(
        "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)",
    )
    .bind(now)
    .bind(id)
    .bind(now - LAST_USE_RESOLUTION_MS)
    .execute(pool)
    .await
    .map(|_| ())?);
    Ok(())
}

/// [`authenticate`]'s failure: a refusal (401) or a database that cannot
/// answer (503: a valid token must not read as revoked).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Refused(Refusal),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_delays_dates_or_times_in_the_future() {
        let now = now_ms();
        let d90 = parse_expiry("90d").expect("90d");
        assert!((d90 - now - 90 * 86_400_000).abs() < 5_000);
        assert!(parse_expiry("+12h").is_ok());
        assert_eq!(
            parse_expiry("2099-03-31").expect("date"),
            chrono::NaiveDate::from_ymd_opt(2099, 3, 31)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_millis())
                .expect("valid")
        );
        assert!(parse_expiry("2099-03-31T12:00:00+02:00").is_ok());
        for bad in ["2020-01-01", "yesterday", "90x", "", "d"] {
            let e = parse_expiry(bad).expect_err(bad).to_string();
            assert!(e.contains("in the future"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_firm_token_sees_its_firm_only() {
        let a = Access::Firm("a".into());
        assert!(a.sees("a"));
        assert!(!a.sees("b"));
        assert!(Access::Platform.sees("b"));
    }
}
