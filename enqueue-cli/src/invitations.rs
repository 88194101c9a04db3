//! `dossier invitation …`: invite a client's director or employees, send
//! drafts, resend, revoke, list. Emails are shown to the operator who asks,
//! never logged.

use clap::Subcommand;
use dossier_core::clock::format_ms;
use dossier_core::config::Settings;
use dossier_core::db::Database;
use dossier_core::invitations::{self, Invitation, InvitationError, NewInvitation};
use dossier_core::jobs::invitation as job;

use crate::user;

#[derive(Subcommand)]
pub enum InvitationCommand {
    /// Invite a person to a client's space (the director, or with
    /// --invited-by an employee); sent at once unless --draft.
    Add {
        #[arg(long)]
        client: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        first_name: String,
        #[arg(long)]
        last_name: String,
        /// The director's invitation id: makes this an employee's invitation.
        #[arg(long)]
        invited_by: Option<String>,
        /// Comma-separated theme ids (default: all the client's shared themes,
        /// or the director's for an employee).
        #[arg(long, value_delimiter = ',')]
        themes: Option<Vec<String>>,
        /// Keep it as a draft, to send later with `invitation send`.
        #[arg(long)]
        draft: bool,
    },
    /// Send the client's draft invitations.
    Send {
        #[arg(long)]
        client: String,
    },
    /// A new link for the same person; the previous one stops working.
    Resend { id: String },
    /// Withdraw an invitation; its link stops working.
    Revoke { id: String },
    /// A client's invitations.
    List {
        #[arg(long)]
        client: String,
        #[arg(long)]
        json: bool,
    },
}

fn fail(e: InvitationError) -> anyhow::Error {
    if e.is_user_error() {
        user(e.to_string())
    } else {
        e.into()
    }
}

/// Relays the staged jobs and says which invitations are on their way.
async fn announce(settings: &Settings, db: &Database, invs: &[Invitation]) {
    crate::relay_outbox(settings, db).await;
    for i in invs {
        println!("invitation {} queued for sending", i.id);
    }
}

pub async fn run(cmd: InvitationCommand, settings: &Settings) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    match cmd {
        InvitationCommand::Add {
            client,
            email,
            first_name,
            last_name,
            invited_by,
            themes,
            draft,
        } => {
            let attempts = settings.queue.kind(job::KIND).max_attempts;
            let inv = invitations::create_with_attempts(
                &db,
                NewInvitation {
                    client_id: client,
                    email,
                    first_name,
                    last_name,
                    invited_by,
                    themes,
                },
                !draft,
                attempts,
            )
            .await
            .map_err(fail)?;
            println!(
                "invitation {} ({}) created as {}; themes: {}",
                inv.id,
                inv.role.as_str(),
                inv.status.as_str(),
                inv.themes.join(", ")
            );
            if !draft {
                announce(settings, &db, std::slice::from_ref(&inv)).await;
            }
            Ok(())
        }
        InvitationCommand::Send { client } => {
            let attempts = settings.queue.kind(job::KIND).max_attempts;
            let queued = invitations::queue_drafts(&db, &client, attempts)
                .await
                .map_err(fail)?;
            if queued.is_empty() {
                println!("client {client} has no draft invitation");
            }
            announce(settings, &db, &queued).await;
            Ok(())
        }
        InvitationCommand::Resend { id } => {
            let attempts = settings.queue.kind(job::KIND).max_attempts;
            let inv = invitations::resend(&db, &id, attempts)
                .await
                .map_err(fail)?;
            announce(settings, &db, std::slice::from_ref(&inv)).await;
            Ok(())
        }
        InvitationCommand::Revoke { id } => {
            let inv = invitations::revoke(&db, &id).await.map_err(fail)?;
            println!("invitation {} revoked: its link no longer works", inv.id);
            Ok(())
        }
        InvitationCommand::List { client, json } => {
            let list = invitations::list(&db, &client).await.map_err(fail)?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
                return Ok(());
            }
            println!(
                "{:<36} {:<8} {:<9} {:<32} {:<24} {:<24} {:<40} note",
                "invitation", "role", "status", "email", "sent", "expires", "mail server's answer"
            );
            for i in list {
                println!(
                    "{:<36} {:<8} {:<9} {:<32} {:<24} {:<24} {:<40} {}",
                    i.id,
                    i.role.as_str(),
                    i.status.as_str(),
                    i.email,
                    i.sent_at_ms.map(format_ms).unwrap_or_else(|| "-".into()),
                    i.expires_at_ms.map(format_ms).unwrap_or_else(|| "-".into()),
                    i.smtp_reply.as_deref().unwrap_or("-"),
                    i.last_error.as_deref().unwrap_or("")
                );
            }
            Ok(())
        }
    }
}
