//! `wisp checkpoint create|list|info|delete|restore` (Sprites API §3.6; the `sprite` CLI's
//! commands of the same names, §5). The sprite is the selected one (`-s NAME`, `WISP_SPRITE`,
//! `.wisp-sprite`), as for `wisp exec`.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use wisp_api::checkpoint::{
    is_valid_checkpoint_id, CreateCheckpointRequest, CURRENT, MAX_COMMENT_BYTES,
};

use super::{field, short_time, Ctx};
use crate::cli::{
    CheckpointCommand, CheckpointCreateArgs, CheckpointIdArgs, CheckpointInfoArgs,
    CheckpointListArgs,
};
use crate::client::{sprite_path, ApiError, Client, DEFAULT_TIMEOUT};
use crate::ndjson::{completed_id, step, Completed, Step};

pub async fn run(ctx: &Ctx, cmd: CheckpointCommand) -> Result<i32> {
    match cmd {
        CheckpointCommand::Create(a) => create(ctx, a).await,
        CheckpointCommand::List(a) => list(ctx, a).await,
        CheckpointCommand::Info(a) => info(ctx, a).await,
        CheckpointCommand::Delete(a) => delete(ctx, a).await,
        CheckpointCommand::Restore(a) => super::restore::run(ctx, a).await,
    }
}

/// Refuses anything that cannot name a stored checkpoint, before any request.
pub fn check_id(id: &str) -> Result<()> {
    if is_valid_checkpoint_id(id) {
        return Ok(());
    }
    if id.eq_ignore_ascii_case(CURRENT) {
        bail!(
            "{CURRENT:?} is the sprite's live state, not a stored checkpoint: pass an id like v1 \
             (see `wisp checkpoint list`)"
        );
    }
    bail!("invalid checkpoint id {id:?}: expected v0, v1, … or auto-… (see `wisp checkpoint list`)")
}

/// `/v1/sprites/{name}/checkpoints`
pub fn checkpoints_path(sprite: &str) -> String {
    format!("{}/checkpoints", sprite_path(sprite))
}

/// `/v1/sprites/{name}/checkpoints/{id}` for an id checked by [`check_id`].
pub fn checkpoint_path(sprite: &str, id: &str) -> String {
    format!("{}/{id}", checkpoints_path(sprite))
}

/// A 404 about a checkpoint in words; a 404 about the sprite (and anything else) unchanged.
pub fn explain_not_found(err: anyhow::Error, sprite: &str, id: &str) -> anyhow::Error {
    match err.downcast_ref::<ApiError>() {
        Some(api) if api.status == 404 && !is_about_the_sprite(&api.message) => {
            anyhow!("no checkpoint {id} in sprite {sprite}; see `wisp checkpoint list -s {sprite}`")
        }
        _ => err,
    }
}

/// Whether a 404 message says the sprite is unknown (rather than the checkpoint).
fn is_about_the_sprite(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("sprite") && !m.contains("checkpoint")
}

/// Runs a POST that answers with an NDJSON progress stream (create, restore) to its end.
/// Progress goes to stderr: a spinner with the latest info line on a terminal, else the info
/// lines as they come. An `error` line is a failure even though the HTTP status was 200.
pub async fn follow(
    client: &Client,
    path: &str,
    body: Option<Value>,
    what: &str,
) -> Result<Completed> {
    let spinner = std::io::stderr().is_terminal().then(|| {
        let s = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            s.set_style(style);
        }
        s.set_message(what.to_string());
        s.enable_steady_tick(Duration::from_millis(100));
        s
    });
    let result = async {
        let mut stream = client.post_ndjson(path, body).await?;
        while let Some(ev) = stream.next().await? {
            match step(ev) {
                Step::Progress(line) => match &spinner {
                    Some(s) if !line.trim().is_empty() => s.set_message(line.trim().to_string()),
                    Some(_) => {}
                    None => eprintln!("{line}"),
                },
                Step::Done(c) => return Ok(c),
                Step::Failed(e) => return Err(anyhow::Error::msg(e)),
            }
        }
        bail!("wispd ended the progress stream without saying whether {what} worked")
    }
    .await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    result
}

