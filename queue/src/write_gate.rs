//! One writer at a time on a SQLite file, interactive writers first.
//!
//! SQLite lets one connection write at a time. Left to itself, a writer
//! that finds the file locked sleeps and tries again (1, 2, 5 … 100 ms
//! apart, until `busy_timeout`): it is not woken when the lock frees, and a
//! busy writer can take the lock again before a sleeping one wakes. Under
//! an import that is how a client created through the hook waited 8 s
//! behind batches and job bookkeeping (issue 24).
//!
//! So every write transaction of this process on a SQLite file first takes
//! a turn here: turns are handed over the moment the holder is done, in
//! order within a [`Lane`], and an [`Lane::Interactive`] writer (a person or
//! an upstream app waiting for an answer, a lease renewal that must not
//! lapse) goes before every [`Lane::Background`] one (jobs, imports,
//! relays). A background writer that has waited [`BACKGROUND_MAX_WAIT`]
//! goes next however many interactive ones wait, so a steady stream of
//! requests slows an import down but never stops it.
//!
//! The gate is per file and per process: two pools on one file (the
//! business data and the queue) share it. Writers in other processes (the
//! `dossier` command) still meet SQLite's own lock and busy timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A background writer waiting this long goes before interactive ones.
pub const BACKGROUND_MAX_WAIT: Duration = Duration::from_millis(100);

/// Who is waiting to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Someone waits for the answer, or a lease must not lapse.
    Interactive,
    /// Jobs, imports, relays: throughput matters, not each write's latency.
    Background,
}

#[derive(Default)]
struct State {
    held: bool,
    interactive: VecDeque<oneshot::Sender<()>>,
    background: VecDeque<(Instant, oneshot::Sender<()>)>,
}

impl State {
    /// The next waiter to hand the turn to, if any.
    fn next(&mut self) -> Option<oneshot::Sender<()>> {
        let background_overdue = self
            .background
            .front()
            .is_some_and(|(since, _)| since.elapsed() >= BACKGROUND_MAX_WAIT);
        if !background_overdue && let Some(tx) = self.interactive.pop_front() {
            return Some(tx);
        }
        self.background
            .pop_front()
            .map(|(_, tx)| tx)
            .or_else(|| self.interactive.pop_front())
    }
}

/// The write turns of one SQLite file in this process.
#[derive(Default)]
pub struct WriteGate {
    state: Mutex<State>,
}

/// The right to write until dropped; dropping hands it to the next waiter.
#[must_use = "the turn ends when this is dropped"]
pub struct WriteTurn {
    gate: Arc<WriteGate>,
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        self.gate.pass_on();
    }
}

/// A waiter's receiving end: if the turn arrived but the waiter was
/// cancelled before seeing it, the turn is passed on, not lost.
struct Waiting {
    gate: Arc<WriteGate>,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.pass_on();
            }
        }
    }
}

impl WriteGate {
    /// Waits for this lane's turn to write.
    pub async fn turn(self: &Arc<Self>, lane: Lane) -> WriteTurn {
        let rx = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if !s.held {
                s.held = true;
                return WriteTurn { gate: self.clone() };
            }
            let (tx, rx) = oneshot::channel();
            match lane {
                Lane::Interactive => s.interactive.push_back(tx),
                Lane::Background => s.background.push_back((Instant::now(), tx)),
            }
            rx
        };
        let mut waiting = Waiting {
            gate: self.clone(),
            rx: Some(rx),
        };
        if let Some(rx) = waiting.rx.as_mut() {
            // The sender is only dropped unsent by `pass_on`, which never
            // does: it sends or keeps it. Either way the turn is ours now.
            let _ = rx.await;
        }
        waiting.rx = None;
        WriteTurn { gate: self.clone() }
    }

    /// Hands the turn to the next live waiter, or frees the gate.
    fn pass_on(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(tx) = s.next() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        s.held = false;
    }

    /// Writers waiting, per lane (for tests and metrics).
    pub fn waiting(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.interactive.len(), s.background.len())
    }
}

