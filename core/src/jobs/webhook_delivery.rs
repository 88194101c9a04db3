//! `webhook_delivery` (payload: event, endpoint): POSTs one event to one
//! of its firm's endpoints, signed like the partner calls
//! (`crate::apps::signature`: `X-Dossier-Signature` over the timestamp and
//! the raw body), the event's id as `Idempotency-Key`.
//!
//! - Order: while an earlier event of the same client is pending for the
//!   same endpoint, this one is snoozed (the attempt not counted), so an
//!   endpoint receives a client's events in `sequence` order, even after
//!   an outage. An earlier delivery that went dead no longer holds the
//!   line.
//! - Failures (no answer, a non-2xx answer, a redirect, which is never
//!   followed) are retried with the kind's backoff, at the receiver's
//!   `Retry-After` when it gives one, up to `webhooks.max_attempts`; then
//!   the job goes to the dead set (`dossier jobs retry` sends it again).
//! - An endpoint that has answered nothing but failures for
//!   `webhooks.disable_after_secs` is disabled, with a warning in the
//!   logs, `dossier_webhook_endpoints{state="disabled"}` and the dashboard;
//!   `dossier webhook enable` turns it back on.
//! - Of a receiver's answer only its status and a short excerpt
//!   (addresses redacted, control characters escaped) are kept.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::JobDeps;
use crate::apps::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use crate::catalogue::KindSpec;
use crate::db::{Database, on_pool};
use crate::events::{Envelope, endpoints};
use crate::job::{JobError, JobStatus};
use crate::runtime::{JobContext, Registry};
use crate::write_gate::Lane;

pub const KIND: &str = "webhook_delivery";

/// The job's own ceiling: above any `webhooks.max_attempts` (the handler
/// gives up there), so that only lost leases (a killed worker) could
/// reach it.
pub const JOB_ATTEMPTS: u32 = 1_001;

/// Header naming the event's type, for routing before parsing.
pub const EVENT_HEADER: &str = "X-Dossier-Event";
/// How long a delivery waits for the one before it, between looks.
const ORDER_WAIT: Duration = Duration::from_millis(500);
/// The most of a receiver's answer read, and kept.
const ANSWER_READ: usize = 16 * 1024;
const ANSWER_KEPT: usize = 200;

/// The idempotency key of the delivery job of `event_id` to `endpoint_id`.
pub fn key(event_id: &str, endpoint_id: &str) -> String {
    format!("{KIND}:{event_id}:{endpoint_id}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDelivery {
    pub event_id: String,
    pub endpoint_id: String,
}

/// What the deliveries need: the key ring opening the endpoints' secrets,
/// an HTTP client under the outbound policy, the settings.
#[derive(Clone, Debug)]
pub struct Webhooks {
    pub keys: crate::secrets::KeyRing,
    pub http: crate::outbound::Outbound,
    pub settings: crate::config::WebhookSettings,
}

impl Webhooks {
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Webhooks, String> {
        Ok(Webhooks {
            keys: crate::secrets::KeyRing::new(&settings.apps.encryption_keys)
                .map_err(|e| e.to_string())?,
            http: crate::outbound::Outbound::new(
                crate::outbound::Policy::from_settings(&settings.outbound),
                Duration::from_millis(settings.webhooks.timeout_ms),
                &settings.sirene.user_agent,
            )
            .map_err(|e| e.to_string())?,
            settings: settings.webhooks.clone(),
        })
    }
}

type Row = (
    String,         // delivery status
    String,         // ordering key
    i64,            // seq
    String,         // event type
    String,         // firm
    Option<String>, // client
    Option<String>, // import
    String,         // body
    i64,            // created_at
    String,         // url
    String,         // sealed secret
    Option<i64>,    // disabled_at
    Option<String>, // disabled_reason
);

fn db_error(e: sqlx::Error) -> JobError {
    JobError::transient(format!("webhook delivery: database: {e}"))
}

async fn load(db: &Database, job: &WebhookDelivery) -> Result<Option<Row>, JobError> {
    on_pool!(db, pool => sqlx::query_as(
        "SELECT d.status, d.ordering_key, d.seq, e.type, e.firm_id, e.client_id, e.import_id,
                e.body, e.created_at, w.url, w.secret, w.disabled_at, w.disabled_reason
         FROM webhook_deliveries d
         JOIN events e ON e.id = d.event_id
         JOIN webhook_endpoints w ON w.id = d.endpoint_id
         WHERE d.event_id = $1 AND d.endpoint_id = $2",
    )
    .bind(&job.event_id)
    .bind(&job.endpoint_id)
    .fetch_optional(pool)
    .await)
    .map_err(db_error)
}

/// Sets the delivery's state, counting an attempt when `attempted`.
async fn record(
    db: &Database,
    job: &WebhookDelivery,
    status: &str,
    answer: Option<&str>,
    attempted: bool,
) -> Result<(), JobError> {
    let now = crate::clock::now_ms();
    let _turn = db.write_turn(Lane::Background).await;
    on_pool!(db, pool => sqlx::query(
        "UPDATE webhook_deliveries
         SET status = $1, last_answer = COALESCE($2, last_answer),
             attempts = attempts + $3,
             delivered_at = CASE WHEN $1 = 'delivered' THEN $4 ELSE delivered_at END
         WHERE event_id = $5 AND endpoint_id = $6",
    )
    .bind(status)
    .bind(answer)
    .bind(i64::from(attempted))
    .bind(now)
    .bind(&job.event_id)
    .bind(&job.endpoint_id)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))
    .map_err(db_error)?;
    Ok(())
}