async fn create(ctx: &Ctx, args: CheckpointCreateArgs) -> Result<i32> {
    if let Some(c) = &args.comment {
        if c.len() > MAX_COMMENT_BYTES {
            bail!(
                "the comment is {} bytes long; at most {MAX_COMMENT_BYTES} are kept",
                c.len()
            );
        }
    }
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let body = serde_json::to_value(CreateCheckpointRequest {
        comment: args.comment,
    })?;
    let path = format!("{}/checkpoint", sprite_path(&sprite));
    let done = follow(
        &client,
        &path,
        Some(body),
        &format!("checkpointing sprite {sprite}"),
    )
    .await?;
    // A terminal gets the sentence; a script gets the new id alone on stdout.
    if std::io::stdout().is_terminal() {
        println!("{}", done.data);
    } else if let Some(id) = completed_id(&done) {
        eprintln!("{}", done.data);
        println!("{id}");
    } else {
        println!("{}", done.data);
    }
    Ok(0)
}

async fn list(ctx: &Ctx, args: CheckpointListArgs) -> Result<i32> {
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let query: &[(&str, &str)] = if args.include_auto {
        &[("includeAuto", "true")]
    } else {
        &[]
    };
    let all = client.get_json(&checkpoints_path(&sprite), query).await?;
    let Some(items) = all.as_array() else {
        bail!("wispd sent a checkpoint list that is not a JSON array");
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", table(items));
    }
    Ok(0)
}

/// Control characters (a newline in a comment, say) would break the table.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The ID CREATED COMMENT table, in the server's order (newest first). The live state's
/// pseudo entry says that it is the live state and which checkpoint it descends from.
pub fn table(checkpoints: &[Value]) -> String {
    let mut rows: Vec<[String; 3]> = vec![["ID".into(), "CREATED".into(), "COMMENT".into()]];
    for c in checkpoints {
        let id = one_line(field(c, "id"));
        let comment = if id == CURRENT {
            match c
                .get("source_id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                Some(from) => format!("(live state, from {})", one_line(from)),
                None => "(live state)".to_string(),
            }
        } else {
            one_line(field(c, "comment"))
        };
        rows.push([id, short_time(&one_line(field(c, "create_time"))), comment]);
    }
    let mut widths = [0usize; 2];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {}",
            r[0],
            r[1],
            r[2],
            w0 = widths[0],
            w1 = widths[1]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

async fn info(ctx: &Ctx, args: CheckpointInfoArgs) -> Result<i32> {
    check_id(&args.id)?;
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let c = client
        .get_json(&checkpoint_path(&sprite, &args.id), &[])
        .await
        .map_err(|e| explain_not_found(e, &sprite, &args.id))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", render(&c));
    }
    Ok(0)
}

/// `key: value` lines for people.
pub fn render(c: &Value) -> String {
    let history: Vec<&str> = c
        .get("history")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let health = match c.get("health").and_then(Value::as_str) {
        None | Some("") => "ok",
        Some(h) => h,
    };
    let auto = c.get("is_auto").and_then(Value::as_bool) == Some(true);
    let rows = [
        ("id", field(c, "id").to_string()),
        ("created", short_time(field(c, "create_time"))),
        ("comment", field(c, "comment").to_string()),
        ("automatic", if auto { "yes" } else { "no" }.to_string()),
        ("source", field(c, "source_id").to_string()),
        (
            "history",
            if history.is_empty() {
                "-".to_string()
            } else {
                history.join(", ")
            },
        ),
        ("health", health.to_string()),
    ];
    rows.iter()
        .map(|(k, v)| format!("{:<10} {}\n", format!("{k}:"), one_line(v)))
        .collect()
}

