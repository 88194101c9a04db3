//! Invitations of a client's director and employees: validation, the life
//! cycle (draft → queued → sent → accepted; expired, revoked), and the
//! records the `invitation` job keeps around each send so that no email
//! is lost and a repeated one is the identical message (see
//! `jobs::invitation`).
//!
//! Emails and names are personal data: `Invitation`'s `Debug` hides them,
//! and nothing here logs them.

pub mod email;
pub mod link;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::events::{EventType, emit_for_client};
use crate::job::NewJob;
use crate::tree::folders;
use crate::tree::templates;
use crate::write_gate::Lane;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Director,
    Employee,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Director => "director",
            Role::Employee => "employee",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "director" => Some(Role::Director),
            "employee" => Some(Role::Employee),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Queued,
    Sent,
    Accepted,
    Expired,
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Queued => "queued",
            Status::Sent => "sent",
            Status::Accepted => "accepted",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "draft" => Status::Draft,
            "queued" => Status::Queued,
            "sent" => Status::Sent,
            "accepted" => Status::Accepted,
            "expired" => Status::Expired,
            "revoked" => Status::Revoked,
            _ => return None,
        })
    }
}

#[derive(Clone, Serialize)]
pub struct Invitation {
    pub id: String,
    pub client_id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub invited_by: Option<String>,
    pub themes: Vec<String>,
    pub status: Status,
    /// Goes up on each resend; a job for an older one sends nothing.
    pub generation: i64,
    pub expires_at_ms: Option<i64>,
    pub send_state: Option<String>,
    pub message_id: Option<String>,
    /// Why the last send failed, or a note on how it ended.
    pub last_error: Option<String>,
    /// The mail server's answer to the message (its queue id when it
    /// gives one), addresses redacted.
    pub smtp_reply: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub sent_at_ms: Option<i64>,
    pub accepted_at_ms: Option<i64>,
    /// This generation is the reminder (its email says so).
    pub is_reminder: bool,
    /// The send in flight, as stored ([`SendFrame`] in JSON).
    #[serde(skip)]
    send_frame: Option<String>,
}

impl std::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitation")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("role", &self.role)
            .field("status", &self.status)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Default)]
pub struct NewInvitation {
    pub client_id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    /// `None`: director. An employee is invited by the director's invitation.
    pub invited_by: Option<String>,
    /// `None`: every theme of the client's tree shared with clients (for an
    /// employee, the director's themes).
    pub themes: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum InvitationError {
    #[error("invitation refused:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    #[error("no client with id {0}")]
    ClientNotFound(String),
    #[error("no invitation with id {0}")]
    NotFound(String),
    #[error("invitation {id} is {status}: {what}")]
    WrongStatus {
        id: String,
        status: &'static str,
        what: String,
    },
    #[error(transparent)]
    Tree(#[from] folders::FolderError),
    #[error(transparent)]
    Template(#[from] templates::StoreError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored invitation {id} is unreadable: {why}")]
    Corrupt { id: String, why: String },
}

impl InvitationError {
    /// The user can fix it (exit code 2 at the command line, 4xx on a hook).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            InvitationError::Invalid(_)
                | InvitationError::ClientNotFound(_)
                | InvitationError::NotFound(_)
                | InvitationError::WrongStatus { .. }
        )
    }
}

/// Binds: id, client, email, email key (lowercased), first name, last name,
/// role, invited by, themes (JSON), status, created time, queued time.
pub(crate) const INSERT: &str = "INSERT INTO invitations (id, client_id, email, email_key, first_name, last_name, role, invited_by,
                              themes, status, created_at, updated_at, queued_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)";

const COLUMNS: &str = "id, client_id, email, first_name, last_name, role, invited_by, themes, \
     status, generation, expires_at, send_state, message_id, last_error, \
     created_at, updated_at, sent_at, accepted_at, reminder_generation, send_frame, smtp_reply";

