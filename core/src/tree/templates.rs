//! A firm's stored tree templates: load (create or replace), list, find the
//! default. A firm that has loaded none uses the built-in
//! `cabinet-standard` tree shipped in `config/trees/`.

use serde::Serialize;

use super::template::{TemplateError, TreeTemplate};
use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::write_gate::Lane;

/// The tree shipped with Dossier, used by firms that loaded none.
pub const BUILTIN_NAME: &str = "cabinet-standard";
const BUILTIN_TEXT: &str = include_str!("../../../config/trees/cabinet-standard.toml");

/// The built-in template. Its file is validated by a unit test, so this
/// parse cannot fail in a released build.
pub fn builtin() -> Result<TreeTemplate, TemplateError> {
    TreeTemplate::parse(
        "config/trees/cabinet-standard.toml (built in)",
        BUILTIN_TEXT,
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredTemplate {
    pub firm_id: String,
    pub is_default: bool,
    /// The file it was loaded from; `None` for the built-in one.
    pub source: Option<String>,
    pub updated_at_ms: i64,
    pub template: TreeTemplate,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Firm(#[from] crate::firms::FirmError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored template {name} of firm {firm} is unreadable: {why}")]
    Corrupt {
        firm: String,
        name: String,
        why: String,
    },
}

/// What `load` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Loaded {
    Created,
    Replaced,
    Unchanged,
}

type Row = (String, String, bool, String, Option<String>, i64);

fn decode(row: Row) -> Result<StoredTemplate, StoreError> {
    let (firm_id, name, is_default, definition, source, updated) = row;
    let template = serde_json::from_str(&definition).map_err(|e| StoreError::Corrupt {
        firm: firm_id.clone(),
        name,
        why: e.to_string(),
    })?;
    Ok(StoredTemplate {
        firm_id,
        is_default,
        source,
        updated_at_ms: updated,
        template,
    })
}

const SELECT: &str =
    "SELECT firm_id, name, is_default, definition, source, updated_at FROM tree_templates";

/// Stores a validated template for a firm, replacing one of the same name.
/// The firm's first template becomes its default; `make_default` moves the
/// default to this one. Clients already set up keep their tree.
pub async fn load(
    db: &Database,
    firm_id: &str,
    template: &TreeTemplate,
    source: &str,
    make_default: bool,
) -> Result<Loaded, StoreError> {
    crate::firms::require(db, firm_id).await?;
    let definition = serde_json::to_string(template).map_err(|e| StoreError::Corrupt {
        firm: firm_id.into(),
        name: template.name.clone(),
        why: e.to_string(),
    })?;
    let now = now_ms();
    let id = uuid::Uuid::now_v7().to_string();
    let _turn = db.write_turn(Lane::Interactive).await;
    let outcome = on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        let before: Option<(String,)> = sqlx::query_as(
            "SELECT definition FROM tree_templates WHERE firm_id = $1 AND name = $2",
        )
        .bind(firm_id)
        .bind(&template.name)
        .fetch_optional(&mut *tx)
        .await?;
        let has_default: Option<(String,)> = sqlx::query_as(
            "SELECT name FROM tree_templates WHERE firm_id = $1 AND is_default",
        )
        .bind(firm_id)
        .fetch_optional(&mut *tx)
        .await?;
        let becomes_default = make_default || has_default.is_none();
        if becomes_default {
            sqlx::query("UPDATE tree_templates SET is_default = FALSE WHERE firm_id = $1 AND name <> $2")
                .bind(firm_id)
                .bind(&template.name)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO tree_templates (id, firm_id, name, is_default, definition, source, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (firm_id, name) DO UPDATE
               SET definition = excluded.definition, source = excluded.source,
                   is_default = excluded.is_default OR tree_templates.is_default,
                   updated_at = excluded.updated_at",
        )
        .bind(&id)
        .bind(firm_id)
        .bind(&template.name)
        .bind(becomes_default)
        .bind(&definition)
        .bind(source)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        match before {
            None => Loaded::Created,
            Some((old,)) if old == definition => Loaded::Unchanged,
            Some(_) => Loaded::Replaced,
        }
    });
    Ok(outcome)
}

/// The firm's templates, the default first; the built-in one when it has none.
pub async fn list(db: &Database, firm_id: &str) -> Result<Vec<StoredTemplate>, StoreError> {
    let sql = format!("{SELECT} WHERE firm_id = $1 ORDER BY is_default DESC, name");
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(firm_id).fetch_all(pool).await?);
    if rows.is_empty() {
        return Ok(vec![builtin_stored(firm_id)?]);
    }
    rows.into_iter().map(decode).collect()
}

fn builtin_stored(firm_id: &str) -> Result<StoredTemplate, StoreError> {
    Ok(StoredTemplate {
        firm_id: firm_id.to_string(),
        is_default: true,
        source: None,
        updated_at_ms: 0,
        template: builtin()?,
    })
}

/// One template by name; the built-in one answers to its name when the
/// firm has not loaded a template of that name.
pub async fn get(
    db: &Database,
    firm_id: &str,
    name: &str,
) -> Result<Option<StoredTemplate>, StoreError> {
    let sql = format!("{SELECT} WHERE firm_id = $1 AND name = $2");
    let row: Option<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(firm_id).bind(name).fetch_optional(pool).await?);
    match row {
        Some(r) => decode(r).map(Some),
        None if name == BUILTIN_NAME => builtin_stored(firm_id).map(Some),
        None => Ok(None),
    }
}

/// The template new clients of the firm get.
pub async fn default_for(db: &Database, firm_id: &str) -> Result<StoredTemplate, StoreError> {
    let sql = format!("{SELECT} WHERE firm_id = $1 AND is_default");
    let row: Option<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(firm_id).fetch_optional(pool).await?);
    match row {
        Some(r) => decode(r),
        None => builtin_stored(firm_id),
    }
}
