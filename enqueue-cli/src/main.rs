//! `dossier`: submit jobs, inspect and repair queues, run migrations.
//! A thin shell over `dossier_core`; see `dossier --help`.

// Everything this command prints passes through `text::for_terminal`:
// names, registry answers and file contents are outside data, and an
// escape sequence among them must not reach the operator's terminal.
// Defined before the modules so that their `println!` is this one.
macro_rules! println {
    () => { ::std::println!() };
    ($($arg:tt)*) => {
        ::std::println!("{}", dossier_core::text::for_terminal(&format!($($arg)*)))
    };
}
macro_rules! print {
    ($($arg:tt)*) => {
        ::std::print!("{}", dossier_core::text::for_terminal(&format!($($arg)*)))
    };
}
macro_rules! eprintln {
    () => { ::std::eprintln!() };
    ($($arg:tt)*) => {
        ::std::eprintln!("{}", dossier_core::text::for_terminal(&format!($($arg)*)))
    };
}

mod apps;
mod archive;
mod firms;
mod folders;
mod import;
mod invitations;
mod onboard;
mod wait;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use dossier_core::audit::action;
use dossier_core::catalogue::Catalogue;
use dossier_core::clock::{format_ms, now_ms};
use dossier_core::config::QueueBackendKind;
use dossier_core::config::Settings;
use dossier_core::db::{Database, migrate_all};
use dossier_core::job::{JobFilter, JobRecord, JobStatus, PushOutcome};
use dossier_core::queue::{self, AdminOutcome, QueueBackend};
use dossier_core::submit::{self, SubmitOptions};

