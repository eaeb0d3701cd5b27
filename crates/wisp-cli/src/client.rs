//! A thin HTTP client for wispd that turns failures into readable messages.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::config::{Settings, TokenSource};

/// Timeout of ordinary requests.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Creating or destroying a sprite can take a while (the SDKs allow 120 s).
pub const SLOW_TIMEOUT: Duration = Duration::from_secs(180);

pub const USER_AGENT: &str = concat!("wisp-cli/", env!("CARGO_PKG_VERSION"));

/// A non-2xx answer from wispd.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// Shown on its own line after the message.
    pub hint: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Builds the error of a non-2xx response from its status and body.
pub fn api_error(status: u16, body: &[u8], token_source: TokenSource) -> ApiError {
    let message = message_from_body(body).unwrap_or_else(|| {
        reason_phrase(status)
            .unwrap_or("request failed")
            .to_string()
    });
    let hint = (status == 401).then(|| unauthorized_hint(token_source));
    ApiError {
        status,
        message,
        hint,
    }
}

fn message_from_body(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        if let Some(m) = s("error").or_else(|| s("message")) {
            return Some(m);
        }
        if let Some(errs) = v.get("errors").and_then(Value::as_array) {
            let list: Vec<&str> = errs.iter().filter_map(Value::as_str).collect();
            if !list.is_empty() {
                return Some(list.join("; "));
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    Some(short)
}

fn reason_phrase(status: u16) -> Option<&'static str> {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
}

fn unauthorized_hint(source: TokenSource) -> String {
    let base = "set WISP_TOKEN (or run `wisp login --token TOKEN`); a local wispd keeps its \
                admin token in $WISP_DATA_DIR/admin-token (default /var/lib/wisp/admin-token)";
    match source {
        TokenSource::None => format!("no token was sent: {base}"),
        TokenSource::Flag => format!("the --token value was refused: {base}"),
        TokenSource::Env => format!("the WISP_TOKEN value was refused: {base}"),
        TokenSource::ConfigFile => format!("the token in the config file was refused: {base}"),
        TokenSource::AdminTokenFile => format!("the admin-token file's token was refused: {base}"),
    }
}

/// The innermost cause of an error chain (e.g. "Connection refused (os error 111)").
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The message shown when the daemon cannot be reached.
pub fn unreachable(api_url: &str, cause: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach wispd at {api_url}: {cause}. Is it running? Start it with `wispd` (see README)"
    )
}

pub struct Client {
    http: reqwest::Client,
    settings: Settings,
}

