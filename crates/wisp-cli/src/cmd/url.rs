//! `wisp url [-s NAME] [--public|--private]`: a sprite's URL, and who may use it.
//!
//! Prints the URL on stdout and its auth mode on stderr; `--public` lets anyone in,
//! `--private` (the default mode, `sprite`) asks for an org token or a login.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use super::{field, Ctx};
use crate::cli::UrlArgs;
use crate::client::{sprite_path, DEFAULT_TIMEOUT};

pub async fn run(ctx: &Ctx, args: UrlArgs) -> Result<i32> {
    let name = ctx.sprite(args.name.as_deref())?;
    let client = ctx.client()?;
    let auth = match (args.public, args.private) {
        (true, _) => Some("public"),
        (_, true) => Some("sprite"),
        _ => None,
    };
    let sprite: Value = match auth {
        None => client.get_json(&sprite_path(&name), &[]).await?,
        Some(auth) => {
            let body = json!({"url_settings": {"auth": auth}}).to_string();
            let resp = client
                .send_raw(
                    reqwest::Method::PUT,
                    &sprite_path(&name),
                    &[],
                    Some(body.into()),
                    DEFAULT_TIMEOUT,
                )
                .await?;
            if !resp.status().is_success() {
                return Err(client.error_of(resp).await);
            }
            client.json_of(resp).await?
        }
    };
    let url = field(&sprite, "url");
    if url == "-" {
        return Err(anyhow!("wispd did not say what the URL of {name} is"));
    }
    println!("{url}");
    let mode = sprite["url_settings"]["auth"].as_str().unwrap_or("sprite");
    if mode == "public" {
        eprintln!("auth: public (anyone who can reach it)");
    } else {
        eprintln!(
            "auth: {mode} (an org token: Authorization: Bearer <token>, or sign in at \
             {url}/.wisp/login)"
        );
    }
    Ok(0)
}
