//! `dossier app …`: the firm's partner-app catalogue and each client's
//! activations. Secret settings are shown as `***`, always.

use std::path::PathBuf;

use clap::Subcommand;
use dossier_core::apps::{self, AppError};
use dossier_core::config::Settings;
use dossier_core::db::Database;
use dossier_core::jobs::{app_setup, app_teardown};
use dossier_core::owners;
use dossier_core::queue;
use dossier_core::secrets::KeyRing;
use dossier_core::tree::folders;

use crate::folders::FirmArg;
use crate::user;

#[derive(Subcommand)]
pub enum AppCommand {
    /// Validate a catalogue file (TOML, see config/apps/) and make it the
    /// firm's catalogue.
    Load {
        file: PathBuf,
        #[command(flatten)]
        firm: FirmArg,
    },
    /// The firm's catalogue.
    List {
        #[command(flatten)]
        firm: FirmArg,
        #[arg(long)]
        json: bool,
    },
    /// Give a client access to an app (automation apps are provisioned).
    Enable {
        #[arg(long)]
        client: String,
        #[arg(long)]
        app: String,
        /// name=value, repeated.
        #[arg(long = "setting", value_name = "NAME=VALUE")]
        settings: Vec<String>,
        /// Pin a redirection app on the director's home portal.
        #[arg(long)]
        on_director_portal: bool,
    },
    /// Withdraw a client's access (automation apps are de-provisioned).
    Disable {
        #[arg(long)]
        client: String,
        #[arg(long)]
        app: String,
    },
    /// A client's apps, settings redacted.
    Show {
        #[arg(long)]
        client: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-seal every secret setting with the first key of
    /// apps.encryption_keys (after a rotation).
    Rekey,
}

fn fail(e: AppError) -> anyhow::Error {
    if e.is_user_error() {
        user(e.to_string())
    } else {
        e.into()
    }
}

pub async fn run(cmd: AppCommand, settings: &Settings) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    let keys = KeyRing::new(&settings.apps.encryption_keys).map_err(|e| user(e.to_string()))?;
    match cmd {
        AppCommand::Load { file, firm } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| user(format!("cannot read {}: {e}", file.display())))?;
            let list = apps::parse_catalogue(&file.display().to_string(), &text).map_err(fail)?;
            apps::check_destinations(&file.display().to_string(), &list, &settings.outbound)
                .map_err(fail)?;
            apps::load_catalogue(&db, &firm.firm, &list)
                .await
                .map_err(fail)?;
            println!(
                "catalogue of firm {}: {} apps loaded",
                firm.firm,
                list.len()
            );
            Ok(())
        }
        AppCommand::List { firm, json } => {
            let list = apps::catalogue(&db, &firm.firm).await.map_err(fail)?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
                return Ok(());
            }
            println!("{:<24} {:<12} {:<40} settings", "app", "kind", "name");
            for a in list {
                let settings: Vec<String> = a
                    .settings
                    .iter()
                    .map(|s| {
                        format!(
                            "{}{}{}",
                            s.name,
                            if s.required { "*" } else { "" },
                            if s.secret { " (secret)" } else { "" }
                        )
                    })
                    .collect();
                println!(
                    "{:<24} {:<12} {:<40} {}",
                    a.id,
                    a.kind.as_str(),
                    a.name,
                    settings.join(", ")
                );
            }
            Ok(())
        }
        AppCommand::Enable {
            client,
            app,
            settings: given,
            on_director_portal,
        } => {
            let c = dossier_core::clients::get(&db, &client)
                .await?
                .ok_or_else(|| user(format!("no client with id {client}")))?;
            let definition = apps::app(&db, &c.firm_id, &app).await.map_err(fail)?;
            let mut pairs = Vec::new();
            for s in &given {
                let (k, v) = s.split_once('=').ok_or_else(|| {
                    user(format!(
                        "--setting {:?}: write it NAME=VALUE",
                        s.split('=').next().unwrap_or("")
                    ))
                })?;
                pairs.push((k.trim().to_string(), v.to_string()));
            }
            let directories: Vec<String> = folders::client_template(&db, &client)
                .await?
                .folders()
                .into_iter()
                .map(|f| f.path)
                .collect();
            let sealed = apps::validate_settings(&definition, &client, &pairs, &directories, &keys)
                .map_err(fail)?;
            let activation = apps::enable(&db, &client, &definition, &sealed, on_director_portal)
                .await
                .map_err(fail)?;
            let q = queue::open(settings).await?;
            let attempts = settings.queue.kind(app_setup::KIND).max_attempts;
            let job = app_setup::job_for(app_setup::KIND, &activation, attempts);
            q.push(owners::labelled(&db, job).await?).await?;
            println!(
                "app {app} enabled for client {client} (settings: {}); set-up queued",
                serde_json::to_string(&activation.redacted_settings())?
            );
            Ok(())
        }
        AppCommand::Disable { client, app } => {
            let activation = apps::disable(&db, &client, &app).await.map_err(fail)?;
            if activation.status == "disabling" {
                let q = queue::open(settings).await?;
                let attempts = settings.queue.kind(app_teardown::KIND).max_attempts;
                let job = app_setup::job_for(app_teardown::KIND, &activation, attempts);
                q.push(owners::labelled(&db, job).await?).await?;
                println!("app {app} disabled for client {client}; de-provisioning queued");
            } else {
                println!("app {app} disabled for client {client}");
            }
            Ok(())
        }
        AppCommand::Show { client, json } => {
            let list = apps::client_apps(&db, &client).await.map_err(fail)?;
            if json {
                let shown: Vec<serde_json::Value> = list
                    .iter()
                    .map(|a| {
                        let mut v = serde_json::to_value(a).unwrap_or_default();
                        v["settings"] =
                            serde_json::to_value(a.redacted_settings()).unwrap_or_default();
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string(&shown)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<12} {:<10} {:<20} settings / note",
                "app", "kind", "status", "external id"
            );
            for a in list {
                println!(
                    "{:<24} {:<12} {:<10} {:<20} {}{}{}",
                    a.app_id,
                    a.kind,
                    a.status,
                    a.external_id.as_deref().unwrap_or("-"),
                    serde_json::to_string(&a.redacted_settings())?,
                    if a.on_director_portal {
                        " [on the director's portal]"
                    } else {
                        ""
                    },
                    a.last_error
                        .as_deref()
                        .map(|e| format!("  {e}"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        AppCommand::Rekey => {
            let n = apps::rekey(&db, &keys).await.map_err(fail)?;
            println!("{n} secret settings re-sealed with the current key");
            Ok(())
        }
    }
}
