//! Tenancy against the real wispd: organizations and tokens, isolation between orgs on every
//! route, attenuated tokens (sprite-scoped, read-only, exec-only, expired, tampered), and the
//! per-org limits with their 429 bodies.

mod common;

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{collect, exec_path, DaemonOptions, Exec, TestDaemon};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wisp_api::attenuation::{attenuate, AttenuatedToken, Caveat, Op};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

struct Res {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// A request with `token` (none when empty); the body is JSON when given.
async fn call(d: &TestDaemon, token: &str, method: Method, path: &str, body: Option<Value>) -> Res {
    let mut rb = d.client().request(method, d.url(path));
    if !token.is_empty() {
        rb = rb.bearer_auth(token);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let res = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}\n{}", d.log()));
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap_or_default();
    Res {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

async fn get(d: &TestDaemon, token: &str, path: &str) -> Res {
    call(d, token, Method::GET, path, None).await
}

/// The status of a WebSocket handshake on `path` (101 when it upgraded).
async fn ws_status(d: &TestDaemon, token: &str, path: &str) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = d.ws_url(path).into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("{path}: {e:?}"),
    }
}

/// Runs `argv` over the exec WebSocket with `token`.
async fn exec_with(d: &TestDaemon, token: &str, sprite: &str, argv: &[&str]) -> Exec {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = d
        .ws_url(&exec_path(sprite, argv, &[]))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_or_else(|e| panic!("exec {argv:?}: {e:?}\n{}", d.log()));
    Exec::from(collect(&mut ws).await)
}

fn assert_json_error(r: &Res, status: u16, what: &str) {
    assert_eq!(r.status.as_u16(), status, "{what}: {}", r.body);
    assert!(
        r.body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: not a JSON error: {}",
        r.body
    );
}

/// Creates the org `slug` (admin) and mints a token for it; returns `(token, token id)`.
async fn org_with_token(d: &TestDaemon, slug: &str) -> (String, String) {
    let r = call(
        d,
        &d.token,
        Method::POST,
        "/v1/organizations",
        Some(json!({"slug": slug})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    mint(d, &d.token, slug, "test").await
}

async fn mint(d: &TestDaemon, token: &str, slug: &str, description: &str) -> (String, String) {
    let r = call(
        d,
        token,
        Method::POST,
        &format!("/v1/organizations/{slug}/tokens"),
        Some(json!({"description": description})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (
        r.body["token"].as_str().unwrap().to_string(),
        r.body["id"].as_str().unwrap().to_string(),
    )
}

fn narrow(token: &str, caveats: &[Caveat]) -> String {
    attenuate(token, caveats).unwrap().encode()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn create_as(d: &TestDaemon, token: &str, name: &str) -> Res {
    call(
        d,
        token,
        Method::POST,
        "/v1/sprites",
        Some(json!({"name": name})),
    )
    .await
}

async fn names(d: &TestDaemon, token: &str) -> BTreeSet<String> {
    let r = get(d, token, "/v1/sprites").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["sprites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Asserts a 429 in the hosted API's shape.
fn assert_limit(r: &Res, code: &str, limit: u64) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let b = &r.body;
    assert_eq!(b["error"], code, "{b}");
    assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
    assert_eq!(b["limit"], limit, "{b}");
    for k in ["window_seconds", "current_count", "retry_after_seconds"] {
        assert!(b[k].is_u64(), "{k}: {b}");
    }
    assert!(b["retry_after_seconds"].as_u64().unwrap() >= 1, "{b}");
    let ra: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(ra, b["retry_after_seconds"].as_u64().unwrap());
}

// ---------------------------------------------------------------------------------------------
// The route table: every authenticated sprite route, checked against the router's source.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Http,
    /// A WebSocket upgrade.
    Ws,
}

type Route = (Method, &'static str, &'static str, Option<Value>, Kind);

/// The routes of [`route_table`] that the router has.
fn sprite_routes() -> Vec<Route> {
    let registered = registered_templates();
    route_table()
        .into_iter()
        .filter(|r| registered.contains(r.1))
        .collect()
}

/// `(method, template, query, body, kind)`; `{name}` is substituted, `{id}` is `v0`,
/// `{session_id}` is `1`, `{svc}` is `web`.
fn route_table() -> Vec<Route> {
    use Kind::*;
    let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap();
    vec![
        (m("GET"), "/v1/sprites/{name}", "", None, Http),
        (
            m("PUT"),
            "/v1/sprites/{name}",
            "",
            Some(json!({"labels": ["x"]})),
            Http,
        ),
        (m("DELETE"), "/v1/sprites/{name}", "", None, Http),
        (
            m("POST"),
            "/v1/sprites/{name}/sleep",
            "?mode=cold",
            None,
            Http,
        ),
        (
            m("POST"),
            "/v1/sprites/{name}/checkpoint",
            "",
            Some(json!({})),
            Http,
        ),
        (m("GET"), "/v1/sprites/{name}/checkpoints", "", None, Http),
        (
            m("GET"),
            "/v1/sprites/{name}/checkpoints/{id}",
            "",
            None,
            Http,
        ),
        (
            m("DELETE"),
            "/v1/sprites/{name}/checkpoints/{id}",
            "",
            None,
            Http,
        ),
        (
            m("POST"),
            "/v1/sprites/{name}/checkpoints/{id}/restore",
            "",
            None,
            Http,
        ),
        (m("GET"), "/v1/sprites/{name}/exec", "?cmd=true", None, Ws),
        (
            m("POST"),
            "/v1/sprites/{name}/exec",
            "?cmd=true",
            None,
            Http,
        ),
        (m("HEAD"), "/v1/sprites/{name}/exec", "", None, Http),
        (
            m("GET"),
            "/v1/sprites/{name}/exec/{session_id}",
            "",
            None,
            Ws,
        ),
        (
            m("POST"),
            "/v1/sprites/{name}/exec/{session_id}/kill",
            "",
            None,
            Http,
        ),
        (m("GET"), "/v1/sprites/{name}/control", "", None, Ws),
        (m("GET"), "/v1/sprites/{name}/proxy", "", None, Ws),
        (m("GET"), "/v1/sprites/{name}/ports/watch", "", None, Ws),
        (
            m("GET"),
            "/v1/sprites/{name}/policy/network",
            "",
            None,
            Http,
        ),
        (
            m("POST"),
            "/v1/sprites/{name}/policy/network",
            "",
            Some(json!({"rules": []})),
            Http,
        ),
        (
            m("GET"),
            "/v1/sprites/{name}/fs/read",
            "?path=/etc/hostname",
            None,
            Http,
        ),
        (
            m("PUT"),
            "/v1/sprites/{name}/fs/write",
            "?path=/tmp/x",
            None,
            Http,
        ),
        (
            m("GET"),
            "/v1/sprites/{name}/fs/list",
            "?path=/",
            None,
            Http,
        ),
        (
            m("DELETE"),
            "/v1/sprites/{name}/fs/delete",
            "?path=/tmp/x",
            None,
            Http,
        ),
        (
            m("POST"),
            "/v1/sprites/{name}/fs/rename",
            "",
            Some(json!({"source": "/tmp/x", "dest": "/tmp/y"})),
            Http,
        ),
        (
            m("POST"),
            "/v1/sprites/{name}/fs/copy",
            "",
            Some(json!({"source": "/tmp/x", "dest": "/tmp/y"})),
            Http,
        ),
        (
            m("POST"),
            "/v1/sprites/{name}/fs/chmod",
            "",
            Some(json!({"path": "/tmp", "mode": "0755"})),
            Http,
        ),
        (
            m("POST"),
            "/v1/sprites/{name}/fs/chown",
            "",
            Some(json!({"path": "/tmp", "uid": 0, "gid": 0})),
            Http,
        ),
        (m("GET"), "/v1/sprites/{name}/services", "", None, Http),
        (
            m("POST"),
            "/v1/sprites/{name}/services/signal",
            "",
            Some(json!({"name": "web", "signal": "TERM"})),
            Http,
        ),
        (
            m("GET"),
            "/v1/sprites/{name}/services/{svc}",
            "",
            None,
            Http,
        ),
        (
            m("PUT"),
            "/v1/sprites/{name}/services/{svc}",
            "",
            Some(json!({"cmd": "sleep", "args": ["1000"]})),
            Http,
        ),
        (
            m("DELETE"),
            "/v1/sprites/{name}/services/{svc}",
            "",
            None,
            Http,
        ),
        (
            m("POST"),
            "/v1/sprites/{name}/services/{svc}/start",
            "",
            None,
            Http,
        ),
        (
            m("POST"),
            "/v1/sprites/{name}/services/{svc}/stop",
            "",
            None,
            Http,
        ),
        (
            m("POST"),
            "/v1/sprites/{name}/services/{svc}/restart",
            "",
            None,
            Http,
        ),
        (
            m("GET"),
            "/v1/sprites/{name}/services/{svc}/logs",
            "",
            None,
            Http,
        ),
    ]
}

/// Every route template registered under `src/api` (the literals of `.route("…"`).
fn registered_templates() -> BTreeSet<String> {
    let api = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut out = BTreeSet::new();
    let mut stack = vec![api];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let mut rest = text.as_str();
            while let Some(i) = rest.find(".route(") {
                rest = &rest[i + ".route(".len()..];
                let lit = rest.trim_start();
                if let Some(lit) = lit.strip_prefix('"') {
                    if let Some(end) = lit.find('"') {
                        out.insert(lit[..end].to_string());
                    }
                }
            }
        }
    }
    out
}

fn fill(template: &str, name: &str) -> String {
    template
        .replace("{name}", name)
        .replace("{id}", "v0")
        .replace("{session_id}", "1")
        .replace("{svc}", "web")
}

/// Calls route `r` on sprite `name` with `token`; returns the status.
async fn hit(d: &TestDaemon, token: &str, r: &Route, name: &str) -> (u16, Value) {
    let (method, template, query, body, kind) = r;
    let path = format!("{}{query}", fill(template, name));
    match kind {
        Kind::Ws => (ws_status(d, token, &path).await, Value::Null),
        Kind::Http => {
            let res = call(d, token, method.clone(), &path, body.clone()).await;
            (res.status.as_u16(), res.body)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn the_route_table_covers_every_sprite_route() {
    let table: BTreeSet<&str> = route_table().iter().map(|r| r.1).collect();
    let missing: Vec<String> = registered_templates()
        .into_iter()
        .filter(|t| t.starts_with("/v1/sprites/{name}") && !table.contains(t.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "sprite routes missing from this test's table (add them to sprite_routes): {missing:?}"
    );
}

#[tokio::test]
async fn organizations_and_tokens() {
    let d = TestDaemon::start();
    let admin = d.token.clone();

    // Create: admin only; slug rules; duplicates.
    let r = call(
        &d,
        &admin,
        Method::POST,
        "/v1/organizations",
        Some(json!({"slug": "acme", "name": "Acme Inc"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["slug"], "acme");
    assert_eq!(r.body["name"], "Acme Inc");
    assert!(r.body["running_limit"].is_null(), "{}", r.body);
    let dup = call(
        &d,
        &admin,
        Method::POST,
        "/v1/organizations",
        Some(json!({"slug": "acme"})),
    )
    .await;
    assert_json_error(&dup, 409, "duplicate slug");
    for bad in [
        json!({"slug": "Bad.Slug"}),
        json!({"slug": ""}),
        json!({}),
        json!({"slug": "-x"}),
    ] {
        let r = call(
            &d,
            &admin,
            Method::POST,
            "/v1/organizations",
            Some(bad.clone()),
        )
        .await;
        assert_json_error(&r, 400, &bad.to_string());
    }

    // Minting for the new org: the SDK-readable shape.
    let r = call(
        &d,
        &admin,
        Method::POST,
        "/v1/organizations/acme/tokens",
        Some(json!({"description": "ci"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let acme = r.body["token"].as_str().unwrap().to_string();
    let acme_id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["description"], "ci");
    assert!(r.body["created_at"].is_string());
    let parts: Vec<&str> = acme.split('/').collect();
    assert_eq!(parts.len(), 4, "{acme}");
    assert_eq!((parts[0], parts[2]), ("acme", acme_id.as_str()));
    let r = get(&d, &acme, "/v1/organization").await;
    assert_eq!(r.body["organization"], "acme");

    // An ordinary token: no org management beyond its own tokens.
    let r = call(
        &d,
        &acme,
        Method::POST,
        "/v1/organizations",
        Some(json!({"slug": "evil"})),
    )
    .await;
    assert_json_error(&r, 403, "non-admin creates an org");
    let r = get(&d, &acme, "/v1/organizations").await;
    assert_eq!(r.status, StatusCode::OK);
    let slugs: Vec<&str> = r.body["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["acme"]);
    let admin_id = admin.split('/').nth(2).unwrap().to_string();
    for (m, p, body) in [
        (Method::GET, "/v1/organizations/default".to_string(), None),
        (
            Method::GET,
            "/v1/organizations/nonexistent".to_string(),
            None,
        ),
        (
            Method::GET,
            "/v1/organizations/default/tokens".to_string(),
            None,
        ),
        (
            Method::POST,
            "/v1/organizations/default/tokens".to_string(),
            Some(json!({"description": "x"})),
        ),
        (
            Method::DELETE,
            format!("/v1/organizations/default/tokens/{admin_id}"),
            None,
        ),
        (
            Method::PUT,
            "/v1/organizations/acme".to_string(),
            Some(json!({"running_limit": 100})),
        ),
        (
            Method::POST,
            "/v1/organizations/acme/tokens".to_string(),
            Some(json!({"description": "x", "admin": true})),
        ),
    ] {
        let r = call(&d, &acme, m.clone(), &p, body).await;
        assert_json_error(&r, 403, &format!("{m} {p}"));
    }
    // The admin token still works (nothing was revoked by those attempts).
    assert_eq!(get(&d, &admin, "/v1/sprites").await.status, StatusCode::OK);

    // The admin sees every org; unknown ones are 404 for it.
    let r = get(&d, &admin, "/v1/organizations").await;
    let slugs: BTreeSet<&str> = r.body["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, BTreeSet::from(["acme", "default"]));
    assert_json_error(
        &get(&d, &admin, "/v1/organizations/nope").await,
        404,
        "unknown org",
    );

    // A full token of acme manages acme's tokens: mint, list (no secrets), revoke.
    let (second, second_id) = mint(&d, &acme, "acme", "second").await;
    assert_eq!(get(&d, &second, "/v1/sprites").await.status, StatusCode::OK);
    let r = get(&d, &acme, "/v1/organizations/acme/tokens").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let listed = r.body["tokens"].as_array().unwrap();
    let ids: BTreeSet<&str> = listed.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from([acme_id.as_str(), second_id.as_str()]));
    let text = r.body.to_string();
    let secret = second.rsplit('/').next().unwrap();
    assert!(!text.contains(secret) && !text.contains("secret"), "{text}");
    assert!(listed.iter().all(|t| t.get("token").is_none()));

    let narrowed_second = narrow(&second, &[Caveat::Ops(vec![Op::Read])]);
    assert_eq!(
        get(&d, &narrowed_second, "/v1/sprites").await.status,
        StatusCode::OK
    );
    let r = call(
        &d,
        &acme,
        Method::DELETE,
        &format!("/v1/organizations/acme/tokens/{second_id}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    // At once: the token and everything narrowed from it.
    assert_json_error(&get(&d, &second, "/v1/sprites").await, 401, "revoked");
    assert_json_error(
        &get(&d, &narrowed_second, "/v1/sprites").await,
        401,
        "revoked",
    );
    let r = call(
        &d,
        &acme,
        Method::DELETE,
        &format!("/v1/organizations/acme/tokens/{second_id}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "revoking twice");
    for id in ["tnope", admin_id.as_str()] {
        let r = call(
            &d,
            &acme,
            Method::DELETE,
            &format!("/v1/organizations/acme/tokens/{id}"),
            None,
        )
        .await;
        assert_json_error(&r, 404, "a token not in acme");
    }
    assert_eq!(get(&d, &admin, "/v1/sprites").await.status, StatusCode::OK);

    // Attenuated tokens: never any management, even with no caveats at all.
    for t in [
        narrow(&acme, &[]),
        narrow(&acme, &[Caveat::Ops(vec![Op::Read, Op::Exec, Op::Write])]),
        narrow(&admin, &[]),
    ] {
        for (m, p, body) in [
            (Method::GET, "/v1/organizations", None),
            (
                Method::POST,
                "/v1/organizations",
                Some(json!({"slug": "x"})),
            ),
            (Method::GET, "/v1/organizations/acme", None),
            (Method::GET, "/v1/organizations/acme/tokens", None),
            (
                Method::POST,
                "/v1/organizations/acme/tokens",
                Some(json!({"description": "x"})),
            ),
            (Method::DELETE, "/v1/organizations/acme/tokens/tx", None),
            (Method::PUT, "/v1/organizations/acme", Some(json!({}))),
        ] {
            let r = call(&d, &t, m.clone(), p, body).await;
            assert_json_error(&r, 403, &format!("attenuated {m} {p}"));
        }
        // Knowing its org is fine.
        assert_eq!(get(&d, &t, "/v1/organization").await.status, StatusCode::OK);
        assert_eq!(get(&d, &t, "/v1/sprites").await.status, StatusCode::OK);
    }

    // Expired, tampered, unknown caveats: 401.
    let expired = narrow(&acme, &[Caveat::Expires(now() - 1)]);
    assert_json_error(&get(&d, &expired, "/v1/sprites").await, 401, "expired");
    assert_json_error(&get(&d, &expired, "/v1/organization").await, 401, "expired");
    let soon = narrow(&acme, &[Caveat::Expires(now() + 3600)]);
    assert_eq!(get(&d, &soon, "/v1/sprites").await.status, StatusCode::OK);
    let ro = attenuate(&acme, &[Caveat::Ops(vec![Op::Read])]).unwrap();
    let widened = AttenuatedToken {
        caveats: vec![],
        ..ro.clone()
    }
    .encode();
    assert_json_error(
        &get(&d, &widened, "/v1/sprites").await,
        401,
        "caveat removed",
    );
    let altered = AttenuatedToken {
        caveats: vec![Caveat::Ops(vec![Op::Read, Op::Write])],
        ..ro.clone()
    }
    .encode();
    assert_json_error(
        &get(&d, &altered, "/v1/sprites").await,
        401,
        "caveat altered",
    );
    {
        use base64::Engine;
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"[{"ip":"1.2.3.4"}]"#);
        let text = ro.encode();
        let p: Vec<&str> = text.split('.').collect();
        let unknown = format!("{}.{}.{}.{enc}.{}", p[0], p[1], p[2], p[4]);
        assert_json_error(
            &get(&d, &unknown, "/v1/sprites").await,
            401,
            "unknown caveat",
        );
    }
    let wrong_org = ro.encode().replacen("wisp1.acme.", "wisp1.default.", 1);
    assert_json_error(&get(&d, &wrong_org, "/v1/sprites").await, 401, "wrong org");

    // Revoking your own token is allowed, and it stops working at once.
    let (third, third_id) = mint(&d, &acme, "acme", "self-revoke").await;
    let r = call(
        &d,
        &third,
        Method::DELETE,
        &format!("/v1/organizations/acme/tokens/{third_id}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_json_error(
        &get(&d, &third, "/v1/organization").await,
        401,
        "self-revoked",
    );

    // Admin: mint an admin token; limits; rename.
    let r = call(
        &d,
        &admin,
        Method::POST,
        "/v1/organizations/acme/tokens",
        Some(json!({"description": "ops", "admin": true})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["admin"], true);
    let acme_admin = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(
        get(&d, &acme_admin, "/v1/organizations/default")
            .await
            .status,
        StatusCode::OK
    );
    let r = call(
        &d,
        &admin,
        Method::PUT,
        "/v1/organizations/acme",
        Some(json!({
            "running_limit": 3,
            "create_rate_limit": "unlimited",
            "create_rate_window_seconds": 30,
            "name": "ACME"
        })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["running_limit"], 3);
    assert!(r.body["create_rate_limit"].is_null());
    assert_eq!(r.body["create_rate_window_seconds"], 30);
    assert_eq!(r.body["name"], "ACME");
    assert_eq!(r.body["settings"]["create_rate_limit"], "unlimited");
    for bad in [
        json!({"running_limit": -1}),
        json!({"running_limit": "lots"}),
        json!({"create_rate_window_seconds": 0}),
        json!({"colour": "red"}),
    ] {
        let r = call(
            &d,
            &admin,
            Method::PUT,
            "/v1/organizations/acme",
            Some(bad.clone()),
        )
        .await;
        assert_json_error(&r, 400, &bad.to_string());
    }
    let r = call(
        &d,
        &admin,
        Method::PUT,
        "/v1/organizations/acme",
        Some(json!({"running_limit": null})),
    )
    .await;
    assert!(r.body["running_limit"].is_null(), "{}", r.body);
    assert_eq!(r.body["settings"]["running_limit"], "default");
    assert_json_error(
        &call(
            &d,
            &admin,
            Method::PUT,
            "/v1/organizations/nope",
            Some(json!({})),
        )
        .await,
        404,
        "PUT unknown org",
    );

    // The admin can revoke an org's tokens.
    let r = call(
        &d,
        &admin,
        Method::DELETE,
        &format!("/v1/organizations/acme/tokens/{acme_id}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_json_error(
        &get(&d, &acme, "/v1/sprites").await,
        401,
        "revoked by admin",
    );
}

#[tokio::test]
async fn limits_from_flags_refuse_before_anything_starts() {
    let d = TestDaemon::start_with(DaemonOptions {
        args: vec![
            "--org-running-limit".into(),
            "0".into(),
            "--org-create-rate-limit".into(),
            "0".into(),
            "--org-create-rate-window".into(),
            "10s".into(),
        ],
        ..Default::default()
    });
    let admin = d.token.clone();
    let r = get(&d, &admin, "/v1/organizations/default").await;
    assert_eq!(r.body["running_limit"], 0, "{}", r.body);
    assert_eq!(r.body["create_rate_limit"], 0);
    assert_eq!(r.body["create_rate_window_seconds"], 10);

    // A bad name is still a 400, not a 429.
    assert_json_error(&create_as(&d, &admin, "Bad_Name").await, 400, "bad name");
    // The running limit first.
    let r = create_as(&d, &admin, "x").await;
    assert_limit(&r, "concurrent_sprite_limit_exceeded", 0);
    assert_eq!(r.body["current_count"], 0);
    // Lift it for this org: now the create rate.
    let r = call(
        &d,
        &admin,
        Method::PUT,
        "/v1/organizations/default",
        Some(json!({"running_limit": "unlimited"})),
    )
    .await;
    assert!(r.body["running_limit"].is_null(), "{}", r.body);
    let r = create_as(&d, &admin, "x").await;
    assert_limit(&r, "sprite_creation_rate_limited", 0);
    assert_eq!(r.body["window_seconds"], 10);
    assert_eq!(r.body["current_count"], 0);
    assert_eq!(r.headers["x-ratelimit-limit"], "0");
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");
    let reset: u64 = r.headers["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset > now() && reset <= now() + 11, "{reset}");
    // Other orgs get the daemon's defaults too.
    let (t, _) = org_with_token(&d, "other").await;
    assert_limit(
        &create_as(&d, &t, "y").await,
        "concurrent_sprite_limit_exceeded",
        0,
    );
    // Nothing was created.
    assert!(names(&d, &admin).await.is_empty());
}

/// Org A's token on org B's sprites: 404 on every route (403 for B's management), its own
/// list only; then attenuated tokens on real sprites.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolation_and_attenuation_on_real_sprites() {
    let d = TestDaemon::start_real();
    let (ta, _) = org_with_token(&d, "alpha").await;
    let (tb, _) = org_with_token(&d, "beta").await;
    for (t, n) in [(&tb, "bee"), (&ta, "ant"), (&ta, "ant2")] {
        let r = create_as(&d, t, n).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{n}: {}\n{}",
            r.body,
            d.log()
        );
        assert_eq!(
            r.body["organization"],
            if n == "bee" { "beta" } else { "alpha" }
        );
    }

    // Every sprite route of beta's sprite with alpha's token (and with the admin token of
    // the default org): 404, the same as for a sprite that does not exist.
    for route in sprite_routes() {
        for token in [&ta, &d.token] {
            let (status, body) = hit(&d, token, &route, "bee").await;
            assert_eq!(
                status, 404,
                "{} {} with another org's token: {body}",
                route.0, route.1
            );
            if route.4 == Kind::Http && route.0 != Method::HEAD {
                assert!(body["error"].is_string(), "{} {}: {body}", route.0, route.1);
            }
        }
    }
    // Forking it, too.
    let r = call(
        &d,
        &ta,
        Method::POST,
        "/v1/sprites",
        Some(json!({"name": "stolen", "from": {"sprite": "bee"}})),
    )
    .await;
    assert_json_error(&r, 404, "fork of another org's sprite");
    // Beta's management: 403.
    for (m, p, body) in [
        (Method::GET, "/v1/organizations/beta", None),
        (Method::PUT, "/v1/organizations/beta", Some(json!({}))),
        (Method::GET, "/v1/organizations/beta/tokens", None),
        (
            Method::POST,
            "/v1/organizations/beta/tokens",
            Some(json!({"description": "x"})),
        ),
        (Method::DELETE, "/v1/organizations/beta/tokens/tx", None),
    ] {
        assert_json_error(&call(&d, &ta, m.clone(), p, body).await, 403, p);
    }
    // The sprite URL: alpha's token does not open beta's sprite (beta's does: its request
    // reaches the sprite, where nothing listens: 502).
    let url_status = |token: String, sprite: &'static str| {
        let d = &d;
        async move {
            d.client()
                .get(d.url("/"))
                .header("host", format!("{sprite}.localhost:{}", d.addr.port()))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(url_status(ta.clone(), "bee").await, 401);
    assert_eq!(url_status(tb.clone(), "bee").await, 502);

    // Nothing of beta's was touched by all that, and each org lists only its own.
    let r = get(&d, &tb, "/v1/sprites/bee").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(names(&d, &ta).await, set(&["ant", "ant2"]));
    assert_eq!(names(&d, &tb).await, set(&["bee"]));
    assert!(names(&d, &d.token).await.is_empty());
    let r = get(&d, &ta, "/v1/sprites").await;
    assert_eq!(r.body["org"]["name"], "alpha");

    // --- Attenuated tokens ----------------------------------------------------------------
    // Scoped to one sprite.
    let scoped = narrow(&ta, &[Caveat::Sprite("ant".into())]);
    assert_eq!(
        get(&d, &scoped, "/v1/sprites/ant").await.status,
        StatusCode::OK
    );
    assert_json_error(
        &get(&d, &scoped, "/v1/sprites/ant2").await,
        403,
        "other sprite",
    );
    assert_eq!(
        ws_status(&d, &scoped, &exec_path("ant2", &["true"], &[])).await,
        403
    );
    let status = get(&d, &scoped, "/v1/sprites/bee").await.status.as_u16();
    assert!(status == 403 || status == 404, "{status}");
    assert_eq!(names(&d, &scoped).await, set(&["ant"]));
    let r = get(&d, &scoped, "/v1/sprites").await;
    assert_eq!(
        r.body["org"]["running"].as_u64().unwrap() + r.body["org"]["warm"].as_u64().unwrap(),
        1,
        "counts cover only the allowed sprites: {}",
        r.body
    );
    assert_json_error(
        &create_as(&d, &scoped, "zed").await,
        403,
        "create another name",
    );
    let r = call(
        &d,
        &scoped,
        Method::POST,
        "/v1/sprites",
        Some(json!({"name": "ant", "from": {"sprite": "ant2"}})),
    )
    .await;
    assert_json_error(&r, 403, "fork from a sprite outside the scope");
    assert_json_error(
        &create_as(&d, &scoped, "ant").await,
        409,
        "allowed name, taken",
    );
    // Every route on the other sprite: 403.
    for route in sprite_routes() {
        let (status, body) = hit(&d, &scoped, &route, "ant2").await;
        assert_eq!(status, 403, "{} {}: {body}", route.0, route.1);
    }

    // A prefix.
    let prefixed = narrow(&ta, &[Caveat::SpritePrefix("ant".into())]);
    assert_eq!(names(&d, &prefixed).await, set(&["ant", "ant2"]));

    // Read-only.
    let ro = narrow(&ta, &[Caveat::Ops(vec![Op::Read])]);
    for p in [
        "/v1/sprites",
        "/v1/sprites/ant",
        "/v1/sprites/ant/checkpoints",
        "/v1/sprites/ant/checkpoints/v0",
        "/v1/sprites/ant/fs/list?path=/",
        "/v1/sprites/ant/policy/network",
    ] {
        let r = get(&d, &ro, p).await;
        assert_eq!(r.status, StatusCode::OK, "read-only GET {p}: {}", r.body);
    }
    for route in sprite_routes() {
        let read = matches!(route.0, Method::GET | Method::HEAD)
            && !["/exec", "/control", "/proxy", "/ports"]
                .iter()
                .any(|s| route.1.contains(s));
        if read {
            continue;
        }
        let (status, body) = hit(&d, &ro, &route, "ant").await;
        assert_eq!(status, 403, "read-only {} {}: {body}", route.0, route.1);
    }
    assert_json_error(&create_as(&d, &ro, "new").await, 403, "read-only create");
    // (ant is still there after the read-only DELETE attempt.)
    assert_eq!(get(&d, &ta, "/v1/sprites/ant").await.status, StatusCode::OK);

    // Exec-only, on ant: it runs commands there and nothing else.
    let xo = narrow(
        &ta,
        &[Caveat::Ops(vec![Op::Exec]), Caveat::Sprite("ant".into())],
    );
    let e = exec_with(&d, &xo, "ant", &["echo", "hi"]).await;
    assert_eq!(e.stdout, b"hi\n", "{e:?}");
    e.assert_ended_with(0);
    assert_json_error(&get(&d, &xo, "/v1/sprites/ant").await, 403, "exec-only GET");
    assert_json_error(&get(&d, &xo, "/v1/sprites").await, 403, "exec-only list");
    assert_eq!(
        ws_status(&d, &xo, &exec_path("ant2", &["true"], &[])).await,
        403
    );
    // Narrowing a narrowed token further (offline, no secret): the read-only one to ant.
    let ro_ant = narrow(&ro, &[Caveat::Sprite("ant".into())]);
    assert_eq!(
        get(&d, &ro_ant, "/v1/sprites/ant").await.status,
        StatusCode::OK
    );
    assert_json_error(
        &get(&d, &ro_ant, "/v1/sprites/ant2").await,
        403,
        "chained scope",
    );
    assert_eq!(
        ws_status(&d, &ro_ant, &exec_path("ant", &["true"], &[])).await,
        403
    );

    // Sprite URLs apply the same check with op class exec.
    assert_eq!(url_status(xo.clone(), "ant").await, 502);
    assert_eq!(url_status(xo.clone(), "ant2").await, 401);
    assert_eq!(url_status(ro.clone(), "ant").await, 401);
    assert_eq!(url_status(scoped.clone(), "ant").await, 502);

    // Expired.
    let expired = narrow(&xo, &[Caveat::Expires(now() - 1)]);
    assert_eq!(
        ws_status(&d, &expired, &exec_path("ant", &["true"], &[])).await,
        401
    );
}

/// The running limit (at create and at a cold wake) and the create rate, on real sprites.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_limit_and_create_rate() {
    let d = TestDaemon::start_real();
    let (t, _) = org_with_token(&d, "lim").await;
    let put = |body: Value| {
        let d = &d;
        async move {
            let r = call(
                d,
                &d.token,
                Method::PUT,
                "/v1/organizations/lim",
                Some(body),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
    };
    put(json!({"running_limit": 1})).await;
    assert_eq!(create_as(&d, &t, "l1").await.status, StatusCode::CREATED);
    let r = create_as(&d, &t, "l2").await;
    assert_limit(&r, "concurrent_sprite_limit_exceeded", 1);
    assert_eq!(r.body["current_count"], 1);
    // Other orgs are not affected.
    assert_eq!(
        create_as(&d, &d.token, "free").await.status,
        StatusCode::CREATED
    );

    // A cold sprite does not count; waking one beyond the limit is refused.
    let r = call(&d, &t, Method::POST, "/v1/sprites/l1/sleep?mode=cold", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(create_as(&d, &t, "l2").await.status, StatusCode::CREATED);
    assert_eq!(
        ws_status(&d, &t, &exec_path("l1", &["true"], &[])).await,
        429
    );
    let r = call(&d, &t, Method::POST, "/v1/sprites/l1/exec?cmd=true", None).await;
    assert_limit(&r, "concurrent_sprite_limit_exceeded", 1);
    // A restore starts the sprite: the same.
    let r = call(
        &d,
        &t,
        Method::POST,
        "/v1/sprites/l1/checkpoints/v0/restore",
        None,
    )
    .await;
    assert_limit(&r, "concurrent_sprite_limit_exceeded", 1);
    // Reading it does not wake it: fine.
    let r = get(&d, &t, "/v1/sprites/l1").await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("cold"))
    );
    // A running sprite is not refused.
    assert_eq!(exec_with(&d, &t, "l2", &["true"]).await.code, Some(0));
    // Room again: l1 wakes.
    let r = call(&d, &t, Method::POST, "/v1/sprites/l2/sleep?mode=cold", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(exec_with(&d, &t, "l1", &["true"]).await.code, Some(0));

    // The create rate: 2 per hour; a failed create gives its slot back.
    put(json!({
        "running_limit": "unlimited",
        "create_rate_limit": 2,
        "create_rate_window_seconds": 3600
    }))
    .await;
    assert_eq!(create_as(&d, &t, "r1").await.status, StatusCode::CREATED);
    assert_json_error(&create_as(&d, &t, "r1").await, 409, "duplicate");
    assert_eq!(create_as(&d, &t, "r2").await.status, StatusCode::CREATED);
    let r = create_as(&d, &t, "r3").await;
    assert_limit(&r, "sprite_creation_rate_limited", 2);
    assert_eq!(r.body["window_seconds"], 3600);
    assert_eq!(r.body["current_count"], 2);
    let retry = r.body["retry_after_seconds"].as_u64().unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
    assert_eq!(r.headers["x-ratelimit-limit"], "2");
    // Back to the daemon's default (unlimited).
    put(json!({"create_rate_limit": "default"})).await;
    assert_eq!(create_as(&d, &t, "r3").await.status, StatusCode::CREATED);
}
