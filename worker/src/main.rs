//! `dossier-worker`: runs the job handlers (`run`), the one-command demo on
//! the embedded default (`demo`) and the queue benchmark (`bench`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use dossier_core::bench::{self, BenchOptions};
use dossier_core::catalogue::Catalogue;
use dossier_core::config::{QueueBackendKind, Settings};
use dossier_core::db::migrate_all;
use dossier_core::runtime::{self, CancellationToken, Registry, Worker};
use dossier_core::{demo, jobs, queue};

#[derive(Parser)]
#[command(name = "dossier-worker", version, about = "Dossier's worker pool")]
struct Cli {
    /// Configuration file (else $DOSSIER_CONFIG, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log lines as `text` (default) or `json` (overrides log.format).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Sqlite,
    Redis,
    Postgres,
}

#[derive(Clone, Copy, ValueEnum)]
enum LoadMode {
    Post,
    Get,
}

#[derive(Subcommand)]
enum Command {
    /// Load generator of scripts/bench-hooks: POST or GET /v1/clients on a
    /// running server for a duration; one JSON line (token from
    /// $DOSSIER_LOAD_TOKEN).
    Load {
        #[arg(long)]
        url: String,
        #[arg(long, value_enum)]
        mode: LoadMode,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value = "hooks-bench")]
        firm: String,
        /// Client ids to GET, one per line.
        #[arg(long)]
        ids_file: Option<std::path::PathBuf>,
        /// Where to write the ids of the clients created, one per line.
        #[arg(long)]
        created_file: Option<std::path::PathBuf>,
    },
    /// Run the worker pool until SIGTERM/SIGINT.
    Run {
        /// Do not apply pending migrations at start-up.
        #[arg(long)]
        no_migrate: bool,
        /// Only these kinds (comma-separated); default: all.
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
    },
    /// Fresh SQLite database under var/, a realistic batch, drain, summary.
    Demo {
        #[arg(long, default_value_t = 500)]
        jobs: usize,
        #[arg(long, default_value = "var/demo.db")]
        database: PathBuf,
        /// The Sirene extract enrichment reads (no network in the demo).
        #[arg(long, default_value = "config/sirene-extract")]
        sirene_extract: PathBuf,
    },
    /// Push N no-op jobs, drain them with concurrency C; one JSON line.
    Bench {
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: Backend,
        /// Redis URL or SQLite URL (defaults: local Redis, var/bench.db).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value_t = 50_000)]
        jobs: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: u32,
        #[arg(long, default_value_t = 200)]
        pickup_samples: usize,
    },
    /// Write the folders of N clients as the jobs do, beside the same rows
    /// inserted the bare way (COPY / prepared multi-row INSERT).
    BenchFolders {
        /// sqlite://… or postgres://… (its rows are removed afterwards).
        #[arg(long, default_value = "sqlite://var/bench-folders.db")]
        database: String,
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
    },
    /// Import a generated N-row file end to end: rows checked, clients
    /// committed, onboarding jobs in the queue. Prints rows/s.
    BenchImport {
        /// sqlite://… or postgres://… (a scratch database is best).
        #[arg(long, default_value = "sqlite://var/bench-import.db")]
        database: String,
        /// sqlite, postgres (the jobs table of --database) or redis.
        #[arg(long, value_enum, default_value = "sqlite")]
        queue: Backend,
        /// Redis URL with --queue redis (default: local Redis).
        #[arg(long)]
        queue_url: Option<String>,
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
    },
}

/// The demo's progress on stderr: a bar redrawn in place on a terminal
/// (indicatif), otherwise a plain line each time the count moves, at most
/// every 2 s.
fn demo_progress() -> (demo::OnProgress, Option<indicatif::ProgressBar>) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} jobs {pos}/{len} [{bar:30}] {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let shown = bar.clone();
        let tell: demo::OnProgress = std::sync::Arc::new(move |finished, all| {
            shown.set_length(all);
            shown.set_position(finished);
        });
        (tell, Some(bar))
    } else {
        let last = std::sync::Mutex::new((u64::MAX, std::time::Instant::now()));
        let tell: demo::OnProgress = std::sync::Arc::new(move |finished, all| {
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.1.elapsed() >= std::time::Duration::from_secs(2) || finished == all;
            if finished != last.0 && due {
                eprintln!("demo: {finished} of {all} jobs finished");
                *last = (finished, std::time::Instant::now());
            }
        });
        (tell, None)
    }
}

