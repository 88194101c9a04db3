//! Invitations end to end against a real SMTP server (aiosmtpd, capturing
//! what it accepts): the email's content and headers, one message per
//! invitation whatever happens (job run twice, worker killed mid-send, SMTP
//! down for a while) and, when the server's answer is lost, an identical
//! second copy rather than none; permanent refusals, names that cannot go
//! in a header, and no email or token in the logs.

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
        Setup::build(kind, smtp_down, |_| {}).await
    }

    /// [`Setup::new`] with the server up and settings changed by `change`.
    async fn with(kind: BackendKind, change: impl FnOnce(&mut Settings)) -> Setup {
        Setup::build(kind, false, change).await
    }

    async fn build(
        kind: BackendKind,
        smtp_down: bool,
        change: impl FnOnce(&mut Settings),
    ) -> Setup {
        let dir = tempfile::tempdir().expect("dir");
        let smtp = if smtp_down {
            SmtpCapture::reserve(dir.path())
        } else {
            SmtpCapture::start(dir.path())
        };
        let mut settings = dossier_e2e::fast_settings();
        mail_settings(&mut settings, smtp.port);
        change(&mut settings);
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
            webhooks: dossier_core::jobs::webhook_delivery::Webhooks::from_settings(
                &dossier_core::config::Settings::default(),
            )
            .expect("webhooks settings"),
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
    assert_eq!(
        sent.smtp_reply.as_deref(),
        Some("250 2.0.0 Ok: queued as 1"),
        "the server's answer, its queue id in it, is kept"
    );
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

/// A message without its headers the server adds (`X-Envelope-To`): what
/// the sender sent.
fn as_sent(raw: &str) -> String {
    raw.lines()
        .filter(|l| !l.starts_with("X-Envelope-To:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The server stores the message, then holds its answer past the client's
/// timeout: the outcome is unknown, so the retry sends the identical
/// message — same Message-ID, same link, same bytes — and both copies' link
/// works; the invitation says a copy may be doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_answer_is_lost_is_sent_again_identically() {
    let s = Setup::new(BackendKind::Sqlite, false).await;
    let client = s.client("Moreau Conseil").await;
    let inv = s
        .invite(&client, "stalldata.moreau@moreau-conseil.fr")
        .await;
    let id = s.push(&inv).await;
    let w = s.q.start_worker(s.registry());
    let done = s.done(&id).await;
    w.stop().await;
    assert_eq!(done.attempts, 2, "timed out once, then sent");
    let result = done.result.expect("result");
    assert_eq!(result["status"], "sent", "{result}");
    assert_eq!(result["repeats"], 1, "{result}");
    let messages = s.smtp.messages();
    assert_eq!(messages.len(), 2, "the lost answer's copy and the repeat");
    assert_eq!(
        as_sent(&messages[0]),
        as_sent(&messages[1]),
        "the repeat is the identical message"
    );
    let token = token_in(&decoded(&messages[0]));
    let after = invitations::get(&s.db, &inv.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.status, Status::Sent);
    assert!(
        after
            .last_error
            .as_deref()
            .is_some_and(|n| n.contains("sent again") && n.contains("identical copies")),
        "{:?}",
        after.last_error
    );
    assert_eq!(
        after.smtp_reply.as_deref(),
        Some("250 2.0.0 Ok: queued as 2")
    );
    let accepted = invitations::accept(&s.db, &token, None)
        .await
        .expect("accept")
        .expect("the one link of both copies works");
    assert_eq!(accepted.id, inv.id);
    s.cleanup().await;
}

/// The frame of a first send, as the job would make it.
fn first_frame() -> invitations::SendFrame {
    invitations::SendFrame {
        nonce: "n-1".into(),
        date_ms: 1_764_000_000_000,
        expires_ms: i64::MAX / 2,
        company: "Moreau Conseil".into(),
        themes: vec![],
        repeats: 0,
    }
}

/// An attempt handed the body over and lost the answer; before the repeat
/// goes out, the person opens the first copy's link: it works, and the
/// repeat then sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_copys_link_works_while_the_repeat_waits() {
    let s = Setup::new(BackendKind::Sqlite, false).await;
    let client = s.client("Moreau Conseil").await;
    let inv = s.invite(&client, "k.moreau@moreau-conseil.fr").await;
    let mailer = Mailer::from_settings(&s.q.settings).expect("mail settings");
    let key = mailer.link_key(&s.db).await.expect("key").clone();
    let frame = first_frame();
    let begun = invitations::begin_send(
        &s.db,
        &inv.id,
        0,
        frame.clone(),
        |f| dossier_core::digest::sha256_hex(key.token(&f.nonce).as_bytes()),
        "m@x",
    )
    .await
    .expect("begin");
    assert_eq!(begun, invitations::Begin::Go(frame));
    invitations::mark_committing(&s.db, &inv.id, 0)
        .await
        .expect("committing");
    let accepted = invitations::accept(&s.db, &key.token("n-1"), None)
        .await
        .expect("accept");
    assert!(
        accepted.is_some(),
        "the link of a copy that may be out works"
    );
    let id = s.push(&inv).await;
    let w = s.q.start_worker(s.registry());
    let result = s.done(&id).await.result.expect("result");
    w.stop().await;
    assert_eq!(result["status"], "skipped", "{result}");
    assert!(
        s.smtp.messages().is_empty(),
        "nothing sent after acceptance"
    );
    s.cleanup().await;
}

/// A slow first attempt hands its copy over; meanwhile its lease ran out
/// and the rescued attempt took the send over (one more repeat). The first
/// attempt's answer must not close the invitation, which would hide that a
/// second copy goes out: the rescued attempt closes it, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_attempt_cannot_close_a_send_the_rescued_one_took_over() {
    for backend in [BackendKind::Sqlite, BackendKind::Postgres] {
        slow_first_attempt_then_rescued(backend).await;
    }
}

async fn slow_first_attempt_then_rescued(backend: BackendKind) {
    let s = Setup::new(backend, false).await;
    let client = s.client("Moreau Conseil").await;
    let inv = s.invite(&client, "k.moreau@moreau-conseil.fr").await;
    let fresh = first_frame();
    let begin = |frame: invitations::SendFrame| {
        invitations::begin_send(&s.db, &inv.id, 0, frame, |f| f.nonce.clone(), "m@x")
    };
    let invitations::Begin::Go(first) = begin(fresh.clone()).await.expect("begin") else {
        panic!("the first attempt goes");
    };
    invitations::mark_committing(&s.db, &inv.id, 0)
        .await
        .expect("committing");
    let invitations::Begin::Go(rescued) = begin(fresh).await.expect("begin") else {
        panic!("the rescued attempt goes");
    };
    assert_eq!(
        rescued.repeats, 1,
        "the rescued attempt's copy may be the second"
    );
    assert_eq!(
        rescued.nonce, first.nonce,
        "the same message, the same link"
    );
    let closed = invitations::mark_sent(&s.db, &inv.id, 0, &first, None, "250 first")
        .await
        .expect("mark");
    assert!(!closed, "the first attempt no longer holds the send");
    let open = invitations::get(&s.db, &inv.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(open.status, Status::Queued);
    invitations::mark_committing(&s.db, &inv.id, 0)
        .await
        .expect("committing");
    let closed = invitations::mark_sent(
        &s.db,
        &inv.id,
        0,
        &rescued,
        Some("sent again (1 time(s))"),
        "250 second",
    )
    .await
    .expect("mark");
    assert!(closed);
    let after = invitations::get(&s.db, &inv.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.status, Status::Sent);
    assert_eq!(after.last_error.as_deref(), Some("sent again (1 time(s))"));
    assert_eq!(after.smtp_reply.as_deref(), Some("250 second"));
    s.cleanup().await;
}

/// A name that reached the database with a line break (written before the
/// rule, or by hand) cannot go in a header: the job fails for good at its
/// first attempt — no panic, no retries — and the invitation turns back
/// into a draft that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_be_composed_fails_once_and_says_why() {
    let s = Setup::new(BackendKind::Sqlite, false).await;
    let client = s.client("Moreau Conseil").await;
    let inv = s.invite(&client, "k.moreau@moreau-conseil.fr").await;
    exec(
        &s.db,
        "UPDATE invitations SET first_name = 'Karine' || char(13) || char(10) || 'Bcc: x@evil.example' WHERE id = $1",
        &inv.id,
    )
    .await;
    let id = s.push(&inv).await;
    let w = s.q.start_worker(s.registry());
    let dead =
        s.q.wait_for(&id, LONG, |j| j.status == JobStatus::Dead)
            .await;
    w.stop().await;
    assert_eq!(dead.attempts, 1, "permanent at once: {dead:?}");
    let after = invitations::get(&s.db, &inv.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.status, Status::Draft);
    let why = after.last_error.expect("the reason is stored");
    assert!(
        why.contains("first name") && why.contains("U+000D"),
        "{why}"
    );
    assert!(s.smtp.messages().is_empty());
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

/// Runs `cmd`, panicking with its output unless it succeeds.
fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// With a DKIM key configured, the invitation carries a signature that an
/// independent verifier (dkimpy) accepts against the public key, for the
/// selector and domain configured; the repeat after a lost answer is
/// signed too. A message changed after signing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_dkim_signed_and_verify_independently() {
    let keys = tempfile::tempdir().expect("dir");
    let private = keys.path().join("dkim.pem");
    let public = keys.path().join("dkim.der");
    run_ok(
        std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&private)
            .arg("2048"),
    );
    run_ok(
        std::process::Command::new("openssl")
            .args(["rsa", "-pubout", "-outform", "DER", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public),
    );
    let pem = std::fs::read_to_string(&private).expect("key");
    let s = Setup::with(BackendKind::Sqlite, |settings| {
        let d = &mut settings.mail.dkim;
        d.selector = "dossier2026".into();
        d.domain = "cabinet-durand.fr".into();
        d.private_key = Some(serde_json::from_value(serde_json::json!(pem)).expect("secret"));
    })
    .await;
    let client = s.client("Boulangerie Martin").await;
    let inv = s
        .invite(&client, "stalldata.martin@boulangerie-martin.fr")
        .await;
    let id = s.push(&inv).await;
    let w = s.q.start_worker(s.registry());
    s.done(&id).await;
    w.stop().await;
    let messages = s.smtp.messages();
    assert_eq!(
        messages.len(),
        2,
        "the copy whose answer was lost, and the repeat"
    );
    let verify = |raw: &str| {
        let file = keys.path().join("message.eml");
        std::fs::write(&file, as_sent(raw).replace('\n', "\r\n")).expect("write");
        std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/support/dkim_verify.py"
            ))
            .arg(&file)
            .arg(&public)
            .arg("dossier2026._domainkey.cabinet-durand.fr")
            .output()
            .expect("python3 runs (scripts/test installs dkimpy)")
    };
    for m in &messages {
        assert!(
            m.contains("DKIM-Signature: v=1; a=rsa-sha256; d=cabinet-durand.fr; s=dossier2026;"),
            "{m}"
        );
        let out = verify(m);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.trim() == "pass",
            "{said} {out:?}"
        );
    }
    let forged = messages[0].replace("Boulangerie Martin", "Boulangerie Marten");
    let out = verify(&forged);
    assert!(!out.status.success(), "a changed message still verifies");
    s.cleanup().await;
}