#[derive(Parser)]
#[command(
    name = "dossier",
    version,
    about = "Submit Dossier jobs, inspect and repair the queues"
)]
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

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations.
    Migrate,
    /// Submit a job of any kind.
    Enqueue(EnqueueArgs),
    /// Per-queue counts: pending, scheduled, running, retrying, done, dead,
    /// and paused kinds; `queues pause KIND` and `queues resume KIND`.
    Queues(QueuesArgs),
    /// List, show, retry or kill jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Worker processes and their last heartbeat.
    Workers(JsonFlag),
    /// The job kinds this build knows.
    Kinds,
    /// SIRET and SIREN numbers.
    #[command(subcommand)]
    Siret(SiretCommand),
    /// The local Sirene extract used by the `sirene-file` provider.
    #[command(subcommand)]
    Sirene(SireneCommand),
    /// Clients: what was typed, what the registries say, the differences.
    #[command(subcommand)]
    Client(ClientCommand),
    /// One person across clients (`person erase`: an employee who left).
    #[command(subcommand)]
    Person(PersonCommand),
    /// Folder tree templates (arborescences) of a firm.
    #[command(subcommand)]
    Tree(folders::TreeCommand),
    /// Fiscal years (exercices) of a client.
    #[command(subcommand)]
    Exercice(folders::ExerciceCommand),
    /// Invitations of a client's director and employees.
    #[command(subcommand)]
    Invitation(invitations::InvitationCommand),
    /// Partner applications: the firm's catalogue, each client's access.
    #[command(subcommand)]
    App(apps::AppCommand),
    /// Firms (cabinets) of the platform.
    #[command(subcommand)]
    Firm(firms::FirmCommand),
    /// API tokens: a firm's hooks tokens, platform-wide admin tokens.
    #[command(subcommand)]
    Token(firms::TokenCommand),
    /// What operators did: retries, kills, pauses, enqueues, firms, tokens.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The firm's members (accountants).
    #[command(subcommand)]
    Member(onboard::MemberCommand),
    /// Which members follow a client.
    #[command(subcommand)]
    Collaborator(onboard::CollaboratorCommand),
    /// Import clients from a CSV or .xlsx file (`dossier import template`
    /// prints the columns).
    Import(Box<import::ImportArgs>),
    /// Imports: their progress and reports.
    #[command(subcommand)]
    Imports(import::ImportsCommand),
    /// A firm's event webhooks: where its events go, signed.
    #[command(subcommand)]
    Webhook(webhooks::WebhookCommand),
    /// Print the shell completion script: `dossier completions bash >
    /// ~/.local/share/bash-completion/completions/dossier` (zsh: a file
    /// named `_dossier` on $fpath; fish: ~/.config/fish/completions/dossier.fish).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Create a client: everything checked first, then the client, its
    /// exercice, tree, invitation and apps in one transaction, with their
    /// jobs.
    Create(Box<onboard::CreateArgs>),
    /// A firm's clients, newest first (archived ones with `--archived`).
    List {
        #[command(flatten)]
        firm: folders::FirmArg,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The firm's archived clients instead, last archived first.
        #[arg(long)]
        archived: bool,
        #[arg(long)]
        json: bool,
    },
    /// One client with its enrichment.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A client's folders, drawn like `tree`, with counts.
    Tree {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Everything held about the client and its people, as one JSON
    /// document (a person's request to see or take their data).
    Export {
        id: String,
        /// Write it to this file (created, never overwritten) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// The firm stops working with the client: its waiting jobs are
    /// cancelled, its invitations revoked, its apps disabled (torn down at
    /// the partner), and it leaves the listings. Nothing is deleted.
    Archive { id: String },
    /// Undoes `archive`: the cancelled jobs run, the invitations are sent
    /// again (fresh links), the apps are enabled again.
    Unarchive { id: String },
    /// Erases every personal datum of an archived client's people, in every
    /// store (tables, queue, hook answers, imports, mail files); the company
    /// facts stay. Prints what it removed per store; idempotent.
    Erase { id: String },
}

#[derive(Subcommand)]
enum PersonCommand {
    /// Erases one person's data across clients: their invitations (revoked
    /// if live), their jobs, the hook answers, imports and mail files that
    /// hold their address.
    Erase {
        #[arg(long)]
        email: String,
        /// Only this firm's clients.
        #[arg(long)]
        firm: Option<String>,
    },
}

#[derive(Subcommand)]
enum SireneCommand {
    /// Index StockUniteLegale + StockEtablissement CSV files for lookups by SIRET.
    Index {
        #[arg(long, value_name = "CSV")]
        units: PathBuf,
        #[arg(long, value_name = "CSV")]
        establishments: PathBuf,
        /// Where to write the index (default: sirene.file_index).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SiretCommand {
    /// Is this SIRET (14 digits) or SIREN (9 digits) valid? Why not?
    /// Exit code 0 if valid, 1 if not.
    Check {
        value: String,
        #[arg(long)]
        json: bool,
    },
    /// Ask the registries (`[sirene] providers`, in order) about a SIRET.
    Lookup {
        siret: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct QueuesArgs {
    #[command(subcommand)]
    action: Option<QueuesCommand>,
    /// Machine-readable output.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Redraw the counts in place every second, until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// With --watch: stop after this many refreshes.
    #[arg(long, requires = "watch", hide = true)]
    count: Option<u32>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Operators' actions, newest first: when, who, what, on what.
    List {
        /// Since: 7d, 12h, a date (2026-12-01) or an RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum QueuesCommand {
    /// Stop every worker fetching this kind's jobs (running ones finish;
    /// new jobs still queue up) until `queues resume`.
    Pause {
        kind: String,
        /// Why, shown in `dossier queues`, the dashboard and the metrics.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Let workers fetch this kind's jobs again.
    Resume { kind: String },
    /// Give the kind N slots on every worker, live and across restarts
    /// (`default`: back to each worker's configured concurrency).
    Scale {
        kind: String,
        #[arg(value_name = "N|default")]
        concurrency: String,
    },
}

#[derive(Args)]
struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EnqueueArgs {
    /// Job kind (see `dossier kinds`).
    kind: String,
    /// Payload as JSON.
    #[arg(long, value_name = "JSON")]
    json: String,
    /// When to run: RFC 3339 time or delay (+30s, +5m, +2h, +1d).
    #[arg(long, value_name = "WHEN")]
    run_at: Option<String>,
    /// Attempts in all (default: the kind's configured max_attempts).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// The same key twice enqueues once.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Carried into the worker's logs.
    #[arg(long)]
    trace_id: Option<String>,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Jobs, newest change first; every filter given must match.
    #[command(after_help = "Examples:
  dossier jobs list --status dead
  dossier jobs list --firm cabinet-durand --kind siret_enrichment --status retrying
  dossier jobs list --client CLIENT_ID --json
  dossier jobs list --error 'timed out'")]
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Retry, kill or move the run time of every job a filter matches.
    #[command(subcommand)]
    Bulk(BulkCommand),
    /// One job with its payload (secrets redacted) and every attempt's error.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a dead or waiting job now; `--all-dead` retries the dead set.
    Retry {
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<String>,
        #[arg(long)]
        all_dead: bool,
        /// With --all-dead: only this kind.
        #[arg(long, requires = "all_dead")]
        kind: Option<String>,
    },
    /// Send a waiting or running job to the dead set.
    Kill {
        id: String,
        #[arg(long, default_value = "killed by an operator")]
        reason: String,
    },
}

/// Which jobs: each filter is read through an index of the queue, so a
/// client's jobs are found without reading the backlog.
#[derive(Args, Debug, Clone, Default)]
struct FilterArgs {
    #[arg(long)]
    kind: Option<String>,
    /// pending, scheduled, running, retrying, done or dead.
    #[arg(long)]
    status: Option<String>,
    /// The firm's jobs.
    #[arg(long)]
    firm: Option<String>,
    /// The client's jobs (its id).
    #[arg(long)]
    client: Option<String>,
    /// The jobs of one trace id (a hook's `X-Trace-Id`, `--trace-id`).
    #[arg(long)]
    trace: Option<String>,
    /// Jobs whose last error contains this text (ASCII letters in any case).
    #[arg(long)]
    error: Option<String>,
}

impl FilterArgs {
    fn filter(self, limit: usize) -> anyhow::Result<JobFilter> {
        let status = self
            .status
            .map(|s| {
                JobStatus::parse(&s).ok_or_else(|| {
                    user(format!(
                        "unknown status `{}`; use pending, scheduled, running, retrying, done or dead",
                        dossier_core::text::for_terminal(&s)
                    ))
                })
            })
            .transpose()?;
        let filter = JobFilter {
            kind: self.kind,
            status,
            group: self.firm,
            subject: self.client,
            trace_id: self.trace,
            error: self.error,
            limit,
        };
        dossier_core::bulk::check_text(&filter).map_err(|e| user(e.to_string()))?;
        Ok(filter)
    }
}

#[derive(Subcommand, Debug)]
enum BulkCommand {
    /// Run every matching dead or waiting job now.
    Retry {
        #[command(flatten)]
        filter: FilterArgs,
        /// Count what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Send every matching waiting or running job to the dead set.
    Kill {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value = "killed by an operator")]
        reason: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// Move every matching waiting job's run time.
    Reschedule {
        #[command(flatten)]
        filter: FilterArgs,
        /// `now`, a delay ahead (30m, 12h, 2d), a date or an RFC 3339 time.
        #[arg(long)]
        run_at: String,
        #[arg(long)]
        dry_run: bool,
    },
}

/// Pushes the outbox's jobs to the queue now, so that they show at once;
/// a failure is fine — they stay staged, and any worker's relay pushes them.
pub(crate) async fn relay_outbox(settings: &Settings, db: &Database) {
    match queue::open(settings).await {
        Ok(q) => {
            if let Err(e) = dossier_core::outbox::relay(db, q.as_ref()).await {
                eprintln!("note: jobs stay staged until a worker relays them ({e})");
            }
        }
        Err(e) => eprintln!("note: jobs stay staged until a worker relays them ({e})"),
    }
}

/// The firms with the most jobs due now and not yet fetched.
fn firms_table(firms: &[dossier_core::job::GroupWaiting]) -> String {
    if firms.is_empty() {
        return String::new();
    }
    let mut out = String::from("waiting now, per firm (most first):\n");
    for g in firms {
        let name = g
            .group
            .as_deref()
            .map(dossier_core::text::for_terminal)
            .unwrap_or(std::borrow::Cow::Borrowed("(no firm)"));
        out.push_str(&format!(
            "  {name:<32} {:>8}  (interactive {}, bulk {})\n",
            g.total(),
            g.interactive,
            g.bulk
        ));
    }
    out
}

/// The counts as a table, one queue per line.
fn queues_table(counts: &[dossier_core::job::QueueCounts]) -> String {
    let mut out = format!(
        "{:<24} {:>8} {:>9} {:>8} {:>8} {:>9} {:>7}  oldest pending\n",
        "queue", "pending", "scheduled", "running", "retrying", "done", "dead"
    );
    for c in counts {
        out.push_str(&format!(
            "{:<24} {:>8} {:>9} {:>8} {:>8} {:>9} {:>7}  {}\n",
            c.kind,
            c.pending,
            c.scheduled,
            c.running,
            c.retrying,
            c.done,
            c.dead,
            c.oldest_pending_age_ms
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into())
        ));
    }
    for c in counts {
        if let Some(p) = &c.paused {
            out.push_str(&format!(
                "paused: {} since {} by {}{}\n",
                c.kind,
                format_ms(p.at_ms),
                p.by,
                if p.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", p.reason)
                }
            ));
        }
    }
    out
}

/// Redraws the counts every second (in place on a terminal; one block per
/// refresh otherwise), until Ctrl-C or `count` refreshes. A queue that
/// stops answering is said on the screen, and watching goes on.
async fn watch_queues(q: &dyn QueueBackend, count: Option<u32>) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stdout().is_terminal();
    let mut shown = 0u32;
    loop {
        let body = match queue::counts_and_pauses(q).await {
            Ok(c) => queues_table(&c),
            Err(e) => format!("the queue does not answer: {e}\n"),
        };
        let mut out = std::io::stdout();
        if tty {
            // Home, draw, then clear what an older, longer frame left below.
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let _ = write!(
            out,
            "{}  (every 1s, Ctrl-C to stop)\n{body}",
            format_ms(now_ms())
        );
        if !tty {
            let _ = writeln!(out);
        }
        let _ = out.flush();
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// An error the user can fix: printed as is, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UserError(String);

pub(crate) fn user(msg: impl Into<String>) -> anyhow::Error {
    UserError(msg.into()).into()
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(Invalid { message, shown }) = e.downcast_ref::<Invalid>() {
                if !shown {
                    eprintln!("error: {message}");
                }
                return ExitCode::FAILURE;
            }
            eprintln!("error: {e:#}");
            if let Some(u) = e.downcast_ref::<wait::Unfinished>() {
                return ExitCode::from(u.code());
            }
            if e.downcast_ref::<UserError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Need no configuration, database or network.
    if let Command::Siret(SiretCommand::Check { value, json }) = &cli.command {
        return siret_check(value, *json);
    }
    if let Command::Completions { shell } = &cli.command {
        use clap::CommandFactory;
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "dossier",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let mut settings = Settings::load(cli.config.as_deref()).map_err(|e| user(e.to_string()))?;
    match cli.log_format.as_deref() {
        Some("json") => settings.log.format = dossier_core::config::LogFormat::Json,
        Some(_) => settings.log.format = dossier_core::config::LogFormat::Text,
        None => {}
    }
    dossier_core::logging::init(&settings.log);
    let catalogue = Catalogue::product();
    match cli.command {
        Command::Migrate => {
            let n = migrate_all(&settings).await?;
            println!("migrations applied: {n}");
            Ok(())
        }
        Command::Kinds => {
            for k in catalogue.kinds() {
                println!("{:<20} {}", k.kind, k.description);
            }
            Ok(())
        }
        Command::Enqueue(a) => {
            let options = SubmitOptions {
                run_at: a.run_at,
                max_attempts: a.max_attempts,
                idempotency_key: a.idempotency_key,
                trace_id: a.trace_id,
            };
            let job = submit::prepare(&catalogue, &settings.queue, &a.kind, &a.json, &options)
                .map_err(|e| user(e.to_string()))?;
            let q = open_queue(&settings).await?;
            // A client's job is labelled with its client and firm, so that
            // `jobs list --client/--firm` finds it.
            let job = match dossier_core::owners::client_of(&job.payload) {
                Some(_) => {
                    let db = Database::connect(&settings.database.url, 1).await?;
                    dossier_core::owners::labelled(&db, job).await?
                }
                None => job,
            };
            match q.push(job).await? {
                PushOutcome::Created(id) => {
                    println!("enqueued {id}");
                    audited(
                        &settings,
                        action::JOB_ENQUEUE,
                        &id,
                        serde_json::json!({ "kind": a.kind }),
                    )
                    .await;
                }
                PushOutcome::Duplicate(id) => {
                    println!("already enqueued {id} (same idempotency key): nothing added")
                }
            }
            Ok(())
        }
        Command::Queues(a) => {
            let q = open_queue(&settings).await?;
            let pause_error = |e: dossier_core::controls::PauseError| {
                if e.is_user_error() {
                    user(e.to_string())
                } else {
                    e.into()
                }
            };
            match a.action {
                Some(QueuesCommand::Pause { kind, reason }) => {
                    let by = dossier_core::audit::command_line_actor();
                    let new = dossier_core::controls::pause(q.as_ref(), &kind, &reason, &by)
                        .await
                        .map_err(pause_error)?;
                    if new {
                        audited(
                            &settings,
                            action::QUEUE_PAUSE,
                            &kind,
                            serde_json::json!({ "reason": reason }),
                        )
                        .await;
                        println!(
                            "{kind} paused: no worker fetches its jobs within {} ms; running ones finish (`dossier queues resume {kind}`)",
                            2 * dossier_core::runtime::CONTROLS_REFRESH.as_millis()
                        );
                    } else {
                        println!("{kind} was paused already: the first pause and its reason stay");
                    }
                    return Ok(());
                }
                Some(QueuesCommand::Resume { kind }) => {
                    if dossier_core::controls::resume(q.as_ref(), &kind)
                        .await
                        .map_err(pause_error)?
                    {
                        audited(
                            &settings,
                            action::QUEUE_RESUME,
                            &kind,
                            serde_json::json!({}),
                        )
                        .await;
                        println!("{kind} resumed");
                    } else {
                        println!("{kind} was not paused: nothing to do");
                    }
                    return Ok(());
                }
                Some(QueuesCommand::Scale { kind, concurrency }) => {
                    let n = dossier_core::controls::parse_concurrency(&concurrency)
                        .map_err(pause_error)?;
                    let by = dossier_core::audit::command_line_actor();
                    let changed = dossier_core::controls::scale(q.as_ref(), &kind, n, &by)
                        .await
                        .map_err(pause_error)?;
                    match n {
                        Some(n) => println!(
                            "{kind}: {n} slots on every worker within {} ms, and after restarts (`dossier workers` shows them)",
                            2 * dossier_core::runtime::CONTROLS_REFRESH.as_millis()
                        ),
                        None if changed => {
                            println!("{kind}: back to each worker's configured concurrency")
                        }
                        None => println!("{kind} was not scaled: nothing to do"),
                    }
                    if changed {
                        audited(
                            &settings,
                            action::QUEUE_SCALE,
                            &kind,
                            serde_json::json!({ "concurrency": n }),
                        )
                        .await;
                    }
                    return Ok(());
                }
                None => {}
            }
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string(&queue::counts_and_pauses(q.as_ref()).await?)?
                );
                return Ok(());
            }
            if !a.watch {
                print!(
                    "{}",
                    queues_table(&queue::counts_and_pauses(q.as_ref()).await?)
                );
                for s in q.scales().await? {
                    println!(
                        "scaled: {} to {} slots per worker since {} by {}",
                        s.kind,
                        s.concurrency,
                        format_ms(s.at_ms),
                        s.by
                    );
                }
                print!("{}", firms_table(&q.waiting_by_group(10).await?));
                return Ok(());
            }
            watch_queues(q.as_ref(), a.count).await
        }
        Command::Workers(f) => {
            let q = open_queue(&settings).await?;
            let workers = q.workers().await?;
            if f.json {
                println!("{}", serde_json::to_string(&workers)?);
            } else {
                let now = now_ms();
                let lease = settings.queue.lease_ms as i64;
                println!(
                    "{:<48} {:<16} {:>8} {:>14}  {:<7} kinds (slots)",
                    "worker", "host", "running", "last heartbeat", "state"
                );
                for w in workers {
                    let age = now - w.last_heartbeat_ms;
                    // Silent past its lease: crashed or cut off; its jobs are handed back.
                    let state = if age > lease { "silent" } else { "alive" };
                    println!(
                        "{:<48} {:<16} {:>8} {:>13.1}s  {:<7} {}",
                        w.name,
                        w.host,
                        w.running,
                        age as f64 / 1000.0,
                        state,
                        w.kinds
                            .iter()
                            .map(|k| match w.concurrency.get(k) {
                                Some(n) => format!("{k}({n})"),
                                None => k.clone(),
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                }
            }
            Ok(())
        }
        Command::Jobs(cmd) => jobs(cmd, &settings, &catalogue).await,
        Command::Client(ClientCommand::Show { id, json }) => {
            client_show(&settings, &id, json).await
        }
        Command::Client(ClientCommand::Create(args)) => onboard::create(*args, &settings).await,
        Command::Client(ClientCommand::List {
            firm,
            limit,
            archived,
            json,
        }) => onboard::list(&settings, &firm.firm, limit, archived, json).await,
        Command::Client(ClientCommand::Archive { id }) => archive::archive(&settings, &id).await,
        Command::Client(ClientCommand::Unarchive { id }) => {
            archive::unarchive(&settings, &id).await
        }
        Command::Client(ClientCommand::Erase { id }) => archive::erase(&settings, &id).await,
        Command::Person(PersonCommand::Erase { email, firm }) => {
            archive::erase_person(&settings, &email, firm.as_deref()).await
        }
        Command::Client(ClientCommand::Tree { id, json }) => {
            folders::client_tree(&settings, &id, json).await
        }
        Command::Client(ClientCommand::Export { id, out }) => {
            client_export(&settings, &id, out).await
        }
        Command::Tree(cmd) => folders::tree(cmd, &settings).await,
        Command::Exercice(cmd) => folders::exercice(cmd, &settings).await,
        Command::Invitation(cmd) => invitations::run(cmd, &settings).await,
        Command::App(cmd) => apps::run(cmd, &settings).await,
        Command::Firm(cmd) => firms::firm(cmd, &settings).await,
        Command::Token(cmd) => firms::token(cmd, &settings).await,
        Command::Webhook(cmd) => webhooks::run(cmd, &settings).await,
        // Answered before the settings are read.
        Command::Completions { .. } => Ok(()),
        Command::Audit(AuditCommand::List { since, limit, json }) => {
            let since = since
                .as_deref()
                .map(dossier_core::audit::parse_since)
                .transpose()
                .map_err(|e| user(e.to_string()))?;
            let db = Database::connect(&settings.database.url, 1).await?;
            let entries = dossier_core::audit::list(&db, since, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&entries)?);
            } else {
                for e in entries {
                    let detail = if e.detail.as_object().is_some_and(|o| o.is_empty()) {
                        String::new()
                    } else {
                        format!("  {}", e.detail)
                    };
                    println!(
                        "{}  {:<28} {:<18} {}{detail}",
                        format_ms(e.at_ms),
                        e.actor,
                        e.action,
                        e.target
                    );
                }
            }
            Ok(())
        }
        Command::Member(cmd) => onboard::member(cmd, &settings).await,
        Command::Collaborator(cmd) => onboard::collaborator(cmd, &settings).await,
        Command::Import(args) => import::run(*args, &settings).await,
        Command::Imports(cmd) => import::imports(cmd, &settings).await,
        Command::Sirene(SireneCommand::Index {
            units,
            establishments,
            out,
        }) => {
            let out = out.unwrap_or_else(|| PathBuf::from(&settings.sirene.file_index));
            let started = std::time::Instant::now();
            let report = dossier_core::sirene::file::build_index(&units, &establishments, &out)
                .await
                .map_err(|e| user(e.to_string()))?;
            println!(
                "indexed {} units and {} establishments into {} in {:.1}s",
                report.units,
                report.establishments,
                out.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Siret(SiretCommand::Lookup { siret, json }) => {
            siret_lookup(&settings, &siret, json).await
        }
        Command::Siret(SiretCommand::Check { .. }) => Ok(()),
    }
}

/// A negative answer (invalid number, company not found), not a failure of
/// the command: exit 1. `shown` when the verdict is already on stdout.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Invalid {
    message: String,
    shown: bool,
}

async fn client_show(settings: &Settings, id: &str, json: bool) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 1).await?;
    let client = dossier_core::clients::get(&db, id)
        .await?
        .ok_or_else(|| user(format!("no client with id {id}")))?;
    // The queue tells which unfinished steps are running or failing; without
    // it the records still tell the rest.
    let q = queue::open(settings).await.ok();
    let steps = dossier_core::onboarding::steps(&db, q.as_deref(), id).await?;
    if json {
        let mut v = serde_json::to_value(&client)?;
        v["onboarding"] = serde_json::to_value(&steps)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("client        {}", client.id);
    println!("firm          {}", client.firm_id);
    println!(
        "SIRET         {}",
        client.siret.as_deref().unwrap_or("(none: entered by hand)")
    );
    println!(
        "enrichment    {}",
        serde_json::to_value(client.enrichment_status)?
            .as_str()
            .unwrap_or("?")
    );
    if let Some(m) = &client.enrichment_message {
        println!("              {m}");
    }
    if let Some(w) = &client.warning {
        println!("WARNING       {w}");
    }
    println!("company (typed values win, registry fills the gaps):");
    for (field, value) in &client.company {
        let origin = if client.entered.contains_key(field) {
            "typed"
        } else {
            "registry"
        };
        println!("  {field:<22} {value:<40} [{origin}]");
    }
    if !client.differences.is_empty() {
        println!("differences between what was typed and the registry:");
        for d in &client.differences {
            println!(
                "  {:<22} typed {:?}, registry {:?}",
                d.field, d.entered, d.registry
            );
        }
    }
    for d in &client.directors {
        println!("director      {d}");
    }
    if let Some(r) = &client.registry {
        if !r.undisclosed.is_empty() {
            println!("not disclosed {}", r.undisclosed.join(", "));
        }
        println!("source        {}", r.provider);
    }
    for m in dossier_core::collaborators::of_client(&db, id).await? {
        println!("collaborator  {} <{}>", m.name, m.email);
    }
    println!("onboarding:");
    for s in &steps {
        println!(
            "  {:<34} {:<8} {}",
            s.step,
            s.state,
            s.note.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn siret_lookup(settings: &Settings, input: &str, json: bool) -> anyhow::Result<()> {
    let siret = dossier_core::siret::Siret::parse(input)
        .map_err(|e| user(format!("invalid SIRET {input:?}: {e}")))?;
    // The lookup spends the registry quota the workers count in the
    // business database (or Redis): it must count there too.
    let db = Database::connect(&settings.database.url, 1).await?;
    if db.missing_migrations().await > 0 {
        if !settings.worker.migrate_on_start {
            return Err(user(
                "the database is not migrated (the registry quota is counted in it) and worker.migrate_on_start is off: run `dossier migrate` first",
            ));
        }
        migrate_all(settings).await?;
    }
    let sirene = dossier_core::sirene::from_settings(settings, &db).await?;
    let facts = sirene.lookup(&siret).await.map_err(|e| Invalid {
        message: e.to_string(),
        shown: false,
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&facts)?);
        return Ok(());
    }
    let show = |label: &str, v: Option<&str>| {
        if let Some(v) = v {
            println!("{label:<14} {v}");
        }
    };
    show("name", facts.legal_name.as_deref());
    println!(
        "{:<14} {} (SIREN {}, NIC {})",
        "SIRET", facts.siret, facts.siren, facts.nic
    );
    println!("{:<14} {}", "VAT", facts.vat_number);
    let form = match (&facts.legal_form_label, &facts.legal_form_code) {
        (Some(label), Some(code)) => Some(format!("{label} ({code})")),
        (None, Some(code)) => Some(code.clone()),
        _ => None,
    };
    show("legal form", form.as_deref());
    show("NAF/APE", facts.naf_code.as_deref());
    show("created", facts.creation_date.as_deref());
    let a = &facts.address;
    let street = [&a.number, &a.repetition, &a.street_type, &a.street_name]
        .iter()
        .filter_map(|p| p.as_deref())
        .collect::<Vec<_>>()
        .join(" ");
    let city = [&a.postal_code, &a.city, &a.cedex]
        .iter()
        .filter_map(|p| p.as_deref())
        .collect::<Vec<_>>()
        .join(" ");
    let address = if street.is_empty() {
        a.line.clone()
    } else {
        Some(format!("{street}, {city}"))
    };
    show("address", address.as_deref());
    show("country", a.country.as_deref());
    show(
        "head office",
        facts.head_office.map(|h| if h { "yes" } else { "no" }),
    );
    show("employees", facts.employee_band.as_deref());
    for d in &facts.directors {
        println!("{:<14} {d}", "director");
    }
    if !facts.undisclosed.is_empty() {
        println!("{:<14} {}", "not disclosed", facts.undisclosed.join(", "));
    }
    if let Some(w) = facts.warning() {
        println!("WARNING        {w}");
    }
    println!("{:<14} {}", "source", facts.provider);
    Ok(())
}

fn siret_check(value: &str, json: bool) -> anyhow::Result<()> {
    let report = dossier_core::siret::check(value);
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else if report.valid {
        println!(
            "{:?}: valid {}",
            report.input.trim(),
            report.kind.unwrap_or("number").to_uppercase()
        );
        if let Some(s) = &report.siret {
            println!("  SIRET  {s}");
        }
        for (label, v) in [
            ("SIREN", &report.siren),
            ("NIC", &report.nic),
            ("VAT", &report.vat_number),
        ] {
            if let Some(v) = v {
                println!("  {label:<6} {v}");
            }
        }
    } else {
        println!(
            "{:?}: invalid: {}",
            report.input,
            report.error.as_deref().unwrap_or("?")
        );
    }
    if report.valid {
        Ok(())
    } else {
        Err(Invalid {
            message: report.error.unwrap_or_default(),
            shown: true,
        }
        .into())
    }
}

async fn open_queue(settings: &Settings) -> anyhow::Result<std::sync::Arc<dyn QueueBackend>> {
    if settings.queue.backend == QueueBackendKind::Sqlite {
        // The embedded queue lives in a SQLite file: make sure it is set up.
        migrate_all(settings).await?;
    }
    queue::open(settings).await.context("cannot open the queue")
}

fn redacted(mut job: JobRecord, catalogue: &Catalogue) -> JobRecord {
    catalogue.redact(&job.kind, &mut job.payload);
    job
}

async fn jobs(cmd: JobsCommand, settings: &Settings, catalogue: &Catalogue) -> anyhow::Result<()> {
    let q = open_queue(settings).await?;
    match cmd {
        JobsCommand::Bulk(cmd) => bulk(cmd, q.as_ref(), settings).await,
        JobsCommand::List {
            filter,
            limit,
            json,
        } => {
            let list: Vec<JobRecord> = q
                .list(&filter.filter(limit)?)
                .await?
                .into_iter()
                .map(|j| redacted(j, catalogue))
                .collect();
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                println!(
                    "{:<36} {:<20} {:<9} {:>8}  {:<24}  last error",
                    "id", "kind", "status", "attempts", "updated"
                );
                for j in list {
                    println!(
                        "{:<36} {:<20} {:<9} {:>8}  {:<24}  {}",
                        j.id,
                        j.kind,
                        j.status,
                        format!("{}/{}", j.attempts, j.max_attempts),
                        format_ms(j.updated_at_ms),
                        j.last_error.unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        JobsCommand::Show { id, json } => {
            let job = q
                .get(&id)
                .await?
                .ok_or_else(|| user(format!("no job with id {id}")))?;
            let job = redacted(job, catalogue);
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
                return Ok(());
            }
            println!("id:            {}", job.id);
            println!("kind:          {}", job.kind);
            println!("status:        {}", job.status);
            println!("attempts:      {}/{}", job.attempts, job.max_attempts);
            println!("created:       {}", format_ms(job.created_at_ms));
            println!("run at:        {}", format_ms(job.run_at_ms));
            println!("updated:       {}", format_ms(job.updated_at_ms));
            if let Some(t) = job.finished_at_ms {
                println!("finished:      {}", format_ms(t));
            }
            if let Some(w) = &job.lease_owner {
                println!("worker:        {w}");
            }
            if let Some(k) = &job.idempotency_key {
                println!("idempotency:   {k}");
            }
            if let Some(t) = &job.trace_id {
                println!("trace id:      {t}");
            }
            if let Some(g) = &job.group {
                println!("firm:          {g}");
            }
            if let Some(c) = &job.subject {
                println!("client:        {c}");
            }
            println!(
                "lane:          {}",
                if job.bulk {
                    "bulk (an import's)"
                } else {
                    "interactive"
                }
            );
            println!("payload:       {}", job.payload);
            if let Some(r) = &job.result {
                println!("result:        {r}");
            }
            for e in &job.errors {
                println!(
                    "error #{:<3}    {} [{}] {}",
                    e.attempt,
                    format_ms(e.at_ms),
                    e.class,
                    e.message
                );
            }
            Ok(())
        }
        JobsCommand::Retry { id, all_dead, kind } => {
            if all_dead {
                let n = q.retry_all_dead(kind.as_deref()).await?;
                println!("retried {n} dead job(s)");
                let filter = format!("dead jobs of {}", kind.as_deref().unwrap_or("every kind"));
                audited(
                    settings,
                    action::DEAD_RETRY,
                    &filter,
                    serde_json::json!({ "retried": n }),
                )
                .await;
                return Ok(());
            }
            let id = id.unwrap_or_default();
            let outcome = q.retry(&id).await?;
            if outcome == AdminOutcome::Applied {
                audited(settings, action::JOB_RETRY, &id, serde_json::json!({})).await;
            }
            admin_result(
                outcome,
                &id,
                "retried",
                "only dead or waiting jobs can be retried",
            )
        }
        JobsCommand::Kill { id, reason } => {
            let outcome = q.kill(&id, &reason).await?;
            if outcome == AdminOutcome::Applied {
                audited(
                    settings,
                    action::JOB_KILL,
                    &id,
                    serde_json::json!({ "reason": reason }),
                )
                .await;
            }
            admin_result(
                outcome,
                &id,
                "killed",
                "only waiting or running jobs can be killed",
            )
        }
    }
}

/// Records an operator action done from this command line in the audit
/// trail; says so when it cannot (the action stands).
async fn client_export(settings: &Settings, id: &str, out: Option<PathBuf>) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 1).await?;
    // Without the queue the document would miss the client's jobs: refuse
    // rather than hand over an incomplete export.
    let q = open_queue(settings).await?;
    let doc = dossier_core::client_export::export(&db, Some(q.as_ref()), id)
        .await?
        .ok_or_else(|| {
            user(format!(
                "no client with id {}",
                dossier_core::text::for_terminal(id)
            ))
        })?;
    let text = serde_json::to_string_pretty(&doc)?;
    match out {
        None => println!("{text}"),
        Some(path) => {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| {
                    user(format!(
                        "{}: {e}",
                        dossier_core::text::for_terminal(&path.to_string_lossy())
                    ))
                })?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            println!(
                "client {id} exported to {} ({} jobs, {} invitations)",
                path.display(),
                doc.jobs.len(),
                doc.invitations.len()
            );
        }
    }
    audited(settings, action::CLIENT_EXPORT, id, serde_json::json!({})).await;
    Ok(())
}

async fn bulk(cmd: BulkCommand, q: &dyn QueueBackend, settings: &Settings) -> anyhow::Result<()> {
    use dossier_core::bulk::{self, Action};
    let (filter, action, dry_run) = match cmd {
        BulkCommand::Retry { filter, dry_run } => (filter, Action::Retry, dry_run),
        BulkCommand::Kill {
            filter,
            reason,
            dry_run,
        } => {
            dossier_core::text::check(&reason, dossier_core::text::MAX_TEXT)
                .map_err(|e| user(format!("reason: {e}")))?;
            (filter, Action::Kill { reason }, dry_run)
        }
        BulkCommand::Reschedule {
            filter,
            run_at,
            dry_run,
        } => {
            let run_at_ms = bulk::parse_run_at(&run_at).map_err(|e| user(e.to_string()))?;
            (filter, Action::Reschedule { run_at_ms }, dry_run)
        }
    };
    let filter = filter.filter(bulk::MAX_BULK)?;
    let report =
        bulk::run(q, &filter, &action, dry_run)
            .await
            .map_err(|e| match e.is_user_error() {
                true => user(e.to_string()),
                false => anyhow::Error::new(e),
            })?;
    let described = bulk::describe(&filter);
    let more = if report.more {
        format!(
            " (more than {} match: run it again for the rest)",
            bulk::MAX_BULK
        )
    } else {
        String::new()
    };
    if dry_run {
        println!(
            "dry run: {} job(s) match {described}; {} would change{more}",
            report.matched, report.eligible
        );
        return Ok(());
    }
    println!(
        "{} job(s) match {described}; {} changed, {} skipped (their status changed meanwhile){more}",
        report.matched, report.applied, report.skipped
    );
    let mut detail = serde_json::to_value(&report)?;
    detail.as_object_mut().map(|d| d.remove("dry_run"));
    if let Action::Kill { reason } = &action {
        detail["reason"] = reason.clone().into();
    }
    if let Action::Reschedule { run_at_ms } = action {
        detail["run_at_ms"] = run_at_ms.into();
    }
    audited(settings, action.audit_action(), &described, detail).await;
    Ok(())
}

pub(crate) async fn audited(
    settings: &Settings,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) {
    let actor = dossier_core::audit::command_line_actor();
    let failed = match Database::connect(&settings.database.url, 1).await {
        Ok(db) => dossier_core::audit::note(&db, &actor, action, target, detail)
            .await
            .map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = failed {
        eprintln!("note: done, but not recorded in the audit trail ({why})");
    }
}

fn admin_result(outcome: AdminOutcome, id: &str, verb: &str, rule: &str) -> anyhow::Result<()> {
    match outcome {
        AdminOutcome::Applied => {
            println!("{verb} {id}");
            Ok(())
        }
        AdminOutcome::NotFound => Err(user(format!("no job with id {id}"))),
        AdminOutcome::Refused(status) => Err(user(format!("job {id} is {status}: {rule}"))),
    }
}
