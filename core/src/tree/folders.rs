//! A client's folders: the template's directories, and inside each
//! `per_exercice` directory one folder per exercice (named by its label)
//! holding one folder per calendar month it touches (`2026-02 Février`).
//!
//! [`materialize`] makes the stored folders match the client's tree and
//! exercices. It only ever adds rows keyed by (client, path), with
//! `ON CONFLICT DO NOTHING`, inside one transaction per batch of clients:
//! running it twice, or from two workers at once, adds nothing the second
//! time, and a crash leaves either the whole batch or none of it. Rows go
//! in bulk — one statement per chunk, `UNNEST` arrays on PostgreSQL,
//! multi-row `VALUES` on SQLite — never one round trip per folder.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::template::TreeTemplate;
use super::templates::{self, StoreError};
use crate::clock::now_ms;
use crate::db::{Database, on_pool, placeholders};
use crate::exercice::{self, Exercice, ExerciceError, rules};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FolderKind {
    /// From the template.
    Directory,
    /// An exercice's folder inside a `per_exercice` directory.
    Exercice,
    /// A month inside an exercice folder.
    Month,
}

impl FolderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FolderKind::Directory => "directory",
            FolderKind::Exercice => "exercice",
            FolderKind::Month => "month",
        }
    }

    fn parse(s: &str) -> Option<FolderKind> {
        Some(match s {
            "directory" => FolderKind::Directory,
            "exercice" => FolderKind::Exercice,
            "month" => FolderKind::Month,
            _ => return None,
        })
    }
}

/// One folder to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Folder {
    pub client_id: String,
    pub path: String,
    pub parent_path: String,
    pub name: String,
    pub kind: FolderKind,
    pub theme: Option<String>,
    pub exercice_id: Option<String>,
}

/// Every folder a client with this tree and these exercices has, parents
/// before children.
pub fn plan(client_id: &str, template: &TreeTemplate, exercices: &[Exercice]) -> Vec<Folder> {
    let mut out = Vec::new();
    for dir in template.folders() {
        out.push(Folder {
            client_id: client_id.to_string(),
            path: dir.path.clone(),
            parent_path: dir.parent_path.clone(),
            name: dir.name.clone(),
            kind: FolderKind::Directory,
            theme: dir.theme.clone(),
            exercice_id: None,
        });
        if !dir.per_exercice {
            continue;
        }
        for ex in exercices {
            let ex_path = format!("{}/{}", dir.path, ex.label);
            out.push(Folder {
                client_id: client_id.to_string(),
                path: ex_path.clone(),
                parent_path: dir.path.clone(),
                name: ex.label.clone(),
                kind: FolderKind::Exercice,
                theme: dir.theme.clone(),
                exercice_id: Some(ex.id.clone()),
            });
            for (y, m) in rules::months_touched(ex.span()) {
                let name = rules::month_folder_name(y, m);
                out.push(Folder {
                    client_id: client_id.to_string(),
                    path: format!("{ex_path}/{name}"),
                    parent_path: ex_path.clone(),
                    name,
                    kind: FolderKind::Month,
                    theme: dir.theme.clone(),
                    exercice_id: Some(ex.id.clone()),
                });
            }
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("no client with id {0}")]
    ClientNotFound(String),
    #[error(
        "firm {firm} has no tree template named {name:?}: load it with `dossier tree load FILE` or leave the template out for the firm's default"
    )]
    UnknownTemplate { firm: String, name: String },
    #[error(
        "client {client} already has the tree {current:?}; a client's tree is set once (asked for {requested:?})"
    )]
    TreeAlreadySet {
        client: String,
        current: String,
        requested: String,
    },
    #[error(transparent)]
    Template(#[from] StoreError),
    #[error(transparent)]
    Exercice(#[from] ExerciceError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored tree of client {client} is unreadable: {why}")]
    Corrupt { client: String, why: String },
}

impl FolderError {
    /// Whether a retry could succeed (the database was unreachable, say).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FolderError::Db(_)
                | FolderError::Exercice(ExerciceError::Db(_))
                | FolderError::Template(StoreError::Db(_))
        )
    }
}

