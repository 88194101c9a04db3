//! `dossier client create … --wait` against a real queue (a SQLite file)
//! worked by a real worker with the product's handlers, and a real HTTP
//! server standing in for the registry: the exit code says whether the
//! client is ready (0), a step failed for good (3) or the wait ran out (4).

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use dossier_core::runtime::Registry;
use dossier_core::sirene::recherche::RechercheEntreprises;
use dossier_core::sirene::{Provider, ProviderSettings, Quota, Sirene};
use dossier_e2e::registry_stub::RegistryStub;
use dossier_e2e::{BackendKind, TestQueue};

const UNKNOWN: &str = "73282932000074";

async fn dossier(config: std::path::PathBuf, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dossier"))
            .arg("--config")
            .arg(&config)
            .args(&args)
            .env_remove("DOSSIER_CONFIG")
            .output()
            .expect("dossier runs")
    })
    .await
    .expect("joined")
}

fn create(name: &str, extra: &[&str], timeout: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "client",
        "create",
        "--firm",
        "cabinet-1",
        "--name",
        name,
        "--exercice-start",
        "2026-01-01",
        "--no-invite",
        "--wait",
        "--wait-timeout",
        timeout,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_create_waits_for_the_onboarding_and_says_how_it_ended() {
    let mut q = TestQueue::new(BackendKind::Sqlite).await;
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, "cabinet-1").await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("dossier.toml");
    let mut settings = q.settings.clone();
    // The worker here looks up within a second; the CLI checks that a
    // lookup fits the attempt's timeout.
    settings.sirene.max_quota_wait_ms = 1_000;
    settings.sirene.recherche_entreprises.timeout_ms = 1_000;
    settings.sirene.insee.timeout_ms = 1_000;
    std::fs::write(&config, toml::to_string(&settings).expect("toml")).expect("config");

    // No worker yet: the wait runs out, naming what is still open.
    let out = dossier(config.clone(), create("Boulangerie Martin", &[], "1")).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("still not ready after 1 s") && said.contains("tree: queued"),
        "{said}"
    );

    let registry_stub = RegistryStub::default();
    let base = registry_stub.start().await;
    let provider: Arc<dyn Provider> = Arc::new(RechercheEntreprises::new(
        ProviderSettings {
            base_url: base,
            timeout_ms: 1_000,
            quota_requests: 100,
            quota_window_ms: 1_000,
        },
        dossier_e2e::loopback_outbound(1_000),
    ));
    let deps = dossier_e2e::product_deps_with(
        &q,
        &db,
        Sirene::new(vec![provider], Quota::local(), Duration::from_secs(2)),
    );
    let mut registry = Registry::new();
    dossier_core::jobs::register_all(&mut registry, deps);
    let w = q.start_worker(registry);

    // Entered by hand: the tree and the exercice's folders, then ready.
    let out = dossier(config.clone(), create("Fromagerie Roux", &[], "60")).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    for want in [
        "enrichment: skipped",
        "tree: done — ",
        "folders of exercice 2026: done",
        "ready: 3 step(s) done",
    ] {
        assert!(said.contains(want), "missing {want:?} in:\n{said}");
    }
    assert!(!said.contains('\x1b'), "no terminal codes off a terminal");

    // A SIRET the registry does not know: the enrichment fails for good.
    let out = dossier(
        config.clone(),
        create("Inconnue SARL", &["--siret", UNKNOWN], "60"),
    )
    .await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("1 step(s) failed: enrichment: failed")
            && said.contains("is not in the registries"),
        "{said}"
    );
    w.stop().await;
    q.cleanup_with(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_waits_for_every_client_it_created_and_says_how_it_ended() {
    let mut q = TestQueue::new(BackendKind::Sqlite).await;
    q.settings.mail.outbox_dir = q.dir.path().join("mail").display().to_string();
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, "cabinet-1").await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("dossier.toml");
    let mut settings = q.settings.clone();
    settings.sirene.max_quota_wait_ms = 1_000;
    settings.sirene.recherche_entreprises.timeout_ms = 1_000;
    settings.sirene.insee.timeout_ms = 1_000;
    std::fs::write(&config, toml::to_string(&settings).expect("toml")).expect("config");
    let registry_stub = RegistryStub::default();
    registry_stub.answer_every_siret();
    let base = registry_stub.start().await;
    let provider: Arc<dyn Provider> = Arc::new(RechercheEntreprises::new(
        ProviderSettings {
            base_url: base,
            timeout_ms: 1_000,
            quota_requests: 100,
            quota_window_ms: 1_000,
        },
        dossier_e2e::loopback_outbound(1_000),
    ));
    let import = |csv: String, name: &str, timeout: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, csv).expect("csv");
        vec![
            "import".to_string(),
            file.display().to_string(),
            "--firm".into(),
            "cabinet-1".into(),
            "--wait".into(),
            "--wait-timeout".into(),
            timeout.into(),
        ]
    };
    // No worker: the rows are written, the clients not ready in time.
    let out = dossier(
        config.clone(),
        import(dossier_core::import_bench::generate_csv(2, 5), "a.csv", "1"),
    )
    .await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(4), "{said}");
    assert!(
        said.contains("2 clients still not ready after 1 s"),
        "{said}"
    );

    let deps = dossier_e2e::product_deps_with(
        &q,
        &db,
        Sirene::new(vec![provider], Quota::local(), Duration::from_secs(2)),
    );
    let mut registry = Registry::new();
    dossier_core::jobs::register_all(&mut registry, deps);
    let w = q.start_worker(registry);
    let out = dossier(
        config.clone(),
        import(
            dossier_core::import_bench::generate_csv(3, 6),
            "b.csv",
            "60",
        ),
    )
    .await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("every client ready (3)"), "{said}");
    // The registry does not know one of the next two: that client fails,
    // named with the reason.
    registry_stub.script(
        "search",
        dossier_e2e::registry_stub::Scripted {
            body: r#"{"results": []}"#.into(),
            ..dossier_e2e::registry_stub::Scripted::status(200)
        },
    );
    let out = dossier(
        config.clone(),
        import(
            dossier_core::import_bench::generate_csv(2, 7),
            "c.csv",
            "60",
        ),
    )
    .await;
    let said = text(&out);
    w.stop().await;
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("1 of 2 clients have a failed step"), "{said}");
    assert!(
        said.contains("enrichment: ") && said.contains("is not in the registries"),
        "{said}"
    );
    q.cleanup_with(db).await;
}
