//! `dossier tree …`, `dossier exercice …` and `dossier client tree`: tree
//! templates, fiscal years and each client's folders.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::Subcommand;
use dossier_core::config::Settings;
use dossier_core::db::Database;
use dossier_core::exercice::{self, Added, ExerciceError};
use dossier_core::jobs::fiscal_folders;
use dossier_core::tree::folders::{self, FolderKind};
use dossier_core::tree::render::{Entry, render};
use dossier_core::tree::template::TreeTemplate;
use dossier_core::tree::templates::{self, Loaded};

use crate::user;

/// Whose templates: firms share one database.
#[derive(clap::Args)]
pub struct FirmArg {
    /// The firm (cabinet) the templates belong to.
    #[arg(long, env = "DOSSIER_FIRM", default_value = "default")]
    pub firm: String,
}

#[derive(Subcommand)]
pub enum TreeCommand {
    /// Validate a template file (TOML, see config/trees/) and store it.
    Load {
        file: PathBuf,
        #[command(flatten)]
        firm: FirmArg,
        /// New clients of the firm get this tree (the first one loaded
        /// becomes the default anyway).
        #[arg(long)]
        default: bool,
        /// Only validate; store nothing.
        #[arg(long)]
        check: bool,
    },
    /// The firm's templates (the built-in one if it loaded none).
    List {
        #[command(flatten)]
        firm: FirmArg,
        #[arg(long)]
        json: bool,
    },
    /// One template drawn as a tree.
    Show {
        name: String,
        #[command(flatten)]
        firm: FirmArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ExerciceCommand {
    /// Add a fiscal year to a client and queue its folders.
    Add {
        #[arg(long)]
        client: String,
        /// First day, YYYY-MM-DD.
        #[arg(long, value_parser = parse_date)]
        start: NaiveDate,
        /// Last day, YYYY-MM-DD (default: start + 12 months − 1 day).
        #[arg(long, value_parser = parse_date)]
        end: Option<NaiveDate>,
        /// Allow days between this exercice and the previous or next one.
        #[arg(long)]
        allow_gap: bool,
    },
    /// A client's exercices, oldest first.
    List {
        #[arg(long)]
        client: String,
        #[arg(long)]
        json: bool,
    },
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("{s:?} is not a date ({e}): write it YYYY-MM-DD, e.g. 2026-01-01"))
}

async fn business_db(settings: &Settings) -> anyhow::Result<Database> {
    Ok(Database::connect(&settings.database.url, 2).await?)
}

pub async fn tree(cmd: TreeCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        TreeCommand::Load {
            file,
            firm,
            default,
            check,
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| user(format!("cannot read {}: {e}", file.display())))?;
            let shown = file.display().to_string();
            let template = TreeTemplate::parse(&shown, &text).map_err(|e| user(e.to_string()))?;
            let dirs = template.folders();
            let per_exercice = dirs.iter().filter(|d| d.per_exercice).count();
            if check {
                println!(
                    "{shown}: template {} is valid ({} directories, {per_exercice} per exercice)",
                    template.name,
                    dirs.len()
                );
                return Ok(());
            }
            let db = business_db(settings).await?;
            let outcome = templates::load(&db, &firm.firm, &template, &shown, default).await?;
            let verb = match outcome {
                Loaded::Created => "loaded",
                Loaded::Replaced => "replaced (clients already set up keep their tree)",
                Loaded::Unchanged => "unchanged",
            };
            println!(
                "template {} {verb} for firm {}: {} directories, {per_exercice} per exercice",
                template.name,
                firm.firm,
                dirs.len()
            );
            Ok(())
        }
        TreeCommand::List { firm, json } => {
            let db = business_db(settings).await?;
            let list = templates::list(&db, &firm.firm).await?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<8} {:>6} {:>8}  source",
                "template", "default", "dirs", "themes"
            );
            for t in list {
                println!(
                    "{:<24} {:<8} {:>6} {:>8}  {}",
                    t.template.name,
                    if t.is_default { "yes" } else { "" },
                    t.template.folders().len(),
                    t.template.themes.len(),
                    t.source.as_deref().unwrap_or("built in")
                );
            }
            Ok(())
        }
        TreeCommand::Show { name, firm, json } => {
            let db = business_db(settings).await?;
            let stored = templates::get(&db, &firm.firm, &name)
                .await?
                .ok_or_else(|| {
                    user(format!(
                        "firm {} has no template named {name:?}: see `dossier tree list`",
                        firm.firm
                    ))
                })?;
            if json {
                println!("{}", serde_json::to_string(&stored)?);
                return Ok(());
            }
            let t = &stored.template;
            let dirs = t.folders();
            let entries: Vec<Entry> = dirs
                .iter()
                .map(|d| {
                    let mut note = Vec::new();
                    if d.per_exercice {
                        note.push("[per exercice]".to_string());
                    }
                    // A theme is shown where it starts, not on every child.
                    let parent_theme = dirs
                        .iter()
                        .find(|p| p.path == d.parent_path)
                        .and_then(|p| p.theme.as_ref());
                    if let Some(theme) = &d.theme
                        && Some(theme) != parent_theme
                    {
                        note.push(format!("(theme {theme})"));
                    }
                    Entry {
                        path: d.path.clone(),
                        note: note.join(" "),
                    }
                })
                .collect();
            print!("{}", render(&t.name, &entries));
            println!("themes:");
            for th in &t.themes {
                println!(
                    "  {:<16} {:<24} {}",
                    th.id,
                    th.label,
                    if th.shared_with_clients {
                        "shared with clients"
                    } else {
                        "firm only"
                    }
                );
            }
            Ok(())
        }
    }
}

