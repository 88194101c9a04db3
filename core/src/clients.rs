//! Clients of the firm: what the user typed, what the registries say, and
//! the values in force. Enrichment fills empty fields and never overwrites a
//! typed value; where the two disagree the difference is recorded.
//!
//! The same SQL runs on SQLite and PostgreSQL (`$N` placeholders, numbered
//! in order of first appearance, which both engines read alike).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::events::{Event, EventType, emit};
use crate::sirene::{CompanyFacts, Director};
use crate::siret::{NumberError, Siret};
use crate::write_gate::Lane;

/// Company fields by name (`legal_name`, `address.city`…).
pub type Fields = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid SIRET: {0}")]
    InvalidSiret(#[from] NumberError),
    #[error("SIRET {siret} is already used by client {existing_id}{}{}", existing_name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
        if *existing_archived { format!(", archived: `dossier client unarchive {existing_id}` brings it back") } else { String::new() })]
    DuplicateSiret {
        siret: String,
        existing_id: String,
        existing_name: Option<String>,
        existing_archived: bool,
    },
    #[error("no client with id {0}")]
    NotFound(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored client {id} is unreadable: {why}")]
    Corrupt { id: String, why: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrichmentStatus {
    Pending,
    Enriched,
    NotFound,
    /// No SIRET: the client was entered by hand and is not enriched.
    Skipped,
}

impl EnrichmentStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EnrichmentStatus::Pending => "pending",
            EnrichmentStatus::Enriched => "enriched",
            EnrichmentStatus::NotFound => "not_found",
            EnrichmentStatus::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => EnrichmentStatus::Pending,
            "enriched" => EnrichmentStatus::Enriched,
            "not_found" => EnrichmentStatus::NotFound,
            "skipped" => EnrichmentStatus::Skipped,
            _ => return None,
        })
    }
}

/// A typed value and the registry's, where they disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub field: String,
    pub entered: String,
    pub registry: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Client {
    pub id: String,
    pub firm_id: String,
    pub siret: Option<String>,
    pub entered: Fields,
    pub registry: Option<CompanyFacts>,
    pub company: Fields,
    pub differences: Vec<Difference>,
    /// The registry's directors, as suggestions for the invitation.
    pub directors: Vec<Director>,
    pub enrichment_status: EnrichmentStatus,
    pub enrichment_message: Option<String>,
    /// Shown with the client, e.g. "the company is closed in the registry".
    pub warning: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub enriched_at_ms: Option<i64>,
    /// The import that created the client; `None` when it was created one
    /// by one (by hand, the hook, the command line). Its lookups are bulk.
    pub import_id: Option<String>,
    /// When the firm stopped working with the client (`client archive`):
    /// hidden from listings, its work stopped. `None`: active.
    pub archived_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub firm_id: String,
    /// As typed; spaces and dots allowed. `None` for a client entered by hand.
    pub siret: Option<String>,
    pub entered: Fields,
}

type Row = (
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

/// Binds: id, firm, SIRET, entered (JSON; also the values in force until
/// enrichment), enrichment status, created/updated time.
pub(crate) const INSERT: &str = "INSERT INTO clients (id, firm_id, siret, entered, company, enrichment_status, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $4, $5, $6, $6)";

const SELECT: &str = "SELECT id, firm_id, siret, entered, registry, company, differences, directors, \
     enrichment_status, enrichment_message, warning, created_at, updated_at, enriched_at, import_id, archived_at FROM clients";

fn decode(row: Row) -> Result<Client, ClientError> {
    let (
        id,
        firm_id,
        siret,
        entered,
        registry,
        company,
        differences,
        directors,
        status,
        message,
        warning,
        created,
        updated,
        enriched,
        import_id,
        archived_at_ms,
    ) = row;
    let corrupt = |why: String| ClientError::Corrupt {
        id: id.clone(),
        why,
    };
    Ok(Client {
        entered: serde_json::from_str(&entered).map_err(|e| corrupt(format!("entered: {e}")))?,
        registry: registry
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| corrupt(format!("registry: {e}")))?,
        company: serde_json::from_str(&company).map_err(|e| corrupt(format!("company: {e}")))?,
        differences: serde_json::from_str(&differences)
            .map_err(|e| corrupt(format!("differences: {e}")))?,
        directors: serde_json::from_str(&directors)
            .map_err(|e| corrupt(format!("directors: {e}")))?,
        enrichment_status: EnrichmentStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("status {status}")))?,
        enrichment_message: message,
        warning,
        created_at_ms: created,
        updated_at_ms: updated,
        enriched_at_ms: enriched,
        import_id,
        archived_at_ms,
        id,
        firm_id,
        siret,
    })
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// A firm's clients, newest first (at most `limit`); archived ones are
/// not listed ([`archived`]).
pub async fn list(db: &Database, firm_id: &str, limit: i64) -> Result<Vec<Client>, ClientError> {
    let sql = format!(
        "{SELECT} WHERE firm_id = $1 AND archived_at IS NULL ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(firm_id).bind(limit).fetch_all(pool).await?);
    rows.into_iter().map(decode).collect()
}

/// A firm's archived clients, last archived first (at most `limit`).
pub async fn archived(
    db: &Database,
    firm_id: &str,
    limit: i64,
) -> Result<Vec<Client>, ClientError> {
    let sql = format!(
        "{SELECT} WHERE firm_id = $1 AND archived_at IS NOT NULL ORDER BY archived_at DESC, id DESC LIMIT $2"
    );
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(firm_id).bind(limit).fetch_all(pool).await?);
    rows.into_iter().map(decode).collect()
}

