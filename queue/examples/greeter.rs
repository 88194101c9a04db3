//! A `greet` job kind on the Redis queue, handled by a plain apalis handler.
//! `cargo run -p dossier-queue --example greeter` (Redis on
//! 127.0.0.1:6379, or `REDIS_URL`).

use std::sync::Arc;
use std::time::Duration;

use apalis_core::error::{BoxDynError, RetryAfterError};
use apalis_core::task::attempt::Attempt;
use apalis_core::task::task_fn::task_fn;
use dossier_queue::job::NewJob;
use dossier_queue::queue::QueueBackend;
use dossier_queue::queue::redis::RedisQueue;
use dossier_queue::runtime::{self, JobContext, Registry, Worker};
use dossier_queue::settings::QueueSettings;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Greet {
    pub name: String,
}

/// An apalis handler: the typed payload, then what it wants injected. Its
/// first attempt asks to be retried 100 ms later, as a rate-limited API
/// would; the pool stores that run time rather than sleeping on a slot.
async fn greet(job: Greet, ctx: JobContext, attempt: Attempt) -> Result<String, BoxDynError> {
    if attempt.current() == 1 {
        let busy = std::io::Error::other("warming up");
        return Err(RetryAfterError::new(busy, Duration::from_millis(100)).into());
    }
    Ok(format!(
        "Bonjour {} (job {}, attempt {})",
        job.name, ctx.id, ctx.attempt
    ))
}

/// Pushes one job, runs a pool until it is done, and returns its result.
pub async fn run(redis_url: &str, prefix: &str) -> Result<String, Box<dyn std::error::Error>> {
    let queue = Arc::new(RedisQueue::connect(redis_url, prefix).await?);
    let mut registry = Registry::new();
    registry.register_service("greet", task_fn(greet));
    let worker = Worker::new(
        runtime::worker_name("greeter"),
        QueueSettings::default(),
        queue.clone(),
        registry,
    )?
    .spawn();
    let pushed = queue
        .push(NewJob {
            kind: "greet".into(),
            payload: serde_json::to_value(Greet {
                name: "Camille".into(),
            })?,
            run_at_ms: None,
            max_attempts: 3,
            idempotency_key: None,
            trace_id: None,
            group: None,
            subject: None,
            bulk: false,
        })
        .await?;
    runtime::wait_until_drained(queue.as_ref(), &["greet"], Duration::from_millis(20)).await?;
    worker.stop().await?;
    let job = queue.get(pushed.id()).await?.ok_or("the job vanished")?;
    queue.destroy().await?;
    Ok(job
        .result
        .and_then(|r| r.as_str().map(str::to_string))
        .unwrap_or_default())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    println!("{}", run(&url, "greeter-example").await?);
    Ok(())
}
