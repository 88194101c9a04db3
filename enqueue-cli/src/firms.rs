//! `dossier firm …` and `dossier token …`: the firms of the platform, and
//! the API tokens the hooks accept. A token is printed once, at creation;
//! listings show its id, never the token.

use clap::Subcommand;
use dossier_core::api_tokens::{self, NewToken, Scope, TokenError, TokenRecord};
use dossier_core::audit::action;
use dossier_core::clock::{format_ms, now_ms};
use dossier_core::config::Settings;
use dossier_core::db::Database;
use dossier_core::firms::{self, FirmError};

use crate::user;

#[derive(Subcommand)]
pub enum FirmCommand {
    /// Record a firm (cabinet): clients, templates, apps, members and
    /// imports name a recorded firm.
    Add {
        /// Its id: letters, digits, '-', '_', '.' (e.g. cabinet-durand).
        id: String,
        /// Its name, as its clients know it.
        #[arg(long)]
        name: String,
    },
    /// Every firm.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One firm, with what it holds.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue an API token, printed once. A hooks token belongs to one firm
    /// (--firm) and sees that firm only; an admin token is platform-wide.
    Create {
        #[arg(long)]
        firm: Option<String>,
        /// hooks (a firm's clients, jobs, invitations) or admin (every
        /// firm, /metrics, the dashboard, the admin API).
        #[arg(long, default_value = "hooks", value_parser = ["hooks", "admin"])]
        scope: String,
        /// When it stops working: 90d, 12h, 2027-03-31 (00:00 UTC) or an
        /// RFC 3339 time. Default: never.
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// What it is for, shown in listings (default: FIRM-SCOPE).
        #[arg(long)]
        name: Option<String>,
        /// Print the token alone (for scripts).
        #[arg(long)]
        quiet: bool,
    },
    /// Tokens, newest first: id, name, firm, scope, state, last use.
    List {
        #[arg(long)]
        firm: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop a token at once.
    Revoke { id: String },
}

fn firm_error(e: FirmError) -> anyhow::Error {
    if e.is_user_error() {
        user(e.to_string())
    } else {
        e.into()
    }
}

fn token_error(e: TokenError) -> anyhow::Error {
    if e.is_user_error() {
        user(e.to_string())
    } else {
        e.into()
    }
}

pub async fn firm(cmd: FirmCommand, settings: &Settings) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    match cmd {
        FirmCommand::Add { id, name } => {
            let f = firms::add(&db, &id, &name).await.map_err(firm_error)?;
            crate::audited(
                settings,
                action::FIRM_ADD,
                &f.id,
                serde_json::json!({ "name": f.name }),
            )
            .await;
            println!("firm {} ({}) added", f.id, f.name);
            println!(
                "next: `dossier token create --firm {}` for its hooks token",
                f.id
            );
        }
        FirmCommand::List { json } => {
            let list = firms::list(&db).await.map_err(firm_error)?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                println!("{:<32} {:<40} created", "firm", "name");
                for f in list {
                    println!("{:<32} {:<40} {}", f.id, f.name, format_ms(f.created_at_ms));
                }
            }
        }
        FirmCommand::Show { id, json } => {
            let s = firms::summary(&db, &id).await.map_err(firm_error)?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!("firm           {}", s.firm.id);
                println!("name           {}", s.firm.name);
                println!("created        {}", format_ms(s.firm.created_at_ms));
                println!("clients        {}", s.clients);
                println!("members        {}", s.members);
                println!("tree templates {}", s.tree_templates);
                println!("apps           {}", s.apps);
                println!("imports        {}", s.imports);
                println!("active tokens  {}", s.active_tokens);
            }
        }
    }
    Ok(())
}

pub async fn token(cmd: TokenCommand, settings: &Settings) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    match cmd {
        TokenCommand::Create {
            firm,
            scope,
            expires,
            name,
            quiet,
        } => {
            let scope = Scope::parse(&scope).unwrap_or(Scope::Hooks);
            let expires_at_ms = expires
                .as_deref()
                .map(api_tokens::parse_expiry)
                .transpose()
                .map_err(token_error)?;
            let (record, secret) = api_tokens::create(
                &db,
                NewToken {
                    name,
                    firm_id: firm,
                    scope,
                    expires_at_ms,
                },
            )
            .await
            .map_err(token_error)?;
            crate::audited(
                settings,
                action::TOKEN_CREATE,
                &record.id,
                serde_json::json!({
                    "name": record.name,
                    "firm": record.firm_id,
                    "scope": record.scope.as_str(),
                    "expires_at_ms": record.expires_at_ms,
                }),
            )
            .await;
            if quiet {
                println!("{secret}");
                return Ok(());
            }
            println!("token {} ({}) created:", record.id, record.name);
            println!();
            println!("    {secret}");
            println!();
            println!("It is shown this once; only its hash is kept. Send it as");
            println!(
                "`Authorization: Bearer <token>`. Revoke it with `dossier token revoke {}`.",
                record.id
            );
            println!("{}", describe(&record));
        }
        TokenCommand::List { firm, json } => {
            let list = api_tokens::list(&db, firm.as_deref())
                .await
                .map_err(token_error)?;
            if json {
                let now = now_ms();
                let rows: Vec<serde_json::Value> = list
                    .iter()
                    .map(|t| {
                        let mut v = serde_json::to_value(t).unwrap_or_default();
                        v["state"] = t.state(now).into();
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print!("{}", table(&list));
            }
        }
        TokenCommand::Revoke { id } => {
            let t = api_tokens::revoke(&db, &id).await.map_err(token_error)?;
            crate::audited(
                settings,
                action::TOKEN_REVOKE,
                &t.id,
                serde_json::json!({ "name": t.name, "firm": t.firm_id }),
            )
            .await;
            println!(
                "token {} ({}) revoked at {}: its next request is refused",
                t.id,
                t.name,
                t.revoked_at_ms.map(format_ms).unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn describe(t: &TokenRecord) -> String {
    let reach = match (&t.firm_id, t.scope) {
        (Some(f), _) => format!("firm {f}'s clients, jobs and invitations through the hooks"),
        (None, _) => "every firm and route: /metrics, the dashboard, the admin API".into(),
    };
    let until = t
        .expires_at_ms
        .map(|e| format!("until {}", format_ms(e)))
        .unwrap_or_else(|| "with no expiry".into());
    format!("Scope {}: {reach}, {until}.", t.scope.as_str())
}

fn table(list: &[TokenRecord]) -> String {
    let now = now_ms();
    let mut out = format!(
        "{:<21} {:<24} {:<20} {:<6} {:<8} {:<24} last used\n",
        "id", "name", "firm", "scope", "state", "expires"
    );
    for t in list {
        out.push_str(&format!(
            "{:<21} {:<24} {:<20} {:<6} {:<8} {:<24} {}\n",
            t.id,
            t.name,
            t.firm_id.as_deref().unwrap_or("(platform)"),
            t.scope.as_str(),
            t.state(now),
            t.expires_at_ms
                .map(format_ms)
                .unwrap_or_else(|| "never".into()),
            t.last_used_at_ms
                .map(format_ms)
                .unwrap_or_else(|| "never".into()),
        ));
    }
    out
}
