//! The product's job kinds: payload types, handlers and the catalogue entry
//! of each. New kinds (folders, invitations, apps) land here.

use std::sync::Arc;

use crate::catalogue::KindSpec;
use crate::db::Database;
use crate::job::JobError;
use crate::runtime::Registry;
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
    import_scan::register(registry, deps);
}
