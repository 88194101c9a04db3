//! `sirene-file`: a local extract of the Sirene open-data stock files
//! (StockUniteLegale and StockEtablissement, CSV, the INSEE API's column
//! names), indexed once into a SQLite file for lookups by SIRET. No network,
//! no quota: for offline use and for bulk imports that must not spend API
//! quota.

use std::path::Path;
use std::str::FromStr;

use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::{CompanyFacts, LookupError, Provider, insee};
use crate::siret::Siret;

pub const NAME: &str = "sirene-file";

/// Columns of StockEtablissement that belong in `adresseEtablissement`.
const ADDRESS_COLUMNS: [&str; 14] = [
    "complementAdresseEtablissement",
    "numeroVoieEtablissement",
    "indiceRepetitionEtablissement",
    "typeVoieEtablissement",
    "libelleVoieEtablissement",
    "codePostalEtablissement",
    "libelleCommuneEtablissement",
    "libelleCommuneEtrangerEtablissement",
    "distributionSpecialeEtablissement",
    "codeCommuneEtablissement",
    "codeCedexEtablissement",
    "libelleCedexEtablissement",
    "codePaysEtrangerEtablissement",
    "libellePaysEtrangerEtablissement",
];

/// Columns of StockEtablissement that describe the current period.
const PERIOD_COLUMNS: [&str; 4] = [
    "etatAdministratifEtablissement",
    "activitePrincipaleEtablissement",
    "nomenclatureActivitePrincipaleEtablissement",
    "caractereEmployeurEtablissement",
];

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{file}: {source}")]
    Csv { file: String, source: csv::Error },
    #[error("{file}, line {line}: {why}")]
    Row {
        file: String,
        line: u64,
        why: String,
    },
    #[error("index database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What an index run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IndexReport {
    pub units: u64,
    pub establishments: u64,
}

async fn open_pool(path: &str, create: bool) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
        .create_if_missing(create)
        .read_only(!create);
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
}

/// Reads one CSV file into `(column → value)` rows, empty cells as null.
fn rows(
    path: &Path,
) -> Result<(Vec<String>, csv::StringRecordsIntoIter<std::fs::File>), IndexError> {
    let file = path.display().to_string();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .map_err(|source| IndexError::Csv {
            file: file.clone(),
            source,
        })?;
    let headers = reader
        .headers()
        .map_err(|source| IndexError::Csv { file, source })?
        .iter()
        .map(str::to_string)
        .collect();
    Ok((headers, reader.into_records()))
}

fn row_object(headers: &[String], record: &csv::StringRecord) -> Map<String, Value> {
    headers
        .iter()
        .zip(record.iter())
        .map(|(h, v)| {
            let v = if v.is_empty() {
                Value::Null
            } else {
                Value::String(v.to_string())
            };
            (h.clone(), v)
        })
        .collect()
}

/// Builds (or rebuilds) the index at `out` from the two stock files. The
/// index is written to a temporary file and renamed at the end, so a failed
/// run leaves the previous index in place.
pub async fn build_index(
    units: &Path,
    establishments: &Path,
    out: &Path,
) -> Result<IndexReport, IndexError> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = out.with_extension("building");
    let _ = std::fs::remove_file(&tmp);
    let pool = open_pool(&tmp.display().to_string(), true).await?;
    sqlx::query(
        "CREATE TABLE units (siren TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL);
         CREATE TABLE establishments (siret TEXT PRIMARY KEY NOT NULL, siren TEXT NOT NULL, data TEXT NOT NULL);",
    )
    .execute(&pool)
    .await?;
    let mut report = IndexReport {
        units: 0,
        establishments: 0,
    };
    let mut tx = pool.begin().await?;
    let (headers, records) = rows(units)?;
    for (i, record) in records.enumerate() {
        let file = units.display().to_string();
        let record = record.map_err(|source| IndexError::Csv {
            file: file.clone(),
            source,
        })?;
        let obj = row_object(&headers, &record);
        let siren = obj
            .get("siren")
            .and_then(Value::as_str)
            .ok_or_else(|| IndexError::Row {
                file,
                line: i as u64 + 2,
                why: "no `siren` value".into(),
            })?;
        sqlx::query("INSERT OR REPLACE INTO units (siren, data) VALUES (?1, ?2)")
            .bind(siren.to_string())
            .bind(Value::Object(obj.clone()).to_string())
            .execute(&mut *tx)
            .await?;
        report.units += 1;
    }
    let (headers, records) = rows(establishments)?;
    for (i, record) in records.enumerate() {
        let file = establishments.display().to_string();
        let record = record.map_err(|source| IndexError::Csv {
            file: file.clone(),
            source,
        })?;
        let obj = row_object(&headers, &record);
        let get = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(siret), Some(siren)) = (get("siret"), get("siren")) else {
            return Err(IndexError::Row {
                file,
                line: i as u64 + 2,
                why: "no `siret` or `siren` value".into(),
            });
        };
        sqlx::query(
            "INSERT OR REPLACE INTO establishments (siret, siren, data) VALUES (?1, ?2, ?3)",
        )
        .bind(siret)
        .bind(siren)
        .bind(Value::Object(obj).to_string())
        .execute(&mut *tx)
        .await?;
        report.establishments += 1;
    }
    tx.commit().await?;
    pool.close().await;
    std::fs::rename(&tmp, out)?;
    Ok(report)
}

