//! `dossier client create … --wait`: follows the new client's onboarding
//! steps (`onboarding::steps`, the view `GET /v1/clients/{id}` gives) until
//! every one is finished or one has failed for good, so that a script can
//! chain on the exit code instead of polling. Each change is one plain
//! line on stdout; on a terminal a status line on stderr is redrawn in
//! between. `dossier import … --wait` does the same for every client an
//! import created (`onboarding::ready::import_clients`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use dossier_core::db::Database;
use dossier_core::onboarding::{self, Step};
use dossier_core::queue::QueueBackend;

/// How a wait ended, as the process's exit code says it.
#[derive(Debug, thiserror::Error)]
pub enum Unfinished {
    /// Exit code 3: a step failed for good (its reason shown).
    #[error("{0}")]
    Failed(String),
    /// Exit code 4: steps still running when the wait ran out.
    #[error("{0}")]
    TimedOut(String),
}

impl Unfinished {
    pub fn code(&self) -> u8 {
        match self {
            Unfinished::Failed(_) => 3,
            Unfinished::TimedOut(_) => 4,
        }
    }
}

enum Phase {
    Finished,
    Failed,
    Open,
}

/// Where a step stands, for the wait. An invitation back in draft with a
/// reason is one the server refused or that could not be composed.
fn phase(s: &Step) -> Phase {
    match s.state.as_str() {
        "failed" => Phase::Failed,
        "draft" if s.note.is_some() => Phase::Failed,
        "done" | "skipped" | "sent" | "accepted" | "draft" | "disabled" | "revoked" | "expired" => {
            Phase::Finished
        }
        _ => Phase::Open,
    }
}

fn line(s: &Step) -> String {
    let note = s
        .note
        .as_deref()
        .map(|n| format!(" — {}", dossier_core::text::printable(n)))
        .unwrap_or_default();
    format!("{}: {}{note}", s.step, s.state)
}

/// Follows `client_id`'s steps for at most `timeout`, reading them every
/// `every`.
pub async fn client(
    db: &Database,
    queue: &dyn QueueBackend,
    client_id: &str,
    timeout: Duration,
    every: Duration,
) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut shown: Vec<String> = Vec::new();
    loop {
        let steps = onboarding::steps(db, Some(queue), client_id).await?;
        let lines: Vec<String> = steps.iter().map(line).collect();
        if tty {
            eprint!("\r\x1b[K");
        }
        for l in lines.iter().filter(|l| !shown.contains(l)) {
            println!("  {l}");
        }
        std::io::stdout().flush()?;
        shown = lines;
        let failed: Vec<String> = steps
            .iter()
            .filter(|s| matches!(phase(s), Phase::Failed))
            .map(line)
            .collect();
        let open: Vec<&Step> = steps
            .iter()
            .filter(|s| matches!(phase(s), Phase::Open))
            .collect();
        if !failed.is_empty() {
            return Err(Unfinished::Failed(format!(
                "client {client_id}: {} step(s) failed: {}; fix the cause, then `dossier jobs retry ID` (`dossier jobs list --status dead` lists them)",
                failed.len(),
                failed.join("; ")
            ))
            .into());
        }
        if open.is_empty() {
            println!(
                "client {client_id} ready: {} step(s) done in {:.1} s",
                steps.len(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let names: Vec<String> = open.iter().map(|s| line(s)).collect();
            return Err(Unfinished::TimedOut(format!(
                "client {client_id}: still not ready after {} s: {}; is a worker running (`dossier workers`)?",
                timeout.as_secs(),
                names.join("; ")
            ))
            .into());
        }
        if tty {
            let done = steps.len() - open.len();
            let now: Vec<&str> = open.iter().map(|s| s.step.as_str()).collect();
            eprint!(
                "{done}/{} steps finished, {:.0} s; waiting for: {}",
                steps.len(),
                started.elapsed().as_secs_f64(),
                now.join(", ")
            );
            let _ = std::io::stderr().flush();
        }
        tokio::time::sleep(every).await;
    }
}

/// Follows the clients import `import_id` created until each is ready or
/// has failed, for at most `timeout`: exit 0 all ready, 3 some failed
/// (each listed, up to 20), 4 some still working.
pub async fn import(
    db: &Database,
    queue: &dyn QueueBackend,
    firm: &str,
    import_id: &str,
    timeout: Duration,
    every: Duration,
) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut said = String::new();
    loop {
        let s = onboarding::ready::import_clients(db, Some(queue), firm, import_id).await?;
        let line = format!(
            "import {import_id}: {} of {} clients ready, {} failed, {} still working",
            s.ready,
            s.clients,
            s.failed_count,
            s.working()
        );
        if tty {
            eprint!("\r\x1b[K");
        }
        if line != said {
            println!("  {line}");
            std::io::stdout().flush()?;
            said = line;
        }
        if s.working() == 0 {
            if s.failed_count == 0 {
                println!(
                    "import {import_id}: every client ready ({}) in {:.1} s",
                    s.clients,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            let list: Vec<String> = s
                .failed
                .iter()
                .map(|(c, why)| format!("  client {c}: {}", dossier_core::text::printable(why)))
                .collect();
            return Err(Unfinished::Failed(format!(
                "import {import_id}: {} of {} clients have a failed step:\n{}{}\nfix the cause, then `dossier jobs retry ID` (`dossier jobs list --status dead --firm {firm}` lists them)",
                s.failed_count,
                s.clients,
                list.join("\n"),
                if s.failed_count > s.failed.len() {
                    format!("\n  … and {} more", s.failed_count - s.failed.len())
                } else {
                    String::new()
                }
            ))
            .into());
        }
        if started.elapsed() >= timeout {
            return Err(Unfinished::TimedOut(format!(
                "import {import_id}: {} clients still not ready after {} s; is a worker running (`dossier workers`)?",
                s.working(),
                timeout.as_secs()
            ))
            .into());
        }
        if tty {
            eprint!(
                "{}/{} ready, {:.0} s",
                s.ready,
                s.clients,
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
        tokio::time::sleep(every).await;
    }
}