async fn delete(ctx: &Ctx, args: CheckpointIdArgs) -> Result<i32> {
    check_id(&args.id)?;
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let id = &args.id;
    client
        .delete(&checkpoint_path(&sprite, id), DEFAULT_TIMEOUT)
        .await
        .map_err(|e| match e.downcast_ref::<ApiError>() {
            Some(api) if api.status == 409 => anyhow!(
                "{id} is the current checkpoint of sprite {sprite} (its files descend from \
                 it); restore another checkpoint first"
            ),
            _ => explain_not_found(e, &sprite, id),
        })?;
    eprintln!("deleted checkpoint {id} of sprite {sprite}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_checked_before_any_request() {
        for ok in ["v0", "v12", "auto-20260101-ab"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "v01", "../v1", "v1/restore", "x", "V1"] {
            let e = check_id(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid checkpoint id"), "{e}");
        }
        let e = check_id("Current").unwrap_err().to_string();
        assert!(e.contains("live state"), "{e}");
        assert_eq!(
            checkpoint_path("box", "v3"),
            "/v1/sprites/box/checkpoints/v3"
        );
    }

    #[test]
    fn not_found_messages() {
        let api = |status: u16, msg: &str| -> anyhow::Error {
            ApiError {
                status,
                message: msg.into(),
                hint: None,
            }
            .into()
        };
        let e = explain_not_found(api(404, "checkpoint not found"), "box", "v9");
        assert_eq!(
            e.to_string(),
            "no checkpoint v9 in sprite box; see `wisp checkpoint list -s box`"
        );
        let e = explain_not_found(api(404, "not found"), "box", "v9");
        assert!(e.to_string().starts_with("no checkpoint v9"));
        let e = explain_not_found(api(404, "sprite not found"), "box", "v9");
        assert_eq!(e.to_string(), "sprite not found (404)");
        let e = explain_not_found(api(400, "bad"), "box", "v9");
        assert_eq!(e.to_string(), "bad (400)");
    }

    #[test]
    fn command_lines() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| (c.sprite, c.command));
        let (s, c) = parse(&[
            "wisp",
            "checkpoint",
            "create",
            "-s",
            "box",
            "--comment",
            "x y",
        ])
        .unwrap();
        assert_eq!(s.as_deref(), Some("box"));
        let Command::Checkpoint(CheckpointCommand::Create(a)) = c else {
            panic!("not create: {c:?}")
        };
        assert_eq!(a.comment.as_deref(), Some("x y"));
        let (_, c) = parse(&["wisp", "checkpoints", "ls", "--include-auto", "--json"]).unwrap();
        assert!(matches!(
            c,
            Command::Checkpoint(CheckpointCommand::List(CheckpointListArgs {
                include_auto: true,
                json: true
            }))
        ));
        let (s, c) = parse(&["wisp", "-s", "b", "checkpoint", "rm", "v2"]).unwrap();
        assert_eq!(s.as_deref(), Some("b"));
        assert!(matches!(c, Command::Checkpoint(CheckpointCommand::Delete(a)) if a.id == "v2"));
        let (_, c) = parse(&["wisp", "checkpoint", "info", "v1", "--json"]).unwrap();
        assert!(matches!(c, Command::Checkpoint(CheckpointCommand::Info(a)) if a.json));
        let (_, c) = parse(&["wisp", "checkpoint", "restore", "v1"]).unwrap();
        assert!(matches!(c, Command::Checkpoint(CheckpointCommand::Restore(a)) if a.id == "v1"));
        let (s, c) = parse(&["wisp", "restore", "v1", "-s", "box"]).unwrap();
        assert_eq!(s.as_deref(), Some("box"));
        assert!(matches!(c, Command::Restore(a) if a.id == "v1"));
        let (_, c) = parse(&["wisp", "fork", "src@v3", "new", "--label", "l"]).unwrap();
        assert!(
            matches!(c, Command::Fork(a) if a.source == "src@v3" && a.name == "new" && a.labels == ["l"])
        );
        assert!(parse(&["wisp", "fork", "src"]).is_err());
        assert!(parse(&["wisp", "restore"]).is_err());
        assert!(parse(&["wisp", "checkpoint", "delete"]).is_err());
    }

    #[test]
    fn table_layout() {
        let list = vec![
            json!({"id":"Current","create_time":"2026-01-31T10:30:00.5Z","source_id":"v1"}),
            json!({"id":"v1","create_time":"2026-01-31T10:28:13.1Z","comment":"before\nupgrade"}),
            json!({"id":"v0","create_time":"2026-01-31T10:00:00Z","comment":""}),
        ];
        assert_eq!(
            table(&list),
            "ID       CREATED               COMMENT\n\
             Current  2026-01-31 10:30:00Z  (live state, from v1)\n\
             v1       2026-01-31 10:28:13Z  before upgrade\n\
             v0       2026-01-31 10:00:00Z  -\n"
        );
        assert_eq!(
            table(&[json!({"id":"Current"})]),
            "ID       CREATED  COMMENT\nCurrent  -        (live state)\n"
        );
    }

    #[test]
    fn info_lines() {
        let out = render(&json!({"id":"v2","create_time":"2026-01-31T10:28:13Z",
            "comment":"x","is_auto":false,"source_id":"v1","history":["v0","v1"],"health":""}));
        assert_eq!(
            out,
            "id:        v2\n\
             created:   2026-01-31 10:28:13Z\n\
             comment:   x\n\
             automatic: no\n\
             source:    v1\n\
             history:   v0, v1\n\
             health:    ok\n"
        );
        assert_eq!(render(&Value::Null).lines().count(), 7);
    }
}
