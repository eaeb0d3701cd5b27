//! The filesystem API (`/v1/sprites/{name}/fs/...`, Sprites API §3.7) against the real wispd,
//! keepers and namespaces: streaming reads and writes, list/delete/rename/copy/chmod/chown,
//! permissions as the sprite user, and attempts to reach the host through paths and symlinks.

mod common;

use std::time::{Duration, Instant};

use common::TestDaemon;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `/v1/sprites/{sprite}/fs/{op}?k=v&...`
fn fs_path(sprite: &str, op: &str, q: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in q {
        s.append_pair(k, v);
    }
    format!("/v1/sprites/{sprite}/fs/{op}?{}", s.finish())
}

async fn send(
    d: &TestDaemon,
    method: Method,
    path: &str,
    body: Option<reqwest::Body>,
) -> (StatusCode, Vec<u8>, reqwest::header::HeaderMap) {
    let mut rb = d
        .client()
        .request(method, d.url(path))
        .header("authorization", d.bearer());
    if let Some(b) = body {
        rb = rb
            .header("content-type", "application/octet-stream")
            .body(b);
    }
    let res = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}\n{}", d.log()));
    let status = res.status();
    let headers = res.headers().clone();
    (status, res.bytes().await.unwrap().to_vec(), headers)
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

/// PUT fs/write; returns status and JSON.
async fn write(
    d: &TestDaemon,
    sprite: &str,
    q: &[(&str, &str)],
    data: &[u8],
) -> (StatusCode, Value) {
    let (s, b, _) = send(
        d,
        Method::PUT,
        &fs_path(sprite, "write", q),
        Some(reqwest::Body::from(data.to_vec())),
    )
    .await;
    (s, json_of(&b))
}

/// Writes `data` to an absolute path as the sprite user, asserting success.
async fn put(d: &TestDaemon, sprite: &str, path: &str, data: &[u8]) -> Value {
    let (s, v) = write(d, sprite, &[("path", path)], data).await;
    assert!(s == 200 || s == 201, "write {path}: {s} {v}\n{}", d.log());
    v
}

/// GET fs/read; returns status and the raw body.
async fn read(d: &TestDaemon, sprite: &str, q: &[(&str, &str)]) -> (StatusCode, Vec<u8>) {
    let (s, b, _) = send(d, Method::GET, &fs_path(sprite, "read", q), None).await;
    (s, b)
}

async fn get_json(
    d: &TestDaemon,
    sprite: &str,
    op: &str,
    q: &[(&str, &str)],
) -> (StatusCode, Value) {
    let (s, b, _) = send(d, Method::GET, &fs_path(sprite, op, q), None).await;
    (s, json_of(&b))
}

async fn delete(d: &TestDaemon, sprite: &str, q: &[(&str, &str)]) -> (StatusCode, Value) {
    let (s, b, _) = send(d, Method::DELETE, &fs_path(sprite, "delete", q), None).await;
    (s, json_of(&b))
}

async fn post(d: &TestDaemon, sprite: &str, op: &str, body: Value) -> (StatusCode, Value) {
    d.call(
        Method::POST,
        &format!("/v1/sprites/{sprite}/fs/{op}"),
        Some(body),
    )
    .await
}

