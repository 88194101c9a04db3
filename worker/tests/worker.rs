//! `dossier-worker` as operators run it: the demo, and `run` until SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dossier_core::config::Settings;
use dossier_core::job::{JobStatus, NewJob};
use dossier_core::queue;

const BIN: &str = env!("CARGO_BIN_EXE_dossier-worker");

#[test]
fn demo_runs_a_realistic_batch_to_the_end() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("var/demo.db");
    let out = Command::new(BIN)
        .args([
            "demo",
            "--jobs",
            "200",
            "--database",
            db.to_str().unwrap_or_default(),
            "--sirene-extract",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sirene-extract"),
        ])
        .env_remove("DOSSIER_CONFIG")
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 3 rows in 20 are wrong (two mistyped, one lost its leading zero).
    assert!(
        stdout.contains("siret_check    done   170  dead   30  pending 0  running 0  retrying 0"),
        "{stdout}"
    );
    assert!(stdout.contains("checksum failed"), "{stdout}");
    // Enrichment from the shipped extract: 16 establishments, one client
    // entered by hand, one unknown SIRET.
    assert!(
        stdout.contains("siret_enrichment done    17  dead    1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("typed legal_name \"Moreau Conseil\", registry \"CABINET MOREAU CONSEIL\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("WARNING: the company (SIREN 880878145) is closed in the registry"),
        "{stdout}"
    );
    assert!(stdout.contains("(no SIRET)       skipped"), "{stdout}");
    assert!(stdout.contains("73282932000074   not_found"), "{stdout}");
    assert!(
        stdout.contains("a spreadsheet may have dropped a leading zero"),
        "{stdout}"
    );
    assert!(db.exists());
    // One screen: the warnings of the jobs it fails on purpose are in its
    // log file, named in the summary, not above it.
    let log = dir.path().join("var/demo.log");
    assert!(
        stdout.contains(&format!("its logs: {}", log.display())),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("WARN"), "{stderr}");
    // Off a terminal, its progress as plain lines, ending with all of them.
    let last = stderr
        .lines()
        .rfind(|l| l.starts_with("demo: "))
        .unwrap_or_else(|| panic!("no progress line: {stderr}"));
    let (finished, all) = last
        .strip_prefix("demo: ")
        .and_then(|l| l.strip_suffix(" jobs finished"))
        .and_then(|l| l.split_once(" of "))
        .unwrap_or_else(|| panic!("{last}"));
    assert_eq!(finished, all, "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no terminal codes off a terminal: {stderr}"
    );
    let logged = std::fs::read_to_string(&log).expect("demo.log");
    assert!(
        logged.contains("WARN") && logged.contains("siret_check"),
        "{logged}"
    );
}

#[test]
fn run_refuses_unknown_kinds_in_config() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(BIN)
        .args(["run", "--kinds", "siret_check,enrich_everything"])
        .env(
            "DOSSIER__DATABASE__URL",
            format!("sqlite://{}", dir.path().join("d.db").display()),
        )
        .env_remove("DOSSIER_CONFIG")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown job kind `enrich_everything`"),
        "{err}"
    );
}

