//! `dossier client create` and `dossier client list`.

use chrono::NaiveDate;
use clap::Args;
use dossier_core::clients;
use dossier_core::collaborators;
use dossier_core::config::Settings;
use dossier_core::db::Database;
use dossier_core::onboarding::{self, AppChoice, ClientForm, Director, OnboardingError};
use dossier_core::secrets::KeyRing;

use crate::folders::FirmArg;
use crate::user;

#[derive(Args)]
#[command(after_help = "Examples:
  dossier client create --firm cabinet-durand --siret '880 878 145 00015' \\
      --exercice-start 2026-01-01 --director-email marie@ganymede.fr \\
      --director-first-name Marie --director-last-name Lefèvre --wait
  dossier client create --firm cabinet-durand --name 'SCI Les Tilleuls' \\
      --exercice-start 2025-03-01 --exercice-end 2026-12-31 --no-invite
  dossier client create --firm cabinet-durand --siret 88087814500015 \\
      --exercice-start 2026-01-01 --no-invite --app ged --app-setting ged:dossier=Social")]
pub struct CreateArgs {
    #[command(flatten)]
    firm: FirmArg,
    /// 14 digits, spaces allowed; omit for a client entered by hand.
    #[arg(long)]
    siret: Option<String>,
    /// The company's legal name (required without a SIRET).
    #[arg(long)]
    name: Option<String>,
    /// Other typed company fields, e.g. address.city=Paris (repeatable).
    #[arg(long = "field", value_name = "KEY=VALUE")]
    fields: Vec<String>,
    /// First day of the current exercice, YYYY-MM-DD.
    #[arg(long, value_parser = parse_date)]
    exercice_start: Option<NaiveDate>,
    /// Last day (default: start + 12 months − 1 day).
    #[arg(long, value_parser = parse_date)]
    exercice_end: Option<NaiveDate>,
    /// A tree template of the firm (default: its default tree).
    #[arg(long)]
    tree: Option<String>,
    #[arg(long)]
    director_email: Option<String>,
    #[arg(long)]
    director_first_name: Option<String>,
    #[arg(long)]
    director_last_name: Option<String>,
    /// The director's themes, comma-separated (default: all shared ones).
    #[arg(long, value_delimiter = ',')]
    themes: Option<Vec<String>>,
    /// Keep the invitation as a draft (`dossier invitation send` later).
    #[arg(long)]
    no_invite: bool,
    /// A partner app to enable (repeatable).
    #[arg(long = "app", value_name = "APP")]
    apps: Vec<String>,
    /// A setting of one of those apps: APP:NAME=VALUE (repeatable).
    #[arg(long = "app-setting", value_name = "APP:NAME=VALUE")]
    app_settings: Vec<String>,
    /// Pin a redirection app on the director's portal (repeatable).
    #[arg(long = "pin", value_name = "APP")]
    pins: Vec<String>,
    /// A firm member who follows the client, by email (repeatable).
    #[arg(long = "collaborator", value_name = "EMAIL")]
    collaborators: Vec<String>,
    /// Carried by the client's jobs into the workers' logs.
    #[arg(long, value_parser = crate::import::trace_id)]
    trace_id: Option<String>,
    /// Follow the onboarding steps until the client is ready (exit 0), a
    /// step has failed for good (exit 3) or --wait-timeout ran out (exit 4).
    #[arg(long)]
    wait: bool,
    /// With --wait: the longest wait, in seconds.
    #[arg(long, requires = "wait", default_value_t = 600)]
    wait_timeout: u64,
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("{s:?} is not a date ({e}): write it YYYY-MM-DD"))
}

fn pair(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| user(format!("{what} {s:?}: write it NAME=VALUE")))
}

