//! The `dossier` command as a user runs it, on a real SQLite file (and Redis).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Drop for Env {
    /// Deletes the test's Redis keys (its own prefix), if it used Redis.
    fn drop(&mut self) {
        let var = |k: &str| {
            self.vars
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let Some(prefix) = var("DOSSIER__QUEUE__PREFIX") else {
            return;
        };
        let url = var("DOSSIER__QUEUE__URL").unwrap_or_else(test_redis_url);
        if let Ok(rt) = tokio::runtime::Runtime::new() {
            rt.block_on(async {
                if let Ok(q) = dossier_core::queue::redis::RedisQueue::connect(&url, &prefix).await
                {
                    let _ = q.destroy().await;
                }
            });
        }
    }
}

impl Env {
    fn sqlite() -> Env {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("dossier.db").display());
        Env {
            vars: vec![("DOSSIER__DATABASE__URL".into(), url)],
            dir,
        }
    }

    fn redis() -> Env {
        let mut env = Env::sqlite();
        let url = test_redis_url();
        env.vars.extend([
            ("DOSSIER__QUEUE__BACKEND".into(), "redis".into()),
            ("DOSSIER__QUEUE__URL".into(), url),
            (
                "DOSSIER__QUEUE__PREFIX".into(),
                format!("cli-test-{}", uuid::Uuid::now_v7().simple()),
            ),
        ]);
        env
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dossier"))
            .args(args)
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("DOSSIER_CONFIG")
            .current_dir(self.dir.path())
            .output()
            .expect("dossier runs")
    }

    /// Records the firms these tests name (`dossier firm add`).
    fn add_firms(&self) {
        for id in ["c1", "cabinet-7", "cabinet-9", "f", "f1", "f2"] {
            self.ok(&["firm", "add", id, "--name", id]);
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dossier {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail with exit code 2; returns stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(2), "dossier {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }
}

fn test_redis_url() -> String {
    std::env::var("DOSSIER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn enqueued_id(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .last()
        .expect("an id is printed")
        .to_string()
}

/// How many migrations the repository ships for SQLite.
fn shipped_migrations() -> usize {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite");
    std::fs::read_dir(dir).expect("migrations").count()
}

#[test]
fn migrate_applies_then_is_a_no_op() {
    let env = Env::sqlite();
    assert_eq!(
        env.ok(&["migrate"]).trim(),
        format!("migrations applied: {}", shipped_migrations())
    );
    assert_eq!(env.ok(&["migrate"]).trim(), "migrations applied: 0");
    assert!(Path::new(&env.dir.path().join("dossier.db")).exists());
}

#[test]
fn a_sqlite_queue_may_live_in_its_own_file() {
    let mut env = Env::sqlite();
    let queue_db = env.dir.path().join("queue.db");
    env.vars.push((
        "DOSSIER__QUEUE__URL".into(),
        format!("sqlite://{}", queue_db.display()),
    ));
    assert_eq!(
        env.ok(&["migrate"]).trim(),
        format!("migrations applied: {}", 2 * shipped_migrations())
    );
    env.ok(&[
        "enqueue",
        "siret_check",
        "--json",
        r#"{"siret":"73282932000074"}"#,
    ]);
    assert_eq!(env.json(&["queues", "--json"])[0]["pending"], 1);
    assert!(queue_db.exists());
}

#[test]
fn enqueue_refuses_unknown_kinds_and_bad_payloads_and_adds_nothing() {
    let env = Env::sqlite();
    let err = env.refused(&["enqueue", "nope", "--json", "{}"]);
    assert!(
        err.contains("unknown job kind `nope`; known kinds: siret_check"),
        "{err}"
    );
    let err = env.refused(&["enqueue", "siret_check", "--json", r#"{"sirett":"1"}"#]);
    assert!(
        err.contains("invalid payload for `siret_check`: unknown field `sirett`"),
        "{err}"
    );
    let err = env.refused(&["enqueue", "siret_check", "--json", "{not json"]);
    assert!(err.contains("payload is not valid JSON"), "{err}");
    let err = env.refused(&[
        "enqueue",
        "siret_check",
        "--json",
        r#"{"siret":"1"}"#,
        "--run-at",
        "soon",
    ]);
    assert!(err.contains("run-at `soon`"), "{err}");
    let err = env.refused(&[
        "enqueue",
        "siret_check",
        "--json",
        r#"{"siret":"1"}"#,
        "--max-attempts",
        "0",
    ]);
    assert!(err.contains("max attempts must be at least 1"), "{err}");
    assert_eq!(env.json(&["queues", "--json"]), serde_json::json!([]));
}

fn enqueue_inspect_and_repair(env: &Env) {
    let payload = r#"{"siret":"732 829 320 00074"}"#;
    let first = env.ok(&[
        "enqueue",
        "siret_check",
        "--json",
        payload,
        "--idempotency-key",
        "row-2",
    ]);
    assert!(first.starts_with("enqueued "), "{first}");
    let id = enqueued_id(&first);
    let again = env.ok(&[
        "enqueue",
        "siret_check",
        "--json",
        payload,
        "--idempotency-key",
        "row-2",
    ]);
    assert!(
        again.starts_with(&format!("already enqueued {id}")),
        "{again}"
    );
    let later = enqueued_id(&env.ok(&[
        "enqueue",
        "siret_check",
        "--json",
        payload,
        "--run-at",
        "+1h",
        "--max-attempts",
        "3",
    ]));

    let queues = env.json(&["queues", "--json"]);
    assert_eq!(queues[0]["kind"], "siret_check");
    assert_eq!(
        (
            queues[0]["pending"].as_u64(),
            queues[0]["scheduled"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let table = env.ok(&["queues"]);
    assert!(table.contains("siret_check"), "{table}");

    let scheduled = env.json(&["jobs", "list", "--status", "scheduled", "--json"]);
    assert_eq!(scheduled.as_array().map(Vec::len), Some(1));
    assert_eq!(scheduled[0]["id"], later.as_str());
    assert_eq!(scheduled[0]["max_attempts"], 3);

    let shown = env.json(&["jobs", "show", &id, "--json"]);
    assert_eq!(shown["payload"]["siret"], "732 829 320 00074");
    assert_eq!(shown["idempotency_key"], "caller:siret_check:row-2");
    assert!(
        env.ok(&["jobs", "show", &id])
            .contains("status:        pending")
    );

    assert_eq!(
        env.ok(&["jobs", "kill", &later, "--reason", "client deleted"])
            .trim(),
        format!("killed {later}")
    );
    let err = env.refused(&["jobs", "kill", &later]);
    assert!(
        err.contains("is dead: only waiting or running jobs can be killed"),
        "{err}"
    );
    let dead = env.json(&["jobs", "list", "--status", "dead", "--json"]);
    assert_eq!(dead[0]["last_error"], "client deleted");
    assert_eq!(dead[0]["errors"][0]["class"], "killed");

    assert_eq!(
        env.ok(&["jobs", "retry", &later]).trim(),
        format!("retried {later}")
    );
    env.ok(&["jobs", "kill", &later]);
    assert_eq!(
        env.ok(&["jobs", "retry", "--all-dead", "--kind", "siret_check"])
            .trim(),
        "retried 1 dead job(s)"
    );
    let err = env.refused(&["jobs", "show", "no-such-id"]);
    assert!(err.contains("no job with id no-such-id"), "{err}");
    let err = env.refused(&["jobs", "list", "--status", "stuck"]);
    assert!(err.contains("unknown status `stuck`"), "{err}");
    assert_eq!(env.json(&["workers", "--json"]), serde_json::json!([]));
}

#[test]
fn enqueue_inspect_and_repair_on_sqlite() {
    enqueue_inspect_and_repair(&Env::sqlite());
}

#[test]
fn enqueue_inspect_and_repair_on_redis() {
    enqueue_inspect_and_repair(&Env::redis());
}

#[test]
fn configuration_errors_name_key_and_source() {
    let mut env = Env::sqlite();
    env.vars
        .push(("DOSSIER__QUEUE__BAKEND".into(), "redis".into()));
    let err = env.refused(&["queues"]);
    assert!(err.contains("queue.bakend: unknown key `bakend`"), "{err}");
    assert!(
        err.contains("environment variable DOSSIER__QUEUE__BAKEND"),
        "{err}"
    );

    let env = Env::sqlite();
    let file = env.dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[queue]\nbackend = \"redis\"\nurl = \"http://nope\"\n",
    )
    .expect("write");
    let err = env.refused(&["--config", file.to_str().unwrap_or_default(), "queues"]);
    assert!(
        err.contains("queue.url: scheme `http` is not a Redis URL"),
        "{err}"
    );
    assert!(err.contains(&format!("file {}", file.display())), "{err}");

    // Secrets can come from a file named by DOSSIER__…_FILE.
    let mut env_file = Env::sqlite();
    let secret = env_file.dir.path().join("queue-url");
    std::fs::write(&secret, "http://user:pw@host\n").expect("write");
    env_file.vars.extend([
        ("DOSSIER__QUEUE__BACKEND".into(), "redis".into()),
        (
            "DOSSIER__QUEUE__URL_FILE".into(),
            secret.display().to_string(),
        ),
    ]);
    let err = env_file.refused(&["queues"]);
    assert!(
        err.contains("queue.url: scheme `http` is not a Redis URL"),
        "{err}"
    );
    assert!(err.contains("(from DOSSIER__QUEUE__URL_FILE)"), "{err}");
    assert!(!err.contains("user:pw"), "the secret is not echoed: {err}");
    env_file.vars.push((
        "DOSSIER__DATABASE__URL_FILE".into(),
        "/nonexistent/secret".into(),
    ));
    let err = env_file.refused(&["queues"]);
    assert!(
        err.contains("cannot read secret file /nonexistent/secret"),
        "{err}"
    );

    let err = env.refused(&["--config", "missing.toml", "queues"]);
    assert!(
        err.contains("configuration file missing.toml does not exist (given by --config)"),
        "{err}"
    );
}

#[test]
fn secret_files_provide_values() {
    let mut env = Env::redis();
    let url = env
        .vars
        .iter()
        .find(|(k, _)| k == "DOSSIER__QUEUE__URL")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    env.vars.retain(|(k, _)| k != "DOSSIER__QUEUE__URL");
    let secret = env.dir.path().join("redis-url");
    std::fs::write(&secret, format!("{url}\n")).expect("write");
    env.vars.push((
        "DOSSIER__QUEUE__URL_FILE".into(),
        secret.display().to_string(),
    ));
    let out = env.ok(&[
        "enqueue",
        "siret_check",
        "--json",
        r#"{"siret":"73282932000074"}"#,
    ]);
    assert!(out.starts_with("enqueued "), "{out}");
    assert_eq!(env.json(&["queues", "--json"])[0]["pending"], 1);
}

#[test]
fn shipped_configuration_files_load() {
    let env = Env::sqlite();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["config/default.toml", "config/production.example.toml"] {
        let path = root.join(file);
        let out = env.run(&["--config", path.to_str().unwrap_or_default(), "kinds"]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn siret_check_explains_and_exits_nonzero_when_invalid() {
    let env = Env::sqlite();
    let out = env.ok(&["siret", "check", " 732 829 320 00074 "]);
    assert!(out.contains("valid SIRET"), "{out}");
    assert!(out.contains("VAT    FR44732829320"), "{out}");
    let la_poste = env.json(&["siret", "check", "35600000049837", "--json"]);
    assert_eq!(la_poste["valid"], true);
    assert_eq!(la_poste["vat_number"], "FR39356000000");
    let siren = env.json(&["siret", "check", "552081317", "--json"]);
    assert_eq!(
        (siren["kind"].as_str(), siren["vat_number"].as_str()),
        (Some("siren"), Some("FR03552081317"))
    );
    for (input, code, words) in [
        (
            "7328293200007",
            "wrong_length",
            "13 digits found, a SIRET has 14",
        ),
        (
            "73282932O00074",
            "non_digit",
            "character 'O' at position 9 is not a digit",
        ),
        ("73282932000075", "checksum", "checksum failed"),
        ("35600000049838", "checksum", "checksum failed"),
    ] {
        let out = env.run(&["siret", "check", input, "--json"]);
        assert_eq!(out.status.code(), Some(1), "{input}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(report["valid"], false, "{input}");
        assert_eq!(report["error_code"], code, "{input}");
        assert!(
            report["error"].as_str().unwrap_or_default().contains(words),
            "{input}: {report}"
        );
    }
    // No database is touched by a check.
    assert!(!env.dir.path().join("dossier.db").exists());
}

/// Runs `dossier` off the async runtime, so that the in-process registry
/// stub keeps answering while the command waits for it.
async fn run_blocking(env: Env, args: &'static [&'static str]) -> (Env, Output) {
    tokio::task::spawn_blocking(move || {
        let out = env.run(args);
        (env, out)
    })
    .await
    .expect("command task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siret_lookup_asks_the_registries() {
    use dossier_e2e::registry_stub::{INSEE_KEY, RegistryStub};
    let stub = RegistryStub::default();
    let base = stub.start().await;
    let mut env = Env::sqlite();
    env.vars.extend([
        (
            "DOSSIER__SIRENE__RECHERCHE_ENTREPRISES__BASE_URL".into(),
            base.clone(),
        ),
        ("DOSSIER__SIRENE__INSEE__BASE_URL".into(), base.clone()),
    ]);
    // A registry over plain http is refused at start-up, naming the key…
    let (mut env, out) = run_blocking(env, &["siret", "lookup", "880 878 145 00015"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("sirene.recherche_entreprises.base_url: http://127.0.0.1:")
            && err.contains("plain http is refused"),
        "{err}"
    );
    assert!(stub.requests("search").is_empty());
    // …unless it is a local stand-in and the setting says so.
    env.vars.push((
        "DOSSIER__OUTBOUND__ALLOW_PLAIN_HTTP_TO_LOOPBACK".into(),
        "true".into(),
    ));
    let (env, out) = run_blocking(env, &["siret", "lookup", "880 878 145 00015"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "name           GANYMEDE",
        "legal form     SAS (5710)",
        "NAF/APE        62.02A",
        "address        128 RUE LA BOETIE, 75008 PARIS 8",
        "director       XAVIER MARIE ERWAN JOUPPE (Liquidateur)",
        "WARNING        the company (SIREN 880878145) is closed in the registry",
        "source         recherche-entreprises",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    // Unknown company: a negative answer, exit 1, with the reason.
    let (env, out) = run_blocking(env, &["siret", "lookup", "73282932000074"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the registries"));

    // INSEE first: its key is a secret, required, and never printed.
    let mut env = env;
    env.vars.push((
        "DOSSIER__SIRENE__PROVIDERS".into(),
        "[\"insee\", \"recherche-entreprises\"]".into(),
    ));
    let (mut env, out) = run_blocking(env, &["siret", "lookup", "88087814500015", "--json"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sirene.insee_api_key: the insee provider needs an API key"),
        "{err}"
    );
    let key_file = env.dir.path().join("insee-key");
    std::fs::write(&key_file, format!("{INSEE_KEY}\n")).expect("write");
    env.vars.push((
        "DOSSIER__SIRENE__INSEE_API_KEY_FILE".into(),
        key_file.display().to_string(),
    ));
    let (_env, out) = run_blocking(env, &["siret", "lookup", "88087814500015", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let facts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(facts["provider"], "insee");
    assert_eq!(facts["legal_form_label"], "SAS");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(INSEE_KEY), "the key leaked");
    assert_eq!(stub.requests("insee").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_show_tells_typed_from_registry_values() {
    use dossier_core::clients::{self, NewClient};
    use dossier_core::db::Database;
    use dossier_core::sirene::Provider;
    use dossier_core::sirene::file::{SireneFile, build_index};
    let env = Env::sqlite();
    let url = env.vars[0].1.clone();
    let db = Database::connect(&url, 1).await.expect("db");
    db.migrate().await.expect("migrate");
    let client = clients::create(
        &db,
        NewClient {
            firm_id: "f".into(),
            siret: Some("88087814500015".into()),
            entered: [("legal_name".to_string(), "Ganymède".to_string())].into(),
        },
    )
    .await
    .expect("client");
    let extract = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sirene-extract");
    let index = env.dir.path().join("index.db");
    build_index(
        &extract.join("StockUniteLegale.csv"),
        &extract.join("StockEtablissement.csv"),
        &index,
    )
    .await
    .expect("index");
    let file = SireneFile::open(&index.display().to_string())
        .await
        .expect("open");
    let siret = dossier_core::siret::Siret::parse("88087814500015").expect("valid");
    let facts = file.lookup(&siret).await.expect("found");
    clients::record_enrichment(&db, &client.id, &facts)
        .await
        .expect("recorded");

    let id = client.id.clone();
    let (env, out) = tokio::task::spawn_blocking(move || {
        let out = env.run(&["client", "show", &id]);
        (env, out)
    })
    .await
    .expect("task");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for expected in [
        "enrichment    enriched",
        "WARNING       the company (SIREN 880878145) is closed in the registry",
        "[typed]",
        "legal_form_label       SAS",
        "legal_name             typed \"Ganymède\", registry \"GANYMEDE\"",
        "source        sirene-file",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let out = env.run(&["client", "show", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_exercices_and_client_folders() {
    use dossier_core::clients::{self, NewClient};
    use dossier_core::db::Database;
    let env = Env::sqlite();
    env.ok(&["migrate"]);
    env.add_firms();
    let url = env.vars[0].1.clone();
    let db = Database::connect(&url, 1).await.expect("db");
    let client = clients::create(
        &db,
        NewClient {
            firm_id: "cabinet-7".into(),
            siret: None,
            entered: Default::default(),
        },
    )
    .await
    .expect("client")
    .id;

    // Templates: errors with line and column, then the shipped tree.
    let bad = env.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[[dirs]]\nname = \"Banque\"\n[[dirs]]\nname = \"banque\"\n[[dirs]]\nname = \"TVA: 2025\"\ntheme = \"fisc\"\n",
    )
    .expect("write");
    let err = env.refused(&["tree", "load", "bad.toml", "--firm", "cabinet-7"]);
    for want in [
        "bad.toml: 3 problem(s)",
        "bad.toml:5:8: duplicate directory \"banque\" at the top of the tree",
        "bad.toml:7:8: folder name \"TVA: 2025\" contains `:`",
        "bad.toml:8:9: directory \"TVA: 2025\" has unknown theme \"fisc\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/trees/cabinet-standard.toml");
    let shipped = shipped.display().to_string();
    let out = env.ok(&["tree", "load", &shipped, "--firm", "cabinet-7"]);
    assert!(
        out.contains(
            "template cabinet-standard loaded for firm cabinet-7: 30 directories, 4 per exercice"
        ),
        "{out}"
    );
    let out = env.ok(&["tree", "list", "--firm", "cabinet-7"]);
    assert!(out.contains("cabinet-standard         yes"), "{out}");
    let out = env.ok(&["tree", "show", "cabinet-standard", "--firm", "cabinet-7"]);
    assert!(out.contains("│   ├── Achats  [per exercice]"), "{out}");
    assert!(
        out.contains("cabinet          Travaux du cabinet       firm only"),
        "{out}"
    );
    env.refused(&["tree", "show", "nope", "--firm", "cabinet-7"]);

    // Exercices: refusals say why, then a long first one and its successor.
    let add = |extra: &[&str]| {
        let mut args = vec!["exercice", "add", "--client", client.as_str()];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.run(&refs)
    };
    let refused = |args: Vec<String>| {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = refused(add(&["--start", "2025-03-15", "--end", "2027-01-31"]));
    assert!(e.contains("a first exercice must close by 31 December of the year after it starts: starting 2025-03-15, it must end by 2026-12-31"), "{e}");
    let e = refused(add(&["--start", "2025-13-01"]));
    assert!(e.contains("write it YYYY-MM-DD"), "{e}");
    let e = refused(add(&["--start", "2025-06-01", "--end", "2025-05-31"]));
    assert!(
        e.contains("the end (2025-05-31) is before the start (2025-06-01)"),
        "{e}"
    );
    let out = run(add(&["--start", "2025-03-15", "--end", "2026-12-31"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("2025-03-15 → 2026-12-31 (22 months), folder \"2025-2026\""),
        "{text}"
    );
    assert!(
        text.contains("folders queued (job fiscal_folders:"),
        "{text}"
    );
    let e = refused(add(&["--start", "2027-02-01"]));
    assert!(
        e.contains("must start on 2027-01-01") && e.contains("--allow-gap"),
        "{e}"
    );
    let e = refused(add(&["--start", "2026-12-01"]));
    assert!(e.contains("overlaps exercice 2025-2026"), "{e}");
    let out = run(add(&["--start", "2027-01-01"]));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("2027-01-01 → 2027-12-31 (12 months), folder \"2027\"")
    );
    let e = env.refused(&[
        "exercice",
        "add",
        "--client",
        "nobody",
        "--start",
        "2025-01-01",
    ]);
    assert!(e.contains("no client with id nobody"), "{e}");

    // The folders: pending until the jobs run (here, their work directly).
    let out = env.ok(&["client", "tree", &client]);
    assert!(out.contains("has no folder tree yet"), "{out}");
    let queued = env.json(&["jobs", "list", "--kind", "fiscal_folders", "--json"]);
    assert_eq!(queued.as_array().map(Vec::len), Some(2));
    let out = env.ok(&["exercice", "list", "--client", &client]);
    assert!(out.contains("pending"), "{out}");
    dossier_core::tree::folders::materialize(&db, std::slice::from_ref(&client), None)
        .await
        .expect("folders");
    let out = env.ok(&["client", "tree", &client]);
    for want in [
        "(tree cabinet-standard)",
        "├── Comptabilité",
        "│   ├── Achats",
        "│   │   ├── 2025-2026  [22 months]",
        "│   │   │   ├── 2026-08 Août",
        "│   │   └── 2027  [12 months]",
        "30 directories, 8 exercice folders, 136 monthly folders (174 in all)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let out = env.ok(&["exercice", "list", "--client", &client]);
    assert!(!out.contains("pending") && out.contains("written"), "{out}");
    env.refused(&["client", "tree", "nobody"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_from_the_command_line() {
    use dossier_core::clients::{self, NewClient};
    use dossier_core::db::Database;
    let env = Env::sqlite();
    env.ok(&["migrate"]);
    env.add_firms();
    let db = Database::connect(&env.vars[0].1, 1).await.expect("db");
    let client = clients::create(
        &db,
        NewClient {
            firm_id: "cabinet-7".into(),
            siret: None,
            entered: Default::default(),
        },
    )
    .await
    .expect("client")
    .id;
    let add = |extra: &[&str]| {
        let mut args = vec![
            "invitation",
            "add",
            "--client",
            client.as_str(),
            "--first-name",
            "Anne",
            "--last-name",
            "Roux",
        ];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    let out = add(&["--email", "anne@@roux", "--themes", "fiscal,secret"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("email \"anne@@roux\" is not a valid address"),
        "{err}"
    );
    assert!(err.contains("unknown theme \"secret\""), "{err}");
    // A line break in a name would start a header of the email.
    let out = env.run(&[
        "invitation",
        "add",
        "--client",
        client.as_str(),
        "--first-name",
        "Anne\r\nBcc: x@evil.example",
        "--last-name",
        "Roux",
        "--email",
        "anne.roux@example.fr",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the first name: holds the invisible control character U+000D"),
        "{err}"
    );
    let out = add(&["--email", "anne.roux@example.fr", "--draft"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("(director) created as draft; themes: permanent, comptabilite, fiscal, social, juridique, bilans"), "{text}");
    let id = text.split_whitespace().nth(1).expect("id").to_string();
    let err =
        String::from_utf8_lossy(&add(&["--email", "Anne.Roux@example.fr"]).stderr).into_owned();
    assert!(err.contains("already has a live invitation"), "{err}");
    let out = env.ok(&["invitation", "send", "--client", &client]);
    assert!(
        out.contains(&format!("invitation {id} queued for sending")),
        "{out}"
    );
    let jobs = env.json(&["jobs", "list", "--kind", "invitation", "--json"]);
    assert_eq!(jobs.as_array().map(Vec::len), Some(1));
    let shown = serde_json::to_string(&jobs).expect("json");
    assert!(!shown.contains("anne"), "the job carries no email: {shown}");
    env.ok(&["invitation", "resend", &id]);
    let list = env.json(&["invitation", "list", "--client", &client, "--json"]);
    assert_eq!(list[0]["generation"], 1);
    assert_eq!(list[0]["status"], "queued");
    let out = env.ok(&["invitation", "revoke", &id]);
    assert!(out.contains("revoked"), "{out}");
    let err = env.refused(&["invitation", "resend", &id]);
    assert!(err.contains("is revoked"), "{err}");
    env.refused(&["invitation", "revoke", "nope"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_apps_from_the_command_line_never_show_secrets() {
    use dossier_core::clients::{self, NewClient};
    use dossier_core::db::Database;
    let mut env = Env::sqlite();
    let key = |id: &str, b: &str| format!("{id}:{}", b.repeat(32));
    env.vars.push((
        "DOSSIER__APPS__ENCRYPTION_KEYS".into(),
        format!("[\"{}\"]", key("k1", "01")),
    ));
    env.ok(&["migrate"]);
    env.add_firms();
    let db = Database::connect(&env.vars[0].1, 1).await.expect("db");
    let client = clients::create(
        &db,
        NewClient {
            firm_id: "cabinet-7".into(),
            siret: None,
            entered: Default::default(),
        },
    )
    .await
    .expect("client")
    .id;
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/apps/catalogue.example.toml");
    let out = env.ok(&[
        "app",
        "load",
        &shipped.display().to_string(),
        "--firm",
        "cabinet-7",
    ]);
    assert!(out.contains("2 apps loaded"), "{out}");
    // Partner endpoints the jobs could not call are refused at load.
    let unsafe_catalogue = std::fs::read_to_string(&shipped)
        .expect("catalogue")
        .replace(
            "\"https://api.collecte.example/v1/clients\"",
            "\"http://api.collecte.example/v1/clients\"",
        )
        .replace(
            "https://api.collecte.example/v1/clients/remove",
            "https://169.254.169.254/latest/meta-data",
        );
    std::fs::write(env.dir.path().join("unsafe.toml"), unsafe_catalogue).expect("write");
    let err = env.refused(&["app", "load", "unsafe.toml", "--firm", "cabinet-7"]);
    for want in [
        "unsafe.toml: 2 problem(s)",
        "app \"collecte_factures\": provisioning_url: http://api.collecte.example/v1/clients: plain http is refused",
        "app \"collecte_factures\": deprovisioning_url: https://169.254.169.254/latest/meta-data: 169.254.169.254 is a link-local address",
        "outbound.allowed_networks",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let out = env.ok(&["app", "list", "--firm", "cabinet-7"]);
    assert!(out.contains("api_key* (secret)"), "{out}");
    let secret = "sk-live-0123456789";
    let err = env.refused(&[
        "app",
        "enable",
        "--client",
        &client,
        "--app",
        "collecte_factures",
        "--setting",
        "target_directory=Nulle/Part",
        "--setting",
        "api_key=",
    ]);
    assert!(
        err.contains("is not a directory of the client's tree"),
        "{err}"
    );
    assert!(err.contains("api_key=*** is empty"), "{err}");
    let setting = format!("api_key={secret}");
    let out = env.ok(&[
        "app",
        "enable",
        "--client",
        &client,
        "--app",
        "collecte_factures",
        "--setting",
        &setting,
        "--setting",
        "target_directory=Comptabilité/Achats",
    ]);
    assert!(
        out.contains("\"api_key\":\"***\"") && !out.contains(secret),
        "{out}"
    );
    let out = env.ok(&["app", "show", "--client", &client]);
    assert!(
        out.contains("pending") && out.contains("***") && !out.contains(secret),
        "{out}"
    );
    let shown = env.ok(&["app", "show", "--client", &client, "--json"]);
    assert!(
        !shown.contains(secret) && !shown.contains("v1:k1"),
        "{shown}"
    );
    // Rotation: a new key first, re-seal, then the old key can go.
    env.vars
        .retain(|(k, _)| k != "DOSSIER__APPS__ENCRYPTION_KEYS");
    env.vars.push((
        "DOSSIER__APPS__ENCRYPTION_KEYS".into(),
        format!("[\"{}\", \"{}\"]", key("k2", "02"), key("k1", "01")),
    ));
    let out = env.ok(&["app", "rekey"]);
    assert!(out.contains("1 secret settings re-sealed"), "{out}");
    let apps = dossier_core::apps::client_apps(&db, &client)
        .await
        .expect("apps");
    let stored = apps[0].settings["api_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        stored.contains("v1:k2:") && !stored.contains(secret),
        "{stored}"
    );
    let err = env.refused(&[
        "app",
        "disable",
        "--client",
        &client,
        "--app",
        "banque_en_ligne",
    ]);
    assert!(err.contains("is not enabled"), "{err}");
}

#[test]
fn client_create_checks_everything_then_queues_its_jobs() {
    let env = Env::sqlite();
    env.ok(&["migrate"]);
    env.add_firms();
    let err = env.refused(&[
        "client",
        "create",
        "--firm",
        "cabinet-9",
        "--siret",
        "12345",
        "--director-email",
        "x@@y",
        "--app",
        "nope",
    ]);
    for want in [
        "client refused:",
        "siret:",
        "exercice: the start date of the current exercice is required",
        "director: email \"x@@y\" is not a valid address",
        "director: the first name is empty",
        "apps: firm cabinet-9 has no app nope",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(
        env.ok(&["client", "list", "--firm", "cabinet-9"])
            .lines()
            .count()
            == 1,
        "nothing written"
    );
    let out = env.ok(&[
        "client",
        "create",
        "--firm",
        "cabinet-9",
        "--name",
        "Boulangerie Martin",
        "--field",
        "address.city=Lyon",
        "--exercice-start",
        "2026-07-01",
        "--director-email",
        "camille@boulangerie-martin.fr",
        "--director-first-name",
        "Camille",
        "--director-last-name",
        "Martin",
    ]);
    assert!(
        out.contains("created; jobs queued: tree_setup, invitation"),
        "{out}"
    );
    let list = env.ok(&["client", "list", "--firm", "cabinet-9"]);
    assert!(
        list.contains("Boulangerie Martin") && list.contains("skipped"),
        "{list}"
    );
    let jobs = env.json(&["jobs", "list", "--json"]);
    let kinds: Vec<&str> = jobs
        .as_array()
        .map(|a| a.iter().filter_map(|j| j["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kinds.contains(&"tree_setup") && kinds.contains(&"invitation"),
        "{kinds:?}"
    );
    let id = out.split_whitespace().nth(1).expect("id");
    let ex = env.ok(&["exercice", "list", "--client", id]);
    assert!(
        ex.contains("2026-07-01 2027-06-30") && ex.contains("2026-2027"),
        "{ex}"
    );
}

#[test]
fn members_follow_clients_as_collaborators() {
    let env = Env::sqlite();
    env.ok(&["migrate"]);
    env.add_firms();
    let err = env.refused(&[
        "member", "add", "--firm", "c1", "--email", "nope", "--name", "X",
    ]);
    assert!(err.contains("is not a valid address"), "{err}");
    env.ok(&[
        "member",
        "add",
        "--firm",
        "c1",
        "--email",
        "alice@cabinet.fr",
        "--name",
        "Alice Roy",
    ]);
    env.ok(&[
        "member",
        "add",
        "--firm",
        "c1",
        "--email",
        "bruno@cabinet.fr",
        "--name",
        "Bruno Petit",
    ]);
    let err = env.refused(&[
        "member",
        "add",
        "--firm",
        "c1",
        "--email",
        "ALICE@cabinet.fr",
        "--name",
        "A",
    ]);
    assert!(err.contains("already a member"), "{err}");
    let create = |collaborator: &str| {
        env.run(&[
            "client",
            "create",
            "--firm",
            "c1",
            "--name",
            "SCI Les Tilleuls",
            "--exercice-start",
            "2026-01-01",
            "--no-invite",
            "--collaborator",
            collaborator,
        ])
    };
    let out = create("zoe@cabinet.fr");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("collaborators: zoe@cabinet.fr is not a member of firm c1"),
        "{err}"
    );
    let out = create("alice@cabinet.fr");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = text.split_whitespace().nth(1).expect("id");
    env.ok(&[
        "collaborator",
        "add",
        "--client",
        id,
        "--member",
        "bruno@cabinet.fr",
    ]);
    let show = env.ok(&["client", "show", id]);
    assert!(
        show.contains("collaborator  Alice Roy <alice@cabinet.fr>"),
        "{show}"
    );
    assert!(
        show.contains("collaborator  Bruno Petit <bruno@cabinet.fr>"),
        "{show}"
    );
    env.ok(&[
        "collaborator",
        "remove",
        "--client",
        id,
        "--member",
        "alice@cabinet.fr",
    ]);
    let show = env.ok(&["client", "show", id]);
    assert!(!show.contains("Alice Roy"), "{show}");
    let err = env.refused(&[
        "collaborator",
        "remove",
        "--client",
        id,
        "--member",
        "alice@cabinet.fr",
    ]);
    assert!(err.contains("is not a collaborator"), "{err}");
}

/// The process dies right after the commit of a new client. With the queue
/// in the database (the embedded default) its jobs were committed with it,
/// in the queue already; with a queue elsewhere (here a SQLite file of its
/// own, as with Redis) they wait in the outbox and the next relay (any
/// worker's) queues them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_enqueue_loses_no_job() {
    crash_after_commit(false).await;
    crash_after_commit(true).await;
}

async fn crash_after_commit(queue_elsewhere: bool) {
    let mut env = Env::sqlite();
    let queue_url = format!("sqlite://{}", env.dir.path().join("queue.db").display());
    if queue_elsewhere {
        env.vars
            .push(("DOSSIER__QUEUE__URL".into(), queue_url.clone()));
    }
    env.ok(&["migrate"]);
    env.add_firms();
    env.vars
        .push(("DOSSIER_TEST_FAULT".into(), "after_commit".into()));
    let out = env.run(&[
        "client",
        "create",
        "--firm",
        "c1",
        "--name",
        "Garage Martin",
        "--exercice-start",
        "2026-01-01",
        "--director-email",
        "paul@garage-martin.fr",
        "--director-first-name",
        "Paul",
        "--director-last-name",
        "Martin",
    ]);
    assert!(!out.status.success(), "the fault point kills the process");
    env.vars.retain(|(k, _)| k != "DOSSIER_TEST_FAULT");
    assert!(
        env.ok(&["client", "list", "--firm", "c1"])
            .contains("Garage Martin")
    );
    let kinds = |env: &Env| -> Vec<String> {
        env.json(&["jobs", "list", "--json"])
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|j| j["kind"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    if queue_elsewhere {
        assert_eq!(kinds(&env), Vec::<String>::new(), "nothing pushed yet");
        let mut settings = dossier_core::config::Settings {
            database: dossier_core::config::DatabaseSettings {
                url: env.vars[0].1.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        settings.queue.url = Some(queue_url);
        let db = dossier_core::db::Database::connect(&settings.database.url, 1)
            .await
            .expect("db");
        let queue = dossier_core::queue::open(&settings).await.expect("queue");
        let relayed = dossier_core::outbox::relay(&db, queue.as_ref())
            .await
            .expect("relay");
        assert_eq!(relayed, 2, "tree_setup and invitation");
    }
    let kinds = kinds(&env);
    assert!(
        kinds.len() == 2
            && kinds.contains(&"tree_setup".to_string())
            && kinds.contains(&"invitation".to_string()),
        "{kinds:?}"
    );
}

/// A valid SIRET made from `n`.
fn siret(n: u64) -> String {
    dossier_core::import_bench::siret_for(n)
}

#[test]
fn import_checks_every_row_then_creates_or_refuses_whole() {
    let env = Env::sqlite();
    env.ok(&["migrate"]);
    env.add_firms();
    let template = env.ok(&["import", "template"]);
    assert!(
        template.starts_with('\u{feff}') && template.contains("Raison sociale;Début d'exercice")
    );
    let file = env.dir.path().join("clients.csv");
    let mut text = template.lines().next().expect("header").to_string();
    text.push_str(&format!(
        "\r\n{};Boulangerie Dupont;01/01/2026;;;;;;;;;;CLI-1\r\n{};Garage Martin;31/06/2026;;;;;;;;;;CLI-2\r\n;Atelier Roux;01/07/2026;;;;;;;non;;;CLI-3\r\n",
        siret(101),
        siret(102)
    ));
    std::fs::write(&file, &text).expect("write");
    let path = file.to_str().expect("path");
    // Dry run: the report, nothing written, exit 2 for the bad row.
    let out = env.run(&["import", path, "--firm", "f1", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("line 3, column C « Début d'exercice », value \"31/06/2026\": \"31/06/2026\" is not a date: month 06/2026 has 30 days"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "dry run: 2 rows would be created, 0 skipped, 1 refused; nothing was written"
        ),
        "{stdout}"
    );
    // Without --partial: refused whole.
    let err = env.refused(&["import", path, "--firm", "f1"]);
    assert!(
        err.contains("import refused: 1 of 3 rows have problems, nothing was created"),
        "{err}"
    );
    assert_eq!(
        env.ok(&["client", "list", "--firm", "f1"]).lines().count(),
        1,
        "nothing written"
    );
    assert_eq!(
        env.json(&["imports", "list", "--firm", "f1", "--json"]),
        serde_json::json!([])
    );
    // --partial: the good rows, and the bad one in clients.csv.erreurs.csv.
    let out = env.ok(&["import", path, "--firm", "f1", "--partial"]);
    assert!(
        out.contains("created: 2   skipped (already clients): 0   refused: 1   jobs enqueued: 3"),
        "{out}"
    );
    let errors = std::fs::read_to_string(env.dir.path().join("clients.csv.erreurs.csv"))
        .expect("error file");
    assert!(
        errors.contains("Garage Martin;31/06/2026") && errors.contains("has 30 days"),
        "{errors}"
    );
    // Corrected and imported again: created; the whole file again: skipped.
    let fixed = env.dir.path().join("corrige.csv");
    std::fs::write(&fixed, errors.replace("31/06/2026", "30/06/2026")).expect("write");
    let out = env.ok(&["import", fixed.to_str().expect("path"), "--firm", "f1"]);
    assert!(out.contains("created: 1 "), "{out}");
    std::fs::write(&file, text.replace("31/06/2026", "30/06/2026")).expect("write");
    let out = env.ok(&["import", path, "--firm", "f1"]);
    assert!(
        out.contains("created: 0   skipped (already clients): 3"),
        "{out}"
    );
    assert_eq!(
        env.ok(&["client", "list", "--firm", "f1"]).lines().count(),
        4,
        "three clients, once each"
    );
    let list = env.json(&["imports", "list", "--firm", "f1", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(3));
    let id = list[0]["id"].as_str().expect("id");
    let show = env.ok(&["imports", "show", id]);
    assert!(
        show.contains("status      done") && show.contains("3 skipped"),
        "{show}"
    );
    // Unreadable input: a clear error, exit 2.
    let err = env.refused(&["import", "nope.csv", "--firm", "f1"]);
    assert!(err.contains("cannot read nope.csv"), "{err}");
    std::fs::write(env.dir.path().join("vide.csv"), "").expect("write");
    let err = env.refused(&["import", "vide.csv", "--firm", "f1"]);
    assert!(err.contains("the file is empty"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_runs_in_the_worker_with_progress() {
    use dossier_core::jobs::{self, JobDeps};
    let mut env = Env::sqlite();
    env.ok(&["migrate"]);
    env.add_firms();
    env.vars
        .push(("DOSSIER__IMPORTS__INLINE_MAX_ROWS".into(), "100".into()));
    env.vars
        .push(("DOSSIER__IMPORTS__BATCH_ROWS".into(), "100".into()));
    std::fs::write(
        env.dir.path().join("gros.csv"),
        dossier_core::import_bench::generate_csv(350, 3),
    )
    .expect("write");
    let mut settings = dossier_core::config::Settings::default();
    settings.database.url = env.vars[0].1.clone();
    settings.queue.poll_interval_ms = 50;
    let queue = dossier_core::queue::open(&settings).await.expect("queue");
    let deps = Arc::new(
        JobDeps::from_settings(&settings, queue.clone())
            .await
            .expect("deps"),
    );
    let mut registry = dossier_core::runtime::Registry::new();
    jobs::bulk_import::register(&mut registry, deps);
    let worker = dossier_core::runtime::Worker::new(
        "cli-test".into(),
        settings.queue.clone(),
        queue,
        registry,
    )
    .expect("worker")
    .spawn();
    let (env, out) = run_blocking(env, &["import", "gros.csv", "--firm", "f2"]).await;
    worker.stop().await.expect("worker stops");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("350 rows, running as job"), "{stdout}");
    assert!(
        stdout.contains(
            "created: 350   skipped (already clients): 0   refused: 0   jobs enqueued: 1050"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains("rows validated 350/350 · created 350"),
        "progress shown: {stderr}"
    );
    let list = env.json(&["imports", "list", "--firm", "f2", "--json"]);
    assert_eq!(list[0]["status"], "done");
    assert_eq!(list[0]["rows_created"], 350);
}

#[test]
fn queues_watch_redraws_every_second() {
    let env = Env::sqlite();
    env.ok(&["migrate"]);
    env.add_firms();
    env.ok(&[
        "enqueue",
        "siret_check",
        "--json",
        r#"{"siret":"73282932000074"}"#,
    ]);
    let started = std::time::Instant::now();
    let out = env.ok(&["queues", "--watch", "--count", "3"]);
    assert_eq!(
        out.matches("(every 1s, Ctrl-C to stop)").count(),
        3,
        "{out}"
    );
    assert_eq!(out.matches("siret_check").count(), 3, "{out}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "one refresh a second"
    );
    let err = env.run(&["queues", "--watch", "--json"]);
    assert_eq!(err.status.code(), Some(2), "--json and --watch conflict");
}

#[test]
fn the_command_refuses_hostile_input_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let bin = env!("CARGO_BIN_EXE_dossier");
    use dossier_core::db::Database;
    let run = |args: &[&str]| {
        Command::new(bin)
            .args(args)
            .env("DOSSIER__DATABASE__URL", &url)
            .env_remove("DOSSIER_CONFIG")
            .current_dir(dir.path())
            .output()
            .expect("dossier runs")
    };
    assert!(run(&["migrate"]).status.success());
    assert!(run(&["firm", "add", "f", "--name", "f"]).status.success());
    let long = "x".repeat(100_000);
    let cases: Vec<Vec<&str>> = vec![
        vec!["enqueue", "siret_check", "--json", "{"],
        vec!["enqueue", "siret_check", "--json", r#"{"siret": 5}"#],
        vec![
            "enqueue",
            "siret_check",
            "--json",
            r#"{"siret": "x", "sql": "'); DROP TABLE jobs; --"}"#,
        ],
        vec!["enqueue", "no_such_kind", "--json", "{}"],
        vec![
            "enqueue",
            "siret_check",
            "--json",
            r#"{"siret":"x"}"#,
            "--run-at",
            "2025-02-30T00:00:00Z",
        ],
        vec![
            "enqueue",
            "siret_check",
            "--json",
            r#"{"siret":"x"}"#,
            "--max-attempts",
            "0",
        ],
        vec![
            "enqueue",
            "siret_check",
            "--json",
            r#"{"siret":"x"}"#,
            "--trace-id",
            "a b",
        ],
        vec![
            "client",
            "create",
            "--firm",
            "f",
            "--name",
            "A",
            "--exercice-start",
            "2025-02-30",
        ],
        vec![
            "client",
            "create",
            "--firm",
            "f",
            "--siret",
            "'; DROP TABLE clients; --",
            "--exercice-start",
            "2026-01-01",
        ],
        vec![
            "client",
            "create",
            "--firm",
            "f",
            "--name",
            "A",
            "--exercice-start",
            "2026-01-01",
            "--tree",
            &long,
        ],
        vec![
            "client",
            "create",
            "--firm",
            "f",
            "--name",
            "A",
            "--exercice-start",
            "2026-01-01",
            "--director-email",
            "$(reboot)",
        ],
        vec!["import", "/dev/null", "--firm", "f"],
        vec!["import", "nope.csv", "--firm", "f"],
        vec![
            "client",
            "create",
            "--firm",
            "f",
            "--name",
            "\u{1b}[2J\u{1b}]0;pwned\u{7}Boulangerie",
            "--exercice-start",
            "2026-01-01",
            "--no-invite",
        ],
        vec![
            "client",
            "create",
            "--firm",
            "f",
            "--name",
            "A",
            "--exercice-start",
            "4825-01-01",
            "--no-invite",
        ],
        vec![
            "member",
            "add",
            "--firm",
            "f",
            "--email",
            "a@cabinet.example",
            "--name",
            "Ann\u{1}e",
        ],
    ];
    for args in cases {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
    // Nothing was written: every table but the migrations', and the firm
    // recorded above with its audit entry, is empty.
    let db_url = url.clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let after_counts = rt.block_on(async {
        let db = Database::connect(&db_url, 1).await.expect("db");
        dossier_e2e::dump(&db).await
    });
    for (table, rows) in after_counts {
        if table == "firms" {
            assert_eq!(rows.lines().count(), 2, "default and f only: {rows}");
        } else if table == "audit_log" {
            assert!(
                rows.lines().count() == 1 && rows.contains("'firm.add','f'"),
                "the firm added above only: {rows}"
            );
        } else if table != "_sqlx_migrations" {
            assert!(rows.is_empty(), "{table} holds {rows}");
        }
    }
}

/// Data stored before the text rules, or read from outside, reaches the
/// operator's terminal with its control characters escaped.
#[test]
fn what_the_command_prints_cannot_drive_the_terminal() {
    let env = Env::sqlite();
    env.ok(&["migrate"]);
    env.add_firms();
    env.ok(&[
        "client",
        "create",
        "--firm",
        "f",
        "--name",
        "Boulangerie",
        "--exercice-start",
        "2026-01-01",
        "--no-invite",
    ]);
    let url = format!("sqlite://{}", env.dir.path().join("dossier.db").display());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let db = dossier_core::db::Database::connect(&url, 1).await.expect("db");
        let dossier_core::db::Database::Sqlite(pool) = &db else {
            panic!("sqlite")
        };
        // JSON escapes: the stored text decodes to ESC and BEL.
        sqlx::query(r"UPDATE clients SET company = REPLACE(company, 'Boulangerie', 'Boul\u001b[2J\u0007angerie')")
            .execute(pool)
            .await
            .expect("update");
    });
    let list = env.ok(&["client", "list", "--firm", "f"]);
    assert!(
        !list.contains('\u{1b}') && !list.contains('\u{7}'),
        "{list:?}"
    );
    assert!(list.contains("Boul\\u{1b}[2J\\u{7}angerie"), "{list}");
}

/// Firms are records, and tokens are issued, listed and revoked from the
/// command line: shown once, stored hashed, a typo in a firm refused.
#[test]
fn firms_and_tokens_from_the_command_line() {
    let env = Env::sqlite();
    env.ok(&["migrate"]);
    let out = env.ok(&["firm", "add", "cabinet-durand", "--name", "Cabinet Durand"]);
    assert!(
        out.contains("firm cabinet-durand (Cabinet Durand) added"),
        "{out}"
    );
    let err = env.refused(&["firm", "add", "cabinet-durand", "--name", "Again"]);
    assert!(err.contains("exists already"), "{err}");
    let err = env.refused(&["firm", "add", "cabinet durand", "--name", "X"]);
    assert!(err.contains("letters, digits"), "{err}");
    let err = env.refused(&["firm", "add", "c2", "--name", " "]);
    assert!(err.contains("firm name: it is empty"), "{err}");
    let list = env.json(&["firm", "list", "--json"]);
    let ids: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert_eq!(ids, ["cabinet-durand", "default"]);
    let err = env.refused(&["firm", "show", "cabinet-dupont"]);
    assert!(err.contains("no firm \"cabinet-dupont\""), "{err}");

    // A client of a firm that is not recorded is refused, naming the field.
    let out = env.run(&[
        "client",
        "create",
        "--firm",
        "cabinet-durant",
        "--name",
        "Garage Martin",
        "--exercice-start",
        "2026-01-01",
        "--no-invite",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("firm_id: no firm \"cabinet-durant\": check the spelling"),
        "{err}"
    );
    let err = env.refused(&[
        "member",
        "add",
        "--firm",
        "cabinet-durant",
        "--email",
        "a@b.fr",
        "--name",
        "A",
    ]);
    assert!(err.contains("no firm \"cabinet-durant\""), "{err}");

    // Tokens.
    let out = env.ok(&[
        "token",
        "create",
        "--firm",
        "cabinet-durand",
        "--expires",
        "30d",
    ]);
    let secret = out
        .split_whitespace()
        .find(|w| w.starts_with("dsk_"))
        .expect("the token is printed")
        .to_string();
    assert_eq!(secret.len(), 68, "{out}");
    assert!(out.contains("shown this once"), "{out}");
    assert!(
        out.contains("Scope hooks: firm cabinet-durand's clients"),
        "{out}"
    );
    let quiet = env.ok(&[
        "token", "create", "--scope", "admin", "--name", "ops", "--quiet",
    ]);
    assert!(
        quiet.trim().starts_with("dsk_") && quiet.trim().len() == 68,
        "{quiet}"
    );
    for (args, says) in [
        (vec!["token", "create"], "give --firm"),
        (
            vec![
                "token",
                "create",
                "--scope",
                "admin",
                "--firm",
                "cabinet-durand",
            ],
            "platform-wide",
        ),
        (
            vec!["token", "create", "--firm", "cabinet-durant"],
            "no firm \"cabinet-durant\"",
        ),
        (
            vec![
                "token",
                "create",
                "--firm",
                "cabinet-durand",
                "--expires",
                "2020-01-01",
            ],
            "in the future",
        ),
        (
            vec![
                "token",
                "create",
                "--firm",
                "cabinet-durand",
                "--expires",
                "soon",
            ],
            "in the future",
        ),
        (vec!["token", "revoke", "tok-nope"], "no token \"tok-nope\""),
    ] {
        let err = env.refused(&args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let listed = env.ok(&["token", "list"]);
    assert!(
        !listed.contains(&secret) && !listed.contains(quiet.trim()),
        "{listed}"
    );
    assert!(
        listed.contains("cabinet-durand-hooks") && listed.contains("ops"),
        "{listed}"
    );
    let list = env.json(&["token", "list", "--firm", "cabinet-durand", "--json"]);
    let tokens = list.as_array().expect("tokens");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["state"], "active");
    assert_eq!(tokens[0]["scope"], "hooks");
    let id = tokens[0]["id"].as_str().expect("id").to_string();
    let out = env.ok(&["token", "revoke", &id]);
    assert!(out.contains("revoked"), "{out}");
    let list = env.json(&["token", "list", "--firm", "cabinet-durand", "--json"]);
    assert_eq!(list[0]["state"], "revoked");
    let shown = env.ok(&["firm", "show", "cabinet-durand"]);
    assert!(shown.contains("active tokens  0"), "{shown}");

    // At rest: hashes only.
    let url = env.vars[0].1.clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dump = rt.block_on(async {
        let db = dossier_core::db::Database::connect(&url, 1)
            .await
            .expect("db");
        dossier_e2e::dump(&db).await
    });
    let everything: String = dump.values().cloned().collect();
    assert!(!everything.contains(&secret) && !everything.contains(quiet.trim()));
    assert!(everything.contains(&dossier_core::digest::sha256_hex(secret.as_bytes())));
}

/// An operator pauses a kind and resumes it from the command line; the
/// pause, its reason and who made it show in `dossier queues`.
#[test]
fn queues_pause_and_resume() {
    let mut env = Env::sqlite();
    env.vars.push(("USER".into(), "camille".into()));
    env.ok(&["migrate"]);
    let out = env.ok(&[
        "queues",
        "pause",
        "siret_check",
        "--reason",
        "registre en panne",
    ]);
    assert!(out.contains("siret_check paused"), "{out}");
    let out = env.ok(&["queues", "pause", "siret_check", "--reason", "autre"]);
    assert!(out.contains("paused already"), "{out}");
    let table = env.ok(&["queues"]);
    assert!(
        table.contains("paused: siret_check since ")
            && table.contains(" by camille (command line): registre en panne"),
        "{table}"
    );
    let json = env.json(&["queues", "--json"]);
    let row = json
        .as_array()
        .and_then(|a| a.iter().find(|c| c["kind"] == "siret_check"))
        .expect("the paused kind is listed, even without jobs")
        .clone();
    assert_eq!(row["paused"]["reason"], "registre en panne");
    assert_eq!(row["paused"]["by"], "camille (command line)");
    let err = env.refused(&["queues", "pause", "siret_chek"]);
    assert!(
        err.contains("unknown job kind `siret_chek`; known kinds: siret_check"),
        "{err}"
    );
    let err = env.refused(&["queues", "pause", "siret_check", "--reason", "a\u{1b}[2Jb"]);
    assert!(err.contains("reason:"), "{err}");
    assert!(
        env.ok(&["queues", "resume", "siret_check"])
            .contains("siret_check resumed")
    );
    assert!(
        env.ok(&["queues", "resume", "siret_check"])
            .contains("was not paused")
    );
    assert!(!env.ok(&["queues"]).contains("paused:"));

    // Every action is in the audit trail with who did it; refusals and
    // no-ops are not.
    let out = env.ok(&[
        "enqueue",
        "siret_check",
        "--json",
        r#"{"siret": "73282932000074"}"#,
    ]);
    let job = enqueued_id(&out);
    env.ok(&["jobs", "kill", &job, "--reason", "doublon"]);
    env.ok(&["jobs", "retry", &job]);
    env.ok(&["jobs", "retry", "--all-dead", "--kind", "siret_check"]);
    env.ok(&["firm", "add", "cabinet-audit", "--name", "Cabinet Audit"]);
    let token = env.ok(&["token", "create", "--firm", "cabinet-audit", "--quiet"]);
    let id = env.json(&["token", "list", "--json"])[0]["id"]
        .as_str()
        .expect("token id")
        .to_string();
    env.ok(&["token", "revoke", &id]);
    let trail = env.json(&["audit", "list", "--json"]);
    let entries = trail.as_array().expect("entries");
    let seen: Vec<(String, String)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["target"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expect = |a: &str, t: &str| (a.to_string(), t.to_string());
    assert_eq!(
        seen,
        vec![
            expect("queue.pause", "siret_check"),
            expect("queue.resume", "siret_check"),
            expect("job.enqueue", &job),
            expect("job.kill", &job),
            expect("job.retry", &job),
            expect("queue.retry_dead", "dead jobs of siret_check"),
            expect("firm.add", "cabinet-audit"),
            expect("token.create", &id),
            expect("token.revoke", &id),
        ]
    );
    assert!(
        entries
            .iter()
            .all(|e| e["actor"] == "camille (command line)")
    );
    assert_eq!(
        entries.last().map(|e| e["detail"]["reason"].clone()),
        Some("registre en panne".into())
    );
    let everything = trail.to_string();
    assert!(!everything.contains(token.trim()), "no token in the trail");
    let table = env.ok(&["audit", "list", "--since", "1d"]);
    assert_eq!(table.lines().count(), 9, "{table}");
    assert!(table.contains("camille (command line)") && table.contains("job.kill"));
    assert!(
        env.ok(&["audit", "list", "--since", "2099-01-01"])
            .trim()
            .is_empty()
    );
    let err = env.refused(&["audit", "list", "--since", "hier"]);
    assert!(err.contains("since \"hier\""), "{err}");

    // Scaling a kind, kept in the queue for every worker.
    let out = env.ok(&["queues", "scale", "siret_check", "3"]);
    assert!(
        out.contains("siret_check: 3 slots on every worker"),
        "{out}"
    );
    let table = env.ok(&["queues"]);
    assert!(
        table.contains("scaled: siret_check to 3 slots per worker since ")
            && table.contains(" by camille (command line)"),
        "{table}"
    );
    for bad in ["0", "5000", "beaucoup"] {
        let err = env.refused(&["queues", "scale", "siret_check", bad]);
        assert!(err.contains("give 1 to 1024 slots"), "{bad}: {err}");
    }
    let err = env.refused(&["queues", "scale", "siret_chek", "2"]);
    assert!(err.contains("unknown job kind"), "{err}");
    let out = env.ok(&["queues", "scale", "siret_check", "default"]);
    assert!(
        out.contains("back to each worker's configured concurrency"),
        "{out}"
    );
    assert!(
        env.ok(&["queues", "scale", "siret_check", "default"])
            .contains("was not scaled")
    );
    assert!(!env.ok(&["queues"]).contains("scaled:"));
    let trail = env.json(&["audit", "list", "--limit", "2", "--json"]);
    assert_eq!(trail[0]["action"], "queue.scale");
    assert_eq!(trail[0]["detail"]["concurrency"], serde_json::Value::Null);
    assert_eq!(trail[1]["detail"]["concurrency"], 3);
}

/// An operator finds one client's jobs and one firm's, counts what a bulk
/// action would change, then does it; the bulk action is in the audit
/// trail with its filter, and a bulk action without a filter is refused.
#[test]
fn jobs_found_by_client_and_firm_and_changed_in_bulk() {
    let mut env = Env::sqlite();
    env.vars.push(("USER".into(), "camille".into()));
    env.ok(&["migrate"]);
    env.add_firms();
    let create = |firm: &str, name: &str| {
        let out = env.ok(&[
            "client",
            "create",
            "--firm",
            firm,
            "--name",
            name,
            "--exercice-start",
            "2026-01-01",
            "--director-email",
            "camille@example.fr",
            "--director-first-name",
            "Camille",
            "--director-last-name",
            "Martin",
        ]);
        out.split_whitespace()
            .nth(1)
            .expect("client id")
            .to_string()
    };
    let first = create("cabinet-9", "Boulangerie Martin");
    let second = create("cabinet-9", "Fromagerie Martin");
    let other = create("cabinet-7", "Transports Rivière");
    let table = env.ok(&["queues"]);
    let firms: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("waiting now, per firm"))
        .collect();
    assert_eq!(firms.len(), 3, "{table}");
    assert!(
        firms[1].contains("cabinet-9") && firms[1].contains("4  (interactive 4, bulk 0)"),
        "{table}"
    );
    assert!(
        firms[2].contains("cabinet-7") && firms[2].contains("2  (interactive 2"),
        "{table}"
    );
    let ids = |args: &[&str]| -> Vec<(String, String)> {
        let mut all = vec!["jobs", "list", "--json"];
        all.extend_from_slice(args);
        env.json(&all)
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|j| {
                        (
                            j["subject"].as_str().unwrap_or_default().to_string(),
                            j["group"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let of_first = ids(&["--client", &first]);
    assert_eq!(of_first.len(), 2, "tree_setup and invitation: {of_first:?}");
    assert!(
        of_first
            .iter()
            .all(|(c, f)| *c == first && f == "cabinet-9")
    );
    let of_firm = ids(&["--firm", "cabinet-9"]);
    assert_eq!(of_firm.len(), 4, "{of_firm:?}");
    assert!(of_firm.iter().all(|(c, _)| *c == first || *c == second));
    assert_eq!(ids(&["--firm", "cabinet-7", "--client", &first]), vec![]);
    let table = env.ok(&["jobs", "list", "--client", &other, "--kind", "invitation"]);
    assert_eq!(table.lines().count(), 2, "a header and one job:\n{table}");

    let dry = env.ok(&["jobs", "bulk", "kill", "--firm", "cabinet-9", "--dry-run"]);
    assert!(
        dry.contains(r#"dry run: 4 job(s) match firm="cabinet-9"; 4 would change"#),
        "{dry}"
    );
    assert_eq!(
        ids(&["--status", "dead"]),
        vec![],
        "a dry run changes nothing"
    );
    let done = env.ok(&[
        "jobs",
        "bulk",
        "kill",
        "--firm",
        "cabinet-9",
        "--reason",
        "client parti",
    ]);
    assert!(done.contains("4 changed, 0 skipped"), "{done}");
    assert_eq!(ids(&["--status", "dead"]).len(), 4);
    assert_eq!(ids(&["--error", "CLIENT PARTI"]).len(), 4);
    assert_eq!(
        ids(&["--client", &other, "--status", "pending"]).len(),
        2,
        "the other firm's untouched"
    );
    let back = env.ok(&[
        "jobs", "bulk", "retry", "--client", &first, "--status", "dead",
    ]);
    assert!(back.contains("2 changed"), "{back}");
    let later = env.ok(&[
        "jobs",
        "bulk",
        "reschedule",
        "--client",
        &first,
        "--run-at",
        "2h",
    ]);
    assert!(later.contains("2 changed"), "{later}");
    assert_eq!(ids(&["--client", &first, "--status", "scheduled"]).len(), 2);

    let trail = env.ok(&["audit", "list"]);
    for want in [
        r#"jobs.bulk_kill"#,
        r#"firm="cabinet-9""#,
        "jobs.bulk_retry",
        "jobs.bulk_reschedule",
        "camille (command line)",
    ] {
        assert!(trail.contains(want), "missing {want:?} in\n{trail}");
    }
    assert_eq!(
        trail.matches("jobs.bulk_kill").count(),
        1,
        "a dry run is not an action:\n{trail}"
    );

    let err = env.refused(&["jobs", "bulk", "retry"]);
    assert!(err.contains("a bulk action needs a filter"), "{err}");
    let err = env.refused(&[
        "jobs",
        "bulk",
        "reschedule",
        "--client",
        &first,
        "--run-at",
        "demain",
    ]);
    assert!(err.contains("run at \"demain\""), "{err}");
    let err = env.refused(&["jobs", "bulk", "retry", "--kind", "siret_chek"]);
    assert!(err.contains("unknown job kind `siret_chek`"), "{err}");
    let err = env.refused(&["jobs", "list", "--status", "morte"]);
    assert!(err.contains("unknown status `morte`"), "{err}");

    // Everything held about one client, for its people's requests.
    let doc = env.json(&["client", "export", &first]);
    assert_eq!(doc["format"], "dossier.client-export/1");
    assert_eq!(doc["client"]["id"], first.as_str());
    assert_eq!(doc["invitations"][0]["email"], "camille@example.fr");
    assert_eq!(doc["jobs"].as_array().map(Vec::len), Some(2), "{doc}");
    let file = env.dir.path().join("export.json");
    let file = file.to_str().expect("path");
    let said = env.ok(&["client", "export", &first, "--out", file]);
    assert!(said.contains("(2 jobs, 1 invitations)"), "{said}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("written")).expect("JSON");
    assert_eq!(written["client"]["id"], first.as_str());
    let err = env.refused(&["client", "export", &first, "--out", file]);
    assert!(err.contains("export.json"), "never overwritten: {err}");
    let err = env.refused(&["client", "export", "no-such-client"]);
    assert!(err.contains("no client with id no-such-client"), "{err}");
    assert!(env.ok(&["audit", "list"]).contains("client.export"));

    // Archived: its work stops, it leaves the listing, nothing is deleted.
    let said = env.ok(&["client", "archive", &first]);
    assert!(
        said.contains(&format!(
            "client {first} archived: 2 waiting job(s) cancelled, 1 invitation(s) revoked, 0 app(s) disabled"
        )),
        "{said}"
    );
    let listed = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["client", "list", "--firm", "cabinet-9", "--json"];
        all.extend_from_slice(args);
        env.json(&all)
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(listed(&[]), [second.as_str()]);
    assert_eq!(listed(&["--archived"]), [first.as_str()]);
    assert_eq!(ids(&["--client", &first, "--status", "dead"]).len(), 2);
    let said = env.ok(&["client", "archive", &first]);
    assert!(
        said.contains("archived (already; finished): 0 waiting"),
        "{said}"
    );
    let said = env.ok(&["client", "unarchive", &first]);
    assert!(
        said.contains("unarchived: 2 job(s) restarted, 1 invitation(s) sent again"),
        "{said}"
    );
    assert_eq!(listed(&[]).len(), 2);
    assert!(
        env.ok(&["client", "unarchive", &first])
            .contains("is not archived")
    );
    let err = env.refused(&["client", "archive", "no-such-client"]);
    assert!(err.contains("no client with id no-such-client"), "{err}");
    let trail = env.ok(&["audit", "list"]);
    assert!(
        trail.contains("client.archive") && trail.contains("client.unarchive"),
        "{trail}"
    );

    // Erasure: an archived client only; then it stays archived.
    let err = env.refused(&["client", "erase", &first]);
    assert!(
        err.contains("is not archived: `dossier client archive"),
        "{err}"
    );
    env.ok(&["client", "archive", &first]);
    let said = env.ok(&["client", "erase", &first]);
    assert!(
        said.contains("its people's data erased; removed or replaced"),
        "{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.trim_start().starts_with("invitations") && l.trim_end().ends_with(" 1")),
        "{said}"
    );
    assert!(
        env.ok(&["client", "erase", &first])
            .contains("erased (again)")
    );
    let err = env.refused(&["client", "unarchive", &first]);
    assert!(err.contains("was erased: it stays archived"), "{err}");
    // One person across the firm's clients (the second has Camille too).
    let said = env.ok(&[
        "person",
        "erase",
        "--email",
        "Camille@Example.fr",
        "--firm",
        "cabinet-9",
    ]);
    assert!(
        said.lines()
            .any(|l| l.trim_start().starts_with("invitations") && l.trim_end().ends_with(" 1")),
        "{said}"
    );
    let err = env.refused(&["person", "erase", "--email", "camille"]);
    assert!(err.contains("not an email address"), "{err}");
    let trail = env.ok(&["audit", "list"]);
    assert!(
        trail.contains("person.erase") && trail.contains("a person of firm cabinet-9"),
        "{trail}"
    );
    assert!(
        !trail.to_lowercase().contains("camille@example.fr"),
        "the trail names no one:\n{trail}"
    );
}

/// An action whose audit entry cannot be written (here the business
/// database was never migrated: no audit trail table) is still done, exits
/// 0, and says it was not recorded.
#[test]
fn an_action_the_audit_trail_cannot_record_is_done_and_says_so() {
    let env = Env::redis();
    let out = env.run(&[
        "queues",
        "pause",
        "siret_check",
        "--reason",
        "registre en panne",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("siret_check paused"), "{stdout}");
    assert!(
        stderr.contains("note: done, but not recorded in the audit trail"),
        "{stderr}"
    );
    assert!(env.ok(&["queues"]).contains("paused: siret_check"));
    assert!(
        env.ok(&["queues", "resume", "siret_check"])
            .contains("siret_check resumed")
    );
}

#[test]
fn webhook_endpoints_are_added_listed_rotated_and_removed_with_the_secret_shown_once() {
    let mut env = Env::sqlite();
    env.vars.push((
        "DOSSIER__APPS__ENCRYPTION_KEYS".into(),
        format!("[\"k1:{}\"]", "ef".repeat(32)),
    ));
    env.ok(&["migrate"]);
    env.add_firms();
    // Checked before anything is stored: the policy, the types, the firm.
    let plain = env.refused(&[
        "webhook",
        "add",
        "--firm",
        "f1",
        "--url",
        "http://app.example/hook",
        "--events",
        "all",
    ]);
    assert!(plain.contains("https"), "{plain}");
    let typo = env.refused(&[
        "webhook",
        "add",
        "--firm",
        "f1",
        "--url",
        "https://app.example/hook",
        "--events",
        "client.ready,client.redy",
    ]);
    assert!(
        typo.contains("\"client.redy\" is not an event type"),
        "{typo}"
    );
    let firm = env.refused(&[
        "webhook",
        "add",
        "--firm",
        "nope",
        "--url",
        "https://app.example/hook",
        "--events",
        "all",
    ]);
    assert!(firm.contains("no firm \"nope\""), "{firm}");
    let secret = env.ok(&[
        "webhook",
        "add",
        "--firm",
        "f1",
        "--url",
        "https://app.example/hook",
        "--events",
        "client.ready,invitation.sent",
        "--quiet",
    ]);
    let secret = secret.trim().to_string();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 70,
        "{secret}"
    );
    let list = env.json(&["webhook", "list", "--json"]);
    let e = &list[0];
    assert_eq!(e["firm_id"], "f1");
    assert_eq!(e["state"], "enabled");
    assert_eq!(
        e["events"],
        serde_json::json!(["client.ready", "invitation.sent"])
    );
    let id = e["id"].as_str().expect("id").to_string();
    let shown = env.ok(&["webhook", "list"]);
    assert!(shown.contains(&id) && !shown.contains(&secret), "{shown}");
    // At rest the secret is sealed: the database file never holds it.
    let db = std::fs::read(env.dir.path().join("dossier.db")).expect("db file");
    let wal = std::fs::read(env.dir.path().join("dossier.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is stored in clear"
        );
    }
    let rotated = env.ok(&["webhook", "rotate-secret", &id, "--quiet"]);
    assert!(rotated.trim().starts_with("whsec_") && rotated.trim() != secret);
    assert!(
        env.refused(&["webhook", "remove", "whk_nope"])
            .contains("no webhook endpoint")
    );
    env.ok(&["webhook", "remove", &id]);
    assert_eq!(
        env.json(&["webhook", "list", "--json"]),
        serde_json::json!([])
    );
    let trail = env.ok(&["audit", "list"]);
    for action in ["webhook.add", "webhook.rotate_secret", "webhook.remove"] {
        assert!(trail.contains(action), "{trail}");
    }
}

#[test]
fn completions_for_each_shell_and_examples_in_the_most_used_helps() {
    let env = Env::sqlite();
    let bash = env.ok(&["completions", "bash"]);
    assert!(
        bash.contains("_dossier()") && bash.contains("webhook"),
        "{bash}"
    );
    // The script parses as bash.
    let dir = env.dir.path().join("dossier.bash");
    std::fs::write(&dir, &bash).expect("write");
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&dir)
        .output()
        .expect("bash runs");
    assert!(checked.status.success(), "{checked:?}");
    for (shell, marker) in [("zsh", "#compdef dossier"), ("fish", "complete -c dossier")] {
        let script = env.ok(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: {script}");
    }
    assert!(
        env.refused(&["completions", "tcsh"])
            .contains("possible values")
    );
    for args in [
        &["client", "create", "--help"][..],
        &["import", "--help"],
        &["jobs", "list", "--help"],
        &["webhook", "add", "--help"],
    ] {
        let help = env.ok(args);
        assert!(help.contains("Examples:\n  dossier "), "{args:?}: {help}");
    }
    // No database was needed, and none was made.
    assert!(!env.dir.path().join("dossier.db").exists());
}
