//! `dossier import FILE`, `dossier import template`, `dossier imports`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use dossier_core::config::Settings;
use dossier_core::db::Database;
use dossier_core::import::{self, ImportError, Limits, Progress, Request, store};
use dossier_core::job::{JobStatus, NewJob, PushOutcome};
use dossier_core::jobs::bulk_import;
use dossier_core::secrets::KeyRing;

use crate::folders::FirmArg;
use crate::user;

#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:
  dossier import template > clients.csv
  dossier import clients.csv --firm cabinet-durand --dry-run
  dossier import clients.csv --firm cabinet-durand --partial --wait
  dossier imports show IMPORT_ID --errors > erreurs.csv"
)]
pub struct ImportArgs {
    #[command(subcommand)]
    command: Option<ImportCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Print a CSV template with every column (UTF-8, `;`), to fill in.
    Template,
}

#[derive(Args)]
struct RunArgs {
    /// The CSV or .xlsx file.
    file: Option<PathBuf>,
    #[command(flatten)]
    firm: FirmArg,
    /// Check every row and print the report; create nothing.
    #[arg(long)]
    dry_run: bool,
    /// Create the good rows even when some are bad; the bad ones go to
    /// FILE.erreurs.csv, to correct and import again.
    #[arg(long)]
    partial: bool,
    /// The registry the enrichment asks (sirene-file: the local extract,
    /// outside the shared API quota); default: sirene.providers.
    #[arg(long)]
    provider: Option<String>,
    /// Run it as a `bulk_import` job in the worker even if it is small.
    #[arg(long)]
    background: bool,
    /// With a job: queue it and return (follow it with `dossier imports show`).
    #[arg(long, conflicts_with = "wait")]
    no_wait: bool,
    /// Then follow the clients it created until each is ready (exit 0),
    /// some have failed (exit 3, each listed) or --wait-timeout ran out
    /// (exit 4).
    #[arg(long)]
    wait: bool,
    /// With --wait: the longest wait for the clients, in seconds.
    #[arg(long, requires = "wait", default_value_t = 3600)]
    wait_timeout: u64,
    /// Carried by every job of the import into the workers' logs.
    #[arg(long, value_parser = trace_id)]
    trace_id: Option<String>,
    /// Where to write the refused rows (default: FILE.erreurs.csv).
    #[arg(long, value_name = "PATH")]
    errors_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ImportsCommand {
    /// A firm's imports, newest first, with their progress.
    List {
        #[command(flatten)]
        firm: FirmArg,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One import: progress, and its report once finished.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        /// Print the refused rows as CSV instead.
        #[arg(long)]
        errors: bool,
    },
}

pub(crate) fn trace_id(s: &str) -> Result<String, String> {
    dossier_core::submit::check_trace_id(s).map_err(|e| e.to_string())
}

fn import_error(e: ImportError) -> anyhow::Error {
    match e {
        ImportError::File(problems) => user(format!(
            "the file cannot be imported, nothing was created:\n{}",
            problems
                .iter()
                .map(|p| format!("  - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )),
        ImportError::NotFound(_) => user(e.to_string()),
        other => other.into(),
    }
}

/// Prints progress on one line rewritten in place (a terminal), or one
/// line per change (a log).
struct Bar {
    tty: bool,
    last: Option<Progress>,
}

impl Bar {
    fn show(&mut self, p: &Progress) {
        if self.last.as_ref() == Some(p) {
            return;
        }
        let pct = (p.created + p.skipped + p.refused) * 100 / p.total.max(1);
        let line = format!(
            "rows validated {}/{} · created {} · skipped {} · refused {} · jobs enqueued {} [{pct:>3}%]",
            p.validated, p.total, p.created, p.skipped, p.refused, p.jobs
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.last = Some(p.clone());
    }

    fn done(&self) {
        if self.tty && self.last.is_some() {
            eprintln!();
        }
    }
}

fn errors_path(file: &Path, chosen: Option<PathBuf>) -> PathBuf {
    chosen.unwrap_or_else(|| {
        let mut name = file.file_name().unwrap_or_default().to_os_string();
        name.push(".erreurs.csv");
        file.with_file_name(name)
    })
}

pub async fn run(args: ImportArgs, settings: &Settings) -> anyhow::Result<()> {
    if let Some(ImportCommand::Template) = args.command {
        print!("{}", import::columns::template());
        return Ok(());
    }
    let a = args.run;
    let Some(file) = a.file else {
        return Err(user(
            "give the file to import: dossier import FILE (or `dossier import template`)",
        ));
    };
    let bytes =
        std::fs::read(&file).map_err(|e| user(format!("cannot read {}: {e}", file.display())))?;
    let request = Request {
        firm_id: a.firm.firm.clone(),
        file_name: file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        partial: a.partial,
        providers: a.provider.clone().map(|p| vec![p]),
        trace_id: a.trace_id.clone(),
    };
    let keys = KeyRing::new(&settings.apps.encryption_keys).map_err(|e| user(e.to_string()))?;
    let db = Database::connect(&settings.database.url, 4).await?;
    let limits = Limits::of(settings);
    let id = store::new_id();
    // Every row is checked here first, so a bad file is refused at once,
    // whether it would run here or in the worker.
    let analysis = import::analyse(&db, limits, &keys, &request, &id, &bytes)
        .await
        .map_err(import_error)?;
    let bad = analysis.bad_lines().len();
    if a.dry_run || analysis.refused(a.partial) {
        let p = Progress {
            total: analysis.rows_total(),
            validated: analysis.rows_total(),
            created: 0,
            skipped: analysis.skipped.len(),
            refused: bad,
            jobs: 0,
        };
        let refused = analysis.refused(a.partial);
        print!(
            "{}",
            import::summary(&analysis, &request, "(not recorded)", &p, refused)
        );
        if a.dry_run {
            println!(
                "dry run: {} rows would be created, {} skipped, {} refused; nothing was written",
                analysis.plans.len(),
                analysis.skipped.len(),
                bad
            );
            return if bad > 0 {
                Err(user(format!("{bad} rows have problems")))
            } else {
                Ok(())
            };
        }
        return Err(user(format!(
            "import refused: {bad} of {} rows have problems, nothing was created",
            analysis.rows_total()
        )));
    }
    let rows = analysis.rows_total();
    drop(analysis);
    store::create(&db, &id, &request, &bytes, None)
        .await
        .map_err(import_error)?;
    let queue = crate::open_queue(settings).await;
    let mut bar = Bar {
        tty: std::io::stderr().is_terminal(),
        last: None,
    };
    let record = if rows <= settings.imports.inline_max_rows && !a.background {
        let q = queue.as_ref().ok().map(|q| q.as_ref());
        let record = import::run(&db, limits, &keys, q, &id, &mut |p| bar.show(p))
            .await
            .map_err(import_error)?;
        bar.done();
        if q.is_none() {
            eprintln!(
                "note: the queue is unreachable; the jobs stay staged until a worker relays them"
            );
        }
        record
    } else {
        let q = match &queue {
            Ok(q) => q.clone(),
            Err(e) => return Err(anyhow::anyhow!("{e:#}")),
        };
        let job = NewJob {
            kind: bulk_import::KIND.into(),
            payload: serde_json::json!({ "import_id": id }),
            run_at_ms: None,
            max_attempts: settings.queue.kind(bulk_import::KIND).max_attempts,
            idempotency_key: Some(format!("{}:{id}", bulk_import::KIND)),
            trace_id: a.trace_id.clone(),
            group: Some(a.firm.firm.clone()),
            subject: None,
            bulk: true,
        };
        let job_id = match q.push(job).await? {
            PushOutcome::Created(j) | PushOutcome::Duplicate(j) => j,
        };
        println!("import {id}: {rows} rows, running as job {job_id} in the worker");
        if a.no_wait {
            println!("follow it with: dossier imports show {id}");
            return Ok(());
        }
        loop {
            let r = store::get(&db, &id)
                .await
                .map_err(import_error)?
                .ok_or_else(|| user(format!("import {id} disappeared")))?;
            bar.show(&Progress {
                total: r.rows_total.max(0) as usize,
                validated: r.rows_validated.max(0) as usize,
                created: r.rows_created.max(0) as usize,
                skipped: r.rows_skipped.max(0) as usize,
                refused: r.rows_refused.max(0) as usize,
                jobs: r.jobs_enqueued.max(0) as usize,
            });
            if r.finished() {
                bar.done();
                break r;
            }
            if let Ok(Some(j)) = q.get(&job_id).await
                && j.status == JobStatus::Dead
            {
                bar.done();
                return Err(anyhow::anyhow!(
                    "import {id} stopped: job {job_id} failed: {}",
                    j.last_error.unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    finish(&db, &record, &file, a.errors_file).await?;
    if a.wait {
        crate::relay_outbox(settings, &db).await;
        let q = queue?;
        crate::wait::import(
            &db,
            q.as_ref(),
            &record.firm_id,
            &record.id,
            Duration::from_secs(a.wait_timeout),
            Duration::from_millis(500),
        )
        .await?;
    }
    Ok(())
}

/// Prints the report and writes the refused rows beside the file.
async fn finish(
    db: &Database,
    record: &store::ImportRecord,
    file: &Path,
    errors_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    print!("{}", record.report.as_deref().unwrap_or(""));
    if let Some(csv) = store::errors_csv(db, &record.id)
        .await
        .map_err(import_error)?
    {
        let path = errors_path(file, errors_file);
        std::fs::write(&path, csv)
            .map_err(|e| user(format!("cannot write {}: {e}", path.display())))?;
        println!(
            "refused rows written to {}: correct them there and import that file",
            path.display()
        );
    }
    match record.status.as_str() {
        "done" => Ok(()),
        s => Err(user(format!("import {} {s}", record.id))),
    }
}

pub async fn imports(cmd: ImportsCommand, settings: &Settings) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    match cmd {
        ImportsCommand::List { firm, limit, json } => {
            let list = store::list(&db, &firm.firm, limit)
                .await
                .map_err(import_error)?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
                return Ok(());
            }
            println!(
                "{:<36} {:<8} {:>7} {:>7} {:>7} {:>7} {:>7}  {:<19} file",
                "import", "status", "rows", "created", "skipped", "refused", "jobs", "started"
            );
            for r in list {
                println!(
                    "{:<36} {:<8} {:>7} {:>7} {:>7} {:>7} {:>7}  {:<19} {}",
                    r.id,
                    r.status,
                    r.rows_total,
                    r.rows_created,
                    r.rows_skipped,
                    r.rows_refused,
                    r.jobs_enqueued,
                    dossier_core::clock::format_ms(r.created_at),
                    r.file_name
                );
            }
            Ok(())
        }
        ImportsCommand::Show { id, json, errors } => {
            let r = store::get(&db, &id)
                .await
                .map_err(import_error)?
                .ok_or_else(|| user(format!("there is no import {id}")))?;
            if errors {
                print!(
                    "{}",
                    store::errors_csv(&db, &id)
                        .await
                        .map_err(import_error)?
                        .unwrap_or_default()
                );
                return Ok(());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!("import      {}", r.id);
            println!("file        {}", r.file_name);
            println!("firm        {}", r.firm_id);
            println!("status      {}", r.status);
            println!(
                "rows        {} validated of {}; {} created, {} skipped, {} refused",
                r.rows_validated, r.rows_total, r.rows_created, r.rows_skipped, r.rows_refused
            );
            println!("jobs        {} enqueued", r.jobs_enqueued);
            if let Some(s) = &r.schedule {
                println!(
                    "schedule    {s} ({})",
                    r.source_path.as_deref().unwrap_or("")
                );
            }
            if let Some(e) = &r.error {
                println!("error       {e}");
            }
            if let Some(report) = &r.report {
                println!();
                print!("{report}");
            }
            Ok(())
        }
    }
}
