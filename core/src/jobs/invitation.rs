//! `invitation` (payload: invitation id and generation): sends the
//! invitation email; none is lost, and a repeat is the identical message.
//!
//! The send is bracketed by two records (see `crate::mail`):
//! - `sending`, written with the send's frame (`invitations::SendFrame`:
//!   the nonce the link's token derives from, the Date, the company) and the
//!   token's hash, before connecting;
//! - `committing`, written just before the body and its final dot go out.
//!
//! An attempt that finds a frame sends the message that frame describes:
//! same Message-ID, same link, same bytes. After `committing` the server
//! may have taken the earlier copy (its answer was lost: a crash, a cut
//! connection, a timeout — RFC 1047), so the person may receive two
//! identical emails with one working link; the invitation's note says so.
//! We chose a possible duplicate over a possible loss: a lost invitation is
//! a client who never onboards and a firm that finds out weeks later, a
//! second identical copy is recognisable and harmless.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::JobDeps;
use crate::catalogue::KindSpec;
use crate::clock::now_ms;
use crate::digest;
use crate::invitations::{self, Begin, InvitationError, SendFrame, email};
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
    let labels = invitations::theme_labels(db, &inv.client_id, &inv.themes)
        .await
        .map_err(db_error)?;
    let now = now_ms();
    let fresh = SendFrame {
        nonce: digest::random_token(),
        date_ms: now,
        expires_ms: now + i64::from(mail.invitations.expiry_days) * 86_400_000,
        company,
        themes: labels,
        repeats: 0,
    };
    let key = mail
        .link_key(db)
        .await
        .map_err(|e| JobError::transient(e.to_string()))?;
    let domain = mail.from.domain().to_string();
    let message_id = format!("invitation.{}.{}@{domain}", inv.id, job.generation);
    let frame = match invitations::begin_send(
        db,
        &inv.id,
        job.generation,
        fresh,
        |f| digest::sha256_hex(key.token(&f.nonce).as_bytes()),
        &message_id,
    )
    .await
    .map_err(db_error)?
    {
        Begin::Go(frame) => frame,
        Begin::Skip(why) => return Ok(serde_json::json!({ "status": "skipped", "reason": why })),
    };
    let (id, generation) = (inv.id.clone(), job.generation);
    let never = |why: String| async move {
        invitations::mark_failed(db, &id, generation, &why)
            .await
            .map_err(db_error)?;
        Err::<serde_json::Value, _>(JobError::permanent(why))
    };
    let to = match invitations::parse_email(&inv.email) {
        Ok(to) => to,
        Err(why) => return never(why).await,
    };
    let link = format!(
        "{}/invitations/{}",
        mail.public_base_url.trim_end_matches('/'),
        key.token(&frame.nonce)
    );
    let content = email::Content {
        firm_name: &mail.from_name,
        from: &mail.from,
        contact: &mail.contact,
        to: &to,
        first_name: &inv.first_name,
        last_name: &inv.last_name,
        company: &frame.company,
        link: &link,
        expires: DateTime::<Utc>::from_timestamp_millis(frame.expires_ms).unwrap_or_default(),
        themes: &frame.themes,
        message_id: &message_id,
        date: DateTime::<Utc>::from_timestamp_millis(frame.date_ms).unwrap_or_default(),
        reminder: inv.is_reminder,
    };
    let outgoing = match email::compose(&content, mail.signer.as_deref()) {
        Ok(outgoing) => outgoing,
        Err(why) => return never(why).await,
    };
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
        Ok(reply) => {
            let note = (frame.repeats > 0).then(|| {
                format!(
                    "sent again after the mail server's answer was lost ({} time(s)): the person may have identical copies, with one link",
                    frame.repeats
                )
            });
            let closed = invitations::mark_sent(
                db,
                &inv.id,
                job.generation,
                &frame,
                note.as_deref(),
                &reply,
            )
            .await
            .map_err(db_error)?;
            if !closed {
                return Ok(serde_json::json!({
                    "status": "taken over",
                    "reason": "this attempt's lease ran out while its copy went out; the rescued attempt sends the identical message again and closes the invitation",
                    "message_id": message_id,
                    "reply": reply,
                }));
            }
            Ok(serde_json::json!({
                "status": "sent",
                "message_id": message_id,
                "repeats": frame.repeats,
                "reply": reply,
            }))
        }
        Err(DeliveryError::Permanent(why)) => never(why).await,
        // Nothing went out, or an earlier copy may have: either way the
        // next attempt sends this same message.
        Err(
            DeliveryError::Transient(why)
            | DeliveryError::Commit(why)
            | DeliveryError::Uncertain(why),
        ) => {
            invitations::mark_retrying(db, &inv.id, job.generation, &why)
                .await
                .map_err(db_error)?;
            Err(JobError::transient(why))
        }
    }
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: SendInvitation, ctx: JobContext| {
        let deps = deps.clone();
        async move {
            let client = job.client_id.clone();
            let result = handle(job, ctx.clone(), deps.clone()).await;
            match client {
                Some(client) => super::step_outcome(&deps, &ctx, &client, result).await,
                None => result,
            }
        }
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<SendInvitation>(
        KIND,
        "send an invitation email: never lost, a repeat identical",
        &[],
    )
    .acting_on(crate::catalogue::Subject::Invitation)
}
