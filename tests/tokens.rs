//! Firms' tokens and admin tokens over every route, on each deployment:
//! each route is called with a token of the firm that owns the data, a
//! token of another firm, an admin token, an expired one, a revoked one and
//! malformed ones. A firm sees its own firm only (another firm's client or
//! invitation answers exactly like one that does not exist), never reaches
//! the admin routes or the maintenance kinds, and a refused request
//! changes nothing.

use dossier_core::api_tokens::{self, NewToken, Scope};
use dossier_core::clock::now_ms;
use dossier_core::db::Database;
use dossier_core::http::{Auth, ROUTES};
use dossier_e2e::{BackendKind, TestQueue};

const CONFIGURED: &str = "configured-token-abcdefghijklmnop";

struct Tokens {
    own: String,
    other: String,
    admin: String,
    expired: String,
    revoked: String,
}

async fn issue(db: &Database, firm: Option<&str>, scope: Scope, expires: Option<i64>) -> String {
    api_tokens::create(
        db,
        NewToken {
            name: None,
            firm_id: firm.map(str::to_string),
            scope,
            expires_at_ms: expires,
        },
    )
    .await
    .expect("token")
    .1
}

async fn tokens(db: &Database) -> Tokens {
    let revoked = api_tokens::create(
        db,
        NewToken {
            name: Some("leaked".into()),
            firm_id: Some("firm-a".into()),
            scope: Scope::Hooks,
            expires_at_ms: None,
        },
    )
    .await
    .expect("token");
    api_tokens::revoke(db, &revoked.0.id).await.expect("revoke");
    Tokens {
        own: issue(db, Some("firm-a"), Scope::Hooks, None).await,
        other: issue(db, Some("firm-b"), Scope::Hooks, Some(now_ms() + 3_600_000)).await,
        admin: issue(db, None, Scope::Admin, None).await,
        expired: issue(db, Some("firm-a"), Scope::Hooks, Some(now_ms() - 1_000)).await,
        revoked: revoked.1,
    }
}

/// Bearer values that are not tokens: garbage, a token's shape with a
/// wrong digit, one too long, non-ASCII.
fn malformed(own: &str) -> Vec<String> {
    let mut flipped = own.to_string();
    let last = if flipped.ends_with('0') { "1" } else { "0" };
    flipped.replace_range(flipped.len() - 1.., last);
    vec![
        "nope".into(),
        flipped,
        format!("{own}{own}"),
        "dsk_".to_string() + &"z".repeat(64),
        "x".repeat(10_000),
    ]
}

async fn count(db: &Database, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let n: (i64,) = match db {
        Database::Sqlite(p) => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_one(p).await,
        Database::Postgres(p) => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_one(p).await,
    }
    .expect("count");
    n.0
}

/// Makes `invitation` sent, with `token` as its link (what the mail job
/// would do, without a mail server).
async fn sent_invitation(db: &Database, invitation: &str, token: &str) {
    let hash = dossier_core::digest::sha256_hex(token.as_bytes());
    let far = now_ms() + 86_400_000;
    let sql =
        "UPDATE invitations SET status = 'sent', token_hash = $1, expires_at = $2 WHERE id = $3";
    let done = match db {
        Database::Sqlite(p) => sqlx::query(sql)
            .bind(&hash)
            .bind(far)
            .bind(invitation)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
        Database::Postgres(p) => sqlx::query(sql)
            .bind(&hash)
            .bind(far)
            .bind(invitation)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
    }
    .expect("invitation");
    assert_eq!(done, 1);
}