#[tokio::test]
async fn run_migrates_processes_jobs_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("var/dossier.db").display());
    let mut child = Command::new(BIN)
        .arg("run")
        .env("DOSSIER__DATABASE__URL", &url)
        .env_remove("DOSSIER_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker starts");

    let mut settings = Settings::default();
    settings.database.url = url;
    // The worker migrates at start-up: wait for its schema, then enqueue.
    let deadline = Instant::now() + Duration::from_secs(20);
    let backend = loop {
        if let Ok(q) = queue::open(&settings).await
            && q.workers().await.map(|w| w.len()).unwrap_or(0) == 1
        {
            break q;
        }
        assert!(Instant::now() < deadline, "worker did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = backend
        .push(NewJob {
            kind: "siret_check".into(),
            payload: serde_json::json!({"siret": "732 829 320 00074"}),
            run_at_ms: None,
            max_attempts: 3,
            idempotency_key: None,
            trace_id: Some("req-1".into()),
            group: None,
            subject: None,
            bulk: false,
        })
        .await
        .expect("push")
        .id()
        .to_string();
    let job = loop {
        let job = backend.get(&id).await.expect("get").expect("exists");
        if job.status == JobStatus::Done || job.status == JobStatus::Dead {
            break job;
        }
        assert!(Instant::now() < deadline, "job not processed: {job:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job.status, JobStatus::Done, "{job:?}");
    let result = job.result.expect("result stored");
    assert_eq!(result["vat_number"], "FR44732829320");
    assert_eq!(result["nic"], "00074");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("exits");
    assert!(exit.success(), "SIGTERM exit: {exit:?}");
    assert!(
        backend.workers().await.expect("workers").is_empty(),
        "deregistered on exit"
    );
}

#[test]
fn bench_import_commits_every_row_and_queues_every_job() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("bench-import.db").display());
    let out = Command::new(BIN)
        .args(["bench-import", "--database", &url, "--rows", "120"])
        .env_remove("DOSSIER_CONFIG")
        .output()
        .expect("bench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("JSON line");
    assert_eq!(
        (
            r["rows"].as_u64(),
            r["created"].as_u64(),
            r["jobs_enqueued"].as_u64(),
            r["jobs_in_queue"].as_u64()
        ),
        (Some(120), Some(120), Some(360), Some(360))
    );
    assert!(r["rows_per_s"].as_f64().is_some_and(|v| v > 0.0), "{r}");
}

#[test]
fn bench_prints_one_json_line_with_every_figure() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let out = Command::new(BIN)
        .args(["bench", "--backend", "sqlite", "--url", &url])
        .args([
            "--jobs",
            "300",
            "--concurrency",
            "8",
            "--pickup-samples",
            "5",
        ])
        .env("DOSSIER__WORKER__THREADS", "1")
        .env_remove("DOSSIER_CONFIG")
        .output()
        .expect("bench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let r: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON line");
    assert_eq!(r["backend"], "sqlite");
    assert_eq!(
        (r["jobs"].as_u64(), r["concurrency"].as_u64()),
        (Some(300), Some(8))
    );
    assert_eq!(r["threads"], 1, "worker.threads is applied to the runtime");
    for figure in [
        "push_jobs_per_s",
        "drain_jobs_per_s",
        "pickup_p50_ms",
        "pickup_p99_ms",
    ] {
        assert!(r[figure].as_f64().is_some_and(|v| v > 0.0), "{figure}: {r}");
    }
}

/// `--log-format json`: each line is a JSON object; every line a job logs
/// carries its id, kind, attempt, client id and the trace id given when the
/// client was created; no email reaches the log.
#[tokio::test]
async fn json_logs_carry_the_job_and_the_trace_id_given_at_enqueue() {
    use dossier_core::onboarding::{self, ClientForm, Director};
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("dossier.db").display());
    let mut settings = Settings::default();
    settings.database.url = url.clone();
    dossier_core::db::migrate_all(&settings)
        .await
        .expect("migrate");
    let db = dossier_core::db::Database::connect(&url, 1)
        .await
        .expect("db");
    dossier_core::firms::add(&db, "f1", "f1")
        .await
        .expect("firm");
    let keys = dossier_core::secrets::KeyRing::new(&[]).expect("ring");
    let form = ClientForm {
        firm_id: "f1".into(),
        company: [("legal_name".to_string(), "Garage Martin".to_string())].into(),
        exercice_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1),
        director: Some(Director {
            email: "paul.martin@garage-martin.fr".into(),
            first_name: "Paul".into(),
            last_name: "Martin".into(),
        }),
        invite: true,
        ..Default::default()
    };
    let created = onboarding::create_client_once(
        &db,
        &settings.queue,
        &keys,
        form,
        None,
        Some("req-7f3a".into()),
    )
    .await
    .expect("created");
    let outbox = dir.path().join("outbox");
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "run"])
        .env("DOSSIER__DATABASE__URL", &url)
        .env("DOSSIER__LOG__LEVEL", "debug")
        .env("DOSSIER__MAIL__TRANSPORT", "file")
        .env("DOSSIER__MAIL__OUTBOX_DIR", outbox.display().to_string())
        .env_remove("RUST_LOG")
        .env_remove("DOSSIER_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    // Read as it comes: a debug-level worker fills a pipe's buffer in
    // seconds, and would then block on its next line.
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut all);
        all
    });
    let backend = queue::open(&settings).await.expect("queue");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = backend.counts().await.expect("counts");
        let left: u64 = counts
            .iter()
            .map(|c| c.pending + c.scheduled + c.running + c.retrying)
            .sum();
        if counts.iter().any(|c| c.done > 0) && left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "jobs not processed: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().expect("exits");
    let out = reader.join().expect("stderr read");
    let logs = String::from_utf8_lossy(&out);
    let mut job_lines = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let Some(span) = v["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "job"))
        else {
            continue;
        };
        job_lines += 1;
        for field in ["job_id", "kind", "attempt"] {
            assert!(!span[field].is_null(), "{field} missing: {line}");
        }
        assert_eq!(span["client_id"], created.client_id.as_str(), "{line}");
        assert_eq!(span["trace_id"], "req-7f3a", "{line}");
        kinds.insert(span["kind"].as_str().unwrap_or_default().to_string());
    }
    assert!(job_lines > 0, "no job line in:\n{logs}");
    assert!(
        kinds.contains("tree_setup") && kinds.contains("invitation"),
        "{kinds:?}"
    );
    assert!(!logs.contains("paul.martin@"), "an email reached the logs");
}
