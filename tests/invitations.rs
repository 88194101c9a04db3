//! Invitations end to end against a real SMTP server (aiosmtpd, capturing
//! what it accepts): the email's content and headers, exactly one message per
//! invitation whatever happens (job run twice, worker killed mid-send, SMTP
//! down for a while), permanent refusals, and no email or token in the logs.

use std::sync::Arc;
use std::time::Duration;

use dossier_core::clients::{self, Fields, NewClient};
use dossier_core::config::{MailTransportKind, Settings, SmtpSecurity};
use dossier_core::db::Database;
use dossier_core::invitations::{self, NewInvitation, Status};
use dossier_core::job::{JobRecord, JobStatus, NewJob};
use dossier_core::jobs::{JobDeps, Mailer, invitation};
use dossier_core::runtime::Registry;
use dossier_core::sirene::{Quota, Sirene};
use dossier_e2e::smtp::{SmtpCapture, decoded};
use dossier_e2e::{BackendKind, TestQueue};

/// Not a test: the entry point of child worker processes (see support).
#[test]
#[ignore = "entry point of child worker processes, run by the suites themselves"]
fn child_worker() {
    dossier_e2e::child_worker_main();
}

const LONG: Duration = Duration::from_secs(30);
const BASE_URL: &str = "https://app.cabinet-durand.fr";

fn mail_settings(settings: &mut Settings, smtp_port: u16) {
    let m = &mut settings.mail;
    m.transport = MailTransportKind::Smtp;
    m.smtp.host = "127.0.0.1".into();
    m.smtp.port = smtp_port;
    m.smtp.security = SmtpSecurity::None;
    m.smtp.timeout_ms = 2_000;
    m.from_name = "Cabinet Durand & Associés".into();
    m.from_address = "invitations@cabinet-durand.fr".into();
    m.contact_address = "accueil@cabinet-durand.fr".into();
    m.public_base_url = BASE_URL.into();
}

struct Setup {
    q: TestQueue,
    db: Database,
    smtp: SmtpCapture,
}

impl Setup {
    /// A queue of `kind`, its business database (PostgreSQL beside Redis),
    /// and an SMTP server, running unless `smtp_down`.
    async fn new(kind: BackendKind, smtp_down: bool) -> Setup {
        let dir = tempfile::tempdir().expect("dir");
        let smtp = if smtp_down {
            SmtpCapture::reserve(dir.path())
        } else {
            SmtpCapture::start(dir.path())
        };
        let mut settings = dossier_e2e::fast_settings();
        mail_settings(&mut settings, smtp.port);
        std::mem::forget(dir);
        let mut q = TestQueue::with_settings(kind, settings).await;
        let db = q.business_db().await;
        dossier_e2e::add_firm(&db, "cabinet-durand").await;
        Setup { q, db, smtp }
    }

    fn registry(&self) -> Registry {
        let deps = Arc::new(JobDeps {
            db: self.db.clone(),
            sirene: Sirene::new(vec![], Quota::local(), Duration::from_secs(1)),
            mail: Mailer::from_settings(&self.q.settings).expect("mail settings"),
            queue: self.q.backend.clone(),
            queue_settings: self.q.settings.queue.clone(),
            imports: Default::default(),
            partners: dossier_core::jobs::Partners::from_settings(
                &dossier_core::config::Settings::default(),
            )
            .expect("default apps settings"),
        });
        let mut r = Registry::new();
        invitation::register(&mut r, deps.clone());
        dossier_core::jobs::invitation_housekeeping::register(&mut r, deps);
        r
    }

    async fn client(&self, name: &str) -> String {
        clients::create(
            &self.db,
            NewClient {
                firm_id: "cabinet-durand".into(),
                siret: None,
                entered: Fields::from([("legal_name".to_string(), name.to_string())]),
            },
        )
        .await
        .expect("client")
        .id
    }

    async fn invite(&self, client: &str, email: &str) -> invitations::Invitation {
        invitations::create(
            &self.db,
            NewInvitation {
                client_id: client.into(),
                email: email.into(),
                first_name: "Hélène".into(),
                last_name: "Lefèvre".into(),
                invited_by: None,
                themes: None,
            },
            true,
        )
        .await
        .expect("invitation")
    }

