//! The registry providers against a real HTTP server standing in for them:
//! field mapping, every error class, fallback, and the shared quota.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dossier_core::db::Database;
use dossier_core::sirene::insee::Insee;
use dossier_core::sirene::quota::{Ask, DatabaseQuota, Priority, QuotaStore, RedisQuota};
use dossier_core::sirene::recherche::RechercheEntreprises;
use dossier_core::sirene::{
    LookupError, Provider, ProviderSettings, Quota, Sirene, SireneError, State,
};
use dossier_core::siret::Siret;
use dossier_e2e::registry_stub::{INSEE_KEY, RegistryStub, Scripted, insee_fixture};

const GANYMEDE: &str = "88087814500015";
const UNKNOWN: &str = "73282932000074";

fn settings(base_url: &str) -> ProviderSettings {
    ProviderSettings {
        base_url: base_url.to_string(),
        timeout_ms: 500,
        quota_requests: 1_000,
        quota_window_ms: 1_000,
    }
}

fn siret(s: &str) -> Siret {
    Siret::parse(s).expect("valid SIRET")
}

fn recherche(base: &str) -> RechercheEntreprises {
    RechercheEntreprises::new(settings(base), dossier_e2e::loopback_outbound(500))
}

fn insee(base: &str, key: &str) -> Insee {
    Insee::new(
        settings(base),
        key.to_string(),
        dossier_e2e::loopback_outbound(500),
    )
}

async fn stub() -> (RegistryStub, String) {
    let stub = RegistryStub::default();
    let base = stub.start().await;
    (stub, base)
}

#[tokio::test]
async fn recherche_entreprises_maps_every_field() {
    let (_stub, base) = stub().await;
    let f = recherche(&base)
        .lookup(&siret(GANYMEDE))
        .await
        .expect("found");
    assert_eq!(f.provider, "recherche-entreprises");
    assert_eq!(
        (f.siret.as_str(), f.siren.as_str(), f.nic.as_str()),
        (GANYMEDE, "880878145", "00015")
    );
    assert_eq!(f.legal_name.as_deref(), Some("GANYMEDE"));
    assert_eq!(f.head_office, Some(true));
    assert_eq!(f.address.number.as_deref(), Some("128"));
    assert_eq!(f.address.street_type.as_deref(), Some("RUE"));
    assert_eq!(f.address.street_name.as_deref(), Some("LA BOETIE"));
    assert_eq!(f.address.postal_code.as_deref(), Some("75008"));
    assert_eq!(f.address.city.as_deref(), Some("PARIS 8"));
    assert_eq!(f.address.country, None);
    assert_eq!(
        f.address.line.as_deref(),
        Some("128 RUE LA BOETIE 75008 PARIS 8")
    );
    assert_eq!(f.naf_code.as_deref(), Some("62.02A"));
    assert_eq!(f.legal_form_code.as_deref(), Some("5710"));
    assert_eq!(f.legal_form_label.as_deref(), Some("SAS"));
    assert_eq!(f.creation_date.as_deref(), Some("2020-01-13"));
    assert_eq!(f.company_state, Some(State::Closed));
    assert_eq!(f.establishment_state, Some(State::Closed));
    assert_eq!(f.employee_band.as_deref(), Some("NN"));
    assert_eq!(f.vat_number, "FR09880878145");
    assert_eq!(f.directors.len(), 1);
    let d = &f.directors[0];
    assert_eq!(
        (d.first_names.as_deref(), d.name.as_str(), d.role.as_deref()),
        (Some("XAVIER MARIE ERWAN"), "JOUPPE", Some("Liquidateur"))
    );
    assert!(d.is_person);
    // No birth date travels: the record has no field for it.
    let json = serde_json::to_string(&f).expect("json");
    assert!(!json.contains("1990"), "{json}");
    assert!(
        f.warning()
            .expect("closed company warns")
            .contains("closed")
    );
    assert!(f.undisclosed.is_empty());
}

