//! Creating a client the way a firm does: the client, its first exercice,
//! its tree, its director's invitation (sent, or a draft) and its partner
//! apps — everything validated first, every problem reported at once, then
//! written in **one transaction** together with the onboarding jobs (staged
//! in the outbox, so they cannot be lost between commit and queue, and a
//! rolled-back creation queues nothing).

use chrono::NaiveDate;
use serde::Serialize;

use crate::apps;
use crate::clients::{EnrichmentStatus, Fields};
use crate::clock::now_ms;
use crate::config::QueueSettings;
use crate::db::{Database, on_pool};
use crate::invitations;
use crate::secrets::KeyRing;
use crate::tree::folders;
use crate::write_gate::Lane;

pub mod plan;
pub mod ready;
pub(crate) mod write;

pub use plan::{Context, Origin, Plan, validate};

/// The director to invite.
#[derive(Debug, Clone, Default)]
pub struct Director {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

/// An app to give the client, with its settings as typed.
#[derive(Debug, Clone, Default)]
pub struct AppChoice {
    pub app_id: String,
    pub settings: Vec<(String, String)>,
    pub on_director_portal: bool,
}

/// The creation form.
#[derive(Debug, Clone, Default)]
pub struct ClientForm {
    pub firm_id: String,
    pub siret: Option<String>,
    /// Typed company fields (`legal_name`, `address.city`…).
    pub company: Fields,
    pub exercice_start: Option<NaiveDate>,
    pub exercice_end: Option<NaiveDate>,
    /// A template of the firm; absent: its default.
    pub tree: Option<String>,
    pub director: Option<Director>,
    /// The director's themes; absent: every theme the tree shares.
    pub themes: Option<Vec<String>>,
    /// Send the invitation at once (else a draft, sent later).
    pub invite: bool,
    pub apps: Vec<AppChoice>,
    /// Emails of the firm's members who follow the client.
    pub collaborators: Vec<String>,
}

#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Created {
    pub client_id: String,
    pub exercice_id: Option<String>,
    pub invitation_id: Option<String>,
    /// Kinds of the jobs staged, in order.
    pub jobs: Vec<String>,
    /// The outbox rows of those jobs, for the caller to push at once
    /// ([`crate::outbox::push_staged`]); none when the queue is in the
    /// database.
    #[serde(skip)]
    pub staged: Vec<crate::outbox::Staged>,
}

/// A hook request's idempotency key, the hash of its body, and how to
/// render the answer that is stored with the client.
pub struct RequestKey {
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OnboardingError {
    #[error("client refused:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    /// Another request with the same idempotency key got there first.
    #[error("a request with this Idempotency-Key was already processed")]
    Duplicate,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Other(String),
}

/// Validates the form, then writes the client and everything with it in
/// one transaction, staging its jobs: tree set-up (with the exercice's
/// folders), enrichment (with a SIRET), each app's set-up, the invitation.
pub async fn create_client(
    db: &Database,
    queue: &QueueSettings,
    keys: &KeyRing,
    form: ClientForm,
) -> Result<Created, OnboardingError> {
    create_client_once(db, queue, keys, form, None, None).await
}

/// Whether the firm already has a client with this SIRET.
async fn siret_taken(
    db: &Database,
    firm: &str,
    siret: Option<&str>,
) -> Result<Option<String>, OnboardingError> {
    let Some(siret) = siret else { return Ok(None) };
    let taken: Option<(String,)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT id FROM clients WHERE firm_id = $1 AND siret = $2",
    )
    .bind(firm)
    .bind(siret)
    .fetch_optional(pool)
    .await?);
    Ok(taken.map(|t| t.0))
}

/// [`create_client`], recording the answer under `request` in the same
/// transaction (the HTTP hook's `Idempotency-Key`), its jobs carrying
/// `trace_id`.
pub async fn create_client_once(
    db: &Database,
    queue: &QueueSettings,
    keys: &KeyRing,
    form: ClientForm,
    request: Option<RequestKey>,
    trace_id: Option<String>,
) -> Result<Created, OnboardingError> {
    // The firm id reaches a query before the form is validated (which
    // checks every other text field): a NUL or 60,000 characters there is
    // a refusal, not a database error.
    if let Err(e) = crate::text::check(&form.firm_id, crate::text::MAX_ID) {
        return Err(OnboardingError::Invalid(vec![format!("firm_id: {e}")]));
    }
    let ctx = Context::load(db, &form.firm_id).await?;
    let origin = plan::Origin {
        trace_id,
        ..Default::default()
    };
    let plan = validate(&ctx, &form, origin, queue, keys);
    let siret = match &plan {
        Ok(p) => p.siret().map(str::to_string),
        Err(_) => form
            .siret
            .as_deref()
            .and_then(|s| crate::siret::Siret::parse(s).ok())
            .map(|s| s.as_str().to_string()),
    };
    let taken = siret_taken(db, &form.firm_id, siret.as_deref()).await?;
    let plan = match (plan, taken) {
        (Ok(plan), None) => plan,
        (result, taken) => {
            let mut problems = result.err().unwrap_or_default();
            if let (Some(id), Some(s)) = (taken, &siret) {
                problems.insert(0, format!("siret: {s} is already used by client {id}"));
            }
            return Err(OnboardingError::Invalid(problems));
        }
    };
    let now = now_ms();
    let created = Created {
        client_id: plan.client_id.clone(),
        exercice_id: Some(plan.exercice_id.clone()),
        invitation_id: plan.invitation.as_ref().map(|i| i.id.clone()),
        jobs: plan.jobs.iter().map(|j| j.kind.clone()).collect(),
        staged: Vec::new(),
    };
    let direct = crate::outbox::direct_queue(queue);
    let _turn = db.write_turn(Lane::Interactive).await;
    let written: Result<Vec<crate::outbox::Staged>, OnboardingError> = on_pool!(db, pool => async {
        let mut tx = pool.begin().await?;
        let staged = write::write(&mut tx, &ctx, std::slice::from_ref(&plan), direct).await?;
        if let Some(r) = &request {
            let inserted = sqlx::query(
                "INSERT INTO http_requests (key, request_hash, status, body, created_at) VALUES ($1, $2, 201, $3, $4)",
            )
            .bind(&r.key)
            .bind(&r.request_hash)
            .bind(serde_json::to_string(&created).unwrap_or_default())
            .bind(now)
            .execute(&mut *tx)
            .await;
            if let Err(e) = inserted {
                if e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
                    return Err(OnboardingError::Duplicate);
                }
                return Err(e.into());
            }
        }
        tx.commit().await?;
        Ok(staged)
    }.await);
    Ok(Created {
        staged: written?,
        ..created
    })
}

