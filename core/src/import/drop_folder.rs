//! Scheduled imports from a drop folder.
//!
//! `FOLDER/incoming/` receives files. At each tick of the schedule, a file
//! is taken by renaming it into `processing/ID--NAME` — one rename wins,
//! however many workers scan at once, so no file is imported twice. It is
//! imported, then moved to `done/` (or `failed/` when refused) with
//! `NAME.rapport.txt` and, for refused rows, `NAME.erreurs.csv` beside it.
//! A file still being written is left for a later tick: names starting
//! with `.` or `~$` or ending in `.tmp`, `.part`, `.partial`, `.crdownload`
//! are never taken (write under such a name, then rename), and neither is
//! a file modified less than `settle_secs` ago. A file in `processing/` is
//! run by the scan that records its import (one insert wins); one left
//! there by a worker that died is taken over by a scan once its import has
//! shown no progress for [`STALE_MS`], and resumed where it stopped.

use std::path::{Path, PathBuf};

use super::safe_fs;
use super::store::{self, ImportRecord};
use super::{ImportError, Limits, Request};
use crate::config::ImportSchedule;
use crate::db::Database;
use crate::queue::QueueBackend;
use crate::secrets::KeyRing;

const SUBDIRS: [&str; 4] = ["incoming", "processing", "done", "failed"];

/// An import in `processing/` without progress for this long was left by a
/// worker that died (a running import records progress at every batch,
/// well under a second apart).
pub const STALE_MS: i64 = 10 * 60 * 1000;

/// Whether a name is one a file carries while it is being written.
pub fn is_temporary(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.starts_with("~$")
        || [".tmp", ".part", ".partial", ".crdownload"]
            .iter()
            .any(|s| lower.ends_with(s))
}

fn io(what: &str, path: &Path, e: std::io::Error) -> ImportError {
    ImportError::Other(format!("{what} {}: {e}", path.display()))
}

/// What `incoming/` holds: files ready to be taken (oldest name first),
/// and entries that will never be files (links, FIFOs, sockets, devices),
/// to be filed in `failed/` with a report. Directories are left alone.
struct Incoming {
    ready: Vec<PathBuf>,
    bad: Vec<(PathBuf, &'static str)>,
}

async fn incoming(dir: &Path, settle_secs: u64) -> Result<Incoming, ImportError> {
    let mut out = Incoming {
        ready: Vec::new(),
        bad: Vec::new(),
    };
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| io("cannot read", dir, e))?;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| io("cannot read", dir, e))?
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if is_temporary(&name) {
            continue;
        }
        // DirEntry::metadata does not follow links.
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        let t = meta.file_type();
        if t.is_dir() {
            continue;
        }
        if !t.is_file() {
            let kind = safe_fs::Kind::of(&entry.path()).ok();
            let what = match kind {
                Some(safe_fs::Kind::Other(what)) => what,
                _ => "not a regular file",
            };
            out.bad.push((entry.path(), what));
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .unwrap_or_default();
        if age.as_secs() >= settle_secs {
            out.ready.push(entry.path());
        }
    }
    out.ready.sort();
    Ok(out)
}

fn unique_violation(e: &ImportError) -> bool {
    matches!(e, ImportError::Db(d) if d.as_database_error().is_some_and(|d| d.is_unique_violation()))
}

/// Whether the scan should try again later (the database or queue is
/// away) rather than file the entry as failed.
fn transient(e: &ImportError) -> bool {
    matches!(e, ImportError::Db(_))
}

/// Why an entry of `processing/` is not imported, filed with it.
enum EntryFailure {
    /// The entry itself: a link, a FIFO, too large, unreadable.
    Refused(String),
    Import(ImportError),
}

impl From<ImportError> for EntryFailure {
    fn from(e: ImportError) -> Self {
        EntryFailure::Import(e)
    }
}

