//! `wisp console [-s NAME]`: an interactive login shell; Ctrl-\ detaches.

use anyhow::Result;

use super::Ctx;
use crate::client::Client;
use crate::config::env_var;
use crate::exec_ws::{self, ExecRequest, Outcome, RunOptions, DETACH_KEY};
use crate::term::RawMode;

pub async fn run(ctx: &Ctx) -> Result<i32> {
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let req = ExecRequest {
        cmd: vec!["bash".into(), "-l".into()],
        path: "/bin/bash".into(),
        env: exec_ws::session_env(&[], true, env_var("TERM")),
        dir: None,
        tty: true,
        size: crate::term::size(),
        stdin: true,
    };
    let opts = RunOptions {
        tty: true,
        stdin: true,
        detach_key: Some(DETACH_KEY),
    };
    run_session(&client, &sprite, &req, opts).await
}

/// Connects, runs the I/O loop (in raw mode for a TTY session on a local terminal) and turns
/// the outcome into an exit code. The terminal is restored before anything is printed.
pub async fn run_session(
    client: &Client,
    sprite: &str,
    req: &ExecRequest,
    opts: RunOptions,
) -> Result<i32> {
    let ws = exec_ws::connect(client, sprite, req).await?;
    drive(ws, opts).await
}

/// Runs the I/O loop on a connected exec or attach socket (in raw mode for a TTY session on
/// a local terminal) and turns the outcome into an exit code.
pub async fn drive(ws: exec_ws::Ws, opts: RunOptions) -> Result<i32> {
    let raw = if opts.tty { RawMode::enable()? } else { None };
    let outcome = exec_ws::run(ws, opts).await;
    drop(raw);
    match outcome? {
        Outcome::Exit(code) => Ok(code),
        Outcome::Detached => {
            eprintln!();
            eprintln!("detached");
            Ok(0)
        }
    }
}
