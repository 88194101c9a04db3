//! Per-kind wake-up handles, so that an idle worker fetches as soon as a job
//! is pushed instead of waiting for its next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug, Default, Clone)]
pub struct Wakers {
    inner: Arc<Mutex<HashMap<String, Waker>>>,
}

#[derive(Debug, Default)]
struct Waker {
    notify: Arc<Notify>,
    /// Wake-ups so far: a fetch that remembers what the queue looked like
    /// (`super::lane_hint`) knows it changed since.
    wakes: u64,
}

impl Wakers {
    /// The handle of `kind`, created on first use.
    pub fn get(&self, kind: &str) -> Arc<Notify> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(kind.to_string()).or_default().notify.clone()
    }

    /// Wakes the fetcher of `kind` (one stored permit: a wake-up that comes
    /// while the fetcher is busy is not lost).
    /// Kinds nobody fetches are not recorded (a wake-up's kind may come
    /// from another process).
    pub fn wake(&self, kind: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waker) = map.get_mut(kind) {
            waker.wakes += 1;
            waker.notify.notify_one();
        }
    }

    /// How many times `kind` was woken so far; from now on its wake-ups
    /// count (the caller fetches it).
    pub fn wakes(&self, kind: &str) -> u64 {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(kind.to_string()).or_default().wakes
    }
}