#[tokio::test]
async fn insee_maps_every_field_from_the_current_period() {
    let (_stub, base) = stub().await;
    let f = insee(&base, INSEE_KEY)
        .lookup(&siret(GANYMEDE))
        .await
        .expect("found");
    assert_eq!(f.provider, "insee");
    assert_eq!(f.legal_name.as_deref(), Some("GANYMEDE"));
    assert_eq!(f.head_office, Some(true));
    assert_eq!(
        (
            f.address.number.as_deref(),
            f.address.street_type.as_deref(),
            f.address.street_name.as_deref()
        ),
        (Some("128"), Some("RUE"), Some("LA BOETIE"))
    );
    assert_eq!(
        (f.address.postal_code.as_deref(), f.address.city.as_deref()),
        (Some("75008"), Some("PARIS 8"))
    );
    assert_eq!(f.naf_code.as_deref(), Some("62.02A"));
    assert_eq!(f.legal_form_label.as_deref(), Some("SAS"));
    assert_eq!(f.creation_date.as_deref(), Some("2020-01-13"));
    assert_eq!(f.company_state, Some(State::Closed));
    // Closed in periodesEtablissement[0] ("F"), though older periods say "A".
    assert_eq!(f.establishment_state, Some(State::Closed));
    assert_eq!(f.employee_band.as_deref(), Some("01"));
    assert!(f.directors.is_empty());
}

#[tokio::test]
async fn insee_sole_trader_is_named_after_the_person() {
    let (stub, base) = stub().await;
    let mut body = insee_fixture();
    let unit = &mut body["etablissement"]["uniteLegale"];
    unit["categorieJuridiqueUniteLegale"] = "1000".into();
    unit["denominationUniteLegale"] = serde_json::Value::Null;
    unit["prenomUsuelUniteLegale"] = "MARIE".into();
    unit["nomUniteLegale"] = "MARTIN".into();
    unit["nomUsageUniteLegale"] = "DURAND".into();
    stub.insee_body(GANYMEDE, body.clone());
    let f = insee(&base, INSEE_KEY)
        .lookup(&siret(GANYMEDE))
        .await
        .expect("found");
    assert_eq!(
        f.legal_name.as_deref(),
        Some("MARIE DURAND"),
        "usage name first"
    );
    assert_eq!(
        f.legal_form_label.as_deref(),
        Some("EI (entrepreneur individuel)")
    );
    body["etablissement"]["uniteLegale"]["nomUsageUniteLegale"] = serde_json::Value::Null;
    stub.insee_body(GANYMEDE, body);
    let f = insee(&base, INSEE_KEY)
        .lookup(&siret(GANYMEDE))
        .await
        .expect("found");
    assert_eq!(
        f.legal_name.as_deref(),
        Some("MARIE MARTIN"),
        "birth name otherwise"
    );
}

#[tokio::test]
async fn insee_partially_diffusible_fields_are_marked_not_disclosed() {
    let (stub, base) = stub().await;
    let mut body = insee_fixture();
    let e = &mut body["etablissement"];
    e["adresseEtablissement"]["numeroVoieEtablissement"] = "[ND]".into();
    e["adresseEtablissement"]["libelleVoieEtablissement"] = "[ND]".into();
    e["adresseEtablissement"]["typeVoieEtablissement"] = "[ND]".into();
    e["uniteLegale"]["statutDiffusionUniteLegale"] = "P".into();
    stub.insee_body(GANYMEDE, body);
    let f = insee(&base, INSEE_KEY)
        .lookup(&siret(GANYMEDE))
        .await
        .expect("found");
    assert_eq!(f.address.number, None);
    assert_eq!(f.address.street_name, None);
    assert_eq!(
        f.address.city.as_deref(),
        Some("PARIS 8"),
        "public fields kept"
    );
    assert_eq!(
        f.undisclosed,
        vec![
            "address.number",
            "address.street_type",
            "address.street_name"
        ]
    );
}

#[tokio::test]
async fn insee_etablissements_array_variant_is_read() {
    let (stub, base) = stub().await;
    let fixture = insee_fixture();
    let body = serde_json::json!({
        "header": fixture["header"],
        "etablissements": [fixture["etablissement"]],
    });
    stub.insee_body(GANYMEDE, body);
    let f = insee(&base, INSEE_KEY)
        .lookup(&siret(GANYMEDE))
        .await
        .expect("found");
    assert_eq!(f.legal_name.as_deref(), Some("GANYMEDE"));
}