pub async fn exercice(cmd: ExerciceCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        ExerciceCommand::Add {
            client,
            start,
            end,
            allow_gap,
        } => {
            let db = business_db(settings).await?;
            let attempts = settings.queue.kind(fiscal_folders::KIND).max_attempts;
            let added = exercice::add_with_folders(&db, &client, start, end, allow_gap, attempts)
                .await
                .map_err(|e| match e {
                    ExerciceError::Rule(_) | ExerciceError::ClientNotFound(_) => {
                        user(e.to_string())
                    }
                    other => other.into(),
                })?;
            let (Added::Created(ex) | Added::AlreadyThere(ex)) = added;
            println!(
                "exercice {} added to client {}: {} → {} ({} months), folder {:?}",
                ex.id,
                client,
                ex.start,
                ex.end,
                exercice::rules::months_touched(ex.span()).len(),
                ex.label
            );
            crate::relay_outbox(settings, &db).await;
            println!("folders queued (job fiscal_folders:{})", ex.id);
            Ok(())
        }
        ExerciceCommand::List { client, json } => {
            let db = business_db(settings).await?;
            let list = exercice::list(&db, &client).await?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
                return Ok(());
            }
            println!(
                "{:<36} {:<10} {:<10} {:>6}  {:<22} {:<8} folders",
                "exercice", "start", "end", "months", "folder", "origin"
            );
            for e in list {
                println!(
                    "{:<36} {:<10} {:<10} {:>6}  {:<22} {:<8} {}",
                    e.id,
                    e.start,
                    e.end,
                    exercice::rules::months_touched(e.span()).len(),
                    e.label,
                    e.origin,
                    if e.folders_done_at_ms.is_some() {
                        "written"
                    } else {
                        "pending"
                    }
                );
            }
            Ok(())
        }
    }
}

/// `dossier client tree ID`.
pub async fn client_tree(settings: &Settings, id: &str, json: bool) -> anyhow::Result<()> {
    let db = business_db(settings).await?;
    if dossier_core::clients::get(&db, id).await?.is_none() {
        return Err(user(format!("no client with id {id}")));
    }
    let list = folders::list(&db, id).await?;
    let trees = folders::client_trees(&db, &[id.to_string()]).await?;
    if json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    let Some(tree) = trees.get(id) else {
        println!(
            "client {id} has no folder tree yet: its tree_setup job has not run (see `dossier jobs list --kind tree_setup`)"
        );
        return Ok(());
    };
    let children = |path: &str| {
        list.iter()
            .filter(|f| {
                f.path
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/') && !rest[1..].contains('/'))
            })
            .count()
    };
    let entries: Vec<Entry> = list
        .iter()
        .map(|f| Entry {
            path: f.path.clone(),
            note: match f.kind {
                FolderKind::Exercice => format!("[{} months]", children(&f.path)),
                _ => String::new(),
            },
        })
        .collect();
    print!(
        "{}",
        render(
            &format!("client {id} (tree {})", tree.template_name),
            &entries
        )
    );
    let count = |k: FolderKind| list.iter().filter(|f| f.kind == k).count();
    println!(
        "\n{} directories, {} exercice folders, {} monthly folders ({} in all)",
        count(FolderKind::Directory),
        count(FolderKind::Exercice),
        count(FolderKind::Month),
        list.len()
    );
    Ok(())
}