/// Where one onboarding step of a client stands.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: String,
    /// `queued`, `done`, `failed`, `waiting`, `draft`, `skipped`…
    pub state: String,
    /// The reason of a failure, or what the step waits for.
    pub note: Option<String>,
}

fn step(step: impl Into<String>, state: &str, note: Option<String>) -> Step {
    Step {
        step: step.into(),
        state: state.to_string(),
        note,
    }
}

/// Each onboarding step of a client, read from the records the jobs keep
/// and, while a step is not finished, from its job in `queue` (running,
/// retrying after an error, or dead with its reason).
pub async fn steps(
    db: &Database,
    queue: Option<&dyn crate::queue::QueueBackend>,
    client_id: &str,
) -> Result<Vec<Step>, OnboardingError> {
    let other = |e: &dyn std::fmt::Display| OnboardingError::Other(e.to_string());
    let client = crate::clients::get(db, client_id)
        .await
        .map_err(|e| other(&e))?
        .ok_or_else(|| OnboardingError::Other(format!("no client with id {client_id}")))?;
    // (step, its job's idempotency key)
    let mut out: Vec<(Step, Vec<String>)> = Vec::new();
    let pending = client.enrichment_status == EnrichmentStatus::Pending;
    let tree_key = format!("tree_setup:{client_id}");
    out.push((
        match client.enrichment_status {
            EnrichmentStatus::Pending => step("enrichment", "queued", None),
            EnrichmentStatus::Enriched => step("enrichment", "done", client.warning.clone()),
            EnrichmentStatus::NotFound => {
                step("enrichment", "failed", client.enrichment_message.clone())
            }
            EnrichmentStatus::Skipped => step(
                "enrichment",
                "skipped",
                Some("no SIRET: entered by hand".into()),
            ),
        },
        vec![format!("siret_enrichment:{client_id}")],
    ));
    let folders = folders::list(db, client_id).await.map_err(|e| other(&e))?;
    for e in crate::exercice::list(db, client_id)
        .await
        .map_err(|e| other(&e))?
    {
        let state = if e.folders_done_at_ms.is_some() {
            "done"
        } else {
            "queued"
        };
        out.push((
            step(format!("folders of exercice {}", e.label), state, None),
            vec![format!("fiscal_folders:{}", e.id), tree_key.clone()],
        ));
    }
    out.push((
        if folders.is_empty() {
            step("tree", "queued", None)
        } else {
            step("tree", "done", Some(format!("{} folders", folders.len())))
        },
        vec![tree_key.clone()],
    ));
    for i in invitations::list(db, client_id)
        .await
        .map_err(|e| other(&e))?
    {
        let name = format!("invitation ({})", i.role.as_str());
        let key = vec![format!("invitation:{}:{}", i.id, i.generation)];
        out.push((
            match i.status {
                invitations::Status::Queued if pending => step(
                    name,
                    "waiting",
                    Some("for the enrichment, to name the company as the registry does".into()),
                ),
                invitations::Status::Queued => step(name, "queued", i.last_error.clone()),
                invitations::Status::Draft => step(name, "draft", i.last_error.clone()),
                s => step(name, s.as_str(), i.last_error.clone()),
            },
            key,
        ));
    }
    for a in apps::client_apps(db, client_id)
        .await
        .map_err(|e| other(&e))?
    {
        let state = match a.status.as_str() {
            "active" => "done",
            "pending" => "queued",
            s => s,
        };
        let kind = if a.status == "disabling" {
            "app_teardown"
        } else {
            "app_setup"
        };
        let key = vec![format!("{kind}:{client_id}:{}:{}", a.app_id, a.generation)];
        out.push((
            step(format!("app {}", a.app_id), state, a.last_error.clone()),
            key,
        ));
    }
    let mut steps = Vec::new();
    for (mut s, keys) in out {
        if let Some(q) = queue
            && matches!(s.state.as_str(), "queued" | "waiting" | "disabling")
        {
            for key in keys {
                if let Ok(Some(job)) = q.get_by_key(&key).await {
                    use crate::job::JobStatus;
                    match job.status {
                        JobStatus::Running => s.state = "running".into(),
                        JobStatus::Retrying => {
                            s.state = "retrying".into();
                            s.note = job.last_error.clone();
                        }
                        JobStatus::Dead => {
                            s.state = "failed".into();
                            s.note = job.last_error.clone();
                        }
                        _ => {}
                    }
                    break;
                }
            }
        }
        steps.push(s);
    }
    Ok(steps)
}