/// A row as stored (more columns than sqlx decodes into a tuple).
#[derive(sqlx::FromRow)]
struct Flat {
    id: String,
    client_id: String,
    email: String,
    first_name: String,
    last_name: String,
    role: String,
    invited_by: Option<String>,
    themes: String,
    status: String,
    generation: i64,
    expires_at: Option<i64>,
    send_state: Option<String>,
    message_id: Option<String>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    sent_at: Option<i64>,
    accepted_at: Option<i64>,
    reminder_generation: Option<i64>,
    send_frame: Option<String>,
    smtp_reply: Option<String>,
}

fn decode(r: Flat) -> Result<Invitation, InvitationError> {
    let corrupt = |why: String| InvitationError::Corrupt {
        id: r.id.clone(),
        why,
    };
    Ok(Invitation {
        role: Role::parse(&r.role).ok_or_else(|| corrupt(format!("role {}", r.role)))?,
        status: Status::parse(&r.status).ok_or_else(|| corrupt(format!("status {}", r.status)))?,
        themes: serde_json::from_str(&r.themes).map_err(|e| corrupt(format!("themes: {e}")))?,
        id: r.id,
        client_id: r.client_id,
        email: r.email,
        first_name: r.first_name,
        last_name: r.last_name,
        invited_by: r.invited_by,
        generation: r.generation,
        expires_at_ms: r.expires_at,
        send_state: r.send_state,
        message_id: r.message_id,
        last_error: r.last_error,
        created_at_ms: r.created_at,
        updated_at_ms: r.updated_at,
        sent_at_ms: r.sent_at,
        accepted_at_ms: r.accepted_at,
        is_reminder: r.reminder_generation == Some(r.generation),
        send_frame: r.send_frame,
        smtp_reply: r.smtp_reply,
    })
}

pub async fn get(db: &Database, id: &str) -> Result<Option<Invitation>, InvitationError> {
    let sql = format!("SELECT {COLUMNS} FROM invitations WHERE id = $1");
    let row: Option<Flat> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?);
    row.map(decode).transpose()
}

async fn must_get(db: &Database, id: &str) -> Result<Invitation, InvitationError> {
    get(db, id)
        .await?
        .ok_or_else(|| InvitationError::NotFound(id.to_string()))
}

/// A client's invitations, oldest first.
pub async fn list(db: &Database, client_id: &str) -> Result<Vec<Invitation>, InvitationError> {
    let sql =
        format!("SELECT {COLUMNS} FROM invitations WHERE client_id = $1 ORDER BY created_at, id");
    let rows: Vec<Flat> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(client_id).fetch_all(pool).await?);
    rows.into_iter().map(decode).collect()
}

async fn client_template(
    db: &Database,
    client_id: &str,
) -> Result<crate::tree::TreeTemplate, InvitationError> {
    folders::client_template(db, client_id)
        .await
        .map_err(|e| match e {
            folders::FolderError::ClientNotFound(id) => InvitationError::ClientNotFound(id),
            other => other.into(),
        })
}

/// The themes of the client's tree shared with clients: what an invitation
/// may offer.
pub async fn shared_themes(db: &Database, client_id: &str) -> Result<Vec<String>, InvitationError> {
    Ok(client_template(db, client_id)
        .await?
        .shared_themes()
        .into_iter()
        .map(|t| t.id.clone())
        .collect())
}

/// The labels people see for these theme ids.
pub async fn theme_labels(
    db: &Database,
    client_id: &str,
    ids: &[String],
) -> Result<Vec<String>, InvitationError> {
    let template = client_template(db, client_id).await?;
    Ok(ids
        .iter()
        .map(|id| {
            template
                .themes
                .iter()
                .find(|t| &t.id == id)
                .map(|t| t.label.clone())
                .unwrap_or_else(|| id.clone())
        })
        .collect())
}

/// The address as the platform stores it, or why it is not one.
pub fn parse_email(raw: &str) -> Result<lettre::Address, String> {
    let trimmed = raw.trim();
    trimmed.parse::<lettre::Address>().map_err(|e| {
        format!(
            "email {trimmed:?} is not a valid address ({e}); write it like prenom.nom@societe.fr"
        )
    })
}

