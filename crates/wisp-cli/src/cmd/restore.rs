//! `wisp restore [-s NAME] ID` (also `wisp checkpoint restore ID`): replaces the sprite's files
//! with a checkpoint's and restarts its processes, streaming the progress.

use anyhow::Result;

use super::checkpoint::{check_id, checkpoint_path, explain_not_found, follow};
use super::Ctx;
use crate::cli::RestoreArgs;

pub async fn run(ctx: &Ctx, args: RestoreArgs) -> Result<i32> {
    check_id(&args.id)?;
    let sprite = ctx.sprite(None)?;
    let client = ctx.client()?;
    let path = format!("{}/restore", checkpoint_path(&sprite, &args.id));
    let done = follow(
        &client,
        &path,
        None,
        &format!("restoring sprite {sprite} to {}", args.id),
    )
    .await
    .map_err(|e| explain_not_found(e, &sprite, &args.id))?;
    eprintln!("{}", done.data);
    Ok(0)
}