static GATES: LazyLock<Mutex<HashMap<String, Weak<WriteGate>>>> = LazyLock::new(Default::default);

/// The gate of the SQLite file `filename` (as the pool's options name
/// it), shared by every pool of this process on that file.
pub fn for_file(filename: &str) -> Arc<WriteGate> {
    let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
    // Looked up on every write: the name as given first, the file's
    // canonical path (one system call) only the first time.
    if let Some(gate) = gates.get(filename).and_then(Weak::upgrade) {
        return gate;
    }
    gates.retain(|_, g| g.strong_count() > 0);
    let canonical = std::fs::canonicalize(filename)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| filename.to_string());
    let gate = gates
        .get(&canonical)
        .and_then(Weak::upgrade)
        .unwrap_or_default();
    gates.insert(canonical, Arc::downgrade(&gate));
    gates.insert(filename.to_string(), Arc::downgrade(&gate));
    gate
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn interactive_writers_go_before_background_ones() {
        let gate = Arc::new(WriteGate::default());
        let first = gate.turn(Lane::Background).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, lane) in [
            ("bg1", Lane::Background),
            ("bg2", Lane::Background),
            ("ia1", Lane::Interactive),
            ("ia2", Lane::Interactive),
        ] {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = gate.turn(lane).await;
                order.lock().unwrap().push(name);
            }));
            settle().await;
        }
        assert_eq!(gate.waiting(), (2, 2));
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["ia1", "ia2", "bg1", "bg2"]);
        assert_eq!(gate.waiting(), (0, 0));
    }

    #[tokio::test]
    async fn a_background_writer_waiting_too_long_goes_next() {
        let gate = Arc::new(WriteGate::default());
        let first = gate.turn(Lane::Interactive).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let bg = {
            let (gate, order) = (gate.clone(), order.clone());
            tokio::spawn(async move {
                let _turn = gate.turn(Lane::Background).await;
                order.lock().unwrap().push("bg");
            })
        };
        settle().await;
        tokio::time::sleep(BACKGROUND_MAX_WAIT + Duration::from_millis(20)).await;
        let ia = {
            let (gate, order) = (gate.clone(), order.clone());
            tokio::spawn(async move {
                let _turn = gate.turn(Lane::Interactive).await;
                order.lock().unwrap().push("ia");
            })
        };
        settle().await;
        drop(first);
        bg.await.unwrap();
        ia.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["bg", "ia"]);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_keep_or_lose_the_turn() {
        let gate = Arc::new(WriteGate::default());
        let first = gate.turn(Lane::Background).await;
        // Cancelled while waiting: removed from the line by the next hand-over.
        let cancelled = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _turn = gate.turn(Lane::Interactive).await;
                unreachable!("aborted before its turn");
            }
        });
        settle().await;
        cancelled.abort();
        let _ = cancelled.await;
        drop(first);
        // The gate is free again: a new writer gets it at once.
        let again = tokio::time::timeout(Duration::from_secs(1), gate.turn(Lane::Background))
            .await
            .expect("the turn was not lost");
        drop(again);

        // Given the turn, then cancelled before seeing it: passed on.
        let holder = gate.turn(Lane::Background).await;
        let mut waiter = Box::pin(gate.turn(Lane::Interactive));
        assert!(futures_poll_once(&mut waiter).await.is_none());
        drop(holder); // the turn is sent to `waiter`
        drop(waiter); // …which never looks
        let last = tokio::time::timeout(Duration::from_secs(1), gate.turn(Lane::Background))
            .await
            .expect("the turn was passed on");
        drop(last);
    }

    /// Polls a future once.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[test]
    fn one_gate_per_file() {
        let dir = std::env::temp_dir().join(format!("gate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.db");
        std::fs::write(&a, b"").unwrap();
        let g1 = for_file(&a.to_string_lossy());
        let g2 = for_file(&format!("{}/./a.db", dir.display()));
        let other = for_file(&dir.join("b.db").to_string_lossy());
        assert!(Arc::ptr_eq(&g1, &g2));
        assert!(!Arc::ptr_eq(&g1, &other));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
