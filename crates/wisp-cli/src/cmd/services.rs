//! `wisp services list|create|get|delete|start|stop|restart|logs|signal` (Sprites API §3.8;
//! the `sprite-env services` commands of §5). The sprite is the selected one (`-s NAME`,
//! `WISP_SPRITE`, `.wisp-sprite`), as for `wisp exec`.
//!
//! Create, start, stop, restart and logs answer NDJSON event streams: a service's output goes
//! to stdout (its stderr lines to stderr), what happens to it (started, exited, stopped) to
//! stderr.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use wisp_api::duration::parse_duration;
use wisp_api::service::{
    parse_signal, validate_service_name, LogEventType, ServiceLogEvent, ServiceRequest,
    SignalRequest,
};

use super::{field, short_time, Ctx};
use crate::client::{api_error, root_cause, sprite_path, unreachable, Client, DEFAULT_TIMEOUT};
use crate::config::Settings;
use crate::ndjson::LineSplitter;

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// List the sprite's services and their state
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Define a service (or redefine it) and start it; shows its first output
    Create(CreateArgs),
    /// Show one service
    Get(GetArgs),
    /// Delete a service: its process is stopped, its log file is kept
    #[command(visible_alias = "rm")]
    Delete(NameArgs),
    /// Start a stopped service
    Start(RunArgs),
    /// Stop a service (SIGTERM, then SIGKILL after --timeout); it stays stopped until started
    Stop(StopArgs),
    /// Stop a service if it runs, then start it
    Restart(RunArgs),
    /// Show a service's recent output, optionally following it for a while
    Logs(LogsArgs),
    /// Send a signal to a service's processes
    Signal(SignalArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the service objects as a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Service name (lowercase letters, digits and '-')
    pub name: String,
    /// The program to run (searched in PATH unless it contains a '/')
    #[arg(long, value_name = "BIN")]
    pub cmd: String,
    /// Its arguments, comma-separated (or after `--`)
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub args: Vec<String>,
    /// Environment entries, comma-separated or repeated
    #[arg(short = 'e', long = "env", value_name = "K=V", value_delimiter = ',',
          value_parser = crate::exec_ws::parse_env_pair)]
    pub env: Vec<(String, String)>,
    /// Working directory in the sprite (default /home/sprite)
    #[arg(short = 'd', long, value_name = "DIR")]
    pub dir: Option<String>,
    /// Services that must run before this one starts, comma-separated
    #[arg(long, value_name = "S1,S2", value_delimiter = ',')]
    pub needs: Vec<String>,
    /// The port it serves HTTP on (one service per sprite)
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u32>,
    /// How long to show its output
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub duration: String,
    /// Do not show its output; return once it is defined
    #[arg(long)]
    pub no_stream: bool,
    /// More arguments for the program
    #[arg(last = true, value_name = "ARGS")]
    pub rest: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Service name
    pub name: String,
    /// Print the service object as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// Service name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Service name
    pub name: String,
    /// How long to show its output
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub duration: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Service name
    pub name: String,
    /// How long it may take to exit after SIGTERM before SIGKILL
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub timeout: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Service name
    pub name: String,
    /// Show only the last N lines
    #[arg(short = 'n', long, value_name = "N")]
    pub lines: Option<u64>,
    /// Keep showing new output for this long (e.g. 30s)
    #[arg(short = 'f', long = "follow", value_name = "DURATION")]
    pub follow: Option<String>,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    /// Service name
    pub name: String,
    /// Signal name or number (TERM, HUP, USR1, 9, ...)
    pub signal: String,
}

pub async fn run(ctx: &Ctx, cmd: ServicesCommand) -> Result<i32> {
    match cmd {
        ServicesCommand::List(a) => list(ctx, a).await,
        ServicesCommand::Create(a) => create(ctx, a).await,
        ServicesCommand::Get(a) => get(ctx, a).await,
        ServicesCommand::Delete(a) => delete(ctx, a).await,
        ServicesCommand::Start(a) => start_or_restart(ctx, a, "start").await,
        ServicesCommand::Stop(a) => stop(ctx, a).await,
        ServicesCommand::Restart(a) => start_or_restart(ctx, a, "restart").await,
        ServicesCommand::Logs(a) => logs(ctx, a).await,
        ServicesCommand::Signal(a) => signal(ctx, a).await,
    }
}

/// Refuses a service name the server could never accept, before any request.
pub fn check_name(name: &str) -> Result<()> {
    validate_service_name(name).map_err(|e| anyhow::anyhow!("{e}"))
}