    async fn push(&self, inv: &invitations::Invitation) -> String {
        // No idempotency key: the tests push the same job twice on purpose.
        let mut job: NewJob = invitation::job_for(inv, 6);
        job.idempotency_key = None;
        self.q.push(job).await
    }

    async fn done(&self, id: &str) -> JobRecord {
        self.q
            .wait_for(id, LONG, |j| j.status == JobStatus::Done)
            .await
    }

    async fn cleanup(self) {
        self.q.cleanup_with(self.db).await;
    }
}

fn token_in(text: &str) -> String {
    let start = text
        .find(&format!("{BASE_URL}/invitations/"))
        .expect("the link is in the message")
        + BASE_URL.len()
        + "/invitations/".len();
    text[start..start + 64].to_string()
}

async fn stored_hash(db: &Database, id: &str) -> Option<String> {
    let sql = "SELECT token_hash FROM invitations WHERE id = $1";
    match db {
        Database::Sqlite(p) => sqlx::query_scalar(sql).bind(id).fetch_one(p).await,
        Database::Postgres(p) => sqlx::query_scalar(sql).bind(id).fetch_one(p).await,
    }
    .expect("hash")
}

async fn sends_one_well_formed_french_email(kind: BackendKind) {
    let s = Setup::new(kind, false).await;
    let client = s.client("Boulangerie Martin").await;
    let inv = s
        .invite(&client, "Helene.Lefevre@boulangerie-martin.fr")
        .await;
    assert_eq!(inv.status, Status::Queued);
    let first = s.push(&inv).await;
    let w = s.q.start_worker(s.registry());
    let result = s.done(&first).await.result.expect("result");
    assert_eq!(result["status"], "sent");
    // The same job again: nothing more goes out.
    let again = s.push(&inv).await;
    let skipped = s.done(&again).await.result.expect("result");
    assert_eq!(skipped["status"], "skipped", "{skipped}");

    let messages = s.smtp.messages();
    assert_eq!(messages.len(), 1, "exactly one message");
    let raw = &messages[0];
    let text = decoded(raw);
    for header in [
        "X-Envelope-To: Helene.Lefevre@boulangerie-martin.fr",
        "From: =?utf-8?b?",
        "<invitations@cabinet-durand.fr>",
        "Reply-To:",
        "Message-ID: <invitation.",
        "@cabinet-durand.fr>",
        "Date: ",
        "MIME-Version: 1.0",
        "Content-Type: multipart/alternative",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Type: text/html; charset=utf-8",
    ] {
        assert!(raw.contains(header), "missing {header:?} in:\n{raw}");
    }
    for line in [
        "Bonjour Hélène Lefèvre,",
        "Cabinet Durand & Associés vous invite à rejoindre l'espace de Boulangerie Martin",
        "Vous y trouverez : Dossier permanent, Comptabilité, Fiscal",
        "Ce lien est personnel et ne fonctionne qu'une fois. Il expire le ",
        "Une question ? Écrivez à accueil@cabinet-durand.fr.",
        "Cabinet Durand &amp; Associés",
        ">Créer mon accès</a>",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let token = token_in(&text);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    assert!(
        !text.contains("Travaux du cabinet"),
        "internal theme offered"
    );
    let sent = invitations::get(&s.db, &inv.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(sent.status, Status::Sent);
    let expires = sent.expires_at_ms.expect("expiry") - sent.sent_at_ms.expect("sent");
    assert!(
        (expires - 7 * 86_400_000).abs() < 60_000,
        "7 days: {expires}"
    );
    assert_eq!(
        stored_hash(&s.db, &inv.id).await,
        Some(dossier_core::digest::sha256_hex(token.as_bytes())),
        "only the token's SHA-256 is stored"
    );

    // Resend: a new token, the old one invalidated, one more message.
    let resent = invitations::resend(&s.db, &inv.id, 6)
        .await
        .expect("resend");
    assert_eq!(resent.generation, 1);
    assert_eq!(
        stored_hash(&s.db, &inv.id).await,
        None,
        "old link dead at once"
    );
    let j = s.push(&resent).await;
    s.done(&j).await;
    // A job of the old generation sends nothing.
    let stale = s.push(&inv).await;
    assert_eq!(s.done(&stale).await.result.expect("r")["status"], "skipped");
    w.stop().await;
    let messages = s.smtp.messages();
    assert_eq!(messages.len(), 2);
    let new_token = token_in(&decoded(&messages[1]));
    assert_ne!(new_token, token);
    assert_eq!(
        stored_hash(&s.db, &inv.id).await,
        Some(dossier_core::digest::sha256_hex(new_token.as_bytes()))
    );
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_one_well_formed_french_email_on_sqlite() {
    sends_one_well_formed_french_email(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_one_well_formed_french_email_on_postgres_with_the_redis_queue() {
    sends_one_well_formed_french_email(BackendKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_one_well_formed_french_email_on_postgres() {
    sends_one_well_formed_french_email(BackendKind::Postgres).await;
}

/// SMTP unreachable, then up: retried with backoff, delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_then_up_delivers_once() {
    let mut s = Setup::new(BackendKind::Sqlite, true).await;
    let client = s.client("Transports Rivière").await;
    let inv = s.invite(&client, "direction@transports-riviere.fr").await;
    let id = s.push(&inv).await;
    let w = s.q.start_worker(s.registry());
    s.q.wait_for(&id, LONG, |j| {
        j.attempts >= 2 && j.status != JobStatus::Running
    })
    .await;
    let pending = invitations::get(&s.db, &inv.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(pending.status, Status::Queued);
    assert!(
        pending.last_error.as_deref().unwrap_or("").contains("SMTP"),
        "{:?}",
        pending.last_error
    );
    s.smtp.up();
    let done = s.done(&id).await;
    w.stop().await;
    assert!(done.attempts >= 2);
    assert_eq!(s.smtp.messages().len(), 1);
    s.cleanup().await;
}

/// 550 on the recipient: dead at once, the reason on the job and on the
/// invitation (back to draft). 451 twice: retried, delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_and_temporary_ones() {
    let s = Setup::new(BackendKind::Sqlite, false).await;
    let client = s.client("SCI Les Tilleuls").await;
    let refused = s.invite(&client, "reject.gerant@sci-tilleuls.fr").await;
    let later = s.invite(&client, "tempfail.associe@sci-tilleuls.fr").await;
    let j1 = s.push(&refused).await;
    let j2 = s.push(&later).await;
    let w = s.q.start_worker(s.registry());
    let dead =
        s.q.wait_for(&j1, LONG, |j| j.status == JobStatus::Dead)
            .await;
    let done = s.done(&j2).await;
    w.stop().await;
    assert_eq!(dead.attempts, 1, "a 5xx is permanent");
    let reason = dead.last_error.expect("reason");
    assert!(
        reason.contains("550") && reason.contains("RCPT"),
        "{reason}"
    );
    // The server's reply names the mailbox; the stored error does not.
    assert!(!reason.contains('@'), "{reason}");
    let inv = invitations::get(&s.db, &refused.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(inv.status, Status::Draft);
    assert!(inv.last_error.expect("shown").contains("550"));
    assert_eq!(done.attempts, 3, "two 451s, then accepted");
    let messages = s.smtp.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].contains("X-Envelope-To: tempfail.associe@sci-tilleuls.fr"));
    s.cleanup().await;
}

/// A previous attempt handed the body over and lost the answer: the retry
/// does not send again; the invitation says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncertain_send_is_never_repeated() {
    let s = Setup::new(BackendKind::Sqlite, false).await;
    let client = s.client("Moreau Conseil").await;
    let inv = s.invite(&client, "k.moreau@moreau-conseil.fr").await;
    invitations::begin_send(&s.db, &inv.id, 0, "h", 0, "m@x")
        .await
        .expect("begin");
    invitations::mark_committing(&s.db, &inv.id, 0)
        .await
        .expect("committing");
    let id = s.push(&inv).await;
    let w = s.q.start_worker(s.registry());
    let result = s.done(&id).await.result.expect("result");
    w.stop().await;
    assert_eq!(result["status"], "assumed_sent");
    assert!(s.smtp.messages().is_empty(), "nothing sent twice");
    let after = invitations::get(&s.db, &inv.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.status, Status::Sent);
    assert!(after.last_error.expect("note").contains("answer was lost"));
    s.cleanup().await;
}

/// The worker process is killed while the SMTP server holds its RCPT reply:
/// the job is rescued and retried, and exactly one message arrives. The
/// killed worker's logs (debug level) hold no email and no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_send_then_retried_sends_once() {
    let s = Setup::new(BackendKind::Sqlite, false).await;
    let client = s.client("Ganymède Conseil").await;
    let email = "stallrcpt.jouppe@ganymede.fr";
    let inv = s.invite(&client, email).await;
    let id = s.push(&inv).await;
    let events = tempfile::tempdir().expect("dir");
    let log = events.path().join("child.log");
    let mut child =
        dossier_e2e::spawn_logged_child_worker(&s.q.child_env_enrich(events.path()), &log);
    // Wait until the child is inside the SMTP conversation.
    s.q.wait_for(&id, LONG, |j| j.status == JobStatus::Running)
        .await;
    loop {
        let i = invitations::get(&s.db, &inv.id)
            .await
            .expect("get")
            .expect("exists");
        if i.send_state.as_deref() == Some("sending") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let w = s.q.start_worker(s.registry());
    let done = s.done(&id).await;
    w.stop().await;
    assert_eq!(
        done.attempts, 2,
        "rescued after the lease ran out, then sent"
    );
    let messages = s.smtp.messages();
    assert_eq!(messages.len(), 1, "exactly one message");
    let token = token_in(&decoded(&messages[0]));
    let logs = std::fs::read_to_string(&log).expect("child log");
    assert!(
        logs.contains("invitation"),
        "the child logged its work:\n{logs}"
    );
    assert!(!logs.contains('@'), "an email address in the logs:\n{logs}");
    assert!(!logs.contains(&token[..16]), "a token in the logs");
    s.cleanup().await;
}

/// Everything the in-process worker logs while sending, at debug level.
#[test]
fn logs_hold_no_email_and_no_token() {
    let rt = dossier_e2e::current_thread_runtime();
    let (token, logs) = dossier_e2e::with_captured_logs(|| {
        rt.block_on(async {
            let s = Setup::new(BackendKind::Sqlite, false).await;
            let client = s.client("Boulangerie des Halles").await;
            let inv = s
                .invite(&client, "tempfail.anne@boulangerie-halles.fr")
                .await;
            let id = s.push(&inv).await;
            let w = s.q.start_worker(s.registry());
            s.done(&id).await;
            w.stop().await;
            let token = token_in(&decoded(&s.smtp.messages()[0]));
            s.cleanup().await;
            token
        })
    });
    assert!(logs.contains("invitation"), "the worker logged:\n{logs}");
    assert!(!logs.contains('@'), "an email address in the logs:\n{logs}");
    assert!(!logs.contains(&token[..16]), "a token in the logs:\n{logs}");
}

async fn exec(db: &Database, sql: &'static str, id: &str) {
    match db {
        Database::Sqlite(p) => sqlx::query(sql).bind(id).execute(p).await.map(|_| ()),
        Database::Postgres(p) => sqlx::query(sql).bind(id).execute(p).await.map(|_| ()),
    }
    .expect("update");
}

/// `POST /v1/invitations/accept`: bearer-authenticated; a token works once;
/// unknown, used, revoked, expired or malformed tokens all get the same
/// 404, no sooner than the refusal floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_hook_uses_each_token_once_and_refuses_alike() {
    let s = Setup::new(BackendKind::Sqlite, false).await;
    let client = s.client("Boulangerie Martin").await;
    let a = s.invite(&client, "paul@boulangerie-martin.fr").await;
    let b = s.invite(&client, "lea@boulangerie-martin.fr").await;
    let c = s.invite(&client, "marc@boulangerie-martin.fr").await;
    let w = s.q.start_worker(s.registry());
    for inv in [&a, &b, &c] {
        let id = s.push(inv).await;
        s.done(&id).await;
    }
    w.stop().await;
    let tokens: Vec<String> = s
        .smtp
        .messages()
        .iter()
        .map(|m| token_in(&decoded(m)))
        .collect();
    assert_eq!(tokens.len(), 3);
    let token_of = |email: &str| {
        let i = s
            .smtp
            .messages()
            .iter()
            .position(|m| m.contains(&format!("X-Envelope-To: {email}")))
            .expect("sent");
        tokens[i].clone()
    };
    let (ta, tb, tc) = (
        token_of("paul@boulangerie-martin.fr"),
        token_of("lea@boulangerie-martin.fr"),
        token_of("marc@boulangerie-martin.fr"),
    );
    invitations::revoke(&s.db, &b.id).await.expect("revoke");
    exec(
        &s.db,
        "UPDATE invitations SET expires_at = 1 WHERE id = $1",
        &c.id,
    )
    .await;

    let bearer = "hook-token-0123456789abcdef";
    let mut settings = dossier_e2e::with_token(s.q.settings.clone(), bearer);
    settings.http.max_body_bytes = 4096;
    settings.http.accept_failures_per_minute = 10;
    let (base, stop) = dossier_e2e::serve_api(&s.db, s.q.backend.clone(), &settings).await;
    let url = format!("{base}/v1/invitations/accept");
    let web = reqwest::Client::new();
    let post = |auth: Option<&str>, body: serde_json::Value| {
        let mut r = web.post(&url).json(&body);
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        async move {
            let started = std::time::Instant::now();
            let resp = r.send().await.expect("response");
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.expect("json");
            (status, body, started.elapsed())
        }
    };
    let (st, body, _) = post(None, serde_json::json!({ "token": ta })).await;
    assert_eq!((st, body["error"].as_str()), (401, Some("unauthorized")));
    let (st, _, _) = post(
        Some("wrong-token-0123456789"),
        serde_json::json!({ "token": ta }),
    )
    .await;
    assert_eq!(st, 401);

    // Someone guessing through the platform is throttled alone: the
    // platform names each end user, and another one's valid link works.
    let guess = |user: &'static str| {
        web.post(&url)
            .bearer_auth(bearer)
            .header("X-Dossier-End-User", user)
            .json(&serde_json::json!({ "token": dossier_core::digest::random_token() }))
            .send()
    };
    for i in 0..10 {
        let st = guess("user-mallory").await.expect("post").status();
        assert_eq!(st, 404, "guess {i}");
    }
    let st = guess("user-mallory").await.expect("post").status();
    assert_eq!(st, 429, "the guesser is throttled");
    let st = guess("someone-else").await.expect("post").status();
    assert_eq!(st, 404, "another end user's tokens are still checked");
    let resp = web
        .post(&url)
        .bearer_auth(bearer)
        .header("X-Dossier-End-User", "user-paul")
        .json(&serde_json::json!({ "token": ta }))
        .send()
        .await
        .expect("post");
    let st = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["invitation_id"], a.id.as_str());
    assert_eq!(body["client_id"], client.as_str());
    assert_eq!(body["role"], "director");
    assert_eq!(body["first_name"], "Hélène");
    assert_eq!(body["themes"].as_array().map(Vec::len), Some(6));
    let accepted = invitations::get(&s.db, &a.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(accepted.status, Status::Accepted);

    let unknown = dossier_core::digest::random_token();
    let mut refusals = Vec::new();
    for body in [
        serde_json::json!({ "token": ta }),
        serde_json::json!({ "token": unknown }),
        serde_json::json!({ "token": tb }),
        serde_json::json!({ "token": tc }),
        serde_json::json!({ "token": "short" }),
        serde_json::json!({ "nothing": true }),
    ] {
        refusals.push(post(Some(bearer), body).await);
    }
    let first = refusals[0].1.clone();
    for (st, body, took) in &refusals {
        assert_eq!(*st, 404);
        assert_eq!(body, &first, "the same answer whatever the reason");
        assert!(*took >= dossier_core::http::REFUSAL_FLOOR, "{took:?}");
    }
    stop.cancel();
    s.cleanup().await;
}

/// Housekeeping: one reminder with a fresh link after reminder_after_days,
/// never a second; invitations past expiry become expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reminder_and_expiry() {
    let s = Setup::new(BackendKind::Sqlite, false).await;
    let client = s.client("Transports Rivière").await;
    let late = s.invite(&client, "chef@transports-riviere.fr").await;
    let stale = s.invite(&client, "ancien@transports-riviere.fr").await;
    let w = s.q.start_worker(s.registry());
    for inv in [&late, &stale] {
        let id = s.push(inv).await;
        s.done(&id).await;
    }
    let four_days_ago = "UPDATE invitations SET sent_at = sent_at - 345600000 WHERE id = $1";
    exec(&s.db, four_days_ago, &late.id).await;
    exec(
        &s.db,
        "UPDATE invitations SET expires_at = 1, sent_at = sent_at - 1 WHERE id = $1",
        &stale.id,
    )
    .await;
    let housekeeping = || NewJob {
        kind: dossier_core::jobs::invitation_housekeeping::KIND.into(),
        payload: serde_json::json!({}),
        run_at_ms: None,
        max_attempts: 3,
        idempotency_key: None,
        trace_id: None,
        group: None,
        subject: None,
        bulk: false,
    };
    let h1 = s.q.push(housekeeping()).await;
    let r1 = s.done(&h1).await.result.expect("result");
    assert_eq!(
        (r1["expired"].as_u64(), r1["reminders"].as_u64()),
        (Some(1), Some(1)),
        "{r1}"
    );
    // The reminder's job runs; then housekeeping again: no second reminder.
    loop {
        let i = invitations::get(&s.db, &late.id)
            .await
            .expect("get")
            .expect("exists");
        if i.status == Status::Sent && i.generation == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    exec(&s.db, four_days_ago, &late.id).await;
    // An invitation whose job never reached the queue (staged, never
    // relayed), queued 20 minutes ago: housekeeping pushes it again.
    let lost = s.invite(&client, "compta@transports-riviere.fr").await;
    exec(
        &s.db,
        "UPDATE invitations SET queued_at = queued_at - 1200000 WHERE id = $1",
        &lost.id,
    )
    .await;
    let h2 = s.q.push(housekeeping()).await;
    let r2 = s.done(&h2).await.result.expect("result");
    assert_eq!(r2["reminders"], 0, "{r2}");
    assert_eq!(r2["requeued"], 1, "{r2}");
    loop {
        let i = invitations::get(&s.db, &lost.id)
            .await
            .expect("get")
            .expect("exists");
        if i.status == Status::Sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    w.stop().await;
    let messages = s.smtp.messages();
    assert_eq!(
        messages.len(),
        4,
        "two invitations, one reminder, one re-pushed"
    );
    let reminder = decoded(&messages[2]);
    assert!(reminder.contains("X-Envelope-To: chef@transports-riviere.fr"));
    assert!(
        reminder.contains("Petit rappel : vous n'avez pas encore créé votre accès."),
        "{reminder}"
    );
    assert_ne!(token_in(&reminder), token_in(&decoded(&messages[0])));
    let expired = invitations::get(&s.db, &stale.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(expired.status, Status::Expired);
    s.cleanup().await;
}

/// STARTTLS required but not offered: refused for good, saying why, and
/// nothing goes out in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_starttls_that_is_not_offered_is_a_permanent_error() {
    let mut s = Setup::new(BackendKind::Sqlite, false).await;
    s.q.settings.mail.smtp.security = SmtpSecurity::Starttls;
    let client = s.client("SCI Les Tilleuls").await;
    let inv = s.invite(&client, "gerance@sci-tilleuls.fr").await;
    let id = s.push(&inv).await;
    let w = s.q.start_worker(s.registry());
    let dead =
        s.q.wait_for(&id, LONG, |j| j.status == JobStatus::Dead)
            .await;
    w.stop().await;
    let reason = dead.last_error.expect("reason");
    assert!(reason.contains("does not offer STARTTLS"), "{reason}");
    assert!(s.smtp.messages().is_empty());
    s.cleanup().await;
}

/// A new client's invitation waits for its enrichment (without spending
/// attempts), then goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invitation_waits_for_enrichment() {
    let s = Setup::new(BackendKind::Sqlite, false).await;
    let client = clients::create(
        &s.db,
        NewClient {
            firm_id: "cabinet-durand".into(),
            siret: Some("73282932000074".into()),
            entered: Fields::from([("legal_name".to_string(), "Société Typée".to_string())]),
        },
    )
    .await
    .expect("client")
    .id;
    let inv = s.invite(&client, "dirigeant@societe-typee.fr").await;
    let id = s.push(&inv).await;
    let w = s.q.start_worker(s.registry());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(s.smtp.messages().is_empty(), "sent before enrichment");
    let waiting = invitations::get(&s.db, &inv.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(waiting.status, Status::Queued);
    clients::record_not_found(&s.db, &client, "unknown to the registries")
        .await
        .expect("enrichment ended");
    let done = s.done(&id).await;
    w.stop().await;
    assert_eq!(done.attempts, 1, "waiting spent no attempt");
    let messages = s.smtp.messages();
    assert_eq!(messages.len(), 1);
    assert!(decoded(&messages[0]).contains("l'espace de Société Typée"));
    s.cleanup().await;
}
