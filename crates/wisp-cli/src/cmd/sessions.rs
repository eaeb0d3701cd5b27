//! `wisp sessions [list]`, `wisp sessions attach ID` (also `wisp attach ID`) and
//! `wisp sessions kill ID`: the exec sessions of a sprite, which outlive their clients.

use std::time::Duration;

use anyhow::{anyhow, Result};
use wisp_api::exec::SessionList;

use super::{short_time, Ctx};
use crate::cli::{AttachArgs, KillArgs, SessionsArgs, SessionsCommand};
use crate::client::sprite_path;
use crate::exec_ws::{self, RunOptions, DETACH_KEY};

pub async fn run(ctx: &Ctx, args: SessionsArgs) -> Result<i32> {
    match args.command {
        None => list(ctx, false).await,
        Some(SessionsCommand::List { json }) => list(ctx, json).await,
        Some(SessionsCommand::Attach(a)) => attach(ctx, a).await,
        Some(SessionsCommand::Kill(k)) => kill(ctx, k).await,
    }
}

async fn fetch(ctx: &Ctx, sprite: &str) -> Result<SessionList> {
    let client = ctx.client()?;
    let v = client
        .get_json(&format!("{}/exec", sprite_path(sprite)), &[])
        .await?;
    serde_json::from_value(v).map_err(|e| anyhow!("wispd sent an unexpected session list: {e}"))
}

/// The table `wisp sessions` prints.
fn table(list: &SessionList) -> String {
    let mut out = format!(
        "{:<10} {:<5} {:<9} {:<21} {}\n",
        "ID", "TTY", "ATTACHED", "CREATED", "COMMAND"
    );
    for s in &list.sessions {
        out.push_str(&format!(
            "{:<10} {:<5} {:<9} {:<21} {}\n",
            s.id,
            if s.tty { "yes" } else { "no" },
            if s.is_active { "yes" } else { "no" },
            short_time(&s.created),
            s.command
        ));
    }
    out
}

pub async fn list(ctx: &Ctx, json: bool) -> Result<i32> {
    let sprite = ctx.sprite(None)?;
    let list = fetch(ctx, &sprite).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list.sessions)?);
    } else if list.sessions.is_empty() {
        eprintln!(
            "no sessions in sprite {sprite}; start one with `wisp console` or `wisp exec -t`"
        );
    } else {
        print!("{}", table(&list));
    }
    Ok(0)
}

pub async fn attach(ctx: &Ctx, args: AttachArgs) -> Result<i32> {
    let sprite = ctx.sprite(None)?;
    let list = fetch(ctx, &sprite).await?;
    let Some(session) = list.sessions.iter().find(|s| s.id == args.id) else {
        return Err(anyhow!(
            "no session {} in sprite {sprite}; see `wisp sessions -s {sprite}`",
            args.id
        ));
    };
    let client = ctx.client()?;
    let url = exec_ws::attach_url(&client.settings().api_url, &sprite, &session.id)?;
    let ws = exec_ws::connect_url(&client, &sprite, &url).await?;
    if session.tty {
        eprintln!("attached to session {} (detach with Ctrl-\\)", session.id);
    }
    let opts = RunOptions {
        tty: session.tty,
        stdin: session.tty,
        detach_key: session.tty.then_some(DETACH_KEY),
    };
    super::console::drive(ws, opts).await
}

async fn kill(ctx: &Ctx, args: KillArgs) -> Result<i32> {
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let mut query = vec![("signal", args.signal.as_str())];
    let timeout = args.timeout.clone();
    if let Some(t) = &timeout {
        query.push(("timeout", t.as_str()));
    }
    let resp = client
        .send_raw(
            reqwest::Method::POST,
            &format!("{}/exec/{}/kill", sprite_path(&sprite), args.id),
            &query,
            None,
            Duration::from_secs(120),
        )
        .await?;
    if !resp.status().is_success() {
        return Err(client.error_of(resp).await);
    }
    let text = resp.text().await.unwrap_or_default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        if v["type"] == "error" {
            return Err(anyhow!("{}", v["message"].as_str().unwrap_or(line)));
        }
        if let Some(msg) = v["message"].as_str() {
            eprintln!("{msg}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_api::exec::SessionEntry;

    #[test]
    fn table_layout() {
        let list = SessionList {
            sessions: vec![SessionEntry {
                id: "42".into(),
                command: "bash -l".into(),
                workdir: "/home/sprite".into(),
                created: "2026-11-28T10:00:00Z".into(),
                tty: true,
                is_active: false,
                bytes_per_second: 0.0,
                last_activity: None,
            }],
            count: 1,
        };
        let t = table(&list);
        assert!(t.starts_with("ID"));
        assert!(
            t.contains("42         yes   no        2026-11-28 10:00:00Z  bash -l"),
            "{t}"
        );
    }
}