fn names(list: &Value) -> Vec<String> {
    list["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {list}"))
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), in 1 MiB chunks.
fn chunk(i: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut out = Vec::with_capacity(1 << 20);
    while out.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_round_trip_ranges_and_ownership() {
    let d = TestDaemon::start_real();
    let s = "fs-rw";
    d.create(s).await;

    // New file: 201, then replaced: 200; default mode 0644; owned by the sprite user.
    let (st, v) = write(&d, s, &[("path", "/home/sprite/hello.txt")], b"hello\n").await;
    assert_eq!(st, StatusCode::CREATED, "{v}\n{}", d.log());
    assert_eq!(
        v,
        json!({"path": "/home/sprite/hello.txt", "size": 6, "mode": "0644"})
    );
    let (st, v) = write(
        &d,
        s,
        &[
            ("path", "hello.txt"),
            ("workingDir", "/home/sprite"),
            ("mode", "0600"),
        ],
        b"hello again\n",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["mode"], "0600");
    assert_eq!(v["size"], 12);
    let out = d
        .sh(
            s,
            "stat -c %u:%g:%a /home/sprite/hello.txt; cat /home/sprite/hello.txt",
        )
        .await;
    assert_eq!(out, "1000:1000:600\nhello again\n");
    // No temporary file is left next to it.
    assert_eq!(
        d.sh(s, "ls -A /home/sprite | grep -c wisp-upload || true")
            .await,
        "0\n"
    );

    // Read: the bytes, whole or a range.
    let (st, body) = read(&d, s, &[("path", "/home/sprite/hello.txt")]).await;
    assert_eq!(
        (st, body.as_slice()),
        (StatusCode::OK, &b"hello again\n"[..])
    );
    let (st, body) = read(
        &d,
        s,
        &[
            ("path", "/home/sprite/hello.txt"),
            ("start", "6"),
            ("end", "11"),
        ],
    )
    .await;
    assert_eq!(
        (st, body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &b"again"[..])
    );
    let res = d
        .client()
        .get(d.url(&fs_path(s, "read", &[("path", "/home/sprite/hello.txt")])))
        .header("authorization", d.bearer())
        .header("range", "bytes=0-4")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()["content-range"], "bytes 0-4/12");
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"hello");
    let (st, _) = read(
        &d,
        s,
        &[("path", "/home/sprite/hello.txt"), ("start", "13")],
    )
    .await;
    assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE);

    // mkdirParents (the default) creates the directories, owned by the sprite user; without
    // it a missing directory is ENOENT.
    put(&d, s, "/home/sprite/a/b/c/deep.txt", b"deep").await;
    let out = d
        .sh(
            s,
            "stat -c %u:%g:%a /home/sprite/a /home/sprite/a/b/c /home/sprite/a/b/c/deep.txt",
        )
        .await;
    assert_eq!(out, "1000:1000:755\n1000:1000:755\n1000:1000:644\n");
    // Without it only the file's own directory is made, and only when its parent exists
    // (the SDKs' mkdir(parents=False) writes DIR/.keep so).
    let q = [
        ("path", "/home/sprite/nope/deeper/x.txt"),
        ("mkdirParents", "false"),
    ];
    let (st, v) = write(&d, s, &q, b"x").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ENOENT")),
        "{v}"
    );
    let q = [("path", "/home/sprite/nope2/x.txt"), ("mkdir", "false")];
    let (st, v) = write(&d, s, &q, b"x").await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let out = d
        .sh(
            s,
            "test ! -e /home/sprite/nope && stat -c %U:%a /home/sprite/nope2",
        )
        .await;
    assert_eq!(out, "sprite:755\n");
    // An empty file, and a write onto a directory.
    let (st, v) = write(&d, s, &[("path", "/home/sprite/empty")], b"").await;
    assert_eq!((st, v["size"].as_u64()), (StatusCode::CREATED, Some(0)));
    let (st, v) = write(&d, s, &[("path", "/home/sprite/a")], b"x").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("EISDIR")),
        "{v}"
    );

    // Missing files are 404 with ENOENT; a directory is EISDIR; a device is refused.
    let (st, body) = read(&d, s, &[("path", "/home/sprite/missing")]).await;
    let v = json_of(&body);
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ENOENT")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("no such file"), "{v}");
    let (st, body) = read(&d, s, &[("path", "/home/sprite")]).await;
    assert_eq!(
        (st, json_of(&body)["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("EISDIR"))
    );
    let (st, _) = read(&d, s, &[("path", "/dev/zero")]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // 64 MiB, streamed both ways, byte-exact.
    const CHUNKS: u64 = 64;
    let mut want = Sha256::new();
    for i in 0..CHUNKS {
        want.update(chunk(i));
    }
    let want = hex::encode(want.finalize());
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..CHUNKS).map(|i| Ok::<_, std::io::Error>(chunk(i))),
    ));
    let t = Instant::now();
    let (st, b, _) = send(
        &d,
        Method::PUT,
        &fs_path(s, "write", &[("path", "/home/sprite/big.bin")]),
        Some(body),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["size"], CHUNKS << 20);
    eprintln!("64 MiB upload: {:?}", t.elapsed());
    let res = d
        .client()
        .get(d.url(&fs_path(s, "read", &[("path", "/home/sprite/big.bin")])))
        .header("authorization", d.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-length"],
        (CHUNKS << 20).to_string().as_str()
    );
    let mut got = Sha256::new();
    let mut n = 0u64;
    let mut stream = res.bytes_stream();
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        n += c.len() as u64;
        got.update(&c);
    }
    assert_eq!(
        (n, hex::encode(got.finalize())),
        (CHUNKS << 20, want.clone())
    );
    let sum = d
        .sh(s, "sha256sum /home/sprite/big.bin | cut -d' ' -f1")
        .await;
    assert_eq!(sum.trim(), want);

    // An upload cut off half-way leaves the old file intact and no temporary file.
    let half = reqwest::Body::wrap_stream(futures_util::stream::iter((0..3).map(|i| {
        if i < 2 {
            Ok(chunk(i))
        } else {
            Err(std::io::Error::other("client gave up"))
        }
    })));
    let _ = d
        .client()
        .put(d.url(&fs_path(s, "write", &[("path", "/home/sprite/hello.txt")])))
        .header("authorization", d.bearer())
        .header("content-length", (8u64 << 20).to_string())
        .body(half)
        .send()
        .await;
    let mut left = String::new();
    for _ in 0..50 {
        left = d
            .sh(
                s,
                "cat /home/sprite/hello.txt; ls -A /home/sprite | grep -c wisp-upload || true",
            )
            .await;
        if left == "hello again\n0\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, "hello again\n0\n");

    d.delete(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_delete_rename_copy_chmod_chown() {
    let d = TestDaemon::start_real();
    let s = "fs-ops";
    d.create(s).await;
    d.sh(
        s,
        "cd /home/sprite && mkdir -p t/sub/inner t/empty && printf one > t/a.txt && \
         printf twotwo > t/sub/b.txt && printf 3 > t/sub/inner/c.txt && ln -s a.txt t/link && \
         ln -s /etc t/etc-link",
    )
    .await;

    // list on a file: exactly that file (the SDKs' stat).
    let (st, v) = get_json(
        &d,
        s,
        "list",
        &[("path", "t/a.txt"), ("workingDir", "/home/sprite")],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["path"], "/home/sprite/t/a.txt");
    assert_eq!(v["count"], 1);
    let e = &v["entries"][0];
    assert_eq!(
        (
            &e["name"],
            &e["path"],
            &e["type"],
            &e["size"],
            &e["mode"],
            &e["isDir"]
        ),
        (
            &json!("a.txt"),
            &json!("/home/sprite/t/a.txt"),
            &json!("file"),
            &json!(3),
            &json!("0644"),
            &json!(false)
        )
    );
    assert!(e["modTime"].as_str().unwrap().ends_with('Z'), "{e}");
    // On a directory: its children only, sorted, symlinks as symlinks.
    let (_, v) = get_json(&d, s, "list", &[("path", "/home/sprite/t")]).await;
    assert_eq!(names(&v), ["a.txt", "empty", "etc-link", "link", "sub"]);
    assert_eq!(v["count"], 5);
    let kinds: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["file", "directory", "symlink", "symlink", "directory"]
    );
    assert_eq!(v["entries"][4]["isDir"], true);
    // Recursive: everything below, parents first; the symlinked /etc is not walked.
    let (_, v) = get_json(
        &d,
        s,
        "list",
        &[("path", "/home/sprite/t"), ("recursive", "true")],
    )
    .await;
    let paths: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/home/sprite/t/a.txt",
            "/home/sprite/t/empty",
            "/home/sprite/t/etc-link",
            "/home/sprite/t/link",
            "/home/sprite/t/sub",
            "/home/sprite/t/sub/b.txt",
            "/home/sprite/t/sub/inner",
            "/home/sprite/t/sub/inner/c.txt",
        ]
    );
    // Empty directory: no entries; missing: 404.
    let (st, v) = get_json(&d, s, "list", &[("path", "/home/sprite/t/empty")]).await;
    assert_eq!((st, v["count"].as_u64()), (StatusCode::OK, Some(0)));
    let (st, v) = get_json(&d, s, "list", &[("path", "/home/sprite/t/none")]).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ENOENT"))
    );

    // copy: a file, then a tree (symlinks stay symlinks), with totals.
    let (st, v) = post(
        &d,
        s,
        "copy",
        json!({"source": "t/a.txt", "dest": "t/a-copy.txt", "workingDir": "/home/sprite"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 1);
    assert_eq!(v["totalBytes"], 3);
    assert_eq!(
        v["copied"][0],
        json!({"source": "/home/sprite/t/a.txt", "dest": "/home/sprite/t/a-copy.txt"})
    );
    let (st, v) = post(
        &d,
        s,
        "copy",
        json!({"source": "/home/sprite/t", "dest": "/home/sprite/t2"}),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("EISDIR")),
        "{v}"
    );
    let (st, v) = post(
        &d,
        s,
        "copy",
        json!({"source": "/home/sprite/t", "dest": "/home/sprite/t2", "recursive": true}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["totalBytes"], 3 + 3 + 6 + 1);
    let out = d
        .sh(
            s,
            "cd /home/sprite/t2 && cat a.txt sub/b.txt sub/inner/c.txt && echo && readlink link etc-link && \
             stat -c %u:%g sub/inner/c.txt && test -d empty && echo ok",
        )
        .await;
    assert_eq!(out, "onetwotwo3\na.txt\n/etc\n1000:1000\nok\n");
    let (st, _) = post(
        &d,
        s,
        "copy",
        json!({"source": "/home/sprite/t/a.txt", "dest": "/home/sprite/t/a.txt"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // rename
    let (st, v) = post(
        &d,
        s,
        "rename",
        json!({"source": "t/a-copy.txt", "dest": "t/moved.txt", "workingDir": "/home/sprite"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"source": "/home/sprite/t/a-copy.txt", "dest": "/home/sprite/t/moved.txt"})
    );
    let (st, v) = post(
        &d,
        s,
        "rename",
        json!({"source": "/home/sprite/t/a-copy.txt", "dest": "/home/sprite/t/x"}),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ENOENT"))
    );
    let (st, _) = post(
        &d,
        s,
        "rename",
        json!({"source": "/home/sprite/t/moved.txt"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // chmod, plain and recursive (symlinks skipped); chown needs root for other owners.
    let (st, v) = post(
        &d,
        s,
        "chmod",
        json!({"path": "/home/sprite/t/moved.txt", "mode": "0755"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"affected": [{"path": "/home/sprite/t/moved.txt", "mode": "0755"}], "count": 1})
    );
    let (st, v) = post(
        &d,
        s,
        "chmod",
        json!({"path": "/home/sprite/t2", "mode": "0750", "recursive": true}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 8, "{v}");
    assert_eq!(
        d.sh(
            s,
            "stat -c %a /home/sprite/t/moved.txt /home/sprite/t2 /home/sprite/t2/sub/inner/c.txt"
        )
        .await,
        "755\n750\n750\n"
    );
    let (st, _) = post(
        &d,
        s,
        "chmod",
        json!({"path": "/home/sprite/t/moved.txt", "mode": "9"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, v) = post(
        &d,
        s,
        "chmod",
        json!({"path": "/etc/hostname", "mode": "0777"}),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("EPERM")),
        "{v}"
    );
    let (st, v) = post(
        &d,
        s,
        "chown",
        json!({"path": "/home/sprite/t/moved.txt", "uid": 0, "gid": 0}),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = post(&d, s, "chown", json!({"path": "/home/sprite/t2", "uid": 0, "gid": 1000, "recursive": true, "asRoot": true})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["affected"].as_array().unwrap().last().unwrap(),
        &json!({"path": "/home/sprite/t2", "uid": 0, "gid": 1000})
    );
    assert_eq!(
        d.sh(s, "stat -c %u:%g /home/sprite/t2 /home/sprite/t2/sub/b.txt; stat -L -c %u:%g /etc/hostname").await,
        "0:1000\n0:1000\n0:0\n"
    );

    // delete: a file, a symlink (not its target), a non-empty directory only recursively.
    let (st, v) = delete(&d, s, &[("path", "/home/sprite/t/link")]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"deleted": ["/home/sprite/t/link"], "count": 1}));
    assert_eq!(d.sh(s, "cat /home/sprite/t/a.txt").await, "one");
    let (st, v) = delete(&d, s, &[("path", "/home/sprite/t/sub")]).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("ENOTEMPTY")),
        "{v}"
    );
    let (st, v) = delete(
        &d,
        s,
        &[("path", "/home/sprite/t/sub"), ("recursive", "true")],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["deleted"],
        json!([
            "/home/sprite/t/sub/b.txt",
            "/home/sprite/t/sub/inner/c.txt",
            "/home/sprite/t/sub/inner",
            "/home/sprite/t/sub"
        ])
    );
    let (st, v) = delete(&d, s, &[("path", "/home/sprite/t/empty")]).await;
    assert_eq!((st, v["count"].as_u64()), (StatusCode::OK, Some(1)));
    let (st, _) = delete(&d, s, &[("path", "/home/sprite/t/empty")]).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // The JSON body form.
    let (st, v) = d
        .call(
            Method::DELETE,
            &format!("/v1/sprites/{s}/fs/delete"),
            Some(json!({"path": "t/moved.txt", "workingDir": "/home/sprite"})),
        )
        .await;
    assert_eq!((st, v["count"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    // The root-owned tree is the sprite user's to delete only with asRoot.
    let (st, _) = delete(&d, s, &[("path", "/home/sprite/t2/sub/b.txt")]).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = delete(
        &d,
        s,
        &[
            ("path", "/home/sprite/t2"),
            ("recursive", "true"),
            ("asRoot", "true"),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = delete(&d, s, &[("path", "/")]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Into its own subdirectory: the copy does not chase itself.
    let (st, v) = post(
        &d,
        s,
        "copy",
        json!({"source": "/home/sprite/t", "dest": "/home/sprite/t/again", "recursive": true}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        d.sh(
            s,
            "cat /home/sprite/t/again/a.txt; test ! -e /home/sprite/t/again/again && echo ok"
        )
        .await,
        "oneok\n"
    );

    d.delete(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_as_sprite_user_and_as_root() {
    let d = TestDaemon::start_real();
    let s = "fs-perm";
    d.create(s).await;
    let passwd = d.sh(s, "cat /etc/passwd").await;

    // The sprite user may not write /etc/passwd or read /etc/shadow.
    let (st, v) = write(&d, s, &[("path", "/etc/passwd")], b"owned\n").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("EACCES")),
        "{v}"
    );
    assert!(
        v["error"].as_str().unwrap().contains("permission denied"),
        "{v}"
    );
    let (st, body) = read(&d, s, &[("path", "/etc/shadow")]).await;
    assert_eq!(
        (st, json_of(&body)["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("EACCES"))
    );
    assert_eq!(d.sh(s, "cat /etc/passwd").await, passwd);
    let (st, _) = write(&d, s, &[("path", "/root/x")], b"x").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = get_json(&d, s, "list", &[("path", "/root")]).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // As root both work, and what root writes belongs to root.
    let (st, body) = read(&d, s, &[("path", "/etc/shadow"), ("asRoot", "true")]).await;
    assert_eq!(st, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).starts_with("root:"));
    let (st, v) = write(
        &d,
        s,
        &[("path", "/etc/passwd"), ("asRoot", "true")],
        passwd.as_bytes(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = write(
        &d,
        s,
        &[
            ("path", "/etc/wisp-root-file"),
            ("asRoot", "true"),
            ("mode", "0640"),
        ],
        b"r",
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(
        d.sh(s, "stat -c %u:%g:%a /etc/wisp-root-file /etc/passwd")
            .await,
        "0:0:640\n0:0:644\n"
    );
    // Replacing a sprite-owned file as root keeps its owner.
    put(&d, s, "/home/sprite/mine", b"1").await;
    let (st, _) = write(
        &d,
        s,
        &[("path", "/home/sprite/mine"), ("asRoot", "true")],
        b"2",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        d.sh(s, "stat -c %u:%g /home/sprite/mine; cat /home/sprite/mine")
            .await,
        "1000:1000\n2"
    );
    // Files in /tmp (sticky, world-writable) belong to whoever made them.
    put(&d, s, "/tmp/by-sprite", b"x").await;
    assert_eq!(d.sh(s, "stat -c %U /tmp/by-sprite").await, "sprite\n");

    d.delete(s).await;
}

/// Every way out of the sprite that a path or a symlink could offer, including a symlink
/// swapped back and forth while the API works: nothing on the host is read or written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_and_symlinks_never_leave_the_sprite() {
    let d = TestDaemon::start_real();
    let s = "fs-escape";
    d.create(s).await;
    let host_dir = tempfile::Builder::new()
        .prefix("wisp-fs-escape-")
        .tempdir()
        .unwrap();
    let host = host_dir.path().to_str().unwrap().to_string();
    std::fs::write(host_dir.path().join("marker"), "HOST SECRET").unwrap();
    let host_listing = || {
        let mut v: Vec<String> = std::fs::read_dir(&host)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let sprite_hostname = d.sh(s, "cat /etc/hostname").await;
    let host_hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    d.sh(
        s,
        &format!(
            "cd /home/sprite && ln -s / rootlink && ln -s /etc etclink && ln -s {host} hostlink && \
             ln -s /proc/self/root selfroot && ln -s /proc/1/root initroot && ln -s ../../.. up"
        ),
    )
    .await;

    let sprite_file = |q: Vec<(&'static str, String)>| {
        let d = &d;
        async move {
            let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
            read(d, s, &q).await
        }
    };
    // `..` past the root, absolute symlinks and `..` in link targets all land in the sprite.
    for (path, wd) in [
        ("../../../../../etc/hostname", "/home/sprite"),
        ("etc/hostname", "/../../.."),
        ("rootlink/etc/hostname", "/home/sprite"),
        ("rootlink/../../../etc/hostname", "/home/sprite"),
        ("etclink/hostname", "/home/sprite"),
        ("/home/sprite/up/etc/hostname", "/"),
    ] {
        let (st, body) = sprite_file(vec![
            ("path", path.into()),
            ("workingDir", wd.into()),
            ("asRoot", "true".into()),
        ])
        .await;
        assert_eq!(
            st,
            StatusCode::OK,
            "{path} in {wd}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            String::from_utf8_lossy(&body),
            sprite_hostname,
            "{path} in {wd}"
        );
        if host_hostname != sprite_hostname {
            assert_ne!(String::from_utf8_lossy(&body), host_hostname);
        }
    }
    // The host's own paths do not exist in the sprite; magic links are refused.
    for path in [
        format!("{host}/marker"),
        "/home/sprite/hostlink/marker".to_string(),
        "/home/sprite/rootlink".to_string() + &host + "/marker",
        "/home/sprite/selfroot/etc/hostname".to_string(),
        "/home/sprite/initroot/etc/hostname".to_string(),
        "/proc/1/root/etc/hostname".to_string(),
        "/proc/self/root/etc/hostname".to_string(),
        "/proc/1/cwd/etc/hostname".to_string(),
    ] {
        let (st, body) = sprite_file(vec![("path", path.clone()), ("asRoot", "true".into())]).await;
        assert!(
            st == StatusCode::NOT_FOUND || st == StatusCode::BAD_REQUEST,
            "{path}: {st} {}",
            String::from_utf8_lossy(&body)
        );
        assert!(!String::from_utf8_lossy(&body).contains("HOST SECRET"));
    }
    let (st, _) = get_json(
        &d,
        s,
        "list",
        &[("path", "/proc/1/root"), ("asRoot", "true")],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Writes, deletes, renames, chmods and copies through the same links stay inside too.
    let (st, v) = write(
        &d,
        s,
        &[("path", "/home/sprite/hostlink/pwned"), ("asRoot", "true")],
        b"x",
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = write(
        &d,
        s,
        &[
            ("path", &format!("/home/sprite/rootlink{host}/pwned")),
            ("asRoot", "true"),
        ],
        b"x",
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(d.sh(s, &format!("cat {host}/pwned")).await, "x");
    let (st, v) = post(
        &d,
        s,
        "chmod",
        json!({"path": "/home/sprite/hostlink/marker", "mode": "0777", "asRoot": true}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = post(
        &d,
        s,
        "copy",
        json!({"source": format!("{host}/marker"), "dest": "/home/sprite/stolen", "asRoot": true}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = post(&d, s, "rename", json!({"source": "/home/sprite/hostlink/marker", "dest": "/home/sprite/stolen", "asRoot": true})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = delete(
        &d,
        s,
        &[("path", "/home/sprite/hostlink/marker"), ("asRoot", "true")],
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    // Deleting the link removes the link.
    let (st, v) = delete(
        &d,
        s,
        &[("path", "/home/sprite/hostlink"), ("recursive", "true")],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"], json!(["/home/sprite/hostlink"]));
    assert_eq!(host_listing(), ["marker"]);

    // A directory swapped with symlinks to / and to the host directory, as fast as perl can,
    // while the API writes (as root) and reads through it.
    let unique = format!("pwned-{}", std::process::id());
    d.sh(s, "mkdir -p /home/sprite/race").await;
    let swapper = format!(
        "cd /home/sprite/race && mkdir real && exec perl -e '\
         my $end = time + 6; my $i = 0; \
         while (time < $end) {{ rename \"real\", \"d\"; rename \"d\", \"real\"; \
         symlink(($i++ % 2) ? \"/\" : \"{host}\", \"d\"); unlink \"d\"; }}'"
    );
    let racer = async {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut writes, mut reads, mut ok) = (0, 0, 0);
        while Instant::now() < deadline {
            let path = format!("/home/sprite/race/d/{unique}");
            let (st, _) = write(&d, s, &[("path", &path), ("asRoot", "true")], b"race").await;
            writes += 1;
            if st.is_success() {
                ok += 1;
            }
            for p in [
                "/home/sprite/race/d/marker",
                "/home/sprite/race/d/etc/hostname",
            ] {
                let (st, body) = read(&d, s, &[("path", p), ("asRoot", "true")]).await;
                reads += 1;
                let text = String::from_utf8_lossy(&body);
                assert!(!text.contains("HOST SECRET"), "{p}: read the host's file");
                if st == StatusCode::OK {
                    assert_eq!(text, sprite_hostname, "{p}");
                }
            }
        }
        (writes, reads, ok)
    };
    let argv = ["sh", "-c", swapper.as_str()];
    let (swap, (writes, reads, ok)) = tokio::join!(d.exec(s, &argv), racer);
    assert_eq!(swap.code, Some(0), "{:?}", swap.stderr_str());
    eprintln!("race: {writes} writes ({ok} landed in the sprite), {reads} reads");
    assert!(writes > 10, "the race did not run");
    assert!(
        !std::path::Path::new("/").join(&unique).exists(),
        "a write reached the host's /"
    );
    assert_eq!(
        host_listing(),
        ["marker"],
        "a write reached the host directory"
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.path().join("marker")).unwrap(),
        "HOST SECRET"
    );

    d.delete(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_sprites_wake_for_file_access() {
    let d = TestDaemon::start_real();
    let s = "fs-cold";
    d.create(s).await;
    put(&d, s, "/home/sprite/kept.txt", b"still here").await;
    for mode in ["cold", "warm"] {
        let (st, v) = d
            .call(
                Method::POST,
                &format!("/v1/sprites/{s}/sleep?mode={mode}"),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
        let (st, body) = read(&d, s, &[("path", "/home/sprite/kept.txt")]).await;
        assert_eq!(
            (st, body.as_slice()),
            (StatusCode::OK, &b"still here"[..]),
            "after {mode} sleep"
        );
        let (_, v) = d.get_json(&format!("/v1/sprites/{s}")).await;
        assert_eq!(v["status"], "running", "{v}");
    }
    d.delete(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_json_errors() {
    let d = TestDaemon::start_real();
    let s = "fs-bad";
    d.create(s).await;
    let cases: Vec<(StatusCode, Value)> = vec![
        get_json(&d, "no-such-sprite", "list", &[("path", "/")]).await,
        get_json(&d, s, "list", &[]).await,
        get_json(&d, s, "list", &[("path", "/"), ("recursive", "perhaps")]).await,
        write(&d, s, &[("path", "/tmp/x"), ("mode", "rwx")], b"").await,
        write(&d, s, &[("path", "/")], b"").await,
        post(&d, s, "chmod", json!({"path": "/tmp"})).await,
        post(&d, s, "chown", json!({"path": "/tmp"})).await,
        post(&d, s, "copy", json!({"source": "/tmp"})).await,
        d.call(Method::POST, &format!("/v1/sprites/{s}/fs/rename"), None)
            .await,
    ];
    let want = [404, 400, 400, 400, 400, 400, 400, 400, 400];
    for ((st, v), want) in cases.iter().zip(want) {
        assert_eq!(st.as_u16(), want, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let res = d
        .client()
        .get(d.url(&fs_path(s, "read", &[("path", "/etc/hostname")])))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    d.delete(s).await;
}
