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
    #[error("trace id must be 1 to 128 characters among letters, digits and - _ . :")]
    TraceId,
}

/// A trace id as it may reach every log line of a job: short, and of
/// characters that cannot forge a line or carry an address.
pub fn check_trace_id(id: &str) -> Result<String, SubmitError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(id.to_string())
    } else {
        Err(SubmitError::TraceId)
    }
}

/// The trace id of an HTTP request: `X-Trace-Id`, else the trace-id part
/// of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<flags>`).
pub fn trace_id_of(headers: &axum::http::HeaderMap) -> Result<Option<String>, SubmitError> {
    if let Some(v) = headers.get("x-trace-id") {
        return check_trace_id(v.to_str().map_err(|_| SubmitError::TraceId)?.trim()).map(Some);
    }
    let Some(v) = headers.get("traceparent") else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| SubmitError::TraceId)?;
    match v.trim().split('-').collect::<Vec<_>>().as_slice() {
        [_, trace, _, _] if trace.len() == 32 => check_trace_id(trace).map(Some),
        _ => Err(SubmitError::TraceId),
    }
}

/// Where a caller's idempotency key lives: a namespace of its own, per
/// kind. Keys the system makes (`schedule:…`, `invitation:…`,
/// `tree_setup:…`) never start with `caller:`, so a caller cannot claim a
/// scheduler's future tick or another job's key, and the same caller key
/// given for two kinds makes two jobs.
pub fn caller_key(kind: &str, key: &str) -> String {
    format!("caller:{kind}:{key}")
}

/// Options of a submission beyond kind and payload.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub run_at: Option<String>,
    pub max_attempts: Option<u32>,
    /// The caller's key, as given: [`prepare`] puts it in the callers'
    /// namespace ([`caller_key`]).
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
    let trace_id = options
        .trace_id
        .as_deref()
        .map(check_trace_id)
        .transpose()?;
    Ok(NewJob {
        kind: kind.to_string(),
        payload,
        run_at_ms,
        max_attempts,
        idempotency_key: options
            .idempotency_key
            .as_deref()
            .map(|k| caller_key(kind, k)),
        trace_id,
        group: None,
        subject: None,
        bulk: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_keys_are_namespaced_per_kind() {
        let catalogue = Catalogue::product();
        let queue = crate::config::Settings::default().queue;
        let options = SubmitOptions {
            idempotency_key: Some("schedule:exercice_rollover:1795834800".into()),
            ..Default::default()
        };
        let job = prepare(
            &catalogue,
            &queue,
            "siret_check",
            r#"{"siret": "73282932000074"}"#,
            &options,
        )
        .expect("valid");
        assert_eq!(
            job.idempotency_key.as_deref(),
            Some("caller:siret_check:schedule:exercice_rollover:1795834800")
        );
        assert_ne!(caller_key("a", "k"), caller_key("b", "k"));
    }

    #[test]
    fn trace_ids_are_short_and_plain() {
        use axum::http::{HeaderMap, HeaderValue};
        assert_eq!(
            check_trace_id("import-2026:abc_1.2").ok().as_deref(),
            Some("import-2026:abc_1.2")
        );
        for bad in ["", "a b", "x\ny", "marie@example.fr", &"a".repeat(129)] {
            assert!(
                matches!(check_trace_id(bad), Err(SubmitError::TraceId)),
                "{bad:?}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            trace_id_of(&h).ok().flatten().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        h.insert("x-trace-id", HeaderValue::from_static("req-42"));
        assert_eq!(trace_id_of(&h).ok().flatten().as_deref(), Some("req-42"));
    }

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