pub struct SireneFile {
    pool: SqlitePool,
}

impl SireneFile {
    /// Opens an index built by [`build_index`], read-only.
    pub async fn open(path: &str) -> Result<SireneFile, sqlx::Error> {
        if !Path::new(path).is_file() {
            return Err(sqlx::Error::Configuration(
                format!("no index file at {path}").into(),
            ));
        }
        Ok(SireneFile {
            pool: open_pool(path, false).await?,
        })
    }
}

/// Shapes the two rows like an INSEE `/siret` answer, so that one mapping
/// (with its traps: current period, sole traders, `[ND]`) serves both.
fn as_insee_answer(establishment: &Map<String, Value>, unit: Map<String, Value>) -> Value {
    let mut e = Map::new();
    let mut address = Map::new();
    let mut period = Map::new();
    for (k, v) in establishment {
        if ADDRESS_COLUMNS.contains(&k.as_str()) {
            address.insert(k.clone(), v.clone());
        } else if PERIOD_COLUMNS.contains(&k.as_str()) {
            period.insert(k.clone(), v.clone());
        } else if k == "etablissementSiege" {
            e.insert(k.clone(), Value::Bool(v.as_str() == Some("true")));
        } else {
            e.insert(k.clone(), v.clone());
        }
    }
    e.insert("adresseEtablissement".into(), Value::Object(address));
    e.insert(
        "periodesEtablissement".into(),
        Value::Array(vec![Value::Object(period)]),
    );
    e.insert("uniteLegale".into(), Value::Object(unit));
    serde_json::json!({ "etablissement": e })
}

#[async_trait::async_trait]
impl Provider for SireneFile {
    fn name(&self) -> &str {
        NAME
    }

    fn quota(&self) -> Option<(u32, std::time::Duration)> {
        None
    }

    async fn lookup(&self, siret: &Siret) -> Result<CompanyFacts, LookupError> {
        let failed = |e: sqlx::Error| LookupError::Transient {
            provider: NAME.into(),
            message: format!("index: {e}"),
        };
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT e.data, u.data FROM establishments e LEFT JOIN units u ON u.siren = e.siren WHERE e.siret = ?1",
        )
        .bind(siret.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?;
        let Some((establishment, unit)) = row else {
            return Err(LookupError::NotFound {
                provider: NAME.into(),
                siret: siret.to_string(),
            });
        };
        let parse = |text: &str| -> Result<Map<String, Value>, LookupError> {
            serde_json::from_str(text).map_err(|e| LookupError::Transient {
                provider: NAME.into(),
                message: format!("corrupt index row: {e}"),
            })
        };
        let establishment = parse(&establishment)?;
        let unit = match unit {
            Some(u) => parse(&u)?,
            None => Map::new(),
        };
        insee::map_as(NAME, siret, &as_insee_answer(&establishment, unit))
    }
}