/// SpamAssassin's score of a message (local tests only: no network, no
/// Bayes, no user preferences), and the rules that fired.
fn spam_score(raw: &str) -> (f64, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("spamassassin")
        .args([
            "--local",
            "--test-mode",
            "-x",
            "--cf=use_bayes 0",
            "--cf=bayes_auto_learn 0",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spamassassin runs (scripts/test installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(as_sent(raw).replace('\n', "\r\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("spamassassin ends");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let score = report
        .lines()
        .find_map(|l| l.strip_prefix("X-Spam-Status: "))
        .and_then(|l| l.split("score=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in SpamAssassin's report:\n{report}"));
    let rules = report
        .split("Content analysis details:")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (score, rules)
}

/// The invitation and its reminder, text and HTML parts, score under 2.0
/// with SpamAssassin (5.0 marks spam); the scores are printed, and the rules
/// that fired when one is too high. (DKIM, SPF and DMARC are network tests,
/// off here: `invitations_are_dkim_signed_and_verify_independently` checks
/// the signature.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invitation_and_its_reminder_score_under_2_with_spamassassin() {
    let s = Setup::new(BackendKind::Sqlite, false).await;
    let client = s.client("SCI Les Tilleuls").await;
    let inv = s.invite(&client, "gerant@sci-tilleuls.fr").await;
    let id = s.push(&inv).await;
    let w = s.q.start_worker(s.registry());
    s.done(&id).await;
    let reminders = invitations::due_reminders(&s.db, i64::MAX)
        .await
        .expect("reminders");
    assert_eq!(reminders.len(), 1);
    let id = s.push(&reminders[0]).await;
    s.done(&id).await;
    w.stop().await;
    let messages = s.smtp.messages();
    assert_eq!(messages.len(), 2);
    assert!(
        decoded(&messages[1]).contains("Petit rappel"),
        "the reminder"
    );
    for (what, m) in ["invitation", "reminder"].iter().zip(&messages) {
        assert!(m.contains("Content-Type: text/plain") && m.contains("Content-Type: text/html"));
        let (score, rules) = spam_score(m);
        println!(
            "{}",
            serde_json::json!({ "message": what, "spamassassin_score": score })
        );
        assert!(score < 2.0, "{what} scores {score}:\n{rules}");
    }
    s.cleanup().await;
}