/// Validates and stores an invitation: `queued` when it is to go out now
/// (the caller enqueues its job), else `draft`. Every problem is reported.
pub async fn create(
    db: &Database,
    new: NewInvitation,
    send_now: bool,
) -> Result<Invitation, InvitationError> {
    create_with_attempts(db, new, send_now, DEFAULT_JOB_ATTEMPTS).await
}

const DEFAULT_JOB_ATTEMPTS: u32 = 10;

/// [`create`], with the attempts its job gets when sent now.
pub async fn create_with_attempts(
    db: &Database,
    new: NewInvitation,
    send_now: bool,
    job_attempts: u32,
) -> Result<Invitation, InvitationError> {
    let mut problems = Vec::new();
    let email = match parse_email(&new.email) {
        Ok(a) => Some(a.to_string()),
        Err(p) => {
            problems.push(p);
            None
        }
    };
    for (what, value) in [
        ("first name", &new.first_name),
        ("last name", &new.last_name),
    ] {
        if value.trim().is_empty() {
            problems.push(format!(
                "the {what} is empty: invitations greet the person by name"
            ));
        } else if let Err(e) = crate::text::check(value, crate::text::MAX_TEXT) {
            problems.push(format!("the {what}: {e}"));
        }
    }
    match crate::clients::is_archived(db, &new.client_id).await {
        Ok(false) => {}
        Ok(true) => problems.push(format!(
            "client {} is archived: `dossier client unarchive {}` first",
            new.client_id, new.client_id
        )),
        Err(crate::clients::ClientError::Db(e)) => return Err(e.into()),
        Err(e) => return Err(InvitationError::Invalid(vec![e.to_string()])),
    }
    let shared = shared_themes(db, &new.client_id).await?;
    let (role, allowed): (Role, Vec<String>) = match &new.invited_by {
        None => (Role::Director, shared.clone()),
        Some(director_id) => match get(db, director_id).await? {
            Some(d)
                if d.client_id == new.client_id
                    && d.role == Role::Director
                    && !matches!(d.status, Status::Revoked | Status::Expired) =>
            {
                (Role::Employee, d.themes.clone())
            }
            Some(_) => {
                problems.push(format!(
                    "invitation {director_id} is not a live director invitation of client {}: an employee is invited by the client's director",
                    new.client_id
                ));
                (Role::Employee, Vec::new())
            }
            None => {
                problems.push(format!(
                    "no invitation {director_id} to invite on behalf of"
                ));
                (Role::Employee, Vec::new())
            }
        },
    };
    let themes = match &new.themes {
        None => allowed.clone(),
        Some(asked) => {
            let known: BTreeSet<&str> = allowed.iter().map(String::as_str).collect();
            for t in asked {
                if !known.contains(t.as_str()) {
                    let whose = match role {
                        Role::Director => "themes this client's tree shares with clients",
                        Role::Employee => "the director's themes",
                    };
                    problems.push(format!(
                        "unknown theme {t:?}; {whose}: {}",
                        allowed.join(", ")
                    ));
                }
            }
            let mut unique = asked.clone();
            unique.sort();
            unique.dedup();
            unique
        }
    };
    if let Some(email) = &email
        && let Some(live) = live_for(db, &new.client_id, email).await?
    {
        problems.push(format!(
            "this email already has a live invitation on the client ({}, {}): resend or revoke it instead",
            live.id,
            live.status.as_str()
        ));
    }
    let Some(email) = email.filter(|_| problems.is_empty()) else {
        return Err(InvitationError::Invalid(problems));
    };
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    let status = if send_now {
        Status::Queued
    } else {
        Status::Draft
    };
    // The job of a queued invitation is staged in the same transaction.
    let job = send_now.then(|| send_job(&id, &new.client_id, 0, job_attempts));
    let _turn = db.write_turn(Lane::Interactive).await;
    let inserted: Result<(), sqlx::Error> = on_pool!(db, pool => async {
        let mut tx = pool.begin().await?;
        sqlx::query(INSERT)
        .bind(&id)
        .bind(&new.client_id)
        .bind(&email)
        .bind(email.to_lowercase())
        .bind(new.first_name.trim())
        .bind(new.last_name.trim())
        .bind(role.as_str())
        .bind(&new.invited_by)
        .bind(serde_json::to_string(&themes).unwrap_or_else(|_| "[]".into()))
        .bind(status.as_str())
        .bind(now)
        .bind(send_now.then_some(now))
        .execute(&mut *tx)
        .await?;
        if let Some(job) = &job {
            crate::outbox::stage!(tx, job)?;
        }
        tx.commit().await
    }.await);
    if let Err(e) = inserted {
        if e.as_database_error()
            .is_some_and(|d| d.is_unique_violation())
        {
            return Err(InvitationError::Invalid(vec![
                "this email already has a live invitation on the client: resend or revoke it instead".into(),
            ]));
        }
        if e.as_database_error()
            .is_some_and(|d| d.is_foreign_key_violation())
        {
            return Err(InvitationError::ClientNotFound(new.client_id));
        }
        return Err(e.into());
    }
    must_get(db, &id).await
}