pub async fn get(db: &Database, id: &str) -> Result<Option<Client>, ClientError> {
    let sql = format!("{SELECT} WHERE id = $1");
    let row: Option<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?);
    row.map(decode).transpose()
}

async fn by_siret(
    db: &Database,
    firm_id: &str,
    siret: &str,
) -> Result<Option<Client>, ClientError> {
    let sql = format!("{SELECT} WHERE firm_id = $1 AND siret = $2");
    let row: Option<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(firm_id).bind(siret).fetch_optional(pool).await?);
    row.map(decode).transpose()
}

fn duplicate(siret: &str, existing: Client) -> ClientError {
    ClientError::DuplicateSiret {
        siret: siret.to_string(),
        existing_name: existing.company.get("legal_name").cloned(),
        existing_archived: existing.archived_at_ms.is_some(),
        existing_id: existing.id,
    }
}

/// Creates a client. A SIRET already used in the firm is refused, naming
/// the client that has it (the unique index makes this hold under races too).
pub async fn create(db: &Database, new: NewClient) -> Result<Client, ClientError> {
    let siret = new.siret.as_deref().map(Siret::parse).transpose()?;
    if let Some(s) = &siret
        && let Some(existing) = by_siret(db, &new.firm_id, s.as_str()).await?
    {
        return Err(duplicate(s.as_str(), existing));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    let status = if siret.is_some() {
        EnrichmentStatus::Pending
    } else {
        EnrichmentStatus::Skipped
    };
    let entered = json(&new.entered);
    let _turn = db.write_turn(Lane::Interactive).await;
    let result = on_pool!(db, pool => sqlx::query(INSERT)
    .bind(&id)
    .bind(&new.firm_id)
    .bind(siret.as_ref().map(|s| s.as_str().to_string()))
    .bind(&entered)
    .bind(status.as_str())
    .bind(now)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()));
    if let Err(e) = result {
        if let (Some(s), Some(db_err)) = (&siret, e.as_database_error())
            && db_err.is_unique_violation()
            && let Some(existing) = by_siret(db, &new.firm_id, s.as_str()).await?
        {
            return Err(duplicate(s.as_str(), existing));
        }
        return Err(e.into());
    }
    get(db, &id).await?.ok_or(ClientError::NotFound(id))
}

