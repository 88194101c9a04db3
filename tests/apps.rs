//! Partner apps end to end: activations, the signed provisioning and
//! de-provisioning calls against a real HTTP server standing in for the
//! partner, every error class, sealed secrets, settings validation.

use std::sync::Arc;
use std::time::Duration;

use dossier_core::apps::{self, signature};
use dossier_core::clients::{self, Fields, NewClient};
use dossier_core::config::Settings;
use dossier_core::db::Database;
use dossier_core::job::{JobRecord, JobStatus};
use dossier_core::jobs::{JobDeps, Mailer, Partners, app_setup, app_teardown};
use dossier_core::runtime::Registry;
use dossier_core::secrets::KeyRing;
use dossier_core::sirene::{Quota, Sirene};
use dossier_e2e::partner_stub::{PartnerStub, Scripted};
use dossier_e2e::{BackendKind, TestQueue};

const LONG: Duration = Duration::from_secs(30);
const SHARED: &str = "partner-shared-secret-0001";
const API_KEY: &str = "cle-api-tres-secrete-7788";
const APP: &str = "collecte_factures";

fn catalogue(base: &str) -> String {
    format!(
        r#"
[[apps]]
id = "banque_en_ligne"
name = "Banque en ligne"
kind = "redirection"
url = "https://banque.example/connexion"

[[apps]]
id = "{APP}"
name = "Collecte des factures"
kind = "automation"
provisioning_url = "{base}/provision"
deprovisioning_url = "{base}/deprovision"
settings = [
  {{ name = "api_key", type = "string", required = true, secret = true }},
  {{ name = "target_directory", type = "directory", required = true }},
  {{ name = "collection_email", type = "email" }},
  {{ name = "history_days", type = "integer" }},
]
"#
    )
}

fn settings_with_keys(mut s: Settings) -> Settings {
    s.apps.encryption_keys =
        vec![serde_json::from_str(&format!("\"k1:{}\"", "ab".repeat(32))).expect("key")];
    s.apps.signing_keys.insert(
        APP.into(),
        serde_json::from_str(&format!("\"{SHARED}\"")).expect("key"),
    );
    s.apps.timeout_ms = 500;
    s
}

struct Setup {
    q: TestQueue,
    db: Database,
    stub: PartnerStub,
    client: String,
    keys: KeyRing,
}

impl Setup {
    async fn new(kind: BackendKind) -> Setup {
        let settings = settings_with_keys(dossier_e2e::fast_settings());
        let mut q = TestQueue::with_settings(kind, settings).await;
        let db = q.business_db().await;
        dossier_e2e::add_firm(&db, "cabinet-1").await;
        let stub = PartnerStub::default();
        let base = stub.start().await;
        let list = apps::parse_catalogue("test.toml", &catalogue(&base)).expect("catalogue");
        apps::load_catalogue(&db, "cabinet-1", &list)
            .await
            .expect("load");
        let client = clients::create(
            &db,
            NewClient {
                firm_id: "cabinet-1".into(),
                siret: Some("88087814500015".into()),
                entered: Fields::from([
                    ("legal_name".to_string(), "Ganymède Conseil".to_string()),
                    ("address.city".to_string(), "Paris".to_string()),
                ]),
            },
        )
        .await
        .expect("client")
        .id;
        let keys = KeyRing::new(&q.settings.apps.encryption_keys).expect("keys");
        Setup {
            q,
            db,
            stub,
            client,
            keys,
        }
    }

    fn registry(&self) -> Registry {
        self.registry_with(&self.q.settings)
    }

    /// The jobs, with the partner calls made under `settings`.
    fn registry_with(&self, settings: &Settings) -> Registry {
        let deps = Arc::new(JobDeps {
            db: self.db.clone(),
            sirene: Sirene::new(vec![], Quota::local(), Duration::from_secs(1)),
            mail: Mailer::from_settings(&self.q.settings).expect("mail"),
            queue: self.q.backend.clone(),
            queue_settings: self.q.settings.queue.clone(),
            imports: Default::default(),
            partners: Partners::from_settings(settings).expect("partners"),
            webhooks: dossier_core::jobs::webhook_delivery::Webhooks::from_settings(
                &dossier_core::config::Settings::default(),
            )
            .expect("webhooks settings"),
        });
        let mut r = Registry::new();
        app_setup::register(&mut r, deps.clone());
        app_teardown::register(&mut r, deps);
        r
    }