async fn live_for(
    db: &Database,
    client_id: &str,
    email: &str,
) -> Result<Option<Invitation>, InvitationError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM invitations WHERE client_id = $1 AND email_key = $2
           AND status IN ('draft', 'queued', 'sent')"
    );
    let row: Option<Flat> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(email.to_lowercase())
        .fetch_optional(pool)
        .await?);
    row.map(decode).transpose()
}

/// Queues the client's drafts; returns them (the caller enqueues their jobs).
pub async fn queue_drafts(
    db: &Database,
    client_id: &str,
    job_attempts: u32,
) -> Result<Vec<Invitation>, InvitationError> {
    let now = now_ms();
    let sql = format!(
        "UPDATE invitations SET status = 'queued', queued_at = $1, updated_at = $1, last_error = NULL
         WHERE client_id = $2 AND status = 'draft' RETURNING {COLUMNS}"
    );
    // Queued and staged together: no draft is marked queued without its job.
    let _turn = db.write_turn(Lane::Interactive).await;
    let rows: Vec<Flat> = on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        let rows: Vec<Flat> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(client_id)
            .fetch_all(&mut *tx)
            .await?;
        for r in &rows {
            let job = send_job(&r.id, client_id, r.generation, job_attempts);
            crate::outbox::stage!(tx, &job)?;
        }
        tx.commit().await?;
        rows
    });
    rows.into_iter().map(decode).collect()
}

/// The `invitation` job of one generation, keyed so that queueing it twice
/// queues it once.
pub fn send_job(id: &str, client_id: &str, generation: i64, max_attempts: u32) -> NewJob {
    NewJob {
        kind: crate::jobs::invitation::KIND.into(),
        // The client id is only for the logs: every line of the job names it.
        payload: serde_json::json!({ "invitation_id": id, "generation": generation, "client_id": client_id }),
        run_at_ms: None,
        max_attempts,
        idempotency_key: Some(format!("invitation:{id}:{generation}")),
        trace_id: None,
        group: None,
        subject: None,
        bulk: false,
    }
}

/// The invitation, unless it is accepted or revoked (then `what` says why not).
async fn live_or_refuse(
    db: &Database,
    id: &str,
    what: &str,
) -> Result<Invitation, InvitationError> {
    let inv = must_get(db, id).await?;
    if matches!(inv.status, Status::Accepted | Status::Revoked) {
        return Err(InvitationError::WrongStatus {
            id: id.to_string(),
            status: inv.status.as_str(),
            what: what.to_string(),
        });
    }
    Ok(inv)
}

