//! Per-kind wake-up handles, so that an idle worker fetches as soon as a job
//! is pushed instead of waiting for its next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug, Default, Clone)]
pub struct Wakers {
    inner: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl Wakers {
    /// The handle of `kind`, created on first use.
    pub fn get(&self, kind: &str) -> Arc<Notify> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(kind.to_string()).or_default().clone()
    }

    /// Wakes the fetcher of `kind` (one stored permit: a wake-up that comes
    /// while the fetcher is busy is not lost).
    pub fn wake(&self, kind: &str) {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(kind) {
            n.notify_one();
        }
    }
}
