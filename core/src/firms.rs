//! Firms as records: `dossier firm add|list|show`. Everything a firm owns
//! (clients, tree templates, its app catalogue, members, imports) names a
//! firm recorded here; [`require`] is the one check, so that a typo in a
//! firm id is refused with a clear message instead of starting a new firm.

use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::write_gate::Lane;

/// Longest firm id: it appears in URLs, file names and every log line.
pub const MAX_FIRM_ID: usize = 64;
/// Longest firm name.
pub const MAX_FIRM_NAME: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Firm {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
}

/// What a firm holds, for `dossier firm show`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FirmSummary {
    #[serde(flatten)]
    pub firm: Firm,
    pub clients: i64,
    pub members: i64,
    pub tree_templates: i64,
    pub apps: i64,
    pub imports: i64,
    pub active_tokens: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum FirmError {
    #[error(
        "no firm {0:?}: check the spelling (`dossier firm list`), or add it with `dossier firm add {0} --name \"…\"`"
    )]
    Unknown(String),
    #[error("firm {0:?} exists already (`dossier firm show {0}`)")]
    Exists(String),
    #[error("firm id {id:?}: {why}")]
    BadId { id: String, why: String },
    #[error("firm name: {0}")]
    BadName(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl FirmError {
    /// Whether the caller can fix it (exit code 2 on the command line).
    pub fn is_user_error(&self) -> bool {
        !matches!(self, FirmError::Db(_))
    }
}

/// A firm id is short ASCII (letters, digits, `-`, `_`, `.`), starting with
/// a letter or digit: it is typed on command lines, put in URLs and paths,
/// and compared byte for byte.
pub fn check_id(id: &str) -> Result<(), FirmError> {
    let bad = |why: &str| FirmError::BadId {
        id: crate::text::for_terminal(&id.chars().take(80).collect::<String>()).into_owned(),
        why: why.into(),
    };
    if id.is_empty() {
        return Err(bad("it is empty; give one such as cabinet-durand"));
    }
    if id.len() > MAX_FIRM_ID {
        return Err(bad(&format!(
            "{} characters; at most {MAX_FIRM_ID}",
            id.chars().count()
        )));
    }
    if !id.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("it must start with a letter or a digit"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad(
            "use letters, digits, '-', '_' and '.' only (no spaces or accents)",
        ));
    }
    Ok(())
}

/// Records a firm.
pub async fn add(db: &Database, id: &str, name: &str) -> Result<Firm, FirmError> {
    check_id(id)?;
    let name = name.trim();
    if name.is_empty() {
        return Err(FirmError::BadName(
            "it is empty; give the firm's name as its clients know it".into(),
        ));
    }
    crate::text::check(name, MAX_FIRM_NAME).map_err(|e| FirmError::BadName(e.to_string()))?;
    let firm = Firm {
        id: id.to_string(),
        name: name.to_string(),
        created_at_ms: now_ms(),
    };
    let _turn = db.write_turn(Lane::Interactive).await;
    let inserted = on_pool!(db, pool => sqlx::query(
        "INSERT INTO firms (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&firm.id)
    .bind(&firm.name)
    .bind(firm.created_at_ms)
    .execute(pool)
    .await?
    .rows_affected());
    if inserted == 0 {
        return Err(FirmError::Exists(firm.id));
    }
    Ok(firm)
}

/// Every firm, by id.
pub async fn list(db: &Database) -> Result<Vec<Firm>, FirmError> {
    let rows: Vec<(String, String, i64)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT id, name, created_at FROM firms ORDER BY id",
    )
    .fetch_all(pool)
    .await?);
    Ok(rows
        .into_iter()
        .map(|(id, name, created_at_ms)| Firm {
            id,
            name,
            created_at_ms,
        })
        .collect())
}

/// One firm, if recorded. Firms recorded from older data may have ids
/// [`check_id`] would refuse today, so only what no id can hold (controls,
/// more than [`crate::text::MAX_ID`] characters) is refused unread.
pub async fn get(db: &Database, id: &str) -> Result<Option<Firm>, FirmError> {
    if id.is_empty() || crate::text::check(id, crate::text::MAX_ID).is_err() {
        return Ok(None);
    }
    let row: Option<(String, String, i64)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT id, name, created_at FROM firms WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?);
    Ok(row.map(|(id, name, created_at_ms)| Firm {
        id,
        name,
        created_at_ms,
    }))
}

/// The firm, or [`FirmError::Unknown`]: what every write on a firm's behalf
/// checks first.
pub async fn require(db: &Database, id: &str) -> Result<Firm, FirmError> {
    get(db, id).await?.ok_or_else(|| unknown(id))
}

/// "No such firm", quoting at most 80 characters of `id`, escaped.
pub fn unknown(id: &str) -> FirmError {
    let shown: String = id.chars().take(80).collect();
    FirmError::Unknown(crate::text::for_terminal(&shown).into_owned())
}

/// The firm with what it holds.
pub async fn summary(db: &Database, id: &str) -> Result<FirmSummary, FirmError> {
    let firm = require(db, id).await?;
    let now = now_ms();
    // Table names are constants of this function, never input.
    let count = |table: &'static str| {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE firm_id = $1");
        let firm_id = firm.id.clone();
        async move {
            let n: (i64,) = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(&firm_id)
                .fetch_one(pool)
                .await?);
            Ok::<i64, FirmError>(n.0)
        }
    };
    let active_tokens: (i64,) = on_pool!(db, pool => sqlx::query_as(
        "SELECT COUNT(*) FROM api_tokens WHERE firm_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(&firm.id)
    .bind(now)
    .fetch_one(pool)
    .await?);
    Ok(FirmSummary {
        clients: count("clients").await?,
        members: count("members").await?,
        tree_templates: count("tree_templates").await?,
        apps: count("app_catalogue").await?,
        imports: count("imports").await?,
        active_tokens: active_tokens.0,
        firm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firm_ids_are_short_plain_ascii() {
        for ok in ["cabinet-durand", "f", "c1", "cabinet_7.paris"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("-x", "start"),
            ("cabinet durand", "letters"),
            ("cabinét", "letters"),
            ("a\u{0}b", "letters"),
        ] {
            let e = check_id(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let long = "a".repeat(60_000);
        let e = check_id(&long).expect_err("long").to_string();
        assert!(e.contains("60000 characters; at most 64"), "{e}");
        assert!(e.len() < 300, "the message quotes a bounded prefix: {e}");
    }
}