/// The registry's facts as named fields, comparable with typed ones.
pub fn facts_fields(f: &CompanyFacts) -> Fields {
    let mut out = Fields::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            out.insert(k.to_string(), v.to_string());
        }
    };
    put("legal_name", f.legal_name.as_deref());
    put("siren", Some(&f.siren));
    put("nic", Some(&f.nic));
    put("vat_number", Some(&f.vat_number));
    put(
        "head_office",
        f.head_office.map(|h| if h { "true" } else { "false" }),
    );
    let a = &f.address;
    put("address.number", a.number.as_deref());
    put("address.repetition", a.repetition.as_deref());
    put("address.street_type", a.street_type.as_deref());
    put("address.street_name", a.street_name.as_deref());
    put("address.complement", a.complement.as_deref());
    put("address.postal_code", a.postal_code.as_deref());
    put("address.city", a.city.as_deref());
    put("address.cedex", a.cedex.as_deref());
    put("address.country", a.country.as_deref());
    put("naf_code", f.naf_code.as_deref());
    put("legal_form_code", f.legal_form_code.as_deref());
    put("legal_form_label", f.legal_form_label.as_deref());
    put("creation_date", f.creation_date.as_deref());
    put("employee_band", f.employee_band.as_deref());
    put(
        "company_state",
        f.company_state.map(|s| match s {
            crate::sirene::State::Active => "active",
            crate::sirene::State::Closed => "closed",
        }),
    );
    out
}

fn same(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    norm(a) == norm(b)
}

/// Typed values win; registry values fill the gaps; disagreements are listed.
pub fn merge(entered: &Fields, registry: &Fields) -> (Fields, Vec<Difference>) {
    let mut company = registry.clone();
    let mut differences = Vec::new();
    for (field, typed) in entered {
        if let Some(reg) = registry.get(field)
            && !same(typed, reg)
        {
            differences.push(Difference {
                field: field.clone(),
                entered: typed.clone(),
                registry: reg.clone(),
            });
        }
        company.insert(field.clone(), typed.clone());
    }
    (company, differences)
}

/// Stores the registry's answer. Idempotent: the same facts give the same record.
pub async fn record_enrichment(
    db: &Database,
    id: &str,
    facts: &CompanyFacts,
) -> Result<Client, ClientError> {
    let client = get(db, id)
        .await?
        .ok_or_else(|| ClientError::NotFound(id.to_string()))?;
    let (company, differences) = merge(&client.entered, &facts_fields(facts));
    let warning = facts.warning();
    // A second run finding the same facts has nothing new to tell.
    let news = client.enrichment_status != EnrichmentStatus::Enriched
        || client.differences != differences
        || client.warning != warning;
    let event = news.then(|| {
        Event::for_client(
            EventType::ClientEnriched,
            &client.firm_id,
            id,
            serde_json::json!({
                "provider": facts.provider,
                "differences": differences,
                "closed": warning.is_some(),
                "warning": warning,
            }),
        )
        .in_bulk(client.import_id.is_some())
    });
    let now = now_ms();
    let _turn = db.write_turn(Lane::Background).await;
    on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "UPDATE clients SET registry = $1, company = $2, differences = $3, directors = $4,
                    enrichment_status = 'enriched', enrichment_message = NULL, warning = $5,
                    updated_at = $6, enriched_at = $6
             WHERE id = $7",
        )
        .bind(json(facts))
        .bind(json(&company))
        .bind(json(&differences))
        .bind(json(&facts.directors))
        .bind(&warning)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if let Some(event) = &event {
            emit!(tx, event)?;
        }
        tx.commit().await?;
    });
    get(db, id)
        .await?
        .ok_or_else(|| ClientError::NotFound(id.to_string()))
}

/// Records that the registries do not know the client's SIRET.
pub async fn record_not_found(db: &Database, id: &str, message: &str) -> Result<(), ClientError> {
    let _turn = db.write_turn(Lane::Background).await;
    on_pool!(db, pool => sqlx::query(
        "UPDATE clients SET enrichment_status = 'not_found', enrichment_message = $1, updated_at = $2 WHERE id = $3",
    )
    .bind(message)
    .bind(now_ms())
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected());
    Ok(())
}

/// Marks the client archived at `at_ms` with what archiving stops
/// (`record`, JSON), unless it already is: then its record is replaced by
/// `record` (the caller merged the two). `None`: no such client.
pub(crate) async fn set_archived(
    db: &Database,
    id: &str,
    at_ms: i64,
    record: &str,
) -> Result<Option<()>, ClientError> {
    let _turn = db.write_turn(Lane::Interactive).await;
    let changed = on_pool!(db, pool => sqlx::query(
        "UPDATE clients SET archived_at = COALESCE(archived_at, $1), archive = $2, updated_at = $1 WHERE id = $3",
    )
    .bind(at_ms)
    .bind(record)
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected());
    Ok((changed == 1).then_some(()))
}