#[tokio::test]
async fn every_error_class() {
    let (stub, base) = stub().await;
    let s = siret(GANYMEDE);
    // Not found: INSEE 404, recherche-entreprises 200 with no results.
    let e = insee(&base, INSEE_KEY)
        .lookup(&siret(UNKNOWN))
        .await
        .expect_err("404");
    assert_eq!(
        e,
        LookupError::NotFound {
            provider: "insee".into(),
            siret: UNKNOWN.into()
        }
    );
    let e = recherche(&base)
        .lookup(&siret(UNKNOWN))
        .await
        .expect_err("empty");
    assert!(matches!(e, LookupError::NotFound { .. }), "{e:?}");
    // 401: a wrong key; 403: insufficient rights. Permanent, with the fix.
    let e = insee(&base, "wrong-key").lookup(&s).await.expect_err("401");
    assert!(
        matches!(&e, LookupError::Refused { status: 401, hint, .. } if hint.contains("API key")),
        "{e:?}"
    );
    stub.script("insee", Scripted::status(403));
    let e = insee(&base, INSEE_KEY).lookup(&s).await.expect_err("403");
    assert!(
        matches!(e, LookupError::Refused { status: 403, .. }),
        "{e:?}"
    );
    // 429 with Retry-After.
    stub.script("insee", Scripted::too_many(7));
    let e = insee(&base, INSEE_KEY).lookup(&s).await.expect_err("429");
    assert_eq!(
        e,
        LookupError::RateLimited {
            provider: "insee".into(),
            retry_after: Duration::from_secs(7)
        }
    );
    // 5xx, timeout, truncated JSON: transient.
    for (api, answer) in [
        ("insee", Scripted::status(503)),
        ("insee", Scripted::slow(Duration::from_secs(2))),
        ("search", Scripted::truncated()),
        ("search", Scripted::status(500)),
    ] {
        stub.script(api, answer.clone());
        let e = if api == "insee" {
            insee(&base, INSEE_KEY).lookup(&s).await
        } else {
            recherche(&base).lookup(&s).await
        }
        .expect_err("transient");
        assert!(e.is_transient(), "{answer:?} gave {e:?}");
    }
}

/// A registry answering with a redirect: not followed, so the INSEE key
/// never reaches the address it names; the error is final and says where
/// it pointed (without its query).
#[tokio::test]
async fn a_registry_redirect_is_not_followed() {
    let (elsewhere, other) = stub().await;
    let (stub, base) = stub().await;
    let s = siret(GANYMEDE);
    for status in [301, 302, 303, 307, 308] {
        stub.script(
            "insee",
            Scripted::redirect(status, &format!("{other}/siret/{GANYMEDE}?token=abc")),
        );
        stub.script(
            "search",
            Scripted::redirect(status, &format!("{other}/search?token=abc")),
        );
        for e in [
            insee(&base, INSEE_KEY).lookup(&s).await.expect_err("insee"),
            recherche(&base).lookup(&s).await.expect_err("search"),
        ] {
            assert!(
                matches!(&e, LookupError::Refused { status: got, hint, .. }
                    if *got == status
                        && hint.contains(&format!("redirect to {other}/"))
                        && hint.contains("not followed")
                        && !hint.contains("token=abc")),
                "{status}: {e:?}"
            );
        }
    }
    assert!(
        elsewhere.requests("insee").is_empty() && elsewhere.requests("search").is_empty(),
        "nothing reached the redirect's target"
    );
}