async fn every_route_by_every_kind_of_token(kind: BackendKind) {
    let mut q = TestQueue::new(kind).await;
    let db = q.business_db().await;
    dossier_core::firms::add(&db, "firm-a", "Cabinet A")
        .await
        .expect("firm a");
    dossier_core::firms::add(&db, "firm-b", "Cabinet B")
        .await
        .expect("firm b");
    let t = tokens(&db).await;
    let settings = dossier_e2e::with_token(q.settings.clone(), CONFIGURED);
    let (base, stop) = dossier_e2e::serve_api(&db, q.backend.clone(), &settings).await;
    let web = reqwest::Client::new();
    let call = |method: &str, path: &str, bearer: &str, body: Option<serde_json::Value>| {
        let url = format!("{base}{path}");
        let r = match method {
            "get" => web.get(url),
            "delete" => web.delete(url),
            _ => web.post(url).json(&body.unwrap_or(serde_json::json!({}))),
        };
        let bearer = bearer.to_string();
        async move {
            let r = r.bearer_auth(bearer).send().await.expect("request");
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body)
        }
    };
    let form = |firm: Option<&str>, name: &str| {
        let mut f = serde_json::json!({
            "company": { "legal_name": name },
            "exercice": { "start": "2026-01-01" },
            "director": { "email": format!("direction@{}.fr", name.to_lowercase().replace(' ', "-")), "first_name": "Anne", "last_name": "Durand" },
        });
        if let Some(firm) = firm {
            f["firm_id"] = firm.into();
        }
        f
    };

    // POST /v1/clients: a firm's token creates in its own firm (named or
    // not); naming another firm reads as a firm that does not exist.
    let (st, created) = call("post", "/v1/clients", &t.own, Some(form(None, "Alpha"))).await;
    assert_eq!(st, 201, "own token, firm left out: {created}");
    let client_a = created["client_id"].as_str().expect("id").to_string();
    let invitation_a = created["invitation_id"]
        .as_str()
        .expect("invitation")
        .to_string();
    let (st, body) = call(
        "post",
        "/v1/clients",
        &t.own,
        Some(form(Some("firm-a"), "Beta")),
    )
    .await;
    assert_eq!(st, 201, "own token, own firm named: {body}");
    let clients_before = count(&db, "clients").await;
    let (st, other) = call(
        "post",
        "/v1/clients",
        &t.other,
        Some(form(Some("firm-a"), "Gamma")),
    )
    .await;
    let (st_none, none) = call(
        "post",
        "/v1/clients",
        &t.admin,
        Some(form(Some("firm-z"), "Gamma")),
    )
    .await;
    assert_eq!((st, st_none), (422, 422), "{other} / {none}");
    assert_eq!(other["problems"][0]["pointer"], "/firm_id", "{other}");
    assert_eq!(
        other["problems"][0]["message"]
            .as_str()
            .map(|m| m.replace("firm-a", "F")),
        none["problems"][0]["message"]
            .as_str()
            .map(|m| m.replace("firm-z", "F")),
        "another firm reads exactly as one that does not exist"
    );
    let (st, body) = call("post", "/v1/clients", &t.admin, Some(form(None, "Gamma"))).await;
    assert_eq!(st, 422, "a platform token names the firm: {body}");
    assert_eq!(body["problems"][0]["pointer"], "/firm_id");
    for bad in [&t.expired, &t.revoked] {
        let (st, _) = call(
            "post",
            "/v1/clients",
            bad,
            Some(form(Some("firm-a"), "Delta")),
        )
        .await;
        assert_eq!(st, 401);
    }
    for bad in malformed(&t.own) {
        let (st, _) = call(
            "post",
            "/v1/clients",
            &bad,
            Some(form(Some("firm-a"), "Delta")),
        )
        .await;
        assert_eq!(st, 401, "{}", &bad[..bad.len().min(20)]);
    }
    assert_eq!(
        count(&db, "clients").await,
        clients_before,
        "refusals create nothing"
    );
    let (st, body) = call(
        "post",
        "/v1/clients",
        &t.admin,
        Some(form(Some("firm-b"), "Epsilon")),
    )
    .await;
    assert_eq!(st, 201, "admin creates in any firm: {body}");
    let client_b = body["client_id"].as_str().expect("id").to_string();
    let (st, _) = call(
        "post",
        "/v1/clients",
        CONFIGURED,
        Some(form(Some("firm-b"), "Zeta")),
    )
    .await;
    assert_eq!(st, 201, "a configured token is platform-wide");

    // The same Idempotency-Key in two firms is two requests.
    let keyed = |bearer: &str, name: &str| {
        web.post(format!("{base}/v1/clients"))
            .bearer_auth(bearer.to_string())
            .header("Idempotency-Key", "shared-key")
            .json(&form(None, name))
            .send()
    };
    let a: serde_json::Value = keyed(&t.own, "Eta")
        .await
        .expect("a")
        .json()
        .await
        .expect("a");
    let b = keyed(&t.other, "Eta").await.expect("b");
    assert_eq!(b.status(), 201);
    let b: serde_json::Value = b.json().await.expect("b");
    assert_ne!(
        a["client_id"], b["client_id"],
        "firm B does not get firm A's answer"
    );

    // GET /v1/clients/{id}: another firm's client answers like none.
    let path = format!("/v1/clients/{client_a}");
    assert_eq!(call("get", &path, &t.own, None).await.0, 200);
    assert_eq!(call("get", &path, &t.admin, None).await.0, 200);
    assert_eq!(call("get", &path, CONFIGURED, None).await.0, 200);
    let hidden = call("get", &path, &t.other, None).await;
    let missing = call("get", "/v1/clients/no-such-client", &t.other, None).await;
    assert_eq!(
        hidden, missing,
        "another firm's client is not found, exactly"
    );
    assert_eq!(hidden.0, 404);
    assert_eq!(
        call("get", &format!("/v1/clients/{client_b}"), &t.own, None)
            .await
            .0,
        404
    );
    for bad in [t.expired.clone(), t.revoked.clone()]
        .into_iter()
        .chain(malformed(&t.own))
    {
        assert_eq!(call("get", &path, &bad, None).await.0, 401);
    }

    // GET /v1/clients/{id}/export: the firm's own clients, everything held
    // about them; another firm's client answers like none.
    let export = format!("/v1/clients/{client_a}/export");
    let (st, doc) = call("get", &export, &t.own, None).await;
    assert_eq!(st, 200, "{doc}");
    assert_eq!(doc["format"], "dossier.client-export/1");
    assert_eq!(doc["client"]["id"], client_a.as_str());
    assert_eq!(
        doc["invitations"][0]["email"], "direction@alpha.fr",
        "{doc}"
    );
    assert!(
        doc["jobs"]
            .as_array()
            .is_some_and(|j| !j.is_empty() && j.iter().all(|j| j["subject"] == client_a.as_str())),
        "the client's jobs, on this queue: {doc}"
    );
    assert_eq!(call("get", &export, &t.admin, None).await.0, 200);
    let hidden = call("get", &export, &t.other, None).await;
    let missing = call("get", "/v1/clients/no-such-client/export", &t.other, None).await;
    assert_eq!(
        hidden, missing,
        "another firm's client is not exported, exactly"
    );
    assert_eq!(hidden.0, 404);
    for bad in [t.expired.clone(), t.revoked.clone()]
        .into_iter()
        .chain(malformed(&t.own))
    {
        assert_eq!(call("get", &export, &bad, None).await.0, 401);
    }

    // POST /v1/clients/{id}/archive and /unarchive: the firm's own clients
    // (and an admin); another firm's client answers like none.
    let archive = format!("/v1/clients/{client_a}/archive");
    let unarchive = format!("/v1/clients/{client_a}/unarchive");
    for path in [&archive, &unarchive] {
        let hidden = call("post", path, &t.other, None).await;
        let missing = call(
            "post",
            &path.replace(client_a.as_str(), "no-such-client"),
            &t.other,
            None,
        )
        .await;
        assert_eq!(
            hidden, missing,
            "another firm's client is not touched, exactly"
        );
        assert_eq!(hidden.0, 404);
        for bad in [t.expired.clone(), t.revoked.clone()]
            .into_iter()
            .chain(malformed(&t.own))
        {
            assert_eq!(call("post", path, &bad, None).await.0, 401);
        }
    }
    let (st, done) = call("post", &archive, &t.own, None).await;
    assert_eq!((st, done["already"].clone()), (200, false.into()), "{done}");
    let (st, shown) = call("get", &format!("/v1/clients/{client_a}"), &t.own, None).await;
    assert!(
        st == 200 && shown["client"]["archived_at_ms"].is_i64(),
        "{shown}"
    );
    let (st, back) = call("post", &unarchive, &t.admin, None).await;
    assert_eq!(
        (st, back["was_active"].clone()),
        (200, false.into()),
        "{back}"
    );
    let (_, shown) = call("get", &format!("/v1/clients/{client_a}"), &t.own, None).await;
    assert!(shown["client"]["archived_at_ms"].is_null(), "{shown}");

    // POST /v1/clients/{id}/erase: an archived client only (409 here);
    // another firm's client answers like none.
    let erase = format!("/v1/clients/{client_a}/erase");
    let (st, body) = call("post", &erase, &t.own, None).await;
    assert_eq!(st, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("is not archived")),
        "{body}"
    );
    let hidden = call("post", &erase, &t.other, None).await;
    let missing = call("post", "/v1/clients/no-such-client/erase", &t.other, None).await;
    assert_eq!(hidden, missing);
    assert_eq!(hidden.0, 404);
    // POST /v1/persons/erase: a firm's token erases in its own firm only.
    let nobody = serde_json::json!({ "email": "personne@inconnu.example" });
    let (st, body) = call("post", "/v1/persons/erase", &t.own, Some(nobody.clone())).await;
    assert_eq!(st, 200, "{body}");
    let elsewhere = serde_json::json!({ "email": "personne@inconnu.example", "firm_id": "firm-b" });
    assert_eq!(
        call("post", "/v1/persons/erase", &t.own, Some(elsewhere))
            .await
            .0,
        404
    );
    let (st, _) = call(
        "post",
        "/v1/persons/erase",
        &t.own,
        Some(serde_json::json!({ "email": "sans-arobase" })),
    )
    .await;
    assert_eq!(st, 400);
    for bad in [t.expired.clone(), t.revoked.clone()]
        .into_iter()
        .chain(malformed(&t.own))
    {
        assert_eq!(call("post", &erase, &bad, None).await.0, 401);
        assert_eq!(
            call("post", "/v1/persons/erase", &bad, Some(nobody.clone()))
                .await
                .0,
            401
        );
    }

    // POST /v1/jobs/{kind}: a firm's own clients' kinds; never another
    // firm's client, never a maintenance kind.
    let jobs = || async {
        q.backend
            .counts()
            .await
            .expect("counts")
            .iter()
            .map(|c| c.pending + c.scheduled + c.running + c.retrying + c.done + c.dead)
            .sum::<u64>()
    };
    let jobs_before = jobs().await;
    let enrich = |client: &str| Some(serde_json::json!({ "payload": { "client_id": client } }));
    let hidden = call(
        "post",
        "/v1/jobs/siret_enrichment",
        &t.other,
        enrich(&client_a),
    )
    .await;
    let missing = call(
        "post",
        "/v1/jobs/siret_enrichment",
        &t.other,
        enrich("no-such-client"),
    )
    .await;
    assert_eq!(hidden.0, 404, "{}", hidden.1);
    assert_eq!(hidden, missing);
    let (st, body) = call(
        "post",
        "/v1/jobs/invitation",
        &t.other,
        Some(serde_json::json!({ "payload": { "invitation_id": invitation_a, "generation": 1 } })),
    )
    .await;
    assert_eq!(st, 404, "another firm's invitation: {body}");
    for maintenance in ["exercice_rollover", "invitation_housekeeping"] {
        let (st, body) = call(
            "post",
            &format!("/v1/jobs/{maintenance}"),
            &t.own,
            Some(serde_json::json!({ "payload": {} })),
        )
        .await;
        assert_eq!(st, 403, "{maintenance}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("admin token")
        );
    }
    for bad in [t.expired.clone(), t.revoked.clone()]
        .into_iter()
        .chain(malformed(&t.own))
    {
        assert_eq!(
            call("post", "/v1/jobs/siret_enrichment", &bad, enrich(&client_a))
                .await
                .0,
            401
        );
    }
    assert_eq!(jobs().await, jobs_before, "refused enqueues add no job");
    let (st, body) = call(
        "post",
        "/v1/jobs/siret_enrichment",
        &t.own,
        enrich(&client_a),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    let (st, body) = call(
        "post",
        "/v1/jobs/siret_check",
        &t.own,
        Some(serde_json::json!({ "payload": { "siret": "73282932000074" } })),
    )
    .await;
    assert_eq!(st, 202, "a computation on the payload alone: {body}");
    let (st, body) = call(
        "post",
        "/v1/jobs/exercice_rollover",
        &t.admin,
        Some(serde_json::json!({ "payload": {} })),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    // A firm's job keys are its own.
    let keyed_job = |bearer: &str, client: &str| {
        call(
            "post",
            "/v1/jobs/siret_enrichment",
            bearer,
            Some(
                serde_json::json!({ "payload": { "client_id": client }, "idempotency_key": "k1" }),
            ),
        )
    };
    let own_job = keyed_job(&t.own, &client_a).await;
    let admin_job = keyed_job(&t.admin, &client_b).await;
    assert_eq!(
        (own_job.0, admin_job.0),
        (202, 202),
        "{own_job:?} {admin_job:?}"
    );

    // POST /v1/invitations/accept: another firm's link reads as invalid
    // and stays valid for its own firm.
    let link = "ab".repeat(32);
    sent_invitation(&db, &invitation_a, &link).await;
    let accept = |bearer: &str| {
        call(
            "post",
            "/v1/invitations/accept",
            bearer,
            Some(serde_json::json!({ "token": link })),
        )
    };
    let hidden = accept(&t.other).await;
    assert_eq!(hidden.0, 404, "{}", hidden.1);
    assert_eq!(hidden.1["error"], "invitation_invalid");
    for bad in [t.expired.clone(), t.revoked.clone()] {
        assert_eq!(accept(&bad).await.0, 401);
    }
    let (st, body) = accept(&t.own).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["client_id"], client_a.as_str());

    // The admin routes: platform-wide tokens only.
    for (method, path, auth) in ROUTES {
        if *auth != Auth::Admin {
            continue;
        }
        let path = path
            .replace("{id}", "no-such-job")
            .replace("{kind}", "siret_check");
        for firm in [&t.own, &t.other] {
            let (st, body) = call(method, &path, firm, None).await;
            assert_eq!(st, 403, "{method} {path}: {body}");
        }
        for bad in [t.expired.clone(), t.revoked.clone()]
            .into_iter()
            .chain(malformed(&t.own))
        {
            assert_eq!(
                call(method, &path, &bad, None).await.0,
                401,
                "{method} {path}"
            );
        }
        let (st, body) = call(method, &path, &t.admin, None).await;
        assert!(
            st != 401 && st != 403,
            "{method} {path} with an admin token: {st} {body}"
        );
    }
    assert_eq!(call("get", "/v1/admin/queues", &t.admin, None).await.0, 200);
    assert_eq!(call("get", "/metrics", CONFIGURED, None).await.0, 200);

    // Every route the list names is covered above, and the public ones
    // need no token.
    for (method, path, auth) in ROUTES {
        if *auth == Auth::Public {
            let url = format!("{base}{path}");
            let r = if *method == "get" {
                web.get(url)
            } else {
                web.post(url)
            };
            assert_ne!(
                r.send().await.expect("public").status().as_u16(),
                401,
                "{path}"
            );
        }
    }

    // What the admin token did is on record under its name; what was
    // refused, or touched nothing, is not.
    let trail = dossier_core::audit::list(&db, None, 100)
        .await
        .expect("audit");
    let done: Vec<(&str, &str, &str)> = trail
        .iter()
        .rev()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        done.iter().filter(|d| d.1 == "job.enqueue").count(),
        1,
        "the maintenance job the admin token queued: {done:?}"
    );
    assert!(
        done.contains(&("platform-admin (API)", "queue.pause", "siret_check")),
        "{done:?}"
    );
    assert!(
        done.contains(&("platform-admin (API)", "queue.resume", "siret_check")),
        "{done:?}"
    );
    assert!(
        done.contains(&(
            "platform-admin (API)",
            "queue.retry_dead",
            "dead jobs of siret_check"
        )),
        "{done:?}"
    );
    assert!(
        !done.iter().any(|d| d.2 == "no-such-job"),
        "nothing was retried or killed: {done:?}"
    );
    // Exports are on record too, under the token that asked.
    let exports: Vec<_> = done.iter().filter(|d| d.1 == "client.export").collect();
    assert_eq!(exports.len(), 2, "{done:?}");
    assert!(exports.iter().all(|d| d.2 == client_a));
    assert!(
        done.iter()
            .any(|d| d.1 == "client.archive" && d.2 == client_a && d.0 != "platform-admin (API)"),
        "archived under the firm's token: {done:?}"
    );
    assert!(
        done.iter()
            .filter(|d| !["client.export", "client.archive", "person.erase"].contains(&d.1))
            .all(|d| d.0 == "platform-admin (API)"),
        "{done:?}"
    );
    let (st, body) = call("get", "/v1/admin/audit?since=1d", &t.admin, None).await;
    assert_eq!(st, 200);
    assert_eq!(body.as_array().map(Vec::len), Some(trail.len()));

    // Only hashes are stored, and uses are recorded.
    let list = api_tokens::list(&db, None).await.expect("list");
    assert_eq!(list.len(), 5);
    let own = list
        .iter()
        .find(|r| r.firm_id.as_deref() == Some("firm-a") && r.state(now_ms()) == "active")
        .expect("own");
    assert!(own.last_used_at_ms.is_some(), "{own:?}");
    let dump = dossier_e2e::dump(&db).await;
    let everything: String = dump.values().cloned().collect();
    for secret in [&t.own, &t.other, &t.admin, &t.expired, &t.revoked] {
        assert!(
            !everything.contains(secret.as_str()),
            "a token is stored as itself"
        );
    }

    // The database cannot be read: an issued token cannot be checked, and
    // is answered 503 (try again), not 401 (a bad token); a configured
    // token needs no database and still reaches the queue.
    match &db {
        Database::Sqlite(pool) => pool.close().await,
        Database::Postgres(pool) => pool.close().await,
    }
    let (st, body) = call("get", "/v1/admin/queues", &t.admin, None).await;
    assert_eq!(st, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot check tokens")),
        "{body}"
    );
    let (st, _) = call("get", "/v1/admin/queues", CONFIGURED, None).await;
    assert_eq!(st, 200);

    stop.cancel();
    q.cleanup_with(db).await;
}

dossier_e2e::on_each_backend!(every_route_by_every_kind_of_token);
