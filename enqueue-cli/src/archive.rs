//! `dossier client archive|unarchive|erase ID` (`dossier_core::client_archive`,
//! `dossier_core::erasure`) and `dossier person erase`.

use dossier_core::audit::action;
use dossier_core::client_archive;
use dossier_core::config::Settings;
use dossier_core::db::Database;
use dossier_core::erasure::{self, Erased};
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
        .await
        .map_err(|e| match e {
            client_archive::ArchiveError::Erased(_) => user(e.to_string()),
            e => e.into(),
        })?
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

fn print_erased(done: &Erased) {
    for (store, n) in &done.removed {
        println!("  {store:<30} {n}");
    }
}

pub async fn erase(settings: &Settings, id: &str) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    let q = open_queue(settings).await?;
    let mail = erasure::mail_dir(settings);
    let done = erasure::erase_client(&db, q.as_ref(), mail.as_deref(), id)
        .await
        .map_err(|e| match e {
            erasure::ErasureError::NotArchived(_) | erasure::ErasureError::Running { .. } => {
                user(e.to_string())
            }
            e => e.into(),
        })?
        .ok_or_else(|| no_client(id))?;
    println!(
        "client {id}: its people's data erased{}; removed or replaced, per store:",
        if done.already { " (again)" } else { "" }
    );
    print_erased(&done);
    audited(
        settings,
        action::CLIENT_ERASE,
        id,
        serde_json::to_value(&done.removed)?,
    )
    .await;
    Ok(())
}

pub async fn erase_person(
    settings: &Settings,
    email: &str,
    firm: Option<&str>,
) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database.url, 2).await?;
    let q = open_queue(settings).await?;
    let mail = erasure::mail_dir(settings);
    let done = erasure::erase_person(&db, q.as_ref(), mail.as_deref(), email, firm)
        .await
        .map_err(|e| match e {
            erasure::ErasureError::NotAnAddress => user(e.to_string()),
            e => e.into(),
        })?;
    println!(
        "the person's data erased{}; removed or replaced, per store:",
        firm.map(|f| format!(" in firm {}", for_terminal(f)))
            .unwrap_or_default()
    );
    print_erased(&done);
    // The trail keeps what was done, never whom it was done for.
    let target = firm
        .map(|f| format!("a person of firm {f}"))
        .unwrap_or_else(|| "a person".into());
    audited(
        settings,
        action::PERSON_ERASE,
        &target,
        serde_json::to_value(&done.removed)?,
    )
    .await;
    Ok(())
}