impl Client {
    pub fn new(settings: Settings) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .timeout(DEFAULT_TIMEOUT);
        if crate::config::is_local(&settings.api_url) {
            builder = builder.no_proxy();
        }
        let http = builder.build().context("cannot set up the HTTP client")?;
        Ok(Client { http, settings })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `path` starts with `/v1/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.settings.api_url, path)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, self.url(path));
        match &self.settings.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(api_error(status.as_u16(), &body, self.settings.token_source).into())
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let api = &self.settings.api_url;
        if e.is_timeout() {
            anyhow::anyhow!("wispd at {api} did not answer in time")
        } else if e.is_connect() {
            unreachable(api, &root_cause(e))
        } else {
            anyhow::anyhow!("request to wispd at {api} failed: {}", root_cause(e))
        }
    }

    async fn json(&self, resp: reqwest::Response) -> Result<Value> {
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        serde_json::from_slice(&bytes).context("wispd sent a response that is not valid JSON")
    }

    pub async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let resp = self
            .send(self.request(reqwest::Method::GET, path).query(query))
            .await?;
        self.json(resp).await
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<Value> {
        let rb = self
            .request(reqwest::Method::POST, path)
            .timeout(timeout)
            .json(body);
        let resp = self.send(rb).await?;
        self.json(resp).await
    }

    /// A POST with no body whose answer has no body either (204).
    pub async fn post_empty(
        &self,
        path: &str,
        query: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<()> {
        let rb = self
            .request(reqwest::Method::POST, path)
            .query(query)
            .timeout(timeout);
        self.send(rb).await.map(drop)
    }

    pub async fn delete(&self, path: &str, timeout: Duration) -> Result<()> {
        let rb = self.request(reqwest::Method::DELETE, path).timeout(timeout);
        self.send(rb).await.map(drop)
    }

    /// Sends a request (with an optional streamed body) and returns the response whatever
    /// its status; only transport failures are errors. For file transfers (`wisp cp`).
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<reqwest::Body>,
        timeout: Duration,
    ) -> Result<reqwest::Response> {
        let mut rb = self.request(method, path).query(query).timeout(timeout);
        if let Some(b) = body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(b);
        }
        rb.send().await.map_err(|e| self.transport_error(&e))
    }

    /// The readable error of a non-2xx response (its body is read).
    pub async fn error_of(&self, resp: reqwest::Response) -> anyhow::Error {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        api_error(status, &body, self.settings.token_source).into()
    }

    /// The JSON body of a response.
    pub async fn json_of(&self, resp: reqwest::Response) -> Result<Value> {
        self.json(resp).await
    }

    /// A transport error during a streamed body, phrased like the others.
    pub fn stream_error(&self, e: &reqwest::Error) -> anyhow::Error {
        self.transport_error(e)
    }
}

/// Timeout of one file transfer (`wisp cp`): files may be large.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Longest silence between two chunks of a progress stream (checkpoint create, restore).
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest progress stream as a whole.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(3600);

impl Client {
    /// A POST whose 200 answer is an NDJSON progress stream (Sprites API §3.6: checkpoint
    /// create and restore). A non-2xx status is an [`ApiError`] as usual; the events are read
    /// with [`EventStream::next`].
    pub async fn post_ndjson(&self, path: &str, body: Option<Value>) -> Result<EventStream<'_>> {
        let mut rb = self
            .request(reqwest::Method::POST, path)
            .timeout(STREAM_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/x-ndjson");
        if let Some(b) = &body {
            rb = rb.json(b);
        }
        let resp = self.send(rb).await?;
        Ok(EventStream {
            client: self,
            resp,
            lines: crate::ndjson::LineSplitter::default(),
            ended: false,
        })
    }
}

/// The events of an NDJSON progress stream, one at a time.
pub struct EventStream<'a> {
    client: &'a Client,
    resp: reqwest::Response,
    lines: crate::ndjson::LineSplitter,
    ended: bool,
}

impl EventStream<'_> {
    /// The next event; `None` once the body has ended. Blank lines and unknown event types are
    /// skipped.
    pub async fn next(&mut self) -> Result<Option<wisp_api::checkpoint::StreamEvent>> {
        use crate::ndjson::parse_event;
        loop {
            while let Some(line) = self.lines.next_line() {
                if let Some(ev) = parse_event(&line)? {
                    return Ok(Some(ev));
                }
            }
            if self.ended {
                return match self.lines.finish() {
                    Some(line) => parse_event(&line),
                    None => Ok(None),
                };
            }
            let api = &self.client.settings.api_url;
            match tokio::time::timeout(STREAM_IDLE_TIMEOUT, self.resp.chunk()).await {
                Err(_) => anyhow::bail!(
                    "wispd at {api} sent no progress for {} s; the outcome is unknown",
                    STREAM_IDLE_TIMEOUT.as_secs()
                ),
                Ok(Err(e)) if e.is_timeout() => {
                    anyhow::bail!("wispd at {api} did not finish in time; the outcome is unknown")
                }
                Ok(Err(e)) => anyhow::bail!(
                    "the connection to wispd at {api} broke: {}; the outcome is unknown",
                    root_cause(&e)
                ),
                Ok(Ok(None)) => self.ended = true,
                Ok(Ok(Some(chunk))) => self.lines.push(&chunk)?,
            }
        }
    }
}

/// `/v1/sprites/{name}` for a name already checked by [`crate::selection::check_name`].
pub fn sprite_path(name: &str) -> String {
    format!("/v1/sprites/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let e = api_error(404, br#"{"error":"sprite not found"}"#, TokenSource::Env);
        assert_eq!(e.to_string(), "sprite not found (404)");
        let e = api_error(
            400,
            br#"{"errors":["invalid sprite name format","x"]}"#,
            TokenSource::Env,
        );
        assert_eq!(e.to_string(), "invalid sprite name format; x (400)");
        let e = api_error(
            429,
            br#"{"error":"","message":"slow down"}"#,
            TokenSource::Env,
        );
        assert_eq!(e.message, "slow down");
        let e = api_error(500, b"plain text failure\n", TokenSource::Env);
        assert_eq!(e.to_string(), "plain text failure (500)");
        let e = api_error(502, b"", TokenSource::Env);
        assert_eq!(e.to_string(), "Bad Gateway (502)");
        let e = api_error(599, b"", TokenSource::Env);
        assert_eq!(e.to_string(), "request failed (599)");
        let long = "x".repeat(1000);
        assert!(
            api_error(500, long.as_bytes(), TokenSource::Env)
                .message
                .len()
                < 400
        );
    }

    #[test]
    fn unauthorized_has_hint() {
        let e = api_error(
            401,
            br#"{"error":"authentication failed"}"#,
            TokenSource::None,
        );
        let s = e.to_string();
        assert!(s.starts_with("authentication failed (401)\nhint: no token was sent"));
        assert!(s.contains("WISP_TOKEN"));
    }

    #[test]
    fn unreachable_message() {
        let e = unreachable("http://127.0.0.1:7575", "Connection refused (os error 111)");
        assert_eq!(
            e.to_string(),
            "cannot reach wispd at http://127.0.0.1:7575: Connection refused (os error 111). \
             Is it running? Start it with `wispd` (see README)"
        );
    }
}