/// Where the demo writes its logs: `demo.log` beside its database.
fn demo_log(database: &std::path::Path) -> PathBuf {
    database.with_file_name("demo.log")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = Settings::load(cli.config.as_deref())?;
    match cli.log_format.as_deref() {
        Some("json") => settings.log.format = dossier_core::config::LogFormat::Json,
        Some(_) => settings.log.format = dossier_core::config::LogFormat::Text,
        None => {}
    }
    match &cli.command {
        // The demo's own output is its summary: its logs go beside its
        // database, where the summary says they are.
        Command::Demo { database, .. } => {
            let log = demo_log(database);
            dossier_core::logging::init_to_file(&settings.log, &log)
                .with_context(|| format!("cannot write the demo's log {}", log.display()))?;
        }
        _ => dossier_core::logging::init(&settings.log),
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if settings.worker.threads > 0 {
        runtime.worker_threads(settings.worker.threads);
    }
    runtime.build()?.block_on(execute(cli.command, settings))
}

async fn execute(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Run { no_migrate, kinds } => run(settings, !no_migrate, kinds).await,
        Command::Demo {
            jobs,
            database,
            sirene_extract,
        } => {
            let (progress, bar) = demo_progress();
            let report =
                demo::run(settings, &database, &sirene_extract, jobs, Some(progress)).await?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            println!(
                "Demo on {} ({} jobs, {} ms); its logs: {}",
                report.database,
                report.enqueued,
                report.elapsed_ms,
                demo_log(&database).display()
            );
            for c in &report.counts {
                println!(
                    "  {:<14} done {:>5}  dead {:>4}  pending {}  running {}  retrying {}",
                    c.kind, c.done, c.dead, c.pending, c.running, c.retrying
                );
            }
            println!("Clients enriched from the registry extract:");
            for c in &report.clients {
                let name = c
                    .company
                    .get("legal_name")
                    .map(String::as_str)
                    .unwrap_or("?");
                let status = serde_json::to_value(c.enrichment_status)?;
                let mut notes = Vec::new();
                if let Some(form) = c.company.get("legal_form_label") {
                    notes.push(form.clone());
                }
                for d in &c.differences {
                    notes.push(format!(
                        "typed {} {:?}, registry {:?}",
                        d.field, d.entered, d.registry
                    ));
                }
                if let Some(w) = &c.warning {
                    notes.push(format!("WARNING: {w}"));
                }
                if let Some(m) = &c.enrichment_message {
                    notes.push(m.clone());
                }
                println!(
                    "  {:<16} {:<10} {:<28} {}",
                    c.siret.as_deref().unwrap_or("(no SIRET)"),
                    status.as_str().unwrap_or("?"),
                    name,
                    notes.join("; ")
                );
            }
            if let (Some(first), Some(n)) = (report.clients.first(), report.folders.first()) {
                println!(
                    "Folder trees: {} clients, {} folders each (tree + this year's monthly folders); see one with:\n  DOSSIER__DATABASE__URL=sqlite://{} cargo run --release -p dossier-cli -- client tree {}",
                    report.clients.len(),
                    n,
                    report.database,
                    first.id
                );
            }
            println!(
                "Invitations: {} emails to the clients' directors, written to {}/ (one .eml each)",
                report.emails, report.outbox
            );
            println!("Dead jobs (permanent failures, kept with their reason):");
            for (input, why) in &report.dead_samples {
                println!("  {input:<22} {why}");
            }
            println!(
                "Inspect it: DOSSIER__DATABASE__URL=sqlite://{} cargo run --release -p dossier-cli -- jobs list --status dead",
                report.database
            );
            Ok(())
        }
        Command::Load {
            url,
            mode,
            connections,
            seconds,
            firm,
            ids_file,
            created_file,
        } => {
            let ids = match ids_file {
                Some(f) => std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read {}", f.display()))?
                    .lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect(),
                None => Vec::new(),
            };
            let options = dossier_core::hooks_bench::LoadOptions {
                base: url,
                token: std::env::var("DOSSIER_LOAD_TOKEN")
                    .context("DOSSIER_LOAD_TOKEN holds the bearer token")?,
                mode: match mode {
                    LoadMode::Post => dossier_core::hooks_bench::Mode::Post,
                    LoadMode::Get => dossier_core::hooks_bench::Mode::Get,
                },
                connections,
                duration: std::time::Duration::from_secs(seconds),
                firm,
                ids,
                run_id: uuid::Uuid::now_v7().simple().to_string(),
            };
            let report = dossier_core::hooks_bench::run(&options)
                .await
                .map_err(anyhow::Error::msg)?;
            if let Some(f) = created_file {
                std::fs::write(&f, report.created.join("\n"))
                    .with_context(|| format!("cannot write {}", f.display()))?;
            }
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::BenchImport {
            database,
            queue,
            queue_url,
            rows,
        } => {
            let result =
                dossier_core::import_bench::run(&dossier_core::import_bench::ImportBenchOptions {
                    database_url: database,
                    queue: match queue {
                        Backend::Sqlite => QueueBackendKind::Sqlite,
                        Backend::Redis => QueueBackendKind::Redis,
                        Backend::Postgres => QueueBackendKind::Postgres,
                    },
                    queue_url,
                    rows,
                })
                .await?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        Command::BenchFolders { database, clients } => {
            let result =
                dossier_core::folder_bench::run(&dossier_core::folder_bench::FolderBenchOptions {
                    database_url: database,
                    clients,
                })
                .await?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        Command::Bench {
            backend,
            url,
            jobs,
            concurrency,
            pickup_samples,
        } => {
            let backend = match backend {
                Backend::Sqlite => QueueBackendKind::Sqlite,
                Backend::Redis => QueueBackendKind::Redis,
                Backend::Postgres => QueueBackendKind::Postgres,
            };
            let result = bench::run(
                settings,
                BenchOptions {
                    backend,
                    url,
                    jobs,
                    concurrency,
                    pickup_samples,
                },
            )
            .await?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
    }
}

async fn run(settings: Settings, migrate: bool, only: Vec<String>) -> anyhow::Result<()> {
    let catalogue = Catalogue::product();
    for kind in settings.queue.kinds.keys().chain(only.iter()) {
        if catalogue.get(kind).is_none() {
            anyhow::bail!(
                "unknown job kind `{kind}` (in queue.kinds or --kinds); known kinds: {}",
                catalogue
                    .kinds()
                    .iter()
                    .map(|k| k.kind)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if migrate && settings.worker.migrate_on_start {
        let n = migrate_all(&settings).await.context("migrations failed")?;
        tracing::info!(applied = n, "migrations up to date");
    }
    let backend = queue::open(&settings).await?;
    let deps = jobs::JobDeps::from_settings(&settings, backend.clone()).await?;
    let mut all = Registry::new();
    jobs::register_all(&mut all, std::sync::Arc::new(deps));
    let registry = if only.is_empty() {
        all
    } else {
        all.only(&only)
    };
    let stop = CancellationToken::new();
    let mut http = None;
    if !settings.http.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&settings.http.listen)
            .await
            .with_context(|| format!("cannot listen on http.listen = {}", settings.http.listen))?;
        let state = dossier_core::http::ApiState::new(
            dossier_core::db::Database::connect(&settings.database.url, 4).await?,
            backend.clone(),
            &settings,
        )?;
        let router = dossier_core::http::router(state, settings.http.max_body_bytes);
        tracing::info!(listen = %settings.http.listen, "serving HTTP hooks");
        let http_stop = stop.clone();
        let limits = settings.http.clone();
        http = Some(tokio::spawn(async move {
            if let Err(e) = dossier_core::http::serve(listener, router, &limits, http_stop).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }));
    }
    // Jobs staged with business data reach the queue through this relay.
    tokio::spawn(dossier_core::outbox::run_relay(
        dossier_core::db::Database::connect(&settings.database.url, 2).await?,
        backend.clone(),
        std::time::Duration::from_millis(settings.queue.poll_interval_ms),
        stop.clone(),
    ));
    // The operators' audit trail is kept audit.retention_days.
    tokio::spawn(dossier_core::audit::run_purge(
        dossier_core::db::Database::connect(&settings.database.url, 1).await?,
        settings.audit.retention_days,
        stop.clone(),
    ));
    let schedules = if settings.schedule.enabled {
        dossier_core::schedule::product(&settings)?
    } else {
        Vec::new()
    };
    let worker = Worker::new(
        runtime::worker_name(&settings.worker.name_prefix),
        settings.queue.clone(),
        backend,
        registry,
    )?
    .with_schedules(schedules);
    tokio::spawn(runtime::stop_on_signal(stop.clone()));
    let report = worker.run(stop).await?;
    // Requests in flight are answered before exit (bounded by the server).
    if let Some(http) = http {
        let _ = http.await;
    }
    tracing::info!(?report, "bye");
    Ok(())
}
