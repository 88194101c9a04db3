//! The product's job kinds: payload types, handlers and the catalogue entry
//! of each. New kinds (folders, invitations, apps) land here.

use std::sync::Arc;

use crate::catalogue::KindSpec;
use crate::db::Database;
use crate::job::JobError;
use crate::runtime::{JobContext, Registry};
use crate::sirene::Sirene;

pub mod app_setup;
pub mod app_teardown;
pub mod bulk_import;
pub mod exercice_rollover;
pub mod fiscal_folders;
mod folder_errors;
pub mod import_scan;
pub mod invitation;
pub mod invitation_housekeeping;
pub mod retention;
pub mod siret_check;
pub mod siret_enrichment;
pub mod tree_setup;
pub mod webhook_delivery;

/// What handlers need from the outside world, built once per worker process.
pub struct JobDeps {
    pub db: Database,
    pub sirene: Sirene,
    pub mail: Mailer,
    /// For jobs that queue others (the invitation reminders).
    pub queue: Arc<dyn crate::queue::QueueBackend>,
    /// Attempts of the jobs those jobs queue.
    pub queue_settings: crate::config::QueueSettings,
    pub partners: Partners,
    /// Batch sizes and drop folders of the imports.
    pub imports: crate::config::ImportSettings,
    /// The event deliveries' key ring, HTTP client and settings.
    pub webhooks: webhook_delivery::Webhooks,
}

/// What the partner-app jobs need: the key ring opening secret settings,
/// the HMAC keys shared with partners, an HTTP client with a timeout.
#[derive(Clone)]
pub struct Partners {
    pub keys: crate::secrets::KeyRing,
    signing: std::collections::BTreeMap<String, crate::config::Secret>,
    pub http: crate::outbound::Outbound,
}

impl std::fmt::Debug for Partners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partners")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Partners {
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Partners, DepsError> {
        let a = &settings.apps;
        Ok(Partners {
            keys: crate::secrets::KeyRing::new(&a.encryption_keys)
                .map_err(|e| DepsError::Apps(e.to_string()))?,
            signing: a.signing_keys.clone(),
            http: crate::outbound::Outbound::new(
                crate::outbound::Policy::from_settings(&settings.outbound),
                std::time::Duration::from_millis(a.timeout_ms),
                &settings.sirene.user_agent,
            )
            .map_err(|e| DepsError::Apps(e.to_string()))?,
        })
    }

    /// The HMAC key shared with an app's partner.
    pub fn signing_key(&self, app_id: &str) -> Result<&[u8], String> {
        self.signing
            .get(app_id)
            .map(|s| s.expose().as_bytes())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                format!(
                    "no signing key for app {app_id}: set DOSSIER__APPS__SIGNING_KEYS__{}",
                    app_id.to_uppercase()
                )
            })
    }
}

/// Outgoing mail as the invitation job needs it.
#[derive(Debug, Clone)]
pub struct Mailer {
    pub transport: crate::mail::Transport,
    pub from_name: String,
    pub from: lettre::Address,
    pub contact: lettre::Address,
    pub public_base_url: String,
    pub invitations: crate::config::InvitationSettings,
    /// DKIM, when configured.
    pub signer: Option<Arc<crate::mail::Signer>>,
    /// Read once, at the first send (it may live in the database).
    link_key: Arc<tokio::sync::OnceCell<crate::invitations::link::LinkKey>>,
}

impl Mailer {
    /// From validated settings (addresses are checked at load).
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Mailer, DepsError> {
        let m = &settings.mail;
        let address = |key: &str, v: &str| {
            v.parse::<lettre::Address>()
                .map_err(|e| DepsError::Mail(format!("{key}: {e}")))
        };
        Ok(Mailer {
            transport: crate::mail::Transport::from_settings(m),
            from_name: m.from_name.clone(),
            from: address("mail.from_address", &m.from_address)?,
            contact: address("mail.contact_address", &m.contact_address)?,
            public_base_url: m.public_base_url.clone(),
            invitations: settings.invitations.clone(),
            signer: crate::mail::Signer::from_settings(&m.dkim)
                .map_err(DepsError::Mail)?
                .map(Arc::new),
            link_key: Arc::default(),
        })
    }

