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

/// Files of `incoming/` ready to be taken, oldest name first.
async fn ready(incoming: &Path, settle_secs: u64) -> Result<Vec<PathBuf>, ImportError> {
    let mut out = Vec::new();
    let mut dir = tokio::fs::read_dir(incoming)
        .await
        .map_err(|e| io("cannot read", incoming, e))?;
    while let Some(entry) = dir
        .next_entry()
        .await
        .map_err(|e| io("cannot read", incoming, e))?
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if is_temporary(&name) {
            continue;
        }
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .unwrap_or_default();
        if meta.is_file() && age.as_secs() >= settle_secs {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Where a finished file goes, not overwriting an earlier one of its name.
fn destination(dir: &Path, name: &str, id: &str) -> PathBuf {
    let plain = dir.join(name);
    if plain.exists() {
        dir.join(format!("{id}--{name}"))
    } else {
        plain
    }
}

fn unique_violation(e: &ImportError) -> bool {
    matches!(e, ImportError::Db(d) if d.as_database_error().is_some_and(|d| d.is_unique_violation()))
}

/// Whether this scan runs the file `processing/ID--NAME`: it records its
/// import first, or takes over one left without progress.
async fn claim(
    db: &Database,
    schedule: &ImportSchedule,
    root: &Path,
    taken: &Path,
    id: &str,
    name: &str,
) -> Result<bool, ImportError> {
    match store::get(db, id).await? {
        Some(r) => {
            if crate::clock::now_ms() - r.updated_at < STALE_MS {
                return Ok(false);
            }
            store::take_over(db, id, r.updated_at).await
        }
        None => {
            let content = match tokio::fs::read(taken).await {
                Ok(c) => c,
                // Filed away meanwhile by the scan that ran it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io("cannot read", taken, e)),
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
                Err(e) => Err(e),
            }
        }
    }
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
) -> Result<ImportRecord, ImportError> {
    let file = taken
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let Some((id, name)) = file.split_once("--") else {
        return Err(ImportError::Other(format!(
            "{} is not named ID--NAME: move it back to incoming/",
            taken.display()
        )));
    };
    let record = super::run(db, limits, keys, queue, id, &mut |_| {}).await?;
    let to = if record.status == "done" {
        "done"
    } else {
        "failed"
    };
    let dir = root.join(to);
    let dest = destination(&dir, name, id);
    let dest_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if let Some(report) = &record.report {
        let path = dir.join(format!("{dest_name}.rapport.txt"));
        tokio::fs::write(&path, report)
            .await
            .map_err(|e| io("cannot write", &path, e))?;
    }
    if let Some(csv) = store::errors_csv(db, id).await? {
        let path = dir.join(format!("{dest_name}.erreurs.csv"));
        tokio::fs::write(&path, csv)
            .await
            .map_err(|e| io("cannot write", &path, e))?;
    }
    match tokio::fs::rename(taken, &dest).await {
        Ok(()) => {}
        // A concurrent resume of the same file filed it already.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot move", taken, e)),
    }
    tracing::info!(schedule = %schedule.name, import = %id, status = %record.status, created = record.rows_created, "drop-folder file imported");
    Ok(record)
}

/// One scan of a schedule's folder: resumes what `processing/` holds, then
/// takes and imports every ready file of `incoming/`.
pub async fn scan(
    db: &Database,
    limits: Limits<'_>,
    keys: &KeyRing,
    queue: Option<&dyn QueueBackend>,
    schedule: &ImportSchedule,
) -> Result<Vec<ImportRecord>, ImportError> {
    let root = PathBuf::from(&schedule.folder);
    for d in SUBDIRS {
        let p = root.join(d);
        tokio::fs::create_dir_all(&p)
            .await
            .map_err(|e| io("cannot create", &p, e))?;
    }
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
    for file in ready(&root.join("incoming"), schedule.settle_secs).await? {
        let Some(name) = file.file_name().map(|n| n.to_string_lossy().to_string()) else {
            continue;
        };
        let to = processing.join(format!("{}--{name}", store::new_id()));
        match tokio::fs::rename(&file, &to).await {
            Ok(()) => taken.push(to),
            // Another worker's scan took it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot take", &file, e)),
        }
    }
    let mut out = Vec::new();
    for file in taken {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let Some((id, original)) = name.split_once("--") else {
            tracing::warn!(file = %file.display(), "not named ID--NAME: move it back to incoming/");
            continue;
        };
        if claim(db, schedule, &root, &file, id, original).await? {
            out.push(import_taken(db, limits, keys, queue, schedule, &root, &file).await?);
        }
    }
    Ok(out)
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
