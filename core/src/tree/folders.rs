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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::template::TreeTemplate;
use super::templates::{self, StoreError};
use crate::clock::now_ms;
use crate::db::{Database, on_pool, placeholders};
use crate::exercice::{self, Exercice, ExerciceError, rules};
use crate::write_gate::Lane;

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
    /// Exercices whose folders this run completed (another writer may
    /// have completed some of the same ones first).
    pub exercices: usize,
}

/// Clients per transaction: bounds the transaction's size and lock time.
pub const CLIENTS_PER_BATCH: usize = 250;

/// Writes every folder the clients' trees and exercices call for. A client
/// without a tree gets `template` (by name) or its firm's default first.
///
/// Batches are pipelined: the next one is read and planned while the
/// current one is written, so the single writer stream never waits on
/// planning. Batches hold disjoint clients, so they never contend.
pub async fn materialize(
    db: &Database,
    client_ids: &[String],
    template: Option<&str>,
) -> Result<Report, FolderError> {
    let mut ids = client_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut report = Report::default();
    let mut ready: Option<Planned> = None;
    for batch in ids.chunks(CLIENTS_PER_BATCH) {
        let write_previous = async {
            match ready.take() {
                Some(p) => p.write(db).await.map(Some),
                None => Ok(None),
            }
        };
        let (next, written) = tokio::join!(plan_batch(db, batch, template), write_previous);
        if let Some(r) = written? {
            report.add(&r);
        }
        ready = Some(next?);
    }
    if let Some(p) = ready {
        report.add(&p.write(db).await?);
    }
    Ok(report)
}

impl Report {
    fn add(&mut self, r: &Report) {
        self.clients += r.clients;
        self.folders += r.folders;
        self.created += r.created;
        self.exercices += r.exercices;
    }
}

/// One batch, read and planned, ready to write.
struct Planned {
    clients: usize,
    planned: u64,
    rows: Vec<Folder>,
    exercice_ids: Vec<String>,
}

impl Planned {
    async fn write(self, db: &Database) -> Result<Report, FolderError> {
        let (created, marked) = write(db, &self.rows, &self.exercice_ids).await?;
        Ok(Report {
            clients: self.clients,
            folders: self.planned,
            created,
            exercices: marked as usize,
        })
    }
}

async fn plan_batch(
    db: &Database,
    client_ids: &[String],
    requested: Option<&str>,
) -> Result<Planned, FolderError> {
    let (trees, fresh) = ensure_trees(db, client_ids, requested).await?;
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
    let planned = rows.len() as u64;
    // Only what is missing is sent; the unique key still decides (see
    // `write`). A client whose tree this batch assigned has no folders yet.
    let known: Vec<String> = client_ids
        .iter()
        .filter(|id| !fresh.contains(*id))
        .cloned()
        .collect();
    let existing = existing_paths(db, &known).await?;
    if !existing.is_empty() {
        rows.retain(|f| {
            existing
                .get(f.client_id.as_str())
                .is_none_or(|paths| !paths.contains(f.path.as_str()))
        });
    }
    // One order for every writer, so that two batches over the same
    // clients take their row locks in the same order and never deadlock.
    // A parent's path sorts before its children's.
    rows.sort_unstable_by(|a, b| (&a.client_id, &a.path).cmp(&(&b.client_id, &b.path)));
    exercice_ids.sort_unstable();
    Ok(Planned {
        clients: client_ids.len(),
        planned,
        rows,
        exercice_ids,
    })
}

/// Runs a two-column query whose `sql` ends with `… IN`, for these ids.
async fn pairs_where_in<S: AsRef<str> + Sync>(
    db: &Database,
    sql: &str,
    ids: &[S],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let sql = format!("{sql} ({})", placeholders(1, ids.len()));
    Ok(on_pool!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id.as_ref());
        }
        q.fetch_all(pool).await?
    }))
}

/// The stored paths of these clients, by client.
async fn existing_paths(
    db: &Database,
    client_ids: &[String],
) -> Result<HashMap<String, HashSet<String>>, FolderError> {
    if client_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = pairs_where_in(
        db,
        "SELECT client_id, path FROM client_folders WHERE client_id IN",
        client_ids,
    )
    .await?;
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for (client, path) in rows {
        out.entry(client).or_default().insert(path);
    }
    Ok(out)
}