    /// The key invitation links derive from (`invitations::link`).
    pub async fn link_key(
        &self,
        db: &Database,
    ) -> Result<&crate::invitations::link::LinkKey, crate::invitations::link::LinkKeyError> {
        self.link_key
            .get_or_try_init(|| {
                crate::invitations::link::LinkKey::resolve(db, self.invitations.link_key.as_ref())
            })
            .await
    }
}

impl JobDeps {
    /// Connects to the business database and sets up the registry providers.
    pub async fn from_settings(
        settings: &crate::config::Settings,
        queue: Arc<dyn crate::queue::QueueBackend>,
    ) -> Result<JobDeps, DepsError> {
        let db =
            Database::connect(&settings.database.url, settings.database.max_connections).await?;
        Ok(JobDeps {
            sirene: crate::sirene::from_settings(settings, &db).await?,
            db,
            mail: Mailer::from_settings(settings)?,
            queue,
            queue_settings: settings.queue.clone(),
            partners: Partners::from_settings(settings)?,
            imports: settings.imports.clone(),
            webhooks: webhook_delivery::Webhooks::from_settings(settings)
                .map_err(DepsError::Webhooks)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Sirene(#[from] crate::sirene::SetupError),
    #[error("mail settings: {0}")]
    Mail(String),
    #[error("apps settings: {0}")]
    Apps(String),
    #[error("webhooks settings: {0}")]
    Webhooks(String),
}

/// Refuses to work for an archived client: the job fails permanently with
/// [`crate::client_archive::CANCELLED`], which `unarchive` looks for to
/// restart it. Every kind acting on a client asks first, but
/// `app_teardown` (archiving relies on it).
pub(crate) async fn for_live_client(deps: &JobDeps, client_id: &str) -> Result<(), JobError> {
    match crate::clients::is_archived(&deps.db, client_id).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(JobError::permanent(crate::client_archive::CANCELLED)),
        Err(e) => Err(JobError::transient(format!(
            "reading client {client_id}: {e}"
        ))),
    }
}

/// The onboarding step a kind's job performs, as `client.step_failed`
/// names it; `None` for kinds that are not onboarding steps.
pub(crate) fn step_of(kind: &str) -> Option<&'static str> {
    match kind {
        siret_enrichment::KIND => Some("enrichment"),
        tree_setup::KIND => Some("tree"),
        fiscal_folders::KIND => Some("folders"),
        invitation::KIND => Some("invitation"),
        app_setup::KIND => Some("app"),
        _ => None,
    }
}

/// The end of an onboarding step's attempt, told to the firm: a success
/// settles the client (`client.ready` once its last step is done:
/// `onboarding::ready`), a first failed attempt and a last one write
/// `client.step_failed` — in a transaction of its own, since the failure's
/// record is the queue's, and before it, so that a crash in between makes
/// the job run again rather than lose the event. An archived client's
/// cancelled step and a snooze (waiting for the quota) are not failures.
pub(crate) async fn step_outcome(
    deps: &JobDeps,
    ctx: &JobContext,
    client_id: &str,
    result: Result<serde_json::Value, JobError>,
) -> Result<serde_json::Value, JobError> {
    let (reason, will_retry) = match &result {
        Ok(_) => {
            crate::onboarding::ready::settle(&deps.db, client_id)
                .await
                .map_err(|e| JobError::transient(format!("settling client {client_id}: {e}")))?;
            return result;
        }
        Err(JobError::Snooze { .. }) => return result,
        Err(JobError::Permanent { message }) if message == crate::client_archive::CANCELLED => {
            return result;
        }
        Err(JobError::Permanent { message }) => (message.clone(), false),
        // Told when a step starts failing and when it gives up, not at
        // every attempt between: a mail server down for an hour would
        // otherwise send each client's receiver a dozen events.
        Err(JobError::Transient { .. }) if ctx.attempt > 1 && ctx.attempt < ctx.max_attempts => {
            return result;
        }
        Err(JobError::Transient { message, .. }) => {
            (message.clone(), ctx.attempt < ctx.max_attempts)
        }
    };
    let failed = StepFailed {
        client_id,
        job_id: &ctx.id,
        kind: &ctx.kind,
        attempt: ctx.attempt,
        max_attempts: ctx.max_attempts,
        reason: &reason,
        will_retry,
    };
    match tell_step_failed(deps, &failed).await {
        Ok(()) => result,
        // The event must not be lost: the attempt fails as retryable and
        // reports again next time.
        Err(e) => Err(JobError::transient(format!(
            "{reason}; and its client.step_failed event could not be written: {e}"
        ))),
    }
}

/// A step's failed attempt, as `client.step_failed` tells it.
struct StepFailed<'a> {
    client_id: &'a str,
    job_id: &'a str,
    kind: &'a str,
    attempt: u32,
    max_attempts: u32,
    reason: &'a str,
    will_retry: bool,
}

async fn tell_step_failed(deps: &JobDeps, f: &StepFailed<'_>) -> Result<(), sqlx::Error> {
    let Some(step) = step_of(f.kind) else {
        return Ok(());
    };
    let owner: Option<(String, Option<String>)> = crate::db::on_pool!(&deps.db, pool => sqlx::query_as(
        "SELECT firm_id, import_id FROM clients WHERE id = $1",
    )
    .bind(f.client_id)
    .fetch_optional(pool)
    .await?);
    let Some((firm, import)) = owner else {
        return Ok(());
    };
    let event = crate::events::Event::for_client(
        crate::events::EventType::ClientStepFailed,
        &firm,
        f.client_id,
        serde_json::json!({
            "step": step,
            "job": { "id": f.job_id, "kind": f.kind },
            "attempt": f.attempt,
            "max_attempts": f.max_attempts,
            "reason": crate::mail::redact_addresses(f.reason),
            "will_retry": f.will_retry,
        }),
    )
    .in_bulk(import.is_some());
    crate::events::emit_alone(&deps.db, &event)
        .await
        .map(|_| ())
}

/// The rescuer's deaths told too: an onboarding step whose workers kept
/// being lost until it ran out of attempts (no handler saw that failure).
fn given_up(deps: Arc<JobDeps>) -> crate::runtime::GivenUp {
    Arc::new(move |lease: crate::queue::ExpiredLease| {
        let deps = deps.clone();
        Box::pin(async move {
            if step_of(&lease.kind).is_none() {
                return;
            }
            let job = match deps.queue.get(&lease.id).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(job = %lease.id, error = %e, "reading a job the rescuer gave up on");
                    return;
                }
            };
            let Some(client) = job
                .subject
                .clone()
                .or_else(|| crate::owners::client_of(&job.payload).map(str::to_string))
            else {
                return;
            };
            let reason = job.last_error.unwrap_or_default();
            let failed = StepFailed {
                client_id: &client,
                job_id: &lease.id,
                kind: &lease.kind,
                attempt: lease.attempts,
                max_attempts: lease.max_attempts,
                reason: &reason,
                will_retry: false,
            };
            if let Err(e) = tell_step_failed(&deps, &failed).await {
                tracing::warn!(job = %lease.id, error = %e, "client.step_failed of a lost job not written");
            }
        })
    })
}