/// The record kept by [`set_archived`], if the client is archived.
pub(crate) async fn archive_record(db: &Database, id: &str) -> Result<Option<String>, ClientError> {
    let row: Option<(Option<String>,)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT archive FROM clients WHERE id = $1 AND archived_at IS NOT NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?);
    Ok(row.map(|(r,)| r.unwrap_or_default()))
}

/// Makes an archived client active again; whether it was archived.
pub(crate) async fn clear_archived(db: &Database, id: &str) -> Result<bool, ClientError> {
    let _turn = db.write_turn(Lane::Interactive).await;
    let changed = on_pool!(db, pool => sqlx::query(
        "UPDATE clients SET archived_at = NULL, archive = NULL, updated_at = $1 WHERE id = $2 AND archived_at IS NOT NULL",
    )
    .bind(now_ms())
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected());
    Ok(changed == 1)
}

/// When the client's people were erased (`crate::erasure`), if they were.
pub async fn erased_at(db: &Database, id: &str) -> Result<Option<i64>, ClientError> {
    let row: Option<(Option<i64>,)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT erased_at FROM clients WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?);
    Ok(row.and_then(|(at,)| at))
}

/// Removes the people the registry listed from the client's record (its
/// directors, also inside the stored registry answer) and marks it erased:
/// 1 if there were some, else 0. The company facts stay.
pub(crate) async fn erase_people(db: &Database, id: &str, now: i64) -> Result<u64, ClientError> {
    let row: Option<(Option<String>, String)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT registry, directors FROM clients WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?);
    let Some((registry, directors)) = row else {
        return Ok(0);
    };
    let mut had = directors.trim() != "[]";
    let registry = match registry {
        Some(text) => {
            let mut value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ClientError::Corrupt {
                    id: id.to_string(),
                    why: format!("registry: {e}"),
                })?;
            if let Some(list) = value.get_mut("directors").and_then(|d| d.as_array_mut())
                && !list.is_empty()
            {
                list.clear();
                had = true;
            }
            Some(value.to_string())
        }
        None => None,
    };
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => sqlx::query(
        "UPDATE clients SET directors = '[]', registry = $1, erased_at = COALESCE(erased_at, $2), updated_at = $2
         WHERE id = $3",
    )
    .bind(registry)
    .bind(now)
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected());
    Ok(u64::from(had))
}

/// Whether the client is archived (a client that does not exist is not).
pub async fn is_archived(db: &Database, id: &str) -> Result<bool, ClientError> {
    let row: Option<(i64,)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT archived_at FROM clients WHERE id = $1 AND archived_at IS NOT NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?);
    Ok(row.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn typed_values_win_and_differences_are_listed() {
        let entered = fields(&[("legal_name", "Ganymède"), ("address.city", "paris  8")]);
        let registry = fields(&[
            ("legal_name", "GANYMEDE"),
            ("address.city", "PARIS 8"),
            ("naf_code", "62.02A"),
        ]);
        let (company, diffs) = merge(&entered, &registry);
        assert_eq!(company["legal_name"], "Ganymède");
        assert_eq!(company["naf_code"], "62.02A", "gaps are filled");
        assert_eq!(company["address.city"], "paris  8");
        assert_eq!(
            diffs,
            vec![Difference {
                field: "legal_name".into(),
                entered: "Ganymède".into(),
                registry: "GANYMEDE".into()
            }],
            "case and spacing are not differences; accents are"
        );
    }
}

#[cfg(test)]
mod db_tests {
    use super::*;

    #[tokio::test]
    async fn not_found_is_recorded_on_sqlite() {
        let dir =
            std::env::temp_dir().join(format!("dossier-clients-{}", uuid::Uuid::now_v7().simple()));
        let url = format!("sqlite://{}/c.db", dir.display());
        let db = Database::connect(&url, 1).await.expect("db");
        db.migrate().await.expect("migrate");
        let c = create(
            &db,
            NewClient {
                firm_id: "f".into(),
                siret: Some("73282932000074".into()),
                entered: Fields::new(),
            },
        )
        .await
        .expect("create");
        record_not_found(&db, &c.id, "nope").await.expect("update");
        let c = get(&db, &c.id).await.expect("get").expect("exists");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(c.enrichment_status, EnrichmentStatus::NotFound);
        assert_eq!(c.enrichment_message.as_deref(), Some("nope"));
    }
}