    async fn enable(&self, app: &str, given: &[(&str, &str)], pin: bool) -> String {
        let definition = apps::app(&self.db, "cabinet-1", app).await.expect("app");
        let pairs: Vec<(String, String)> = given
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dirs: Vec<String> =
            dossier_core::tree::folders::client_template(&self.db, &self.client)
                .await
                .expect("tree")
                .folders()
                .into_iter()
                .map(|f| f.path)
                .collect();
        let sealed = apps::validate_settings(&definition, &self.client, &pairs, &dirs, &self.keys)
            .expect("valid settings");
        let a = apps::enable(&self.db, &self.client, &definition, &sealed, pin)
            .await
            .expect("enable");
        self.q
            .push(app_setup::job_for(app_setup::KIND, &a, 6))
            .await
    }

    async fn wait(&self, id: &str, status: JobStatus) -> JobRecord {
        self.q.wait_for(id, LONG, |j| j.status == status).await
    }

    async fn activation(&self, app: &str) -> apps::ClientApp {
        apps::client_app(&self.db, &self.client, app)
            .await
            .expect("get")
            .expect("exists")
    }

    async fn cleanup(self) {
        self.q.cleanup_with(self.db).await;
    }
}

const GOOD: &[(&str, &str)] = &[
    ("api_key", API_KEY),
    ("target_directory", "Comptabilité/Achats"),
    ("collection_email", "factures@ganymede.fr"),
    ("history_days", "90"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirection_app_records_access_without_network() {
    let s = Setup::new(BackendKind::Sqlite).await;
    let id = s.enable("banque_en_ligne", &[], true).await;
    let w = s.q.start_worker(s.registry());
    let done = s.wait(&id, JobStatus::Done).await;
    w.stop().await;
    assert_eq!(done.result.expect("result")["on_director_portal"], true);
    let a = s.activation("banque_en_ligne").await;
    assert_eq!((a.status.as_str(), a.on_director_portal), ("active", true));
    assert!(s.stub.received().is_empty(), "no partner call");
    s.cleanup().await;
}

/// 503, a timeout, a malformed answer, a 429: all retried with the same
/// Idempotency-Key, every request signed as documented; then provisioned.
async fn provisioning_is_signed_idempotent_and_retried(kind: BackendKind) {
    let s = Setup::new(kind).await;
    s.stub.script([
        Scripted::status(503),
        Scripted::slow(Duration::from_millis(1_500)),
        Scripted {
            body: "<html>oops</html>".into(),
            ..Scripted::status(200)
        },
        Scripted::too_many(1),
    ]);
    let id = s.enable(APP, GOOD, false).await;
    let w = s.q.start_worker(s.registry());
    let done = s.wait(&id, JobStatus::Done).await;
    w.stop().await;
    assert_eq!(done.attempts, 5);
    assert_eq!(done.result.expect("result")["external_id"], "ext-42");
    let calls = s.stub.received();
    assert_eq!(calls.len(), 5);
    let key = calls[0].idempotency_key.clone().expect("idempotency key");
    for c in &calls {
        assert_eq!(c.path, "/provision");
        assert_eq!(
            c.idempotency_key.as_deref(),
            Some(key.as_str()),
            "stable across retries"
        );
        let ts = c.timestamp.expect("timestamp");
        assert!((ts - chrono::Utc::now().timestamp()).abs() < 120);
        assert!(
            signature::verify(
                SHARED.as_bytes(),
                ts,
                &c.body,
                c.signature.as_deref().unwrap_or("")
            ),
            "signature verifies"
        );
        assert!(!signature::verify(
            b"another-key",
            ts,
            &c.body,
            c.signature.as_deref().unwrap_or("")
        ));
    }
    let body = calls[4].json();
    assert_eq!(body["client"]["siret"], "88087814500015");
    assert_eq!(body["client"]["legal_name"], "Ganymède Conseil");
    assert_eq!(
        body["settings"]["api_key"], API_KEY,
        "the partner gets the key"
    );
    assert_eq!(body["settings"]["target_directory"], "Comptabilité/Achats");
    assert_eq!(body["settings"]["history_days"], 90);
    let a = s.activation(APP).await;
    assert_eq!(a.status, "active");
    assert_eq!(a.external_id.as_deref(), Some("ext-42"));
    assert_eq!(a.partner_status.as_deref(), Some("provisioned"));
    // Sealed at rest; redacted when shown.
    let stored = a.settings["api_key"].as_str().expect("sealed");
    assert!(stored.starts_with("v1:k1:") && !stored.contains(API_KEY));
    assert_eq!(a.redacted_settings()["api_key"], "***");

    // Disable: the matching de-provisioning call, retried once, same key.
    s.stub.script([Scripted::status(502)]);
    let off = apps::disable(&s.db, &s.client, APP).await.expect("disable");
    assert_eq!(off.status, "disabling");
    let id =
        s.q.push(app_setup::job_for(app_teardown::KIND, &off, 6))
            .await;
    let w = s.q.start_worker(s.registry());
    s.wait(&id, JobStatus::Done).await;
    w.stop().await;
    let calls: Vec<_> = s
        .stub
        .received()
        .into_iter()
        .filter(|c| c.path == "/deprovision")
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
    assert_ne!(calls[0].idempotency_key.as_deref(), Some(key.as_str()));
    assert_eq!(calls[1].json()["external_id"], "ext-42");
    assert_eq!(s.activation(APP).await.status, "disabled");
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_is_signed_idempotent_and_retried_on_sqlite() {
    provisioning_is_signed_idempotent_and_retried(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_is_signed_idempotent_and_retried_on_postgres_with_the_redis_queue() {
    provisioning_is_signed_idempotent_and_retried(BackendKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_refusal_is_permanent_with_its_message() {
    let s = Setup::new(BackendKind::Sqlite).await;
    s.stub.script([Scripted {
        body: r#"{"message": "SIRET inconnu chez le partenaire"}"#.into(),
        ..Scripted::status(422)
    }]);
    let id = s.enable(APP, GOOD, false).await;
    let w = s.q.start_worker(s.registry());
    let dead = s.wait(&id, JobStatus::Dead).await;
    w.stop().await;
    assert_eq!(dead.attempts, 1);
    let reason = dead.last_error.expect("reason");
    assert!(
        reason.contains("422") && reason.contains("SIRET inconnu chez le partenaire"),
        "{reason}"
    );
    let a = s.activation(APP).await;
    assert_eq!(a.status, "failed");
    assert!(a.last_error.expect("shown").contains("SIRET inconnu"));
    s.cleanup().await;
}

/// A partner answering with a redirect: not followed, so neither the
/// signed body (with the decrypted key) nor the signature reaches the
/// address it names; the job fails for good and says where it pointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_redirect_is_not_followed_with_the_signed_body() {
    let s = Setup::new(BackendKind::Sqlite).await;
    let elsewhere = PartnerStub::default();
    let other = elsewhere.start().await;
    s.stub
        .script([Scripted::redirect(307, &format!("{other}/provision"))]);
    let id = s.enable(APP, GOOD, false).await;
    let w = s.q.start_worker(s.registry());
    let dead = s.wait(&id, JobStatus::Dead).await;
    w.stop().await;
    assert_eq!(dead.attempts, 1, "final: {dead:?}");
    let reason = dead.last_error.expect("reason");
    assert!(
        reason.contains(&format!(
            "307 Temporary Redirect with a redirect to {other}/provision"
        )) && reason.contains("not followed"),
        "{reason}"
    );
    assert_eq!(s.stub.received().len(), 1);
    assert!(elsewhere.received().is_empty(), "the redirect was followed");
    let a = s.activation(APP).await;
    assert_eq!(a.status, "failed");
    s.cleanup().await;
}

/// Under the default policy (https to public addresses only), a partner
/// on loopback is refused before anything is sent — its name resolving to
/// 127.0.0.1 as much as the address itself — and the job says how to allow
/// it when it is meant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_on_a_private_address_is_refused_before_anything_is_sent() {
    let s = Setup::new(BackendKind::Sqlite).await;
    let port = s
        .stub
        .start()
        .await
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    let mut strict = s.q.settings.clone();
    strict.outbound = Default::default();
    // A name is only known to be private once resolved: refused at the
    // call (the resolver checks what is connected to), not at load.
    for (base, want, at_load) in [
        (
            format!("http://127.0.0.1:{port}"),
            "plain http is refused",
            true,
        ),
        (
            format!("https://localhost:{port}"),
            "is a loopback address",
            false,
        ),
        (
            format!("https://[::ffff:127.0.0.1]:{port}"),
            "127.0.0.1 is a loopback address",
            true,
        ),
    ] {
        let list = apps::parse_catalogue("test.toml", &catalogue(&base)).expect("catalogue");
        let checked = apps::check_destinations("test.toml", &list, &strict.outbound);
        assert_eq!(checked.is_err(), at_load, "{base}: {checked:?}");
        if let Err(refused) = checked {
            assert!(refused.to_string().contains(want), "{refused}");
        }
        // Loaded anyway (an older catalogue): the call is refused too.
        apps::load_catalogue(&s.db, "cabinet-1", &list)
            .await
            .expect("load");
        let id = s.enable(APP, GOOD, false).await;
        let w = s.q.start_worker(s.registry_with(&strict));
        let dead = s.wait(&id, JobStatus::Dead).await;
        w.stop().await;
        assert_eq!(dead.attempts, 1, "final: {dead:?}");
        let reason = dead.last_error.expect("reason");
        assert!(
            reason.contains("partner call refused")
                && reason.contains(want)
                && reason.contains("outbound."),
            "{base}: {reason}"
        );
        apps::disable(&s.db, &s.client, APP).await.ok();
    }
    assert!(s.stub.received().is_empty(), "nothing was sent");
    s.cleanup().await;
}

/// A partner whose answer never ends: the worker reads 64 KiB of it and
/// stops — not buffering until the call's timeout — and retries; the
/// error kept is a short excerpt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_answer_that_never_ends_is_read_up_to_its_bound() {
    let s = Setup::new(BackendKind::Sqlite).await;
    s.stub.script([Scripted {
        body: "x".repeat(8 * 1024),
        endless: true,
        ..Scripted::status(200)
    }]);
    let id = s.enable(APP, GOOD, false).await;
    let w = s.q.start_worker(s.registry());
    let done = s.wait(&id, JobStatus::Done).await;
    w.stop().await;
    assert_eq!(done.attempts, 2, "{done:?}");
    let first = &done.errors[0].message;
    assert!(
        first.contains("without a JSON") && !first.contains("timed out"),
        "{first}"
    );
    assert!(first.len() < 400, "{first}");
    s.cleanup().await;
}

/// A partner that echoes the key it was sent, and an address, in its
/// refusal: neither reaches the job's error nor the activation's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_echoing_our_secret_does_not_make_it_readable() {
    let s = Setup::new(BackendKind::Sqlite).await;
    s.stub.script([Scripted {
        body: format!(
            r#"{{"message": "invalid api_key {API_KEY} (owner compta@cabinet.example)"}}"#
        ),
        ..Scripted::status(401)
    }]);
    let id = s.enable(APP, GOOD, false).await;
    let w = s.q.start_worker(s.registry());
    let dead = s.wait(&id, JobStatus::Dead).await;
    w.stop().await;
    let reason = dead.last_error.expect("reason");
    assert!(reason.contains("invalid api_key ***"), "{reason}");
    assert!(
        !reason.contains(API_KEY) && !reason.contains("compta@"),
        "{reason}"
    );
    let shown = s.activation(APP).await.last_error.expect("shown");
    assert!(
        !shown.contains(API_KEY) && !shown.contains("compta@"),
        "{shown}"
    );
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_checked_against_the_schema_and_nothing_is_saved() {
    let s = Setup::new(BackendKind::Sqlite).await;
    let definition = apps::app(&s.db, "cabinet-1", APP).await.expect("app");
    let dirs = vec![
        "Comptabilité".to_string(),
        "Comptabilité/Achats".to_string(),
    ];
    let given: Vec<(String, String)> = [
        ("target_directory", "Compta/Inexistant"),
        ("history_days", "quatre-vingt-dix"),
        ("collection_email", "pas-une-adresse"),
        ("colour", "blue"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let err = apps::validate_settings(&definition, &s.client, &given, &dirs, &s.keys)
        .expect_err("refused")
        .to_string();
    for want in [
        "setting target_directory=Compta/Inexistant is not a directory of the client's tree",
        "setting history_days=quatre-vingt-dix is not an integer",
        "setting collection_email=pas-une-adresse is not an email address",
        "unknown setting \"colour\" for collecte_factures",
        "missing required setting \"api_key\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // A secret with a bad value is never echoed.
    let err = apps::validate_settings(
        &definition,
        &s.client,
        &[("api_key".into(), " ".into())],
        &dirs,
        &s.keys,
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("setting api_key=*** is empty"), "{err}");
    assert!(
        apps::client_apps(&s.db, &s.client)
            .await
            .expect("list")
            .is_empty()
    );
    // Without an encryption key, secret settings cannot be stored.
    let none = KeyRing::new(&[]).expect("empty ring");
    let err = apps::validate_settings(
        &definition,
        &s.client,
        &[("api_key".into(), API_KEY.into())],
        &dirs,
        &none,
    )
    .expect_err("no key")
    .to_string();
    assert!(
        err.contains("DOSSIER__APPS__ENCRYPTION_KEYS") && !err.contains(API_KEY),
        "{err}"
    );
    s.cleanup().await;
}

#[test]
fn secrets_never_reach_the_logs() {
    let rt = dossier_e2e::current_thread_runtime();
    let ((), logs) = dossier_e2e::with_captured_logs(|| {
        rt.block_on(async {
            let s = Setup::new(BackendKind::Sqlite).await;
            s.stub.script([Scripted::status(500)]);
            let id = s.enable(APP, GOOD, false).await;
            let w = s.q.start_worker(s.registry());
            s.wait(&id, JobStatus::Done).await;
            w.stop().await;
            s.cleanup().await;
        })
    });
    assert!(logs.contains("app_setup"), "the worker logged:\n{logs}");
    assert!(!logs.contains(API_KEY), "the API key in the logs");
    assert!(!logs.contains(SHARED), "the signing key in the logs");
    assert!(
        !logs.contains("factures@ganymede.fr"),
        "an email in the logs"
    );
}

/// While a step's job is retrying, the client's onboarding steps say so,
/// with the last error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_steps_show_a_retrying_job() {
    let s = Setup::new(BackendKind::Sqlite).await;
    s.stub.script((0..20).map(|_| Scripted::status(503)));
    let id = s.enable(APP, GOOD, false).await;
    let w = s.q.start_worker(s.registry());
    s.q.wait_for(&id, LONG, |j| j.status == JobStatus::Retrying)
        .await;
    w.stop().await;
    let steps = dossier_core::onboarding::steps(&s.db, Some(s.q.backend.as_ref()), &s.client)
        .await
        .expect("steps");
    let app = steps
        .iter()
        .find(|st| st.step == format!("app {APP}"))
        .expect("app step");
    assert_eq!(app.state, "retrying", "{steps:?}");
    assert!(
        app.note.as_deref().unwrap_or("").contains("503"),
        "{steps:?}"
    );
    s.cleanup().await;
}
