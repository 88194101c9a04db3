//! Bulk import (import massif): a firm's whole portfolio from a CSV or
//! Excel file.
//!
//! Every row is checked first ([`analyse`]: the file's encoding and
//! columns, each cell, duplicates inside the file, clients the firm already
//! has, and the same checks as `dossier client create`, against the firm's
//! trees, apps and members loaded once). Then, unless a row is bad and the
//! import is not partial, the clients are written in batches, each batch in
//! one transaction with its onboarding jobs ([`run`]), the jobs pushed to
//! the queue in bulk after each batch. Every client remembers its import
//! and line, so a run cut short resumes without creating a line twice, and
//! re-importing a file skips the clients already there (by SIRET, else by
//! external reference).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::db::{Database, on_pool};
use crate::onboarding::{Context, Origin, Plan, validate};
use crate::secrets::KeyRing;

pub mod columns;
pub mod drop_folder;
pub mod formula;
mod report;
pub mod row;
pub mod run;
pub mod safe_fs;
pub mod source;
pub mod store;

use columns::{Columns, Field};
use source::Table;

pub use report::{errors_csv, summary};
pub use run::{Progress, run};

/// Registry providers an import may choose.
pub const PROVIDERS: &[&str] = &[
    crate::sirene::recherche::NAME,
    crate::sirene::insee::NAME,
    crate::sirene::file::NAME,
];

/// A problem with the file, or with one cell or row of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File line (CSV) or sheet row (Excel); 0 for the whole file.
    pub line: usize,
    /// `B « Raison sociale »`.
    pub column: Option<String>,
    pub value: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    pub fn at(
        line: usize,
        column: Option<String>,
        value: Option<&str>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            line,
            column,
            value: value.filter(|v| !v.is_empty()).map(str::to_string),
            message: message.into(),
        }
    }

    /// The problem without its line: the `erreurs` cell of its row.
    pub fn in_row(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.column {
            s.push_str(c);
            s.push_str(": ");
        }
        s.push_str(&self.message);
        s
    }
}

/// At most 60 characters of a value, for reports.
fn shorten(v: &str) -> String {
    let mut out: String = v.chars().take(60).collect();
    if v.chars().count() > 60 {
        out.push('…');
    }
    out
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}", self.line)?;
        }
        if let Some(c) = &self.column {
            write!(f, ", column {c}")?;
        }
        if let Some(v) = &self.value {
            write!(f, ", value {:?}", shorten(v))?;
        }
        if self.line > 0 || self.column.is_some() {
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

/// The settings an import follows.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub queue: &'a crate::config::QueueSettings,
    pub imports: &'a crate::config::ImportSettings,
}

impl<'a> Limits<'a> {
    pub fn of(settings: &'a crate::config::Settings) -> Limits<'a> {
        Limits {
            queue: &settings.queue,
            imports: &settings.imports,
        }
    }
}

/// What an import is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub firm_id: String,
    pub file_name: String,
    /// Create the good rows even when others are bad.
    #[serde(default)]
    pub partial: bool,
    /// Registries the enrichment asks; absent: `sirene.providers`.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Carried by every job the import queues, into the workers' logs.
    #[serde(default)]
    pub trace_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file as a whole cannot be imported (encoding, columns, empty).
    #[error("{}", .0.join("\n"))]
    File(Vec<String>),
    #[error("there is no import {0}")]
    NotFound(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Other(String),
}

/// A row left alone because its client is already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub line: usize,
    pub client_id: String,
    pub reason: String,
}

/// Every row checked: what would be created, skipped, refused.
#[derive(Debug)]
pub struct Analysis {
    pub table: Table,
    pub plans: Vec<Plan>,
    pub skipped: Vec<Skip>,
    /// Rows this import created in an earlier, interrupted run.
    pub resumed: usize,
    pub problems: Vec<Problem>,
    pub notes: Vec<Problem>,
    pub(crate) ctx: Context,
}

impl Analysis {
    pub fn rows_total(&self) -> usize {
        self.table.rows.len()
    }

