//! The hooks against their own contract: schemathesis (from PyPI,
//! installed by `scripts/test`) reads `/openapi.json` and sends requests
//! generated from it — valid, invalid and hostile — to a real server on
//! the embedded deployment and on PostgreSQL + Redis. No answer may be a
//! 5xx, carry a status the document does not declare, or break the schema
//! it declares (error bodies included).
//!
//! Bounded: `DOSSIER_CONTRACT_EXAMPLES` examples per operation (25), seed
//! `DOSSIER_CONTRACT_SEED` (fixed, so a failure replays; change it to
//! explore).

use std::process::Command;

use dossier_e2e::{BackendKind, TestQueue};

const BEARER: &str = "contract-token-abcdefghijklm";

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

async fn the_hooks_keep_their_contract(kind: BackendKind) {
    let mut q = TestQueue::new(kind).await;
    let db = q.business_db().await;
    let settings = dossier_e2e::with_token(q.settings.clone(), BEARER);
    let (base, stop) = dossier_e2e::serve_api(&db, q.backend.clone(), &settings).await;
    let examples = setting("DOSSIER_CONTRACT_EXAMPLES", "25");
    let seed = setting("DOSSIER_CONTRACT_SEED", "20261201");
    let report = q.dir.path().join("schemathesis");
    let args = vec![
        "run".to_string(),
        format!("{base}/openapi.json"),
        "--header".into(),
        format!("Authorization: Bearer {BEARER}"),
        "--checks".into(),
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance".into(),
        "--max-examples".into(),
        examples,
        "--seed".into(),
        seed,
        "--request-timeout".into(),
        "20".into(),
        "--no-color".into(),
        "--report-dir".into(),
        report.display().to_string(),
    ];
    // Its example database lives in the test's own directory, not the
    // repository.
    let cwd = q.dir.path().to_path_buf();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .args(&args)
            .current_dir(&cwd)
            .output()
    })
    .await
    .expect("task")
    .expect("schemathesis runs: run scripts/test, or `pip install schemathesis`");
    let out = String::from_utf8_lossy(&run.stdout);
    let summary = out.split("SUMMARY").nth(1).unwrap_or_default().to_string();
    eprintln!("schemathesis summary:{summary}");
    assert!(
        run.status.success(),
        "schemathesis found failures:\n{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(summary.contains("Tested: "), "it tested something:\n{out}");
    stop.cancel();
    q.cleanup_with(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hooks_keep_their_contract_on_sqlite() {
    the_hooks_keep_their_contract(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hooks_keep_their_contract_on_postgres_and_redis() {
    the_hooks_keep_their_contract(BackendKind::Redis).await;
}
