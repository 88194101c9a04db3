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
use crate::exercice::{Origin, rules};
use crate::invitations::{self, Role};
use crate::job::NewJob;
use crate::jobs::{app_setup, siret_enrichment, tree_setup};
use crate::secrets::KeyRing;
use crate::siret::Siret;
use crate::tree::{folders, templates};

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

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Created {
    pub client_id: String,
    pub exercice_id: Option<String>,
    pub invitation_id: Option<String>,
    /// Kinds of the jobs staged, in order.
    pub jobs: Vec<String>,
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

fn job(kind: &str, payload: serde_json::Value, key: String, queue: &QueueSettings) -> NewJob {
    NewJob {
        kind: kind.into(),
        payload,
        run_at_ms: None,
        max_attempts: queue.kind(kind).max_attempts,
        idempotency_key: Some(key),
        trace_id: None,
    }
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
    create_client_once(db, queue, keys, form, None).await
}

/// [`create_client`], recording the answer under `request` in the same
/// transaction (the HTTP hook's `Idempotency-Key`).
pub async fn create_client_once(
    db: &Database,
    queue: &QueueSettings,
    keys: &KeyRing,
    form: ClientForm,
    request: Option<RequestKey>,
) -> Result<Created, OnboardingError> {
    let mut problems = Vec::new();
    let other = |e: &dyn std::fmt::Display| OnboardingError::Other(e.to_string());

    // Company: a valid SIRET not used in the firm, or at least a name.
    let siret = match form.siret.as_deref().map(Siret::parse).transpose() {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("siret: {e}"));
            None
        }
    };
    if let Some(s) = &siret {
        let taken: Option<(String,)> = on_pool!(db, pool => sqlx::query_as(
            "SELECT id FROM clients WHERE firm_id = $1 AND siret = $2",
        )
        .bind(&form.firm_id)
        .bind(s.as_str())
        .fetch_optional(pool)
        .await?);
        if let Some((id,)) = taken {
            problems.push(format!(
                "siret: {} is already used by client {id}",
                s.as_str()
            ));
        }
    }
    if form.siret.is_none()
        && form
            .company
            .get("legal_name")
            .is_none_or(|n| n.trim().is_empty())
    {
        problems.push(
            "company: give a SIRET, or the company's legal_name for a client entered by hand"
                .into(),
        );
    }

    // The first exercice.
    let span = match form.exercice_start {
        None => {
            problems.push("exercice: the start date of the current exercice is required".into());
            None
        }
        Some(start) => {
            let end = form.exercice_end.or_else(|| rules::default_end(start));
            match end {
                None => {
                    problems.push(format!("exercice: {start} is out of range"));
                    None
                }
                Some(end) => {
                    let span = rules::Span { start, end };
                    match rules::check_new(span, &[], false) {
                        Ok(()) => Some(span),
                        Err(e) => {
                            problems.push(format!("exercice: {e}"));
                            None
                        }
                    }
                }
            }
        }
    };

    // The tree.
    let template = match &form.tree {
        Some(name) => templates::get(db, &form.firm_id, name)
            .await
            .map_err(|e| other(&e))?,
        None => Some(
            templates::default_for(db, &form.firm_id)
                .await
                .map_err(|e| other(&e))?,
        ),
    };
    let Some(template) = template.map(|t| t.template) else {
        problems.push(format!(
            "tree: firm {} has no tree template {:?} (see `dossier tree list`)",
            form.firm_id,
            form.tree.as_deref().unwrap_or_default()
        ));
        return Err(OnboardingError::Invalid(problems));
    };

    // The director and their themes.
    let shared: Vec<String> = template
        .shared_themes()
        .into_iter()
        .map(|t| t.id.clone())
        .collect();
    let themes = form.themes.clone().unwrap_or_else(|| shared.clone());
    let mut director_email = None;
    if let Some(d) = &form.director {
        match invitations::parse_email(&d.email) {
            Ok(a) => director_email = Some(a.to_string()),
            Err(p) => problems.push(format!("director: {p}")),
        }
        for (what, v) in [("first name", &d.first_name), ("last name", &d.last_name)] {
            if v.trim().is_empty() {
                problems.push(format!("director: the {what} is empty"));
            }
        }
        for t in &themes {
            if !shared.contains(t) {
                problems.push(format!(
                    "themes: unknown theme {t:?}; the tree shares: {}",
                    shared.join(", ")
                ));
            }
        }
    } else if form.invite {
        problems.push(
            "director: an invitation needs the director's email and name (or pass --no-invite)"
                .into(),
        );
    }

    // The apps and their settings, against the chosen tree's directories.
    let client_id = uuid::Uuid::now_v7().to_string();
    let directories: Vec<String> = template.folders().into_iter().map(|f| f.path).collect();
    let mut activations = Vec::new();
    for choice in &form.apps {
        match apps::app(db, &form.firm_id, &choice.app_id).await {
            Err(e) => problems.push(format!("apps: {e}")),
            Ok(app) => {
                if choice.on_director_portal && app.kind != apps::AppKind::Redirection {
                    problems.push(format!(
                        "apps: {} is not a redirection app: it cannot be pinned",
                        app.id
                    ));
                }
                match apps::validate_settings(
                    &app,
                    &client_id,
                    &choice.settings,
                    &directories,
                    keys,
                ) {
                    Ok(sealed) => activations.push((app, sealed, choice.on_director_portal)),
                    Err(e) => problems.push(format!("apps: {e}")),
                }
            }
        }
    }
    // The collaborators, members of the firm.
    let mut member_ids = Vec::new();
    for email in &form.collaborators {
        match crate::collaborators::member_by_email(db, &form.firm_id, email).await {
            Ok(m) => member_ids.push(m.id),
            Err(crate::collaborators::MemberError::Invalid(why)) => {
                problems.push(format!("collaborators: {why}"))
            }
            Err(e) => return Err(other(&e)),
        }
    }
    member_ids.sort();
    member_ids.dedup();
    let (Some(span), true) = (span, problems.is_empty()) else {
        return Err(OnboardingError::Invalid(problems));
    };

    // Everything in one transaction, the jobs staged with it.
    let now = now_ms();
    let entered = serde_json::to_string(&form.company).map_err(|e| other(&e))?;
    let status = if siret.is_some() {
        EnrichmentStatus::Pending
    } else {
        EnrichmentStatus::Skipped
    };
    let exercice_id = uuid::Uuid::now_v7().to_string();
    let (snapshot_id, definition) = folders::snapshot(&template).map_err(|e| other(&e))?;
    let invitation_id = director_email
        .as_ref()
        .map(|_| uuid::Uuid::now_v7().to_string());
    let mut jobs = vec![job(
        tree_setup::KIND,
        serde_json::json!({ "client_id": client_id }),
        format!("tree_setup:{client_id}"),
        queue,
    )];
    if siret.is_some() {
        jobs.push(job(
            siret_enrichment::KIND,
            serde_json::json!({ "client_id": client_id }),
            format!("siret_enrichment:{client_id}"),
            queue,
        ));
    }
    for (app, _, _) in &activations {
        jobs.push(job(
            app_setup::KIND,
            serde_json::json!({ "client_id": client_id, "app_id": app.id, "generation": 0 }),
            format!("{}:{client_id}:{}:0", app_setup::KIND, app.id),
            queue,
        ));
    }
    if let (Some(id), true) = (&invitation_id, form.invite) {
        jobs.push(invitations::send_job(
            id,
            0,
            queue.kind(crate::jobs::invitation::KIND).max_attempts,
        ));
    }
    let director = form.director.clone().unwrap_or_default();
    let created = Created {
        client_id: client_id.clone(),
        exercice_id: Some(exercice_id.clone()),
        invitation_id: invitation_id.clone(),
        jobs: jobs.iter().map(|j| j.kind.clone()).collect(),
    };
    let written: Result<(), OnboardingError> = on_pool!(db, pool => async {
        let mut tx = pool.begin().await?;
        sqlx::query(crate::clients::INSERT)
            .bind(&client_id)
            .bind(&form.firm_id)
            .bind(siret.as_ref().map(|s| s.as_str().to_string()))
            .bind(&entered)
            .bind(status.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(crate::exercice::INSERT)
            .bind(&exercice_id)
            .bind(&client_id)
            .bind(span.start.to_string())
            .bind(span.end.to_string())
            .bind(rules::base_label(span))
            .bind(Origin::Manual.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO tree_snapshots (id, template_name, definition, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&snapshot_id)
        .bind(&template.name)
        .bind(&definition)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO client_trees (client_id, template_name, snapshot_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&client_id)
        .bind(&template.name)
        .bind(&snapshot_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let (Some(id), Some(email)) = (&invitation_id, &director_email) {
            let queued = if form.invite { "queued" } else { "draft" };
            sqlx::query(invitations::INSERT)
                .bind(id)
                .bind(&client_id)
                .bind(email)
                .bind(email.to_lowercase())
                .bind(director.first_name.trim())
                .bind(director.last_name.trim())
                .bind(Role::Director.as_str())
                .bind(None::<String>)
                .bind(serde_json::to_string(&themes).unwrap_or_else(|_| "[]".into()))
                .bind(queued)
                .bind(now)
                .bind(form.invite.then_some(now))
                .execute(&mut *tx)
                .await?;
        }
        for (app, sealed, pin) in &activations {
            sqlx::query(apps::ENABLE)
                .bind(&client_id)
                .bind(&app.id)
                .bind(app.kind.as_str())
                .bind(*pin)
                .bind(serde_json::to_string(sealed).unwrap_or_else(|_| "{}".into()))
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        for m in &member_ids {
            sqlx::query(
                "INSERT INTO client_collaborators (client_id, member_id, created_at) VALUES ($1, $2, $3)",
            )
            .bind(&client_id)
            .bind(m)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        crate::outbox::StageJobs::stage_jobs(&mut tx, &jobs, crate::outbox::direct_queue(queue)).await?;
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
        Ok(())
    }.await);
    written?;
    Ok(created)
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