/// A new token for the same person: the old link stops working at once, a
/// job for the old generation sends nothing, and the new one is queued.
pub async fn resend(
    db: &Database,
    id: &str,
    job_attempts: u32,
) -> Result<Invitation, InvitationError> {
    let inv = live_or_refuse(db, id, "it cannot be sent again; invite the person anew").await?;
    let now = now_ms();
    let job = send_job(id, &inv.client_id, inv.generation + 1, job_attempts);
    let _turn = db.write_turn(Lane::Interactive).await;
    let changed: Result<u64, sqlx::Error> = on_pool!(db, pool => async {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(
            "UPDATE invitations SET generation = generation + 1, status = 'queued', token_hash = NULL,
                    expires_at = NULL, send_state = NULL, message_id = NULL, last_error = NULL,
                    send_frame = NULL, smtp_reply = NULL,
                    queued_at = $1, updated_at = $1, expired_at = NULL
             WHERE id = $2 AND generation = $3 AND status IN ('draft', 'queued', 'sent', 'expired')",
        )
        .bind(now)
        .bind(id)
        .bind(inv.generation)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            crate::outbox::stage!(tx, &job)?;
        }
        tx.commit().await?;
        Ok(n)
    }.await);
    match changed {
        Ok(1) => must_get(db, id).await,
        Ok(_) => Err(InvitationError::WrongStatus {
            id: id.to_string(),
            status: "changing",
            what: "it changed meanwhile; try again".into(),
        }),
        Err(e)
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation()) =>
        {
            Err(InvitationError::Invalid(vec![
                "this email has another live invitation on the client now: resend that one".into(),
            ]))
        }
        Err(e) => Err(e.into()),
    }
}

/// Withdraws an invitation: its link stops working and nothing more is sent.
pub async fn revoke(db: &Database, id: &str) -> Result<Invitation, InvitationError> {
    live_or_refuse(db, id, "there is nothing to revoke").await?;
    let now = now_ms();
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => sqlx::query(
        "UPDATE invitations SET status = 'revoked', token_hash = NULL, send_state = NULL, send_frame = NULL,
                revoked_at = $1, updated_at = $1
         WHERE id = $2 AND status NOT IN ('accepted', 'revoked')",
    )
    .bind(now)
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected());
    must_get(db, id).await
}

/// Brings back an invitation revoked by archiving its client
/// (`crate::client_archive`): a draft stays a draft (onboarding sends it);
/// one that was queued or sent is sent again under a new generation, with
/// a fresh link. `Ok(None)`: it is no longer revoked, nothing to do.
pub async fn reinstate(
    db: &Database,
    id: &str,
    was: Status,
    job_attempts: u32,
) -> Result<Option<Invitation>, InvitationError> {
    let inv = must_get(db, id).await?;
    if inv.status != Status::Revoked {
        return Ok(None);
    }
    let now = now_ms();
    let send = was != Status::Draft;
    let status = if send { "queued" } else { "draft" };
    let job = send_job(id, &inv.client_id, inv.generation + 1, job_attempts);
    let _turn = db.write_turn(Lane::Interactive).await;
    let changed: Result<u64, sqlx::Error> = on_pool!(db, pool => async {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(
            "UPDATE invitations SET generation = generation + 1, status = $1, token_hash = NULL,
                    expires_at = NULL, send_state = NULL, message_id = NULL, last_error = NULL,
                    revoked_at = NULL, expired_at = NULL,
                    queued_at = CASE WHEN $1 = 'queued' THEN $2 ELSE queued_at END, updated_at = $2
             WHERE id = $3 AND generation = $4 AND status = 'revoked'",
        )
        .bind(status)
        .bind(now)
        .bind(id)
        .bind(inv.generation)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 && send {
            crate::outbox::stage!(tx, &job)?;
        }
        tx.commit().await?;
        Ok(n)
    }.await);
    match changed {
        Ok(1) => must_get(db, id).await.map(Some),
        Ok(_) => Ok(None),
        Err(e)
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation()) =>
        {
            Err(InvitationError::Invalid(vec![format!(
                "invitation {id} stays revoked: its email has another live invitation on the client now"
            )]))
        }
        Err(e) => Err(e.into()),
    }
}