/// The earliest pending delivery of the same client to the same endpoint
/// that must go first, if any. One whose job went dead is marked failed
/// and no longer waited for.
async fn blocked_by(
    deps: &JobDeps,
    job: &WebhookDelivery,
    ordering_key: &str,
    seq: i64,
) -> Result<Option<String>, JobError> {
    loop {
        let earlier: Option<(String,)> = on_pool!(&deps.db, pool => sqlx::query_as(
            "SELECT event_id FROM webhook_deliveries
             WHERE endpoint_id = $1 AND ordering_key = $2 AND seq < $3 AND status = 'pending'
             ORDER BY seq LIMIT 1",
        )
        .bind(&job.endpoint_id)
        .bind(ordering_key)
        .bind(seq)
        .fetch_optional(pool)
        .await)
        .map_err(db_error)?;
        let Some((event_id,)) = earlier else {
            return Ok(None);
        };
        let theirs = deps
            .queue
            .get_by_key(&key(&event_id, &job.endpoint_id))
            .await
            .map_err(|e| JobError::transient(format!("webhook delivery: queue: {e}")))?;
        match theirs {
            Some(j) if j.status == JobStatus::Dead => {
                let earlier = WebhookDelivery {
                    event_id: event_id.clone(),
                    endpoint_id: job.endpoint_id.clone(),
                };
                record(&deps.db, &earlier, "failed", None, false).await?;
            }
            _ => return Ok(Some(event_id)),
        }
    }
}

/// A receiver's answer as kept: status and a short, redacted excerpt.
fn excerpt(status: &str, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let short: String = text.trim().chars().take(ANSWER_KEPT).collect();
    let clean = crate::text::printable(&crate::mail::redact_addresses(&short)).into_owned();
    if clean.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {clean}")
    }
}

/// A failed attempt: counted on the delivery and the endpoint; the endpoint
/// disabled when it has failed long enough; the job's next step.
async fn failed(
    deps: &JobDeps,
    ctx: &JobContext,
    job: &WebhookDelivery,
    answer: String,
    retry_after: Option<Duration>,
) -> JobError {
    let w = &deps.webhooks.settings;
    let now = crate::clock::now_ms();
    // Some(..) when the endpoint is disabled now; inside, the reason when
    // this very attempt disabled it.
    let outcome: Result<Option<Option<String>>, sqlx::Error> = {
        let _turn = deps.db.write_turn(Lane::Background).await;
        on_pool!(&deps.db, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_answer = $1
                 WHERE event_id = $2 AND endpoint_id = $3",
            )
            .bind(&answer)
            .bind(&job.event_id)
            .bind(&job.endpoint_id)
            .execute(&mut *tx)
            .await?;
            let since: Option<i64> = sqlx::query_scalar(
                "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $1)
                 WHERE id = $2 RETURNING failing_since",
            )
            .bind(now)
            .bind(&job.endpoint_id)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
            let limit_ms = i64::try_from(w.disable_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            let mut disabled = None;
            if let Some(since) = since
                && now - since >= limit_ms
            {
                let reason = format!(
                    "every delivery failed for {} s (webhooks.disable_after_secs = {}); last: {answer}",
                    (now - since) / 1000,
                    w.disable_after_secs
                );
                let n = sqlx::query(
                    "UPDATE webhook_endpoints SET disabled_at = $1, disabled_reason = $2
                     WHERE id = $3 AND disabled_at IS NULL",
                )
                .bind(now)
                .bind(&reason)
                .bind(&job.endpoint_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'abandoned'
                     WHERE event_id = $1 AND endpoint_id = $2",
                )
                .bind(&job.event_id)
                .bind(&job.endpoint_id)
                .execute(&mut *tx)
                .await?;
                // This attempt disabled it, or another one just had.
                disabled = Some((n == 1).then_some(reason));
            }
            tx.commit().await?;
            Ok(disabled)
        }.await)
    };
    match outcome {
        Err(e) => db_error(e),
        Ok(Some(newly)) => {
            if let Some(reason) = newly {
                crate::metrics::webhook_delivery("disabled");
                tracing::warn!(
                    endpoint = %job.endpoint_id,
                    %reason,
                    "webhook endpoint disabled: `dossier webhook enable {}` once its receiver is back",
                    job.endpoint_id
                );
            }
            JobError::permanent(format!(
                "webhook endpoint {} is disabled: {answer}",
                job.endpoint_id
            ))
        }
        Ok(None) if ctx.attempt >= w.max_attempts => {
            crate::metrics::webhook_delivery("gave_up");
            if let Err(e) = record(&deps.db, job, "failed", None, false).await {
                return e;
            }
            JobError::permanent(format!(
                "gave up after {} attempts (webhooks.max_attempts): {answer}",
                ctx.attempt
            ))
        }
        Ok(None) => {
            crate::metrics::webhook_delivery("failed");
            match retry_after {
                Some(after) => JobError::retry_after(answer, after),
                None => JobError::transient(answer),
            }
        }
    }
}