/// Every kind the product knows, for payload validation at enqueue.
pub fn catalogue() -> Vec<KindSpec> {
    vec![
        siret_check::spec(),
        siret_enrichment::spec(),
        tree_setup::spec(),
        fiscal_folders::spec(),
        exercice_rollover::spec(),
        invitation::spec(),
        invitation_housekeeping::spec(),
        app_setup::spec(),
        app_teardown::spec(),
        bulk_import::spec(),
        import_scan::spec(),
        retention::spec(),
        webhook_delivery::spec(),
    ]
}

/// Registers the handler of every kind.
pub fn register_all(registry: &mut Registry, deps: Arc<JobDeps>) {
    siret_check::register(registry);
    siret_enrichment::register(registry, deps.clone());
    tree_setup::register(registry, deps.clone());
    fiscal_folders::register(registry, deps.clone());
    exercice_rollover::register(registry, deps.clone());
    invitation::register(registry, deps.clone());
    invitation_housekeeping::register(registry, deps.clone());
    app_setup::register(registry, deps.clone());
    app_teardown::register(registry, deps.clone());
    bulk_import::register(registry, deps.clone());
    retention::register(registry, deps.clone());
    webhook_delivery::register(registry, deps.clone());
    import_scan::register(registry, deps.clone());
    registry.on_given_up(given_up(deps));
}