/// The outbound policy in the providers: plain http, and names resolving
/// to a non-public address, refused before anything is sent, for good.
#[tokio::test]
async fn a_registry_on_a_private_address_is_refused() {
    let (stub, base) = stub().await;
    let port = base.rsplit(':').next().expect("port");
    let strict = || {
        dossier_core::outbound::Outbound::new(
            dossier_core::outbound::Policy::default(),
            Duration::from_millis(500),
            "dossier-tests",
        )
        .expect("client")
    };
    let s = siret(GANYMEDE);
    for (url, want) in [
        (base.clone(), "plain http is refused"),
        // Through the resolver: the name's addresses are checked.
        (format!("https://localhost:{port}"), "is a loopback address"),
        (format!("https://127.0.0.1:{port}"), "is a loopback address"),
    ] {
        let e = Insee::new(settings(&url), INSEE_KEY.into(), strict())
            .lookup(&s)
            .await
            .expect_err("refused");
        assert!(
            matches!(&e, LookupError::Refused { status: 0, hint, .. }
                if hint.contains(want) && hint.contains("outbound.")),
            "{url}: {e:?}"
        );
        assert!(!e.is_transient());
    }
    assert!(stub.requests("insee").is_empty(), "nothing was sent");
}

/// An answer far larger than any registry's is not read to its end.
#[tokio::test]
async fn an_oversized_registry_answer_is_cut_and_retried() {
    let (stub, base) = stub().await;
    stub.script(
        "search",
        Scripted {
            body: format!("{{\"results\": \"{}\"}}", "x".repeat(3 << 20)),
            ..Scripted::status(200)
        },
    );
    let e = recherche(&base)
        .lookup(&siret(GANYMEDE))
        .await
        .expect_err("too large");
    assert!(
        matches!(&e, LookupError::Transient { message, .. } if message.contains("larger than 1048576 bytes")),
        "{e:?}"
    );
}

fn sirene(providers: Vec<Arc<dyn Provider>>) -> Sirene {
    Sirene::new(providers, Quota::local(), Duration::from_secs(2))
}