    /// Lines with at least one problem.
    pub fn bad_lines(&self) -> BTreeSet<usize> {
        self.problems
            .iter()
            .map(|p| p.line)
            .filter(|l| *l > 0)
            .collect()
    }

    /// Nothing may be written: a row is bad and the import is not partial.
    pub fn refused(&self, partial: bool) -> bool {
        !self.problems.is_empty() && !partial
    }
}

/// The clients a firm has, by what an import matches them on.
#[derive(Debug, Default)]
pub(crate) struct Existing {
    pub by_siret: HashMap<String, String>,
    /// external ref → (client id, its SIRET)
    pub by_ref: HashMap<String, (String, Option<String>)>,
    /// Lines of this import already created.
    pub lines: BTreeSet<i64>,
}

/// A client's id, SIRET, external ref, import and import line.
type ClientKeys = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// The line `key` was first seen on, recording `line` when it is the first.
fn seen_before(seen: &mut HashMap<String, usize>, key: &str, line: usize) -> Option<usize> {
    match seen.entry(key.to_string()) {
        std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(line);
            None
        }
    }
}

pub(crate) async fn existing(
    db: &Database,
    firm: &str,
    import_id: &str,
) -> Result<Existing, sqlx::Error> {
    let rows: Vec<ClientKeys> = on_pool!(db, pool => sqlx::query_as(
            "SELECT id, siret, external_ref, import_id, import_line FROM clients WHERE firm_id = $1",
        )
        .bind(firm)
        .fetch_all(pool)
        .await?);
    let mut e = Existing::default();
    for (id, siret, external_ref, import, line) in rows {
        if let (Some(i), Some(l)) = (import, line)
            && i == import_id
        {
            e.lines.insert(l);
        }
        if let Some(r) = external_ref {
            e.by_ref.insert(r, (id.clone(), siret.clone()));
        }
        if let Some(s) = siret {
            e.by_siret.insert(s, id);
        }
    }
    Ok(e)
}

/// The column a `field: message` problem of [`validate`] is about.
fn field_of(problem: &str) -> (Option<Field>, &str) {
    let Some((field, message)) = problem.split_once(": ") else {
        return (None, problem);
    };
    let f = match field {
        "siret" => Field::Siret,
        "company" => Field::LegalName,
        "exercice" => Field::ExerciceStart,
        "tree" => Field::Tree,
        // The text rules (`onboarding::text_problems`) name the field: a
        // line break in a name passes the cell check (spreadsheets put
        // them in addresses) and is refused there.
        "director.first_name" => Field::DirectorFirstName,
        "director.last_name" => Field::DirectorLastName,
        "director.email" => Field::DirectorEmail,
        "company.legal_name" => Field::LegalName,
        "director" if message.contains("first name") => Field::DirectorFirstName,
        "director" if message.contains("last name") => Field::DirectorLastName,
        "director" => Field::DirectorEmail,
        "themes" => Field::Themes,
        "apps" => Field::Apps,
        "collaborators" => Field::Collaborators,
        _ => return (None, problem),
    };
    (Some(f), message)
}