/// What a send needs to be repeated identically: kept with the invitation
/// (`send_frame`) from the first attempt of a generation until its outcome
/// is known, so that an attempt after a lost answer sends the same bytes
/// — same link (the token derives from `nonce`, see [`link`]), same Date,
/// same company and theme labels — even if enrichment or the tree changed
/// in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendFrame {
    pub nonce: String,
    pub date_ms: i64,
    pub expires_ms: i64,
    pub company: String,
    pub themes: Vec<String>,
    /// How many attempts found an earlier one's outcome unknown and sent
    /// again: the person may hold that many identical extra copies.
    #[serde(default)]
    pub repeats: u32,
}

/// How the job's first write for a send went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Send the message this frame describes (`repeats > 0`: an earlier
    /// copy may have arrived; this one is identical).
    Go(SendFrame),
    /// Nothing to send (revoked, superseded, already sent…), with why.
    Skip(String),
}

/// Records that sending starts, if this generation is still the one to
/// send: the frame of the send already in flight when there is one (a
/// retry), else `fresh`; and the hash of its token, which `token_hash`
/// derives from the frame.
pub async fn begin_send(
    db: &Database,
    id: &str,
    generation: i64,
    fresh: SendFrame,
    token_hash: impl FnOnce(&SendFrame) -> String,
    message_id: &str,
) -> Result<Begin, InvitationError> {
    let inv = must_get(db, id).await?;
    if inv.generation != generation {
        return Ok(Begin::Skip(format!(
            "superseded by a resend (generation {} now)",
            inv.generation
        )));
    }
    if inv.status != Status::Queued {
        return Ok(Begin::Skip(format!(
            "invitation is {}",
            inv.status.as_str()
        )));
    }
    let in_flight = inv
        .send_frame
        .as_deref()
        .and_then(|f| serde_json::from_str::<SendFrame>(f).ok());
    let handed_over = inv.send_state.as_deref() == Some("committing");
    let mut frame = in_flight.unwrap_or(fresh);
    if handed_over {
        // Sent before, answer lost: this copy may be the second.
        frame.repeats += 1;
    }
    let hash = token_hash(&frame);
    let stored = serde_json::to_string(&frame).map_err(|e| InvitationError::Corrupt {
        id: id.to_string(),
        why: format!("send frame: {e}"),
    })?;
    let now = now_ms();
    let _turn = db.write_turn(Lane::Background).await;
    // Compare-and-set on the state read above: of two attempts racing
    // (a rescued job and its slow first run), one goes.
    let changed = on_pool!(db, pool => sqlx::query(
        "UPDATE invitations SET token_hash = $1, expires_at = $2, send_state = 'sending',
                message_id = $3, send_frame = $4, updated_at = $5
         WHERE id = $6 AND generation = $7 AND status = 'queued'
           AND COALESCE(send_state, '') = $8 AND COALESCE(send_frame, '') = $9",
    )
    .bind(hash)
    .bind(frame.expires_ms)
    .bind(message_id)
    .bind(&stored)
    .bind(now)
    .bind(id)
    .bind(generation)
    .bind(inv.send_state.as_deref().unwrap_or(""))
    .bind(inv.send_frame.as_deref().unwrap_or(""))
    .execute(pool)
    .await?
    .rows_affected());
    if changed == 1 {
        Ok(Begin::Go(frame))
    } else {
        Ok(Begin::Skip("invitation changed meanwhile".into()))
    }
}

/// The body is about to go out: from now on a lost answer means "maybe
/// sent", and the next attempt sends the same message again.
pub async fn mark_committing(
    db: &Database,
    id: &str,
    generation: i64,
) -> Result<(), InvitationError> {
    let _turn = db.write_turn(Lane::Background).await;
    let changed = on_pool!(db, pool => sqlx::query(
        "UPDATE invitations SET send_state = 'committing', updated_at = $1
         WHERE id = $2 AND generation = $3 AND status = 'queued' AND send_state = 'sending'",
    )
    .bind(now_ms())
    .bind(id)
    .bind(generation)
    .execute(pool)
    .await?
    .rows_affected());
    if changed == 1 {
        Ok(())
    } else {
        Err(InvitationError::WrongStatus {
            id: id.to_string(),
            status: "changing",
            what: "revoked or resent while sending; not sent".into(),
        })
    }
}

