//! The few API calls the benchmarks time, over the public API only.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use wisp_api::checkpoint::StreamEvent;

pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// `POST /v1/sprites`; returns the new sprite's id.
    pub async fn create(&self, name: &str) -> Result<String> {
        self.create_with(serde_json::json!({ "name": name })).await
    }

    /// Creates `name` with `public` URL auth: its sprite URL answers without a token.
    pub async fn create_public(&self, name: &str) -> Result<String> {
        self.create_with(serde_json::json!({
            "name": name,
            "url_settings": { "auth": "public" },
        }))
        .await
    }

    /// Creates `name` as a fork of `src`'s checkpoint `checkpoint` (Wisp's `"from"`); returns
    /// the fork's id once wispd answered 201.
    pub async fn fork(&self, name: &str, src: &str, checkpoint: &str) -> Result<String> {
        self.create_with(serde_json::json!({
            "name": name,
            "from": { "sprite": src, "checkpoint": checkpoint },
        }))
        .await
    }

    async fn create_with(&self, body: serde_json::Value) -> Result<String> {
        let r = self
            .http
            .post(format!("{}/v1/sprites", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if status.as_u16() != 201 {
            bail!("create {}: {status} {text}", body["name"]);
        }
        let sprite: wisp_api::sprite::Sprite =
            serde_json::from_str(&text).context("create: the answer is not a sprite")?;
        Ok(sprite.id)
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let r = self
            .http
            .delete(format!("{}/v1/sprites/{name}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("delete {name}: {}", r.status());
        }
        Ok(())
    }

    /// Deletes every sprite of the org (cleanup at the end of a run, also after a failure).
    pub async fn delete_all(&self) -> Result<()> {
        for _ in 0..100 {
            let page: wisp_api::sprite::ListSpritesResponse = self
                .http
                .get(format!("{}/v1/sprites", self.base))
                .bearer_auth(&self.token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if page.sprites.is_empty() {
                return Ok(());
            }
            for s in &page.sprites {
                self.delete(&s.name).await?;
            }
        }
        bail!("sprites are still listed after deleting them")
    }

    /// Lists every sprite through `GET /v1/sprites`, page after page (`max_results=50`, the
    /// most wispd gives, following `next_continuation_token`). Returns the names and the time
    /// of each page.
    pub async fn list_all(&self) -> Result<(Vec<String>, Vec<Duration>)> {
        let mut names = Vec::new();
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![("max_results", "50".to_string())];
            if let Some(t) = &token {
                q.push(("continuation_token", t.clone()));
            }
            let t = Instant::now();
            let page: wisp_api::sprite::ListSpritesResponse = self
                .http
                .get(format!("{}/v1/sprites", self.base))
                .bearer_auth(&self.token)
                .query(&q)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            pages.push(t.elapsed());
            names.extend(page.sprites.into_iter().map(|s| s.name));
            match page.next_continuation_token {
                Some(t) if page.has_more => token = Some(t),
                _ => return Ok((names, pages)),
            }
            if pages.len() > 100_000 {
                bail!("listing sprites: no end after {} pages", pages.len());
            }
        }
    }

    /// `POST .../checkpoint` until the NDJSON stream's `complete` line; returns the new id.
    pub async fn checkpoint(&self, name: &str) -> Result<String> {
        let url = format!("{}/v1/sprites/{name}/checkpoint", self.base);
        let id = self.ndjson(&url, &format!("checkpoint {name}")).await?;
        id.context("checkpoint: the complete line has no id")
    }

    /// `POST .../checkpoints/{id}/restore` until the NDJSON stream's `complete` line.
    pub async fn restore(&self, name: &str, checkpoint: &str) -> Result<()> {
        let url = format!(
            "{}/v1/sprites/{name}/checkpoints/{checkpoint}/restore",
            self.base
        );
        self.ndjson(&url, &format!("restore {name} to {checkpoint}"))
            .await
            .map(drop)
    }

    /// POSTs `{}` and reads the NDJSON progress stream to its end; the last line must be
    /// `complete`, whose `id` is returned.
    async fn ndjson(&self, url: &str, what: &str) -> Result<Option<String>> {
        let r = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(&serde_json::json!({}))
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if status.as_u16() != 200 {
            bail!("{what}: {status} {text}");
        }
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .with_context(|| format!("{what}: empty answer"))?;
        match serde_json::from_str(last) {
            Ok(StreamEvent::Complete { id, .. }) => Ok(id),
            Ok(StreamEvent::Error { error, .. }) => bail!("{what}: {error}"),
            _ => bail!("{what}: the stream did not end with complete: {last}"),
        }
    }

    /// `POST /v1/sprites/{name}/sleep?mode=warm|cold` (Wisp's extension).
    pub async fn sleep(&self, name: &str, cold: bool) -> Result<()> {
        let mode = if cold { "cold" } else { "warm" };
        let r = self
            .http
            .post(format!("{}/v1/sprites/{name}/sleep", self.base))
            .query(&[("mode", mode)])
            .bearer_auth(&self.token)
            .send()
            .await?;
        if r.status().as_u16() != 204 {
            bail!("sleep {name}: {}", r.status());
        }
        Ok(())
    }

    /// Runs `argv` over the exec WebSocket and returns its exit code.
    pub async fn exec_ws(&self, name: &str, argv: &[&str]) -> Result<i32> {
        let mut url = format!(
            "{}/v1/sprites/{name}/exec?",
            self.base.replacen("http", "ws", 1)
        );
        for a in argv {
            url.push_str("cmd=");
            url.push_str(&encode(a));
            url.push('&');
        }
        url.push_str("path=");
        url.push_str(&encode(argv[0]));
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {}", self.token).parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .context("exec handshake")?;
        while let Some(msg) = ws.next().await {
            if let Message::Binary(b) = msg? {
                if b.first() == Some(&wisp_api::exec::STREAM_EXIT) {
                    let code = b.get(1).copied().unwrap_or(255) as i32;
                    let _ = ws.close(None).await;
                    return Ok(code);
                }
            }
        }
        Err(anyhow!("exec socket closed without an exit code"))
    }

    /// Runs `argv` through the plain HTTP exec endpoint; returns the exit code.
    pub async fn exec_http(&self, name: &str, argv: &[&str]) -> Result<i32> {
        let mut q: Vec<(&str, &str)> = argv.iter().map(|a| ("cmd", *a)).collect();
        q.push(("path", argv[0]));
        let body = self
            .http
            .post(format!("{}/v1/sprites/{name}/exec", self.base))
            .bearer_auth(&self.token)
            .query(&q)
            .send()
            .await?
            .bytes()
            .await?;
        match body.len() {
            n if n >= 2 && body[n - 2] == wisp_api::exec::STREAM_EXIT => Ok(body[n - 1] as i32),
            _ => bail!("HTTP exec answered without an exit frame"),
        }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