fn check_duration(what: &str, value: &str) -> Result<()> {
    parse_duration(value)
        .map(drop)
        .map_err(|e| anyhow::anyhow!("--{what}: {e}"))
}

/// `/v1/sprites/{sprite}/services`
pub fn services_path(sprite: &str) -> String {
    format!("{}/services", sprite_path(sprite))
}

/// `/v1/sprites/{sprite}/services/{name}` for a checked name.
pub fn service_path(sprite: &str, name: &str) -> String {
    format!("{}/{name}", services_path(sprite))
}

/// Requests the CLI's shared client has no form for: a JSON or empty body, an NDJSON or
/// empty answer.
struct Raw {
    http: reqwest::Client,
    settings: Settings,
}

/// The longest a service stream may take (the server caps `duration` at an hour).
const STREAM_TIMEOUT: Duration = Duration::from_secs(3700);

impl Raw {
    fn new(client: &Client) -> Result<Raw> {
        let mut b = reqwest::Client::builder()
            .user_agent(crate::client::USER_AGENT)
            .connect_timeout(Duration::from_secs(10));
        if crate::config::is_local(&client.settings().api_url) {
            b = b.no_proxy();
        }
        Ok(Raw {
            http: b.build().context("cannot set up the HTTP client")?,
            settings: client.settings().clone(),
        })
    }

    /// Sends a request; a non-2xx status is the server's error.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.settings.api_url))
            .query(query)
            .timeout(STREAM_TIMEOUT);
        if let Some(t) = &self.settings.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let api = &self.settings.api_url;
        let resp = rb.send().await.map_err(|e| {
            if e.is_connect() {
                unreachable(api, &root_cause(&e))
            } else {
                anyhow::anyhow!("request to wispd at {api} failed: {}", root_cause(&e))
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(api_error(status.as_u16(), &body, self.settings.token_source).into())
    }

    /// Prints the events of an NDJSON answer as they come; returns the exit code it implies
    /// (1 when the service exited or could not start during the stream).
    async fn follow(&self, mut resp: reqwest::Response, name: &str) -> Result<i32> {
        let mut lines = LineSplitter::default();
        let mut code = 0;
        let mut complete = false;
        loop {
            let chunk = resp.chunk().await.map_err(|e| {
                anyhow::anyhow!(
                    "the connection to wispd at {} broke: {}",
                    self.settings.api_url,
                    root_cause(&e)
                )
            })?;
            if let Some(c) = &chunk {
                lines.push(c)?;
            }
            let mut batch = Vec::new();
            while let Some(l) = lines.next_line() {
                batch.push(l);
            }
            if chunk.is_none() {
                batch.extend(lines.finish());
            }
            for l in batch {
                let text = String::from_utf8_lossy(&l);
                if text.trim().is_empty() {
                    continue;
                }
                let Ok(ev) = serde_json::from_str::<ServiceLogEvent>(&text) else {
                    continue; // an event type this client does not know
                };
                complete |= ev.kind == LogEventType::Complete;
                if let Some(c) = show(name, &ev) {
                    code = c;
                }
            }
            if chunk.is_none() {
                break;
            }
        }
        if !complete {
            bail!("wispd ended the stream early; the outcome is unknown");
        }
        Ok(code)
    }
}

/// Prints one event; `Some(1)` when it means the service is not running as asked.
fn show(name: &str, ev: &ServiceLogEvent) -> Option<i32> {
    let data = ev.data.as_deref().unwrap_or("");
    match ev.kind {
        LogEventType::Stdout => println!("{data}"),
        LogEventType::Stderr => eprintln!("{data}"),
        LogEventType::Started => match ev.pid {
            Some(pid) => eprintln!("{name}: started (pid {pid})"),
            None => eprintln!("{name}: started"),
        },
        LogEventType::Exit => {
            let code = ev.exit_code.map_or("?".into(), |c| c.to_string());
            eprintln!("{name}: exited with code {code}; it is restarted after a backoff");
            return Some(1);
        }
        LogEventType::Stopping => eprintln!("{name}: stopping"),
        LogEventType::Stopped => match ev.exit_code {
            Some(c) => eprintln!("{name}: stopped (exit code {c})"),
            None => eprintln!("{name}: stopped"),
        },
        LogEventType::Error => {
            eprintln!("{name}: error: {data}");
            return Some(1);
        }
        LogEventType::Complete => {}
    }
    None
}

async fn list(ctx: &Ctx, args: ListArgs) -> Result<i32> {
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let all = client.get_json(&services_path(&sprite), &[]).await?;
    let Some(items) = all.as_array() else {
        bail!("wispd sent a service list that is not a JSON array");
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", table(items));
    }
    Ok(0)
}

/// `cmd args…` on one line.
fn command_line(s: &Value) -> String {
    let mut parts = vec![field(s, "cmd").to_string()];
    if let Some(args) = s.get("args").and_then(Value::as_array) {
        parts.extend(args.iter().filter_map(Value::as_str).map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("{a:?}")
            } else {
                a.to_string()
            }
        }));
    }
    parts
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// NAME STATUS PID RESTARTS COMMAND, by name.
pub fn table(services: &[Value]) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "NAME".into(),
        "STATUS".into(),
        "PID".into(),
        "RESTARTS".into(),
        "COMMAND".into(),
    ]];
    for s in services {
        let st = s.get("state").cloned().unwrap_or(Value::Null);
        rows.push([
            field(s, "name").to_string(),
            field(&st, "status").to_string(),
            st.get("pid")
                .and_then(Value::as_i64)
                .map_or("-".into(), |p| p.to_string()),
            st.get("restart_count")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .to_string(),
            command_line(s),
        ]);
    }
    let mut widths = [0usize; 4];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines of one service.