/// The server took the message: `reply` is its answer, `note` how the send
/// went when worth saying (a repeat after a lost answer). False when
/// another attempt holds the send now (this one's lease ran out and the job
/// was rescued): that attempt sends the identical message again and closes
/// the invitation.
pub async fn mark_sent(
    db: &Database,
    id: &str,
    generation: i64,
    frame: &SendFrame,
    note: Option<&str>,
    reply: &str,
) -> Result<bool, InvitationError> {
    let stored = serde_json::to_string(frame).map_err(|e| InvitationError::Corrupt {
        id: id.to_string(),
        why: format!("send frame: {e}"),
    })?;
    let now = now_ms();
    let _turn = db.write_turn(Lane::Background).await;
    // Fenced by the frame this attempt began with: once a rescued attempt
    // has taken the send over (its frame counts one more repeat), a slow
    // first attempt's answer must not close the invitation, or it would
    // erase the note that says a second copy is on its way.
    on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        let sent: Option<(String, String, Option<i64>)> = sqlx::query_as(
            "UPDATE invitations SET status = 'sent', send_state = NULL, send_frame = NULL, sent_at = $1,
                    updated_at = $1, last_error = $2, smtp_reply = $3
             WHERE id = $4 AND generation = $5 AND status = 'queued' AND send_frame = $6
             RETURNING client_id, role, reminder_generation",
        )
        .bind(now)
        .bind(note)
        .bind(reply)
        .bind(id)
        .bind(generation)
        .bind(&stored)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((client, role, reminder)) = sent else {
            return Ok(false);
        };
        emit_for_client!(
            tx,
            EventType::InvitationSent,
            &client,
            serde_json::json!({
                "invitation_id": id,
                "role": role,
                "generation": generation,
                "reminder": reminder == Some(generation),
            })
        )?;
        tx.commit().await?;
    });
    Ok(true)
}

/// This attempt failed; the next one sends the same message (the frame and
/// the token stay: an earlier attempt's copy may be out there).
pub async fn mark_retrying(
    db: &Database,
    id: &str,
    generation: i64,
    error: &str,
) -> Result<(), InvitationError> {
    let _turn = db.write_turn(Lane::Background).await;
    on_pool!(db, pool => sqlx::query(
        "UPDATE invitations SET last_error = $1, updated_at = $2
         WHERE id = $3 AND generation = $4 AND status = 'queued'",
    )
    .bind(error)
    .bind(now_ms())
    .bind(id)
    .bind(generation)
    .execute(pool)
    .await?
    .rows_affected());
    Ok(())
}

/// The message will never go as is (refused by the server, or it cannot be
/// composed): the invitation turns back into a draft that shows why.
pub async fn mark_failed(
    db: &Database,
    id: &str,
    generation: i64,
    error: &str,
) -> Result<(), InvitationError> {
    let now = now_ms();
    let _turn = db.write_turn(Lane::Background).await;
    on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        let failed: Option<(String, String)> = sqlx::query_as(
            "UPDATE invitations SET send_state = NULL, send_frame = NULL, token_hash = NULL,
                    expires_at = NULL, last_error = $1, status = 'draft', updated_at = $2
             WHERE id = $3 AND generation = $4 AND status = 'queued'
             RETURNING client_id, role",
        )
        .bind(error)
        .bind(now)
        .bind(id)
        .bind(generation)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((client, role)) = failed {
            emit_for_client!(
                tx,
                EventType::InvitationFailed,
                &client,
                serde_json::json!({
                    "invitation_id": id,
                    "role": role,
                    "reason": crate::mail::redact_addresses(error),
                })
            )?;
        }
        tx.commit().await?;
    });
    Ok(())
}