/// What [`materialize`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub clients: usize,
    /// Folders the clients should have.
    pub folders: u64,
    /// Of those, the ones this run wrote (the rest existed).
    pub created: u64,
    /// Exercices whose folders are now complete.
    pub exercices: usize,
}

/// Clients per transaction: bounds the transaction's size and lock time.
pub const CLIENTS_PER_BATCH: usize = 250;

/// Writes every folder the clients' trees and exercices call for. A client
/// without a tree gets `template` (by name) or its firm's default first.
pub async fn materialize(
    db: &Database,
    client_ids: &[String],
    template: Option<&str>,
) -> Result<Report, FolderError> {
    let mut ids = client_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut report = Report::default();
    for batch in ids.chunks(CLIENTS_PER_BATCH) {
        let r = materialize_batch(db, batch, template).await?;
        report.clients += r.clients;
        report.folders += r.folders;
        report.created += r.created;
        report.exercices += r.exercices;
    }
    Ok(report)
}

async fn materialize_batch(
    db: &Database,
    client_ids: &[String],
    requested: Option<&str>,
) -> Result<Report, FolderError> {
    let trees = ensure_trees(db, client_ids, requested).await?;
    let exercices = exercice::list_many(db, client_ids).await?;
    let mut by_client: HashMap<String, Vec<Exercice>> = HashMap::new();
    for e in exercices {
        by_client.entry(e.client_id.clone()).or_default().push(e);
    }
    let mut rows = Vec::new();
    let mut exercice_ids = Vec::new();
    for id in client_ids {
        let mine = by_client.remove(id).unwrap_or_default();
        let tree = trees
            .get(id)
            .ok_or_else(|| FolderError::ClientNotFound(id.clone()))?;
        rows.extend(plan(id, &tree.template, &mine));
        exercice_ids.extend(
            mine.into_iter()
                .filter(|e| e.folders_done_at_ms.is_none())
                .map(|e| e.id),
        );
    }
    // One order for every writer, so that two batches over the same
    // clients take their row locks in the same order and never deadlock.
    // A parent's path sorts before its children's.
    rows.sort_unstable_by(|a, b| (&a.client_id, &a.path).cmp(&(&b.client_id, &b.path)));
    exercice_ids.sort_unstable();
    let created = write(db, &rows, &exercice_ids).await?;
    Ok(Report {
        clients: client_ids.len(),
        folders: rows.len() as u64,
        created,
        exercices: exercice_ids.len(),
    })
}

/// The tree a client's folders follow: a template frozen at set-up.
#[derive(Debug, Clone)]
pub struct ClientTree {
    pub template_name: String,
    pub template: TreeTemplate,
}

