//! The queue backends (`dossier_queue::queue`), opened as the application's
//! settings say.

use std::sync::Arc;

use crate::config::Settings;

pub use dossier_queue::queue::*;

/// Opens the backend the settings name.
pub async fn open(settings: &Settings) -> Result<Arc<dyn QueueBackend>, QueueError> {
    dossier_queue::queue::open(
        &settings.queue,
        &settings.database.url,
        settings.database.max_connections,
    )
    .await
}
