//! `wisp sleep [--cold] [NAME]`

use anyhow::Result;

use super::Ctx;
use crate::cli::SleepArgs;
use crate::client::{sprite_path, SLOW_TIMEOUT};

pub async fn run(ctx: &Ctx, args: SleepArgs) -> Result<i32> {
    let name = ctx.sprite(args.name.as_deref())?;
    let mode = if args.cold { "cold" } else { "warm" };
    let client = ctx.client()?;
    client
        .post_empty(
            &format!("{}/sleep", sprite_path(&name)),
            &[("mode", mode)],
            SLOW_TIMEOUT,
        )
        .await?;
    eprintln!("sprite {name} is {mode}");
    Ok(0)
}
