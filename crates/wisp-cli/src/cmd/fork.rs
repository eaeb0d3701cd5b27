//! `wisp fork SRC[@CHECKPOINT] NEW [--label L]...`: a new sprite whose files start as a
//! checkpoint of another (its latest checkpoint when none is named), through `"from"` of
//! `POST /v1/sprites` (a Wisp extension).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use wisp_api::checkpoint::ForkSource;
use wisp_api::sprite::{validate_labels, CreateSpriteRequest};

use super::checkpoint::check_id;
use super::{field, Ctx};
use crate::cli::ForkArgs;
use crate::client::{ApiError, SLOW_TIMEOUT};
use crate::selection::check_name;

/// `SRC` or `SRC@CHECKPOINT`, both checked.
pub fn parse_source(s: &str) -> Result<ForkSource> {
    let (sprite, checkpoint) = match s.split_once('@') {
        Some((sprite, id)) => (sprite, Some(id)),
        None => (s, None),
    };
    check_name(sprite)?;
    if let Some(id) = checkpoint {
        check_id(id)?;
    }
    Ok(ForkSource {
        sprite: sprite.to_string(),
        checkpoint: checkpoint.map(str::to_string),
    })
}

/// How the source reads in messages: `box@v3` or `box (latest checkpoint)`.
fn describe(src: &ForkSource) -> String {
    match &src.checkpoint {
        Some(id) => format!("{}@{id}", src.sprite),
        None => format!("{} (latest checkpoint)", src.sprite),
    }
}

pub async fn run(ctx: &Ctx, args: ForkArgs) -> Result<i32> {
    let from = parse_source(&args.source)?;
    check_name(&args.name)?;
    validate_labels(&args.labels).map_err(anyhow::Error::msg)?;
    let client = ctx.client()?;
    let source = describe(&from);
    let body = CreateSpriteRequest {
        name: Some(args.name.clone()),
        labels: (!args.labels.is_empty()).then_some(args.labels),
        from: Some(from.clone()),
        ..Default::default()
    };

    // Progress goes to stderr only (indicatif hides it when stderr is not a terminal).
    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        spinner.set_style(style);
    }
    spinner.set_message(format!("forking {source} into sprite {}", args.name));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let result = client.post_json("/v1/sprites", &body, SLOW_TIMEOUT).await;
    spinner.finish_and_clear();
    let sprite = result.map_err(|e| explain(e, &from))?;

    let name = match field(&sprite, "name") {
        "-" => args.name.as_str(),
        n => n,
    };
    if std::io::stdout().is_terminal() {
        println!("created sprite {name} from {source}");
        println!("url: {}", field(&sprite, "url"));
    } else {
        println!("{name}");
    }
    Ok(0)
}

/// A 404 names what is missing: the source sprite, or its checkpoint.
fn explain(err: anyhow::Error, from: &ForkSource) -> anyhow::Error {
    let Some(api) = err.downcast_ref::<ApiError>() else {
        return err;
    };
    if api.status != 404 {
        return err;
    }
    let src = &from.sprite;
    let about_checkpoint = api.message.to_ascii_lowercase().contains("checkpoint");
    match &from.checkpoint {
        Some(id) if about_checkpoint => {
            anyhow!("no checkpoint {id} in sprite {src}; see `wisp checkpoint list -s {src}`")
        }
        None if about_checkpoint => anyhow!(
            "sprite {src} has no checkpoint to fork; create one with `wisp checkpoint create -s {src}`"
        ),
        _ => anyhow!("no sprite {src} to fork ({})", api.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let s = parse_source("box").unwrap();
        assert_eq!((s.sprite.as_str(), s.checkpoint), ("box", None));
        let s = parse_source("my-box@v3").unwrap();
        assert_eq!(
            (s.sprite.as_str(), s.checkpoint.as_deref()),
            ("my-box", Some("v3"))
        );
        assert_eq!(describe(&s), "my-box@v3");
        assert_eq!(
            describe(&parse_source("a").unwrap()),
            "a (latest checkpoint)"
        );
        for bad in ["box@", "box@v01", "box@Current", "box@v1@v2", "box@../x"] {
            let e = parse_source(bad).unwrap_err().to_string();
            assert!(e.contains("checkpoint"), "{bad}: {e}");
        }
        for bad in ["", "@v1", "Bad_Name@v1", "../x"] {
            let e = parse_source(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid sprite name"), "{bad}: {e}");
        }
    }

    #[test]
    fn not_found() {
        let api = |msg: &str| -> anyhow::Error {
            ApiError {
                status: 404,
                message: msg.into(),
                hint: None,
            }
            .into()
        };
        let with = parse_source("src@v4").unwrap();
        let latest = parse_source("src").unwrap();
        assert_eq!(
            explain(api("checkpoint not found"), &with).to_string(),
            "no checkpoint v4 in sprite src; see `wisp checkpoint list -s src`"
        );
        assert!(explain(api("no checkpoint"), &latest)
            .to_string()
            .starts_with("sprite src has no checkpoint"));
        assert_eq!(
            explain(api("sprite not found"), &with).to_string(),
            "no sprite src to fork (sprite not found)"
        );
    }
}
