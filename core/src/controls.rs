//! Pausing, resuming and scaling a kind, for the command line and the
//! admin API alike: the kind must be one the product runs (a typo must not
//! pause nothing and look done), the reason is checked like any text, the
//! concurrency bounded, and who did it is recorded with the change.

use crate::catalogue::Catalogue;
use crate::clock::now_ms;
use crate::job::{MAX_CONCURRENCY, Pause, Scale};
use crate::queue::{QueueBackend, QueueError};

/// Longest reason kept with a pause.
pub const MAX_REASON: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error(transparent)]
    Kind(#[from] crate::catalogue::CatalogueError),
    #[error("reason: {0}")]
    Reason(String),
    #[error(
        "concurrency {0}: give 1 to {MAX_CONCURRENCY} slots per worker, or `default` for the configured value"
    )]
    Concurrency(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl PauseError {
    pub fn is_user_error(&self) -> bool {
        !matches!(self, PauseError::Queue(_))
    }
}

fn known(kind: &str) -> Result<(), PauseError> {
    Catalogue::product().spec(kind)?;
    Ok(())
}

/// Pauses `kind` for every worker; `Ok(false)` when it was paused already
/// (the first pause and its reason stay).
pub async fn pause(
    q: &dyn QueueBackend,
    kind: &str,
    reason: &str,
    by: &str,
) -> Result<bool, PauseError> {
    known(kind)?;
    let reason = reason.trim();
    crate::text::check(reason, MAX_REASON).map_err(|e| PauseError::Reason(e.to_string()))?;
    Ok(q.pause(&Pause {
        kind: kind.to_string(),
        reason: reason.to_string(),
        by: by.to_string(),
        at_ms: now_ms(),
    })
    .await?)
}

/// Resumes `kind`; `Ok(false)` when it was not paused.
pub async fn resume(q: &dyn QueueBackend, kind: &str) -> Result<bool, PauseError> {
    known(kind)?;
    Ok(q.resume(kind).await?)
}

/// What `dossier queues scale KIND N|default` asks for.
pub fn parse_concurrency(s: &str) -> Result<Option<u32>, PauseError> {
    let s = s.trim();
    if s == "default" {
        return Ok(None);
    }
    // Bounds are checked by [`scale`], for the API too.
    s.parse::<u32>().map(Some).map_err(|_| {
        PauseError::Concurrency(
            crate::text::for_terminal(&s.chars().take(20).collect::<String>()).into_owned(),
        )
    })
}

/// Gives `kind` `concurrency` slots on every worker (live, and across
/// restarts), or with `None` its configured concurrency again. Whether a
/// scale was there to drop, for `None`.
pub async fn scale(
    q: &dyn QueueBackend,
    kind: &str,
    concurrency: Option<u32>,
    by: &str,
) -> Result<bool, PauseError> {
    known(kind)?;
    match concurrency {
        Some(n) if (1..=MAX_CONCURRENCY).contains(&n) => {
            q.scale(&Scale {
                kind: kind.to_string(),
                concurrency: n,
                by: by.to_string(),
                at_ms: now_ms(),
            })
            .await?;
            Ok(true)
        }
        Some(n) => Err(PauseError::Concurrency(n.to_string())),
        None => Ok(q.unscale(kind).await?),
    }
}
