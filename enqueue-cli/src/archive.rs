//! `dossier client archive|unarchive ID` (`dossier_core::client_archive`).

use dossier_core::audit::action;
use dossier_core::client_archive;
use dossier_core::config::Settings;
use dossier_core::db::Database;
use dossier_core::text::for_terminal;

use crate::{audited, open_queue, user};

fn no_client(id: &str) -> anyhow::Error {
    user(format!("no client with id {}", for_terminal(id)))
}

pub async fn archive(settings: &Settings, id: &str) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    let q = open_queue(settings).await?;
    let done = client_archive::archive(&db, q.as_ref(), &settings.queue, id)
        .await?
        .ok_or_else(|| no_client(id))?;
    println!(
        "client {id} archived{}: {} waiting job(s) cancelled, {} invitation(s) revoked, {} app(s) disabled ({} torn down at the partner)",
        if done.already {
            " (already; finished)"
        } else {
            ""
        },
        done.jobs_cancelled.len(),
        done.invitations_revoked.len(),
        done.apps_disabled.len(),
        done.apps_torn_down.len(),
    );
    if !done.jobs_running.is_empty() {
        println!(
            "{} job(s) running now finish; a retry of theirs is cancelled: {}",
            done.jobs_running.len(),
            done.jobs_running.join(", ")
        );
    }
    audited(
        settings,
        action::CLIENT_ARCHIVE,
        id,
        serde_json::to_value(&done)?,
    )
    .await;
    Ok(())
}

pub async fn unarchive(settings: &Settings, id: &str) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    let q = open_queue(settings).await?;
    let done = client_archive::unarchive(&db, q.as_ref(), &settings.queue, id)
        .await?
        .ok_or_else(|| no_client(id))?;
    if done.was_active {
        println!("client {id} is not archived: nothing to do");
        return Ok(());
    }
    println!(
        "client {id} unarchived: {} job(s) restarted, {} invitation(s) sent again, {} app(s) enabled again",
        done.jobs_restarted.len(),
        done.invitations_reinstated.len(),
        done.apps_reenabled.len(),
    );
    for why in &done.left {
        println!("left as it is: {why}");
    }
    audited(
        settings,
        action::CLIENT_UNARCHIVE,
        id,
        serde_json::to_value(&done)?,
    )
    .await;
    Ok(())
}