pub async fn create(a: CreateArgs, settings: &Settings) -> anyhow::Result<()> {
    let mut company = clients::Fields::new();
    if let Some(n) = &a.name {
        company.insert("legal_name".into(), n.clone());
    }
    for f in &a.fields {
        let (k, v) = pair(f, "--field")?;
        company.insert(k, v);
    }
    let mut apps: Vec<AppChoice> = a
        .apps
        .iter()
        .map(|id| AppChoice {
            app_id: id.clone(),
            settings: Vec::new(),
            on_director_portal: a.pins.contains(id),
        })
        .collect();
    for s in &a.app_settings {
        let (app, rest) = s
            .split_once(':')
            .ok_or_else(|| user(format!("--app-setting {s:?}: write it APP:NAME=VALUE")))?;
        let choice = apps
            .iter_mut()
            .find(|c| c.app_id == app)
            .ok_or_else(|| user(format!("--app-setting for {app}, which no --app names")))?;
        choice.settings.push(pair(rest, "--app-setting")?);
    }
    let director = match (
        &a.director_email,
        &a.director_first_name,
        &a.director_last_name,
    ) {
        (None, None, None) => None,
        (e, f, l) => Some(Director {
            email: e.clone().unwrap_or_default(),
            first_name: f.clone().unwrap_or_default(),
            last_name: l.clone().unwrap_or_default(),
        }),
    };
    let form = ClientForm {
        firm_id: a.firm.firm.clone(),
        siret: a.siret.clone(),
        company,
        exercice_start: a.exercice_start,
        exercice_end: a.exercice_end,
        tree: a.tree.clone(),
        director,
        themes: a.themes.clone(),
        invite: !a.no_invite,
        apps,
        collaborators: a.collaborators.clone(),
    };
    let keys = KeyRing::new(&settings.apps.encryption_keys).map_err(|e| user(e.to_string()))?;
    let db = Database::connect(&settings.database.url, 2).await?;
    let created =
        onboarding::create_client_once(&db, &settings.queue, &keys, form, None, a.trace_id.clone())
            .await
            .map_err(|e| match e {
                OnboardingError::Invalid(_) => user(e.to_string()),
                other => other.into(),
            })?;
    // A test-only fault point: the process dies between the commit and the
    // push of the jobs (the outbox must make up for it).
    if std::env::var("DOSSIER_TEST_FAULT").as_deref() == Ok("after_commit") {
        std::process::abort();
    }
    crate::relay_outbox(settings, &db).await;
    println!(
        "client {} created; jobs queued: {}",
        created.client_id,
        created.jobs.join(", ")
    );
    if a.wait {
        let queue = dossier_core::queue::open(settings).await?;
        crate::wait::client(
            &db,
            queue.as_ref(),
            &created.client_id,
            std::time::Duration::from_secs(a.wait_timeout),
            std::time::Duration::from_millis(500),
        )
        .await?;
    }
    Ok(())
}

pub async fn list(
    settings: &Settings,
    firm: &str,
    limit: i64,
    archived: bool,
    json: bool,
) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    let list = if archived {
        clients::archived(&db, firm, limit).await?
    } else {
        clients::list(&db, firm, limit).await?
    };
    if json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    println!("{:<36} {:<16} {:<10} name", "client", "siret", "enrichment");
    for c in list {
        println!(
            "{:<36} {:<16} {:<10} {}",
            c.id,
            c.siret.as_deref().unwrap_or("-"),
            serde_json::to_value(c.enrichment_status)?
                .as_str()
                .unwrap_or("?"),
            c.company
                .get("legal_name")
                .map(String::as_str)
                .unwrap_or("")
        );
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum MemberCommand {
    /// Add an accountant to the firm.
    Add {
        #[command(flatten)]
        firm: FirmArg,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
    },
    /// The firm's members.
    List {
        #[command(flatten)]
        firm: FirmArg,
    },
}

#[derive(clap::Subcommand)]
pub enum CollaboratorCommand {
    /// A member of the client's firm follows the client.
    Add {
        #[arg(long)]
        client: String,
        #[arg(long)]
        member: String,
    },
    /// The member no longer follows the client.
    Remove {
        #[arg(long)]
        client: String,
        #[arg(long)]
        member: String,
    },
}

fn member_error(e: collaborators::MemberError) -> anyhow::Error {
    if e.is_user_error() {
        user(e.to_string())
    } else {
        e.into()
    }
}

pub async fn member(cmd: MemberCommand, settings: &Settings) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    match cmd {
        MemberCommand::Add { firm, email, name } => {
            let m = collaborators::add_member(&db, &firm.firm, &email, &name)
                .await
                .map_err(member_error)?;
            println!(
                "member {} ({}) added to firm {}",
                m.name, m.email, firm.firm
            );
        }
        MemberCommand::List { firm } => {
            for m in collaborators::members(&db, &firm.firm)
                .await
                .map_err(member_error)?
            {
                println!("{:<32} {}", m.email, m.name);
            }
        }
    }
    Ok(())
}

pub async fn collaborator(cmd: CollaboratorCommand, settings: &Settings) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    match cmd {
        CollaboratorCommand::Add { client, member } => {
            let m = collaborators::add(&db, &client, &member)
                .await
                .map_err(member_error)?;
            println!("{} now follows client {client}", m.name);
        }
        CollaboratorCommand::Remove { client, member } => {
            collaborators::remove(&db, &client, &member)
                .await
                .map_err(member_error)?;
            println!("{member} no longer follows client {client}");
        }
    }
    Ok(())
}