pub async fn handle(
    job: WebhookDelivery,
    ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    let Some(row) = load(&deps.db, &job).await? else {
        return Ok(serde_json::json!({
            "status": "skipped", "reason": "the endpoint or the event is gone"
        }));
    };
    let (
        status,
        ordering_key,
        seq,
        kind,
        firm,
        client,
        import,
        body,
        created_at,
        url,
        sealed,
        disabled_at,
        disabled_reason,
    ) = row;
    match status.as_str() {
        "delivered" => return Ok(serde_json::json!({ "status": "delivered already" })),
        "pending" => {}
        // An operator's retry of a dead delivery: try it again.
        _ if disabled_at.is_none() => record(&deps.db, &job, "pending", None, false).await?,
        _ => {}
    }
    if disabled_at.is_some() {
        record(&deps.db, &job, "abandoned", None, false).await?;
        return Err(JobError::permanent(format!(
            "webhook endpoint {} is disabled ({}): `dossier webhook enable {}`, then retry this job",
            job.endpoint_id,
            disabled_reason.unwrap_or_default(),
            job.endpoint_id
        )));
    }
    if let Some(earlier) = blocked_by(&deps, &job, &ordering_key, seq).await? {
        return Err(JobError::snooze(
            format!("event {earlier} goes to this endpoint first (per-client order)"),
            ORDER_WAIT,
        ));
    }
    let secret = endpoints::open_secret(&deps.webhooks.keys, &job.endpoint_id, &sealed)
        .map_err(|e| JobError::permanent(format!("webhook endpoint {}: {e}", job.endpoint_id)))?;
    let envelope = Envelope {
        id: &job.event_id,
        kind: &kind,
        created_at: crate::clock::format_ms(created_at),
        firm_id: &firm,
        client_id: client.as_deref(),
        import_id: import.as_deref(),
        sequence: seq,
        data: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    };
    let bytes = serde_json::to_vec(&envelope)
        .map_err(|e| JobError::permanent(format!("event {}: {e}", job.event_id)))?;
    let timestamp = chrono::Utc::now().timestamp();
    let request = match deps.webhooks.http.request(reqwest::Method::POST, &url) {
        Ok(r) => r,
        Err(why) => {
            return Err(failed(&deps, &ctx, &job, format!("call refused: {why}"), None).await);
        }
    };
    let sent = request
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, sign(secret.as_bytes(), timestamp, &bytes))
        .header("Idempotency-Key", job.event_id.as_str())
        .header(EVENT_HEADER, kind.as_str())
        .body(bytes)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            let why = match crate::outbound::refusal(&e) {
                Some(why) => format!("call refused: {why}"),
                None if e.is_timeout() => "receiver did not answer in time".to_string(),
                None => format!("receiver unreachable: {}", e.without_url()),
            };
            return Err(failed(&deps, &ctx, &job, why, None).await);
        }
    };
    let code = response.status();
    if let Some(why) = crate::outbound::redirect_refusal(code, response.headers()) {
        return Err(failed(&deps, &ctx, &job, format!("receiver {why}"), None).await);
    }
    let retry_after = crate::outbound::retry_after(response.headers());
    let answer = match crate::outbound::body_up_to(response, ANSWER_READ).await {
        Ok((b, _)) => excerpt(code.as_str(), &b),
        Err(_) => code.as_str().to_string(),
    };
    if !code.is_success() {
        return Err(failed(
            &deps,
            &ctx,
            &job,
            format!("receiver answered {answer}"),
            retry_after,
        )
        .await);
    }
    record(&deps.db, &job, "delivered", Some(&answer), true).await?;
    {
        let _turn = deps.db.write_turn(Lane::Background).await;
        on_pool!(&deps.db, pool => sqlx::query(
            "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
        )
        .bind(&job.endpoint_id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
        .map_err(db_error)?;
    }
    crate::metrics::webhook_delivery("delivered");
    Ok(serde_json::json!({ "status": "delivered", "answer": answer, "sequence": seq }))
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: WebhookDelivery, ctx| {
        handle(job, ctx, deps.clone())
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<WebhookDelivery>(
        KIND,
        "deliver one event to one of its firm's webhook endpoints",
        &[],
    )
}