/// The trees of the clients, assigning one to those that have none. When
/// two workers assign at once, the first insert wins and both use it.
async fn ensure_trees(
    db: &Database,
    client_ids: &[String],
    requested: Option<&str>,
) -> Result<HashMap<String, ClientTree>, FolderError> {
    let mut trees = client_trees(db, client_ids).await?;
    if let Some(name) = requested
        && let Some((client, tree)) = trees.iter().find(|(_, t)| t.template_name != name)
    {
        return Err(FolderError::TreeAlreadySet {
            client: client.clone(),
            current: tree.template_name.clone(),
            requested: name.to_string(),
        });
    }
    let mut missing: Vec<String> = client_ids
        .iter()
        .filter(|id| !trees.contains_key(*id))
        .cloned()
        .collect();
    // Sorted, like every multi-row write here, so that concurrent inserts
    // lock rows in the same order.
    missing.sort_unstable();
    if missing.is_empty() {
        return Ok(trees);
    }
    let firms = firms_of(db, &missing).await?;
    if let Some(id) = missing.iter().find(|id| !firms.contains_key(*id)) {
        return Err(FolderError::ClientNotFound(id.clone()));
    }
    let mut by_firm: BTreeMap<&str, (String, String)> = BTreeMap::new();
    for firm in firms.values() {
        if by_firm.contains_key(firm.as_str()) {
            continue;
        }
        let stored = match requested {
            Some(name) => templates::get(db, firm, name).await?.ok_or_else(|| {
                FolderError::UnknownTemplate {
                    firm: firm.clone(),
                    name: name.to_string(),
                }
            })?,
            None => templates::default_for(db, firm).await?,
        };
        let definition =
            serde_json::to_string(&stored.template).map_err(|e| FolderError::Corrupt {
                client: String::new(),
                why: e.to_string(),
            })?;
        by_firm.insert(firm, (stored.template.name, definition));
    }
    let now = now_ms();
    let sql = format!(
        "INSERT INTO client_trees (client_id, template_name, definition, created_at) VALUES {}
         ON CONFLICT (client_id) DO NOTHING",
        (0..missing.len())
            .map(|i| format!("({})", placeholders(i * 4 + 1, 4)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    on_pool!(db, pool => {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in &missing {
            let (name, definition) = &by_firm[firms[id].as_str()];
            q = q.bind(id).bind(name).bind(definition).bind(now);
        }
        q.execute(pool).await?;
    });
    // Read back: another worker's insert may have won.
    trees.extend(client_trees(db, &missing).await?);
    Ok(trees)
}

/// The stored trees of these clients.
pub async fn client_trees(
    db: &Database,
    client_ids: &[String],
) -> Result<HashMap<String, ClientTree>, FolderError> {
    if client_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT client_id, template_name, definition FROM client_trees WHERE client_id IN ({})",
        placeholders(1, client_ids.len())
    );
    let rows: Vec<(String, String, String)> = on_pool!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in client_ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await?
    });
    rows.into_iter()
        .map(|(client, name, definition)| {
            let template = serde_json::from_str(&definition).map_err(|e| FolderError::Corrupt {
                client: client.clone(),
                why: e.to_string(),
            })?;
            Ok((
                client,
                ClientTree {
                    template_name: name,
                    template,
                },
            ))
        })
        .collect()
}

async fn firms_of(
    db: &Database,
    client_ids: &[String],
) -> Result<HashMap<String, String>, FolderError> {
    let sql = format!(
        "SELECT id, firm_id FROM clients WHERE id IN ({})",
        placeholders(1, client_ids.len())
    );
    let rows: Vec<(String, String)> = on_pool!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in client_ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await?
    });
    Ok(rows.into_iter().collect())
}

/// Rows per statement. SQLite binds at most 32,766 values (8 per row).
const SQLITE_ROWS_PER_STATEMENT: usize = 1_000;
const POSTGRES_ROWS_PER_STATEMENT: usize = 10_000;

const INSERT_COLUMNS: &str = "INSERT INTO client_folders (client_id, path, parent_path, name, kind, theme, exercice_id, created_at)";

