//! `GET /v1/openapi.json` against the real binary: public, well formed, and describing exactly
//! the routes the router has. The route list is read from the router's own source (every
//! `.route("path", get(..).post(..))` under `src/api`), so a route added without its
//! `#[utoipa::path]` fails here; the live daemon then confirms each documented operation is
//! routed and each undocumented method on a documented path is refused with 405.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::TestDaemon;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const METHODS: [&str; 6] = ["get", "put", "post", "delete", "head", "patch"];

/// `(METHOD, path)` of every `.route(...)` call in the `.rs` files under `dir`.
fn routes_in_source(dir: &Path) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut files = vec![dir.to_path_buf()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if p.extension().is_some_and(|e| e == "rs") {
            let src = std::fs::read_to_string(&p).unwrap();
            for (method, path) in routes_in(&strip_comments(&src)) {
                out.insert((method, path));
            }
        }
    }
    out
}

/// Drops `//` comments (outside string literals), whose parentheses would unbalance a call.
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|line| {
            let mut in_str = false;
            let b = line.as_bytes();
            for i in 0..b.len() {
                match b[i] {
                    b'"' if i == 0 || b[i - 1] != b'\\' => in_str = !in_str,
                    b'/' if !in_str && b.get(i + 1) == Some(&b'/') => return &line[..i],
                    _ => {}
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn routes_in(src: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (at, _) in src.match_indices(".route(") {
        let call = balanced(&src[at + ".route".len()..]);
        let start = call.find('"').expect("a route path literal") + 1;
        let len = call[start..].find('"').unwrap();
        let path = &call[start..start + len];
        let handlers = &call[start + len + 1..];
        let methods = method_calls(handlers);
        assert!(
            !methods.is_empty(),
            "cannot tell the methods of route {path}: {handlers}"
        );
        out.extend(methods.into_iter().map(|m| (m, path.to_string())));
    }
    out
}

/// The text from an opening parenthesis to its match.
fn balanced(s: &str) -> &str {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &s[..=i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced route call: {s}")
}

/// `get(`, `.post(`, ... as method-router calls (not `module::get` nor `foo_get(`).
fn method_calls(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in METHODS {
        let needle = format!("{m}(");
        for (i, _) in s.match_indices(&needle) {
            let before = s[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            out.push(m.to_uppercase());
        }
    }
    out
}

/// `(METHOD, path)` of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn document_covers_every_route() {
    let d = TestDaemon::start();
    let client = d.client();

    // Public: no token.
    let res = client.get(d.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");

    // The document and the router name the same operations.
    let src = routes_in_source(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api"));
    assert!(
        src.len() > 40,
        "too few routes read from the source: {src:?}"
    );
    let docs = documented(&doc);
    let undocumented: Vec<_> = src.difference(&docs).collect();
    assert!(
        undocumented.is_empty(),
        "routes without docs: {undocumented:?}"
    );
    let unrouted: Vec<_> = docs.difference(&src).collect();
    assert!(unrouted.is_empty(), "docs without routes: {unrouted:?}");

    // Security: bearer everywhere but the document itself; every operation has a success
    // response and the JSON error body for the rest.
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
    for (method, path) in &docs {
        let op = &doc["paths"][path][method.to_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|k| k.starts_with('2') || k == "101"),
            "{method} {path}: no success response"
        );
        assert_eq!(
            op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{method} {path}"
        );
        let public = op["security"] == serde_json::json!([{}]);
        assert_eq!(
            public,
            path == "/v1/openapi.json",
            "{method} {path}: security"
        );
        if !public {
            assert!(responses.contains_key("401"), "{method} {path}: no 401");
        }
        for p in path.split('/').filter(|s| s.starts_with('{')) {
            let name = p.trim_matches(|c| c == '{' || c == '}');
            let params = op["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|x| x["in"] == "path" && x["name"] == name),
                "{method} {path}: path parameter {name} undocumented"
            );
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").expect(r);
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling {r}"
        );
    }

    // The live router agrees: documented operations are routed, other methods are 405.
    for (method, path) in &docs {
        let url = d.url(&path.replace('{', "x").replace('}', ""));
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let res = client
            .request(m, &url)
            .header("authorization", d.bearer())
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body = res.text().await.unwrap();
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && !body.contains("no route for"),
            "{method} {path}: documented but not routed ({status} {body})"
        );
    }
    let paths: BTreeSet<&String> = docs.iter().map(|(_, p)| p).collect();
    for path in paths {
        for m in METHODS.iter().filter(|m| **m != "head") {
            let method = m.to_uppercase();
            if docs.contains(&(method.clone(), path.clone())) {
                continue;
            }
            let url = d.url(&path.replace('{', "x").replace('}', ""));
            let res = client
                .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .header("authorization", d.bearer())
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is routed but not documented"
            );
        }
    }
}

#[test]
fn route_reader_reads_methods() {
    let src = r#"
        Router::new()
            .route("/a/{x}", get(m::get).put(m::update).delete(m::delete))
            // a comment (with parentheses
            .route(
                "/b",
                put(write).layer(DefaultBodyLimit::disable()),
            )
            .route("/c", get(exec_get).post(post_it).head(exec_head))
            .route_layer(x)
    "#;
    let got: BTreeSet<_> = routes_in(&strip_comments(src)).into_iter().collect();
    let want: BTreeSet<_> = [
        ("GET", "/a/{x}"),
        ("PUT", "/a/{x}"),
        ("DELETE", "/a/{x}"),
        ("PUT", "/b"),
        ("GET", "/c"),
        ("POST", "/c"),
        ("HEAD", "/c"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want);
}