#[tokio::test]
async fn falls_back_to_the_next_provider() {
    let (stub, base) = stub().await;
    let both = || -> Vec<Arc<dyn Provider>> {
        vec![
            Arc::new(insee(&base, INSEE_KEY)),
            Arc::new(recherche(&base)),
        ]
    };
    stub.script("insee", Scripted::status(502));
    let f = sirene(both())
        .lookup(&siret(GANYMEDE))
        .await
        .expect("second provider answers");
    assert_eq!(f.provider, "recherche-entreprises");
    stub.script("insee", Scripted::too_many(30));
    let f = sirene(both())
        .lookup(&siret(GANYMEDE))
        .await
        .expect("over quota: next");
    assert_eq!(f.provider, "recherche-entreprises");
    // Unknown everywhere: permanent, naming the SIRET and both providers.
    match sirene(both()).lookup(&siret(UNKNOWN)).await {
        Err(SireneError::NotFound(m)) => {
            assert!(
                m.contains(UNKNOWN) && m.contains("insee") && m.contains("recherche-entreprises"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Everyone down or over quota: transient, at the Retry-After.
    stub.script("insee", Scripted::too_many(4));
    stub.script("search", Scripted::too_many(9));
    match sirene(both()).lookup(&siret(GANYMEDE)).await {
        Err(SireneError::Transient { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(4)))
        }
        other => panic!("{other:?}"),
    }
}

/// No sliding window of `window` holds more than `limit` of `times`.
fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    (0..sorted.len())
        .map(|i| {
            sorted[i..]
                .iter()
                .take_while(|t| **t - sorted[i] < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Where the shared quota of the tests below is counted.
#[derive(Clone, Copy, Debug)]
enum Store {
    Redis,
    Postgres,
    Sqlite,
}

/// Three "processes" (separate clients, pools and connections) share one
/// quota counted in `store`: 30 requests/s, 90 lookups → never more than 30
/// in a second, and done close to the ideal 2 s (the first 30 go at once).
/// A database for `store` (a fresh PostgreSQL one, or a SQLite file in
/// `dir`), migrated: its URL and the PostgreSQL database's name to drop.
async fn quota_database(store: Store, dir: &std::path::Path) -> (String, Option<String>) {
    match store {
        Store::Postgres => {
            let (url, name) = dossier_e2e::create_postgres_database().await;
            (url, Some(name))
        }
        Store::Sqlite => {
            let url = format!("sqlite://{}", dir.join("dossier.db").display());
            Database::connect(&url, 1)
                .await
                .expect("sqlite")
                .migrate()
                .await
                .expect("migrates");
            (url, None)
        }
        Store::Redis => (String::new(), None),
    }
}

/// One "process"'s view of the quota counted in `store`.
async fn quota_store(store: Store, db_url: &str, prefix: &str) -> Arc<dyn QuotaStore> {
    match store {
        Store::Redis => Arc::new(
            RedisQuota::connect(&dossier_e2e::redis_url(), prefix)
                .await
                .expect("redis"),
        ),
        Store::Postgres | Store::Sqlite => Arc::new(DatabaseQuota::new(
            Database::connect(db_url, 2).await.expect("database"),
        )),
    }
}

async fn quota_is_shared(store: Store) {
    let (stub, base) = stub().await;
    let dir = tempfile::tempdir().expect("dir");
    let (db_url, pg_name) = quota_database(store, dir.path()).await;
    let prefix = format!("quota-test-{}", uuid::Uuid::now_v7().simple());
    let mut provider_settings = settings(&base);
    provider_settings.quota_requests = 30;
    provider_settings.quota_window_ms = 1_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = quota_store(store, &db_url, &prefix).await;
        let provider: Arc<dyn Provider> = Arc::new(RechercheEntreprises::new(
            provider_settings.clone(),
            dossier_e2e::loopback_outbound(provider_settings.timeout_ms),
        ));
        let client = Sirene::new(vec![provider], Quota::new(store), Duration::from_secs(10));
        tasks.push(tokio::spawn(async move {
            for _ in 0..30 {
                client.lookup(&siret(GANYMEDE)).await.expect("found");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = started.elapsed();
    let times = stub.requests("search");
    assert_eq!(times.len(), 90, "{store:?}");
    let peak = max_in_window(&times, Duration::from_millis(1_000));
    assert!(peak <= 30, "{store:?}: {peak} requests in one second");
    // Ideal: 30 at t=0, 30 at 1 s, 30 at 2 s → 2 s. The upper bound says
    // the processes did not fall back to sending one at a time (which
    // would be correct but useless); generous, for a loaded machine.
    assert!(
        elapsed >= Duration::from_millis(1_900),
        "{store:?}: {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_millis(6_000),
        "{store:?}: {elapsed:?}"
    );
    if let Some(name) = pg_name {
        dossier_e2e::drop_postgres_database(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_shared_through_redis() {
    quota_is_shared(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_shared_through_postgres() {
    quota_is_shared(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_shared_through_a_sqlite_file() {
    quota_is_shared(Store::Sqlite).await;
}

/// A slot counts from its request's answer: a request taken at 0 and
/// answered at 300 ms keeps the next (limit 1, window 500 ms) until 800 ms,
/// seen by another "process". On each store.
async fn a_slot_counts_a_window_from_its_answer(store: Store) {
    let dir = tempfile::tempdir().expect("dir");
    let (db_url, pg_name) = quota_database(store, dir.path()).await;
    let prefix = format!("quota-test-{}", uuid::Uuid::now_v7().simple());
    let (one, other) = (
        quota_store(store, &db_url, &prefix).await,
        quota_store(store, &db_url, &prefix).await,
    );
    let window = Duration::from_millis(500);
    let ask = |waiter| Ask {
        waiter,
        priority: Priority::Bulk,
    };
    let taken = one.try_take("p", 1, window, ask("a")).await.expect("take");
    assert_eq!(taken, None, "{store:?}: the first slot is free");
    tokio::time::sleep(Duration::from_millis(300)).await;
    one.answered("p", "a", window).await.expect("answered");
    let wait = other
        .try_take("p", 1, window, ask("b"))
        .await
        .expect("take")
        .expect("still full");
    assert!(
        wait > Duration::from_millis(400),
        "{store:?}: a window from the answer (500 ms), not from the take (200 ms): {wait:?}"
    );
    tokio::time::sleep(wait).await;
    assert_eq!(
        other
            .try_take("p", 1, window, ask("b"))
            .await
            .expect("take"),
        None,
        "{store:?}: free a window after the answer"
    );
    if let Some(name) = pg_name {
        dossier_e2e::drop_postgres_database(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_counts_a_window_from_its_answer_in_redis() {
    a_slot_counts_a_window_from_its_answer(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_counts_a_window_from_its_answer_in_postgres() {
    a_slot_counts_a_window_from_its_answer(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_counts_a_window_from_its_answer_in_a_sqlite_file() {
    a_slot_counts_a_window_from_its_answer(Store::Sqlite).await;
}

#[tokio::test]
async fn quota_waits_do_not_fail_lookups() {
    let (stub, base) = stub().await;
    let mut s = settings(&base);
    s.quota_requests = 2;
    s.quota_window_ms = 300;
    let provider: Arc<dyn Provider> = Arc::new(RechercheEntreprises::new(
        s,
        dossier_e2e::loopback_outbound(500),
    ));
    let client = Sirene::new(vec![provider], Quota::local(), Duration::from_secs(1));
    for _ in 0..6 {
        client
            .lookup(&siret(GANYMEDE))
            .await
            .expect("waits, then succeeds");
    }
    let times = stub.requests("search");
    assert!(max_in_window(&times, Duration::from_millis(300)) <= 2);
}

fn extract(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/sirene-extract")
        .join(file)
}

#[tokio::test]
async fn sirene_file_indexes_the_extract_and_maps_like_insee() {
    use dossier_core::sirene::file::{SireneFile, build_index};
    let dir = tempfile::tempdir().expect("dir");
    let index = dir.path().join("index/sirene.db");
    let report = build_index(
        &extract("StockUniteLegale.csv"),
        &extract("StockEtablissement.csv"),
        &index,
    )
    .await
    .expect("indexed");
    assert_eq!((report.units, report.establishments), (15, 16));
    let file = SireneFile::open(&index.display().to_string())
        .await
        .expect("opens");
    let f = file.lookup(&siret(GANYMEDE)).await.expect("found");
    assert_eq!(f.provider, "sirene-file");
    assert_eq!(f.legal_name.as_deref(), Some("GANYMEDE"));
    assert_eq!(f.legal_form_label.as_deref(), Some("SAS"));
    assert_eq!(f.establishment_state, Some(State::Closed));
    assert_eq!(f.head_office, Some(true));
    assert_eq!(f.address.street_name.as_deref(), Some("LA BOETIE"));
    // The partially diffusible sole trader (4th row).
    let nd = file.lookup(&siret("13186091800013")).await.expect("found");
    assert_eq!(nd.legal_name.as_deref(), Some("SOPHIE LEFEBVRE"));
    assert_eq!(
        nd.undisclosed,
        vec![
            "address.number",
            "address.street_type",
            "address.street_name"
        ]
    );
    assert_eq!(nd.address.city.as_deref(), Some("NANTES"));
    // A second establishment is not the head office.
    let branch = file.lookup(&siret("90830166600024")).await.expect("found");
    assert_eq!(branch.head_office, Some(false));
    let e = file.lookup(&siret(UNKNOWN)).await.expect_err("absent");
    assert!(matches!(e, LookupError::NotFound { .. }));
}

#[tokio::test]
async fn sirene_file_reports_bad_rows_and_keeps_the_previous_index() {
    use dossier_core::sirene::file::build_index;
    let dir = tempfile::tempdir().expect("dir");
    let index = dir.path().join("sirene.db");
    build_index(
        &extract("StockUniteLegale.csv"),
        &extract("StockEtablissement.csv"),
        &index,
    )
    .await
    .expect("first index");
    let bad = dir.path().join("StockEtablissement.csv");
    std::fs::write(
        &bad,
        "siren,nic,siret\n880878145,00015,88087814500015\n880878145,00015\n",
    )
    .expect("write");
    let err = build_index(&extract("StockUniteLegale.csv"), &bad, &index)
        .await
        .expect_err("ragged row refused")
        .to_string();
    assert!(
        err.contains("StockEtablissement.csv") && err.contains("line: 3"),
        "{err}"
    );
    assert!(index.exists(), "the previous index is kept");
}