/// The tree a client's folders follow: a template frozen at set-up.
#[derive(Debug, Clone)]
pub struct ClientTree {
    pub template_name: String,
    pub template: Arc<TreeTemplate>,
}

/// A template's definition as stored, and its key: the SHA-256 of it.
pub(crate) fn snapshot(template: &TreeTemplate) -> Result<(String, String), FolderError> {
    let definition = serde_json::to_string(template).map_err(|e| FolderError::Corrupt {
        client: String::new(),
        why: e.to_string(),
    })?;
    Ok((crate::digest::sha256_hex(definition.as_bytes()), definition))
}

/// The trees of the clients, assigning one to those that have none (also
/// returned: they have no folders yet). When two workers assign at once,
/// the first insert wins and both use it.
async fn ensure_trees(
    db: &Database,
    client_ids: &[String],
    requested: Option<&str>,
) -> Result<(HashMap<String, ClientTree>, HashSet<String>), FolderError> {
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
    if missing.is_empty() {
        return Ok((trees, HashSet::new()));
    }
    // Sorted, like every multi-row write here, so that concurrent inserts
    // lock rows in the same order.
    missing.sort_unstable();
    let firms = firms_of(db, &missing).await?;
    if let Some(id) = missing.iter().find(|id| !firms.contains_key(*id)) {
        return Err(FolderError::ClientNotFound(id.clone()));
    }
    // firm → (template name, snapshot id, definition)
    let mut by_firm: BTreeMap<&str, (String, String, String)> = BTreeMap::new();
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
        let (id, definition) = snapshot(&stored.template)?;
        by_firm.insert(firm, (stored.template.name, id, definition));
    }
    let now = now_ms();
    let mut snapshots: Vec<&(String, String, String)> = by_firm.values().collect();
    snapshots.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    snapshots.dedup_by(|a, b| a.1 == b.1);
    let snapshot_sql = format!(
        "INSERT INTO tree_snapshots (id, template_name, definition, created_at) VALUES {}
         ON CONFLICT (id) DO NOTHING",
        (0..snapshots.len())
            .map(|i| format!("({})", placeholders(i * 4 + 1, 4)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let trees_sql = format!(
        "INSERT INTO client_trees (client_id, template_name, snapshot_id, created_at) VALUES {}
         ON CONFLICT (client_id) DO NOTHING",
        (0..missing.len())
            .map(|i| format!("({})", placeholders(i * 4 + 1, 4)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _turn = db.write_turn(Lane::Background).await;
    on_pool!(db, pool => {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(snapshot_sql));
        for (name, id, definition) in &snapshots {
            q = q.bind(id).bind(name).bind(definition).bind(now);
        }
        q.execute(pool).await?;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(trees_sql));
        for id in &missing {
            let (name, snapshot, _) = &by_firm[firms[id].as_str()];
            q = q.bind(id).bind(name).bind(snapshot).bind(now);
        }
        q.execute(pool).await?;
    });
    // Read back: another worker's insert may have won.
    trees.extend(client_trees(db, &missing).await?);
    Ok((trees, missing.into_iter().collect()))
}

/// The client's tree (its firm's default tree while its own is not set up).
pub async fn client_template(db: &Database, client_id: &str) -> Result<TreeTemplate, FolderError> {
    let trees = client_trees(db, &[client_id.to_string()]).await?;
    if let Some(t) = trees.get(client_id) {
        return Ok((*t.template).clone());
    }
    let firms = firms_of(db, &[client_id.to_string()]).await?;
    let firm = firms
        .get(client_id)
        .ok_or_else(|| FolderError::ClientNotFound(client_id.to_string()))?;
    Ok(templates::default_for(db, firm).await?.template)
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
        "SELECT client_id, template_name, snapshot_id FROM client_trees WHERE client_id IN ({})",
        placeholders(1, client_ids.len())
    );
    let rows: Vec<(String, String, String)> = on_pool!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in client_ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await?
    });
    let mut ids: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut snapshots: HashMap<String, Arc<TreeTemplate>> = HashMap::new();
    if !ids.is_empty() {
        let defs = pairs_where_in(
            db,
            "SELECT id, definition FROM tree_snapshots WHERE id IN",
            &ids,
        )
        .await?;
        for (id, definition) in defs {
            let template = serde_json::from_str(&definition).map_err(|e| FolderError::Corrupt {
                client: String::new(),
                why: format!("tree snapshot {id}: {e}"),
            })?;
            snapshots.insert(id, Arc::new(template));
        }
    }
    rows.into_iter()
        .map(|(client, name, snapshot)| {
            let template =
                snapshots
                    .get(&snapshot)
                    .cloned()
                    .ok_or_else(|| FolderError::Corrupt {
                        client: client.clone(),
                        why: format!("tree snapshot {snapshot} is missing"),
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
    let rows = pairs_where_in(
        db,
        "SELECT id, firm_id FROM clients WHERE id IN",
        client_ids,
    )
    .await?;
    Ok(rows.into_iter().collect())
}

/// Rows per statement. SQLite binds at most 32,766 values (8 per row).
const SQLITE_ROWS_PER_STATEMENT: usize = 1_000;
const POSTGRES_ROWS_PER_STATEMENT: usize = 10_000;

const INSERT_COLUMNS: &str = "INSERT INTO client_folders (client_id, path, parent_path, name, kind, theme, exercice_id, created_at)";

/// Same columns as INSERT_COLUMNS, for PostgreSQL's COPY.
pub(crate) const COPY_COLUMNS: &str =
    "client_id, path, parent_path, name, kind, theme, exercice_id, created_at";
const COPY_IN: &str = "COPY client_folders (client_id, path, parent_path, name, kind, theme, exercice_id, created_at) FROM STDIN";
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// Below this many rows a write is one UNNEST statement rather than a COPY.
const COPY_MIN_ROWS: usize = 5_000;

/// COPY's text format: backslash escapes, `\N` for NULL.
fn copy_field(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str("\\N"),
        Some(v) => {
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

/// One row of COPY text: tab-separated, newline-terminated.
pub(crate) fn copy_line(out: &mut String, f: &Folder, now: &str) {
    for v in [
        Some(f.client_id.as_str()),
        Some(&f.path),
        Some(&f.parent_path),
        Some(&f.name),
        Some(f.kind.as_str()),
    ] {
        copy_field(out, v);
        out.push('\t');
    }
    copy_field(out, f.theme.as_deref());
    out.push('\t');
    copy_field(out, f.exercice_id.as_deref());
    out.push('\t');
    out.push_str(now);
    out.push('\n');
}

/// Marks the exercices' folders written, inside the writer's transaction;
/// evaluates to how many were not marked yet.
macro_rules! mark_done {
    ($tx:expr, $ids:expr, $now:expr) => {
        if $ids.is_empty() {
            0
        } else {
            let sql = format!(
                "UPDATE exercices SET folders_done_at = $1 WHERE folders_done_at IS NULL AND id IN ({})",
                placeholders(2, $ids.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind($now);
            for id in $ids {
                q = q.bind(id);
            }
            q.execute(&mut *$tx).await?.rows_affected()
        }
    };
}

/// Binds the rows of a multi-row SQLite insert, in `INSERT_COLUMNS` order.
pub(crate) fn bind_rows<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    rows: &'q [Folder],
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    for f in rows {
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
    q
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Writes the rows and marks the exercices done, in one transaction.
/// Returns how many rows were new.
///
/// The rows were missing a moment ago, so they go in the fastest way the
/// engine has — COPY on PostgreSQL, a plain multi-row INSERT on SQLite —
/// with no `ON CONFLICT` (on PostgreSQL it costs every row a speculative
/// insertion, about half the speed). If another writer got some of them in meanwhile,
/// the unique key refuses the batch, which is rolled back and written
/// again with `ON CONFLICT DO NOTHING`.
/// Returns (folders created, exercices this write marked done).
async fn write(
    db: &Database,
    rows: &[Folder],
    exercice_ids: &[String],
) -> Result<(u64, u64), FolderError> {
    match write_once(db, rows, exercice_ids, false).await {
        Err(e) if is_unique_violation(&e) => {
            tracing::debug!("another writer added some of these folders; writing the rest");
            Ok(write_once(db, rows, exercice_ids, true).await?)
        }
        other => Ok(other?),
    }
}

async fn write_once(
    db: &Database,
    rows: &[Folder],
    exercice_ids: &[String],
    skip_existing: bool,
) -> Result<(u64, u64), sqlx::Error> {
    let now = now_ms();
    let on_conflict = if skip_existing {
        " ON CONFLICT (client_id, path) DO NOTHING"
    } else {
        ""
    };
    let mut created = 0;
    let marked;
    match db {
        Database::Sqlite(pool) => {
            let _turn = crate::db::sqlite_write_turn(pool, Lane::Background).await;
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
                let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                let sql = format!("{INSERT_COLUMNS} VALUES {values}{on_conflict}");
                created += bind_rows(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk, now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            marked = mark_done!(tx, exercice_ids, now);
            tx.commit().await?;
        }
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            // COPY is the fastest way in for many rows, but sqlx 0.9.0 sends
            // its data and its end in two writes on a socket without
            // TCP_NODELAY (transact-rs/sqlx#4335): Nagle holds the end until
            // the server's delayed ACK, 40 ms per COPY. One client's 82
            // folders take one UNNEST statement (one write) instead.
            if skip_existing || rows.len() < COPY_MIN_ROWS {
                let sql = format!(
                    "{INSERT_COLUMNS}
                     SELECT c, p, pp, n, k, t, e, $8
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                          AS u(c, p, pp, n, k, t, e){on_conflict}"
                );
                for chunk in rows.chunks(POSTGRES_ROWS_PER_STATEMENT) {
                    let col = |f: fn(&Folder) -> &str| chunk.iter().map(f).collect::<Vec<&str>>();
                    let opt = |f: fn(&Folder) -> Option<&str>| {
                        chunk.iter().map(f).collect::<Vec<Option<&str>>>()
                    };
                    created += sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
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
            } else if !rows.is_empty() {
                // COPY: the engine's fastest way in, checked by the same key.
                let mut copy = tx.copy_in_raw(COPY_IN).await?;
                let now = now.to_string();
                let mut buf = String::with_capacity(COPY_CHUNK_BYTES + 1024);
                for f in rows {
                    copy_line(&mut buf, f, &now);
                    if buf.len() >= COPY_CHUNK_BYTES {
                        copy.send(std::mem::take(&mut buf).into_bytes()).await?;
                    }
                }
                copy.send(buf.into_bytes()).await?;
                created += copy.finish().await?;
            }
            marked = mark_done!(tx, exercice_ids, now);
            tx.commit().await?;
        }
    }
    Ok((created, marked))
}

/// A stored folder, as listed for people.
#[derive(Debug, Clone, Serialize)]
pub struct StoredFolder {
    pub path: String,
    pub kind: FolderKind,
    pub theme: Option<String>,
    pub exercice_id: Option<String>,
}

/// A client's folders, sorted name by name down the path (as `tree` sorts),
/// the same on every engine whatever its collation.
pub async fn list(db: &Database, client_id: &str) -> Result<Vec<StoredFolder>, FolderError> {
    let mut rows: Vec<(String, String, Option<String>, Option<String>)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT path, kind, theme, exercice_id FROM client_folders WHERE client_id = $1",
    )
    .bind(client_id)
    .fetch_all(pool)
    .await?);
    rows.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
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
    fn copy_lines_escape_and_mark_nulls() {
        let f = Folder {
            client_id: "c".into(),
            path: "A\\B/x".into(),
            parent_path: "A\\B".into(),
            name: "x\ty".into(),
            kind: FolderKind::Directory,
            theme: None,
            exercice_id: Some("e".into()),
        };
        let mut out = String::new();
        copy_line(&mut out, &f, "7");
        assert_eq!(out, "c\tA\\\\B/x\tA\\\\B\tx\\ty\tdirectory\t\\N\te\t7\n");
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
