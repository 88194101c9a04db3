//! Dossier's job runtime: durable job queues on SQLite, PostgreSQL and
//! Redis behind one trait, and a worker pool that is an apalis 1.0 pool on
//! them. It knows nothing of accounting: the product's job kinds live in
//! `dossier-core` and are registered here like anyone else's.
//!
//! What it guarantees, on every backend: a job is leased while it runs and
//! its lease renewed by heartbeats (a worker that dies hands its jobs to the
//! rescuer); failed attempts come back at a durable run time chosen by the
//! retry policy (exponential backoff with jitter, or the handler's
//! `Retry-After`), never in-process with a slot held; panics and timeouts
//! are failed attempts; a job out of attempts keeps every attempt's error
//! in the dead set; snoozes and shutdown hand-backs spend no attempt; the
//! same idempotency key enqueues once; graceful shutdown finishes in-flight
//! work or hands it back.
//!
//! # Using it from an apalis application
//!
//! Handlers are apalis handlers: an `async fn` of the typed payload and
//! the extractors it wants ([`runtime::JobContext`], apalis's `Attempt`,
//! `TaskId`, `Data<T>`…), returning [`job::JobError`] or apalis's own
//! `AbortError` / `RetryAfterError` / `DeferredError`. Register them on a
//! [`runtime::Registry`], open a backend, and run a [`runtime::Worker`]:
//!
//! ```ignore
#![doc = include_str!("../examples/greeter.rs")]
//! ```
//!
//! (`examples/greeter.rs`, run by the test suite as `tests/example.rs`.)
//!
//! # Modules
//!
//! - [`job`]: the vocabulary (`NewJob`, `JobRecord`, `JobError`…).
//! - [`queue`]: the [`queue::QueueBackend`] trait and its SQLite,
//!   PostgreSQL and Redis implementations; [`queue::open`].
//! - [`runtime`]: the apalis pool — feeder, backend, ack layer, stack,
//!   completer, heartbeats and rescuer.
//! - [`retry`]: the retry policy. [`settings`]: the queue's settings.
//! - [`schedule`]: cron schedules as apalis-cron workers, one job per tick.
//! - [`write_gate`], [`interactive`]: writers of one SQLite file taking
//!   turns, interactive work first; background work giving way.
//! - [`metrics`]: the pool's Prometheus counters.
//!
//! The SQLite and PostgreSQL queues use the `jobs` and `workers` tables of
//! the first migration in `migrations/{sqlite,postgres}/`, and the
//! `queue_pauses` table of `…_queue_pauses.sql`.

pub mod clock;
pub mod interactive;
pub mod job;
pub mod metrics;
pub mod queue;
mod redact;
pub mod retry;
pub mod runtime;
pub mod schedule;
pub mod settings;
pub mod sqlite_pool;
pub mod write_gate;

pub use redact::redact_url;
