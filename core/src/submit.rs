//! Turning a request ("run job KIND with this payload") into a `NewJob`:
//! one place for the checks that the CLI, and later the HTTP hooks, share.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::catalogue::{Catalogue, CatalogueError};
use crate::clock::now_ms;
use crate::config::QueueSettings;
use crate::job::NewJob;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    #[error("payload is not valid JSON: {0} (example: '{{\"siret\": \"73282932000074\"}}')")]
    Json(#[from] serde_json::Error),
    #[error(
        "run-at `{0}` is neither an RFC 3339 time (2026-12-01T09:00:00Z) nor a delay (+30s, +5m, +2h, +1d)"
    )]
    RunAt(String),
    #[error("max attempts must be at least 1")]
    MaxAttempts,
    #[error("idempotency key must be 1 to 200 printable characters")]
    IdempotencyKey,
}

/// Options of a submission beyond kind and payload.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub run_at: Option<String>,
    pub max_attempts: Option<u32>,
    pub idempotency_key: Option<String>,
    pub trace_id: Option<String>,
}

/// Parses `+30s`/`+5m`/`+2h`/`+1d` or an RFC 3339 time into epoch ms.
pub fn parse_run_at(s: &str) -> Result<i64, SubmitError> {
    let bad = || SubmitError::RunAt(s.to_string());
    if let Some(rel) = s.strip_prefix('+') {
        let (num, unit) =
            rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len()));
        let n: u64 = num.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" | "" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(bad()),
        };
        return Ok(now_ms() + Duration::from_secs(secs).as_millis() as i64);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
        .map_err(|_| bad())
}

/// Validates everything, then builds the job; nothing is enqueued here.
pub fn prepare(
    catalogue: &Catalogue,
    queue: &QueueSettings,
    kind: &str,
    payload_json: &str,
    options: &SubmitOptions,
) -> Result<NewJob, SubmitError> {
    let payload: serde_json::Value = serde_json::from_str(payload_json)?;
    catalogue.validate(kind, &payload)?;
    let run_at_ms = options.run_at.as_deref().map(parse_run_at).transpose()?;
    let max_attempts = options
        .max_attempts
        .unwrap_or_else(|| queue.kind(kind).max_attempts);
    if max_attempts == 0 {
        return Err(SubmitError::MaxAttempts);
    }
    if let Some(key) = &options.idempotency_key
        && (key.is_empty() || key.len() > 200 || key.chars().any(char::is_control))
    {
        return Err(SubmitError::IdempotencyKey);
    }
    Ok(NewJob {
        kind: kind.to_string(),
        payload,
        run_at_ms,
        max_attempts,
        idempotency_key: options.idempotency_key.clone(),
        trace_id: options.trace_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_run_at() {
        let now = now_ms();
        let t = parse_run_at("+5m").expect("valid");
        assert!((t - now - 300_000).abs() < 5_000);
        assert_eq!(
            parse_run_at("2026-12-01T09:00:00Z").ok(),
            Some(1_796_115_600_000)
        );
        assert!(parse_run_at("tomorrow").is_err());
        assert!(parse_run_at("+5x").is_err());
    }

    #[test]
    fn prepare_checks_payload_and_defaults_attempts() {
        let cat = Catalogue::product();
        let q = QueueSettings::default();
        let job = prepare(
            &cat,
            &q,
            "siret_check",
            r#"{"siret":"73282932000074"}"#,
            &SubmitOptions::default(),
        )
        .expect("valid");
        assert_eq!(job.max_attempts, 10);
        assert!(matches!(
            prepare(
                &cat,
                &q,
                "siret_check",
                r#"{"sirt":"1"}"#,
                &SubmitOptions::default()
            ),
            Err(SubmitError::Catalogue(CatalogueError::BadPayload { .. }))
        ));
        assert!(matches!(
            prepare(&cat, &q, "siret_check", "{", &SubmitOptions::default()),
            Err(SubmitError::Json(_))
        ));
    }
}