pub fn render(s: &Value) -> String {
    let st = s.get("state").cloned().unwrap_or(Value::Null);
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
    line("Name:", field(s, "name").into());
    line("Command:", command_line(s));
    if let Some(d) = s.get("dir").and_then(Value::as_str) {
        line("Directory:", d.into());
    }
    let list = |k: &str| -> Vec<String> {
        s.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let needs = list("needs");
    if !needs.is_empty() {
        line("Needs:", needs.join(", "));
    }
    if let Some(p) = s.get("http_port").and_then(Value::as_u64) {
        line("HTTP port:", p.to_string());
    }
    if let Some(env) = s.get("env").and_then(Value::as_object) {
        for (k, v) in env {
            line("Env:", format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    line("Status:", field(&st, "status").into());
    if let Some(p) = st.get("pid").and_then(Value::as_i64) {
        line("PID:", p.to_string());
    }
    if let Some(t) = st.get("started_at").and_then(Value::as_str) {
        line("Started:", short_time(t));
    }
    line(
        "Restarts:",
        st.get("restart_count")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .to_string(),
    );
    if let Some(t) = st.get("next_restart_at").and_then(Value::as_str) {
        line("Next restart:", short_time(t));
    }
    if let Some(e) = st.get("error").and_then(Value::as_str) {
        line("Error:", e.into());
    }
    line("Log:", wisp_api::service::log_path_inside(field(s, "name")));
    out
}

/// The request body of `create`, checked as the server would.
pub fn request_of(args: &CreateArgs) -> Result<ServiceRequest> {
    let mut all_args = args.args.clone();
    all_args.extend(args.rest.iter().cloned());
    let env: BTreeMap<String, String> = args.env.iter().cloned().collect();
    let req = ServiceRequest {
        cmd: args.cmd.clone(),
        args: all_args,
        needs: args.needs.clone(),
        http_port: args.http_port,
        env,
        dir: args.dir.clone(),
    };
    req.validate().map_err(anyhow::Error::msg)?;
    Ok(req)
}

async fn create(ctx: &Ctx, args: CreateArgs) -> Result<i32> {
    check_name(&args.name)?;
    check_duration("duration", &args.duration)?;
    let body = serde_json::to_value(request_of(&args)?)?;
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let raw = Raw::new(&client)?;
    let duration = if args.no_stream { "0s" } else { &args.duration };
    let resp = raw
        .send(
            reqwest::Method::PUT,
            &service_path(&sprite, &args.name),
            &[("duration", duration)],
            Some(&body),
        )
        .await?;
    if args.no_stream {
        let _ = resp.bytes().await;
        eprintln!("service {} defined in sprite {sprite}", args.name);
        return Ok(0);
    }
    raw.follow(resp, &args.name).await
}

async fn get(ctx: &Ctx, args: GetArgs) -> Result<i32> {
    check_name(&args.name)?;
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let s = client
        .get_json(&service_path(&sprite, &args.name), &[])
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", render(&s));
    }
    Ok(0)
}

async fn delete(ctx: &Ctx, args: NameArgs) -> Result<i32> {
    check_name(&args.name)?;
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    client
        .delete(&service_path(&sprite, &args.name), DEFAULT_TIMEOUT)
        .await?;
    eprintln!("service {} deleted", args.name);
    Ok(0)
}

async fn start_or_restart(ctx: &Ctx, args: RunArgs, op: &str) -> Result<i32> {
    check_name(&args.name)?;
    check_duration("duration", &args.duration)?;
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let raw = Raw::new(&client)?;
    let resp = raw
        .send(
            reqwest::Method::POST,
            &format!("{}/{op}", service_path(&sprite, &args.name)),
            &[("duration", &args.duration)],
            None,
        )
        .await?;
    raw.follow(resp, &args.name).await
}

async fn stop(ctx: &Ctx, args: StopArgs) -> Result<i32> {
    check_name(&args.name)?;
    check_duration("timeout", &args.timeout)?;
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let raw = Raw::new(&client)?;
    let resp = raw
        .send(
            reqwest::Method::POST,
            &format!("{}/stop", service_path(&sprite, &args.name)),
            &[("timeout", &args.timeout)],
            None,
        )
        .await?;
    raw.follow(resp, &args.name).await.map(|_| 0)
}

async fn logs(ctx: &Ctx, args: LogsArgs) -> Result<i32> {
    check_name(&args.name)?;
    if let Some(f) = &args.follow {
        check_duration("follow", f)?;
    }
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let raw = Raw::new(&client)?;
    let lines = args.lines.map(|n| n.to_string());
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(n) = &lines {
        query.push(("lines", n));
    }
    if let Some(f) = &args.follow {
        query.push(("duration", f));
    }
    let resp = raw
        .send(
            reqwest::Method::GET,
            &format!("{}/logs", service_path(&sprite, &args.name)),
            &query,
            None,
        )
        .await?;
    // Lifecycle events while following are news, not failures.
    raw.follow(resp, &args.name).await.map(|_| 0)
}

async fn signal(ctx: &Ctx, args: SignalArgs) -> Result<i32> {
    check_name(&args.name)?;
    if parse_signal(&args.signal).is_none() {
        bail!(
            "unknown signal {:?}: use a name like TERM, HUP, INT, USR1 or a number",
            args.signal
        );
    }
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let raw = Raw::new(&client)?;
    let body = serde_json::to_value(SignalRequest {
        name: args.name.clone(),
        signal: args.signal.clone(),
    })?;
    raw.send(
        reqwest::Method::POST,
        &format!("{}/signal", services_path(&sprite)),
        &[],
        Some(&body),
    )
    .await?;
    eprintln!("sent {} to service {}", args.signal, args.name);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_and_render() {
        let s = json!({"name": "web", "cmd": "python3", "args": ["-m", "http.server", "a b"],
            "needs": ["db"], "env": {"A": "1"}, "http_port": 8080,
            "state": {"name": "web", "status": "running", "pid": 42,
                      "started_at": "2026-01-31T10:28:13.366126Z", "restart_count": 2}});
        let t = table(&[s.clone(), json!({"name": "x", "cmd": "y"})]);
        assert_eq!(
            t,
            "NAME  STATUS   PID  RESTARTS  COMMAND\n\
             web   running  42   2         python3 -m http.server \"a b\"\n\
             x     -        -    0         y\n"
        );
        let r = render(&s);
        assert!(r.contains("Needs:        db\n"), "{r}");
        assert!(r.contains("HTTP port:    8080\n"), "{r}");
        assert!(r.contains("Started:      2026-01-31 10:28:13Z\n"), "{r}");
        assert!(
            r.contains("Log:          /.sprite/logs/services/web.log\n"),
            "{r}"
        );
    }

    #[test]
    fn create_requests() {
        let args = CreateArgs {
            name: "web".into(),
            cmd: "python3".into(),
            args: vec!["-m".into()],
            env: vec![("A".into(), "1".into())],
            dir: None,
            needs: vec![],
            http_port: Some(8080),
            duration: "5s".into(),
            no_stream: false,
            rest: vec!["http.server".into()],
        };
        let r = request_of(&args).unwrap();
        assert_eq!(r.args, ["-m", "http.server"]);
        assert_eq!(r.env["A"], "1");
        let bad = CreateArgs {
            dir: Some("rel".into()),
            ..args
        };
        assert!(request_of(&bad).is_err());
        assert!(check_name("Bad").is_err());
        assert!(check_name("signal").is_err());
        assert!(check_duration("duration", "soon").is_err());
    }
}
