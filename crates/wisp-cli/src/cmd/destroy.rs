//! `wisp destroy [--force] [NAME]`

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Result};

use super::Ctx;
use crate::cli::DestroyArgs;
use crate::client::{sprite_path, SLOW_TIMEOUT};

pub async fn run(ctx: &Ctx, args: DestroyArgs) -> Result<i32> {
    let name = ctx.sprite(args.name.as_deref())?;
    if !args.force {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to destroy sprite {name} without confirmation (stdin is not a \
                 terminal): pass --force"
            );
        }
        if !confirm(&name)? {
            eprintln!("aborted");
            return Ok(1);
        }
    }
    let client = ctx.client()?;
    client.delete(&sprite_path(&name), SLOW_TIMEOUT).await?;
    eprintln!("destroyed sprite {name}");
    Ok(0)
}

fn confirm(name: &str) -> Result<bool> {
    let mut err = std::io::stderr();
    write!(
        err,
        "Destroy sprite {name}? Its files and checkpoints will be deleted. [y/N] "
    )?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(is_yes(&answer))
}

pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn answers() {
        for y in ["y\n", "Y", " yes "] {
            assert!(super::is_yes(y));
        }
        for n in ["", "\n", "n", "no", "yy", "sure"] {
            assert!(!super::is_yes(n));
        }
    }
}
