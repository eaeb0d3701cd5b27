//! `wisp exec [-s NAME] [-t] [--env K=V]... [--dir D] -- CMD...`: prints nothing of its own on
//! success and exits with the command's exit code.

use std::io::IsTerminal;

use anyhow::Result;

use super::Ctx;
use crate::cli::ExecArgs;
use crate::config::env_var;
use crate::exec_ws::{self, ExecRequest, RunOptions};

pub async fn run(ctx: &Ctx, args: ExecArgs) -> Result<i32> {
    if args.cmd.is_empty() {
        return super::sessions::list(ctx, false).await;
    }
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let tty = args.tty;
    let stdin = tty || !std::io::stdin().is_terminal();
    let req = ExecRequest {
        path: args.cmd.first().cloned().unwrap_or_default(),
        cmd: args.cmd,
        env: exec_ws::session_env(&args.env, tty, env_var("TERM")),
        dir: args.dir,
        tty,
        size: if tty { crate::term::size() } else { None },
        stdin,
    };
    let opts = RunOptions {
        tty,
        stdin,
        detach_key: None,
    };
    super::console::run_session(&client, &sprite, &req, opts).await
}
