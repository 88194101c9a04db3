//! The product's job kinds: payload types, handlers and the catalogue entry
//! of each. New kinds (folders, invitations, apps) land here.

use std::sync::Arc;

use crate::catalogue::KindSpec;
use crate::db::Database;
use crate::runtime::Registry;
use crate::sirene::Sirene;

pub mod exercice_rollover;
pub mod fiscal_folders;
mod folder_errors;
pub mod siret_check;
pub mod siret_enrichment;
pub mod tree_setup;

/// What handlers need from the outside world, built once per worker process.
pub struct JobDeps {
    pub db: Database,
    pub sirene: Sirene,
}

impl JobDeps {
    /// Connects to the business database and sets up the registry providers.
    pub async fn from_settings(settings: &crate::config::Settings) -> Result<JobDeps, DepsError> {
        Ok(JobDeps {
            db: Database::connect(&settings.database.url, settings.database.max_connections)
                .await?,
            sirene: crate::sirene::from_settings(settings).await?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Sirene(#[from] crate::sirene::SetupError),
}

/// Every kind the product knows, for payload validation at enqueue.
pub fn catalogue() -> Vec<KindSpec> {
    vec![
        siret_check::spec(),
        siret_enrichment::spec(),
        tree_setup::spec(),
        fiscal_folders::spec(),
        exercice_rollover::spec(),
    ]
}

/// Registers the handler of every kind.
pub fn register_all(registry: &mut Registry, deps: Arc<JobDeps>) {
    siret_check::register(registry);
    siret_enrichment::register(registry, deps.clone());
    tree_setup::register(registry, deps.clone());
    fiscal_folders::register(registry, deps.clone());
    exercice_rollover::register(registry, deps);
}
