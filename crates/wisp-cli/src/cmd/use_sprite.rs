//! `wisp use NAME` / `wisp use --unset` / `wisp use` (show the selection).

use anyhow::{Context, Result};

use super::Ctx;
use crate::cli::UseArgs;
use crate::selection::{self, SelectionFile, SELECTION_FILE};

pub async fn run(ctx: &Ctx, args: UseArgs) -> Result<i32> {
    let cwd = std::env::current_dir().context("cannot determine the current directory")?;
    let path = cwd.join(SELECTION_FILE);
    if args.unset {
        match std::fs::remove_file(&path) {
            Ok(()) => eprintln!("removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("no {SELECTION_FILE} in this directory")
            }
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
        return Ok(0);
    }
    match args.name {
        Some(name) => {
            selection::check_name(&name)?;
            let mut body = serde_json::to_string(&SelectionFile {
                sprite: name.clone(),
            })?;
            body.push('\n');
            std::fs::write(&path, body)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("using sprite {name} in {}", cwd.display());
        }
        None => {
            let (name, source) = selection::current(ctx.sprite.as_deref())?;
            println!("{name}");
            eprintln!("(from {source})");
        }
    }
    Ok(0)
}