/// Accepts the invitation whose link carries `token`: one statement, so a
/// token is used once even when two requests race. `None` whatever the
/// reason (unknown, expired, revoked, already used): callers must not be
/// able to tell those apart.
///
/// A link works from the moment its message may have gone out: while its
/// send is still being retried (the first copy's answer was lost, the
/// repeat waits for the server) the person may already hold it.
///
/// With `firm`, only an invitation to one of that firm's clients is
/// accepted: another firm's link reads as unknown and stays valid.
pub async fn accept(
    db: &Database,
    token: &str,
    firm: Option<&str>,
) -> Result<Option<Invitation>, InvitationError> {
    if token.len() != 64 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let hash = crate::digest::sha256_hex(token.to_ascii_lowercase().as_bytes());
    let now = now_ms();
    let of_firm = if firm.is_some() {
        " AND client_id IN (SELECT id FROM clients WHERE firm_id = $3)"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE invitations SET status = 'accepted', accepted_at = $1, updated_at = $1, token_hash = NULL
         WHERE token_hash = $2 AND expires_at > $1{of_firm}
           AND (status = 'sent' OR (status = 'queued' AND send_state IS NOT NULL))
         RETURNING {COLUMNS}"
    );
    let _turn = db.write_turn(Lane::Interactive).await;
    let accepted = on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        let q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).bind(&hash);
        let q = match firm {
            Some(f) => q.bind(f),
            None => q,
        };
        let row: Option<Flat> = q.fetch_optional(&mut *tx).await?;
        let accepted = row.map(decode).transpose()?;
        if let Some(i) = &accepted {
            emit_for_client!(
                tx,
                EventType::InvitationAccepted,
                &i.client_id,
                serde_json::json!({ "invitation_id": i.id, "role": i.role.as_str() })
            )?;
        }
        tx.commit().await?;
        accepted
    });
    Ok(accepted)
}

/// Sent invitations past their expiry become `expired`; their links are
/// dead already (the expiry is checked on accept), this makes it visible.
pub async fn expire_stale(db: &Database) -> Result<u64, InvitationError> {
    let now = now_ms();
    let _turn = db.write_turn(Lane::Background).await;
    Ok(on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        let expired: Vec<(String, String, String)> = sqlx::query_as(
            "UPDATE invitations SET status = 'expired', expired_at = $1, updated_at = $1, token_hash = NULL
             WHERE status = 'sent' AND expires_at <= $1
             RETURNING id, client_id, role",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for (id, client, role) in &expired {
            emit_for_client!(
                tx,
                EventType::InvitationExpired,
                client,
                serde_json::json!({ "invitation_id": id, "role": role })
            )?;
        }
        tx.commit().await?;
        expired.len() as u64
    }))
}

/// Invitations sent before `sent_before_ms`, not accepted, never reminded:
/// each gets a new generation (a fresh link), is marked reminded — so that
/// it is reminded once — and is returned for its job to be queued.
pub async fn due_reminders(
    db: &Database,
    sent_before_ms: i64,
) -> Result<Vec<Invitation>, InvitationError> {
    let now = now_ms();
    let sql = format!(
        "UPDATE invitations SET generation = generation + 1, status = 'queued', token_hash = NULL,
                expires_at = NULL, send_state = NULL, message_id = NULL, reminded_at = $1,
                send_frame = NULL, smtp_reply = NULL,
                reminder_generation = generation + 1, queued_at = $1, updated_at = $1
         WHERE status = 'sent' AND reminded_at IS NULL AND sent_at < $2
         RETURNING {COLUMNS}"
    );
    let _turn = db.write_turn(Lane::Background).await;
    let rows: Vec<Flat> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).bind(sent_before_ms).fetch_all(pool).await?);
    rows.into_iter().map(decode).collect()
}

/// Invitations queued before `before_ms` and still queued: their job may
/// have been lost between a commit and a push; re-queueing them is safe
/// (job keys and the send records keep it to one email).
pub async fn stuck_in_queue(
    db: &Database,
    before_ms: i64,
) -> Result<Vec<Invitation>, InvitationError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM invitations WHERE status = 'queued' AND queued_at < $1 ORDER BY queued_at LIMIT 500"
    );
    let rows: Vec<Flat> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(before_ms).fetch_all(pool).await?);
    rows.into_iter().map(decode).collect()
}