/// Marks the exercices' folders written, inside the writer's transaction.
macro_rules! mark_done {
    ($tx:expr, $ids:expr, $now:expr) => {
        if !$ids.is_empty() {
            let sql = format!(
                "UPDATE exercices SET folders_done_at = $1 WHERE folders_done_at IS NULL AND id IN ({})",
                placeholders(2, $ids.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind($now);
            for id in $ids {
                q = q.bind(id);
            }
            q.execute(&mut *$tx).await?;
        }
    };
}

/// Writes the rows and marks the exercices done, in one transaction.
/// Returns how many rows were new.
async fn write(
    db: &Database,
    rows: &[Folder],
    exercice_ids: &[String],
) -> Result<u64, FolderError> {
    let now = now_ms();
    let mut created = 0;
    match db {
        Database::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
                let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                let sql = format!(
                    "{INSERT_COLUMNS} VALUES {values} ON CONFLICT (client_id, path) DO NOTHING"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for f in chunk {
                    q = q
                        .bind(&f.client_id)
                        .bind(&f.path)
                        .bind(&f.parent_path)
                        .bind(&f.name)
                        .bind(f.kind.as_str())
                        .bind(&f.theme)
                        .bind(&f.exercice_id)
                        .bind(now);
                }
                created += q.execute(&mut *tx).await?.rows_affected();
            }
            mark_done!(tx, exercice_ids, now);
            tx.commit().await?;
        }
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(POSTGRES_ROWS_PER_STATEMENT) {
                let col = |f: fn(&Folder) -> &str| chunk.iter().map(f).collect::<Vec<&str>>();
                let opt = |f: fn(&Folder) -> Option<&str>| {
                    chunk.iter().map(f).collect::<Vec<Option<&str>>>()
                };
                created += sqlx::query(
                    "INSERT INTO client_folders (client_id, path, parent_path, name, kind, theme, exercice_id, created_at)
                     SELECT c, p, pp, n, k, t, e, $8
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                          AS u(c, p, pp, n, k, t, e)
                     ON CONFLICT (client_id, path) DO NOTHING",
                )
                .bind(col(|f| &f.client_id))
                .bind(col(|f| &f.path))
                .bind(col(|f| &f.parent_path))
                .bind(col(|f| &f.name))
                .bind(col(|f| f.kind.as_str()))
                .bind(opt(|f| f.theme.as_deref()))
                .bind(opt(|f| f.exercice_id.as_deref()))
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            mark_done!(tx, exercice_ids, now);
            tx.commit().await?;
        }
    }
    Ok(created)
}

/// A stored folder, as listed for people.
#[derive(Debug, Clone, Serialize)]
pub struct StoredFolder {
    pub path: String,
    pub kind: FolderKind,
    pub theme: Option<String>,
    pub exercice_id: Option<String>,
}

/// A client's folders, sorted by path (as `tree` sorts).
pub async fn list(db: &Database, client_id: &str) -> Result<Vec<StoredFolder>, FolderError> {
    let rows: Vec<(String, String, Option<String>, Option<String>)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT path, kind, theme, exercice_id FROM client_folders WHERE client_id = $1 ORDER BY path",
    )
    .bind(client_id)
    .fetch_all(pool)
    .await?);
    rows.into_iter()
        .map(|(path, kind, theme, exercice_id)| {
            Ok(StoredFolder {
                kind: FolderKind::parse(&kind).ok_or_else(|| FolderError::Corrupt {
                    client: client_id.to_string(),
                    why: format!("folder {path:?} has kind {kind:?}"),
                })?,
                path,
                theme,
                exercice_id,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn exercice(id: &str, start: &str, end: &str) -> Exercice {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        let span = rules::Span {
            start: d(start),
            end: d(end),
        };
        Exercice {
            id: id.into(),
            client_id: "c".into(),
            start: span.start,
            end: span.end,
            label: rules::base_label(span),
            origin: "manual".into(),
            created_at_ms: 0,
            folders_done_at_ms: None,
        }
    }

    #[test]
    fn per_exercice_directories_get_exercice_and_month_folders() {
        let t = templates::builtin().expect("built-in tree");
        let folders = plan(
            "c",
            &t,
            &[
                exercice("e1", "2025-03-15", "2026-12-31"),
                exercice("e2", "2027-01-01", "2027-12-31"),
            ],
        );
        let dirs = t.folders().len();
        let per_exercice = t.folders().iter().filter(|d| d.per_exercice).count();
        assert_eq!(per_exercice, 4, "Achats, Ventes, Banque, Notes de frais");
        assert_eq!(folders.len(), dirs + per_exercice * (1 + 22 + 1 + 12));
        let paths: Vec<&str> = folders.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&"Comptabilité/Achats/2025-2026/2025-03 Mars"));
        assert!(paths.contains(&"Comptabilité/Notes de frais/2027/2027-08 Août"));
        let month = folders
            .iter()
            .find(|f| f.path == "Comptabilité/Banque/2027/2027-02 Février")
            .expect("month folder");
        assert_eq!(month.parent_path, "Comptabilité/Banque/2027");
        assert_eq!(month.kind, FolderKind::Month);
        assert_eq!(month.theme.as_deref(), Some("comptabilite"));
        assert_eq!(month.exercice_id.as_deref(), Some("e2"));
        // Parents come before children, so a reader never sees an orphan.
        for (i, f) in folders.iter().enumerate() {
            if !f.parent_path.is_empty() {
                assert!(
                    folders[..i].iter().any(|p| p.path == f.parent_path),
                    "{} before its parent",
                    f.path
                );
            }
        }
    }
}
