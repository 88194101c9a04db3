//! `invitation` (payload: invitation id and generation): issues a fresh
//! token and sends the invitation email, exactly once.
//!
//! The send is bracketed by two records (see `crate::mail`):
//! - `sending`, written with the token's hash before connecting: a retry
//!   after a crash here sends again, with a new token — the server never
//!   had the message (the connection died before its body was complete);
//! - `committing`, written just before the body and its final dot go out:
//!   a retry that finds it does **not** send again. It marks the
//!   invitation sent, noting that the server's answer was lost.
//!
//! So a crash can lose an email only in the window between `committing`
//! and the server's reply — a few milliseconds spent streaming one small
//! message on an open connection — and the invitation then shows that
//! note, for an operator to `resend`. We chose a possible loss in that
//! window over a possible duplicate: a duplicate would carry a second live
//! link, a loss is visible and fixed with one command.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::JobDeps;
use crate::catalogue::KindSpec;
use crate::clock::now_ms;
use crate::digest;
use crate::invitations::{self, Begin, InvitationError, email};
use crate::job::{JobError, NewJob};
use crate::mail::DeliveryError;
use crate::runtime::{JobContext, Registry};

pub const KIND: &str = "invitation";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendInvitation {
    pub invitation_id: String,
    /// The invitation's generation when the job was queued; a resend
    /// queues a new job and makes this one a no-op.
    pub generation: i64,
    /// The invitation's client, for the logs (jobs queued before it was
    /// added have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// The job for an invitation's current generation.
pub fn job_for(inv: &invitations::Invitation, max_attempts: u32) -> NewJob {
    invitations::send_job(&inv.id, &inv.client_id, inv.generation, max_attempts)
}

fn db_error(e: InvitationError) -> JobError {
    if e.is_user_error() {
        JobError::permanent(e.to_string())
    } else {
        JobError::transient(e.to_string())
    }
}

pub async fn handle(
    job: SendInvitation,
    _ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    let db = &deps.db;
    let mail = &deps.mail;
    let inv = invitations::get(db, &job.invitation_id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| {
            JobError::permanent(format!("invitation {} does not exist", job.invitation_id))
        })?;
    if job.client_id.is_none() {
        tracing::Span::current().record("client_id", inv.client_id.as_str());
    }
    // Wait (without spending attempts) for enrichment, for the registry's
    // name — but not for ever: then the typed name will do.
    if let Some(client) = crate::clients::get(db, &inv.client_id)
        .await
        .map_err(|e| JobError::transient(e.to_string()))?
        && client.enrichment_status == crate::clients::EnrichmentStatus::Pending
        && now_ms() - inv.created_at_ms
            < i64::try_from(mail.invitations.wait_for_enrichment_secs * 1000).unwrap_or(i64::MAX)
    {
        return Err(JobError::snooze(
            "waiting for the client's enrichment, to name the company as the registry does",
            std::time::Duration::from_secs(2),
        ));
    }
    let token = digest::random_token();
    let expires_ms = now_ms() + i64::from(mail.invitations.expiry_days) * 86_400_000;
    let domain = mail.from.domain().to_string();
    let message_id = format!("invitation.{}.{}@{domain}", inv.id, job.generation);
    match invitations::begin_send(
        db,
        &inv.id,
        job.generation,
        &digest::sha256_hex(token.as_bytes()),
        expires_ms,
        &message_id,
    )
    .await
    .map_err(db_error)?
    {
        Begin::Go => {}
        Begin::Skip(why) => return Ok(serde_json::json!({ "status": "skipped", "reason": why })),
        Begin::Uncertain => {
            let note = "the worker stopped after handing the message to the mail server, whose answer was lost: assumed delivered; resend if the person did not get it";
            invitations::mark_sent(db, &inv.id, job.generation, Some(note))
                .await
                .map_err(db_error)?;
            return Ok(serde_json::json!({ "status": "assumed_sent", "message_id": message_id }));
        }
    }
    let client = crate::clients::get(db, &inv.client_id)
        .await
        .map_err(|e| JobError::transient(e.to_string()))?
        .ok_or_else(|| JobError::permanent(format!("client {} does not exist", inv.client_id)))?;
    // The registry's name once enrichment is done, the typed name otherwise.
    let company = client
        .registry
        .as_ref()
        .and_then(|r| r.legal_name.clone())
        .or_else(|| client.company.get("legal_name").cloned())
        .unwrap_or_else(|| "votre société".into());
    let to = invitations::parse_email(&inv.email).map_err(JobError::permanent)?;
    let labels = invitations::theme_labels(db, &inv.client_id, &inv.themes)
        .await
        .map_err(db_error)?;
    let link = format!(
        "{}/invitations/{token}",
        mail.public_base_url.trim_end_matches('/')
    );
    let content = email::Content {
        firm_name: &mail.from_name,
        from: &mail.from,
        contact: &mail.contact,
        to: &to,
        first_name: &inv.first_name,
        last_name: &inv.last_name,
        company: &company,
        link: &link,
        expires: DateTime::<Utc>::from_timestamp_millis(expires_ms).unwrap_or_default(),
        themes: &labels,
        message_id: &message_id,
        reminder: inv.is_reminder,
    };
    let outgoing = email::compose(&content).map_err(JobError::permanent)?;
    let (id, generation) = (inv.id.clone(), job.generation);
    let sent = mail
        .transport
        .deliver(&outgoing, || async move {
            invitations::mark_committing(db, &id, generation)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    match sent {
        Ok(()) => {
            invitations::mark_sent(db, &inv.id, job.generation, None)
                .await
                .map_err(db_error)?;
            Ok(serde_json::json!({ "status": "sent", "message_id": message_id }))
        }
        Err(DeliveryError::Permanent(why)) => {
            invitations::mark_failed(db, &inv.id, job.generation, &why, true)
                .await
                .map_err(db_error)?;
            Err(JobError::permanent(why))
        }
        Err(DeliveryError::Transient(why)) | Err(DeliveryError::Commit(why)) => {
            invitations::mark_failed(db, &inv.id, job.generation, &why, false)
                .await
                .map_err(db_error)?;
            Err(JobError::transient(why))
        }
        // Left `committing`: the retry marks it sent without sending.
        Err(DeliveryError::Uncertain(why)) => Err(JobError::transient(why)),
    }
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: SendInvitation, ctx| {
        handle(job, ctx, deps.clone())
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<SendInvitation>(KIND, "send an invitation email, exactly once", &[])
        .acting_on(crate::catalogue::Subject::Invitation)
}