/// Checks every row of `bytes` for `import_id` (nothing is written).
pub async fn analyse(
    db: &Database,
    settings: Limits<'_>,
    keys: &KeyRing,
    request: &Request,
    import_id: &str,
    bytes: &[u8],
) -> Result<Analysis, ImportError> {
    let limits = settings.imports;
    if let Some(p) = request
        .providers
        .iter()
        .flatten()
        .find(|p| !PROVIDERS.contains(&p.as_str()))
    {
        return Err(ImportError::File(vec![format!(
            "provider {p:?} is not known: choose one of {}",
            PROVIDERS.join(", ")
        )]));
    }
    let table = source::read(bytes, limits.max_file_bytes)
        .map_err(|e| ImportError::File(vec![e.to_string()]))?;
    let cols = Columns::map(&table.headers).map_err(ImportError::File)?;
    if table.rows.is_empty() {
        return Err(ImportError::File(vec![
            "the file has a header but no client lines: add one line per client (see `dossier import template`)"
                .into(),
        ]));
    }
    let ctx = Context::load(db, &request.firm_id)
        .await
        .map_err(|e| match e {
            crate::onboarding::OnboardingError::Invalid(problems) => ImportError::File(problems),
            e => ImportError::Other(e.to_string()),
        })?;
    let have = existing(db, &request.firm_id, import_id).await?;
    let mut a = Analysis {
        plans: Vec::new(),
        skipped: Vec::new(),
        resumed: 0,
        problems: Vec::new(),
        notes: Vec::new(),
        ctx,
        table: Table {
            headers: Vec::new(),
            rows: Vec::new(),
            encoding: table.encoding,
            separator: table.separator,
        },
    };
    let mut seen_siret: HashMap<String, usize> = HashMap::new();
    let mut seen_ref: HashMap<String, usize> = HashMap::new();
    for (i, raw) in table.rows.iter().enumerate() {
        // Checking 10,000 rows is about a second of CPU: give the thread
        // back now and then, so that the hooks served by the same runtime
        // are not held up behind it.
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
        let mut parsed = match row::parse(raw, &cols, limits.max_cell_chars) {
            Ok(p) => p,
            Err(problems) => {
                a.problems.extend(problems);
                continue;
            }
        };
        if have.lines.contains(&(raw.line as i64)) {
            a.resumed += 1;
            continue;
        }
        a.notes.append(&mut parsed.notes);
        let siret = parsed.form.siret.clone();
        let mut dup = false;
        if let Some(s) = &siret
            && let Some(first) = seen_before(&mut seen_siret, s, raw.line)
        {
            a.problems.push(Problem::at(
                raw.line,
                Some(cols.name(Field::Siret)),
                Some(s),
                format!("this SIRET is also on line {first}: keep one line per client"),
            ));
            dup = true;
        }
        if let Some(r) = &parsed.external_ref
            && let Some(first) = seen_before(&mut seen_ref, r, raw.line)
        {
            a.problems.push(Problem::at(
                raw.line,
                Some(cols.name(Field::ExternalRef)),
                Some(r),
                format!("this reference is also on line {first}: keep one line per client"),
            ));
            dup = true;
        }
        if dup {
            continue;
        }
        if let Some(id) = siret.as_ref().and_then(|s| have.by_siret.get(s)) {
            a.skipped.push(Skip {
                line: raw.line,
                client_id: id.clone(),
                reason: format!(
                    "SIRET {} is already client {id}",
                    siret.as_deref().unwrap_or("")
                ),
            });
            continue;
        }
        if let Some(r) = &parsed.external_ref
            && let Some((id, their)) = have.by_ref.get(r)
        {
            match (their, &siret) {
                (Some(t), Some(s)) if t != s => a.problems.push(Problem::at(
                    raw.line,
                    Some(cols.name(Field::ExternalRef)),
                    Some(r),
                    format!(
                        "this reference is client {id}, whose SIRET is {t}, not {s}: correct the reference or the SIRET"
                    ),
                )),
                _ => a.skipped.push(Skip {
                    line: raw.line,
                    client_id: id.clone(),
                    reason: format!("reference {r} is already client {id}"),
                }),
            }
            continue;
        }
        parsed.form.firm_id = request.firm_id.clone();
        let origin = Origin {
            external_ref: parsed.external_ref.clone(),
            import: Some((import_id.to_string(), raw.line as i64)),
            providers: request.providers.clone(),
            trace_id: request.trace_id.clone(),
        };
        match validate(&a.ctx, &parsed.form, origin, settings.queue, keys) {
            Ok(plan) => a.plans.push(plan),
            Err(problems) => {
                for p in problems {
                    let (field, message) = field_of(&p);
                    let value = field
                        .and_then(|f| cols.of(f))
                        .and_then(|i| raw.cells.get(i))
                        .map(|v| v.trim().to_string());
                    a.problems.push(Problem::at(
                        raw.line,
                        field.map(|f| cols.name(f)),
                        value.as_deref(),
                        message,
                    ));
                }
            }
        }
    }
    a.table = table;
    Ok(a)
}
