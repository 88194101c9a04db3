//! `dossier webhook …`: a firm's event endpoints. A secret is printed once,
//! at creation and at rotation; listings never show it.

use clap::Subcommand;
use dossier_core::audit::action;
use dossier_core::clock::format_ms;
use dossier_core::config::Settings;
use dossier_core::db::Database;
use dossier_core::events::endpoints::{self, Endpoint, EndpointError};
use dossier_core::secrets::KeyRing;

use crate::user;

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Send a firm's events to a URL (https; http only to loopback when
    /// outbound.allow_plain_http_to_loopback is set). Prints the secret
    /// signing the deliveries, once.
    #[command(after_help = "Examples:
  dossier webhook add --firm cabinet-durand --url https://crm.example/hooks/dossier --events all
  dossier webhook add --firm cabinet-durand --url https://crm.example/h \\
      --events client.ready,client.step_failed --quiet > secret.txt")]
    Add {
        #[arg(long)]
        firm: String,
        #[arg(long)]
        url: String,
        /// Event types, comma-separated, or `all`: client.ready,
        /// client.step_failed, client.enriched, invitation.sent,
        /// invitation.accepted, invitation.failed, invitation.expired,
        /// import.finished, exercice.created.
        #[arg(long, required = true, value_delimiter = ',')]
        events: Vec<String>,
        /// Print the secret alone (for scripts).
        #[arg(long)]
        quiet: bool,
    },
    /// Endpoints, oldest first: id, firm, state, events, URL.
    List {
        #[arg(long)]
        firm: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop sending to an endpoint; its undelivered events are dropped.
    Remove { id: String },
    /// A new signing secret, printed once; the old one stops at once.
    RotateSecret {
        id: String,
        #[arg(long)]
        quiet: bool,
    },
    /// Turn a disabled endpoint back on.
    Enable { id: String },
}

fn endpoint_error(e: EndpointError) -> anyhow::Error {
    if e.is_user_error() {
        user(e.to_string())
    } else {
        e.into()
    }
}

fn describe(e: &Endpoint) -> String {
    let mut out = format!(
        "endpoint {} of firm {} ({}): {}\n  events: {}",
        e.id,
        e.firm_id,
        e.state(),
        e.url,
        e.events.join(", ")
    );
    if let Some(since) = e.failing_since_ms {
        out.push_str(&format!("\n  failing since {}", format_ms(since)));
    }
    if let (Some(at), Some(why)) = (e.disabled_at_ms, &e.disabled_reason) {
        out.push_str(&format!(
            "\n  disabled at {}: {}\n  turn it back on with `dossier webhook enable {}`",
            format_ms(at),
            dossier_core::text::for_terminal(why),
            e.id
        ));
    }
    out
}

fn print_secret(secret: &str, quiet: bool) {
    if quiet {
        println!("{secret}");
        return;
    }
    println!();
    println!("    {secret}");
    println!();
    println!("The signing secret is shown this once; it is kept sealed. Each delivery");
    println!("carries X-Dossier-Timestamp and X-Dossier-Signature: v1=hex(HMAC-SHA256(");
    println!("secret, \"{{timestamp}}.{{body}}\")); docs/webhooks.md has a test vector.");
}

pub async fn run(cmd: WebhookCommand, settings: &Settings) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    let keys = || KeyRing::new(&settings.apps.encryption_keys).map_err(|e| user(e.to_string()));
    match cmd {
        WebhookCommand::Add {
            firm,
            url,
            events,
            quiet,
        } => {
            let types = endpoints::parse_events(&events).map_err(endpoint_error)?;
            let (e, secret) =
                endpoints::add(&db, &keys()?, &settings.outbound, &firm, &url, &types)
                    .await
                    .map_err(endpoint_error)?;
            crate::audited(
                settings,
                action::WEBHOOK_ADD,
                &e.id,
                serde_json::json!({ "firm": e.firm_id, "url": dossier_core::config::redact_url(&e.url), "events": e.events }),
            )
            .await;
            if !quiet {
                println!("{}", describe(&e));
            }
            print_secret(&secret, quiet);
        }
        WebhookCommand::List { firm, json } => {
            let list = endpoints::list(&db, firm.as_deref())
                .await
                .map_err(endpoint_error)?;
            if json {
                let rows: Vec<serde_json::Value> = list
                    .iter()
                    .map(|e| {
                        let mut v = serde_json::to_value(e).unwrap_or_default();
                        v["state"] = e.state().into();
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else if list.is_empty() {
                println!(
                    "no webhook endpoint: `dossier webhook add --firm F --url https://… --events all`"
                );
            } else {
                for e in &list {
                    println!("{}", describe(e));
                }
            }
        }
        WebhookCommand::Remove { id } => {
            let e = endpoints::remove(&db, &id, None)
                .await
                .map_err(endpoint_error)?;
            crate::audited(
                settings,
                action::WEBHOOK_REMOVE,
                &e.id,
                serde_json::json!({ "firm": e.firm_id }),
            )
            .await;
            println!("endpoint {} of firm {} removed", e.id, e.firm_id);
        }
        WebhookCommand::RotateSecret { id, quiet } => {
            let (e, secret) = endpoints::rotate_secret(&db, &keys()?, &id, None)
                .await
                .map_err(endpoint_error)?;
            crate::audited(
                settings,
                action::WEBHOOK_ROTATE,
                &e.id,
                serde_json::json!({ "firm": e.firm_id }),
            )
            .await;
            if !quiet {
                println!("endpoint {}: new secret, the old one no longer signs", e.id);
            }
            print_secret(&secret, quiet);
        }
        WebhookCommand::Enable { id } => {
            let e = endpoints::enable(&db, &id, None)
                .await
                .map_err(endpoint_error)?;
            crate::audited(
                settings,
                action::WEBHOOK_ENABLE,
                &e.id,
                serde_json::json!({ "firm": e.firm_id }),
            )
            .await;
            println!("{}", describe(&e));
            println!(
                "events it missed are dead jobs: `dossier jobs list --kind webhook_delivery --status dead`, then `dossier jobs retry ID`"
            );
        }
    }
    Ok(())
}
