//! `wisp create NAME [--label L]...`

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use wisp_api::sprite::{validate_labels, CreateSpriteRequest};

use super::{field, Ctx};
use crate::cli::CreateArgs;
use crate::client::SLOW_TIMEOUT;
use crate::selection::check_name;

pub async fn run(ctx: &Ctx, args: CreateArgs) -> Result<i32> {
    check_name(&args.name)?;
    validate_labels(&args.labels).map_err(anyhow::Error::msg)?;
    let client = ctx.client()?;
    let body = CreateSpriteRequest {
        name: Some(args.name.clone()),
        labels: (!args.labels.is_empty()).then_some(args.labels),
        ..Default::default()
    };

    // Progress goes to stderr only (indicatif hides it when stderr is not a terminal).
    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        spinner.set_style(style);
    }
    spinner.set_message(format!("creating sprite {}", args.name));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let result = client.post_json("/v1/sprites", &body, SLOW_TIMEOUT).await;
    spinner.finish_and_clear();
    let sprite = result?;

    let name = match field(&sprite, "name") {
        "-" => args.name.as_str(),
        n => n,
    };
    if std::io::stdout().is_terminal() {
        println!("created sprite {name}");
        println!("url: {}", field(&sprite, "url"));
    } else {
        println!("{name}");
    }
    Ok(0)
}
