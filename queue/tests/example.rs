//! The crate docs' example, run as it is written.

#[allow(dead_code)]
#[path = "../examples/greeter.rs"]
mod greeter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crate_docs_example_runs() {
    let url = std::env::var("DOSSIER_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("example-{}", uuid::Uuid::now_v7().simple());
    let greeting = greeter::run(&url, &prefix)
        .await
        .expect("the example runs (Redis reachable: run scripts/test)");
    assert!(greeting.starts_with("Bonjour Camille (job "), "{greeting}");
    assert!(
        greeting.ends_with(", attempt 2)"),
        "retried once: {greeting}"
    );
}