/// Whether this scan runs the file `processing/ID--NAME`: it records its
/// import first, or takes over one left without progress.
async fn claim(
    db: &Database,
    limits: Limits<'_>,
    schedule: &ImportSchedule,
    root: &Path,
    taken: &Path,
    id: &str,
    name: &str,
) -> Result<bool, EntryFailure> {
    match store::get(db, id).await? {
        Some(r) => {
            if crate::clock::now_ms() - r.updated_at < STALE_MS {
                return Ok(false);
            }
            Ok(store::take_over(db, id, r.updated_at).await?)
        }
        None => {
            let path = taken.to_path_buf();
            let limit = limits.imports.max_file_bytes;
            let read = tokio::task::spawn_blocking(move || safe_fs::read_regular(&path, limit))
                .await
                .map_err(|e| ImportError::Other(format!("reading {}: {e}", taken.display())))?;
            let content = match read {
                Ok(c) => c,
                // Filed away meanwhile by the scan that ran it.
                Err(safe_fs::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(false);
                }
                Err(e) => return Err(EntryFailure::Refused(e.to_string())),
            };
            let request = Request {
                firm_id: schedule.firm.clone(),
                file_name: name.to_string(),
                partial: schedule.partial,
                providers: schedule.provider.clone().map(|p| vec![p]),
                trace_id: Some(format!("import:{}", schedule.name)),
            };
            let source = root.join("incoming").join(name);
            match store::create(
                db,
                id,
                &request,
                &content,
                Some((&schedule.name, &source.to_string_lossy())),
            )
            .await
            {
                Ok(()) => Ok(true),
                Err(e) if unique_violation(&e) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Moves `entry` into `dir` and writes its reports beside it, each under a
/// new name (see [`safe_fs`]).
async fn file_with_reports(
    entry: &Path,
    dir: &Path,
    name: &str,
    id: &str,
    report: Option<String>,
    errors_csv: Option<String>,
) -> Result<(), ImportError> {
    let (entry, dir, name, id) = (
        entry.to_path_buf(),
        dir.to_path_buf(),
        name.to_string(),
        id.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let filed = safe_fs::file_away(&entry, &dir, &name, &id)
            .map_err(|e| io("cannot move", &entry, e))?;
        let filed_name = filed
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or(name);
        for (suffix, text) in [("rapport.txt", report), ("erreurs.csv", errors_csv)] {
            if let Some(text) = text {
                safe_fs::create_new(
                    &dir,
                    &format!("{filed_name}.{suffix}"),
                    &id,
                    text.as_bytes(),
                )
                .map_err(|e| io("cannot write a report in", &dir, e))?;
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| ImportError::Other(format!("filing a drop-folder entry: {e}")))?
}

/// Imports one claimed file (`processing/ID--NAME`) and files it away.
#[allow(clippy::too_many_arguments)]
async fn import_taken(
    db: &Database,
    limits: Limits<'_>,
    keys: &KeyRing,
    queue: Option<&dyn QueueBackend>,
    schedule: &ImportSchedule,
    root: &Path,
    taken: &Path,
    (id, name): (&str, &str),
) -> Result<ImportRecord, ImportError> {
    let record = super::run(db, limits, keys, queue, id, &mut |_| {}).await?;
    let to = if record.status == "done" {
        "done"
    } else {
        "failed"
    };
    let errors = store::errors_csv(db, id).await?;
    match file_with_reports(
        taken,
        &root.join(to),
        name,
        id,
        record.report.clone(),
        errors,
    )
    .await
    {
        Ok(()) => {}
        // A concurrent resume of the same file filed it already.
        Err(_) if tokio::fs::symlink_metadata(taken).await.is_err() => {}
        Err(e) => return Err(e),
    }
    tracing::info!(schedule = %schedule.name, import = %id, status = %record.status, created = record.rows_created, "drop-folder file imported");
    Ok(record)
}

/// Files an entry that cannot be imported in `failed/`, with a report
/// saying why; a failure to do so is logged, never fatal to the scan.
async fn refuse_entry(root: &Path, entry: &Path, id: &str, name: &str, why: &str) {
    let report = format!(
        "{name}: not imported: {why}\n(filed by the drop-folder scan; nothing was created)\n"
    );
    tracing::warn!(entry = %crate::text::printable(name), why = %why, "drop-folder entry refused");
    if let Err(e) =
        file_with_reports(entry, &root.join("failed"), name, id, Some(report), None).await
    {
        tracing::error!(error = %e, "could not file a refused drop-folder entry");
    }
}

/// Each subfolder must be a real directory: a link would send the files,
/// and the reports written beside them, anywhere.
async fn prepare(root: &Path) -> Result<(), ImportError> {
    for d in SUBDIRS {
        let p = root.join(d);
        match tokio::fs::symlink_metadata(&p).await {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(ImportError::Other(format!(
                    "{} is not a directory (a link or a file): the drop folder needs real directories incoming/, processing/, done/ and failed/",
                    p.display()
                )));
            }
            Err(_) => tokio::fs::create_dir_all(&p)
                .await
                .map_err(|e| io("cannot create", &p, e))?,
        }
    }
    Ok(())
}

/// One scan of a schedule's folder: resumes what `processing/` holds, then
/// takes and imports every ready file of `incoming/`. An entry that cannot
/// be imported (a link, a FIFO, a directory, an unreadable or oversized
/// file, a bad workbook) is filed in `failed/` with its report and the scan
/// goes on; an unavailable database leaves the entry for the next try and
/// fails the scan once every other entry was tried.
pub async fn scan(
    db: &Database,
    limits: Limits<'_>,
    keys: &KeyRing,
    queue: Option<&dyn QueueBackend>,
    schedule: &ImportSchedule,
) -> Result<Vec<ImportRecord>, ImportError> {
    let root = PathBuf::from(&schedule.folder);
    prepare(&root).await?;
    let processing = root.join("processing");
    let mut taken = Vec::new();
    let mut dir = tokio::fs::read_dir(&processing)
        .await
        .map_err(|e| io("cannot read", &processing, e))?;
    while let Some(entry) = dir
        .next_entry()
        .await
        .map_err(|e| io("cannot read", &processing, e))?
    {
        taken.push(entry.path());
    }
    taken.sort();
    let found = incoming(&root.join("incoming"), schedule.settle_secs).await?;
    for (entry, what) in found.bad {
        let name = entry
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        refuse_entry(
            &root,
            &entry,
            &store::new_id(),
            &name,
            &format!("it is {what}, not a file: drop the file itself"),
        )
        .await;
    }
    for file in found.ready {
        let Some(name) = file.file_name().map(|n| n.to_string_lossy().to_string()) else {
            continue;
        };
        let to = processing.join(format!("{}--{name}", store::new_id()));
        match tokio::fs::rename(&file, &to).await {
            Ok(()) => taken.push(to),
            // Another worker's scan took it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "a drop-folder file could not be taken"),
        }
    }
    let mut out = Vec::new();
    let mut later = None;
    for file in taken {
        let entry = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let Some((id, original)) = entry.split_once("--") else {
            refuse_entry(&root, &file, &store::new_id(), &entry, "its name is not ID--NAME: only the scan puts entries in processing/; drop files in incoming/").await;
            continue;
        };
        let failure = match claim(db, limits, schedule, &root, &file, id, original).await {
            Ok(false) => continue,
            Ok(true) => {
                match import_taken(
                    db,
                    limits,
                    keys,
                    queue,
                    schedule,
                    &root,
                    &file,
                    (id, original),
                )
                .await
                {
                    Ok(r) => {
                        out.push(r);
                        continue;
                    }
                    Err(e) => EntryFailure::Import(e),
                }
            }
            Err(f) => f,
        };
        match failure {
            EntryFailure::Import(e) if transient(&e) => {
                tracing::warn!(error = %e, import = %id, "drop-folder file left for the next scan");
                later = Some(e);
            }
            EntryFailure::Import(e) => {
                refuse_entry(&root, &file, id, original, &e.to_string()).await
            }
            EntryFailure::Refused(why) => refuse_entry(&root, &file, id, original, &why).await,
        }
    }
    match later {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_files_being_written_are_not_taken() {
        for n in [
            ".clients.csv",
            "~$clients.xlsx",
            "clients.csv.tmp",
            "clients.csv.part",
            "x.CRDOWNLOAD",
        ] {
            assert!(is_temporary(n), "{n}");
        }
        assert!(!is_temporary("clients.csv"));
    }
}
